//! argocd-vault-plugin's placeholders, found and replaced exactly as avp's `pkg/kube` does:
//! `<key>` (with the `avp.kubernetes.io/path` annotation) and `<path:some/path#key[#version]>`,
//! each followed by `| modifier args` stages, in every string of a manifest; a Secret's values
//! that base64-decode to text with placeholders are replaced inside and re-encoded.
//!
//! Pure: values come from a [`Lookup`], so a caller can first collect every secret a set of
//! manifests needs ([`needed`]), fetch each once, and then replace ([`replace`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, LazyLock};

use base64::Engine as _;
use regex::Regex;
use serde_json::{Map, Value};

use crate::modifiers;

pub const ANNOTATION_PATH: &str = "avp.kubernetes.io/path";
pub const ANNOTATION_IGNORE: &str = "avp.kubernetes.io/ignore";
pub const ANNOTATION_REMOVE_MISSING: &str = "avp.kubernetes.io/remove-missing";
pub const ANNOTATION_SECRET_VERSION: &str = "avp.kubernetes.io/secret-version";
pub const ANNOTATION_KV_VERSION: &str = "avp.kubernetes.io/kv-version";

// avp's own expressions. `U` swaps greediness, as in Go: `<(.*)>` is the shortest span on one
// line, and the individual form's written-lazy groups are greedy.
static GENERIC: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?mU)<(.*)>").unwrap());
static SPECIFIC: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?mU)<path:([^#]+)#([^#]+)(?:#([^#]+))?>").unwrap());
static INDIVIDUAL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?mU)path:(?P<path>[^#]+?)#(?P<key>[^#]+?)(?:#(?P<version>.+?))??").unwrap()
});

/// One secret as a backend reads it: a path, the version asked for, and the KV version the
/// manifest names (`avp.kubernetes.io/kv-version`), when it does.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretRef {
    pub path: String,
    pub version: Option<String>,
    pub kv_version: Option<String>,
}

/// Where values come from: the secret at a path, or the backend's error text.
pub trait Lookup {
    fn secret(&mut self, r: &SecretRef) -> Result<Arc<Map<String, Value>>, String>;
}

/// Settings that shape replacement (avp's `AVP_PATH_VALIDATION`).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub path_validation: Option<Regex>,
}

/// Why one manifest could not be resolved: the message avp prints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ManifestError(pub String);

fn annotations(manifest: &Value) -> Map<String, Value> {
    manifest
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// Go's `strconv.ParseBool`; anything else is false, as avp treats it.
fn parse_bool(v: Option<&Value>) -> bool {
    matches!(
        v.and_then(Value::as_str),
        Some("1" | "t" | "T" | "TRUE" | "true" | "True")
    )
}

fn check_path(settings: &Settings, path: &str) -> Result<(), String> {
    match &settings.path_validation {
        Some(re) if !re.is_match(path) => Err(format!(
            "the path {path} is disallowed by AVP_PATH_VALIDATION restriction"
        )),
        _ => Ok(()),
    }
}

/// Records what a manifest needs without resolving anything.
struct Recorder {
    wanted: BTreeSet<SecretRef>,
}

impl Lookup for Recorder {
    fn secret(&mut self, r: &SecretRef) -> Result<Arc<Map<String, Value>>, String> {
        self.wanted.insert(r.clone());
        Err(String::new())
    }
}

/// Every secret `manifest` reads (the path annotation's and each inline placeholder's), so a
/// caller can fetch each once for many manifests.
pub fn needed(manifest: &Value, settings: &Settings) -> BTreeSet<SecretRef> {
    let mut rec = Recorder {
        wanted: BTreeSet::new(),
    };
    let _ = replace_with(manifest, settings, &mut rec, true);
    rec.wanted
}

/// Resolves every placeholder of one manifest (avp's `NewTemplate` + `Replace`).
pub fn replace(
    manifest: &Value,
    settings: &Settings,
    lookup: &mut dyn Lookup,
) -> Result<Value, ManifestError> {
    replace_with(manifest, settings, lookup, false)
}

fn replace_with(
    manifest: &Value,
    settings: &Settings,
    lookup: &mut dyn Lookup,
    recording: bool,
) -> Result<Value, ManifestError> {
    let ann = annotations(manifest);
    let kv_version = ann
        .get(ANNOTATION_KV_VERSION)
        .and_then(Value::as_str)
        .map(str::to_owned);
    // The path annotation's secret is read before anything else, even for an ignored manifest.
    let mut data: Option<Arc<Map<String, Value>>> = None;
    if let Some(path) = ann
        .get(ANNOTATION_PATH)
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
    {
        check_path(settings, path).map_err(ManifestError)?;
        let r = SecretRef {
            path: path.to_owned(),
            version: ann
                .get(ANNOTATION_SECRET_VERSION)
                .and_then(Value::as_str)
                .map(str::to_owned),
            kv_version: kv_version.clone(),
        };
        match lookup.secret(&r) {
            Ok(d) => data = Some(d),
            Err(_) if recording => {}
            Err(e) => return Err(ManifestError(e)),
        }
    }
    if parse_bool(ann.get(ANNOTATION_IGNORE)) {
        return Ok(manifest.clone());
    }
    let kind = manifest.get("kind").and_then(Value::as_str).unwrap_or("");
    let remove_missing = parse_bool(ann.get(ANNOTATION_REMOVE_MISSING));
    if remove_missing && kind != "Secret" && kind != "ConfigMap" {
        return Err(ManifestError(
            "avp.kubernetes.io/remove-missing annotation can only be used on Secret or ConfigMap resources".into(),
        ));
    }
    let mut ctx = Ctx {
        settings,
        lookup,
        data: data.as_deref(),
        generic: ann.contains_key(ANNOTATION_PATH),
        kv_version,
        kind: match kind {
            "Secret" => Kind::Secret,
            "ConfigMap" => Kind::ConfigMap,
            _ => Kind::Other,
        },
        remove_missing,
        secret_data: false,
        errors: Vec::new(),
    };
    let mut out = manifest.clone();
    if let Value::Object(m) = &mut out {
        ctx.walk_top(m);
    }
    if ctx.errors.is_empty() || recording {
        Ok(out)
    } else {
        Err(ManifestError(format!(
            "Replace: could not replace all placeholders in Template:\n{}",
            ctx.errors.join("\n")
        )))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Secret,
    ConfigMap,
    Other,
}

struct Ctx<'a> {
    settings: &'a Settings,
    lookup: &'a mut dyn Lookup,
    data: Option<&'a Map<String, Value>>,
    /// The path annotation is present: `<key>` placeholders count, not only `<path:...>`.
    generic: bool,
    kv_version: Option<String>,
    kind: Kind,
    remove_missing: bool,
    /// Walking a Secret's `data`: values must end up base64.
    secret_data: bool,
    errors: Vec<String>,
}

/// One placeholder's failure: a missing value (which `remove-missing` forgives) or another.
enum Failure {
    Missing(String),
    Other(String),
}

impl Ctx<'_> {
    /// The manifest's top level: a Secret's `data` is walked knowing its values are base64.
    fn walk_top(&mut self, m: &mut Map<String, Value>) {
        if self.kind == Kind::Secret
            && let Some(Value::Object(data)) = m.get_mut("data")
        {
            let mut data = std::mem::take(data);
            self.secret_data = true;
            self.walk_map(&mut data);
            self.secret_data = false;
            m.insert("data".into(), Value::Object(data));
        }
        let data = if self.kind == Kind::Secret {
            m.remove("data")
        } else {
            None
        };
        self.walk_map(m);
        if let Some(d) = data {
            m.insert("data".into(), d);
        }
    }

    fn walk_map(&mut self, m: &mut Map<String, Value>) {
        let keys: Vec<String> = m.keys().cloned().collect();
        for key in keys {
            let Some(v) = m.get_mut(&key) else { continue };
            match v {
                Value::Object(inner) => self.walk_map(inner),
                Value::Array(items) => {
                    for item in items.iter_mut() {
                        match item {
                            Value::Object(inner) => self.walk_map(inner),
                            Value::String(s) => {
                                let (value, failures) = self.replace_field(&key, &s.clone());
                                self.errors.extend(failures.into_iter().map(|f| match f {
                                    Failure::Missing(e) | Failure::Other(e) => e,
                                }));
                                *item = value;
                            }
                            // Lists of lists and scalars are left as they are, as upstream.
                            _ => {}
                        }
                    }
                }
                Value::String(s) => {
                    let (value, failures) = self.replace_field(&key, &s.clone());
                    let all_missing = !failures.is_empty()
                        && failures.iter().all(|f| matches!(f, Failure::Missing(_)));
                    if self.remove_missing && all_missing {
                        m.remove(&key);
                        continue;
                    }
                    self.errors.extend(failures.into_iter().map(|f| match f {
                        Failure::Missing(e) | Failure::Other(e) => e,
                    }));
                    *v = value;
                }
                _ => {}
            }
        }
    }

    /// One string field, by the manifest's kind: a Secret's base64 values are replaced inside
    /// and re-encoded; a ConfigMap's results become strings.
    fn replace_field(&mut self, field: &str, value: &str) -> (Value, Vec<Failure>) {
        match self.kind {
            Kind::Secret => {
                if let Some(decoded) = decode_base64(value)
                    && GENERIC.is_match(&decoded)
                {
                    let (v, failures) = self.replace_string(field, &decoded);
                    return match stringify(&v) {
                        Ok(s) => (
                            Value::String(base64::engine::general_purpose::STANDARD.encode(s)),
                            failures,
                        ),
                        Err(e) => (Value::String(value.to_owned()), vec![Failure::Other(e)]),
                    };
                }
                let (v, failures) = self.replace_string(field, value);
                // A `data` value must be base64. avp 1.x inserts the value as it is, which the
                // API server refuses unless the store held base64 (or `| base64encode` made
                // it); Ferry encodes a value that is one whole placeholder and not already
                // base64, so both forms work (text around placeholders is left as avp leaves it).
                let whole = GENERIC
                    .find(value)
                    .is_some_and(|m| m.start() == 0 && m.end() == value.len());
                if self.secret_data
                    && whole
                    && failures.is_empty()
                    && v.as_str() != Some(value)
                    && let Ok(text) = stringify(&v)
                    && decode_base64(&text).is_none()
                {
                    return (
                        Value::String(base64::engine::general_purpose::STANDARD.encode(text)),
                        failures,
                    );
                }
                (v, failures)
            }
            Kind::ConfigMap => {
                let (v, mut failures) = self.replace_string(field, value);
                match stringify(&v) {
                    Ok(s) => (Value::String(s), failures),
                    Err(e) => {
                        failures.push(Failure::Other(e));
                        (Value::String(value.to_owned()), failures)
                    }
                }
            }
            Kind::Other => self.replace_string(field, value),
        }
    }

    /// avp's `genericReplacement`: every placeholder in `value` replaced; a non-string result
    /// (a number, a map from `jsonParse`) becomes the whole field.
    fn replace_string(&mut self, field: &str, value: &str) -> (Value, Vec<Failure>) {
        let re: &Regex = if self.generic { &GENERIC } else { &SPECIFIC };
        let mut failures = Vec::new();
        let mut non_string: Option<Value> = None;
        let mut out = String::with_capacity(value.len());
        let mut last = 0;
        for m in re.find_iter(value) {
            out.push_str(&value[last..m.start()]);
            last = m.end();
            let text = m.as_str();
            match self.one(field, value, text) {
                Ok(Value::String(s)) => out.push_str(&s),
                Ok(other) => {
                    non_string = Some(other);
                    out.push_str(text);
                }
                Err(f) => {
                    failures.push(f);
                    out.push_str(text);
                }
            }
        }
        out.push_str(&value[last..]);
        match non_string {
            Some(v) => (v, failures),
            None => (Value::String(out), failures),
        }
    }

    /// One placeholder's value, modifiers applied.
    fn one(&mut self, field: &str, whole: &str, matched: &str) -> Result<Value, Failure> {
        let inner = matched.trim_matches(|c| c == '<' || c == '>');
        let mut stages = inner.split('|');
        let placeholder = stages.next().unwrap_or("").trim_matches(' ').to_owned();
        let value = match INDIVIDUAL.captures(&placeholder) {
            Some(c) => {
                let path = c.name("path").map(|m| m.as_str()).unwrap_or("");
                let key = c.name("key").map(|m| m.as_str().trim()).unwrap_or("");
                let version = c.name("version").map(|m| m.as_str().to_owned());
                check_path(self.settings, path).map_err(Failure::Other)?;
                let r = SecretRef {
                    path: path.to_owned(),
                    version,
                    kv_version: self.kv_version.clone(),
                };
                let secret = self.lookup.secret(&r).map_err(Failure::Other)?;
                secret.get(key).cloned()
            }
            None => self.data.and_then(|d| d.get(&placeholder)).cloned(),
        };
        let Some(mut value) = value.filter(|v| !v.is_null()) else {
            return Err(Failure::Missing(format!(
                "replaceString: missing Vault value for placeholder {placeholder} in string {field}: {whole}"
            )));
        };
        for stage in stages {
            let words: Vec<&str> = stage.split_whitespace().collect();
            let Some((name, args)) = words.split_first() else {
                return Err(Failure::Other(format!(
                    "invalid modifier: (empty) for placeholder {placeholder} in string {field}: {whole}"
                )));
            };
            value = match modifiers::apply(name, args, value) {
                Ok(v) => v,
                Err(modifiers::Error::Unknown) => {
                    return Err(Failure::Other(format!(
                        "invalid modifier: {name} for placeholder {placeholder} in string {field}: {whole}"
                    )));
                }
                Err(modifiers::Error::Failed(e)) => {
                    return Err(Failure::Other(format!(
                        "{name}: {e} for placeholder {placeholder} in string {field}: {whole}"
                    )));
                }
            };
        }
        Ok(value)
    }
}

/// Go's `base64.StdEncoding.DecodeString`, which skips `\r` and `\n`; `None` unless the bytes are
/// text (a binary value cannot hold a placeholder).
fn decode_base64(s: &str) -> Option<String> {
    let cleaned: String = s.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(cleaned)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// avp's `stringify`: scalars as text; a map or list cannot be a ConfigMap or Secret value.
pub fn stringify(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(modifiers::number_text(n)),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Ok(String::new()),
        Value::Array(_) | Value::Object(_) => Err(format!(
            "a {} cannot be a ConfigMap or Secret value",
            if v.is_array() { "list" } else { "map" }
        )),
    }
}

/// Every secret the manifests read, deduplicated: what one pass fetches.
pub fn needed_by_all<'a>(
    manifests: impl IntoIterator<Item = &'a Value>,
    settings: &Settings,
) -> BTreeSet<SecretRef> {
    manifests
        .into_iter()
        .flat_map(|m| needed(m, settings))
        .collect()
}

/// A [`Lookup`] over values fetched in advance (or the error each fetch gave).
#[derive(Debug, Default, Clone)]
pub struct Fetched(pub BTreeMap<SecretRef, Result<Arc<Map<String, Value>>, String>>);

impl Lookup for Fetched {
    fn secret(&mut self, r: &SecretRef) -> Result<Arc<Map<String, Value>>, String> {
        self.0
            .get(r)
            .cloned()
            .unwrap_or_else(|| Err(format!("secret {} was not fetched", r.path)))
    }
}

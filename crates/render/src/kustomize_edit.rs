//! `kustomize edit` for config-management plugins (seed 002's `avp-kustomize` runs
//! `kustomize edit set annotation ...; kustomize edit set image ...` before building). kubectl
//! embeds only `kustomize build`, so Ferry edits `kustomization.yaml` itself, as kustomize v5
//! does (`kustomize/commands/edit`): `set image|annotation|label|namespace|nameprefix|
//! namesuffix|replicas` and `add resource|component|patch|label|annotation`, with its argument
//! forms, its sort orders (images and replicas by name) and its error texts.
//!
//! kustomize re-writes the whole file; Ferry keeps every top-level field it does not change
//! byte for byte (comments included), writes a changed field in place with its leading
//! comments, and appends new fields in kustomize's field order.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// The file names kustomize looks for, in its order.
pub const KUSTOMIZATION_FILES: &[&str] =
    &["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// kustomize's order for fields a file does not have yet.
const FIELD_ORDER: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "resources",
    "bases",
    "namePrefix",
    "nameSuffix",
    "namespace",
    "crds",
    "commonLabels",
    "labels",
    "commonAnnotations",
    "patchesStrategicMerge",
    "patchesJson6902",
    "patches",
    "configMapGenerator",
    "secretGenerator",
    "helmCharts",
    "helmChartInflationGenerator",
    "helmGlobals",
    "generatorOptions",
    "vars",
    "images",
    "replacements",
    "replicas",
    "configurations",
    "generators",
    "transformers",
    "components",
    "openapi",
    "buildMetadata",
];

/// One top-level field of the file: its text (with the comments above it) and its key.
struct Field {
    key: Option<String>,
    text: String,
}

fn split_fields(text: &str) -> Vec<Field> {
    let mut fields: Vec<Field> = Vec::new();
    let mut pending = String::new();
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" && fields.is_empty() && pending.trim().is_empty() {
            continue;
        }
        let starts_field = line
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '"' || c == '\'')
            && line.contains(':');
        if starts_field {
            let key = line
                .split(':')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches(['"', '\''])
                .to_string();
            fields.push(Field {
                key: Some(key),
                text: std::mem::take(&mut pending) + line,
            });
        } else if line.trim().is_empty() || line.trim_start().starts_with('#') {
            pending.push_str(line);
        } else if let Some(last) = fields.last_mut() {
            last.text.push_str(&std::mem::take(&mut pending));
            last.text.push_str(line);
        } else {
            pending.push_str(line);
        }
    }
    if !pending.is_empty() {
        fields.push(Field {
            key: None,
            text: pending,
        });
    }
    fields
}

/// The leading comment and blank lines of a field's text.
fn leading_comments(text: &str) -> String {
    text.split_inclusive('\n')
        .take_while(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        .collect()
}

fn render_field(key: &str, value: &Value) -> Result<String, String> {
    let mut m = Map::new();
    m.insert(key.to_string(), value.clone());
    let mut s = serde_saphyr::to_string(&Value::Object(m)).map_err(|e| e.to_string())?;
    if !s.ends_with('\n') {
        s.push('\n');
    }
    Ok(s)
}

/// A kustomization file's text with `edit` applied; `glob` expands `add resource/component`
/// patterns (kustomize matches them against the filesystem).
pub fn edit(
    text: &str,
    args: &[String],
    glob: &dyn Fn(&str) -> Vec<String>,
) -> Result<String, String> {
    let doc: Value = if text.trim().is_empty() {
        json!({})
    } else {
        serde_saphyr::from_str(text).map_err(|e| format!("invalid kustomization file: {e}"))?
    };
    let mut k = match doc {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        _ => return Err("invalid kustomization file: not a map".into()),
    };
    let before = k.clone();
    apply(&mut k, args, glob)?;
    // kustomize fills these in when it writes.
    k.entry("apiVersion")
        .or_insert_with(|| json!("kustomize.config.k8s.io/v1beta1"));
    k.entry("kind").or_insert_with(|| json!("Kustomization"));

    let mut out = String::new();
    let mut written: Vec<String> = Vec::new();
    for f in split_fields(text) {
        let Some(key) = f.key else {
            out.push_str(&f.text);
            continue;
        };
        written.push(key.clone());
        match k.get(&key) {
            Some(v) if before.get(&key) == Some(v) => out.push_str(&f.text),
            Some(v) => {
                out.push_str(&leading_comments(&f.text));
                out.push_str(&render_field(&key, v)?);
            }
            // Removed by the edit.
            None => {}
        }
    }
    let mut rest: Vec<&String> = k.keys().filter(|key| !written.contains(key)).collect();
    rest.sort_by_key(|key| {
        FIELD_ORDER
            .iter()
            .position(|f| f == key)
            .unwrap_or(FIELD_ORDER.len())
    });
    for key in rest {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&render_field(key, &k[key.as_str()])?);
    }
    Ok(out)
}

fn apply(
    k: &mut Map<String, Value>,
    args: &[String],
    glob: &dyn Fn(&str) -> Vec<String>,
) -> Result<(), String> {
    let (verb, rest) = args
        .split_first()
        .ok_or("edit: missing command (set or add)")?;
    let (what, rest) = rest
        .split_first()
        .ok_or_else(|| format!("edit {verb}: missing what to {verb}"))?;
    let mut force = false;
    let mut values: Vec<&str> = Vec::new();
    let mut flags: BTreeMap<String, String> = BTreeMap::new();
    let mut i = 0;
    while i < rest.len() {
        let a = rest[i].as_str();
        if a == "-f" || a == "--force" {
            force = true;
        } else if a == "--" {
            values.extend(rest[i + 1..].iter().map(String::as_str));
            break;
        } else if let Some(flag) = a.strip_prefix("--") {
            match flag.split_once('=') {
                Some((f, v)) => {
                    flags.insert(f.to_string(), v.to_string());
                }
                None => {
                    let v = rest
                        .get(i + 1)
                        .ok_or_else(|| format!("flag needs an argument: --{flag}"))?;
                    flags.insert(flag.to_string(), v.clone());
                    i += 1;
                }
            }
        } else {
            values.push(a);
        }
        i += 1;
    }
    let unsupported = |flags: &BTreeMap<String, String>, allowed: &[&str]| -> Result<(), String> {
        match flags.keys().find(|f| !allowed.contains(&f.as_str())) {
            Some(f) => Err(format!("unknown flag: --{f}")),
            None => Ok(()),
        }
    };
    match (verb.as_str(), what.as_str()) {
        ("set", "image") => {
            unsupported(&flags, &[])?;
            if values.is_empty() {
                return Err("no image specified".into());
            }
            let mut images: Vec<Value> = k
                .get("images")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for arg in values {
                let img = parse_image(arg)?;
                let name = img["name"].as_str().unwrap_or("").to_string();
                match images.iter_mut().find(|i| i["name"] == name.as_str()) {
                    Some(existing) => {
                        // `*` keeps what was there.
                        let mut next = json!({"name": name});
                        for f in ["newName", "newTag", "digest"] {
                            match img.get(f).and_then(Value::as_str) {
                                Some("*") => {
                                    if let Some(v) = existing.get(f) {
                                        next[f] = v.clone();
                                    }
                                }
                                Some(v) => next[f] = json!(v),
                                None => {}
                            }
                        }
                        *existing = next;
                    }
                    None => {
                        let mut img = img;
                        if let Some(o) = img.as_object_mut() {
                            o.retain(|_, v| v != "*");
                        }
                        images.push(img);
                    }
                }
            }
            images.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
            k.insert("images".into(), Value::Array(images));
        }
        ("set" | "add", "annotation" | "label") => {
            let field = if what == "label" {
                "commonLabels"
            } else {
                "commonAnnotations"
            };
            if flags.contains_key("without-selector") || flags.contains_key("include-templates") {
                return Err(format!(
                    "--without-selector/--include-templates are not supported by Ferry's kustomize edit; write `labels:` in {} directly",
                    KUSTOMIZATION_FILES[0]
                ));
            }
            unsupported(&flags, &[])?;
            if values.is_empty() {
                return Err(format!("must specify {what}"));
            }
            let pairs = values
                .iter()
                .map(|v| parse_pair(what, v))
                .collect::<Result<Vec<_>, _>>()?;
            let map = k
                .entry(field)
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .ok_or_else(|| format!("{field} is not a map"))?;
            for (key, value) in pairs {
                if *verb == "add" && !force && map.contains_key(&key) {
                    return Err(format!("{what} {key} already in kustomization file"));
                }
                map.insert(key, json!(value));
            }
        }
        ("set", "namespace") => {
            unsupported(&flags, &[])?;
            let [ns] = values.as_slice() else {
                return Err("must specify exactly one namespace value".into());
            };
            let valid = !ns.is_empty()
                && ns.len() <= 63
                && ns
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !ns.starts_with('-')
                && !ns.ends_with('-');
            if !valid {
                return Err(format!(
                    "\"{ns}\" is not a valid namespace name: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"
                ));
            }
            k.insert("namespace".into(), json!(ns));
        }
        ("set", "nameprefix" | "namesuffix") => {
            unsupported(&flags, &[])?;
            let (field, word) = if what == "nameprefix" {
                ("namePrefix", "prefix")
            } else {
                ("nameSuffix", "suffix")
            };
            let [v] = values.as_slice() else {
                return Err(format!("must specify exactly one {word} value"));
            };
            k.insert(field.into(), json!(v));
        }
        ("set", "replicas") => {
            unsupported(&flags, &[])?;
            if values.is_empty() {
                return Err("no replicas specified".into());
            }
            let mut replicas: Vec<Value> = k
                .get("replicas")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for arg in values {
                let bad = || {
                    "invalid format of replica, use the following format: <name>=<count>"
                        .to_string()
                };
                let (name, count) = arg.split_once('=').ok_or_else(bad)?;
                let count: i64 = count.parse().map_err(|_| bad())?;
                replicas.retain(|r| r["name"] != name);
                replicas.push(json!({"name": name, "count": count}));
            }
            replicas.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
            k.insert("replicas".into(), Value::Array(replicas));
        }
        ("add", "resource" | "component") => {
            unsupported(&flags, &[])?;
            let field = if what == "resource" {
                "resources"
            } else {
                "components"
            };
            if values.is_empty() {
                return Err(format!("must specify a {what} file"));
            }
            let list = k
                .entry(field)
                .or_insert_with(|| json!([]))
                .as_array_mut()
                .ok_or_else(|| format!("{field} is not a list"))?;
            for pattern in values {
                let matches = glob(pattern);
                // A pattern that matches no file may still be a directory or remote target.
                let matches = if matches.is_empty() {
                    vec![pattern.to_string()]
                } else {
                    matches
                };
                for m in matches {
                    if KUSTOMIZATION_FILES.contains(&m.as_str()) {
                        continue;
                    }
                    if !list.iter().any(|x| x == m.as_str()) {
                        list.push(json!(m));
                    }
                }
            }
        }
        ("add", "patch") => {
            let target_flags = [
                "group",
                "version",
                "kind",
                "name",
                "namespace",
                "label-selector",
                "annotation-selector",
            ];
            let mut allowed = vec!["path", "patch"];
            allowed.extend(target_flags);
            unsupported(&flags, &allowed)?;
            let mut patch = match (flags.get("path"), flags.get("patch")) {
                (Some(_), Some(_)) => {
                    return Err("patch and path can't be set at the same time".into());
                }
                (Some(p), None) => json!({"path": p}),
                (None, Some(p)) => json!({"patch": p}),
                (None, None) => return Err("must provide either patch or path".into()),
            };
            let mut target = Map::new();
            for f in target_flags {
                if let Some(v) = flags.get(f) {
                    let key = match f {
                        "label-selector" => "labelSelector",
                        "annotation-selector" => "annotationSelector",
                        other => other,
                    };
                    target.insert(key.into(), json!(v));
                }
            }
            if !target.is_empty() {
                patch["target"] = Value::Object(target);
            }
            let list = k
                .entry("patches")
                .or_insert_with(|| json!([]))
                .as_array_mut()
                .ok_or("patches is not a list")?;
            if !list.contains(&patch) {
                list.push(patch);
            }
        }
        (verb, what) => {
            return Err(format!(
                "kustomize edit {verb} {what} is not supported by Ferry (it has set image|annotation|label|namespace|nameprefix|namesuffix|replicas and add resource|component|patch|label|annotation)"
            ));
        }
    }
    Ok(())
}

/// `name=newName:newTag`, `name=newName@digest`, `name=newName`, `name:newTag`, `name@digest`.
fn parse_image(arg: &str) -> Result<Value, String> {
    let bad = || {
        "invalid format of image, use one of the following options:\n- <image>=<newimage>:<newtag>\n- <image>=<newimage>@<digest>\n- <image>=<newimage>\n- <image>:<newtag>\n- <image>@<digest>".to_string()
    };
    let (name, target) = match arg.split('=').collect::<Vec<_>>().as_slice() {
        [name, target] => (Some(*name), *target),
        [single] => (None, *single),
        _ => return Err(bad()),
    };
    let (rest, digest) = match target.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (target, None),
    };
    // The tag is what follows the last `:` when it is a valid tag (so a registry port stays
    // in the name: `localhost:5000/nginx:1.2`).
    let (image, tag) = match rest.rsplit_once(':') {
        Some((n, t))
            if !t.is_empty()
                && (t == "*"
                    || t.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)))
                && !t.contains('/') =>
        {
            (n, Some(t))
        }
        _ => (rest, None),
    };
    if image.is_empty() {
        return Err(bad());
    }
    let mut v = Map::new();
    match name {
        Some(n) => {
            if n.is_empty() {
                return Err(bad());
            }
            v.insert("name".into(), json!(n));
            v.insert("newName".into(), json!(image));
        }
        None => {
            if tag.is_none() && digest.is_none() {
                return Err(bad());
            }
            v.insert("name".into(), json!(image));
        }
    }
    if let Some(t) = tag {
        v.insert("newTag".into(), json!(t));
    }
    if let Some(d) = digest {
        v.insert("digest".into(), json!(d));
    }
    Ok(Value::Object(v))
}

/// `key:value` (split at the first `:`, one pair of quotes around the value removed).
fn parse_pair(what: &str, arg: &str) -> Result<(String, String), String> {
    let (k, v) = arg.split_once(':').unwrap_or((arg, ""));
    if k.is_empty() {
        return Err(format!(
            "invalid {what}: '{arg}' (need k:v pair where v may be quoted)"
        ));
    }
    let v = v
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v);
    Ok((k.to_string(), v.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(before: &str, args: &str) -> Result<String, String> {
        let args: Vec<String> = args.split(' ').map(String::from).collect();
        edit(before, &args, &|p| {
            if p == "*.yaml" {
                vec!["a.yaml".into(), "b.yaml".into()]
            } else {
                vec![]
            }
        })
    }

    /// before, command, after: kustomize's documented behaviour per command.
    #[test]
    fn edit_commands_before_and_after() {
        let base = "# the app\nresources:\n- deployment.yaml # main\n";
        for (before, args, after) in [
            (
                base,
                "set image registry.local/app:1.4.2",
                "# the app\nresources:\n- deployment.yaml # main\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nimages:\n- name: registry.local/app\n  newTag: 1.4.2\n",
            ),
            (
                "images:\n- name: nginx\n  newTag: '1'\n- name: app\n  newName: x\n",
                "set image node:8.15.0 mysql=mariadb alpine@sha256:24a0c4b4 app:2",
                "images:\n- digest: sha256:24a0c4b4\n  name: alpine\n- name: app\n  newTag: '2'\n- name: mysql\n  newName: mariadb\n- name: nginx\n  newTag: '1'\n- name: node\n  newTag: 8.15.0\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n",
            ),
            (
                "images:\n- name: app\n  newName: x\n  newTag: '1'\n",
                "set image app=*:2",
                "images:\n- name: app\n  newName: x\n  newTag: '2'\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n",
            ),
            (
                "kind: Kustomization\ncommonAnnotations:\n  a: b\n",
                "set annotation github.com/url:https://git.example/app a:c",
                "kind: Kustomization\ncommonAnnotations:\n  a: c\n  github.com/url: https://git.example/app\napiVersion: kustomize.config.k8s.io/v1beta1\n",
            ),
            (
                "kind: Kustomization\n",
                "set label app:\"web\"",
                "kind: Kustomization\napiVersion: kustomize.config.k8s.io/v1beta1\ncommonLabels:\n  app: web\n",
            ),
            (
                "kind: Kustomization\n",
                "set namespace prod",
                "kind: Kustomization\napiVersion: kustomize.config.k8s.io/v1beta1\nnamespace: prod\n",
            ),
            (
                "kind: Kustomization\n",
                "set nameprefix dev-",
                "kind: Kustomization\napiVersion: kustomize.config.k8s.io/v1beta1\nnamePrefix: dev-\n",
            ),
            (
                "kind: Kustomization\nreplicas:\n- name: web\n  count: 1\n",
                "set replicas web=3 api=2",
                "kind: Kustomization\nreplicas:\n- count: 2\n  name: api\n- count: 3\n  name: web\napiVersion: kustomize.config.k8s.io/v1beta1\n",
            ),
            (
                base,
                "add resource *.yaml",
                "# the app\nresources:\n- deployment.yaml\n- a.yaml\n- b.yaml\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n",
            ),
            (
                "kind: Kustomization\n",
                "add patch --path p.yaml --kind Deployment --name web",
                "kind: Kustomization\napiVersion: kustomize.config.k8s.io/v1beta1\npatches:\n- path: p.yaml\n  target:\n    kind: Deployment\n    name: web\n",
            ),
            (
                "kind: Kustomization\ncommonLabels:\n  a: b\n",
                "add label a:c --force",
                "kind: Kustomization\ncommonLabels:\n  a: c\napiVersion: kustomize.config.k8s.io/v1beta1\n",
            ),
        ] {
            let got = run(before, args).unwrap_or_else(|e| panic!("{args}: {e}"));
            let want: Value = serde_saphyr::from_str(after).unwrap();
            let got_v: Value = serde_saphyr::from_str(&got).unwrap();
            assert_eq!(got_v, want, "{args}:\n{got}");
        }
        // Fields the edit does not touch keep their text, comments included; a changed one
        // keeps the comments above it.
        let got = run(base, "set namespace prod").unwrap();
        assert!(got.starts_with(base), "{got}");
        let got = run(
            "# images\nimages:\n- name: a\n  newTag: '1'\n",
            "set image a:2",
        )
        .unwrap();
        assert!(got.starts_with("# images\nimages:\n"), "{got}");
        assert!(
            got.contains("newTag: '2'") || got.contains("newTag: \"2\""),
            "{got}"
        );
    }

    #[test]
    fn edit_errors_as_kustomize_words_them() {
        for (before, args, want) in [
            ("", "set image", "no image specified"),
            ("", "set image a=b=c", "invalid format of image"),
            (
                "commonLabels:\n  a: b\n",
                "add label a:c",
                "label a already in kustomization file",
            ),
            ("", "add annotation :v", "invalid annotation: ':v'"),
            (
                "",
                "set namespace Prod",
                "\"Prod\" is not a valid namespace name",
            ),
            (
                "",
                "set namespace a b",
                "must specify exactly one namespace value",
            ),
            ("", "set replicas web", "invalid format of replica"),
            (
                "",
                "add patch --path a --patch b",
                "patch and path can't be set at the same time",
            ),
            ("", "add patch", "must provide either patch or path"),
            (
                "",
                "remove resource a",
                "kustomize edit remove resource is not supported by Ferry",
            ),
            (
                "",
                "set label a:b --without-selector true",
                "--without-selector",
            ),
        ] {
            let e = run(before, args).unwrap_err();
            assert!(e.contains(want), "{args}: {e}");
        }
    }
}

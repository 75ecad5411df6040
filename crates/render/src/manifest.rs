//! Reading YAML/JSON documents into `serde_json::Value` and turning them into
//! Kubernetes objects.

use crate::RenderError;
use crate::error::manifest_error;
use serde_json::Value;

/// serde-saphyr options tuned to what Kubernetes users expect from
/// sigs.k8s.io/yaml, while keeping YAML 1.2's stricter typing:
/// - only `true`/`false` are booleans: `yes`, `on`, `y` stay strings (YAML
///   1.2; kubectl would make them booleans and then reject them in a string
///   field, so this only differs where kubectl fails);
/// - `0644` is octal (493), as in YAML 1.1, because that is how every
///   `defaultMode: 0644` in the wild is meant; `0o644` works too;
/// - a repeated key keeps the last value, as go-yaml v2 does, instead of
///   failing a chart that renders a label twice;
/// - `.inf`/`.nan` become strings rather than failing the document;
/// - errors are one line with a position rather than a multi-line snippet,
///   since they end up in a condition message.
fn options() -> serde_saphyr::Options {
    let mut o = serde_saphyr::Options::default();
    o.strict_booleans = true;
    o.legacy_octal_numbers = true;
    o.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::LastWins;
    o.non_finite_float_policy = serde_saphyr::NonFiniteFloatPolicy::AsString;
    o.with_snippet = false;
    // Rendered charts (CRDs especially) are far bigger than the defaults,
    // which are meant for configuration files.
    let mut b = serde_saphyr::Budget::default();
    b.max_documents = 100_000;
    b.max_nodes = 50_000_000;
    b.max_events = 200_000_000;
    b.max_depth = 512;
    o.budget = Some(b);
    o
}

/// Parses every document of a YAML (or JSON) stream. Empty documents are
/// skipped. Integral floats (`replicas: 3.0`) become integers, as a JSON
/// round trip through the API server would make them.
pub(crate) fn parse_documents(text: &str) -> Result<Vec<Value>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if let Some(docs) = parse_json_stream(text) {
        return Ok(docs);
    }
    let mut docs: Vec<Value> =
        serde_saphyr::from_multiple_with_options(text, options()).map_err(|e| e.to_string())?;
    docs.retain(|d| !d.is_null());
    for d in &mut docs {
        normalize_numbers(d);
    }
    Ok(docs)
}

/// Plugins often print JSON, sometimes several objects back to back, and
/// sometimes tab-indented, none of which is valid YAML.
fn parse_json_stream(text: &str) -> Option<Vec<Value>> {
    let first = text.trim_start().chars().next()?;
    if first != '{' && first != '[' {
        return None;
    }
    let docs: Result<Vec<Value>, _> = serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .collect();
    let mut docs = docs.ok()?;
    docs.retain(|d| !d.is_null());
    for d in &mut docs {
        normalize_numbers(d);
    }
    Some(docs)
}

fn normalize_numbers(v: &mut Value) {
    match v {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64())
                && f.fract() == 0.0
                && f.abs() < 9_007_199_254_740_992.0
            {
                *v = Value::from(f as i64);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(normalize_numbers),
        Value::Object(m) => m.values_mut().for_each(normalize_numbers),
        _ => {}
    }
}

/// Parses one YAML document (for configuration such as plugin.yaml or a
/// kustomization file). Several documents are an error; none yields `Null`.
pub(crate) fn parse_single(text: &str) -> Result<Value, String> {
    let mut docs = parse_documents(text)?;
    match docs.len() {
        0 => Ok(Value::Null),
        1 => Ok(docs.remove(0)),
        n => Err(format!("expected one YAML document, found {n}")),
    }
}

/// Parses multi-document YAML or JSON text into objects: skips empty
/// documents, flattens `kind: List` (and any `*List` with `items`), and
/// errors on a document that is not a mapping or lacks apiVersion, kind or
/// metadata.name (metadata.generateName is accepted instead of a name, as
/// Argo CD does for hooks). `origin` names the file or tool in errors.
pub fn parse_manifests(text: &str, origin: &str) -> Result<Vec<Value>, RenderError> {
    let docs = parse_documents(text).map_err(|e| manifest_error(origin, e))?;
    let mut out = Vec::with_capacity(docs.len());
    for (i, doc) in docs.into_iter().enumerate() {
        let label = format!("document {}", i + 1);
        collect_object(doc, &label, origin, &mut out)?;
    }
    Ok(out)
}

/// Objects from one evaluated value (Jsonnet's output): an object, or an array
/// of objects; `List`s are flattened and every object checked as in
/// [`parse_manifests`].
pub(crate) fn objects_from_value(
    mut value: Value,
    origin: &str,
) -> Result<Vec<Value>, RenderError> {
    normalize_numbers(&mut value);
    let mut out = Vec::new();
    match value {
        Value::Array(items) => {
            for (i, item) in items.into_iter().enumerate() {
                if !item.is_null() {
                    collect_object(item, &format!("element {}", i + 1), origin, &mut out)?;
                }
            }
        }
        Value::Null => {}
        other => collect_object(other, "output", origin, &mut out)?,
    }
    Ok(out)
}

fn collect_object(
    doc: Value,
    label: &str,
    origin: &str,
    out: &mut Vec<Value>,
) -> Result<(), RenderError> {
    let Value::Object(map) = &doc else {
        return Err(manifest_error(
            origin,
            format!(
                "{label} is {}, not a Kubernetes object (a mapping)",
                type_name(&doc)
            ),
        ));
    };
    let kind = map
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if kind.ends_with("List") && map.get("apiVersion").is_some() {
        match map.get("items") {
            Some(Value::Array(_)) => {
                let Value::Object(mut map) = doc else {
                    return Ok(());
                };
                let Some(Value::Array(items)) = map.remove("items") else {
                    return Ok(());
                };
                for (j, item) in items.into_iter().enumerate() {
                    if item.is_null() {
                        continue;
                    }
                    collect_object(
                        item,
                        &format!("{label} ({kind}) item {}", j + 1),
                        origin,
                        out,
                    )?;
                }
                return Ok(());
            }
            // An empty `kind: List` renders nothing.
            Some(Value::Null) if kind == "List" => return Ok(()),
            _ => {}
        }
    }
    let mut missing = Vec::new();
    if map
        .get("apiVersion")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        missing.push("apiVersion");
    }
    if kind.is_empty() {
        missing.push("kind");
    }
    let meta = map.get("metadata");
    let named = ["name", "generateName"].iter().any(|k| {
        meta.and_then(|m| m.get(*k))
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    });
    if !named {
        missing.push("metadata.name");
    }
    if !missing.is_empty() {
        let what = if kind.is_empty() {
            String::new()
        } else {
            format!(" ({kind})")
        };
        return Err(manifest_error(
            origin,
            format!("{label}{what} is missing {}", missing.join(", ")),
        ));
    }
    if meta.is_some_and(|m| !m.is_object()) {
        return Err(manifest_error(
            origin,
            format!("{label} ({kind}): metadata is not a mapping"),
        ));
    }
    out.push(doc);
    Ok(())
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_typing_matches_kubernetes_expectations() {
        let docs = parse_documents(
            "a: yes\nb: \"1.0\"\nc: 0644\nd: on\ne: 3.0\nf: 1.5\ng: true\nk: x\nk: y\n",
        )
        .unwrap();
        assert_eq!(
            docs,
            vec![
                json!({"a": "yes", "b": "1.0", "c": 420, "d": "on", "e": 3, "f": 1.5, "g": true, "k": "y"})
            ]
        );
    }

    #[test]
    fn multi_document_skips_empty_and_flattens_lists() {
        let text = "---\n# comment only\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: a}\n- apiVersion: v1\n  kind: Secret\n  metadata: {name: b}\n---\n---\napiVersion: v1\nkind: ConfigMapList\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: c}\n---\napiVersion: v1\nkind: List\nitems: null\n";
        let objs = parse_manifests(text, "x.yaml").unwrap();
        let names: Vec<&str> = objs
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn json_streams_and_tabs_parse() {
        let text = "{\n\t\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {\"name\": \"a\"}}\n{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {\"name\": \"b\"}}";
        let objs = parse_manifests(text, "out").unwrap();
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[1]["metadata"]["name"], "b");
    }

    #[test]
    fn errors_name_document_and_missing_fields() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Service\nmetadata: {}\n";
        let err = parse_manifests(text, "svc.yaml").unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid manifest in svc.yaml: document 2 (Service) is missing metadata.name"
        );
        let err = parse_manifests("- a\n- b\n", "list.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("list.yaml") && err.contains("document 1 is a list"),
            "{err}"
        );
        let err = parse_manifests("foo: bar\n", "f.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing apiVersion, kind, metadata.name"),
            "{err}"
        );
        let err = parse_manifests("a: b\n  c: d\n", "bad.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("invalid manifest in bad.yaml: ") && err.contains("line 2"),
            "{err}"
        );
    }

    #[test]
    fn generate_name_is_accepted() {
        let objs = parse_manifests(
            "apiVersion: batch/v1\nkind: Job\nmetadata:\n  generateName: hook-\n",
            "j",
        )
        .unwrap();
        assert_eq!(objs.len(), 1);
    }
}

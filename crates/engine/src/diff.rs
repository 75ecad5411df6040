//! Compares what applying would produce (a server-side-apply dry-run) with
//! the live object, after removing what never counts as drift.

use crate::jq::JqDeletion;
use ferry_model::IgnoreDifferences;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

/// Annotations servers and tools add that are never drift.
const IGNORED_ANNOTATIONS: [&str; 2] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
];

/// Removes status and server-set metadata.
pub fn normalize(obj: &mut Value) {
    let Some(o) = obj.as_object_mut() else { return };
    o.remove("status");
    if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "managedFields",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "uid",
            "selfLink",
            "deletionGracePeriodSeconds",
        ] {
            meta.remove(k);
        }
        if let Some(ann) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            for a in IGNORED_ANNOTATIONS {
                ann.remove(a);
            }
        }
        for k in ["annotations", "labels"] {
            if meta
                .get(k)
                .and_then(Value::as_object)
                .is_some_and(Map::is_empty)
            {
                meta.remove(k);
            }
        }
    }
}

/// The ignoreDifferences rules that apply to one object.
pub fn rules_for<'a>(
    rules: &'a [IgnoreDifferences],
    group: &str,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Vec<&'a IgnoreDifferences> {
    rules
        .iter()
        .filter(|r| {
            (r.group == group || r.group == "*")
                && (r.kind == kind || r.kind == "*")
                && r.name.as_deref().is_none_or(|n| n.is_empty() || n == name)
                && r.namespace
                    .as_deref()
                    .is_none_or(|n| n.is_empty() || n == namespace)
        })
        .collect()
}

/// Removes ignored fields. `owners` is the live object's managedFields, used
/// by `managedFieldsManagers` rules.
pub fn apply_ignores(obj: &mut Value, rules: &[&IgnoreDifferences], owners: Option<&Value>) {
    for r in rules {
        for p in &r.json_pointers {
            remove_pointer(obj, p);
        }
        for q in &r.jq_path_expressions {
            // Compile errors were reported by `validate_rules` before any
            // comparison; evaluation errors leave the object unchanged, as in Argo CD.
            if let Ok(jq) = compiled_jq(q) {
                let _ = jq.apply(obj);
            }
        }
        if let Some(Value::Array(entries)) = owners {
            for e in entries {
                let manager = e.get("manager").and_then(Value::as_str).unwrap_or_default();
                if r.managed_fields_managers.iter().any(|m| m == manager)
                    && let Some(fields) = e.get("fieldsV1")
                {
                    remove_fields(obj, fields);
                }
            }
        }
    }
}

/// JSON pointers (RFC 6901) where the two differ; empty when equal.
pub fn differences(predicted: &Value, live: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(predicted, live, String::new(), &mut out);
    out
}

fn walk(a: &Value, b: &Value, path: String, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = format!("{path}/{}", k.replace('~', "~0").replace('/', "~1"));
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => walk(va, vb, p, out),
                    (Some(Value::Null), None) | (None, Some(Value::Null)) => {}
                    _ => out.push(p),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                walk(va, vb, format!("{path}/{i}"), out);
            }
        }
        (Value::Number(x), Value::Number(y)) => {
            if x.as_f64() != y.as_f64() {
                out.push(path);
            }
        }
        _ => {
            if a != b {
                out.push(if path.is_empty() { "/".into() } else { path });
            }
        }
    }
}

fn remove_pointer(obj: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return;
    };
    let last = last.replace("~1", "/").replace("~0", "~");
    let target = if parent.is_empty() {
        Some(obj)
    } else {
        obj.pointer_mut(parent)
    };
    match target {
        Some(Value::Object(m)) => {
            m.remove(&last);
        }
        Some(Value::Array(a)) => {
            if let Ok(i) = last.parse::<usize>()
                && i < a.len()
            {
                a.remove(i);
            }
        }
        _ => {}
    }
}

/// Removes the fields a managedFields `fieldsV1` set names.
fn remove_fields(obj: &mut Value, fields: &Value) {
    let Some(set) = fields.as_object() else {
        return;
    };
    for (key, sub) in set {
        let leaf = sub
            .as_object()
            .is_none_or(|m| m.is_empty() || m.contains_key("."));
        if let Some(name) = key.strip_prefix("f:") {
            let Some(map) = obj.as_object_mut() else {
                continue;
            };
            if leaf {
                map.remove(name);
            } else if let Some(child) = map.get_mut(name) {
                remove_fields(child, sub);
            }
        } else if let Some(k) = key.strip_prefix("k:") {
            let (Ok(Value::Object(want)), Some(arr)) =
                (serde_json::from_str::<Value>(k), obj.as_array_mut())
            else {
                continue;
            };
            let matches = |item: &Value| want.iter().all(|(wk, wv)| item.get(wk) == Some(wv));
            if leaf {
                arr.retain(|item| !matches(item));
            } else if let Some(item) = arr.iter_mut().find(|i| matches(i)) {
                remove_fields(item, sub);
            }
        } else if let Some(v) = key.strip_prefix("v:")
            && let (Ok(want), Some(arr)) = (serde_json::from_str::<Value>(v), obj.as_array_mut())
        {
            arr.retain(|item| item != &want);
        }
    }
}

/// The compiled form of a jq path expression, compiled once per distinct
/// expression for the life of the process.
pub fn compiled_jq(expr: &str) -> Result<JqDeletion, String> {
    static CACHE: LazyLock<Mutex<HashMap<String, Result<JqDeletion, String>>>> =
        LazyLock::new(Default::default);
    if let Some(hit) = CACHE.lock().ok().and_then(|c| c.get(expr).cloned()) {
        return hit;
    }
    let compiled = JqDeletion::compile(expr);
    if let Ok(mut c) = CACHE.lock()
        && c.len() < 10_000
    {
        c.insert(expr.to_string(), compiled.clone());
    }
    compiled
}

/// Every jq expression of these rules compiles; the first that does not is
/// the error, naming it. Checked before comparing, so a rule is never skipped.
pub fn validate_rules<'a>(
    rules: impl IntoIterator<Item = &'a IgnoreDifferences>,
) -> Result<(), String> {
    for r in rules {
        for q in &r.jq_path_expressions {
            compiled_jq(q)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn normalize_drops_server_fields() {
        let mut v = json!({ "metadata": { "name": "x", "resourceVersion": "5", "uid": "u", "managedFields": [],
            "annotations": { "deployment.kubernetes.io/revision": "2" } }, "spec": { "a": 1 }, "status": { "b": 2 } });
        normalize(&mut v);
        assert_eq!(
            v,
            json!({ "metadata": { "name": "x" }, "spec": { "a": 1 } })
        );
    }

    #[test]
    fn differences_are_pointers() {
        let a = json!({ "spec": { "replicas": 2, "x": [1, 2], "n": 1 } });
        let b = json!({ "spec": { "replicas": 3, "x": [1, 2], "n": 1.0, "extra": true } });
        assert_eq!(differences(&a, &b), vec!["/spec/extra", "/spec/replicas"]);
        assert!(differences(&a, &a).is_empty());
    }

    #[test]
    fn ignore_rules() {
        let rule = IgnoreDifferences {
            group: "apps".into(),
            kind: "Deployment".into(),
            json_pointers: vec!["/spec/replicas".into()],
            jq_path_expressions: vec![
                ".spec.template.spec.containers[] | select(.name == \"side\") | .image".into(),
            ],
            ..Default::default()
        };
        let rules = [rule];
        let applicable = rules_for(&rules, "apps", "Deployment", "ns", "web");
        assert_eq!(applicable.len(), 1);
        assert!(rules_for(&rules, "", "ConfigMap", "ns", "web").is_empty());
        let mut v = json!({ "spec": { "replicas": 3, "template": { "spec": { "containers": [
            { "name": "main", "image": "a:1" }, { "name": "side", "image": "b:1" } ] } } } });
        apply_ignores(&mut v, &applicable, None);
        assert_eq!(
            v,
            json!({ "spec": { "template": { "spec": { "containers": [
            { "name": "main", "image": "a:1" }, { "name": "side" } ] } } } })
        );
    }

    #[test]
    fn managed_fields_managers() {
        let rule = IgnoreDifferences {
            group: "apps".into(),
            kind: "Deployment".into(),
            managed_fields_managers: vec!["kube-controller-manager".into(), "hpa".into()],
            ..Default::default()
        };
        let owners = json!([
            { "manager": "hpa", "fieldsV1": { "f:spec": { "f:replicas": {} } } },
            { "manager": "ferry", "fieldsV1": { "f:spec": { "f:template": {} } } },
            { "manager": "kube-controller-manager", "fieldsV1": { "f:spec": { "f:template": { "f:spec": {
                "f:containers": { "k:{\"name\":\"main\"}": { "f:image": {} } } } } } } },
        ]);
        let mut v = json!({ "spec": { "replicas": 5, "template": { "spec": { "containers": [{ "name": "main", "image": "x" }] } } } });
        apply_ignores(&mut v, &[&rule], Some(&owners));
        assert_eq!(
            v,
            json!({ "spec": { "template": { "spec": { "containers": [{ "name": "main" }] } } } })
        );
    }
}

/// Fills in list-map key fields that older API servers require for
/// server-side apply (before 1.21 `protocol` had no schema default, and
/// applying a port without it fails with "associative list with keys has an
/// element that omits key field"). The value is the API's own default, so
/// this changes nothing on any server.
pub fn default_list_map_keys(obj: &mut Value) {
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let pod_spec = match kind.as_str() {
        "Pod" => obj.pointer_mut("/spec"),
        "CronJob" => obj.pointer_mut("/spec/jobTemplate/spec/template/spec"),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "Job"
        | "ReplicationController" => obj.pointer_mut("/spec/template/spec"),
        _ => None,
    };
    if let Some(spec) = pod_spec {
        for list in ["containers", "initContainers"] {
            if let Some(Value::Array(cs)) = spec.get_mut(list) {
                for c in cs {
                    default_protocol(c.get_mut("ports"));
                }
            }
        }
    }
    if kind == "Service" {
        default_protocol(obj.pointer_mut("/spec/ports"));
    }
}

fn default_protocol(ports: Option<&mut Value>) {
    if let Some(Value::Array(ports)) = ports {
        for p in ports {
            if let Some(m) = p.as_object_mut() {
                m.entry("protocol")
                    .or_insert_with(|| Value::String("TCP".into()));
            }
        }
    }
}

#[cfg(test)]
mod list_map_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ports_get_their_protocol() {
        let mut svc = json!({ "kind": "Service", "spec": { "ports": [{ "port": 80 }, { "port": 53, "protocol": "UDP" }] } });
        default_list_map_keys(&mut svc);
        assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(svc["spec"]["ports"][1]["protocol"], "UDP");
        let mut dep = json!({ "kind": "Deployment", "spec": { "template": { "spec": {
            "containers": [{ "name": "a", "ports": [{ "containerPort": 8080 }] }] } } } });
        default_list_map_keys(&mut dep);
        assert_eq!(
            dep["spec"]["template"]["spec"]["containers"][0]["ports"][0]["protocol"],
            "TCP"
        );
        let mut cm = json!({ "kind": "ConfigMap", "data": { "ports": "x" } });
        default_list_map_keys(&mut cm);
        assert_eq!(cm, json!({ "kind": "ConfigMap", "data": { "ports": "x" } }));
    }
}

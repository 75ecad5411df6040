//! The `ref-objects` component: objects that already exist on the hub, copied where the
//! Application deploys them (KubeVela `pkg/component/ref_objects.go`).
//!
//! Rendering is split as upstream splits it: [`selectors`] validates `properties.objects`
//! (pure); the controller reads what they select and stores the cleaned objects in
//! [`Component::referred`](crate::Component::referred); the definition's template then renders
//! those as `k8s-objects` does (the first is the workload, the rest outputs `objects-<i>`).
//! Without them (`ferry render`) the component renders nothing and says why.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::{Component, ComponentDefinition, OamError};

/// The `spec.schematic.builtin` value that marks the `ref-objects` definition.
pub const BUILTIN: &str = "ref-objects";

/// Whether `def` is a ref-objects definition.
pub fn is_ref_objects_definition(def: &ComponentDefinition) -> bool {
    def.spec.schematic.builtin.as_deref() == Some(BUILTIN)
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Properties {
    #[serde(default)]
    objects: Vec<RawSelector>,
    #[serde(default)]
    urls: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSelector {
    resource: Option<String>,
    group: Option<String>,
    api_version: Option<String>,
    kind: Option<String>,
    name: Option<String>,
    namespace: Option<String>,
    cluster: Option<String>,
    label_selector: Option<BTreeMap<String, String>>,
    /// Deprecated alias of `labelSelector`.
    selector: Option<BTreeMap<String, String>>,
}

/// What kind of object a selector reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefType {
    /// `resource` (plural, singular or kind, any case) in `group` (core when empty), resolved
    /// by discovery as upstream's RESTMapper does.
    Resource { group: String, resource: String },
    /// The legacy `apiVersion` + `kind` identifier (upstream: behind a feature gate).
    Kind { api_version: String, kind: String },
}

/// One `objects[]` entry, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefSelector {
    pub what: RefType,
    /// `None` with a label selector: list; else get this name (the component's by default).
    pub name: Option<String>,
    /// The Application's namespace when not given.
    pub namespace: String,
    pub label_selector: Option<BTreeMap<String, String>>,
}

/// Validates a ref-objects component's properties into selectors. `app_namespace` fills an
/// empty `namespace`; a name-less selector without labels selects the component's name.
pub fn selectors(component: &Component, app_namespace: &str) -> Result<Vec<RefSelector>, OamError> {
    let bad = |path: &str, reason: String| OamError::Schema {
        site: crate::Site {
            component: component.name.clone(),
            trait_type: None,
        },
        path: path.to_owned(),
        reason,
    };
    let props: Properties = match &component.properties {
        Value::Null => Properties::default(),
        v => serde_json::from_value(v.clone()).map_err(|e| bad("", e.to_string()))?,
    };
    if !props.urls.is_empty() {
        return Err(bad(
            ".urls",
            "objects from URLs are not supported by Ferry (it reads only from the hub \
             cluster); commit the objects to Git or create them on the hub"
                .into(),
        ));
    }
    if props.objects.is_empty() {
        return Err(bad(".objects", "at least one object is needed".into()));
    }
    props
        .objects
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let at = |r: &str| bad(&format!(".objects[{i}]"), r.to_owned());
            if let Some(c) = s.cluster.as_deref().filter(|c| !c.is_empty() && *c != "local") {
                return Err(at(&format!(
                    "cluster `{c}`: Ferry reads referred objects from the hub (`local`) only"
                )));
            }
            let labels = s.label_selector.or(s.selector);
            let name = s.name.filter(|n| !n.is_empty());
            if name.is_some() && labels.is_some() {
                return Err(at("name and labelSelector cannot be both set"));
            }
            let what = match (s.resource, s.api_version, s.kind) {
                (Some(resource), None, None) if !resource.is_empty() => RefType::Resource {
                    group: s.group.unwrap_or_default(),
                    resource,
                },
                (None, Some(api_version), Some(kind)) if s.group.is_none() => {
                    RefType::Kind { api_version, kind }
                }
                _ => {
                    return Err(at(
                        "give `resource` (and `group` outside the core group), or `apiVersion` and `kind`",
                    ));
                }
            };
            Ok(RefSelector {
                what,
                name: if labels.is_some() {
                    None
                } else {
                    Some(name.unwrap_or_else(|| component.name.clone()))
                },
                namespace: s
                    .namespace
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| app_namespace.to_owned()),
                label_selector: labels,
            })
        })
        .collect()
}

/// A live object as upstream dispatches it (`ClearRefObjectForDispatch`): no server-set
/// metadata, no status, and a Service without its allocated cluster IPs.
pub fn clean(object: &Value) -> Value {
    let mut o = object.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "resourceVersion",
            "generation",
            "ownerReferences",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "uid",
            "creationTimestamp",
            "selfLink",
        ] {
            m.remove(k);
        }
        // The source's ownership must not travel with the copy.
        if let Some(a) = m.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
    }
    if let Some(m) = o.as_object_mut() {
        m.remove("status");
    }
    let is_service = o.get("kind").and_then(Value::as_str) == Some("Service")
        && o.get("apiVersion").and_then(Value::as_str) == Some("v1");
    if is_service
        && let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut)
        && spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .is_some_and(|ip| !ip.is_empty() && ip != "None")
    {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn comp(props: Value) -> Component {
        serde_json::from_value(json!({"name": "c", "type": "ref-objects", "properties": props}))
            .unwrap()
    }

    #[test]
    fn selectors_default_name_and_namespace_and_refuse_what_ferry_cannot_read() {
        let s = selectors(
            &comp(json!({"objects": [{"resource": "configmap"},
                {"resource": "deployment", "group": "apps", "labelSelector": {"app": "x"}, "namespace": "other"}]})),
            "apps",
        )
        .unwrap();
        assert_eq!(s[0].name.as_deref(), Some("c"));
        assert_eq!(s[0].namespace, "apps");
        assert_eq!(s[1].name, None);
        assert_eq!(s[1].namespace, "other");
        assert_eq!(
            s[1].what,
            RefType::Resource {
                group: "apps".into(),
                resource: "deployment".into()
            }
        );
        for (props, want) in [
            (
                json!({"objects": [{"resource": "secret", "name": "a", "labelSelector": {"a": "b"}}]}),
                "cannot be both set",
            ),
            (json!({"objects": [{"name": "a"}]}), "give `resource`"),
            (
                json!({"objects": [{"resource": "secret", "cluster": "edge"}]}),
                "from the hub",
            ),
            (json!({"urls": ["https://x/y.yaml"]}), "properties.urls"),
            (json!({"objects": []}), "at least one"),
            (
                json!({"objects": [{"resource": "secret", "nmae": "a"}]}),
                "unknown field `nmae`",
            ),
        ] {
            let e = selectors(&comp(props), "apps").unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn clean_drops_server_state_and_a_services_cluster_ip() {
        let o = clean(&json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "s", "namespace": "n", "uid": "u", "resourceVersion": "1",
                "labels": {"a": "b"}, "managedFields": [], "creationTimestamp": "t"},
            "spec": {"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"], "ports": []},
            "status": {"loadBalancer": {}}}));
        assert_eq!(
            o,
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "s", "namespace": "n", "labels": {"a": "b"}},
                "spec": {"ports": []}})
        );
        let headless = clean(
            &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "h"},
            "spec": {"clusterIP": "None"}}),
        );
        assert_eq!(headless["spec"]["clusterIP"], "None");
    }
}

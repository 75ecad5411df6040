//! CRDs Ferry installs when absent. The schemas preserve unknown fields, so
//! every field Argo CD accepts is accepted; Ferry validates what it reads.

/// Label on CRDs Ferry installed itself.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "ferry";

pub fn application_crd() -> serde_json::Value {
    crd(
        "applications",
        "Application",
        "ApplicationList",
        &["app", "apps"],
        serde_json::json!([
            { "name": "Sync Status", "type": "string", "jsonPath": ".status.sync.status" },
            { "name": "Health Status", "type": "string", "jsonPath": ".status.health.status" },
            { "name": "Revision", "type": "string", "jsonPath": ".status.sync.revision", "priority": 10 },
        ]),
    )
}

pub fn appproject_crd() -> serde_json::Value {
    crd(
        "appprojects",
        "AppProject",
        "AppProjectList",
        &["appproj", "appprojs"],
        serde_json::json!([]),
    )
}

fn crd(
    plural: &str,
    kind: &str,
    list_kind: &str,
    short: &[&str],
    columns: serde_json::Value,
) -> serde_json::Value {
    let open =
        serde_json::json!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true });
    serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": format!("{plural}.argoproj.io"),
            "labels": { MANAGED_BY_LABEL: MANAGED_BY_VALUE },
        },
        "spec": {
            "group": "argoproj.io",
            "scope": "Namespaced",
            "names": { "plural": plural, "singular": kind.to_lowercase(), "kind": kind, "listKind": list_kind, "shortNames": short },
            "versions": [{
                "name": "v1alpha1", "served": true, "storage": true,
                // Like Argo CD's own CRDs: no status subresource, so existing
                // tooling that writes status with the object keeps working.
                "additionalPrinterColumns": columns,
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "apiVersion": { "type": "string" }, "kind": { "type": "string" },
                        "metadata": { "type": "object" },
                        "spec": open, "status": open, "operation": open,
                    },
                    "required": ["metadata", "spec"],
                }},
            }],
        },
    })
}

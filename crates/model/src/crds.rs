//! CRDs Ferry installs when absent. The schemas preserve unknown fields, so
//! every field Argo CD accepts is accepted; Ferry validates what it reads.

/// Label on CRDs Ferry installed itself.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "ferry";

pub fn application_crd() -> serde_json::Value {
    crd(
        ARGO,
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
        ARGO,
        "appprojects",
        "AppProject",
        "AppProjectList",
        &["appproj", "appprojs"],
        serde_json::json!([]),
    )
}

/// Group, version, and whether status is a subresource.
type GroupVersion = (&'static str, &'static str, bool);
// Like Argo CD's own CRDs: no status subresource, so existing tooling that
// writes status with the object keeps working.
pub fn applicationset_crd() -> serde_json::Value {
    crd(
        ARGO,
        "applicationsets",
        "ApplicationSet",
        "ApplicationSetList",
        &["appset", "appsets"],
        serde_json::json!([]),
    )
}

const ARGO: GroupVersion = ("argoproj.io", "v1alpha1", false);
// Like Flux's CRDs: status is a subresource and spec changes bump the generation.
const FLUX_IMAGE: GroupVersion = ("image.toolkit.fluxcd.io", "v1", true);
const FLUX_SOURCE: GroupVersion = ("source.toolkit.fluxcd.io", "v1", true);

/// The Flux image automation CRDs and the GitRepository they point at.
pub fn flux_crds() -> Vec<serde_json::Value> {
    let ready = || {
        serde_json::json!([
            { "name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status" },
            { "name": "Status", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].message" },
        ])
    };
    let with = |extra: serde_json::Value| {
        let mut cols = ready();
        if let (Some(c), Some(e)) = (cols.as_array_mut(), extra.as_array()) {
            c.splice(0..0, e.iter().cloned());
        }
        cols
    };
    vec![
        crd(
            FLUX_IMAGE,
            "imagerepositories",
            "ImageRepository",
            "ImageRepositoryList",
            &[],
            with(serde_json::json!([
                { "name": "Last scan", "type": "string", "jsonPath": ".status.lastScanResult.scanTime" },
                { "name": "Tags", "type": "integer", "jsonPath": ".status.lastScanResult.tagCount" },
            ])),
        ),
        crd(
            FLUX_IMAGE,
            "imagepolicies",
            "ImagePolicy",
            "ImagePolicyList",
            &[],
            with(serde_json::json!([
                { "name": "Image", "type": "string", "jsonPath": ".status.latestRef.name" },
                { "name": "Tag", "type": "string", "jsonPath": ".status.latestRef.tag" },
            ])),
        ),
        crd(
            FLUX_IMAGE,
            "imageupdateautomations",
            "ImageUpdateAutomation",
            "ImageUpdateAutomationList",
            &[],
            with(serde_json::json!([
                { "name": "Last run", "type": "string", "jsonPath": ".status.lastAutomationRunTime" },
            ])),
        ),
        crd(
            FLUX_SOURCE,
            "gitrepositories",
            "GitRepository",
            "GitRepositoryList",
            &["gitrepo"],
            serde_json::json!([
                { "name": "URL", "type": "string", "jsonPath": ".spec.url" },
            ]),
        ),
    ]
}

/// Every CRD Ferry serves, in the order they are installed: what the controller installs and
/// upgrades, and what `ferry install` prints.
pub fn all() -> Vec<serde_json::Value> {
    let mut all = vec![application_crd(), appproject_crd(), applicationset_crd()];
    all.extend(flux_crds());
    all.extend(oam_crds());
    all
}

/// KubeVela's `core.oam.dev/v1beta1` Application and the definitions platform teams apply.
pub fn oam_crds() -> Vec<serde_json::Value> {
    let oam = ("core.oam.dev", "v1beta1", true);
    let app_columns = serde_json::json!([
        { "name": "Component", "type": "string", "jsonPath": ".spec.components[*].name" },
        { "name": "Type", "type": "string", "jsonPath": ".spec.components[*].type" },
        { "name": "Phase", "type": "string", "jsonPath": ".status.status" },
        { "name": "Healthy", "type": "boolean", "jsonPath": ".status.services[*].healthy" },
        { "name": "Status", "type": "string", "jsonPath": ".status.services[*].message" },
        { "name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp" },
    ]);
    let defs = |plural: &str, kind: &str, short: &[&str]| {
        crd(
            oam,
            plural,
            kind,
            &format!("{kind}List"),
            short,
            serde_json::json!([
                { "name": "Description", "type": "string", "jsonPath": ".metadata.annotations.definition\\.oam\\.dev/description" },
                { "name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp" },
            ]),
        )
    };
    vec![
        crd(
            oam,
            "applications",
            "Application",
            "ApplicationList",
            &[],
            app_columns,
        ),
        defs("componentdefinitions", "ComponentDefinition", &["comp"]),
        defs("traitdefinitions", "TraitDefinition", &["trait"]),
        defs(
            "workflowstepdefinitions",
            "WorkflowStepDefinition",
            &["workflowstep"],
        ),
        defs("policydefinitions", "PolicyDefinition", &["def-policy"]),
    ]
}

fn crd(
    (group, version, status_subresource): GroupVersion,
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
            "name": format!("{plural}.{group}"),
            "labels": { MANAGED_BY_LABEL: MANAGED_BY_VALUE },
        },
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": { "plural": plural, "singular": kind.to_lowercase(), "kind": kind, "listKind": list_kind, "shortNames": short },
            "versions": [{
                "name": version, "served": true, "storage": true,
                "subresources": if status_subresource { serde_json::json!({ "status": {} }) } else { serde_json::json!({}) },
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

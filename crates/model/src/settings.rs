//! The resource settings of `argocd-cm` that change how objects are compared
//! and assessed: `resource.customizations.health.<group_kind>` (Lua),
//! `resource.customizations.ignoreDifferences.<group_kind>` / `.all`, and the
//! legacy `resource.customizations` block, read as Argo CD reads them.
//!
//! A key Ferry does not act on is not dropped silently: [`ResourceSettings::unsupported`]
//! lists it, and the controller shows it.

use crate::IgnoreDifferences;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// A Lua health script for the kinds its key names.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthScript {
    /// `group/Kind` (core kinds: `Kind`); may be a glob such as `*.crossplane.io/*`.
    pub key: String,
    pub script: String,
    /// `resource.customizations.useOpenLibs.<group_kind>`: the full Lua
    /// standard library, which Argo CD then allows too.
    pub use_open_libs: bool,
}

/// Parsed resource settings; `Default` is what an absent `argocd-cm` means.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResourceSettings {
    pub health: Vec<HealthScript>,
    /// One rule per key, with `group`/`kind` from the key (`all` is `*`/`*`).
    pub ignore_differences: Vec<IgnoreDifferences>,
    /// Keys read but not acted on (e.g. `resource.customizations.actions.*`).
    pub unsupported: Vec<String>,
    /// `resource.exclusions`: kinds Ferry never manages.
    pub exclusions: Vec<ResourceFilter>,
    /// `resource.inclusions`: when set, the only kinds Ferry manages.
    pub inclusions: Vec<ResourceFilter>,
    /// `resource.compareoptions.ignoreAggregatedRoles`: the `rules` of a
    /// ClusterRole with an `aggregationRule` are filled by Kubernetes, not Git.
    pub ignore_aggregated_roles: bool,
}

/// One entry of `resource.exclusions` / `resource.inclusions`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceFilter {
    #[serde(default)]
    pub api_groups: Vec<String>,
    #[serde(default)]
    pub kinds: Vec<String>,
    #[serde(default)]
    pub clusters: Vec<String>,
}

impl ResourceFilter {
    /// Argo CD's match: groups and clusters by glob, kinds exactly (or `*`);
    /// an empty list matches everything.
    pub fn matches(&self, group: &str, kind: &str, cluster: &str) -> bool {
        let any = |pats: &[String], v: &str, glob: bool| {
            pats.is_empty()
                || pats
                    .iter()
                    .any(|p| p == "*" || p == v || (glob && crate::glob_match(p, v)))
        };
        any(&self.api_groups, group, true)
            && any(&self.kinds, kind, false)
            && any(&self.clusters, cluster, true)
    }
}

/// `resource.compareoptions`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CompareOptions {
    #[serde(default)]
    ignore_aggregated_roles: bool,
    /// Ferry never compares `status`; `crd`, `all` and empty agree, `off` cannot be honoured.
    #[serde(default)]
    ignore_resource_status_field: Option<Value>,
    /// Accepted; Ferry re-compares only when an object's resourceVersion changes.
    #[serde(default, rename = "ignoreDifferencesOnResourceUpdates")]
    _ignore_differences_on_resource_updates: Option<bool>,
}

/// The value of an ignoreDifferences customization.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IgnoreSpec {
    #[serde(default)]
    json_pointers: Vec<String>,
    #[serde(default)]
    jq_path_expressions: Vec<String>,
    #[serde(default)]
    managed_fields_managers: Vec<String>,
}

/// One entry of the legacy `resource.customizations` map.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct LegacyEntry {
    #[serde(rename = "health.lua", default)]
    health_lua: Option<String>,
    #[serde(rename = "health.lua.useOpenLibs", default)]
    use_open_libs: Option<bool>,
    #[serde(default)]
    ignore_differences: Option<String>,
    #[serde(default)]
    actions: Option<String>,
    #[serde(default)]
    ignore_resource_updates: Option<String>,
    #[serde(default)]
    known_type_fields: Option<serde_json::Value>,
}

const PREFIX: &str = "resource.customizations";

impl ResourceSettings {
    /// Reads `argocd-cm`'s data. Errors name the key.
    pub fn parse(data: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut health: BTreeMap<String, HealthScript> = BTreeMap::new();
        let mut ignores: BTreeMap<String, IgnoreDifferences> = BTreeMap::new();
        let mut open_libs: BTreeMap<String, bool> = BTreeMap::new();
        let mut unsupported = Vec::new();

        if let Some(legacy) = data.get(PREFIX) {
            let entries: BTreeMap<String, LegacyEntry> =
                serde_saphyr_like(legacy).map_err(|e| format!("argocd-cm {PREFIX}: {e}"))?;
            for (key, e) in entries {
                if let Some(script) = e.health_lua {
                    health.insert(
                        key.clone(),
                        HealthScript {
                            key: key.clone(),
                            script,
                            use_open_libs: e.use_open_libs.unwrap_or(false),
                        },
                    );
                }
                if let Some(text) = e.ignore_differences {
                    let field = format!("{PREFIX}[{key}].ignoreDifferences");
                    ignores.insert(key.clone(), ignore_rule(&key, &text, &field)?);
                }
                if e.actions.is_some() {
                    unsupported.push(format!("{PREFIX}[{key}].actions"));
                }
                if e.ignore_resource_updates.is_some() || e.known_type_fields.is_some() {
                    // Performance and typing hints: Ferry compares with the API
                    // server's own dry-run, which needs neither.
                }
            }
        }

        for (k, v) in data {
            if not_served(k, v) {
                unsupported.push(k.clone());
                continue;
            }
            let Some(rest) = k.strip_prefix(&format!("{PREFIX}.")) else {
                continue;
            };
            let Some((kind_of, group_kind)) = rest.split_once('.') else {
                return Err(format!(
                    "argocd-cm {k}: expected {PREFIX}.<type>.<group_kind>"
                ));
            };
            let key = override_key(group_kind).map_err(|e| format!("argocd-cm {k}: {e}"))?;
            match kind_of {
                "health" => {
                    let entry = health.entry(key.clone()).or_insert_with(|| HealthScript {
                        key: key.clone(),
                        script: String::new(),
                        use_open_libs: false,
                    });
                    entry.script = v.clone();
                }
                "useOpenLibs" => {
                    let on = match v.trim() {
                        "true" | "True" | "TRUE" | "1" | "t" | "T" => true,
                        "false" | "False" | "FALSE" | "0" | "f" | "F" => false,
                        other => {
                            return Err(format!("argocd-cm {k}: {other:?} is not a boolean"));
                        }
                    };
                    open_libs.insert(key, on);
                }
                "ignoreDifferences" => {
                    ignores.insert(key.clone(), ignore_rule(&key, v, k)?);
                }
                "actions" => unsupported.push(k.clone()),
                "ignoreResourceUpdates" | "knownTypeFields" => {}
                other => {
                    return Err(format!(
                        "argocd-cm {k}: resource customization type {other} not supported"
                    ));
                }
            }
        }
        let mut exclusions = Vec::new();
        let mut inclusions = Vec::new();
        for (key, out) in [
            ("resource.exclusions", &mut exclusions),
            ("resource.inclusions", &mut inclusions),
        ] {
            if let Some(text) = data.get(key) {
                *out = serde_saphyr_like::<Vec<ResourceFilter>>(text)
                    .map_err(|e| format!("argocd-cm {key}: {e}"))?;
            }
        }
        let mut ignore_aggregated_roles = false;
        if let Some(text) = data.get("resource.compareoptions") {
            let o: CompareOptions = serde_saphyr_like(text)
                .map_err(|e| format!("argocd-cm resource.compareoptions: {e}"))?;
            ignore_aggregated_roles = o.ignore_aggregated_roles;
            // YAML reads a bare `off` as false.
            let off = match &o.ignore_resource_status_field {
                Some(Value::Bool(false)) => true,
                Some(Value::String(v)) => matches!(v.trim(), "off" | "false"),
                _ => false,
            };
            if off {
                return Err(
                    "argocd-cm resource.compareoptions.ignoreResourceStatusField: off is not supported: Ferry never compares status".into(),
                );
            }
        }
        for (key, on) in open_libs {
            if let Some(h) = health.get_mut(&key) {
                h.use_open_libs = on;
            }
        }
        Ok(ResourceSettings {
            health: health
                .into_values()
                .filter(|h| !h.script.trim().is_empty())
                .collect(),
            ignore_differences: ignores.into_values().collect(),
            unsupported,
            exclusions,
            inclusions,
            ignore_aggregated_roles,
        })
    }

    /// Why Ferry must not manage this kind on this cluster, if the settings say so.
    /// Argo CD always excludes Events and metrics; an exclusion wins over an inclusion.
    pub fn excluded(&self, group: &str, kind: &str, cluster: &str) -> Option<&'static str> {
        let builtin = matches!(
            (group, kind),
            ("", "Event") | ("events.k8s.io", _) | ("metrics.k8s.io", _)
        );
        if builtin
            || self
                .exclusions
                .iter()
                .any(|f| f.matches(group, kind, cluster))
        {
            return Some("resource.exclusions");
        }
        if !self.inclusions.is_empty()
            && !self
                .inclusions
                .iter()
                .any(|f| f.matches(group, kind, cluster))
        {
            return Some("resource.inclusions");
        }
        None
    }

    /// The health script for an object's group and kind: an exact key first,
    /// then the first glob key that matches (sorted, so the choice is stable).
    pub fn health_script(&self, group: &str, kind: &str) -> Option<&HealthScript> {
        let key = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{group}/{kind}")
        };
        self.health.iter().find(|h| h.key == key).or_else(|| {
            self.health
                .iter()
                .find(|h| h.key.contains('*') && crate::glob_match(&h.key, &key))
        })
    }
}

/// `argocd-cm` keys that change what Argo CD delivers or when, and that Ferry
/// does not act on: shown on every app rather than ignored. Keys for the UI,
/// accounts and SSO are the API server's, or change nothing delivered.
fn not_served(key: &str, value: &str) -> bool {
    const KEYS: &[&str] = &[
        "application.instanceLabelKey",
        "resource.respectRBAC",
        "helm.valuesFileSchemes",
        "timeout.reconciliation",
        "timeout.hard.reconciliation",
        "kustomize.buildOptions",
        "application.sync.impersonation.enabled",
        "resource.sensitive.mask.annotations",
    ];
    const PREFIXES: &[&str] = &[
        "kustomize.buildOptions.",
        "kustomize.path.",
        "kustomize.version.",
    ];
    match key {
        // Ferry tracks by annotation, Argo CD's default since 3.0.
        "application.resourceTrackingMethod" => value.trim() != "annotation",
        // Generators Ferry always has on; turning one off is not honoured.
        "jsonnet.enable" | "helm.enable" | "kustomize.enable" => value.trim() == "false",
        _ => KEYS.contains(&key) || PREFIXES.iter().any(|p| key.starts_with(p)),
    }
}

/// `apps_Deployment` → `apps/Deployment`; `Service` stays `Service`; `all` → `*/*`.
fn override_key(group_kind: &str) -> Result<String, String> {
    if group_kind == "all" {
        return Ok("*/*".into());
    }
    let parts: Vec<&str> = group_kind.split('_').collect();
    match parts.as_slice() {
        [kind] => Ok((*kind).to_string()),
        [group, kind] => Ok(format!("{group}/{kind}")),
        _ => Err(format!(
            "group kind should be in format `{PREFIX}.<type>.<group_kind>`, got {group_kind:?}"
        )),
    }
}

fn ignore_rule(key: &str, text: &str, field: &str) -> Result<IgnoreDifferences, String> {
    let spec: IgnoreSpec =
        serde_saphyr_like(text).map_err(|e| format!("argocd-cm {field}: {e}"))?;
    let (group, kind) = match key.split_once('/') {
        Some((g, k)) => (g.to_string(), k.to_string()),
        None => (String::new(), key.to_string()),
    };
    Ok(IgnoreDifferences {
        group,
        kind,
        json_pointers: spec.json_pointers,
        jq_path_expressions: spec.jq_path_expressions,
        managed_fields_managers: spec.managed_fields_managers,
        ..IgnoreDifferences::default()
    })
}

/// YAML (or JSON) text into a typed value.
fn serde_saphyr_like<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, String> {
    serde_saphyr::from_str(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn split_and_legacy_keys_as_argo_cd_reads_them() {
        let s = ResourceSettings::parse(&data(&[
            (
                "resource.customizations",
                "cert-manager.io/Certificate:\n  health.lua: |\n    return {status = 'Healthy'}\n  ignoreDifferences: |\n    jsonPointers:\n    - /spec/duration\n",
            ),
            (
                "resource.customizations.health.example.com_Widget",
                "hs = {}\nhs.status = 'Healthy'\nreturn hs\n",
            ),
            ("resource.customizations.useOpenLibs.example.com_Widget", "true"),
            (
                "resource.customizations.ignoreDifferences.all",
                "managedFieldsManagers:\n- kube-controller-manager\n",
            ),
            (
                "resource.customizations.ignoreDifferences.Service",
                "jqPathExpressions:\n- .spec.ports[] | select(.name == \"x\")\n",
            ),
            ("resource.customizations.actions.apps_Deployment", "x"),
            ("resource.customizations.health.*.crossplane.io_*", "return {status='Healthy'}"),
        ]))
        .unwrap();
        let keys: Vec<&str> = s.health.iter().map(|h| h.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "*.crossplane.io/*",
                "cert-manager.io/Certificate",
                "example.com/Widget"
            ]
        );
        assert!(
            s.health_script("example.com", "Widget")
                .unwrap()
                .use_open_libs
        );
        assert!(
            !s.health_script("cert-manager.io", "Certificate")
                .unwrap()
                .use_open_libs
        );
        assert_eq!(
            s.health_script("pkg.crossplane.io", "Provider")
                .unwrap()
                .key,
            "*.crossplane.io/*"
        );
        assert!(s.health_script("apps", "Deployment").is_none());
        let rules: Vec<(String, String)> = s
            .ignore_differences
            .iter()
            .map(|r| (r.group.clone(), r.kind.clone()))
            .collect();
        assert_eq!(
            rules,
            [
                ("*".to_string(), "*".to_string()),
                ("".to_string(), "Service".to_string()),
                ("cert-manager.io".to_string(), "Certificate".to_string()),
            ]
        );
        assert_eq!(
            s.unsupported,
            ["resource.customizations.actions.apps_Deployment"]
        );
    }

    #[test]
    fn exclusions_inclusions_and_compare_options() {
        let s = ResourceSettings::parse(&data(&[
            (
                "resource.exclusions",
                "- apiGroups: ['*.k8s.io']\n  kinds: ['*']\n  clusters: ['https://prod*']\n- kinds: [Secret]\n",
            ),
            ("resource.inclusions", "- apiGroups: ['', apps, '*.k8s.io']\n"),
            ("resource.compareoptions", "ignoreAggregatedRoles: true\nignoreResourceStatusField: crd\n"),
        ]))
        .unwrap();
        assert!(s.ignore_aggregated_roles);
        assert_eq!(
            s.excluded("networking.k8s.io", "Ingress", "https://prod-1"),
            Some("resource.exclusions")
        );
        assert_eq!(
            s.excluded("networking.k8s.io", "Ingress", "https://dev"),
            None
        );
        assert_eq!(
            s.excluded("", "Secret", "https://dev"),
            Some("resource.exclusions")
        );
        assert_eq!(s.excluded("", "ConfigMap", "https://dev"), None);
        assert_eq!(
            s.excluded("batch", "Job", "https://dev"),
            Some("resource.inclusions")
        );
        assert_eq!(
            s.excluded("", "Event", "https://dev"),
            Some("resource.exclusions")
        );
        let err = ResourceSettings::parse(&data(&[(
            "resource.compareoptions",
            "ignoreResourceStatusField: off\n",
        )]))
        .unwrap_err();
        assert!(err.contains("never compares status"), "{err}");
        let err = ResourceSettings::parse(&data(&[("resource.exclusions", "- apiGroup: [x]\n")]))
            .unwrap_err();
        assert!(
            err.contains("resource.exclusions") && err.contains("apiGroup"),
            "{err}"
        );
    }

    #[test]
    fn delivery_settings_ferry_does_not_act_on_are_listed() {
        let s = ResourceSettings::parse(&data(&[
            ("timeout.reconciliation", "60s"),
            ("application.resourceTrackingMethod", "annotation"),
            ("kustomize.buildOptions", "--enable-helm"),
            ("jsonnet.enable", "true"),
            ("ui.bannercontent", "hello"),
        ]))
        .unwrap();
        assert_eq!(
            s.unsupported,
            ["kustomize.buildOptions", "timeout.reconciliation"]
        );
        let s = ResourceSettings::parse(&data(&[("application.resourceTrackingMethod", "label")]))
            .unwrap();
        assert_eq!(s.unsupported, ["application.resourceTrackingMethod"]);
    }

    #[test]
    fn bad_keys_and_values_name_the_key() {
        for (k, v, want) in [
            ("resource.customizations.health.a_b_c", "x", "a_b_c"),
            (
                "resource.customizations.colour.apps_Deployment",
                "x",
                "colour not supported",
            ),
            (
                "resource.customizations.useOpenLibs.apps_Deployment",
                "maybe",
                "not a boolean",
            ),
            (
                "resource.customizations.ignoreDifferences.apps_Deployment",
                "jsonPointer: [x]",
                "jsonPointer",
            ),
        ] {
            let err = ResourceSettings::parse(&data(&[(k, v)])).unwrap_err();
            assert!(err.contains(k) && err.contains(want), "{k}: {err}");
        }
    }
}

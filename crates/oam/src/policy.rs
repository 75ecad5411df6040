//! KubeVela's application policies (`spec.policies[]`) as pure functions.
//!
//! - `topology`: [`Topology`], [`placements`] (which clusters, which namespace).
//! - `override`: [`OverridePolicy`], [`apply_overrides`] (per-placement component patches).
//! - `garbage-collect`: [`GarbageCollect`], [`gc_strategy`] (prune decisions).
//! - `apply-once`: [`ApplyOnce`], [`apply_once_paths`] (fields not to re-apply).
//! - `shared-resource`: [`SharedResource`], [`is_shared`] (objects several apps may own).
//! - [`deploy_targets`]: what a `deploy` step applies where (topologies x overrides).
//!
//! Semantics follow KubeVela's policy types (`apis/core.oam.dev/v1alpha1`: `policy_types.go`,
//! `garbagecollect_policy_types.go`, `applyonce_policy_types.go`,
//! `sharedresource_policy_types.go`, `resource_policy_types.go`), `pkg/policy/topology.go` and
//! `pkg/policy/envbinding/patch.go` (`PatchComponents`, `MergeComponent`); the departures are
//! listed in `docs/oam.md`, section "Policies". No I/O: the caller passes the cluster list.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{
    Application, Component, ComponentTrait, LABEL_COMPONENT, LABEL_TRAIT_TYPE, LABEL_WORKLOAD_TYPE,
    OamError, Policy,
};

/// The hub cluster's name in KubeVela (`multicluster.ClusterLocalName`).
pub const LOCAL_CLUSTER: &str = "local";
/// KubeVela's `oam.LabelOAMResourceType` (`WORKLOAD` / `TRAIT`), read by `oamTypes` selectors.
pub const LABEL_OAM_RESOURCE_TYPE: &str = "app.oam.dev/resourceType";

fn err(policy: &Policy, reason: impl Into<String>) -> OamError {
    OamError::Policy {
        policy: policy.name.clone(),
        reason: reason.into(),
    }
}

/// Reads `policy.properties` as `T` after checking `policy.type`; unknown fields are errors
/// (KubeVela parses topology with `StrictUnmarshal`).
fn parse<T: DeserializeOwned>(policy: &Policy, type_name: &str) -> Result<T, OamError> {
    if policy.type_name != type_name {
        return Err(err(
            policy,
            format!(
                "expected a `{type_name}` policy, got `{}`",
                policy.type_name
            ),
        ));
    }
    let props = match &policy.properties {
        Value::Null => Value::Object(Map::new()),
        v => v.clone(),
    };
    serde_json::from_value(props).map_err(|e| err(policy, format!("properties: {e}")))
}

/// The policy types Ferry serves.
pub const SERVED_POLICY_TYPES: &[&str] = &[
    "topology",
    "override",
    "garbage-collect",
    "apply-once",
    "shared-resource",
    "take-over",
    "read-only",
    "resource-update",
    "replication",
];

/// Parses every policy of `app`, so a bad or unserved one is an error before anything is
/// rendered or applied. The controller and `ferry render` both call it: a policy type Ferry
/// does not serve is refused the same way in both.
pub fn check_policies(app: &Application) -> Result<(), OamError> {
    for p in &app.spec.policies {
        match p.type_name.as_str() {
            "topology" => Topology::from_policy(p).map(drop),
            "override" => OverridePolicy::from_policy(p).map(drop),
            "garbage-collect" => GarbageCollect::from_policy(p).map(drop),
            "apply-once" => ApplyOnce::from_policy(p).map(drop),
            "shared-resource" => SharedResource::from_policy(p).map(drop),
            "take-over" => SharedResource::take_over_from_policy(p).map(drop),
            "read-only" => ReadOnly::from_policy(p).map(drop),
            "resource-update" => ResourceUpdate::from_policy(p).map(drop),
            "replication" => Replication::from_policy(p).map(drop),
            other => Err(err(
                p,
                format!(
                    "type `{other}` is not supported (Ferry serves {})",
                    SERVED_POLICY_TYPES.join(", ")
                ),
            )),
        }?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// topology

/// `topology` properties.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Topology {
    /// Cluster names; `local` is the hub. Exclusive with `clusterLabelSelector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<Vec<String>>,
    /// Every label must match (`client.MatchingLabels`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_label_selector: Option<BTreeMap<String, String>>,
    /// Deprecated alias of `clusterLabelSelector`.
    #[serde(
        default,
        rename = "clusterSelector",
        skip_serializing_if = "Option::is_none"
    )]
    pub deprecated_cluster_selector: Option<BTreeMap<String, String>>,
    /// Target namespace in the selected clusters; `None` = the objects' own / the app's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// An empty selection is not an error.
    #[serde(default)]
    pub allow_empty: bool,
}

impl Topology {
    pub fn from_policy(policy: &Policy) -> Result<Self, OamError> {
        let t: Topology = parse(policy, "topology")?;
        if t.clusters.is_some() && t.label_selector().is_some() {
            return Err(err(
                policy,
                "`clusters` and `clusterLabelSelector` are exclusive",
            ));
        }
        if t.namespace.as_deref() == Some("") {
            return Err(err(policy, "`namespace` is empty"));
        }
        Ok(t)
    }

    fn label_selector(&self) -> Option<&BTreeMap<String, String>> {
        self.cluster_label_selector
            .as_ref()
            .or(self.deprecated_cluster_selector.as_ref())
    }
}

/// A cluster the controller knows (`vela cluster list`): its name and labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The cluster's Kubernetes version, when known (renders follow it).
    pub version: Option<crate::ClusterVersion>,
}

/// Where a `deploy` step applies: a cluster and, when the topology sets one, a namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Placement {
    pub cluster: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl Placement {
    /// The hub, no namespace override: what an app without topology deploys to.
    pub fn local() -> Self {
        Placement {
            cluster: LOCAL_CLUSTER.into(),
            namespace: None,
        }
    }
}

/// The placements of one `topology` policy. `clusters` by name (in the given order, duplicates
/// dropped; a name that is neither `local` nor in `clusters` is an error naming it), or by
/// `clusterLabelSelector` (every listed label equal; in `clusters` order), or, with neither,
/// the hub (`local`). An empty selection is an error unless `allowEmpty`.
pub fn placements(policy: &Policy, clusters: &[ClusterInfo]) -> Result<Vec<Placement>, OamError> {
    let t = Topology::from_policy(policy)?;
    let mut names: Vec<&str> = Vec::new();
    if let Some(wanted) = &t.clusters {
        for name in wanted {
            if name != LOCAL_CLUSTER && !clusters.iter().any(|c| &c.name == name) {
                let mut known: Vec<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
                if !known.contains(&LOCAL_CLUSTER) {
                    known.insert(0, LOCAL_CLUSTER);
                }
                return Err(err(
                    policy,
                    format!(
                        "unknown cluster `{name}`; known clusters: {}",
                        known.join(", ")
                    ),
                ));
            }
            names.push(name);
        }
    } else if let Some(selector) = t.label_selector() {
        for c in clusters {
            if selector.iter().all(|(k, v)| c.labels.get(k) == Some(v)) {
                names.push(&c.name);
            }
        }
    } else {
        names.push(LOCAL_CLUSTER);
    }
    let mut seen = BTreeSet::new();
    names.retain(|n| seen.insert(*n));
    if names.is_empty() && !t.allow_empty {
        let what = match t.label_selector() {
            Some(s) => format!(
                "no cluster matches clusterLabelSelector {}",
                s.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            None => "`clusters` is empty".into(),
        };
        return Err(err(
            policy,
            format!("{what} (set allowEmpty: true to allow)"),
        ));
    }
    Ok(names
        .into_iter()
        .map(|cluster| Placement {
            cluster: cluster.to_owned(),
            namespace: t.namespace.clone(),
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// override

/// `override` properties.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OverridePolicy {
    #[serde(default)]
    pub components: Vec<ComponentPatch>,
    /// Component names to keep after patching; `None` keeps all, `[]` keeps none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Vec<String>>,
}

/// `override.components[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComponentPatch {
    /// Component name or glob (`*` = any run of characters, whole name). `None`/empty: every
    /// component (of `type`, when given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_name: Option<String>,
    /// JSON merge patch (RFC 7386) onto the component's properties.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub properties: Value,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traits: Vec<TraitPatch>,
}

/// `override.components[].traits[]`, matched by type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TraitPatch {
    #[serde(rename = "type")]
    pub type_name: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub properties: Value,
    /// Removes the trait of this type.
    #[serde(default)]
    pub disable: bool,
}

impl OverridePolicy {
    pub fn from_policy(policy: &Policy) -> Result<Self, OamError> {
        let o: OverridePolicy = parse(policy, "override")?;
        for (i, c) in o.components.iter().enumerate() {
            if !matches!(c.properties, Value::Null | Value::Object(_)) {
                return Err(err(
                    policy,
                    format!("components[{i}].properties: expected an object"),
                ));
            }
            for (j, t) in c.traits.iter().enumerate() {
                if t.type_name.is_empty() {
                    return Err(err(
                        policy,
                        format!("components[{i}].traits[{j}]: empty type"),
                    ));
                }
                if !matches!(t.properties, Value::Null | Value::Object(_)) {
                    return Err(err(
                        policy,
                        format!("components[{i}].traits[{j}].properties: expected an object"),
                    ));
                }
            }
        }
        Ok(o)
    }
}

/// `*` matches any run of characters; the whole name must match.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

fn merge_properties(base: &Value, patch: &Value) -> Value {
    let mut out = match base {
        Value::Null => Value::Object(Map::new()),
        v => v.clone(),
    };
    if !patch.is_null() {
        json_patch::merge(&mut out, patch);
    }
    out
}

fn patch_traits(traits: &[ComponentTrait], patches: &[TraitPatch]) -> Vec<ComponentTrait> {
    let mut out: Vec<ComponentTrait> = traits.to_vec();
    for p in patches {
        match out.iter().position(|t| t.type_name == p.type_name) {
            Some(i) if p.disable => {
                out.remove(i);
            }
            Some(i) => out[i].properties = merge_properties(&out[i].properties, &p.properties),
            None if p.disable => {}
            None => out.push(ComponentTrait {
                type_name: p.type_name.clone(),
                properties: merge_properties(&Value::Null, &p.properties),
            }),
        }
    }
    out
}

fn merge_component(base: &Component, patch: &ComponentPatch) -> Component {
    let mut c = base.clone();
    c.properties = merge_properties(&base.properties, &patch.properties);
    c.traits = patch_traits(&base.traits, &patch.traits);
    c
}

/// The patch as a whole new component named `name` (KubeVela `ToApplicationComponent`).
fn new_component(name: &str, type_name: &str, patch: &ComponentPatch) -> Component {
    Component {
        name: name.to_owned(),
        type_name: type_name.to_owned(),
        properties: merge_properties(&Value::Null, &patch.properties),
        traits: patch_traits(&[], &patch.traits),
        depends_on: vec![],
        inputs: Value::Null,
        outputs: Value::Null,
        external_revision: None,
        scopes: None,
        referred: None,
        replica_key: None,
    }
}

/// Applies `override` policies, in order, to the Application's components; the result is what
/// a `deploy` step renders. Per `components[]` entry:
///
/// - no `name`: merged into every component (of `type`, when given);
/// - `name` (a glob): merged into every matching component; a match of another `type` is
///   **replaced** by the patch (KubeVela: "overridden"); no match and no `*` in the name adds
///   the patch as a new component (it then needs a `type`);
/// - merging: `properties` as an RFC 7386 merge patch (objects merge, lists and scalars
///   replace, `null` deletes), traits by type (merged, appended when new, removed with
///   `disable: true`).
///
/// Then `selector` keeps the named components, in their order; a name in `selector` that is
/// not a component is an error.
pub fn apply_overrides(
    app_components: &[Component],
    policies: &[&Policy],
) -> Result<Vec<Component>, OamError> {
    let mut comps = app_components.to_vec();
    for policy in policies {
        let o = OverridePolicy::from_policy(policy)?;
        for (i, patch) in o.components.iter().enumerate() {
            let type_ok = |c: &Component| {
                patch
                    .type_name
                    .as_deref()
                    .is_none_or(|t| t.is_empty() || t == c.type_name)
            };
            match patch.name.as_deref().filter(|n| !n.is_empty()) {
                None => {
                    for c in comps.iter_mut().filter(|c| type_ok(c)) {
                        *c = merge_component(c, patch);
                    }
                }
                Some(pattern) => {
                    let mut matched = false;
                    for c in comps.iter_mut() {
                        if !glob_match(pattern, &c.name) {
                            continue;
                        }
                        matched = true;
                        *c = if type_ok(c) {
                            merge_component(c, patch)
                        } else {
                            let t = patch.type_name.as_deref().unwrap_or_default();
                            new_component(&c.name, t, patch)
                        };
                    }
                    if !matched && !pattern.contains('*') {
                        let Some(t) = patch.type_name.as_deref().filter(|t| !t.is_empty()) else {
                            return Err(err(
                                policy,
                                format!(
                                    "components[{i}]: no component `{pattern}` to override; \
                                     to add it, give its `type`"
                                ),
                            ));
                        };
                        comps.push(new_component(pattern, t, patch));
                    }
                }
            }
        }
        if let Some(selector) = &o.selector {
            for name in selector {
                if !comps.iter().any(|c| &c.name == name) {
                    return Err(err(policy, format!("selector: no component `{name}`")));
                }
            }
            comps.retain(|c| selector.contains(&c.name));
        }
    }
    Ok(comps)
}

/// One placement of a `deploy` step and the components (overrides applied) to render there.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployTarget {
    pub placement: Placement,
    pub components: Vec<Component>,
}

/// What a `deploy` step with `policies` (names from `Action::Apply`) applies where: the
/// placements of its `topology` policies (their union, in order, duplicates dropped; none =
/// [`Placement::local`]), each with the components after its `override` policies in the order
/// listed. Unknown policy names, and types other than topology/override, are errors.
pub fn deploy_targets(
    app: &Application,
    policies: &[String],
    clusters: &[ClusterInfo],
) -> Result<Vec<DeployTarget>, OamError> {
    let mut places: Vec<Placement> = Vec::new();
    let mut overrides: Vec<&Policy> = Vec::new();
    let mut replications: Vec<&Policy> = Vec::new();
    let mut any_topology = false;
    for name in policies {
        let p = app
            .spec
            .policies
            .iter()
            .find(|p| &p.name == name)
            .ok_or_else(|| OamError::Policy {
                policy: name.clone(),
                reason: "not found in spec.policies".into(),
            })?;
        match p.type_name.as_str() {
            "topology" => {
                any_topology = true;
                for pl in placements(p, clusters)? {
                    if !places.contains(&pl) {
                        places.push(pl);
                    }
                }
            }
            "override" => overrides.push(p),
            "replication" => replications.push(p),
            other => {
                return Err(err(
                    p,
                    format!(
                        "a deploy step takes topology, override and replication policies, not `{other}`"
                    ),
                ));
            }
        }
    }
    if !any_topology {
        places.push(Placement::local());
    }
    let components = replicate(
        apply_overrides(&app.spec.components, &overrides)?,
        &replications,
    )?;
    Ok(places
        .into_iter()
        .map(|placement| DeployTarget {
            placement,
            components: components.clone(),
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// resource selectors (garbage-collect, apply-once, shared-resource)

/// KubeVela's `ResourcePolicyRuleSelector`: every non-empty list must contain the object's
/// value (AND); an object matches when at least one list is given and none fails.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceSelector {
    /// `app.oam.dev/component` label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub component_names: Vec<String>,
    /// `workload.oam.dev/type` label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub component_types: Vec<String>,
    /// `app.oam.dev/resourceType` label (`WORKLOAD`/`TRAIT`); see [`ResourceSelector::matches`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub oam_types: Vec<String>,
    /// `trait.oam.dev/type` label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trait_types: Vec<String>,
    /// `kind`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_types: Vec<String>,
    /// `metadata.name`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
}

impl ResourceSelector {
    fn is_empty(&self) -> bool {
        self == &ResourceSelector::default()
    }

    /// Whether `object` (a rendered or live Kubernetes object) is selected. Ferry does not
    /// write `app.oam.dev/resourceType`; without it an object with `trait.oam.dev/type` is a
    /// `TRAIT`, one with only `app.oam.dev/component` a `WORKLOAD`.
    pub fn matches(&self, object: &Value) -> bool {
        let label = |k: &str| {
            object
                .pointer("/metadata/labels")
                .and_then(|l| l.get(k))
                .and_then(Value::as_str)
                .unwrap_or("")
        };
        let oam_type = match label(LABEL_OAM_RESOURCE_TYPE) {
            "" if !label(LABEL_TRAIT_TYPE).is_empty() => "TRAIT",
            "" if !label(LABEL_COMPONENT).is_empty() => "WORKLOAD",
            t => t,
        };
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let conditions = [
            (&self.component_names, label(LABEL_COMPONENT)),
            (&self.component_types, label(LABEL_WORKLOAD_TYPE)),
            (&self.oam_types, oam_type),
            (&self.trait_types, label(LABEL_TRAIT_TYPE)),
            (&self.resource_types, kind),
            (&self.resource_names, name),
        ];
        let mut any = false;
        for (list, value) in conditions {
            if list.is_empty() {
                continue;
            }
            if value.is_empty() || !list.iter().any(|v| v == value) {
                return false;
            }
            any = true;
        }
        any
    }
}

fn check_selector(policy: &Policy, i: usize, s: &ResourceSelector) -> Result<(), OamError> {
    if s.is_empty() {
        return Err(err(
            policy,
            format!(
                "rules[{i}].selector selects nothing: give componentNames, componentTypes, \
                 oamTypes, traitTypes, resourceTypes or resourceNames"
            ),
        ));
    }
    for t in &s.oam_types {
        if t != "WORKLOAD" && t != "TRAIT" {
            return Err(err(
                policy,
                format!("rules[{i}].selector.oamTypes: `{t}` is not WORKLOAD or TRAIT"),
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// garbage-collect

/// When an object the app no longer renders (or the app itself) goes, is the object deleted?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GcStrategy {
    /// Delete once the current revision no longer renders it (the default).
    OnAppUpdate,
    /// Keep it while the app lives; delete with the app.
    OnAppDelete,
    /// Never delete it (leave it behind, untracked, when the app goes).
    Never,
}

/// `garbage-collect` properties.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GarbageCollect {
    /// Keep objects of earlier revisions until the app is deleted (no pruning on update).
    #[serde(default)]
    pub keep_legacy_resource: bool,
    /// Collect even when the workflow failed (by default only after it succeeded).
    #[serde(default)]
    pub continue_on_failure: bool,
    /// `dependency`: delete in reverse component dependsOn order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<GcOrder>,
    /// First matching rule wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<GcRule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GcOrder {
    Dependency,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcRule {
    pub selector: ResourceSelector,
    pub strategy: GcStrategy,
}

impl GarbageCollect {
    pub fn from_policy(policy: &Policy) -> Result<Self, OamError> {
        let g: GarbageCollect = parse(policy, "garbage-collect")?;
        for (i, r) in g.rules.iter().enumerate() {
            check_selector(policy, i, &r.selector)?;
        }
        Ok(g)
    }
}

/// The strategy of the first rule selecting `object`; [`GcStrategy::OnAppUpdate`] if none.
/// `keepLegacyResource` turns `OnAppUpdate` into `OnAppDelete` (an explicit `never` stays).
pub fn gc_strategy(policy: &GarbageCollect, object: &Value) -> GcStrategy {
    let s = policy
        .rules
        .iter()
        .find(|r| r.selector.matches(object))
        .map_or(GcStrategy::OnAppUpdate, |r| r.strategy);
    if policy.keep_legacy_resource && s == GcStrategy::OnAppUpdate {
        GcStrategy::OnAppDelete
    } else {
        s
    }
}

// ---------------------------------------------------------------------------------------------
// apply-once

/// When an apply-once rule takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Affect {
    /// When a new revision of the app is applied.
    OnUpdate,
    /// When the controller re-applies the same revision to correct drift.
    OnStateKeep,
    /// Both (also what an empty/absent `affect` means).
    Always,
}

/// Why the controller is applying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyStage {
    /// The app changed (new revision): KubeVela's dispatch.
    Update,
    /// Periodic re-apply of the same revision: KubeVela's state keep (drift correction).
    StateKeep,
}

/// `apply-once` properties.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplyOnce {
    #[serde(default)]
    pub enable: bool,
    /// First matching rule wins. None (with `enable`): no drift correction for any object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<ApplyOnceRule>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplyOnceRule {
    pub selector: ResourceSelector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<ApplyOnceStrategy>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplyOnceStrategy {
    /// Field paths (`spec.replicas`, `spec.template.spec.containers[0].resources`) whose live
    /// value wins over the rendered one; `*` = the whole object.
    pub path: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affect: Option<Affect>,
}

impl ApplyOnce {
    pub fn from_policy(policy: &Policy) -> Result<Self, OamError> {
        let a: ApplyOnce = parse(policy, "apply-once")?;
        for (i, r) in a.rules.iter().flatten().enumerate() {
            check_selector(policy, i, &r.selector)?;
            if let Some(s) = &r.strategy
                && (s.path.is_empty() || s.path.iter().any(String::is_empty))
            {
                return Err(err(
                    policy,
                    format!("rules[{i}].strategy.path: give field paths or `*`"),
                ));
            }
        }
        Ok(a)
    }
}

/// The fields of `object` **not** to re-apply at `stage`: the controller keeps their live
/// values (or, for `*`, leaves the object alone). Empty = apply everything. Disabled policy:
/// empty. `enable` without `rules`: `*` at [`ApplyStage::StateKeep`] (no drift correction),
/// nothing at [`ApplyStage::Update`]. Otherwise the first rule selecting `object` gives its
/// `path` if its `affect` covers `stage`.
pub fn apply_once_paths(policy: &ApplyOnce, object: &Value, stage: ApplyStage) -> Vec<String> {
    if !policy.enable {
        return vec![];
    }
    let Some(rules) = &policy.rules else {
        return match stage {
            ApplyStage::StateKeep => vec!["*".into()],
            ApplyStage::Update => vec![],
        };
    };
    let Some(rule) = rules.iter().find(|r| r.selector.matches(object)) else {
        return vec![];
    };
    let Some(strategy) = &rule.strategy else {
        return vec![];
    };
    let applies = match strategy.affect.unwrap_or(Affect::Always) {
        Affect::Always => true,
        Affect::OnUpdate => stage == ApplyStage::Update,
        Affect::OnStateKeep => stage == ApplyStage::StateKeep,
    };
    if !applies {
        return vec![];
    }
    if strategy.path.iter().any(|p| p == "*") {
        return vec!["*".into()];
    }
    strategy.path.clone()
}

// ---------------------------------------------------------------------------------------------
// shared-resource

/// `shared-resource` properties.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SharedResource {
    pub rules: Vec<SharedResourceRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SharedResourceRule {
    pub selector: ResourceSelector,
}

impl SharedResource {
    pub fn from_policy(policy: &Policy) -> Result<Self, OamError> {
        let s: SharedResource = parse(policy, "shared-resource")?;
        for (i, r) in s.rules.iter().enumerate() {
            check_selector(policy, i, &r.selector)?;
        }
        Ok(s)
    }
}

impl SharedResource {
    /// KubeVela's `take-over` policy has the same shape: rules selecting objects that exist
    /// without an owning application and may be adopted.
    pub fn take_over_from_policy(policy: &Policy) -> Result<Self, OamError> {
        let s: SharedResource = parse(policy, "take-over")?;
        for (i, r) in s.rules.iter().enumerate() {
            check_selector(policy, i, &r.selector)?;
        }
        Ok(s)
    }
}

/// Whether `object` may be owned by several apps (any rule selects it).
pub fn is_shared(policy: &SharedResource, object: &Value) -> bool {
    policy.rules.iter().any(|r| r.selector.matches(object))
}

// ---------------------------------------------------------------------------------------------
// replication

/// `replication` properties: the `selector`ed components are deployed once per key, each copy
/// rendered with `context.replicaKey` set (definitions name their objects with it) and labelled
/// `app.oam.dev/replicaKey`. Only `deploy` steps replicate, after topology and overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Replication {
    pub keys: Vec<String>,
    #[serde(default)]
    pub selector: Vec<String>,
}

impl Replication {
    pub fn from_policy(policy: &Policy) -> Result<Self, OamError> {
        if policy.properties.is_null() {
            return Err(err(policy, "properties: must not be empty"));
        }
        let r: Replication = parse(policy, "replication")?;
        let mut seen = std::collections::BTreeSet::new();
        for k in &r.keys {
            if k.is_empty() || !seen.insert(k) {
                return Err(err(policy, format!("keys: `{k}` is empty or repeated")));
            }
        }
        Ok(r)
    }
}

/// KubeVela's `ReplicateComponents`: the components no policy selects, in order, then one copy
/// per key of each selected component (component by component, keys in order). A policy that
/// selects none of `components` is an error.
pub fn replicate(
    components: Vec<Component>,
    policies: &[&Policy],
) -> Result<Vec<Component>, OamError> {
    if policies.is_empty() {
        return Ok(components);
    }
    let mut selected: Vec<String> = Vec::new();
    let mut copies: Vec<Component> = Vec::new();
    for p in policies {
        let r = Replication::from_policy(p)?;
        let chosen: Vec<&Component> = components
            .iter()
            .filter(|c| r.selector.contains(&c.name))
            .collect();
        if chosen.is_empty() {
            return Err(err(p, "selector: no component selected to replicate"));
        }
        for c in chosen {
            selected.push(c.name.clone());
            for k in &r.keys {
                let mut copy = c.clone();
                copy.replica_key = Some(k.clone());
                copies.push(copy);
            }
        }
    }
    let mut out: Vec<Component> = components
        .into_iter()
        .filter(|c| !selected.contains(&c.name))
        .collect();
    out.extend(copies);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// read-only, resource-update

/// `read-only` properties: the objects its rules select are never written, only read (their
/// health counts as usual); one that does not exist fails the apply. Several `read-only`
/// policies act as one with their rules concatenated, as upstream merges them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadOnly {
    #[serde(default)]
    pub rules: Vec<SharedResourceRule>,
}

impl ReadOnly {
    pub fn from_policy(policy: &Policy) -> Result<Self, OamError> {
        if policy.properties.is_null() {
            return Err(err(policy, "properties: must not be empty"));
        }
        let r: ReadOnly = parse(policy, "read-only")?;
        for (i, rule) in r.rules.iter().enumerate() {
            check_selector(policy, i, &rule.selector)?;
        }
        Ok(r)
    }

    /// Every `read-only` policy of `app` as one.
    pub fn of(app: &Application) -> Result<Option<Self>, OamError> {
        merged(app, "read-only", ReadOnly::from_policy, |a, b| {
            a.rules.extend(b.rules)
        })
    }

    pub fn selects(&self, object: &Value) -> bool {
        self.rules.iter().any(|r| r.selector.matches(object))
    }
}

/// `resource-update` properties: how objects that exist are updated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceUpdate {
    #[serde(default)]
    pub rules: Vec<ResourceUpdateRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceUpdateRule {
    pub selector: ResourceSelector,
    #[serde(default)]
    pub strategy: UpdateStrategy,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateStrategy {
    #[serde(default)]
    pub op: UpdateOp,
    /// Field paths (`spec.selector`); a live value that differs from the rendered one makes
    /// the object be deleted and created again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recreate_fields: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum UpdateOp {
    /// Upstream's three-way merge patch; Ferry's server-side apply.
    #[default]
    Patch,
    /// A full update (PUT) with the rendered object.
    Replace,
}

impl ResourceUpdate {
    pub fn from_policy(policy: &Policy) -> Result<Self, OamError> {
        if policy.properties.is_null() {
            return Err(err(policy, "properties: must not be empty"));
        }
        let r: ResourceUpdate = parse(policy, "resource-update")?;
        for (i, rule) in r.rules.iter().enumerate() {
            check_selector(policy, i, &rule.selector)?;
            if rule.strategy.recreate_fields.iter().any(String::is_empty) {
                return Err(err(
                    policy,
                    format!("rules[{i}].strategy.recreateFields: an empty path"),
                ));
            }
        }
        Ok(r)
    }

    /// Every `resource-update` policy of `app` as one (rules concatenated, first match wins).
    pub fn of(app: &Application) -> Result<Option<Self>, OamError> {
        merged(
            app,
            "resource-update",
            ResourceUpdate::from_policy,
            |a, b| a.rules.extend(b.rules),
        )
    }

    /// The strategy of the first rule that selects `object`.
    pub fn strategy(&self, object: &Value) -> Option<&UpdateStrategy> {
        self.rules
            .iter()
            .find(|r| r.selector.matches(object))
            .map(|r| &r.strategy)
    }
}

/// Whether the live object must be deleted and created again: a `recreateFields` path whose
/// value differs. A path missing from either object is an error, as upstream.
pub fn must_recreate(
    strategy: &UpdateStrategy,
    desired: &Value,
    live: &Value,
) -> Result<bool, String> {
    for path in &strategy.recreate_fields {
        let segs = path_segments(path);
        let want = get_path(desired, &segs)
            .ok_or_else(|| format!("recreateFields: no {path} in the rendered object"))?;
        let have = get_path(live, &segs)
            .ok_or_else(|| format!("recreateFields: no {path} in the live object"))?;
        if want != have {
            return Ok(true);
        }
    }
    Ok(false)
}

fn merged<T>(
    app: &Application,
    type_name: &str,
    parse_one: fn(&Policy) -> Result<T, OamError>,
    join: fn(&mut T, T),
) -> Result<Option<T>, OamError> {
    let mut out: Option<T> = None;
    for p in app
        .spec
        .policies
        .iter()
        .filter(|p| p.type_name == type_name)
    {
        let one = parse_one(p)?;
        match &mut out {
            None => out = Some(one),
            Some(acc) => join(acc, one),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;

/// Splits KubeVela's field path (`spec.template.spec.containers[0].image`) into keys and indices.
fn path_segments(path: &str) -> Vec<Result<String, usize>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Ok(key.to_string()));
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            match idx.trim_end_matches(']').parse::<usize>() {
                Ok(n) => out.push(Err(n)),
                Err(_) => out.push(Ok(idx.trim_end_matches(']').to_string())),
            }
        }
    }
    out
}

fn get_path<'a>(v: &'a Value, path: &[Result<String, usize>]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, seg| match seg {
        Ok(k) => cur.get(k.as_str()),
        Err(i) => cur.get(*i),
    })
}

fn set_path(v: &mut Value, path: &[Result<String, usize>], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for seg in parents {
        let next = match seg {
            Ok(k) => cur.get_mut(k.as_str()),
            Err(i) => cur.get_mut(*i),
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    match last {
        Ok(k) => {
            if let Some(o) = cur.as_object_mut() {
                o.insert(k.clone(), value);
            }
        }
        Err(i) => {
            if let Some(slot) = cur.get_mut(*i) {
                *slot = value;
            }
        }
    }
}

/// What to apply for `desired` given the live object and the apply-once `paths`: `None` = leave
/// the object alone (`*` and it exists); otherwise `desired` with each path's live value
/// copied in, so the live value wins. Paths the live object lacks keep the rendered value.
pub fn keep_live_fields(desired: &Value, live: Option<&Value>, paths: &[String]) -> Option<Value> {
    let Some(live) = live else {
        return Some(desired.clone());
    };
    if paths.iter().any(|p| p == "*") {
        return None;
    }
    let mut out = desired.clone();
    for p in paths {
        let segs = path_segments(p);
        if let Some(v) = get_path(live, &segs) {
            set_path(&mut out, &segs, v.clone());
        }
    }
    Some(out)
}

#[cfg(test)]
mod keep_live_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn live_values_win_for_the_listed_paths_only() {
        let desired = json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [{"image": "a:2"}]}}}});
        let live = json!({"spec": {"replicas": 5, "template": {"spec": {"containers": [{"image": "a:1"}]}}}});
        let out = keep_live_fields(&desired, Some(&live), &["spec.replicas".into()]).unwrap();
        assert_eq!(out["spec"]["replicas"], 5);
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["image"],
            "a:2"
        );
        let out = keep_live_fields(
            &desired,
            Some(&live),
            &["spec.template.spec.containers[0].image".into()],
        )
        .unwrap();
        assert_eq!(out["spec"]["replicas"], 1);
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["image"],
            "a:1"
        );
        assert_eq!(keep_live_fields(&desired, Some(&live), &["*".into()]), None);
        assert_eq!(
            keep_live_fields(&desired, None, &["*".into()]),
            Some(desired.clone())
        );
        // A path the live object lacks keeps the rendered value.
        let out = keep_live_fields(&desired, Some(&json!({})), &["spec.replicas".into()]).unwrap();
        assert_eq!(out, desired);
    }
}

//! `core.oam.dev/v1beta1` types: Application, ComponentDefinition, TraitDefinition.
//!
//! What rendering reads is typed; values a definition interprets are kept as JSON
//! (`serde_json::Value`). The Application's own spec refuses fields it does not know
//! (`deny_unknown_fields`), so a typo such as `trait:` or a KubeVela field Ferry does not act on
//! is an error that names its path instead of being dropped; metadata and status stay open.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `null` reads as an empty list, as a nil slice does in KubeVela's Go types
/// (`traits: null` is common in generated YAML).
fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// The slice of `metadata` rendering uses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
}

/// `core.oam.dev/v1beta1` Application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Application {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: Metadata,
    pub spec: ApplicationSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplicationSpec {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub components: Vec<Component>,
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub policies: Vec<Policy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<Workflow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Component {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    /// Checked against the definition's parameter schema; `null`/absent is `{}`.
    #[serde(default)]
    pub properties: Value,
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub traits: Vec<ComponentTrait>,
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub depends_on: Vec<String>,
    /// Workflow data passing (`inputs`/`outputs`), kept as read.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub inputs: Value,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub outputs: Value,
    /// KubeVela pins a named ComponentRevision with it; Ferry keeps no ComponentRevisions,
    /// so [`check_supported`](crate::check_supported) refuses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_revision: Option<Value>,
    /// Deprecated application scopes (health scopes); refused like `externalRevision`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Value>,
    /// A `ref-objects` component's objects, read from the hub by the controller (cleaned);
    /// `None` until then. Never part of the Application as written.
    #[serde(skip)]
    pub referred: Option<Vec<Value>>,
    /// Set on the copies a `replication` policy makes: `context.replicaKey` and the
    /// `app.oam.dev/replicaKey` label. Never part of the Application as written.
    #[serde(skip)]
    pub replica_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentTrait {
    #[serde(rename = "type")]
    pub type_name: String,
    #[serde(default)]
    pub properties: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    #[serde(default)]
    pub properties: Value,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workflow {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub steps: Vec<WorkflowStep>,
    /// `mode: {steps: DAG|StepByStep, subSteps: ...}`, kept as read.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub mode: Value,
    /// A shared `Workflow` object by name; Ferry has no Workflow CRD, so it is refused.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// `meta`: display data only (KubeVela's UI shows `alias`); Ferry keeps it, nothing reads it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkflowStep {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    #[serde(default)]
    pub properties: Value,
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub depends_on: Vec<String>,
    #[serde(default, rename = "if", skip_serializing_if = "Option::is_none")]
    pub if_expr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub sub_steps: Vec<WorkflowStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<StepMeta>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub inputs: Value,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub outputs: Value,
}

/// `spec.schematic`. KubeVela uses `cue.template`; Ferry reads `jsonnet` (the others are kept
/// so a definition can carry both and an error can say which one it has).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Schematic {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jsonnet: Option<JsonnetSchematic>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cue: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube: Option<Value>,
    /// A trait evaluated in Rust instead of Jsonnet; only `json-patch` (RFC 6902) exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<String>,
    /// JSON Schema of `parameter` for a `builtin` schematic (Jsonnet ones carry theirs in
    /// `jsonnet.parameterSchema`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter_schema: Option<Value>,
}

/// `spec.schematic.jsonnet`: the template and the JSON Schema of its `parameter`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JsonnetSchematic {
    /// Jsonnet source: `function(parameter, context) { output: ..., outputs: ... }` for a
    /// component, `function(parameter, context) { patch: ..., outputs: ... }` for a trait.
    pub template: String,
    /// JSON Schema of `parameter`; absent means anything goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter_schema: Option<Value>,
}

/// `spec.status`: Jsonnet `function(parameter, context)` expressions, evaluated against live
/// objects (`context.output`, `context.outputs`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusSpec {
    /// Returns `{ isHealth: bool }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_policy: Option<String>,
    /// Returns `{ message: string }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_status: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentDefinition {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    pub metadata: Metadata,
    pub spec: ComponentDefinitionSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentDefinitionSpec {
    /// `workload: {definition: {apiVersion, kind}, type}`, kept as read.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub workload: Value,
    #[serde(default)]
    pub schematic: Schematic,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraitDefinition {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    pub metadata: Metadata,
    pub spec: TraitDefinitionSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraitDefinitionSpec {
    /// Workloads the trait may patch; checked when a component is rendered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applies_to_workloads: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts_with: Vec<String>,
    #[serde(default)]
    pub pod_disruptive: bool,
    #[serde(default)]
    pub schematic: Schematic,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusSpec>,
}

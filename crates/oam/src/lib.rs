//! oam: renders KubeVela (OAM) Applications into Kubernetes objects from Jsonnet component and trait definitions.
//!
//! KubeVela writes definition templates in CUE; Ferry reads them from
//! `spec.schematic.jsonnet.template` and evaluates them with jrsonnet. A template is
//! `function(parameter, context)`; a component's returns `{ output, outputs }`, a trait's
//! `{ patch, outputs }`, and `patch` is merged into the workload with Jsonnet's `+` (so
//! `spec+: { replicas: 3 }` patches, `spec: {...}` replaces). Properties are validated and
//! defaulted against the JSON Schema in `spec.schematic.jsonnet.parameterSchema` first.
//! See `docs/oam.md`.

mod definitions;
pub mod dry_run;
mod engine;
mod error;
pub mod policy;
pub mod refs;
pub mod schema;
pub mod sources;
mod types;
pub mod workflow;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

pub use definitions::Definitions;
pub use dry_run::{DryRunBlock, dry_run_blocks};
pub use error::{OamError, Site};
pub use sources::{
    SourceComponent, SourceSpec, image_automation_objects, source_component, sources,
};
pub use types::*;

/// One rendered Kubernetes object.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// Component name.
    pub component: String,
    /// Trait type that produced this object (from its `outputs`); `None` for the component's.
    pub trait_type: Option<String>,
    /// Key in `outputs`; `None` for the workload (`output`).
    pub output: Option<String>,
    pub object: Value,
}

/// Health of one component or trait, from its definition's `spec.status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub healthy: bool,
    pub message: Option<String>,
}

pub const LABEL_APP: &str = "app.oam.dev/name";
pub const LABEL_COMPONENT: &str = "app.oam.dev/component";
pub const LABEL_WORKLOAD_TYPE: &str = "workload.oam.dev/type";
pub const LABEL_TRAIT_TYPE: &str = "trait.oam.dev/type";
pub const LABEL_TRAIT_RESOURCE: &str = "trait.oam.dev/resource";
/// The key of a component copy a `replication` policy made.
pub const LABEL_REPLICA_KEY: &str = "app.oam.dev/replicaKey";

/// YAML 1.2 booleans only (`y`, `on`, `no` stay strings), as Kubernetes reads them.
pub(crate) fn yaml_options() -> serde_saphyr::Options {
    let mut o = serde_saphyr::Options::default();
    o.strict_booleans = true;
    o
}

/// Parses an Application from YAML or JSON.
pub fn parse_application(yaml: &str) -> Result<Application, OamError> {
    let value: Value = serde_saphyr::from_str_with_options(yaml, yaml_options())
        .map_err(|e| OamError::Application(e.to_string()))?;
    application_from_value(value)
}

/// An Application from JSON (as the API server has it); errors name the
/// field's path, e.g. `spec.components[1].traits[0]: missing field \`type\``.
pub fn application_from_value(value: Value) -> Result<Application, OamError> {
    let app: Application = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        OamError::Application(if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        })
    })?;
    check_supported(&app)?;
    Ok(app)
}

/// Refuses the KubeVela fields Ferry parses but does not act on, by path, so none of them is
/// dropped without a word.
pub fn check_supported(app: &Application) -> Result<(), OamError> {
    let refuse = |path: String, why: &str| Err(OamError::Application(format!("{path}: {why}")));
    for (i, c) in app.spec.components.iter().enumerate() {
        if c.external_revision.is_some() {
            return refuse(
                format!("spec.components[{i}].externalRevision"),
                "Ferry keeps no ComponentRevisions to pin; remove the field (the component renders from its properties)",
            );
        }
        if c.scopes.is_some() {
            return refuse(
                format!("spec.components[{i}].scopes"),
                "application scopes are deprecated in KubeVela and not supported by Ferry",
            );
        }
    }
    if let Some(w) = &app.spec.workflow
        && w.reference.is_some()
    {
        return refuse(
            "spec.workflow.ref".into(),
            "a shared Workflow object is not supported by Ferry; write the steps in spec.workflow.steps",
        );
    }
    Ok(())
}

/// The Kubernetes version a render targets, as KubeVela's `context.clusterVersion`:
/// definitions pick API versions by it (`batch/v1` CronJob from 1.21 on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClusterVersion {
    pub major: u32,
    pub minor: u32,
}

impl ClusterVersion {
    /// What `ferry render` assumes without `--kube-version`: a current Kubernetes.
    pub const CURRENT: ClusterVersion = ClusterVersion {
        major: 1,
        minor: 34,
    };

    /// `1.20.2`, `v1.28`, `1.30.1-gke.100`.
    pub fn parse(text: &str) -> Result<ClusterVersion, String> {
        let t = text.trim().trim_start_matches('v');
        let mut parts = t.split(['.', '-', '+']);
        let num = |p: Option<&str>| {
            p.and_then(|s| s.trim_end_matches('+').parse::<u32>().ok())
                .ok_or_else(|| {
                    format!("{text:?} is not a Kubernetes version (expected e.g. 1.28 or 1.28.3)")
                })
        };
        Ok(ClusterVersion {
            major: num(parts.next())?,
            minor: num(parts.next())?,
        })
    }
}

impl Default for ClusterVersion {
    fn default() -> Self {
        ClusterVersion::CURRENT
    }
}

/// The `context` a component's templates see (traits also get `output` and `outputs`).
pub fn component_context(app: &Application, component: &Component) -> Value {
    component_context_for(app, component, ClusterVersion::CURRENT)
}

/// [`component_context`] for a cluster of `version`.
pub fn component_context_for(
    app: &Application,
    component: &Component,
    version: ClusterVersion,
) -> Value {
    let namespace = app.metadata.namespace.as_deref().unwrap_or("default");
    let num = app.metadata.generation.unwrap_or(1).max(1);
    json!({
        "appName": app.metadata.name,
        "appNamespace": namespace,
        "namespace": namespace,
        "name": component.name,
        "componentType": component.type_name,
        "appRevision": format!("{}-v{num}", app.metadata.name),
        "appRevisionNum": num,
        "revision": format!("{}-v{num}", component.name),
        "appLabels": app.metadata.labels,
        "appAnnotations": app.metadata.annotations,
        // Upstream sets it for every component, "" when not replicated.
        "replicaKey": component.replica_key.clone().unwrap_or_default(),
        "clusterVersion": {
            "major": version.major,
            "minor": version.minor,
            "gitVersion": format!("v{}.{}.0", version.major, version.minor),
        },
    })
}

/// Renders every component of `app`: its workload, its `outputs`, then each trait's `outputs`,
/// in Application order. Pure: no I/O, no cluster access.
///
/// Source components (`helm`, `kustomize`: definitions with `spec.schematic.builtin: source`)
/// are validated and emit nothing; [`sources`] gives what the caller fetches for them.
pub fn render(app: &Application, defs: &Definitions) -> Result<Vec<Rendered>, OamError> {
    render_for(app, defs, ClusterVersion::CURRENT)
}

/// [`render`] for a cluster of `version` (API versions follow it).
pub fn render_for(
    app: &Application,
    defs: &Definitions,
    version: ClusterVersion,
) -> Result<Vec<Rendered>, OamError> {
    let mut seen = BTreeSet::new();
    for c in &app.spec.components {
        if !seen.insert((c.name.as_str(), c.replica_key.as_deref())) {
            return Err(OamError::DuplicateComponent(c.name.clone()));
        }
    }
    let engine = engine::Engine::new();
    let mut out = Vec::new();
    for component in &app.spec.components {
        render_component(&engine, app, component, defs, version, &mut out)?;
    }
    // Two renderings of one object would overwrite each other on apply: say so instead.
    let mut objects: BTreeMap<(String, String, String), &Rendered> = BTreeMap::new();
    for r in &out {
        let field = |p: &str| {
            r.object
                .pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let group = field("/apiVersion")
            .rsplit_once('/')
            .map(|(g, _)| g.to_owned())
            .unwrap_or_default();
        let key = (
            format!("{group}/{}", field("/kind")),
            field("/metadata/namespace"),
            field("/metadata/name"),
        );
        if let Some(first) = objects.insert(key.clone(), r) {
            let by = |r: &Rendered| match &r.trait_type {
                Some(t) => format!("component `{}` (trait `{t}`)", r.component),
                None => format!("component `{}`", r.component),
            };
            return Err(OamError::Application(format!(
                "{} {} is rendered twice, by {} and by {}{}",
                field("/kind"),
                key.2,
                by(first),
                by(r),
                if first.component == r.component {
                    "; replicated components need a definition that names its objects with context.replicaKey"
                } else {
                    ""
                }
            )));
        }
    }
    Ok(out)
}

fn render_component(
    engine: &engine::Engine,
    app: &Application,
    component: &Component,
    defs: &Definitions,
    version: ClusterVersion,
    out: &mut Vec<Rendered>,
) -> Result<(), OamError> {
    let site = Site {
        component: component.name.clone(),
        trait_type: None,
    };
    let def =
        defs.component(&component.type_name)
            .ok_or_else(|| OamError::UnknownComponentType {
                component: component.name.clone(),
                type_name: component.type_name.clone(),
                known: defs.component_names(),
            })?;
    if sources::is_source_definition(def) {
        sources::source_spec(component, def)?;
        return Ok(());
    }
    if let Some(b) = def
        .spec
        .schematic
        .builtin
        .as_deref()
        .filter(|b| *b != refs::BUILTIN)
    {
        return Err(OamError::Definition {
            name: format!("ComponentDefinition/{}", component.type_name),
            reason: format!(
                "unknown spec.schematic.builtin `{b}` for a component; known: source, ref-objects"
            ),
        });
    }
    // Resolve every trait before evaluating anything, so a typo fails fast.
    let mut traits = Vec::with_capacity(component.traits.len());
    for t in &component.traits {
        let tdef = defs
            .trait_def(&t.type_name)
            .ok_or_else(|| OamError::UnknownTraitType {
                component: component.name.clone(),
                type_name: t.type_name.clone(),
                known: defs.trait_names(),
            })?;
        traits.push((t, tdef));
    }

    let definition = format!("ComponentDefinition/{}", component.type_name);
    let schematic = jsonnet_schematic(&def.spec.schematic, &definition)?;
    let parameter = if refs::is_ref_objects_definition(def) {
        let namespace = app.metadata.namespace.as_deref().unwrap_or("default");
        refs::selectors(component, namespace)?;
        // The objects come from the hub at deploy time; until read there is nothing to render.
        match &component.referred {
            None => return Ok(()),
            Some(objects) if objects.is_empty() => {
                return Err(OamError::Schema {
                    site,
                    path: ".objects".into(),
                    reason: "the selectors matched no object on the hub".into(),
                });
            }
            Some(objects) => json!({ "objects": objects }),
        }
    } else {
        check_properties(
            &component.properties,
            schematic.parameter_schema.as_ref(),
            &site,
        )?
    };
    let mut context = component_context_for(app, component, version);
    let file = format!("{}.jsonnet", definition.to_lowercase());
    let result = engine
        .component(&file, &schematic.template, &parameter, &context)
        .map_err(|e| template_error(&site, &definition, e))?;
    let (mut workload, outputs) = split(result, "output", &site, &definition)?;
    check_traits_apply(component, def, &traits, &workload)?;

    let mut all_outputs = outputs.clone();
    let mut rendered_outputs: Vec<Rendered> = outputs
        .into_iter()
        .map(|(name, object)| Rendered {
            component: component.name.clone(),
            trait_type: None,
            output: Some(name),
            object,
        })
        .collect();

    for (t, tdef) in traits {
        let site = Site {
            component: component.name.clone(),
            trait_type: Some(t.type_name.clone()),
        };
        let definition = format!("TraitDefinition/{}", t.type_name);
        if let Some(builtin) = &tdef.spec.schematic.builtin {
            let schema = tdef.spec.schematic.parameter_schema.as_ref();
            let parameter = check_properties(&t.properties, schema, &site)?;
            workload = apply_builtin(builtin, &parameter, workload, &site, &definition)?;
            continue;
        }
        let schematic = jsonnet_schematic(&tdef.spec.schematic, &definition)?;
        let parameter =
            check_properties(&t.properties, schematic.parameter_schema.as_ref(), &site)?;
        if let Value::Object(ctx) = &mut context {
            ctx.insert("output".into(), workload.clone());
            ctx.insert("outputs".into(), Value::Object(all_outputs.clone()));
        }
        let file = format!("{}.jsonnet", definition.to_lowercase());
        let result = engine
            .trait_(&file, &schematic.template, &parameter, &context, &workload)
            .map_err(|e| template_error(&site, &definition, e))?;
        let (patched, outputs) = split(result, "workload", &site, &definition)?;
        workload = patched;
        for (name, object) in outputs {
            all_outputs.insert(name.clone(), object.clone());
            rendered_outputs.push(Rendered {
                component: component.name.clone(),
                trait_type: Some(t.type_name.clone()),
                output: Some(name),
                object,
            });
        }
    }

    let mut workload = Rendered {
        component: component.name.clone(),
        trait_type: None,
        output: None,
        object: workload,
    };
    finish(app, component, &mut workload);
    out.push(workload);
    for mut r in rendered_outputs {
        finish(app, component, &mut r);
        out.push(r);
    }
    Ok(())
}

/// KubeVela's trait checks: each trait's `appliesToWorkloads` must name the component's
/// workload — `*`, `*.<group>`, `<resource>.<group>` of the rendered workload (`deployments.apps`),
/// the component type or the definition's `workload.type` — and no two traits may be in each
/// other's `conflictsWith` (names, or `*`). Empty lists allow everything.
fn check_traits_apply(
    component: &Component,
    def: &ComponentDefinition,
    traits: &[(&ComponentTrait, &TraitDefinition)],
    workload: &Value,
) -> Result<(), OamError> {
    let api_version = workload
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = workload.get("kind").and_then(Value::as_str).unwrap_or("");
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    let lower = kind.to_lowercase();
    let plural = if lower.ends_with('s') {
        format!("{lower}es")
    } else if let Some(stem) = lower.strip_suffix('y') {
        format!("{stem}ies")
    } else {
        format!("{lower}s")
    };
    let resource = if group.is_empty() {
        plural
    } else {
        format!("{plural}.{group}")
    };
    let workload_type = def.spec.workload.get("type").and_then(Value::as_str);
    for (t, tdef) in traits {
        let allowed = &tdef.spec.applies_to_workloads;
        let applies = allowed.is_empty()
            || allowed.iter().any(|a| {
                a == "*"
                    || a.strip_prefix("*.") == Some(group)
                    || *a == resource
                    || *a == component.type_name
                    || Some(a.as_str()) == workload_type
            });
        if !applies {
            return Err(OamError::Application(format!(
                "component `{}`: trait `{}` does not apply to its workload {resource} (type `{}`); it applies to: {}",
                component.name,
                t.type_name,
                component.type_name,
                allowed.join(", ")
            )));
        }
        for (other, _) in traits {
            if other.type_name != t.type_name
                && tdef
                    .spec
                    .conflicts_with
                    .iter()
                    .any(|c| c == "*" || *c == other.type_name)
            {
                return Err(OamError::Application(format!(
                    "component `{}`: trait `{}` conflicts with trait `{}`",
                    component.name, t.type_name, other.type_name
                )));
            }
        }
    }
    Ok(())
}

/// Evaluates a definition's `spec.status` against live objects: `context` is
/// [`component_context`] plus `output` (the live workload) and `outputs` (live outputs by name).
/// A definition without `healthPolicy` is healthy.
pub fn evaluate_status(
    definition: &str,
    status: Option<&StatusSpec>,
    parameter: &Value,
    context: &Value,
    site: &Site,
) -> Result<Health, OamError> {
    let engine = engine::Engine::new();
    let Some(status) = status else {
        return Ok(Health {
            healthy: true,
            message: None,
        });
    };
    let eval = |code: &str, what: &str, field: &str| -> Result<Option<Value>, OamError> {
        let file = format!("{}.{what}.jsonnet", definition.to_lowercase());
        let v = engine
            .status(&file, code, parameter, context)
            .map_err(|e| template_error(site, definition, e))?;
        Ok(v.get(field).cloned())
    };
    let healthy = match &status.health_policy {
        None => true,
        Some(code) => match eval(code, "healthPolicy", "isHealth")? {
            Some(Value::Bool(b)) => b,
            other => {
                return Err(OamError::TemplateResult {
                    site: site.clone(),
                    definition: definition.to_owned(),
                    reason: format!(
                        "healthPolicy must return {{isHealth: bool}}, got isHealth = {other:?}"
                    ),
                });
            }
        },
    };
    let message = match &status.custom_status {
        None => None,
        Some(code) => match eval(code, "customStatus", "message")? {
            Some(Value::String(s)) => Some(s),
            None | Some(Value::Null) => None,
            Some(other) => Some(other.to_string()),
        },
    };
    Ok(Health { healthy, message })
}

fn jsonnet_schematic<'a>(
    schematic: &'a Schematic,
    definition: &str,
) -> Result<&'a JsonnetSchematic, OamError> {
    schematic.jsonnet.as_ref().ok_or_else(|| {
        let has = if schematic.cue.is_some() {
            "only a CUE template (spec.schematic.cue), which Ferry cannot evaluate"
        } else if let Some(b) = &schematic.builtin {
            return OamError::Definition {
                name: definition.to_owned(),
                reason: format!(
                    "spec.schematic.builtin `{b}` is only supported on traits (components: `source`, `ref-objects`)"
                ),
            };
        } else if schematic.helm.is_some() || schematic.kube.is_some() {
            "a helm/kube schematic, which Ferry does not support"
        } else {
            "no template"
        };
        OamError::Definition {
            name: definition.to_owned(),
            reason: format!("needs spec.schematic.jsonnet.template, has {has}"),
        }
    })
}

/// A trait evaluated in Rust (`spec.schematic.builtin`): returns the patched workload.
///
/// `json-patch` applies `parameter.operations` (RFC 6902) to the workload. Jsonnet has no JSON
/// Pointer or patch operations, so this one cannot be a template.
fn apply_builtin(
    builtin: &str,
    parameter: &Value,
    mut workload: Value,
    site: &Site,
    definition: &str,
) -> Result<Value, OamError> {
    let bad = |reason: String| OamError::Builtin {
        site: site.clone(),
        definition: definition.to_owned(),
        reason,
    };
    match builtin {
        "json-patch" => {
            let ops = parameter.get("operations").cloned().unwrap_or(Value::Null);
            let patch: json_patch::Patch = serde_json::from_value(ops)
                .map_err(|e| bad(format!("properties.operations: {e}")))?;
            json_patch::patch(&mut workload, &patch).map_err(|e| bad(format!("json-patch {e}")))?;
            Ok(workload)
        }
        other => Err(bad(format!(
            "unknown spec.schematic.builtin `{other}`; known: json-patch"
        ))),
    }
}

/// KubeVela's component `outputs[].valueFrom`: an expression over the component's `output`
/// (its workload) and `outputs` (by name), such as `output.metadata.name` or
/// `"http://" + outputs.service.spec.clusterIP`. CUE and Jsonnet read these forms alike;
/// Ferry evaluates the expression as Jsonnet, against the live objects.
pub fn value_from(
    component: &str,
    expr: &str,
    output: &Value,
    outputs: &Value,
) -> Result<Value, OamError> {
    let engine = engine::Engine::new();
    let code = format!(
        "function(parameter, context)\n  local output = context.output;\n  local outputs = context.outputs;\n  {{ v: ({expr}) }}\n"
    );
    let site = Site {
        component: component.to_owned(),
        trait_type: None,
    };
    let v = engine
        .status(
            &format!("{component}.valueFrom.jsonnet"),
            &code,
            &Value::Null,
            &json!({"output": output, "outputs": outputs}),
        )
        .map_err(|e| template_error(&site, "valueFrom", e))?;
    Ok(v.get("v").cloned().unwrap_or(Value::Null))
}

/// Sets `value` at KubeVela's `parameterKey` (`image`, `env[0].value`, `a.b`) in `properties`,
/// creating objects on the way; an index past the end of a list appends.
pub fn set_parameter(properties: &mut Value, key: &str, value: Value) {
    let mut segs: Vec<Result<String, usize>> = Vec::new();
    for part in key.split('.') {
        let (k, rest) = part.split_at(part.find('[').unwrap_or(part.len()));
        if !k.is_empty() {
            segs.push(Ok(k.to_string()));
        }
        for i in rest.split('[').filter(|x| !x.is_empty()) {
            let i = i.trim_end_matches(']');
            match i.parse::<usize>() {
                Ok(n) => segs.push(Err(n)),
                Err(_) => segs.push(Ok(i.to_string())),
            }
        }
    }
    let mut cur = properties;
    for (n, seg) in segs.iter().enumerate() {
        let last = n + 1 == segs.len();
        let next_is_index = matches!(segs.get(n + 1), Some(Err(_)));
        let fresh = || if next_is_index { json!([]) } else { json!({}) };
        match seg {
            Ok(k) => {
                if !cur.is_object() {
                    *cur = json!({});
                }
                let Some(o) = cur.as_object_mut() else { return };
                if last {
                    o.insert(k.clone(), value);
                    return;
                }
                cur = o.entry(k.clone()).or_insert_with(fresh);
            }
            Err(i) => {
                if !cur.is_array() {
                    *cur = json!([]);
                }
                let Some(a) = cur.as_array_mut() else { return };
                let i = (*i).min(a.len());
                if i == a.len() {
                    a.push(if last { Value::Null } else { fresh() });
                }
                if last {
                    a[i] = value;
                    return;
                }
                cur = &mut a[i];
            }
        }
    }
}

/// `app` with every component that reads another's `outputs` through `inputs` depending on
/// it, as KubeVela orders them.
pub fn with_input_dependencies(app: &Application) -> Application {
    let mut out = app.clone();
    let producers: Vec<(String, String)> = app
        .spec
        .components
        .iter()
        .flat_map(|c| {
            c.outputs
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|o| o.get("name").and_then(Value::as_str))
                .map(|n| (n.to_string(), c.name.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    for c in out.spec.components.iter_mut() {
        for input in c.inputs.as_array().into_iter().flatten() {
            let Some(from) = input.get("from").and_then(Value::as_str) else {
                continue;
            };
            if let Some((_, p)) = producers.iter().find(|(n, _)| n == from)
                && *p != c.name
                && !c.depends_on.contains(p)
            {
                c.depends_on.push(p.clone());
            }
        }
    }
    out
}

/// `properties` as a definition's templates and status expressions see them: schema defaults
/// filled in. Invalid properties come back as given ([`render`] reports them).
pub fn parameter(schematic: &Schematic, properties: &Value) -> Value {
    let schema = schematic
        .jsonnet
        .as_ref()
        .and_then(|j| j.parameter_schema.as_ref())
        .or(schematic.parameter_schema.as_ref());
    let site = Site {
        component: String::new(),
        trait_type: None,
    };
    check_properties(properties, schema, &site).unwrap_or_else(|_| properties.clone())
}

pub(crate) fn check_properties(
    properties: &Value,
    parameter_schema: Option<&Value>,
    site: &Site,
) -> Result<Value, OamError> {
    let mut value = match properties {
        Value::Null => Value::Object(Map::new()),
        v => v.clone(),
    };
    if let Some(schema) = parameter_schema {
        schema::validate(schema, &mut value).map_err(|v| OamError::Schema {
            site: site.clone(),
            path: v.path,
            reason: v.reason,
        })?;
    }
    Ok(value)
}

fn template_error(site: &Site, definition: &str, e: engine::EvalError) -> OamError {
    OamError::Template {
        site: site.clone(),
        definition: definition.to_owned(),
        location: e.location,
        message: e.message,
    }
}

/// Splits a normalised `{<main>, outputs}` result.
fn split(
    result: Value,
    main: &str,
    site: &Site,
    definition: &str,
) -> Result<(Value, Map<String, Value>), OamError> {
    let bad = |reason: String| OamError::TemplateResult {
        site: site.clone(),
        definition: definition.to_owned(),
        reason,
    };
    let Value::Object(mut m) = result else {
        return Err(bad("result is not an object".into()));
    };
    let main_v = m.remove(main).unwrap_or(Value::Null);
    let outputs = match m.remove("outputs") {
        Some(Value::Object(o)) => o,
        None => Map::new(),
        Some(other) => return Err(bad(format!("`outputs` is not an object: {other}"))),
    };
    for (name, o) in &outputs {
        if !o.is_object() {
            return Err(bad(format!("outputs.{name} is not an object")));
        }
    }
    Ok((main_v, outputs))
}

/// Fills in `metadata.name` and the OAM ownership labels.
fn finish(app: &Application, component: &Component, r: &mut Rendered) {
    let Value::Object(obj) = &mut r.object else {
        return;
    };
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    let Value::Object(meta) = meta else { return };
    if meta.get("name").and_then(Value::as_str).is_none() {
        let name = match &r.output {
            None => component.name.clone(),
            Some(o) => format!("{}-{o}", component.name),
        };
        meta.insert("name".into(), Value::String(name));
    }
    let labels = meta
        .entry("labels")
        .or_insert_with(|| Value::Object(Map::new()));
    if !labels.is_object() {
        *labels = Value::Object(Map::new());
    }
    let Value::Object(labels) = labels else {
        return;
    };
    let mut set = |k: &str, v: &str| {
        labels.insert(k.to_owned(), Value::String(v.to_owned()));
    };
    set(LABEL_APP, &app.metadata.name);
    set(LABEL_COMPONENT, &component.name);
    if let Some(key) = &component.replica_key {
        set(LABEL_REPLICA_KEY, key);
    }
    match (&r.trait_type, &r.output) {
        (None, None) => set(LABEL_WORKLOAD_TYPE, &component.type_name),
        (Some(t), Some(o)) => {
            set(LABEL_TRAIT_TYPE, t);
            set(LABEL_TRAIT_RESOURCE, o);
        }
        _ => {}
    }
}

#[cfg(test)]
mod io_tests {
    use super::*;

    #[test]
    fn parameter_keys_create_what_is_missing() {
        let mut p = json!({"image": "x", "env": [{"name": "A", "value": "1"}]});
        set_parameter(&mut p, "env[0].value", json!("2"));
        set_parameter(&mut p, "env[1]", json!({"name": "B", "value": "3"}));
        set_parameter(&mut p, "labels.tier", json!("db"));
        assert_eq!(
            p,
            json!({"image": "x", "labels": {"tier": "db"},
                   "env": [{"name": "A", "value": "2"}, {"name": "B", "value": "3"}]})
        );
    }

    #[test]
    fn value_from_reads_the_output_and_outputs() {
        let out = json!({"metadata": {"name": "db"}});
        let outs = json!({"service": {"spec": {"clusterIP": "10.0.0.7"}}});
        assert_eq!(
            value_from("db", "output.metadata.name", &out, &outs).unwrap(),
            json!("db")
        );
        assert_eq!(
            value_from(
                "db",
                "\"http://\" + outputs.service.spec.clusterIP",
                &out,
                &outs
            )
            .unwrap(),
            json!("http://10.0.0.7")
        );
        let e = value_from("db", "output.spec.nope", &out, &outs).unwrap_err();
        assert!(e.to_string().contains("db"), "{e}");
    }

    #[test]
    fn inputs_add_dependencies_on_their_producers() {
        let app = parse_application(
            "metadata: {name: a}\nspec: {components: [{name: api, type: webservice, inputs: [{from: host, parameterKey: 'env[0].value'}]}, {name: db, type: webservice, outputs: [{name: host, valueFrom: output.metadata.name}]}]}",
        )
        .unwrap();
        let with = with_input_dependencies(&app);
        assert_eq!(with.spec.components[0].depends_on, vec!["db".to_string()]);
        assert!(with.spec.components[1].depends_on.is_empty());
    }
}

//! KubeVela's application workflow as a pure state machine.
//!
//! [`Plan::from_application`] turns `spec.workflow` (or, when there is none, KubeVela's implicit
//! workflow) into typed steps; [`advance`] takes the previous [`State`], the [`Outcome`]s of the
//! actions that finished since, the current time and whether the user asked to resume, and
//! returns the next state and the [`Action`]s to start. No I/O and no clock: the caller (the
//! controller) executes the actions, measures time and calls `advance` again.
//!
//! Semantics follow KubeVela's end-user workflow docs (`docs/end-user/workflow/*.md` of
//! kubevela.github.io) and its step generator (`pkg/workflow/step/generator.go`); see
//! `docs/oam.md`, section "Workflow".

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Application, OamError, WorkflowStep};

/// Step types Ferry executes itself.
pub const BUILTIN_STEP_TYPES: &[&str] = &[
    "apply-component",
    "apply-object",
    "depends-on-app",
    "deploy",
    "notification",
    "read-object",
    "step-group",
    "suspend",
];

/// `workflow.mode.steps` / `workflow.mode.subSteps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Each step waits for the one before it (and its `dependsOn`).
    StepByStep,
    /// Steps wait only for their `dependsOn` (and the steps their `if` reads).
    #[serde(rename = "DAG")]
    Dag,
}

impl Mode {
    fn parse(v: Option<&Value>, default: Mode) -> Result<Mode, OamError> {
        match v.and_then(Value::as_str) {
            None | Some("") => Ok(default),
            Some("StepByStep") => Ok(Mode::StepByStep),
            Some("DAG") => Ok(Mode::Dag),
            Some(other) => Err(OamError::Workflow(format!(
                "unknown workflow mode `{other}`; expected StepByStep or DAG"
            ))),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Mode::StepByStep => "StepByStep",
            Mode::Dag => "DAG",
        }
    }
}

/// The workflow to run: `spec.workflow.steps` or the implicit one.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Top-level steps: StepByStep when `spec.workflow` is declared, DAG for the implicit one.
    pub mode: Mode,
    /// Sub-steps of a `step-group`: DAG (concurrent) unless `mode.subSteps: StepByStep`.
    pub sub_mode: Mode,
    /// True when the Application declares no workflow steps.
    pub implicit: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub name: String,
    pub kind: StepKind,
    pub depends_on: Vec<String>,
    pub condition: Condition,
    pub timeout: Option<Duration>,
    /// `properties` as written (for `notification` and custom step types).
    pub properties: Value,
    /// `inputs`: values other steps' `outputs` produced, set into `properties` at
    /// `parameterKey` before the step runs (object steps only).
    pub inputs: Vec<StepInput>,
    /// `outputs`: values taken from what the step did (`output.value...`), by name.
    pub outputs: Vec<StepOutput>,
}

/// One `inputs[]` entry of a step.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StepInput {
    pub from: String,
    pub parameter_key: String,
}

/// One `outputs[]` entry of a step: `valueFrom` is a path into the step's `output`, e.g.
/// `output.value.data["cpu"]` (read-object) or `output.value.metadata.uid` (apply-object).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StepOutput {
    pub name: String,
    pub value_from: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    /// Apply all components (in [`component_order`]) with the listed policies.
    Deploy {
        policies: Vec<String>,
    },
    ApplyComponent {
        component: String,
    },
    /// Without a duration: wait for resume. With one: resume by itself.
    Suspend {
        duration: Option<Duration>,
    },
    StepGroup {
        sub_steps: Vec<Step>,
    },
    Notification,
    /// Wait until another KubeVela Application is `running`; when it does not exist, create it
    /// from the `application` key of the ConfigMap of the same name and namespace.
    DependsOnApp {
        name: String,
        namespace: String,
    },
    /// Apply one object (`properties.value`) to `cluster` (the hub when empty); no health wait.
    ApplyObject,
    /// Read one object; a missing one is reported in `output.err`, not a failure.
    ReadObject,
    /// A step type the caller declared it can execute (a WorkflowStepDefinition).
    Other(String),
}

impl StepKind {
    /// KubeVela's step `type`.
    pub fn type_name(&self) -> &str {
        match self {
            StepKind::Deploy { .. } => "deploy",
            StepKind::ApplyComponent { .. } => "apply-component",
            StepKind::Suspend { .. } => "suspend",
            StepKind::StepGroup { .. } => "step-group",
            StepKind::Notification => "notification",
            StepKind::DependsOnApp { .. } => "depends-on-app",
            StepKind::ApplyObject => "apply-object",
            StepKind::ReadObject => "read-object",
            StepKind::Other(t) => t,
        }
    }
}

/// A step's `if`.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// No `if`: run only while no step of the workflow has failed.
    Default,
    /// `if: always`.
    Always,
    Expr(Expr),
}

/// The subset of KubeVela's CUE `if` expressions Ferry evaluates: `status.<step>.<field>`
/// (`succeeded`, `failed`, `skipped`, `timeout`), `status.<step>.phase == "..."` / `!=`,
/// `status["step-name"]`, `!`, `&&`, `||`, parentheses, `true`, `false`.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Lit(bool),
    Status { step: String, test: StatusTest },
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum StatusTest {
    Succeeded,
    Failed,
    Skipped,
    Timeout,
    PhaseEq(Phase),
    PhaseNe(Phase),
}

impl Expr {
    fn steps(&self, out: &mut BTreeSet<String>) {
        match self {
            Expr::Lit(_) => {}
            Expr::Status { step, .. } => {
                out.insert(step.clone());
            }
            Expr::Not(e) => e.steps(out),
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.steps(out);
                b.steps(out);
            }
        }
    }

    fn eval(&self, lookup: &dyn Fn(&str) -> Option<PhaseReason>) -> bool {
        match self {
            Expr::Lit(b) => *b,
            Expr::Not(e) => !e.eval(lookup),
            Expr::And(a, b) => a.eval(lookup) && b.eval(lookup),
            Expr::Or(a, b) => a.eval(lookup) || b.eval(lookup),
            Expr::Status { step, test } => {
                let Some((phase, reason)) = lookup(step) else {
                    return false;
                };
                match test {
                    StatusTest::Succeeded => phase == Phase::Succeeded,
                    StatusTest::Failed => phase == Phase::Failed,
                    StatusTest::Skipped => phase == Phase::Skipped,
                    StatusTest::Timeout => {
                        phase == Phase::Failed && reason.as_deref() == Some(REASON_TIMEOUT)
                    }
                    StatusTest::PhaseEq(p) => phase == *p,
                    StatusTest::PhaseNe(p) => phase != *p,
                }
            }
        }
    }
}

/// A step's phase and `reason`, as an `if` reads them.
type PhaseReason = (Phase, Option<String>);

/// Phase of a step (`status.workflow.steps[].phase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    Pending,
    Running,
    Suspending,
    Succeeded,
    Failed,
    Skipped,
}

impl Phase {
    pub fn is_done(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed | Phase::Skipped)
    }

    fn parse(s: &str) -> Option<Phase> {
        Some(match s {
            "pending" => Phase::Pending,
            "running" => Phase::Running,
            "suspending" => Phase::Suspending,
            "succeeded" => Phase::Succeeded,
            "failed" => Phase::Failed,
            "skipped" => Phase::Skipped,
            _ => return None,
        })
    }
}

/// `status.status` of the Application while / after the workflow runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AppPhase {
    #[default]
    RunningWorkflow,
    WorkflowSuspending,
    /// A step failed (KubeVela's docs: "When a step in the workflow fails or is terminated").
    WorkflowTerminated,
    /// Every step succeeded or was skipped.
    Running,
}

/// `reason` of a step that ran past its `timeout`.
pub const REASON_TIMEOUT: &str = "Timeout";
/// `reason` of a step skipped by its `if` or an earlier failure.
pub const REASON_SKIP: &str = "Skip";

/// One entry of `status.workflow.steps[]` (sub-steps in `subSteps`). Times are unix seconds,
/// serialised as RFC 3339 like KubeVela's `metav1.Time`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepStatus {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, with = "rfc3339", skip_serializing_if = "Option::is_none")]
    pub first_execute_time: Option<u64>,
    #[serde(default, with = "rfc3339", skip_serializing_if = "Option::is_none")]
    pub last_execute_time: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sub_steps: Vec<StepStatus>,
}

/// `status.workflow` plus the Application phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct State {
    // Every field defaults, so a status another writer left (KubeVela itself, or a CRD
    // schema that pruned `appPhase`) still reads instead of restarting the workflow.
    /// `"<steps>-<subSteps>"`, e.g. `StepByStep-DAG`, as KubeVela writes it.
    pub mode: String,
    pub app_phase: AppPhase,
    pub suspend: bool,
    pub terminated: bool,
    pub finished: bool,
    pub steps: Vec<StepStatus>,
}

/// How an action the controller ran for a step ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub step: String,
    pub succeeded: bool,
    pub message: Option<String>,
}

impl Outcome {
    pub fn succeeded(step: &str) -> Outcome {
        Outcome {
            step: step.into(),
            succeeded: true,
            message: None,
        }
    }
    pub fn failed(step: &str, message: &str) -> Outcome {
        Outcome {
            step: step.into(),
            succeeded: false,
            message: Some(message.into()),
        }
    }
}

/// What the controller must do. Each `Apply`/`Notify`/`Run` is emitted once, when its step
/// starts; the controller reports its end with an [`Outcome`] for `step`.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Apply the components (in this order, each after the ones before it are healthy, see
    /// [`component_order`]) and report success once they are healthy.
    Apply {
        step: String,
        components: Vec<String>,
        policies: Vec<String>,
    },
    Notify {
        step: String,
        properties: Value,
    },
    /// A caller-declared step type.
    Run {
        step: String,
        type_name: String,
        properties: Value,
    },
    /// Call `advance` again at this unix time (a suspend's duration or a timeout ends).
    WaitUntil(u64),
}

impl Plan {
    /// The workflow of `app`. `extra_types` are step types (WorkflowStepDefinitions) the caller
    /// can execute besides [`BUILTIN_STEP_TYPES`]; any other type is an error naming it.
    pub fn from_application(app: &Application, extra_types: &[&str]) -> Result<Plan, OamError> {
        let declared = app.spec.workflow.as_ref().filter(|w| !w.steps.is_empty());
        let Some(wf) = declared else {
            return Ok(Plan {
                steps: implicit_steps(app),
                mode: Mode::Dag,
                sub_mode: Mode::Dag,
                implicit: true,
            });
        };
        let mode = Mode::parse(wf.mode.get("steps"), Mode::StepByStep)?;
        let sub_mode = Mode::parse(wf.mode.get("subSteps"), Mode::Dag)?;
        let steps = wf
            .steps
            .iter()
            .map(|s| convert_step(s, extra_types, true))
            .collect::<Result<Vec<_>, _>>()?;
        let plan = Plan {
            steps,
            mode,
            sub_mode,
            implicit: false,
        };
        plan.check()?;
        Ok(plan)
    }

    /// Names unique across all levels, `dependsOn` and `if` name existing steps, no cycles.
    fn check(&self) -> Result<(), OamError> {
        let mut all = BTreeSet::new();
        let mut dup = None;
        visit(&self.steps, &mut |s| {
            if !all.insert(s.name.clone()) {
                dup.get_or_insert(s.name.clone());
            }
        });
        if let Some(d) = dup {
            return Err(OamError::Workflow(format!("step name `{d}` is used twice")));
        }
        let mut err = None;
        visit(&self.steps, &mut |s| {
            let mut refs = BTreeSet::new();
            if let Condition::Expr(e) = &s.condition {
                e.steps(&mut refs);
            }
            for r in s.depends_on.iter().chain(refs.iter()) {
                if !all.contains(r) && err.is_none() {
                    err = Some(OamError::Workflow(format!(
                        "step `{}` refers to unknown step `{r}`",
                        s.name
                    )));
                }
            }
        });
        if let Some(e) = err {
            return Err(e);
        }
        check_level(&self.steps, self.mode)?;
        let mut res = Ok(());
        visit(&self.steps, &mut |s| {
            if let StepKind::StepGroup { sub_steps } = &s.kind
                && res.is_ok()
            {
                res = check_level(sub_steps, self.sub_mode);
            }
        });
        res
    }
}

fn visit(steps: &[Step], f: &mut dyn FnMut(&Step)) {
    for s in steps {
        f(s);
        if let StepKind::StepGroup { sub_steps } = &s.kind {
            visit(sub_steps, f);
        }
    }
}

/// Dependencies of each step on its own level: `dependsOn`, the steps its `if` reads, and in
/// StepByStep mode the step before it.
fn level_deps(steps: &[Step], mode: Mode) -> Vec<Vec<usize>> {
    let index: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut refs: BTreeSet<String> = s.depends_on.iter().cloned().collect();
            if let Condition::Expr(e) = &s.condition {
                e.steps(&mut refs);
            }
            let mut deps: BTreeSet<usize> = refs
                .iter()
                .filter_map(|r| index.get(r.as_str()).copied())
                .collect();
            if mode == Mode::StepByStep && i > 0 {
                deps.insert(i - 1);
            }
            deps.into_iter().collect()
        })
        .collect()
}

fn check_level(steps: &[Step], mode: Mode) -> Result<(), OamError> {
    let deps = level_deps(steps, mode);
    let names: Vec<String> = steps.iter().map(|s| s.name.clone()).collect();
    let edges: Vec<Vec<String>> = deps
        .iter()
        .map(|d| d.iter().map(|&j| names[j].clone()).collect())
        .collect();
    layers(&names, &edges, "step").map(|_| ())
}

/// KubeVela's generated workflow (`pkg/workflow/step/generator.go`): a `deploy-<topology>`
/// step per topology policy (with all override policies), else one `deploy` step when there are
/// override policies, else one `apply-component` step per component, named after it, carrying
/// the component's `dependsOn`. Run as a DAG.
fn implicit_steps(app: &Application) -> Vec<Step> {
    let of_type = |t: &str| -> Vec<String> {
        app.spec
            .policies
            .iter()
            .filter(|p| p.type_name == t)
            .map(|p| p.name.clone())
            .collect()
    };
    let (topologies, overrides) = (of_type("topology"), of_type("override"));
    let step = |name: String, kind: StepKind, depends_on: Vec<String>| Step {
        name,
        kind,
        depends_on,
        condition: Condition::Default,
        timeout: None,
        properties: Value::Null,
        inputs: vec![],
        outputs: vec![],
    };
    if !topologies.is_empty() {
        return topologies
            .iter()
            .map(|t| {
                let mut policies = overrides.clone();
                policies.push(t.clone());
                step(format!("deploy-{t}"), StepKind::Deploy { policies }, vec![])
            })
            .collect();
    }
    if !overrides.is_empty() {
        return vec![step(
            "deploy".into(),
            StepKind::Deploy {
                policies: overrides,
            },
            vec![],
        )];
    }
    app.spec
        .components
        .iter()
        .map(|c| {
            let kind = StepKind::ApplyComponent {
                component: c.name.clone(),
            };
            step(c.name.clone(), kind, c.depends_on.clone())
        })
        .collect()
}

fn convert_step(s: &WorkflowStep, extra: &[&str], top: bool) -> Result<Step, OamError> {
    let bad = |reason: String| OamError::Workflow(format!("step `{}`: {reason}", s.name));
    let prop = |k: &str| s.properties.get(k);
    // The properties each built-in reads; anything else would be dropped without a word.
    // (Upstream's deploy also reads parallelism and ignoreTerraformComponent: Ferry applies a
    // step's components layer by layer without a limit, and has no Terraform.)
    let allowed: Option<&[&str]> = match s.type_name.as_str() {
        "deploy" => Some(&["policies"]),
        "apply-component" => Some(&["component", "cluster"]),
        "suspend" => Some(&["duration"]),
        "step-group" => Some(&[]),
        _ => None,
    };
    if let Some(allowed) = allowed {
        check_fields(&s.properties, allowed).map_err(bad)?;
    }
    let kind = match s.type_name.as_str() {
        "deploy" => {
            let policies = match prop("policies") {
                None | Some(Value::Null) => vec![],
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|p| p.as_str().map(String::from))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad("properties.policies: expected a list of names".into()))?,
                Some(_) => return Err(bad("properties.policies: expected a list of names".into())),
            };
            StepKind::Deploy { policies }
        }
        "apply-component" => match prop("component").and_then(Value::as_str) {
            Some(c) => StepKind::ApplyComponent {
                component: c.into(),
            },
            None => return Err(bad("properties.component: expected a component name".into())),
        },
        "suspend" => match prop("duration") {
            None | Some(Value::Null) => StepKind::Suspend { duration: None },
            Some(Value::String(d)) => StepKind::Suspend {
                duration: Some(
                    parse_duration(d).map_err(|e| bad(format!("properties.duration: {e}")))?,
                ),
            },
            Some(_) => {
                return Err(bad(
                    "properties.duration: expected a duration such as `30s`".into(),
                ));
            }
        },
        "step-group" => {
            if !top {
                return Err(bad("a step-group cannot be a sub-step".into()));
            }
            let sub_steps = s
                .sub_steps
                .iter()
                .map(|c| convert_step(c, extra, false))
                .collect::<Result<Vec<_>, _>>()?;
            StepKind::StepGroup { sub_steps }
        }
        "notification" => StepKind::Notification,
        "depends-on-app" => {
            let field = |k: &str| {
                prop(k)
                    .and_then(Value::as_str)
                    .filter(|v| !v.is_empty())
                    .map(String::from)
                    .ok_or_else(|| {
                        bad(format!("properties.{k}: the Application's {k} is required"))
                    })
            };
            if let Some(extra) = s
                .properties
                .as_object()
                .and_then(|o| o.keys().find(|k| *k != "name" && *k != "namespace"))
            {
                return Err(bad(format!(
                    "properties.{extra}: unknown field; allowed: name, namespace"
                )));
            }
            StepKind::DependsOnApp {
                name: field("name")?,
                namespace: field("namespace")?,
            }
        }
        "apply-object" => {
            check_fields(&s.properties, &["value", "cluster"]).map_err(bad)?;
            // `value` may come from an input; otherwise it must be an object with a kind.
            let from_input = s
                .inputs_keys()
                .any(|k| k == "value" || k.starts_with("value."));
            match prop("value") {
                Some(Value::Object(_)) => {}
                None if from_input => {}
                _ => return Err(bad("properties.value: expected a Kubernetes object".into())),
            }
            StepKind::ApplyObject
        }
        "read-object" => {
            check_fields(
                &s.properties,
                &["apiVersion", "kind", "name", "namespace", "cluster"],
            )
            .map_err(bad)?;
            let from_input = s.inputs_keys().any(|k| k == "name");
            if prop("name")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
                && !from_input
            {
                return Err(bad("properties.name: the object's name is required".into()));
            }
            if prop("apiVersion").is_some() != prop("kind").is_some() {
                return Err(bad(
                    "properties: give both apiVersion and kind, or neither (an Application)".into(),
                ));
            }
            StepKind::ReadObject
        }
        t if extra.contains(&t) => StepKind::Other(t.to_string()),
        t => {
            let mut known: Vec<&str> = BUILTIN_STEP_TYPES.iter().chain(extra).copied().collect();
            known.sort_unstable();
            known.dedup();
            return Err(OamError::UnknownStepType {
                step: s.name.clone(),
                type_name: t.to_string(),
                known: known.into_iter().map(String::from).collect(),
            });
        }
    };
    if !s.sub_steps.is_empty() && !matches!(kind, StepKind::StepGroup { .. }) {
        return Err(bad(format!(
            "subSteps are only allowed on a step-group, not on `{}`",
            s.type_name
        )));
    }
    let condition = match s.if_expr.as_deref().map(str::trim) {
        None | Some("") => Condition::Default,
        Some("always") => Condition::Always,
        Some(e) => Condition::Expr(parse_expr(e).map_err(|r| bad(format!("if `{e}`: {r}")))?),
    };
    let timeout = s
        .timeout
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(|e| bad(format!("timeout: {e}")))?;
    let parse_list = |v: &Value, what: &str| -> Result<Value, OamError> {
        match v {
            Value::Null => Ok(Value::Array(vec![])),
            Value::Array(_) => Ok(v.clone()),
            _ => Err(bad(format!("{what}: expected a list"))),
        }
    };
    let inputs: Vec<StepInput> = serde_json::from_value(parse_list(&s.inputs, "inputs")?)
        .map_err(|e| bad(format!("inputs: {e}")))?;
    let outputs: Vec<StepOutput> = serde_json::from_value(parse_list(&s.outputs, "outputs")?)
        .map_err(|e| bad(format!("outputs: {e}")))?;
    // Data passing between steps runs through the object steps only; anywhere else the values
    // would be dropped without a word.
    let passes_data = matches!(kind, StepKind::ApplyObject | StepKind::ReadObject);
    if (!inputs.is_empty() || !outputs.is_empty()) && !passes_data {
        return Err(bad(format!(
            "inputs/outputs on a `{}` step are not supported by Ferry (only apply-object and \
             read-object steps pass data; components pass data with their own inputs/outputs)",
            s.type_name
        )));
    }
    Ok(Step {
        name: s.name.clone(),
        kind,
        depends_on: s.depends_on.clone(),
        condition,
        timeout,
        properties: s.properties.clone(),
        inputs,
        outputs,
    })
}

/// Refuses properties outside `allowed`, naming the first.
fn check_fields(properties: &Value, allowed: &[&str]) -> Result<(), String> {
    match properties {
        Value::Null => Ok(()),
        Value::Object(o) => match o.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(format!(
                "properties.{k}: unknown field; allowed: {}",
                allowed.join(", ")
            )),
            None => Ok(()),
        },
        _ => Err("properties: expected an object".into()),
    }
}

impl WorkflowStep {
    /// The `parameterKey`s of this step's `inputs`, as written.
    fn inputs_keys(&self) -> impl Iterator<Item = &str> {
        self.inputs
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i.get("parameterKey").and_then(Value::as_str))
    }
}

/// Go's `time.ParseDuration` for non-negative values: `300ms`, `1.5h`, `2h45m`, `10s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    ferry_model::parse_go_duration(s)
        .ok_or_else(|| format!("invalid duration `{s}` (expected e.g. `30s`, `5m`, `1h30m`)"))
}

// ---- `if` expressions -------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Sym(&'static str),
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let cs: Vec<char> = s.chars().collect();
    let mut out = vec![];
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_alphanumeric() || c == '_' {
            let start = i;
            while i < cs.len() && (cs[i].is_ascii_alphanumeric() || cs[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(cs[start..i].iter().collect()));
        } else if c == '"' {
            let start = i + 1;
            i = start;
            while i < cs.len() && cs[i] != '"' {
                i += 1;
            }
            if i == cs.len() {
                return Err("unterminated string".into());
            }
            out.push(Tok::Str(cs[start..i].iter().collect()));
            i += 1;
        } else {
            let two: String = cs[i..(i + 2).min(cs.len())].iter().collect();
            let sym = match two.as_str() {
                "&&" => "&&",
                "||" => "||",
                "==" => "==",
                "!=" => "!=",
                _ => match c {
                    '!' => "!",
                    '.' => ".",
                    '[' => "[",
                    ']' => "]",
                    '(' => "(",
                    ')' => ")",
                    _ => return Err(format!("unexpected `{c}`")),
                },
            };
            i += sym.len();
            out.push(Tok::Sym(sym));
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn eat(&mut self, sym: &'static str) -> bool {
        if self.peek() == Some(&Tok::Sym(sym)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, sym: &'static str) -> Result<(), String> {
        if self.eat(sym) {
            Ok(())
        } else {
            Err(format!("expected `{sym}`"))
        }
    }
    fn or(&mut self) -> Result<Expr, String> {
        let mut e = self.and()?;
        while self.eat("||") {
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }
    fn and(&mut self) -> Result<Expr, String> {
        let mut e = self.unary()?;
        while self.eat("&&") {
            e = Expr::And(Box::new(e), Box::new(self.unary()?));
        }
        Ok(e)
    }
    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat("!") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.eat("(") {
            let e = self.or()?;
            self.expect(")")?;
            return Ok(e);
        }
        let tok = self.toks.get(self.pos).cloned();
        self.pos += 1;
        match tok {
            Some(Tok::Ident(i)) if i == "true" => Ok(Expr::Lit(true)),
            Some(Tok::Ident(i)) if i == "false" => Ok(Expr::Lit(false)),
            Some(Tok::Ident(i)) if i == "status" => self.status(),
            Some(Tok::Ident(i)) => Err(format!(
                "`{i}` is not supported; Ferry evaluates `always`, `status.<step>.succeeded|failed|skipped|timeout`, `status.<step>.phase == \"...\"`, `!`, `&&`, `||`"
            )),
            Some(t) => Err(format!("unexpected {t:?}")),
            None => Err("unexpected end".into()),
        }
    }
    fn status(&mut self) -> Result<Expr, String> {
        let step = if self.eat("[") {
            let Some(Tok::Str(s)) = self.toks.get(self.pos).cloned() else {
                return Err("expected a quoted step name after `status[`".into());
            };
            self.pos += 1;
            self.expect("]")?;
            s
        } else {
            self.expect(".")?;
            self.ident()?
        };
        self.expect(".")?;
        let field = self.ident()?;
        let test = match field.as_str() {
            "succeeded" => StatusTest::Succeeded,
            "failed" => StatusTest::Failed,
            "skipped" => StatusTest::Skipped,
            "timeout" => StatusTest::Timeout,
            "phase" => {
                let eq = if self.eat("==") {
                    true
                } else if self.eat("!=") {
                    false
                } else {
                    return Err("expected `==` or `!=` after `.phase`".into());
                };
                let Some(Tok::Str(p)) = self.toks.get(self.pos).cloned() else {
                    return Err("expected a quoted phase".into());
                };
                self.pos += 1;
                let p = Phase::parse(&p).ok_or_else(|| format!("unknown phase `{p}`"))?;
                if eq {
                    StatusTest::PhaseEq(p)
                } else {
                    StatusTest::PhaseNe(p)
                }
            }
            f => return Err(format!("unknown status field `{f}`")),
        };
        Ok(Expr::Status { step, test })
    }
    fn ident(&mut self) -> Result<String, String> {
        match self.toks.get(self.pos).cloned() {
            Some(Tok::Ident(i)) => {
                self.pos += 1;
                Ok(i)
            }
            _ => Err("expected a name".into()),
        }
    }
}

/// Parses a step's `if` (everything but `always`).
pub fn parse_expr(s: &str) -> Result<Expr, String> {
    let mut p = Parser {
        toks: tokenize(s)?,
        pos: 0,
    };
    let e = p.or()?;
    if p.pos != p.toks.len() {
        return Err(format!("unexpected {:?}", p.toks[p.pos]));
    }
    Ok(e)
}

// ---- component dependsOn ------------------------------------------------------------------

/// Components in layers: every component of a layer depends only on components of earlier
/// layers (`spec.components[].dependsOn`: applied only after those are healthy). Within a
/// layer, declaration order. An unknown dependency or a cycle is an error naming it.
pub fn component_order(app: &Application) -> Result<Vec<Vec<String>>, OamError> {
    // A replicated component appears once per key with one name: its copies go together.
    let mut names: Vec<String> = Vec::new();
    let mut deps: Vec<Vec<String>> = Vec::new();
    for c in &app.spec.components {
        match names.iter().position(|n| *n == c.name) {
            Some(i) => {
                for d in &c.depends_on {
                    if !deps[i].contains(d) {
                        deps[i].push(d.clone());
                    }
                }
            }
            None => {
                names.push(c.name.clone());
                deps.push(c.depends_on.clone());
            }
        }
    }
    layers(&names, &deps, "component")
}

fn layers(
    names: &[String],
    deps: &[Vec<String>],
    what: &str,
) -> Result<Vec<Vec<String>>, OamError> {
    let index: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut edges: Vec<Vec<usize>> = vec![];
    for (i, ds) in deps.iter().enumerate() {
        let mut e = vec![];
        for d in ds {
            match index.get(d.as_str()) {
                Some(&j) => e.push(j),
                None => {
                    return Err(OamError::Workflow(format!(
                        "{what} `{}` depends on unknown {what} `{d}`",
                        names[i]
                    )));
                }
            }
        }
        edges.push(e);
    }
    let mut layer_of: Vec<Option<usize>> = vec![None; names.len()];
    let mut out: Vec<Vec<String>> = vec![];
    loop {
        let ready: Vec<usize> = (0..names.len())
            .filter(|&i| layer_of[i].is_none() && edges[i].iter().all(|&j| layer_of[j].is_some()))
            .collect();
        if ready.is_empty() {
            break;
        }
        for &i in &ready {
            layer_of[i] = Some(out.len());
        }
        out.push(ready.iter().map(|&i| names[i].clone()).collect());
    }
    if let Some(start) = (0..names.len()).find(|&i| layer_of[i].is_none()) {
        // Walk unresolved dependencies until a node repeats: that is a cycle.
        let mut path = vec![start];
        let mut cur = start;
        loop {
            let next = edges[cur]
                .iter()
                .copied()
                .find(|&j| layer_of[j].is_none())
                .unwrap_or(cur);
            if let Some(pos) = path.iter().position(|&p| p == next) {
                let mut cycle: Vec<String> =
                    path[pos..].iter().map(|&p| names[p].clone()).collect();
                cycle.push(names[next].clone());
                return Err(OamError::DependencyCycle {
                    what: what.to_string(),
                    cycle,
                });
            }
            path.push(next);
            cur = next;
        }
    }
    Ok(out)
}

// ---- the state machine ----------------------------------------------------------------------

impl State {
    /// Every step pending: the state before the first `advance`.
    pub fn new(plan: &Plan) -> State {
        fn init(steps: &[Step]) -> Vec<StepStatus> {
            steps
                .iter()
                .map(|s| StepStatus {
                    name: s.name.clone(),
                    type_name: s.kind.type_name().to_string(),
                    phase: Phase::Pending,
                    message: None,
                    reason: None,
                    first_execute_time: None,
                    last_execute_time: None,
                    sub_steps: match &s.kind {
                        StepKind::StepGroup { sub_steps } => init(sub_steps),
                        _ => vec![],
                    },
                })
                .collect()
        }
        State {
            mode: format!("{}-{}", plan.mode.as_str(), plan.sub_mode.as_str()),
            app_phase: AppPhase::RunningWorkflow,
            suspend: false,
            terminated: false,
            finished: false,
            steps: init(&plan.steps),
        }
    }

    fn matches(&self, plan: &Plan) -> bool {
        fn same(st: &[StepStatus], steps: &[Step]) -> bool {
            st.len() == steps.len()
                && st.iter().zip(steps).all(|(a, b)| {
                    a.name == b.name
                        && a.type_name == b.kind.type_name()
                        && match &b.kind {
                            StepKind::StepGroup { sub_steps } => same(&a.sub_steps, sub_steps),
                            _ => a.sub_steps.is_empty(),
                        }
                })
        }
        same(&self.steps, &plan.steps)
    }

    /// The status of a step or sub-step by name.
    pub fn step(&self, name: &str) -> Option<&StepStatus> {
        self.steps
            .iter()
            .flat_map(|s| std::iter::once(s).chain(s.sub_steps.iter()))
            .find(|s| s.name == name)
    }
}

struct Ctx<'a> {
    app_components: &'a [String],
    now: u64,
    resume: bool,
    actions: Vec<Action>,
    /// Whether any step has failed so far (the default `if` skips once one has).
    any_failed: bool,
}

fn deadline(start: Option<u64>, d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    start.unwrap_or(0).saturating_add(secs)
}

/// Given the previous state (or `State::new(plan)`), the outcomes of actions that completed
/// since, the time `now` (unix seconds) and whether the user asked to resume, decides what
/// runs next. A `prev` that does not match `plan` (the Application changed) starts over.
/// Outcomes for steps that are not running are ignored.
pub fn advance(
    plan: &Plan,
    app: &Application,
    prev: &State,
    outcomes: &[Outcome],
    now: u64,
    resume: bool,
) -> (State, Vec<Action>) {
    let mut state = if prev.matches(plan) {
        prev.clone()
    } else {
        State::new(plan)
    };
    if state.finished {
        return (state, vec![]);
    }
    let order: Vec<String> = match component_order(app) {
        Ok(l) => l.into_iter().flatten().collect(),
        Err(_) => app.spec.components.iter().map(|c| c.name.clone()).collect(),
    };
    let mut ctx = Ctx {
        app_components: &order,
        now,
        resume,
        actions: vec![],
        any_failed: false,
    };

    for o in outcomes {
        set_outcome(&mut state.steps, o, now);
    }

    // Run to a fixpoint: starting a step can finish it (skips, empty groups), which can start
    // the next one.
    loop {
        ctx.any_failed = any_failed(&state.steps);
        let snapshot = phases(&state.steps);
        let changed = step_level(
            &plan.steps,
            &mut state.steps,
            plan.mode,
            plan.sub_mode,
            &snapshot,
            &mut ctx,
        );
        if !changed {
            break;
        }
    }

    // The earliest time something changes by itself.
    let mut wake: Option<u64> = None;
    collect_wake(&plan.steps, &state.steps, &mut wake);
    let mut actions = ctx.actions;
    if let Some(t) = wake {
        actions.push(Action::WaitUntil(t));
    }

    state.finished = state.steps.iter().all(|s| s.phase.is_done());
    state.suspend = state
        .steps
        .iter()
        .flat_map(|s| std::iter::once(s).chain(s.sub_steps.iter()))
        .any(|s| s.phase == Phase::Suspending);
    state.terminated = state.finished && any_failed(&state.steps);
    state.app_phase = if state.terminated {
        AppPhase::WorkflowTerminated
    } else if state.finished {
        AppPhase::Running
    } else if state.suspend {
        AppPhase::WorkflowSuspending
    } else {
        AppPhase::RunningWorkflow
    };
    (state, actions)
}

fn set_outcome(steps: &mut [StepStatus], o: &Outcome, now: u64) -> bool {
    for s in steps {
        if s.name == o.step {
            if s.phase == Phase::Running && s.sub_steps.is_empty() && s.type_name != "step-group" {
                s.phase = if o.succeeded {
                    Phase::Succeeded
                } else {
                    Phase::Failed
                };
                s.message = o.message.clone();
                s.reason = (!o.succeeded).then(|| "Execute".to_string());
                s.last_execute_time = Some(now);
            }
            return true;
        }
        if set_outcome(&mut s.sub_steps, o, now) {
            return true;
        }
    }
    false
}

fn any_failed(steps: &[StepStatus]) -> bool {
    steps
        .iter()
        .any(|s| s.phase == Phase::Failed || any_failed(&s.sub_steps))
}

fn phases(steps: &[StepStatus]) -> BTreeMap<String, PhaseReason> {
    let mut m = BTreeMap::new();
    for s in steps {
        m.insert(s.name.clone(), (s.phase, s.reason.clone()));
        m.extend(phases(&s.sub_steps));
    }
    m
}

fn finish(
    st: &mut StepStatus,
    phase: Phase,
    reason: Option<&str>,
    message: Option<String>,
    now: u64,
) {
    st.phase = phase;
    st.reason = reason.map(String::from);
    st.message = message;
    if phase != Phase::Skipped {
        st.last_execute_time = Some(now);
    }
}

/// Times out a step (and what is still open inside a group).
fn time_out(st: &mut StepStatus, timeout: Duration, now: u64) {
    for sub in &mut st.sub_steps {
        match sub.phase {
            Phase::Pending => finish(sub, Phase::Skipped, Some(REASON_SKIP), None, now),
            Phase::Running | Phase::Suspending => {
                let msg = format!("step-group `{}` timed out", st.name);
                finish(sub, Phase::Failed, Some(REASON_TIMEOUT), Some(msg), now)
            }
            _ => {}
        }
    }
    let msg = format!("step timed out after {}", fmt_duration(timeout));
    finish(st, Phase::Failed, Some(REASON_TIMEOUT), Some(msg), now);
}

fn fmt_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:?}", d)
    }
}

/// One pass over one level. Returns whether anything changed.
fn step_level(
    steps: &[Step],
    st: &mut [StepStatus],
    mode: Mode,
    sub_mode: Mode,
    snapshot: &BTreeMap<String, PhaseReason>,
    ctx: &mut Ctx<'_>,
) -> bool {
    let deps = level_deps(steps, mode);
    let mut changed = false;
    for i in 0..steps.len() {
        let step = &steps[i];
        // Running or suspending: timeouts, suspend ends, group completion.
        if matches!(st[i].phase, Phase::Running | Phase::Suspending) {
            if let Some(t) = step.timeout
                && ctx.now >= deadline(st[i].first_execute_time, t)
            {
                time_out(&mut st[i], t, ctx.now);
                ctx.any_failed = true;
                changed = true;
                continue;
            }
            match &step.kind {
                StepKind::Suspend { duration } => {
                    let elapsed =
                        duration.is_some_and(|d| ctx.now >= deadline(st[i].first_execute_time, d));
                    if ctx.resume || elapsed {
                        let msg = if elapsed && !ctx.resume {
                            None
                        } else {
                            Some("resumed".to_string())
                        };
                        finish(&mut st[i], Phase::Succeeded, None, msg, ctx.now);
                        changed = true;
                    }
                }
                StepKind::StepGroup { sub_steps } => {
                    changed |= step_level(
                        sub_steps,
                        &mut st[i].sub_steps,
                        sub_mode,
                        sub_mode,
                        snapshot,
                        ctx,
                    );
                    if st[i].sub_steps.iter().all(|s| s.phase.is_done()) {
                        let failed: Vec<&str> = st[i]
                            .sub_steps
                            .iter()
                            .filter(|s| s.phase == Phase::Failed)
                            .map(|s| s.name.as_str())
                            .collect();
                        if failed.is_empty() {
                            finish(&mut st[i], Phase::Succeeded, None, None, ctx.now);
                        } else {
                            let msg = format!("sub-steps failed: {}", failed.join(", "));
                            finish(
                                &mut st[i],
                                Phase::Failed,
                                Some("Execute"),
                                Some(msg),
                                ctx.now,
                            );
                            ctx.any_failed = true;
                        }
                        changed = true;
                    }
                }
                _ => {}
            }
            continue;
        }
        if st[i].phase != Phase::Pending || !deps[i].iter().all(|&j| st[j].phase.is_done()) {
            continue;
        }
        // Ready: decide by `if`.
        let run = match &step.condition {
            Condition::Always => true,
            Condition::Default => !ctx.any_failed,
            // Same-level steps live (they may have finished earlier in this pass), others as
            // they were when the pass started.
            Condition::Expr(e) => e.eval(&|n| {
                st.iter()
                    .find(|s| s.name == n)
                    .map(|s| (s.phase, s.reason.clone()))
                    .or_else(|| snapshot.get(n).cloned())
            }),
        };
        changed = true;
        if !run {
            finish(&mut st[i], Phase::Skipped, Some(REASON_SKIP), None, ctx.now);
            for sub in &mut st[i].sub_steps {
                finish(sub, Phase::Skipped, Some(REASON_SKIP), None, ctx.now);
            }
            continue;
        }
        st[i].first_execute_time = Some(ctx.now);
        st[i].last_execute_time = Some(ctx.now);
        st[i].phase = Phase::Running;
        match &step.kind {
            StepKind::Deploy { policies } => ctx.actions.push(Action::Apply {
                step: step.name.clone(),
                components: ctx.app_components.to_vec(),
                policies: policies.clone(),
            }),
            StepKind::ApplyComponent { component } => ctx.actions.push(Action::Apply {
                step: step.name.clone(),
                components: vec![component.clone()],
                policies: vec![],
            }),
            StepKind::Notification => ctx.actions.push(Action::Notify {
                step: step.name.clone(),
                properties: step.properties.clone(),
            }),
            StepKind::Other(_)
            | StepKind::DependsOnApp { .. }
            | StepKind::ApplyObject
            | StepKind::ReadObject => ctx.actions.push(Action::Run {
                step: step.name.clone(),
                type_name: step.kind.type_name().to_string(),
                properties: step.properties.clone(),
            }),
            StepKind::Suspend { .. } => st[i].phase = Phase::Suspending,
            StepKind::StepGroup { .. } => {} // sub-steps start on the next pass
        }
    }
    changed
}

fn collect_wake(steps: &[Step], st: &[StepStatus], wake: &mut Option<u64>) {
    fn at(wake: &mut Option<u64>, t: u64) {
        *wake = Some(wake.map_or(t, |w| w.min(t)));
    }
    for (step, s) in steps.iter().zip(st) {
        if !matches!(s.phase, Phase::Running | Phase::Suspending) {
            continue;
        }
        if let Some(t) = step.timeout {
            at(wake, deadline(s.first_execute_time, t));
        }
        if let StepKind::Suspend { duration: Some(d) } = &step.kind {
            at(wake, deadline(s.first_execute_time, *d));
        }
        if let StepKind::StepGroup { sub_steps } = &step.kind {
            collect_wake(sub_steps, &s.sub_steps, wake);
        }
    }
}

// ---- RFC 3339 timestamps --------------------------------------------------------------------

mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};

    // Howard Hinnant's civil-from-days / days-from-civil.
    fn civil(days: i64) -> (i64, u32, u32) {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        (yoe + era * 400 + i64::from(m <= 2), m, d)
    }

    fn days(y: i64, m: u32, d: u32) -> i64 {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let mp = i64::from((m + 9) % 12);
        let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    pub fn format(t: u64) -> String {
        let (y, m, d) = civil((t / 86_400) as i64);
        let s = t % 86_400;
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            s / 3600,
            s / 60 % 60,
            s % 60
        )
    }

    pub fn parse(s: &str) -> Option<u64> {
        let b = s.as_bytes();
        if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
            return None;
        }
        let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<u32>().ok();
        let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
        let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
        let day = days(i64::from(y), m, d);
        u64::try_from(day * 86_400 + i64::from(hh * 3600 + mm * 60 + ss)).ok()
    }

    pub fn serialize<S: Serializer>(t: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&format(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        let v: Option<String> = Option::deserialize(d)?;
        v.map(|s| {
            parse(&s)
                .ok_or_else(|| serde::de::Error::custom(format!("invalid RFC 3339 time `{s}`")))
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests;

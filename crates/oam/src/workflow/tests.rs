use super::*;
use crate::parse_application;

fn app(workflow: &str) -> Application {
    let yaml = format!(
        "apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata: {{name: a}}\nspec:\n  components:\n  - {{name: db, type: worker, properties: {{image: x}}}}\n  - {{name: api, type: worker, properties: {{image: x}}, dependsOn: [db]}}\n  - {{name: web, type: worker, properties: {{image: x}}, dependsOn: [api]}}\n{workflow}"
    );
    parse_application(&yaml).unwrap()
}

fn plan(a: &Application) -> Plan {
    Plan::from_application(a, &[]).unwrap()
}

fn phase(s: &State, name: &str) -> Phase {
    s.step(name)
        .unwrap_or_else(|| panic!("no step {name}"))
        .phase
}

fn applied(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Apply { step, .. } | Action::Notify { step, .. } | Action::Run { step, .. } => {
                Some(step.clone())
            }
            Action::WaitUntil(_) => None,
        })
        .collect()
}

struct Run {
    app: Application,
    plan: Plan,
    state: State,
}

impl Run {
    fn new(workflow: &str) -> Run {
        let app = app(workflow);
        let plan = plan(&app);
        let state = State::new(&plan);
        Run { app, plan, state }
    }
    fn go(&mut self, outcomes: &[Outcome], now: u64, resume: bool) -> Vec<Action> {
        let (s, a) = advance(&self.plan, &self.app, &self.state, outcomes, now, resume);
        self.state = s;
        a
    }
}

const SEQ: &str = "  workflow:\n    steps:\n    - {name: s1, type: apply-component, properties: {component: db}}\n    - {name: s2, type: apply-component, properties: {component: api}}\n    - {name: s3, type: apply-component, properties: {component: web}}\n";

#[test]
fn sequential_steps_run_one_after_another() {
    let mut r = Run::new(SEQ);
    assert_eq!(r.plan.mode, Mode::StepByStep);
    let a = r.go(&[], 100, false);
    assert_eq!(
        a,
        vec![Action::Apply {
            step: "s1".into(),
            components: vec!["db".into()],
            policies: vec![]
        }]
    );
    assert_eq!(phase(&r.state, "s1"), Phase::Running);
    assert_eq!(phase(&r.state, "s2"), Phase::Pending);
    assert_eq!(r.state.app_phase, AppPhase::RunningWorkflow);
    // Nothing new without an outcome.
    assert!(r.go(&[], 101, false).is_empty());
    assert_eq!(
        applied(&r.go(&[Outcome::succeeded("s1")], 102, false)),
        vec!["s2"]
    );
    assert_eq!(
        applied(&r.go(&[Outcome::succeeded("s2")], 103, false)),
        vec!["s3"]
    );
    assert!(r.go(&[Outcome::succeeded("s3")], 104, false).is_empty());
    assert!(r.state.finished && !r.state.terminated);
    assert_eq!(r.state.app_phase, AppPhase::Running);
    let s1 = r.state.step("s1").unwrap();
    assert_eq!(
        (s1.first_execute_time, s1.last_execute_time),
        (Some(100), Some(102))
    );
}

#[test]
fn default_if_skips_after_failure_and_always_runs() {
    let mut r = Run::new(
        "  workflow:\n    steps:\n    - {name: s1, type: apply-component, properties: {component: db}}\n    - {name: s2, type: apply-component, properties: {component: api}}\n    - {name: notify, type: notification, if: always, properties: {slack: {url: {value: u}}}}\n",
    );
    r.go(&[], 0, false);
    let a = r.go(&[Outcome::failed("s1", "image pull failed")], 5, false);
    assert_eq!(phase(&r.state, "s1"), Phase::Failed);
    assert_eq!(
        r.state.step("s1").unwrap().message.as_deref(),
        Some("image pull failed")
    );
    assert_eq!(phase(&r.state, "s2"), Phase::Skipped);
    assert_eq!(phase(&r.state, "notify"), Phase::Running);
    assert_eq!(
        a,
        vec![Action::Notify {
            step: "notify".into(),
            properties: serde_json::json!({"slack": {"url": {"value": "u"}}})
        }]
    );
    r.go(&[Outcome::succeeded("notify")], 6, false);
    assert_eq!(phase(&r.state, "notify"), Phase::Succeeded);
    assert!(r.state.finished && r.state.terminated);
    assert_eq!(r.state.app_phase, AppPhase::WorkflowTerminated);
}

#[test]
fn if_status_failed_and_succeeded() {
    let wf = "  workflow:\n    steps:\n    - {name: s1, type: apply-component, properties: {component: db}}\n    - {name: on-fail, type: notification, if: status.s1.failed}\n    - {name: on-ok, type: notification, if: 'status[\"s1\"].succeeded'}\n    - {name: phase, type: notification, if: 'status.s1.phase == \"failed\" && !status.s1.timeout'}\n";
    let mut r = Run::new(wf);
    r.go(&[], 0, false);
    let a = r.go(&[Outcome::failed("s1", "boom")], 1, false);
    assert_eq!(applied(&a), vec!["on-fail"]);
    r.go(&[Outcome::succeeded("on-fail")], 2, false);
    assert_eq!(phase(&r.state, "on-ok"), Phase::Skipped);
    assert_eq!(phase(&r.state, "phase"), Phase::Running);

    let mut r = Run::new(wf);
    r.go(&[], 0, false);
    let a = r.go(&[Outcome::succeeded("s1")], 1, false);
    assert_eq!(phase(&r.state, "on-fail"), Phase::Skipped);
    assert_eq!(applied(&a), vec!["on-ok"]);
}

#[test]
fn depends_on_waits_for_dependencies_in_dag_mode() {
    let mut r = Run::new(
        "  workflow:\n    mode: {steps: DAG}\n    steps:\n    - {name: c, type: apply-component, properties: {component: web}, dependsOn: [a, b]}\n    - {name: a, type: apply-component, properties: {component: db}}\n    - {name: b, type: apply-component, properties: {component: api}}\n",
    );
    assert_eq!(r.plan.mode, Mode::Dag);
    assert_eq!(applied(&r.go(&[], 0, false)), vec!["a", "b"]);
    assert!(applied(&r.go(&[Outcome::succeeded("a")], 1, false)).is_empty());
    assert_eq!(phase(&r.state, "c"), Phase::Pending);
    assert_eq!(
        applied(&r.go(&[Outcome::succeeded("b")], 2, false)),
        vec!["c"]
    );
}

#[test]
fn depends_on_in_step_by_step_mode_and_failed_dependency_skips() {
    // s3 comes first but depends on s2; StepByStep also chains s2 after s3 -> cycle.
    let a = app(
        "  workflow:\n    steps:\n    - {name: s3, type: suspend, dependsOn: [s2]}\n    - {name: s2, type: suspend}\n",
    );
    let err = Plan::from_application(&a, &[]).unwrap_err().to_string();
    assert!(err.contains("step dependsOn cycle"), "{err}");

    let mut r = Run::new(
        "  workflow:\n    mode: {steps: DAG}\n    steps:\n    - {name: a, type: apply-component, properties: {component: db}}\n    - {name: b, type: apply-component, properties: {component: api}, dependsOn: [a]}\n",
    );
    r.go(&[], 0, false);
    r.go(&[Outcome::failed("a", "x")], 1, false);
    assert_eq!(phase(&r.state, "b"), Phase::Skipped);
    assert!(r.state.terminated);
}

#[test]
fn timeout_fails_a_running_step() {
    let mut r = Run::new(
        "  workflow:\n    steps:\n    - {name: s1, type: apply-component, timeout: 1m, properties: {component: db}}\n    - {name: s2, type: apply-component, properties: {component: api}}\n    - {name: t, type: notification, if: status.s1.timeout}\n",
    );
    let a = r.go(&[], 1000, false);
    assert!(a.contains(&Action::WaitUntil(1060)), "{a:?}");
    assert!(r.go(&[], 1059, false).contains(&Action::WaitUntil(1060)));
    assert_eq!(phase(&r.state, "s1"), Phase::Running);
    let a = r.go(&[], 1060, false);
    let s1 = r.state.step("s1").unwrap();
    assert_eq!(
        (s1.phase, s1.reason.as_deref()),
        (Phase::Failed, Some(REASON_TIMEOUT))
    );
    assert_eq!(s1.message.as_deref(), Some("step timed out after 60s"));
    assert_eq!(phase(&r.state, "s2"), Phase::Skipped);
    assert_eq!(applied(&a), vec!["t"]);
    // A late outcome does not revive it.
    r.go(&[Outcome::succeeded("s1")], 1061, false);
    assert_eq!(phase(&r.state, "s1"), Phase::Failed);
}

#[test]
fn suspend_without_duration_waits_for_resume() {
    let mut r = Run::new(
        "  workflow:\n    steps:\n    - {name: s1, type: apply-component, properties: {component: db}}\n    - {name: approve, type: suspend}\n    - {name: s2, type: apply-component, properties: {component: api}}\n",
    );
    r.go(&[], 0, false);
    let a = r.go(&[Outcome::succeeded("s1")], 1, false);
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(phase(&r.state, "approve"), Phase::Suspending);
    assert!(r.state.suspend);
    assert_eq!(r.state.app_phase, AppPhase::WorkflowSuspending);
    assert!(r.go(&[], 1_000_000, false).is_empty());
    assert_eq!(phase(&r.state, "approve"), Phase::Suspending);
    let a = r.go(&[], 1_000_001, true);
    assert_eq!(phase(&r.state, "approve"), Phase::Succeeded);
    assert_eq!(applied(&a), vec!["s2"]);
    assert!(!r.state.suspend);
}

#[test]
fn suspend_with_duration_resumes_by_itself() {
    let mut r = Run::new(
        "  workflow:\n    steps:\n    - {name: wait, type: suspend, properties: {duration: 1m30s}}\n    - {name: s2, type: apply-component, properties: {component: api}}\n",
    );
    assert_eq!(r.go(&[], 10, false), vec![Action::WaitUntil(100)]);
    assert_eq!(r.go(&[], 99, false), vec![Action::WaitUntil(100)]);
    assert_eq!(phase(&r.state, "wait"), Phase::Suspending);
    let a = r.go(&[], 100, false);
    assert_eq!(phase(&r.state, "wait"), Phase::Succeeded);
    assert_eq!(applied(&a), vec!["s2"]);
}

#[test]
fn suspend_timeout_fails_it() {
    // kubevela.io timeout.md: a suspend with `timeout: 5s` not resumed in time fails.
    let mut r = Run::new(
        "  workflow:\n    steps:\n    - {name: suspend, type: suspend, timeout: 5s}\n    - {name: s2, type: apply-component, properties: {component: api}}\n",
    );
    r.go(&[], 0, false);
    r.go(&[], 5, false);
    assert_eq!(phase(&r.state, "suspend"), Phase::Failed);
    assert_eq!(phase(&r.state, "s2"), Phase::Skipped);
    assert_eq!(r.state.app_phase, AppPhase::WorkflowTerminated);
}

const GROUP: &str = "  workflow:\n    steps:\n    - {name: s1, type: apply-component, properties: {component: db}}\n    - name: g\n      type: step-group\n      subSteps:\n      - {name: g1, type: apply-component, properties: {component: api}}\n      - {name: g2, type: apply-component, properties: {component: web}}\n    - {name: s3, type: notification}\n";

#[test]
fn step_group_runs_sub_steps_concurrently_and_succeeds_when_all_do() {
    let mut r = Run::new(GROUP);
    r.go(&[], 0, false);
    let a = r.go(&[Outcome::succeeded("s1")], 1, false);
    assert_eq!(applied(&a), vec!["g1", "g2"]);
    assert_eq!(phase(&r.state, "g"), Phase::Running);
    assert!(r.go(&[Outcome::succeeded("g1")], 2, false).is_empty());
    assert_eq!(phase(&r.state, "g"), Phase::Running);
    let a = r.go(&[Outcome::succeeded("g2")], 3, false);
    assert_eq!(phase(&r.state, "g"), Phase::Succeeded);
    assert_eq!(applied(&a), vec!["s3"]);
}

#[test]
fn step_group_fails_when_a_sub_step_fails() {
    let mut r = Run::new(GROUP);
    r.go(&[], 0, false);
    r.go(&[Outcome::succeeded("s1")], 1, false);
    r.go(
        &[Outcome::failed("g1", "bad"), Outcome::succeeded("g2")],
        2,
        false,
    );
    let g = r.state.step("g").unwrap();
    assert_eq!(g.phase, Phase::Failed);
    assert_eq!(g.message.as_deref(), Some("sub-steps failed: g1"));
    assert_eq!(phase(&r.state, "s3"), Phase::Skipped);
}

#[test]
fn step_group_sub_steps_step_by_step_mode() {
    let mut r = Run::new(&GROUP.replace(
        "    steps:\n",
        "    mode: {subSteps: StepByStep}\n    steps:\n",
    ));
    r.go(&[], 0, false);
    assert_eq!(
        applied(&r.go(&[Outcome::succeeded("s1")], 1, false)),
        vec!["g1"]
    );
    assert_eq!(
        applied(&r.go(&[Outcome::succeeded("g1")], 2, false)),
        vec!["g2"]
    );
}

#[test]
fn implicit_workflow_applies_each_component_after_its_dependencies() {
    let mut r = Run::new("");
    assert!(r.plan.implicit);
    assert_eq!(r.plan.mode, Mode::Dag);
    let names: Vec<_> = r
        .plan
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.kind.type_name()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("db", "apply-component"),
            ("api", "apply-component"),
            ("web", "apply-component")
        ]
    );
    assert_eq!(applied(&r.go(&[], 0, false)), vec!["db"]);
    assert_eq!(
        applied(&r.go(&[Outcome::succeeded("db")], 1, false)),
        vec!["api"]
    );
    assert_eq!(
        applied(&r.go(&[Outcome::succeeded("api")], 2, false)),
        vec!["web"]
    );
    r.go(&[Outcome::succeeded("web")], 3, false);
    assert_eq!(r.state.app_phase, AppPhase::Running);
}

#[test]
fn implicit_workflow_with_topology_and_override_policies_is_deploy_steps() {
    let mut a = app(
        "  policies:\n  - {name: prod, type: topology, properties: {clusters: [p]}}\n  - {name: big, type: override}\n",
    );
    let p = plan(&a);
    assert_eq!(p.steps.len(), 1);
    assert_eq!(p.steps[0].name, "deploy-prod");
    assert_eq!(
        p.steps[0].kind,
        StepKind::Deploy {
            policies: vec!["big".into(), "prod".into()]
        }
    );
    let (_, actions) = advance(&p, &a, &State::new(&p), &[], 0, false);
    assert_eq!(
        actions,
        vec![Action::Apply {
            step: "deploy-prod".into(),
            components: vec!["db".into(), "api".into(), "web".into()],
            policies: vec!["big".into(), "prod".into()],
        }]
    );
    a.spec.policies.remove(0);
    let p = plan(&a);
    assert_eq!((p.steps.len(), p.steps[0].name.as_str()), (1, "deploy"));
}

#[test]
fn unknown_step_type_is_an_error_naming_it() {
    let a = app(
        "  workflow:\n    steps:\n    - {name: s1, type: apply-componnet, properties: {component: db}}\n",
    );
    let err = Plan::from_application(&a, &[]).unwrap_err().to_string();
    assert_eq!(
        err,
        "workflow step `s1`: unknown step type `apply-componnet`; known types: apply-component, apply-object, depends-on-app, deploy, notification, read-object, step-group, suspend"
    );
    // Declared by the caller: runs as `Action::Run`.
    let a = app("  workflow:\n    steps:\n    - {name: s1, type: webhook, properties: {url: u}}\n");
    let p = Plan::from_application(&a, &["webhook"]).unwrap();
    let (_, actions) = advance(&p, &a, &State::new(&p), &[], 0, false);
    assert_eq!(
        actions,
        vec![Action::Run {
            step: "s1".into(),
            type_name: "webhook".into(),
            properties: serde_json::json!({"url": "u"})
        }]
    );
}

#[test]
fn bad_workflows_are_errors() {
    let cases = [
        (
            "    - {name: s1, type: suspend, dependsOn: [nope]}\n",
            "step `s1` refers to unknown step `nope`",
        ),
        (
            "    - {name: s1, type: suspend, if: inputs.x == \"y\"}\n",
            "`inputs` is not supported",
        ),
        (
            "    - {name: s1, type: suspend, timeout: 5 minutes}\n",
            "invalid duration",
        ),
        (
            "    - {name: s1, type: suspend}\n    - {name: s1, type: suspend}\n",
            "step name `s1` is used twice",
        ),
        (
            "    - {name: s1, type: apply-component}\n",
            "properties.component",
        ),
    ];
    for (steps, want) in cases {
        let a = app(&format!("  workflow:\n    steps:\n{steps}"));
        let err = Plan::from_application(&a, &[]).unwrap_err().to_string();
        assert!(err.contains(want), "{steps}: {err}");
    }
}

#[test]
fn state_serialises_with_kubevela_field_names() {
    let mut r = Run::new(GROUP);
    r.go(&[], 1_656_089_503, false); // 2022-06-24T16:51:43Z
    let v = serde_json::to_value(&r.state).unwrap();
    assert_eq!(v["mode"], "StepByStep-DAG");
    assert_eq!(v["appPhase"], "runningWorkflow");
    assert_eq!(
        v["steps"][0],
        serde_json::json!({
            "name": "s1", "type": "apply-component", "phase": "running",
            "firstExecuteTime": "2022-06-24T16:51:43Z", "lastExecuteTime": "2022-06-24T16:51:43Z",
        })
    );
    assert_eq!(
        v["steps"][1]["subSteps"][0],
        serde_json::json!({"name": "g1", "type": "apply-component", "phase": "pending"})
    );
    let back: State = serde_json::from_value(v).unwrap();
    assert_eq!(back, r.state);
}

#[test]
fn rfc3339_round_trips() {
    for t in [
        0,
        951_782_400, /* 2000-02-29 */
        1_656_089_503,
        4_102_444_799,
    ] {
        assert_eq!(rfc3339::parse(&rfc3339::format(t)), Some(t));
    }
    assert_eq!(rfc3339::format(951_782_400), "2000-02-29T00:00:00Z");
}

#[test]
fn a_changed_plan_starts_over() {
    let mut r = Run::new(SEQ);
    r.go(&[], 0, false);
    r.go(&[Outcome::succeeded("s1")], 1, false);
    let other = app("  workflow:\n    steps:\n    - {name: only, type: notification}\n");
    let p = plan(&other);
    let (s, a) = advance(&p, &other, &r.state, &[], 2, false);
    assert_eq!(applied(&a), vec!["only"]);
    assert_eq!(s.steps.len(), 1);
}

#[test]
fn component_order_layers_and_cycles() {
    let a = app("");
    assert_eq!(
        component_order(&a).unwrap(),
        vec![vec!["db"], vec!["api"], vec!["web"]]
    );
    let a = parse_application(
        "spec:\n  components:\n  - {name: a, type: w}\n  - {name: b, type: w}\n  - {name: c, type: w, dependsOn: [a, b]}\n",
    )
    .unwrap();
    assert_eq!(
        component_order(&a).unwrap(),
        vec![vec!["a", "b"], vec!["c"]]
    );
    let a = parse_application(
        "spec:\n  components:\n  - {name: x, type: w}\n  - {name: a, type: w, dependsOn: [c]}\n  - {name: b, type: w, dependsOn: [a]}\n  - {name: c, type: w, dependsOn: [b]}\n",
    )
    .unwrap();
    assert_eq!(
        component_order(&a).unwrap_err().to_string(),
        "component dependsOn cycle: a -> c -> b -> a"
    );
    let a = parse_application("spec:\n  components:\n  - {name: a, type: w, dependsOn: [zz]}\n")
        .unwrap();
    assert_eq!(
        component_order(&a).unwrap_err().to_string(),
        "workflow: component `a` depends on unknown component `zz`"
    );
}

#[test]
fn durations_follow_go() {
    assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
    assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
    assert_eq!(parse_duration("1.5m").unwrap(), Duration::from_secs(90));
    assert!(parse_duration("5").is_err());
    assert!(parse_duration("-5s").is_err());
}

#[test]
fn object_steps_validate_their_properties_and_only_they_pass_data() {
    let err = |steps: &str| {
        Plan::from_application(&app(&format!("  workflow:\n    steps:\n{steps}")), &[])
            .unwrap_err()
            .to_string()
    };
    assert!(
        err("    - {name: d, type: depends-on-app, properties: {name: base}}\n")
            .contains("properties.namespace: the Application's namespace is required")
    );
    assert!(
        err("    - {name: d, type: depends-on-app, properties: {name: a, namespace: n, cluster: x}}\n")
            .contains("properties.cluster: unknown field")
    );
    assert!(
        err("    - {name: w, type: apply-object, properties: {value: 3}}\n")
            .contains("properties.value: expected a Kubernetes object")
    );
    assert!(
        err("    - {name: r, type: read-object, properties: {kind: ConfigMap, name: x}}\n")
            .contains("give both apiVersion and kind")
    );
    assert!(
        err("    - {name: r, type: read-object, properties: {namespace: x}}\n")
            .contains("properties.name: the object's name is required")
    );
    assert!(
        err("    - {name: s, type: apply-component, properties: {component: db}, outputs: [{name: o, valueFrom: output.value}]}\n")
            .contains("inputs/outputs on a `apply-component` step are not supported")
    );
    assert!(
        err("    - {name: r, type: read-object, properties: {name: x}, outputs: [{name: o}]}\n")
            .contains("outputs: missing field `valueFrom`")
    );
    let a = app(
        "  workflow:\n    steps:\n    - {name: r, type: read-object, properties: {apiVersion: v1, kind: ConfigMap, name: x}, outputs: [{name: c, valueFrom: 'output.value.data.c'}]}\n    - {name: w, type: apply-object, inputs: [{from: c, parameterKey: value}]}\n",
    );
    let p = Plan::from_application(&a, &[]).unwrap();
    assert_eq!(p.steps[0].kind, StepKind::ReadObject);
    assert_eq!(p.steps[0].outputs[0].value_from, "output.value.data.c");
    assert_eq!(p.steps[1].inputs[0].parameter_key, "value");
    let (_, actions) = advance(&p, &a, &State::new(&p), &[], 0, false);
    assert_eq!(
        actions,
        vec![Action::Run {
            step: "r".into(),
            type_name: "read-object".into(),
            properties: serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "x"}),
        }]
    );
}

#[test]
fn built_in_steps_refuse_properties_they_do_not_read() {
    for (step, want) in [
        (
            "{name: d, type: deploy, properties: {policies: [], parallelism: 2}}",
            "properties.parallelism: unknown field; allowed: policies",
        ),
        (
            "{name: a, type: apply-component, properties: {component: db, namespace: x}}",
            "properties.namespace: unknown field; allowed: component, cluster",
        ),
        (
            "{name: s, type: suspend, properties: {duration: 1m, message: hi}}",
            "properties.message: unknown field; allowed: duration",
        ),
    ] {
        let a = app(&format!("  workflow:\n    steps:\n    - {step}\n"));
        let e = Plan::from_application(&a, &[]).unwrap_err().to_string();
        assert!(e.contains(want), "{step}: {e}");
    }
}

//! Golden and error tests for the built-in definitions added after the first spike:
//! components `daemon`, `cron-task`; traits `gateway`, `storage`, `resource`, `affinity`, `hpa`,
//! `command`, `init-container`, `json-patch` (Rust-side), `json-merge-patch`.

use std::path::PathBuf;

use ferry_oam::{Definitions, OamError, Rendered, parse_application, render};
use serde_json::{Value, json};

fn dir(sub: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(sub)
}

fn render_yaml(yaml: &str) -> Result<Vec<Rendered>, OamError> {
    render(
        &parse_application(yaml).expect("application parses"),
        &Definitions::builtin().unwrap(),
    )
}

/// The apiVersion a fixture's object of `kind` gets on a cluster of `version`.
fn api_version_on(fixture: &str, version: &str, kind: &str) -> String {
    let yaml = std::fs::read_to_string(dir("fixtures").join(fixture)).unwrap();
    let out = ferry_oam::render_for(
        &parse_application(&yaml).unwrap(),
        &Definitions::builtin().unwrap(),
        ferry_oam::ClusterVersion::parse(version).unwrap(),
    )
    .unwrap();
    out.iter()
        .find(|r| r.object["kind"] == kind)
        .map(|r| r.object["apiVersion"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("no {kind} in {fixture}"))
}

fn render_fixture(name: &str) -> Vec<Rendered> {
    let p = dir("fixtures").join(name);
    let yaml = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    render_yaml(&yaml).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Byte-for-byte comparison with `tests/golden/<name>` (pretty JSON, keys sorted, trailing
/// newline); `UPDATE_GOLDEN=1` rewrites it.
fn golden(name: &str, rendered: &[Rendered]) {
    let got: Vec<Value> = rendered
        .iter()
        .map(|r| json!({"component": r.component, "trait": r.trait_type, "output": r.output, "object": r.object}))
        .collect();
    let text = serde_json::to_string_pretty(&got).unwrap() + "\n";
    let p = dir("golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&p, &text).unwrap();
    }
    let want = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert!(
        text == want,
        "rendered output differs from {}; got:\n{text}",
        p.display()
    );
}

fn one_trait(component: &str, trait_type: &str, props: &str) -> Result<Vec<Rendered>, OamError> {
    render_yaml(&format!(
        "metadata: {{name: a}}\nspec: {{components: [{{name: c, {component}, traits: [{{type: {trait_type}, properties: {props}}}]}}]}}"
    ))
}

const WEB: &str = "type: webservice, properties: {image: x}";

#[test]
fn daemon_and_cron_task_with_pod_traits_match_golden() {
    let out = render_fixture("builtins-workloads.yaml");
    golden("builtins-workloads.json", &out);

    let kinds: Vec<&str> = out
        .iter()
        .map(|r| r.object["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["DaemonSet", "Service", "CronJob"]);
    let pod = &out[0].object["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["command"], json!(["/agent"]));
    assert_eq!(
        c["args"],
        json!(["--port=9100"]),
        "delArgs removed, addArgs appended"
    );
    assert_eq!(c["resources"]["limits"]["memory"], "128Mi");
    assert_eq!(
        c["volumeMounts"],
        json!([{"name": "workdir", "mountPath": "/etc/agent"}])
    );
    assert_eq!(
        pod["initContainers"][0]["volumeMounts"][0]["mountPath"],
        "/init"
    );
    assert_eq!(pod["volumes"], json!([{"name": "workdir", "emptyDir": {}}]));
    assert!(
        pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            .is_object()
    );
    assert_eq!(pod["tolerations"][0]["operator"], "Exists");

    let cron = &out[2].object;
    assert_eq!(
        cron["apiVersion"], "batch/v1",
        "a current cluster serves CronJob as batch/v1"
    );
    assert_eq!(
        api_version_on("builtins-workloads.yaml", "1.20.2", "CronJob"),
        "batch/v1beta1",
        "Kubernetes 1.20 serves CronJob as v1beta1 only"
    );
    assert_eq!(
        api_version_on("builtins-workloads.yaml", "1.21.0", "CronJob"),
        "batch/v1"
    );
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
    let job_pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(job_pod["restartPolicy"], "OnFailure");
    assert_eq!(
        job_pod["containers"][0]["resources"]["requests"],
        json!({"cpu": 2, "memory": "1Gi"})
    );
    assert_eq!(
        job_pod["volumes"],
        json!([{"name": "emptydir-scratch", "emptyDir": {"medium": "Memory"}}])
    );
}

#[test]
fn webservice_with_gateway_storage_hpa_and_patches_matches_golden() {
    let out = render_fixture("builtins-traits.yaml");
    golden("builtins-traits.json", &out);

    let names: Vec<(Option<&str>, Option<&str>)> = out
        .iter()
        .map(|r| (r.trait_type.as_deref(), r.output.as_deref()))
        .collect();
    assert_eq!(
        names,
        [
            (None, None),
            (Some("gateway"), Some("ingress")),
            (Some("gateway"), Some("service")),
            (Some("storage"), Some("configmap-shop-config")),
            (Some("storage"), Some("pvc-cache")),
            (Some("hpa"), Some("hpa")),
        ]
    );
    let deploy = &out[0].object;
    let c = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        c["image"], "ghcr.io/example/frontend:2.0.1",
        "json-patch replace"
    );
    assert_eq!(
        c["ports"][2],
        json!({"containerPort": 7000, "name": "debug"}),
        "json-patch add /-"
    );
    assert!(
        deploy["spec"].get("strategy").is_none(),
        "json-merge-patch null removed what json-patch added"
    );
    assert_eq!(deploy["spec"]["revisionHistoryLimit"], 3);
    assert_eq!(deploy["metadata"]["annotations"]["owner"], "shop-team");
    assert_eq!(
        deploy["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
        60
    );
    assert_eq!(c["volumeMounts"].as_array().unwrap().len(), 5);

    let ingress = &out[1].object;
    assert_eq!(
        ingress["spec"]["tls"],
        json!([{"hosts": ["shop.example.com"], "secretName": "shop-tls"}])
    );
    assert_eq!(ingress["spec"]["ingressClassName"], "nginx");
    let hpa = &out[5].object;
    assert_eq!(hpa["apiVersion"], "autoscaling/v2", "a current cluster");
    for (version, want) in [
        ("1.20.2", "autoscaling/v2beta2"),
        ("1.22.9", "autoscaling/v2beta2"),
        ("1.23.0", "autoscaling/v2"),
    ] {
        assert_eq!(
            api_version_on("builtins-traits.yaml", version, "HorizontalPodAutoscaler"),
            want,
            "Kubernetes {version}"
        );
    }
    assert_eq!(
        hpa["spec"]["metrics"][1]["resource"]["target"],
        json!({"type": "AverageValue", "averageValue": 512})
    );
}

#[test]
fn json_merge_patch_can_delete_a_top_level_field() {
    let out = one_trait(
        WEB,
        "json-merge-patch",
        "{spec: {replicas: 4}, status: null}",
    )
    .unwrap();
    assert_eq!(out[0].object["spec"]["replicas"], 4);
    // `status` was never there; deleting an absent field is a no-op...
    let out = one_trait(WEB, "json-merge-patch", "{metadata: null}").unwrap();
    // ...and a deleted top-level field is gone (the renderer then re-adds metadata.name/labels).
    assert_eq!(
        out[0].object["metadata"],
        json!({"name": "c", "labels": {
        "app.oam.dev/name": "a", "app.oam.dev/component": "c", "workload.oam.dev/type": "webservice"}})
    );
    let out = one_trait(WEB, "json-merge-patch", "{spec: null}").unwrap();
    assert!(out[0].object.get("spec").is_none());
}

#[test]
fn json_patch_failure_names_the_operation() {
    let err = one_trait(
        WEB,
        "json-patch",
        "{operations: [{op: add, path: /spec/replicas, value: 2}, {op: test, path: /spec/replicas, value: 3}]}",
    )
    .unwrap_err();
    assert!(matches!(err, OamError::Builtin { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "component `c`, trait `json-patch`: TraitDefinition/json-patch: json-patch operation '/1' failed at path '/spec/replicas': value did not match"
    );
    let err = one_trait(
        WEB,
        "json-patch",
        "{operations: [{op: frobnicate, path: /x}]}",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"component `c`, trait `json-patch`: properties.operations[0].op: "frobnicate" is not one of "add", "remove", "replace", "move", "copy", "test""#
    );
}

#[test]
fn builtin_schematic_on_a_component_is_refused() {
    let mut defs = Definitions::builtin().unwrap();
    defs.add_yaml(
        "x.yaml",
        "apiVersion: core.oam.dev/v1beta1\nkind: ComponentDefinition\nmetadata: {name: x}\nspec: {schematic: {builtin: json-patch}}",
    )
    .unwrap();
    let app =
        parse_application("metadata: {name: a}\nspec: {components: [{name: c, type: x}]}").unwrap();
    let err = render(&app, &defs).unwrap_err();
    assert_eq!(
        err.to_string(),
        "definition ComponentDefinition/x: unknown spec.schematic.builtin `json-patch` for a component; known: source, ref-objects"
    );
}

#[test]
fn schema_violations_of_new_builtins() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "type: cron-task, properties: {image: x}",
            "scaler",
            "{replicas: 1}",
            "component `c`: properties: missing required field `schedule`",
        ),
        (
            "type: cron-task, properties: {image: x, schedule: '* * * * *', concurrencyPolicy: Sometimes}",
            "scaler",
            "{replicas: 1}",
            r#"component `c`: properties.concurrencyPolicy: "Sometimes" is not one of "Allow", "Forbid", "Replace""#,
        ),
        (
            "type: daemon, properties: {image: x, replicas: 3}",
            "scaler",
            "{replicas: 1}",
            "component `c`: properties.replicas: unknown field `replicas`; allowed: addRevisionLabel, annotations, args, cmd, cpu, env, exposeType, image, imagePullPolicy, imagePullSecrets, labels, livenessProbe, memory, port, ports, readinessProbe, volumeMounts, volumes",
        ),
        (
            WEB,
            "gateway",
            "{domain: d, http: {/: http}}",
            "component `c`, trait `gateway`: properties.http./: expected integer, got string",
        ),
        (
            WEB,
            "storage",
            "{pvc: [{name: data}]}",
            "component `c`, trait `storage`: properties.pvc[0]: missing required field `mountPath`",
        ),
        (
            WEB,
            "storage",
            "{emptyDir: [{name: e, mountPath: /e, medium: Disk}]}",
            r#"component `c`, trait `storage`: properties.emptyDir[0].medium: "Disk" is not one of "", "Memory""#,
        ),
        (
            WEB,
            "resource",
            "{cpu: [1]}",
            "component `c`, trait `resource`: properties.cpu: expected number or string, got array",
        ),
        (
            WEB,
            "affinity",
            "{tolerations: [{key: k, operator: Maybe}]}",
            r#"component `c`, trait `affinity`: properties.tolerations[0].operator: "Maybe" is not one of "Equal", "Exists""#,
        ),
        (
            WEB,
            "affinity",
            "{podAffinity: {required: [{labelSelector: {}}]}}",
            "component `c`, trait `affinity`: properties.podAffinity.required[0]: missing required field `topologyKey`",
        ),
        (
            WEB,
            "hpa",
            "{cpu: {type: Percent}}",
            r#"component `c`, trait `hpa`: properties.cpu.type: "Percent" is not one of "Utilization", "AverageValue""#,
        ),
        (
            WEB,
            "command",
            "{command: /bin/sh}",
            "component `c`, trait `command`: properties.command: expected array, got string",
        ),
        (
            WEB,
            "init-container",
            "{name: i, image: busybox}",
            "component `c`, trait `init-container`: properties: missing required field `appMountPath`",
        ),
        (
            WEB,
            "json-merge-patch",
            "[1]",
            "component `c`, trait `json-merge-patch`: properties: expected object, got array",
        ),
        (
            WEB,
            "json-patch",
            "{}",
            "component `c`, trait `json-patch`: properties: missing required field `operations`",
        ),
    ];
    let mut wrong = Vec::new();
    for (component, t, props, want) in cases {
        let got = one_trait(component, t, props)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        if got != *want {
            wrong.push(format!(
                "{component} / {t} {props}:\n  got:  {got}\n  want: {want}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn pod_trait_assertions_have_messages() {
    let err = one_trait(WEB, "command", "{args: [a], addArgs: [b]}").unwrap_err();
    assert!(
        err.to_string()
            .contains("command: args cannot be combined with addArgs/delArgs"),
        "{err}"
    );
    let err = one_trait(WEB, "hpa", "{min: 5, max: 2}").unwrap_err();
    assert!(
        err.to_string()
            .contains("hpa: min (5) is greater than max (2)"),
        "{err}"
    );
    // Two mounts of one volume name declare the volume once, as upstream (storage-clash case).
    let out = one_trait(
        WEB,
        "storage",
        "{emptyDir: [{name: v, mountPath: /a}, {name: v, mountPath: /b}]}",
    )
    .unwrap();
    let pod = &out[0].object["spec"]["template"]["spec"];
    assert_eq!(pod["volumes"].as_array().unwrap().len(), 1);
    assert_eq!(
        pod["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let err = one_trait(WEB, "gateway", "{http: {/: 80}, secretName: s}").unwrap_err();
    assert!(
        err.to_string()
            .contains("gateway: secretName needs a domain"),
        "{err}"
    );
}

/// Cases where the first Ferry rendering differed from upstream's CUE
/// definitions without a word: UDP/SCTP ports, one volume mounted twice, and
/// the `env` trait's override, `replace` and `containers` forms.
#[test]
fn upstream_semantics_for_ports_volumes_and_env() {
    let out = render_yaml(
        r#"
apiVersion: core.oam.dev/v1beta1
kind: Application
metadata: { name: dns }
spec:
  components:
    - name: dns
      type: webservice
      properties:
        image: coredns:1.11
        env: [{ name: KEEP, value: "1" }, { name: LEVEL, value: info }, { name: DROP, value: x }]
        ports:
          - { port: 53, protocol: UDP, expose: true }
          - { port: 53, protocol: TCP, expose: true }
          - { port: 9153, name: metrics, protocol: TCP }
          - { port: 2000, protocol: SCTP, expose: true }
        volumeMounts:
          configMap:
            - { name: config, mountPath: /etc/coredns, cmName: coredns }
            - { name: config, mountPath: /etc/coredns-copy, cmName: coredns }
      traits:
        - type: env
          properties:
            env: { LEVEL: debug, NEW: "2" }
            unset: [DROP]
    - name: solo
      type: webservice
      properties:
        image: app:1
        env: [{ name: A, value: "1" }, { name: B, value: "2" }]
      traits:
        - type: env
          properties: { replace: true, env: { C: "3" } }
"#,
    )
    .unwrap();
    let dns = &out[0].object["spec"]["template"]["spec"];
    let c = &dns["containers"][0];
    let port_names: Vec<&str> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        port_names,
        ["port-53-udp", "port-53", "metrics", "port-2000-sctp"]
    );
    assert_eq!(
        dns["volumes"],
        json!([{"name": "config", "configMap": {"name": "coredns", "defaultMode": 420}}]),
        "a volume mounted at two paths is declared once"
    );
    assert_eq!(c["volumeMounts"].as_array().unwrap().len(), 2);
    // Overridden in place, added at the end, unset removed.
    assert_eq!(
        c["env"],
        json!([
            {"name": "KEEP", "value": "1"},
            {"name": "LEVEL", "value": "debug"},
            {"name": "NEW", "value": "2"},
        ])
    );
    let service = out.iter().find(|r| r.object["kind"] == "Service").unwrap();
    assert_eq!(
        service.object["spec"]["ports"],
        json!([
            {"name": "port-53-udp", "port": 53, "targetPort": 53, "protocol": "UDP"},
            {"name": "port-53", "port": 53, "targetPort": 53, "protocol": "TCP"},
            {"name": "port-2000-sctp", "port": 2000, "targetPort": 2000, "protocol": "SCTP"},
        ])
    );
    let solo = out
        .iter()
        .find(|r| r.object["metadata"]["name"] == "solo")
        .unwrap();
    assert_eq!(
        solo.object["spec"]["template"]["spec"]["containers"][0]["env"],
        json!([{"name": "C", "value": "3"}]),
        "replace: true makes env the whole list"
    );
}

/// `traits: null` reads as no traits, as KubeVela's nil slices do; a real
/// mistake names its path.
#[test]
fn null_lists_are_empty_and_parse_errors_name_the_path() {
    let out = render_yaml(
        "apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata: {name: a}\nspec:\n  components:\n    - name: w\n      type: worker\n      properties: {image: busybox}\n      traits: null\n      dependsOn: null\n  policies: null\n",
    )
    .unwrap();
    assert_eq!(out.len(), 1);
    let err = parse_application(
        "metadata: {name: a}\nspec:\n  components:\n    - {name: a, type: worker}\n    - name: b\n      type: worker\n      traits: [{properties: {}}]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("spec.components[1].traits[0]") && err.contains("missing field `type`"),
        "{err}"
    );
    let err = parse_application(
        "metadata: {name: a}\nspec:\n  components: []\n  policies: [{type: topology, properties: {clusters: [local]}}]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("spec.policies[0]") && err.contains("missing field `name`"),
        "{err}"
    );
}

/// Upstream's daemon takes webservice's `volumeMounts` (hostPath is the common case).
#[test]
fn daemon_volume_mounts_as_upstream() {
    let out = render_yaml(
        "apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata: {name: logs}\nspec:\n  components:\n    - name: shipper\n      type: daemon\n      properties:\n        image: fluent-bit:3\n        volumeMounts:\n          hostPath:\n            - {name: varlog, mountPath: /var/log, path: /var/log}\n            - {name: varlog, mountPath: /host/var/log, path: /var/log}\n",
    )
    .unwrap();
    let pod = &out[0].object["spec"]["template"]["spec"];
    assert_eq!(out[0].object["kind"], "DaemonSet");
    assert_eq!(
        pod["volumes"],
        json!([{"name": "varlog", "hostPath": {"path": "/var/log"}}])
    );
    assert_eq!(
        pod["containers"][0]["volumeMounts"],
        json!([{"name": "varlog", "mountPath": "/var/log"}, {"name": "varlog", "mountPath": "/host/var/log"}])
    );
}

/// appliesToWorkloads accepts `*`, `*.<group>`, `<resource>.<group>` and the component type;
/// conflictsWith refuses two traits that exclude each other.
#[test]
fn applies_to_workloads_and_conflicts_with_are_enforced() {
    let mut defs = Definitions::builtin().unwrap();
    let tr = |name: &str, applies: &str, conflicts: &str| {
        format!(
            "apiVersion: core.oam.dev/v1beta1\nkind: TraitDefinition\nmetadata: {{name: {name}}}\nspec:\n  appliesToWorkloads: {applies}\n  conflictsWith: {conflicts}\n  schematic: {{jsonnet: {{template: 'function(parameter, context) {{ patch: {{}} }}'}}}}\n"
        )
    };
    defs.add_yaml("a", &tr("by-group", "['*.apps']", "[]"))
        .unwrap();
    defs.add_yaml("b", &tr("by-type", "[worker]", "[]"))
        .unwrap();
    defs.add_yaml("c", &tr("jobs-only", "[jobs.batch]", "[]"))
        .unwrap();
    defs.add_yaml("d", &tr("exclusive", "[]", "[by-group]"))
        .unwrap();
    let run = |traits: &str| {
        render(
            &parse_application(&format!(
                "metadata: {{name: a}}\nspec: {{components: [{{name: c, type: worker, properties: {{image: x}}, traits: [{traits}]}}]}}"
            ))
            .unwrap(),
            &defs,
        )
    };
    run("{type: by-group}, {type: by-type}").unwrap();
    let e = run("{type: jobs-only}").unwrap_err().to_string();
    assert!(
        e.contains("trait `jobs-only` does not apply to its workload deployments.apps (type `worker`); it applies to: jobs.batch"),
        "{e}"
    );
    let e = run("{type: by-group}, {type: exclusive}")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("trait `exclusive` conflicts with trait `by-group`"),
        "{e}"
    );
}

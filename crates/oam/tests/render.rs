//! Rendering tests: a golden file for seed 001's my-app and the error cases.

use std::path::PathBuf;

use ferry_oam::{Application, Definitions, OamError, Rendered, parse_application, render};
use serde_json::{Value, json};

fn fixture(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn app(yaml: &str) -> Application {
    parse_application(yaml).expect("application parses")
}

fn as_json(rendered: &[Rendered]) -> Value {
    Value::Array(
        rendered
            .iter()
            .map(|r| {
                json!({"component": r.component, "trait": r.trait_type, "output": r.output, "object": r.object})
            })
            .collect(),
    )
}

/// Compares with `tests/golden/<name>`; `UPDATE_GOLDEN=1` rewrites it.
fn golden(name: &str, got: &Value) {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    let text = serde_json::to_string_pretty(got).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&p, &text).unwrap();
    }
    let want: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    assert!(
        *got == want,
        "rendered output differs from {}; got:\n{text}",
        p.display()
    );
}

#[test]
fn my_app_webservice_with_ingress_scaler_labels_matches_golden() {
    let defs = Definitions::builtin().unwrap();
    let out = render(&app(&fixture("my-app.yaml")), &defs).unwrap();
    golden("my-app.json", &as_json(&out));

    // The things the golden file must show, asserted directly too.
    let kinds: Vec<&str> = out
        .iter()
        .map(|r| r.object["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["Deployment", "Ingress", "Service"]);
    let deploy = &out[0].object;
    assert_eq!(deploy["spec"]["replicas"], 2, "scaler patched the workload");
    assert_eq!(
        deploy["metadata"]["labels"]["team"], "payments",
        "labels patched metadata"
    );
    assert_eq!(
        deploy["spec"]["template"]["metadata"]["labels"]["team"],
        "payments"
    );
    // labels' `+:` merge kept the template's own labels.
    assert_eq!(
        deploy["spec"]["template"]["metadata"]["labels"]["app.oam.dev/component"],
        "my-server"
    );
    let c = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["ports"], json!([{"containerPort": 8088}]));
    assert_eq!(
        c["env"][1]["valueFrom"]["secretKeyRef"],
        json!({"name": "mysql-secret", "key": "ROOT_PASSWORD"})
    );
    let ing = &out[1].object;
    assert_eq!(ing["spec"]["rules"][0]["host"], "testsvc.example.com");
    assert_eq!(
        ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"],
        json!({"name": "my-server", "port": {"number": 8088}})
    );
}

#[test]
fn webservice_exposed_ports_make_a_service_and_resources() {
    let defs = Definitions::builtin().unwrap();
    let a = app(r#"
metadata: {name: a}
spec:
  components:
    - name: web
      type: webservice
      properties:
        image: nginx
        cmd: [nginx]
        args: ["-g", "daemon off;"]
        cpu: "0.5"
        memory: 256Mi
        ports: [{port: 80, expose: true}, {port: 9090, name: metrics}]
"#);
    let out = render(&a, &defs).unwrap();
    assert_eq!(out.len(), 2);
    let c = &out[0].object["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["command"], json!(["nginx"]));
    assert_eq!(c["args"], json!(["-g", "daemon off;"]));
    assert_eq!(
        c["resources"]["limits"],
        json!({"cpu": "0.5", "memory": "256Mi"})
    );
    assert_eq!(
        c["ports"],
        json!([{"containerPort": 80, "protocol": "TCP", "name": "port-80"},
               {"containerPort": 9090, "protocol": "TCP", "name": "metrics"}])
    );
    let svc = &out[1];
    assert_eq!(svc.output.as_deref(), Some("webserviceExpose"));
    assert_eq!(
        svc.object["spec"]["ports"],
        json!([{"port": 80, "targetPort": 80, "name": "port-80", "protocol": "TCP"}])
    );
    assert_eq!(svc.object["spec"]["type"], "ClusterIP");
}

#[test]
fn worker_env_annotations_k8s_objects_raw() {
    let defs = Definitions::builtin().unwrap();
    let a = app(r#"
metadata: {name: a, namespace: ns}
spec:
  components:
    - name: w
      type: worker
      properties: {image: busybox, env: [{name: A, value: "1"}, {name: B, value: "2"}]}
      traits:
        - type: env
          properties: {env: {C: "3", A: "9"}, replace: true, unset: [B]}
        - type: annotations
          properties: {owner: me}
    - name: objs
      type: k8s-objects
      properties:
        objects:
          - {apiVersion: v1, kind: ConfigMap, metadata: {name: one}}
          - {apiVersion: v1, kind: ConfigMap, metadata: {name: two}}
    - name: mysql-cluster
      type: raw
      properties: {apiVersion: mysql.presslabs.org/v1alpha1, kind: MysqlCluster, metadata: {name: mysql-cluster}, spec: {replicas: 1}}
"#);
    let out = render(&a, &defs).unwrap();
    let names: Vec<(&str, Option<&str>)> = out
        .iter()
        .map(|r| {
            (
                r.object["metadata"]["name"].as_str().unwrap(),
                r.output.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("w", None),
            ("one", None),
            ("two", Some("objects-1")),
            ("mysql-cluster", None)
        ]
    );
    let c = &out[0].object["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        c["env"],
        json!([{"name": "A", "value": "9"}, {"name": "C", "value": "3"}])
    );
    assert_eq!(
        out[0].object["metadata"]["annotations"],
        json!({"owner": "me"})
    );
    assert_eq!(
        out[0].object["spec"]["template"]["metadata"]["annotations"],
        json!({"owner": "me"})
    );
    assert_eq!(
        out[3].object["metadata"]["labels"]["workload.oam.dev/type"],
        "raw"
    );
}

#[test]
fn env_trait_overrides_a_variable_of_the_same_name_as_upstream() {
    let defs = Definitions::builtin().unwrap();
    let a = app(r#"
metadata: {name: a}
spec:
  components:
    - name: w
      type: worker
      properties: {image: busybox, env: [{name: A, value: "1"}, {name: B, value: "1"}]}
      traits: [{type: env, properties: {env: {A: "2"}}}]
"#);
    let out = render(&a, &defs).unwrap();
    assert_eq!(
        out[0].object["spec"]["template"]["spec"]["containers"][0]["env"],
        json!([{"name": "A", "value": "2"}, {"name": "B", "value": "1"}])
    );
}

#[test]
fn unknown_component_type_names_it_and_lists_known() {
    let defs = Definitions::builtin().unwrap();
    let a = app(
        "metadata: {name: a}\nspec: {components: [{name: c, type: websrvice, properties: {image: x}}]}",
    );
    let err = render(&a, &defs).unwrap_err();
    assert!(
        matches!(&err, OamError::UnknownComponentType { type_name, .. } if type_name == "websrvice")
    );
    assert_eq!(
        err.to_string(),
        "component `c`: unknown component type `websrvice`; known types: cron-task, daemon, helm, helmchart, k8s-objects, kustomize, raw, ref-objects, statefulset, task, webservice, worker"
    );
}

#[test]
fn unknown_trait_type_names_it_and_lists_known() {
    let defs = Definitions::builtin().unwrap();
    let a = app(
        "metadata: {name: a}\nspec: {components: [{name: c, type: webservice, properties: {image: x}, traits: [{type: autoscaler}]}]}",
    );
    let err = render(&a, &defs).unwrap_err();
    assert_eq!(
        err.to_string(),
        "component `c`: unknown trait type `autoscaler`; known traits: affinity, annotations, command, configmap, container-image, cpuscaler, env, expose, gateway, hostalias, hpa, ingress, ingress-1-20, init-container, json-merge-patch, json-patch, k8s-update-strategy, labels, lifecycle, pvc, resource, scaler, service-account, service-binding, sidecar, startup-probe, storage, topologyspreadconstraints, volumes"
    );
}

#[test]
fn schema_violation_has_path_and_reason() {
    let defs = Definitions::builtin().unwrap();
    let a = app(r#"
metadata: {name: a}
spec:
  components:
    - name: c
      type: webservice
      properties: {image: x, ports: [{port: 80}, {port: "http"}]}
"#);
    let err = render(&a, &defs).unwrap_err();
    match &err {
        OamError::Schema { site, path, reason } => {
            assert_eq!(site.component, "c");
            assert_eq!(path, ".ports[1].port");
            assert_eq!(reason, "expected integer, got string");
        }
        other => panic!("not a schema error: {other}"),
    }
    assert_eq!(
        err.to_string(),
        "component `c`: properties.ports[1].port: expected integer, got string"
    );

    // A trait's properties are checked too, and a missing required field is named.
    let a = app(
        "metadata: {name: a}\nspec: {components: [{name: c, type: webservice, properties: {image: x}, traits: [{type: ingress, properties: {domain: d}}]}]}",
    );
    let err = render(&a, &defs).unwrap_err();
    assert_eq!(
        err.to_string(),
        "component `c`, trait `ingress`: properties: missing required field `http`"
    );
}

const BROKEN: &str = r#"
apiVersion: core.oam.dev/v1beta1
kind: ComponentDefinition
metadata: {name: broken}
spec:
  schematic:
    jsonnet:
      template: |
        function(parameter, context)
          local replicas = parameter.replicas;
          {
            output: {
              apiVersion: 'apps/v1',
              kind: 'Deployment',
              metadata: { name: std.join('-', parameter.nameParts) },
              spec: { replicas: replicas + { n: 1 } },
            },
          }
"#;

fn broken_app(props: &str) -> Result<Vec<Rendered>, OamError> {
    let mut defs = Definitions::builtin().unwrap();
    defs.add_yaml("broken.yaml", BROKEN).unwrap();
    render(
        &app(&format!(
            "metadata: {{name: a}}\nspec: {{components: [{{name: c, type: broken, properties: {props}}}]}}"
        )),
        &defs,
    )
}

#[test]
fn template_runtime_error_has_line_and_column() {
    // Line 7 of the template: `metadata: { name: std.join('-', parameter.nameParts) },`
    let err = broken_app("{replicas: 1, nameParts: 3}").unwrap_err();
    let msg = err.to_string();
    match &err {
        OamError::Template {
            location,
            definition,
            ..
        } => {
            assert_eq!(definition, "ComponentDefinition/broken");
            assert_eq!(
                location.as_deref(),
                Some("componentdefinition/broken.jsonnet:7:33"),
                "{msg}"
            );
        }
        other => panic!("not a template error: {other}"),
    }
    assert!(
        msg.contains("at componentdefinition/broken.jsonnet:7:33"),
        "{msg}"
    );
}

#[test]
fn errors_without_span_fall_back_to_field_path() {
    // jrsonnet pre98 gives `number + object` no span; the field path stands in.
    let err = broken_app("{replicas: 1, nameParts: [a]}").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("component `c`: ComponentDefinition/broken template error at componentdefinition/broken.jsonnet (field output.spec.replicas): binary operation number + object is not implemented"),
        "{msg}"
    );
    // A missing field inside a call is located by the call's frame.
    let err = broken_app("{replicas: 1}").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("component `c`: ComponentDefinition/broken template error at componentdefinition/broken.jsonnet:7:33: no such field: nameParts"),
        "{msg}"
    );
}

#[test]
fn template_syntax_error_has_location() {
    let mut defs = Definitions::new();
    defs.add_yaml(
        "syntax.yaml",
        "kind: TraitDefinition\nmetadata: {name: bad}\nspec: {schematic: {jsonnet: {template: \"function(parameter, context)\\n  { patch: { spec+: { replicas: } } }\\n\"}}}",
    )
    .unwrap();
    defs.add_yaml("raw.yaml", include_str!("../definitions/raw.yaml"))
        .unwrap();
    let a = app(
        "metadata: {name: a}\nspec: {components: [{name: c, type: raw, properties: {apiVersion: v1, kind: ConfigMap}, traits: [{type: bad}]}]}",
    );
    let err = render(&a, &defs).unwrap_err();
    let msg = err.to_string();
    match &err {
        OamError::Template { location, .. } => {
            let loc = location.as_deref().unwrap_or_default();
            assert!(
                loc.starts_with("traitdefinition/bad.jsonnet:2:"),
                "{loc}\n{msg}"
            );
        }
        other => panic!("not a template error: {other}"),
    }
}

#[test]
fn undefined_variable_is_reported_with_location() {
    let mut defs = Definitions::new();
    defs.add_yaml(
        "undef.yaml",
        "kind: ComponentDefinition\nmetadata: {name: undef}\nspec: {schematic: {jsonnet: {template: \"function(parameter, context)\\n  { output: { kind: parameterz.kind } }\\n\"}}}",
    )
    .unwrap();
    let a = app("metadata: {name: a}\nspec: {components: [{name: c, type: undef}]}");
    let err = render(&a, &defs).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("componentdefinition/undef.jsonnet:2:"),
        "{msg}"
    );
    assert!(msg.contains("parameterz"), "{msg}");
}

#[test]
fn cue_only_definition_is_refused_clearly() {
    let mut defs = Definitions::new();
    defs.add_yaml(
        "cue.yaml",
        "kind: ComponentDefinition\nmetadata: {name: cuey}\nspec: {schematic: {cue: {template: 'output: {}'}}}",
    )
    .unwrap();
    let a = app("metadata: {name: a}\nspec: {components: [{name: c, type: cuey}]}");
    let err = render(&a, &defs).unwrap_err().to_string();
    assert!(err.contains("only a CUE template"), "{err}");
}

#[test]
fn webservice_health_and_custom_status() {
    let defs = Definitions::builtin().unwrap();
    let def = defs.component("webservice").unwrap();
    let site = ferry_oam::Site {
        component: "c".into(),
        trait_type: None,
    };
    let ctx = |ready: i64| {
        json!({"name": "c", "output": {"metadata": {"generation": 3},
            "spec": {"replicas": 2},
            "status": {"readyReplicas": ready, "updatedReplicas": 2, "replicas": 2, "observedGeneration": 3}}})
    };
    let h = ferry_oam::evaluate_status(
        "ComponentDefinition/webservice",
        def.spec.status.as_ref(),
        &json!({}),
        &ctx(2),
        &site,
    )
    .unwrap();
    assert!(h.healthy);
    assert_eq!(h.message.as_deref(), Some("Ready:2/2"));
    let h = ferry_oam::evaluate_status(
        "ComponentDefinition/webservice",
        def.spec.status.as_ref(),
        &json!({}),
        &ctx(1),
        &site,
    )
    .unwrap();
    assert!(!h.healthy);
    assert_eq!(h.message.as_deref(), Some("Ready:1/2"));
}

#[test]
fn task_with_sidecar_and_expose() {
    let defs = Definitions::builtin().unwrap();
    let a = app(r#"
metadata: {name: a}
spec:
  components:
    - name: job
      type: task
      properties: {image: busybox, count: 3, cmd: [sh, -c, "echo hi"]}
      traits:
        - type: sidecar
          properties: {name: log, image: fluentbit, volumes: [{name: logs, path: /var/log}]}
    - name: web
      type: worker
      properties: {image: nginx}
      traits:
        - type: sidecar
          properties: {name: proxy, image: envoy}
        - type: expose
          properties: {port: [80, 443]}
"#);
    let out = render(&a, &defs).unwrap();
    let job = &out[0].object;
    assert_eq!(job["kind"], "Job");
    assert_eq!(
        (
            job["spec"]["parallelism"].clone(),
            job["spec"]["completions"].clone()
        ),
        (json!(3), json!(3))
    );
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");
    let names: Vec<&str> = job["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["job", "log"],
        "sidecar appended with `containers+:`"
    );
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][1]["volumeMounts"],
        json!([{"name": "logs", "mountPath": "/var/log"}])
    );
    let web = &out[1].object;
    assert_eq!(
        web["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let svc = &out[2];
    assert_eq!(
        (svc.trait_type.as_deref(), svc.output.as_deref()),
        (Some("expose"), Some("service"))
    );
    assert_eq!(
        svc.object["spec"]["ports"],
        json!([{"name": "port-80", "port": 80, "targetPort": 80}, {"name": "port-443", "port": 443, "targetPort": 443}])
    );
}

#[test]
fn sidecar_name_clash_is_an_assertion_with_location() {
    let defs = Definitions::builtin().unwrap();
    let a = app(
        "metadata: {name: a}\nspec: {components: [{name: w, type: worker, properties: {image: x}, traits: [{type: sidecar, properties: {name: w, image: y}}]}]}",
    );
    let err = render(&a, &defs).unwrap_err().to_string();
    assert!(
        err.contains("sidecar: the pod already has a container named w"),
        "{err}"
    );
    assert!(
        err.contains("at traitdefinition/sidecar.jsonnet:4:"),
        "{err}"
    );
}

#[test]
fn yaml_1_1_booleans_stay_strings() {
    // `image: y` is the string "y" (YAML 1.2, as Kubernetes reads it), not `true`.
    let a = app(
        "metadata: {name: a}\nspec: {components: [{name: w, type: worker, properties: {image: y}}]}",
    );
    assert_eq!(a.spec.components[0].properties["image"], "y");
    let err = parse_application("spec: [").unwrap_err();
    assert!(matches!(err, OamError::Application(_)), "{err}");
}

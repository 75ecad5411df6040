//! KubeVela Applications end to end: rendered by the built-in definitions, applied by the
//! controller, healthy on the test environment's clusters.

mod common;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/oam")
        .join(name)
}

fn yaml(s: &str) -> Value {
    serde_saphyr::from_str(s).unwrap()
}

fn oam_apps(h: &Harness) -> Api<DynamicObject> {
    Api::namespaced_with(
        h.client.clone(),
        &h.dest,
        &ferry_controller::oam::api_resource("Application"),
    )
}

/// Creates or updates a KubeVela Application in the test's destination namespace.
async fn apply_oam(h: &Harness, mut app: Value) {
    app["metadata"]["namespace"] = json!(h.dest);
    let name = app["metadata"]["name"].as_str().unwrap().to_string();
    oam_apps(h)
        .patch(
            &name,
            &PatchParams::apply("test").force(),
            &Patch::Apply(&app),
        )
        .await
        .unwrap();
}

/// Waits until `f` accepts the Application (as JSON); panics with its status.
async fn wait_oam(h: &Harness, name: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let app = oam_apps(h)
            .get_opt(name)
            .await
            .unwrap()
            .map(|a| serde_json::to_value(a).unwrap());
        if let Some(a) = &app
            && f(a)
        {
            return a.clone();
        }
        if Instant::now() > deadline {
            panic!(
                "timed out waiting for {name}: {what}; status: {}",
                serde_json::to_string_pretty(&app.map(|a| a["status"].clone())).unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn phase(a: &Value) -> &str {
    a.pointer("/status/status")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn step_phase<'a>(a: &'a Value, step: &str) -> &'a str {
    let steps = a
        .pointer("/status/workflow/steps")
        .and_then(Value::as_array);
    steps
        .into_iter()
        .flatten()
        .find(|s| s["name"] == step)
        .and_then(|s| s["phase"].as_str())
        .unwrap_or_default()
}

fn all_healthy(a: &Value) -> bool {
    a.pointer("/status/services")
        .and_then(Value::as_array)
        .is_some_and(|s| {
            !s.is_empty()
                && s.iter().all(|x| {
                    x["healthy"] == true
                        && x["traits"]
                            .as_array()
                            .is_none_or(|t| t.iter().all(|t| t["healthy"] == true))
                })
        })
}

fn running_healthy(a: &Value) -> bool {
    phase(a) == "running" && all_healthy(a)
}

fn condition_message(a: &Value, type_: &str) -> String {
    a.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_ && c["status"] == "False")
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_string()
}

async fn get_opt<K>(client: &kube::Client, ns: &str, name: &str) -> Option<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    <K as kube::Resource>::DynamicType: Default,
{
    Api::<K>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
}

#[tokio::test]
async fn every_builtin_type_and_trait_renders_as_the_golden_file_then_runs_healthy() {
    let text = std::fs::read_to_string(fixture("builtins.yaml")).unwrap();
    // Golden: the rendering alone, for the version of the cluster it then runs on
    // (API versions follow it, as the controller renders them).
    let app = ferry_oam::parse_application(&text).unwrap();
    let defs = ferry_oam::Definitions::builtin().unwrap();
    let info = ferry_testenv::shared()
        .cluster
        .client()
        .await
        .unwrap()
        .apiserver_version()
        .await
        .unwrap();
    let version = ferry_oam::ClusterVersion::parse(&info.git_version).unwrap();
    let rendered: Vec<Value> = ferry_oam::render_for(&app, &defs, version)
        .unwrap()
        .into_iter()
        .map(|r| {
            json!({"component": r.component, "trait": r.trait_type, "output": r.output, "object": r.object})
        })
        .collect();
    let got = serde_json::to_string_pretty(&rendered).unwrap() + "\n";
    let golden = fixture("builtins.golden.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &got).unwrap();
    }
    let want = std::fs::read_to_string(&golden).unwrap();
    assert!(
        got == want,
        "rendering differs from {}; run with UPDATE_GOLDEN=1 and review the diff",
        golden.display()
    );
    let types: std::collections::BTreeSet<String> = app
        .spec
        .components
        .iter()
        .flat_map(|c| {
            std::iter::once(c.type_name.clone()).chain(c.traits.iter().map(|t| t.type_name.clone()))
        })
        .collect();
    for t in [
        "webservice",
        "worker",
        "task",
        "cron-task",
        "daemon",
        "k8s-objects",
        "raw",
        "scaler",
        "labels",
        "annotations",
        "env",
        "ingress",
        "gateway",
        "sidecar",
        "storage",
        "json-patch",
        "json-merge-patch",
        "hpa",
        "resource",
        "command",
        "affinity",
        "init-container",
        "expose",
    ] {
        assert!(types.contains(t), "fixture lacks {t}");
    }

    // Applied: the storage trait's claim binds to a volume of its class.
    let h = harness("oam-builtins").await;
    h.apply(json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": format!("{}-pv", h.dest)},
        "spec": {
            "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "storageClassName": "ferry-e2e", "hostPath": {"path": "/tmp/ferry-e2e"},
            "persistentVolumeReclaimPolicy": "Delete",
        },
    }))
    .await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "web-secret"}, "stringData": {"password": "s3cret-e2e-value"},
    }))
    .unwrap();
    Api::<Secret>::namespaced(h.client.clone(), &h.dest)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    apply_oam(&h, yaml(&text)).await;
    let a = wait_oam(&h, "builtins", "running and healthy", running_healthy).await;
    let services = a["status"]["services"].as_array().unwrap();
    assert_eq!(services.len(), 8, "one entry per component: {services:?}");
    let web = services.iter().find(|s| s["name"] == "web").unwrap();
    assert_eq!(web["traits"].as_array().unwrap().len(), 10);
    assert_eq!(web["workloadDefinition"]["kind"], "Deployment");

    // What the rendering said is what the cluster runs.
    let dep: Deployment = get_opt(&h.client, &h.dest, "web").await.unwrap();
    let spec = dep.spec;
    assert_eq!(spec.replicas, Some(2));
    assert_eq!(spec.revision_history_limit, Some(3));
    let pod = spec.template;
    let labels = pod.metadata.as_ref().unwrap().labels.clone().unwrap();
    assert_eq!(labels["patched"], "json-patch");
    assert_eq!(labels["team"], "shop");
    let containers = pod.spec.unwrap().containers;
    assert_eq!(containers.len(), 2, "web and the proxy sidecar");
    let env = containers[0].env.clone().unwrap();
    assert!(env.iter().any(|e| e.name == "EXTRA"));
    assert!(
        env.iter()
            .any(|e| e.name == "DB_PASSWORD" && e.value_from.is_some() && e.value.is_none())
    );
    for name in ["web", "web-ingress", "web-gateway", "api"] {
        assert!(
            get_opt::<Service>(&h.client, &h.dest, name).await.is_some(),
            "service {name}"
        );
    }
    let cm: ConfigMap = get_opt(&h.client, &h.dest, "legacy").await.unwrap();
    assert_eq!(cm.data.unwrap()["kept"], "for raw");
    let applied = a["status"]["appliedResources"].as_array().unwrap();
    for kind in [
        "Deployment",
        "Service",
        "Ingress",
        "PersistentVolumeClaim",
        "ConfigMap",
        "Job",
        "CronJob",
        "DaemonSet",
        "HorizontalPodAutoscaler",
    ] {
        assert!(
            applied.iter().any(|r| r["kind"] == kind),
            "{kind} in appliedResources"
        );
    }
    // The status never carries a Secret's value.
    assert!(!a.to_string().contains("s3cret-e2e-value"));

    // A component removed from the Application is deleted; the rest stays.
    let mut smaller = yaml(&text);
    let comps = smaller["spec"]["components"].as_array_mut().unwrap();
    comps.retain(|c| c["name"] != "legacy");
    apply_oam(&h, smaller).await;
    h.eventually("legacy ConfigMap deleted", || async {
        get_opt::<ConfigMap>(&h.client, &h.dest, "legacy")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        get_opt::<ConfigMap>(&h.client, &h.dest, "settings")
            .await
            .is_some()
    );

    // Deleting the Application deletes what it created.
    oam_apps(&h)
        .delete("builtins", &DeleteParams::default())
        .await
        .unwrap();
    h.eventually("web Deployment deleted with its Application", || async {
        get_opt::<Deployment>(&h.client, &h.dest, "web")
            .await
            .is_none()
            .then_some(())
    })
    .await;
}

/// A webhook receiver: every request body it gets.
async fn webhook_receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let got2 = got.clone();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Headers, then Content-Length bytes of body.
            loop {
                let n = s.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(i) = text.find("\r\n\r\n") {
                    let len = text[..i]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() >= i + 4 + len {
                        got2.lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&buf[i + 4..i + 4 + len]).to_string());
                        break;
                    }
                }
            }
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        }
    });
    (url, got)
}

#[tokio::test]
async fn workflow_suspends_until_resumed_then_times_out_runs_if_steps_and_notifies() {
    let h = harness("oam-flow").await;
    let (url, got) = webhook_receiver().await;
    let app = yaml(&format!(
        r#"
apiVersion: core.oam.dev/v1beta1
kind: Application
metadata: {{name: flow}}
spec:
  components:
    - {{name: first, type: webservice, properties: {{image: registry.local/first:1}}}}
    - {{name: second, type: webservice, properties: {{image: registry.local/second:1}}}}
    - name: slow
      type: webservice
      properties: {{image: registry.local/slow:1, annotations: {{testenv.ferry.dev/not-ready: "true"}}}}
    - name: rescue
      type: k8s-objects
      properties: {{objects: [{{apiVersion: v1, kind: ConfigMap, metadata: {{name: rescue}}, data: {{a: b}}}}]}}
    - name: never
      type: k8s-objects
      properties: {{objects: [{{apiVersion: v1, kind: ConfigMap, metadata: {{name: never}}, data: {{a: b}}}}]}}
  workflow:
    steps:
      - {{name: deploy-first, type: apply-component, properties: {{component: first}}}}
      - {{name: approve, type: suspend}}
      - {{name: deploy-second, type: apply-component, properties: {{component: second}}}}
      - {{name: deploy-slow, type: apply-component, timeout: 5s, properties: {{component: slow}}}}
      - name: on-timeout
        type: apply-component
        if: status["deploy-slow"].timeout
        properties: {{component: rescue}}
      - {{name: skipped, type: apply-component, properties: {{component: never}}}}
      - name: notify
        type: notification
        if: always
        properties:
          webhook:
            url: {{value: "{url}"}}
            message: {{text: "flow finished"}}
"#
    ));
    apply_oam(&h, app).await;
    let a = wait_oam(&h, "flow", "suspended at approve", |a| {
        phase(a) == "workflowSuspending" && step_phase(a, "approve") == "suspending"
    })
    .await;
    assert_eq!(step_phase(&a, "deploy-first"), "succeeded");
    let first: Deployment = get_opt(&h.client, &h.dest, "first").await.unwrap();
    // Suspended: nothing after the suspend step runs, however long we wait.
    h.idle(Duration::from_secs(3)).await;
    assert!(
        get_opt::<Deployment>(&h.client, &h.dest, "second")
            .await
            .is_none()
    );
    let a = oam_apps(&h).get("flow").await.unwrap();
    assert_eq!(
        phase(&serde_json::to_value(&a).unwrap()),
        "workflowSuspending"
    );

    // Resume (what `ferry workflow resume` and the API's resume do).
    let patch =
        json!({"metadata": {"annotations": {ferry_controller::oam::RESUME_ANNOTATION: "now"}}});
    oam_apps(&h)
        .patch("flow", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let a = wait_oam(&h, "flow", "workflow over", |a| {
        a.pointer("/status/workflow/finished") == Some(&json!(true))
    })
    .await;
    let second: Deployment = get_opt(&h.client, &h.dest, "second").await.unwrap();
    assert!(
        second.metadata.creation_timestamp.unwrap().0
            >= first.metadata.creation_timestamp.unwrap().0
    );
    assert_eq!(step_phase(&a, "approve"), "succeeded");
    assert_eq!(step_phase(&a, "deploy-second"), "succeeded");
    assert_eq!(step_phase(&a, "deploy-slow"), "failed");
    let slow = a["status"]["workflow"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "deploy-slow")
        .unwrap();
    assert_eq!(slow["reason"], "Timeout", "{slow}");
    assert_eq!(step_phase(&a, "on-timeout"), "succeeded");
    assert_eq!(step_phase(&a, "skipped"), "skipped");
    assert_eq!(step_phase(&a, "notify"), "succeeded");
    assert!(
        get_opt::<ConfigMap>(&h.client, &h.dest, "rescue")
            .await
            .is_some()
    );
    assert!(
        get_opt::<ConfigMap>(&h.client, &h.dest, "never")
            .await
            .is_none()
    );
    assert_ne!(
        phase(&a),
        "running",
        "a failed step ends the workflow as failed"
    );
    let bodies = got.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&bodies[0]).unwrap(),
        json!({"text": "flow finished"})
    );
    // The resume request was consumed.
    let a = oam_apps(&h).get("flow").await.unwrap();
    assert!(
        !a.metadata
            .annotations
            .unwrap_or_default()
            .contains_key(ferry_controller::oam::RESUME_ANNOTATION)
    );
}

#[tokio::test]
async fn depends_on_waits_for_a_healthy_dependency() {
    let h = harness("oam-deps").await;
    let app = |ready: bool| {
        let ann = if ready {
            json!({})
        } else {
            json!({"testenv.ferry.dev/not-ready": "true"})
        };
        json!({
            "apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
            "metadata": {"name": "deps"},
            "spec": {"components": [
                {"name": "api", "type": "webservice", "dependsOn": ["db"],
                 "properties": {"image": "registry.local/api:1"}},
                {"name": "db", "type": "webservice",
                 "properties": {"image": "registry.local/db:1", "annotations": ann}},
            ]},
        })
    };
    apply_oam(&h, app(false)).await;
    let a = wait_oam(&h, "deps", "db deployed, waiting", |a| {
        a.pointer("/status/services")
            .and_then(Value::as_array)
            .is_some_and(|s| s.iter().any(|x| x["name"] == "db" && x["healthy"] == false))
    })
    .await;
    assert_eq!(phase(&a), "runningWorkflow");
    h.idle(Duration::from_secs(3)).await;
    assert!(
        get_opt::<Deployment>(&h.client, &h.dest, "db")
            .await
            .is_some()
    );
    assert!(
        get_opt::<Deployment>(&h.client, &h.dest, "api")
            .await
            .is_none(),
        "api must wait for db to be healthy"
    );
    // Fixing db in the Application lets the workflow go on.
    apply_oam(&h, app(true)).await;
    wait_oam(&h, "deps", "running and healthy", running_healthy).await;
    let db: Deployment = get_opt(&h.client, &h.dest, "db").await.unwrap();
    let api: Deployment = get_opt(&h.client, &h.dest, "api").await.unwrap();
    assert!(db.status.unwrap().available_replicas == Some(1));
    assert!(
        api.metadata.creation_timestamp.unwrap().0 >= db.metadata.creation_timestamp.unwrap().0
    );
}

#[tokio::test]
async fn topology_and_override_deploy_to_both_clusters() {
    let h = harness("oam-topo").await;
    let c2 = h.env.cluster2();
    h.register_cluster2("edge", json!({ "region": "edge" }))
        .await;
    let remote_ns = format!("{}-edge", h.dest);
    let site = |w: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: site\ndata:\n  where: {w}\n")
    };
    let (base, edge) = (site("hub"), site("edge"));
    let repo = new_repo(
        "oam-topo",
        &[
            ("base/site.yaml", base.as_str()),
            ("edge/site.yaml", edge.as_str()),
        ],
    );
    let url = h.env.git.file_url(&repo);
    let app = json!({
        "apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
        "metadata": {"name": "spread"},
        "spec": {
            "components": [{"name": "hello", "type": "webservice",
                "properties": {"image": "registry.local/hello:1"},
                "traits": [{"type": "scaler", "properties": {"replicas": 1}}]},
                {"name": "site", "type": "kustomize",
                 "properties": {"url": url, "git": {"branch": "main"}, "path": "./base"}},
                {"name": "audit", "type": "worker", "properties": {"image": "registry.local/audit:1"}}],
            "policies": [
                {"name": "hub", "type": "topology", "properties": {"clusters": ["local"]}},
                {"name": "edges", "type": "topology",
                 "properties": {"clusterLabelSelector": {"region": "edge"}, "namespace": remote_ns}},
                {"name": "edge-tuning", "type": "override", "properties": {
                    // The edge gets hello and site (overridden) and a cache only it has; the
                    // hub-only `audit` is left out by the selector.
                    "selector": ["hello", "site", "edge-cache"],
                    "components": [
                    {"name": "hello", "properties": {"image": "registry.local/hello:edge"},
                     "traits": [{"type": "scaler", "properties": {"replicas": 2}}]},
                    {"name": "site", "properties": {"path": "./edge"}},
                    {"name": "edge-cache", "type": "worker", "properties": {"image": "registry.local/cache:1"}}]}},
            ],
            "workflow": {"steps": [
                {"name": "deploy-hub", "type": "deploy", "properties": {"policies": ["hub"]}},
                {"name": "deploy-edge", "type": "deploy", "properties": {"policies": ["edges", "edge-tuning"]}},
            ]},
        },
    });
    apply_oam(&h, app).await;
    let a = wait_oam(&h, "spread", "running and healthy", running_healthy).await;
    let services = a["status"]["services"].as_array().unwrap();
    assert_eq!(services.len(), 6, "{services:?}");
    assert!(
        services
            .iter()
            .any(|s| s["cluster"] == "edge" && s["namespace"] == remote_ns.as_str())
    );
    let local: Deployment = get_opt(&h.client, &h.dest, "hello").await.unwrap();
    let client2 = c2.client().await.unwrap();
    let edge: Deployment = get_opt(&client2, &remote_ns, "hello").await.unwrap();
    let image = |d: &Deployment| {
        d.spec.template.spec.as_ref().unwrap().containers[0]
            .image
            .clone()
            .unwrap()
    };
    assert_eq!(image(&local), "registry.local/hello:1");
    assert_eq!(local.spec.replicas, Some(1));
    assert_eq!(image(&edge), "registry.local/hello:edge");
    assert_eq!(edge.spec.replicas, Some(2));
    assert_eq!(edge.status.unwrap().available_replicas, Some(2));
    // The override reaches the kustomize component too: each cluster gets its own path.
    let hub_site: ConfigMap = get_opt(&h.client, &h.dest, "site").await.unwrap();
    assert_eq!(hub_site.data.unwrap()["where"], "hub");
    let edge_site: ConfigMap = get_opt(&client2, &remote_ns, "site").await.unwrap();
    assert_eq!(edge_site.data.unwrap()["where"], "edge");
    // What the override's selector and added component decide, per cluster.
    assert!(
        get_opt::<Deployment>(&h.client, &h.dest, "audit")
            .await
            .is_some()
    );
    assert!(
        get_opt::<Deployment>(&client2, &remote_ns, "audit")
            .await
            .is_none()
    );
    assert!(
        get_opt::<Deployment>(&client2, &remote_ns, "edge-cache")
            .await
            .is_some()
    );
    assert!(
        get_opt::<Deployment>(&h.client, &h.dest, "edge-cache")
            .await
            .is_none()
    );
    // Not on the hub under the edge namespace, not on the edge under the hub's.
    assert!(
        get_opt::<Deployment>(&h.client, &remote_ns, "hello")
            .await
            .is_none()
    );
    assert!(
        get_opt::<Deployment>(&client2, &h.dest, "hello")
            .await
            .is_none()
    );
}

#[tokio::test]
async fn a_trait_definition_applied_at_runtime_changes_the_rendering() {
    let h = harness("oam-defs").await;
    let app = json!({
        "apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
        "metadata": {"name": "custom"},
        "spec": {"components": [{"name": "svc", "type": "webservice",
            "properties": {"image": "registry.local/svc:1"},
            "traits": [{"type": "stamp", "properties": {"value": "one"}}]}]},
    });
    apply_oam(&h, app).await;
    let a = wait_oam(&h, "custom", "unknown trait reported", |a| {
        condition_message(a, "Rendered").contains("unknown trait type `stamp`")
    })
    .await;
    assert_eq!(phase(&a), "rendering");
    assert!(
        get_opt::<Deployment>(&h.client, &h.dest, "svc")
            .await
            .is_none()
    );

    let def = |label: &str| {
        json!({
            "apiVersion": "core.oam.dev/v1beta1", "kind": "TraitDefinition",
            "metadata": {"name": "stamp", "namespace": h.dest},
            "spec": {"schematic": {"jsonnet": {
                "parameterSchema": {"type": "object", "required": ["value"],
                    "properties": {"value": {"type": "string"}}},
                "template": format!("function(parameter, context) {{ patch: {{ metadata+: {{ labels+: {{ '{label}': parameter.value }} }} }} }}"),
            }}},
        })
    };
    h.apply(def("stamp")).await;
    wait_oam(&h, "custom", "running and healthy", running_healthy).await;
    let d: Deployment = get_opt(&h.client, &h.dest, "svc").await.unwrap();
    assert_eq!(d.metadata.labels.unwrap()["stamp"], "one");

    // A new version of the definition re-renders the app: no restart, no app change.
    h.apply(def("stamped-by")).await;
    h.eventually("label from the new definition", || async {
        let d: Deployment = get_opt(&h.client, &h.dest, "svc").await?;
        (d.metadata.labels?.get("stamped-by").map(String::as_str) == Some("one")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn bad_applications_get_clear_errors_and_nothing_applied() {
    let h = harness("oam-errors").await;
    // A definition whose template does not compile.
    h.apply(json!({
        "apiVersion": "core.oam.dev/v1beta1", "kind": "ComponentDefinition",
        "metadata": {"name": "broken", "namespace": h.dest},
        "spec": {"schematic": {"jsonnet": {
            "template": "function(parameter, context)\n  { output: { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: context.name } data: {} } }\n",
        }}},
    }))
    .await;
    let cases = [
        (
            "unknown-type",
            json!({"name": "c", "type": "webservise", "properties": {"image": "x"}}),
            vec!["unknown component type `webservise`", "webservice"],
        ),
        (
            "bad-props",
            json!({"name": "c", "type": "webservice", "properties": {"image": "x", "ports": [{"port": "http"}]}}),
            vec!["component `c`", "properties.ports[0].port", "integer"],
        ),
        (
            "bad-template",
            json!({"name": "c", "type": "broken"}),
            vec!["broken", ":2:"],
        ),
    ];
    for (name, component, _) in &cases {
        apply_oam(
            &h,
            json!({
                "apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
                "metadata": {"name": name},
                "spec": {"components": [component]},
            }),
        )
        .await;
    }
    for (name, _, wants) in &cases {
        let a = wait_oam(&h, name, "a Rendered error", |a| {
            !condition_message(a, "Rendered").is_empty()
        })
        .await;
        let msg = condition_message(&a, "Rendered");
        for w in wants {
            assert!(msg.contains(w), "{name}: `{msg}` should contain `{w}`");
        }
        assert_eq!(phase(&a), "rendering");
        assert!(
            a.pointer("/status/appliedResources").is_none(),
            "{name}: nothing applied"
        );
    }
    assert!(
        get_opt::<Deployment>(&h.client, &h.dest, "c")
            .await
            .is_none()
    );
    assert!(
        get_opt::<ConfigMap>(&h.client, &h.dest, "c")
            .await
            .is_none()
    );
}

#[tokio::test]
async fn apply_once_keeps_live_replicas_and_shared_resource_lets_two_apps_share() {
    let h = harness("oam-policies").await;
    // apply-once: the replicas someone scaled to stay; other drift is corrected.
    apply_oam(
        &h,
        json!({
            "apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
            "metadata": {"name": "once"},
            "spec": {
                "components": [{"name": "once", "type": "webservice",
                    "properties": {"image": "registry.local/once:1"},
                    "traits": [{"type": "scaler", "properties": {"replicas": 1}}]}],
                "policies": [{"name": "keep-replicas", "type": "apply-once", "properties": {
                    "enable": true,
                    "rules": [{"selector": {"resourceTypes": ["Deployment"]},
                               "strategy": {"path": ["spec.replicas"]}}]}}],
            },
        }),
    )
    .await;
    wait_oam(&h, "once", "running and healthy", running_healthy).await;
    let deployments: Api<Deployment> = Api::namespaced(h.client.clone(), &h.dest);
    let patch = json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [
        {"name": "once", "image": "registry.local/once:hacked"}]}}}});
    deployments
        .patch(
            "once",
            &PatchParams::apply("someone").force(),
            &Patch::Apply(&json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "once"}, "spec": patch["spec"],
            })),
        )
        .await
        .unwrap();
    h.eventually("image drift corrected", || async {
        let d = deployments.get("once").await.ok()?;
        let image = d.spec.template.spec?.containers[0].image.clone()?;
        (image == "registry.local/once:1").then_some(())
    })
    .await;
    let d = deployments.get("once").await.unwrap();
    assert_eq!(
        d.spec.replicas,
        Some(3),
        "apply-once keeps the live replicas"
    );

    // shared-resource: a second app may share a ConfigMap only when its policy says so.
    let cm_app = |name: &str, shared: bool| {
        let mut app = json!({
            "apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
            "metadata": {"name": name},
            "spec": {"components": [{"name": "conf", "type": "k8s-objects", "properties": {"objects": [
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared-conf"},
                 "data": {"writer": name}}]}}]},
        });
        if shared {
            app["spec"]["policies"] = json!([{"name": "share", "type": "shared-resource",
                "properties": {"rules": [{"selector": {"resourceTypes": ["ConfigMap"]}}]}}]);
        }
        app
    };
    apply_oam(&h, cm_app("first", false)).await;
    wait_oam(&h, "first", "running", running_healthy).await;
    apply_oam(&h, cm_app("sharer", true)).await;
    apply_oam(&h, cm_app("intruder", false)).await;
    wait_oam(&h, "sharer", "running", running_healthy).await;
    let a = wait_oam(&h, "intruder", "workflow failed", |a| {
        phase(a) == "workflowTerminated"
    })
    .await;
    let msg = a.to_string();
    assert!(
        msg.contains(&format!("already managed by application {}/first", h.dest)),
        "{msg}"
    );
    let cm: ConfigMap = get_opt(&h.client, &h.dest, "shared-conf").await.unwrap();
    assert_eq!(
        cm.data.unwrap()["writer"],
        "first",
        "the first owner writes"
    );
    // Deleting the apps that only shared it, or failed on it, leaves it to its owner.
    for name in ["intruder", "sharer"] {
        oam_apps(&h)
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
        h.eventually("app gone", || async {
            oam_apps(&h)
                .get_opt(name)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        })
        .await;
    }
    let cm: ConfigMap = get_opt(&h.client, &h.dest, "shared-conf").await.unwrap();
    assert_eq!(cm.data.unwrap()["writer"], "first");

    // An object no application manages is adopted only with a take-over policy.
    let lone: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "lone"}, "data": {"writer": "kubectl"},
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(h.client.clone(), &h.dest)
        .create(&PostParams::default(), &lone)
        .await
        .unwrap();
    let adopter = |take_over: bool| {
        let mut app = json!({
            "apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
            "metadata": {"name": "adopter"},
            "spec": {"components": [{"name": "conf", "type": "k8s-objects", "properties": {"objects": [
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "lone"},
                 "data": {"writer": "adopter"}}]}}]},
        });
        if take_over {
            app["spec"]["policies"] = json!([{"name": "adopt", "type": "take-over",
                "properties": {"rules": [{"selector": {"resourceNames": ["lone"]}}]}}]);
        }
        app
    };
    apply_oam(&h, adopter(false)).await;
    let a = wait_oam(&h, "adopter", "refused", |a| {
        phase(a) == "workflowTerminated"
    })
    .await;
    assert!(
        a.to_string().contains("adopt it with a take-over policy"),
        "{a}"
    );
    let cm: ConfigMap = get_opt(&h.client, &h.dest, "lone").await.unwrap();
    assert_eq!(cm.data.unwrap()["writer"], "kubectl");
    apply_oam(&h, adopter(true)).await;
    wait_oam(&h, "adopter", "running", running_healthy).await;
    let cm: ConfigMap = get_opt(&h.client, &h.dest, "lone").await.unwrap();
    assert_eq!(cm.data.unwrap()["writer"], "adopter");
}

#[tokio::test]
async fn inputs_take_values_from_another_components_live_outputs() {
    let h = harness("oam-io").await;
    apply_oam(
        &h,
        json!({
            "apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
            "metadata": {"name": "io"},
            "spec": {"components": [
                {"name": "api", "type": "webservice",
                 "properties": {"image": "registry.local/api:1", "env": [{"name": "DB_ADDR", "value": "unset"}]},
                 "inputs": [{"from": "db-addr", "parameterKey": "env[0].value"}]},
                {"name": "db", "type": "webservice",
                 "properties": {"image": "registry.local/db:1", "ports": [{"port": 5432, "expose": true}]},
                 "outputs": [{"name": "db-addr",
                              "valueFrom": "outputs.webserviceExpose.spec.clusterIP + \":5432\""}]},
            ]},
        }),
    )
    .await;
    wait_oam(&h, "io", "running and healthy", running_healthy).await;
    let svc: Service = get_opt(&h.client, &h.dest, "db").await.unwrap();
    let ip = svc.spec.unwrap().cluster_ip.unwrap();
    let api: Deployment = get_opt(&h.client, &h.dest, "api").await.unwrap();
    let env = api.spec.template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    assert_eq!(env[0].value.as_deref(), Some(format!("{ip}:5432").as_str()));
}

#[tokio::test]
async fn kustomize_components_pull_prune_unless_told_not_to_and_refuse_an_empty_render() {
    let h = harness("oam-kustomize").await;
    let cm = |n: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {n}\ndata:\n  k: v\n")
    };
    let (a, b, c, d, e) = (cm("a"), cm("b"), cm("c"), cm("d"), cm("e"));
    let repo = new_repo(
        "oam-kustomize",
        &[
            ("pruned/a.yaml", a.as_str()),
            ("pruned/b.yaml", b.as_str()),
            ("kept/c.yaml", c.as_str()),
            ("kept/d.yaml", d.as_str()),
        ],
    );
    let url = h.env.git.file_url(&repo);
    let app = |name: &str, path: &str, prune: bool| {
        json!({
            "apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
            "metadata": {"name": name},
            "spec": {"components": [{"name": name, "type": "kustomize", "properties": {
                "url": url, "git": {"branch": "main"}, "path": path,
                "pullInterval": "2s", "prune": prune}}]},
        })
    };
    apply_oam(&h, app("pruned", "./pruned", true)).await;
    apply_oam(&h, app("kept", "./kept", false)).await;
    wait_oam(&h, "pruned", "running", running_healthy).await;
    wait_oam(&h, "kept", "running", running_healthy).await;
    for n in ["a", "b", "c", "d"] {
        assert!(
            get_opt::<ConfigMap>(&h.client, &h.dest, n).await.is_some(),
            "{n}"
        );
    }
    // b and d leave Git (e arrives): b is pruned, d is kept.
    commit(
        &repo,
        &[
            ("pruned/a.yaml", a.as_str()),
            ("kept/c.yaml", c.as_str()),
            ("kept/e.yaml", e.as_str()),
        ],
    );
    h.eventually("b pruned and e applied", || async {
        let b_gone = get_opt::<ConfigMap>(&h.client, &h.dest, "b")
            .await
            .is_none();
        let e_here = get_opt::<ConfigMap>(&h.client, &h.dest, "e")
            .await
            .is_some();
        (b_gone && e_here).then_some(())
    })
    .await;
    assert!(
        get_opt::<ConfigMap>(&h.client, &h.dest, "d")
            .await
            .is_some(),
        "prune: false keeps what left Git"
    );
    // A render that comes back empty is an error, never a reason to delete.
    commit(
        &repo,
        &[
            ("pruned/kustomization.yaml", "resources: []\n"),
            ("kept/c.yaml", c.as_str()),
        ],
    );
    let app = wait_oam(&h, "pruned", "empty render refused", |a| {
        condition_message(a, "Rendered").contains("rendered no objects")
    })
    .await;
    assert_eq!(phase(&app), "rendering");
    h.idle(Duration::from_secs(3)).await;
    assert!(
        get_opt::<ConfigMap>(&h.client, &h.dest, "a")
            .await
            .is_some()
    );
}

#[tokio::test]
async fn ref_objects_copy_hub_objects_with_traits_and_follow_changes() {
    let h = harness("oam-ref").await;
    let copies = format!("{}-copies", h.dest);
    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), &h.dest);
    for (name, colour, team) in [
        ("settings", "blue", "a"),
        ("extra", "red", "a"),
        ("other", "x", "b"),
    ] {
        cms.create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"team": team}},
                "data": {"colour": colour},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    }
    let deps: Api<Deployment> = Api::namespaced(h.client.clone(), &h.dest);
    deps.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "shop"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "shop"}},
                "template": {"metadata": {"labels": {"app": "shop"}},
                    "spec": {"containers": [{"name": "shop", "image": "registry.local/shop:1"}]}}},
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    apply_oam(
        &h,
        json!({
            "apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
            "metadata": {"name": "copier"},
            "spec": {
                "components": [
                    // By name, defaulting to the component's name and the app's namespace; a
                    // trait patches the first object (the workload).
                    {"name": "shop", "type": "ref-objects",
                     "properties": {"objects": [{"resource": "deployment", "group": "apps"}]},
                     "traits": [{"type": "scaler", "properties": {"replicas": 2}}]},
                    {"name": "config", "type": "ref-objects",
                     "properties": {"objects": [{"resource": "configmaps", "labelSelector": {"team": "a"}}]}},
                ],
                "policies": [{"name": "elsewhere", "type": "topology",
                    "properties": {"clusters": ["local"], "namespace": copies}}],
            },
        }),
    )
    .await;
    wait_oam(&h, "copier", "running and healthy", running_healthy).await;
    let copied: Deployment = get_opt(&h.client, &copies, "shop").await.unwrap();
    assert_eq!(
        copied.spec.replicas,
        Some(2),
        "the scaler trait patched the copy"
    );
    let source: Deployment = get_opt(&h.client, &h.dest, "shop").await.unwrap();
    assert_eq!(source.spec.replicas, Some(1), "the source is untouched");
    assert_ne!(copied.metadata.uid, source.metadata.uid);
    for name in ["settings", "extra"] {
        let cm: ConfigMap = get_opt(&h.client, &copies, name).await.unwrap();
        assert_eq!(cm.labels()["app.oam.dev/name"], "copier");
    }
    assert!(
        get_opt::<ConfigMap>(&h.client, &copies, "other")
            .await
            .is_none(),
        "team b is not selected"
    );

    // A changed source is copied again on the next pass (here: the app is touched).
    cms.patch(
        "settings",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"colour": "green"}})),
    )
    .await
    .unwrap();
    oam_apps(&h)
        .patch(
            "copier",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"touch": "1"}}})),
        )
        .await
        .unwrap();
    h.eventually("the changed source is copied", || async {
        get_opt::<ConfigMap>(&h.client, &copies, "settings")
            .await
            .and_then(|c| c.data)
            .filter(|d| d["colour"] == "green")
    })
    .await;

    // A named object that does not exist stops the app with an error that names it, and
    // nothing it already copied is removed.
    apply_oam(
        &h,
        json!({
            "apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
            "metadata": {"name": "copier"},
            "spec": {
                "components": [
                    {"name": "shop", "type": "ref-objects",
                     "properties": {"objects": [{"resource": "deployment", "group": "apps"}]}},
                    {"name": "config", "type": "ref-objects",
                     "properties": {"objects": [{"resource": "configmap", "name": "missing"}]}},
                ],
                "policies": [{"name": "elsewhere", "type": "topology",
                    "properties": {"clusters": ["local"], "namespace": copies}}],
            },
        }),
    )
    .await;
    let a = wait_oam(&h, "copier", "an error naming the missing object", |a| {
        condition_message(a, "Rendered").contains("failed to load ref object ConfigMap")
    })
    .await;
    assert!(
        condition_message(&a, "Rendered").contains("/missing"),
        "{a}"
    );
    assert!(
        get_opt::<ConfigMap>(&h.client, &copies, "settings")
            .await
            .is_some()
    );
}

#[tokio::test]
async fn depends_on_app_creates_the_app_from_its_configmap_and_waits_until_it_runs() {
    let h = harness("oam-dep-app").await;
    let base = format!(
        "apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata:\n  name: base\n  namespace: {}\nspec:\n  components:\n    - name: db\n      type: webservice\n      properties:\n        image: registry.local/db:1\n",
        h.dest
    );
    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), &h.dest);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "base"}, "data": {"application": base},
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    apply_oam(
        &h,
        json!({
            "apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
            "metadata": {"name": "front"},
            "spec": {
                "components": [{"name": "web", "type": "webservice",
                    "properties": {"image": "registry.local/web:1"}}],
                "workflow": {"steps": [
                    {"name": "wait-base", "type": "depends-on-app",
                     "properties": {"name": "base", "namespace": h.dest}},
                    {"name": "deploy-web", "type": "apply-component",
                     "properties": {"component": "web"}},
                ]},
            },
        }),
    )
    .await;
    let front = wait_oam(&h, "front", "running and healthy", running_healthy).await;
    assert_eq!(step_phase(&front, "wait-base"), "succeeded");
    // `base` was created from the ConfigMap and ran before `web` was deployed.
    let base = wait_oam(&h, "base", "running", |a| phase(a) == "running").await;
    let db: Deployment = get_opt(&h.client, &h.dest, "db").await.unwrap();
    let web: Deployment = get_opt(&h.client, &h.dest, "web").await.unwrap();
    assert!(
        db.metadata.creation_timestamp.unwrap().0 <= web.metadata.creation_timestamp.unwrap().0,
        "base's objects come first"
    );
    assert_eq!(base["metadata"]["name"], "base");

    // Without the ConfigMap the step waits, and says for what.
    apply_oam(
        &h,
        json!({
            "apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
            "metadata": {"name": "lonely"},
            "spec": {
                "components": [{"name": "lonely", "type": "webservice",
                    "properties": {"image": "registry.local/lonely:1"}}],
                "workflow": {"steps": [
                    {"name": "wait-ghost", "type": "depends-on-app",
                     "properties": {"name": "ghost", "namespace": h.dest}},
                    {"name": "deploy", "type": "apply-component",
                     "properties": {"component": "lonely"}},
                ]},
            },
        }),
    )
    .await;
    let a = wait_oam(&h, "lonely", "waiting on ghost", |a| {
        a.pointer("/status/workflow/steps")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|s| {
                s["name"] == "wait-ghost"
                    && s["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("no ConfigMap"))
            })
    })
    .await;
    assert_eq!(step_phase(&a, "deploy"), "pending", "{a}");
    assert!(
        get_opt::<Deployment>(&h.client, &h.dest, "lonely")
            .await
            .is_none()
    );
}

#[tokio::test]
async fn object_steps_pass_data_and_read_only_and_resource_update_policies_hold() {
    let h = harness("oam-objsteps").await;
    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), &h.dest);
    for (name, data) in [
        ("settings", json!({"colour": "teal"})),
        ("shared", json!({"owner": "platform"})),
    ] {
        cms.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}, "data": data})).unwrap(),
        )
        .await
        .unwrap();
    }
    apply_oam(
        &h,
        json!({
            "apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
            "metadata": {"name": "steps"},
            "spec": {
                "components": [
                    {"name": "shared", "type": "k8s-objects", "properties": {"objects": [
                        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared"},
                         "data": {"owner": "steps"}}]}},
                    {"name": "svc", "type": "k8s-objects", "properties": {"objects": [
                        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "replaced"},
                         "data": {"a": "1"}}]}},
                ],
                "policies": [
                    {"name": "ro", "type": "read-only",
                     "properties": {"rules": [{"selector": {"componentNames": ["shared"]}}]}},
                    {"name": "ru", "type": "resource-update",
                     "properties": {"rules": [{"selector": {"componentNames": ["svc"]},
                        "strategy": {"op": "replace"}}]}},
                ],
                "workflow": {"steps": [
                    {"name": "read", "type": "read-object",
                     "properties": {"apiVersion": "v1", "kind": "ConfigMap", "name": "settings", "namespace": h.dest},
                     "outputs": [{"name": "colour", "valueFrom": "output.value.data[\"colour\"]"}]},
                    {"name": "read-missing", "type": "read-object",
                     "properties": {"apiVersion": "v1", "kind": "ConfigMap", "name": "nope", "namespace": h.dest}},
                    {"name": "write", "type": "apply-object",
                     "inputs": [{"from": "colour", "parameterKey": "value.data.colour"}],
                     "properties": {"value": {"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "painted", "namespace": h.dest}, "data": {"colour": "unset"}}}},
                    {"name": "deploy", "type": "deploy", "properties": {"policies": []}},
                ]},
            },
        }),
    )
    .await;
    let a = wait_oam(&h, "steps", "running", |a| phase(a) == "running").await;
    for step in ["read", "read-missing", "write", "deploy"] {
        assert_eq!(step_phase(&a, step), "succeeded", "{step}: {a}");
    }
    let painted: ConfigMap = get_opt(&h.client, &h.dest, "painted").await.unwrap();
    assert_eq!(
        painted.data.unwrap()["colour"],
        "teal",
        "read-object's output fed apply-object"
    );
    // The output travelled through the app's own Secret, not its status.
    assert!(!a["status"].to_string().contains("teal"), "{a}");
    assert!(
        get_opt::<Secret>(&h.client, &h.dest, "ferry-workflow-steps")
            .await
            .is_some()
    );
    // read-only: the existing object is not written.
    let shared: ConfigMap = get_opt(&h.client, &h.dest, "shared").await.unwrap();
    assert_eq!(shared.data.unwrap()["owner"], "platform");
    // resource-update replace: a field another writer added is gone after the next update
    // (a PUT replaces the whole object, where server-side apply would keep it).
    cms.patch(
        "replaced",
        &PatchParams::apply("someone-else"),
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "replaced"}, "data": {"b": "2"}})),
    )
    .await
    .unwrap();
    let mut app = oam_apps(&h).get("steps").await.unwrap();
    app.data["spec"]["components"][1]["properties"]["objects"][0]["data"]["a"] = json!("3");
    app.metadata.managed_fields = None;
    oam_apps(&h)
        .replace("steps", &PostParams::default(), &app)
        .await
        .unwrap();
    h.eventually("the replaced object has only the rendered data", || async {
        get_opt::<ConfigMap>(&h.client, &h.dest, "replaced")
            .await
            .and_then(|c| c.data)
            .filter(|d| d.get("a").map(String::as_str) == Some("3") && !d.contains_key("b"))
    })
    .await;

    // A read-only object that does not exist fails the step and says so.
    apply_oam(
        &h,
        json!({
            "apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
            "metadata": {"name": "ro-missing"},
            "spec": {
                "components": [{"name": "ghost", "type": "k8s-objects", "properties": {"objects": [
                    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ghost"}}]}}],
                "policies": [{"name": "ro", "type": "read-only",
                    "properties": {"rules": [{"selector": {"resourceNames": ["ghost"]}}]}}],
            },
        }),
    )
    .await;
    wait_oam(&h, "ro-missing", "a read-only error", |a| {
        a.to_string()
            .contains("is marked as read-only but does not exist")
    })
    .await;
    assert!(
        get_opt::<ConfigMap>(&h.client, &h.dest, "ghost")
            .await
            .is_none()
    );
}

#[tokio::test]
async fn replication_deploys_one_copy_per_key_named_by_the_definition() {
    let h = harness("oam-repl").await;
    h.apply(json!({
        "apiVersion": "core.oam.dev/v1beta1", "kind": "ComponentDefinition",
        "metadata": {"name": "replica-worker", "namespace": h.dest},
        "spec": {"workload": {"definition": {"apiVersion": "apps/v1", "kind": "Deployment"}},
            "schematic": {"jsonnet": {
                "parameterSchema": {"type": "object", "required": ["image"],
                    "properties": {"image": {"type": "string"}}},
                "template": "function(parameter, context)\n  local name = if context.replicaKey != '' then context.name + '-' + context.replicaKey else context.name;\n  local sel = { 'app.oam.dev/component': context.name, 'app.oam.dev/replicaKey': context.replicaKey };\n  { output: { apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: name },\n    spec: { selector: { matchLabels: sel }, template: { metadata: { labels: sel },\n      spec: { containers: [{ name: 'main', image: parameter.image, env: [{ name: 'REGION', value: context.replicaKey }] }] } } } } }\n",
            }}},
    }))
    .await;
    apply_oam(
        &h,
        json!({
            "apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
            "metadata": {"name": "regions"},
            "spec": {
                "components": [
                    {"name": "hello", "type": "replica-worker", "properties": {"image": "registry.local/hello:1"}},
                    {"name": "single", "type": "worker", "properties": {"image": "registry.local/single:1"}},
                ],
                "policies": [
                    {"name": "hub", "type": "topology", "properties": {"clusters": ["local"]}},
                    {"name": "per-region", "type": "replication",
                     "properties": {"keys": ["beijing", "hangzhou"], "selector": ["hello"]}},
                ],
                "workflow": {"steps": [{"name": "deploy", "type": "deploy",
                    "properties": {"policies": ["hub", "per-region"]}}]},
            },
        }),
    )
    .await;
    wait_oam(&h, "regions", "running and healthy", running_healthy).await;
    for key in ["beijing", "hangzhou"] {
        let d: Deployment = get_opt(&h.client, &h.dest, &format!("hello-{key}"))
            .await
            .unwrap_or_else(|| panic!("no copy for {key}"));
        assert_eq!(d.labels()["app.oam.dev/replicaKey"], key);
        let env = d.spec.template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap();
        assert_eq!(env[0].value.as_deref(), Some(key));
    }
    assert!(
        get_opt::<Deployment>(&h.client, &h.dest, "hello")
            .await
            .is_none()
    );
    assert!(
        get_opt::<Deployment>(&h.client, &h.dest, "single")
            .await
            .is_some()
    );
}

#[tokio::test]
async fn helm_and_helmchart_components_pull_charts_from_an_oci_registry() {
    let h = harness("oam-oci").await;
    let chart = tempfile::tempdir().unwrap();
    std::fs::write(
        chart.path().join("Chart.yaml"),
        "apiVersion: v2\nname: ocivela\nversion: 0.2.0\n",
    )
    .unwrap();
    std::fs::write(chart.path().join("values.yaml"), "message: default\n").unwrap();
    std::fs::create_dir(chart.path().join("templates")).unwrap();
    std::fs::write(
        chart.path().join("templates/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata:\n  message: {{ .Values.message | quote }}\n",
    )
    .unwrap();
    let registry = &h.env.registry;
    let path = format!("vela-charts-{}", std::process::id());
    registry
        .push_chart(&h.env.tools.helm, chart.path(), &path)
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), &h.dest);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "registry-creds"},
                "stringData": {"username": registry.user(), "password": registry.password().expose()},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let url = format!("oci://{}/{path}", registry.host);
    apply_oam(
        &h,
        json!({
            "apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
            "metadata": {"name": "charts"},
            "spec": {"components": [
                {"name": "flux-style", "type": "helm", "properties": {
                    // No version: Flux's default `*`, the newest.
                    "repoType": "oci", "url": url, "chart": "ocivela",
                    "secretRef": "registry-creds", "values": {"message": "via helm"}}},
                {"name": "native", "type": "helmchart", "properties": {
                    // No version: upstream's `latest`, here the newest chart version.
                    "chart": {"source": format!("{url}/ocivela"),
                        "auth": {"secretRef": {"name": "registry-creds"}}},
                    "release": {"name": "native-release"},
                    "values": {"message": "via helmchart"}}},
            ]},
        }),
    )
    .await;
    wait_oam(&h, "charts", "running", |a| phase(a) == "running").await;
    let cm: ConfigMap = get_opt(&h.client, &h.dest, "flux-style-cm").await.unwrap();
    assert_eq!(cm.data.unwrap()["message"], "via helm");
    let cm: ConfigMap = get_opt(&h.client, &h.dest, "native-release-cm")
        .await
        .unwrap();
    assert_eq!(cm.data.unwrap()["message"], "via helmchart");
}

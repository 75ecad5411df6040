//! Taking over from Argo CD: a cluster as Argo CD leaves it — its own (unlabelled) CRDs, objects
//! applied by its controller (server-side apply and client-side apply, with its tracking
//! annotation and field manager), an Application with status, history and a finished operation —
//! is served by Ferry with no write to any managed object, and history and rollback keep working.
//! Argo CD itself does not run here: the test applies what it would have left.

mod common;

use common::{cli, run, start_controller_with, start_server, text};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

const NS: &str = "argocd";
const DEST: &str = "guestbook";
const APP: &str = "guestbook";

fn manifests(version: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "settings.yaml",
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  version: \"{version}\"\n"
            ),
        ),
        (
            "web.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n      - name: web\n        image: nginx:1.25\n        ports:\n        - containerPort: 80\n".into(),
        ),
        (
            "svc.yaml",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector:\n    app: web\n  ports:\n  - port: 80\n    targetPort: 80\n".into(),
        ),
    ]
}

/// Argo CD's tracking annotation for an object of the app (its default since v3).
fn tracking_id(group: &str, kind: &str, name: &str) -> String {
    format!("{APP}:{group}/{kind}:{DEST}/{name}")
}

/// What a write to a managed object would change: its generation, metadata, content and the
/// field managers' entries (with their times). The Deployment controller's own status updates
/// are not writes to the object Ferry manages, so they are left out.
async fn fingerprint(client: &kube::Client) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for (ar, name) in [
        (kube::api::ApiResource::erase::<ConfigMap>(&()), "settings"),
        (
            kube::api::ApiResource::erase::<k8s_openapi::api::apps::v1::Deployment>(&()),
            "web",
        ),
        (
            kube::api::ApiResource::erase::<k8s_openapi::api::core::v1::Service>(&()),
            "web",
        ),
    ] {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), DEST, &ar);
        let o = serde_json::to_value(api.get(name).await.unwrap()).unwrap();
        let managers: Vec<Value> = o["metadata"]["managedFields"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m["manager"] != "kube-controller-manager")
            .map(|m| json!([m["manager"], m["operation"], m["time"]]))
            .collect();
        out.insert(
            format!("{}/{name}", ar.kind),
            json!({
                "generation": o["metadata"]["generation"],
                "labels": o["metadata"]["labels"],
                "annotations": o["metadata"]["annotations"],
                "data": o["data"],
                "spec": o["spec"],
                "managers": managers,
            }),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_argo_cd_cluster_is_taken_over_with_no_writes_and_rollback_works() {
    let env = ferry_testenv::shared();
    let client = env.cluster.client().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let kubectl = env.tools.kubectl.clone();
    let kubectl_apply = |args: &[&str], input: &str| {
        let mut c = Command::new(&kubectl);
        c.args(args)
            .arg("--kubeconfig")
            .arg(&env.cluster.kubeconfig);
        let o = run(c, Some(input));
        assert!(o.status.success(), "kubectl {args:?}: {}", text(&o));
    };

    // Argo CD's CRDs: the same names, not labelled as Ferry's.
    let mut crds = String::new();
    for mut crd in [
        ferry_model::crds::application_crd(),
        ferry_model::crds::appproject_crd(),
    ] {
        crd["metadata"]["labels"] = json!({ "app.kubernetes.io/part-of": "argocd" });
        crds.push_str(&format!("---\n{}\n", serde_json::to_string(&crd).unwrap()));
    }
    kubectl_apply(&["apply", "-f", "-"], &crds);
    kubectl_apply(&["create", "namespace", NS], "");
    kubectl_apply(&["create", "namespace", DEST], "");

    // Two commits; Argo CD deployed the first, then the second.
    let repo = "guestbook";
    env.git.create_repo(repo).unwrap();
    let mut revisions = Vec::new();
    for version in ["1", "2"] {
        let dir = work.path().join(format!("src-{version}"));
        std::fs::create_dir_all(dir.join("app")).unwrap();
        for (f, body) in manifests(version) {
            std::fs::write(dir.join("app").join(f), body).unwrap();
        }
        revisions.push(
            env.git
                .commit_dir(repo, &dir, &format!("version {version}"))
                .unwrap(),
        );
    }
    let url = env.git.file_url(repo);

    // The objects as Argo CD's controller leaves them: the ConfigMap by server-side apply,
    // the Deployment and Service by client-side apply (last-applied annotation), all with its
    // tracking annotation and its field manager.
    for (file, body) in manifests("2") {
        let mut obj: Value = serde_saphyr::from_str(&body).unwrap();
        let group = obj["apiVersion"]
            .as_str()
            .unwrap()
            .rsplit_once('/')
            .map(|(g, _)| g.to_string())
            .unwrap_or_default();
        let kind = obj["kind"].as_str().unwrap().to_string();
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        obj["metadata"]["namespace"] = json!(DEST);
        obj["metadata"]["annotations"] = json!({
            "argocd.argoproj.io/tracking-id": tracking_id(&group, &kind, &name),
        });
        if file == "settings.yaml" {
            let api: Api<DynamicObject> = Api::namespaced_with(
                client.clone(),
                DEST,
                &kube::api::ApiResource::erase::<ConfigMap>(&()),
            );
            api.patch(
                &name,
                &PatchParams::apply("argocd-controller"),
                &Patch::Apply(&obj),
            )
            .await
            .unwrap();
        } else {
            kubectl_apply(
                &["apply", "--field-manager=argocd-controller", "-f", "-"],
                &serde_json::to_string(&obj).unwrap(),
            );
        }
    }

    // The Application with what Argo CD's controller wrote into it.
    let source = json!({ "repoURL": url, "path": "app", "targetRevision": "main" });
    let destination = json!({ "server": "https://kubernetes.default.svc", "namespace": DEST });
    let app = json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": { "name": APP, "namespace": NS },
        "spec": { "project": "default", "source": source, "destination": destination },
        "status": {
            "sync": { "status": "Synced", "revision": revisions[1], "comparedTo": { "source": source, "destination": destination } },
            "health": { "status": "Healthy" },
            "sourceType": "Directory",
            "reconciledAt": "2026-12-01T10:00:00Z",
            "history": [
                { "id": 0, "revision": revisions[0], "deployedAt": "2026-11-30T10:00:00Z", "deployStartedAt": "2026-11-30T09:59:58Z", "source": source },
                { "id": 1, "revision": revisions[1], "deployedAt": "2026-12-01T10:00:00Z", "deployStartedAt": "2026-12-01T09:59:58Z", "source": source },
            ],
            "operationState": {
                "operation": { "sync": { "revision": revisions[1] }, "initiatedBy": { "username": "admin" } },
                "phase": "Succeeded", "message": "successfully synced (all tasks run)",
                "startedAt": "2026-12-01T09:59:58Z", "finishedAt": "2026-12-01T10:00:00Z",
                "syncResult": { "revision": revisions[1], "source": source },
            },
        },
    });
    let apps_ar = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
        "argoproj.io",
        "v1alpha1",
        "Application",
    ));
    let apps: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &apps_ar);
    apps.create(
        &PostParams::default(),
        &serde_json::from_value(app).unwrap(),
    )
    .await
    .unwrap();
    let before = fingerprint(&client).await;

    // Argo CD's application controller still runs: Ferry refuses to start next to it.
    let sts_api: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::namespaced(client.clone(), NS);
    let sts = |replicas: i32| {
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": { "name": "argocd-application-controller", "namespace": NS },
            "spec": {
                "replicas": replicas, "serviceName": "argocd-application-controller",
                "selector": { "matchLabels": { "app.kubernetes.io/name": "argocd-application-controller" } },
                "template": {
                    "metadata": { "labels": { "app.kubernetes.io/name": "argocd-application-controller" } },
                    "spec": { "containers": [{ "name": "argocd-application-controller", "image": "quay.io/argoproj/argocd:v3.1.0" }] },
                },
            },
        })
    };
    sts_api
        .patch(
            "argocd-application-controller",
            &PatchParams::apply("argocd"),
            &Patch::Apply(sts(1)),
        )
        .await
        .unwrap();
    let ready = |want: i32| {
        let sts_api = sts_api.clone();
        async move {
            let s = sts_api.get("argocd-application-controller").await.unwrap();
            s.status.and_then(|st| st.ready_replicas).unwrap_or(0) == want
        }
    };
    let start = Instant::now();
    while !ready(1).await {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the stand-in Argo CD pod never became ready"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let refused = run(
        {
            let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
            c.args([
                "controller",
                "--namespace",
                NS,
                "--no-leader-election",
                "--kubeconfig",
            ])
            .arg(&env.cluster.kubeconfig)
            .arg("--cache-dir")
            .arg(work.path().join("refused-cache"));
            c
        },
        None,
    );
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).contains("StatefulSet argocd/argocd-application-controller"),
        "{}",
        text(&refused)
    );
    assert_eq!(
        fingerprint(&client).await,
        before,
        "nothing touched while refusing"
    );
    // As docs/migration.md says: scale it to zero, then start Ferry.
    sts_api
        .patch(
            "argocd-application-controller",
            &PatchParams::apply("argocd"),
            &Patch::Apply(sts(0)),
        )
        .await
        .unwrap();
    let start = Instant::now();
    while !ready(0).await {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the stand-in Argo CD did not scale down"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Argo CD's application controller is gone; Ferry starts.
    let ctl_log = work.path().join("controller.log");
    let srv_log = work.path().join("server.log");
    let _controller = start_controller_with(
        &env.cluster.kubeconfig,
        NS,
        work.path(),
        &ctl_log,
        &["--log-format", "json"],
    );
    let start = Instant::now();
    let status = loop {
        let a = apps.get(APP).await.unwrap();
        let st = a.data["status"].clone();
        if st["reconciledAt"] != "2026-12-01T10:00:00Z"
            && st["sync"]["status"] == "Synced"
            && st["health"]["status"] == "Healthy"
        {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "Ferry did not report the app Synced and Healthy: {st}\n{}",
            std::fs::read_to_string(&ctl_log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(status["sync"]["revision"], revisions[1], "{status}");
    assert_eq!(
        status["history"].as_array().unwrap().len(),
        2,
        "history kept: {status}"
    );
    // A few more passes (poll every 5 s): still nothing written.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(
        fingerprint(&client).await,
        before,
        "Ferry wrote to a managed object although nothing changed in Git"
    );
    let crd = Api::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>::all(client.clone())
        .get("applications.argoproj.io")
        .await
        .unwrap();
    assert_eq!(
        crd.metadata
            .labels
            .unwrap_or_default()
            .get("app.kubernetes.io/part-of")
            .map(String::as_str),
        Some("argocd"),
        "Argo CD's CRD is used as it is"
    );

    // The controller's log is JSON lines, and every line of a reconcile names the app and its
    // namespace.
    let log_text = std::fs::read_to_string(&ctl_log).unwrap();
    let lines: Vec<Value> = log_text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let in_reconcile: Vec<&Value> = lines
        .iter()
        .filter(|l| l["span"]["name"] == "reconcile")
        .collect();
    assert!(!in_reconcile.is_empty(), "{log_text}");
    for l in &in_reconcile {
        assert_eq!(l["span"]["app"], APP, "{l}");
        assert_eq!(l["span"]["namespace"], NS, "{l}");
    }

    // History and rollback through the API, as `argocd app history|rollback`, logged in with
    // the admin password Argo CD left (its bcrypt hash in argocd-secret; the example hash of its
    // docs, for "password").
    let argocd_secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": { "name": "argocd-secret", "namespace": NS, "labels": { "app.kubernetes.io/part-of": "argocd" } },
        "stringData": {
            "admin.password": "$2a$10$rRyBsGSHK6.uc8fntPwVIuLVHgsAhAX7TcdrqW/RADU0uh7CaChLa",
            "admin.passwordMtime": "2026-11-30T10:00:00Z",
            "server.secretkey": "a-signing-key-argo-cd-generated-long-enough",
        },
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &argocd_secret)
        .await
        .unwrap();
    let (_server, generated, addr) = tokio::task::block_in_place(|| {
        start_server(&env.cluster.kubeconfig, NS, work.path(), &srv_log)
    });
    assert!(generated.is_none(), "Argo CD's admin password is kept");
    let password = "password".to_string();
    let config = work.path().join("ferry-config");
    let o = cli(
        &config,
        &password,
        &["login", &addr, "--plaintext", "--username", "admin"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = cli(&config, &password, &["app", "history", APP]);
    assert!(o.status.success(), "{}", text(&o));
    let shown = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        shown.contains(&revisions[0][..7]) && shown.contains(&revisions[1][..7]),
        "{shown}"
    );
    let o = cli(
        &config,
        &password,
        &["app", "rollback", APP, "0", "--timeout", "60"],
    );
    assert!(
        o.status.success(),
        "{}\n{}",
        text(&o),
        std::fs::read_to_string(&ctl_log).unwrap_or_default()
    );
    let cm = Api::<ConfigMap>::namespaced(client.clone(), DEST)
        .get("settings")
        .await
        .unwrap();
    assert_eq!(
        cm.data.unwrap()["version"],
        "1",
        "rolled back to the first deployment"
    );
    let a = apps.get(APP).await.unwrap();
    let history = a.data["status"]["history"].as_array().unwrap().clone();
    assert_eq!(history.len(), 3, "{history:?}");
    assert_eq!(history[2]["id"], 2);
    assert_eq!(history[2]["revision"], revisions[0]);
}

//! Shared helpers: a controller per test, watching its own namespace, on the
//! shared test environment.

#![allow(dead_code)]

use ferry_model::Application;
use ferry_testenv::{TestEnv, shared};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

pub struct Harness {
    pub env: &'static TestEnv,
    pub client: Client,
    /// The controller's namespace (Applications, projects, secrets).
    pub ns: String,
    /// A namespace for the apps' resources.
    pub dest: String,
    pub task: tokio::task::JoinHandle<()>,
    /// The controller's configuration, for [`Harness::restart`].
    pub cfg: ferry_controller::Config,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn harness(prefix: &str) -> Harness {
    harness_with(prefix, |_| {}).await
}

/// A harness whose controller configuration `tune` adjusts first.
pub async fn harness_with(
    prefix: &str,
    tune: impl FnOnce(&mut ferry_controller::Config),
) -> Harness {
    // FERRY_TEST_LOG=ferry_controller=debug shows what the controllers do.
    if let Ok(filter) = std::env::var("FERRY_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .try_init();
    }
    let env = shared();
    let client = env.cluster.client().await.unwrap();
    let ns = env.cluster.create_namespace(&client, prefix).await.unwrap();
    let dest = env
        .cluster
        .create_namespace(&client, &format!("{prefix}-dest"))
        .await
        .unwrap();
    ferry_controller::install_crds(&client).await.unwrap();
    let mut cfg = ferry_controller::Config {
        namespace: ns.clone(),
        cache_dir: std::env::temp_dir().join(format!("ferry-test-cache-{}", std::process::id())),
        poll_interval: Duration::from_secs(3),
        leader_election: false,
        wave_timeout: Duration::from_secs(90),
        identity: ns.clone(),
        // Each test's controller handles image automation in its own namespace only.
        image_namespace: Some(ns.clone()),
        // ... and KubeVela Applications in its destination namespace only.
        oam_namespace: Some(dest.clone()),
        ..ferry_controller::Config::default()
    };
    tune(&mut cfg);
    let task = spawn_controller(&client, &cfg);
    Harness {
        env,
        client,
        ns,
        dest,
        task,
        cfg,
    }
}

fn spawn_controller(
    client: &Client,
    cfg: &ferry_controller::Config,
) -> tokio::task::JoinHandle<()> {
    let (c, cfg) = (client.clone(), cfg.clone());
    tokio::spawn(async move {
        if let Err(e) = ferry_controller::run(c, cfg).await {
            panic!("controller failed: {e}");
        }
    })
}

/// Creates `repo` (unique per process) and commits `files` to it; returns the repo name.
pub fn new_repo(name: &str, files: &[(&str, &str)]) -> String {
    let env = shared();
    let repo = format!("{name}-{}", std::process::id());
    env.git.create_repo(&repo).unwrap();
    commit(&repo, files);
    repo
}

/// Replaces the repo's content with `files` in a new commit; returns the sha.
pub fn commit(repo: &str, files: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
    }
    shared().git.commit_dir(repo, dir.path(), "update").unwrap()
}

pub fn copy_dir(src: &Path, files: &mut Vec<(String, String)>, prefix: &str) {
    for e in std::fs::read_dir(src).unwrap().flatten() {
        let p = e.path();
        let rel = format!("{prefix}{}", e.file_name().to_string_lossy());
        if p.is_dir() {
            copy_dir(&p, files, &format!("{rel}/"));
        } else {
            files.push((rel, std::fs::read_to_string(&p).unwrap()));
        }
    }
}

impl Harness {
    /// Kills the controller (its tasks end where they are, as with SIGKILL) and starts a
    /// new one with the same configuration.
    pub async fn restart(&mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
        self.task = spawn_controller(&self.client, &self.cfg);
    }

    /// Panics if the controller is not running: a check that "nothing happened" must never
    /// pass because nothing is running (its task is looked at, not dropped).
    pub fn assert_running(&self) {
        assert!(
            !self.task.is_finished(),
            "the controller task ended: it crashed or returned (see the panic above)"
        );
    }

    /// Lets `d` pass with the controller running, for checks that something does not happen.
    pub async fn idle(&self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.assert_running();
            tokio::time::sleep(Duration::from_millis(200).min(end - Instant::now())).await;
        }
        self.assert_running();
    }

    pub fn apps(&self) -> Api<Application> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Creates or updates an Application from JSON (as `kubectl apply` would).
    pub async fn apply_app(&self, app: Value) {
        self.apply_app_in(&self.ns.clone(), app).await
    }

    /// [`Self::apply_app`] in another namespace.
    pub async fn apply_app_in(&self, ns: &str, app: Value) {
        let name = app["metadata"]["name"].as_str().unwrap().to_string();
        let mut app = app;
        app["apiVersion"] = json!("argoproj.io/v1alpha1");
        app["kind"] = json!("Application");
        app["metadata"]["namespace"] = json!(ns);
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), ns, &app_resource());
        api.patch(
            &name,
            &PatchParams::apply("test").force(),
            &Patch::Apply(&app),
        )
        .await
        .unwrap();
    }

    pub async fn apply(&self, obj: Value) {
        let av = obj["apiVersion"].as_str().unwrap();
        let kind = obj["kind"].as_str().unwrap();
        let (g, v) = av.rsplit_once('/').unwrap_or(("", av));
        let gvk = kube::api::GroupVersionKind::gvk(g, v, kind);
        let (ar, caps) = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .unwrap();
        let name = obj["metadata"]["name"].as_str().unwrap();
        let api: Api<DynamicObject> = if caps.scope == kube::discovery::Scope::Namespaced {
            let ns = obj["metadata"]["namespace"].as_str().unwrap_or(&self.ns);
            Api::namespaced_with(self.client.clone(), ns, &ar)
        } else {
            Api::all_with(self.client.clone(), &ar)
        };
        api.patch(
            name,
            &PatchParams::apply("test").force(),
            &Patch::Apply(&obj),
        )
        .await
        .unwrap();
    }

    /// Waits until `f` accepts the Application; panics with its last status.
    pub async fn wait_app(
        &self,
        name: &str,
        what: &str,
        f: impl Fn(&Application) -> bool,
    ) -> Application {
        let deadline = Instant::now() + Duration::from_secs(150);
        loop {
            self.assert_running();
            let app = self.apps().get_opt(name).await.unwrap();
            if let Some(a) = &app
                && f(a)
            {
                return a.clone();
            }
            if Instant::now() > deadline {
                let st = app
                    .and_then(|a| a.status)
                    .map(|s| serde_json::to_string_pretty(&s).unwrap());
                panic!(
                    "timed out waiting for {name}: {what}; status: {}",
                    st.unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    pub async fn wait_synced_healthy(&self, name: &str) -> Application {
        self.wait_app(name, "Synced and Healthy", |a| {
            sync_status(a) == "Synced" && health_status(a) == "Healthy"
        })
        .await
    }

    /// Polls `f` until it returns Some.
    pub async fn eventually<T, F, Fut>(&self, what: &str, mut f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + Duration::from_secs(150);
        loop {
            self.assert_running();
            if let Some(v) = f().await {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    pub async fn refresh(&self, name: &str) {
        let patch =
            json!({ "metadata": { "annotations": { "argocd.argoproj.io/refresh": "normal" } } });
        self.apps()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    /// Registers the test environment's second API server as an Argo CD
    /// cluster Secret named `name`, with extra `labels` for selectors.
    pub async fn register_cluster2(&self, name: &str, labels: Value) {
        let c2 = self.env.cluster2();
        let mut meta_labels = json!({ "argocd.argoproj.io/secret-type": "cluster" });
        if let (Some(m), Some(extra)) = (meta_labels.as_object_mut(), labels.as_object()) {
            m.extend(extra.clone());
        }
        let secret: Secret = serde_json::from_value(json!({
            "metadata": { "name": name, "labels": meta_labels },
            "stringData": {
                "name": name,
                "server": c2.server,
                "config": json!({ "bearerToken": c2.admin_token().expose(), "tlsClientConfig": { "caData": ferry_controller::b64(&c2.ca_pem) } }).to_string(),
            },
        }))
        .unwrap();
        Api::<Secret>::namespaced(self.client.clone(), &self.ns)
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }

    pub fn dest_ns(&self) -> Api<Namespace> {
        Api::all(self.client.clone())
    }
}

pub fn app_resource() -> kube::api::ApiResource {
    kube::api::ApiResource::erase::<Application>(&())
}

pub fn sync_status(a: &Application) -> String {
    a.status
        .as_ref()
        .and_then(|s| s.sync.as_ref())
        .map(|s| s.status.clone())
        .unwrap_or_default()
}

pub fn health_status(a: &Application) -> String {
    a.status
        .as_ref()
        .and_then(|s| s.health.as_ref())
        .map(|h| h.status.clone())
        .unwrap_or_default()
}

pub fn conditions(a: &Application) -> String {
    a.status
        .as_ref()
        .map(|s| {
            s.conditions
                .iter()
                .map(|c| format!("{}: {}", c.type_, c.message))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

pub fn op_phase(a: &Application) -> String {
    a.status
        .as_ref()
        .and_then(|s| s.operation_state.as_ref())
        .map(|o| o.phase.clone())
        .unwrap_or_default()
}

pub fn name_of(v: &impl ResourceExt) -> String {
    v.name_any()
}

/// An Application in `dest` from `path` of `repo_url` at main; `extra` is merged over it.
pub fn app(name: &str, repo_url: &str, path: &str, dest: &str, extra: Value) -> Value {
    let mut a = json!({
        "metadata": { "name": name },
        "spec": {
            "project": "default",
            "source": { "repoURL": repo_url, "path": path, "targetRevision": "main" },
            "destination": { "server": "https://kubernetes.default.svc", "namespace": dest },
        }
    });
    merge(&mut a, extra);
    a
}

/// Merges `b` into `a`, objects key by key.
pub fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in y {
                merge(x.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// `syncPolicy.automated` with prune and selfHeal.
pub fn automated() -> Value {
    json!({ "spec": { "syncPolicy": { "automated": { "prune": true, "selfHeal": true } } } })
}

/// The operation's message, or empty.
pub fn op_message(a: &Application) -> String {
    a.status
        .as_ref()
        .and_then(|s| s.operation_state.as_ref())
        .map(|o| o.message.clone())
        .unwrap_or_default()
}

/// A wave-0 Deployment whose pods the simulated node never makes ready (until
/// [`Harness::make_ready`] removes the annotation that holds them).
pub fn held_deployment(name: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  annotations:
    argocd.argoproj.io/sync-wave: "0"
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
      annotations:
        testenv.ferry.dev/not-ready: "true"
    spec:
      containers:
      - name: app
        image: nginx
"#
    )
}

impl Harness {
    /// Lets a [`held_deployment`] become ready, as a hand edit of the live object would.
    pub async fn make_ready(&self, client: &Client, name: &str) {
        let remove: json_patch::Patch = serde_json::from_value(json!([{ "op": "remove",
            "path": "/spec/template/metadata/annotations/testenv.ferry.dev~1not-ready" }]))
        .unwrap();
        Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), &self.dest)
            .patch(name, &PatchParams::default(), &Patch::Json::<()>(remove))
            .await
            .unwrap();
    }
}

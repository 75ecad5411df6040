//! `ferry dev up --demo`: a live GitOps demo on the local environment.

use anyhow::{Context, bail};
use ferry_model::Application;
use ferry_testenv::TestEnv;
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use std::path::Path;
use std::time::{Duration, Instant};

pub const REPO: &str = "gitops-examples";
const NAMESPACE: &str = "argocd";

/// What the demo runs: the controller, the API server, and how to log in.
pub struct Demo {
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    pub api: std::net::SocketAddr,
    pub admin_password: Option<String>,
    /// The KubeVela app's phase once it settled.
    pub vela_phase: String,
    /// The image automation's commit and the image the cluster runs after it.
    pub automation_commit: String,
    pub delivered_image: String,
}

const IMAGE_REPO: &str = "demo/podinfo";

/// The image-automated Deployment, with its setter marker, at `tag`.
fn podinfo_deployment(registry: &str, tag: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: podinfo\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: podinfo\n  template:\n    metadata:\n      labels:\n        app: podinfo\n    spec:\n      containers:\n      - name: podinfo\n        image: {registry}/{IMAGE_REPO}:{tag} # {{\"$imagepolicy\": \"{NAMESPACE}:podinfo\"}}\n"
    )
}

async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("{what} did not happen within 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn apply(client: &kube::Client, obj: serde_json::Value) -> anyhow::Result<()> {
    let gvk = kube::api::GroupVersionKind::try_from(&kube::api::TypeMeta {
        api_version: obj["apiVersion"].as_str().unwrap_or_default().into(),
        kind: obj["kind"].as_str().unwrap_or_default().into(),
    })?;
    let (ar, _) = kube::discovery::pinned_kind(client, &gvk).await?;
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let api: Api<DynamicObject> = match obj["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    api.patch(
        &name,
        &PatchParams::apply("ferry-demo").force(),
        &Patch::Apply(&obj),
    )
    .await
    .with_context(|| format!("applying {} {name}", gvk.kind))?;
    Ok(())
}

/// Pushes the examples, starts the controller, applies the Applications,
/// waits until they are Synced and Healthy, and starts the API server.
pub async fn start(env: &TestEnv, examples: &Path) -> anyhow::Result<Demo> {
    if !examples.join("apps").is_dir() {
        bail!(
            "{} has no apps/ directory; run from the repository root or pass --examples",
            examples.display()
        );
    }
    env.git
        .create_repo(REPO)
        .context("creating the demo repository")?;
    // The examples, and the image-automated Deployment at the first tag pushed to the registry.
    env.registry
        .push_image(IMAGE_REPO, "1.0.0")
        .context("pushing the demo image")?;
    let content = tempfile::tempdir()?;
    copy_dir(examples, content.path())?;
    std::fs::create_dir_all(content.path().join("image-demo"))?;
    std::fs::write(
        content.path().join("image-demo/deployment.yaml"),
        podinfo_deployment(&env.registry.host, "1.0.0"),
    )?;
    env.git
        .commit_dir(REPO, content.path(), "Ferry demo: initial content")
        .context("pushing the examples")?;
    let repo_url = env.git.file_url(REPO);

    let client = env.cluster.client().await?;
    let ns: Api<Namespace> = Api::all(client.clone());
    let pp = PatchParams::apply("ferry-demo");
    ns.patch(NAMESPACE, &pp, &Patch::Apply(serde_json::json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": NAMESPACE } })))
        .await?;
    ferry_controller::install_crds(&client).await?;

    let cfg = ferry_controller::Config {
        namespace: NAMESPACE.into(),
        cache_dir: env.dir.join("ferry-cache"),
        poll_interval: Duration::from_secs(10),
        leader_election: true,
        identity: "ferry-demo".into(),
        ..ferry_controller::Config::default()
    };
    let c = client.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = ferry_controller::run(c, cfg).await {
            eprintln!("controller stopped: {e}");
        }
    });

    let ar = kube::api::ApiResource::erase::<Application>(&());
    let apps_dyn: Api<DynamicObject> = Api::namespaced_with(client.clone(), NAMESPACE, &ar);
    let mut names = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(examples.join("apps"))?
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f)?.replace("REPO_URL", &repo_url);
        for obj in ferry_render::parse_manifests(&text, &f.display().to_string())? {
            let name = obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            apps_dyn
                .patch(&name, &pp, &Patch::Apply(&obj))
                .await
                .with_context(|| format!("applying {name}"))?;
            names.push(name);
        }
    }

    let apps: Api<Application> = Api::namespaced(client.clone(), NAMESPACE);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let list = apps.list(&Default::default()).await?;
        let ready = names.iter().all(|n| {
            list.items.iter().any(|a| {
                a.name_any() == *n
                    && a.status
                        .as_ref()
                        .and_then(|s| s.sync.as_ref())
                        .map(|s| s.status.as_str())
                        == Some("Synced")
                    && a.status
                        .as_ref()
                        .and_then(|s| s.health.as_ref())
                        .map(|h| h.status.as_str())
                        == Some("Healthy")
            })
        });
        if ready {
            print_table(&list.items);
            break;
        }
        if Instant::now() > deadline {
            print_table(&list.items);
            bail!("the demo applications did not become Synced and Healthy within 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let vela_phase = kubevela(&client, examples).await?;
    let (automation_commit, delivered_image) = image_automation(env, &client).await?;
    let (started, serve) = ferry_server::start(
        client,
        ferry_server::ServerConfig {
            namespace: NAMESPACE.into(),
            listen: "127.0.0.1:0".parse()?,
            metrics_listen: None,
            cache_dir: env.dir.join("ferry-server-cache"),
            plugin_dirs: vec![],
            application_namespaces: Vec::new(),
            plugin_env: Vec::new(),
            namespaced: false,
            // Loopback only, opened in the browser of the same machine.
            tls: ferry_server::tls::TlsMode::Off,
        },
    )
    .await
    .context("starting the API server")?;
    Ok(Demo {
        tasks: vec![task, tokio::spawn(serve)],
        api: started.addr,
        admin_password: started.initial_admin_password,
        vela_phase,
        automation_commit,
        delivered_image,
    })
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), target)?;
        }
    }
    Ok(())
}

/// KubeVela's front door: examples/demo/hello-vela.yaml, until its workflow has run.
async fn kubevela(client: &kube::Client, examples: &Path) -> anyhow::Result<String> {
    let path = examples.join("demo/hello-vela.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let app = ferry_render::parse_manifests(&text, &path.display().to_string())?
        .into_iter()
        .next()
        .context("no Application in hello-vela.yaml")?;
    let ns = app["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    apply(
        client,
        serde_json::json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns } }),
    )
    .await?;
    apply(client, app).await?;
    let ar = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
        "core.oam.dev",
        "v1beta1",
        "Application",
    ));
    let apps: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
    wait_for("the KubeVela app to run", || {
        let apps = apps.clone();
        async move {
            let a = apps.get_opt("hello-vela").await.ok()??;
            let phase = a.data["status"]["status"].as_str()?.to_string();
            (phase == "running").then_some(phase)
        }
    })
    .await
}

/// Flux image automation's front door: a new tag in the registry becomes a commit in Git
/// (Ferry's image controller) and then a rollout (the `podinfo` Argo CD app).
async fn image_automation(
    env: &TestEnv,
    client: &kube::Client,
) -> anyhow::Result<(String, String)> {
    let url = env.git.http_url(REPO);
    let secret = |name: &str, data: serde_json::Value| serde_json::json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": name, "namespace": NAMESPACE }, "stringData": data });
    apply(client, secret("demo-git", serde_json::json!({ "username": env.git.user(), "password": env.git.password().expose() }))).await?;
    let mut regcred = secret(
        "demo-registry",
        serde_json::json!({ ".dockerconfigjson": env.registry.docker_config_json()? }),
    );
    regcred["type"] = serde_json::json!("kubernetes.io/dockerconfigjson");
    apply(client, regcred).await?;
    for obj in [
        serde_json::json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": { "name": "demo", "namespace": NAMESPACE },
            "spec": { "url": url, "interval": "1m", "ref": { "branch": "main" }, "secretRef": { "name": "demo-git" } },
        }),
        serde_json::json!({
            "apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImageRepository",
            "metadata": { "name": "podinfo", "namespace": NAMESPACE },
            "spec": { "image": format!("{}/{IMAGE_REPO}", env.registry.host), "interval": "5s", "insecure": true, "secretRef": { "name": "demo-registry" } },
        }),
        serde_json::json!({
            "apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImagePolicy",
            "metadata": { "name": "podinfo", "namespace": NAMESPACE },
            "spec": { "imageRepositoryRef": { "name": "podinfo" }, "policy": { "semver": { "range": ">=1.0.0" } } },
        }),
        serde_json::json!({
            "apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImageUpdateAutomation",
            "metadata": { "name": "demo", "namespace": NAMESPACE },
            "spec": {
                "interval": "5s",
                "sourceRef": { "kind": "GitRepository", "name": "demo" },
                "git": {
                    "checkout": { "ref": { "branch": "main" } },
                    "commit": { "author": { "name": "ferry-bot", "email": "bot@ferry.dev" }, "messageTemplate": "Update podinfo to the newest tag" },
                    "push": { "branch": "main" },
                },
                "update": { "path": "./image-demo", "strategy": "Setters" },
            },
        }),
    ] {
        apply(client, obj).await?;
    }
    // A new build lands in the registry.
    env.registry
        .push_image(IMAGE_REPO, "1.1.0")
        .context("pushing the new demo tag")?;
    let want = format!("{}/{IMAGE_REPO}:1.1.0", env.registry.host);
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), "podinfo");
    let image = wait_for("the new tag to be committed and delivered", || {
        let deployments = deployments.clone();
        let want = want.clone();
        async move {
            let d = serde_json::to_value(deployments.get_opt("podinfo").await.ok()??).ok()?;
            let image = d["spec"]["template"]["spec"]["containers"][0]["image"]
                .as_str()?
                .to_string();
            (image == want).then_some(image)
        }
    })
    .await?;
    let commit = env.git.head(REPO).unwrap_or_default();
    Ok((commit, image))
}

fn print_table(apps: &[Application]) {
    println!(
        "{:<22} {:<10} {:<12} {:<10} REVISION",
        "APPLICATION", "SYNC", "HEALTH", "RESOURCES"
    );
    for a in apps {
        let st = a.status.clone().unwrap_or_default();
        println!(
            "{:<22} {:<10} {:<12} {:<10} {}",
            a.name_any(),
            st.sync
                .as_ref()
                .map(|s| s.status.clone())
                .unwrap_or_default(),
            st.health
                .as_ref()
                .map(|h| h.status.clone())
                .unwrap_or_default(),
            st.resources.len(),
            st.sync
                .and_then(|s| s.revision)
                .map(|r| r.chars().take(10).collect::<String>())
                .unwrap_or_default(),
        );
    }
}

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
    env.git
        .commit_dir(REPO, examples, "Ferry demo: initial content")
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
        },
    )
    .await
    .context("starting the API server")?;
    Ok(Demo {
        tasks: vec![task, tokio::spawn(serve)],
        api: started.addr,
        admin_password: started.initial_admin_password,
    })
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

//! The web UI's cost with every app of the run in the server's cache: the applications page
//! (its first page: the server filters and paginates) and an app page whose tree has 500
//! objects. Timed from a client on loopback, so the figures include HTTP; plain HTTP, so
//! they leave TLS out.

use anyhow::{Context, bail};
use ferry_model::Application;
use ferry_testenv::TestEnv;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const TREE_OBJECTS: usize = 500;

pub struct Figures {
    pub apps: usize,
    pub list_p50_ms: f64,
    pub list_p95_ms: f64,
    pub list_bytes: usize,
    pub tree_p50_ms: f64,
    pub tree_p95_ms: f64,
    pub tree_bytes: usize,
    pub tree_nodes: usize,
    pub rows_p50_ms: f64,
    pub rows_bytes: usize,
    pub rows: usize,
    pub server_rss_mib: f64,
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    super::percentile(&v, p)
}

async fn time_get(
    http: &reqwest::Client,
    url: &str,
    cookie: &str,
    samples: usize,
) -> anyhow::Result<(Vec<f64>, usize)> {
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..samples {
        let t = Instant::now();
        let resp = http.get(url).header("cookie", cookie).send().await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        if !status.is_success() {
            bail!("GET {url}: {status}");
        }
        bytes = body.len();
    }
    Ok((times, bytes))
}

/// The app whose tree has 500 objects, synced by the running controller.
pub async fn prepare(env: &TestEnv, client: &Client, ns: &str) -> anyhow::Result<()> {
    let src = tempfile::tempdir()?;
    std::fs::create_dir_all(src.path().join("tree"))?;
    for i in 0..TREE_OBJECTS {
        std::fs::write(
            src.path().join(format!("tree/cm-{i}.yaml")),
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\ndata:\n  i: \"{i}\"\n"
            ),
        )?;
    }
    env.git.create_repo("bench-tree")?;
    env.git
        .commit_dir("bench-tree", src.path(), "500 objects")?;
    let ar = kube::api::ApiResource::erase::<Application>(&());
    let dyn_apps: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let app = json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": { "name": "tree-500", "namespace": ns },
        "spec": { "project": "default",
            "source": { "repoURL": env.git.file_url("bench-tree"), "path": "tree", "targetRevision": "main" },
            "destination": { "server": "https://kubernetes.default.svc", "namespace": "bench-tree" },
            "syncPolicy": { "automated": {}, "syncOptions": ["CreateNamespace=true"] } },
    });
    dyn_apps
        .patch(
            "tree-500",
            &PatchParams::apply("bench"),
            &Patch::Apply(&app),
        )
        .await?;
    let typed: Api<Application> = Api::namespaced(client.clone(), ns);
    let t = Instant::now();
    loop {
        let a = typed.get("tree-500").await?;
        let s = a.status.unwrap_or_default();
        if s.resources.len() == TREE_OBJECTS && s.sync.is_some_and(|x| x.status == "Synced") {
            break;
        }
        if t.elapsed() > Duration::from_secs(300) {
            bail!("the 500-object app did not sync in 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// Fills the namespace up to `apps` Applications (the ones added have a spec and no status
/// yet: the controller is stopped by then), then times the pages.
pub async fn run(
    ferry: &Path,
    env: &TestEnv,
    client: &Client,
    ns: &str,
    apps: usize,
) -> anyhow::Result<Figures> {
    let ar = kube::api::ApiResource::erase::<Application>(&());
    let dyn_apps: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let existing = dyn_apps.list(&Default::default()).await?.items.len();
    for i in existing..apps {
        let app = json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": { "name": format!("filler-{i}"), "namespace": ns, "labels": { "team": format!("t{}", i % 7) } },
            "spec": { "project": "default",
                "source": { "repoURL": env.git.file_url("bench"), "path": format!("app-{}", i % 10), "targetRevision": "main" },
                "destination": { "server": "https://kubernetes.default.svc", "namespace": format!("filler-{i}") } },
        });
        dyn_apps
            .patch(
                &format!("filler-{i}"),
                &PatchParams::apply("bench"),
                &Patch::Apply(&app),
            )
            .await?;
    }
    let apps = apps.max(existing);

    let log = env.dir.join("ferry-server-bench.log");
    let mut server = Command::new(ferry)
        .args([
            "server",
            "--insecure",
            "--namespace",
            ns,
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--kubeconfig")
        .arg(&env.cluster.kubeconfig)
        .arg("--cache-dir")
        .arg(env.dir.join("ferry-server-cache"))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let stdout = server.stdout.take().context("server stdout")?;
    let (password, addr) = tokio::task::spawn_blocking(move || {
        let mut password = None;
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let line = line.unwrap_or_default();
            if let Some(p) = line.split("argocd-initial-admin-secret): ").nth(1) {
                password = Some(p.trim().to_string());
            }
            if let Some(a) = line.strip_prefix("Serving the API on http://") {
                // Keep reading so the server never writes into a closed pipe.
                let addr = a.trim().to_string();
                std::thread::spawn(move || for _ in lines {});
                return (password, addr);
            }
        }
        (password, String::new())
    })
    .await?;
    let result = async {
        if addr.is_empty() {
            bail!("the server did not start; see {}", log.display());
        }
        let password = match password {
            Some(p) => p,
            None => {
                let s: k8s_openapi::api::core::v1::Secret = Api::namespaced(client.clone(), ns)
                    .get("argocd-initial-admin-secret")
                    .await?;
                let b = s
                    .data
                    .unwrap_or_default()
                    .get("password")
                    .cloned()
                    .context("no initial admin password")?;
                String::from_utf8(b.0)?
            }
        };
        let http = reqwest::Client::new();
        let base = format!("http://{addr}");
        let v: serde_json::Value = http
            .post(format!("{base}/api/v1/session"))
            .json(&json!({ "username": "admin", "password": password }))
            .send()
            .await?
            .json()
            .await?;
        let cookie = format!("ferry.token={}", v["token"].as_str().context("login")?);
        // The server's watch cache fills at start; warm it with one request of each.
        let list_url = format!("{base}/applications");
        let tree_url = format!("{base}/applications/{ns}/tree-500?view=tree");
        let (_, _) = time_get(&http, &list_url, &cookie, 2).await?;
        let (_, _) = time_get(&http, &tree_url, &cookie, 2).await?;
        let (list, list_bytes) = time_get(&http, &list_url, &cookie, 30).await?;
        let (tree, tree_bytes) = time_get(&http, &tree_url, &cookie, 20).await?;
        let body = http
            .get(&tree_url)
            .header("cookie", &cookie)
            .send()
            .await?
            .text()
            .await?;
        let tree_nodes = body.matches("class=\"node").count();
        // The list view draws every object of the app.
        let rows_url = format!("{base}/applications/{ns}/tree-500?view=list");
        let (rows_times, rows_bytes) = time_get(&http, &rows_url, &cookie, 20).await?;
        let body = http
            .get(&rows_url)
            .header("cookie", &cookie)
            .send()
            .await?
            .text()
            .await?;
        let rows = body.matches("class=\"node\"").count();
        Ok(Figures {
            apps,
            list_p50_ms: percentile(list.clone(), 0.5),
            list_p95_ms: percentile(list, 0.95),
            list_bytes,
            tree_p50_ms: percentile(tree.clone(), 0.5),
            tree_p95_ms: percentile(tree, 0.95),
            tree_bytes,
            tree_nodes,
            rows_p50_ms: percentile(rows_times, 0.5),
            rows_bytes,
            rows,
            server_rss_mib: super::peak_rss_mib(server.id()),
        })
    }
    .await;
    let _ = server.kill();
    let _ = server.wait();
    // The later phases measure the run's own apps only.
    for i in existing..apps {
        let _ = dyn_apps
            .delete(&format!("filler-{i}"), &Default::default())
            .await;
    }
    result
}

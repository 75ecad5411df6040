//! The secrets part of `make bench`: Applications whose manifests carry argocd-vault-plugin
//! placeholders, resolved natively from a real OpenBao server, against the same apps with the
//! values written in. Store requests are counted from OpenBao's own audit log.

use anyhow::{Context, bail};
use base64::Engine;
use ferry_model::Application;
use ferry_testenv::{OpenBao, TestEnv};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

/// Distinct secret paths in the store; each app reads 5 of them.
pub const PATHS: usize = 20;
/// Placeholders per app.
pub const PLACEHOLDERS: usize = 5;
const SETTINGS_SECRET: &str = "avp-bench";

pub struct Figures {
    pub apps: usize,
    pub plain_cold_secs: f64,
    pub vault_cold_secs: f64,
    pub cold_reads: usize,
    pub cold_logins: usize,
    pub steady_reads: usize,
    pub steady_logins: usize,
    pub steady_apps: usize,
}

fn value(path: usize, key: usize) -> String {
    format!("bench-value-{path}-{key}")
}

/// App `a`'s placeholder `i`: path `(a + i) % PATHS`, key `i`.
fn slot(a: usize, i: usize) -> (usize, usize) {
    ((a + i) % PATHS, i)
}

/// App `a`'s objects: the bench's usual ConfigMaps and Services, with a ConfigMap holding three
/// placeholders and a Secret holding two (base64 text of the placeholder, as avp's examples
/// write Secret data). `resolved` writes the values in instead.
fn manifests(a: usize, resources: usize, resolved: bool) -> Vec<(String, String)> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let text = |i: usize| {
        let (p, k) = slot(a, i);
        if resolved {
            value(p, k)
        } else {
            format!("<path:kv/data/bench/s{p}#k{k}>")
        }
    };
    let mut files = Vec::new();
    for r in 0..resources {
        let body = match r {
            0 => format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-0\ndata:\n  one: \"{}\"\n  two: \"{}\"\n  three: \"{}\"\n",
                text(0),
                text(1),
                text(2)
            ),
            1 => format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: credentials\ntype: Opaque\ndata:\n  username: {}\n  password: {}\n",
                b64(&text(3)),
                b64(&text(4))
            ),
            r if r % 5 == 4 => format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{r}\nspec:\n  selector:\n    app: bench-{a}\n  ports:\n  - port: {}\n    protocol: TCP\n    targetPort: 8080\n",
                8000 + r
            ),
            r => format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{r}\ndata:\n  index: \"{r}\"\n  payload: \"{}\"\n",
                "x".repeat(200)
            ),
        };
        files.push((format!("app-{a}/r{r}.yaml"), body));
    }
    files
}

/// Creates `n` apps named `<prefix><a>` from `repo` and waits until all are Synced and Healthy.
#[allow(clippy::too_many_arguments)]
async fn cold_sync(
    env: &TestEnv,
    client: &Client,
    ns: &str,
    repo: &str,
    prefix: &str,
    n: usize,
    plugin: Option<serde_json::Value>,
    log: &Path,
) -> anyhow::Result<f64> {
    let ar = kube::api::ApiResource::erase::<Application>(&());
    let dyn_apps: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let apps: Api<Application> = Api::namespaced(client.clone(), ns);
    let url = env.git.file_url(repo);
    let pp = PatchParams::apply("bench");
    let t = Instant::now();
    for a in 0..n {
        let mut source =
            json!({ "repoURL": url, "path": format!("app-{a}"), "targetRevision": "main" });
        if let Some(p) = &plugin {
            source["plugin"] = p.clone();
        }
        let app = json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": { "name": format!("{prefix}{a}"), "namespace": ns },
            "spec": {
                "project": "default",
                "source": source,
                "destination": { "server": "https://kubernetes.default.svc", "namespace": format!("{prefix}{a}") },
                "syncPolicy": { "automated": { "prune": true, "selfHeal": true }, "syncOptions": ["CreateNamespace=true"] },
            },
        });
        dyn_apps
            .patch(&format!("{prefix}{a}"), &pp, &Patch::Apply(&app))
            .await?;
    }
    while !crate::all_synced(&apps, prefix, n).await? {
        if t.elapsed() > Duration::from_secs(1800) {
            bail!(
                "{prefix}* apps did not sync in 30 minutes; see {}",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Runs the secrets workload next to the apps already there (`existing` of them, all steady).
/// `steady_pass` triggers one pass over every app and returns once it is done.
pub async fn run<F, Fut>(
    env: &TestEnv,
    client: &Client,
    ns: &str,
    n: usize,
    resources: usize,
    log: &Path,
    steady_pass: F,
) -> anyhow::Result<Figures>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<usize>>,
{
    eprintln!("secrets: starting OpenBao...");
    let bao = OpenBao::start(&env.dir).await?;
    bao.mount_kv("kv", 2).await?;
    for p in 0..PATHS {
        let data: serde_json::Map<String, serde_json::Value> = (0..PLACEHOLDERS)
            .map(|k| (format!("k{k}"), json!(value(p, k))))
            .collect();
        bao.kv_put("kv", 2, &format!("bench/s{p}"), data.into())
            .await?;
    }
    bao.call(
        "PUT",
        "sys/policies/acl/bench",
        Some(json!({"policy": "path \"kv/data/bench/*\" { capabilities = [\"read\"] }"})),
    )
    .await?;
    let (role_id, secret_id) = bao.approle("bench", &["bench"]).await?;
    // Seed 002's way: avp's settings in a Secret that AVP_SECRET names.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    secrets
        .patch(
            SETTINGS_SECRET,
            &PatchParams::apply("bench"),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": { "name": SETTINGS_SECRET, "namespace": ns },
                "stringData": {
                    "AVP_TYPE": "vault", "AVP_AUTH_TYPE": "approle", "VAULT_ADDR": bao.addr,
                    "AVP_ROLE_ID": role_id, "AVP_SECRET_ID": secret_id,
                },
            })),
        )
        .await?;

    for (repo, resolved) in [("bench-plain", true), ("bench-vault", false)] {
        let src = tempfile::tempdir()?;
        for a in 0..n {
            for (p, c) in manifests(a, resources, resolved) {
                let path = src.path().join(p);
                std::fs::create_dir_all(path.parent().context("no parent")?)?;
                std::fs::write(path, c)?;
            }
        }
        env.git.create_repo(repo)?;
        env.git.commit_dir(repo, src.path(), "bench")?;
    }

    // Placeholders first, so any warm-up the second run enjoys favours the plain apps.
    eprintln!("secrets: cold sync of {n} applications with {PLACEHOLDERS} placeholders each...");
    let (reads0, logins0) = (
        bao.audited_requests("kv/"),
        bao.audited_requests("auth/approle/login"),
    );
    let plugin = json!({ "name": "argocd-vault-plugin", "env": [{ "name": "AVP_SECRET", "value": format!("{ns}:{SETTINGS_SECRET}") }] });
    let vault_cold_secs = cold_sync(
        env,
        client,
        ns,
        "bench-vault",
        "vault-",
        n,
        Some(plugin),
        log,
    )
    .await?;
    let (cold_reads, cold_logins) = (
        bao.audited_requests("kv/") - reads0,
        bao.audited_requests("auth/approle/login") - logins0,
    );
    // The values did arrive: every app's Secret holds what the store does.
    for a in [0, n / 2, n - 1] {
        let s = Api::<Secret>::namespaced(client.clone(), &format!("vault-{a}"))
            .get("credentials")
            .await?;
        let data = s.data.unwrap_or_default();
        let (p, k) = slot(a, 4);
        let got = data
            .get("password")
            .map(|b| String::from_utf8_lossy(&b.0).into_owned());
        if got.as_deref() != Some(value(p, k).as_str()) {
            bail!("vault-{a}: the Secret does not hold the store's value");
        }
    }
    eprintln!("secrets: cold sync of the same {n} applications with the values written in...");
    let plain_cold_secs = cold_sync(env, client, ns, "bench-plain", "plain-", n, None, log).await?;

    eprintln!("secrets: one steady-state pass over every app...");
    let (reads0, logins0) = (
        bao.audited_requests("kv/"),
        bao.audited_requests("auth/approle/login"),
    );
    let steady_apps = steady_pass().await?;
    Ok(Figures {
        apps: n,
        plain_cold_secs,
        vault_cold_secs,
        cold_reads,
        cold_logins,
        steady_reads: bao.audited_requests("kv/") - reads0,
        steady_logins: bao.audited_requests("auth/approle/login") - logins0,
        steady_apps,
    })
}

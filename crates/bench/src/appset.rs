//! An ApplicationSet over a repository of many directories: how long until every Application
//! exists, and what a generator pass with nothing changed costs the API server.

use anyhow::bail;
use ferry_testenv::TestEnv;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub const DIRS: usize = 500;
pub const REQUEUE_SECS: u64 = 5;
pub const STEADY_PASSES: u64 = 4;

pub struct Figures {
    pub create_secs: f64,
    pub steady_verbs: BTreeMap<String, f64>,
    pub steady_writes: f64,
}

pub async fn run(env: &TestEnv, client: &Client, ns: &str) -> anyhow::Result<Figures> {
    let src = tempfile::tempdir()?;
    for i in 0..DIRS {
        let d = src.path().join(format!("d-{i}"));
        std::fs::create_dir_all(&d)?;
        std::fs::write(
            d.join("cm.yaml"),
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fleet-{i}\ndata:\n  i: \"{i}\"\n"
            ),
        )?;
    }
    env.git.create_repo("bench-fleet")?;
    env.git.commit_dir("bench-fleet", src.path(), "fleet")?;
    let url = env.git.file_url("bench-fleet");
    let sets: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &kube::api::ApiResource::erase::<ferry_model::appset::ApplicationSet>(&()),
    );
    let apps: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &kube::api::ApiResource::erase::<ferry_model::Application>(&()),
    );
    let set = json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "ApplicationSet",
        "metadata": { "name": "fleet", "namespace": ns },
        "spec": {
            "generators": [{ "git": { "repoURL": url, "revision": "HEAD", "directories": [{ "path": "d-*" }], "requeueAfterSeconds": REQUEUE_SECS } }],
            "template": {
                "metadata": { "name": "fleet-{{path.basename}}" },
                "spec": { "project": "default",
                    "source": { "repoURL": url, "path": "{{path}}", "targetRevision": "HEAD" },
                    "destination": { "server": "https://kubernetes.default.svc", "namespace": "fleet" } },
            },
        },
    });
    // The apps' destination exists, so their compares succeed and settle (a missing namespace
    // would have them retry, and their requests fill the steady window).
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .patch(
            "fleet",
            &PatchParams::apply("bench"),
            &Patch::Apply(
                json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "fleet" } }),
            ),
        )
        .await?;
    let t = Instant::now();
    sets.patch("fleet", &PatchParams::apply("bench"), &Patch::Apply(&set))
        .await?;
    loop {
        let n = apps
            .list(&Default::default())
            .await?
            .items
            .iter()
            .filter(|a| {
                a.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with("fleet-"))
            })
            .count();
        if n >= DIRS {
            break;
        }
        if t.elapsed() > Duration::from_secs(600) {
            bail!("the ApplicationSet made {n} of {DIRS} Applications in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let create_secs = t.elapsed().as_secs_f64();
    // Let the new apps' first reconciles (status writes) finish.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut last = super::write_total(&super::request_counts(client).await?);
    let mut quiet = 0;
    while quiet < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = super::write_total(&super::request_counts(client).await?);
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
    }
    let before = super::request_counts(client).await?;
    tokio::time::sleep(Duration::from_secs(REQUEUE_SECS * STEADY_PASSES)).await;
    let after = super::request_counts(client).await?;
    let steady_verbs: BTreeMap<String, f64> = after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect();
    let steady_writes = super::write_total(&steady_verbs);
    // The later phases measure the run's own apps only.
    sets.delete("fleet", &kube::api::DeleteParams::foreground())
        .await?;
    let t = Instant::now();
    while apps.list(&Default::default()).await?.items.iter().any(|a| {
        a.metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with("fleet-"))
    }) {
        if t.elapsed() > Duration::from_secs(300) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(Figures {
        create_secs,
        steady_verbs,
        steady_writes,
    })
}

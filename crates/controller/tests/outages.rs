//! Outages of what Ferry depends on, each in the middle of its work: the API server stopped
//! and started again mid-sync, etcd frozen for 10 s, the Git server down during a fetch, the
//! registry down during a scan. This binary has its own control plane (one per test binary),
//! and the tests take turns: each outage would reach every test running beside it.

mod common;

use common::*;
use ferry_model::flux::{ImagePolicy, ImageRepository};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use std::time::Duration;

/// One outage at a time.
static OUTAGE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn configmap(name: &str, wave: i32, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  annotations:\n    argocd.argoproj.io/sync-wave: \"{wave}\"\ndata:\n  a: \"{value}\"\n"
    )
}

async fn value(h: &Harness, name: &str) -> Option<String> {
    let cm = Api::<ConfigMap>::namespaced(h.client.clone(), &h.dest)
        .get_opt(name)
        .await
        .ok()??;
    cm.data?.get("a").cloned()
}

/// The API server stops while a sync waits on wave 0 and starts again: the sync goes on
/// from its recorded state once the wave is healthy (one history entry), and the
/// controller's watches serve new work after the restart.
#[tokio::test]
async fn the_api_server_restarts_mid_sync() {
    let _turn = OUTAGE.lock().await;
    let h = harness_with("out-api", |c| c.wave_timeout = Duration::from_secs(300)).await;
    let docs = [held_deployment("held"), configmap("after", 1, "1")].join("---\n");
    let repo = new_repo("out-api", &[("app.yaml", &docs)]);
    h.apply_app(app(
        "across",
        &h.env.git.file_url(&repo),
        ".",
        &h.dest,
        json!({ "spec": { "syncPolicy": { "automated": {} } } }),
    ))
    .await;
    h.wait_app("across", "the sync to wait on wave 0", |a| {
        op_phase(a) == "Running" && op_message(a).starts_with("waiting for healthy state")
    })
    .await;

    h.env.cluster.stop_apiserver();
    h.idle(Duration::from_secs(3)).await;
    h.env.cluster.start_apiserver().await.unwrap();
    h.assert_running();

    // A fresh client: the old one's connections died with the server.
    let client = h.env.cluster.client().await.unwrap();
    h.make_ready(&client, "held").await;
    let done = h
        .wait_app("across", "the sync to finish after the restart", |a| {
            op_phase(a) != "Running"
        })
        .await;
    assert_eq!(op_phase(&done), "Succeeded", "{}", op_message(&done));
    assert_eq!(done.status.as_ref().map(|s| s.history.len()), Some(1));
    assert_eq!(value(&h, "after").await.as_deref(), Some("1"));

    // The Application watch came back: an app created now is synced.
    let repo = new_repo("out-api-new", &[("cm.yaml", &configmap("fresh", 0, "1"))]);
    h.apply_app(app(
        "created-after",
        &h.env.git.file_url(&repo),
        ".",
        &h.dest,
        json!({ "spec": { "syncPolicy": { "automated": {} } } }),
    ))
    .await;
    h.wait_synced_healthy("created-after").await;
    assert_eq!(value(&h, "fresh").await.as_deref(), Some("1"));
}

/// etcd frozen for 10 s while a commit lands: requests hang, nothing is pruned, and the
/// change is applied once etcd answers again.
#[tokio::test]
async fn etcd_paused_for_ten_seconds() {
    let _turn = OUTAGE.lock().await;
    let h = harness("out-etcd").await;
    let repo = new_repo(
        "out-etcd",
        &[
            ("a.yaml", &configmap("changing", 0, "1")),
            ("b.yaml", &configmap("steady", 0, "1")),
        ],
    );
    h.apply_app(app(
        "through-pause",
        &h.env.git.file_url(&repo),
        ".",
        &h.dest,
        json!({ "spec": { "syncPolicy": { "automated": { "prune": true } } } }),
    ))
    .await;
    h.wait_synced_healthy("through-pause").await;

    h.env.etcd().pause();
    commit(
        &repo,
        &[
            ("a.yaml", &configmap("changing", 0, "2")),
            ("b.yaml", &configmap("steady", 0, "1")),
        ],
    );
    // The controller polls Git every 3 s: its compares run into the frozen etcd.
    tokio::time::sleep(Duration::from_secs(10)).await;
    h.env.etcd().resume();
    h.assert_running();

    h.eventually("the commit to be applied after the pause", || async {
        (value(&h, "changing").await.as_deref() == Some("2")).then_some(())
    })
    .await;
    h.wait_synced_healthy("through-pause").await;
    assert_eq!(
        value(&h, "steady").await.as_deref(),
        Some("1"),
        "nothing pruned"
    );
}

/// The Git server is down when the app fetches: the app says so, its objects stay, nothing
/// is pruned; when the server is back the app is Synced again.
#[tokio::test]
async fn the_git_server_down_during_a_fetch() {
    let _turn = OUTAGE.lock().await;
    let h = harness("out-git").await;
    let repo = new_repo(
        "out-git",
        &[
            ("a.yaml", &configmap("one", 0, "1")),
            ("b.yaml", &configmap("two", 0, "1")),
        ],
    );
    let url = h.env.git.http_url(&repo);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "out-git-repo", "labels": { "argocd.argoproj.io/secret-type": "repository" } },
        "stringData": { "type": "git", "url": url, "username": h.env.git.user(), "password": h.env.git.password().expose() },
    }))
    .unwrap();
    Api::<Secret>::namespaced(h.client.clone(), &h.ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    h.apply_app(app(
        "fetching",
        &url,
        ".",
        &h.dest,
        json!({ "spec": { "syncPolicy": { "automated": { "prune": true, "selfHeal": true } } } }),
    ))
    .await;
    h.wait_synced_healthy("fetching").await;

    h.env.git.stop_http();
    // A new commit the controller cannot fetch, and a hard refresh that must fetch.
    commit(
        &repo,
        &[
            ("a.yaml", &configmap("one", 0, "2")),
            ("b.yaml", &configmap("two", 0, "1")),
        ],
    );
    h.apps()
        .patch(
            "fetching",
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "metadata": { "annotations": { "argocd.argoproj.io/refresh": "hard" } } }),
            ),
        )
        .await
        .unwrap();
    let down = h
        .wait_app("fetching", "the fetch failure to be reported", |a| {
            conditions(a).contains("ComparisonError")
        })
        .await;
    assert!(
        !conditions(&down).contains(h.env.git.password().expose()),
        "the password stays out of the condition"
    );
    h.idle(Duration::from_secs(3)).await;
    assert_eq!(value(&h, "one").await.as_deref(), Some("1"));
    assert_eq!(
        value(&h, "two").await.as_deref(),
        Some("1"),
        "nothing pruned"
    );

    h.env.git.start_http().await.unwrap();
    h.eventually("the commit to be applied once Git is back", || async {
        (value(&h, "one").await.as_deref() == Some("2")).then_some(())
    })
    .await;
    h.wait_synced_healthy("fetching").await;
    assert_eq!(value(&h, "two").await.as_deref(), Some("1"));
}

/// The registry is down during a scan: the ImageRepository says so (Ready False), the
/// ImagePolicy keeps its last tag; when the registry is back a new tag is picked up.
#[tokio::test]
async fn the_registry_down_during_a_scan() {
    let _turn = OUTAGE.lock().await;
    let h = harness("out-reg").await;
    let env = h.env;
    let image_repo = format!("{}/app", h.ns);
    let image = format!("{}/{image_repo}", env.registry.host);
    env.registry.push_image(&image_repo, "1.0.0").unwrap();
    let regcred: Secret = serde_json::from_value(json!({
        "metadata": { "name": "regcred" },
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": { ".dockerconfigjson": env.registry.docker_config_json().unwrap() },
    }))
    .unwrap();
    Api::<Secret>::namespaced(h.client.clone(), &h.ns)
        .create(&PostParams::default(), &regcred)
        .await
        .unwrap();
    h.apply(json!({
        "apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImageRepository",
        "metadata": { "name": "app", "namespace": h.ns },
        "spec": { "image": image, "interval": "2s", "insecure": true, "secretRef": { "name": "regcred" } },
    }))
    .await;
    h.apply(json!({
        "apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImagePolicy",
        "metadata": { "name": "app", "namespace": h.ns },
        "spec": { "imageRepositoryRef": { "name": "app" }, "policy": { "semver": { "range": ">=1.0.0" } } },
    }))
    .await;
    let policies: Api<ImagePolicy> = Api::namespaced(h.client.clone(), &h.ns);
    let repos: Api<ImageRepository> = Api::namespaced(h.client.clone(), &h.ns);
    let tag = || async {
        policies
            .get_opt("app")
            .await
            .ok()
            .flatten()
            .and_then(|p| p.status?.latest_ref.map(|r| r.tag))
    };
    h.eventually("the policy to pick 1.0.0", || async {
        (tag().await.as_deref() == Some("1.0.0")).then_some(())
    })
    .await;

    env.registry.stop();
    let message = h
        .eventually("the scan failure to be reported", || async {
            let r = repos.get("app").await.ok()?;
            let c = r
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready")?;
            (c.status == "False").then_some(c.message)
        })
        .await;
    assert!(
        !message.contains(env.registry.password().expose()),
        "the password stays out of the condition"
    );
    h.idle(Duration::from_secs(3)).await;
    assert_eq!(
        tag().await.as_deref(),
        Some("1.0.0"),
        "the policy keeps its tag"
    );

    env.registry.start_again().await.unwrap();
    env.registry.push_image(&image_repo, "1.1.0").unwrap();
    h.eventually(
        "the policy to pick 1.1.0 once the registry is back",
        || async { (tag().await.as_deref() == Some("1.1.0")).then_some(()) },
    )
    .await;
}

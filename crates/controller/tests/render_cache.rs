//! A commit that does not touch an app's path does not render it again.
//! Alone in its test binary: the render counter is per process.

mod common;

use common::*;
use serde_json::json;

fn cm(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  value: \"{value}\"\n"
    )
}

#[tokio::test]
async fn commits_elsewhere_do_not_re_render_an_app() {
    let h = harness("cache").await;
    let a = cm("a", "1");
    let b1 = cm("b", "1");
    let repo = new_repo("cache", &[("a/cm.yaml", &a), ("b/cm.yaml", &b1)]);
    let url = h.env.git.file_url(&repo);
    for name in ["a", "b"] {
        h.apply_app(json!({
            "metadata": { "name": format!("app-{name}") },
            "spec": {
                "project": "default",
                "source": { "repoURL": url, "path": name, "targetRevision": "main" },
                "destination": { "server": "https://kubernetes.default.svc", "namespace": h.dest },
                "syncPolicy": { "automated": { "prune": true } },
            },
        }))
        .await;
    }
    h.wait_synced_healthy("app-a").await;
    h.wait_synced_healthy("app-b").await;
    let before = ferry_controller::render_count();

    // Only b/ changes.
    let b2 = cm("b", "2");
    let sha = commit(&repo, &[("a/cm.yaml", &a), ("b/cm.yaml", &b2)]);
    h.refresh("app-a").await;
    h.refresh("app-b").await;
    let at_new_commit = |a: &ferry_model::Application| {
        a.status
            .as_ref()
            .and_then(|s| s.sync.as_ref())
            .and_then(|s| s.revision.clone())
            .as_deref()
            == Some(sha.as_str())
            && sync_status(a) == "Synced"
    };
    h.wait_app("app-a", "compared at the new commit", at_new_commit)
        .await;
    h.wait_app("app-b", "synced at the new commit", at_new_commit)
        .await;
    assert_eq!(
        ferry_controller::render_count() - before,
        1,
        "only app-b's path changed"
    );

    // A hard refresh renders again even without a change.
    let patch = json!({ "metadata": { "annotations": { "argocd.argoproj.io/refresh": "hard" } } });
    h.apps()
        .patch(
            "app-a",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    h.eventually("the hard refresh to render", || async {
        (ferry_controller::render_count() - before == 2).then_some(())
    })
    .await;
}

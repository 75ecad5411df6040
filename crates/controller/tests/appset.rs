//! ApplicationSets end to end on the test environment: a matrix of Git directories and clusters
//! (the second API server through its cluster Secret) whose Applications deliver to both
//! clusters; a cluster Secret added and removed under create-delete and create-only; a
//! generator error (goTemplate with missingkey=error) that leaves existing Applications alone.

mod common;

use common::*;
use ferry_model::Application;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

fn sets(h: &Harness) -> Api<DynamicObject> {
    Api::namespaced_with(
        h.client.clone(),
        &h.ns,
        &kube::api::ApiResource::erase::<ferry_model::appset::ApplicationSet>(&()),
    )
}

async fn apply_set(h: &Harness, set: Value) {
    let name = set["metadata"]["name"].as_str().unwrap().to_string();
    let mut set = set;
    set["apiVersion"] = json!("argoproj.io/v1alpha1");
    set["kind"] = json!("ApplicationSet");
    sets(h)
        .patch(
            &name,
            &PatchParams::apply("test").force(),
            &Patch::Apply(&set),
        )
        .await
        .unwrap();
}

async fn generated(h: &Harness, set: &str) -> Vec<String> {
    let set_obj = sets(h).get(set).await.unwrap();
    let uid = set_obj.uid().unwrap();
    let mut names: Vec<String> = h
        .apps()
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|a: &Application| {
            a.owner_references()
                .iter()
                .any(|o| o.uid == uid && o.controller == Some(true))
        })
        .map(|a| a.name_any())
        .collect();
    names.sort();
    names
}

async fn condition(h: &Harness, set: &str, type_: &str) -> (String, String) {
    let s = sets(h).get(set).await.unwrap();
    s.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .unwrap_or_default()
}

fn cm(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  k: v\n")
}

#[tokio::test]
async fn a_matrix_of_git_directories_and_clusters_delivers_to_both_clusters() {
    let h = harness("appset-matrix").await;
    h.register_cluster2("second", json!({ "env": "remote" }))
        .await;
    let repo = new_repo(
        "appset-matrix",
        &[
            ("apps/alpha/cm.yaml", &cm("alpha")),
            ("apps/beta/cm.yaml", &cm("beta")),
            ("apps/skip/cm.yaml", &cm("skip")),
        ],
    );
    let url = h.env.git.file_url(&repo);
    // The destination namespace exists on both clusters.
    let remote = h.env.cluster2().client().await.unwrap();
    let ns_api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(remote.clone());
    let _ = ns_api
        .create(
            &Default::default(),
            &serde_json::from_value(json!({ "metadata": { "name": h.dest } })).unwrap(),
        )
        .await;
    apply_set(
        &h,
        json!({
            "metadata": { "name": "matrix" },
            "spec": {
                "generators": [{ "matrix": { "generators": [
                    { "git": { "repoURL": url, "revision": "HEAD", "directories": [{ "path": "apps/*" }, { "path": "apps/skip", "exclude": true }] } },
                    { "clusters": {} },
                ] } }],
                "template": {
                    "metadata": { "name": "{{path.basename}}-{{nameNormalized}}", "labels": { "cluster": "{{name}}" } },
                    "spec": { "project": "default",
                        "source": { "repoURL": url, "path": "{{path}}", "targetRevision": "HEAD" },
                        "destination": { "server": "{{server}}", "namespace": h.dest },
                        "syncPolicy": { "automated": {} } },
                },
            },
        }),
    )
    .await;
    let want = [
        "alpha-in-cluster",
        "alpha-second",
        "beta-in-cluster",
        "beta-second",
    ];
    h.eventually("the four Applications", || async {
        (generated(&h, "matrix").await == want).then_some(())
    })
    .await;
    for name in want {
        h.wait_synced_healthy(name).await;
    }
    let local: Api<ConfigMap> = Api::namespaced(h.client.clone(), &h.dest);
    let far: Api<ConfigMap> = Api::namespaced(remote, &h.dest);
    for n in ["alpha", "beta"] {
        assert!(
            local.get_opt(n).await.unwrap().is_some(),
            "{n} on the local cluster"
        );
        assert!(
            far.get_opt(n).await.unwrap().is_some(),
            "{n} on the second cluster"
        );
    }
    assert!(
        local.get_opt("skip").await.unwrap().is_none(),
        "the excluded directory"
    );
    h.eventually("status.resources with each app's health", || async {
        let s = sets(&h).get("matrix").await.unwrap();
        let res = s.data["status"]["resources"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        (res.len() == 4
            && res
                .iter()
                .all(|r| r["health"]["status"] == "Healthy" && r["status"] == "Synced"))
        .then_some(())
    })
    .await;
    assert_eq!(condition(&h, "matrix", "ResourcesUpToDate").await.0, "True");

    // Deleting the set deletes its Applications (owner references), and they their objects.
    sets(&h)
        .delete("matrix", &DeleteParams::foreground())
        .await
        .unwrap();
    h.eventually("the generated Applications gone", || async {
        let left = h
            .apps()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .len();
        (left == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn cluster_secrets_added_and_removed_under_create_delete_and_create_only() {
    let h = harness("appset-clusters").await;
    let template = |name: &str| {
        json!({
            "metadata": { "name": format!("{name}-{{{{name}}}}") },
            "spec": { "project": "default",
                "source": { "repoURL": "https://git.example/unused.git", "path": "p", "targetRevision": "HEAD" },
                "destination": { "server": "{{server}}", "namespace": "x" } },
        })
    };
    for (name, policy) in [("cd", "create-delete"), ("co", "create-only")] {
        apply_set(
            &h,
            json!({
                "metadata": { "name": name },
                "spec": {
                    "generators": [{ "clusters": { "selector": { "matchLabels": { "env": "remote" } } } }],
                    "template": template(name),
                    "syncPolicy": { "applicationsSync": policy },
                },
            }),
        )
        .await;
    }
    h.eventually("both sets up to date with no apps", || async {
        (condition(&h, "cd", "ResourcesUpToDate").await.0 == "True"
            && condition(&h, "co", "ResourcesUpToDate").await.0 == "True")
            .then_some(())
    })
    .await;
    assert!(
        generated(&h, "cd").await.is_empty(),
        "a selector leaves the local cluster out"
    );
    h.register_cluster2("second", json!({ "env": "remote" }))
        .await;
    h.eventually("an app per set for the new cluster", || async {
        (generated(&h, "cd").await == ["cd-second"] && generated(&h, "co").await == ["co-second"])
            .then_some(())
    })
    .await;
    Api::<Secret>::namespaced(h.client.clone(), &h.ns)
        .delete("second", &Default::default())
        .await
        .unwrap();
    h.eventually("create-delete removes its app", || async {
        generated(&h, "cd").await.is_empty().then_some(())
    })
    .await;
    assert_eq!(
        generated(&h, "co").await,
        ["co-second"],
        "create-only keeps its app"
    );
}

#[tokio::test]
async fn a_template_error_leaves_the_generated_applications_alone() {
    let h = harness("appset-error").await;
    let set = |elements: Value| {
        json!({
            "metadata": { "name": "go" },
            "spec": {
                "goTemplate": true,
                "goTemplateOptions": ["missingkey=error"],
                "generators": [{ "list": { "elements": elements } }],
                "template": {
                    "metadata": { "name": "app-{{.name}}" },
                    "spec": { "project": "default",
                        "source": { "repoURL": "https://git.example/unused.git", "path": "{{.path}}", "targetRevision": "HEAD" },
                        "destination": { "server": "https://kubernetes.default.svc", "namespace": "x" } },
                },
            },
        })
    };
    apply_set(
        &h,
        set(json!([{ "name": "a", "path": "pa" }, { "name": "b", "path": "pb" }])),
    )
    .await;
    h.eventually("two apps", || async {
        (generated(&h, "go").await == ["app-a", "app-b"]).then_some(())
    })
    .await;
    // One element loses its path: with missingkey=error the set errors and changes nothing.
    apply_set(
        &h,
        set(json!([{ "name": "a", "path": "pa2" }, { "name": "b" }])),
    )
    .await;
    let message = h
        .eventually("the error in the set's conditions", || async {
            let (status, message) = condition(&h, "go", "ErrorOccurred").await;
            (status == "True").then_some(message)
        })
        .await;
    assert!(
        message.contains("map has no entry for key \"path\""),
        "{message}"
    );
    assert_eq!(condition(&h, "go", "ResourcesUpToDate").await.0, "False");
    assert_eq!(
        generated(&h, "go").await,
        ["app-a", "app-b"],
        "nothing deleted"
    );
    let a = h.apps().get("app-a").await.unwrap();
    assert_eq!(
        a.spec.source.unwrap().path.as_deref(),
        Some("pa"),
        "nothing updated"
    );
    // Fixed: the set converges (policy sync): app-a updated, app-b deleted.
    apply_set(&h, set(json!([{ "name": "a", "path": "pa2" }]))).await;
    h.eventually("the set converged", || async {
        let a = h.apps().get("app-a").await.ok()?;
        (generated(&h, "go").await == ["app-a"] && a.spec.source?.path.as_deref() == Some("pa2"))
            .then_some(())
    })
    .await;
    assert_eq!(condition(&h, "go", "ErrorOccurred").await.0, "False");
}

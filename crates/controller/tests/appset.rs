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

/// A loopback stand-in for GitHub's and Gitea's pull request endpoints (no forge runs here):
/// the open pull requests it serves can change while the test runs. GitHub's answer needs the
/// token, as a private repository's does.
async fn forge_stand_in(prs: std::sync::Arc<std::sync::Mutex<Value>>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let prs = prs.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let target = req
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_string();
                let authorized = req
                    .lines()
                    .any(|l| l.eq_ignore_ascii_case("authorization: Bearer t0ken"));
                let (status, body) = if target.starts_with("/repos/o/r/pulls") && !authorized {
                    ("401 Unauthorized", json!({ "message": "Bad credentials" }))
                } else if (target.starts_with("/repos/o/r/pulls")
                    || target.starts_with("/api/v1/repos/o/r/pulls"))
                    && target.ends_with("&page=1")
                {
                    ("200 OK", prs.lock().unwrap().clone())
                } else if target.contains("/pulls") {
                    ("200 OK", json!([]))
                } else {
                    ("404 Not Found", json!({}))
                };
                let body = body.to_string();
                let _ = conn
                    .write_all(format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).as_bytes())
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn pull_requests_opened_and_closed_create_and_delete_preview_apps() {
    let h = harness("appset-pr").await;
    let prs = std::sync::Arc::new(std::sync::Mutex::new(json!([])));
    let api = forge_stand_in(prs.clone()).await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "forge-token" }, "stringData": { "token": "t0ken" },
    }))
    .unwrap();
    Api::<Secret>::namespaced(h.client.clone(), &h.ns)
        .create(&Default::default(), &secret)
        .await
        .unwrap();
    for (name, forge) in [
        (
            "gh",
            json!({ "github": { "owner": "o", "repo": "r", "api": api, "tokenRef": { "secretName": "forge-token", "key": "token" }, "labels": ["preview"] } }),
        ),
        (
            "gt",
            json!({ "gitea": { "owner": "o", "repo": "r", "api": api } }),
        ),
    ] {
        let mut generator = forge;
        generator["requeueAfterSeconds"] = json!(1);
        apply_set(
            &h,
            json!({
                "metadata": { "name": name },
                "spec": {
                    "generators": [{ "pullRequest": generator }],
                    "template": {
                        "metadata": { "name": format!("{name}-{{{{number}}}}-{{{{branch_slug}}}}") },
                        "spec": { "project": "default",
                            "source": { "repoURL": "https://git.example/app.git", "path": "deploy", "targetRevision": "{{head_sha}}" },
                            "destination": { "server": "https://kubernetes.default.svc", "namespace": "pr-{{number}}" } },
                    },
                },
            }),
        )
        .await;
    }
    h.eventually("both sets up to date", || async {
        (condition(&h, "gh", "ResourcesUpToDate").await.0 == "True"
            && condition(&h, "gt", "ResourcesUpToDate").await.0 == "True")
            .then_some(())
    })
    .await;
    *prs.lock().unwrap() = json!([
        { "number": 3, "state": "open", "title": "x", "head": { "ref": "feature/New_X", "sha": "0123456789abcdef0123" },
          "base": { "ref": "main" }, "labels": [{ "name": "preview" }], "user": { "login": "ann" } },
        { "number": 4, "state": "open", "title": "y", "head": { "ref": "no-label", "sha": "aaaaaaaaaaaaaaaa" },
          "base": { "ref": "main" }, "labels": [], "user": { "login": "bob" } },
    ]);
    h.eventually("preview apps for the opened pull requests", || async {
        (generated(&h, "gh").await == ["gh-3-feature-new-x"]
            && generated(&h, "gt").await == ["gt-3-feature-new-x", "gt-4-no-label"])
        .then_some(())
    })
    .await;
    let a = h.apps().get("gh-3-feature-new-x").await.unwrap();
    assert_eq!(
        a.spec.source.unwrap().target_revision.as_deref(),
        Some("0123456789abcdef0123")
    );
    *prs.lock().unwrap() = json!([]);
    h.eventually(
        "preview apps deleted once their pull requests closed",
        || async {
            (generated(&h, "gh").await.is_empty() && generated(&h, "gt").await.is_empty())
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn git_files_merged_with_a_list_by_key() {
    let h = harness("appset-files").await;
    let repo = new_repo(
        "appset-files",
        &[
            (
                "envs/dev/config.yaml",
                "env: dev\nreplicas: \"1\"\nregion: eu\n",
            ),
            (
                "envs/prod/config.yaml",
                "env: prod\nreplicas: \"3\"\nregion: us\n",
            ),
            ("envs/prod/notes.txt", "not a config\n"),
        ],
    );
    let url = h.env.git.file_url(&repo);
    apply_set(
        &h,
        json!({
            "metadata": { "name": "files" },
            "spec": {
                "generators": [{ "merge": { "mergeKeys": ["env"], "generators": [
                    { "git": { "repoURL": url, "revision": "HEAD", "files": [{ "path": "envs/*/config.yaml" }] } },
                    { "list": { "elements": [{ "env": "prod", "replicas": "5" }] } },
                ] } }],
                "template": {
                    "metadata": { "name": "web-{{env}}", "labels": { "region": "{{region}}", "replicas": "{{replicas}}" } },
                    "spec": { "project": "default",
                        "source": { "repoURL": url, "path": "{{path}}", "targetRevision": "HEAD" },
                        "destination": { "server": "https://kubernetes.default.svc", "namespace": "{{env}}" } },
                },
            },
        }),
    )
    .await;
    h.eventually("an app per config file", || async {
        (generated(&h, "files").await == ["web-dev", "web-prod"]).then_some(())
    })
    .await;
    let prod = h.apps().get("web-prod").await.unwrap();
    let labels = prod.labels();
    assert_eq!(
        labels.get("replicas").map(String::as_str),
        Some("5"),
        "the list overrides the file"
    );
    assert_eq!(labels.get("region").map(String::as_str), Some("us"));
    assert_eq!(prod.spec.source.unwrap().path.as_deref(), Some("envs/prod"));
    let dev = h.apps().get("web-dev").await.unwrap();
    assert_eq!(dev.labels().get("replicas").map(String::as_str), Some("1"));
}

//! The engine end to end: real Git server, real API servers, real controllers.

mod common;

use common::*;
use ferry_model::Application;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

fn examples(dir: &str) -> Vec<(String, String)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(dir);
    let mut files = Vec::new();
    copy_dir(&root, &mut files, "");
    files
}

fn refs(files: &[(String, String)]) -> Vec<(&str, &str)> {
    files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect()
}

async fn configmap_value(h: &Harness, ns: &str, name: &str, key: &str) -> Option<String> {
    let api: Api<ConfigMap> = Api::namespaced(h.client.clone(), ns);
    api.get_opt(name).await.ok()??.data?.get(key).cloned()
}

#[tokio::test]
async fn message_app_follows_git_over_http_with_credentials() {
    let h = harness("msg").await;
    let files = examples("message-app");
    let repo = new_repo("message-app", &refs(&files));
    let url = h.env.git.http_url(&repo);
    // Repository credentials, as Argo CD users declare them.
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "message-app-repo", "labels": { "argocd.argoproj.io/secret-type": "repository" } },
        "stringData": { "type": "git", "url": url, "username": h.env.git.user(), "password": h.env.git.password().expose() },
    }))
    .unwrap();
    Api::<Secret>::namespaced(h.client.clone(), &h.ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    h.apply_app(app("message-app", &url, ".", &h.dest, automated()))
        .await;
    let a = h.wait_synced_healthy("message-app").await;
    let st = a.status.unwrap();
    assert_eq!(st.resources.len(), 3, "{:?}", st.resources);
    assert_eq!(
        st.sync.unwrap().revision.as_deref(),
        Some(h.env.git.head(&repo).unwrap().as_str())
    );
    assert_eq!(
        configmap_value(&h, &h.dest, "message-app-config", "MESSAGE")
            .await
            .as_deref(),
        Some("Hello from Ferry")
    );
    let dep = Api::<Deployment>::namespaced(h.client.clone(), &h.dest)
        .get("message-app")
        .await
        .unwrap();
    assert_eq!(dep.status.unwrap().available_replicas, Some(2));
    let tracking = dep.metadata.annotations.unwrap()["argocd.argoproj.io/tracking-id"].clone();
    assert_eq!(
        tracking,
        format!("message-app:apps/Deployment:{}/message-app", h.dest)
    );

    // A commit changing the message is applied by the automated sync.
    let changed: Vec<(String, String)> = files
        .iter()
        .map(|(p, c)| (p.clone(), c.replace("Hello from Ferry", "Hello again")))
        .collect();
    let sha = commit(&repo, &refs(&changed));
    h.eventually("the new message in the cluster", || async {
        (configmap_value(&h, &h.dest, "message-app-config", "MESSAGE")
            .await
            .as_deref()
            == Some("Hello again"))
        .then_some(())
    })
    .await;
    let a = h
        .wait_app("message-app", "synced at the new commit", |a| {
            sync_status(a) == "Synced"
                && a.status
                    .as_ref()
                    .and_then(|s| s.sync.as_ref())
                    .and_then(|s| s.revision.clone())
                    .as_deref()
                    == Some(sha.as_str())
        })
        .await;
    assert_eq!(a.status.unwrap().history.len(), 2);
}

#[tokio::test]
async fn self_heal_reverts_a_manual_edit_and_prune_removes_what_left_git() {
    let h = harness("heal").await;
    let files = examples("message-app");
    let repo = new_repo("heal", &refs(&files));
    h.apply_app(app(
        "heal",
        &h.env.git.file_url(&repo),
        ".",
        &h.dest,
        automated(),
    ))
    .await;
    h.wait_synced_healthy("heal").await;

    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), &h.dest);
    let edit = json!({ "data": { "MESSAGE": "tampered" } });
    cms.patch(
        "message-app-config",
        &PatchParams::default(),
        &Patch::Merge(&edit),
    )
    .await
    .unwrap();
    h.eventually("self-heal to restore the message", || async {
        (configmap_value(&h, &h.dest, "message-app-config", "MESSAGE")
            .await
            .as_deref()
            == Some("Hello from Ferry"))
        .then_some(())
    })
    .await;

    let without_service: Vec<(String, String)> = files
        .iter()
        .filter(|(p, _)| p != "service.yaml")
        .cloned()
        .collect();
    commit(&repo, &refs(&without_service));
    let svcs: Api<Service> = Api::namespaced(h.client.clone(), &h.dest);
    h.eventually("the Service to be pruned", || async {
        svcs.get_opt("message-app")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let a = h.wait_synced_healthy("heal").await;
    assert_eq!(a.status.unwrap().resources.len(), 2);
}

#[tokio::test]
async fn helm_app_uses_per_environment_values_files() {
    let h = harness("helm").await;
    let repo = new_repo("helm", &refs(&examples("helm")));
    let url = h.env.git.file_url(&repo);
    for (env_name, file, replicas) in [
        ("staging", "values-staging.yaml", 1),
        ("prod", "values-prod.yaml", 3),
    ] {
        let extra = json!({ "spec": {
            "source": { "helm": { "valueFiles": [file], "releaseName": env_name } },
            "syncPolicy": { "automated": {} },
        }});
        h.apply_app(app(
            &format!("guestbook-{env_name}"),
            &url,
            "guestbook",
            &h.dest,
            extra,
        ))
        .await;
        let a = h
            .wait_synced_healthy(&format!("guestbook-{env_name}"))
            .await;
        assert_eq!(a.status.unwrap().source_type.as_deref(), Some("Helm"));
        let dep = Api::<Deployment>::namespaced(h.client.clone(), &h.dest)
            .get(&format!("{env_name}-guestbook"))
            .await
            .unwrap();
        assert_eq!(dep.spec.replicas, Some(replicas));
    }
    assert_eq!(
        configmap_value(&h, &h.dest, "prod-settings", "environment")
            .await
            .as_deref(),
        Some("production")
    );
    // Helm saw what the destination serves.
    assert_eq!(
        configmap_value(&h, &h.dest, "prod-settings", "has-apps-v1")
            .await
            .as_deref(),
        Some("true")
    );
    assert_eq!(
        configmap_value(&h, &h.dest, "staging-settings", "environment")
            .await
            .as_deref(),
        Some("staging")
    );
}

#[tokio::test]
async fn kustomize_overlay_is_built_and_applied() {
    let h = harness("kust").await;
    let repo = new_repo("kust", &refs(&examples("kustomize")));
    let extra = json!({ "spec": { "syncPolicy": { "automated": { "prune": true } } } });
    h.apply_app(app(
        "web-staging",
        &h.env.git.file_url(&repo),
        "overlays/staging",
        &h.dest,
        extra,
    ))
    .await;
    let a = h.wait_synced_healthy("web-staging").await;
    assert_eq!(a.status.unwrap().source_type.as_deref(), Some("Kustomize"));
    let dep = Api::<Deployment>::namespaced(h.client.clone(), &h.dest)
        .get("staging-web")
        .await
        .unwrap();
    assert_eq!(dep.spec.replicas, Some(2));
    assert_eq!(dep.metadata.labels.unwrap()["env"], "staging");
    let cms = Api::<ConfigMap>::namespaced(h.client.clone(), &h.dest)
        .list(&Default::default())
        .await
        .unwrap();
    let cm = cms
        .items
        .iter()
        .find(|c| {
            c.metadata
                .name
                .as_deref()
                .unwrap_or_default()
                .starts_with("staging-web-config-")
        })
        .unwrap();
    assert_eq!(cm.data.as_ref().unwrap()["GREETING"], "hello-staging");
}

#[tokio::test]
async fn plugin_app_gets_env_passed_the_plugin_env_way() {
    let h = harness("cmp").await;
    let plugin = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/plugins/envsubst.yaml"),
    )
    .unwrap();
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": "cmp-envsubst", "labels": { ferry_controller::PLUGIN_CONFIGMAP_LABEL: "true" } },
        "data": { "plugin.yaml": plugin },
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(h.client.clone(), &h.ns)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    let repo = new_repo("cmp", &refs(&examples("plugin")));
    let extra = json!({ "spec": {
        "source": { "plugin": { "name": "envsubst", "env": [
            { "name": "IMAGE_NAME", "value": "registry.local/team/app" },
            { "name": "IMAGE_TAG", "value": "1.4.2" },
        ] } },
        "syncPolicy": { "automated": {} },
    }});
    h.apply_app(app(
        "cmp-app",
        &h.env.git.file_url(&repo),
        ".",
        &h.dest,
        extra,
    ))
    .await;
    let a = h.wait_synced_healthy("cmp-app").await;
    assert_eq!(a.status.unwrap().source_type.as_deref(), Some("Plugin"));
    assert_eq!(
        configmap_value(&h, &h.dest, "plugin-rendered", "image")
            .await
            .as_deref(),
        Some("registry.local/team/app:1.4.2")
    );
    assert_eq!(
        configmap_value(&h, &h.dest, "plugin-rendered", "app")
            .await
            .as_deref(),
        Some("cmp-app")
    );
}

#[tokio::test]
async fn waves_and_hooks_run_in_order() {
    let h = harness("waves").await;
    let repo = new_repo("waves", &refs(&examples("waves")));
    h.apply_app(app(
        "waves",
        &h.env.git.file_url(&repo),
        ".",
        &h.dest,
        json!({ "spec": { "syncPolicy": { "automated": {} } } }),
    ))
    .await;
    // The hooks and waves take a while: the sync shows as Running meanwhile.
    let running = h
        .wait_app("waves", "the sync to show as Running", |a| {
            op_phase(a) == "Running" || op_phase(a) == "Succeeded"
        })
        .await;
    assert_eq!(op_phase(&running), "Running", "never saw the Running phase");
    assert!(
        running
            .status
            .as_ref()
            .and_then(|s| s.operation_state.as_ref())
            .and_then(|o| o.started_at.as_ref())
            .is_some()
    );
    let a = h
        .wait_app("waves", "the sync to succeed", |a| {
            op_phase(a) == "Succeeded"
        })
        .await;
    let results = a
        .status
        .unwrap()
        .operation_state
        .unwrap()
        .sync_result
        .unwrap()
        .resources;
    let order: Vec<(String, String)> = results
        .iter()
        .map(|r| {
            // The PostSync hook uses generateName: a fresh name each sync.
            let name = if r.name.starts_with("smoke-test-") {
                "smoke-test-*".to_string()
            } else {
                r.name.clone()
            };
            (r.sync_phase.clone(), name)
        })
        .collect();
    assert_eq!(
        order,
        [
            ("PreSync", "migrate"),
            ("Sync", "settings"),
            ("Sync", "backend"),
            ("Sync", "frontend"),
            ("PostSync", "smoke-test-*")
        ]
        .map(|(p, n)| (p.to_string(), n.to_string()))
    );
    // The backend wave finished (became available) before the frontend was created.
    let deps: Api<Deployment> = Api::namespaced(h.client.clone(), &h.dest);
    let backend = deps.get("backend").await.unwrap();
    let frontend = deps.get("frontend").await.unwrap();
    let available_at = backend
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_.as_deref() == Some("Available"))
        .unwrap()
        .last_transition_time
        .unwrap();
    assert!(frontend.metadata.creation_timestamp.unwrap().0 >= available_at.0);
    let jobs: Api<Job> = Api::namespaced(h.client.clone(), &h.dest);
    assert!(
        jobs.get_opt("migrate").await.unwrap().is_some(),
        "BeforeHookCreation keeps the hook"
    );
    h.eventually("the HookSucceeded hook to be deleted", || async {
        let left = jobs
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|j| {
                j.metadata
                    .name
                    .as_deref()
                    .unwrap_or_default()
                    .starts_with("smoke-test-")
            })
            .count();
        (left == 0).then_some(())
    })
    .await;
    h.wait_synced_healthy("waves").await;
}

#[tokio::test]
async fn deleting_with_the_finalizer_cascades_and_without_it_keeps_resources() {
    let h = harness("fin").await;
    let repo = new_repo("fin", &refs(&examples("message-app")));
    let url = h.env.git.file_url(&repo);
    let other = h
        .env
        .cluster
        .create_namespace(&h.client, "fin-keep")
        .await
        .unwrap();
    let with = json!({ "metadata": { "finalizers": ["resources-finalizer.argocd.argoproj.io"] }, "spec": { "syncPolicy": { "automated": {} } } });
    h.apply_app(app("cascade", &url, ".", &h.dest, with)).await;
    h.apply_app(app("keep", &url, ".", &other, automated()))
        .await;
    h.wait_synced_healthy("cascade").await;
    h.wait_synced_healthy("keep").await;

    h.apps()
        .delete("cascade", &DeleteParams::default())
        .await
        .unwrap();
    h.apps()
        .delete("keep", &DeleteParams::default())
        .await
        .unwrap();
    let deps_cascade: Api<Deployment> = Api::namespaced(h.client.clone(), &h.dest);
    h.eventually("cascade's resources and app to be gone", || async {
        let gone = deps_cascade.get_opt("message-app").await.unwrap().is_none()
            && configmap_value(&h, &h.dest, "message-app-config", "MESSAGE")
                .await
                .is_none()
            && h.apps().get_opt("cascade").await.unwrap().is_none();
        gone.then_some(())
    })
    .await;
    assert!(h.apps().get_opt("keep").await.unwrap().is_none());
    h.idle(Duration::from_secs(3)).await;
    assert!(
        Api::<Deployment>::namespaced(h.client.clone(), &other)
            .get_opt("message-app")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        configmap_value(&h, &other, "message-app-config", "MESSAGE")
            .await
            .as_deref(),
        Some("Hello from Ferry")
    );
}

async fn request_sync(h: &Harness, name: &str, sync: Value) {
    let patch = json!({ "operation": { "sync": sync, "initiatedBy": { "username": "test" } } });
    h.apps()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

#[tokio::test]
async fn rollback_to_a_history_id() {
    let h = harness("rb").await;
    let files = examples("message-app");
    let repo = new_repo("rb", &refs(&files));
    h.apply_app(app(
        "rb",
        &h.env.git.file_url(&repo),
        ".",
        &h.dest,
        json!({}),
    ))
    .await;
    // No automated policy: nothing happens until asked.
    h.wait_app("rb", "OutOfSync", |a| sync_status(a) == "OutOfSync")
        .await;
    request_sync(&h, "rb", json!({ "revision": "main" })).await;
    h.wait_app("rb", "first sync", |a| {
        a.status.as_ref().is_some_and(|s| s.history.len() == 1) && a.operation.is_none()
    })
    .await;
    let v2: Vec<(String, String)> = files
        .iter()
        .map(|(p, c)| (p.clone(), c.replace("Hello from Ferry", "Version two")))
        .collect();
    commit(&repo, &refs(&v2));
    h.refresh("rb").await;
    h.wait_app("rb", "OutOfSync after the commit", |a| {
        sync_status(a) == "OutOfSync"
    })
    .await;
    request_sync(&h, "rb", json!({ "revision": "main" })).await;
    let a: Application = h
        .wait_app("rb", "second sync", |a| {
            a.status.as_ref().is_some_and(|s| s.history.len() == 2) && a.operation.is_none()
        })
        .await;
    assert_eq!(
        configmap_value(&h, &h.dest, "message-app-config", "MESSAGE")
            .await
            .as_deref(),
        Some("Version two")
    );

    // Roll back to history id 0, the way `argocd app rollback rb 0` asks for it.
    let first = a
        .status
        .unwrap()
        .history
        .into_iter()
        .find(|x| x.id == 0)
        .unwrap();
    request_sync(
        &h,
        "rb",
        json!({ "revision": first.revision, "source": first.source }),
    )
    .await;
    h.eventually("the first version to be back", || async {
        (configmap_value(&h, &h.dest, "message-app-config", "MESSAGE")
            .await
            .as_deref()
            == Some("Hello from Ferry"))
        .then_some(())
    })
    .await;
    let a = h
        .wait_app("rb", "rollback recorded", |a| {
            a.status.as_ref().is_some_and(|s| s.history.len() == 3) && a.operation.is_none()
        })
        .await;
    assert_eq!(a.status.unwrap().history[2].revision, first.revision);
}

#[tokio::test]
async fn project_violation_is_refused_with_a_clear_condition() {
    let h = harness("proj").await;
    h.apply(json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "AppProject",
        "metadata": { "name": "team-a", "namespace": h.ns },
        "spec": { "sourceRepos": ["*"], "destinations": [{ "server": "*", "namespace": "team-a-*" }] },
    }))
    .await;
    let repo = new_repo("proj", &refs(&examples("message-app")));
    let extra = json!({ "spec": { "project": "team-a", "syncPolicy": { "automated": {} } } });
    h.apply_app(app(
        "forbidden",
        &h.env.git.file_url(&repo),
        ".",
        &h.dest,
        extra,
    ))
    .await;
    let a = h
        .wait_app("forbidden", "an InvalidSpecError", |a| {
            conditions(a).contains("InvalidSpecError")
        })
        .await;
    let msg = conditions(&a);
    assert!(
        msg.contains(&format!("namespace '{}'", h.dest)) && msg.contains("project 'team-a'"),
        "{msg}"
    );
    assert_eq!(
        configmap_value(&h, &h.dest, "message-app-config", "MESSAGE").await,
        None
    );
}

#[tokio::test]
async fn unreachable_repo_leaves_resources_untouched() {
    let h = harness("unreach").await;
    let repo = new_repo("unreach", &refs(&examples("message-app")));
    h.apply_app(app(
        "unreach",
        &h.env.git.file_url(&repo),
        ".",
        &h.dest,
        automated(),
    ))
    .await;
    h.wait_synced_healthy("unreach").await;
    h.apply_app(app(
        "unreach",
        "http://127.0.0.1:1/gone.git",
        ".",
        &h.dest,
        automated(),
    ))
    .await;
    let a = h
        .wait_app("unreach", "a ComparisonError", |a| {
            conditions(a).contains("ComparisonError")
        })
        .await;
    assert!(conditions(&a).contains("127.0.0.1:1"), "{}", conditions(&a));
    assert_eq!(sync_status(&a), "Unknown");
    // Several polls later everything is still there.
    h.idle(Duration::from_secs(8)).await;
    assert_eq!(
        configmap_value(&h, &h.dest, "message-app-config", "MESSAGE")
            .await
            .as_deref(),
        Some("Hello from Ferry")
    );
    assert!(
        Api::<Service>::namespaced(h.client.clone(), &h.dest)
            .get_opt("message-app")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        h.apps()
            .get("unreach")
            .await
            .unwrap()
            .status
            .unwrap()
            .resources
            .len(),
        3
    );
}

#[tokio::test]
async fn app_on_the_second_cluster_through_a_cluster_secret() {
    let h = harness("c2").await;
    let c2 = h.env.cluster2();
    h.register_cluster2("cluster-two", json!({})).await;
    let repo = new_repo("c2", &refs(&examples("message-app")));
    let target_ns = format!("{}-remote", h.ns);
    let extra = json!({ "spec": {
        "destination": { "server": Value::Null, "name": "cluster-two", "namespace": target_ns },
        "syncPolicy": { "automated": {}, "syncOptions": ["CreateNamespace=true"] },
    }});
    h.apply_app(app(
        "remote",
        &h.env.git.file_url(&repo),
        ".",
        &target_ns,
        extra,
    ))
    .await;
    h.wait_synced_healthy("remote").await;
    let client2 = c2.client().await.unwrap();
    let cm = Api::<ConfigMap>::namespaced(client2, &target_ns)
        .get("message-app-config")
        .await
        .unwrap();
    assert_eq!(cm.data.unwrap()["MESSAGE"], "Hello from Ferry");
    assert!(
        Api::<ConfigMap>::namespaced(h.client.clone(), &target_ns)
            .get_opt("message-app-config")
            .await
            .is_err_or_none()
    );
}

trait ErrOrNone {
    fn is_err_or_none(&self) -> bool;
}

impl<T, E> ErrOrNone for Result<Option<T>, E> {
    fn is_err_or_none(&self) -> bool {
        !matches!(self, Ok(Some(_)))
    }
}

#[tokio::test]
async fn ssh_repository_with_a_key_and_the_known_hosts_configmap() {
    let h = harness("ssh").await;
    let repo = new_repo("ssh", &refs(&examples("message-app")));
    let url = h.env.git.ssh_url(&repo);
    let key = std::fs::read_to_string(&h.env.git.ssh_private_key).unwrap();
    let known = std::fs::read_to_string(&h.env.git.known_hosts).unwrap();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "ssh-repo", "labels": { "argocd.argoproj.io/secret-type": "repository" } },
        "stringData": { "type": "git", "url": url, "sshPrivateKey": key },
    }))
    .unwrap();
    Api::<Secret>::namespaced(h.client.clone(), &h.ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    h.apply_app(app("over-ssh", &url, ".", &h.dest, automated()))
        .await;
    // Without trusted host keys the fetch must fail, with ssh's own words.
    let a = h
        .wait_app("over-ssh", "a host key error", |a| {
            conditions(a).contains("ComparisonError")
        })
        .await;
    assert!(
        conditions(&a).to_lowercase().contains("host key"),
        "{}",
        conditions(&a)
    );
    assert!(!conditions(&a).contains("PRIVATE KEY"));
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": ferry_controller::KNOWN_HOSTS_CONFIGMAP },
        "data": { "ssh_known_hosts": known },
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(h.client.clone(), &h.ns)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    h.wait_synced_healthy("over-ssh").await;
    assert_eq!(
        configmap_value(&h, &h.dest, "message-app-config", "MESSAGE")
            .await
            .as_deref(),
        Some("Hello from Ferry")
    );
}

/// `syncStrategy.apply` (the UI's "apply only") syncs the manifests without their hooks;
/// `force` re-creates an object whose change the API server refuses in place (a Job's
/// template), where a plain sync fails and leaves it as it was.
#[tokio::test]
async fn apply_only_skips_hooks_and_force_recreates_what_cannot_change() {
    let h = harness("strategy").await;
    let repo = new_repo("strategy", &refs(&examples("waves")));
    h.apply_app(app(
        "strategy",
        &h.env.git.file_url(&repo),
        ".",
        &h.dest,
        json!({}),
    ))
    .await;
    request_sync(&h, "strategy", json!({ "syncStrategy": { "apply": {} } })).await;
    let a = h
        .wait_app("strategy", "the apply-only sync to finish", |a| {
            op_phase(a) == "Succeeded" || op_phase(a) == "Failed"
        })
        .await;
    assert_eq!(op_phase(&a), "Succeeded", "{}", conditions(&a));
    let phases: Vec<String> = a
        .status
        .unwrap()
        .operation_state
        .unwrap()
        .sync_result
        .unwrap()
        .resources
        .iter()
        .map(|r| r.sync_phase.clone())
        .collect();
    assert!(phases.iter().all(|p| p == "Sync"), "{phases:?}");
    let jobs: Api<Job> = Api::namespaced(h.client.clone(), &h.dest);
    assert!(
        jobs.get_opt("migrate").await.unwrap().is_none(),
        "apply only ran the PreSync hook"
    );
    let deps: Api<Deployment> = Api::namespaced(h.client.clone(), &h.dest);
    assert!(deps.get_opt("frontend").await.unwrap().is_some());

    // A plain Job (no hook) whose template changes.
    let job = |image: &str| {
        format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: once\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: c\n        image: {image}\n"
        )
    };
    let repo = new_repo("force", &[("job.yaml", &job("registry.local/once:1"))]);
    h.apply_app(app(
        "force",
        &h.env.git.file_url(&repo),
        ".",
        &h.dest,
        json!({}),
    ))
    .await;
    request_sync(&h, "force", json!({})).await;
    h.wait_app("force", "the first sync", |a| op_phase(a) == "Succeeded")
        .await;
    let first_uid = jobs.get("once").await.unwrap().metadata.uid;
    commit(&repo, &[("job.yaml", &job("registry.local/once:2"))]);
    h.refresh("force").await;
    h.wait_app("force", "the new commit to show as OutOfSync", |a| {
        sync_status(a) == "OutOfSync"
    })
    .await;
    request_sync(&h, "force", json!({})).await;
    let a = h
        .wait_app("force", "the plain sync to fail", |a| {
            op_phase(a) == "Failed"
        })
        .await;
    let message = a.status.unwrap().operation_state.unwrap().message;
    assert!(message.contains("once"), "{message}");
    assert_eq!(
        jobs.get("once").await.unwrap().metadata.uid,
        first_uid,
        "a failed sync changed the Job"
    );
    request_sync(
        &h,
        "force",
        json!({ "syncStrategy": { "hook": { "force": true } } }),
    )
    .await;
    let a = h
        .wait_app("force", "the forced sync", |a| op_phase(a) == "Succeeded")
        .await;
    let recreated = jobs.get("once").await.unwrap();
    assert_ne!(
        recreated.metadata.uid, first_uid,
        "force re-creates the Job"
    );
    let image = recreated.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone();
    assert_eq!(image.as_deref(), Some("registry.local/once:2"));
    assert!(
        a.status
            .unwrap()
            .operation_state
            .unwrap()
            .message
            .contains("successfully")
    );
}

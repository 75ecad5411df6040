//! Image automation end to end: a tag pushed to the test registry becomes
//! one bot commit in the test Git server, which Ferry then syncs.

mod common;

use common::*;
use ferry_model::flux::{ImagePolicy, ImageRepository, ImageUpdateAutomation};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use std::time::Duration;

fn deployment_yaml(image: &str, marker: &str) -> String {
    // Comments, odd spacing and quoting around the marked line must survive.
    format!(
        "# The web tier.\n\
         apiVersion: apps/v1\n\
         kind: Deployment\n\
         metadata:\n  name: web   # keep this comment\n\
         spec:\n  replicas: 1\n\n  selector:\n    matchLabels: {{app: web}}\n\
         \x20 template:\n    metadata:\n      labels:\n        app: 'web'\n\
         \x20   spec:\n      containers:\n        - name: web\n\
         \x20         image: {image} # {{\"$imagepolicy\": \"{marker}\"}}\n\
         \x20         ports:\n            - containerPort: 8080\n"
    )
}

fn git_log(repo: &str) -> Vec<String> {
    let git_dir = shared_env().git.root.join(format!("{repo}.git"));
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(&git_dir)
        .args(["log", "--format=%an <%ae>|%B%x00", "main"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split('\0')
        .map(|s| s.trim_start_matches('\n').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn show(repo: &str, rev: &str, path: &str) -> String {
    let git_dir = shared_env().git.root.join(format!("{repo}.git"));
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(&git_dir)
        .args(["show", &format!("{rev}:{path}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn shared_env() -> &'static ferry_testenv::TestEnv {
    ferry_testenv::shared()
}

async fn create_secret(h: &Harness, secret: Value) {
    let s: Secret = serde_json::from_value(secret).unwrap();
    Api::<Secret>::namespaced(h.client.clone(), &h.ns)
        .create(&PostParams::default(), &s)
        .await
        .unwrap();
}

/// Registry and Git credentials, a GitRepository and the Argo CD repository Secret.
async fn setup_sources(h: &Harness, repo: &str, registry_secret: Value) {
    let env = h.env;
    let url = env.git.http_url(repo);
    create_secret(h, registry_secret).await;
    create_secret(
        h,
        json!({
            "metadata": { "name": "git-secret" },
            "stringData": { "username": env.git.user(), "password": env.git.password().expose() },
        }),
    )
    .await;
    create_secret(
        h,
        json!({
            "metadata": { "name": "repo", "labels": { "argocd.argoproj.io/secret-type": "repository" } },
            "stringData": { "type": "git", "url": url, "username": env.git.user(), "password": env.git.password().expose() },
        }),
    )
    .await;
    h.apply(json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
        "metadata": { "name": "config", "namespace": h.ns },
        "spec": { "url": url, "interval": "1m", "ref": { "branch": "main" }, "secretRef": { "name": "git-secret" } },
    }))
    .await;
}

fn regcred() -> Value {
    json!({
        "metadata": { "name": "regcred" },
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": { ".dockerconfigjson": shared_env().registry.docker_config_json().unwrap() },
    })
}

async fn image_repository(h: &Harness, name: &str, image: &str, secret: &str) {
    h.apply(json!({
        "apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImageRepository",
        "metadata": { "name": name, "namespace": h.ns },
        "spec": { "image": image, "interval": "2s", "insecure": true, "secretRef": { "name": secret } },
    }))
    .await;
}

async fn seed_policy(h: &Harness, name: &str, repo: &str, pattern: &str) {
    // Seed 001's filter: the build timestamp decides.
    h.apply(json!({
        "apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImagePolicy",
        "metadata": { "name": name, "namespace": h.ns },
        "spec": {
            "imageRepositoryRef": { "name": repo },
            "filterTags": { "pattern": pattern, "extract": "$ts" },
            "policy": { "numerical": { "order": "asc" } },
        },
    }))
    .await;
}

async fn automation(h: &Harness, interval: &str, template: &str) {
    h.apply(json!({
        "apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImageUpdateAutomation",
        "metadata": { "name": "apps", "namespace": h.ns },
        "spec": {
            "interval": interval,
            "sourceRef": { "kind": "GitRepository", "name": "config" },
            "git": {
                "checkout": { "ref": { "branch": "main" } },
                "commit": { "author": { "name": "ferry-bot", "email": "bot@ferry.dev" }, "messageTemplate": template },
                "push": { "branch": "main" },
            },
            "update": { "path": "./apps", "strategy": "Setters" },
        },
    }))
    .await;
}

fn ready(conditions: &[ferry_model::flux::Condition]) -> Option<(String, String, String)> {
    conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn policy_tag(h: &Harness, name: &str) -> Option<String> {
    let p = Api::<ImagePolicy>::namespaced(h.client.clone(), &h.ns)
        .get_opt(name)
        .await
        .ok()??;
    p.status?.latest_ref.map(|r| r.tag)
}

async fn automation_ready(h: &Harness) -> Option<(String, String, String)> {
    let a = Api::<ImageUpdateAutomation>::namespaced(h.client.clone(), &h.ns)
        .get_opt("apps")
        .await
        .ok()??;
    ready(&a.status?.conditions)
}

const PATTERN: &str = "^master-[a-f0-9]+-(?P<ts>[0-9]+)";

#[tokio::test]
async fn a_pushed_tag_becomes_one_commit_and_rolls_the_deployment() {
    let h = harness("img").await;
    let env = h.env;
    let image_repo = format!("{}/app", h.ns);
    let image = format!("{}/{image_repo}", env.registry.host);
    env.registry
        .push_image(&image_repo, "master-abc1234-1700000000")
        .unwrap();
    // Tags the policy must ignore: another branch, and a cosign signature.
    env.registry
        .push_image(&image_repo, "feature-x-1800000000")
        .unwrap();
    env.registry
        .push_image(&image_repo, "master-abc1234-1900000000.sig")
        .unwrap();
    let marker = format!("{}:app", h.ns);
    let before = deployment_yaml(&format!("{image}:master-abc1234-1700000000"), &marker);
    let repo = new_repo(
        &format!("imgauto-{}", h.ns),
        &[("apps/deploy.yaml", &before), ("README.md", "config\n")],
    );
    setup_sources(&h, &repo, regcred()).await;
    image_repository(&h, "app", &image, "regcred").await;
    seed_policy(&h, "app", "app", PATTERN).await;
    // A long interval: the policy moving must be what triggers the run.
    automation(
        &h,
        "1h",
        "Update image automatically.\n\n{{range .Updated.Images}}{{println .}}{{end}}",
    )
    .await;
    h.apply_app(json!({
        "metadata": { "name": "web" },
        "spec": {
            "project": "default",
            "source": { "repoURL": env.git.http_url(&repo), "path": "apps", "targetRevision": "main" },
            "destination": { "server": "https://kubernetes.default.svc", "namespace": h.dest },
            "syncPolicy": { "automated": { "selfHeal": true } },
        },
    }))
    .await;

    // The scan sees the tags, the policy picks the newest master build, and
    // the repository is already up to date: no commit.
    let repos: Api<ImageRepository> = Api::namespaced(h.client.clone(), &h.ns);
    let st = h
        .eventually("ImageRepository scanned", || async {
            repos.get_opt("app").await.ok()??.status.filter(|s| {
                s.last_scan_result
                    .as_ref()
                    .is_some_and(|r| r.tag_count == 2)
            })
        })
        .await;
    assert_eq!(st.canonical_image_name.as_deref(), Some(image.as_str()));
    let scan = st.last_scan_result.unwrap();
    assert!(scan.scan_time.is_some());
    assert!(
        !scan.latest_tags.iter().any(|t| t.ends_with(".sig")),
        "{scan:?}"
    );
    let tag = h
        .eventually("policy resolved", || policy_tag(&h, "app"))
        .await;
    assert_eq!(tag, "master-abc1234-1700000000");
    let (ok, _, msg) = h
        .eventually("automation ran", || async {
            automation_ready(&h).await.filter(|r| r.0 == "True")
        })
        .await;
    assert!(msg.contains("up-to-date"), "{msg}");
    assert_eq!(git_log(&repo).len(), 1, "no commit when nothing changed");
    assert_eq!(ok, "True");
    h.wait_synced_healthy("web").await;

    // CI pushes a newer build.
    env.registry
        .push_image(&image_repo, "master-abc1234-1700000001")
        .unwrap();
    let commit = h
        .eventually("bot commit", || async {
            let log = git_log(&repo);
            (log.len() > 1).then(|| log[0].clone())
        })
        .await;
    let new_image = format!("{image}:master-abc1234-1700000001");
    assert_eq!(
        commit,
        format!("ferry-bot <bot@ferry.dev>|Update image automatically.\n\n{new_image}\n"),
        "author and templated message"
    );
    let after = show(&repo, "main", "apps/deploy.yaml");
    assert_eq!(
        after,
        before.replace("master-abc1234-1700000000", "master-abc1234-1700000001"),
        "only the marked value changes; every other byte stays"
    );
    assert_eq!(show(&repo, "main", "README.md"), "config\n");

    // Ferry delivers its own commit: the Deployment rolls to the new image.
    let head = env.git.head(&repo).unwrap();
    h.wait_app("web", "synced to the bot commit", |a| {
        a.status
            .as_ref()
            .and_then(|s| s.sync.as_ref())
            .and_then(|s| s.revision.as_deref())
            == Some(head.as_str())
            && sync_status(a) == "Synced"
    })
    .await;
    let deploys: Api<Deployment> = Api::namespaced(h.client.clone(), &h.dest);
    h.eventually("rolled out", || async {
        let d = serde_json::to_value(deploys.get_opt("web").await.ok()??).ok()?;
        let spec_image = d["spec"]["template"]["spec"]["containers"][0]["image"].as_str()?;
        let st = &d["status"];
        (spec_image == new_image
            && st["observedGeneration"] == d["metadata"]["generation"]
            && st["updatedReplicas"] == 1
            && st["availableReplicas"] == 1
            && st["replicas"] == 1)
            .then_some(())
    })
    .await;
    h.wait_synced_healthy("web").await;

    // Two more runs on request (`ferry image reconcile update`): still exactly
    // one bot commit, no loop.
    let autos: Api<ImageUpdateAutomation> = Api::namespaced(h.client.clone(), &h.ns);
    for i in 0..2 {
        let stamp = format!("rerun-{i}");
        autos
            .patch(
                "apps",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({ "metadata": { "annotations": {
                    "reconcile.fluxcd.io/requestedAt": stamp } } })),
            )
            .await
            .unwrap();
        h.eventually("the requested run", || async {
            let st = autos.get("apps").await.ok()?.status?;
            (st.last_handled_reconcile_at.as_deref() == Some(stamp.as_str())).then_some(())
        })
        .await;
    }
    let log = git_log(&repo);
    assert_eq!(log.len(), 2, "{log:?}");
    let st = autos.get("apps").await.unwrap().status.unwrap();
    assert_eq!(st.last_push_commit.as_deref(), Some(head.as_str()));
    assert_eq!(env.git.head(&repo).unwrap(), head);
}

#[tokio::test]
async fn bad_credentials_patterns_markers_and_rejected_pushes_are_reported() {
    let h = harness("imgerr").await;
    let env = h.env;
    let image_repo = format!("{}/svc", h.ns);
    let image = format!("{}/{image_repo}", env.registry.host);
    env.registry
        .push_image(&image_repo, "master-abc1234-1700000005")
        .unwrap();
    let files = [
        (
            "apps/ok.yaml",
            deployment_yaml(&format!("{image}:old"), &format!("{}:svc", h.ns)),
        ),
        (
            "apps/missing.yaml",
            deployment_yaml(&format!("{image}:old"), &format!("{}:nope", h.ns)),
        ),
    ];
    let refs: Vec<(&str, &str)> = files.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let repo = new_repo(&format!("imgerr-{}", h.ns), &refs);
    setup_sources(&h, &repo, regcred()).await;

    // Wrong registry credentials.
    let wrong = json!({ "auths": { env.registry.host.clone(): { "username": env.registry.user(), "password": "wrong-password" } } });
    create_secret(
        &h,
        json!({
            "metadata": { "name": "badcred" },
            "type": "kubernetes.io/dockerconfigjson",
            "stringData": { ".dockerconfigjson": wrong.to_string() },
        }),
    )
    .await;
    image_repository(&h, "denied", &image, "badcred").await;
    let repos: Api<ImageRepository> = Api::namespaced(h.client.clone(), &h.ns);
    let (_, reason, msg) = h
        .eventually("auth failure reported", || async {
            ready(&repos.get_opt("denied").await.ok()??.status?.conditions)
                .filter(|r| r.0 == "False")
        })
        .await;
    assert_eq!(reason, "AuthenticationFailed", "{msg}");
    assert!(
        msg.contains("401") || msg.to_lowercase().contains("auth"),
        "{msg}"
    );
    assert!(!msg.contains("wrong-password"), "{msg}");

    // A malformed pattern.
    image_repository(&h, "svc", &image, "regcred").await;
    seed_policy(&h, "broken", "svc", "^master-(").await;
    let policies: Api<ImagePolicy> = Api::namespaced(h.client.clone(), &h.ns);
    let (_, _, msg) = h
        .eventually("pattern error reported", || async {
            ready(&policies.get_opt("broken").await.ok()??.status?.conditions)
                .filter(|r| r.0 == "False")
        })
        .await;
    assert!(msg.contains("filterTags.pattern"), "{msg}");

    // A working policy, a marker naming a policy that does not exist, and a
    // server that refuses the first push.
    seed_policy(&h, "svc", "svc", PATTERN).await;
    shared_env().git.move_main_during_next_push(&repo).unwrap();
    automation(&h, "12s", "{{range .Updated.Images}}{{println .}}{{end}}").await;
    // The rejection is in status only until the retry; its Warning Event stays, so a busy
    // machine cannot miss it.
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(h.client.clone(), &h.ns);
    let (reason, msg) = h
        .eventually("push rejection reported", || async {
            let list = events
                .list(&kube::api::ListParams::default().fields("involvedObject.name=apps"))
                .await
                .ok()?;
            list.items.into_iter().find_map(|e| {
                (e.reason.as_deref() == Some("GitOperationFailed"))
                    .then(|| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
            })
        })
        .await;
    assert!(
        msg.contains("[remote rejected]") && msg.contains("cannot lock ref"),
        "git's own refusal: {msg}"
    );
    assert!(msg.contains("the branch moved on the server"), "{msg}");
    assert!(!msg.contains(env.git.password().expose()), "{msg}");
    assert_eq!(reason, "GitOperationFailed");
    let (ok, _, msg) = h
        .eventually("missing policy reported after the retry", || async {
            automation_ready(&h)
                .await
                .filter(|r| r.1 == "PolicyNotFound")
        })
        .await;
    assert_eq!(ok, "False");
    assert!(
        msg.contains("apps/missing.yaml") && msg.contains("nope"),
        "{msg}"
    );
    // After the retry: the concurrent commit, then exactly one bot commit.
    h.idle(Duration::from_secs(6)).await;
    let log = git_log(&repo);
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(log[0].starts_with("ferry-bot"), "{log:?}");
    assert!(log[1].starts_with("someone"), "{log:?}");
    assert!(
        show(&repo, "main", "apps/ok.yaml").contains(":master-abc1234-1700000005 #"),
        "the valid marker was updated"
    );
    assert!(
        show(&repo, "main", "apps/missing.yaml").contains(&format!("{image}:old #")),
        "the unresolved marker was left alone"
    );
}

//! The environment's parts, exercised the way Ferry will use them. All tests
//! share one environment and isolate themselves by namespace or repository.

use ferry_testenv::{WAIT, shared, simnode};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Polls `f` until it returns Some, or panics after [`WAIT`] naming `what`.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn admin() -> Client {
    shared().cluster.client().await.expect("admin client")
}

fn forbidden<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> bool {
    matches!(r, Err(kube::Error::Api(s)) if s.code == 403)
}

#[tokio::test]
async fn server_side_applied_deployment_becomes_available_through_real_controllers() {
    let env = shared();
    let client = admin().await;
    let ns = env
        .cluster
        .create_namespace(&client, "deploy")
        .await
        .unwrap();
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let manifest = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 3,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "nginx:1.27", "ports": [{ "containerPort": 80 }] }] },
            },
        },
    });
    let applied = deploys
        .patch(
            "web",
            &PatchParams::apply("ferry-test"),
            &Patch::Apply(&manifest),
        )
        .await
        .unwrap();
    let managers: Vec<_> = applied
        .managed_fields()
        .iter()
        .map(|m| {
            (
                m.manager.clone().unwrap_or_default(),
                m.operation.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        managers.contains(&("ferry-test".into(), "Apply".into())),
        "{managers:?}"
    );

    let dep = eventually("the Deployment to be Available with 3 replicas", || async {
        let d = deploys.get("web").await.ok()?;
        let st = d.status.clone()?;
        let available = st.conditions.unwrap_or_default().iter().any(|c| {
            c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True")
        });
        (available && st.available_replicas == Some(3) && st.updated_replicas == Some(3))
            .then_some(d)
    })
    .await;

    let rs: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    let owned: Vec<ReplicaSet> = rs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|r| {
            r.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == dep.metadata.uid.as_ref())
        })
        .collect();
    assert_eq!(owned.len(), 1);
    assert_eq!(
        owned[0].status.as_ref().and_then(|s| s.ready_replicas),
        Some(3)
    );

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let list = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 3);
    for p in &list.items {
        assert_eq!(
            p.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            Some(simnode::NODE_NAME)
        );
        let st = p.status.as_ref().unwrap();
        assert_eq!(st.phase.as_deref(), Some("Running"));
        assert!(
            st.conditions
                .as_ref()
                .unwrap()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        );
        assert!(
            p.owner_references()
                .iter()
                .any(|o| o.kind == "ReplicaSet" && o.name == owned[0].name_any())
        );
    }

    // Scaling down deletes pods gracefully; the simulated node must confirm it.
    let scale = json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "web" },
                        "spec": { "replicas": 1 } });
    deploys
        .patch(
            "web",
            &PatchParams::apply("ferry-test-scale").force(),
            &Patch::Apply(&scale),
        )
        .await
        .unwrap();
    eventually("scale-down to remove two pods", || async {
        let n = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?
            .items
            .len();
        (n == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn jobs_complete_or_fail_as_their_pods_do() {
    let env = shared();
    let client = admin().await;
    let ns = env.cluster.create_namespace(&client, "job").await.unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let job = |name: &str, exit_code: &str| {
        json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": { "name": name },
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "metadata": { "annotations": { simnode::ANNOTATION_EXIT_CODE: exit_code } },
                    "spec": { "restartPolicy": "Never", "containers": [{ "name": "main", "image": "busybox" }] },
                },
            },
        })
    };
    let pp = PatchParams::apply("ferry-test");
    jobs.patch("ok", &pp, &Patch::Apply(job("ok", "0")))
        .await
        .unwrap();
    jobs.patch("bad", &pp, &Patch::Apply(job("bad", "3")))
        .await
        .unwrap();
    let condition = |name: &'static str, wanted: &'static str| {
        let jobs = jobs.clone();
        async move {
            eventually(&format!("Job {name} to be {wanted}"), || async {
                let j = jobs.get(name).await.ok()?;
                let st = j.status?;
                st.conditions?
                    .iter()
                    .any(|c| c.type_ == wanted && c.status == "True")
                    .then_some(st.succeeded.unwrap_or(0))
            })
            .await
        }
    };
    assert_eq!(condition("ok", "Complete").await, 1);
    assert_eq!(condition("bad", "Failed").await, 0);
}

#[tokio::test]
async fn restricted_user_is_refused_unless_rbac_grants() {
    let env = shared();
    let client = admin().await;
    let restricted = env.cluster.restricted_client().await.unwrap();
    let granted = env
        .cluster
        .create_namespace(&client, "rbac-granted")
        .await
        .unwrap();
    let other = env
        .cluster
        .create_namespace(&client, "rbac-other")
        .await
        .unwrap();

    assert!(forbidden(
        Api::<Secret>::namespaced(restricted.clone(), "kube-system")
            .list(&ListParams::default())
            .await
    ));
    assert!(forbidden(
        Api::<Namespace>::all(restricted.clone())
            .list(&ListParams::default())
            .await
    ));

    let pp = PatchParams::apply("ferry-test");
    let role = json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": { "name": "read-configmaps", "namespace": granted },
        "rules": [{ "apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"] }] });
    let binding = json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": { "name": "read-configmaps", "namespace": granted },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-configmaps" },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": ferry_testenv::RESTRICTED_USER }] });
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    Api::<Role>::namespaced(client.clone(), &granted)
        .patch("read-configmaps", &pp, &Patch::Apply(&role))
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), &granted)
        .patch("read-configmaps", &pp, &Patch::Apply(&binding))
        .await
        .unwrap();

    let in_granted: Api<ConfigMap> = Api::namespaced(restricted.clone(), &granted);
    eventually("the RoleBinding to take effect", || async {
        in_granted.list(&ListParams::default()).await.ok()
    })
    .await;
    assert!(forbidden(
        Api::<ConfigMap>::namespaced(restricted.clone(), &other)
            .list(&ListParams::default())
            .await
    ));
    let cm: ConfigMap = serde_json::from_value(json!({ "metadata": { "name": "x" } })).unwrap();
    assert!(forbidden(
        in_granted.create(&PostParams::default(), &cm).await
    ));
}

#[tokio::test]
async fn both_api_servers_answer_and_are_independent() {
    let env = shared();
    let c1 = admin().await;
    let c2 = env.cluster2().client().await.unwrap();
    assert_ne!(env.cluster.server, env.cluster2().server);
    assert_eq!(c1.apiserver_version().await.unwrap().git_version, "v1.20.2");
    assert_eq!(c2.apiserver_version().await.unwrap().git_version, "v1.20.2");
    let only_in_2 = env
        .cluster2()
        .create_namespace(&c2, "second")
        .await
        .unwrap();
    assert!(
        Api::<Namespace>::all(c2.clone())
            .get_opt(&only_in_2)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        Api::<Namespace>::all(c1.clone())
            .get_opt(&only_in_2)
            .await
            .unwrap()
            .is_none()
    );
    // The second cluster runs workloads too.
    let deploys: Api<Deployment> = Api::namespaced(c2.clone(), &only_in_2);
    let manifest = json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "api" },
        "spec": { "replicas": 1, "selector": { "matchLabels": { "app": "api" } },
                  "template": { "metadata": { "labels": { "app": "api" } },
                                "spec": { "containers": [{ "name": "api", "image": "api:1" }] } } } });
    deploys
        .patch(
            "api",
            &PatchParams::apply("ferry-test"),
            &Patch::Apply(&manifest),
        )
        .await
        .unwrap();
    eventually("the Deployment on cluster2 to be available", || async {
        let d = deploys.get("api").await.ok()?;
        (d.status?.available_replicas == Some(1)).then_some(())
    })
    .await;
}

/// Runs git with the http credentials supplied by a credential helper that
/// reads them from the environment, so they never appear in arguments.
fn git(dir: &Path, args: &[&str], password: Option<&str>) -> Output {
    let env = shared();
    let mut cmd = Command::new(&env.tools.git);
    cmd.current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_SSH_COMMAND", env.git.git_ssh_command())
        .envs(ferry_testenv::git::GIT_IDENTITY);
    if let Some(pw) = password {
        cmd.env("FERRY_TEST_GIT_USER", env.git.user())
            .env("FERRY_TEST_GIT_PASSWORD", pw)
            .args([
                "-c",
                "credential.helper=",
                "-c",
                "credential.helper=!f() { echo username=$FERRY_TEST_GIT_USER; echo password=$FERRY_TEST_GIT_PASSWORD; }; f",
            ]);
    }
    cmd.args(args).output().expect("running git")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "git failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn seeded_repo(name: &str) -> (String, tempfile::TempDir) {
    let env = shared();
    let repo = format!("{name}-{}", std::process::id());
    env.git.create_repo(&repo).unwrap();
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("app")).unwrap();
    std::fs::write(src.path().join("app/config.yaml"), "message: hello\n").unwrap();
    env.git.commit_dir(&repo, src.path(), "seed").unwrap();
    (repo, tempfile::tempdir().unwrap())
}

#[tokio::test]
async fn git_over_http_needs_credentials_and_accepts_a_push() {
    let env = shared();
    let (repo, work) = seeded_repo("http");
    let url = env.git.http_url(&repo);
    let w = work.path();

    let anonymous = git(w, &["clone", "-q", &url, "anon"], None);
    assert!(!anonymous.status.success());
    let wrong = git(w, &["clone", "-q", &url, "wrong"], Some("not-the-password"));
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("Authentication failed"));

    let pw = env.git.password().expose();
    ok(git(w, &["clone", "-q", &url, "c"], Some(pw)));
    let clone = w.join("c");
    assert_eq!(
        std::fs::read_to_string(clone.join("app/config.yaml")).unwrap(),
        "message: hello\n"
    );

    std::fs::write(
        clone.join("app/config.yaml"),
        "message: changed over http\n",
    )
    .unwrap();
    ok(git(&clone, &["commit", "-qam", "change"], None));
    ok(git(&clone, &["push", "-q", "origin", "main"], Some(pw)));
    let local = ok(git(&clone, &["rev-parse", "HEAD"], None));
    assert_eq!(env.git.head(&repo).unwrap(), local.trim());
}

#[tokio::test]
async fn git_over_ssh_clones_with_the_key_only() {
    let env = shared();
    let (repo, work) = seeded_repo("ssh");
    let w = work.path();
    let url = env.git.ssh_url(&repo);
    ok(git(w, &["clone", "-q", &url, "c"], None));
    assert_eq!(
        std::fs::read_to_string(w.join("c/app/config.yaml")).unwrap(),
        "message: hello\n"
    );
    assert_eq!(
        ok(git(&w.join("c"), &["rev-parse", "HEAD"], None)).trim(),
        env.git.head(&repo).unwrap()
    );

    // Another key is refused.
    let other_key = w.join("other");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other_key)
        .status()
        .unwrap();
    assert!(keygen.success());
    let out = Command::new(&env.tools.git)
        .current_dir(w)
        .env(
            "GIT_SSH_COMMAND",
            env.git.git_ssh_command().replace(
                &env.git.ssh_private_key.display().to_string(),
                &other_key.display().to_string(),
            ),
        )
        .args(["clone", "-q", &url, "refused"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn registry_lists_pushed_tags_with_auth_only() {
    let env = shared();
    let repo = format!("team/app-{}", std::process::id());
    let d1 = env.registry.push_image(&repo, "1.0.0").unwrap();
    let d2 = env.registry.push_image(&repo, "1.1.0").unwrap();
    assert!(d1.starts_with("sha256:") && d2.starts_with("sha256:"));
    assert_ne!(d1, d2);
    assert_eq!(
        env.registry.list_tags(&repo).unwrap(),
        vec!["1.0.0", "1.1.0"]
    );
    let anonymous = env
        .registry
        .list_tags_anonymously(&repo)
        .unwrap_err()
        .to_string();
    assert!(
        anonymous.contains("unauthorized") || anonymous.contains("401"),
        "{anonymous}"
    );
    assert!(!anonymous.contains(env.registry.password().expose()));
}

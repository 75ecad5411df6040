//! Two `ferry controller` replicas: only the lease holder acts, and the other
//! takes over when it dies.

mod common;

use common::KillOnDrop;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::json;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn spawn(identity: &str, ns: &str, kubeconfig: &std::path::Path, log: &std::path::Path) -> Child {
    spawn_with_lease(identity, ns, kubeconfig, log, "4")
}

fn spawn_with_lease(
    identity: &str,
    ns: &str,
    kubeconfig: &std::path::Path,
    log: &std::path::Path,
    lease_seconds: &str,
) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "controller",
            "--namespace",
            ns,
            "--lease-seconds",
            lease_seconds,
            "--poll-seconds",
            "2",
            "--identity",
            identity,
            "--log",
            "info",
        ])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("ferry-controller")
        .await
        .ok()??
        .spec?
        .holder_identity
}

async fn wait<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn read(path: &std::path::Path) -> String {
    let mut s = String::new();
    std::fs::File::open(path)
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    s
}

#[tokio::test]
async fn only_the_leader_acts_and_the_other_takes_over() {
    let env = ferry_testenv::shared();
    let client = env.cluster.client().await.unwrap();
    let ns = env
        .cluster
        .create_namespace(&client, "leader")
        .await
        .unwrap();
    let dest = env
        .cluster
        .create_namespace(&client, "leader-dest")
        .await
        .unwrap();
    let repo = format!("leader-{}", std::process::id());
    env.git.create_repo(&repo).unwrap();
    let src = tempfile::tempdir().unwrap();
    let write = |msg: &str| {
        std::fs::write(
            src.path().join("cm.yaml"),
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: greeting\ndata:\n  message: {msg}\n"),
        )
        .unwrap();
    };
    write("one");
    env.git.commit_dir(&repo, src.path(), "one").unwrap();

    let logs = tempfile::tempdir().unwrap();
    let (log_a, log_b) = (logs.path().join("a.log"), logs.path().join("b.log"));
    let mut a = KillOnDrop(spawn("replica-a", &ns, &env.cluster.kubeconfig, &log_a));
    let mut b = KillOnDrop(spawn("replica-b", &ns, &env.cluster.kubeconfig, &log_b));

    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let first = wait("a leader", || async { holder(&leases).await }).await;
    assert!(first == "replica-a" || first == "replica-b", "{first}");

    // The CRD is installed by the replicas; create the app once it is served.
    let ar = kube::api::ApiResource::erase::<ferry_model::Application>(&());
    let apps: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
    let app = json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": { "name": "greeting", "namespace": ns },
        "spec": {
            "project": "default",
            "source": { "repoURL": env.git.file_url(&repo), "path": ".", "targetRevision": "main" },
            "destination": { "server": "https://kubernetes.default.svc", "namespace": dest },
            "syncPolicy": { "automated": { "prune": true } },
        },
    });
    wait("the Application to be accepted", || async {
        apps.patch(
            "greeting",
            &PatchParams::apply("test").force(),
            &Patch::Apply(&app),
        )
        .await
        .ok()
    })
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &dest);
    let message = |cms: Api<ConfigMap>| async move {
        cms.get_opt("greeting")
            .await
            .ok()??
            .data?
            .get("message")
            .cloned()
    };
    wait("the first sync", || async {
        (message(cms.clone()).await.as_deref() == Some("one")).then_some(())
    })
    .await;

    let (leader, leader_log, mut follower, follower_log, follower_id) = if first == "replica-a" {
        (&mut a, &log_a, b, &log_b, "replica-b")
    } else {
        (&mut b, &log_b, a, &log_a, "replica-a")
    };
    assert!(read(leader_log).contains("became leader"));
    assert!(read(follower_log).contains("waiting for leadership"));
    assert!(
        !read(follower_log).contains("became leader"),
        "the follower acted while the leader was alive"
    );

    // The leader dies without a chance to release the lease.
    leader.0.kill().unwrap();
    leader.0.wait().unwrap();
    let died = Instant::now();
    wait("the follower to take the lease", || async {
        (holder(&leases).await.as_deref() == Some(follower_id)).then_some(())
    })
    .await;
    let took = died.elapsed();
    assert!(took < Duration::from_secs(30), "failover took {took:?}");
    // The log line follows the lease write.
    wait("the follower to log that it leads", || async {
        read(follower_log).contains("became leader").then_some(())
    })
    .await;

    write("two");
    env.git.commit_dir(&repo, src.path(), "two").unwrap();
    wait("the new leader to sync the next commit", || async {
        (message(cms.clone()).await.as_deref() == Some("two")).then_some(())
    })
    .await;
    follower.0.kill().unwrap();
    follower.0.wait().unwrap();
}

#[tokio::test]
async fn sigterm_finishes_releases_the_lease_and_the_standby_takes_over_at_once() {
    let env = ferry_testenv::shared();
    let client = env.cluster.client().await.unwrap();
    let ns = env.cluster.create_namespace(&client, "term").await.unwrap();
    let logs = tempfile::tempdir().unwrap();
    let (log_a, log_b) = (logs.path().join("a.log"), logs.path().join("b.log"));
    // A lease far longer than the waits below: a takeover that waited for expiry would fail.
    let lease = "120";
    let mut a = KillOnDrop(spawn_with_lease(
        "term-a",
        &ns,
        &env.cluster.kubeconfig,
        &log_a,
        lease,
    ));
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    wait("replica a to lead", || async {
        (holder(&leases).await.as_deref() == Some("term-a")).then_some(())
    })
    .await;
    let _b = KillOnDrop(spawn_with_lease(
        "term-b",
        &ns,
        &env.cluster.kubeconfig,
        &log_b,
        lease,
    ));
    wait("replica b to stand by", || async {
        read(&log_b)
            .contains("waiting for leadership")
            .then_some(())
    })
    .await;

    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(a.0.id() as libc::pid_t, libc::SIGTERM);
    }
    let sent = Instant::now();
    let status = loop {
        if let Some(s) = a.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(60),
            "replica a did not exit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        status.success(),
        "a graceful stop exits 0: {status:?}\n{}",
        read(&log_a)
    );
    assert!(
        read(&log_a).contains("released the lease"),
        "{}",
        read(&log_a)
    );
    wait("replica b to take the released lease", || async {
        (holder(&leases).await.as_deref() == Some("term-b")).then_some(())
    })
    .await;
    let took = sent.elapsed();
    assert!(
        took < Duration::from_secs(60),
        "took {took:?}: b waited for the 120 s lease to expire instead of taking the released one"
    );
    wait("replica b to lead", || async {
        read(&log_b).contains("became leader").then_some(())
    })
    .await;
}

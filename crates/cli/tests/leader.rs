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

fn spawn_shard_replica(
    identity: &str,
    ns: &str,
    kubeconfig: &std::path::Path,
    log: &std::path::Path,
) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "controller",
            "--namespace",
            ns,
            "--lease-seconds",
            "6",
            "--poll-seconds",
            "2",
            "--identity",
            identity,
            "--shards",
            "4",
            "--shard-by",
            "app",
            "--log",
            "info,ferry_controller=debug",
            "--log-format",
            "json",
        ])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

async fn shard_holders(leases: &Api<Lease>) -> Vec<Option<String>> {
    let mut holders = Vec::new();
    for i in 0..4 {
        let h = leases
            .get_opt(&format!("ferry-controller-shard-{i}"))
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity)
            .filter(|h| !h.is_empty());
        holders.push(h);
    }
    holders
}

/// Every reconcile a replica logged: (app, start, end) in microseconds.
fn reconciles(log: &std::path::Path) -> Vec<(String, i64, i64)> {
    read(log)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "reconciled")
        .filter_map(|v| {
            let end: k8s_openapi::jiff::Timestamp = v["timestamp"].as_str()?.parse().ok()?;
            let end = end.as_microsecond();
            let ms = v["fields"]["ms"].as_i64()?;
            Some((
                v["fields"]["app"].as_str()?.to_string(),
                end - ms * 1000 - 1000,
                end,
            ))
        })
        .collect()
}

/// Two replicas split twelve apps over four shards (2 + 2); when one is killed the other
/// takes its shards within a lease (6 s) and syncs their next commit; no app is ever reconciled by
/// both at once (checked on every reconcile both logged, with a millisecond of slack).
#[tokio::test]
async fn replicas_split_the_apps_by_shard_and_take_over_a_dead_ones_shards() {
    let env = ferry_testenv::shared();
    let client = env.cluster.client().await.unwrap();
    let ns = env
        .cluster
        .create_namespace(&client, "shards")
        .await
        .unwrap();
    let dest = env
        .cluster
        .create_namespace(&client, "shards-dest")
        .await
        .unwrap();
    let repo = format!("shards-{}", std::process::id());
    env.git.create_repo(&repo).unwrap();
    let src = tempfile::tempdir().unwrap();
    let write = |msg: &str| {
        for i in 0..12 {
            let dir = src.path().join(format!("app-{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                dir.join("cm.yaml"),
                format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-{i}\ndata:\n  message: {msg}\n"),
            )
            .unwrap();
        }
    };
    write("one");
    env.git.commit_dir(&repo, src.path(), "one").unwrap();

    let logs = tempfile::tempdir().unwrap();
    let (log_a, log_b) = (logs.path().join("a.log"), logs.path().join("b.log"));
    let _a = KillOnDrop(spawn_shard_replica(
        "shard-a",
        &ns,
        &env.cluster.kubeconfig,
        &log_a,
    ));
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    wait("replica a to hold every shard", || async {
        shard_holders(&leases)
            .await
            .iter()
            .all(|h| h.as_deref() == Some("shard-a"))
            .then_some(())
    })
    .await;
    let ar = kube::api::ApiResource::erase::<ferry_model::Application>(&());
    let apps: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
    for i in 0..12 {
        let app = json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": { "name": format!("app-{i}"), "namespace": ns },
            "spec": {
                "project": "default",
                "source": { "repoURL": env.git.file_url(&repo), "path": format!("app-{i}"), "targetRevision": "main" },
                "destination": { "server": "https://kubernetes.default.svc", "namespace": dest },
                "syncPolicy": { "automated": { "prune": true } },
            },
        });
        wait("the Application to be accepted", || async {
            apps.patch(
                &format!("app-{i}"),
                &PatchParams::apply("test").force(),
                &Patch::Apply(&app),
            )
            .await
            .ok()
        })
        .await;
    }
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &dest);
    let all_say = |msg: &'static str| {
        let cms = cms.clone();
        async move {
            for i in 0..12 {
                let cm = cms.get_opt(&format!("app-{i}")).await.ok()??;
                if cm.data?.get("message").map(String::as_str) != Some(msg) {
                    return None;
                }
            }
            Some(())
        }
    };
    wait("replica a to sync all twelve", || all_say("one")).await;

    // A second replica: the shards are split two and two, handed over, not shared.
    let mut b = KillOnDrop(spawn_shard_replica(
        "shard-b",
        &ns,
        &env.cluster.kubeconfig,
        &log_b,
    ));
    wait("the shards to be split 2 + 2", || async {
        let holders = shard_holders(&leases).await;
        let a = holders
            .iter()
            .filter(|h| h.as_deref() == Some("shard-a"))
            .count();
        let b = holders
            .iter()
            .filter(|h| h.as_deref() == Some("shard-b"))
            .count();
        (a == 2 && b == 2).then_some(())
    })
    .await;
    write("two");
    env.git.commit_dir(&repo, src.path(), "two").unwrap();
    wait("both replicas to sync their apps' commit", || {
        all_say("two")
    })
    .await;

    // b dies without handing anything back: a takes its shards when their Leases expire.
    b.0.kill().unwrap();
    b.0.wait().unwrap();
    let died = Instant::now();
    wait("replica a to take every shard", || async {
        shard_holders(&leases)
            .await
            .iter()
            .all(|h| h.as_deref() == Some("shard-a"))
            .then_some(())
    })
    .await;
    let took = died.elapsed();
    assert!(took < Duration::from_secs(15), "takeover took {took:?}");
    write("three");
    env.git.commit_dir(&repo, src.path(), "three").unwrap();
    wait("replica a to sync all twelve again", || all_say("three")).await;

    let by_a = reconciles(&log_a);
    let by_b = reconciles(&log_b);
    let apps_b: std::collections::BTreeSet<&str> = by_b.iter().map(|r| r.0.as_str()).collect();
    assert!(
        !apps_b.is_empty() && apps_b.len() < 12,
        "b reconciled its share of the apps: {apps_b:?}"
    );
    for (app, start_b, end_b) in &by_b {
        for (other, start_a, end_a) in &by_a {
            assert!(
                app != other || end_a <= start_b || end_b <= start_a,
                "{app} was reconciled by both replicas at once: a {start_a}..{end_a}, b {start_b}..{end_b}"
            );
        }
    }
}

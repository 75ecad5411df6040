//! Failure paths on the test environment, each proved by what is (and is not) in the cluster:
//! a PreSync hook whose pod exits 1 fails the sync, applies nothing after it, runs the SyncFail
//! hook and honours `HookFailed`; a wave held unhealthy keeps the next wave out until the wave
//! timeout, then the sync fails naming the object; retries count their attempts and wait their
//! backoff; a broken or empty render prunes nothing; selfHeal off leaves a live edit alone.

mod common;

use common::*;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use std::time::Duration;

fn configmap(name: &str, wave: i32) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  annotations:\n    argocd.argoproj.io/sync-wave: \"{wave}\"\ndata:\n  a: \"1\"\n"
    )
}

fn hook_job(name: &str, hook: &str, exit_code: i32, delete_policy: Option<&str>) -> String {
    let policy = delete_policy
        .map(|p| format!("\n    argocd.argoproj.io/hook-delete-policy: {p}"))
        .unwrap_or_default();
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
  annotations:
    argocd.argoproj.io/hook: {hook}{policy}
spec:
  backoffLimit: 0
  template:
    metadata:
      annotations:
        testenv.ferry.dev/exit-code: "{exit_code}"
    spec:
      restartPolicy: Never
      containers:
      - name: run
        image: busybox
"#
    )
}

async fn exists<K>(h: &Harness, name: &str) -> bool
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    Api::<K>::namespaced(h.client.clone(), &h.dest)
        .get_opt(name)
        .await
        .unwrap()
        .is_some()
}

#[tokio::test]
async fn a_failing_presync_hook_fails_the_sync_and_runs_the_syncfail_hook() {
    let h = harness("fail-hook").await;
    let docs = [
        hook_job("migrate", "PreSync", 1, Some("HookFailed")),
        hook_job("cleanup", "SyncFail", 0, None),
        configmap("wave-zero", 0),
        configmap("wave-one", 1),
    ]
    .join("---\n");
    let repo = new_repo("fail-hook", &[("app.yaml", &docs)]);
    h.apply_app(app(
        "fail-hook",
        &h.env.git.file_url(&repo),
        ".",
        &h.dest,
        json!({ "spec": { "syncPolicy": { "automated": {} } } }),
    ))
    .await;
    let failed = h
        .wait_app("fail-hook", "the sync to fail", |a| op_phase(a) == "Failed")
        .await;
    assert!(
        op_message(&failed).contains("migrate"),
        "{}",
        op_message(&failed)
    );
    // Nothing of the sync phase was applied: neither wave.
    assert!(!exists::<ConfigMap>(&h, "wave-zero").await);
    assert!(!exists::<ConfigMap>(&h, "wave-one").await);
    // The SyncFail hook ran; the failed PreSync hook was deleted (HookFailed).
    h.eventually("the SyncFail hook's Job", || async {
        exists::<Job>(&h, "cleanup").await.then_some(())
    })
    .await;
    h.eventually("the failed hook to be deleted", || async {
        (!exists::<Job>(&h, "migrate").await).then_some(())
    })
    .await;
    // Without a retry policy an automated sync of the same revision is not attempted again.
    let first = failed
        .status
        .as_ref()
        .and_then(|s| s.operation_state.as_ref())
        .and_then(|o| o.started_at.clone());
    h.idle(Duration::from_secs(6)).await;
    let again = h.apps().get("fail-hook").await.unwrap();
    assert_eq!(op_phase(&again), "Failed");
    assert_eq!(
        again
            .status
            .as_ref()
            .and_then(|s| s.operation_state.as_ref())
            .and_then(|o| o.started_at.clone()),
        first
    );
    assert!(!exists::<ConfigMap>(&h, "wave-zero").await);
}

#[tokio::test]
async fn a_wave_held_unhealthy_keeps_the_next_wave_out_until_the_timeout() {
    let h = harness_with("fail-wave", |c| c.wave_timeout = Duration::from_secs(8)).await;
    let docs = [held_deployment("never-ready"), configmap("second-wave", 1)].join("---\n");
    let repo = new_repo("fail-wave", &[("app.yaml", &docs)]);
    h.apply_app(app(
        "fail-wave",
        &h.env.git.file_url(&repo),
        ".",
        &h.dest,
        json!({ "spec": { "syncPolicy": { "automated": {} } } }),
    ))
    .await;
    h.wait_app("fail-wave", "the sync to run", |a| op_phase(a) == "Running")
        .await;
    // While wave 0 is unhealthy, wave 1 is never applied.
    let mut polls = 0;
    let failed = loop {
        let a = h.apps().get("fail-wave").await.unwrap();
        assert!(
            !exists::<ConfigMap>(&h, "second-wave").await,
            "wave 1 was applied while wave 0 was unhealthy"
        );
        if op_phase(&a) != "Running" {
            break a;
        }
        polls += 1;
        assert!(polls < 300, "the sync never ended");
        tokio::time::sleep(Duration::from_millis(300)).await;
        h.assert_running();
    };
    assert_eq!(op_phase(&failed), "Failed", "{}", op_message(&failed));
    assert!(
        op_message(&failed).contains("never-ready"),
        "the failure names the object: {}",
        op_message(&failed)
    );
    assert!(!exists::<ConfigMap>(&h, "second-wave").await);
}

#[tokio::test]
async fn retries_count_their_attempts_and_wait_their_backoff() {
    let h = harness("fail-retry").await;
    let docs = [
        hook_job("migrate", "PreSync", 1, None),
        configmap("main", 0),
    ]
    .join("---\n");
    let repo = new_repo("fail-retry", &[("app.yaml", &docs)]);
    h.apply_app(app(
        "fail-retry",
        &h.env.git.file_url(&repo),
        ".",
        &h.dest,
        json!({ "spec": { "syncPolicy": {
            "automated": {},
            "retry": { "limit": 2, "backoff": { "duration": "2s", "factor": 2, "maxDuration": "1m" } }
        } } }),
    ))
    .await;
    // Each automated attempt is an operation of its own, Failed, counting the attempts before it.
    let op_of = |a: ferry_model::Application| a.status.unwrap().operation_state.unwrap();
    let first = op_of(
        h.wait_app("fail-retry", "the first attempt to fail", |a| {
            op_phase(a) == "Failed"
        })
        .await,
    );
    assert_eq!(first.retry_count, 0, "{}", first.message);
    let last = op_of(
        h.wait_app("fail-retry", "the second retry to fail", |a| {
            op_phase(a) == "Failed"
                && a.status
                    .as_ref()
                    .and_then(|s| s.operation_state.as_ref())
                    .is_some_and(|o| o.retry_count == 2)
        })
        .await,
    );
    // Two retries, waiting 2 s and then 4 s after the attempt before.
    let waited = last.started_at.clone().unwrap().0.as_second()
        - first.finished_at.clone().unwrap().0.as_second();
    assert!(
        waited >= 6,
        "the retries started {waited}s after the first failure"
    );
    // The limit is reached: no fourth attempt.
    h.idle(Duration::from_secs(10)).await;
    let after = op_of(h.apps().get("fail-retry").await.unwrap());
    assert_eq!((after.retry_count, after.started_at), (2, last.started_at));
    assert!(!exists::<ConfigMap>(&h, "main").await);
}

#[tokio::test]
async fn a_broken_or_empty_render_prunes_nothing() {
    let h = harness("fail-render").await;
    let repo = new_repo(
        "fail-render",
        &[
            ("kustomization.yaml", "resources: [cm.yaml]\n"),
            ("cm.yaml", &configmap("kept", 0)),
        ],
    );
    h.apply_app(app(
        "fail-render",
        &h.env.git.file_url(&repo),
        ".",
        &h.dest,
        json!({ "spec": { "syncPolicy": { "automated": { "prune": true, "selfHeal": true } } } }),
    ))
    .await;
    h.wait_synced_healthy("fail-render").await;
    assert!(exists::<ConfigMap>(&h, "kept").await);

    // A kustomization naming a file that is not there: an error, and nothing is pruned.
    commit(
        &repo,
        &[("kustomization.yaml", "resources: [missing.yaml]\n")],
    );
    h.refresh("fail-render").await;
    h.wait_app("fail-render", "a ComparisonError", |a| {
        conditions(a).contains("ComparisonError")
    })
    .await;
    h.idle(Duration::from_secs(4)).await;
    assert!(
        exists::<ConfigMap>(&h, "kept").await,
        "a broken render pruned"
    );

    // An empty render without allowEmpty: the automated sync is skipped, nothing pruned.
    commit(&repo, &[("kustomization.yaml", "resources: []\n")]);
    h.refresh("fail-render").await;
    h.wait_app("fail-render", "the skip to be reported", |a| {
        conditions(a).contains("auto-sync will wipe out all resources")
    })
    .await;
    h.idle(Duration::from_secs(4)).await;
    assert!(
        exists::<ConfigMap>(&h, "kept").await,
        "an empty render pruned"
    );
}

#[tokio::test]
async fn self_heal_off_leaves_a_live_edit_alone() {
    let h = harness("fail-heal").await;
    let repo = new_repo("fail-heal", &[("cm.yaml", &configmap("edited", 0))]);
    h.apply_app(app(
        "fail-heal",
        &h.env.git.file_url(&repo),
        ".",
        &h.dest,
        json!({ "spec": { "syncPolicy": { "automated": {} } } }),
    ))
    .await;
    h.wait_synced_healthy("fail-heal").await;
    Api::<ConfigMap>::namespaced(h.client.clone(), &h.dest)
        .patch(
            "edited",
            &PatchParams::apply("someone").force(),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": { "name": "edited" }, "data": { "a": "by hand" }
            })),
        )
        .await
        .unwrap();
    h.wait_app("fail-heal", "OutOfSync after the edit", |a| {
        sync_status(a) == "OutOfSync"
    })
    .await;
    h.idle(Duration::from_secs(8)).await;
    let cm = Api::<ConfigMap>::namespaced(h.client.clone(), &h.dest)
        .get("edited")
        .await
        .unwrap();
    assert_eq!(cm.data.unwrap()["a"], "by hand");
    assert_eq!(
        sync_status(&h.apps().get("fail-heal").await.unwrap()),
        "OutOfSync"
    );
}

/// A loopback TCP proxy to `upstream` (`https://host:port`) that can be cut: while down it
/// closes every connection, open or new, as a cluster behind a failed network would look.
async fn cuttable_proxy(upstream: &str) -> (String, tokio::sync::watch::Sender<bool>) {
    let target = upstream
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (up_tx, up_rx) = tokio::sync::watch::channel(true);
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let mut up = up_rx.clone();
            if !*up.borrow() {
                continue;
            }
            let target = target.clone();
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    _ = up.wait_for(|u| !*u) => {}
                }
            });
        }
    });
    (format!("https://{addr}"), up_tx)
}

#[tokio::test]
async fn an_unreachable_cluster_is_reported_and_nothing_is_pruned_anywhere() {
    let h = harness("fail-cluster").await;
    let c2 = h.env.cluster2();
    let (server, up) = cuttable_proxy(&c2.server).await;
    let c2_client = c2.client().await.unwrap();
    let remote_ns = c2
        .create_namespace(&c2_client, "fail-cluster-remote")
        .await
        .unwrap();
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": { "name": "flaky", "labels": { "argocd.argoproj.io/secret-type": "cluster" } },
        "stringData": {
            "name": "flaky",
            "server": server,
            "config": json!({ "bearerToken": c2.admin_token().expose(), "tlsClientConfig": { "caData": ferry_controller::b64(&c2.ca_pem) } }).to_string(),
        },
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(h.client.clone(), &h.ns)
        .create(&Default::default(), &secret)
        .await
        .unwrap();
    let remote_repo = new_repo(
        "fail-cluster-remote",
        &[("cm.yaml", &configmap("remote", 0))],
    );
    let local_repo = new_repo("fail-cluster-local", &[("cm.yaml", &configmap("local", 0))]);
    let auto =
        json!({ "spec": { "syncPolicy": { "automated": { "prune": true, "selfHeal": true } } } });
    let mut remote = app(
        "remote",
        &h.env.git.file_url(&remote_repo),
        ".",
        &remote_ns,
        auto.clone(),
    );
    remote["spec"]["destination"]["server"] = json!(server);
    h.apply_app(remote).await;
    h.apply_app(app(
        "local",
        &h.env.git.file_url(&local_repo),
        ".",
        &h.dest,
        auto,
    ))
    .await;
    h.wait_synced_healthy("remote").await;
    h.wait_synced_healthy("local").await;

    // The network to the second cluster fails; both repositories get a commit that removes the
    // ConfigMap and adds another.
    up.send(false).unwrap();
    commit(&remote_repo, &[("cm.yaml", &configmap("remote-two", 0))]);
    commit(&local_repo, &[("cm.yaml", &configmap("local-two", 0))]);
    h.refresh("remote").await;
    h.refresh("local").await;
    // The local app keeps syncing (and prunes what left Git on its own cluster) ...
    h.eventually("the local app to sync the new commit", || async {
        (exists::<ConfigMap>(&h, "local-two").await && !exists::<ConfigMap>(&h, "local").await)
            .then_some(())
    })
    .await;
    // ... the remote one says what is wrong, and nothing on the second cluster is touched.
    let reported = h
        .wait_app("remote", "the unreachable cluster to be reported", |a| {
            sync_status(a) == "Unknown" && !conditions(a).is_empty()
        })
        .await;
    let remote_cms = Api::<ConfigMap>::namespaced(c2_client.clone(), &remote_ns);
    h.idle(Duration::from_secs(5)).await;
    assert!(
        remote_cms.get_opt("remote").await.unwrap().is_some(),
        "pruned on an unreachable cluster: {}",
        conditions(&reported)
    );
    assert!(remote_cms.get_opt("remote-two").await.unwrap().is_none());

    // The network comes back: the remote app catches up.
    up.send(true).unwrap();
    h.refresh("remote").await;
    h.eventually(
        "the remote app to sync once the cluster is back",
        || async {
            (remote_cms.get_opt("remote-two").await.ok()?.is_some()
                && remote_cms.get_opt("remote").await.ok()?.is_none())
            .then_some(())
        },
    )
    .await;
}

/// The controller is killed (its tasks dropped where they are, as SIGKILL leaves them) at
/// pseudo-random points of a sync with a PreSync hook, three waves and a PostSync hook —
/// `FERRY_CHAOS_KILLS` times (20 in `make test`, more in `make chaos`) — and started again each
/// time: the requested operation still finishes once (one history entry), and every object is
/// there.
#[tokio::test]
async fn killed_again_and_again_mid_sync_the_operation_finishes_once() {
    let mut h = harness("chaos-kill").await;
    let kills: u64 = std::env::var("FERRY_CHAOS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut files = Vec::new();
    copy_dir(
        &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/waves"),
        &mut files,
        "",
    );
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    // A first revision with one more object, synced without kills: the sync under test
    // then prunes it, so kills land in prunes too.
    let obsolete = configmap("obsolete", 5);
    let mut first = refs.clone();
    first.push(("obsolete.yaml", &obsolete));
    let repo = new_repo("chaos-kill", &first);
    h.apply_app(app(
        "chaos",
        &h.env.git.file_url(&repo),
        ".",
        &h.dest,
        json!({}),
    ))
    .await;
    h.wait_app("chaos", "the first compare", |a| {
        sync_status(a) == "OutOfSync"
    })
    .await;
    let patch = json!({ "operation": { "sync": { "revision": "main" }, "initiatedBy": { "username": "setup" } } });
    h.apps()
        .patch("chaos", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    h.wait_app("chaos", "the first sync", |a| {
        op_phase(a) == "Succeeded" && a.operation.is_none()
    })
    .await;
    assert!(exists::<ConfigMap>(&h, "obsolete").await);
    commit(&repo, &refs);
    h.refresh("chaos").await;
    h.wait_app("chaos", "the second revision's compare", |a| {
        sync_status(a) == "OutOfSync"
    })
    .await;
    // Every Job created in the namespace, by uid: a hook run twice would be a second uid.
    let jobs_seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<
        String,
        String,
    >::new()));
    let watcher = {
        let seen = jobs_seen.clone();
        let jobs: Api<Job> = Api::namespaced(h.client.clone(), &h.dest);
        tokio::spawn(async move {
            use futures::StreamExt;
            let mut events = kube::runtime::watcher(jobs, Default::default()).boxed();
            while let Some(Ok(ev)) = events.next().await {
                let objs: Vec<Job> = match ev {
                    kube::runtime::watcher::Event::Apply(j)
                    | kube::runtime::watcher::Event::InitApply(j) => vec![j],
                    _ => Vec::new(),
                };
                for j in objs {
                    if let (Some(uid), Some(name)) = (j.metadata.uid, j.metadata.name) {
                        seen.lock().unwrap().insert(uid, name);
                    }
                }
            }
        })
    };
    let patch = json!({ "operation": { "sync": { "revision": "main", "prune": true }, "initiatedBy": { "username": "chaos" } } });
    h.apps()
        .patch("chaos", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    // A printed seed makes a failing run repeatable.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7);
    println!("chaos seed {seed}");
    let mut state = seed | 1;
    for _ in 0..kills {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        tokio::time::sleep(Duration::from_millis(100 + state % 1400)).await;
        h.restart().await;
    }
    let done = h
        .wait_app("chaos", "the operation to finish", |a| {
            matches!(op_phase(a).as_str(), "Succeeded" | "Failed" | "Error")
        })
        .await;
    assert_eq!(
        op_phase(&done),
        "Succeeded",
        "seed {seed}: {}",
        op_message(&done)
    );
    let history = done.status.as_ref().map(|s| s.history.len()).unwrap_or(0);
    assert_eq!(
        history, 2,
        "seed {seed}: one more sync, one more history entry"
    );
    assert!(done.operation.is_none(), "the request was consumed");
    assert!(exists::<ConfigMap>(&h, "settings").await);
    assert!(
        !exists::<ConfigMap>(&h, "obsolete").await,
        "seed {seed}: not pruned"
    );
    for d in ["backend", "frontend"] {
        assert!(
            exists::<k8s_openapi::api::apps::v1::Deployment>(&h, d).await,
            "seed {seed}: {d} lost"
        );
    }
    // Nothing runs it again.
    h.idle(Duration::from_secs(5)).await;
    let after = h.apps().get("chaos").await.unwrap();
    assert_eq!(after.status.map(|s| s.history.len()).unwrap_or(0), 2);
    // Each hook ran once in this sync, however often the controller died around their
    // creation: the PreSync Job of the first sync (kept until the next hook's creation)
    // and one of this sync; one generateName PostSync Job (the first sync's was deleted on
    // success before the watch started).
    watcher.abort();
    let seen = jobs_seen.lock().unwrap().clone();
    let migrate = seen.values().filter(|n| *n == "migrate").count();
    let smoke = seen
        .values()
        .filter(|n| n.starts_with("smoke-test-"))
        .count();
    assert_eq!(
        (migrate, smoke),
        (2, 1),
        "seed {seed}: each hook runs exactly once; Jobs seen: {seen:?}"
    );
}

/// `ignoreDifferences.managedFieldsManagers`: a field another manager took over is not drift
/// for the app with the rule, and is for the app without it. The watch cache keeps no
/// managedFields, so this proves they are read where the rule needs them.
#[tokio::test]
async fn fields_taken_over_by_an_ignored_manager_are_not_drift() {
    let h = harness("fail-mfm").await;
    for (name, rule) in [("with-rule", true), ("without-rule", false)] {
        let repo = new_repo(
            &format!("fail-mfm-{name}"),
            &[("cm.yaml", &configmap(name, 0))],
        );
        let mut extra = json!({ "spec": { "syncPolicy": { "automated": {} } } });
        if rule {
            extra["spec"]["ignoreDifferences"] =
                json!([{ "kind": "ConfigMap", "managedFieldsManagers": ["someone"] }]);
        }
        h.apply_app(app(name, &h.env.git.file_url(&repo), ".", &h.dest, extra))
            .await;
        h.wait_synced_healthy(name).await;
        Api::<ConfigMap>::namespaced(h.client.clone(), &h.dest)
            .patch(
                name,
                &PatchParams::apply("someone").force(),
                &Patch::Apply(json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": { "name": name }, "data": { "a": "taken over" }
                })),
            )
            .await
            .unwrap();
        h.refresh(name).await;
    }
    h.wait_app("without-rule", "the edit to show as drift", |a| {
        sync_status(a) == "OutOfSync"
    })
    .await;
    h.idle(Duration::from_secs(5)).await;
    assert_eq!(
        sync_status(&h.apps().get("with-rule").await.unwrap()),
        "Synced"
    );
}

/// Syncs waiting on a wave hold no worker: with one worker, two syncs wait on unhealthy
/// waves at the same time while a third app syncs; when one wave turns healthy its sync goes
/// on from where it stopped (wave 1 applied, wave 0 not applied again).
#[tokio::test]
async fn syncs_waiting_on_waves_hold_no_worker() {
    let h = harness_with("fail-workers", |c| {
        c.workers = 1;
        c.wave_timeout = Duration::from_secs(300);
    })
    .await;
    for name in ["held-a", "held-b"] {
        let docs = [
            held_deployment(name),
            configmap(&format!("{name}-after"), 1),
        ]
        .join("---\n");
        let repo = new_repo(&format!("fail-workers-{name}"), &[("app.yaml", &docs)]);
        h.apply_app(app(
            name,
            &h.env.git.file_url(&repo),
            ".",
            &h.dest,
            json!({ "spec": { "syncPolicy": { "automated": {} } } }),
        ))
        .await;
    }
    let waiting = |a: &ferry_model::Application| {
        op_phase(a) == "Running" && op_message(a).starts_with("waiting for healthy state")
    };
    h.wait_app("held-a", "held-a to wait on wave 0", waiting)
        .await;
    h.wait_app("held-b", "held-b to wait on wave 0", waiting)
        .await;
    let repo = new_repo("fail-workers-free", &[("cm.yaml", &configmap("free", 0))]);
    h.apply_app(app(
        "free",
        &h.env.git.file_url(&repo),
        ".",
        &h.dest,
        json!({ "spec": { "syncPolicy": { "automated": {} } } }),
    ))
    .await;
    h.wait_synced_healthy("free").await;
    for name in ["held-a", "held-b"] {
        let a = h.apps().get(name).await.unwrap();
        assert!(waiting(&a), "{name} still waits: {}", op_message(&a));
        assert!(!exists::<ConfigMap>(&h, &format!("{name}-after")).await);
    }
    // held-a's Deployment becomes ready: its sync goes on by itself.
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(h.client.clone(), &h.dest);
    let before = deployments.get("held-a").await.unwrap().metadata.generation;
    h.make_ready(&h.client, "held-a").await;
    let done = h
        .wait_app("held-a", "held-a's sync to finish", |a| {
            op_phase(a) != "Running"
        })
        .await;
    assert_eq!(op_phase(&done), "Succeeded", "{}", op_message(&done));
    assert!(exists::<ConfigMap>(&h, "held-a-after").await);
    // Wave 0 was not applied again (that would have put the annotation back).
    let after = deployments.get("held-a").await.unwrap();
    assert_eq!(after.metadata.generation, before.map(|g| g + 1));
    let b = h.apps().get("held-b").await.unwrap();
    assert!(waiting(&b), "held-b still waits: {}", op_message(&b));
}

/// An apply the API server rejects mid-wave (a LimitRange from wave 0 that the dry-runs
/// before the sync could not see): the sync stops there and fails naming the rejection, the next
/// wave is never applied, and the object that left Git is not pruned.
#[tokio::test]
async fn an_apply_rejected_mid_wave_stops_the_sync_and_prunes_nothing() {
    let h = harness("fail-reject").await;
    let repo = new_repo("fail-reject", &[("left.yaml", &configmap("leaving", 0))]);
    h.apply_app(app(
        "rejected",
        &h.env.git.file_url(&repo),
        ".",
        &h.dest,
        json!({ "spec": { "syncPolicy": { "automated": { "prune": true } } } }),
    ))
    .await;
    h.wait_synced_healthy("rejected").await;
    // The LimitRange arrives in wave 0, so the dry-runs before the sync passed the Pod.
    let limits = r#"apiVersion: v1
kind: LimitRange
metadata:
  name: small-containers
  annotations:
    argocd.argoproj.io/sync-wave: "0"
spec:
  limits:
  - type: Container
    max:
      cpu: 100m
"#;
    let pod = r#"apiVersion: v1
kind: Pod
metadata:
  name: too-big
  annotations:
    argocd.argoproj.io/sync-wave: "1"
spec:
  containers:
  - name: app
    image: nginx
    resources:
      limits:
        cpu: 200m
"#;
    commit(
        &repo,
        &[
            ("limits.yaml", limits),
            ("w1.yaml", &configmap("wave-one", 1)),
            ("pod.yaml", pod),
            ("w2.yaml", &configmap("wave-two", 2)),
        ],
    );
    h.refresh("rejected").await;
    let failed = h
        .wait_app("rejected", "the sync to fail", |a| op_phase(a) == "Failed")
        .await;
    assert!(
        op_message(&failed).contains("maximum cpu usage per Container is 100m"),
        "the failure names the rejection: {}",
        op_message(&failed)
    );
    assert!(!exists::<ConfigMap>(&h, "wave-two").await, "wave 2 applied");
    assert!(
        exists::<ConfigMap>(&h, "leaving").await,
        "pruned after a failed sync"
    );
    h.idle(Duration::from_secs(3)).await;
    assert!(!exists::<ConfigMap>(&h, "wave-two").await);
    assert!(exists::<ConfigMap>(&h, "leaving").await);
}

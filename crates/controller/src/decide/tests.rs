//! The sync decision's policy table, row by row, at a fixed clock.

use super::*;
use serde_json::{Value, json};

/// 2026-12-07T12:00:00Z.
const NOW: i64 = 1_796_644_800;

fn at(offset: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(NOW + offset)
        .unwrap()
        .to_string()
}

fn app(sync_policy: Value) -> Application {
    serde_json::from_value(json!({
        "metadata": {"name": "a", "namespace": "argocd"},
        "spec": {
            "project": "default",
            "source": {"repoURL": "https://git.example/r.git", "path": "p", "targetRevision": "main"},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": "d"},
            "syncPolicy": sync_policy,
        }
    }))
    .unwrap()
}

fn source() -> ApplicationSource {
    serde_json::from_value(
        json!({"repoURL": "https://git.example/r.git", "path": "p", "targetRevision": "main"}),
    )
    .unwrap()
}

fn facts(synced: bool, desired: usize, only_prune: bool) -> CompareFacts {
    CompareFacts {
        synced,
        desired,
        only_prune,
        revisions: vec!["rev2".into()],
        sources: vec![source()],
    }
}

/// The last operation: `phase`, of `revision`, finished `ago` seconds before NOW.
fn last(phase: &str, revision: &str, ago: i64, retry_count: i64) -> ApplicationStatus {
    serde_json::from_value(json!({
        "operationState": {
            "operation": {"sync": {"revision": revision}},
            "phase": phase,
            "message": "",
            "retryCount": retry_count,
            "startedAt": at(-ago - 1),
            "finishedAt": at(-ago),
            "syncResult": {
                "revision": revision,
                "source": {"repoURL": "https://git.example/r.git", "path": "p", "targetRevision": "main"},
            }
        }
    }))
    .unwrap()
}

/// A short name for the decision, and its details that matter.
fn summary(d: &Decision) -> String {
    match d {
        Decision::None => "none".into(),
        Decision::Later(t) => format!("later {}s", t.as_secs()),
        Decision::Skip(m) => format!("skip: {m}"),
        Decision::Blocked { .. } => "blocked".into(),
        Decision::Sync {
            operation,
            prune,
            dry_run,
            automated,
        } => format!(
            "sync rev={} prune={prune} dry_run={dry_run} automated={automated}",
            operation
                .sync
                .as_ref()
                .and_then(|s| s.revision.clone())
                .unwrap_or_default()
        ),
    }
}

fn decide(app: &Application, c: &CompareFacts, st: &ApplicationStatus) -> String {
    summary(&decide_sync(app, None, c, st, NOW))
}

#[test]
fn automated_policy_table() {
    let none = ApplicationStatus::default();
    let auto = app(json!({"automated": {}}));
    let prune = app(json!({"automated": {"prune": true}}));
    let heal = app(json!({"automated": {"selfHeal": true}}));
    let empty_ok = app(json!({"automated": {"allowEmpty": true}}));
    let disabled = app(json!({"automated": {"enabled": false}}));
    let retry = app(
        json!({"automated": {}, "retry": {"limit": 2, "backoff": {"duration": "10s", "factor": 2}}}),
    );
    let rows: Vec<(&str, String, &str)> = vec![
        (
            "manual app, out of sync",
            decide(&app(json!(null)), &facts(false, 3, false), &none),
            "none",
        ),
        (
            "automation switched off",
            decide(&disabled, &facts(false, 3, false), &none),
            "none",
        ),
        (
            "automated, synced",
            decide(&auto, &facts(true, 3, false), &none),
            "none",
        ),
        (
            "automated, out of sync",
            decide(&auto, &facts(false, 3, false), &none),
            "sync rev=rev2 prune=false dry_run=false automated=true",
        ),
        (
            "with prune",
            decide(&prune, &facts(false, 3, false), &none),
            "sync rev=rev2 prune=true dry_run=false automated=true",
        ),
        (
            "empty render",
            decide(&auto, &facts(false, 0, false), &none),
            "skip: Skipping sync attempt to rev2: auto-sync will wipe out all resources",
        ),
        (
            "empty render, allowEmpty",
            decide(&empty_ok, &facts(false, 0, false), &none),
            "sync rev=rev2 prune=false dry_run=false automated=true",
        ),
        (
            "only extra live objects, prune off",
            decide(&auto, &facts(false, 3, true), &none),
            "none",
        ),
        (
            "only extra live objects, prune on",
            decide(&prune, &facts(false, 3, true), &none),
            "sync rev=rev2 prune=true dry_run=false automated=true",
        ),
        (
            "new revision after a success",
            decide(
                &auto,
                &facts(false, 3, false),
                &last("Succeeded", "rev1", 1, 0),
            ),
            "sync rev=rev2 prune=false dry_run=false automated=true",
        ),
        (
            "same revision succeeded, drift, selfHeal off",
            decide(
                &auto,
                &facts(false, 3, false),
                &last("Succeeded", "rev2", 100, 0),
            ),
            "none",
        ),
        (
            "same revision, drift, selfHeal on, just synced",
            decide(
                &heal,
                &facts(false, 3, false),
                &last("Succeeded", "rev2", 2, 0),
            ),
            "later 5s",
        ),
        (
            "same revision, drift, selfHeal on, after the backoff",
            decide(
                &heal,
                &facts(false, 3, false),
                &last("Succeeded", "rev2", 6, 0),
            ),
            "sync rev=rev2 prune=false dry_run=false automated=true",
        ),
        (
            "same revision failed, no retry policy",
            decide(
                &auto,
                &facts(false, 3, false),
                &last("Failed", "rev2", 1000, 0),
            ),
            "none",
        ),
        (
            "same revision failed, retry not due (10s)",
            decide(
                &retry,
                &facts(false, 3, false),
                &last("Failed", "rev2", 9, 0),
            ),
            "none",
        ),
        (
            "same revision failed, retry due",
            decide(
                &retry,
                &facts(false, 3, false),
                &last("Failed", "rev2", 10, 0),
            ),
            "sync rev=rev2 prune=false dry_run=false automated=true",
        ),
        (
            "second retry waits 20s",
            decide(
                &retry,
                &facts(false, 3, false),
                &last("Failed", "rev2", 19, 1),
            ),
            "none",
        ),
        (
            "second retry due",
            decide(
                &retry,
                &facts(false, 3, false),
                &last("Failed", "rev2", 20, 1),
            ),
            "sync rev=rev2 prune=false dry_run=false automated=true",
        ),
        (
            "retries used up",
            decide(
                &retry,
                &facts(false, 3, false),
                &last("Failed", "rev2", 10_000, 2),
            ),
            "none",
        ),
        (
            "failed on an older revision: the new one syncs",
            decide(
                &auto,
                &facts(false, 3, false),
                &last("Failed", "rev1", 1, 0),
            ),
            "sync rev=rev2 prune=false dry_run=false automated=true",
        ),
    ];
    let wrong: Vec<String> = rows
        .iter()
        .filter(|(_, got, want)| got != want)
        .map(|(row, got, want)| format!("{row}: got {got:?}, want {want:?}"))
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn the_automated_operation_carries_the_revision_and_the_retry_policy() {
    let a = app(json!({"automated": {"prune": true}, "retry": {"limit": 3}}));
    let Decision::Sync { operation, .. } =
        decide_sync(&a, None, &facts(false, 1, false), &Default::default(), NOW)
    else {
        panic!("sync expected");
    };
    assert_eq!(operation.initiated_by, Some(json!({"automated": true})));
    assert_eq!(operation.retry.as_ref().map(|r| r.limit), Some(3));
    let s = operation.sync.unwrap();
    assert_eq!((s.revision.as_deref(), s.prune), (Some("rev2"), true));
}

#[test]
fn a_requested_operation_runs_unless_its_retry_backoff_is_pending() {
    let a = app(json!(null));
    let op: Operation = serde_json::from_value(json!({
        "sync": {"revision": "rev2", "prune": true, "dryRun": true},
        "retry": {"limit": 5, "backoff": {"duration": "30s"}},
    }))
    .unwrap();
    let idle = ApplicationStatus::default();
    assert_eq!(
        summary(&decide_sync(
            &a,
            Some(&op),
            &facts(true, 3, false),
            &idle,
            NOW
        )),
        "sync rev=rev2 prune=true dry_run=true automated=false",
        "a requested sync runs even when synced and without automation"
    );
    let mut retrying = last("Running", "rev2", 10, 1);
    if let Some(o) = retrying.operation_state.as_mut() {
        o.message = format!("{RETRYING} #1 in 30s");
        o.operation = op.clone();
    }
    assert_eq!(
        summary(&decide_sync(
            &a,
            Some(&op),
            &facts(false, 3, false),
            &retrying,
            NOW
        )),
        "later 20s"
    );
    assert_eq!(
        summary(&decide_sync(
            &a,
            Some(&op),
            &facts(false, 3, false),
            &retrying,
            NOW + 20
        )),
        "sync rev=rev2 prune=true dry_run=true automated=false"
    );
}

#[test]
fn retry_backoff_grows_by_the_factor_up_to_the_cap_and_stops_at_the_limit() {
    let r: RetryStrategy = serde_json::from_value(json!({
        "limit": 4, "backoff": {"duration": "5s", "factor": 3, "maxDuration": "1m"}
    }))
    .unwrap();
    let waits: Vec<Option<u64>> = (1..=5)
        .map(|n| retry_delay(&r, n).map(|d| d.as_secs()))
        .collect();
    assert_eq!(waits, [Some(5), Some(15), Some(45), Some(60), None]);
    let unlimited: RetryStrategy = serde_json::from_value(json!({"limit": -1})).unwrap();
    assert_eq!(retry_delay(&unlimited, 100).map(|d| d.as_secs()), Some(180));
    assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
    assert_eq!(parse_duration("42"), Some(Duration::from_secs(42)));
}

//! The sync decision after a compare, pure: a requested operation (waiting out its retry
//! backoff), or Argo CD's automated sync policy (`autoSync`: nothing when synced, refusing to
//! wipe everything without `allowEmpty`, not looping on prune-only differences without
//! `prune`, "already attempted" for the same revisions and sources unless a retry is due or
//! self-heal applies after its backoff). The clock is a parameter, so the whole policy table
//! is unit-tested (`decide/tests.rs`).

use ferry_model::*;
use serde_json::json;
use std::time::Duration;

pub(crate) enum Decision {
    None,
    /// Look again after this long.
    Later(Duration),
    Skip(String),
    /// A sync window keeps this sync from running now. A requested operation
    /// stays pending (Running, as in Argo CD) and runs once the window allows.
    Blocked {
        message: String,
        operation: Option<Box<Operation>>,
    },
    Sync {
        operation: Box<Operation>,
        prune: bool,
        dry_run: bool,
        automated: bool,
    },
}

/// How a retried operation's message starts, while it waits for its next attempt.
pub(crate) const RETRYING: &str = "Retrying attempt";

/// Argo CD's selfHealTimeoutSeconds: a live change seen right after a sync is more likely our
/// own write arriving late.
pub(crate) const SELF_HEAL_BACKOFF_SECS: i64 = 5;

/// What the decision needs from a compare.
#[derive(Debug, Clone, Default)]
pub(crate) struct CompareFacts {
    pub synced: bool,
    /// Desired objects that are not hooks.
    pub desired: usize,
    /// Every difference is a live object to prune.
    pub only_prune: bool,
    pub revisions: Vec<String>,
    pub sources: Vec<ApplicationSource>,
}

/// The wait before retry `attempt` (1-based), or None when the limit is reached.
pub(crate) fn retry_delay(retry: &RetryStrategy, attempt: i64) -> Option<Duration> {
    if retry.limit >= 0 && attempt > retry.limit {
        return None;
    }
    let b = retry.backoff.clone().unwrap_or_default();
    let base = b
        .duration
        .as_deref()
        .and_then(parse_duration)
        .unwrap_or(Duration::from_secs(5));
    let factor = b.factor.unwrap_or(2).max(1) as u32;
    let max = b
        .max_duration
        .as_deref()
        .and_then(parse_duration)
        .unwrap_or(Duration::from_secs(180));
    let d =
        base.saturating_mul(factor.saturating_pow(attempt.saturating_sub(1).clamp(0, 20) as u32));
    Some(d.min(max))
}

/// Go-style durations as Argo CD writes them: `5s`, `3m`, `1h`, `1m30s`, or bare seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    match s.trim().parse::<u64>() {
        Ok(n) => Some(Duration::from_secs(n)),
        Err(_) => ferry_model::parse_go_duration(s),
    }
}

fn finished_second(o: &OperationState) -> i64 {
    o.finished_at.as_ref().map(|t| t.0.as_second()).unwrap_or(0)
}

/// The decision at `now` (unix seconds), before sync windows.
pub(crate) fn decide_sync(
    app: &Application,
    op: Option<&Operation>,
    c: &CompareFacts,
    st: &ApplicationStatus,
    now: i64,
) -> Decision {
    if let Some(op) = op {
        // A retried operation waits out its backoff; our own status write
        // re-queues the app at once.
        if let Some(last) = st.operation_state.as_ref().filter(|o| {
            o.phase == "Running" && o.message.starts_with(RETRYING) && o.operation == *op
        }) && let Some(delay) = op
            .retry
            .as_ref()
            .and_then(|r| retry_delay(r, last.retry_count))
        {
            let due = finished_second(last) + delay.as_secs() as i64;
            if now < due {
                return Decision::Later(Duration::from_secs((due - now) as u64));
            }
        }
        let s = op.sync.clone().unwrap_or_default();
        return Decision::Sync {
            operation: Box::new(op.clone()),
            prune: s.prune,
            dry_run: s.dry_run,
            automated: false,
        };
    }
    let Some(auto) = app.automated() else {
        return Decision::None;
    };
    if c.synced {
        return Decision::None;
    }
    if c.desired == 0 && !auto.allow_empty {
        // Argo CD's wording, so alerts written for it keep matching.
        return Decision::Skip(format!(
            "Skipping sync attempt to {}: auto-sync will wipe out all resources",
            c.revisions.first().map(String::as_str).unwrap_or_default()
        ));
    }
    // Argo CD's guard: when the only difference is extra live objects and
    // automated prune is off, syncing changes nothing; do not loop.
    if c.only_prune && !auto.prune {
        return Decision::None;
    }
    let rev = c.revisions.first().cloned().unwrap_or_default();
    if let Some(last) = &st.operation_state {
        // "Already attempted": the last sync, whoever started it, was of
        // these revisions and these sources.
        let same_target = last.sync_result.as_ref().is_some_and(|r| {
            let revs: Vec<String> = if r.revisions.is_empty() {
                vec![r.revision.clone()]
            } else {
                r.revisions.clone()
            };
            let srcs: Vec<ApplicationSource> = match (&r.sources, &r.source) {
                (Some(v), _) => v.clone(),
                (None, Some(x)) => vec![x.clone()],
                _ => Vec::new(),
            };
            revs == c.revisions && srcs == c.sources
        });
        if same_target {
            if last.phase == "Failed" {
                let policy = app.spec.sync_policy.as_ref().and_then(|p| p.retry.as_ref());
                match policy.and_then(|p| retry_delay(p, last.retry_count + 1)) {
                    None => return Decision::None,
                    Some(d) => {
                        if now < finished_second(last) + d.as_secs() as i64 {
                            return Decision::None;
                        }
                    }
                }
            } else if !auto.self_heal {
                return Decision::None;
            } else if now < finished_second(last) + SELF_HEAL_BACKOFF_SECS {
                return Decision::Later(Duration::from_secs(SELF_HEAL_BACKOFF_SECS as u64));
            }
        }
    }
    let operation = Operation {
        sync: Some(SyncOperation {
            revision: Some(rev),
            prune: auto.prune,
            ..SyncOperation::default()
        }),
        initiated_by: Some(json!({ "automated": true })),
        retry: app.spec.sync_policy.as_ref().and_then(|p| p.retry.clone()),
        ..Operation::default()
    };
    Decision::Sync {
        operation: Box::new(operation),
        prune: auto.prune,
        dry_run: false,
        automated: true,
    }
}

#[cfg(test)]
mod tests;

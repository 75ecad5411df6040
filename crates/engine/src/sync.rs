//! Runs a sync as a resumable state machine: PreSync hooks, the Sync phase wave by wave (each
//! wave only once the previous one is healthy), prune, PostSync hooks; SyncFail hooks when
//! anything fails. A step does what can be done now and returns; when it has to wait (a wave
//! not yet healthy, a hook still running, a pruned object not yet gone) the caller records
//! the results and runs the next step later, from those results, in this process or in
//! another one after a restart, so no worker is held while a sync waits and nothing is done
//! twice: an object applied or a hook created is in the results.

mod ops;
mod progress;

use crate::cluster::{ClusterConn, Resolved};
use crate::plan::{self, HookKind, Phase};
use ferry_model::settings::ResourceSettings;
use ferry_model::tracking::ObjectKey;
use ferry_model::{ManagedNamespaceMetadata, ResourceResult, SyncOptions};
use futures::StreamExt;
use ops::Readiness;
pub use ops::{HOOK_OPERATION, api_message, apply, delete, dry_run_apply};
use progress::Task;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The field manager Ferry applies with.
pub const FIELD_MANAGER: &str = "ferry";

/// One rendered object to sync.
#[derive(Clone, Debug)]
pub struct Resource {
    pub key: ObjectKey,
    /// None when the cluster does not serve the kind yet (its CRD is in this sync).
    pub resolved: Option<Resolved>,
    pub desired: Value,
    pub hook: HookKind,
    /// App options with the object's own `sync-options` annotation applied.
    pub options: SyncOptions,
    /// False when compare found it in sync (ApplyOutOfSyncOnly skips it).
    pub out_of_sync: bool,
}

/// A live object that left Git.
#[derive(Clone, Debug)]
pub struct PruneTarget {
    pub key: ObjectKey,
    pub resolved: Resolved,
    pub version: String,
    /// `Prune=false` on the live object.
    pub disabled: bool,
    /// The live object's uid when the prune was decided: a recreated object
    /// of the same name is not deleted.
    pub uid: Option<String>,
    /// The live object's sync wave: prunes go in reverse wave order.
    pub wave: i64,
    /// `PruneLast=true` (on the object or the app): pruned after every other prune.
    pub prune_last: bool,
}

pub struct SyncRequest<'a> {
    pub conn: &'a ClusterConn,
    pub resources: Vec<Resource>,
    pub prune: Vec<PruneTarget>,
    /// Whether pruning is allowed at all (automated.prune or the operation's prune flag).
    pub prune_enabled: bool,
    pub options: SyncOptions,
    pub dry_run: bool,
    /// Create this namespace first (CreateNamespace=true).
    pub create_namespace: Option<(String, Option<ManagedNamespaceMetadata>)>,
    /// How long to wait for one wave to become healthy or one hook to finish.
    pub wave_timeout: Duration,
    /// argocd-cm's health customizations, so waves wait on the same health the
    /// app shows.
    pub settings: &'a ResourceSettings,
    /// Since when each wait of this operation has lasted (for `wave_timeout`).
    pub clock: &'a WaitClock,
    /// Names this operation in `clock` (the app and the operation's start).
    pub scope: String,
}

/// What earlier steps of the operation recorded: their results and, once it failed, the
/// operation's message.
#[derive(Clone, Copy, Default)]
pub struct Progress<'a> {
    pub results: &'a [ResourceResult],
    pub message: &'a str,
}

/// How a step ended.
#[derive(Debug)]
pub enum Step {
    /// Something is not ready yet: record the results (the message says what is awaited)
    /// and step again when the watched objects change.
    Waiting(SyncOutcome),
    Finished(SyncOutcome),
}

/// When each wait was first seen, so a wave times out after `wave_timeout` across steps.
/// In memory: a new process starts the clock again (a wait may then last up to one more
/// timeout), which is the safe side.
#[derive(Default)]
pub struct WaitClock(Mutex<HashMap<String, Instant>>);

impl WaitClock {
    /// How long `id` has been waited on; the first call starts its clock.
    pub fn waited(&self, id: &str) -> Duration {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(id.to_string())
            .or_insert_with(Instant::now)
            .elapsed()
    }

    /// Forgets an operation's waits once it finished.
    pub fn forget(&self, scope: &str) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|k, _| !k.starts_with(scope));
    }
}

#[derive(Debug, Default)]
pub struct SyncOutcome {
    pub succeeded: bool,
    pub message: String,
    pub results: Vec<ResourceResult>,
    /// What the API server returned for each applied object: the live state
    /// right after the sync, so no second comparison round is needed.
    pub applied: Vec<(ObjectKey, Value)>,
    /// Objects deleted by prune.
    pub pruned: Vec<ObjectKey>,
}

/// How many requests one sync keeps in flight.
const PARALLEL: usize = 16;

/// Runs the operation as far as it can go now, starting from what earlier steps recorded.
pub async fn step(req: SyncRequest<'_>, progress: Progress<'_>) -> Step {
    let mut out = SyncOutcome {
        succeeded: true,
        results: progress.results.to_vec(),
        ..SyncOutcome::default()
    };
    if progress::failing(&out.results) {
        out.succeeded = false;
        out.message = progress.message.to_string();
        return finish_failed(&req, out).await;
    }
    if out.results.is_empty() {
        // Compare dry-ran every non-hook object; hooks are validated here, so a bad
        // PostSync hook fails the sync before wave 0 changes anything.
        let invalid = ops::validate_hooks(&req).await;
        if !invalid.is_empty() {
            out.succeeded = false;
            let mut reasons = Vec::new();
            for (r, phase, message) in invalid {
                reasons.push(format!("{}: {message}", r.key));
                out.results
                    .push(result_for(r, phase, "SyncFailed", &message, true));
            }
            out.message = format!(
                "one or more synchronization tasks are not valid: {}",
                reasons.join("; ")
            );
            return Step::Finished(out);
        }
    }
    if let Some((ns, meta)) = &req.create_namespace
        && let Err(e) = ops::ensure_namespace(req.conn, ns, meta.as_ref(), req.dry_run).await
    {
        out.succeeded = false;
        out.message = format!("failed to create namespace {ns}: {e}");
        return Step::Finished(out);
    }

    let tasks = progress::tasks(&req.resources);
    let groups = progress::groups(&tasks);
    let has_post_sync = groups.iter().any(|g| g[0].phase == Phase::PostSync);
    let mut prune_done = false;
    for (index, group) in groups.iter().enumerate() {
        let phase = group[0].phase;
        // Prune once the last Sync wave is healthy, before PostSync hooks.
        if phase == Phase::PostSync && !prune_done {
            match prune(&req, &mut out).await {
                PruneStep::Done => prune_done = true,
                PruneStep::Waiting => return Step::Waiting(out),
                PruneStep::Failed => break,
            }
        }
        apply_group(&req, group, &mut out).await;
        if !out.succeeded {
            break;
        }
        if req.dry_run {
            continue;
        }
        // Hooks finish before anything after them starts; objects are healthy before the
        // next group (the last wave's objects are not waited for, as in Argo CD).
        let later = index + 1 < groups.len();
        // A later group already started in an earlier step: this one was done then.
        let passed = groups.get(index + 1).is_some_and(|next| {
            next.iter()
                .any(|t| progress::recorded(&out.results, &t.res.key, t.phase).is_some())
        });
        if passed {
            continue;
        }
        let awaited: Vec<&Task> = group.iter().filter(|t| t.is_hook() || later).collect();
        match ready(&req, &awaited, &mut out).await {
            GroupReady::Yes => {}
            GroupReady::Failed(message) => {
                out.succeeded = false;
                out.message = message;
                break;
            }
            GroupReady::Pending(names) => {
                let id = format!(
                    "{}/{}/{}",
                    req.scope,
                    phase.as_str(),
                    plan::wave(&group[0].res.desired)
                );
                if req.clock.waited(&id) > req.wave_timeout {
                    for t in &awaited {
                        mark_hook(&mut out.results, t, "Failed");
                    }
                    out.succeeded = false;
                    out.message = format!(
                        "timed out waiting for {} to become healthy",
                        names.join(", ")
                    );
                    break;
                }
                out.message = format!("waiting for healthy state of {}", names.join(", "));
                return Step::Waiting(out);
            }
        }
    }
    if out.succeeded && !prune_done && !has_post_sync {
        match prune(&req, &mut out).await {
            PruneStep::Done | PruneStep::Failed => {}
            PruneStep::Waiting => return Step::Waiting(out),
        }
    }
    if !out.succeeded {
        return finish_failed(&req, out).await;
    }
    finish_hooks(&req, &mut out).await;
    if out.message.is_empty() || out.message.starts_with("waiting for") {
        out.message = "successfully synced (all tasks run)".into();
    }
    Step::Finished(out)
}

/// Applies (or, for hooks, creates) what this group has not done in an earlier step.
async fn apply_group(req: &SyncRequest<'_>, group: &[Task<'_>], out: &mut SyncOutcome) {
    let phase = group[0].phase;
    let todo: Vec<&Task> = group
        .iter()
        .filter(|t| progress::recorded(&out.results, &t.res.key, t.phase).is_none())
        .filter(|t| t.is_hook() || !req.options.apply_out_of_sync_only || t.res.out_of_sync)
        .collect();
    // Kinds stay in order (a Namespace or CRD before what needs it); objects of one kind go
    // out together.
    let mut start = 0;
    while start < todo.len() {
        let rank = plan::kind_rank(&todo[start].res.key.kind);
        let end = todo[start..]
            .iter()
            .position(|t| plan::kind_rank(&t.res.key.kind) != rank)
            .map(|p| start + p)
            .unwrap_or(todo.len());
        let conn = req.conn;
        let dry_run = req.dry_run;
        let operation = req.scope.as_str();
        let mut pending = Vec::new();
        for t in &todo[start..end] {
            let t: Task = **t;
            pending.push(async move {
                let result = if t.is_hook() {
                    ops::run_hook(conn, t.res, dry_run, operation).await
                } else {
                    ops::apply(conn, t.res, dry_run).await
                };
                (t, result)
            });
        }
        let results: Vec<_> = futures::stream::iter(pending)
            .buffered(PARALLEL)
            .collect()
            .await;
        for (t, result) in results {
            let (status, message) = match &result {
                Ok((msg, _)) => ("Synced", msg.clone()),
                Err(e) => ("SyncFailed", e.clone()),
            };
            let mut recorded = result_for(t.res, phase, status, &message, t.is_hook());
            if t.is_hook() && status == "Synced" && !dry_run {
                recorded.hook_phase = "Running".into();
            }
            out.results.push(recorded);
            match result {
                Ok((_, Some(obj))) if !t.is_hook() => out.applied.push((t.res.key.clone(), obj)),
                Ok(_) => {}
                Err(e) => {
                    out.succeeded = false;
                    out.message = format!("one or more objects failed to apply, reason: {e}");
                }
            }
        }
        if !out.succeeded {
            return;
        }
        start = end;
    }
}

enum GroupReady {
    Yes,
    Pending(Vec<String>),
    Failed(String),
}

/// Reads each awaited object once; hooks that finished are recorded as Succeeded (and not
/// read again), a failed one as Failed.
async fn ready(req: &SyncRequest<'_>, awaited: &[&Task<'_>], out: &mut SyncOutcome) -> GroupReady {
    let mut pending = Vec::new();
    for t in awaited {
        if t.is_hook()
            && progress::recorded(&out.results, &t.res.key, t.phase)
                .is_some_and(|i| out.results[i].hook_phase == "Succeeded")
        {
            continue;
        }
        match ops::readiness(req.conn, req.settings, t.res).await {
            Readiness::Ready => mark_hook(&mut out.results, t, "Succeeded"),
            Readiness::Pending => pending.push(t.res.key.to_string()),
            Readiness::Failed(message) => {
                mark_hook(&mut out.results, t, "Failed");
                return GroupReady::Failed(message);
            }
        }
    }
    if pending.is_empty() {
        GroupReady::Yes
    } else {
        GroupReady::Pending(pending)
    }
}

fn mark_hook(results: &mut [ResourceResult], t: &Task<'_>, hook_phase: &str) {
    if !t.is_hook() {
        return;
    }
    if let Some(i) = progress::recorded(results, &t.res.key, t.phase) {
        results[i].hook_phase = hook_phase.into();
    }
}

/// The sync failed: SyncFail hooks run (once), then delete policies apply.
async fn finish_failed(req: &SyncRequest<'_>, mut out: SyncOutcome) -> Step {
    let fail_hooks: Vec<Task> = req
        .resources
        .iter()
        .filter(|r| matches!(&r.hook, HookKind::Hook(p) if p.contains(&Phase::SyncFail)))
        .map(|res| Task {
            phase: Phase::SyncFail,
            res,
        })
        .collect();
    if !fail_hooks.is_empty() {
        let mut sync_out = SyncOutcome {
            succeeded: true,
            results: std::mem::take(&mut out.results),
            ..SyncOutcome::default()
        };
        apply_group(req, &fail_hooks, &mut sync_out).await;
        out.results = sync_out.results;
        // SyncFail hooks clean up; let them finish before any delete policy.
        if !req.dry_run {
            let created: Vec<&Task> = fail_hooks
                .iter()
                .filter(|t| {
                    progress::recorded(&out.results, &t.res.key, Phase::SyncFail)
                        .is_some_and(|i| out.results[i].status == "Synced")
                })
                .collect();
            let mut hooks_out = SyncOutcome {
                results: std::mem::take(&mut out.results),
                ..SyncOutcome::default()
            };
            let readiness = ready(req, &created, &mut hooks_out).await;
            out.results = hooks_out.results;
            if let GroupReady::Pending(names) = readiness {
                let id = format!("{}/SyncFail", req.scope);
                if req.clock.waited(&id) <= req.wave_timeout {
                    return Step::Waiting(out);
                }
                tracing::warn!(hooks = %names.join(", "), "SyncFail hooks did not finish");
            }
        }
    }
    finish_hooks(req, &mut out).await;
    Step::Finished(out)
}

/// Hook delete policies, once the operation's outcome is known.
async fn finish_hooks(req: &SyncRequest<'_>, out: &mut SyncOutcome) {
    if req.dry_run {
        return;
    }
    let mut seen = HashSet::new();
    for result in out.results.iter().filter(|r| !r.hook_type.is_empty()) {
        let Some(r) = req.resources.iter().find(|r| {
            r.key.kind == result.kind
                && r.key.name == result.name
                && r.key.namespace == result.namespace
                && r.key.group == result.group
        }) else {
            continue;
        };
        if !seen.insert(r.key.clone()) {
            continue;
        }
        let ok = out
            .results
            .iter()
            .filter(|x| x.kind == result.kind && x.name == result.name && !x.hook_type.is_empty())
            .all(|x| x.hook_phase == "Succeeded");
        let policy = plan::delete_policy(&r.desired);
        let succeeded = ok && out.succeeded;
        if (succeeded && policy.on_success) || (!succeeded && policy.on_failure) {
            let _ = delete(req.conn, r.resolved.as_ref(), &r.key, "background").await;
        }
    }
}

fn result_for(
    r: &Resource,
    phase: Phase,
    status: &str,
    message: &str,
    hook: bool,
) -> ResourceResult {
    let version = r
        .desired
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    ResourceResult {
        group: r.key.group.clone(),
        version: version.rsplit('/').next().unwrap_or_default().to_string(),
        kind: r.key.kind.clone(),
        namespace: r.key.namespace.clone(),
        name: r.key.name.clone(),
        status: status.into(),
        message: message.into(),
        sync_phase: phase.as_str().into(),
        hook_type: if hook {
            phase.as_str().into()
        } else {
            String::new()
        },
        hook_phase: if hook {
            if status == "Synced" {
                "Succeeded".into()
            } else {
                "Failed".into()
            }
        } else {
            String::new()
        },
    }
}

enum PruneStep {
    Done,
    Waiting,
    Failed,
}

/// Prunes as Argo CD orders it: after the Sync phase, in reverse wave order (each wave gone
/// before the next starts), `PruneLast` objects last. Prunes an earlier step recorded are
/// not done again; one still on its way out makes this step wait.
async fn prune(req: &SyncRequest<'_>, out: &mut SyncOutcome) -> PruneStep {
    let mut seen = HashSet::new();
    let mut targets: Vec<&PruneTarget> = req
        .prune
        .iter()
        .filter(|p| seen.insert(p.key.clone()))
        .collect();
    targets.sort_by_key(|p| (p.prune_last, std::cmp::Reverse(p.wave)));
    let mut groups: Vec<Vec<&PruneTarget>> = Vec::new();
    for t in targets {
        match groups.last_mut() {
            Some(g) if (g[0].prune_last, g[0].wave) == (t.prune_last, t.wave) => g.push(t),
            _ => groups.push(vec![t]),
        }
    }
    let last_group = groups.len().saturating_sub(1);
    for (i, group) in groups.into_iter().enumerate() {
        let todo: Vec<&PruneTarget> = group
            .iter()
            .copied()
            .filter(|p| progress::pruned(&out.results, &p.key).is_none())
            .collect();
        for p in todo {
            let mut result = ResourceResult {
                group: p.key.group.clone(),
                version: p.version.clone(),
                kind: p.key.kind.clone(),
                namespace: p.key.namespace.clone(),
                name: p.key.name.clone(),
                sync_phase: "Sync".into(),
                ..ResourceResult::default()
            };
            if p.disabled {
                result.status = "PruneSkipped".into();
                result.message = "ignored (no prune)".into();
            } else if !req.prune_enabled {
                result.status = "PruneSkipped".into();
                result.message = "ignored (requires pruning)".into();
            } else if req.dry_run {
                result.status = "Pruned".into();
                result.message = "pruned (dry run)".into();
            } else {
                match ops::delete_uid(
                    req.conn,
                    &p.resolved,
                    &p.key,
                    &req.options.prune_propagation_policy,
                    p.uid.clone(),
                )
                .await
                {
                    Ok(()) => {
                        result.status = "Pruned".into();
                        result.message = "pruned".into();
                        out.pruned.push(p.key.clone());
                    }
                    Err(e) => {
                        result.status = "SyncFailed".into();
                        result.message = e.clone();
                        out.succeeded = false;
                        out.message = format!("failed to prune {}: {e}", p.key);
                    }
                }
            }
            out.results.push(result);
        }
        if !out.succeeded {
            return PruneStep::Failed;
        }
        // The next wave's prunes wait until this wave's objects are gone.
        if i < last_group && !req.dry_run {
            let mut going = Vec::new();
            for p in &group {
                let deleted = progress::pruned(&out.results, &p.key)
                    .is_some_and(|i| out.results[i].status == "Pruned");
                if !deleted {
                    continue;
                }
                match ops::still_there(req.conn, &p.resolved, &p.key, p.uid.as_deref()).await {
                    Ok(false) => {}
                    Ok(true) => going.push(p.key.to_string()),
                    Err(e) => {
                        out.succeeded = false;
                        out.message = e;
                        return PruneStep::Failed;
                    }
                }
            }
            if !going.is_empty() {
                let id = format!("{}/prune/{i}", req.scope);
                if req.clock.waited(&id) > req.wave_timeout {
                    out.succeeded = false;
                    out.message =
                        format!("timed out waiting for {} to be pruned", going.join(", "));
                    return PruneStep::Failed;
                }
                out.message = format!("waiting for {} to be pruned", going.join(", "));
                return PruneStep::Waiting;
            }
        }
    }
    PruneStep::Done
}

/// Runs every step of an operation in this task, waiting in between: for callers that hold
/// nothing another app needs (a CLI dry run, tests).
pub async fn run(req: SyncRequest<'_>) -> SyncOutcome {
    let mut results: Vec<ResourceResult> = Vec::new();
    let mut message = String::new();
    let mut applied = Vec::new();
    let mut pruned = Vec::new();
    loop {
        let next = SyncRequest {
            conn: req.conn,
            resources: req.resources.clone(),
            prune: req.prune.clone(),
            prune_enabled: req.prune_enabled,
            options: req.options.clone(),
            dry_run: req.dry_run,
            create_namespace: req.create_namespace.clone(),
            wave_timeout: req.wave_timeout,
            settings: req.settings,
            clock: req.clock,
            scope: req.scope.clone(),
        };
        match step(
            next,
            Progress {
                results: &results,
                message: &message,
            },
        )
        .await
        {
            Step::Finished(mut out) => {
                applied.append(&mut out.applied);
                pruned.append(&mut out.pruned);
                out.applied = applied;
                out.pruned = pruned;
                return out;
            }
            Step::Waiting(mut out) => {
                applied.append(&mut out.applied);
                pruned.append(&mut out.pruned);
                results = out.results;
                message = out.message;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
}

//! Runs a sync: PreSync hooks, the Sync phase wave by wave (each wave only
//! once the previous one is healthy), prune, PostSync hooks; SyncFail hooks
//! when anything fails.

use crate::cluster::{ClusterConn, Resolved};
use crate::health;
use crate::plan::{self, HookKind, Phase};
use ferry_model::settings::ResourceSettings;
use ferry_model::tracking::ObjectKey;
use ferry_model::{ManagedNamespaceMetadata, ResourceResult, SyncOptions};
use futures::StreamExt;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams, PropagationPolicy};
use serde_json::{Value, json};
use std::collections::HashSet;
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

struct Task<'a> {
    phase: Phase,
    res: &'a Resource,
}

pub async fn run(req: SyncRequest<'_>) -> SyncOutcome {
    let mut out = SyncOutcome {
        succeeded: true,
        ..SyncOutcome::default()
    };
    // Compare dry-ran every non-hook object; hooks are validated here, so a bad
    // PostSync hook fails the sync before wave 0 changes anything.
    let invalid = validate_hooks(&req).await;
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
        return out;
    }
    if let Some((ns, meta)) = &req.create_namespace
        && let Err(e) = ensure_namespace(req.conn, ns, meta.as_ref(), req.dry_run).await
    {
        out.succeeded = false;
        out.message = format!("failed to create namespace {ns}: {e}");
        return out;
    }

    let mut tasks: Vec<Task> = Vec::new();
    for r in &req.resources {
        match &r.hook {
            HookKind::Skip => {}
            HookKind::None => tasks.push(Task {
                phase: Phase::Sync,
                res: r,
            }),
            HookKind::Hook(phases) => {
                for p in phases {
                    if *p != Phase::SyncFail {
                        tasks.push(Task { phase: *p, res: r });
                    }
                }
            }
        }
    }
    tasks.sort_by_key(|t| plan::order_key(t.phase, &t.res.desired));

    let mut groups: Vec<Vec<&Task>> = Vec::new();
    for t in &tasks {
        let key = (t.phase, plan::wave(&t.res.desired));
        match groups.last_mut() {
            Some(g) if (g[0].phase, plan::wave(&g[0].res.desired)) == key => g.push(t),
            _ => groups.push(vec![t]),
        }
    }

    let mut pruned = false;
    let mut previous: Vec<&Task> = Vec::new();
    let mut ran_hooks: Vec<(&Resource, bool)> = Vec::new();
    for group in &groups {
        let phase = group[0].phase;
        // Each wave starts only once the previous one is healthy.
        if !previous.is_empty()
            && !req.dry_run
            && let Err(msg) =
                wait_healthy(req.conn, req.settings, &previous, req.wave_timeout).await
        {
            out.succeeded = false;
            out.message = msg;
            break;
        }
        // Prune once the last Sync wave is healthy, before PostSync hooks.
        if phase == Phase::PostSync && !pruned {
            prune(&req, &mut out).await;
            pruned = true;
            if !out.succeeded {
                break;
            }
        }
        // Kinds stay in order (a Namespace or CRD before what needs it);
        // objects of one kind go out together.
        let mut start = 0;
        while start < group.len() {
            let rank = plan::kind_rank(&group[start].res.key.kind);
            let end = group[start..]
                .iter()
                .position(|t| plan::kind_rank(&t.res.key.kind) != rank)
                .map(|p| start + p)
                .unwrap_or(group.len());
            let batch: Vec<&&Task> = group[start..end]
                .iter()
                .filter(|t| {
                    matches!(t.res.hook, HookKind::Hook(_))
                        || !req.options.apply_out_of_sync_only
                        || t.res.out_of_sync
                })
                .collect();
            let conn = req.conn;
            let dry_run = req.dry_run;
            let mut pending = Vec::new();
            for t in batch {
                pending.push(async move {
                    let r = t.res;
                    let is_hook = matches!(r.hook, HookKind::Hook(_));
                    let result = if is_hook {
                        run_hook(conn, r, dry_run).await
                    } else {
                        apply(conn, r, dry_run).await
                    };
                    (t, is_hook, result)
                });
            }
            let results: Vec<_> = futures::stream::iter(pending)
                .buffered(PARALLEL)
                .collect()
                .await;
            for (t, is_hook, result) in results {
                let r = t.res;
                let (status, message) = match &result {
                    Ok((msg, _)) => ("Synced", msg.clone()),
                    Err(e) => ("SyncFailed", e.clone()),
                };
                out.results
                    .push(result_for(r, phase, status, &message, is_hook));
                if is_hook {
                    ran_hooks.push((r, result.is_ok()));
                }
                match result {
                    Ok((_, Some(obj))) if !is_hook => out.applied.push((r.key.clone(), obj)),
                    Ok(_) => {}
                    Err(e) => {
                        out.succeeded = false;
                        out.message = format!("one or more objects failed to apply, reason: {e}");
                    }
                }
            }
            start = end;
        }
        if !out.succeeded {
            break;
        }
        // Hooks must finish before anything after them starts.
        let hooks: Vec<&Task> = group
            .iter()
            .copied()
            .filter(|t| matches!(t.res.hook, HookKind::Hook(_)))
            .collect();
        if !hooks.is_empty()
            && !req.dry_run
            && let Err(msg) = wait_healthy(req.conn, req.settings, &hooks, req.wave_timeout).await
        {
            out.succeeded = false;
            out.message = msg;
            for (r, ok) in ran_hooks.iter_mut() {
                if hooks.iter().any(|h| std::ptr::eq(h.res, *r)) {
                    *ok = false;
                }
            }
            break;
        }
        previous = group.clone();
    }
    if out.succeeded && !pruned {
        prune(&req, &mut out).await;
    }

    if !out.succeeded {
        let mut fail_hooks: Vec<Task> = Vec::new();
        for r in &req.resources {
            if let HookKind::Hook(p) = &r.hook
                && p.contains(&Phase::SyncFail)
            {
                let res = run_hook(req.conn, r, req.dry_run).await;
                let (status, message) = match &res {
                    Ok((m, _)) => ("Synced", m.clone()),
                    Err(e) => ("SyncFailed", e.clone()),
                };
                out.results
                    .push(result_for(r, Phase::SyncFail, status, &message, true));
                ran_hooks.push((r, res.is_ok()));
                if res.is_ok() {
                    fail_hooks.push(Task {
                        phase: Phase::SyncFail,
                        res: r,
                    });
                }
            }
        }
        // SyncFail hooks clean up; let them finish before any delete policy.
        if !fail_hooks.is_empty() && !req.dry_run {
            let refs: Vec<&Task> = fail_hooks.iter().collect();
            if let Err(msg) = wait_healthy(req.conn, req.settings, &refs, req.wave_timeout).await {
                tracing::warn!(error = %msg, "SyncFail hook did not finish");
            }
        }
    }
    if !req.dry_run {
        for (r, ok) in ran_hooks {
            let policy = plan::delete_policy(&r.desired);
            let succeeded = ok && out.succeeded;
            if (succeeded && policy.on_success) || (!succeeded && policy.on_failure) {
                let _ = delete(req.conn, r.resolved.as_ref(), &r.key, "background").await;
            }
        }
    }
    if out.succeeded && out.message.is_empty() {
        out.message = "successfully synced (all tasks run)".into();
    }
    out
}

/// Server-side dry-run of every hook, as the object its run will create: a hook
/// is created anew each sync (`BeforeHookCreation` deletes the old one), so it
/// is validated as a create; when the previous run's hook still exists, under a
/// generated name, never conflicting with that immutable Job. Hooks whose kind arrives with this sync cannot be checked yet
/// (Argo CD's SkipDryRunOnMissingResource).
async fn validate_hooks<'r>(req: &'r SyncRequest<'_>) -> Vec<(&'r Resource, Phase, String)> {
    let created_ns = req.create_namespace.as_ref().map(|(ns, _)| ns.as_str());
    let mut pending = Vec::new();
    for r in &req.resources {
        let (HookKind::Hook(phases), Some(resolved)) = (&r.hook, &r.resolved) else {
            continue;
        };
        let phase = phases.first().copied().unwrap_or(Phase::Sync);
        pending.push(async move {
            let result = dry_run_create(req.conn, resolved, r).await;
            (r, phase, result)
        });
    }
    let results: Vec<_> = futures::stream::iter(pending)
        .buffered(PARALLEL)
        .collect()
        .await;
    results
        .into_iter()
        .filter_map(|(r, phase, result)| match result {
            Ok(()) => None,
            // The namespace this sync creates first does not exist yet.
            Err(e)
                if created_ns == Some(r.key.namespace.as_str())
                    && e.contains("namespaces")
                    && e.contains("not found") =>
            {
                None
            }
            Err(e) => Some((r, phase, e)),
        })
        .collect()
}

async fn dry_run_create(
    conn: &ClusterConn,
    resolved: &Resolved,
    r: &Resource,
) -> Result<(), String> {
    let api = conn.api(resolved, &r.key.namespace);
    let mut obj: DynamicObject =
        serde_json::from_value(r.desired.clone()).map_err(|e| e.to_string())?;
    let pp = PostParams {
        dry_run: true,
        field_manager: Some(FIELD_MANAGER.into()),
    };
    match api.create(&pp, &obj).await {
        Ok(_) => return Ok(()),
        // The previous run's hook is still there: validate under a generated name.
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(api_message(&e)),
    }
    // Names are at most 253 characters; generateName adds 5.
    let prefix: String = r.key.name.chars().take(200).collect();
    obj.metadata.generate_name = Some(format!("{prefix}-"));
    obj.metadata.name = None;
    api.create(&pp, &obj)
        .await
        .map(|_| ())
        .map_err(|e| api_message(&e))
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

async fn resolve_now(conn: &ClusterConn, r: &Resource) -> Result<Resolved, String> {
    if let Some(res) = &r.resolved {
        return Ok(res.clone());
    }
    let api_version = r
        .desired
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    // A CRD applied earlier in this sync takes a moment to be served.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match conn.resolve(api_version, &r.key.kind).await {
            Ok(res) => return Ok(res),
            Err(e) if Instant::now() > deadline => {
                return Err(format!(
                    "the server could not find the requested resource {api_version}/{}: {e}",
                    r.key.kind
                ));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Server-side apply (or replace, with `Replace=true`); returns a message and
/// the object as the API server returned it.
pub async fn apply(
    conn: &ClusterConn,
    r: &Resource,
    dry_run: bool,
) -> Result<(String, Option<Value>), String> {
    let resolved = resolve_now(conn, r).await?;
    let api = conn.api(&resolved, &r.key.namespace);
    if r.options.replace {
        let existing = api
            .get_opt(&r.key.name)
            .await
            .map_err(|e| api_message(&e))?;
        let mut obj: DynamicObject =
            serde_json::from_value(r.desired.clone()).map_err(|e| e.to_string())?;
        let pp = PostParams {
            dry_run,
            field_manager: Some(FIELD_MANAGER.into()),
        };
        return match existing {
            Some(live) => {
                obj.metadata.resource_version = live.metadata.resource_version;
                match api.replace(&r.key.name, &pp, &obj).await {
                    Ok(o) => Ok((
                        format!("{} replaced", lower(&r.key.kind)),
                        Some(to_value(&o, &resolved)),
                    )),
                    // `Force=true`: an object that cannot be replaced in place
                    // (an immutable field changed) is deleted and created, as
                    // `kubectl replace --force` does.
                    Err(kube::Error::Api(e)) if r.options.force && e.code == 422 && !dry_run => {
                        delete_and_wait(&api, r).await?;
                        obj.metadata.resource_version = None;
                        let o = api.create(&pp, &obj).await.map_err(|e| api_message(&e))?;
                        Ok((
                            format!("{} replaced (forced)", lower(&r.key.kind)),
                            Some(to_value(&o, &resolved)),
                        ))
                    }
                    Err(e) => Err(api_message(&e)),
                }
            }
            None => {
                let o = api.create(&pp, &obj).await.map_err(|e| api_message(&e))?;
                Ok((
                    format!("{} created", lower(&r.key.kind)),
                    Some(to_value(&o, &resolved)),
                ))
            }
        };
    }
    let mut pp = PatchParams::apply(FIELD_MANAGER).force();
    pp.dry_run = dry_run;
    match api.patch(&r.key.name, &pp, &Patch::Apply(&r.desired)).await {
        Ok(o) => Ok((
            format!("{} serverside-applied", lower(&r.key.kind)),
            Some(to_value(&o, &resolved)),
        )),
        // `Force=true` (or a sync strategy with force): an object the API server will not
        // change in place (an immutable field) is deleted and applied again, as
        // `kubectl apply --force` does.
        Err(kube::Error::Api(e)) if r.options.force && e.code == 422 && !dry_run => {
            delete_and_wait(&api, r).await?;
            let o = api
                .patch(&r.key.name, &pp, &Patch::Apply(&r.desired))
                .await
                .map_err(|e| api_message(&e))?;
            Ok((
                format!("{} serverside-applied (forced)", lower(&r.key.kind)),
                Some(to_value(&o, &resolved)),
            ))
        }
        Err(e) => Err(api_message(&e)),
    }
}

/// Deletes an object (foreground) and waits up to a minute until it is gone.
async fn delete_and_wait(api: &kube::Api<DynamicObject>, r: &Resource) -> Result<(), String> {
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..DeleteParams::default()
    };
    api.delete(&r.key.name, &dp)
        .await
        .map_err(|e| api_message(&e))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.get_opt(&r.key.name).await.ok().flatten().is_some() {
        if Instant::now() > deadline {
            return Err(format!(
                "{} was not deleted within 60s for a forced apply",
                r.key
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

fn to_value(o: &DynamicObject, resolved: &Resolved) -> Value {
    let mut v = serde_json::to_value(o).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.insert("apiVersion".into(), json!(resolved.api.api_version));
        m.insert("kind".into(), json!(resolved.api.kind));
    }
    v
}

/// What applying would produce, without changing anything.
pub async fn dry_run_apply(
    conn: &ClusterConn,
    resolved: &Resolved,
    key: &ObjectKey,
    desired: &Value,
) -> Result<Value, kube::Error> {
    let api = conn.api(resolved, &key.namespace);
    let mut pp = PatchParams::apply(FIELD_MANAGER).force();
    pp.dry_run = true;
    let o = api.patch(&key.name, &pp, &Patch::Apply(desired)).await?;
    Ok(to_value(&o, resolved))
}

async fn run_hook(
    conn: &ClusterConn,
    r: &Resource,
    dry_run: bool,
) -> Result<(String, Option<Value>), String> {
    let resolved = resolve_now(conn, r).await?;
    let api = conn.api(&resolved, &r.key.namespace);
    if dry_run {
        return Ok(("hook would run".into(), None));
    }
    let policy = plan::delete_policy(&r.desired);
    if policy.before_creation
        && api
            .get_opt(&r.key.name)
            .await
            .map_err(|e| api_message(&e))?
            .is_some()
    {
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        let _ = api.delete(&r.key.name, &dp).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while api.get_opt(&r.key.name).await.ok().flatten().is_some() {
            if Instant::now() > deadline {
                return Err(format!(
                    "previous hook {} was not deleted within 60s",
                    r.key.name
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let mut pp = PatchParams::apply(FIELD_MANAGER).force();
    pp.dry_run = false;
    api.patch(&r.key.name, &pp, &Patch::Apply(&r.desired))
        .await
        .map_err(|e| api_message(&e))?;
    Ok((format!("{} created", lower(&r.key.kind)), None))
}

/// Waits until every task's object is healthy (hooks: finished successfully).
async fn wait_healthy(
    conn: &ClusterConn,
    settings: &ResourceSettings,
    tasks: &[&Task<'_>],
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<&Resource> = tasks.iter().map(|t| t.res).collect();
    loop {
        let mut still = Vec::new();
        for r in pending {
            let Ok(resolved) = resolve_now(conn, r).await else {
                still.push(r);
                continue;
            };
            let api = conn.api(&resolved, &r.key.namespace);
            // Read directly: the shared cache may not have seen our apply yet.
            let live = match api.get_opt(&r.key.name).await {
                Ok(Some(o)) => {
                    let mut v = serde_json::to_value(&o).unwrap_or(Value::Null);
                    v["apiVersion"] = json!(resolved.api.api_version);
                    v["kind"] = json!(resolved.api.kind);
                    v
                }
                Ok(None) => {
                    let is_hook = matches!(r.hook, HookKind::Hook(_));
                    if is_hook {
                        // Deleted by its own HookSucceeded policy elsewhere: done.
                        continue;
                    }
                    still.push(r);
                    continue;
                }
                Err(_) => {
                    still.push(r);
                    continue;
                }
            };
            match health::assess_with(&live, settings).map(|h| (h.status, h.message)) {
                None => {}
                Some((s, _)) if s == health::HEALTHY || s == health::SUSPENDED => {}
                Some((s, m)) if s == health::DEGRADED => {
                    let what = if matches!(r.hook, HookKind::Hook(_)) {
                        "hook"
                    } else {
                        "resource"
                    };
                    return Err(format!(
                        "{what} {} is {s}: {}",
                        r.key,
                        m.unwrap_or_default()
                    ));
                }
                Some(_) => still.push(r),
            }
        }
        if still.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            let names: Vec<String> = still.iter().map(|r| r.key.to_string()).collect();
            return Err(format!(
                "timed out waiting for {} to become healthy",
                names.join(", ")
            ));
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Prunes as Argo CD orders it: after the Sync phase, in reverse wave order
/// (each wave gone before the next starts), `PruneLast` objects last.
async fn prune(req: &SyncRequest<'_>, out: &mut SyncOutcome) {
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
        let mut deleted = Vec::new();
        for p in group {
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
                match delete_uid(
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
                        deleted.push(p);
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
            return;
        }
        // The next wave's prunes wait until this wave's objects are gone.
        if i < last_group
            && let Err(e) = wait_gone(req.conn, &deleted, req.wave_timeout).await
        {
            out.succeeded = false;
            out.message = e;
            return;
        }
    }
}

async fn wait_gone(
    conn: &ClusterConn,
    targets: &[&PruneTarget],
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    for p in targets {
        let api = conn.api(&p.resolved, &p.key.namespace);
        loop {
            let still = match api.get_opt(&p.key.name).await {
                Ok(Some(o)) => p.uid.is_none() || o.metadata.uid == p.uid,
                Ok(None) => false,
                Err(e) => {
                    return Err(format!(
                        "waiting for {} to be pruned: {}",
                        p.key,
                        api_message(&e)
                    ));
                }
            };
            if !still {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("timed out waiting for {} to be pruned", p.key));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    Ok(())
}

/// Deletes one object only if it is still the one with `uid`.
async fn delete_uid(
    conn: &ClusterConn,
    resolved: &Resolved,
    key: &ObjectKey,
    policy: &str,
    uid: Option<String>,
) -> Result<(), String> {
    let api = conn.api(resolved, &key.namespace);
    let propagation = match policy {
        "background" => PropagationPolicy::Background,
        "orphan" => PropagationPolicy::Orphan,
        _ => PropagationPolicy::Foreground,
    };
    let dp = DeleteParams {
        propagation_policy: Some(propagation),
        preconditions: uid.map(|u| kube::api::Preconditions {
            uid: Some(u),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&key.name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(api_message(&e)),
    }
}

/// Deletes one object; a missing object counts as deleted.
pub async fn delete(
    conn: &ClusterConn,
    resolved: Option<&Resolved>,
    key: &ObjectKey,
    policy: &str,
) -> Result<(), String> {
    match resolved {
        Some(r) => delete_uid(conn, r, key, policy, None).await,
        None => Ok(()),
    }
}

async fn ensure_namespace(
    conn: &ClusterConn,
    ns: &str,
    meta: Option<&ManagedNamespaceMetadata>,
    dry_run: bool,
) -> Result<(), String> {
    let resolved = conn
        .resolve("v1", "Namespace")
        .await
        .map_err(|e| api_message(&e))?;
    let api = conn.api(&resolved, "");
    let mut obj = json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns } });
    if let Some(m) = meta {
        obj["metadata"]["labels"] = json!(m.labels);
        obj["metadata"]["annotations"] = json!(m.annotations);
    } else if api
        .get_opt(ns)
        .await
        .map_err(|e| api_message(&e))?
        .is_some()
    {
        return Ok(());
    }
    let mut pp = PatchParams::apply(FIELD_MANAGER).force();
    pp.dry_run = dry_run;
    api.patch(ns, &pp, &Patch::Apply(&obj))
        .await
        .map_err(|e| api_message(&e))?;
    Ok(())
}

/// The API server's own message, which is what a user needs to see.
pub fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

fn lower(kind: &str) -> String {
    kind.to_lowercase()
}

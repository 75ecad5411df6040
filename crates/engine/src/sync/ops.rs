//! What a sync step asks of the cluster: dry-runs, applies, hook runs, deletes and one-off
//! reads of live state. No waiting here: a step that has to wait returns and is run again.

use super::{Resource, SyncRequest};
use crate::cluster::{ClusterConn, Resolved};
use crate::health;
use crate::plan::{self, HookKind, Phase};
use ferry_model::ManagedNamespaceMetadata;
use ferry_model::settings::ResourceSettings;
use ferry_model::tracking::ObjectKey;
use futures::StreamExt;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams, PropagationPolicy};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

use super::{FIELD_MANAGER, PARALLEL};

/// Server-side dry-run of every hook, as the object its run will create: a hook
/// is created anew each sync (`BeforeHookCreation` deletes the old one), so it
/// is validated as a create; when the previous run's hook still exists, under a
/// generated name, never conflicting with that immutable Job. Hooks whose kind arrives with this sync cannot be checked yet
/// (Argo CD's SkipDryRunOnMissingResource).
pub(super) async fn validate_hooks<'r>(
    req: &'r SyncRequest<'_>,
) -> Vec<(&'r Resource, Phase, String)> {
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

pub(super) async fn resolve_now(conn: &ClusterConn, r: &Resource) -> Result<Resolved, String> {
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

pub(super) async fn run_hook(
    conn: &ClusterConn,
    r: &Resource,
    dry_run: bool,
    operation: &str,
) -> Result<(String, Option<Value>), String> {
    let resolved = resolve_now(conn, r).await?;
    let api = conn.api(&resolved, &r.key.namespace);
    if dry_run {
        return Ok(("hook would run".into(), None));
    }
    let live = api
        .get_opt(&r.key.name)
        .await
        .map_err(|e| api_message(&e))?;
    // Created by this operation in a step whose result was never recorded (the process died
    // in between): it runs already; creating it again would run it twice.
    if live.as_ref().is_some_and(|o| {
        o.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(HOOK_OPERATION))
            .is_some_and(|v| v == operation)
    }) {
        return Ok((format!("{} created", lower(&r.key.kind)), None));
    }
    let policy = plan::delete_policy(&r.desired);
    if policy.before_creation && live.is_some() {
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
    let mut desired = r.desired.clone();
    if let Some(meta) = desired.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
        if let Some(a) = annotations.as_object_mut() {
            a.insert(HOOK_OPERATION.into(), json!(operation));
        }
    }
    let mut pp = PatchParams::apply(FIELD_MANAGER).force();
    pp.dry_run = false;
    api.patch(&r.key.name, &pp, &Patch::Apply(&desired))
        .await
        .map_err(|e| api_message(&e))?;
    Ok((format!("{} created", lower(&r.key.kind)), None))
}

/// On each hook Ferry creates: the operation that created it.
pub const HOOK_OPERATION: &str = "ferry.dev/sync-operation";

/// Deletes one object only if it is still the one with `uid`.
pub(super) async fn delete_uid(
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

pub(super) async fn ensure_namespace(
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

/// Where one object stands on the way to healthy, read once from the API server (the shared
/// cache may not have seen this sync's own apply yet).
pub(super) enum Readiness {
    Ready,
    Pending,
    Failed(String),
}

pub(super) async fn readiness(
    conn: &ClusterConn,
    settings: &ResourceSettings,
    r: &Resource,
) -> Readiness {
    let is_hook = matches!(r.hook, HookKind::Hook(_));
    let Ok(resolved) = resolve_now(conn, r).await else {
        return Readiness::Pending;
    };
    let api = conn.api(&resolved, &r.key.namespace);
    let live = match api.get_opt(&r.key.name).await {
        Ok(Some(o)) => to_value(&o, &resolved),
        // A hook gone after it ran was deleted by its own policy or by hand: it is done.
        Ok(None) if is_hook => return Readiness::Ready,
        Ok(None) | Err(_) => return Readiness::Pending,
    };
    match health::assess_with(&live, settings).map(|h| (h.status, h.message)) {
        None => Readiness::Ready,
        Some((s, _)) if s == health::HEALTHY || s == health::SUSPENDED => Readiness::Ready,
        Some((s, m)) if s == health::DEGRADED => {
            let what = if is_hook { "hook" } else { "resource" };
            Readiness::Failed(format!(
                "{what} {} is {s}: {}",
                r.key,
                m.unwrap_or_default()
            ))
        }
        Some(_) => Readiness::Pending,
    }
}

/// Whether a pruned object is still there (the same object: a recreated one of the same
/// name does not count).
pub(super) async fn still_there(
    conn: &ClusterConn,
    resolved: &Resolved,
    key: &ObjectKey,
    uid: Option<&str>,
) -> Result<bool, String> {
    let api = conn.api(resolved, &key.namespace);
    match api.get_opt(&key.name).await {
        Ok(Some(o)) => Ok(uid.is_none() || o.metadata.uid.as_deref() == uid),
        Ok(None) => Ok(false),
        Err(e) => Err(format!(
            "waiting for {key} to be pruned: {}",
            api_message(&e)
        )),
    }
}

//! Kubernetes Events on Applications, with Argo CD's reasons and messages (its controller's
//! `logAppEvent`): an automated sync initiated, an operation's result, sync and health status
//! changes, and each resource a sync changed or pruned. Best effort: an Event that cannot be
//! written is logged, never a reason to fail a reconcile.

use ferry_model::Application;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use std::borrow::Cow;

pub const OPERATION_STARTED: &str = "OperationStarted";
pub const OPERATION_COMPLETED: &str = "OperationCompleted";
pub const RESOURCE_UPDATED: &str = "ResourceUpdated";
pub const RESOURCE_CREATED: &str = "ResourceCreated";
pub const RESOURCE_DELETED: &str = "ResourceDeleted";

/// `kubectl describe`'s "From" column.
const COMPONENT: &str = "ferry-controller";
/// Resources one event names at most; the rest are counted.
pub const MAX_NAMED: usize = 20;

pub struct AppEvent {
    pub warning: bool,
    /// Ours are constants; a condition's reason is whatever the condition says.
    pub reason: Cow<'static, str>,
    pub message: String,
}

impl AppEvent {
    pub fn normal(reason: &'static str, message: String) -> AppEvent {
        AppEvent {
            warning: false,
            reason: reason.into(),
            message,
        }
    }
    pub fn warning(reason: &'static str, message: String) -> AppEvent {
        AppEvent {
            warning: true,
            reason: reason.into(),
            message,
        }
    }
}

/// The Event for `e` on the object `involved` (apiVersion, kind, namespace, name, uid), as
/// Argo CD writes them: a new object per event, never aggregated (pure; [`emit_for`] writes it).
fn event(
    involved: &Value,
    annotations: &Value,
    component: &str,
    e: &AppEvent,
    now: k8s_openapi::jiff::Timestamp,
) -> Event {
    serde_json::from_value(json!({
        "metadata": {
            "name": format!("{}.{:x}", involved["name"].as_str().unwrap_or_default(), now.as_nanosecond()),
            "namespace": involved["namespace"],
            "annotations": annotations,
        },
        "involvedObject": involved,
        "reason": e.reason,
        "message": e.message,
        "type": if e.warning { "Warning" } else { "Normal" },
        "source": { "component": component },
        "firstTimestamp": now.to_string(),
        "lastTimestamp": now.to_string(),
        "count": 1,
    }))
    .unwrap_or_default()
}

/// Writes `events` on an Application in the background, in order, with the destination in
/// the annotations as Argo CD's controller does.
pub fn emit(client: &Client, app: &Application, events: Vec<AppEvent>) {
    let dest = &app.spec.destination;
    let involved = json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "name": app.name_any(), "namespace": app.namespace().unwrap_or_default(),
        "uid": app.uid().unwrap_or_default(), "resourceVersion": app.resource_version().unwrap_or_default(),
    });
    let annotations = json!({
        "dest-server": dest.server.clone().unwrap_or_default(),
        "dest-namespace": dest.namespace.clone().unwrap_or_default(),
    });
    emit_for(client, involved, annotations, COMPONENT, events);
}

/// Writes `events` on any object (an Application, KubeVela's Application, Flux's image objects)
/// in the background, in order: `involved` is its apiVersion, kind, namespace, name and uid;
/// `component` the controller it speaks for.
pub fn emit_for(
    client: &Client,
    involved: Value,
    annotations: Value,
    component: &'static str,
    events: Vec<AppEvent>,
) {
    if events.is_empty() {
        return;
    }
    let ns = involved["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    tokio::spawn(async move {
        for e in events {
            let ev = event(
                &involved,
                &annotations,
                component,
                &e,
                k8s_openapi::jiff::Timestamp::now(),
            );
            tracing::info!(kind = %involved["kind"], namespace = %ns, name = %involved["name"],
                reason = %e.reason, message = %e.message, "event");
            if let Err(err) = api.create(&PostParams::default(), &ev).await {
                tracing::warn!(name = %involved["name"], error = %err, "could not write an event");
            }
        }
    });
}

/// Events for a KubeVela Application whose status went from `old` to `new`, in vela-core's
/// reasons: the workflow's phase, and each condition that turned false.
pub fn oam_status_changes(old: &Value, new: &Value) -> Vec<AppEvent> {
    let mut out = Vec::new();
    let phase = |v: &Value| v["status"].as_str().unwrap_or_default().to_string();
    let (was, now) = (phase(old), phase(new));
    if was != now && !now.is_empty() {
        out.push(if now == "running" {
            AppEvent::normal("Deployed", "Deployed successfully".into())
        } else if now.contains("Failed") {
            AppEvent::warning("FailedWorkflow", format!("workflow phase {now}"))
        } else {
            AppEvent::normal("PhaseChanged", format!("Application phase {was} -> {now}"))
        });
    }
    out.extend(false_conditions(old, new));
    out
}

/// A Warning for each condition that is False in `new` with a message it did not have before.
fn false_conditions(old: &Value, new: &Value) -> Vec<AppEvent> {
    let empty = Vec::new();
    let before = old["conditions"].as_array().unwrap_or(&empty);
    new["conditions"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .filter(|c| c["status"] == "False")
        .filter(|c| {
            !before.iter().any(|b| {
                b["type"] == c["type"] && b["status"] == "False" && b["message"] == c["message"]
            })
        })
        .map(|c| AppEvent {
            warning: true,
            reason: Cow::Owned(c["reason"].as_str().unwrap_or("Failed").to_string()),
            message: c["message"].as_str().unwrap_or_default().to_string(),
        })
        .collect()
}

/// Events for a Flux image object whose status went from `old` to `new`, in Flux's words: a
/// policy's newly chosen tag, an automation's pushed commit, and Ready turning false.
pub fn image_status_changes(kind: &str, old: &Value, new: &Value) -> Vec<AppEvent> {
    let mut out = Vec::new();
    match kind {
        "ImagePolicy" => {
            let tag = |v: &Value| v["latestRef"]["tag"].as_str().map(str::to_string);
            if let (Some(now), image) = (
                tag(new),
                new["latestRef"]["name"].as_str().unwrap_or_default(),
            ) {
                match tag(old) {
                    None => out.push(AppEvent::normal(
                        "Succeeded",
                        format!("Latest image tag for {image} resolved to {now}"),
                    )),
                    Some(was) if was != now => out.push(AppEvent::normal(
                        "Succeeded",
                        format!("Latest image tag for {image} updated from {was} to {now}"),
                    )),
                    _ => {}
                }
            }
        }
        "ImageUpdateAutomation" => {
            let commit = |v: &Value| v["lastPushCommit"].as_str().map(str::to_string);
            if let Some(now) = commit(new)
                && commit(old).as_deref() != Some(now.as_str())
            {
                out.push(AppEvent::normal(
                    "Succeeded",
                    format!(
                        "pushed commit '{}'",
                        now.chars().take(7).collect::<String>()
                    ),
                ));
            }
        }
        _ => {}
    }
    out.extend(false_conditions(old, new));
    out
}

/// Argo CD's messages for status changes (an empty old value prints empty, as Argo CD's does).
pub fn status_changes(
    old_sync: &str,
    new_sync: &str,
    old_health: &str,
    new_health: &str,
) -> Vec<AppEvent> {
    let mut out = Vec::new();
    if old_sync != new_sync && !new_sync.is_empty() {
        out.push(AppEvent::normal(
            RESOURCE_UPDATED,
            format!("Updated sync status: {old_sync} -> {new_sync}"),
        ));
    }
    if old_health != new_health && !new_health.is_empty() {
        out.push(AppEvent::normal(
            RESOURCE_UPDATED,
            format!("Updated health status: {old_health} -> {new_health}"),
        ));
    }
    out
}

/// The result of a finished operation, in Argo CD's words.
pub fn operation_completed(
    revision: &str,
    succeeded: bool,
    partial: bool,
    message: &str,
) -> AppEvent {
    let what = if partial {
        "Partial sync operation"
    } else {
        "Sync operation"
    };
    if succeeded {
        AppEvent::normal(
            OPERATION_COMPLETED,
            format!("{what} to {revision} succeeded"),
        )
    } else {
        AppEvent::warning(
            OPERATION_COMPLETED,
            format!("{what} to {revision} failed: {message}"),
        )
    }
}

/// The resources a sync created, changed or pruned (`changed`: group, kind, namespace, name,
/// whether it existed before, the apply's message; `pruned` likewise): one event for what was
/// applied and one for what was pruned, each naming up to [`MAX_NAMED`] resources — an Event per
/// object would double the API requests of a sync.
pub fn resources(
    changed: &[(String, String, String, String, bool, String)],
    pruned: &[(String, String, String, String)],
) -> Vec<AppEvent> {
    let id = |g: &str, k: &str, ns: &str, n: &str| {
        format!(
            "{g}/{k}/{}{n}",
            if ns.is_empty() {
                String::new()
            } else {
                format!("{ns}/")
            }
        )
    };
    let list = |names: Vec<String>| {
        let total = names.len();
        let mut shown: Vec<String> = names.into_iter().take(MAX_NAMED).collect();
        if total > MAX_NAMED {
            shown.push(format!("and {} more", total - MAX_NAMED));
        }
        shown.join(", ")
    };
    let plural = |n: usize| if n == 1 { "resource" } else { "resources" };
    let mut out = Vec::new();
    if !changed.is_empty() {
        let names = changed
            .iter()
            .map(|(g, k, ns, n, existed, _)| {
                format!(
                    "{} ({})",
                    id(g, k, ns, n),
                    if *existed { "updated" } else { "created" }
                )
            })
            .collect();
        let reason = if changed.iter().all(|c| !c.4) {
            RESOURCE_CREATED
        } else {
            RESOURCE_UPDATED
        };
        out.push(AppEvent::normal(
            reason,
            format!(
                "Applied {} {}: {}",
                changed.len(),
                plural(changed.len()),
                list(names)
            ),
        ));
    }
    if !pruned.is_empty() {
        let names = pruned.iter().map(|(g, k, ns, n)| id(g, k, ns, n)).collect();
        out.push(AppEvent::normal(
            RESOURCE_DELETED,
            format!(
                "Pruned {} {}: {}",
                pruned.len(),
                plural(pruned.len()),
                list(names)
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argo_cd_messages() {
        let e = status_changes("", "OutOfSync", "Healthy", "Progressing");
        assert_eq!(e[0].message, "Updated sync status:  -> OutOfSync");
        assert_eq!(
            e[1].message,
            "Updated health status: Healthy -> Progressing"
        );
        assert!(status_changes("Synced", "Synced", "Healthy", "Healthy").is_empty());
        let ok = operation_completed("abc123", true, false, "");
        assert_eq!(ok.message, "Sync operation to abc123 succeeded");
        assert!(!ok.warning);
        let failed = operation_completed("abc123", false, true, "one or more objects failed");
        assert_eq!(
            failed.message,
            "Partial sync operation to abc123 failed: one or more objects failed"
        );
        assert!(failed.warning);
    }

    #[test]
    fn kubevela_and_flux_state_changes() {
        let e = oam_status_changes(
            &json!({"status": "runningWorkflow"}),
            &json!({"status": "running"}),
        );
        assert_eq!(
            (e[0].reason.as_ref(), e[0].message.as_str()),
            ("Deployed", "Deployed successfully")
        );
        let failed = json!({"status": "running", "conditions": [
            {"type": "Rendered", "status": "False", "reason": "RenderError", "message": "bad trait"}]});
        let e = oam_status_changes(&json!({"status": "running"}), &failed);
        assert_eq!(e.len(), 1);
        assert!(e[0].warning && e[0].reason == "RenderError" && e[0].message == "bad trait");
        assert!(oam_status_changes(&failed, &failed).is_empty(), "no repeat");

        let p = |tag: &str| json!({"latestRef": {"name": "reg/app", "tag": tag}});
        let e = image_status_changes("ImagePolicy", &json!({}), &p("1.0.0"));
        assert_eq!(
            e[0].message,
            "Latest image tag for reg/app resolved to 1.0.0"
        );
        let e = image_status_changes("ImagePolicy", &p("1.0.0"), &p("1.1.0"));
        assert_eq!(
            e[0].message,
            "Latest image tag for reg/app updated from 1.0.0 to 1.1.0"
        );
        assert!(image_status_changes("ImagePolicy", &p("1.1.0"), &p("1.1.0")).is_empty());
        let e = image_status_changes(
            "ImageUpdateAutomation",
            &json!({}),
            &json!({"lastPushCommit": "0123456789abcdef"}),
        );
        assert_eq!(e[0].message, "pushed commit '0123456'");
    }

    #[test]
    fn one_event_for_what_was_applied_and_one_for_what_was_pruned() {
        let changed: Vec<_> = (0..25)
            .map(|i| {
                (
                    "".to_string(),
                    "ConfigMap".to_string(),
                    "ns".to_string(),
                    format!("cm-{i}"),
                    i % 2 == 0,
                    "configured".to_string(),
                )
            })
            .collect();
        let pruned = vec![(
            "apps".into(),
            "Deployment".into(),
            "ns".into(),
            "old".into(),
        )];
        let e = resources(&changed, &pruned);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].reason, RESOURCE_UPDATED);
        assert!(
            e[0].message.starts_with(
                "Applied 25 resources: /ConfigMap/ns/cm-0 (updated), /ConfigMap/ns/cm-1 (created), "
            ),
            "{}",
            e[0].message
        );
        assert!(e[0].message.ends_with(", and 5 more"), "{}", e[0].message);
        assert_eq!(e[1].reason, RESOURCE_DELETED);
        assert_eq!(e[1].message, "Pruned 1 resource: apps/Deployment/ns/old");
        let created = resources(&changed[1..2], &[]);
        assert_eq!(created[0].reason, RESOURCE_CREATED);
        assert!(resources(&[], &[]).is_empty());
    }
}

//! Small pieces every screen shares: status badges (a symbol and a word, never colour alone),
//! app locations and masking of secret values.

use ferry_model::Application;
use kube::ResourceExt;
use maud::{Markup, html};
use serde_json::Value;

pub fn health_symbol(status: &str) -> &'static str {
    match status {
        "Healthy" => "♥",
        "Progressing" => "◔",
        "Degraded" => "✖",
        "Suspended" => "‖",
        "Missing" => "⊘",
        _ => "?",
    }
}

pub fn sync_symbol(status: &str) -> &'static str {
    match status {
        "Synced" => "✔",
        "OutOfSync" => "⚠",
        _ => "?",
    }
}

fn class_of(status: &str) -> String {
    status
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase()
}

pub fn health_badge(status: &str) -> Markup {
    let status = if status.is_empty() { "Unknown" } else { status };
    html! {
        span class={ "badge health-" (class_of(status)) } title={ "Health: " (status) } {
            span aria-hidden="true" { (health_symbol(status)) } " " (status)
        }
    }
}

pub fn sync_badge(status: &str) -> Markup {
    let status = if status.is_empty() { "Unknown" } else { status };
    html! {
        span class={ "badge sync-" (class_of(status)) } title={ "Sync: " (status) } {
            span aria-hidden="true" { (sync_symbol(status)) } " " (status)
        }
    }
}

pub fn app_health(a: &Application) -> String {
    a.status
        .as_ref()
        .and_then(|s| s.health.as_ref())
        .map(|h| h.status.clone())
        .unwrap_or_else(|| "Unknown".into())
}

pub fn app_sync(a: &Application) -> String {
    a.status
        .as_ref()
        .and_then(|s| s.sync.as_ref())
        .map(|h| h.status.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "Unknown".into())
}

pub fn app_ns(a: &Application) -> String {
    a.namespace().unwrap_or_default()
}

/// `/applications/<namespace>/<name>`.
pub fn app_href(a: &Application) -> String {
    format!("/applications/{}/{}", app_ns(a), a.name_any())
}

/// The cluster an app deploys to, as its destination names it.
pub fn app_cluster(a: &Application) -> String {
    let d = &a.spec.destination;
    d.name
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| d.server.clone())
        .unwrap_or_default()
}

pub fn app_dest_namespace(a: &Application) -> String {
    a.spec.destination.namespace.clone().unwrap_or_default()
}

pub fn app_repo(a: &Application) -> String {
    a.sources()
        .first()
        .map(|s| s.repo_url.clone())
        .unwrap_or_default()
}

/// A Secret's values replaced by `+` runs, as Argo CD shows them: equal values get equal
/// masks and different values different ones, so a diff still says which keys changed and
/// nothing of the values themselves.
pub fn mask_secrets(live: Option<&mut Value>, desired: Option<&mut Value>) {
    fn is_secret(v: &Value) -> bool {
        v.get("kind").and_then(Value::as_str) == Some("Secret")
            && v.get("apiVersion").and_then(Value::as_str) == Some("v1")
    }
    let live_is = live.as_deref().is_some_and(is_secret);
    let desired_is = desired.as_deref().is_some_and(is_secret);
    if !live_is && !desired_is {
        return;
    }
    let mut seen: Vec<String> = Vec::new();
    let mut mask = |v: &Value| -> Value {
        let text = v.to_string();
        let i = seen.iter().position(|s| *s == text).unwrap_or_else(|| {
            seen.push(text);
            seen.len() - 1
        });
        Value::String("+".repeat(8 + i))
    };
    for obj in [live, desired].into_iter().flatten() {
        for field in ["data", "stringData"] {
            if let Some(Value::Object(m)) = obj.get_mut(field) {
                for (_, v) in m.iter_mut() {
                    *v = mask(v);
                }
            }
        }
        // The last-applied annotation repeats the values.
        if let Some(Value::Object(a)) = obj.pointer_mut("/metadata/annotations") {
            for (k, v) in a.iter_mut() {
                if k == "kubectl.kubernetes.io/last-applied-configuration" {
                    *v = Value::String("++++++++".into());
                }
            }
        }
        if let Some(Value::Array(fields)) = obj.pointer_mut("/metadata/managedFields") {
            fields.clear();
        }
    }
}

/// YAML for display; JSON when YAML cannot be written.
pub fn yaml(v: &Value) -> String {
    serde_saphyr::to_string(v)
        .unwrap_or_else(|_| serde_json::to_string_pretty(v).unwrap_or_default())
}

/// A unified diff of two manifests, as text.
pub fn diff(live: &str, desired: &str) -> String {
    similar::TextDiff::from_lines(live, desired)
        .unified_diff()
        .context_radius(3)
        .header("live", "desired")
        .to_string()
}

/// A diff with each line marked for styling (added, removed, context).
pub fn diff_block(text: &str) -> Markup {
    html! {
        pre.diff {
            @for line in text.lines() {
                @let class = if line.starts_with("+++") || line.starts_with("---") { "h" }
                    else if line.starts_with('+') { "add" }
                    else if line.starts_with('-') { "del" }
                    else if line.starts_with("@@") { "h" }
                    else { "ctx" };
                span class=(class) { (line) } "\n"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_values_are_masked_and_changes_still_show() {
        let mut live = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{\"a\":\"c2VjcmV0\"}}"}},
            "data": {"a": "c2VjcmV0", "b": "c2FtZQ=="}});
        let mut desired = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "data": {"a": "bmV3", "b": "c2FtZQ=="}});
        mask_secrets(Some(&mut live), Some(&mut desired));
        let text = format!("{live}{desired}");
        assert!(!text.contains("c2VjcmV0") && !text.contains("bmV3") && !text.contains("c2FtZQ"));
        assert_eq!(live["data"]["b"], desired["data"]["b"]);
        assert_ne!(live["data"]["a"], desired["data"]["a"]);
    }

    #[test]
    fn other_kinds_are_left_alone() {
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"}});
        mask_secrets(Some(&mut cm), None);
        assert_eq!(cm["data"]["a"], "b");
    }

    #[test]
    fn badges_say_the_status_in_words() {
        let b = health_badge("Degraded").into_string();
        assert!(b.contains("Degraded") && b.contains("health-degraded"));
        assert!(sync_badge("").into_string().contains("Unknown"));
    }
}

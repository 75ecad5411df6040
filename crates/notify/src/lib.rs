//! notify: Argo CD notifications — triggers, templates, subscriptions and the notified state, evaluated purely over an Application; the services that deliver them at the edge (`send`).
//!
//! The controller gives [`plan`] an Application (as JSON), its destinations
//! ([`subscribe`]) and its recorded state ([`state`]); the plan names what is due, which
//! entries to forget, and every error. Each due notification is rendered ([`render`]) and
//! delivered ([`send::deliver`]); only a delivery that succeeded is recorded. Semantics
//! follow Argo CD's notifications engine; docs/notifications.md lists the differences.

pub mod config;
pub mod expr;
pub mod send;
pub mod state;
pub mod subscribe;
pub mod template;

pub use config::{Config, Problem};
pub use state::State;
pub use subscribe::{Destination, Destinations};
pub use template::Notification;

use chrono::{DateTime, Utc};
use expr::{Env, Val};
use serde_json::Value as Json;

/// A notification to send now.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    pub trigger: String,
    /// Template names, in order.
    pub templates: Vec<String>,
    pub destination: Destination,
    /// The key recorded in the state once it is delivered.
    pub state_key: String,
    /// The condition's `oncePer` value, if it has one.
    pub once_per: Option<String>,
}

/// What one evaluation of an app's triggers found.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub due: Vec<Due>,
    /// State entries of conditions that are false now.
    pub forget: Vec<String>,
    /// (trigger, message): a trigger not configured or broken, a condition that failed.
    pub errors: Vec<(String, String)>,
    /// (trigger, triggered) per condition evaluated, for metrics.
    pub evaluations: Vec<(String, bool)>,
}

/// Evaluates the subscribed triggers of `app` against `state`.
pub fn plan(
    cfg: &Config,
    app: &Json,
    destinations: &Destinations,
    state: &State,
    now: DateTime<Utc>,
) -> Plan {
    let mut plan = Plan::default();
    let context = Json::Object(
        cfg.context
            .iter()
            .map(|(k, v)| (k.clone(), Json::String(v.clone())))
            .chain(std::iter::once((
                "notificationType".to_string(),
                Json::String(String::new()),
            )))
            .collect(),
    );
    let secrets = serde_json::to_value(&cfg.secrets).unwrap_or_default();
    let env = Env {
        app,
        context: &context,
        secrets: &secrets,
        now,
    };
    for (trigger, dests) in destinations {
        let Some(conditions) = cfg.triggers.get(trigger) else {
            let why = match cfg.broken.get(&format!("trigger.{trigger}")) {
                Some(problem) => format!("trigger '{trigger}' is invalid: {problem}"),
                None => format!("trigger '{trigger}' is not configured"),
            };
            plan.errors.push((trigger.clone(), why));
            continue;
        };
        for c in conditions {
            let triggered = match c.when.eval(&env) {
                Ok(Val::Bool(b)) => b,
                Ok(other) => {
                    plan.errors.push((
                        trigger.clone(),
                        format!(
                            "condition {:?} gave {other}, not true or false",
                            c.when.source()
                        ),
                    ));
                    false
                }
                Err(e) => {
                    plan.errors.push((
                        trigger.clone(),
                        format!(
                            "failed to execute when condition {:?}: {e}",
                            c.when.source()
                        ),
                    ));
                    false
                }
            };
            plan.evaluations.push((trigger.clone(), triggered));
            if !triggered {
                for d in dests {
                    let key = state::key(trigger, &c.key, &d.service, &d.recipient, None);
                    if state.contains(&key) {
                        plan.forget.push(key);
                    }
                }
                continue;
            }
            let once_per = match &c.once_per {
                None => None,
                Some(p) => match p.eval(&env) {
                    Ok(v) => Some(v.to_string()),
                    Err(e) => {
                        plan.errors.push((
                            trigger.clone(),
                            format!("failed to execute oncePer {:?}: {e}", p.source()),
                        ));
                        // Argo CD sends once without a oncePer value then; so does Ferry.
                        None
                    }
                },
            };
            for d in dests {
                let key = state::key(
                    trigger,
                    &c.key,
                    &d.service,
                    &d.recipient,
                    once_per.as_deref(),
                );
                if !state.contains(&key) {
                    plan.due.push(Due {
                        trigger: trigger.clone(),
                        templates: c.send.clone(),
                        destination: d.clone(),
                        state_key: key,
                        once_per: once_per.clone(),
                    });
                }
            }
        }
    }
    plan
}

/// Shapes an Application's JSON as Argo CD's Go types serialise it, which conditions are
/// written against: `status`, `status.sync` and `status.health` are structs there, always
/// present (empty before the first reconcile), so `app.status.health.status` is nil, not an
/// error; `operationState` is a pointer and stays absent until a sync.
pub fn argo_shape(app: &mut Json) {
    if !app["status"].is_object() {
        app["status"] = Json::Object(Default::default());
    }
    for field in ["sync", "health"] {
        if !app["status"][field].is_object() {
            app["status"][field] = Json::Object(Default::default());
        }
    }
}

/// Renders the templates of `due` for its destination.
pub fn render(cfg: &Config, app: &Json, due: &Due) -> Result<Notification, String> {
    let vars = template::vars(
        app,
        &cfg.context,
        &cfg.secrets,
        &due.destination.service,
        &due.destination.recipient,
    );
    let mut n = Notification::default();
    for name in &due.templates {
        let Some(t) = cfg.templates.get(name) else {
            return Err(match cfg.broken.get(&format!("template.{name}")) {
                Some(problem) => format!("template '{name}' is invalid: {problem}"),
                None => format!("template '{name}' is not supported"),
            });
        };
        t.apply(&mut n, &vars)
            .map_err(|e| format!("template '{name}': {e}"))?;
    }
    Ok(n)
}

/// Argo CD's `isAppSyncStatusRefreshed`, inverted: an operation finished after the last
/// reconcile wrote the sync status, so the status may still describe the old revision. The
/// controller waits for the next status before evaluating.
pub fn status_out_of_date(app: &Json) -> bool {
    let op = &app["status"]["operationState"];
    let phase = op["phase"].as_str().unwrap_or_default();
    if !matches!(phase, "Failed" | "Error" | "Succeeded") {
        return false;
    }
    let parse = |v: &Json| {
        v.as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
    };
    let Some(finished) = parse(&op["finishedAt"]) else {
        return true;
    };
    let reconciled = parse(&app["status"]["reconciledAt"]);
    let observed = parse(&app["status"]["observedAt"]);
    if reconciled.is_none() && observed.is_none() {
        return false;
    }
    reconciled.is_none_or(|r| finished > r) && observed.is_none_or(|o| finished > o)
}

/// `https://host/owner/repo` for a Git URL in any of its forms (`git@host:owner/repo.git`,
/// `ssh://…`, `https://…`): Argo CD's `repo.RepoURLToHTTPS`.
pub fn repo_url_to_https(url: &str) -> String {
    let trimmed = url.trim_end_matches(".git");
    if let Some(rest) = trimmed.strip_prefix("git@")
        && let Some((host, path)) = rest.split_once(':')
    {
        return format!("https://{host}/{path}");
    }
    if let Ok(mut u) = reqwest::Url::parse(trimmed) {
        let _ = u.set_username("");
        let _ = u.set_password(None);
        let _ = u.set_scheme("https");
        let _ = u.set_port(None);
        return u.to_string().trim_end_matches('/').to_string();
    }
    trimmed.to_string()
}

/// `owner/repo`: the first two path segments of a Git URL, without `.git`.
pub fn full_name_by_repo_url(url: &str) -> String {
    let https = repo_url_to_https(url);
    let path = match reqwest::Url::parse(&https) {
        Ok(u) => u.path().to_string(),
        Err(_) => https,
    };
    path.split('/')
        .filter(|s| !s.is_empty())
        .take(2)
        .collect::<Vec<_>>()
        .join("/")
}

/// Go's `url.QueryEscape`.
pub fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests;

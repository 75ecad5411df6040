//! Who hears about what: `notifications.argoproj.io/subscribe.<trigger>.<service>` annotations
//! on Applications and their AppProjects, and the ConfigMap's global `subscriptions`
//! (`pkg/subscriptions/annotations.go`, `Config.GetGlobalDestinations`).

use crate::config::Config;
use std::collections::BTreeMap;

pub const SUBSCRIBE_PREFIX: &str = "notifications.argoproj.io/subscribe.";

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Destination {
    /// The service's name.
    pub service: String,
    /// A channel, an address, or empty (webhooks, GitHub).
    pub recipient: String,
}

/// Trigger name → destinations, deduplicated.
pub type Destinations = BTreeMap<String, Vec<Destination>>;

fn recipients(value: &str) -> Vec<String> {
    if value.is_empty() {
        return vec![String::new()];
    }
    value
        .split(';')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect()
}

fn add(out: &mut Destinations, trigger: &str, service: &str, recipient: &str) {
    let dest = Destination {
        service: service.to_string(),
        recipient: recipient.to_string(),
    };
    let list = out.entry(trigger.to_string()).or_default();
    if !list.contains(&dest) {
        list.push(dest);
    }
}

/// Subscriptions from annotations. `subscribe.<service>` (no trigger) subscribes to
/// `defaultTriggers.<service>`, else `defaultTriggers`; when neither names a trigger the
/// annotation subscribes to nothing, and that is returned as a problem (Argo CD drops it
/// without a word).
pub fn from_annotations<'a>(
    out: &mut Destinations,
    annotations: impl Iterator<Item = (&'a String, &'a String)>,
    cfg: &Config,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (k, v) in annotations {
        let Some(rest) = k.strip_prefix(SUBSCRIBE_PREFIX) else {
            continue;
        };
        let parts: Vec<&str> = rest.split('.').collect();
        let (trigger, service) = if parts.len() >= 2 {
            (Some(parts[0]), parts[1])
        } else {
            (None, parts[0])
        };
        let triggers: Vec<String> = match trigger {
            Some(t) => vec![t.to_string()],
            None => cfg
                .service_default_triggers
                .get(service)
                .cloned()
                .unwrap_or_else(|| cfg.default_triggers.clone()),
        };
        if triggers.is_empty() {
            problems.push(format!(
                "{k} names no trigger, and neither defaultTriggers.{service} nor defaultTriggers is set: it subscribes to nothing"
            ));
        }
        for r in recipients(v) {
            for t in &triggers {
                add(out, t, service, &r);
            }
        }
    }
    problems
}

/// The global `subscriptions` whose selector matches the app's labels.
pub fn global(out: &mut Destinations, labels: &BTreeMap<String, String>, cfg: &Config) {
    for s in &cfg.subscriptions {
        let Ok(selector) = Selector::parse(&s.selector) else {
            continue;
        };
        if !selector.matches(labels) {
            continue;
        }
        let triggers = if s.triggers.is_empty() {
            &cfg.default_triggers
        } else {
            &s.triggers
        };
        for r in &s.recipients {
            let mut parts = r.splitn(3, ':');
            let service = parts.next().unwrap_or_default();
            let recipient = parts.next().unwrap_or_default();
            for t in triggers {
                add(out, t, service, recipient);
            }
        }
    }
}

/// A Kubernetes label selector in its string form: `a=b`, `a==b`, `a!=b`, `a`, `!a`,
/// `a in (x,y)`, `a notin (x,y)`, joined by commas.
#[derive(Debug, Clone, Default)]
pub struct Selector(Vec<Requirement>);

#[derive(Debug, Clone)]
enum Requirement {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    Absent(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl Selector {
    pub fn parse(text: &str) -> Result<Selector, String> {
        let mut reqs = Vec::new();
        let mut parts = Vec::new();
        let mut depth = 0;
        let mut current = String::new();
        for c in text.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(std::mem::take(&mut current));
                    continue;
                }
                _ => {}
            }
            current.push(c);
        }
        parts.push(current);
        for p in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
            let set = |p: &str, word: &str| -> Option<(String, Vec<String>)> {
                let (key, rest) = p.split_once(word)?;
                let rest = rest.trim();
                let inner = rest.strip_prefix('(')?.strip_suffix(')')?;
                Some((
                    key.trim().to_string(),
                    inner.split(',').map(|v| v.trim().to_string()).collect(),
                ))
            };
            if let Some((k, v)) = set(p, " notin ") {
                reqs.push(Requirement::NotIn(k, v));
            } else if let Some((k, v)) = set(p, " in ") {
                reqs.push(Requirement::In(k, v));
            } else if let Some((k, v)) = p.split_once("!=") {
                reqs.push(Requirement::Ne(k.trim().into(), v.trim().into()));
            } else if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
                reqs.push(Requirement::Eq(k.trim().into(), v.trim().into()));
            } else if let Some(k) = p.strip_prefix('!') {
                reqs.push(Requirement::Absent(k.trim().into()));
            } else if p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            {
                reqs.push(Requirement::Exists(p.into()));
            } else {
                return Err(format!("cannot read the label selector {p:?}"));
            }
        }
        Ok(Selector(reqs))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Eq(k, v) => labels.get(k) == Some(v),
            Requirement::Ne(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::Absent(k) => !labels.contains_key(k),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Requirement::NotIn(k, vs) => !labels.get(k).is_some_and(|l| vs.contains(l)),
        })
    }
}

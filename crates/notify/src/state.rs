//! The `notified.notifications.argoproj.io` annotation: which notifications an Application
//! has had, as Argo CD's engine records them (`pkg/controller/state.go`), so a restarted or
//! newly elected controller — or Argo CD itself — sends nothing twice.

use std::collections::BTreeMap;

pub const ANNOTATION: &str = "notified.notifications.argoproj.io";

/// Entries kept at most; the oldest go first.
pub const MAX_ENTRIES: usize = 100;

/// State key → unix seconds when it was sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State(pub BTreeMap<String, i64>);

/// `[oncePer:]trigger:conditionKey:service:recipient`.
pub fn key(
    trigger: &str,
    condition_key: &str,
    service: &str,
    recipient: &str,
    once_per: Option<&str>,
) -> String {
    let key = format!("{trigger}:{condition_key}:{service}:{recipient}");
    match once_per {
        Some(v) if !v.is_empty() => format!("{v}:{key}"),
        _ => key,
    }
}

impl State {
    /// A missing or unreadable annotation is an empty state, as in Argo CD.
    pub fn from_annotation(value: Option<&str>) -> State {
        State(
            value
                .and_then(|v| serde_json::from_str(v).ok())
                .unwrap_or_default(),
        )
    }

    /// The annotation's value, `None` when empty (the annotation is then removed).
    pub fn to_annotation(&self) -> Option<String> {
        if self.0.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&self.0).unwrap_or_default())
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    pub fn record(&mut self, key: &str, now_unix: i64) {
        self.0.insert(key.to_string(), now_unix);
        self.truncate();
    }

    /// A condition that went false: its entry goes, so the next true notifies again. Entries
    /// with a oncePer value stay: those notify once per value.
    pub fn forget(&mut self, key: &str) -> bool {
        self.0.remove(key).is_some()
    }

    fn truncate(&mut self) {
        while self.0.len() > MAX_ENTRIES {
            let Some(oldest) = self
                .0
                .iter()
                .min_by_key(|(k, t)| (**t, (*k).clone()))
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.0.remove(&oldest);
        }
    }
}

//! AppProject `syncWindows`, decided as Argo CD decides them: a window is active
//! from each cron fire for `duration`; an active deny window blocks (a manual
//! sync passes only when every active deny window has `manualSync`); when allow
//! windows match the app, one of them must be active (or, for a manual sync,
//! every inactive one must have `manualSync`).

use crate::{Destination, glob_match};
use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SyncWindow {
    /// `allow` or `deny`.
    #[serde(default)]
    pub kind: String,
    /// Five-field cron expression.
    #[serde(default)]
    pub schedule: String,
    /// Go duration, e.g. `1h30m`.
    #[serde(default)]
    pub duration: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applications: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<String>,
    #[serde(default)]
    pub manual_sync: bool,
    /// IANA zone the schedule is read in; UTC when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub time_zone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// All configured lists must match, instead of any.
    #[serde(default, rename = "andOperator")]
    pub use_and_operator: bool,
    /// Fields this struct does not know, kept so they are reported, never dropped.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unknown: BTreeMap<String, Value>,
}

/// The verdict for one app at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WindowVerdict {
    /// No window restricts the app now.
    Allowed,
    /// Only a manual sync may run (Argo CD's "Manual Allowed").
    ManualOnly,
    /// Nothing may sync ("Sync Denied").
    Denied,
}

impl WindowVerdict {
    /// Argo CD's wording in `argocd app get` and `argocd proj windows list`.
    pub fn as_str(&self) -> &'static str {
        match self {
            WindowVerdict::Allowed => "Sync Allowed",
            WindowVerdict::ManualOnly => "Manual Allowed",
            WindowVerdict::Denied => "Sync Denied",
        }
    }

    pub fn allows(&self, manual: bool) -> bool {
        match self {
            WindowVerdict::Allowed => true,
            WindowVerdict::ManualOnly => manual,
            WindowVerdict::Denied => false,
        }
    }
}

impl SyncWindow {
    /// Checks the fields; errors use Argo CD's wording.
    pub fn validate(&self) -> Result<(), String> {
        if self.kind != "allow" && self.kind != "deny" {
            return Err(format!(
                "kind '{}' mismatch: can only be allow or deny",
                self.kind
            ));
        }
        self.cron()?;
        self.length()?;
        self.zone()?;
        if self.applications.is_empty() && self.namespaces.is_empty() && self.clusters.is_empty() {
            return Err(
                "window must have at least one of applications, namespaces or clusters".into(),
            );
        }
        Ok(())
    }

    fn cron(&self) -> Result<Cron, String> {
        CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(&self.schedule)
            .map_err(|e| format!("cannot parse schedule '{}': {e}", self.schedule))
    }

    fn length(&self) -> Result<chrono::Duration, String> {
        let d = crate::parse_go_duration(&self.duration)
            .ok_or_else(|| format!("cannot parse duration '{}'", self.duration))?;
        chrono::Duration::from_std(d).map_err(|e| format!("duration '{}': {e}", self.duration))
    }

    fn zone(&self) -> Result<chrono_tz::Tz, String> {
        if self.time_zone.is_empty() {
            return Ok(chrono_tz::UTC);
        }
        self.time_zone
            .parse()
            .map_err(|_| format!("unknown time zone '{}'", self.time_zone))
    }

    /// Whether `now` falls within `duration` after a fire of the schedule.
    pub fn is_active(&self, now: DateTime<Utc>) -> Result<bool, String> {
        let cron = self.cron()?;
        let length = self.length()?;
        let zone = self.zone()?;
        // Every window has the same length, so only the latest fire can cover now.
        match cron.find_previous_occurrence(&now.with_timezone(&zone), true) {
            Ok(fire) => Ok(now < fire.with_timezone(&Utc) + length),
            Err(_) => Ok(false),
        }
    }

    /// Whether the window applies to an app with this name and destination.
    pub fn matches(&self, app_name: &str, dest: &Destination) -> bool {
        let any = |patterns: &[String], value: &str| {
            patterns.iter().any(|p| p == "*" || glob_match(p, value))
        };
        let cluster = dest
            .name
            .as_deref()
            .filter(|n| !n.is_empty())
            .or(dest.server.as_deref())
            .unwrap_or_default();
        let namespace = dest.namespace.as_deref().unwrap_or_default();
        let checks = [
            (&self.applications, app_name),
            (&self.clusters, cluster),
            (&self.namespaces, namespace),
        ];
        let configured = checks.iter().filter(|(p, _)| !p.is_empty());
        if self.use_and_operator {
            let mut configured = configured.peekable();
            configured.peek().is_some() && configured.all(|(p, v)| any(p, v))
        } else {
            checks.iter().any(|(p, v)| any(p, v))
        }
    }
}

/// Argo CD's `CanSync` over the windows that match an app, as a verdict.
/// An invalid window is an error: a typo must never open or close a window silently.
pub fn window_verdict(
    windows: &[SyncWindow],
    app_name: &str,
    dest: &Destination,
    now: DateTime<Utc>,
) -> Result<WindowVerdict, String> {
    let matching: Vec<&SyncWindow> = windows
        .iter()
        .filter(|w| w.matches(app_name, dest))
        .collect();
    if matching.is_empty() {
        return Ok(WindowVerdict::Allowed);
    }
    let mut active_deny = Vec::new();
    let mut active_allow = Vec::new();
    let mut inactive_allow = Vec::new();
    for w in matching {
        w.validate()
            .map_err(|e| format!("invalid sync windows: {e}"))?;
        let active = w.is_active(now)?;
        match (w.kind.as_str(), active) {
            ("deny", true) => active_deny.push(w),
            ("allow", true) => active_allow.push(w),
            ("allow", false) => inactive_allow.push(w),
            _ => {}
        }
    }
    let manual_ok = |ws: &[&SyncWindow]| ws.iter().all(|w| w.manual_sync);
    if !active_deny.is_empty() {
        return Ok(if manual_ok(&active_deny) {
            WindowVerdict::ManualOnly
        } else {
            WindowVerdict::Denied
        });
    }
    if !active_allow.is_empty() || inactive_allow.is_empty() {
        return Ok(WindowVerdict::Allowed);
    }
    Ok(if manual_ok(&inactive_allow) {
        WindowVerdict::ManualOnly
    } else {
        WindowVerdict::Denied
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn window(kind: &str, schedule: &str, duration: &str) -> SyncWindow {
        SyncWindow {
            kind: kind.into(),
            schedule: schedule.into(),
            duration: duration.into(),
            applications: vec!["*".into()],
            ..SyncWindow::default()
        }
    }

    fn dest(ns: &str) -> Destination {
        Destination {
            server: Some("https://kubernetes.default.svc".into()),
            name: None,
            namespace: Some(ns.into()),
            ..Destination::default()
        }
    }

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 7, h, m, 0).unwrap()
    }

    #[test]
    fn active_from_each_fire_for_the_duration_in_the_zone() {
        let w = window("deny", "0 22 * * *", "2h");
        assert!(w.is_active(at(22, 0)).unwrap());
        assert!(w.is_active(at(23, 59)).unwrap());
        assert!(!w.is_active(at(21, 59)).unwrap());
        // The end is exclusive: yesterday's 22:00 window closes at midnight.
        assert!(
            w.is_active(at(0, 0) - chrono::Duration::minutes(1))
                .unwrap()
        );
        assert!(!w.is_active(at(0, 0)).unwrap());
        let mut z = window("deny", "0 9 * * *", "1h");
        z.time_zone = "Europe/Amsterdam".into(); // UTC+1 in December
        assert!(z.is_active(at(8, 30)).unwrap());
        assert!(!z.is_active(at(9, 30)).unwrap());
    }

    #[test]
    fn can_sync_as_argo_cd_decides() {
        let d = dest("prod");
        let deny = window("deny", "* * * * *", "1h");
        assert_eq!(
            window_verdict(std::slice::from_ref(&deny), "a", &d, at(12, 0)).unwrap(),
            WindowVerdict::Denied
        );
        let mut manual = deny.clone();
        manual.manual_sync = true;
        assert_eq!(
            window_verdict(&[manual.clone()], "a", &d, at(12, 0)).unwrap(),
            WindowVerdict::ManualOnly
        );
        // Every active deny must allow manual syncs.
        assert_eq!(
            window_verdict(&[manual, deny.clone()], "a", &d, at(12, 0)).unwrap(),
            WindowVerdict::Denied
        );
        // Allow windows: one active is enough, but deny wins.
        let allow_now = window("allow", "0 12 * * *", "1h");
        let allow_later = window("allow", "0 18 * * *", "1h");
        assert_eq!(
            window_verdict(
                &[allow_now.clone(), allow_later.clone()],
                "a",
                &d,
                at(12, 30)
            )
            .unwrap(),
            WindowVerdict::Allowed
        );
        assert_eq!(
            window_verdict(std::slice::from_ref(&allow_later), "a", &d, at(12, 30)).unwrap(),
            WindowVerdict::Denied
        );
        assert_eq!(
            window_verdict(&[allow_now, deny], "a", &d, at(12, 30)).unwrap(),
            WindowVerdict::Denied
        );
        // A window for other apps does not apply.
        let mut other = window("deny", "* * * * *", "1h");
        other.applications = vec!["billing-*".into()];
        assert_eq!(
            window_verdict(&[other.clone()], "web", &d, at(12, 0)).unwrap(),
            WindowVerdict::Allowed
        );
        assert_eq!(
            window_verdict(&[other.clone()], "billing-api", &d, at(12, 0)).unwrap(),
            WindowVerdict::Denied
        );
        // andOperator: both lists must match.
        other.namespaces = vec!["prod".into()];
        other.use_and_operator = true;
        assert_eq!(
            window_verdict(&[other.clone()], "billing-api", &dest("dev"), at(12, 0)).unwrap(),
            WindowVerdict::Allowed
        );
        assert_eq!(
            window_verdict(&[other], "billing-api", &d, at(12, 0)).unwrap(),
            WindowVerdict::Denied
        );
    }

    #[test]
    fn invalid_windows_are_errors_in_argo_cd_words() {
        let d = dest("prod");
        for (w, want) in [
            (window("maybe", "* * * * *", "1h"), "kind 'maybe' mismatch"),
            (
                window("deny", "every day", "1h"),
                "cannot parse schedule 'every day'",
            ),
            (
                window("deny", "* * * * *", "1d"),
                "cannot parse duration '1d'",
            ),
        ] {
            let err = window_verdict(&[w], "a", &d, at(12, 0)).unwrap_err();
            assert!(err.contains(want), "{err}");
        }
    }
}

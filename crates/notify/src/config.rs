//! `argocd-notifications-cm` and `argocd-notifications-secret`, parsed as Argo CD's
//! notifications engine reads them (`pkg/api/config.go`), over the built-in catalog.
//!
//! Unlike Argo CD, one broken entry does not disable every notification: each trigger,
//! template and service is parsed on its own, a broken one is kept as a [`Problem`] (reported
//! on the ConfigMap and by `ferry notifications check`), and using it is an error of the
//! notification that uses it. Keys Ferry does not know are problems too, never skipped.

use crate::expr::Program;
use crate::template::Template;
use serde::Deserialize;
use serde_json::Value as Json;
use sha1::Digest;
use std::collections::{BTreeMap, BTreeSet};

pub const CONFIG_MAP: &str = "argocd-notifications-cm";
pub const SECRET: &str = "argocd-notifications-secret";

/// Service types Ferry delivers to.
pub const SERVICE_TYPES: &[&str] = &["webhook", "slack", "email", "github"];

/// Argo CD's other service types: a template block for one of them is not an error, a
/// service of one of them is.
pub const OTHER_SERVICE_TYPES: &[&str] = &[
    "awssqs",
    "mattermost",
    "rocketchat",
    "grafana",
    "opsgenie",
    "telegram",
    "teams",
    "teams-workflows",
    "googlechat",
    "pushover",
    "alertmanager",
    "pagerduty",
    "pagerdutyv2",
    "newrelic",
    "webex",
    "nats",
    "gcppubsub",
];

/// Something wrong with one key of the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// The ConfigMap key (`trigger.on-sync-failed`), or `argocd-notifications-secret`.
    pub key: String,
    pub message: String,
}

/// One condition of a trigger.
#[derive(Debug, Clone)]
pub struct Condition {
    pub when: Program,
    pub once_per: Option<Program>,
    /// Template names.
    pub send: Vec<String>,
    pub description: String,
    /// `[i].<sha1 of when, base64url>`: Argo CD's key in the notified state.
    pub key: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCondition {
    #[serde(default)]
    when: String,
    #[serde(default)]
    once_per: String,
    #[serde(default)]
    send: Vec<String>,
    #[serde(default)]
    description: String,
    #[serde(flatten)]
    unknown: BTreeMap<String, Json>,
}

/// A configured service, with secrets filled in.
#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub kind: ServiceKind,
}

#[derive(Debug, Clone)]
pub enum ServiceKind {
    Webhook(WebhookOptions),
    Slack(SlackOptions),
    Email(EmailOptions),
    GitHub(GitHubOptions),
}

impl ServiceKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            ServiceKind::Webhook(_) => "webhook",
            ServiceKind::Slack(_) => "slack",
            ServiceKind::Email(_) => "email",
            ServiceKind::GitHub(_) => "github",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Header {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BasicAuth {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
}

/// A Go `time.Duration` as Argo CD's YAML gives it: nanoseconds, or Ferry also accepts `"2s"`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GoDuration(pub std::time::Duration);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Json::deserialize(d)?;
        match &v {
            Json::Number(n) => n
                .as_u64()
                .map(|ns| GoDuration(std::time::Duration::from_nanos(ns)))
                .ok_or_else(|| serde::de::Error::custom(format!("bad duration {v}"))),
            // A bare number in a string is nanoseconds, as Go would read the integer.
            Json::String(s) => s
                .trim()
                .parse::<u64>()
                .ok()
                .map(std::time::Duration::from_nanos)
                .or_else(|| ferry_model::parse_go_duration(s))
                .map(GoDuration)
                .ok_or_else(|| serde::de::Error::custom(format!("bad duration {s:?}"))),
            _ => Err(serde::de::Error::custom(format!("bad duration {v}"))),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookOptions {
    pub url: String,
    #[serde(default)]
    pub headers: Vec<Header>,
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    #[serde(default)]
    pub retry_wait_min: Option<GoDuration>,
    #[serde(default)]
    pub retry_wait_max: Option<GoDuration>,
    #[serde(default)]
    pub retry_max: Option<u32>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Json>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlackOptions {
    #[serde(default)]
    pub token: String,
    #[serde(default, rename = "apiURL")]
    pub api_url: Option<String>,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub icon: String,
    #[serde(default)]
    pub signing_secret: String,
    #[serde(default)]
    pub channels: Vec<String>,
    #[serde(default)]
    pub disable_unfurl: bool,
    #[serde(default)]
    pub insecure_skip_verify: bool,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Json>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EmailOptions {
    pub host: String,
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub html: bool,
    #[serde(default)]
    pub insecure_skip_verify: bool,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Json>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitHubOptions {
    #[serde(default, rename = "appID")]
    pub app_id: Json,
    #[serde(default, rename = "installationID")]
    pub installation_id: Json,
    #[serde(default)]
    pub private_key: String,
    #[serde(default, rename = "enterpriseBaseURL")]
    pub enterprise_base_url: String,
    #[serde(default)]
    pub insecure_skip_verify: bool,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Json>,
}

/// An entry of the global `subscriptions` list.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Subscription {
    #[serde(default)]
    pub recipients: Vec<String>,
    #[serde(default)]
    pub triggers: Vec<String>,
    #[serde(default)]
    pub selector: String,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Json>,
}

/// The whole configuration: built-in catalog, then the ConfigMap's keys over it.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub triggers: BTreeMap<String, Vec<Condition>>,
    pub templates: BTreeMap<String, Template>,
    pub services: BTreeMap<String, Service>,
    pub default_triggers: Vec<String>,
    pub service_default_triggers: BTreeMap<String, Vec<String>>,
    pub subscriptions: Vec<Subscription>,
    /// `context`: extra template variables (`argocdUrl`, …).
    pub context: BTreeMap<String, String>,
    /// The Secret's values, for `.secrets` in templates.
    pub secrets: BTreeMap<String, String>,
    /// Everything wrong, by key.
    pub problems: Vec<Problem>,
    /// Keys of entries that did not parse (`trigger.x`, `template.y`, `service.z`): using one
    /// names its problem instead of "not configured".
    pub broken: BTreeMap<String, String>,
    /// Secret values filled into services: masked in every error Ferry reports.
    pub secret_values: BTreeSet<String>,
}

/// Argo CD's condition key: `[i].` + SHA-1 of `when`, base64url without padding.
pub fn condition_key(index: usize, when: &str) -> String {
    use base64::Engine;
    let digest = sha1::Sha1::digest(when.as_bytes());
    format!(
        "[{index}].{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
    )
}

fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_saphyr::from_str(text).map_err(|e| e.to_string())
}

impl Config {
    /// Parses `data` (the ConfigMap's) and `secret` (the Secret's, decoded) over the catalog.
    pub fn parse(data: &BTreeMap<String, String>, secret: &BTreeMap<String, String>) -> Config {
        let mut cfg = Config {
            secrets: secret.clone(),
            ..Config::default()
        };
        let catalog: BTreeMap<String, String> =
            serde_saphyr::from_str(include_str!("catalog.yaml")).unwrap_or_default();
        for (k, v) in &catalog {
            if !data.contains_key(k) {
                cfg.parse_key(k, v, secret);
            }
        }
        for (k, v) in data {
            cfg.parse_key(k, v, secret);
        }
        cfg.check_references();
        cfg
    }

    fn problem(&mut self, key: &str, message: impl Into<String>) {
        let message = message.into();
        self.broken.insert(key.to_string(), message.clone());
        self.problems.push(Problem {
            key: key.to_string(),
            message,
        });
    }

    fn parse_key(&mut self, key: &str, value: &str, secret: &BTreeMap<String, String>) {
        if let Some(name) = key.strip_prefix("trigger.") {
            match parse_trigger(value) {
                Ok(conditions) => {
                    self.triggers.insert(name.to_string(), conditions);
                }
                Err(e) => self.problem(key, e),
            }
        } else if let Some(name) = key.strip_prefix("template.") {
            match Template::parse(value) {
                Ok(t) => {
                    self.templates.insert(name.to_string(), t);
                }
                Err(e) => self.problem(key, e),
            }
        } else if key.starts_with("service.") {
            match self.parse_service(key, value, secret) {
                Ok(s) => {
                    self.services.insert(s.name.clone(), s);
                }
                Err(e) => self.problem(key, e),
            }
        } else if key == "defaultTriggers" {
            match yaml::<Vec<String>>(value) {
                Ok(t) => self.default_triggers = t,
                Err(e) => self.problem(key, format!("a list of trigger names is expected: {e}")),
            }
        } else if let Some(service) = key.strip_prefix("defaultTriggers.") {
            match yaml::<Vec<String>>(value) {
                Ok(t) => {
                    self.service_default_triggers.insert(service.to_string(), t);
                }
                Err(e) => self.problem(key, format!("a list of trigger names is expected: {e}")),
            }
        } else if key == "subscriptions" {
            match yaml::<Vec<Subscription>>(value) {
                Ok(subs) => {
                    for (i, s) in subs.iter().enumerate() {
                        if !s.unknown.is_empty() {
                            self.problem(
                                key,
                                format!(
                                    "[{i}]: unknown fields {}",
                                    s.unknown.keys().cloned().collect::<Vec<_>>().join(", ")
                                ),
                            );
                        }
                        if let Err(e) = crate::subscribe::Selector::parse(&s.selector) {
                            self.problem(key, format!("[{i}].selector: {e}"));
                        }
                    }
                    self.subscriptions = subs;
                }
                Err(e) => self.problem(key, e),
            }
        } else if key == "context" {
            match yaml::<BTreeMap<String, Json>>(value) {
                Ok(c) => {
                    self.context = c
                        .into_iter()
                        .map(|(k, v)| {
                            let text = match v {
                                Json::String(s) => s,
                                other => other.to_string(),
                            };
                            (k, text)
                        })
                        .collect()
                }
                Err(e) => self.problem(key, e),
            }
        } else if key == "config.yaml" {
            self.problem(
                key,
                "the legacy config.yaml format is not read by Ferry: move its entries to trigger.*, template.* and service.* keys",
            );
        } else {
            self.problem(
                key,
                "unknown key (Ferry reads trigger.*, template.*, service.*, defaultTriggers, subscriptions and context)",
            );
        }
    }

    fn parse_service(
        &mut self,
        key: &str,
        value: &str,
        secret: &BTreeMap<String, String>,
    ) -> Result<Service, String> {
        let parts: Vec<&str> = key.split('.').collect();
        let (kind, name) = match parts.as_slice() {
            [_, kind] => (*kind, *kind),
            [_, kind, name] => (*kind, *name),
            _ => {
                return Err(format!(
                    "invalid service key; expected 'service.<type>(.<name>)' but got '{key}'"
                ));
            }
        };
        let mut raw: Json = yaml(value)?;
        let mut missing = Vec::new();
        fill_secrets(&mut raw, secret, &mut missing, &mut self.secret_values);
        for m in missing {
            self.problems.push(Problem {
                key: key.to_string(),
                message: format!("references ${m}, which {SECRET} does not have"),
            });
        }
        fn typed<T: serde::de::DeserializeOwned>(raw: Json) -> Result<T, String> {
            serde_json::from_value(raw).map_err(|e| e.to_string())
        }
        let unknown_of = |u: &BTreeMap<String, Json>| -> Result<(), String> {
            if u.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "unknown options {}",
                    u.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
            }
        };
        let kind = match kind {
            "webhook" => {
                let o: WebhookOptions = typed(raw)?;
                unknown_of(&o.unknown)?;
                reqwest::Url::parse(&o.url).map_err(|e| format!("url: {e}"))?;
                ServiceKind::Webhook(o)
            }
            "slack" => {
                let o: SlackOptions = typed(raw)?;
                unknown_of(&o.unknown)?;
                if o.token.is_empty() {
                    return Err(
                        "token is required (a Slack bot token, usually $slack-token)".into(),
                    );
                }
                ServiceKind::Slack(o)
            }
            "email" => {
                let o: EmailOptions = typed(raw)?;
                unknown_of(&o.unknown)?;
                if o.from.is_empty() {
                    return Err("from is required".into());
                }
                ServiceKind::Email(o)
            }
            "github" => {
                let o: GitHubOptions = typed(raw)?;
                unknown_of(&o.unknown)?;
                crate::send::github::check_options(&o)?;
                ServiceKind::GitHub(o)
            }
            other if OTHER_SERVICE_TYPES.contains(&other) => {
                return Err(format!(
                    "service type '{other}' is not supported by Ferry (it delivers to {})",
                    SERVICE_TYPES.join(", ")
                ));
            }
            other => return Err(format!("service type '{other}' is not supported")),
        };
        Ok(Service {
            name: name.to_string(),
            kind,
        })
    }

    /// Triggers naming templates that do not exist, default triggers and subscriptions naming
    /// triggers or services that do not exist.
    fn check_references(&mut self) {
        let mut found = Vec::new();
        for (name, conditions) in &self.triggers {
            for c in conditions {
                for t in &c.send {
                    if !self.templates.contains_key(t)
                        && !self.broken.contains_key(&format!("template.{t}"))
                    {
                        found.push((
                            format!("trigger.{name}"),
                            format!("sends template '{t}', which is not configured"),
                        ));
                    }
                }
            }
        }
        let trigger_exists = |t: &str| {
            self.triggers.contains_key(t) || self.broken.contains_key(&format!("trigger.{t}"))
        };
        for t in &self.default_triggers {
            if !trigger_exists(t) {
                found.push((
                    "defaultTriggers".into(),
                    format!("trigger '{t}' is not configured"),
                ));
            }
        }
        for (service, triggers) in &self.service_default_triggers {
            for t in triggers {
                if !trigger_exists(t) {
                    found.push((
                        format!("defaultTriggers.{service}"),
                        format!("trigger '{t}' is not configured"),
                    ));
                }
            }
        }
        for (i, s) in self.subscriptions.iter().enumerate() {
            for t in &s.triggers {
                if !trigger_exists(t) {
                    found.push((
                        "subscriptions".into(),
                        format!("[{i}]: trigger '{t}' is not configured"),
                    ));
                }
            }
            for r in &s.recipients {
                let service = r.split(':').next().unwrap_or_default();
                if !self.services.contains_key(service)
                    && !self
                        .broken
                        .keys()
                        .any(|k| k.starts_with("service.") && k.ends_with(&format!(".{service}")))
                {
                    found.push((
                        "subscriptions".into(),
                        format!("[{i}]: service '{service}' is not configured"),
                    ));
                }
            }
        }
        for (key, message) in found {
            self.problems.push(Problem { key, message });
        }
    }

    /// Masks every secret value filled into a service in `text`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for v in &self.secret_values {
            if v.len() >= 3 {
                out = out.replace(v, "******");
            }
        }
        out
    }
}

fn parse_trigger(value: &str) -> Result<Vec<Condition>, String> {
    let raw: Vec<RawCondition> =
        yaml(value).map_err(|e| format!("a list of conditions is expected: {e}"))?;
    raw.into_iter()
        .enumerate()
        .map(|(i, c)| {
            if !c.unknown.is_empty() {
                return Err(format!(
                    "[{i}]: unknown fields {}",
                    c.unknown.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
            let when_text = if c.when.trim().is_empty() {
                "false"
            } else {
                c.when.as_str()
            };
            let when = Program::compile(when_text).map_err(|e| format!("[{i}].when: {e}"))?;
            let once_per = if c.once_per.trim().is_empty() {
                None
            } else {
                Some(Program::compile(&c.once_per).map_err(|e| format!("[{i}].oncePer: {e}"))?)
            };
            if c.send.is_empty() {
                return Err(format!("[{i}]: send names no template"));
            }
            Ok(Condition {
                key: condition_key(i, &c.when),
                when,
                once_per,
                send: c.send,
                description: c.description,
            })
        })
        .collect()
}

/// Argo CD's `$key` references: every `$[\w-]+` in a string of the service's YAML (keys and
/// values) becomes the Secret's value; the tree is substituted, not the text, so a value can
/// never break the YAML.
fn fill_secrets(
    v: &mut Json,
    secret: &BTreeMap<String, String>,
    missing: &mut Vec<String>,
    used: &mut BTreeSet<String>,
) {
    static PATTERN: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let pattern = PATTERN.get_or_init(|| regex::Regex::new(r"\$[\w-]+").expect("valid regex"));
    let fill = |s: &str, missing: &mut Vec<String>, used: &mut BTreeSet<String>| -> String {
        pattern
            .replace_all(s, |caps: &regex::Captures| {
                let name = &caps[0][1..];
                match secret.get(name) {
                    Some(value) => {
                        used.insert(value.clone());
                        value.clone()
                    }
                    None => {
                        missing.push(name.to_string());
                        caps[0].to_string()
                    }
                }
            })
            .into_owned()
    };
    match v {
        Json::String(s) => *s = fill(s, missing, used),
        Json::Array(items) => {
            for i in items {
                fill_secrets(i, secret, missing, used);
            }
        }
        Json::Object(map) => {
            let entries = std::mem::take(map);
            for (k, mut val) in entries {
                fill_secrets(&mut val, secret, missing, used);
                map.insert(fill(&k, missing, used), val);
            }
        }
        _ => {}
    }
}

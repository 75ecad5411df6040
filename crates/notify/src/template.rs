//! Notification templates (`template.<name>`): Go templates for the message and each
//! service's block, rendered with Sprig's functions as Argo CD's engine does
//! (`pkg/templates/service.go`, `pkg/services/services.go`).

use crate::config::OTHER_SERVICE_TYPES;
use ferry_gotemplate::{Options, TemplateError, Value as TValue};
use serde::Deserialize;
use serde_json::Value as Json;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Template {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub email: Option<EmailBlock>,
    #[serde(default)]
    pub slack: Option<SlackBlock>,
    /// Keyed by the webhook service's name.
    #[serde(default)]
    pub webhook: BTreeMap<String, WebhookBlock>,
    #[serde(default)]
    pub github: Option<GitHubBlock>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Json>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct EmailBlock {
    #[serde(default)]
    pub subject: String,
    #[serde(default)]
    pub body: String,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Json>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SlackBlock {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub icon: String,
    #[serde(default)]
    pub attachments: String,
    #[serde(default)]
    pub blocks: String,
    #[serde(default)]
    pub grouping_key: String,
    #[serde(default)]
    pub notify_broadcast: bool,
    #[serde(default)]
    pub delivery_policy: String,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Json>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct WebhookBlock {
    #[serde(default)]
    pub method: String,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub body: String,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Json>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GitHubBlock {
    #[serde(default, rename = "repoURLPath")]
    pub repo_url_path: String,
    #[serde(default)]
    pub revision_path: String,
    #[serde(default)]
    pub status: Option<GitHubStatus>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Json>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GitHubStatus {
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub label: String,
    #[serde(default, rename = "targetURL")]
    pub target_url: String,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Json>,
}

/// A rendered notification: templates applied in `send` order onto one value.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailBlockOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackBlockOut>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub webhook: BTreeMap<String, WebhookBlockOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub github: Option<GitHubOut>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct EmailBlockOut {
    pub subject: String,
    pub body: String,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlackBlockOut {
    pub username: String,
    pub icon: String,
    pub attachments: String,
    pub blocks: String,
    pub grouping_key: String,
    pub notify_broadcast: bool,
    pub delivery_policy: String,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct WebhookBlockOut {
    pub method: String,
    pub path: String,
    pub body: String,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GitHubOut {
    #[serde(rename = "repoURL")]
    pub repo_url: String,
    pub revision: String,
    pub status: Option<GitHubStatusOut>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GitHubStatusOut {
    pub state: String,
    pub label: String,
    #[serde(rename = "targetURL")]
    pub target_url: String,
}

const OPTIONS: Options<'static> = Options {
    funcs: ferry_gotemplate::sprig::FUNCS,
    missing_key_error: false,
};

fn unknown(at: &str, u: &BTreeMap<String, Json>) -> Result<(), String> {
    if u.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{at}: unknown fields {}",
            u.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    }
}

/// Parse errors only: a template is checked for syntax without data.
fn check(at: &str, text: &str) -> Result<(), String> {
    match ferry_gotemplate::render_with(text, &TValue::Null, &OPTIONS) {
        Err(e @ TemplateError::Parse { .. }) => Err(format!("{at}: {e}")),
        _ => Ok(()),
    }
}

fn render(at: &str, text: &str, vars: &TValue) -> Result<String, String> {
    if text.is_empty() {
        return Ok(String::new());
    }
    // text/template prints a missing key as `<no value>`: so does Argo CD's engine.
    ferry_gotemplate::render_with(text, vars, &OPTIONS).map_err(|e| format!("{at}: {e}"))
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let t: Template = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        let others: Vec<&String> = t
            .other
            .keys()
            .filter(|k| !OTHER_SERVICE_TYPES.contains(&k.as_str()))
            .collect();
        if !others.is_empty() {
            return Err(format!(
                "unknown fields {}",
                others
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        check("message", &t.message)?;
        if let Some(e) = &t.email {
            unknown("email", &e.unknown)?;
            check("email.subject", &e.subject)?;
            check("email.body", &e.body)?;
        }
        if let Some(s) = &t.slack {
            unknown("slack", &s.unknown)?;
            check("slack.attachments", &s.attachments)?;
            check("slack.blocks", &s.blocks)?;
            check("slack.groupingKey", &s.grouping_key)?;
            // Updating a posted message needs its timestamp kept across restarts: Ferry
            // posts only, and says so rather than posting where an update was asked for.
            if !matches!(s.delivery_policy.as_str(), "" | "Post") {
                return Err(format!(
                    "slack.deliveryPolicy: {:?} is not supported by Ferry (Post is)",
                    s.delivery_policy
                ));
            }
        }
        for (name, w) in &t.webhook {
            unknown(&format!("webhook.{name}"), &w.unknown)?;
            check(&format!("webhook.{name}.path"), &w.path)?;
            check(&format!("webhook.{name}.body"), &w.body)?;
        }
        if let Some(g) = &t.github {
            unknown("github", &g.unknown)?;
            check("github.repoURLPath", &g.repo_url_path)?;
            check("github.revisionPath", &g.revision_path)?;
            if let Some(s) = &g.status {
                unknown("github.status", &s.unknown)?;
                check("github.status.state", &s.state)?;
                check("github.status.label", &s.label)?;
                check("github.status.targetURL", &s.target_url)?;
            }
        }
        Ok(t)
    }

    /// Applies this template onto `n` (Argo CD's `FormatNotification`: the message and email
    /// fields only when they render non-empty, Slack fields always, webhooks merged by name).
    pub fn apply(&self, n: &mut Notification, vars: &TValue) -> Result<(), String> {
        let message = render("message", &self.message, vars)?;
        if !message.is_empty() {
            n.message = message;
        }
        if let Some(e) = &self.email {
            let out = n.email.get_or_insert_with(Default::default);
            let subject = render("email.subject", &e.subject, vars)?;
            if !subject.is_empty() {
                out.subject = subject;
            }
            let body = render("email.body", &e.body, vars)?;
            if !body.is_empty() {
                out.body = body;
            }
        }
        if let Some(s) = &self.slack {
            n.slack = Some(SlackBlockOut {
                username: s.username.clone(),
                icon: s.icon.clone(),
                attachments: render("slack.attachments", &s.attachments, vars)?,
                blocks: render("slack.blocks", &s.blocks, vars)?,
                grouping_key: render("slack.groupingKey", &s.grouping_key, vars)?,
                notify_broadcast: s.notify_broadcast,
                delivery_policy: s.delivery_policy.clone(),
            });
        }
        for (name, w) in &self.webhook {
            n.webhook.insert(
                name.clone(),
                WebhookBlockOut {
                    method: w.method.clone(),
                    path: render(&format!("webhook.{name}.path"), &w.path, vars)?,
                    body: render(&format!("webhook.{name}.body"), &w.body, vars)?,
                },
            );
        }
        if let Some(g) = &self.github {
            let repo_path = if g.repo_url_path.is_empty() {
                "{{.app.spec.source.repoURL}}"
            } else {
                &g.repo_url_path
            };
            let revision_path = if g.revision_path.is_empty() {
                "{{.app.status.operationState.syncResult.revision}}"
            } else {
                &g.revision_path
            };
            n.github = Some(GitHubOut {
                repo_url: render("github.repoURLPath", repo_path, vars)?,
                revision: render("github.revisionPath", revision_path, vars)?,
                status: match &g.status {
                    Some(s) => Some(GitHubStatusOut {
                        state: render("github.status.state", &s.state, vars)?,
                        label: render("github.status.label", &s.label, vars)?,
                        target_url: render("github.status.targetURL", &s.target_url, vars)?,
                    }),
                    None => None,
                },
            });
        }
        Ok(())
    }
}

/// The variables a template sees: `.app`, `.context` (with `notificationType`), `.secrets`,
/// `.serviceType` and `.recipient`.
pub fn vars(
    app: &Json,
    context: &BTreeMap<String, String>,
    secrets: &BTreeMap<String, String>,
    service: &str,
    recipient: &str,
) -> TValue {
    let mut ctx: serde_json::Map<String, Json> = context
        .iter()
        .map(|(k, v)| (k.clone(), Json::String(v.clone())))
        .collect();
    ctx.insert("notificationType".into(), Json::String(service.into()));
    TValue::from(serde_json::json!({
        "app": app,
        "context": ctx,
        "secrets": secrets,
        "serviceType": service,
        "recipient": recipient,
    }))
}

//! `service.slack`: Slack's Web API `chat.postMessage` with the bot token, as Argo CD's
//! service sends it (text, username, icon, attachments and blocks from the template,
//! threads by `groupingKey`). Incoming-webhook URLs are served by the webhook service, as
//! Argo CD's documentation says.

use crate::config::SlackOptions;
use crate::template::Notification;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Mutex;

/// Thread timestamps by (channel, groupingKey): process memory, as in Argo CD.
static THREADS: Mutex<Option<HashMap<(String, String), String>>> = Mutex::new(None);

pub async fn send(o: &SlackOptions, n: &Notification, channel: &str) -> Result<(), String> {
    let api = o
        .api_url
        .clone()
        .unwrap_or_else(|| "https://slack.com/api/".into());
    let url = format!("{}/chat.postMessage", api.trim_end_matches('/'));
    let mut body = json!({ "channel": channel, "text": n.message });
    let block = n.slack.clone().unwrap_or_default();
    let username = if block.username.is_empty() {
        &o.username
    } else {
        &block.username
    };
    if !username.is_empty() {
        body["username"] = json!(username);
    }
    let icon = if block.icon.is_empty() {
        &o.icon
    } else {
        &block.icon
    };
    if icon.len() > 2 && icon.starts_with(':') && icon.ends_with(':') {
        body["icon_emoji"] = json!(icon);
    } else if icon.starts_with("http://") || icon.starts_with("https://") {
        body["icon_url"] = json!(icon);
    } else if !icon.is_empty() {
        return Err(format!(
            "icon reference {icon:?} is not a valid emoji or url"
        ));
    }
    for (field, text) in [
        ("attachments", &block.attachments),
        ("blocks", &block.blocks),
    ] {
        if !text.trim().is_empty() {
            let v: Value = serde_json::from_str(text)
                .map_err(|e| format!("failed to unmarshal {field} '{text}' : {e}"))?;
            body[field] = v;
        }
    }
    if o.disable_unfurl {
        body["unfurl_links"] = json!(false);
        body["unfurl_media"] = json!(false);
    }
    let thread_key = (channel.to_string(), block.grouping_key.clone());
    if !block.grouping_key.is_empty()
        && let Some(ts) = THREADS
            .lock()
            .ok()
            .and_then(|t| t.as_ref().and_then(|m| m.get(&thread_key).cloned()))
    {
        body["thread_ts"] = json!(ts);
        if block.notify_broadcast {
            body["reply_broadcast"] = json!(true);
        }
    }
    let client = super::http_client(o.insecure_skip_verify)?;
    let resp = client
        .post(&url)
        .bearer_auth(&o.token)
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("slack: {e}"))?;
    let status = resp.status();
    let answer: Value = resp.json().await.unwrap_or_default();
    if !status.is_success() || answer["ok"] != json!(true) {
        return Err(format!(
            "slack: chat.postMessage answered {status}: {}",
            answer["error"].as_str().unwrap_or("no error given")
        ));
    }
    if !block.grouping_key.is_empty()
        && let Some(ts) = answer["ts"].as_str()
        && let Ok(mut threads) = THREADS.lock()
    {
        threads
            .get_or_insert_with(HashMap::new)
            .entry(thread_key)
            .or_insert_with(|| ts.to_string());
    }
    Ok(())
}

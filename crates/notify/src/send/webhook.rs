//! `service.webhook.<name>`: an HTTP request per notification, with the template's
//! `webhook.<name>` method, path and body (the message when the template has no block), and
//! retries with exponential backoff on connection errors, 429 and 5xx, as
//! go-retryablehttp does for Argo CD.

use crate::config::WebhookOptions;
use crate::template::Notification;
use std::time::Duration;

pub async fn send(name: &str, o: &WebhookOptions, n: &Notification) -> Result<(), String> {
    let mut url = o.url.clone();
    let mut method = "GET".to_string();
    let mut body = n.message.clone();
    if let Some(block) = n.webhook.get(name) {
        body = block.body.clone();
        if !block.method.is_empty() {
            method = block.method.to_uppercase();
        }
        if !block.path.is_empty() {
            url = format!(
                "{}/{}",
                url.trim_end_matches('/'),
                block.path.trim_start_matches('/')
            );
        }
    }
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|_| format!("bad HTTP method {method:?}"))?;
    let client = super::http_client(o.insecure_skip_verify)?;
    let wait_min = o.retry_wait_min.map_or(Duration::from_secs(1), |d| d.0);
    let wait_max = o.retry_wait_max.map_or(Duration::from_secs(5), |d| d.0);
    let retries = o.retry_max.unwrap_or(3);
    let mut attempt = 0u32;
    loop {
        let mut req = client.request(method.clone(), &url).body(body.clone());
        for h in &o.headers {
            req = req.header(&h.name, &h.value);
        }
        if let Some(auth) = &o.basic_auth {
            req = req.basic_auth(&auth.username, Some(&auth.password));
        }
        let failure = match req.send().await {
            Ok(resp) if resp.status().is_success() => return Ok(()),
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                let text: String = text.chars().take(512).collect();
                let message =
                    format!("request to {url} has failed with error code {status} : {text}");
                if status.as_u16() != 429 && !status.is_server_error() {
                    return Err(message);
                }
                message
            }
            Err(e) => format!("request to {url} failed: {e}"),
        };
        if attempt >= retries {
            return Err(format!(
                "giving up after {} attempt(s): {failure}",
                attempt + 1
            ));
        }
        let wait = wait_min
            .saturating_mul(2u32.saturating_pow(attempt))
            .min(wait_max);
        tracing::debug!(%url, attempt, ?wait, "webhook delivery failed; retrying");
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

//! Delivery: one module per service type, each a thin client of the receiver's API. Errors
//! are plain text for the Application's Events; the caller masks secrets in them.

pub mod email;
pub mod github;
pub mod slack;
pub mod webhook;

use crate::config::{Config, ServiceKind};
use crate::subscribe::Destination;
use crate::template::Notification;
use std::time::Duration;

/// Longest a single HTTP request to a receiver may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Sends `n` to `dest`, with the service's retries. The error is masked with `cfg`'s secrets.
pub async fn deliver(cfg: &Config, n: &Notification, dest: &Destination) -> Result<(), String> {
    let Some(service) = cfg.services.get(&dest.service) else {
        let broken = cfg
            .broken
            .iter()
            .find(|(k, _)| k.starts_with("service.") && k.ends_with(&format!(".{}", dest.service)));
        return Err(match broken {
            Some((k, problem)) => format!("{k} is invalid: {problem}"),
            None => format!("notification service '{}' is not supported", dest.service),
        });
    };
    let result = match &service.kind {
        ServiceKind::Webhook(o) => webhook::send(&service.name, o, n).await,
        ServiceKind::Slack(o) => slack::send(o, n, &dest.recipient).await,
        ServiceKind::Email(o) => email::send(o, n, &dest.recipient).await,
        ServiceKind::GitHub(o) => github::send(o, n).await,
    };
    result.map_err(|e| cfg.redact(&e))
}

pub(crate) fn http_client(insecure: bool) -> Result<reqwest::Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .tls_danger_accept_invalid_certs(insecure)
        .build()
        .map_err(|e| format!("http client: {e}"))
}

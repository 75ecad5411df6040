//! `service.email`: SMTP, as Argo CD's service (gomail) sends it — AUTH when a username and
//! password are set, TLS on connect at port 465 and STARTTLS when offered elsewhere, every
//! recipient of `a,b` in To, the template's `email.subject`, and `email.body` or else the
//! message as a text/plain (or, with `html: true`, text/html) body.

use crate::config::EmailOptions;
use crate::template::Notification;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

pub async fn send(o: &EmailOptions, n: &Notification, recipient: &str) -> Result<(), String> {
    let to: Vec<&str> = recipient
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .collect();
    if to.is_empty() {
        return Err("Missing to".into());
    }
    let block = n.email.clone().unwrap_or_default();
    let body = if block.body.is_empty() {
        n.message.clone()
    } else {
        block.body
    };
    let mut message = Message::builder()
        .from(
            o.from
                .parse()
                .map_err(|e| format!("from {:?}: {e}", o.from))?,
        )
        .subject(block.subject)
        .header(if o.html {
            ContentType::TEXT_HTML
        } else {
            ContentType::TEXT_PLAIN
        });
    for addr in &to {
        message = message.to(addr.parse().map_err(|e| format!("to {addr:?}: {e}"))?);
    }
    let message = message.body(body).map_err(|e| format!("email: {e}"))?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = TlsParameters::builder(o.host.clone())
        .dangerous_accept_invalid_certs(o.insecure_skip_verify)
        .build_rustls()
        .map_err(|e| format!("email TLS: {e}"))?;
    let port = if o.port == 0 { 25 } else { o.port };
    let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&o.host)
        .port(port)
        .timeout(Some(super::REQUEST_TIMEOUT))
        .tls(if port == 465 {
            Tls::Wrapper(tls)
        } else {
            Tls::Opportunistic(tls)
        });
    if !o.username.is_empty() && !o.password.is_empty() {
        transport = transport.credentials(Credentials::new(o.username.clone(), o.password.clone()));
    }
    transport
        .build()
        .send(message)
        .await
        .map(|_| ())
        .map_err(|e| format!("email to {}:{port}: {e}", o.host))
}

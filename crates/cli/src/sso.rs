//! `ferry login --sso`: the authorization code flow with PKCE against the server's identity
//! provider, as the public client `cliClientID` (Argo CD's), with a one-shot callback on
//! `localhost`; the ID token is then exchanged at the server for a session.

use crate::client::Client;
use anyhow::{Context, Result, bail};
use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn random(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn getrandom(buf: &mut [u8]) {
    use std::io::Read;
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(buf);
    }
}

/// The request line's query of the browser's callback: `code` and `state` (or `error`).
fn callback_params(request: &str) -> Option<Vec<(String, String)>> {
    let line = request.lines().next()?;
    let target = line.split_whitespace().nth(1)?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != "/auth/callback" {
        return None;
    }
    Some(
        form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    )
}

async fn callback(listener: tokio::net::TcpListener) -> Result<Vec<(String, String)>> {
    loop {
        let (mut conn, _) = listener.accept().await?;
        let mut buf = vec![0u8; 16 * 1024];
        let mut len = 0;
        while len < buf.len() {
            let n = conn.read(&mut buf[len..]).await?;
            if n == 0 {
                break;
            }
            len += n;
            if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        let request = String::from_utf8_lossy(&buf[..len]).into_owned();
        let Some(params) = callback_params(&request) else {
            let _ = conn
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
            continue;
        };
        let body = "<!doctype html><title>Ferry</title><p>Authentication finished: return to the terminal.</p>";
        let _ = conn
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await;
        return Ok(params);
    }
}

fn claims_of(id_token: &str) -> Result<Value> {
    let payload = id_token
        .split('.')
        .nth(1)
        .context("the identity provider's ID token is not a JWT")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .context("the identity provider's ID token is not a JWT")?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// Logs in through the browser; the session token and who it is for.
pub async fn login(server: &Client, port: u16) -> Result<(String, String)> {
    let settings = server.get("/api/v1/settings", &[]).await?;
    let Some(oidc) = settings.get("oidcConfig").filter(|v| v.is_object()) else {
        bail!(
            "{} has no single sign-on configured (oidc.config in argocd-cm): log in with --username",
            server.server()
        );
    };
    let s = |k: &str| oidc[k].as_str().unwrap_or_default().to_string();
    let issuer = s("issuer");
    let client_id = Some(s("cliClientID"))
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| s("clientID"));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let discovery: Value = http
        .get(format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        ))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("the identity provider {issuer} does not answer"))?
        .json()
        .await?;
    let auth = discovery["authorization_endpoint"]
        .as_str()
        .unwrap_or_default();
    let token_url = discovery["token_endpoint"].as_str().unwrap_or_default();
    let (state, nonce, verifier) = (random(16), random(16), random(32));
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    let redirect = format!("http://localhost:{port}/auth/callback");
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| {
            format!("listening for the login callback on localhost:{port} (--sso-port)")
        })?;
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", &client_id)
        .append_pair("redirect_uri", &redirect)
        .append_pair("scope", &s("scopes"))
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .finish();
    let sep = if auth.contains('?') { '&' } else { '?' };
    println!("Opening a browser is up to you: visit this URL to log in:\n{auth}{sep}{query}");
    let params = tokio::time::timeout(Duration::from_secs(300), callback(listener))
        .await
        .context("no login within five minutes")??;
    let get = |k: &str| {
        params
            .iter()
            .find(|(x, _)| x == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    if !get("error").is_empty() {
        bail!(
            "the identity provider refused the login: {} {}",
            get("error"),
            get("error_description")
        );
    }
    if get("state") != state {
        bail!("the login's state does not match the one this command started: try again");
    }
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "authorization_code")
        .append_pair("code", &get("code"))
        .append_pair("redirect_uri", &redirect)
        .append_pair("code_verifier", &verifier)
        .append_pair("client_id", &client_id)
        .finish();
    let resp = http
        .post(token_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!(
            "the identity provider refused the code: {} {}",
            body["error"].as_str().unwrap_or_default(),
            body["error_description"].as_str().unwrap_or_default()
        );
    }
    let id_token = body["id_token"]
        .as_str()
        .context("the identity provider sent no id_token")?;
    let claims = claims_of(id_token)?;
    if claims["nonce"].as_str() != Some(nonce.as_str()) {
        bail!("the ID token's nonce does not match this login: try again");
    }
    let session = server
        .post("/api/v1/session", &[], &json!({ "idToken": id_token }))
        .await?;
    let token = session["token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .context("the server answered the login without a token")?;
    let who = claims["email"]
        .as_str()
        .or(claims["sub"].as_str())
        .unwrap_or_default()
        .to_string();
    Ok((token.to_string(), who))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_callback_is_read_from_the_request_line() {
        let p =
            callback_params("GET /auth/callback?code=abc&state=x%2By HTTP/1.1\r\nhost: l\r\n\r\n")
                .unwrap();
        assert_eq!(
            p,
            vec![
                ("code".into(), "abc".into()),
                ("state".into(), "x+y".into())
            ]
        );
        assert!(callback_params("GET /favicon.ico HTTP/1.1\r\n\r\n").is_none());
    }
}

//! `service.github`: a commit status on the revision the app synced, authenticated as a
//! GitHub App installation as Argo CD's service is (a JWT signed with the App's key, traded
//! for an installation token). GitHub Enterprise's API lives under `/api/v3` of
//! `enterpriseBaseURL`, as go-github places it.

use crate::config::GitHubOptions;
use crate::template::Notification;
use serde_json::{Value, json};

fn number(v: &Value, field: &str) -> Result<i64, String> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("{field} must be a number, got {v}"))
}

/// Checked when the ConfigMap is read.
pub fn check_options(o: &GitHubOptions) -> Result<(), String> {
    number(&o.app_id, "appID")?;
    number(&o.installation_id, "installationID")?;
    jsonwebtoken::EncodingKey::from_rsa_pem(o.private_key.as_bytes())
        .map_err(|e| format!("privateKey: not an RSA private key in PEM: {e}"))?;
    Ok(())
}

fn api_base(o: &GitHubOptions) -> String {
    if o.enterprise_base_url.is_empty() {
        return "https://api.github.com".into();
    }
    let base = o.enterprise_base_url.trim_end_matches('/');
    if base.ends_with("/api/v3") || base.contains("://api.") {
        base.to_string()
    } else {
        format!("{base}/api/v3")
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(max - 3).collect::<String>())
    }
}

pub async fn send(o: &GitHubOptions, n: &Notification) -> Result<(), String> {
    let Some(gh) = &n.github else {
        return Err("config is empty: the template has no github block".into());
    };
    let full_name = crate::full_name_by_repo_url(&gh.repo_url);
    let Some((owner, repo)) = full_name.split_once('/') else {
        return Err(format!(
            "GitHub.repoURL ({}) does not have a `/`",
            gh.repo_url
        ));
    };
    let Some(status) = &gh.status else {
        return Err(
            "the template's github block has no status: Ferry sends commit statuses".into(),
        );
    };
    if gh.revision.is_empty() || gh.revision == "<no value>" {
        return Err("no revision to set a commit status on".into());
    }
    let base = api_base(o);
    let client = super::http_client(o.insecure_skip_verify)?;
    let app_id = number(&o.app_id, "appID")?;
    let installation = number(&o.installation_id, "installationID")?;
    let now = chrono::Utc::now().timestamp();
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &json!({ "iat": now - 60, "exp": now + 540, "iss": app_id.to_string() }),
        &jsonwebtoken::EncodingKey::from_rsa_pem(o.private_key.as_bytes())
            .map_err(|e| format!("privateKey: {e}"))?,
    )
    .map_err(|e| format!("signing the GitHub App token: {e}"))?;
    let resp = client
        .post(format!(
            "{base}/app/installations/{installation}/access_tokens"
        ))
        .header("Accept", "application/vnd.github+json")
        .header("User-Agent", "ferry-notifications")
        .bearer_auth(jwt)
        .send()
        .await
        .map_err(|e| format!("github: installation token: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("github: installation token: {}", resp.status()));
    }
    let token: Value = resp.json().await.map_err(|e| format!("github: {e}"))?;
    let token = token["token"]
        .as_str()
        .ok_or("github: no token in the installation token answer")?
        .to_string();
    let resp = client
        .post(format!(
            "{base}/repos/{owner}/{repo}/statuses/{}",
            gh.revision
        ))
        .header("Accept", "application/vnd.github+json")
        .header("User-Agent", "ferry-notifications")
        .header("Authorization", format!("token {token}"))
        .json(&json!({
            "state": status.state,
            "description": truncate(&n.message, 140),
            "context": status.label,
            "target_url": status.target_url,
        }))
        .send()
        .await
        .map_err(|e| format!("github: {e}"))?;
    match resp.status().as_u16() {
        200..=299 => Ok(()),
        422 => Err(format!(
            "too many commit statuses for sha {} and context {}",
            gh.revision, status.label
        )),
        code => Err(format!(
            "github: POST /repos/{owner}/{repo}/statuses/{}: {code}",
            gh.revision
        )),
    }
}

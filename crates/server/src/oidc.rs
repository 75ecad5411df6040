//! Single sign-on over OpenID Connect, configured as Argo CD reads it (`oidc.config` in
//! `argocd-cm`): the browser flow (authorization code with PKCE, state and nonce checked) and
//! the exchange of a CLI's ID token for a session. The provider's groups become RBAC subjects.

use crate::api::AppState;
use crate::auth;
use crate::error::{ApiError, ApiResult};
use crate::settings::Settings;
use argon2::password_hash::rand_core::{OsRng, RngCore};
use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `oidc.config` as Argo CD documents it (the fields Ferry uses).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OidcConfig {
    #[serde(default)]
    pub name: String,
    pub issuer: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// A literal secret, `$key` of argocd-secret, or `$secret-name:key`.
    #[serde(default, skip_serializing)]
    pub client_secret: String,
    #[serde(rename = "cliClientID", default)]
    pub cli_client_id: String,
    #[serde(default)]
    pub requested_scopes: Vec<String>,
    #[serde(default)]
    pub requested_id_token_claims: Option<Value>,
}

impl OidcConfig {
    pub fn scopes(&self) -> String {
        if self.requested_scopes.is_empty() {
            "openid profile email groups".into()
        } else {
            self.requested_scopes.join(" ")
        }
    }
}

/// The configured provider, or an error a user can act on when `oidc.config` is unreadable.
pub fn config(settings: &Settings) -> Result<Option<OidcConfig>, String> {
    let Some(raw) = settings.config().get("oidc.config").cloned() else {
        return Ok(None);
    };
    if raw.trim().is_empty() {
        return Ok(None);
    }
    let c: OidcConfig = serde_saphyr::from_str(&raw)
        .map_err(|e| format!("oidc.config in argocd-cm cannot be read: {e}"))?;
    if c.issuer.is_empty() || c.client_id.is_empty() {
        return Err("oidc.config in argocd-cm needs issuer and clientID".into());
    }
    Ok(Some(c))
}

/// The issuer SSO sessions are accepted from now.
pub fn configured_issuer(settings: &Settings) -> Option<String> {
    config(settings).ok().flatten().map(|c| c.issuer)
}

#[derive(Clone, Debug, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
}

struct Provider {
    discovery: Discovery,
    keys: JwkSet,
    fetched: Instant,
}

/// Discovery documents and keys per issuer, refetched after an hour or when a token names a
/// key that is not known (the provider rotated).
pub struct Oidc {
    http: reqwest::Client,
    providers: tokio::sync::Mutex<HashMap<String, Provider>>,
    /// Browser logins in flight are kept in a signed cookie, not here; this only bounds how
    /// often a client may start one.
    started: Mutex<(f64, Instant)>,
}

impl Default for Oidc {
    fn default() -> Self {
        Self::new()
    }
}

fn bad_gateway(what: impl std::fmt::Display) -> ApiError {
    ApiError::new(axum::http::StatusCode::BAD_GATEWAY, what.to_string())
}

impl Oidc {
    pub fn new() -> Oidc {
        Oidc {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap_or_default(),
            providers: Default::default(),
            started: Mutex::new((20.0, Instant::now())),
        }
    }

    /// A token bucket of 20 logins, refilled at 5 a second.
    pub fn may_start(&self) -> bool {
        let mut b = self.started.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * 5.0).min(20.0);
        b.1 = now;
        if b.0 >= 1.0 {
            b.0 -= 1.0;
            true
        } else {
            false
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> ApiResult<T> {
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| bad_gateway(format!("identity provider: GET {url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(bad_gateway(format!(
                "identity provider: GET {url}: {}",
                resp.status()
            )));
        }
        resp.json()
            .await
            .map_err(|e| bad_gateway(format!("identity provider: GET {url}: {e}")))
    }

    async fn fetch(&self, issuer: &str) -> ApiResult<Provider> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let discovery: Discovery = self.get_json(&url).await?;
        if discovery.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
            return Err(bad_gateway(format!(
                "identity provider: discovery names issuer {} where oidc.config says {issuer}",
                discovery.issuer
            )));
        }
        let keys: JwkSet = self.get_json(&discovery.jwks_uri).await?;
        Ok(Provider {
            discovery,
            keys,
            fetched: Instant::now(),
        })
    }

    pub async fn discovery(&self, issuer: &str) -> ApiResult<Discovery> {
        let mut providers = self.providers.lock().await;
        if let Some(p) = providers.get(issuer)
            && p.fetched.elapsed() < Duration::from_secs(3600)
        {
            return Ok(p.discovery.clone());
        }
        let p = self.fetch(issuer).await?;
        let d = p.discovery.clone();
        providers.insert(issuer.to_string(), p);
        Ok(d)
    }

    async fn key(&self, issuer: &str, kid: Option<&str>) -> ApiResult<DecodingKey> {
        let mut providers = self.providers.lock().await;
        for attempt in 0..2 {
            let stale = providers
                .get(issuer)
                .is_none_or(|p| p.fetched.elapsed() > Duration::from_secs(3600));
            if stale || attempt == 1 {
                // A key we do not know: the provider may have rotated; ask once more, at most
                // every ten seconds.
                if attempt == 1
                    && providers
                        .get(issuer)
                        .is_some_and(|p| p.fetched.elapsed() < Duration::from_secs(10))
                {
                    break;
                }
                let p = self.fetch(issuer).await?;
                providers.insert(issuer.to_string(), p);
            }
            let Some(p) = providers.get(issuer) else {
                continue;
            };
            let found = match kid {
                Some(k) => p.keys.find(k),
                None => p.keys.keys.first(),
            };
            if let Some(jwk) = found {
                return DecodingKey::from_jwk(jwk)
                    .map_err(|e| bad_gateway(format!("identity provider key: {e}")));
            }
        }
        Err(ApiError::unauthenticated(
            "the ID token is signed with a key the identity provider does not publish",
        ))
    }

    /// Checks an ID token's signature, issuer, audience, expiry and (when given) nonce.
    pub async fn verify(
        &self,
        cfg: &OidcConfig,
        id_token: &str,
        audiences: &[&str],
        nonce: Option<&str>,
    ) -> ApiResult<Value> {
        let header = jsonwebtoken::decode_header(id_token)
            .map_err(|e| ApiError::unauthenticated(format!("invalid ID token: {e}")))?;
        let key = self.key(&cfg.issuer, header.kid.as_deref()).await?;
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[cfg.issuer.as_str(), cfg.issuer.trim_end_matches('/')]);
        v.set_audience(audiences);
        v.set_required_spec_claims(&["iss", "sub", "aud", "exp"]);
        v.leeway = 30;
        let data = jsonwebtoken::decode::<Value>(id_token, &key, &v)
            .map_err(|e| ApiError::unauthenticated(format!("invalid ID token: {e}")))?;
        if let Some(expected) = nonce
            && data.claims.get("nonce").and_then(Value::as_str) != Some(expected)
        {
            return Err(ApiError::unauthenticated(
                "the ID token's nonce does not match this login",
            ));
        }
        Ok(data.claims)
    }

    /// Exchanges an authorization code at the provider's token endpoint; the ID token.
    pub async fn exchange(
        &self,
        st: &AppState,
        cfg: &OidcConfig,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> ApiResult<String> {
        let d = self.discovery(&cfg.issuer).await?;
        let secret = client_secret(st, cfg).await?;
        let mut form = vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code.to_string()),
            ("redirect_uri", redirect_uri.to_string()),
            ("code_verifier", verifier.to_string()),
        ];
        let mut req = self.http.post(&d.token_endpoint);
        match secret {
            Some(s) => req = req.basic_auth(&cfg.client_id, Some(s)),
            None => form.push(("client_id", cfg.client_id.clone())),
        }
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let resp = req
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| bad_gateway(format!("identity provider: token endpoint: {e}")))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or_default();
        if !status.is_success() {
            // The provider's error code and description; never the request (it holds secrets).
            let err = v.get("error").and_then(Value::as_str).unwrap_or("unknown");
            let desc = v
                .get("error_description")
                .and_then(Value::as_str)
                .unwrap_or_default();
            return Err(ApiError::unauthenticated(format!(
                "the identity provider refused the login: {err} {desc}"
            )));
        }
        v.get("id_token")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| bad_gateway("identity provider: no id_token in the token response"))
    }
}

/// The client secret: literal, `$key` of argocd-secret, or `$secret:key` of another Secret
/// in the namespace (as Argo CD resolves them).
async fn client_secret(st: &AppState, cfg: &OidcConfig) -> ApiResult<Option<String>> {
    let raw = cfg.client_secret.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let Some(reference) = raw.strip_prefix('$') else {
        return Ok(Some(raw.to_string()));
    };
    match reference.split_once(':') {
        None => st
            .settings
            .secret()
            .get(reference)
            .cloned()
            .map(Some)
            .ok_or_else(|| {
                ApiError::internal(format!(
                    "oidc.config clientSecret refers to key {reference} of argocd-secret, which does not exist"
                ))
            }),
        Some((name, key)) => {
            let s = Api::<Secret>::namespaced(st.client.clone(), &st.ns)
                .get_opt(name)
                .await?
                .ok_or_else(|| {
                    ApiError::internal(format!(
                        "oidc.config clientSecret refers to Secret {name}, which does not exist"
                    ))
                })?;
            s.data
                .and_then(|d| d.get(key).cloned())
                .map(|b| Some(String::from_utf8_lossy(&b.0).into_owned()))
                .ok_or_else(|| {
                    ApiError::internal(format!(
                        "oidc.config clientSecret refers to key {key} of Secret {name}, which does not exist"
                    ))
                })
        }
    }
}

/// The RBAC subjects of an ID token: its `sub`, and the values of the claims named by
/// `scopes` in argocd-rbac-cm (default `[groups]`), as Argo CD reads them.
pub fn subjects(settings: &Settings, claims: &Value) -> (String, Vec<String>) {
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let scopes: Vec<String> = settings
        .rbac()
        .get("scopes")
        .map(|s| {
            s.trim_matches(|c| c == '[' || c == ']' || c == ' ')
                .split(',')
                .map(|x| x.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
                .filter(|x| !x.is_empty())
                .collect()
        })
        .unwrap_or_else(|| vec!["groups".into()]);
    let mut groups = Vec::new();
    for scope in scopes {
        match claims.get(&scope) {
            Some(Value::String(s)) => groups.push(s.clone()),
            Some(Value::Array(a)) => {
                groups.extend(a.iter().filter_map(Value::as_str).map(String::from))
            }
            _ => {}
        }
    }
    (sub, groups)
}

/// Random URL-safe text of `bytes` random bytes.
pub fn random(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// PKCE's S256 challenge of a verifier.
pub fn challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// A browser login in flight, kept in a short-lived cookie signed with the server key.
#[derive(Debug, Serialize, Deserialize)]
pub struct Pending {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    pub return_to: String,
    pub redirect_uri: String,
    pub exp: i64,
}

pub fn seal(settings: &Settings, p: &Pending) -> ApiResult<String> {
    let key = settings
        .secret()
        .get("server.secretkey")
        .cloned()
        .unwrap_or_default();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        p,
        &jsonwebtoken::EncodingKey::from_secret(format!("oidc-state:{key}").as_bytes()),
    )
    .map_err(|e| ApiError::internal(format!("sealing the login state: {e}")))
}

pub fn unseal(settings: &Settings, raw: &str) -> ApiResult<Pending> {
    let key = settings
        .secret()
        .get("server.secretkey")
        .cloned()
        .unwrap_or_default();
    let mut v = Validation::new(jsonwebtoken::Algorithm::HS256);
    v.set_required_spec_claims(&["exp"]);
    jsonwebtoken::decode::<Pending>(
        raw,
        &jsonwebtoken::DecodingKey::from_secret(format!("oidc-state:{key}").as_bytes()),
        &v,
    )
    .map(|d| d.claims)
    .map_err(|_| {
        ApiError::unauthenticated("this login has expired or was not started here: log in again")
    })
}

/// The `POST /api/v1/session` body of `ferry login --sso`: an ID token the CLI obtained
/// with `cliClientID` (or `clientID`), exchanged for a session.
pub async fn session_from_id_token(st: &AppState, id_token: &str) -> ApiResult<String> {
    let cfg = config(&st.settings)
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::bad_request("single sign-on is not configured (oidc.config in argocd-cm)")
        })?;
    let mut audiences = vec![cfg.client_id.as_str()];
    if !cfg.cli_client_id.is_empty() {
        audiences.push(cfg.cli_client_id.as_str());
    }
    let claims = st.oidc.verify(&cfg, id_token, &audiences, None).await?;
    let (sub, groups) = subjects(&st.settings, &claims);
    auth::issue_sso(&st.settings, &sub, &cfg.issuer, groups)
}

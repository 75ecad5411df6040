//! Who is calling: local accounts with argon2 password hashes, session
//! JWTs, and project-role tokens that are revoked by removing their issued-at
//! from the AppProject. Tokens are HS256-signed with `server.secretkey`.

use crate::error::{ApiError, ApiResult};
use crate::settings::{ARGOCD_SECRET, INITIAL_ADMIN_SECRET, Settings};
use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use ferry_model::AppProject;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const ISSUER: &str = "ferry";
pub const SESSION_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub iat: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Single sign-on sessions: the identity provider's issuer. Their subject is no local
    /// account, and their groups come from the provider's `groups` claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sso: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Principal {
    /// The account name, or `proj:<project>:<role>`.
    pub subject: String,
    pub groups: Vec<String>,
    /// For project-role tokens: (project, role, its policy lines, its groups).
    pub project_role: Option<(String, String, Vec<String>, Vec<String>)>,
    /// The policy this caller is judged by, built once per request (a list
    /// checks every item): (the settings' policy it was built from, result).
    pub policy: std::sync::OnceLock<(PolicyRef, PolicyRef)>,
}

pub type PolicyRef = std::sync::Arc<crate::rbac::Policy>;

impl Principal {
    pub fn subjects(&self) -> Vec<String> {
        let mut s = vec![self.subject.clone()];
        s.extend(self.groups.iter().cloned());
        s
    }
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn signing_key(settings: &Settings) -> ApiResult<Vec<u8>> {
    let key = settings
        .secret()
        .get("server.secretkey")
        .cloned()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ApiError::internal("server.secretkey is missing from argocd-secret"))?;
    Ok(key.into_bytes())
}

pub fn issue(settings: &Settings, sub: &str, ttl: Option<Duration>) -> ApiResult<(String, Claims)> {
    issue_with(settings, sub, ttl, None, Vec::new())
}

/// A session for someone the identity provider `sso` vouched for, with its groups.
pub fn issue_sso(
    settings: &Settings,
    sub: &str,
    sso: &str,
    groups: Vec<String>,
) -> ApiResult<String> {
    Ok(issue_with(
        settings,
        sub,
        Some(SESSION_TTL),
        Some(sso.to_string()),
        groups,
    )?
    .0)
}

fn issue_with(
    settings: &Settings,
    sub: &str,
    ttl: Option<Duration>,
    sso: Option<String>,
    groups: Vec<String>,
) -> ApiResult<(String, Claims)> {
    let key = signing_key(settings)?;
    let iat = now_secs();
    let mut id = [0u8; 16];
    OsRng.fill_bytes(&mut id);
    let claims = Claims {
        iss: ISSUER.into(),
        sub: sub.into(),
        iat,
        exp: ttl.map(|t| iat + t.as_secs() as i64),
        jti: Some(id.iter().map(|b| format!("{b:02x}")).collect()),
        sso,
        groups,
    };
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&key),
    )
    .map_err(|e| ApiError::internal(format!("signing a token: {e}")))?;
    Ok((token, claims))
}

/// The CSRF token of a browser session: bound to its session token, so a page of another
/// site can neither read nor guess it.
pub fn csrf_token(settings: &Settings, session: &str) -> ApiResult<String> {
    use hmac::{Hmac, Mac};
    let key = signing_key(settings)?;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key)
        .map_err(|e| ApiError::internal(format!("csrf key: {e}")))?;
    mac.update(b"ferry-csrf\0");
    mac.update(session.as_bytes());
    Ok(mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn decode(settings: &Settings, token: &str) -> ApiResult<Claims> {
    let key = signing_key(settings)?;
    let mut v = Validation::new(Algorithm::HS256);
    v.set_issuer(&[ISSUER]);
    v.set_required_spec_claims(&["iss", "sub", "iat"]);
    v.validate_exp = false; // checked below: project tokens may have no expiry
    let data = jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&key), &v)
        .map_err(|e| ApiError::unauthenticated(format!("invalid token: {e}")))?;
    let c = data.claims;
    if c.exp.is_some_and(|e| e < now_secs()) {
        return Err(ApiError::unauthenticated(
            "token expired: log in again with `ferry login`",
        ));
    }
    Ok(c)
}

/// Checks a bearer token and says who it belongs to.
pub fn authenticate(
    settings: &Settings,
    project: &dyn Fn(&str) -> Option<std::sync::Arc<AppProject>>,
    token: &str,
) -> ApiResult<Principal> {
    let c = decode(settings, token)?;
    if let Some(rest) = c.sub.strip_prefix("proj:") {
        let (p, r) = rest
            .split_once(':')
            .ok_or_else(|| ApiError::unauthenticated("invalid token subject"))?;
        let proj = project(p).ok_or_else(|| {
            ApiError::unauthenticated(format!("token for project {p}, which no longer exists"))
        })?;
        let role = proj
            .spec
            .roles
            .iter()
            .find(|x| x.name == r)
            .ok_or_else(|| {
                ApiError::unauthenticated(format!("role {r} of project {p} no longer exists"))
            })?;
        // The issued-at names the token (as in Argo CD); the id tells apart
        // two issued in the same second.
        let listed = role.jwt_tokens.iter().any(|t| {
            t.iat == c.iat
                && match (&t.id, &c.jti) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                }
        });
        if !listed {
            return Err(ApiError::unauthenticated(format!(
                "token issued at {} for {} has been revoked",
                c.iat, c.sub
            )));
        }
        return Ok(Principal {
            subject: c.sub.clone(),
            groups: Vec::new(),
            project_role: Some((
                p.to_string(),
                r.to_string(),
                role.policies.clone(),
                role.groups.clone(),
            )),
            policy: Default::default(),
        });
    }
    if c.sso.is_some() {
        // The provider's configuration may have gone since: SSO sessions end with it.
        if crate::oidc::configured_issuer(settings).as_deref() != c.sso.as_deref() {
            return Err(ApiError::unauthenticated(
                "single sign-on is no longer configured for this session's provider: log in again",
            ));
        }
        return Ok(Principal {
            subject: c.sub.clone(),
            groups: c.groups.clone(),
            project_role: None,
            policy: Default::default(),
        });
    }
    let account = c.sub.clone();
    check_account_enabled(settings, &account).map_err(ApiError::unauthenticated)?;
    // A password change ends earlier sessions.
    let mtime_key = password_key(&account).replace(".password", ".passwordMtime");
    if let Some(raw) = settings.secret().get(&mtime_key) {
        // Unreadable means unknown: refuse rather than let old sessions in.
        let newer = raw
            .trim()
            .parse::<k8s_openapi::jiff::Timestamp>()
            .map(|m| c.iat < m.as_second())
            .unwrap_or(true);
        if newer {
            return Err(ApiError::unauthenticated(
                "the password changed since this session began: log in again",
            ));
        }
    }
    Ok(Principal {
        subject: account,
        groups: Vec::new(),
        project_role: None,
        policy: Default::default(),
    })
}

/// The Secret key of an account's password hash, as Argo CD names it.
pub fn password_key(account: &str) -> String {
    if account == "admin" {
        "admin.password".into()
    } else {
        format!("accounts.{account}.password")
    }
}

/// Local accounts: `admin` (unless `admin.enabled: "false"`) and every
/// `accounts.<name>` key of argocd-cm, with their capabilities.
pub fn accounts(settings: &Settings) -> Vec<(String, bool, Vec<String>)> {
    let cm = settings.config();
    let mut out = vec![(
        "admin".to_string(),
        cm.get("admin.enabled").is_none_or(|v| v != "false"),
        vec!["login".to_string()],
    )];
    for (k, v) in &cm {
        let Some(name) = k.strip_prefix("accounts.") else {
            continue;
        };
        if name.contains('.') {
            continue;
        }
        let enabled = cm
            .get(&format!("accounts.{name}.enabled"))
            .is_none_or(|e| e != "false");
        let caps = v
            .split(',')
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect();
        out.push((name.to_string(), enabled, caps));
    }
    out
}

fn check_account_enabled(settings: &Settings, account: &str) -> Result<(), String> {
    match accounts(settings).into_iter().find(|a| a.0 == account) {
        Some((_, true, _)) => Ok(()),
        Some((_, false, _)) => Err(format!("account {account} is disabled")),
        None => Err(format!("account {account} does not exist")),
    }
}

pub fn hash_password(password: &str) -> ApiResult<String> {
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::internal(format!("hashing a password: {e}")))
}

fn password_matches(hash: &str, password: &str) -> bool {
    // Argo CD stores bcrypt hashes (`$2a$`): after a take-over its accounts keep working, and the
    // next password change writes argon2.
    if hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$") {
        return bcrypt::verify(password, hash).unwrap_or(false);
    }
    PasswordHash::new(hash)
        .map(|h| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Username and password → session token. The same answer for every kind
/// of failure, so it does not tell which accounts exist.
pub fn login(settings: &Settings, username: &str, password: &str) -> ApiResult<String> {
    let refused = || ApiError::unauthenticated("invalid username or password");
    let account = accounts(settings).into_iter().find(|a| a.0 == username);
    let hash = settings.secret().get(&password_key(username)).cloned();
    let usable = account
        .as_ref()
        .is_some_and(|(_, enabled, caps)| *enabled && caps.iter().any(|c| c == "login"));
    // Always pay for one hash, so timing does not tell which accounts exist.
    let matches = match hash.as_deref() {
        Some(h) if usable => password_matches(h, password),
        _ => {
            let _ = password_matches(dummy_hash(), password);
            false
        }
    };
    if !matches {
        return Err(refused());
    }
    Ok(issue(settings, username, Some(SESSION_TTL))?.0)
}

fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("ferry-dummy-password").unwrap_or_default())
}

pub fn verify_password(settings: &Settings, account: &str, password: &str) -> bool {
    settings
        .secret()
        .get(&password_key(account))
        .is_some_and(|h| password_matches(h, password))
}

fn random_password() -> String {
    const CHARS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    bytes
        .iter()
        .map(|b| CHARS[*b as usize % CHARS.len()] as char)
        .collect()
}

/// Makes sure `argocd-secret` has a signing key and an admin password. When
/// the admin password is generated here, it is also stored in
/// `argocd-initial-admin-secret` and returned so the caller can print it once.
pub async fn bootstrap(client: &Client, ns: &str) -> Result<Option<String>, kube::Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let existing = api.get_opt(ARGOCD_SECRET).await?;
    let has = |k: &str| {
        existing
            .as_ref()
            .and_then(|s| s.data.as_ref())
            .is_some_and(|d| d.get(k).is_some_and(|v| !v.0.is_empty()))
    };
    let mut add = serde_json::Map::new();
    if !has("server.secretkey") {
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        add.insert(
            "server.secretkey".into(),
            base64::engine::general_purpose::STANDARD.encode(key).into(),
        );
    }
    let mut initial = None;
    if !has("admin.password") {
        let password = random_password();
        let hash = hash_password(&password)
            .map_err(|e| kube::Error::Service(std::io::Error::other(e.message).into()))?;
        add.insert("admin.password".into(), hash.into());
        add.insert(
            "admin.passwordMtime".into(),
            k8s_openapi::jiff::Timestamp::now().to_string().into(),
        );
        initial = Some(password);
    }
    if add.is_empty() {
        return Ok(None);
    }
    let body = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": ARGOCD_SECRET, "labels": { "app.kubernetes.io/part-of": "argocd" } },
        "stringData": add,
    });
    if existing.is_some() {
        api.patch(ARGOCD_SECRET, &PatchParams::default(), &Patch::Merge(&body))
            .await?;
    } else {
        let s: Secret = serde_json::from_value(body).map_err(kube::Error::SerdeError)?;
        api.create(&PostParams::default(), &s).await?;
    }
    if let Some(p) = &initial {
        let s: Secret = serde_json::from_value(serde_json::json!({
            "metadata": { "name": INITIAL_ADMIN_SECRET },
            "stringData": { "password": p },
        }))
        .map_err(kube::Error::SerdeError)?;
        match api.create(&PostParams::default(), &s).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {
                api.patch(
                    INITIAL_ADMIN_SECRET,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({ "stringData": { "password": p } })),
                )
                .await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(initial)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_round_trip() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2"), "{h}");
        assert!(!h.contains("s3cret"));
        assert!(password_matches(&h, "s3cret"));
        assert!(!password_matches(&h, "s3cre"));
        assert!(!password_matches("$2a$10$bcrypt", "s3cret"));
    }

    #[test]
    fn generated_passwords_differ() {
        let a = random_password();
        assert_eq!(a.len(), 16);
        assert_ne!(a, random_password());
    }
}

#[cfg(test)]
mod bcrypt_tests {
    #[test]
    fn argo_cds_bcrypt_hashes_verify() {
        // `argocd account bcrypt --password password`'s kind of hash (cost 10).
        let hash = bcrypt::hash("password", 10)
            .unwrap()
            .replacen("$2b$", "$2a$", 1);
        assert!(super::password_matches(&hash, "password"));
        assert!(!super::password_matches(&hash, "wrong"));
        assert!(!super::password_matches("$2a$10$garbage", "password"));
        // The example in Argo CD's argocd-secret.yaml docs.
        let documented = "$2a$10$rRyBsGSHK6.uc8fntPwVIuLVHgsAhAX7TcdrqW/RADU0uh7CaChLa";
        assert!(super::password_matches(documented, "password"));
    }
}

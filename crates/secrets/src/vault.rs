//! Vault's HTTP API (HashiCorp Vault or OpenBao), as avp's vault backend uses it: KV v1 and v2
//! read at the path written (avp never inserts `/data/`; KV v2 users write `kv/data/app`),
//! `?version=N` on KV v2, and the auth methods `token`, `approle`, `userpass`, `k8s` and `github`.
//!
//! The HTTP is written here rather than through a Vault client crate: avp's KV semantics (the raw
//! path, its exact "did you forget /data/" diagnostics) need the raw read, and its error texts
//! are part of what users grep for. One token per backend (one identity) lives in memory only;
//! an expired one is replaced by logging in again.

use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::Mutex;

use crate::backend::{Backend, BoxFuture};
use crate::config::AvpConfig;
use crate::placeholder::SecretRef;

/// How the backend authenticates (`AVP_AUTH_TYPE`).
#[derive(Clone)]
pub enum Auth {
    Token(String),
    AppRole {
        mount: String,
        role_id: String,
        secret_id: String,
    },
    UserPass {
        mount: String,
        username: String,
        password: String,
    },
    Kubernetes {
        mount: String,
        role: String,
        token_path: String,
    },
    Github {
        mount: String,
        token: String,
    },
}

impl std::fmt::Debug for Auth {
    // Never the credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Auth::Token(_) => "token",
            Auth::AppRole { .. } => "approle",
            Auth::UserPass { .. } => "userpass",
            Auth::Kubernetes { .. } => "k8s",
            Auth::Github { .. } => "github",
        })
    }
}

impl Auth {
    /// From avp's settings, with its error texts for what is missing.
    pub fn from_config(c: &AvpConfig) -> Result<Auth, String> {
        let mount = |default: &str| {
            c.value("AVP_MOUNT_PATH")
                .unwrap_or_else(|| default.to_owned())
        };
        match c.value("AVP_AUTH_TYPE").as_deref() {
            Some("token") => c
                .value("VAULT_TOKEN")
                .map(Auth::Token)
                .ok_or_else(|| "VAULT_TOKEN for token authentication cannot be empty".to_owned()),
            Some("approle") => match (c.value("AVP_ROLE_ID"), c.value("AVP_SECRET_ID")) {
                (Some(role_id), Some(secret_id)) => Ok(Auth::AppRole {
                    mount: mount("auth/approle"),
                    role_id,
                    secret_id,
                }),
                _ => Err(
                    "AVP_ROLE_ID and AVP_SECRET_ID for approle authentication cannot be empty"
                        .into(),
                ),
            },
            Some("userpass") => match (c.value("AVP_USERNAME"), c.value("AVP_PASSWORD")) {
                (Some(username), Some(password)) => Ok(Auth::UserPass {
                    mount: mount("auth/userpass"),
                    username,
                    password,
                }),
                _ => Err(
                    "AVP_USERNAME and AVP_PASSWORD for userpass authentication cannot be empty"
                        .into(),
                ),
            },
            Some("k8s") => match c.value("AVP_K8S_ROLE") {
                Some(role) => Ok(Auth::Kubernetes {
                    mount: c
                        .value("AVP_K8S_MOUNT_PATH")
                        .unwrap_or_else(|| mount("auth/kubernetes")),
                    role,
                    token_path: c.value("AVP_K8S_TOKEN_PATH").unwrap_or_else(|| {
                        "/var/run/secrets/kubernetes.io/serviceaccount/token".into()
                    }),
                }),
                None => Err("AVP_K8S_ROLE cannot be empty when using Kubernetes Auth".into()),
            },
            Some("github") => match c.value("AVP_GITHUB_TOKEN") {
                Some(token) => Ok(Auth::Github {
                    mount: mount("auth/github"),
                    token,
                }),
                None => Err("AVP_GITHUB_TOKEN for github authentication cannot be empty".into()),
            },
            other => Err(format!(
                "Must provide a supported Authentication Type, received {}",
                other.unwrap_or("")
            )),
        }
    }
}

pub struct Vault {
    http: reqwest::Client,
    addr: String,
    namespace: Option<String>,
    auth: Auth,
    kv_version: String,
    token: Mutex<Option<String>>,
}

impl Vault {
    pub fn new(c: &AvpConfig) -> Result<Vault, String> {
        crate::install_crypto_provider();
        let auth = Auth::from_config(c)?;
        let skip_verify = matches!(
            c.value("VAULT_SKIP_VERIFY").as_deref(),
            Some("1" | "true" | "TRUE" | "True" | "t")
        );
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
            .tls_danger_accept_invalid_certs(skip_verify);
        if let Some(ca) = c.value("VAULT_CACERT") {
            let pem = std::fs::read(&ca).map_err(|e| format!("VAULT_CACERT {ca}: {e}"))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| format!("VAULT_CACERT {ca}: {e}"))?;
            b = b.add_root_certificate(cert);
        }
        let http = b.build().map_err(|e| e.to_string())?;
        Ok(Vault {
            http,
            addr: c
                .value("VAULT_ADDR")
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_owned(),
            namespace: c.value("VAULT_NAMESPACE"),
            kv_version: c.value("AVP_KV_VERSION").unwrap_or_else(|| "2".into()),
            token: Mutex::new(match &auth {
                Auth::Token(t) => Some(t.clone()),
                _ => None,
            }),
            auth,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .request(method, format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Request", "true");
        if let Some(ns) = &self.namespace {
            r = r.header("X-Vault-Namespace", ns);
        }
        r
    }

    async fn do_login(&self) -> Result<(), String> {
        let (path, body) = match &self.auth {
            Auth::Token(_) => return Ok(()),
            Auth::AppRole {
                mount,
                role_id,
                secret_id,
            } => (
                format!("{mount}/login"),
                json!({"role_id": role_id, "secret_id": secret_id}),
            ),
            Auth::UserPass {
                mount,
                username,
                password,
            } => (
                format!("{mount}/login/{username}"),
                json!({"password": password}),
            ),
            Auth::Kubernetes {
                mount,
                role,
                token_path,
            } => {
                let jwt = std::fs::read_to_string(token_path)
                    .map_err(|e| format!("open {token_path}: {e}"))?;
                (
                    format!("{mount}/login"),
                    json!({"role": role, "jwt": jwt.trim()}),
                )
            }
            Auth::Github { mount, token } => (format!("{mount}/login"), json!({"token": token})),
        };
        let url = format!("{}/v1/{path}", self.addr);
        let resp = self
            .request(reqwest::Method::PUT, &path)
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("Put \"{url}\": {}", root_cause(&e)))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(api_error("PUT", &url, status.as_u16(), &v));
        }
        let token = v
            .pointer("/auth/client_token")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("login at {url} returned no client token"))?;
        *self.token.lock().await = Some(token.to_owned());
        Ok(())
    }

    /// One read; `Ok(None)` for a 404 without data.
    async fn read(
        &self,
        path: &str,
        version: Option<&str>,
    ) -> Result<Option<Value>, (u16, String)> {
        let token = self.token.lock().await.clone().unwrap_or_default();
        let mut req = self
            .request(reqwest::Method::GET, path)
            .header("X-Vault-Token", token);
        if let Some(v) = version {
            req = req.query(&[("version", v)]);
        }
        let url = format!("{}/v1/{path}", self.addr);
        let resp = req
            .send()
            .await
            .map_err(|e| (0, format!("Get \"{url}\": {}", root_cause(&e))))?;
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        match status {
            200..=299 => Ok(Some(v)),
            // A deleted KV v2 version answers 404 with its metadata: that is data to report on.
            404 if v.get("data").is_some_and(|d| !d.is_null()) => Ok(Some(v)),
            404 => Ok(None),
            code => Err((code, api_error("GET", &url, code, &v))),
        }
    }
}

fn root_cause(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg = s.to_string();
        src = s.source();
    }
    msg
}

/// The Vault client's error text: `Error making API request. URL: GET ... Code: 403. Errors: ...`.
fn api_error(method: &str, url: &str, code: u16, body: &Value) -> String {
    let errors: Vec<String> = body
        .get("errors")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| format!("* {}", e.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    let hint = match code {
        503 => " (the server is sealed or unavailable)",
        403 => " (permission denied: check the token's policies)",
        _ => "",
    };
    format!(
        "Error making API request.\n\nURL: {method} {url}\nCode: {code}{hint}. Errors:\n\n{}",
        errors.join("\n")
    )
}

impl Backend for Vault {
    fn name(&self) -> &'static str {
        "vault"
    }

    fn login(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(self.do_login())
    }

    fn get_secrets<'a>(
        &'a self,
        r: &'a SecretRef,
    ) -> BoxFuture<'a, Result<Map<String, Value>, String>> {
        Box::pin(async move {
            let kv = r
                .kv_version
                .clone()
                .unwrap_or_else(|| self.kv_version.clone());
            let version = r.version.as_deref().filter(|v| !v.is_empty());
            // avp sends the version only to KV v2.
            let asked = if kv == "2" { version } else { None };
            let mut got = self.read(&r.path, asked).await;
            // An expired token: log in again, once.
            if matches!(&got, Err((403, _))) && !matches!(self.auth, Auth::Token(_)) {
                self.do_login().await?;
                got = self.read(&r.path, asked).await;
            }
            let secret = got.map_err(|(_, e)| e)?;
            let Some(secret) = secret else {
                // avp's text, plus what answered and the likely cause: a KV v2 path without
                // `/data/` (avp issues #42, #47) reads as "not found" too.
                let what = match version {
                    Some(v) if kv == "2" => {
                        format!("Could not find secrets at path {} with version {v}", r.path)
                    }
                    _ => format!("Could not find secrets at path {}", r.path),
                };
                let hint = if kv == "2" && !r.path.contains("/data/") {
                    " - did you forget to include /data/ in the Vault path for kv-v2?"
                } else {
                    ""
                };
                return Err(format!("{what} ({} answered 404){hint}", self.addr));
            };
            let data = secret.get("data").cloned().unwrap_or(Value::Null);
            match kv.as_str() {
                "2" => match data.get("data") {
                    Some(Value::Object(m)) => Ok(m.clone()),
                    Some(Value::Null) => Err(format!(
                        "The secret version {} for Vault path {} is nil - is this version of the secret deleted?",
                        version.unwrap_or(""),
                        r.path
                    )),
                    _ if data.as_object().is_none_or(|m| m.is_empty()) => Err(format!(
                        "The Vault path: {} is empty - did you forget to include /data/ in the Vault path for kv-v2?",
                        r.path
                    )),
                    _ => Err(format!(
                        "Could not get data from Vault at path {}, check that kv-v2 is the correct engine (the answer has no data.data; for KV v1 set AVP_KV_VERSION=1)",
                        r.path
                    )),
                },
                "1" => match data {
                    Value::Object(m) => Ok(m),
                    _ => Ok(Map::new()),
                },
                _ => Err("Unsupported kvVersion specified".into()),
            }
        })
    }
}

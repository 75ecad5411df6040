//! Destinations: the in-cluster API server and clusters from Argo CD cluster Secrets.

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// What Ferry's requests say they come from (`User-Agent`), so API server audit logs and
/// request metrics can tell them from other clients'.
pub const USER_AGENT: &str = concat!("ferry/", env!("CARGO_PKG_VERSION"));

/// Marks a client configuration's requests as Ferry's.
pub fn identify(config: &mut kube::Config) {
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(USER_AGENT),
    ));
}

/// A cluster Secret's content (`argocd.argoproj.io/secret-type: cluster`).
#[derive(Clone)]
pub struct ClusterSecret {
    pub name: String,
    pub server: String,
    pub namespaces: Vec<String>,
    config: Value,
    pub resource_version: String,
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSecret")
            .field("name", &self.name)
            .field("server", &self.server)
            .finish()
    }
}

pub fn decode(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .as_ref()
        .map(|d| {
            d.iter()
                .filter_map(|(k, v)| String::from_utf8(v.0.clone()).ok().map(|s| (k.clone(), s)))
                .collect()
        })
        .unwrap_or_default()
}

impl ClusterSecret {
    pub fn from_secret(secret: &Secret) -> Option<ClusterSecret> {
        let d = decode(secret);
        let server = d.get("server")?.trim().to_string();
        let config = d
            .get("config")
            .and_then(|c| serde_json::from_str(c).ok())
            .unwrap_or_else(|| json!({}));
        Some(ClusterSecret {
            name: d.get("name").cloned().unwrap_or_else(|| server.clone()),
            server,
            namespaces: d
                .get("namespaces")
                .map(|n| {
                    n.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            config,
            resource_version: secret.metadata.resource_version.clone().unwrap_or_default(),
        })
    }

    /// A client for the cluster, from Argo CD's `config` JSON (bearerToken,
    /// username/password, tlsClientConfig {insecure, caData, certData, keyData}).
    pub async fn client(&self) -> Result<kube::Client, String> {
        let c = &self.config;
        let tls = c
            .get("tlsClientConfig")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let mut cluster = json!({ "server": self.server });
        if tls.get("insecure").and_then(Value::as_bool) == Some(true) {
            cluster["insecure-skip-tls-verify"] = json!(true);
        }
        if let Some(ca) = tls.get("caData").and_then(Value::as_str) {
            cluster["certificate-authority-data"] = json!(ca);
        }
        if let Some(sn) = tls.get("serverName").and_then(Value::as_str) {
            cluster["tls-server-name"] = json!(sn);
        }
        let mut user = json!({});
        if let Some(t) = c.get("bearerToken").and_then(Value::as_str) {
            user["token"] = json!(t);
        }
        if let (Some(u), Some(p)) = (
            c.get("username").and_then(Value::as_str),
            c.get("password").and_then(Value::as_str),
        ) {
            user["username"] = json!(u);
            user["password"] = json!(p);
        }
        if let Some(cert) = tls.get("certData").and_then(Value::as_str) {
            user["client-certificate-data"] = json!(cert);
        }
        if let Some(key) = tls.get("keyData").and_then(Value::as_str) {
            user["client-key-data"] = json!(key);
        }
        let kc = json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{ "name": "c", "cluster": cluster }],
            "users": [{ "name": "u", "user": user }],
            "contexts": [{ "name": "c", "context": { "cluster": "c", "user": "u" } }],
            "current-context": "c",
        });
        let kc: Kubeconfig = serde_json::from_value(kc)
            .map_err(|e| format!("cluster {}: invalid config: {e}", self.name))?;
        let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| format!("cluster {}: {}", self.name, scrub(&e.to_string())))?;
        identify(&mut config);
        kube::Client::try_from(config)
            .map_err(|e| format!("cluster {}: {}", self.name, scrub(&e.to_string())))
    }
}

/// Error texts from client construction never carry credentials, but make sure.
fn scrub(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

/// Base64 as Secret `data` holds it, for tests and tools building Secrets.
pub fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

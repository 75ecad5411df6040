//! A real OpenID Connect provider on loopback — panva's `oidc-provider` (npm), run by Node.js
//! from `crates/testenv/oidc/provider.mjs` — for the single sign-on tests, where Ferry is the
//! relying party of a browser login (authorization code + PKCE S256, a confidential client) and
//! a CLI login (a public client with PKCE, like Argo CD's `cliClientID`).
//!
//! Users sign in on a plain HTML form: [`USERNAME_FIELD`], [`PASSWORD_FIELD`] and the button
//! [`SUBMIT_SELECTOR`]; a wrong password shows the form again (HTTP 401) with `p#error`. Consent
//! is granted without a screen, so the browser goes from the form straight back to the client's
//! redirect URI with `?code=&state=&iss=`. ID Tokens carry `sub` (the username), `name`,
//! `preferred_username` (scope `profile`), `email`, `email_verified` (scope `email`) and
//! `groups` (scope `groups`), and are signed RS256 with a key made at each start and published at
//! `/jwks`. Every client must use PKCE with S256. The provider's cookies (`op_session`,
//! `op_interaction`, `op_interaction_resume`, each with a `.sig`) are set without `Secure` over
//! plain http. Started on demand by the tests that need it, not with every environment.

use crate::cluster::write_private;
use crate::error::{Error, IoContext, Result};
use crate::prereq::cache_dir;
use crate::process::{Proc, free_port, wait_until};
use crate::secret::Secret;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The oidc-provider release `make setup` installs (pinned in crates/testenv/oidc/package.json).
pub const OIDC_PROVIDER_VERSION: &str = "9.13.3";

/// The login form's `name` of the username input.
pub const USERNAME_FIELD: &str = "username";
/// The login form's `name` of the password input.
pub const PASSWORD_FIELD: &str = "password";
/// CSS selector of the login form's submit button.
pub const SUBMIT_SELECTOR: &str = "button#login";

/// A relying party registered when the provider starts.
#[derive(Debug, Clone)]
pub struct OidcClient {
    pub client_id: String,
    /// `None` for a public client.
    pub client_secret: Option<Secret>,
    /// The exact URIs the provider may redirect back to.
    pub redirect_uris: Vec<String>,
    /// `client_secret_basic` (the default for a confidential client), `client_secret_post`, or
    /// `none` (a public client).
    pub token_endpoint_auth_method: String,
}

impl OidcClient {
    /// A confidential client that authenticates to the token endpoint with HTTP basic auth
    /// (`client_secret_basic`): the browser login.
    pub fn confidential(client_id: &str, client_secret: &Secret, redirect_uri: &str) -> Self {
        OidcClient {
            client_id: client_id.to_owned(),
            client_secret: Some(client_secret.clone()),
            redirect_uris: vec![redirect_uri.to_owned()],
            token_endpoint_auth_method: "client_secret_basic".into(),
        }
    }

    /// A public client (`token_endpoint_auth_method` `none`, PKCE only): the CLI login.
    pub fn public(client_id: &str, redirect_uri: &str) -> Self {
        OidcClient {
            client_id: client_id.to_owned(),
            client_secret: None,
            redirect_uris: vec![redirect_uri.to_owned()],
            token_endpoint_auth_method: "none".into(),
        }
    }

    fn to_json(&self) -> Value {
        let mut c = json!({
            "client_id": self.client_id,
            "redirect_uris": self.redirect_uris,
            "token_endpoint_auth_method": self.token_endpoint_auth_method,
        });
        if let Some(s) = &self.client_secret {
            c["client_secret"] = json!(s.expose());
        }
        c
    }
}

/// A user who can sign in.
#[derive(Debug, Clone)]
pub struct OidcUser {
    /// What the login form takes, and the ID Token's `sub` and `preferred_username`.
    pub username: String,
    pub password: Secret,
    pub email: String,
    pub name: String,
    /// The ID Token's `groups` claim (scope `groups`).
    pub groups: Vec<String>,
}

impl OidcUser {
    /// `username` with `password` and `groups`; email `<username>@example.com`, name `username`.
    pub fn new(username: &str, password: &str, groups: &[&str]) -> Self {
        OidcUser {
            username: username.to_owned(),
            password: Secret::new(password),
            email: format!("{username}@example.com"),
            name: username.to_owned(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "username": self.username,
            "password": self.password.expose(),
            "email": self.email,
            "name": self.name,
            "groups": self.groups,
        })
    }
}

#[derive(Debug)]
pub struct OidcProvider {
    /// `http://127.0.0.1:<port>`: the issuer (`iss`), and the base of every endpoint.
    pub issuer: String,
    pub port: u16,
    /// The discovery document (`/.well-known/openid-configuration`) as served at start.
    pub discovery: Value,
    proc: Proc,
}

/// The folder holding the installed `node_modules`: `$FERRY_OIDC_PROVIDER_DIR`, else the one
/// `make setup` fills.
pub fn locate() -> Result<PathBuf> {
    let dir = std::env::var_os("FERRY_OIDC_PROVIDER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            cache_dir().join(format!("tools/oidc-provider-{OIDC_PROVIDER_VERSION}"))
        });
    if dir
        .join("node_modules/oidc-provider/package.json")
        .is_file()
    {
        Ok(dir)
    } else {
        Err(Error::MissingPrerequisite {
            what: format!(
                "oidc-provider {OIDC_PROVIDER_VERSION} in {}",
                dir.join("node_modules").display()
            ),
            hint: "run `make setup`; it installs the npm package oidc-provider".into(),
        })
    }
}

/// `$FERRY_NODE`, else `node` on `$PATH`, else /usr/local/bin/node or /usr/bin/node.
pub fn locate_node() -> Result<PathBuf> {
    let missing = |what: String| Error::MissingPrerequisite {
        what,
        hint: "install Node.js 20.18 or later with npm, then run `make setup`".into(),
    };
    if let Some(p) = std::env::var_os("FERRY_NODE") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(missing(format!("`node` at {}", p.display())))
        };
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/local/bin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join("node"))
        .find(|p| p.is_file())
        .ok_or_else(|| missing("`node`".into()))
}

impl OidcProvider {
    /// Starts a provider knowing `clients` and `users`, with its files under `dir`, and returns
    /// once its discovery document answers.
    pub async fn start(
        dir: &Path,
        clients: &[OidcClient],
        users: &[OidcUser],
    ) -> Result<OidcProvider> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let install = locate()?;
        let node = locate_node()?;
        let port = free_port()?;
        let issuer = format!("http://127.0.0.1:{port}");
        let dir = dir.join(format!("oidc-{port}"));
        std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        // ES modules resolve packages from the importing file's folder (NODE_PATH does not
        // apply to them): the script is copied next to a link to the installed node_modules.
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc/provider.mjs");
        let script = dir.join("provider.mjs");
        std::fs::copy(&source, &script)
            .ctx(|| format!("copying {} to {}", source.display(), script.display()))?;
        let modules = dir.join("node_modules");
        let _ = std::fs::remove_file(&modules);
        std::os::unix::fs::symlink(install.join("node_modules"), &modules)
            .ctx(|| format!("linking {}", modules.display()))?;
        let config = dir.join("config.json");
        let body = json!({
            "port": port,
            "clients": clients.iter().map(OidcClient::to_json).collect::<Vec<_>>(),
            "users": users.iter().map(OidcUser::to_json).collect::<Vec<_>>(),
        });
        write_private(&config, &body.to_string())?;
        let mut proc = Proc::spawn(
            "oidc-provider",
            &node,
            &[script.display().to_string(), config.display().to_string()],
            &[],
            dir.join("provider.log"),
        )?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Startup(format!("http client: {e}")))?;
        let url = format!("{issuer}/.well-known/openid-configuration");
        wait_until(
            &mut proc,
            "the OpenID provider's discovery document",
            Duration::from_secs(30),
            || {
                let (http, url) = (http.clone(), url.clone());
                async move {
                    http.get(&url)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
                }
            },
        )
        .await?;
        let discovery: Value = http
            .get(&url)
            .send()
            .await
            .map_err(|e| Error::Startup(format!("GET {url}: {e}")))?
            .json()
            .await
            .map_err(|e| Error::Startup(format!("GET {url}: {e}")))?;
        if discovery["issuer"] != issuer.as_str() {
            return Err(Error::Startup(format!(
                "the OpenID provider says its issuer is {}, not {issuer}",
                discovery["issuer"]
            )));
        }
        Ok(OidcProvider {
            issuer,
            port,
            discovery,
            proc,
        })
    }

    /// An endpoint from the discovery document (`authorization_endpoint`, `token_endpoint`,
    /// `jwks_uri`, `userinfo_endpoint`, `end_session_endpoint`, ...), empty if absent.
    pub fn endpoint(&self, name: &str) -> String {
        self.discovery[name].as_str().unwrap_or_default().to_owned()
    }

    /// The provider's log: one line per login accepted or refused, and its errors.
    pub fn log(&self) -> &Path {
        &self.proc.log
    }

    pub fn pids(&self) -> Vec<u32> {
        vec![self.proc.pid()]
    }
}

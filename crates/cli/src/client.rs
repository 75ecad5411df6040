//! The CLI's side of `ferry server`: the config file of contexts (server,
//! token, TLS choices) and an HTTP/JSON client that turns the API's errors
//! into messages saying what to do next.

use anyhow::{Context as _, Result, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Connection flags shared by every command that talks to a server; the
/// names are argocd's so existing command lines keep working.
#[derive(Args, Clone, Default)]
pub struct ClientOpts {
    /// Server address, e.g. localhost:8080 or https://cd.example.com (default: the current context's)
    #[arg(
        long,
        global = true,
        help_heading = "Connection",
        env = "FERRY_SERVER",
        value_name = "ADDRESS"
    )]
    pub server: Option<String>,
    /// Authentication token (default: the one `ferry login` stored)
    #[arg(
        long,
        global = true,
        help_heading = "Connection",
        env = "FERRY_AUTH_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub auth_token: Option<String>,
    /// Use http instead of https
    #[arg(long, global = true, help_heading = "Connection")]
    pub plaintext: bool,
    /// Skip server certificate and domain verification
    #[arg(long, global = true, help_heading = "Connection")]
    pub insecure: bool,
    /// Path to the config file [default: ~/.config/ferry/config]
    #[arg(
        long,
        global = true,
        help_heading = "Connection",
        env = "FERRY_CONFIG",
        value_name = "PATH"
    )]
    pub config: Option<PathBuf>,
    /// Name of the context to use instead of the current one
    #[arg(
        long = "ferry-context",
        visible_alias = "argocd-context",
        global = true,
        help_heading = "Connection",
        value_name = "NAME"
    )]
    pub context: Option<String>,
    /// Accepted so argocd command lines work; ferry always speaks HTTP/JSON.
    #[arg(long, global = true, help_heading = "Connection", hide = true)]
    pub grpc_web: bool,
}

impl ClientOpts {
    pub fn config_path(&self) -> Result<PathBuf> {
        if let Some(p) = &self.config {
            return Ok(p.clone());
        }
        match std::env::var_os("HOME") {
            Some(home) if !home.is_empty() => Ok(PathBuf::from(home).join(".config/ferry/config")),
            _ => bail!("HOME is not set: pass --config PATH or set FERRY_CONFIG"),
        }
    }
}

/// The config file: contexts as `ferry login` wrote them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub contexts: Vec<Context>,
    #[serde(
        rename = "current-context",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub current_context: String,
}

#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Context {
    pub name: String,
    pub server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default)]
    pub plaintext: bool,
    #[serde(default)]
    pub insecure: bool,
}

// Hand-written so a token never reaches logs or error messages through `{:?}`.
impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("name", &self.name)
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("plaintext", &self.plaintext)
            .field("insecure", &self.insecure)
            .finish()
    }
}

impl Config {
    /// A missing file is an empty config: nobody has logged in yet.
    pub fn load(path: &Path) -> Result<Config> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a valid ferry config: fix or delete it, then run `ferry login <server>`",
                path.display()
            )
        })
    }

    /// Writes through a temporary file created 0600, so the token is never
    /// readable by others, not even for a moment, and a crash leaves the
    /// old file whole.
    pub fn save(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(".tmp");
        let tmp = path.with_file_name(tmp_name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        // `mode` only applies to new files; a stale temp file keeps its own.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
    }

    pub fn context(&self, name: &str) -> Option<&Context> {
        self.contexts.iter().find(|c| c.name == name)
    }

    /// Adds or replaces the context called `ctx.name` and makes it current.
    pub fn upsert(&mut self, ctx: Context) {
        self.current_context = ctx.name.clone();
        match self.contexts.iter_mut().find(|c| c.name == ctx.name) {
            Some(c) => *c = ctx,
            None => self.contexts.push(ctx),
        }
    }
}

/// Splits a server address as users type it: `host:port`,
/// `http://host:port` or `https://host/prefix/`. The scheme, when given,
/// decides plaintext over flags.
pub fn normalize_server(s: &str) -> (String, Option<bool>) {
    let s = s.trim();
    let (rest, plain) = if let Some(r) = s.strip_prefix("http://") {
        (r, Some(true))
    } else if let Some(r) = s.strip_prefix("https://") {
        (r, Some(false))
    } else {
        (s, None)
    };
    (rest.trim_end_matches('/').to_string(), plain)
}

/// Where to connect and with what, after flags, environment and config.
#[derive(Clone)]
pub struct Target {
    pub server: String,
    pub plaintext: bool,
    pub insecure: bool,
    pub token: Option<String>,
    /// The config context it came from, if any.
    pub context: Option<String>,
}

/// Flags win over the context; `--server` alone picks the context that
/// already points at that server, so its token is used (as argocd does).
pub fn resolve(opts: &ClientOpts, cfg: &Config) -> Result<Target> {
    let flag_server = opts.server.as_deref().map(normalize_server);
    let ctx = if let Some(name) = &opts.context {
        Some(cfg.context(name).with_context(|| {
            format!(
                "no context '{name}' in the config: `ferry login <server> --name {name}` creates it"
            )
        })?)
    } else if let Some((server, _)) = &flag_server {
        cfg.contexts
            .iter()
            .find(|c| normalize_server(&c.server).0 == *server)
    } else if cfg.current_context.is_empty() {
        None
    } else {
        cfg.context(&cfg.current_context)
    };
    let (server, scheme_plain) = match (&flag_server, ctx) {
        (Some((s, p)), _) => (s.clone(), *p),
        (None, Some(c)) => normalize_server(&c.server),
        (None, None) => {
            bail!("not logged in: run `ferry login <server>` (or pass --server and --auth-token)")
        }
    };
    if server.is_empty() {
        bail!("empty server address: pass --server host:port");
    }
    // A context's token only ever goes to the server it was issued by.
    let ctx = ctx.filter(|c| normalize_server(&c.server).0 == server);
    let plaintext = scheme_plain.unwrap_or(opts.plaintext || ctx.is_some_and(|c| c.plaintext));
    Ok(Target {
        server,
        plaintext,
        insecure: opts.insecure || ctx.is_some_and(|c| c.insecure),
        token: opts
            .auth_token
            .clone()
            .filter(|t| !t.is_empty())
            .or_else(|| ctx.and_then(|c| c.token.clone())),
        context: ctx.map(|c| c.name.clone()),
    })
}

/// An API failure with its HTTP status (None: no answer at all), already
/// worded for the user.
#[derive(Debug)]
pub struct ApiError {
    pub status: Option<u16>,
    message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    fn new(status: Option<u16>, message: String) -> Self {
        ApiError { status, message }
    }

    /// The status of an API error inside an anyhow chain.
    pub fn status_of(e: &anyhow::Error) -> Option<u16> {
        e.downcast_ref::<ApiError>().and_then(|a| a.status)
    }
}

/// Percent-encodes one path segment (an app name is a DNS label, but a
/// typo must not turn into another path).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    server: String,
    token: Option<String>,
}

fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // reqwest is built without a bundled provider (aws-lc-rs needs a C
    // toolchain); ring is the one the rest of the workspace uses. An Err
    // only means another part of the process installed one first.
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl Client {
    pub fn new(target: &Target) -> Result<Client> {
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // A hard refresh renders manifests; leave it time, but never hang.
            .timeout(Duration::from_secs(300))
            .user_agent(concat!("ferry-cli/", env!("CARGO_PKG_VERSION")))
            .tls_danger_accept_invalid_certs(target.insecure)
            .build()
            .context("setting up the HTTP client")?;
        let scheme = if target.plaintext { "http" } else { "https" };
        Ok(Client {
            http,
            base: format!("{scheme}://{}", target.server),
            server: target.server.clone(),
            token: target.token.clone(),
        })
    }

    /// A client for authenticated commands: fails early, with the fix, when
    /// there is no token at all.
    pub fn from_opts(opts: &ClientOpts) -> Result<Client> {
        let cfg = Config::load(&opts.config_path()?)?;
        let target = resolve(opts, &cfg)?;
        if target.token.is_none() {
            bail!(
                "not logged in to {}: run `ferry login {}` (or pass --auth-token)",
                target.server,
                target.server
            );
        }
        Client::new(&target)
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value> {
        self.send(reqwest::Method::GET, path, query, None).await
    }

    pub async fn post(&self, path: &str, query: &[(&str, String)], body: &Value) -> Result<Value> {
        self.send(reqwest::Method::POST, path, query, Some(body))
            .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(reqwest::Method::PUT, path, &[], Some(body)).await
    }

    pub async fn delete(&self, path: &str, query: &[(&str, String)]) -> Result<Value> {
        self.send(reqwest::Method::DELETE, path, query, None).await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method, &url)
            .header(reqwest::header::ACCEPT, "application/json");
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| self.transport_error(e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| self.transport_error(e))?;
        if status.is_success() {
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&text).map_err(|_| {
                anyhow::Error::new(ApiError::new(
                    Some(status.as_u16()),
                    format!(
                        "unexpected answer from {} (not JSON: {}): is --server pointing at `ferry server`?",
                        self.server,
                        snippet(&text)
                    ),
                ))
            });
        }
        Err(anyhow::Error::new(
            self.status_error(status.as_u16(), &text),
        ))
    }

    fn status_error(&self, status: u16, body: &str) -> ApiError {
        let msg = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| {
                v.get("error")
                    .or_else(|| v.get("message"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_else(|| snippet(body));
        let msg = if msg.is_empty() {
            reqwest::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("no details")
                .to_string()
        } else {
            msg
        };
        let text = match status {
            401 => format!(
                "not logged in or token expired/revoked: run `ferry login {}`",
                self.server
            ),
            403 => format!("permission denied: {msg}"),
            404 => format!("not found: {msg}"),
            _ => format!("{} answered {status}: {msg}", self.server),
        };
        ApiError::new(Some(status), text)
    }

    fn transport_error(&self, e: reqwest::Error) -> anyhow::Error {
        let cause = root_cause(&e);
        let text = if e.is_timeout() {
            format!(
                "{} did not answer in time ({cause}): is it overloaded, or behind a firewall?",
                self.server
            )
        } else if e.is_connect() {
            format!(
                "cannot reach {} ({cause}): is `ferry server` running? (use --plaintext for http, --insecure for a self-signed certificate)",
                self.server
            )
        } else {
            format!(
                "talking to {} failed ({cause}): is it a `ferry server`? (use --plaintext for http)",
                self.server
            )
        };
        anyhow::Error::new(ApiError::new(None, text))
    }
}

/// The innermost error text: reqwest's own Display is just "error sending
/// request", the useful part (connection refused, certificate) is below.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn snippet(text: &str) -> String {
    let t = text.trim();
    let mut s: String = t.chars().take(200).collect();
    if t.chars().count() > 200 {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sample() -> Config {
        let mut cfg = Config::default();
        cfg.upsert(Context {
            name: "prod".into(),
            server: "cd.example.com".into(),
            token: Some("secret-token-value".into()),
            plaintext: false,
            insecure: true,
        });
        cfg.upsert(Context {
            name: "local".into(),
            server: "localhost:8080".into(),
            token: Some("local-token".into()),
            plaintext: true,
            insecure: false,
        });
        cfg
    }

    #[test]
    fn config_round_trip_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/config");
        let cfg = sample();
        cfg.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Config::load(&path).unwrap(), cfg);
        let raw: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(raw["current-context"], "local");
        assert_eq!(raw["contexts"][0]["server"], "cd.example.com");
        // Saving again over a file with looser permissions tightens them.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        cfg.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A missing file is an empty config.
        assert_eq!(
            Config::load(&dir.path().join("none")).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn debug_never_shows_the_token() {
        let dbg = format!("{:?}", sample());
        assert!(!dbg.contains("secret-token-value"), "{dbg}");
        assert!(!dbg.contains("local-token"), "{dbg}");
        assert!(dbg.contains("<redacted>"));
    }

    #[test]
    fn bad_config_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, "{not json").unwrap();
        let e = format!("{:#}", Config::load(&path).unwrap_err());
        assert!(e.contains("ferry login"), "{e}");
    }

    #[test]
    fn resolve_prefers_flags_and_matches_contexts_by_server() {
        let cfg = sample();
        let t = resolve(&ClientOpts::default(), &cfg).unwrap();
        assert_eq!(t.server, "localhost:8080");
        assert!(t.plaintext);
        assert_eq!(t.token.as_deref(), Some("local-token"));

        let opts = ClientOpts {
            server: Some("https://cd.example.com/".into()),
            ..ClientOpts::default()
        };
        let t = resolve(&opts, &cfg).unwrap();
        assert_eq!(t.server, "cd.example.com");
        assert!(!t.plaintext && t.insecure);
        assert_eq!(t.token.as_deref(), Some("secret-token-value"));

        let opts = ClientOpts {
            server: Some("other:1".into()),
            auth_token: Some("flag".into()),
            plaintext: true,
            ..ClientOpts::default()
        };
        let t = resolve(&opts, &cfg).unwrap();
        assert_eq!(
            (t.server.as_str(), t.plaintext, t.token.as_deref()),
            ("other:1", true, Some("flag"))
        );

        let Err(e) = resolve(&ClientOpts::default(), &Config::default()) else {
            panic!("resolved without any server")
        };
        assert!(e.to_string().contains("ferry login"));
        let opts = ClientOpts {
            context: Some("nope".into()),
            ..ClientOpts::default()
        };
        assert!(resolve(&opts, &cfg).is_err());

        // A named context with another --server: its token stays home.
        let opts = ClientOpts {
            context: Some("prod".into()),
            server: Some("evil.example.com".into()),
            ..ClientOpts::default()
        };
        let t = resolve(&opts, &cfg).unwrap();
        assert_eq!(t.server, "evil.example.com");
        assert_eq!(t.token, None);
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(seg("my-app.v1"), "my-app.v1");
        assert_eq!(seg("a/b c?"), "a%2Fb%20c%3F");
    }
}

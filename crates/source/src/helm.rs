//! Charts from Helm repositories, through the `helm` binary.
//!
//! `helm pull --repo` only takes a password as a flag, so credentials go
//! through a repository configuration written by `helm repo add
//! --password-stdin` into a private scratch directory that is removed as
//! soon as the chart is unpacked.

use crate::creds::{RepoCredentials, push_secret};
use crate::error::SourceError;
use crate::exec::{Cmd, Redactor, run};
use crate::git::TOKEN_USERNAME;
use crate::url::{RepoUrl, Transport, cache_key, scrub_url};
use crate::{SourceCache, lock, touch};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

const REPO_NAME: &str = "ferry";

impl SourceCache {
    /// Downloads and unpacks `chart` from the Helm repository at `repo_url`
    /// (`helm` is the binary to use) and returns the unpacked chart directory
    /// and the chart's version. `version` is an exact version, a semver range
    /// (`^1.2`, `>=1.0 <2.0`) or empty for the latest. Charts are cached per
    /// (repository, chart, version); a range is re-resolved against the
    /// repository's index at most once per `helm_resolve_ttl`.
    pub async fn helm_chart(
        &self,
        helm: &Path,
        repo_url: &str,
        chart: &str,
        version: &str,
        creds: Option<&RepoCredentials>,
    ) -> Result<(PathBuf, String), SourceError> {
        check_chart(chart)?;
        let version = version.trim();
        check_version(chart, version)?;
        // Where the chart comes from decides the cache key; caching, locking
        // and unpacking are the same for both transports.
        let (key, origin) = match OciRepo::parse(repo_url, creds)? {
            Some(registry) => (
                cache_key(&format!("oci://{}/{}", registry.host, registry.path)),
                ChartOrigin::Oci(registry),
            ),
            None => {
                let parsed = RepoUrl::parse(repo_url)?;
                if parsed.transport != Transport::Http {
                    return Err(SourceError::InvalidUrl {
                        url: scrub_url(repo_url),
                        reason: "a Helm repository URL must be http:// or https://",
                    });
                }
                (cache_key(repo_url), ChartOrigin::Repository(parsed))
            }
        };
        let base = self.root.join("charts").join(&key).join(chart);
        if let Some(hit) = self.cached_chart(&base, &key, chart, version) {
            return Ok(hit);
        }
        let repo_lock = self.lock_for(format!("helm:{key}"));
        let _held = repo_lock.lock().await;
        if let Some(hit) = self.cached_chart(&base, &key, chart, version) {
            return Ok(hit);
        }
        let (dir, found) = match &origin {
            ChartOrigin::Repository(parsed) => {
                self.pull(helm, parsed, repo_url, chart, version, creds, &base)
                    .await?
            }
            ChartOrigin::Oci(registry) => {
                self.pull_oci(helm, registry, repo_url, chart, version, creds, &base)
                    .await?
            }
        };
        lock(&self.helm_versions).insert(
            (key, chart.to_string(), version.to_string()),
            (found.clone(), Instant::now()),
        );
        Ok((dir, found))
    }

    /// A private (0700) scratch directory with an empty `out/` for helm to unpack into.
    fn work_dir(&self, prefix: &str) -> Result<(tempfile::TempDir, PathBuf), SourceError> {
        let work = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&self.tmp)
            .map_err(|e| SourceError::io_at("creating a directory in", &self.tmp, e))?;
        std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(|e| SourceError::io_at("securing", work.path(), e))?;
        let out = work.path().join("out");
        std::fs::create_dir(&out).map_err(|e| SourceError::io_at("creating", &out, e))?;
        Ok((work, out))
    }

    /// Moves the chart helm unpacked into `out` to `base/<its version>`.
    fn store_unpacked(
        &self,
        out: &Path,
        chart: &str,
        base: &Path,
        repo_url: &str,
    ) -> Result<(PathBuf, String), SourceError> {
        let unpacked = single_dir(out).ok_or_else(|| SourceError::InvalidChart {
            chart: chart.to_string(),
            reason: "helm pull produced no chart directory".into(),
        })?;
        let found = chart_version(&unpacked.join("Chart.yaml")).ok_or_else(|| {
            SourceError::InvalidChart {
                chart: chart.to_string(),
                reason: "Chart.yaml has no usable version".into(),
            }
        })?;
        std::fs::create_dir_all(base).map_err(|e| SourceError::io_at("creating", base, e))?;
        let dir = base.join(&found);
        if !touch(&dir)
            && let Err(e) = std::fs::rename(&unpacked, &dir)
            && !dir.is_dir()
        {
            return Err(SourceError::io_at("creating", &dir, e));
        }
        tracing::info!(repo = %scrub_url(repo_url), chart, version = %found, "pulled chart");
        Ok((dir, found))
    }

    fn cached_chart(
        &self,
        base: &Path,
        key: &str,
        chart: &str,
        version: &str,
    ) -> Option<(PathBuf, String)> {
        if is_exact_version(version) {
            let dir = base.join(version);
            if touch(&dir) {
                return Some((dir, version.to_string()));
            }
        }
        let memo = lock(&self.helm_versions)
            .get(&(key.to_string(), chart.to_string(), version.to_string()))
            .cloned();
        let (found, at) = memo?;
        if !is_exact_version(version) && at.elapsed() >= self.opts.helm_resolve_ttl {
            return None;
        }
        let dir = base.join(&found);
        touch(&dir).then_some((dir, found))
    }

    #[allow(clippy::too_many_arguments)]
    async fn pull(
        &self,
        helm: &Path,
        parsed: &RepoUrl,
        repo_url: &str,
        chart: &str,
        version: &str,
        creds: Option<&RepoCredentials>,
        base: &Path,
    ) -> Result<(PathBuf, String), SourceError> {
        let mut creds = creds.cloned().unwrap_or_default();
        if creds.password.as_deref().is_none_or(str::is_empty) {
            creds.password.clone_from(&parsed.url_password);
        }
        if creds.username.as_deref().is_none_or(str::is_empty) {
            creds.username.clone_from(&parsed.url_username);
        }
        let mut secrets = creds.secrets();
        if let Some(p) = &parsed.url_password {
            push_secret(&mut secrets, p);
        }
        let redactor = Redactor::new(secrets);
        let (work, out) = self.work_dir("helm-")?;
        let w = work.path();

        // Flags both commands share: where the temporary configuration lives,
        // and how to reach the server.
        let mut shared: Vec<String> = vec![
            "--repository-config".into(),
            w.join("repositories.yaml").display().to_string(),
            "--repository-cache".into(),
            w.join("repository-cache").display().to_string(),
            "--registry-config".into(),
            w.join("registry.json").display().to_string(),
        ];
        let mut tls: Vec<String> = Vec::new();
        if creds.insecure {
            tls.push("--insecure-skip-tls-verify".into());
        }
        if let (Some(cert), Some(key)) = (&creds.tls_client_cert_data, &creds.tls_client_cert_key) {
            let cert_path = write_private(w, "client.crt", cert)?;
            let key_path = write_private(w, "client.key", key)?;
            tls.extend([
                "--cert-file".into(),
                cert_path.display().to_string(),
                "--key-file".into(),
                key_path.display().to_string(),
            ]);
        }
        shared.extend(tls.iter().cloned());

        let timeout = self.opts.fetch_timeout;
        let mut add = self.helm_cmd(helm, "helm repo add", repo_url, w);
        add.timeout = timeout;
        add.args(["repo", "add", REPO_NAME, parsed.git_url.as_str()]);
        let password = creds.password.clone().filter(|p| !p.is_empty());
        let username = creds.username.clone().filter(|u| !u.is_empty());
        if password.is_some() || username.is_some() {
            let username = username.unwrap_or_else(|| TOKEN_USERNAME.to_string());
            add.args(["--username", username.as_str(), "--password-stdin"]);
            add.stdin = Some(password.unwrap_or_default().into_bytes());
        }
        add.args(shared.iter().cloned());
        run(&add, &redactor).await?;

        let mut pull = self.helm_cmd(helm, "helm pull", repo_url, w);
        pull.timeout = timeout;
        pull.args([
            "pull",
            &format!("{REPO_NAME}/{chart}"),
            "--untar",
            "--destination",
        ])
        .arg(&out);
        if !version.is_empty() {
            pull.arg("--version").arg(version);
        }
        pull.args(shared.iter().cloned());
        run(&pull, &redactor).await.map_err(|e| match e {
            // The repository name and the advice are about helm's temporary
            // configuration, which the user never sees.
            SourceError::Command {
                command,
                repo,
                message,
            } => SourceError::Command {
                command,
                repo,
                message: message
                    .replace(
                        &format!(" in {REPO_NAME} index"),
                        " in the repository index",
                    )
                    .replace(" (try 'helm repo update')", ""),
            },
            e => e,
        })?;

        self.store_unpacked(&out, chart, base, repo_url)
    }

    /// A chart from an OCI registry: `helm registry login` (credentials on
    /// stdin, into a private registry config), then `helm pull oci://...`.
    #[allow(clippy::too_many_arguments)]
    async fn pull_oci(
        &self,
        helm: &Path,
        registry: &OciRepo,
        repo_url: &str,
        chart: &str,
        version: &str,
        creds: Option<&RepoCredentials>,
        base: &Path,
    ) -> Result<(PathBuf, String), SourceError> {
        let creds = creds.cloned().unwrap_or_default();
        let redactor = Redactor::new(creds.secrets());
        let (work, out) = self.work_dir("helm-oci-")?;
        let w = work.path();
        let mut shared: Vec<String> = vec![
            "--registry-config".into(),
            w.join("registry.json").display().to_string(),
        ];
        if registry.plain_http {
            shared.push("--plain-http".into());
        } else if creds.insecure {
            shared.push("--insecure-skip-tls-verify".into());
        }
        let password = creds.password.clone().filter(|p| !p.is_empty());
        if let Some(password) = password {
            let username = creds
                .username
                .clone()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| TOKEN_USERNAME.to_string());
            let mut login = self.helm_cmd(helm, "helm registry login", repo_url, w);
            login.args(["registry", "login", registry.host.as_str()]);
            login.args(["--username", username.as_str(), "--password-stdin"]);
            login.stdin = Some(password.into_bytes());
            login.args(shared.iter().cloned());
            run(&login, &redactor).await?;
        }
        let reference = match registry.path.as_str() {
            "" => format!("oci://{}/{chart}", registry.host),
            path => format!("oci://{}/{path}/{chart}", registry.host),
        };
        let mut pull = self.helm_cmd(helm, "helm pull", repo_url, w);
        pull.args(["pull", reference.as_str(), "--untar", "--destination"])
            .arg(&out);
        if !version.is_empty() {
            pull.arg("--version").arg(version);
        }
        pull.args(shared.iter().cloned());
        run(&pull, &redactor).await?;
        self.store_unpacked(&out, chart, base, repo_url)
    }

    fn helm_cmd(&self, helm: &Path, label: &str, repo_url: &str, work: &Path) -> Cmd {
        let mut cmd = Cmd::new(helm, label, repo_url, self.opts.fetch_timeout);
        // Keep helm's own configuration and caches out of it: only the
        // temporary repository configuration should count.
        cmd.env("HELM_CONFIG_HOME", work.join("config"))
            .env("HELM_CACHE_HOME", work.join("cache"))
            .env("HELM_REPOSITORY_CONFIG", work.join("repositories.yaml"))
            .env("HELM_REPOSITORY_CACHE", work.join("repository-cache"))
            .env("HELM_REGISTRY_CONFIG", work.join("registry.json"));
        // Debug output could include request details.
        cmd.env_remove.push("HELM_DEBUG");
        cmd.cwd = Some(work.to_path_buf());
        cmd
    }
}

/// Where a chart is pulled from.
enum ChartOrigin {
    Repository(RepoUrl),
    Oci(OciRepo),
}

/// A Helm chart repository in an OCI registry: `oci://host/path`, or
/// `host/path` with `enableOCI` on its repository Secret, as Argo CD reads it.
struct OciRepo {
    host: String,
    path: String,
    /// Loopback registries (as Docker assumes) and `insecureOCIForceHttp`.
    plain_http: bool,
}

impl OciRepo {
    fn parse(
        repo_url: &str,
        creds: Option<&RepoCredentials>,
    ) -> Result<Option<OciRepo>, SourceError> {
        let enabled = creds.is_some_and(|c| c.enable_oci);
        let rest = match repo_url.strip_prefix("oci://") {
            Some(r) => r,
            None if enabled && !repo_url.contains("://") => repo_url,
            None => return Ok(None),
        };
        let rest = rest.trim_end_matches('/');
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let invalid = |reason| SourceError::InvalidUrl {
            url: scrub_url(repo_url),
            reason,
        };
        if host.is_empty() || host.contains('@') {
            return Err(invalid(
                "an OCI repository is oci://host[:port]/path, without credentials in it",
            ));
        }
        if path
            .split('/')
            .any(|seg| seg == ".." || seg.starts_with('-'))
        {
            return Err(invalid(
                "an OCI repository path may not contain '..' or start a segment with '-'",
            ));
        }
        let hostname = host.rsplit_once(':').map_or(host, |(h, _)| h);
        let loopback = hostname == "localhost"
            || hostname
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        Ok(Some(OciRepo {
            host: host.to_string(),
            path: path.to_string(),
            plain_http: loopback || creds.is_some_and(|c| c.oci_force_http),
        }))
    }
}

fn write_private(dir: &Path, name: &str, content: &str) -> Result<PathBuf, SourceError> {
    let path = dir.join(name);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(content.as_bytes()))
        .map_err(|e| SourceError::io_at("writing", &path, e))?;
    Ok(path)
}

fn single_dir(dir: &Path) -> Option<PathBuf> {
    let mut dirs = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path());
    let first = dirs.next()?;
    dirs.next().is_none().then_some(first)
}

/// The top-level `version:` of a Chart.yaml; None if missing or not usable
/// as a directory name.
fn chart_version(chart_yaml: &Path) -> Option<String> {
    let text = std::fs::read_to_string(chart_yaml).ok()?;
    let v = text.lines().find_map(|l| l.strip_prefix("version:"))?;
    let v = v.split(" #").next().unwrap_or(v).trim();
    let v = v.trim_matches(|c| c == '"' || c == '\'').trim();
    safe_name(v).then(|| v.to_string())
}

fn safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'))
}

fn check_chart(chart: &str) -> Result<(), SourceError> {
    if safe_name(chart) {
        Ok(())
    } else {
        Err(SourceError::InvalidChart {
            chart: chart.to_string(),
            reason: "a chart name is letters, digits, '.', '_' and '-'".into(),
        })
    }
}

fn check_version(chart: &str, version: &str) -> Result<(), SourceError> {
    if version.starts_with('-') || version.chars().any(char::is_control) || version.len() > 256 {
        return Err(SourceError::InvalidChart {
            chart: chart.to_string(),
            reason: format!("invalid version {version:?}"),
        });
    }
    Ok(())
}

/// `1.2.3`, `1.2.3-rc.1`, `1.2.3+build`: one version, nothing to look up.
fn is_exact_version(v: &str) -> bool {
    let core = v.split(['-', '+']).next().unwrap_or_default();
    let nums: Vec<&str> = core.split('.').collect();
    nums.len() == 3
        && nums
            .iter()
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        && safe_name(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_versions() {
        assert!(is_exact_version("1.2.3"));
        assert!(is_exact_version("0.1.0-rc.1+abc"));
        assert!(!is_exact_version(""));
        assert!(!is_exact_version("^1.2.3"));
        assert!(!is_exact_version("1.2"));
        assert!(!is_exact_version("1.2.x"));
        assert!(!is_exact_version(">=1.0.0 <2.0.0"));
    }

    #[test]
    fn reads_chart_version() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("Chart.yaml");
        std::fs::write(
            &p,
            "apiVersion: v2\nname: x\ndependencies:\n  - name: y\n    version: 9.9.9\nversion: \"1.4.0\" # pinned\n",
        )
        .unwrap();
        assert_eq!(chart_version(&p).as_deref(), Some("1.4.0"));
        std::fs::write(&p, "version: ../../etc\n").unwrap();
        assert_eq!(chart_version(&p), None);
    }

    #[test]
    fn chart_names() {
        assert!(check_chart("nginx-ingress").is_ok());
        assert!(check_chart("../x").is_err());
        assert!(check_chart("-x").is_err());
        assert!(check_chart("a/b").is_err());
    }
}

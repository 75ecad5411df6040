//! Talking to git: how credentials reach it without touching its command
//! line, and parsing what it prints.

use crate::creds::{RepoCredentials, push_secret};
use crate::error::SourceError;
use crate::exec::{Cmd, Redactor};
use crate::url::{RepoUrl, Transport};
use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The user name sent with a token when none is configured. GitHub, GitLab,
/// Gitea and Azure DevOps accept any non-empty name with a token.
pub(crate) const TOKEN_USERNAME: &str = "x-access-token";

/// A credential helper that answers `get` for one host only, from the
/// environment, so the values never appear in any process's arguments.
const CREDENTIAL_HELPER: &str = "!f() { test \"$1\" = get || exit 0; ok=; \
     while IFS= read -r l; do case \"$l\" in \"host=$FERRY_GIT_HOST\") ok=1;; esac; done; \
     test -n \"$ok\" || exit 0; \
     printf 'username=%s\\npassword=%s\\n' \"$FERRY_GIT_USERNAME\" \"$FERRY_GIT_PASSWORD\"; }; f";

/// Environment variables from the caller that would change what git does
/// to the wrong repository or prompt.
const ENV_REMOVE: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_ASKPASS",
    "SSH_ASKPASS",
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "GIT_SSL_NO_VERIFY",
    "GIT_SSL_CERT",
    "GIT_SSL_KEY",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
];

/// Everything one remote git command needs to authenticate. Files holding
/// keys live in a private temporary directory removed when this is dropped.
pub(crate) struct GitAuth {
    scratch: Option<tempfile::TempDir>,
    config: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    pub redactor: Redactor,
}

impl GitAuth {
    pub fn new(
        url: &RepoUrl,
        creds: Option<&RepoCredentials>,
        tmp_root: &Path,
        timeout: Duration,
    ) -> Result<GitAuth, SourceError> {
        let mut creds = creds.cloned().unwrap_or_default();
        // Credentials written into an http URL count when no Secret sets them.
        if creds.password.as_deref().is_none_or(str::is_empty) {
            creds.password.clone_from(&url.url_password);
        }
        if creds.username.as_deref().is_none_or(str::is_empty) {
            creds.username.clone_from(&url.url_username);
        }
        let mut secrets = creds.secrets();
        if let Some(p) = &url.url_password {
            push_secret(&mut secrets, p);
        }
        let mut auth = GitAuth {
            scratch: None,
            config: vec![
                // Forget configured helpers: they could answer with other
                // credentials, and would store ours.
                "credential.helper=".into(),
                "core.askPass=".into(),
                "core.hooksPath=/dev/null".into(),
            ],
            env: Vec::new(),
            redactor: Redactor::new(secrets),
        };
        match url.transport {
            Transport::Http => auth.http(url, &creds, tmp_root)?,
            Transport::Ssh => auth.ssh(&creds, tmp_root, timeout)?,
            Transport::File | Transport::Other => {}
        }
        Ok(auth)
    }

    fn private_dir(&mut self, tmp_root: &Path) -> Result<PathBuf, SourceError> {
        if self.scratch.is_none() {
            let dir = tempfile::Builder::new()
                .prefix("auth-")
                .tempdir_in(tmp_root)
                .map_err(|e| SourceError::io_at("creating a directory in", tmp_root, e))?;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
                .map_err(|e| SourceError::io_at("securing", dir.path(), e))?;
            self.scratch = Some(dir);
        }
        Ok(self
            .scratch
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default())
    }

    fn write_private(
        &mut self,
        tmp_root: &Path,
        name: &str,
        content: &str,
    ) -> Result<PathBuf, SourceError> {
        let path = self.private_dir(tmp_root)?.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| SourceError::io_at("creating", &path, e))?;
        f.write_all(content.as_bytes())
            .and_then(|()| {
                if content.ends_with('\n') {
                    Ok(())
                } else {
                    // ssh rejects a key without its final newline.
                    f.write_all(b"\n")
                }
            })
            .map_err(|e| SourceError::io_at("writing", &path, e))?;
        Ok(path)
    }

    fn http(
        &mut self,
        url: &RepoUrl,
        creds: &RepoCredentials,
        tmp_root: &Path,
    ) -> Result<(), SourceError> {
        let password = creds.password.clone().filter(|p| !p.is_empty());
        let username = creds.username.clone().filter(|u| !u.is_empty());
        if password.is_some() || username.is_some() {
            let username = username.unwrap_or_else(|| TOKEN_USERNAME.to_string());
            self.config
                .push(format!("credential.helper={CREDENTIAL_HELPER}").into());
            self.env.push((
                "FERRY_GIT_HOST".into(),
                url.host.clone().unwrap_or_default().into(),
            ));
            self.env
                .push(("FERRY_GIT_USERNAME".into(), username.into()));
            self.env.push((
                "FERRY_GIT_PASSWORD".into(),
                password.unwrap_or_default().into(),
            ));
        }
        if creds.insecure {
            self.env.push(("GIT_SSL_NO_VERIFY".into(), "true".into()));
        }
        if let (Some(cert), Some(key)) = (&creds.tls_client_cert_data, &creds.tls_client_cert_key) {
            let cert = self.write_private(tmp_root, "client.crt", cert)?;
            let key = self.write_private(tmp_root, "client.key", key)?;
            self.env.push(("GIT_SSL_CERT".into(), cert.into()));
            self.env.push(("GIT_SSL_KEY".into(), key.into()));
        }
        Ok(())
    }

    fn ssh(
        &mut self,
        creds: &RepoCredentials,
        tmp_root: &Path,
        timeout: Duration,
    ) -> Result<(), SourceError> {
        let mut command = vec!["ssh".to_string()];
        if let Some(key) = creds
            .ssh_private_key
            .as_deref()
            .filter(|k| !k.trim().is_empty())
        {
            let path = self.write_private(tmp_root, "id", key)?;
            command.extend([
                "-i".into(),
                shell_quote(&path),
                "-o".into(),
                "IdentitiesOnly=yes".into(),
            ]);
        }
        if creds.insecure {
            command.extend(
                [
                    "-o",
                    "StrictHostKeyChecking=no",
                    "-o",
                    "UserKnownHostsFile=/dev/null",
                ]
                .map(String::from),
            );
        } else {
            if let Some(known) = &creds.known_hosts {
                let path = self.write_private(tmp_root, "known_hosts", known)?;
                command.extend([
                    "-o".into(),
                    format!("UserKnownHostsFile={}", shell_quote(&path)),
                    "-o".into(),
                    "GlobalKnownHostsFile=/dev/null".into(),
                ]);
            }
            command.extend(["-o", "StrictHostKeyChecking=yes"].map(String::from));
        }
        let connect = timeout.as_secs().clamp(1, 30);
        command.extend([
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            format!("ConnectTimeout={connect}"),
            "-o".into(),
            "LogLevel=ERROR".into(),
        ]);
        self.env
            .push(("GIT_SSH_COMMAND".into(), command.join(" ").into()));
        self.env.push(("GIT_SSH_VARIANT".into(), "ssh".into()));
        Ok(())
    }

    /// A git command with this authentication, the common safety settings,
    /// and `extra_config` (`key=value`) applied.
    pub fn command(
        &self,
        git: &Path,
        label: &str,
        repo: &str,
        timeout: Duration,
        extra_config: &[String],
    ) -> Cmd {
        let mut cmd = base_command(git, label, repo, timeout, extra_config);
        for c in &self.config {
            cmd.arg("-c").arg(c.clone());
        }
        cmd.env.extend(self.env.iter().cloned());
        cmd
    }
}

/// A git command that talks to no remote.
pub(crate) fn base_command(
    git: &Path,
    label: &str,
    repo: &str,
    timeout: Duration,
    extra_config: &[String],
) -> Cmd {
    let mut cmd = Cmd::new(git, label, repo, timeout);
    cmd.env_remove.extend_from_slice(ENV_REMOVE);
    cmd.env("GIT_TERMINAL_PROMPT", "0")
        .env("GCM_INTERACTIVE", "never")
        .env("LC_ALL", "C")
        .env("GIT_ALLOW_PROTOCOL", "file:git:http:https:ssh");
    for c in extra_config {
        cmd.arg("-c").arg(c);
    }
    cmd
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.to_string_lossy().replace('\'', "'\\''"))
}

/// The refs a remote advertises, with annotated tags peeled to their commits.
#[derive(Debug, Default)]
pub(crate) struct RemoteRefs {
    /// In the order git printed them.
    pub refs: Vec<(String, String)>,
    peeled: HashMap<String, String>,
}

impl RemoteRefs {
    pub fn parse(out: &str) -> RemoteRefs {
        let mut r = RemoteRefs::default();
        for line in out.lines() {
            let Some((sha, name)) = line.split_once('\t') else {
                continue;
            };
            let sha = sha.trim().to_ascii_lowercase();
            if !is_full_sha(&sha) {
                continue;
            }
            match name.strip_suffix("^{}") {
                Some(base) => {
                    r.peeled.insert(base.to_string(), sha);
                }
                None => r.refs.push((name.to_string(), sha)),
            }
        }
        r
    }

    /// The commit a ref points at.
    fn commit(&self, name: &str, direct: &str) -> String {
        self.peeled
            .get(name)
            .cloned()
            .unwrap_or_else(|| direct.to_string())
    }

    /// Argo CD's order: `HEAD` (or empty) is the default branch; then a full
    /// ref name; then a branch, a tag, and any other ref by its short name.
    pub fn find(&self, revision: &str) -> Option<(String, String)> {
        let rev = if revision.is_empty() {
            "HEAD"
        } else {
            revision
        };
        if let Some((n, s)) = self.refs.iter().find(|(n, _)| n == rev) {
            return Some((n.clone(), self.commit(n, s)));
        }
        let candidates = [format!("refs/heads/{rev}"), format!("refs/tags/{rev}")];
        for c in &candidates {
            if let Some((n, s)) = self.refs.iter().find(|(n, _)| n == c) {
                return Some((n.clone(), self.commit(n, s)));
            }
        }
        self.refs
            .iter()
            .find(|(n, _)| short_name(n) == rev)
            .map(|(n, s)| (n.clone(), self.commit(n, s)))
    }

    /// Commits whose hash starts with `prefix`, from any ref.
    pub fn commits_with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let prefix = prefix.to_ascii_lowercase();
        let mut out: Vec<(String, String)> = self
            .refs
            .iter()
            .map(|(n, s)| (n.clone(), self.commit(n, s)))
            .filter(|(_, c)| c.starts_with(&prefix))
            .collect();
        out.sort_by(|a, b| a.1.cmp(&b.1));
        out.dedup_by(|a, b| a.1 == b.1);
        out
    }
}

fn short_name(name: &str) -> &str {
    for p in ["refs/heads/", "refs/tags/", "refs/remotes/", "refs/"] {
        if let Some(s) = name.strip_prefix(p) {
            return s;
        }
    }
    name
}

pub(crate) fn is_full_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Could be an abbreviated commit hash (git accepts 4 or more digits).
pub(crate) fn is_short_sha(s: &str) -> bool {
    (4..40).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Refuses revisions git would read as options or that cannot name a ref or commit.
pub(crate) fn check_revision(revision: &str) -> Result<(), SourceError> {
    let bad = |reason| {
        Err(SourceError::InvalidRevision {
            revision: revision.to_string(),
            reason,
        })
    };
    if revision.starts_with('-') {
        return bad("must not start with '-'");
    }
    if revision
        .chars()
        .any(|c| c.is_control() || c.is_whitespace())
    {
        return bad("must not contain spaces or control characters");
    }
    if revision.contains("..") || revision.contains(':') {
        return bad("not a branch, tag or commit");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";
    const C: &str = "3333333333333333333333333333333333333333";
    const T: &str = "4444444444444444444444444444444444444444";

    fn refs() -> RemoteRefs {
        RemoteRefs::parse(&format!(
            "{A}\tHEAD\n{A}\trefs/heads/main\n{B}\trefs/heads/v1\n{C}\trefs/heads/feature/x\n\
             {T}\trefs/tags/v1\n{C}\trefs/tags/v1^{{}}\n{T}\trefs/tags/only\n{B}\trefs/tags/only^{{}}\n\
             {C}\trefs/pull/7/head\n"
        ))
    }

    #[test]
    fn finds_refs_in_argo_order() {
        let r = refs();
        assert_eq!(r.find("").unwrap().1, A);
        assert_eq!(r.find("HEAD").unwrap().1, A);
        assert_eq!(
            r.find("main").unwrap(),
            ("refs/heads/main".into(), A.into())
        );
        // A branch wins over a tag of the same name.
        assert_eq!(r.find("v1").unwrap().1, B);
        // Annotated tags resolve to the commit, not the tag object.
        assert_eq!(r.find("refs/tags/v1").unwrap().1, C);
        assert_eq!(r.find("only").unwrap().1, B);
        assert_eq!(r.find("feature/x").unwrap().1, C);
        assert_eq!(r.find("pull/7/head").unwrap().1, C);
        assert!(r.find("nope").is_none());
        assert_eq!(r.commits_with_prefix("3333").len(), 1);
    }

    #[test]
    fn revision_checks() {
        assert!(check_revision("main").is_ok());
        assert!(check_revision("feature/x-1.2").is_ok());
        assert!(check_revision("--upload-pack=x").is_err());
        assert!(check_revision("a b").is_err());
        assert!(check_revision("a..b").is_err());
        assert!(is_full_sha(A));
        assert!(is_short_sha("abc1234"));
        assert!(!is_short_sha("main"));
    }
}

//! Repository credentials and Argo CD's rules for picking them.

use crate::url::{normalize_for_equality, normalize_for_match, scrub_url};
use std::collections::BTreeMap;
use std::fmt;

/// Credentials for one repository, built by the controller from Argo CD
/// repository Secrets. Debug output never shows a secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RepoCredentials {
    pub username: Option<String>,
    /// Password or token.
    pub password: Option<String>,
    pub ssh_private_key: Option<String>,
    /// Skip TLS verification (http) or host key checking (ssh).
    pub insecure: bool,
    /// `ssh_known_hosts` lines the ssh host key is checked against. When
    /// absent (and not `insecure`), ssh's own known_hosts files are used.
    pub known_hosts: Option<String>,
    pub tls_client_cert_data: Option<String>,
    pub tls_client_cert_key: Option<String>,
    /// `enableOCI`: a Helm repository URL without `oci://` names an OCI registry.
    pub enable_oci: bool,
    /// `insecureOCIForceHttp`: talk to the OCI registry over plain http.
    pub oci_force_http: bool,
}

impl RepoCredentials {
    /// Whether any credential is set (Argo CD's `HasCredentials`).
    pub fn has_credentials(&self) -> bool {
        [
            &self.username,
            &self.password,
            &self.ssh_private_key,
            &self.tls_client_cert_data,
        ]
        .iter()
        .any(|v| v.as_deref().is_some_and(|s| !s.is_empty()))
    }

    /// Fills each credential left empty here from `other` (Argo CD's
    /// `CopyCredentialsFrom`); `insecure` and `known_hosts` stay.
    fn fill_from(&mut self, other: &RepoCredentials) {
        fn fill(dst: &mut Option<String>, src: &Option<String>) {
            if dst.as_deref().is_none_or(str::is_empty) {
                dst.clone_from(src);
            }
        }
        fill(&mut self.username, &other.username);
        fill(&mut self.password, &other.password);
        fill(&mut self.ssh_private_key, &other.ssh_private_key);
        fill(&mut self.tls_client_cert_data, &other.tls_client_cert_data);
        fill(&mut self.tls_client_cert_key, &other.tls_client_cert_key);
    }

    /// The values that must never be shown, longest first.
    pub(crate) fn secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in [
            &self.password,
            &self.ssh_private_key,
            &self.tls_client_cert_key,
        ]
        .into_iter()
        .flatten()
        {
            push_secret(&mut out, s);
        }
        out
    }
}

/// Adds a secret and, for multi-line ones (keys), each line of its body, so
/// that a fragment quoted by a tool is hidden too.
pub(crate) fn push_secret(out: &mut Vec<String>, s: &str) {
    if s.is_empty() {
        return;
    }
    out.push(s.to_string());
    let trimmed = s.trim();
    if trimmed != s && !trimmed.is_empty() {
        out.push(trimmed.to_string());
    }
    if s.contains('\n') {
        for line in s.lines().map(str::trim) {
            if line.len() >= 8 && !line.starts_with("-----") {
                out.push(line.to_string());
            }
        }
    }
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
}

fn shown(v: &Option<String>) -> &'static str {
    match v {
        Some(_) => "Some(<redacted>)",
        None => "None",
    }
}

impl fmt::Debug for RepoCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RepoCredentials")
            .field("username", &self.username)
            .field("password", &format_args!("{}", shown(&self.password)))
            .field(
                "ssh_private_key",
                &format_args!("{}", shown(&self.ssh_private_key)),
            )
            .field("insecure", &self.insecure)
            .field(
                "known_hosts",
                &format_args!(
                    "{}",
                    if self.known_hosts.is_some() {
                        "Some(..)"
                    } else {
                        "None"
                    }
                ),
            )
            .field(
                "tls_client_cert_data",
                &format_args!(
                    "{}",
                    if self.tls_client_cert_data.is_some() {
                        "Some(..)"
                    } else {
                        "None"
                    }
                ),
            )
            .field(
                "tls_client_cert_key",
                &format_args!("{}", shown(&self.tls_client_cert_key)),
            )
            .field("enable_oci", &self.enable_oci)
            .field("oci_force_http", &self.oci_force_http)
            .finish()
    }
}

/// Which kind of Argo CD repository Secret (`argocd.argoproj.io/secret-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// `repository`: credentials for exactly one repository URL.
    Repository,
    /// `repo-creds`: a credential template for every URL under a prefix.
    RepoCreds,
}

/// One Argo CD repository Secret's data, already base64-decoded by the caller.
#[derive(Clone, PartialEq, Eq)]
pub struct RepoSecret {
    pub kind: SecretKind,
    pub url: String,
    pub creds: RepoCredentials,
    /// `git` or `helm`.
    pub type_: Option<String>,
    pub name: Option<String>,
}

impl fmt::Debug for RepoSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RepoSecret")
            .field("kind", &self.kind)
            .field("url", &scrub_url(&self.url))
            .field("creds", &self.creds)
            .field("type_", &self.type_)
            .field("name", &self.name)
            .finish()
    }
}

impl RepoSecret {
    /// Reads the keys Argo CD defines (`url`, `username`, `password`,
    /// `sshPrivateKey`, `insecure`, `insecureIgnoreHostKey`, `type`, `name`,
    /// `tlsClientCertData`, `tlsClientCertKey`). None without a `url`.
    pub fn from_secret_data(
        kind: SecretKind,
        data: &BTreeMap<String, String>,
    ) -> Option<RepoSecret> {
        let get = |k: &str| data.get(k).filter(|v| !v.is_empty()).cloned();
        let url = data
            .get("url")
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())?;
        let flag = |k: &str| data.get(k).is_some_and(|v| parse_bool(v));
        Some(RepoSecret {
            kind,
            url,
            creds: RepoCredentials {
                username: get("username"),
                password: get("password"),
                ssh_private_key: get("sshPrivateKey"),
                insecure: flag("insecure") || flag("insecureIgnoreHostKey"),
                known_hosts: None,
                tls_client_cert_data: get("tlsClientCertData"),
                tls_client_cert_key: get("tlsClientCertKey"),
                enable_oci: flag("enableOCI"),
                oci_force_http: flag("insecureOCIForceHttp"),
            },
            type_: get("type").map(|t| t.trim().to_string()),
            name: get("name"),
        })
    }
}

/// Go's `strconv.ParseBool`, which Argo CD uses for these flags.
fn parse_bool(v: &str) -> bool {
    matches!(v.trim(), "1" | "t" | "T" | "true" | "TRUE" | "True")
}

/// Argo CD's matching: a `repository` Secret whose URL equals the repository
/// URL wins (trailing `.git` and `/` and letter case ignored); when it holds no
/// credentials of its own they are filled from the best `repo-creds`. Otherwise
/// the `repo-creds` Secret whose URL is the longest prefix of the repository
/// URL (first one on a tie).
pub fn credentials_for(url: &str, secrets: &[RepoSecret]) -> Option<RepoCredentials> {
    let wanted = normalize_for_equality(url);
    let exact = secrets
        .iter()
        .find(|s| s.kind == SecretKind::Repository && normalize_for_equality(&s.url) == wanted);
    let template = best_template(url, secrets);
    match (exact, template) {
        (Some(repo), template) => {
            let mut creds = repo.creds.clone();
            if !creds.has_credentials()
                && let Some(t) = template
            {
                creds.fill_from(&t.creds);
            }
            Some(creds)
        }
        (None, Some(t)) => Some(t.creds.clone()),
        (None, None) => None,
    }
}

fn best_template<'a>(url: &str, secrets: &'a [RepoSecret]) -> Option<&'a RepoSecret> {
    let repo = normalize_for_match(url);
    let mut best: Option<(usize, &RepoSecret)> = None;
    for s in secrets.iter().filter(|s| s.kind == SecretKind::RepoCreds) {
        let prefix = normalize_for_match(&s.url);
        if prefix.is_empty() || !repo.starts_with(&prefix) {
            continue;
        }
        if best.is_none_or(|(len, _)| prefix.len() > len) {
            best = Some((prefix.len(), s));
        }
    }
    best.map(|(_, s)| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(kind: SecretKind, url: &str, user: &str) -> RepoSecret {
        RepoSecret {
            kind,
            url: url.into(),
            creds: RepoCredentials {
                username: Some(user.into()),
                password: Some(format!("{user}-pw")),
                ..Default::default()
            },
            type_: None,
            name: None,
        }
    }

    #[test]
    fn from_secret_data_reads_argo_keys() {
        let data: BTreeMap<String, String> = [
            ("url", " https://h/r.git "),
            ("username", "u"),
            ("password", "p"),
            ("insecure", "true"),
            ("type", "helm"),
            ("name", "n"),
            ("sshPrivateKey", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let s = RepoSecret::from_secret_data(SecretKind::Repository, &data).unwrap();
        assert_eq!(s.url, "https://h/r.git");
        assert_eq!(s.creds.username.as_deref(), Some("u"));
        assert_eq!(s.creds.password.as_deref(), Some("p"));
        assert!(s.creds.insecure);
        assert_eq!(s.creds.ssh_private_key, None);
        assert_eq!(s.type_.as_deref(), Some("helm"));
        assert!(RepoSecret::from_secret_data(SecretKind::Repository, &BTreeMap::new()).is_none());
    }

    #[test]
    fn exact_repository_beats_longer_template() {
        let secrets = vec![
            secret(
                SecretKind::RepoCreds,
                "https://git.example.com/org/repo",
                "tmpl",
            ),
            secret(
                SecretKind::Repository,
                "https://GIT.example.com/org/repo.git/",
                "exact",
            ),
        ];
        let c = credentials_for("https://git.example.com/org/repo", &secrets).unwrap();
        assert_eq!(c.username.as_deref(), Some("exact"));
    }

    #[test]
    fn longest_prefix_template_wins() {
        let secrets = vec![
            secret(SecretKind::RepoCreds, "https://git.example.com/", "short"),
            secret(
                SecretKind::RepoCreds,
                "https://git.example.com/org/",
                "long",
            ),
            secret(
                SecretKind::RepoCreds,
                "https://other.example.com/org/",
                "other",
            ),
            secret(
                SecretKind::Repository,
                "https://git.example.com/org/else",
                "else",
            ),
        ];
        let c = credentials_for("https://git.example.com/org/repo.git", &secrets).unwrap();
        assert_eq!(c.username.as_deref(), Some("long"));
        let c = credentials_for("https://git.example.com/x/repo", &secrets).unwrap();
        assert_eq!(c.username.as_deref(), Some("short"));
        assert!(credentials_for("https://nowhere.example.com/r", &secrets).is_none());
    }

    #[test]
    fn scp_and_ssh_urls_match_each_other() {
        let secrets = vec![secret(SecretKind::RepoCreds, "git@github.com:org", "ssh")];
        let c = credentials_for("ssh://git@github.com/org/repo.git", &secrets).unwrap();
        assert_eq!(c.username.as_deref(), Some("ssh"));
    }

    #[test]
    fn repository_without_credentials_takes_them_from_template() {
        let mut bare = secret(SecretKind::Repository, "https://h/org/r", "x");
        bare.creds = RepoCredentials {
            insecure: true,
            ..Default::default()
        };
        let secrets = vec![bare, secret(SecretKind::RepoCreds, "https://h/org", "tmpl")];
        let c = credentials_for("https://h/org/r", &secrets).unwrap();
        assert_eq!(c.username.as_deref(), Some("tmpl"));
        assert!(c.insecure);
    }

    #[test]
    fn debug_redacts() {
        let c = RepoCredentials {
            username: Some("user".into()),
            password: Some("hunter2-password".into()),
            ssh_private_key: Some("-----BEGIN-----\nsecretkeybody\n-----END-----".into()),
            tls_client_cert_key: Some("tlskeysecret".into()),
            ..Default::default()
        };
        let s = RepoSecret {
            kind: SecretKind::Repository,
            url: "https://user:urlsecret@h/r".into(),
            creds: c.clone(),
            type_: None,
            name: None,
        };
        for out in [format!("{c:?}"), format!("{s:?}"), format!("{s:#?}")] {
            for secret in [
                "hunter2-password",
                "secretkeybody",
                "tlskeysecret",
                "urlsecret",
            ] {
                assert!(!out.contains(secret), "{out}");
            }
        }
    }
}

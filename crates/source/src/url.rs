//! Repository URL handling: the forms git accepts, the keys the cache and
//! credential matching use, and removing secrets from URLs before they are shown.

use crate::error::SourceError;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Http,
    Ssh,
    File,
    /// Any other scheme git may know (git://, ext:: is refused): no credentials.
    Other,
}

/// A repository URL split into what git gets and what stays with us.
#[derive(Clone)]
pub(crate) struct RepoUrl {
    /// The URL handed to git: any password (and for http, the whole user
    /// info) removed, so nothing secret reaches the command line.
    pub git_url: String,
    pub transport: Transport,
    /// `host[:port]` exactly as written, which is what git hands a credential
    /// helper; the helper answers only for this host.
    pub host: Option<String>,
    /// User info found in an http URL, percent-decoded; used when the
    /// credentials do not say otherwise.
    pub url_username: Option<String>,
    pub url_password: Option<String>,
}

impl RepoUrl {
    pub fn parse(raw: &str) -> Result<RepoUrl, SourceError> {
        let url = raw.trim();
        let invalid = |reason: &'static str| SourceError::InvalidUrl {
            url: scrub_url(url),
            reason,
        };
        if url.is_empty() {
            return Err(invalid("empty"));
        }
        if url.starts_with('-') {
            return Err(invalid("must not start with '-'"));
        }
        if url.chars().any(char::is_control) {
            return Err(invalid("contains control characters"));
        }
        // `<transport>::<address>` runs a remote helper (ext:: runs commands).
        if let Some(i) = url.find("::")
            && !url[..i].is_empty()
            && url[..i]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.')
        {
            return Err(invalid("remote helper URLs are not supported"));
        }
        if let Some((scheme, rest)) = url.split_once("://") {
            let scheme_lc = scheme.to_ascii_lowercase();
            let transport = match scheme_lc.as_str() {
                "http" | "https" => Transport::Http,
                "ssh" | "git+ssh" | "ssh+git" => Transport::Ssh,
                "file" => Transport::File,
                "git" => Transport::Other,
                _ => return Err(invalid("unsupported scheme")),
            };
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let (userinfo, hostport) = match authority.rfind('@') {
                Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
                None => (None, authority),
            };
            if hostport.starts_with('-') {
                return Err(invalid("host must not start with '-'"));
            }
            if transport != Transport::File && hostport.is_empty() {
                return Err(invalid("no host"));
            }
            let (user, password) = match userinfo {
                Some(u) => match u.split_once(':') {
                    Some((a, b)) => (Some(a), Some(b)),
                    None => (Some(u), None),
                },
                None => (None, None),
            };
            let git_url = match transport {
                Transport::Http => format!("{scheme}://{hostport}{path}"),
                _ => match user {
                    Some(u) => format!("{scheme}://{u}@{hostport}{path}"),
                    None => format!("{scheme}://{hostport}{path}"),
                },
            };
            let http = transport == Transport::Http;
            Ok(RepoUrl {
                git_url,
                transport,
                host: (!hostport.is_empty()).then(|| hostport.to_string()),
                url_username: user.filter(|u| http && !u.is_empty()).map(percent_decode),
                url_password: password
                    .filter(|p| http && !p.is_empty())
                    .map(percent_decode),
            })
        } else if let Some((userhost, _path)) = split_scp(url) {
            let host = userhost.rsplit('@').next().unwrap_or(userhost);
            if host.is_empty() || host.starts_with('-') {
                return Err(invalid("invalid host"));
            }
            Ok(RepoUrl {
                git_url: url.to_string(),
                transport: Transport::Ssh,
                host: Some(host.to_string()),
                url_username: None,
                url_password: None,
            })
        } else {
            Ok(RepoUrl {
                git_url: url.to_string(),
                transport: Transport::File,
                host: None,
                url_username: None,
                url_password: None,
            })
        }
    }
}

/// `[user@]host:path`, git's scp-like syntax: a colon before any slash.
fn split_scp(url: &str) -> Option<(&str, &str)> {
    let colon = url.find(':')?;
    if url[..colon].contains('/') {
        return None;
    }
    Some((&url[..colon], &url[colon + 1..]))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex_val(bytes[i + 1]), hex_val(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The URL with any password removed (and, for http(s), all user info, as a
/// token is often written as the user name), for showing in messages.
pub fn scrub_url(url: &str) -> String {
    scrub_urls_in(url)
}

/// Removes credentials from every `scheme://userinfo@host` found in `text`.
pub(crate) fn scrub_urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let scheme_start = rest[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.'))
            .map_or(0, |p| p + 1);
        let scheme = rest[scheme_start..i].to_ascii_lowercase();
        let after = &rest[i + 3..];
        let end = after
            .find(|c: char| c == '/' || c.is_whitespace() || c == '\'' || c == '"' || c == '>')
            .unwrap_or(after.len());
        let authority = &after[..end];
        out.push_str(&rest[..i + 3]);
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                let keep_user = !scheme.starts_with("http") && !userinfo.contains(':');
                if keep_user {
                    out.push_str(authority);
                } else if !scheme.starts_with("http") {
                    let user = userinfo.split(':').next().unwrap_or_default();
                    out.push_str(user);
                    out.push_str(&authority[at..]);
                } else {
                    out.push_str(&authority[at + 1..]);
                }
            }
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The form Argo CD compares repository URLs in: trimmed, lower-case,
/// scp-like `user@host:path` as `user@host/path`, `ssh://` and a trailing
/// `.git` dropped.
pub(crate) fn normalize_for_match(url: &str) -> String {
    let mut u = url.trim().to_lowercase();
    if let Some(rest) = u.strip_prefix("ssh://") {
        u = rest.to_string();
    } else if !u.contains("://")
        && let Some(at) = u.find('@')
        && !u[..at].contains('/')
        && !u[..at].contains(':')
        && !u[at + 1..].contains('@')
        && let Some(colon) = u[at..].find(':').map(|c| c + at)
    {
        u.replace_range(colon..colon + 1, "/");
    }
    if let Some(s) = u.strip_suffix(".git") {
        u = s.to_string();
    }
    u
}

/// Equality form: like [`normalize_for_match`], trailing slashes also ignored.
pub(crate) fn normalize_for_equality(url: &str) -> String {
    let t = url.trim().trim_end_matches('/');
    normalize_for_match(t).trim_end_matches('/').to_string()
}

/// Whether two spellings name the same repository, by Argo CD's rules
/// (case, `.git`, trailing `/`, `ssh://` and scp-like forms).
pub fn same_repo(a: &str, b: &str) -> bool {
    normalize_for_equality(a) == normalize_for_equality(b)
}

/// The name of a repository's cache directory: one per repository however
/// its URL is spelled (host case, trailing `/` or `.git`, credentials), but
/// keeping path case, as some servers treat paths case-sensitively.
pub(crate) fn cache_key(url: &str) -> String {
    let canonical = match RepoUrl::parse(url) {
        Ok(parsed) => canonical(&parsed.git_url),
        Err(_) => url.trim().to_string(),
    };
    let digest = Sha256::digest(canonical.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn canonical(git_url: &str) -> String {
    let mut u = git_url.trim_end_matches('/');
    u = u.strip_suffix(".git").unwrap_or(u);
    let u = u.trim_end_matches('/');
    match u.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let (user, host) = match authority.rfind('@') {
                Some(i) => (&authority[..=i], &authority[i + 1..]),
                None => ("", authority),
            };
            let scheme = scheme.to_ascii_lowercase();
            let scheme = if scheme.ends_with("ssh") {
                "ssh"
            } else {
                &scheme
            };
            if scheme == "ssh" {
                // So that ssh://git@host/org/repo and git@host:org/repo share a mirror.
                format!("{user}{}{}", host.to_ascii_lowercase(), path)
            } else {
                format!("{scheme}://{user}{}{path}", host.to_ascii_lowercase())
            }
        }
        None => match split_scp(u) {
            Some((userhost, path)) => {
                let (user, host) = match userhost.rfind('@') {
                    Some(i) => (&userhost[..=i], &userhost[i + 1..]),
                    None => ("", userhost),
                };
                let path = path.trim_start_matches('/');
                format!("{user}{}/{path}", host.to_ascii_lowercase())
            }
            None => u.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_and_moves_credentials_out() {
        let u = RepoUrl::parse("https://bob:s%40cret@Git.Example.com:8443/org/repo.git").unwrap();
        assert_eq!(u.transport, Transport::Http);
        assert_eq!(u.git_url, "https://Git.Example.com:8443/org/repo.git");
        assert_eq!(u.host.as_deref(), Some("Git.Example.com:8443"));
        assert_eq!(u.url_username.as_deref(), Some("bob"));
        assert_eq!(u.url_password.as_deref(), Some("s@cret"));
    }

    #[test]
    fn parses_ssh_forms() {
        let u = RepoUrl::parse("ssh://git@host:2222/org/repo").unwrap();
        assert_eq!(u.transport, Transport::Ssh);
        assert_eq!(u.git_url, "ssh://git@host:2222/org/repo");
        let u = RepoUrl::parse("git@github.com:org/repo.git").unwrap();
        assert_eq!(u.transport, Transport::Ssh);
        assert_eq!(u.host.as_deref(), Some("github.com"));
        assert_eq!(
            RepoUrl::parse("/srv/repo.git").unwrap().transport,
            Transport::File
        );
        assert_eq!(
            RepoUrl::parse("file:///srv/repo.git").unwrap().transport,
            Transport::File
        );
    }

    #[test]
    fn refuses_option_like_urls() {
        assert!(RepoUrl::parse("-uhttp://x").is_err());
        assert!(RepoUrl::parse("ssh://-oProxyCommand=x/y").is_err());
        assert!(RepoUrl::parse("ext::sh -c x").is_err());
        assert!(RepoUrl::parse("fd::3").is_err());
        assert!(RepoUrl::parse("").is_err());
    }

    #[test]
    fn scrubs_urls_in_text() {
        assert_eq!(
            scrub_urls_in("fatal: unable to access 'https://u:p4ss@h/x.git/': 401"),
            "fatal: unable to access 'https://h/x.git/': 401"
        );
        assert_eq!(
            scrub_url("https://tok3n@github.com/o/r"),
            "https://github.com/o/r"
        );
        assert_eq!(scrub_url("ssh://git:pw@h:22/r"), "ssh://git@h:22/r");
        assert_eq!(scrub_url("ssh://git@h/r"), "ssh://git@h/r");
        assert_eq!(scrub_url("git@h:r"), "git@h:r");
    }

    #[test]
    fn match_normalization() {
        assert_eq!(
            normalize_for_match("git@GitHub.com:Org/Repo.git"),
            "git@github.com/org/repo"
        );
        assert_eq!(
            normalize_for_match("ssh://git@github.com/org/repo"),
            "git@github.com/org/repo"
        );
        assert_eq!(
            normalize_for_equality("https://Host/org/repo.git/"),
            normalize_for_equality("https://host/org/repo")
        );
    }

    #[test]
    fn cache_key_ignores_spelling_and_credentials() {
        let k = cache_key("https://host/org/repo");
        assert_eq!(k.len(), 16);
        assert_eq!(k, cache_key("https://HOST/org/repo.git/"));
        assert_eq!(k, cache_key("https://u:p@host/org/repo.git"));
        assert_ne!(k, cache_key("https://host/org/Repo"));
        assert_eq!(
            cache_key("git@host:org/repo.git"),
            cache_key("ssh://git@host/org/repo")
        );
    }
}

//! Scanning a registry for an image's tags over the OCI distribution API,
//! with credentials from a `kubernetes.io/dockerconfigjson` Secret.

use base64::Engine;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use regex::Regex;
use std::time::Duration;

/// Flux's default `exclusionList`: cosign signatures are not images.
pub const DEFAULT_EXCLUSIONS: &[&str] = &[r"^.*\.sig$"];

/// Tags asked for per page. Registries may return fewer (Quay caps at 100)
/// while more remain, so only an empty page (or one that does not move on)
/// ends the listing.
pub const PAGE: usize = 1000;
/// A bound on pages so a misbehaving registry cannot keep a scan running.
const MAX_PAGES: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("invalid image {image:?}: {reason}")]
    InvalidImage { image: String, reason: String },
    #[error("invalid exclusionList entry {pattern:?}: {reason}")]
    InvalidExclusion { pattern: String, reason: String },
    #[error("invalid docker config in Secret: {0}")]
    InvalidDockerConfig(String),
    /// The registry refused the credentials (or asked for some).
    #[error("scanning {image}: {message}")]
    Unauthorized { image: String, message: String },
    #[error("scanning {image}: {message}")]
    Registry { image: String, message: String },
    #[error("scanning {image}: timed out after {seconds}s")]
    Timeout { image: String, seconds: u64 },
}

/// A username and password (or token) for one registry. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryCredentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// An image name split the way registries address it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageName {
    /// `host[:port]`; `docker.io` for Docker Hub.
    pub registry: String,
    /// `org/app`; `library/nginx` for official Docker Hub images.
    pub repository: String,
}

impl ImageName {
    /// Parses `spec.image`: a name without tag or digest, as Flux requires.
    pub fn parse(image: &str) -> Result<ImageName, ScanError> {
        let invalid = |reason: &str| ScanError::InvalidImage {
            image: image.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = image.trim();
        if trimmed.is_empty() {
            return Err(invalid("empty"));
        }
        if trimmed.contains("://") {
            return Err(invalid("give the image name without a scheme"));
        }
        let last = trimmed.rsplit('/').next().unwrap_or_default();
        if trimmed.contains('@') || last.contains(':') {
            return Err(invalid(
                "give the image name without a tag or digest; the policy picks the tag",
            ));
        }
        let reference: Reference = trimmed
            .parse()
            .map_err(|e: oci_client::ParseError| invalid(&e.to_string()))?;
        Ok(ImageName {
            registry: reference.registry().to_string(),
            repository: reference.repository().to_string(),
        })
    }

    /// The fully qualified name, e.g. `docker.io/library/nginx`.
    pub fn canonical(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

/// Finds the credentials for `registry` in a dockerconfigjson document
/// (`{"auths": {"host": {"username", "password"} | {"auth": base64}}}`).
/// Keys may carry a scheme or path (`https://index.docker.io/v1/`).
pub fn credentials_from_docker_config(
    json: &[u8],
    registry: &str,
) -> Result<Option<RegistryCredentials>, ScanError> {
    let doc: serde_json::Value = serde_json::from_slice(json)
        .map_err(|e| ScanError::InvalidDockerConfig(format!("not JSON: {e}")))?;
    let auths = doc
        .get("auths")
        .and_then(|a| a.as_object())
        .ok_or_else(|| ScanError::InvalidDockerConfig("no \"auths\" object".into()))?;
    let wanted = normalize_registry(registry);
    for (key, entry) in auths {
        if normalize_registry(key) != wanted {
            continue;
        }
        let field = |k: &str| entry.get(k).and_then(|v| v.as_str()).unwrap_or_default();
        let (user, pass) = (field("username"), field("password"));
        if !user.is_empty() || !pass.is_empty() {
            return Ok(Some(RegistryCredentials {
                username: user.to_string(),
                password: pass.to_string(),
            }));
        }
        let auth = field("auth");
        if auth.is_empty() {
            continue;
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                ScanError::InvalidDockerConfig(format!("\"auth\" for {key} is not base64"))
            })?;
        let (user, pass) = decoded.split_once(':').ok_or_else(|| {
            ScanError::InvalidDockerConfig(format!("\"auth\" for {key} is not user:password"))
        })?;
        return Ok(Some(RegistryCredentials {
            username: user.to_string(),
            password: pass.to_string(),
        }));
    }
    Ok(None)
}

fn normalize_registry(r: &str) -> String {
    let r = r.trim();
    let r = r
        .strip_prefix("https://")
        .or_else(|| r.strip_prefix("http://"))
        .unwrap_or(r);
    let host = r.split('/').next().unwrap_or_default().to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".into(),
        _ => host,
    }
}

/// Compiles an `exclusionList`; `None` means Flux's default.
pub fn exclusions(list: Option<&[String]>) -> Result<Vec<Regex>, ScanError> {
    let owned: Vec<String>;
    let patterns: &[String] = match list {
        Some(l) => l,
        None => {
            owned = DEFAULT_EXCLUSIONS.iter().map(|s| s.to_string()).collect();
            &owned
        }
    };
    patterns
        .iter()
        .map(|p| {
            Regex::new(p).map_err(|e| ScanError::InvalidExclusion {
                pattern: p.clone(),
                reason: e.to_string(),
            })
        })
        .collect()
}

/// Lists every tag of `image` (following pages), drops the excluded ones,
/// and returns them sorted.
pub async fn scan(
    image: &ImageName,
    creds: Option<&RegistryCredentials>,
    insecure: bool,
    timeout: Duration,
    excluded: &[Regex],
) -> Result<Vec<String>, ScanError> {
    scan_paged(image, creds, insecure, timeout, excluded, PAGE).await
}

/// [`scan`] with a chosen page size.
pub async fn scan_paged(
    image: &ImageName,
    creds: Option<&RegistryCredentials>,
    insecure: bool,
    timeout: Duration,
    excluded: &[Regex],
    page: usize,
) -> Result<Vec<String>, ScanError> {
    let canonical = image.canonical();
    let work = list_all(image, creds, insecure, page.max(1));
    let mut tags = match tokio::time::timeout(timeout, work).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(ScanError::Timeout {
                image: canonical,
                seconds: timeout.as_secs(),
            });
        }
    };
    tags.retain(|t| !excluded.iter().any(|r| r.is_match(t)));
    tags.sort();
    tags.dedup();
    Ok(tags)
}

/// Registries on the loopback interface speak plain HTTP, as Docker and containerd assume
/// (127.0.0.0/8 is an insecure registry by default there): a registry on the same machine
/// has no certificate to offer.
fn loopback(registry: &str) -> bool {
    let host = match registry.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => registry,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

async fn list_all(
    image: &ImageName,
    creds: Option<&RegistryCredentials>,
    insecure: bool,
    page_size: usize,
) -> Result<Vec<String>, ScanError> {
    let canonical = image.canonical();
    let registry_error = |e: oci_client::errors::OciDistributionError| {
        use oci_client::errors::OciDistributionError as E;
        let message = describe(&e);
        match e {
            E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => ScanError::Unauthorized {
                image: canonical.clone(),
                message,
            },
            _ => ScanError::Registry {
                image: canonical.clone(),
                message,
            },
        }
    };
    let config = ClientConfig {
        protocol: if insecure || loopback(&image.registry) {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        ..ClientConfig::default()
    };
    // reqwest is built without a default TLS provider; use ring, as kube does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // A client per scan: oci-client keeps the first credentials it saw per
    // registry, and a Secret may have changed since the last scan.
    let client = Client::new(config);
    let auth = match creds {
        Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
        None => RegistryAuth::Anonymous,
    };
    let reference = Reference::with_tag(
        image.registry.clone(),
        image.repository.clone(),
        "latest".into(),
    );
    let mut out = Vec::new();
    let mut last: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let page = client
            .list_tags(&reference, &auth, Some(page_size), last.as_deref())
            .await
            .map_err(registry_error)?;
        let next = page.tags.last().cloned();
        out.extend(page.tags);
        if next.is_none() || next == last {
            break;
        }
        last = next;
    }
    Ok(out)
}

/// oci-client's messages for HTTP failures carry the whole response
/// envelope; keep them, but say plainly what an auth failure is.
fn describe(e: &oci_client::errors::OciDistributionError) -> String {
    use oci_client::errors::OciDistributionError as E;
    match e {
        E::AuthenticationFailure(m) => format!("authentication failed: {m}"),
        E::UnauthorizedError { url } => {
            format!("401 Unauthorized from {url}: check the credentials in spec.secretRef")
        }
        other => other.to_string(),
    }
}

/// The ten tags Flux shows in `status.lastScanResult.latestTags`: the last
/// ten in reverse alphabetical order.
pub fn latest_tags(tags: &[String]) -> Vec<String> {
    let mut sorted: Vec<String> = tags.to_vec();
    sorted.sort_by(|a, b| b.cmp(a));
    sorted.truncate(10);
    sorted
}

#[cfg(test)]
mod tests {

    #[test]
    fn loopback_registries_are_plain_http() {
        for r in [
            "localhost:5000",
            "127.0.0.1:34143",
            "127.1.2.3",
            "[::1]:5000",
            "localhost",
        ] {
            assert!(loopback(r), "{r}");
        }
        for r in [
            "docker.io",
            "ghcr.io",
            "10.0.0.1:5000",
            "registry.local:5000",
            "localhost.example.com",
        ] {
            assert!(!loopback(r), "{r}");
        }
    }

    use super::*;

    #[test]
    fn image_names() {
        let n = ImageName::parse("nginx").unwrap();
        assert_eq!(n.canonical(), "docker.io/library/nginx");
        let n = ImageName::parse("127.0.0.1:5000/team/app").unwrap();
        assert_eq!(n.registry, "127.0.0.1:5000");
        assert_eq!(n.repository, "team/app");
        assert_eq!(n.canonical(), "127.0.0.1:5000/team/app");
        for bad in [
            "",
            "app:1.0",
            "ghcr.io/a/b@sha256:abc",
            "https://ghcr.io/a",
            "A B",
        ] {
            assert!(ImageName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn docker_config_lookup() {
        let cfg = br#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "aHViOnNlY3JldA=="},
            "127.0.0.1:5000": {"username": "u", "password": "s3cr3t"}
        }}"#;
        let c = credentials_from_docker_config(cfg, "docker.io")
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("hub", "secret")
        );
        let c = credentials_from_docker_config(cfg, "127.0.0.1:5000")
            .unwrap()
            .unwrap();
        assert_eq!(c.username, "u");
        assert!(!format!("{c:?}").contains("s3cr3t"));
        assert!(
            credentials_from_docker_config(cfg, "ghcr.io")
                .unwrap()
                .is_none()
        );
        assert!(credentials_from_docker_config(b"{}", "x").is_err());
        assert!(credentials_from_docker_config(br#"{"auths":{"x":{"auth":"%%"}}}"#, "x").is_err());
    }

    #[test]
    fn exclusion_defaults_and_errors() {
        let ex = exclusions(None).unwrap();
        assert!(ex.iter().any(|r| r.is_match("sha256-abc.sig")));
        assert!(!ex.iter().any(|r| r.is_match("1.0.0")));
        assert!(exclusions(Some(&[])).unwrap().is_empty());
        let err = exclusions(Some(&["(".to_string()])).unwrap_err();
        assert!(err.to_string().contains("exclusionList"), "{err}");
    }

    #[test]
    fn latest_tags_are_reverse_sorted_and_capped() {
        let tags: Vec<String> = (0..15).map(|i| format!("t{i:02}")).collect();
        let l = latest_tags(&tags);
        assert_eq!(l.len(), 10);
        assert_eq!(l[0], "t14");
        assert_eq!(l[9], "t05");
    }
}

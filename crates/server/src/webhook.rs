//! Git webhooks: authenticate a provider's push notification and reduce it to a [`PushEvent`].
//!
//! The HTTP handler hands [`parse`] the request headers and raw body; the result tells it which
//! applications to refresh (with [`same_repo`] and [`revision_matches`] /
//! [`PushEvent::affects_revision`]) or how to answer ([`WebhookError::http_status`]).
//!
//! Order of work, and why:
//! 1. the provider is recognised from its event header alone;
//! 2. a provider without a configured secret is refused. Argo CD accepts unauthenticated
//!    webhooks ("Configuring a webhook shared secret is optional", operator-manual/webhook.md);
//!    Ferry does not, because an unauthenticated endpoint lets anyone make Ferry hammer Git;
//! 3. the signature or token is checked over the exact bytes received, in constant time, so
//!    that nothing from an unauthenticated body is ever parsed;
//! 4. only then is the event type looked at (a ping answered before step 3 would tell an
//!    admin testing a wrongly-set secret that all is well) and the JSON parsed.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Deserializer};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// A Git hosting product that sends webhooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    GitHub,
    GitLab,
    /// Gitea and its fork Forgejo (which also sends the `X-Gitea-*` headers).
    Gitea,
    Gogs,
    /// Bitbucket Cloud (bitbucket.org).
    Bitbucket,
    /// Bitbucket Server / Data Center.
    BitbucketServer,
}

impl Provider {
    /// The provider's name as operators know it, for messages and logs.
    pub fn name(self) -> &'static str {
        match self {
            Provider::GitHub => "GitHub",
            Provider::GitLab => "GitLab",
            Provider::Gitea => "Gitea",
            Provider::Gogs => "Gogs",
            Provider::Bitbucket => "Bitbucket Cloud",
            Provider::BitbucketServer => "Bitbucket Server",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Shared secrets from the server's settings; empty/None = that provider is not configured.
///
/// The keys mirror Argo CD's `argocd-secret` entries (`webhook.github.secret`,
/// `webhook.gitlab.secret`, `webhook.bitbucket.uuid`, `webhook.bitbucketserver.secret`,
/// `webhook.gogs.secret`). Argo CD has no Gitea key: Gitea also sends the Gogs headers and Argo
/// handles it as Gogs. So that such a setup keeps working, a Gitea webhook is checked against
/// `gitea`, or against `gogs` when `gitea` is unset.
#[derive(Clone, Default)]
pub struct WebhookSecrets {
    pub github: Option<String>,
    pub gitlab: Option<String>,
    pub gitea: Option<String>,
    pub gogs: Option<String>,
    /// The webhook's UUID, which Bitbucket Cloud sends in `X-Hook-UUID` (braces optional).
    pub bitbucket_uuid: Option<String>,
    pub bitbucket_server: Option<String>,
}

impl WebhookSecrets {
    /// The secret that authenticates `provider`'s webhooks, if one is configured.
    fn for_provider(&self, provider: Provider) -> Option<&str> {
        fn configured(s: &Option<String>) -> Option<&str> {
            s.as_deref().filter(|v| !v.is_empty())
        }
        match provider {
            Provider::GitHub => configured(&self.github),
            Provider::GitLab => configured(&self.gitlab),
            Provider::Gitea => configured(&self.gitea).or_else(|| configured(&self.gogs)),
            Provider::Gogs => configured(&self.gogs),
            Provider::Bitbucket => configured(&self.bitbucket_uuid),
            Provider::BitbucketServer => configured(&self.bitbucket_server),
        }
    }
}

// Written by hand so that secrets never reach logs: only whether each one is set is shown.
impl fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn shown(s: &Option<String>) -> fmt::Arguments<'static> {
            match s.as_deref() {
                Some(v) if !v.is_empty() => format_args!("<redacted>"),
                _ => format_args!("<unset>"),
            }
        }
        f.debug_struct("WebhookSecrets")
            .field("github", &shown(&self.github))
            .field("gitlab", &shown(&self.gitlab))
            .field("gitea", &shown(&self.gitea))
            .field("gogs", &shown(&self.gogs))
            .field("bitbucket_uuid", &shown(&self.bitbucket_uuid))
            .field("bitbucket_server", &shown(&self.bitbucket_server))
            .finish()
    }
}

/// An authenticated push, reduced to what deciding which applications to refresh needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushEvent {
    pub provider: Provider,
    /// Every clone URL the payload names for the repository (html, clone http, ssh...), as given.
    pub repo_urls: Vec<String>,
    /// Branch name without refs/heads/ (or the tag name for tag pushes, with `tag: true`).
    /// A ref outside refs/heads/ and refs/tags/ is kept whole; None when the payload names none.
    pub branch: Option<String>,
    pub tag: bool,
    /// Files touched by the pushed commits, when the payload lists them.
    ///
    /// Empty means "unknown", never "nothing changed": the caller must then refresh every
    /// matching application (as Argo CD's `AppFilesHaveChanged` does). It is left empty when
    /// the list would be incomplete: Bitbucket never sends one, a payload that was cut short
    /// (GitLab `total_commits_count`, Gitea `total_commits`, GitHub's 2048-commit cap), a push
    /// with no commits (branch created or moved back), and a GitHub force-push, whose dropped
    /// commits appear nowhere in the payload.
    pub changed_files: Vec<String>,
    /// The commit the ref points to after the push (all zeros when GitHub/GitLab report a
    /// deletion), as given.
    pub after: Option<String>,
    /// The repository's default branch, when the payload carries it (GitHub, GitLab, Gitea,
    /// Gogs). None means unknown, which [`revision_matches`] treats as "could be any branch".
    pub default_branch: Option<String>,
}

impl PushEvent {
    /// Whether an application tracking `target_revision` in this repository is affected.
    ///
    /// Unlike [`revision_matches`] (which, like Argo CD, cannot tell a branch from a tag of the
    /// same name), this uses `tag`: a tag push only affects `refs/tags/<name>` or a bare
    /// `<name>`, never HEAD or `refs/heads/...`; a branch push never affects `refs/tags/...`.
    pub fn affects_revision(&self, target_revision: &str) -> bool {
        // A push whose ref is unknown could have moved anything; a spurious refresh is cheap.
        let Some(name) = self.branch.as_deref() else {
            return true;
        };
        let target = target_revision.trim();
        if self.tag {
            if let Some(tag) = target.strip_prefix("refs/tags/") {
                return tag == name;
            }
            // Creating or moving a tag never changes what HEAD or a branch resolves to.
            if is_head(target) || target.starts_with("refs/heads/") {
                return false;
            }
            return target == name;
        }
        if target.starts_with("refs/tags/") {
            return false;
        }
        revision_matches(target, name, self.default_branch.as_deref())
    }
}

/// Why a webhook request produced no [`PushEvent`].
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// No recognised event header.
    #[error("no recognised Git provider event header")]
    UnknownProvider,
    /// The provider has no secret configured. Argo CD would accept the request unauthenticated;
    /// Ferry refuses it (401): an unauthenticated webhook could be used to make Ferry hammer Git.
    #[error("{0} webhooks are refused: no {0} webhook secret is configured")]
    NotConfigured(Provider),
    /// Missing or wrong signature/token; the caller answers 401.
    #[error("{0} webhook signature or token is missing or wrong")]
    BadSignature(Provider),
    /// Ping and other events: the caller answers 200 and does nothing.
    #[error("{provider} event {event:?} is not a push; nothing to do")]
    NotAPush { provider: Provider, event: String },
    /// An authenticated push whose payload could not be understood.
    #[error("malformed {provider} push payload: {message}")]
    Malformed { provider: Provider, message: String },
}

impl WebhookError {
    /// The HTTP status the webhook endpoint should answer with.
    pub fn http_status(&self) -> u16 {
        match self {
            WebhookError::UnknownProvider | WebhookError::Malformed { .. } => 400,
            WebhookError::NotConfigured(_) | WebhookError::BadSignature(_) => 401,
            // Providers disable hooks that keep failing; a ping or an unwanted event is fine.
            WebhookError::NotAPush { .. } => 200,
        }
    }
}

/// Authenticates a webhook request and extracts the push it reports.
///
/// `headers`: lower-cased header names → values.
pub fn parse(
    headers: &BTreeMap<String, String>,
    body: &[u8],
    secrets: &WebhookSecrets,
) -> Result<PushEvent, WebhookError> {
    let (provider, event) = detect(headers).ok_or(WebhookError::UnknownProvider)?;
    let secret = secrets
        .for_provider(provider)
        .ok_or(WebhookError::NotConfigured(provider))?;
    if !authentic(provider, headers, body, secret) {
        tracing::warn!(%provider, "webhook rejected: signature or token missing or wrong");
        return Err(WebhookError::BadSignature(provider));
    }
    let not_a_push = || {
        tracing::debug!(%provider, event, "ignoring webhook event that is not a push");
        Err(WebhookError::NotAPush {
            provider,
            event: event.to_string(),
        })
    };
    match provider {
        Provider::GitHub | Provider::Gitea | Provider::Gogs if event == "push" => {
            github_like(provider, body)
        }
        Provider::GitLab if matches!(event, "Push Hook" | "Tag Push Hook" | "System Hook") => {
            gitlab(body, event)
        }
        Provider::Bitbucket if event == "repo:push" => bitbucket_cloud(body),
        Provider::BitbucketServer if event == "repo:refs_changed" => bitbucket_server(body),
        _ => not_a_push(),
    }
}

/// A header's value, trimmed; absent and empty are the same (as in Argo CD's dispatch).
fn header<'a>(headers: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
}

/// The provider and its event name, from the headers alone.
fn detect(headers: &BTreeMap<String, String>) -> Option<(Provider, &str)> {
    // Order matters: Gitea also sends the Gogs and GitHub headers, and Gogs the GitHub ones,
    // each with the same event name but not the signature those providers would check.
    if let Some(event) = header(headers, "x-gitea-event") {
        return Some((Provider::Gitea, event));
    }
    if let Some(event) = header(headers, "x-gogs-event") {
        return Some((Provider::Gogs, event));
    }
    if let Some(event) = header(headers, "x-github-event") {
        return Some((Provider::GitHub, event));
    }
    if let Some(event) = header(headers, "x-gitlab-event") {
        return Some((Provider::GitLab, event));
    }
    let event_key = header(headers, "x-event-key");
    // Both Bitbucket products send X-Event-Key; only Cloud sends X-Hook-UUID. Argo CD keys on
    // X-Hook-UUID alone, but then a Cloud push without it would be judged as Bitbucket Server;
    // `repo:push` is a Cloud-only key (Server's push is `repo:refs_changed`).
    if header(headers, "x-hook-uuid").is_some() || event_key == Some("repo:push") {
        return Some((Provider::Bitbucket, event_key.unwrap_or_default()));
    }
    event_key.map(|event| (Provider::BitbucketServer, event))
}

/// Whether the request carries `provider`'s proof that it knows `secret`.
fn authentic(
    provider: Provider,
    headers: &BTreeMap<String, String>,
    body: &[u8],
    secret: &str,
) -> bool {
    match provider {
        // `sha256=<hex HMAC-SHA256 of the body>`; the legacy SHA-1 `X-Hub-Signature` is not
        // accepted.
        Provider::GitHub => header(headers, "x-hub-signature-256")
            .and_then(|s| s.strip_prefix("sha256="))
            .is_some_and(|hex| hmac_matches(secret, body, hex)),
        // Bitbucket Server signs like GitHub, but in X-Hub-Signature.
        Provider::BitbucketServer => header(headers, "x-hub-signature")
            .and_then(|s| s.strip_prefix("sha256="))
            .is_some_and(|hex| hmac_matches(secret, body, hex)),
        // Bare hex HMAC-SHA256 of the body.
        Provider::Gitea => {
            header(headers, "x-gitea-signature").is_some_and(|hex| hmac_matches(secret, body, hex))
        }
        Provider::Gogs => {
            header(headers, "x-gogs-signature").is_some_and(|hex| hmac_matches(secret, body, hex))
        }
        // GitLab sends the shared secret itself.
        Provider::GitLab => {
            header(headers, "x-gitlab-token").is_some_and(|token| tokens_equal(token, secret))
        }
        // Bitbucket Cloud sends the webhook's UUID, shown with braces in its UI and API; match
        // with or without them, and in any letter case, since a UUID is case-insensitive.
        Provider::Bitbucket => header(headers, "x-hook-uuid")
            .is_some_and(|uuid| tokens_equal(&normalise_uuid(uuid), &normalise_uuid(secret))),
    }
}

/// Whether `hex` is the HMAC-SHA256 of `body` under `secret`, compared in constant time.
fn hmac_matches(secret: &str, body: &[u8], hex: &str) -> bool {
    let Some(signature) = decode_hex(hex) else {
        return false;
    };
    // HMAC takes keys of any length, so this never fails; refusing is the safe answer anyway.
    let Ok(mut mac) = HmacSha256::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    // `verify_slice` compares in constant time (and rejects a wrong length).
    mac.verify_slice(&signature).is_ok()
}

/// Compares a presented token with the configured one without leaking, through timing, how
/// much of it matched or how long it is: both are first reduced to fixed-length HMAC tags, which
/// `verify_slice` then compares in constant time.
fn tokens_equal(presented: &str, expected: &str) -> bool {
    const KEY: &[u8] = b"ferry webhook token comparison";
    let tag = |value: &str| {
        HmacSha256::new_from_slice(KEY).map(|mut mac| {
            mac.update(value.as_bytes());
            mac
        })
    };
    match (tag(presented), tag(expected)) {
        (Ok(presented), Ok(expected)) => presented
            .verify_slice(&expected.finalize().into_bytes())
            .is_ok(),
        _ => false,
    }
}

fn normalise_uuid(uuid: &str) -> String {
    uuid.trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim()
        .to_ascii_lowercase()
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    let hex = hex.as_bytes();
    if hex.is_empty() || !hex.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    hex.chunks_exact(2)
        .map(|pair| Some((nibble(pair[0])? << 4) | nibble(pair[1])?))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Payloads. Only the fields used are declared; every one is optional or defaulted so that a
// provider adding, dropping or nulling a field does not turn a push into a 400.

/// Treats JSON `null` like an absent field (serde's `default` only covers absence).
fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

fn from_json<'a, T: Deserialize<'a>>(
    provider: Provider,
    body: &'a [u8],
) -> Result<T, WebhookError> {
    serde_json::from_slice(body).map_err(|e| WebhookError::Malformed {
        provider,
        message: e.to_string(),
    })
}

/// A commit's file lists, as GitHub, GitLab, Gitea and Gogs give them.
#[derive(Deserialize)]
struct CommitFiles {
    #[serde(default, deserialize_with = "nullable")]
    added: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    modified: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    removed: Vec<String>,
}

/// GitHub's push payload; Gitea and Gogs copied its shape.
#[derive(Deserialize)]
struct GitHubPush {
    #[serde(rename = "ref", default)]
    git_ref: Option<String>,
    #[serde(default)]
    after: Option<String>,
    /// GitHub only.
    #[serde(default, deserialize_with = "nullable")]
    forced: bool,
    /// Gitea only: how many commits the push had, of which `commits` may list fewer.
    #[serde(default)]
    total_commits: Option<u64>,
    #[serde(default, deserialize_with = "nullable")]
    commits: Vec<CommitFiles>,
    repository: GitHubRepository,
}

#[derive(Deserialize)]
struct GitHubRepository {
    #[serde(default)]
    html_url: Option<String>,
    #[serde(default)]
    clone_url: Option<String>,
    #[serde(default)]
    ssh_url: Option<String>,
    /// GitHub only (`git://...`).
    #[serde(default)]
    git_url: Option<String>,
    #[serde(default)]
    default_branch: Option<String>,
}

/// GitHub documents that a push payload lists at most this many commits.
const GITHUB_MAX_COMMITS: usize = 2048;

fn github_like(provider: Provider, body: &[u8]) -> Result<PushEvent, WebhookError> {
    let push: GitHubPush = from_json(provider, body)?;
    let repo = push.repository;
    let repo_urls = urls(
        provider,
        [repo.html_url, repo.clone_url, repo.ssh_url, repo.git_url],
    )?;
    let (branch, tag) = split_ref(push.git_ref.as_deref());
    let cut_short = push.forced
        || push.commits.len() >= GITHUB_MAX_COMMITS
        || push
            .total_commits
            .is_some_and(|total| total > push.commits.len() as u64);
    let changed_files = if cut_short {
        Vec::new()
    } else {
        files(&push.commits)
    };
    Ok(PushEvent {
        provider,
        repo_urls,
        branch,
        tag,
        changed_files,
        after: non_empty(push.after),
        default_branch: non_empty(repo.default_branch),
    })
}

/// GitLab's push and tag push payloads (project and system hooks share them).
#[derive(Deserialize)]
struct GitLabPush {
    #[serde(default)]
    object_kind: Option<String>,
    #[serde(default)]
    event_name: Option<String>,
    #[serde(rename = "ref", default)]
    git_ref: Option<String>,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    total_commits_count: Option<u64>,
    #[serde(default, deserialize_with = "nullable")]
    commits: Vec<CommitFiles>,
    #[serde(default)]
    project: Option<GitLabProject>,
    /// Deprecated by GitLab in favour of `project`, still sent.
    #[serde(default)]
    repository: Option<GitLabRepository>,
}

#[derive(Deserialize, Default)]
struct GitLabProject {
    #[serde(default)]
    web_url: Option<String>,
    #[serde(default)]
    git_http_url: Option<String>,
    #[serde(default)]
    git_ssh_url: Option<String>,
    #[serde(default)]
    http_url: Option<String>,
    #[serde(default)]
    ssh_url: Option<String>,
    #[serde(default)]
    default_branch: Option<String>,
}

#[derive(Deserialize, Default)]
struct GitLabRepository {
    #[serde(default)]
    homepage: Option<String>,
    #[serde(default)]
    git_http_url: Option<String>,
    #[serde(default)]
    git_ssh_url: Option<String>,
}

fn gitlab(body: &[u8], event: &str) -> Result<PushEvent, WebhookError> {
    let provider = Provider::GitLab;
    let push: GitLabPush = from_json(provider, body)?;
    if event == "System Hook" {
        // A system hook reports every kind of instance event under one header value; only
        // the body says whether it is a push.
        let kind = push
            .object_kind
            .as_deref()
            .or(push.event_name.as_deref())
            .unwrap_or_default();
        if !matches!(kind, "push" | "tag_push") {
            return Err(WebhookError::NotAPush {
                provider,
                event: format!("{event} ({kind})"),
            });
        }
    }
    let project = push.project.unwrap_or_default();
    let repo = push.repository.unwrap_or_default();
    let repo_urls = urls(
        provider,
        [
            project.web_url,
            project.git_http_url,
            project.git_ssh_url,
            project.http_url,
            project.ssh_url,
            repo.homepage,
            repo.git_http_url,
            repo.git_ssh_url,
        ],
    )?;
    let (branch, tag) = split_ref(push.git_ref.as_deref());
    // GitLab lists only the newest 20 commits and gives the real count separately.
    let cut_short = push
        .total_commits_count
        .is_some_and(|total| total > push.commits.len() as u64);
    let changed_files = if cut_short {
        Vec::new()
    } else {
        files(&push.commits)
    };
    Ok(PushEvent {
        provider,
        repo_urls,
        branch,
        tag,
        changed_files,
        after: non_empty(push.after),
        default_branch: non_empty(project.default_branch),
    })
}

/// Bitbucket Cloud's `repo:push` payload.
#[derive(Deserialize)]
struct BitbucketPush {
    repository: BitbucketRepository,
    push: BitbucketPushBody,
}

#[derive(Deserialize)]
struct BitbucketRepository {
    #[serde(default)]
    links: Option<BitbucketLinks>,
    /// Present in full repository objects, not in the abbreviated ones webhooks carry today.
    #[serde(default)]
    mainbranch: Option<BitbucketRef>,
}

#[derive(Deserialize)]
struct BitbucketLinks {
    #[serde(default)]
    html: Option<Link>,
    #[serde(default, deserialize_with = "nullable")]
    clone: Vec<Link>,
}

#[derive(Deserialize)]
struct Link {
    #[serde(default)]
    href: Option<String>,
}

#[derive(Deserialize)]
struct BitbucketPushBody {
    #[serde(default, deserialize_with = "nullable")]
    changes: Vec<BitbucketChange>,
}

#[derive(Deserialize)]
struct BitbucketChange {
    /// Null when the ref was deleted.
    #[serde(default)]
    new: Option<BitbucketRef>,
    #[serde(default)]
    old: Option<BitbucketRef>,
}

#[derive(Deserialize)]
struct BitbucketRef {
    /// `branch`, `tag` (or `named_branch`/`bookmark` for the retired Mercurial support).
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    target: Option<BitbucketTarget>,
}

#[derive(Deserialize)]
struct BitbucketTarget {
    #[serde(default)]
    hash: Option<String>,
}

fn bitbucket_cloud(body: &[u8]) -> Result<PushEvent, WebhookError> {
    let provider = Provider::Bitbucket;
    let push: BitbucketPush = from_json(provider, body)?;
    let links = push.repository.links;
    let (html, clone) = match links {
        Some(links) => (links.html.and_then(|l| l.href), links.clone),
        None => (None, Vec::new()),
    };
    let repo_urls = urls(
        provider,
        std::iter::once(html).chain(clone.into_iter().map(|l| l.href)),
    )?;
    // One push can update several refs; like Argo CD, only the first is reported (see report).
    let change = push.push.changes.into_iter().next();
    let (branch, tag, after) = match change {
        Some(BitbucketChange { new: Some(new), .. }) => (
            non_empty(new.name),
            new.kind.as_deref() == Some("tag"),
            new.target.and_then(|t| non_empty(t.hash)),
        ),
        // A deleted ref: still worth a refresh of the apps that tracked it.
        Some(BitbucketChange {
            new: None,
            old: Some(old),
        }) => (
            non_empty(old.name),
            old.kind.as_deref() == Some("tag"),
            None,
        ),
        _ => (None, false, None),
    };
    Ok(PushEvent {
        provider,
        repo_urls,
        branch,
        tag,
        // Bitbucket Cloud payloads carry no file lists.
        changed_files: Vec::new(),
        after,
        default_branch: push.repository.mainbranch.and_then(|b| non_empty(b.name)),
    })
}

/// Bitbucket Server's `repo:refs_changed` payload.
#[derive(Deserialize)]
struct BitbucketServerPush {
    repository: BitbucketServerRepository,
    #[serde(default, deserialize_with = "nullable")]
    changes: Vec<BitbucketServerChange>,
}

#[derive(Deserialize)]
struct BitbucketServerRepository {
    #[serde(default)]
    links: Option<BitbucketServerLinks>,
}

#[derive(Deserialize)]
struct BitbucketServerLinks {
    #[serde(default, deserialize_with = "nullable")]
    clone: Vec<Link>,
}

#[derive(Deserialize)]
struct BitbucketServerChange {
    #[serde(rename = "ref", default)]
    reference: Option<BitbucketServerRef>,
    #[serde(rename = "refId", default)]
    ref_id: Option<String>,
    #[serde(rename = "toHash", default)]
    to_hash: Option<String>,
}

#[derive(Deserialize)]
struct BitbucketServerRef {
    #[serde(default)]
    id: Option<String>,
    /// `BRANCH` or `TAG`.
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

fn bitbucket_server(body: &[u8]) -> Result<PushEvent, WebhookError> {
    let provider = Provider::BitbucketServer;
    let push: BitbucketServerPush = from_json(provider, body)?;
    let clone = push
        .repository
        .links
        .map(|links| links.clone)
        .unwrap_or_default();
    // Bitbucket Server's http and ssh clone URLs differ in path (`/scm/` prefix), so both are
    // needed for an application to match whichever it uses.
    let repo_urls = urls(provider, clone.into_iter().map(|l| l.href))?;
    // One push can update several refs; like Argo CD, only the first is reported (see report).
    let (branch, tag, after) = match push.changes.into_iter().next() {
        Some(change) => {
            let (kind, id) = match change.reference {
                Some(r) => (r.kind, r.id.or(change.ref_id)),
                None => (None, change.ref_id),
            };
            let (branch, tag) = split_ref(id.as_deref());
            (
                branch,
                tag || kind.as_deref() == Some("TAG"),
                non_empty(change.to_hash),
            )
        }
        None => (None, false, None),
    };
    Ok(PushEvent {
        provider,
        repo_urls,
        branch,
        tag,
        // Bitbucket Server payloads carry no file lists.
        changed_files: Vec::new(),
        after,
        default_branch: None,
    })
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

/// The distinct non-empty URLs, in payload order; a push naming none cannot be matched to any
/// application, which is worth a 400 that shows up in the provider's delivery log.
fn urls(
    provider: Provider,
    candidates: impl IntoIterator<Item = Option<String>>,
) -> Result<Vec<String>, WebhookError> {
    let mut out: Vec<String> = Vec::new();
    for url in candidates.into_iter().flatten() {
        let url = url.trim();
        if !url.is_empty() && !out.iter().any(|u| u == url) {
            out.push(url.to_string());
        }
    }
    if out.is_empty() {
        return Err(WebhookError::Malformed {
            provider,
            message: "the payload names no repository URL".to_string(),
        });
    }
    Ok(out)
}

/// Splits a full ref into the branch or tag name and whether it is a tag.
fn split_ref(git_ref: Option<&str>) -> (Option<String>, bool) {
    let Some(git_ref) = git_ref.map(str::trim).filter(|r| !r.is_empty()) else {
        return (None, false);
    };
    if let Some(branch) = git_ref.strip_prefix("refs/heads/") {
        (Some(branch.to_string()), false)
    } else if let Some(tag) = git_ref.strip_prefix("refs/tags/") {
        (Some(tag.to_string()), true)
    } else {
        // Kept whole so that e.g. refs/merge-requests/1/head cannot pass for a branch "1/head".
        (Some(git_ref.to_string()), false)
    }
}

/// The files the commits add, modify or remove, each once, in payload order.
fn files(commits: &[CommitFiles]) -> Vec<String> {
    let mut seen = HashSet::new();
    commits
        .iter()
        .flat_map(|c| c.added.iter().chain(&c.modified).chain(&c.removed))
        .filter(|f| seen.insert(f.as_str()))
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Matching events to applications.

/// Whether `app_repo_url` and `event_url` name the same repository: case-insensitive host,
/// ignoring scheme (https/http/ssh/git@host:path scp form), user info, a trailing `.git` and `/`.
///
/// Follows Argo CD's `GetWebURLRegex`, which is what its webhook handler matches with: the
/// port and an `ssh.`/`altssh.` host prefix (GitHub's and GitLab's SSH-over-443 hosts) are
/// ignored too, and the path is compared case-insensitively like the rest (the regex is
/// `(?i)`; GitHub and GitLab paths are case-insensitive). A false match costs one refresh; a
/// missed one leaves the app stale until the next poll.
pub fn same_repo(app_repo_url: &str, event_url: &str) -> bool {
    match (repo_key(app_repo_url), repo_key(event_url)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// `(host, path)` of a repository URL, normalised for comparison; None if it names no path.
fn repo_key(url: &str) -> Option<(String, String)> {
    let url = url.trim();
    let (authority, path) = if let Some((_scheme, rest)) = url.split_once("://") {
        rest.split_once('/').unwrap_or((rest, ""))
    } else {
        // scp-like `[user@]host:path`: a colon before any slash, as git itself decides.
        match (url.find(':'), url.find('/')) {
            (Some(colon), slash) if slash.is_none_or(|s| colon < s) => {
                (&url[..colon], &url[colon + 1..])
            }
            // No scheme at all (`host/path`); Argo CD's regex accepts it too.
            _ => url.split_once('/').unwrap_or((url, "")),
        }
    };
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(bracketed) = host.strip_prefix('[') {
        // IPv6 literal: the port comes after the bracket.
        bracketed.split(']').next().unwrap_or(bracketed)
    } else {
        host.split(':').next().unwrap_or(host)
    };
    let host = host.to_ascii_lowercase();
    let host = ["altssh.", "ssh."]
        .iter()
        .find_map(|p| host.strip_prefix(p).filter(|rest| rest.contains('.')))
        .map(str::to_string)
        .unwrap_or(host);

    let path = path.split(['?', '#']).next().unwrap_or(path);
    let path = path.trim_matches('/').to_lowercase();
    let path = path
        .strip_suffix(".git")
        .unwrap_or(path.as_str())
        .trim_end_matches('/');
    if host.is_empty() || path.is_empty() {
        return None;
    }
    Some((host, path.to_string()))
}

fn is_head(target_revision: &str) -> bool {
    target_revision.is_empty() || target_revision == "HEAD"
}

/// Whether an app tracking `target_revision` (empty or HEAD = the default branch, a branch
/// name, `refs/heads/x`) is affected by a push to `branch` when the repository's default branch
/// is `default_branch`.
///
/// Follows Argo CD's `sourceRevisionHasChanged`: HEAD matches a push to the default branch, and
/// any push when the default branch is unknown (Argo sets `touchedHead = true` for Bitbucket,
/// whose payloads do not say); `refs/heads/x` and `refs/tags/x` match `x` (Argo documents that
/// it does not tell a branch from a tag of the same name; [`PushEvent::affects_revision`]
/// does); anything else must equal the branch exactly, so a commit SHA never matches.
pub fn revision_matches(target_revision: &str, branch: &str, default_branch: Option<&str>) -> bool {
    let target = target_revision.trim();
    let branch = branch.strip_prefix("refs/heads/").unwrap_or(branch);
    if is_head(target) {
        return default_branch
            .filter(|d| !d.is_empty())
            .is_none_or(|d| d == branch);
    }
    let name = target
        .strip_prefix("refs/heads/")
        .or_else(|| target.strip_prefix("refs/tags/"))
        .unwrap_or(target);
    name == branch
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "It's a Secret to Everybody";

    fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect()
    }

    fn sign(secret: &str, body: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn all_secrets() -> WebhookSecrets {
        WebhookSecrets {
            github: Some(SECRET.into()),
            gitlab: Some(SECRET.into()),
            gitea: Some(SECRET.into()),
            gogs: Some(SECRET.into()),
            bitbucket_uuid: Some("{0e2a1c3f-3c5b-4d6a-9f1e-7b8c9d0e1f2a}".into()),
            bitbucket_server: Some(SECRET.into()),
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn signing_helper_matches_githubs_published_example() {
        // From GitHub's "Validating webhook deliveries"; guards the tests' own signer.
        assert_eq!(
            sign(SECRET, b"Hello, World!"),
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    // ---- GitHub ---------------------------------------------------------------------------

    const GITHUB_PUSH: &str = r#"{
      "ref": "refs/heads/main",
      "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
      "after": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
      "created": false, "deleted": false, "forced": false,
      "compare": "https://github.com/acme/deploy/compare/6113728f27ae...0d1a26e67d8f",
      "commits": [
        {"id": "1111", "message": "bump", "added": ["apps/web/new.yaml"],
         "removed": [], "modified": ["apps/web/deploy.yaml"]},
        {"id": "0d1a", "message": "tidy", "added": [],
         "removed": ["apps/old/gone.yaml"], "modified": ["apps/web/deploy.yaml"]}
      ],
      "head_commit": {"id": "0d1a"},
      "repository": {
        "id": 1296269, "name": "deploy", "full_name": "acme/deploy",
        "html_url": "https://github.com/acme/deploy",
        "url": "https://github.com/acme/deploy",
        "git_url": "git://github.com/acme/deploy.git",
        "ssh_url": "git@github.com:acme/deploy.git",
        "clone_url": "https://github.com/acme/deploy.git",
        "default_branch": "main", "master_branch": "main"
      },
      "pusher": {"name": "octocat"},
      "sender": {"login": "octocat"}
    }"#;

    fn github_headers(event: &str, body: &str, secret: &str) -> BTreeMap<String, String> {
        headers(&[
            ("X-GitHub-Event", event),
            ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            (
                "X-Hub-Signature-256",
                &format!("sha256={}", sign(secret, body.as_bytes())),
            ),
            ("Content-Type", "application/json"),
        ])
    }

    #[test]
    fn github_push_with_valid_signature() {
        let h = github_headers("push", GITHUB_PUSH, SECRET);
        let ev = parse(&h, GITHUB_PUSH.as_bytes(), &all_secrets()).unwrap();
        assert_eq!(
            ev,
            PushEvent {
                provider: Provider::GitHub,
                repo_urls: strings(&[
                    "https://github.com/acme/deploy",
                    "https://github.com/acme/deploy.git",
                    "git@github.com:acme/deploy.git",
                    "git://github.com/acme/deploy.git",
                ]),
                branch: Some("main".into()),
                tag: false,
                changed_files: strings(&[
                    "apps/web/new.yaml",
                    "apps/web/deploy.yaml",
                    "apps/old/gone.yaml",
                ]),
                after: Some("0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c".into()),
                default_branch: Some("main".into()),
            }
        );
    }

    #[test]
    fn github_uppercase_hex_signature_is_accepted() {
        let sig = format!(
            "sha256={}",
            sign(SECRET, GITHUB_PUSH.as_bytes()).to_uppercase()
        );
        let h = headers(&[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sig)]);
        assert!(parse(&h, GITHUB_PUSH.as_bytes(), &all_secrets()).is_ok());
    }

    #[test]
    fn github_wrong_signature_is_refused() {
        let h = github_headers("push", GITHUB_PUSH, "another secret");
        let err = parse(&h, GITHUB_PUSH.as_bytes(), &all_secrets()).unwrap_err();
        assert!(
            matches!(err, WebhookError::BadSignature(Provider::GitHub)),
            "{err:?}"
        );
    }

    #[test]
    fn github_tampered_body_is_refused() {
        let h = github_headers("push", GITHUB_PUSH, SECRET);
        let tampered = GITHUB_PUSH.replace("refs/heads/main", "refs/heads/prod");
        let err = parse(&h, tampered.as_bytes(), &all_secrets()).unwrap_err();
        assert!(
            matches!(err, WebhookError::BadSignature(Provider::GitHub)),
            "{err:?}"
        );
    }

    #[test]
    fn github_missing_or_malformed_signature_is_refused() {
        let sig = sign(SECRET, GITHUB_PUSH.as_bytes());
        let cases = [
            headers(&[("X-GitHub-Event", "push")]),
            // Right digest without the `sha256=` prefix.
            headers(&[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sig)]),
            // Not hex.
            headers(&[
                ("X-GitHub-Event", "push"),
                ("X-Hub-Signature-256", "sha256=zz"),
            ]),
            // Truncated digest.
            headers(&[
                ("X-GitHub-Event", "push"),
                ("X-Hub-Signature-256", &format!("sha256={}", &sig[..62])),
            ]),
            // Only the legacy SHA-1 header, which is not accepted.
            headers(&[
                ("X-GitHub-Event", "push"),
                (
                    "X-Hub-Signature",
                    "sha1=0123456789abcdef0123456789abcdef01234567",
                ),
            ]),
        ];
        for h in cases {
            let err = parse(&h, GITHUB_PUSH.as_bytes(), &all_secrets()).unwrap_err();
            assert!(
                matches!(err, WebhookError::BadSignature(Provider::GitHub)),
                "{h:?}: {err:?}"
            );
        }
    }

    #[test]
    fn github_unconfigured_is_refused() {
        let h = github_headers("push", GITHUB_PUSH, SECRET);
        for github in [None, Some(String::new())] {
            let secrets = WebhookSecrets {
                github,
                ..all_secrets()
            };
            let err = parse(&h, GITHUB_PUSH.as_bytes(), &secrets).unwrap_err();
            assert!(
                matches!(err, WebhookError::NotConfigured(Provider::GitHub)),
                "{err:?}"
            );
            assert_eq!(err.http_status(), 401);
        }
    }

    #[test]
    fn github_ping_is_not_a_push() {
        let body = r#"{"zen": "Design for failure.", "hook_id": 42,
            "hook": {"type": "Repository", "events": ["push"]},
            "repository": {"html_url": "https://github.com/acme/deploy"}}"#;
        let h = github_headers("ping", body, SECRET);
        let err = parse(&h, body.as_bytes(), &all_secrets()).unwrap_err();
        assert!(
            matches!(&err, WebhookError::NotAPush { provider: Provider::GitHub, event } if event == "ping"),
            "{err:?}"
        );
        assert_eq!(err.http_status(), 200);
    }

    #[test]
    fn github_ping_with_wrong_signature_is_refused() {
        // A ping is how an admin tests the secret; answering 200 unverified would mislead.
        let body = r#"{"zen": "Keep it logically awesome.", "hook_id": 42}"#;
        let h = github_headers("ping", body, "wrong");
        let err = parse(&h, body.as_bytes(), &all_secrets()).unwrap_err();
        assert!(
            matches!(err, WebhookError::BadSignature(Provider::GitHub)),
            "{err:?}"
        );
    }

    #[test]
    fn github_tag_push() {
        let body = r#"{
          "ref": "refs/tags/v1.4.0",
          "before": "0000000000000000000000000000000000000000",
          "after": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
          "created": true, "deleted": false, "forced": false, "base_ref": "refs/heads/main",
          "commits": [], "head_commit": {"id": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"},
          "repository": {"html_url": "https://github.com/acme/deploy",
            "clone_url": "https://github.com/acme/deploy.git", "default_branch": "main"}
        }"#;
        let h = github_headers("push", body, SECRET);
        let ev = parse(&h, body.as_bytes(), &all_secrets()).unwrap();
        assert_eq!(ev.branch.as_deref(), Some("v1.4.0"));
        assert!(ev.tag);
        assert!(ev.changed_files.is_empty());
        assert!(ev.affects_revision("v1.4.0"));
        assert!(ev.affects_revision("refs/tags/v1.4.0"));
        assert!(!ev.affects_revision("HEAD"));
        assert!(!ev.affects_revision("main"));
    }

    #[test]
    fn github_force_push_reports_no_file_list() {
        // The commits a force-push drops appear nowhere in the payload.
        let body = GITHUB_PUSH.replace(r#""forced": false"#, r#""forced": true"#);
        let h = github_headers("push", &body, SECRET);
        let ev = parse(&h, body.as_bytes(), &all_secrets()).unwrap();
        assert!(ev.changed_files.is_empty(), "{:?}", ev.changed_files);
        assert_eq!(ev.branch.as_deref(), Some("main"));
    }

    #[test]
    fn non_json_body_with_bad_signature_is_refused_before_parsing() {
        let body = b"payload=%7B%22ref%22%3A"; // form-encoded, as a misconfigured hook sends
        let h = headers(&[
            ("X-GitHub-Event", "push"),
            ("X-Hub-Signature-256", "sha256=00"),
        ]);
        let err = parse(&h, body, &all_secrets()).unwrap_err();
        assert!(
            matches!(err, WebhookError::BadSignature(Provider::GitHub)),
            "{err:?}"
        );
    }

    #[test]
    fn authenticated_garbage_is_malformed() {
        for body in ["payload=%7B%22ref%22%3A", r#"{"ref": "refs/heads/main"}"#] {
            let h = github_headers("push", body, SECRET);
            let err = parse(&h, body.as_bytes(), &all_secrets()).unwrap_err();
            assert!(
                matches!(
                    err,
                    WebhookError::Malformed {
                        provider: Provider::GitHub,
                        ..
                    }
                ),
                "{body}: {err:?}"
            );
            assert_eq!(err.http_status(), 400);
        }
    }

    #[test]
    fn push_naming_no_repository_url_is_malformed() {
        let body = r#"{"ref": "refs/heads/main", "repository": {"html_url": "", "default_branch": "main"}}"#;
        let h = github_headers("push", body, SECRET);
        let err = parse(&h, body.as_bytes(), &all_secrets()).unwrap_err();
        assert!(
            matches!(&err, WebhookError::Malformed { message, .. } if message.contains("no repository URL")),
            "{err:?}"
        );
    }

    // ---- GitLab ---------------------------------------------------------------------------

    const GITLAB_PUSH: &str = r#"{
      "object_kind": "push", "event_name": "push",
      "before": "95790bf891e76fee5e1747ab589903a6a1f80f22",
      "after": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
      "ref": "refs/heads/master", "ref_protected": true,
      "checkout_sha": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
      "user_id": 4, "user_name": "John Smith", "user_username": "jsmith",
      "project_id": 15,
      "project": {
        "id": 15, "name": "Diaspora",
        "web_url": "http://example.com/mike/diaspora",
        "git_ssh_url": "git@example.com:mike/diaspora.git",
        "git_http_url": "http://example.com/mike/diaspora.git",
        "namespace": "Mike", "path_with_namespace": "mike/diaspora",
        "default_branch": "master",
        "homepage": "http://example.com/mike/diaspora",
        "url": "git@example.com:mike/diaspora.git",
        "ssh_url": "git@example.com:mike/diaspora.git",
        "http_url": "http://example.com/mike/diaspora.git"
      },
      "repository": {
        "name": "Diaspora", "url": "git@example.com:mike/diaspora.git",
        "homepage": "http://example.com/mike/diaspora",
        "git_http_url": "http://example.com/mike/diaspora.git",
        "git_ssh_url": "git@example.com:mike/diaspora.git"
      },
      "commits": [
        {"id": "b6568db1bc1dcd7f8b4d5a946b0b91f9dacd7327", "message": "Update Catalan translation",
         "added": ["CHANGELOG"], "modified": ["app/controller/application.rb"], "removed": []},
        {"id": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", "message": "fixed readme",
         "added": ["CHANGELOG"], "modified": ["app/controller/application.rb"], "removed": []}
      ],
      "total_commits_count": 2
    }"#;

    fn gitlab_headers(event: &str, token: Option<&str>) -> BTreeMap<String, String> {
        let mut h = headers(&[
            ("X-Gitlab-Event", event),
            ("X-Gitlab-Instance", "https://gitlab.example.com"),
        ]);
        if let Some(token) = token {
            h.insert("x-gitlab-token".into(), token.into());
        }
        h
    }

    #[test]
    fn gitlab_push_with_valid_token() {
        let ev = parse(
            &gitlab_headers("Push Hook", Some(SECRET)),
            GITLAB_PUSH.as_bytes(),
            &all_secrets(),
        )
        .unwrap();
        assert_eq!(
            ev,
            PushEvent {
                provider: Provider::GitLab,
                repo_urls: strings(&[
                    "http://example.com/mike/diaspora",
                    "http://example.com/mike/diaspora.git",
                    "git@example.com:mike/diaspora.git",
                ]),
                branch: Some("master".into()),
                tag: false,
                changed_files: strings(&["CHANGELOG", "app/controller/application.rb"]),
                after: Some("da1560886d4f094c3e6c9ef40349f7d38b5d27d7".into()),
                default_branch: Some("master".into()),
            }
        );
    }

    #[test]
    fn gitlab_wrong_or_missing_token_is_refused() {
        // A prefix or an extension of the secret is not the secret.
        for token in [
            Some("wrong"),
            Some("It's a Secret"),
            Some("It's a Secret to Everybody!"),
            None,
        ] {
            let err = parse(
                &gitlab_headers("Push Hook", token),
                GITLAB_PUSH.as_bytes(),
                &all_secrets(),
            )
            .unwrap_err();
            assert!(
                matches!(err, WebhookError::BadSignature(Provider::GitLab)),
                "{token:?}: {err:?}"
            );
        }
    }

    #[test]
    fn gitlab_unconfigured_is_refused() {
        let secrets = WebhookSecrets {
            gitlab: None,
            ..all_secrets()
        };
        let err = parse(
            &gitlab_headers("Push Hook", Some(SECRET)),
            GITLAB_PUSH.as_bytes(),
            &secrets,
        )
        .unwrap_err();
        assert!(
            matches!(err, WebhookError::NotConfigured(Provider::GitLab)),
            "{err:?}"
        );
    }

    #[test]
    fn gitlab_other_events_are_not_pushes() {
        let body = r#"{"object_kind": "merge_request", "project": {"web_url": "http://example.com/mike/diaspora"}}"#;
        let err = parse(
            &gitlab_headers("Merge Request Hook", Some(SECRET)),
            body.as_bytes(),
            &all_secrets(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, WebhookError::NotAPush { provider: Provider::GitLab, event } if event == "Merge Request Hook"),
            "{err:?}"
        );
        let system = r#"{"event_name": "project_create", "name": "x"}"#;
        let err = parse(
            &gitlab_headers("System Hook", Some(SECRET)),
            system.as_bytes(),
            &all_secrets(),
        )
        .unwrap_err();
        assert!(matches!(err, WebhookError::NotAPush { .. }), "{err:?}");
    }

    #[test]
    fn gitlab_system_hook_push_is_a_push() {
        let body = GITLAB_PUSH.replace(r#""object_kind": "push", "#, "");
        let ev = parse(
            &gitlab_headers("System Hook", Some(SECRET)),
            body.as_bytes(),
            &all_secrets(),
        )
        .unwrap();
        assert_eq!(ev.branch.as_deref(), Some("master"));
    }

    #[test]
    fn gitlab_tag_push() {
        let body = r#"{
          "object_kind": "tag_push", "event_name": "tag_push",
          "before": "0000000000000000000000000000000000000000",
          "after": "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
          "ref": "refs/tags/v1.0.0", "ref_protected": true,
          "checkout_sha": "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
          "project": {"web_url": "http://example.com/jsmith/example",
            "git_ssh_url": "git@example.com:jsmith/example.git",
            "git_http_url": "http://example.com/jsmith/example.git", "default_branch": "master"},
          "commits": [], "total_commits_count": 0
        }"#;
        let ev = parse(
            &gitlab_headers("Tag Push Hook", Some(SECRET)),
            body.as_bytes(),
            &all_secrets(),
        )
        .unwrap();
        assert_eq!(ev.branch.as_deref(), Some("v1.0.0"));
        assert!(ev.tag);
        assert_eq!(ev.repo_urls.len(), 3);
    }

    #[test]
    fn gitlab_truncated_commit_list_reports_no_file_list() {
        let body = GITLAB_PUSH.replace(
            r#""total_commits_count": 2"#,
            r#""total_commits_count": 31"#,
        );
        let ev = parse(
            &gitlab_headers("Push Hook", Some(SECRET)),
            body.as_bytes(),
            &all_secrets(),
        )
        .unwrap();
        assert!(ev.changed_files.is_empty(), "{:?}", ev.changed_files);
    }

    // ---- Gitea ----------------------------------------------------------------------------

    const GITEA_PUSH: &str = r#"{
      "ref": "refs/heads/develop",
      "before": "28e1879d029cb852e4844d9c718537df08844e03",
      "after": "bffeb74224043ba2feb48d137756c8a9331c449a",
      "compare_url": "http://localhost:3000/gitea/webhooks/compare/28e1879d...bffeb742",
      "commits": [
        {"id": "bffeb74224043ba2feb48d137756c8a9331c449a", "message": "Webhooks Yay!",
         "url": "http://localhost:3000/gitea/webhooks/commit/bffeb742",
         "author": {"name": "Gitea", "email": "someone@gitea.io", "username": "gitea"},
         "added": ["k8s/service.yaml"], "removed": [], "modified": ["k8s/deploy.yaml"],
         "timestamp": "2017-03-13T13:52:11-04:00"}
      ],
      "total_commits": 1,
      "repository": {
        "id": 140, "name": "webhooks", "full_name": "gitea/webhooks",
        "html_url": "http://localhost:3000/gitea/webhooks",
        "ssh_url": "ssh://gitea@localhost:2222/gitea/webhooks.git",
        "clone_url": "http://localhost:3000/gitea/webhooks.git",
        "default_branch": "master"
      },
      "pusher": {"login": "gitea"}, "sender": {"login": "gitea"}
    }"#;

    fn gitea_headers(event: &str, body: &str, secret: &str) -> BTreeMap<String, String> {
        let sig = sign(secret, body.as_bytes());
        // Gitea sends the GitHub and Gogs headers too; the GitHub-style signature here is
        // deliberately wrong to prove the Gitea one is what is checked.
        headers(&[
            ("X-GitHub-Event", event),
            ("X-Gogs-Event", event),
            ("X-Gitea-Event", event),
            ("X-Gitea-Delivery", "f6266f16-1bf3-46a5-9ea4-602e06ead473"),
            ("X-Hub-Signature-256", "sha256=00"),
            ("X-Gitea-Signature", &sig),
        ])
    }

    #[test]
    fn gitea_push_with_valid_signature() {
        let ev = parse(
            &gitea_headers("push", GITEA_PUSH, SECRET),
            GITEA_PUSH.as_bytes(),
            &all_secrets(),
        )
        .unwrap();
        assert_eq!(
            ev,
            PushEvent {
                provider: Provider::Gitea,
                repo_urls: strings(&[
                    "http://localhost:3000/gitea/webhooks",
                    "http://localhost:3000/gitea/webhooks.git",
                    "ssh://gitea@localhost:2222/gitea/webhooks.git",
                ]),
                branch: Some("develop".into()),
                tag: false,
                changed_files: strings(&["k8s/service.yaml", "k8s/deploy.yaml"]),
                after: Some("bffeb74224043ba2feb48d137756c8a9331c449a".into()),
                default_branch: Some("master".into()),
            }
        );
    }

    #[test]
    fn gitea_wrong_or_missing_signature_is_refused() {
        let wrong = gitea_headers("push", GITEA_PUSH, "wrong");
        let mut missing = gitea_headers("push", GITEA_PUSH, SECRET);
        missing.remove("x-gitea-signature");
        for h in [wrong, missing] {
            let err = parse(&h, GITEA_PUSH.as_bytes(), &all_secrets()).unwrap_err();
            assert!(
                matches!(err, WebhookError::BadSignature(Provider::Gitea)),
                "{err:?}"
            );
        }
    }

    #[test]
    fn gitea_unconfigured_is_refused_and_falls_back_to_the_gogs_secret() {
        let h = gitea_headers("push", GITEA_PUSH, SECRET);
        let neither = WebhookSecrets {
            gitea: None,
            gogs: None,
            ..all_secrets()
        };
        let err = parse(&h, GITEA_PUSH.as_bytes(), &neither).unwrap_err();
        assert!(
            matches!(err, WebhookError::NotConfigured(Provider::Gitea)),
            "{err:?}"
        );

        let gogs_only = WebhookSecrets {
            gitea: None,
            ..all_secrets()
        };
        assert_eq!(
            parse(&h, GITEA_PUSH.as_bytes(), &gogs_only)
                .unwrap()
                .provider,
            Provider::Gitea
        );
        // And the Gitea secret wins when both are set.
        let both = WebhookSecrets {
            gitea: Some("gitea's own".into()),
            ..all_secrets()
        };
        let err = parse(&h, GITEA_PUSH.as_bytes(), &both).unwrap_err();
        assert!(
            matches!(err, WebhookError::BadSignature(Provider::Gitea)),
            "{err:?}"
        );
    }

    #[test]
    fn gitea_create_event_is_not_a_push() {
        let body = r#"{"ref": "v1.0", "ref_type": "tag", "repository": {"html_url": "http://localhost:3000/gitea/webhooks"}}"#;
        let err = parse(
            &gitea_headers("create", body, SECRET),
            body.as_bytes(),
            &all_secrets(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, WebhookError::NotAPush { provider: Provider::Gitea, event } if event == "create"),
            "{err:?}"
        );
    }

    #[test]
    fn gitea_tag_push_and_truncated_commits() {
        let body = GITEA_PUSH
            .replace("refs/heads/develop", "refs/tags/v2.0.0")
            .replace(r#""total_commits": 1"#, r#""total_commits": 12"#);
        let ev = parse(
            &gitea_headers("push", &body, SECRET),
            body.as_bytes(),
            &all_secrets(),
        )
        .unwrap();
        assert_eq!(ev.branch.as_deref(), Some("v2.0.0"));
        assert!(ev.tag);
        assert!(ev.changed_files.is_empty(), "{:?}", ev.changed_files);
    }

    // ---- Gogs -----------------------------------------------------------------------------

    const GOGS_PUSH: &str = r#"{
      "ref": "refs/heads/master",
      "before": "4b2ee6d3ba6c77db5f1b1a4e4b4e2d5c9f2c3e11",
      "after": "ef98ba8ad9a98c4e1ee6ca8ef06adf7d18c2a8d4",
      "compare_url": "http://gogs.example.com/ops/infra/compare/4b2ee6d3...ef98ba8a",
      "commits": [
        {"id": "ef98ba8ad9a98c4e1ee6ca8ef06adf7d18c2a8d4", "message": "scale up\n",
         "url": "http://gogs.example.com/ops/infra/commit/ef98ba8a",
         "author": {"name": "ops", "email": "ops@example.com", "username": "ops"},
         "added": [], "removed": [], "modified": ["prod/values.yaml"],
         "timestamp": "2024-02-01T10:00:00Z"}
      ],
      "repository": {
        "id": 7, "name": "infra", "full_name": "ops/infra",
        "html_url": "http://gogs.example.com/ops/infra",
        "ssh_url": "git@gogs.example.com:ops/infra.git",
        "clone_url": "http://gogs.example.com/ops/infra.git",
        "default_branch": "master"
      },
      "pusher": {"username": "ops"}, "sender": {"username": "ops"}
    }"#;

    fn gogs_headers(event: &str, body: &str, secret: &str) -> BTreeMap<String, String> {
        headers(&[
            ("X-Gogs-Event", event),
            ("X-Gogs-Delivery", "b8a7a4ac-4d0a-4a33-8c5f-2a4f0e3c4e71"),
            ("X-Gogs-Signature", &sign(secret, body.as_bytes())),
        ])
    }

    #[test]
    fn gogs_push_with_valid_signature() {
        let ev = parse(
            &gogs_headers("push", GOGS_PUSH, SECRET),
            GOGS_PUSH.as_bytes(),
            &all_secrets(),
        )
        .unwrap();
        assert_eq!(
            ev,
            PushEvent {
                provider: Provider::Gogs,
                repo_urls: strings(&[
                    "http://gogs.example.com/ops/infra",
                    "http://gogs.example.com/ops/infra.git",
                    "git@gogs.example.com:ops/infra.git",
                ]),
                branch: Some("master".into()),
                tag: false,
                changed_files: strings(&["prod/values.yaml"]),
                after: Some("ef98ba8ad9a98c4e1ee6ca8ef06adf7d18c2a8d4".into()),
                default_branch: Some("master".into()),
            }
        );
    }

    #[test]
    fn gogs_wrong_missing_and_unconfigured() {
        let err = parse(
            &gogs_headers("push", GOGS_PUSH, "wrong"),
            GOGS_PUSH.as_bytes(),
            &all_secrets(),
        )
        .unwrap_err();
        assert!(
            matches!(err, WebhookError::BadSignature(Provider::Gogs)),
            "{err:?}"
        );

        let mut missing = gogs_headers("push", GOGS_PUSH, SECRET);
        missing.remove("x-gogs-signature");
        let err = parse(&missing, GOGS_PUSH.as_bytes(), &all_secrets()).unwrap_err();
        assert!(
            matches!(err, WebhookError::BadSignature(Provider::Gogs)),
            "{err:?}"
        );

        // The Gitea secret does not stand in for Gogs' (the fallback is one-way).
        let secrets = WebhookSecrets {
            gogs: None,
            ..all_secrets()
        };
        let err = parse(
            &gogs_headers("push", GOGS_PUSH, SECRET),
            GOGS_PUSH.as_bytes(),
            &secrets,
        )
        .unwrap_err();
        assert!(
            matches!(err, WebhookError::NotConfigured(Provider::Gogs)),
            "{err:?}"
        );
    }

    #[test]
    fn gogs_other_event_is_not_a_push_and_tag_push_is() {
        let body = r#"{"ref": "feature", "ref_type": "branch", "repository": {"html_url": "http://gogs.example.com/ops/infra"}}"#;
        let err = parse(
            &gogs_headers("create", body, SECRET),
            body.as_bytes(),
            &all_secrets(),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                WebhookError::NotAPush {
                    provider: Provider::Gogs,
                    ..
                }
            ),
            "{err:?}"
        );

        let tag = GOGS_PUSH.replace("refs/heads/master", "refs/tags/r42");
        let ev = parse(
            &gogs_headers("push", &tag, SECRET),
            tag.as_bytes(),
            &all_secrets(),
        )
        .unwrap();
        assert_eq!((ev.branch.as_deref(), ev.tag), (Some("r42"), true));
    }

    // ---- Bitbucket Cloud ------------------------------------------------------------------

    const BITBUCKET_PUSH: &str = r#"{
      "actor": {"type": "user", "display_name": "Ann", "uuid": "{d2b4fd6a-6b4a-4b1e-9a1c-1f6f0b0a3d11}"},
      "repository": {
        "type": "repository", "name": "gitops", "full_name": "acme/gitops",
        "uuid": "{7b2f1d4e-1111-4c2b-8a1e-3e1f2a3b4c5d}", "scm": "git", "is_private": true,
        "links": {
          "self": {"href": "https://api.bitbucket.org/2.0/repositories/acme/gitops"},
          "html": {"href": "https://bitbucket.org/acme/gitops"},
          "avatar": {"href": "https://bytebucket.org/ravatar/%7B7b2f1d4e%7D"}
        }
      },
      "push": {
        "changes": [{
          "new": {"type": "branch", "name": "staging",
                  "target": {"type": "commit", "hash": "709d658dc5b6d6afcd46049c2f332ee3f515a67d"}},
          "old": {"type": "branch", "name": "staging",
                  "target": {"type": "commit", "hash": "1e65c05c1d5171631d92438a13901ca7dae9618c"}},
          "created": false, "forced": false, "closed": false, "truncated": false,
          "commits": [{"hash": "709d658dc5b6d6afcd46049c2f332ee3f515a67d", "type": "commit"}]
        }]
      }
    }"#;

    fn bitbucket_headers(event: &str, uuid: Option<&str>) -> BTreeMap<String, String> {
        let mut h = headers(&[
            ("X-Event-Key", event),
            ("X-Request-UUID", "3f4e5d6c-aaaa-bbbb-cccc-1234567890ab"),
            ("X-Attempt-Number", "1"),
        ]);
        if let Some(uuid) = uuid {
            h.insert("x-hook-uuid".into(), uuid.into());
        }
        h
    }

    #[test]
    fn bitbucket_push_with_matching_uuid() {
        // Configured with braces, sent without and in upper case: still the same UUID.
        let h = bitbucket_headers("repo:push", Some("0E2A1C3F-3C5B-4D6A-9F1E-7B8C9D0E1F2A"));
        let ev = parse(&h, BITBUCKET_PUSH.as_bytes(), &all_secrets()).unwrap();
        assert_eq!(
            ev,
            PushEvent {
                provider: Provider::Bitbucket,
                repo_urls: strings(&["https://bitbucket.org/acme/gitops"]),
                branch: Some("staging".into()),
                tag: false,
                changed_files: vec![],
                after: Some("709d658dc5b6d6afcd46049c2f332ee3f515a67d".into()),
                default_branch: None,
            }
        );
        assert!(
            ev.affects_revision("HEAD"),
            "default branch unknown: HEAD may be staging"
        );
    }

    #[test]
    fn bitbucket_wrong_missing_and_unconfigured() {
        let wrong = bitbucket_headers("repo:push", Some("{0e2a1c3f-3c5b-4d6a-9f1e-7b8c9d0e1f2b}"));
        let err = parse(&wrong, BITBUCKET_PUSH.as_bytes(), &all_secrets()).unwrap_err();
        assert!(
            matches!(err, WebhookError::BadSignature(Provider::Bitbucket)),
            "{err:?}"
        );

        // Without X-Hook-UUID, `repo:push` still identifies Bitbucket Cloud.
        let missing = bitbucket_headers("repo:push", None);
        let err = parse(&missing, BITBUCKET_PUSH.as_bytes(), &all_secrets()).unwrap_err();
        assert!(
            matches!(err, WebhookError::BadSignature(Provider::Bitbucket)),
            "{err:?}"
        );

        let secrets = WebhookSecrets {
            bitbucket_uuid: None,
            ..all_secrets()
        };
        let h = bitbucket_headers("repo:push", Some("{0e2a1c3f-3c5b-4d6a-9f1e-7b8c9d0e1f2a}"));
        let err = parse(&h, BITBUCKET_PUSH.as_bytes(), &secrets).unwrap_err();
        assert!(
            matches!(err, WebhookError::NotConfigured(Provider::Bitbucket)),
            "{err:?}"
        );
    }

    #[test]
    fn bitbucket_other_event_is_not_a_push_and_tag_push_is() {
        let uuid = Some("{0e2a1c3f-3c5b-4d6a-9f1e-7b8c9d0e1f2a}");
        let body = r#"{"pullrequest": {"id": 1}, "repository": {"links": {"html": {"href": "https://bitbucket.org/acme/gitops"}}}}"#;
        let err = parse(
            &bitbucket_headers("pullrequest:created", uuid),
            body.as_bytes(),
            &all_secrets(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, WebhookError::NotAPush { provider: Provider::Bitbucket, event } if event == "pullrequest:created"),
            "{err:?}"
        );

        // A new tag: `old` is null.
        let tag = r#"{
          "repository": {"links": {"html": {"href": "https://bitbucket.org/acme/gitops"}}},
          "push": {"changes": [{
            "new": {"type": "tag", "name": "v3",
                    "target": {"type": "commit", "hash": "709d658dc5b6d6afcd46049c2f332ee3f515a67d"}},
            "old": null, "created": true, "forced": false, "closed": false
          }]}
        }"#;
        let ev = parse(
            &bitbucket_headers("repo:push", uuid),
            tag.as_bytes(),
            &all_secrets(),
        )
        .unwrap();
        assert_eq!((ev.branch.as_deref(), ev.tag), (Some("v3"), true));
        assert_eq!(
            ev.after.as_deref(),
            Some("709d658dc5b6d6afcd46049c2f332ee3f515a67d")
        );
    }

    // ---- Bitbucket Server -----------------------------------------------------------------

    const BITBUCKET_SERVER_PUSH: &str = r#"{
      "eventKey": "repo:refs_changed",
      "date": "2019-06-17T19:37:57+1000",
      "actor": {"name": "john", "emailAddress": "john@example.com", "id": 500, "slug": "john"},
      "repository": {
        "slug": "test-repo", "id": 656, "name": "test-repo", "scmId": "git",
        "project": {"key": "MYPROJECT", "id": 389, "name": "My Project"},
        "links": {
          "clone": [
            {"href": "ssh://git@bitbucketserver:7999/myproject/test-repo.git", "name": "ssh"},
            {"href": "https://bitbucketserver/scm/myproject/test-repo.git", "name": "http"}
          ],
          "self": [{"href": "https://bitbucketserver/projects/MYPROJECT/repos/test-repo/browse"}]
        }
      },
      "changes": [{
        "ref": {"id": "refs/heads/master", "displayId": "master", "type": "BRANCH"},
        "refId": "refs/heads/master",
        "fromHash": "f09c8889a2d234985734958795a31589cd91ffda",
        "toHash": "22671f0349857934857983457983475ec39f196b",
        "type": "UPDATE"
      }]
    }"#;

    fn bitbucket_server_headers(event: &str, body: &str, secret: &str) -> BTreeMap<String, String> {
        headers(&[
            ("X-Event-Key", event),
            ("X-Request-Id", "d5d6d0a3-5b5e-4d0e-bc0e-1c8a1d7a4f10"),
            (
                "X-Hub-Signature",
                &format!("sha256={}", sign(secret, body.as_bytes())),
            ),
        ])
    }

    #[test]
    fn bitbucket_server_push_with_valid_signature() {
        let h = bitbucket_server_headers("repo:refs_changed", BITBUCKET_SERVER_PUSH, SECRET);
        let ev = parse(&h, BITBUCKET_SERVER_PUSH.as_bytes(), &all_secrets()).unwrap();
        assert_eq!(
            ev,
            PushEvent {
                provider: Provider::BitbucketServer,
                repo_urls: strings(&[
                    "ssh://git@bitbucketserver:7999/myproject/test-repo.git",
                    "https://bitbucketserver/scm/myproject/test-repo.git",
                ]),
                branch: Some("master".into()),
                tag: false,
                changed_files: vec![],
                after: Some("22671f0349857934857983457983475ec39f196b".into()),
                default_branch: None,
            }
        );
    }

    #[test]
    fn bitbucket_server_wrong_missing_and_unconfigured() {
        let wrong = bitbucket_server_headers("repo:refs_changed", BITBUCKET_SERVER_PUSH, "wrong");
        let mut missing =
            bitbucket_server_headers("repo:refs_changed", BITBUCKET_SERVER_PUSH, SECRET);
        missing.remove("x-hub-signature");
        for h in [wrong, missing] {
            let err = parse(&h, BITBUCKET_SERVER_PUSH.as_bytes(), &all_secrets()).unwrap_err();
            assert!(
                matches!(err, WebhookError::BadSignature(Provider::BitbucketServer)),
                "{err:?}"
            );
        }
        let secrets = WebhookSecrets {
            bitbucket_server: Some(String::new()),
            ..all_secrets()
        };
        let h = bitbucket_server_headers("repo:refs_changed", BITBUCKET_SERVER_PUSH, SECRET);
        let err = parse(&h, BITBUCKET_SERVER_PUSH.as_bytes(), &secrets).unwrap_err();
        assert!(
            matches!(err, WebhookError::NotConfigured(Provider::BitbucketServer)),
            "{err:?}"
        );
    }

    #[test]
    fn bitbucket_server_ping_is_not_a_push_and_tag_push_is() {
        let body = r#"{"test": true}"#;
        let err = parse(
            &bitbucket_server_headers("diagnostics:ping", body, SECRET),
            body.as_bytes(),
            &all_secrets(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, WebhookError::NotAPush { provider: Provider::BitbucketServer, event } if event == "diagnostics:ping"),
            "{err:?}"
        );

        let tag = BITBUCKET_SERVER_PUSH
            .replace(
                r#""ref": {"id": "refs/heads/master", "displayId": "master", "type": "BRANCH"}"#,
                r#""ref": {"id": "refs/tags/release-7", "displayId": "release-7", "type": "TAG"}"#,
            )
            .replace(
                r#""refId": "refs/heads/master""#,
                r#""refId": "refs/tags/release-7""#,
            );
        let ev = parse(
            &bitbucket_server_headers("repo:refs_changed", &tag, SECRET),
            tag.as_bytes(),
            &all_secrets(),
        )
        .unwrap();
        assert_eq!((ev.branch.as_deref(), ev.tag), (Some("release-7"), true));
    }

    // ---- Shared ---------------------------------------------------------------------------

    #[test]
    fn unknown_provider() {
        let h = headers(&[("Content-Type", "application/json"), ("X-GitHub-Event", "")]);
        let err = parse(&h, b"{}", &all_secrets()).unwrap_err();
        assert!(matches!(err, WebhookError::UnknownProvider), "{err:?}");
        assert_eq!(err.http_status(), 400);
    }

    #[test]
    fn secrets_debug_does_not_print_values() {
        let shown = format!("{:?}", all_secrets());
        assert!(!shown.contains("Secret to Everybody"), "{shown}");
        assert!(!shown.contains("0e2a1c3f"), "{shown}");
        assert!(shown.contains("github: <redacted>"), "{shown}");
        let unset = format!("{:?}", WebhookSecrets::default());
        assert!(unset.contains("gitlab: <unset>"), "{unset}");
    }

    #[test]
    fn tokens_equal_is_exact() {
        assert!(tokens_equal("abc", "abc"));
        assert!(!tokens_equal("abc", "abd"));
        assert!(!tokens_equal("ab", "abc"));
        assert!(!tokens_equal("", "abc"));
    }

    #[test]
    fn same_repo_table() {
        let same = [
            (
                "https://github.com/acme/deploy",
                "https://github.com/acme/deploy",
            ),
            (
                "https://github.com/acme/deploy.git",
                "https://github.com/acme/deploy",
            ),
            (
                "https://github.com/acme/deploy/",
                "https://github.com/acme/deploy.git",
            ),
            (
                "git@github.com:acme/deploy.git",
                "https://github.com/acme/deploy",
            ),
            (
                "ssh://git@github.com/acme/deploy.git",
                "https://github.com/acme/deploy",
            ),
            (
                "ssh://git@ssh.github.com:443/acme/deploy.git",
                "https://github.com/acme/deploy",
            ),
            (
                "ssh://git@altssh.gitlab.com:443/acme/deploy.git",
                "https://gitlab.com/acme/deploy",
            ),
            (
                "http://GitHub.COM/acme/deploy",
                "https://github.com/acme/deploy",
            ),
            (
                "https://github.com/Acme/Deploy",
                "https://github.com/acme/deploy",
            ),
            (
                "https://user:token@github.com/acme/deploy",
                "https://github.com/acme/deploy",
            ),
            (
                "git://github.com/acme/deploy.git",
                "https://github.com/acme/deploy",
            ),
            ("github.com/acme/deploy", "https://github.com/acme/deploy"),
            (
                "https://gitlab.example.com:8443/group/sub/app.git",
                "git@gitlab.example.com:group/sub/app.git",
            ),
            (
                "ssh://git@bitbucketserver:7999/myproject/test-repo.git",
                "ssh://git@bitbucketserver:7999/myproject/test-repo.git",
            ),
            (
                "https://bitbucketserver/scm/myproject/test-repo.git",
                "https://bitbucketserver/scm/myproject/test-repo.git",
            ),
            ("ssh://git@[::1]:2222/a/b.git", "http://[::1]/a/b"),
            (
                "  https://github.com/acme/deploy  ",
                "https://github.com/acme/deploy",
            ),
        ];
        for (a, b) in same {
            assert!(same_repo(a, b), "{a} vs {b} should match");
            assert!(same_repo(b, a), "{b} vs {a} should match");
        }
        let different = [
            (
                "https://github.com/acme/deploy",
                "https://github.com/acme/deploy-prod",
            ),
            (
                "https://github.com/acme/deploy",
                "https://gitlab.com/acme/deploy",
            ),
            (
                "https://github.com/acme/deploy",
                "https://github.com/other/deploy",
            ),
            (
                "git@github.com:acme/deploy.git",
                "git@github.com:acme/deploy2.git",
            ),
            (
                "https://github.com/acme/deploy",
                "https://github.com/acme/deploy/sub",
            ),
            (
                "https://github.com/acme/deploy",
                "https://github.com.evil.example/acme/deploy",
            ),
            (
                "https://bitbucketserver/scm/myproject/test-repo.git",
                "ssh://git@bitbucketserver:7999/myproject/test-repo.git",
            ),
            ("https://github.com/", "https://github.com/"),
            ("", ""),
            ("https://github.com/acme/deploy", ""),
        ];
        for (a, b) in different {
            assert!(!same_repo(a, b), "{a} vs {b} should not match");
        }
    }

    #[test]
    fn revision_matches_table() {
        let cases: [(&str, &str, Option<&str>, bool); 18] = [
            // HEAD / empty follow the default branch...
            ("HEAD", "main", Some("main"), true),
            ("", "main", Some("main"), true),
            ("HEAD", "feature", Some("main"), false),
            ("", "feature", Some("main"), false),
            // ...or match anything when it is unknown (Argo: touchedHead = true).
            ("HEAD", "feature", None, true),
            ("", "anything", None, true),
            ("HEAD", "feature", Some(""), true),
            // Branch names, bare or qualified.
            ("main", "main", None, true),
            ("main", "main", Some("trunk"), true),
            ("refs/heads/main", "main", Some("main"), true),
            ("refs/heads/release/1.2", "release/1.2", None, true),
            ("release/1.2", "release/1.2", None, true),
            ("main", "develop", Some("main"), false),
            ("Main", "main", None, false),
            ("main", "refs/heads/main", None, true),
            // refs/tags/x matches a push of x, as in Argo (see affects_revision).
            ("refs/tags/v1", "v1", None, true),
            // A pinned commit never matches a push.
            (
                "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
                "main",
                Some("main"),
                false,
            ),
            ("1.2", "release/1.2", None, false),
        ];
        for (target, branch, default, want) in cases {
            assert_eq!(
                revision_matches(target, branch, default),
                want,
                "target {target:?}, branch {branch:?}, default {default:?}"
            );
        }
    }

    #[test]
    fn affects_revision_tells_tags_from_branches() {
        let branch_push = PushEvent {
            provider: Provider::GitHub,
            repo_urls: strings(&["https://github.com/acme/deploy"]),
            branch: Some("v1".into()),
            tag: false,
            changed_files: vec![],
            after: None,
            default_branch: Some("main".into()),
        };
        assert!(branch_push.affects_revision("v1"));
        assert!(branch_push.affects_revision("refs/heads/v1"));
        assert!(!branch_push.affects_revision("refs/tags/v1"));
        assert!(!branch_push.affects_revision("HEAD"));

        let main_push = PushEvent {
            branch: Some("main".into()),
            ..branch_push.clone()
        };
        assert!(main_push.affects_revision(""));
        assert!(main_push.affects_revision("HEAD"));

        let tag_push = PushEvent {
            tag: true,
            default_branch: None,
            ..branch_push.clone()
        };
        assert!(tag_push.affects_revision("v1"));
        assert!(tag_push.affects_revision("refs/tags/v1"));
        assert!(!tag_push.affects_revision("refs/heads/v1"));
        assert!(
            !tag_push.affects_revision("HEAD"),
            "a tag push never moves HEAD"
        );
        assert!(!tag_push.affects_revision("v2"));

        let unknown_ref = PushEvent {
            branch: None,
            ..branch_push
        };
        assert!(unknown_ref.affects_revision("anything"));
    }

    #[test]
    fn split_ref_keeps_unknown_refs_whole() {
        assert_eq!(
            split_ref(Some("refs/heads/a/b")),
            (Some("a/b".into()), false)
        );
        assert_eq!(split_ref(Some("refs/tags/v1")), (Some("v1".into()), true));
        assert_eq!(
            split_ref(Some("refs/merge-requests/1/head")),
            (Some("refs/merge-requests/1/head".into()), false)
        );
        assert_eq!(split_ref(Some("")), (None, false));
        assert_eq!(split_ref(None), (None, false));
    }
}

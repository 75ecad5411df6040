//! source: fetches Git repositories and Helm charts into a shared local cache, one mirror per repository.
//!
//! Layout under the cache root:
//! - `repos/<key>/`: a bare mirror per repository URL, fetched shallowly
//!   (`--depth 1` of the wanted ref or commit) where the server allows it;
//! - `trees/<key>/<sha>/`: the files of one commit, shared read-only by every
//!   app using it; written to a temporary directory and renamed, so a tree
//!   that exists is complete;
//! - `charts/<key>/<chart>/<version>/`: an unpacked Helm chart;
//! - `work/<key>-<writer>/`: a working clone per writer (image automation),
//!   reset to the remote before each change;
//! - `tmp/`: private (0700) scratch space for key files and the like, removed
//!   after each command.
//!
//! `<key>` is the first 16 hex digits of the SHA-256 of the normalised URL.
//! The `git` and `helm` command-line tools do the work; credentials reach them
//! through the environment, 0600 files or stdin, never their arguments.

mod creds;
mod error;
mod exec;
mod git;
mod helm;
mod url;
mod write;

pub use creds::{RepoCredentials, RepoSecret, SecretKind, credentials_for};
pub use error::SourceError;
pub use url::{same_repo, scrub_url};
pub use write::{CommitAuthor, PushOutcome, Worktree};

use exec::{Redactor, run, run_raw};
use git::{GitAuth, RemoteRefs, base_command, check_revision, is_full_sha, is_short_sha};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use url::{RepoUrl, cache_key};

/// How the cache runs its tools.
#[derive(Clone)]
pub struct SourceOptions {
    /// The git binary.
    pub git: PathBuf,
    /// Bound on commands that only ask (ls-remote) or work locally.
    pub timeout: Duration,
    /// Bound on commands that download (git fetch, helm repo add / pull).
    pub fetch_timeout: Duration,
    /// How long a Helm version range (or "latest") stays resolved to the same
    /// version before the repository index is read again.
    pub helm_resolve_ttl: Duration,
    /// Extra `key=value` git configuration for every git command (proxies,
    /// `protocol.version`, ...).
    pub git_config: Vec<String>,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            git: PathBuf::from("git"),
            timeout: Duration::from_secs(60),
            fetch_timeout: Duration::from_secs(300),
            helm_resolve_ttl: Duration::from_secs(180),
            git_config: Vec::new(),
        }
    }
}

impl std::fmt::Debug for SourceOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // git_config may name a proxy with credentials in its URL.
        let config: Vec<String> = self.git_config.iter().map(|c| scrub_url(c)).collect();
        f.debug_struct("SourceOptions")
            .field("git", &self.git)
            .field("timeout", &self.timeout)
            .field("fetch_timeout", &self.fetch_timeout)
            .field("helm_resolve_ttl", &self.helm_resolve_ttl)
            .field("git_config", &config)
            .finish()
    }
}

/// The shared cache of repositories and charts. Cheap to share behind an `Arc`;
/// every method takes `&self`.
pub struct SourceCache {
    root: PathBuf,
    /// This instance's scratch directory under `tmp/`.
    tmp: PathBuf,
    opts: SourceOptions,
    /// One lock per repository (`git:<key>`, `helm:<key>`): fetches into one
    /// mirror run one at a time; different repositories run in parallel.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Per repository key: the ref each recently resolved commit came from,
    /// so checkout can fetch that ref shallowly instead of asking for a bare
    /// commit, which some servers refuse.
    hints: Mutex<HashMap<String, HashMap<String, String>>>,
    helm_versions: Mutex<HashMap<ChartAsked, (String, Instant)>>,
    /// (repository key, commit, path) -> the path's tree id: immutable, so asked of git once
    /// (every compare asks; two git processes per app per pass before).
    tree_ids: Mutex<lru::LruCache<(String, String, String), Option<String>>>,
}

impl std::fmt::Debug for SourceCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceCache")
            .field("root", &self.root)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// Tree ids remembered: a few per app.
const TREE_IDS: std::num::NonZeroUsize = std::num::NonZeroUsize::new(16_384).unwrap();

/// (repository key, chart, version asked): what a Helm version was resolved for.
type ChartAsked = (String, String, String);

/// Refs kept per repository to guide shallow fetches.
const MAX_HINTS: usize = 256;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps hold plain data that stays consistent even if a holder panicked.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SourceCache {
    /// A cache rooted at `root` (created if missing), with default options.
    pub fn new(root: PathBuf) -> Result<SourceCache, SourceError> {
        SourceCache::with_options(root, SourceOptions::default())
    }

    pub fn with_options(root: PathBuf, opts: SourceOptions) -> Result<SourceCache, SourceError> {
        for d in ["repos", "trees", "charts", "tmp"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(|e| SourceError::io_at("creating", &p, e))?;
        }
        let tmp_parent = root.join("tmp");
        std::fs::set_permissions(&tmp_parent, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| SourceError::io_at("securing", &tmp_parent, e))?;
        sweep_stale_tmp(&tmp_parent);
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{}-", std::process::id()))
            .tempdir_in(&tmp_parent)
            .map_err(|e| SourceError::io_at("creating a directory in", &tmp_parent, e))?
            .keep();
        Ok(SourceCache {
            root,
            tmp,
            opts,
            locks: Mutex::new(HashMap::new()),
            hints: Mutex::new(HashMap::new()),
            helm_versions: Mutex::new(HashMap::new()),
            tree_ids: Mutex::new(lru::LruCache::new(TREE_IDS)),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn options(&self) -> &SourceOptions {
        &self.opts
    }

    fn lock_for(&self, name: String) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.locks).entry(name).or_default().clone()
    }

    fn mirror_dir(&self, key: &str) -> PathBuf {
        self.root.join("repos").join(key)
    }

    fn remember(&self, key: &str, refname: &str, sha: &str) {
        let mut hints = lock(&self.hints);
        let refs = hints.entry(key.to_string()).or_default();
        if refs.len() >= MAX_HINTS && !refs.contains_key(refname) {
            refs.clear();
        }
        refs.insert(refname.to_string(), sha.to_string());
    }

    fn hint_for(&self, key: &str, sha: &str) -> Option<String> {
        let hints = lock(&self.hints);
        let refs = hints.get(key)?;
        // Prefer a branch: fetching a tag by name would drag in the tag object too.
        let mut found: Vec<&String> = refs
            .iter()
            .filter(|(_, s)| *s == sha)
            .map(|(r, _)| r)
            .collect();
        found.sort_by_key(|r| (!r.starts_with("refs/heads/"), r.as_str()));
        found.first().map(|r| (*r).clone())
    }

    /// Resolves a targetRevision (branch, tag, full or abbreviated commit
    /// SHA, or `HEAD`/empty for the remote's default branch) to a full commit
    /// SHA by asking the remote (`git ls-remote`). A full SHA is returned
    /// as-is (lower-cased) without contacting anyone.
    pub async fn resolve(
        &self,
        url: &str,
        revision: &str,
        creds: Option<&RepoCredentials>,
    ) -> Result<String, SourceError> {
        let revision = revision.trim();
        check_revision(revision)?;
        if is_full_sha(revision) {
            return Ok(revision.to_ascii_lowercase());
        }
        let parsed = RepoUrl::parse(url)?;
        let key = cache_key(url);
        let auth = GitAuth::new(&parsed, creds, &self.tmp, self.opts.timeout)?;
        let mut cmd = auth.command(
            &self.opts.git,
            "git ls-remote",
            url,
            self.opts.timeout,
            &self.opts.git_config,
        );
        cmd.args(["ls-remote", "--end-of-options", parsed.git_url.as_str()]);
        if revision.is_empty() || revision == "HEAD" {
            cmd.arg("HEAD");
        } else if !is_short_sha(revision) {
            // Only the matching refs: some servers advertise hundreds of thousands.
            cmd.arg(revision).arg(format!("{revision}^{{}}"));
        }
        let out = run(&cmd, &auth.redactor).await?;
        let refs = RemoteRefs::parse(&out.stdout_str());
        if let Some((name, sha)) = refs.find(revision) {
            tracing::debug!(repo = %scrub_url(url), revision, %sha, "resolved");
            self.remember(&key, &name, &sha);
            return Ok(sha);
        }
        if is_short_sha(revision) {
            let matches = refs.commits_with_prefix(revision);
            if let [(name, sha)] = matches.as_slice() {
                self.remember(&key, name, sha);
                return Ok(sha.clone());
            }
            if let Some(sha) = self
                .resolve_in_mirror(&parsed, url, &key, revision, creds)
                .await?
            {
                return Ok(sha);
            }
        }
        Err(SourceError::UnknownRevision {
            repo: scrub_url(url),
            revision: if revision.is_empty() {
                "HEAD"
            } else {
                revision
            }
            .to_string(),
        })
    }

    /// An abbreviated SHA that is no ref's tip: look in the mirror, fetching
    /// the full history once if it is not there yet.
    async fn resolve_in_mirror(
        &self,
        parsed: &RepoUrl,
        url: &str,
        key: &str,
        short: &str,
        creds: Option<&RepoCredentials>,
    ) -> Result<Option<String>, SourceError> {
        let lock = self.lock_for(format!("git:{key}"));
        let _held = lock.lock().await;
        let mirror = self.ensure_mirror(key, url).await?;
        if let Some(sha) = self.rev_parse_commit(&mirror, url, short).await? {
            return Ok(Some(sha));
        }
        let auth = GitAuth::new(parsed, creds, &self.tmp, self.opts.fetch_timeout)?;
        self.fetch_all(&auth, &mirror, parsed, url).await?;
        self.rev_parse_commit(&mirror, url, short).await
    }

    async fn rev_parse_commit(
        &self,
        mirror: &Path,
        url: &str,
        rev: &str,
    ) -> Result<Option<String>, SourceError> {
        let mut cmd = self.local_git(mirror, "git rev-parse", url);
        cmd.args([
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{rev}^{{commit}}"),
        ]);
        let out = run_raw(&cmd, &Redactor::default()).await?;
        let sha = out.stdout_str().trim().to_ascii_lowercase();
        Ok((out.status.success() && is_full_sha(&sha)).then_some(sha))
    }

    fn local_git(&self, mirror: &Path, label: &str, url: &str) -> exec::Cmd {
        let mut cmd = base_command(
            &self.opts.git,
            label,
            url,
            self.opts.timeout,
            &self.opts.git_config,
        );
        cmd.arg(format!("--git-dir={}", mirror.display()));
        cmd
    }

    /// Creates the bare mirror for `key` if it does not exist yet.
    async fn ensure_mirror(&self, key: &str, url: &str) -> Result<PathBuf, SourceError> {
        let dir = self.mirror_dir(key);
        if dir.join("HEAD").is_file() {
            return Ok(dir);
        }
        let parent = self.root.join("repos");
        let tmp = tempfile::Builder::new()
            .prefix(".init-")
            .tempdir_in(&parent)
            .map_err(|e| SourceError::io_at("creating a directory in", &parent, e))?;
        let mut cmd = base_command(&self.opts.git, "git init", url, self.opts.timeout, &[]);
        cmd.args([
            "init",
            "--bare",
            "--quiet",
            "--template=",
            "--initial-branch=main",
        ])
        .arg(tmp.path());
        run(&cmd, &Redactor::default()).await?;
        for (k, v) in [
            ("gc.auto", "0"),
            ("maintenance.auto", "false"),
            ("core.logAllRefUpdates", "false"),
            ("ferry.url", &scrub_url(url)),
        ] {
            let mut cmd = base_command(&self.opts.git, "git config", url, self.opts.timeout, &[]);
            cmd.arg(format!("--git-dir={}", tmp.path().display()))
                .args(["config", k, v]);
            run(&cmd, &Redactor::default()).await?;
        }
        let tmp = tmp.keep();
        if let Err(e) = std::fs::rename(&tmp, &dir) {
            let _ = std::fs::remove_dir_all(&tmp);
            if !dir.join("HEAD").is_file() {
                return Err(SourceError::io_at("creating", &dir, e));
            }
        }
        Ok(dir)
    }

    async fn has_commit(&self, mirror: &Path, url: &str, sha: &str) -> Result<bool, SourceError> {
        let mut cmd = self.local_git(mirror, "git cat-file", url);
        cmd.args(["cat-file", "-e", &format!("{sha}^{{commit}}")]);
        Ok(run_raw(&cmd, &Redactor::default()).await?.status.success())
    }

    async fn fetch(
        &self,
        auth: &GitAuth,
        mirror: &Path,
        parsed: &RepoUrl,
        url: &str,
        options: &[&str],
        refspecs: &[String],
    ) -> Result<(), SourceError> {
        let mut cmd = auth.command(
            &self.opts.git,
            "git fetch",
            url,
            self.opts.fetch_timeout,
            &self.opts.git_config,
        );
        cmd.arg(format!("--git-dir={}", mirror.display())).args([
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            "--no-auto-gc",
            "--no-recurse-submodules",
        ]);
        cmd.args(options.iter().copied());
        cmd.arg("--end-of-options").arg(&parsed.git_url);
        cmd.args(refspecs.iter().cloned());
        run(&cmd, &auth.redactor).await.map(|_| ())
    }

    /// Every branch and tag, with complete history.
    async fn fetch_all(
        &self,
        auth: &GitAuth,
        mirror: &Path,
        parsed: &RepoUrl,
        url: &str,
    ) -> Result<(), SourceError> {
        let mut options = Vec::new();
        if mirror.join("shallow").exists() {
            options.push("--unshallow");
        }
        tracing::info!(repo = %scrub_url(url), "fetching full history");
        self.fetch(
            auth,
            mirror,
            parsed,
            url,
            &options,
            &[
                "+refs/heads/*:refs/heads/*".into(),
                "+refs/tags/*:refs/tags/*".into(),
            ],
        )
        .await
    }

    /// Gets `sha` into the mirror: the ref it was resolved from, shallowly;
    /// else the commit itself, shallowly; else everything.
    async fn fetch_commit(
        &self,
        parsed: &RepoUrl,
        url: &str,
        key: &str,
        mirror: &Path,
        sha: &str,
        creds: Option<&RepoCredentials>,
    ) -> Result<(), SourceError> {
        let auth = GitAuth::new(parsed, creds, &self.tmp, self.opts.fetch_timeout)?;
        let depth = ["--depth", "1"];
        if let Some(r) = self.hint_for(key, sha) {
            match self
                .fetch(
                    &auth,
                    mirror,
                    parsed,
                    url,
                    &depth,
                    &[format!("+{r}:refs/ferry/fetch")],
                )
                .await
            {
                Ok(()) if self.has_commit(mirror, url, sha).await? => {
                    tracing::info!(repo = %scrub_url(url), %sha, %r, "fetched ref shallowly");
                    return Ok(());
                }
                Ok(()) => tracing::debug!(repo = %scrub_url(url), %sha, %r, "ref has moved on"),
                Err(e @ SourceError::Timeout { .. }) => return Err(e),
                Err(e) => {
                    tracing::debug!(repo = %scrub_url(url), error = %e, "shallow ref fetch failed")
                }
            }
        }
        match self
            .fetch(
                &auth,
                mirror,
                parsed,
                url,
                &depth,
                &[format!("+{sha}:refs/ferry/commits/{sha}")],
            )
            .await
        {
            Ok(()) if self.has_commit(mirror, url, sha).await? => {
                tracing::info!(repo = %scrub_url(url), %sha, "fetched commit shallowly");
                return Ok(());
            }
            Ok(()) => {}
            Err(e @ SourceError::Timeout { .. }) => return Err(e),
            Err(e) => {
                tracing::debug!(repo = %scrub_url(url), error = %e, "shallow commit fetch failed; fetching everything")
            }
        }
        self.fetch_all(&auth, mirror, parsed, url).await?;
        if self.has_commit(mirror, url, sha).await? {
            Ok(())
        } else {
            Err(SourceError::CommitNotFound {
                repo: scrub_url(url),
                sha: sha.to_string(),
            })
        }
    }

    /// Ensures `sha` (a full commit SHA, see [`SourceCache::resolve`]) is in
    /// the repository's mirror and returns a directory holding the files of
    /// that commit (no `.git`). The directory is shared: treat it read-only.
    pub async fn checkout(
        &self,
        url: &str,
        sha: &str,
        creds: Option<&RepoCredentials>,
    ) -> Result<PathBuf, SourceError> {
        let sha = full_sha(sha)?;
        let parsed = RepoUrl::parse(url)?;
        let key = cache_key(url);
        let tree = self.root.join("trees").join(&key).join(&sha);
        if touch(&tree) {
            return Ok(tree);
        }
        let lock = self.lock_for(format!("git:{key}"));
        let _held = lock.lock().await;
        if touch(&tree) {
            return Ok(tree);
        }
        let mirror = self.ensure_mirror(&key, url).await?;
        if !self.has_commit(&mirror, url, &sha).await? {
            self.fetch_commit(&parsed, url, &key, &mirror, &sha, creds)
                .await?;
        }
        self.pin(&mirror, url, &sha).await?;
        self.materialize(&mirror, url, &key, &sha).await
    }

    /// Keeps a ref on every commit a tree was made from, so no cleanup of the
    /// mirror can drop it while the tree is in use.
    async fn pin(&self, mirror: &Path, url: &str, sha: &str) -> Result<(), SourceError> {
        let mut cmd = self.local_git(mirror, "git update-ref", url);
        cmd.args(["update-ref", &format!("refs/ferry/commits/{sha}"), sha]);
        run(&cmd, &Redactor::default()).await?;
        let mut cmd = self.local_git(mirror, "git update-ref", url);
        cmd.args(["update-ref", "-d", "refs/ferry/fetch"]);
        run_raw(&cmd, &Redactor::default()).await?;
        Ok(())
    }

    async fn materialize(
        &self,
        mirror: &Path,
        url: &str,
        key: &str,
        sha: &str,
    ) -> Result<PathBuf, SourceError> {
        let parent = self.root.join("trees").join(key);
        std::fs::create_dir_all(&parent).map_err(|e| SourceError::io_at("creating", &parent, e))?;
        let work = tempfile::Builder::new()
            .prefix(&format!(".tmp-{sha}-"))
            .tempdir_in(&parent)
            .map_err(|e| SourceError::io_at("creating a directory in", &parent, e))?;
        let index_dir = tempfile::Builder::new()
            .prefix("index-")
            .tempdir_in(&self.tmp)
            .map_err(|e| SourceError::io_at("creating a directory in", &self.tmp, e))?;
        let index = index_dir.path().join("index");
        for step in [
            vec!["read-tree".to_string(), sha.to_string()],
            vec![
                "checkout-index".to_string(),
                "--all".to_string(),
                "--force".to_string(),
            ],
        ] {
            let mut cmd = self.local_git(mirror, "git checkout", url);
            cmd.timeout = self.opts.fetch_timeout;
            cmd.arg(format!("--work-tree={}", work.path().display()))
                .args(["-c", "core.autocrlf=false", "-c", "core.symlinks=true"])
                .args(step)
                .env("GIT_INDEX_FILE", &index);
            cmd.cwd = Some(work.path().to_path_buf());
            run(&cmd, &Redactor::default()).await?;
        }
        let tree = parent.join(sha);
        let staged = work.keep();
        if let Err(e) = std::fs::rename(&staged, &tree) {
            let _ = std::fs::remove_dir_all(&staged);
            if !tree.is_dir() {
                return Err(SourceError::io_at("creating", &tree, e));
            }
        }
        tracing::debug!(repo = %scrub_url(url), %sha, "checked out");
        Ok(tree)
    }

    /// The git object id of `path` (relative to the repository root; empty or
    /// `.` for the root) at commit `sha`, or None when the path does not exist
    /// there. The commit must have been fetched ([`SourceCache::checkout`]).
    pub async fn tree_id(
        &self,
        url: &str,
        sha: &str,
        path: &str,
    ) -> Result<Option<String>, SourceError> {
        let sha = full_sha(sha)?;
        let path = clean_path(path)?;
        let memo = (cache_key(url), sha.clone(), path.clone());
        if let Some(id) = self
            .tree_ids
            .lock()
            .ok()
            .and_then(|mut m| m.get(&memo).cloned())
        {
            return Ok(id);
        }
        let found = self.tree_id_from_git(url, &sha, &path).await?;
        if let Ok(mut m) = self.tree_ids.lock() {
            m.put(memo, found.clone());
        }
        Ok(found)
    }

    async fn tree_id_from_git(
        &self,
        url: &str,
        sha: &str,
        path: &str,
    ) -> Result<Option<String>, SourceError> {
        let sha = sha.to_string();
        let mirror = self.mirror_dir(&cache_key(url));
        let not_fetched = || SourceError::NotFetched {
            repo: scrub_url(url),
            sha: sha.clone(),
        };
        if !mirror.join("HEAD").is_file() || !self.has_commit(&mirror, url, &sha).await? {
            return Err(not_fetched());
        }
        let spec = if path.is_empty() {
            format!("{sha}^{{tree}}")
        } else {
            format!("{sha}:{path}")
        };
        let mut cmd = self.local_git(&mirror, "git rev-parse", url);
        cmd.args(["rev-parse", "--verify", "--quiet", &spec]);
        let out = run_raw(&cmd, &Redactor::default()).await?;
        let id = out.stdout_str().trim().to_string();
        match out.status.code() {
            Some(0) if is_full_sha(&id) => Ok(Some(id)),
            Some(1) => Ok(None),
            _ => Err(SourceError::Command {
                command: cmd.label.clone(),
                repo: scrub_url(url),
                message: exec::failure_message(&out),
            }),
        }
    }

    /// Removes checked-out trees and unpacked charts not used for `max_age`
    /// (and leftovers of interrupted work), and drops the mirrors' pins on
    /// the commits of removed trees. Returns how many directories went.
    pub async fn prune(&self, max_age: Duration) -> Result<usize, SourceError> {
        let mut removed = 0;
        let trees = self.root.join("trees");
        for repo in read_dirs(&trees)? {
            let Some(key) = repo
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            let lock = self.lock_for(format!("git:{key}"));
            let _held = lock.lock().await;
            let mirror = self.mirror_dir(&key);
            let mut unpinned = false;
            for tree in read_dirs(&repo)? {
                if !older_than(&tree, max_age) {
                    continue;
                }
                let name = tree
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default()
                    .to_string();
                if remove_dir(&tree) {
                    removed += 1;
                }
                if is_full_sha(&name) && mirror.join("HEAD").is_file() {
                    let mut cmd = self.local_git(&mirror, "git update-ref", "");
                    cmd.args(["update-ref", "-d", &format!("refs/ferry/commits/{name}")]);
                    run_raw(&cmd, &Redactor::default()).await?;
                    unpinned = true;
                }
            }
            if unpinned {
                let mut cmd = self.local_git(&mirror, "git gc", "");
                cmd.timeout = self.opts.fetch_timeout;
                cmd.args(["gc", "--quiet", "--prune=now"]);
                if let Err(e) = run(&cmd, &Redactor::default()).await {
                    tracing::warn!(error = %e, mirror = %mirror.display(), "git gc failed");
                }
            }
        }
        let charts = self.root.join("charts");
        for repo in read_dirs(&charts)? {
            let Some(key) = repo
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            let lock = self.lock_for(format!("helm:{key}"));
            let _held = lock.lock().await;
            for chart in read_dirs(&repo)? {
                for version in read_dirs(&chart)? {
                    if older_than(&version, max_age) && remove_dir(&version) {
                        removed += 1;
                    }
                }
            }
        }
        Ok(removed)
    }
}

impl Drop for SourceCache {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

fn full_sha(sha: &str) -> Result<String, SourceError> {
    let s = sha.trim().to_ascii_lowercase();
    if is_full_sha(&s) {
        Ok(s)
    } else {
        Err(SourceError::InvalidRevision {
            revision: sha.to_string(),
            reason: "a full commit SHA is needed here (resolve the revision first)",
        })
    }
}

/// `path` as git names it: no leading `./` or `/`, no trailing `/`, and never
/// leaving the repository.
fn clean_path(path: &str) -> Result<String, SourceError> {
    let mut parts = Vec::new();
    for part in path.trim().split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(SourceError::InvalidPath {
                    path: path.to_string(),
                    reason: "must stay inside the repository",
                });
            }
            p => parts.push(p),
        }
    }
    if path.chars().any(char::is_control) {
        return Err(SourceError::InvalidPath {
            path: path.to_string(),
            reason: "contains control characters",
        });
    }
    Ok(parts.join("/"))
}

/// Marks a directory as just used (its mtime drives [`SourceCache::prune`]);
/// false when it does not exist.
fn touch(dir: &Path) -> bool {
    match std::fs::File::open(dir) {
        Ok(f) => {
            let _ = f.set_modified(SystemTime::now());
            dir.is_dir()
        }
        Err(_) => false,
    }
}

fn older_than(p: &Path, max_age: Duration) -> bool {
    std::fs::symlink_metadata(p)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age >= max_age)
}

/// Moves a directory out of sight first, so no reader finds it half-deleted.
fn remove_dir(dir: &Path) -> bool {
    let Some(parent) = dir.parent() else {
        return false;
    };
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("x");
    let trash = parent.join(format!(".trash-{name}-{}", std::process::id()));
    let target = if name.starts_with('.') {
        dir.to_path_buf()
    } else if std::fs::rename(dir, &trash).is_ok() {
        trash
    } else {
        return false;
    };
    make_writable(&target);
    std::fs::remove_dir_all(&target).is_ok()
}

/// Charts and trees may contain read-only directories, which would stop removal.
fn make_writable(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    if let Ok(m) = std::fs::symlink_metadata(dir)
        && m.is_dir()
    {
        let mut perms = m.permissions();
        perms.set_mode(perms.mode() | 0o700);
        let _ = std::fs::set_permissions(dir, perms);
    }
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            make_writable(&e.path());
        }
    }
}

fn read_dirs(dir: &Path) -> Result<Vec<PathBuf>, SourceError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(SourceError::io_at("reading", dir, e)),
    };
    Ok(entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect())
}

/// Removes scratch directories of cache instances whose process is gone; they
/// may hold key files.
fn sweep_stale_tmp(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned() {
        assert_eq!(clean_path("").unwrap(), "");
        assert_eq!(clean_path(".").unwrap(), "");
        assert_eq!(clean_path("./apps//web/").unwrap(), "apps/web");
        assert_eq!(clean_path("/apps").unwrap(), "apps");
        assert!(clean_path("apps/../../etc").is_err());
    }

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn cache_and_its_futures_can_move_between_threads() {
        let dir = tempfile::tempdir().unwrap();
        let cache = SourceCache::new(dir.path().to_path_buf()).unwrap();
        fn shared<T: Send + Sync>(_: &T) {}
        shared(&cache);
        assert_send(&cache.resolve("u", "main", None));
        assert_send(&cache.checkout("u", "s", None));
        assert_send(&cache.tree_id("u", "s", ""));
        assert_send(&cache.helm_chart(Path::new("helm"), "u", "c", "", None));
        assert_send(&cache.prune(Duration::ZERO));
    }

    #[test]
    fn options_debug_hides_proxy_credentials() {
        let opts = SourceOptions {
            git_config: vec!["http.proxy=http://user:proxy-secret@proxy:3128".into()],
            ..Default::default()
        };
        let shown = format!("{opts:?}");
        assert!(!shown.contains("proxy-secret"), "{shown}");
        assert!(shown.contains("proxy:3128"), "{shown}");
    }

    #[test]
    fn full_sha_is_required_for_checkout() {
        assert!(full_sha("main").is_err());
        assert_eq!(
            full_sha(" ABCDEF0123456789ABCDEF0123456789ABCDEF01 ").unwrap(),
            "abcdef0123456789abcdef0123456789abcdef01"
        );
    }
}

//! Writing back to Git: a private working clone per writer, reset to the
//! remote branch before every change, committed and pushed with the `git`
//! CLI (gix cannot push). Credentials reach git exactly as for fetches.

use crate::error::SourceError;
use crate::exec::{Redactor, run, run_raw};
use crate::git::{GitAuth, base_command, is_full_sha};
use crate::url::{RepoUrl, cache_key, scrub_url};
use crate::{RepoCredentials, SourceCache};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Who a commit is by.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitAuthor {
    pub name: String,
    pub email: String,
}

/// A working tree checked out at the tip of a remote branch, locked for
/// one writer until dropped.
pub struct Worktree<'a> {
    cache: &'a SourceCache,
    dir: PathBuf,
    url: String,
    parsed: RepoUrl,
    creds: Option<RepoCredentials>,
    base: String,
    _held: tokio::sync::OwnedMutexGuard<()>,
}

impl std::fmt::Debug for Worktree<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worktree")
            .field("dir", &self.dir)
            .field("url", &scrub_url(&self.url))
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// What a push did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// Nothing differed from the base commit: no commit, no push.
    NothingToCommit,
    /// One new commit, pushed.
    Pushed { commit: String },
}

impl SourceCache {
    /// A working clone for `writer` (any stable name, e.g. `ns/automation`)
    /// at the tip of `push_branch` when that branch exists on the remote, else
    /// of `checkout_branch`. Every call starts from what the remote has now:
    /// local leftovers from an earlier failed push are discarded, so a change
    /// is never committed twice.
    pub async fn worktree(
        &self,
        writer: &str,
        url: &str,
        creds: Option<&RepoCredentials>,
        checkout_branch: &str,
        push_branch: &str,
    ) -> Result<Worktree<'_>, SourceError> {
        for b in [checkout_branch, push_branch] {
            check_branch(b)?;
        }
        let parsed = RepoUrl::parse(url)?;
        let id = format!("{}-{:x}", cache_key(url), Sha256::digest(writer.as_bytes()));
        let id = &id[..33];
        let held = self.lock_for(format!("work:{id}")).lock_owned().await;
        let dir = self.root.join("work").join(id);
        std::fs::create_dir_all(&dir).map_err(|e| SourceError::io_at("creating", &dir, e))?;
        if !dir.join(".git").is_dir() {
            let mut cmd = base_command(&self.opts.git, "git init", url, self.opts.timeout, &[]);
            cmd.args(["init", "--quiet", "--template=", "--initial-branch=ferry"])
                .arg(&dir);
            run(&cmd, &Redactor::default()).await?;
        }
        let auth = GitAuth::new(&parsed, creds, &self.tmp, self.opts.fetch_timeout)?;
        let mut refspecs = vec![format!(
            "+refs/heads/{checkout_branch}:refs/remotes/origin/{checkout_branch}"
        )];
        let pushing_elsewhere = push_branch != checkout_branch;
        if pushing_elsewhere {
            // The push branch may not exist yet; ask separately so its absence is no error.
            let mut ls = auth.command(
                &self.opts.git,
                "git ls-remote",
                url,
                self.opts.timeout,
                &self.opts.git_config,
            );
            ls.args(["ls-remote", "--heads", "--end-of-options"])
                .arg(&parsed.git_url)
                .arg(format!("refs/heads/{push_branch}"));
            let out = run(&ls, &auth.redactor).await?;
            if !out.stdout_str().trim().is_empty() {
                refspecs.push(format!(
                    "+refs/heads/{push_branch}:refs/remotes/origin/{push_branch}"
                ));
            }
        }
        let mut fetch = auth.command(
            &self.opts.git,
            "git fetch",
            url,
            self.opts.fetch_timeout,
            &self.opts.git_config,
        );
        fetch
            .arg("-C")
            .arg(&dir)
            .args([
                "fetch",
                "--quiet",
                "--no-tags",
                "--prune",
                "--no-write-fetch-head",
                "--no-auto-gc",
                "--no-recurse-submodules",
                "--depth",
                "1",
                "--end-of-options",
            ])
            .arg(&parsed.git_url)
            .args(refspecs.iter().cloned());
        run(&fetch, &auth.redactor).await?;
        let base_ref = if pushing_elsewhere && refspecs.len() > 1 {
            format!("refs/remotes/origin/{push_branch}")
        } else {
            format!("refs/remotes/origin/{checkout_branch}")
        };
        let tree = Worktree {
            cache: self,
            dir,
            url: url.to_string(),
            parsed,
            creds: creds.cloned(),
            base: String::new(),
            _held: held,
        };
        tree.local(&["checkout", "--quiet", "--force", "-B", "ferry", &base_ref])
            .await?;
        tree.local(&["clean", "--quiet", "-ffdx"]).await?;
        let base = tree.local(&["rev-parse", "HEAD"]).await?.trim().to_string();
        if !is_full_sha(&base) {
            return Err(SourceError::Command {
                command: "git rev-parse".into(),
                repo: scrub_url(url),
                message: format!("unexpected output {base:?}"),
            });
        }
        Ok(Worktree { base, ..tree })
    }
}

impl Worktree<'_> {
    /// The files; edit them, then [`Worktree::commit_and_push`].
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The commit the tree was checked out at.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn local(&self, args: &[&str]) -> Result<String, SourceError> {
        let opts = &self.cache.opts;
        let mut cmd = base_command(
            &opts.git,
            &format!("git {}", args.first().copied().unwrap_or_default()),
            &self.url,
            opts.timeout,
            &opts.git_config,
        );
        cmd.arg("-C").arg(&self.dir).args(args.iter().copied());
        Ok(run(&cmd, &Redactor::default()).await?.stdout_str())
    }

    /// Commits every change in the tree as `author` with `message` and pushes
    /// it to `branch`. When the push is refused (someone pushed first, a hook
    /// declined) the error carries git's message and nothing is kept locally:
    /// the next [`SourceCache::worktree`] starts again from the remote.
    pub async fn commit_and_push(
        &self,
        author: &CommitAuthor,
        message: &str,
        branch: &str,
    ) -> Result<PushOutcome, SourceError> {
        check_branch(branch)?;
        self.local(&["add", "--all"]).await?;
        let opts = &self.cache.opts;
        let mut diff = base_command(&opts.git, "git diff", &self.url, opts.timeout, &[]);
        diff.arg("-C")
            .arg(&self.dir)
            .args(["diff", "--cached", "--quiet"]);
        if run_raw(&diff, &Redactor::default()).await?.status.success() {
            return Ok(PushOutcome::NothingToCommit);
        }
        let name = if author.name.trim().is_empty() {
            "Ferry"
        } else {
            author.name.trim()
        };
        let mut commit = base_command(&opts.git, "git commit", &self.url, opts.timeout, &[]);
        commit
            .arg("-C")
            .arg(&self.dir)
            .args([
                "-c",
                "commit.gpgSign=false",
                "commit",
                "--quiet",
                "--no-verify",
                "--cleanup=verbatim",
                "--file=-",
            ])
            .env("GIT_AUTHOR_NAME", name)
            .env("GIT_AUTHOR_EMAIL", author.email.trim())
            .env("GIT_COMMITTER_NAME", name)
            .env("GIT_COMMITTER_EMAIL", author.email.trim());
        commit.stdin = Some(message.as_bytes().to_vec());
        run(&commit, &Redactor::default()).await?;
        let sha = self.local(&["rev-parse", "HEAD"]).await?.trim().to_string();
        let auth = GitAuth::new(
            &self.parsed,
            self.creds.as_ref(),
            &self.cache.tmp,
            opts.fetch_timeout,
        )?;
        let mut push = auth.command(
            &opts.git,
            "git push",
            &self.url,
            opts.fetch_timeout,
            &opts.git_config,
        );
        push.arg("-C")
            .arg(&self.dir)
            .args(["push", "--quiet", "--porcelain", "--end-of-options"])
            .arg(&self.parsed.git_url)
            .arg(format!("HEAD:refs/heads/{branch}"));
        let pushed = run_raw(&push, &auth.redactor).await;
        let refused = match &pushed {
            Ok(out) if out.status.success() => None,
            Ok(out) => Some(SourceError::Command {
                command: "git push".into(),
                repo: scrub_url(&self.url),
                message: push_failure(out, &auth.redactor),
            }),
            Err(_) => None,
        };
        if let Some(e) = refused.or(pushed.err()) {
            // Drop the local commit now so a later call cannot push it again.
            let _ = self
                .local(&["reset", "--quiet", "--hard", &self.base])
                .await;
            return Err(e);
        }
        tracing::info!(repo = %scrub_url(&self.url), %branch, commit = %sha, "pushed");
        Ok(PushOutcome::Pushed { commit: sha })
    }
}

/// git's reason for a refused push: the per-ref status (`--porcelain`
/// prints it on stdout, e.g. `[rejected] (non-fast-forward)` or
/// `[remote rejected] (failed to update ref)`) and stderr, plus what happens
/// next when the branch moved under us.
fn push_failure(out: &crate::exec::Finished, redactor: &Redactor) -> String {
    let stdout = redactor.redact(&out.stdout_str());
    let mut parts: Vec<String> = stdout
        .lines()
        .filter(|l| l.starts_with('!'))
        .map(|l| l.trim_start_matches('!').trim().replace('\t', " "))
        .collect();
    let stderr = crate::exec::failure_message(out);
    if !stderr.is_empty() {
        parts.push(stderr);
    }
    let mut msg = parts.join("; ");
    let moved = [
        "non-fast-forward",
        "fetch first",
        "failed to update ref",
        "cannot lock ref",
    ]
    .iter()
    .any(|m| msg.contains(m));
    if moved {
        msg.push_str(
            " (the branch moved on the server while pushing; the next run starts again from its new tip)",
        );
    }
    msg
}

/// Branch names reach git as part of a refspec: refuse anything that could
/// change its meaning.
fn check_branch(b: &str) -> Result<(), SourceError> {
    let bad = b.is_empty()
        || b.starts_with('-')
        || b.starts_with('/')
        || b.ends_with('/')
        || b.ends_with(".lock")
        || b.contains("..")
        || b.contains("//")
        || b.chars().any(|c| {
            c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c) || c == '\u{7f}'
        })
        || b.contains("@{");
    if bad {
        Err(SourceError::InvalidRevision {
            revision: b.to_string(),
            reason: "not a valid branch name",
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::check_branch;

    #[test]
    fn branch_names() {
        for ok in ["main", "image-updates", "release/1.2", "a.b"] {
            assert!(check_branch(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-f", "a..b", "a b", "x:y", "a/", "ref@{1}", "a*"] {
            assert!(check_branch(bad).is_err(), "{bad}");
        }
    }
}

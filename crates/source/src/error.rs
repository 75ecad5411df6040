//! Errors. Every string in them has had credentials removed before it was
//! stored, so Display and Debug are both safe to log and to show to users.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("invalid repository URL {url}: {reason}")]
    InvalidUrl { url: String, reason: &'static str },

    #[error("invalid revision {revision:?}: {reason}")]
    InvalidRevision {
        revision: String,
        reason: &'static str,
    },

    #[error("unable to resolve '{revision}' to a commit SHA in repository {repo}")]
    UnknownRevision { repo: String, revision: String },

    #[error("commit {sha} not found in repository {repo}")]
    CommitNotFound { repo: String, sha: String },

    #[error("commit {sha} of repository {repo} has not been fetched (check it out first)")]
    NotFetched { repo: String, sha: String },

    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },

    #[error("invalid chart {chart:?}: {reason}")]
    InvalidChart { chart: String, reason: String },

    /// A git or helm command failed; `message` is its stderr.
    #[error("`{command}` for {repo} failed: {message}")]
    Command {
        command: String,
        repo: String,
        message: String,
    },

    #[error("`{command}` for {repo} timed out after {seconds}s{}", tail(message))]
    Timeout {
        command: String,
        repo: String,
        seconds: u64,
        message: String,
    },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

fn tail(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

impl SourceError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> SourceError {
        SourceError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn io_at(what: &str, path: &Path, source: std::io::Error) -> SourceError {
        SourceError::io(format!("{what} {}", path.display()), source)
    }
}

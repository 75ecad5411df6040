use std::path::PathBuf;

/// Everything that can go wrong while bringing the environment up or using it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("missing prerequisite: {what} ({hint})")]
    MissingPrerequisite { what: String, hint: String },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{name} exited before it was ready ({status}); last lines of {log}:\n{tail}")]
    Exited {
        name: String,
        status: String,
        log: PathBuf,
        tail: String,
    },

    #[error("timed out after {secs}s waiting for {what}; last lines of {log}:\n{tail}")]
    Timeout {
        what: String,
        secs: u64,
        log: PathBuf,
        tail: String,
    },

    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },

    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: PathBuf, message: String },

    #[error(transparent)]
    Kube(#[from] kube::Error),

    #[error("test environment failed to start: {0}")]
    Startup(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}

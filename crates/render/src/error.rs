/// Why a render failed. The `Display` text ends up in the Application's
/// condition, so every variant names the file, path or tool involved and
/// carries the tool's own error output. Values of plugin environment entries
/// never appear here: they may be secrets.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("app path does not exist: {path}")]
    PathNotFound { path: String },

    #[error("invalid app path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },

    #[error("repository contains out-of-bounds symlink {file:?} (points to {target:?})")]
    OutOfBoundsSymlink { file: String, target: String },

    #[error("invalid manifest in {file}: {message}")]
    InvalidManifest { file: String, message: String },

    #[error("jsonnet {file}: {message}")]
    Jsonnet { file: String, message: String },

    #[error("invalid application source: {0}")]
    InvalidSource(String),

    #[error("helm value file {file:?}: {message}")]
    ValueFile { file: String, message: String },

    #[error("invalid kustomization in {path}: {message}")]
    Kustomization { path: String, message: String },

    #[error("`{tool}` failed: {message}")]
    Tool { tool: String, message: String },

    #[error("`{tool}` timed out after {secs}s and was killed")]
    Timeout { tool: String, secs: u64 },

    #[error("couldn't find config management plugin {name:?} supporting the application{detail}")]
    NoPlugin { name: String, detail: String },

    #[error(
        "could not find a config management plugin whose discovery rules match the application"
    )]
    NoMatchingPlugin,

    #[error("invalid ConfigManagementPlugin: {0}")]
    InvalidPlugin(String),

    #[error("{0}")]
    NotFound(String),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl RenderError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        RenderError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn io_path(what: &str, path: &std::path::Path, source: std::io::Error) -> Self {
        RenderError::io(format!("{what} {}", path.display()), source)
    }
}

/// Shorthand for errors tied to a file on disk.
pub(crate) fn manifest_error(file: impl Into<String>, message: impl Into<String>) -> RenderError {
    RenderError::InvalidManifest {
        file: file.into(),
        message: message.into(),
    }
}

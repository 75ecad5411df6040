use crate::RenderError;
use std::path::{Path, PathBuf};

/// Where the `helm` and `kustomize` binaries are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderTools {
    pub helm: PathBuf,
    /// Accepts `build DIR` (kustomize itself, or a wrapper over `kubectl kustomize`).
    pub kustomize: PathBuf,
}

impl RenderTools {
    /// Finds `helm` and `kustomize`: `$FERRY_TOOLS_BIN`, then
    /// `$FERRY_CACHE/tools/kubectl-v34/bin` (`FERRY_CACHE` defaults to
    /// `~/.cache/ferry`), then `$PATH`. The error names the missing tool and
    /// says to run `make setup`.
    pub fn locate() -> Result<RenderTools, RenderError> {
        let fixed = fixed_dirs();
        let mut dirs = fixed.clone();
        if let Some(path) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&path));
        }
        let find = |name: &str| dirs.iter().map(|d| d.join(name)).find(|p| is_executable(p));
        match (find("helm"), find("kustomize")) {
            (Some(helm), Some(kustomize)) => Ok(RenderTools { helm, kustomize }),
            (h, k) => {
                let missing: Vec<&str> = [("helm", h.is_none()), ("kustomize", k.is_none())]
                    .iter()
                    .filter(|(_, m)| *m)
                    .map(|(n, _)| *n)
                    .collect();
                let looked: Vec<String> = fixed.iter().map(|d| d.display().to_string()).collect();
                Err(RenderError::NotFound(format!(
                    "{} not found (looked in {} and $PATH); run `make setup` to install it",
                    missing
                        .iter()
                        .map(|m| format!("`{m}`"))
                        .collect::<Vec<_>>()
                        .join(" and "),
                    looked.join(", ")
                )))
            }
        }
    }
}

/// The directories searched before `$PATH`.
fn fixed_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("FERRY_TOOLS_BIN").filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(d));
    }
    let cache = std::env::var_os("FERRY_CACHE")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/root"))
                .join(".cache/ferry")
        });
    dirs.push(cache.join("tools/kubectl-v34/bin"));
    dirs
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

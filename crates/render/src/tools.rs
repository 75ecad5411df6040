use crate::RenderError;
use std::path::{Path, PathBuf};

/// Where the `helm` and `kustomize` binaries are, and what config-management plugins get
/// besides Argo CD's environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenderTools {
    pub helm: PathBuf,
    /// Accepts `build DIR` (kustomize itself, or a wrapper over `kubectl kustomize`).
    pub kustomize: PathBuf,
    /// Directories put first on plugins' PATH: [`ferry_shims`] gives `kustomize` (with `edit`)
    /// and `argocd-vault-plugin` as the running `ferry`.
    pub plugin_path: Vec<PathBuf>,
    /// Extra environment for plugins: how a plugin reaches the cluster (`KUBECONFIG`, or the
    /// in-cluster service variables), as avp's `-s secret` needs.
    pub plugin_env: Vec<(String, String)>,
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
            (Some(helm), Some(kustomize)) => Ok(RenderTools {
                helm,
                kustomize,
                plugin_path: ferry_shims().into_iter().collect(),
                plugin_env: [
                    "KUBECONFIG",
                    "KUBERNETES_SERVICE_HOST",
                    "KUBERNETES_SERVICE_PORT",
                ]
                .iter()
                .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
                .collect(),
            }),
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

/// A directory of links to the running binary under the names plugins call — `kustomize` and
/// `argocd-vault-plugin` — when the running binary is `ferry` (not, say, a test harness). Made
/// once per binary, under the system temp directory.
pub fn ferry_shims() -> Option<PathBuf> {
    static SHIMS: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    SHIMS
        .get_or_init(|| {
            let exe = std::env::current_exe().ok()?.canonicalize().ok()?;
            if exe.file_name()? != "ferry" {
                return None;
            }
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            exe.hash(&mut h);
            let dir = std::env::temp_dir().join(format!("ferry-shims-{:x}", h.finish()));
            std::fs::create_dir_all(&dir).ok()?;
            for name in ["kustomize", "argocd-vault-plugin"] {
                let link = dir.join(name);
                if std::fs::read_link(&link).ok().as_deref() != Some(exe.as_path()) {
                    let _ = std::fs::remove_file(&link);
                    std::os::unix::fs::symlink(&exe, &link).ok()?;
                }
            }
            Some(dir)
        })
        .clone()
}

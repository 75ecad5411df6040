//! testenv: starts a real local Kubernetes control plane, Git server and OCI registry for Ferry's tests, benchmarks and demo.
//!
//! [`TestEnv::start`] brings up, on free loopback ports under one temporary
//! directory:
//! - etcd, and two independent clusters on it (`cluster1`, `cluster2`, under
//!   different key prefixes), each with kube-apiserver (RBAC on, token users
//!   `ferry-admin` and `ferry-restricted`), kube-controller-manager,
//!   kube-scheduler and a [simulated node](simnode) — a kubelet stand-in that
//!   runs no containers but reports pods Running/Ready/Succeeded;
//! - a Git server over http with basic auth, over ssh with a key, and file://;
//! - an OCI registry with htpasswd auth.
//!
//! Dropping the handle stops everything and removes the directory. Children
//! are also killed if the process dies some other way (see [`process`]).
//! Test binaries share one environment through [`shared`] and isolate
//! themselves by namespace ([`Cluster::create_namespace`]).

pub mod cluster;
mod error;
pub mod git;
pub mod oidc;
pub mod openbao;
pub mod pki;
pub mod prereq;
pub mod process;
pub mod registry;
mod secret;
pub mod simnode;
pub mod smtp;
pub mod sops;

pub use cluster::{ADMIN_USER, Cluster, RESTRICTED_USER};
pub use error::{Error, Result};
pub use git::GitServer;
pub use oidc::{OidcClient, OidcProvider, OidcUser};
pub use openbao::OpenBao;
pub use prereq::{KUBERNETES_VERSION, SearchPath, Tools};
pub use registry::Registry;
pub use secret::Secret;
pub use smtp::SmtpServer;

use cluster::Etcd;
use error::IoContext;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// What to start.
#[derive(Debug, Clone)]
pub struct Options {
    /// Start the second cluster.
    pub second_cluster: bool,
    /// Parent of the environment's directory. Default: `$FERRY_TESTENV_DIR`,
    /// else /dev/shm (etcd fsyncs every write; memory keeps that cheap), else
    /// the system temp directory.
    pub parent_dir: Option<PathBuf>,
    /// Write the first API server's audit log (every request's verb, resource and user
    /// agent, at Metadata level) to `Cluster::audit_log`: the benchmark counts requests by
    /// client from it.
    pub audit_log: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            second_cluster: true,
            parent_dir: None,
            audit_log: false,
        }
    }
}

/// A running environment. Dropping it stops every process and deletes its directory.
#[derive(Debug)]
pub struct TestEnv {
    /// The directory holding all state, logs and credentials of this environment.
    pub dir: PathBuf,
    pub tools: Tools,
    pub cluster: Cluster,
    pub cluster2: Option<Cluster>,
    pub git: GitServer,
    pub registry: Registry,
    // Kept for order: dropped (stopped) after both clusters.
    etcd: Option<Etcd>,
    background: Option<Background>,
}

/// The thread and runtime running the simulated nodes.
#[derive(Debug)]
struct Background {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

const DIR_PREFIX: &str = "ferry-env-";
const OWNER_FILE: &str = "owner.pid";

impl TestEnv {
    /// Starts everything and returns once it all answers. Blocking: it runs
    /// on its own background runtime, which then keeps the simulated nodes going.
    pub fn start(opts: Options) -> Result<TestEnv> {
        let tools = Tools::locate(&SearchPath::from_env())?;
        let parent = opts.parent_dir.clone().unwrap_or_else(default_parent);
        sweep_stale(&parent);
        let dir = make_dir(&parent)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread_dir = dir.clone();
        let thread_tools = tools.clone();
        let thread = std::thread::Builder::new()
            .name("ferry-testenv".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("ferry-testenv-rt")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(Error::Startup(format!("tokio runtime: {e}"))));
                        return;
                    }
                };
                rt.block_on(async move {
                    let parts = start_parts(
                        &thread_tools,
                        &thread_dir,
                        opts.second_cluster,
                        opts.audit_log,
                    )
                    .await;
                    let clients = match &parts {
                        Ok(p) => node_clients(p).await,
                        Err(_) => Ok(Vec::new()),
                    };
                    let (parts, clients) = match (parts, clients) {
                        (Ok(p), Ok(c)) => (p, c),
                        (Err(e), _) | (_, Err(e)) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = tx.send(Ok(parts));
                    let nodes = futures::future::join_all(clients.into_iter().map(simnode::run));
                    tokio::select! {
                        _ = nodes => {}
                        _ = stop_rx => {}
                    }
                });
            })
            .ctx(|| "spawning the testenv thread".into())?;
        let parts = match rx.recv() {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                let _ = thread.join();
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                let _ = std::fs::remove_dir_all(&dir);
                return Err(Error::Startup("testenv thread ended during startup".into()));
            }
        };
        let Parts {
            etcd,
            cluster,
            cluster2,
            git,
            registry,
        } = parts;
        Ok(TestEnv {
            dir,
            tools,
            cluster,
            cluster2,
            git,
            registry,
            etcd: Some(etcd),
            background: Some(Background {
                stop: stop_tx,
                thread,
            }),
        })
    }

    /// The second cluster; panics if it was not started (tests that need it
    /// use the default options).
    /// The etcd both clusters keep their state in.
    pub fn etcd(&self) -> &cluster::Etcd {
        self.etcd
            .as_ref()
            .expect("etcd runs as long as the environment")
    }

    pub fn cluster2(&self) -> &Cluster {
        self.cluster2
            .as_ref()
            .expect("the test environment was started without a second cluster")
    }

    /// Process ids of every program the environment started.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = self.etcd.as_ref().map(Etcd::pids).unwrap_or_default();
        pids.extend(self.cluster.pids());
        if let Some(c) = &self.cluster2 {
            pids.extend(c.pids());
        }
        pids.extend(self.git.pids());
        pids.extend(self.registry.pids());
        pids
    }

    /// Kills every process at once and removes the directory; for process
    /// exit, where an orderly drop cannot run.
    fn kill_now(&self) {
        for pid in self.pids() {
            // SAFETY: kill(2) on process groups this environment created.
            unsafe {
                libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if let Some(bg) = self.background.take() {
            let _ = bg.stop.send(());
            let _ = bg.thread.join();
        }
        // The API servers must stop before etcd; the Git server and registry
        // stop when their fields drop.
        drop(self.cluster2.take());
        self.cluster.stop();
        drop(self.etcd.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Parts {
    etcd: Etcd,
    cluster: Cluster,
    cluster2: Option<Cluster>,
    git: GitServer,
    registry: Registry,
}

async fn start_parts(
    tools: &Tools,
    dir: &Path,
    second_cluster: bool,
    audit_log: bool,
) -> Result<Parts> {
    let pki = pki::Pki::generate(&tools.openssl, dir)?;
    let etcd = Etcd::start(tools, dir).await?;
    let c1 = Cluster::start("cluster1", tools, &pki, &etcd, dir, audit_log);
    let c2 = async {
        if second_cluster {
            Cluster::start("cluster2", tools, &pki, &etcd, dir, false)
                .await
                .map(Some)
        } else {
            Ok(None)
        }
    };
    let (cluster, cluster2, git, registry) = tokio::join!(
        c1,
        c2,
        GitServer::start(tools, dir),
        Registry::start(tools, dir)
    );
    Ok(Parts {
        cluster: cluster?,
        cluster2: cluster2?,
        git: git?,
        registry: registry?,
        etcd,
    })
}

/// Registers the simulated node in each cluster; returns the clients its loops use.
async fn node_clients(parts: &Parts) -> Result<Vec<kube::Client>> {
    let mut clients = vec![parts.cluster.client().await?];
    if let Some(c) = &parts.cluster2 {
        clients.push(c.client().await?);
    }
    for c in &clients {
        simnode::register(c).await?;
    }
    Ok(clients)
}

fn default_parent() -> PathBuf {
    if let Some(d) = std::env::var_os("FERRY_TESTENV_DIR") {
        return PathBuf::from(d);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && tempfile_probe(shm) {
        return shm.to_path_buf();
    }
    std::env::temp_dir()
}

fn tempfile_probe(dir: &Path) -> bool {
    let p = dir.join(format!(".ferry-probe-{}", std::process::id()));
    let ok = std::fs::write(&p, b"").is_ok();
    let _ = std::fs::remove_file(&p);
    ok
}

fn make_dir(parent: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
    let dir = parent.join(format!(
        "{DIR_PREFIX}{}-{}",
        std::process::id(),
        &Secret::random().expose()[..8]
    ));
    std::fs::create_dir(&dir).ctx(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join(OWNER_FILE), std::process::id().to_string())
        .ctx(|| format!("writing {}", dir.join(OWNER_FILE).display()))?;
    Ok(dir)
}

/// Removes directories left by environments whose owning process is gone
/// (a test binary killed before it could clean up).
fn sweep_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let owner = std::fs::read_to_string(e.path().join(OWNER_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        if let Some(pid) = owner
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

static SHARED: OnceLock<std::result::Result<TestEnv, String>> = OnceLock::new();

/// The environment shared by every test of one test binary, started on first use.
/// Panics with the startup error (which names any missing prerequisite).
pub fn shared() -> &'static TestEnv {
    let env = SHARED.get_or_init(|| {
        let env = TestEnv::start(Options::default()).map_err(|e| e.to_string());
        if env.is_ok() {
            // Statics are never dropped; clean up when the test binary exits.
            // SAFETY: registering a plain extern "C" function.
            unsafe {
                libc::atexit(cleanup_shared);
            }
        }
        env
    });
    match env {
        Ok(env) => env,
        Err(e) => panic!("test environment failed to start: {e}"),
    }
}

extern "C" fn cleanup_shared() {
    if let Some(Ok(env)) = SHARED.get() {
        env.kill_now();
    }
}

/// How long tests wait for the controllers to act; generous, as the machine may be busy.
pub const WAIT: Duration = Duration::from_secs(120);

//! controller: reconciles Argo CD Applications and Flux image automation natively — watches, work queues, leader election, and the source → render → compare → sync → status pipeline.

pub mod appset;
pub mod clusters;
mod decide;
pub mod events;
pub mod fetch;
mod images;
mod inspect;
pub mod leader;
pub mod metrics;
pub mod notifications;
pub mod oam;
mod queue;
mod reconcile;
pub mod secrets;
pub mod shards;

pub use clusters::{ClusterSecret, b64};
pub use inspect::{Inspection, ObjectView, mask_secret};

use ferry_engine::cluster::{ClusterConn, Trigger};
use ferry_model::annotations::SECRET_TYPE_LABEL;
use ferry_model::{AppProject, Application, crds};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Argo CD's ConfigMap of trusted SSH host keys (key `ssh_known_hosts`).
pub const KNOWN_HOSTS_CONFIGMAP: &str = "argocd-ssh-known-hosts-cm";

/// Argo CD's settings ConfigMap: `resource.customizations.*` are read from it.
pub const SETTINGS_CONFIGMAP: &str = "argocd-cm";

/// Label that marks a ConfigMap whose values are CMP plugin definitions.
pub const PLUGIN_CONFIGMAP_LABEL: &str = "ferry.dev/cmp-plugin";

#[derive(Clone, Debug)]
pub struct Config {
    /// Namespace holding Applications, AppProjects and repository/cluster Secrets.
    pub namespace: String,
    pub cache_dir: PathBuf,
    /// How often each repository is polled (with ±10% jitter).
    pub poll_interval: Duration,
    pub workers: usize,
    /// Directories with CMP plugin.yaml files, besides labelled ConfigMaps.
    pub plugin_dirs: Vec<PathBuf>,
    pub render_timeout: Duration,
    /// Longest wait for one wave to become healthy or one hook to finish.
    pub wave_timeout: Duration,
    pub leader_election: bool,
    pub lease_duration: Duration,
    pub identity: String,
    pub install_crds: bool,
    /// Serve Flux's ImageRepository, ImagePolicy and ImageUpdateAutomation.
    pub image_automation: bool,
    /// Watch image automation objects in this namespace only (Flux's
    /// `--watch-all-namespaces=false`); all namespaces when `None`.
    pub image_namespace: Option<String>,
    /// Serve KubeVela's core.oam.dev Applications and definitions.
    pub oam: bool,
    /// Serve OAM Applications of this namespace only; all namespaces when `None`.
    pub oam_namespace: Option<String>,
    /// Argo CD's `--application-namespaces`: further namespaces whose
    /// Applications are served (globs, or `/regex/`). Their projects must list
    /// them in `sourceNamespaces`.
    pub application_namespaces: Vec<String>,
    /// Environment config-management plugins get besides Argo CD's: how they reach the
    /// cluster (`KUBECONFIG`), as argocd-vault-plugin's `-s secret` needs.
    pub plugin_env: Vec<(String, String)>,
    /// A namespaced install: watch and deliver in `namespace` only (Roles, no ClusterRoles).
    pub namespaced: bool,
    /// Set while this replica can do its job: standing by for the Lease, or leading with its
    /// caches listed. `/readyz` answers from it.
    pub ready: Readiness,
    /// Shards the Applications are split into across replicas (1: one leader does all).
    pub shards: u32,
    /// What puts an app in a shard.
    pub shard_by: shards::ShardBy,
}

/// Whether a replica is ready (shared with the health endpoint).
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<std::sync::atomic::AtomicBool>);

impl Readiness {
    pub fn get(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn set(&self, ready: bool) {
        self.0.store(ready, std::sync::atomic::Ordering::Relaxed)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            namespace: "argocd".into(),
            cache_dir: std::env::temp_dir().join("ferry-cache"),
            poll_interval: Duration::from_secs(180),
            workers: 16,
            plugin_dirs: Vec::new(),
            render_timeout: Duration::from_secs(90),
            wave_timeout: Duration::from_secs(300),
            leader_election: true,
            lease_duration: Duration::from_secs(15),
            identity: format!("ferry-{}", std::process::id()),
            install_crds: true,
            image_automation: true,
            image_namespace: None,
            oam: true,
            oam_namespace: None,
            application_namespaces: Vec::new(),
            plugin_env: Vec::new(),
            namespaced: false,
            ready: Readiness::default(),
            shards: 1,
            shard_by: shards::ShardBy::Cluster,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Setup(String),
    #[error(
        "Argo CD's application controller is running ({0}); Ferry will not fight it over the same Applications. Scale it to zero first (see docs/migration.md)."
    )]
    ForeignController(String),
}

/// Rendered sources kept: more than the apps one controller serves, so steady passes render
/// nothing; past it the least recently used go first.
const RENDER_CACHE: std::num::NonZeroUsize = std::num::NonZeroUsize::new(4096).unwrap();
/// Compared objects kept (about ten per app).
const COMPARE_CACHE: std::num::NonZeroUsize = std::num::NonZeroUsize::new(65_536).unwrap();

static RENDERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many renders (cache misses) this process has run.
pub fn render_count() -> u64 {
    RENDERS.load(std::sync::atomic::Ordering::Relaxed)
}

pub(crate) type SettingsResult = Result<Arc<ferry_model::settings::ResourceSettings>, String>;

/// One source's render result, cached on its inputs.
pub(crate) struct RenderedSource {
    pub source_type: String,
    pub objects: Vec<serde_json::Value>,
    /// Files a directory source did not render.
    pub skipped: Vec<String>,
}

/// Shared state of a running controller.
pub struct Controller {
    pub(crate) cfg: Config,
    pub(crate) client: Client,
    pub(crate) apps: Store<Application>,
    pub(crate) projects: Store<AppProject>,
    pub(crate) secrets: Store<Secret>,
    pub(crate) plugin_maps: Store<ConfigMap>,
    pub(crate) known_hosts: Store<ConfigMap>,
    pub(crate) settings_cm: Store<ConfigMap>,
    /// `argocd-cm`'s resource settings, parsed once per resourceVersion.
    pub(crate) settings_parsed: Mutex<Option<(String, SettingsResult)>>,
    pub(crate) clusters: Mutex<HashMap<String, (String, Arc<ClusterConn>)>>,
    pub(crate) local: Arc<ClusterConn>,
    pub(crate) sources: ferry_source::SourceCache,
    pub(crate) tools: Result<ferry_render::RenderTools, String>,
    pub(crate) resolved: Mutex<HashMap<(String, String), (String, Instant)>>,
    /// Rendered sources by (repository, revision, path, options): least recently used first out,
    /// so a full cache costs one re-render, not every app's at once.
    pub(crate) rendered: Mutex<lru::LruCache<String, Arc<RenderedSource>>>,
    /// Secret-store sessions of natively served avp apps, by store identity.
    pub(crate) resolvers: secrets::Resolvers,
    /// Per app (`namespace/name`): the store values its native resolution used, which views
    /// (diff, manifests) mask wherever they appear. In memory only.
    pub(crate) secret_values: Mutex<HashMap<String, Arc<Vec<String>>>>,
    /// Dry-run comparisons by (object, resourceVersion, desired state, rules): bounded the same way.
    pub(crate) compared: Mutex<lru::LruCache<String, Vec<String>>>,
    /// Per checked-out app directory: whether a render may read beyond it.
    pub(crate) dir_facts: Mutex<HashMap<(PathBuf, bool), bool>>,
    /// The Application as our last status write returned it; newer than the
    /// watch cache until the cache catches up.
    pub(crate) written: Mutex<HashMap<String, Application>>,
    /// How long each running sync has waited on its current wave or hook.
    pub(crate) wait_clock: ferry_engine::sync::WaitClock,
    /// The shards this replica holds, when the apps are split across replicas.
    pub(crate) shards: Option<Arc<shards::Shards>>,
    pub(crate) triggers: tokio::sync::mpsc::UnboundedSender<Trigger>,
    pub(crate) queue: queue::Queue,
    /// KubeVela Applications to reconcile, as `namespace/name`.
    pub(crate) oam_queue: queue::Queue,
    /// Every Application change the watch sees (the API server streams them).
    pub(crate) app_events: tokio::sync::broadcast::Sender<Arc<Application>>,
}

/// Runs the controller until the process ends (or, with leader election,
/// until leadership is lost, when it returns so the process can exit).
pub async fn run(client: Client, cfg: Config) -> Result<(), Error> {
    run_until(client, cfg, std::future::pending()).await
}

/// [`run`] until `shutdown` completes (SIGTERM): no new work is taken, running reconciles get
/// up to half a lease duration to finish (an operation cut short stays in `.operation` for the
/// next leader), and the Lease is released so a standby replica takes over at once instead of
/// after the lease expires.
pub async fn run_until(
    client: Client,
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    tokio::pin!(shutdown);
    // Whatever labels the CRDs carry (`ferry install` relabels them): two controllers must
    // never act on the same Applications.
    if let Some(running) = argocd_controller_running(&client).await {
        return Err(Error::ForeignController(running));
    }
    if cfg.install_crds {
        install_crds(&client).await?;
    }
    if cfg.shards > 1 {
        return run_sharded(client, cfg, shutdown).await;
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let grace = cfg.lease_duration / 2;
    if !cfg.leader_election {
        let leader = run_as_leader(client, cfg, stop_rx);
        tokio::pin!(leader);
        return tokio::select! {
            r = &mut leader => r,
            () = &mut shutdown => {
                let _ = stop_tx.send(true);
                tokio::time::timeout(grace, leader).await.unwrap_or(Ok(()))
            }
        };
    }
    let le = leader::LeaderElection::new(
        client.clone(),
        &cfg.namespace,
        "ferry-controller",
        &cfg.identity,
        cfg.lease_duration,
    );
    tracing::info!(identity = %cfg.identity, "waiting for leadership");
    cfg.ready.set(true);
    tokio::select! {
        () = le.acquire() => {}
        () = &mut shutdown => return Ok(()),
    }
    cfg.ready.set(false);
    tracing::info!(identity = %cfg.identity, "became leader");
    let leader = run_as_leader(client, cfg.clone(), stop_rx);
    tokio::pin!(leader);
    tokio::select! {
        r = &mut leader => r,
        _ = le.hold() => {
            tracing::warn!(identity = %cfg.identity, "lost leadership; stopping");
            Err(Error::Setup("lost leadership".into()))
        }
        () = &mut shutdown => {
            tracing::info!(identity = %cfg.identity, "shutting down: finishing running reconciles");
            let _ = stop_tx.send(true);
            // Renewals stop here; the last one is at most a fifth of a lease old, so the lease
            // outlives the grace period.
            let r = tokio::time::timeout(grace, &mut leader).await.unwrap_or(Ok(()));
            match le.release().await {
                Ok(()) => tracing::info!(identity = %cfg.identity, "released the lease"),
                Err(e) => tracing::warn!(error = %e, "could not release the lease; it expires on its own"),
            }
            r
        }
    }
}

impl Controller {
    /// Starts the watches a compare needs (apps, projects, credentials,
    /// plugins, live objects) and waits until they are listed, without
    /// starting any worker: the API server uses this for read-only views.
    /// Everything stops when the returned guard is dropped.
    pub async fn watch(client: Client, cfg: Config) -> Result<(Arc<Controller>, TaskGuard), Error> {
        let ns = cfg.namespace.clone();
        let (apps, apps_w) = reflector::store::<Application>();
        let (projects, projects_w) = reflector::store::<AppProject>();
        let (secrets, secrets_w) = reflector::store::<Secret>();
        let (plugin_maps, plugin_w) = reflector::store::<ConfigMap>();
        let (known_hosts, known_hosts_w) = reflector::store::<ConfigMap>();
        let (settings_cm, settings_w) = reflector::store::<ConfigMap>();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Trigger>();
        let local = if cfg.namespaced {
            ClusterConn::scoped(
                ferry_model::IN_CLUSTER_NAME,
                ferry_model::IN_CLUSTER_SERVER,
                client.clone(),
                tx.clone(),
                &cfg.namespace,
            )
        } else {
            ClusterConn::new(
                ferry_model::IN_CLUSTER_NAME,
                ferry_model::IN_CLUSTER_SERVER,
                client.clone(),
                tx.clone(),
            )
        };
        let sources = ferry_source::SourceCache::new(cfg.cache_dir.join("sources"))
            .map_err(|e| Error::Setup(e.to_string()))?;
        let ctl = Arc::new(Controller {
            tools: ferry_render::RenderTools::locate()
                .map(|mut t| {
                    for (k, v) in &cfg.plugin_env {
                        t.plugin_env.retain(|(key, _)| key != k);
                        t.plugin_env.push((k.clone(), v.clone()));
                    }
                    t
                })
                .map_err(|e| e.to_string()),
            cfg: cfg.clone(),
            client: client.clone(),
            apps: apps.clone(),
            projects: projects.clone(),
            secrets: secrets.clone(),
            plugin_maps,
            known_hosts,
            settings_cm,
            settings_parsed: Mutex::new(None),
            clusters: Mutex::new(HashMap::new()),
            local,
            sources,
            resolved: Mutex::new(HashMap::new()),
            rendered: Mutex::new(lru::LruCache::new(RENDER_CACHE)),
            resolvers: secrets::Resolvers::default(),
            secret_values: Mutex::new(HashMap::new()),
            compared: Mutex::new(lru::LruCache::new(COMPARE_CACHE)),
            dir_facts: Mutex::new(HashMap::new()),
            written: Mutex::new(HashMap::new()),
            wait_clock: Default::default(),
            shards: (cfg.shards > 1)
                .then(|| Arc::new(shards::Shards::new(cfg.shards, cfg.shard_by))),
            triggers: tx,
            queue: queue::Queue::default(),
            oam_queue: queue::Queue::default(),
            app_events: tokio::sync::broadcast::channel(256).0,
        });

        // Every task dies with this future: a replica that loses leadership (or
        // a caller that drops the controller) stops acting at once.
        let mut tasks = TaskGuard(Vec::new());
        let q = ctl.queue.clone();
        let events = ctl.app_events.clone();
        // Apps in any namespace need a cluster-wide watch; otherwise only the
        // controller's namespace is read.
        let apps_api = if cfg.application_namespaces.is_empty() {
            Api::<Application>::namespaced(client.clone(), &ns)
        } else {
            Api::<Application>::all(client.clone())
        };
        let app_stream =
            reflector::reflector(apps_w, watcher(apps_api, watcher::Config::default()))
                .default_backoff()
                .touched_objects();
        let served = ctl.clone();
        tasks.0.push(tokio::spawn(async move {
            let mut s = app_stream.boxed();
            while let Some(ev) = s.next().await {
                match ev {
                    Ok(app) if served.serves(&app) => {
                        q.add(&served.app_key(&app));
                        let _ = events.send(Arc::new(app));
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "application watch error"),
                }
            }
        }));
        // Project or credential changes can change any app's result.
        let all = {
            let ctl = ctl.clone();
            move || {
                for a in ctl.applications() {
                    ctl.queue.add(&ctl.app_key(&a));
                }
            }
        };
        let proj_stream = reflector::reflector(
            projects_w,
            watcher(
                Api::<AppProject>::namespaced(client.clone(), &ns),
                watcher::Config::default(),
            ),
        )
        .default_backoff()
        .touched_objects();
        let all1 = all.clone();
        tasks.0.push(tokio::spawn(async move {
            let mut s = proj_stream.boxed();
            while s.next().await.is_some() {
                all1();
            }
        }));
        let sec_cfg = watcher::Config::default().labels(SECRET_TYPE_LABEL);
        let sec_stream = reflector::reflector(
            secrets_w,
            watcher(Api::<Secret>::namespaced(client.clone(), &ns), sec_cfg),
        )
        .default_backoff()
        .touched_objects();
        let all2 = all.clone();
        tasks.0.push(tokio::spawn(async move {
            let mut s = sec_stream.boxed();
            while s.next().await.is_some() {
                all2();
            }
        }));
        let cm_cfg = watcher::Config::default().labels(PLUGIN_CONFIGMAP_LABEL);
        let cm_stream = reflector::reflector(
            plugin_w,
            watcher(Api::<ConfigMap>::namespaced(client.clone(), &ns), cm_cfg),
        )
        .default_backoff()
        .touched_objects();
        let kh_cfg =
            watcher::Config::default().fields(&format!("metadata.name={KNOWN_HOSTS_CONFIGMAP}"));
        let kh_stream = reflector::reflector(
            known_hosts_w,
            watcher(Api::<ConfigMap>::namespaced(client.clone(), &ns), kh_cfg),
        )
        .default_backoff()
        .touched_objects();
        let all5 = all.clone();
        tasks.0.push(tokio::spawn(async move {
            let mut s = kh_stream.boxed();
            while s.next().await.is_some() {
                all5();
            }
        }));
        let settings_cfg =
            watcher::Config::default().fields(&format!("metadata.name={SETTINGS_CONFIGMAP}"));
        let settings_stream = reflector::reflector(
            settings_w,
            watcher(
                Api::<ConfigMap>::namespaced(client.clone(), &ns),
                settings_cfg,
            ),
        )
        .default_backoff()
        .touched_objects();
        let all6 = all.clone();
        tasks.0.push(tokio::spawn(async move {
            let mut s = settings_stream.boxed();
            while s.next().await.is_some() {
                all6();
            }
        }));
        let all3 = all;
        tasks.0.push(tokio::spawn(async move {
            let mut s = cm_stream.boxed();
            while s.next().await.is_some() {
                all3();
            }
        }));
        // SIGUSR1: re-check every app now (used by the benchmark for one full pass).
        let all4 = {
            let ctl = ctl.clone();
            move || {
                for a in ctl.applications() {
                    ctl.queue.add(&ctl.app_key(&a));
                }
            }
        };
        tasks.0.push(tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            if let Ok(mut s) = signal(SignalKind::user_defined1()) {
                while s.recv().await.is_some() {
                    tracing::info!("SIGUSR1: re-checking every application");
                    all4();
                }
            }
        }));
        // A live object changed: re-compare the app that owns it (self-heal, health).
        let ctl2 = ctl.clone();
        tasks.0.push(tokio::spawn(async move {
            while let Some((_cluster, instance)) = rx.recv().await {
                if let Some((ns, name)) = oam::parse_instance(&instance) {
                    ctl2.oam_queue.add(&format!("{ns}/{name}"));
                    continue;
                }
                // Tracking instances are `name` in the controller's namespace
                // and `namespace_name` elsewhere; queue keys `name` and `namespace/name`.
                let key = match instance.split_once('_') {
                    Some((app_ns, name)) if app_ns == ctl2.cfg.namespace => name.to_string(),
                    Some((app_ns, name)) => format!("{app_ns}/{name}"),
                    None => instance,
                };
                ctl2.queue.add(&key);
            }
        }));
        // Every input a render depends on is known before the first pass: a
        // missing plugin definition would render with another tool.
        let ready = [
            apps.wait_until_ready().await,
            projects.wait_until_ready().await,
            secrets.wait_until_ready().await,
            ctl.plugin_maps.wait_until_ready().await,
            ctl.known_hosts.wait_until_ready().await,
            ctl.settings_cm.wait_until_ready().await,
        ];
        for r in ready {
            r.map_err(|e| Error::Setup(format!("initial list failed: {e}")))?;
        }
        Ok((ctl, tasks))
    }
}

/// A task that ends with its owner (a leader's loops end when it stops leading).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn run_as_leader(
    client: Client,
    cfg: Config,
    stopping: tokio::sync::watch::Receiver<bool>,
) -> Result<(), Error> {
    ensure_default_project(&client, &cfg.namespace).await?;
    let (ctl, tasks) = Controller::watch(client.clone(), cfg.clone()).await?;
    metrics::watch_apps(ctl.apps.clone());
    cfg.ready.set(true);
    let _singletons = Singletons::start(&client, &ctl).await;
    let mut workers = spawn_workers(&ctl, stopping);
    futures::future::join_all(workers.0.iter_mut()).await;
    drop(tasks);
    Ok(())
}

/// What one replica runs for all: image automation, KubeVela, ApplicationSets and
/// notifications. Dropping it stops them.
struct Singletons {
    _images: Option<TaskGuard>,
    _oam: Option<TaskGuard>,
    _appsets: AbortOnDrop,
    _notifications: AbortOnDrop,
}

impl Singletons {
    async fn start(client: &Client, ctl: &Arc<Controller>) -> Singletons {
        let cfg = &ctl.cfg;
        Singletons {
            _images: if cfg.image_automation {
                Some(images::Images::start(client.clone(), ctl.clone()).await)
            } else {
                None
            },
            _oam: if cfg.oam {
                Some(oam::Oam::start(client.clone(), ctl.clone()).await)
            } else {
                None
            },
            _appsets: AbortOnDrop(appset::start(client.clone(), ctl.clone())),
            _notifications: AbortOnDrop(notifications::start(client.clone(), ctl.clone())),
        }
    }
}

/// The Application workers: each takes an app from the queue and reconciles it; with shards,
/// only apps of a shard this replica holds (counted while they run, so a shard is handed
/// over only once its reconciles ended).
fn spawn_workers(ctl: &Arc<Controller>, stopping: tokio::sync::watch::Receiver<bool>) -> TaskGuard {
    let mut workers = Vec::new();
    for _ in 0..ctl.cfg.workers.max(1) {
        let ctl = ctl.clone();
        let mut stopping = stopping.clone();
        workers.push(tokio::spawn(async move {
            loop {
                // A reconcile under way is never cut here; stopping only ends the wait for the next.
                let name = tokio::select! {
                    name = ctl.queue.next() => name,
                    _ = stopping.wait_for(|s| *s) => return,
                };
                let shard = match &ctl.shards {
                    Some(shards) => match ctl.shard_of_key(&name) {
                        // Gone from the cache (or not in it yet): nothing to reconcile; the
                        // apps watch queues it again when it arrives.
                        None => {
                            if let Ok(mut w) = ctl.written.lock() {
                                w.remove(&name);
                            }
                            ctl.queue.done(&name);
                            continue;
                        }
                        Some(shard) if !shards.begin(shard) => {
                            // Another replica's: it is queued here again if this one takes the shard.
                            ctl.queue.done(&name);
                            continue;
                        }
                        other => other,
                    },
                    None => None,
                };
                let started = Instant::now();
                // Every line logged while reconciling names the app and its namespace.
                let (app_ns, app_name) = ctl.split_app_key(&name);
                let span = tracing::info_span!("reconcile", app = %app_name, namespace = %app_ns);
                let next = tracing::Instrument::instrument(ctl.reconcile(&name), span).await;
                if let (Some(shards), Some(shard)) = (&ctl.shards, shard) {
                    shards.end(shard);
                }
                let m = metrics::get();
                m.reconciles.inc();
                m.reconcile_seconds.observe(started.elapsed().as_secs_f64());
                if let Some(app) = ctl.application(&name) {
                    m.app_reconcile
                        .get_or_create(&metrics::ReconcileLabels {
                            namespace: app.metadata.namespace.clone().unwrap_or_default(),
                            dest_server: app.spec.destination.server.clone().unwrap_or_default(),
                        })
                        .observe(started.elapsed().as_secs_f64());
                }
                tracing::debug!(app = %name, ms = started.elapsed().as_millis() as u64, "reconciled");
                ctl.queue.done(&name);
                if let Some(delay) = next {
                    ctl.queue.add_after(&name, delay);
                }
            }
        }));
    }
    TaskGuard(workers)
}

/// Several replicas, each reconciling the apps of the shards it holds (`shards`); the
/// replica holding the `ferry-controller` Lease also runs the singletons. On shutdown the
/// workers finish (up to half a lease), then every shard and the Lease are handed back.
async fn run_sharded(
    client: Client,
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    tokio::pin!(shutdown);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    ensure_default_project(&client, &cfg.namespace).await?;
    let (ctl, tasks) = Controller::watch(client.clone(), cfg.clone()).await?;
    metrics::watch_apps(ctl.apps.clone());
    let Some(shards) = ctl.shards.clone() else {
        return Err(Error::Setup("sharding without shards".into()));
    };
    cfg.ready.set(true);
    tracing::info!(identity = %cfg.identity, shards = cfg.shards, by = ?cfg.shard_by, "sharded controller");
    let manager = {
        let ctl = ctl.clone();
        let client = client.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            let queue_shard = |shard: u32| {
                for app in ctl.applications() {
                    if ctl.shard_of(&app) == shard {
                        ctl.queue.add(&ctl.app_key(&app));
                    }
                }
            };
            shards::run(
                client,
                &ctl.cfg.namespace,
                &ctl.cfg.identity,
                ctl.cfg.lease_duration,
                &shards,
                queue_shard,
                stop,
            )
            .await;
        })
    };
    let le = Arc::new(leader::LeaderElection::new(
        client.clone(),
        &cfg.namespace,
        "ferry-controller",
        &cfg.identity,
        cfg.lease_duration,
    ));
    let singletons = {
        let (client, ctl, le) = (client.clone(), ctl.clone(), le.clone());
        AbortOnDrop(tokio::spawn(async move {
            loop {
                le.acquire().await;
                tracing::info!("holding the ferry-controller Lease: running the singletons");
                let running = Singletons::start(&client, &ctl).await;
                le.hold().await;
                tracing::warn!("lost the ferry-controller Lease: stopping the singletons");
                drop(running);
            }
        }))
    };
    let mut workers = spawn_workers(&ctl, stop_rx);
    let all_workers = futures::future::join_all(workers.0.iter_mut());
    tokio::pin!(all_workers);
    tokio::select! {
        _ = &mut all_workers => {}
        () = &mut shutdown => {
            tracing::info!(identity = %cfg.identity, "shutting down: finishing running reconciles");
            let _ = stop_tx.send(true);
            let _ = tokio::time::timeout(cfg.lease_duration / 2, &mut all_workers).await;
        }
    }
    drop(singletons);
    let _ = manager.await;
    if let Err(e) = le.release().await {
        tracing::warn!(error = %e, "could not release the lease; it expires on its own");
    }
    drop(tasks);
    Ok(())
}

/// Argo CD's namespace patterns: globs, or `/regex/`.
pub fn namespace_allowed(patterns: &[String], ns: &str) -> bool {
    patterns
        .iter()
        .any(|p| ferry_model::glob::glob_or_regex_match(p, ns))
}

/// Aborts its tasks when dropped.
pub struct TaskGuard(pub(crate) Vec<tokio::task::JoinHandle<()>>);

impl Controller {
    /// The namespace Applications, AppProjects and credentials live in.
    pub fn namespace(&self) -> &str {
        &self.cfg.namespace
    }

    /// Applications as the watch cache has them, in every namespace served.
    pub fn applications(&self) -> Vec<Arc<Application>> {
        let mut apps = self.apps.state();
        if !self.cfg.application_namespaces.is_empty() {
            apps.retain(|a| self.serves(a));
        }
        apps
    }

    /// An Application by queue key: `name` in the controller's namespace,
    /// `namespace/name` elsewhere (Argo CD's spelling).
    pub fn application(&self, key: &str) -> Option<Arc<Application>> {
        let (ns, name) = self.split_app_key(key);
        self.apps
            .get(&reflector::ObjectRef::new(name).within(ns))
            .filter(|a| self.serves(a))
    }

    /// The queue key of an Application (see [`Self::application`]).
    /// The shard an app belongs to among this replica's `shards`.
    pub(crate) fn shard_of(&self, app: &Application) -> u32 {
        let Some(shards) = &self.shards else {
            return 0;
        };
        let dest = &app.spec.destination;
        let cluster_shard = self.secrets.state().iter().find_map(|s| {
            let c = clusters::ClusterSecret::from_secret(s)?;
            let this = dest.server.as_deref() == Some(c.server.as_str())
                || (dest.server.is_none() && dest.name.as_deref() == Some(c.name.as_str()));
            if !this {
                return None;
            }
            let field = clusters::decode(s).get("shard")?.trim().to_string();
            match field.parse::<u32>() {
                Ok(shard) => Some(shard),
                Err(_) => {
                    // Not silently hashed instead: said once, with what was found.
                    if shards.first_report(&format!("{}={field}", s.name_any())) {
                        tracing::warn!(
                            secret = %s.name_any(),
                            shard = %field,
                            "cluster Secret's shard field is not a number; its apps are placed by hash"
                        );
                    }
                    None
                }
            }
        });
        shards::shard_of(app, shards.n, shards.by, cluster_shard)
    }

    /// The shard of the app queued as `key`; None when it is gone from the cache.
    pub(crate) fn shard_of_key(&self, key: &str) -> Option<u32> {
        self.application(key).map(|a| self.shard_of(&a))
    }

    pub fn app_key(&self, app: &Application) -> String {
        match app.metadata.namespace.as_deref() {
            Some(ns) if ns != self.cfg.namespace => format!("{ns}/{}", app.name_any()),
            _ => app.name_any(),
        }
    }

    pub(crate) fn split_app_key<'k>(&'k self, key: &'k str) -> (&'k str, &'k str) {
        key.split_once('/')
            .unwrap_or((self.cfg.namespace.as_str(), key))
    }

    /// Whether Applications in this app's namespace are served here.
    pub fn serves(&self, app: &Application) -> bool {
        self.serves_namespace(app.metadata.namespace.as_deref().unwrap_or_default())
    }

    /// Whether Applications in `ns` are served here.
    pub fn serves_namespace(&self, ns: &str) -> bool {
        ns == self.cfg.namespace || namespace_allowed(&self.cfg.application_namespaces, ns)
    }

    pub fn app_projects(&self) -> Vec<Arc<AppProject>> {
        self.projects.state()
    }

    pub fn app_project(&self, name: &str) -> Option<Arc<AppProject>> {
        self.projects
            .get(&reflector::ObjectRef::new(name).within(&self.cfg.namespace))
    }

    /// Application changes from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Application>> {
        self.app_events.subscribe()
    }

    /// A client for the app's destination cluster, and that cluster's name.
    pub async fn destination_client(&self, app: &Application) -> Result<(Client, String), String> {
        let (conn, _server, name) = self
            .destination(&app.spec.destination)
            .await
            .map_err(|s| s.message)?;
        Ok((conn.client.clone(), name))
    }

    /// Ferry just pushed to `url`: forget resolved revisions of it and
    /// re-check the Applications reading it, instead of waiting for a poll.
    pub(crate) fn repo_pushed(&self, url: &str) {
        let same = |u: &str| ferry_source::same_repo(u, url);
        if let Ok(mut m) = self.resolved.lock() {
            m.retain(|(u, _), _| !same(u));
        }
        for a in self.applications() {
            if a.sources().iter().any(|s| same(&s.repo_url)) {
                self.queue.add(&self.app_key(&a));
            }
        }
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Installs the CRDs Ferry serves ([`crds::all`]) when absent and upgrades the ones it installed
/// before (labelled as Ferry's, by the controller or by `ferry install`), so a new Ferry brings
/// its CRDs along. Others' CRDs of the same names (Argo CD's) are used as they are; refuses to
/// run when they belong to a running Argo CD application controller.
pub async fn install_crds(client: &Client) -> Result<(), Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for crd in crds::all() {
        let name = crd["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match api.get_opt(&name).await? {
            Some(existing) => {
                let ours = existing
                    .labels()
                    .get(crds::MANAGED_BY_LABEL)
                    .map(String::as_str)
                    == Some(crds::MANAGED_BY_VALUE);
                let current = serde_json::to_value(&existing.spec).unwrap_or_default();
                if ours && !is_subset(&crd["spec"], &current) {
                    // Forced: `kubectl apply` of the install manifest owns the fields too.
                    let pp = PatchParams::apply("ferry-controller").force();
                    api.patch(&name, &pp, &Patch::Apply(&crd)).await?;
                    tracing::info!(crd = %name, "upgraded CRD");
                }
            }
            None => {
                let obj: CustomResourceDefinition =
                    serde_json::from_value(crd).map_err(|e| Error::Setup(e.to_string()))?;
                match api.create(&PostParams::default(), &obj).await {
                    Ok(_) => tracing::info!(crd = %name, "installed CRD"),
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        names.push(name);
    }
    // Wait until the API server serves them all (they are established concurrently).
    for name in names {
        for _ in 0..100 {
            let established = api
                .get_opt(&name)
                .await?
                .and_then(|c| c.status)
                .and_then(|s| s.conditions)
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            if established {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Whether everything `want` says is in `have` (which the API server has filled with defaults).
fn is_subset(want: &serde_json::Value, have: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (want, have) {
        // The API server drops empty maps and lists (`subresources: {}`).
        (Value::Object(w), Value::Object(h)) => w.iter().all(|(k, v)| match h.get(k) {
            Some(hv) => is_subset(v, hv),
            None => match v {
                Value::Object(m) => m.is_empty(),
                Value::Array(a) => a.is_empty(),
                Value::Null => true,
                _ => false,
            },
        }),
        (Value::Array(w), Value::Array(h)) => {
            w.len() == h.len() && w.iter().zip(h).all(|(a, b)| is_subset(a, b))
        }
        _ => want == have,
    }
}

/// A ready `argocd-application-controller` (a StatefulSet, as Argo CD installs it, or a
/// Deployment) anywhere this identity can list: its namespace and name.
async fn argocd_controller_running(client: &Client) -> Option<String> {
    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
    let lp = kube::api::ListParams::default().fields("metadata.name=argocd-application-controller");
    let ready = |n: Option<i32>| n.unwrap_or(0) > 0;
    let sts = Api::<StatefulSet>::all(client.clone()).list(&lp).await;
    let deploys = Api::<Deployment>::all(client.clone()).list(&lp).await;
    sts.ok()
        .into_iter()
        .flat_map(|l| l.items)
        .find(|s| ready(s.status.as_ref().and_then(|st| st.ready_replicas)))
        .map(|s| {
            format!(
                "StatefulSet {}/{}",
                s.namespace().unwrap_or_default(),
                s.name_any()
            )
        })
        .or_else(|| {
            deploys
                .ok()
                .into_iter()
                .flat_map(|l| l.items)
                .find(|d| ready(d.status.as_ref().and_then(|st| st.ready_replicas)))
                .map(|d| {
                    format!(
                        "Deployment {}/{}",
                        d.namespace().unwrap_or_default(),
                        d.name_any()
                    )
                })
        })
}

/// Creates the `default` AppProject when missing (the controller and the API server both do,
/// as Argo CD's do, so an app created right after either starts finds it).
pub async fn ensure_default_project(client: &Client, ns: &str) -> Result<(), Error> {
    let api: Api<AppProject> = Api::namespaced(client.clone(), ns);
    if api.get_opt("default").await?.is_none() {
        let p = AppProject::default_project(ns);
        let pp = PatchParams::apply("ferry");
        api.patch("default", &pp, &Patch::Apply(&p)).await?;
    }
    Ok(())
}

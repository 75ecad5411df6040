//! `ferry controller`: runs the reconciler against a kubeconfig or in cluster.

use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args)]
pub struct ControllerArgs {
    /// Namespace of Applications, AppProjects and repository/cluster Secrets.
    #[arg(long, default_value = "argocd", env = "FERRY_NAMESPACE")]
    namespace: String,
    /// Kubeconfig to use (default: $KUBECONFIG, ~/.kube/config, then in-cluster).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Seconds between polls of each repository.
    #[arg(long, default_value_t = 180)]
    poll_seconds: u64,
    /// Concurrent reconciles.
    #[arg(long, default_value_t = 16)]
    workers: usize,
    /// Directory for the Git and chart cache.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Directories of CMP plugin.yaml files (besides ConfigMaps labelled ferry.dev/cmp-plugin).
    #[arg(long = "plugin-dir")]
    plugin_dirs: Vec<PathBuf>,
    /// Do not install or upgrade the CRDs (a namespaced install, whose identity may not).
    #[arg(long)]
    no_install_crds: bool,
    /// A namespaced install: watch and deliver in --namespace only; anything else is an error
    /// on the app (the identity has Roles, no ClusterRoles).
    #[arg(long)]
    namespaced: bool,
    /// Run without leader election (a single replica).
    #[arg(long)]
    no_leader_election: bool,
    /// Seconds a leader's lease lasts without renewal.
    #[arg(long, default_value_t = 15)]
    lease_seconds: u64,
    /// This replica's identity in the lease (default: hostname-pid).
    #[arg(long)]
    identity: Option<String>,
    /// Seconds to wait for one sync wave to become healthy.
    #[arg(long, default_value_t = 300)]
    wave_timeout_seconds: u64,
    /// Do not serve Flux's ImageRepository, ImagePolicy and ImageUpdateAutomation.
    #[arg(long)]
    no_image_automation: bool,
    /// Serve image automation objects in this namespace only (default: all namespaces).
    #[arg(long)]
    image_namespace: Option<String>,
    /// Do not serve KubeVela's core.oam.dev Applications.
    #[arg(long)]
    no_oam: bool,
    /// Serve KubeVela Applications in this namespace only (default: all namespaces).
    #[arg(long)]
    oam_namespace: Option<String>,
    /// Also serve Argo CD Applications in these namespaces (comma-separated
    /// globs or /regex/), as Argo CD's --application-namespaces; their
    /// AppProjects must list them in sourceNamespaces.
    #[arg(long, value_delimiter = ',')]
    application_namespaces: Vec<String>,
    /// Split the Applications into this many shards across replicas, each shard held by a
    /// Lease (1: one leader does all). Argo CD's ARGOCD_CONTROLLER_REPLICAS is read as well.
    #[arg(long, default_value_t = 1, env = "ARGOCD_CONTROLLER_REPLICAS")]
    shards: u32,
    /// What puts an app in a shard: its destination `cluster` (as Argo CD; a cluster
    /// Secret's `shard` field pins it) or a hash of the `app`.
    #[arg(long, value_enum, default_value = "cluster")]
    shard_by: ShardByArg,
    /// Address to serve /metrics on (reconciles, syncs, Git and render durations).
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ShardByArg {
    Cluster,
    App,
}

/// Plugins reach the cluster as this process does (argocd-vault-plugin's `-s secret`): the
/// `--kubeconfig` given, else what the environment already says (passed on by ferry-render).
pub fn plugin_env(kubeconfig: Option<&std::path::Path>) -> Vec<(String, String)> {
    kubeconfig
        .and_then(|p| std::path::absolute(p).ok())
        .map(|p| vec![("KUBECONFIG".to_string(), p.display().to_string())])
        .unwrap_or_default()
}

/// A client from `kubeconfig`, else $KUBECONFIG, ~/.kube/config, then in-cluster.
pub async fn kube_client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let mut cfg = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading {}", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "no kubeconfig found and not running in a cluster (pass --kubeconfig or set KUBECONFIG)",
        )?,
    };
    ferry_controller::clusters::identify(&mut cfg);
    Ok(kube::Client::try_from(cfg)?)
}

pub async fn run(args: ControllerArgs) -> anyhow::Result<()> {
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let cfg = ferry_controller::Config {
        namespace: args.namespace,
        cache_dir: args
            .cache_dir
            .unwrap_or_else(|| std::env::temp_dir().join("ferry-cache")),
        poll_interval: Duration::from_secs(args.poll_seconds.max(1)),
        workers: args.workers,
        plugin_dirs: args.plugin_dirs,
        leader_election: !args.no_leader_election,
        install_crds: !args.no_install_crds && !args.namespaced,
        namespaced: args.namespaced,
        lease_duration: Duration::from_secs(args.lease_seconds.max(2)),
        identity: args
            .identity
            .unwrap_or_else(|| format!("{}-{}", host.trim(), std::process::id())),
        wave_timeout: Duration::from_secs(args.wave_timeout_seconds),
        image_automation: !args.no_image_automation,
        image_namespace: args.image_namespace,
        oam: !args.no_oam,
        oam_namespace: args.oam_namespace,
        application_namespaces: args.application_namespaces,
        plugin_env: plugin_env(args.kubeconfig.as_deref()),
        shards: args.shards.max(1),
        shard_by: match args.shard_by {
            ShardByArg::Cluster => ferry_controller::shards::ShardBy::Cluster,
            ShardByArg::App => ferry_controller::shards::ShardBy::App,
        },
        ..ferry_controller::Config::default()
    };
    let _metrics = match args.metrics_addr {
        Some(addr) => {
            let ready = cfg.ready.clone();
            let (local, task) = ferry_server::metrics::serve_with_health(
                addr,
                ferry_server::metrics::controller_registry(),
                std::sync::Arc::new(move || ready.get()),
            )
            .await
            .with_context(|| format!("listening on {addr}"))?;
            tracing::info!(%local, "serving metrics");
            Some(AbortOnDrop(task))
        }
        None => None,
    };
    // SIGTERM (a rolling restart, `kubectl delete pod`) and Ctrl-C both stop gracefully: the
    // running reconciles finish and the Lease is released for the standby replica.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    ferry_controller::run_until(client, cfg, shutdown)
        .await
        .context("controller stopped")
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

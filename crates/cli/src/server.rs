//! `ferry server`: the HTTP API, webhooks and metrics.

use anyhow::Context;
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Args)]
pub struct ServerArgs {
    /// Namespace of Applications, AppProjects, credentials and settings.
    #[arg(long, default_value = "argocd", env = "FERRY_NAMESPACE")]
    namespace: String,
    /// Kubeconfig to use (default: $KUBECONFIG, ~/.kube/config, then in-cluster).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Address to serve the API on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address to serve /metrics on (unauthenticated, as Argo CD's).
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    /// Directory for the Git and chart cache of the diff and manifest endpoints.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Directories of CMP plugin.yaml files.
    #[arg(long = "plugin-dir")]
    plugin_dirs: Vec<PathBuf>,
    /// Also serve Applications in these namespaces (comma-separated globs or
    /// /regex/), as the controller's --application-namespaces.
    #[arg(long, value_delimiter = ',')]
    application_namespaces: Vec<String>,
    /// A namespaced install: read live objects in --namespace only (the identity has Roles,
    /// no ClusterRoles).
    #[arg(long)]
    namespaced: bool,
    /// Serve plain HTTP (behind a proxy that terminates TLS), as argocd-server --insecure.
    #[arg(long)]
    insecure: bool,
    /// PEM certificate chain to serve (default: Secret argocd-server-tls, else a self-signed
    /// certificate made at start).
    #[arg(long, requires = "tls_key_file", conflicts_with = "insecure")]
    tls_cert_file: Option<PathBuf>,
    /// The certificate's PEM private key.
    #[arg(long, requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let client = crate::controller::kube_client(args.kubeconfig.as_deref()).await?;
    let cfg = ferry_server::ServerConfig {
        namespace: args.namespace,
        listen: args.listen,
        metrics_listen: args.metrics_addr,
        cache_dir: args
            .cache_dir
            .unwrap_or_else(|| std::env::temp_dir().join("ferry-server-cache")),
        plugin_dirs: args.plugin_dirs,
        application_namespaces: args.application_namespaces,
        plugin_env: crate::controller::plugin_env(args.kubeconfig.as_deref()),
        namespaced: args.namespaced,
        tls: match (args.insecure, args.tls_cert_file, args.tls_key_file) {
            (true, _, _) => ferry_server::tls::TlsMode::Off,
            (false, Some(cert), Some(key)) => ferry_server::tls::TlsMode::Files { cert, key },
            _ => ferry_server::tls::TlsMode::Auto,
        },
    };
    let (started, serve) = ferry_server::start(client, cfg)
        .await
        .context("starting the server")?;
    if let Some(p) = &started.initial_admin_password {
        // Printed once, on the terminal that started the server; it is also
        // in the Secret argocd-initial-admin-secret until deleted.
        println!("Initial admin password (also in Secret argocd-initial-admin-secret): {p}");
    }
    let how = match started.tls {
        None => " (plain HTTP: --insecure)",
        Some(ferry_server::tls::CertSource::SelfSigned) => {
            " (self-signed certificate: `ferry login --insecure`)"
        }
        Some(ferry_server::tls::CertSource::Secret) => " (certificate of Secret argocd-server-tls)",
        Some(ferry_server::tls::CertSource::Files) => "",
    };
    // The last line: scripts and tests read the address from it.
    println!("The web UI is at {}/applications{how}", started.url());
    if let Some(m) = started.metrics_addr {
        println!("Serving metrics on http://{m}/metrics");
    }
    println!("Serving the API on {}", started.url());
    tokio::select! {
        () = serve => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

//! server: Ferry's HTTP API — Argo CD-style application, project, repository and cluster endpoints, accounts and tokens, RBAC, Git webhooks and metrics.
//!
//! The server keeps no state of its own: settings, accounts and tokens live
//! in `argocd-cm`, `argocd-rbac-cm` and `argocd-secret`; applications and
//! projects are read from watch caches shared with a read-only controller
//! (`ferry_controller::Controller::watch`), which also renders and compares
//! for the diff and manifest endpoints. See docs/api.md.

mod admin;
mod api;
mod appset;
mod auth;
mod error;
mod hooks;
pub mod metrics;
mod oam;
mod oidc;
pub mod openapi;
pub mod rbac;
mod settings;
pub mod tls;
mod tree;
mod ui;
pub mod version;
pub mod webhook;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use kube::Client;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use settings::{ARGOCD_CM, ARGOCD_SECRET, INITIAL_ADMIN_SECRET, RBAC_CM};

#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where Applications, AppProjects, credentials and settings live.
    pub namespace: String,
    pub listen: SocketAddr,
    /// `/metrics` listener; none when absent.
    pub metrics_listen: Option<SocketAddr>,
    /// Cache for the sources the diff and manifest endpoints render.
    pub cache_dir: PathBuf,
    pub plugin_dirs: Vec<PathBuf>,
    /// Further namespaces whose Applications are served (globs or `/regex/`),
    /// named `namespace/name` in paths or with `?appNamespace=`.
    pub application_namespaces: Vec<String>,
    /// Environment for config-management plugins besides Argo CD's (`KUBECONFIG`), as the
    /// controller's: the diff and manifest endpoints render as it does.
    pub plugin_env: Vec<(String, String)>,
    /// A namespaced install: live objects are read in `namespace` only.
    pub namespaced: bool,
    /// HTTPS (the default) or plain HTTP.
    pub tls: tls::TlsMode,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Setup(String),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What a started server tells its caller.
pub struct Started {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    /// The admin password when this start generated it (print it once).
    pub initial_admin_password: Option<String>,
    /// Where the HTTPS certificate came from; none when serving plain HTTP.
    pub tls: Option<tls::CertSource>,
}

impl Started {
    /// The URL the API and the UI answer on.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }
}

async fn track(State(st): State<Arc<api::AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    st.metrics
        .requests
        .get_or_create(&metrics::RouteLabels {
            method,
            route,
            code: resp.status().as_u16(),
        })
        .observe(started.elapsed().as_secs_f64());
    resp
}

fn router(state: Arc<api::AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        // The router serves only once the watch caches are listed (see `start`).
        .route("/readyz", get(|| async { "ok" }))
        .route(
            "/api/version",
            get(|| async {
                axum::Json(
                    tokio::task::spawn_blocking(version::info)
                        .await
                        .map(|v| serde_json::to_value(v).unwrap_or_default())
                        .unwrap_or_default(),
                )
            }),
        )
        .route(
            "/api/openapi.json",
            get(|| async { axum::Json(openapi::document()) }),
        )
        .route("/api/v1/session", post(admin::login))
        .route("/api/v1/session/userinfo", get(admin::userinfo))
        .route("/api/v1/account", get(admin::list_accounts))
        .route("/api/v1/account/password", put(admin::update_password))
        .route(
            "/api/v1/applications",
            get(api::list_apps).post(api::create_app),
        )
        .route(
            "/api/v1/applications/{name}",
            get(api::get_app)
                .put(api::update_app)
                .delete(api::delete_app),
        )
        .route("/api/v1/applications/{name}/sync", post(api::sync_app))
        .route(
            "/api/v1/applications/{name}/syncwindows",
            get(api::app_sync_windows),
        )
        .route("/api/v1/oam/applications", get(oam::list))
        .route("/api/v1/oam/applications/{namespace}/{name}", get(oam::get))
        .route(
            "/api/v1/oam/applications/{namespace}/{name}/resume",
            post(oam::resume),
        )
        .route(
            "/api/v1/applications/{name}/rollback",
            post(api::rollback_app),
        )
        .route(
            "/api/v1/applications/{name}/managed-resources",
            get(api::managed_resources),
        )
        .route("/api/v1/applications/{name}/manifests", get(api::manifests))
        .route(
            "/api/v1/applications/{name}/resource-tree",
            get(api::resource_tree),
        )
        .route("/api/v1/applications/{name}/events", get(api::app_events))
        .route("/api/v1/stream/applications", get(api::stream_apps))
        .route(
            "/api/v1/projects",
            get(admin::list_projects).post(admin::create_project),
        )
        .route(
            "/api/v1/projects/{name}",
            get(admin::get_project)
                .put(admin::update_project)
                .delete(admin::delete_project),
        )
        .route(
            "/api/v1/projects/{project}/roles/{role}/token",
            post(admin::create_token),
        )
        .route(
            "/api/v1/projects/{project}/roles/{role}/token/{iat}",
            delete(admin::delete_token),
        )
        .route(
            "/api/v1/repositories",
            get(admin::list_repos).post(admin::create_repo),
        )
        .route("/api/v1/repositories/{repo}", delete(admin::delete_repo))
        .route(
            "/api/v1/clusters",
            get(admin::list_clusters).post(admin::create_cluster),
        )
        .route("/api/v1/clusters/{server}", delete(admin::delete_cluster))
        .route(
            "/api/webhook",
            post(hooks::receive).layer(DefaultBodyLimit::max(1024 * 1024)),
        )
        .route("/api/v1/settings", get(admin::public_settings))
        .route(
            "/api/v1/applicationsets",
            get(appset::list).post(appset::create),
        )
        .route(
            "/api/v1/applicationsets/{name}",
            get(appset::get).delete(appset::delete),
        )
        .merge(ui::router())
        .layer(DefaultBodyLimit::max(4 * 1024 * 1024))
        .layer(axum::middleware::from_fn(ui::headers))
        .layer(axum::middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// Argo CD's `?appNamespace=ns` on `/api/v1/applications/{name}...` becomes
/// the path form `ns%2Fname` the handlers read, so both spellings reach the
/// same app and neither silently means the server's own namespace.
async fn app_namespace_param(mut req: axum::extract::Request) -> axum::extract::Request {
    const PREFIX: &str = "/api/v1/applications/";
    let uri = req.uri().clone();
    let (Some(query), Some(rest)) = (uri.query(), uri.path().strip_prefix(PREFIX)) else {
        return req;
    };
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let namespaces: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k == "appNamespace")
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
        .collect();
    let Some(ns) = namespaces.first() else {
        return req;
    };
    // Two different namespaces, or one that is not a name: an invalid path
    // that the handlers answer 400, never a guess.
    let ns = if namespaces.iter().all(|n| n == ns) && api::check_name(ns).is_ok() {
        ns.to_string()
    } else {
        "invalid-appNamespace!".to_string()
    };
    let (name, tail) = rest.split_once('/').map_or((rest, ""), |(n, t)| (n, t));
    let mut path = format!("{PREFIX}{ns}%2F{name}");
    if !tail.is_empty() {
        path = format!("{path}/{tail}");
    }
    let kept: Vec<(String, String)> = pairs
        .into_iter()
        .filter(|(k, _)| k != "appNamespace")
        .collect();
    if !kept.is_empty() {
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(kept)
            .finish();
        path = format!("{path}?{query}");
    }
    if let Ok(new_uri) = path.parse() {
        *req.uri_mut() = new_uri;
    }
    req
}

/// Prepares settings, starts the watches and binds the listeners; the
/// returned future serves until dropped.
pub async fn start(
    client: Client,
    cfg: ServerConfig,
) -> Result<(Started, impl std::future::Future<Output = ()>), ServerError> {
    let initial = auth::bootstrap(&client, &cfg.namespace).await?;
    ferry_controller::ensure_default_project(&client, &cfg.namespace)
        .await
        .map_err(|e| ServerError::Setup(format!("default project: {e}")))?;
    let (settings, mut tasks) = settings::Settings::start(&client, &cfg.namespace)
        .await
        .map_err(ServerError::Setup)?;
    // The secret we may just have written must be visible before serving.
    for _ in 0..100 {
        if settings.secret().contains_key("server.secretkey") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let ctl_cfg = ferry_controller::Config {
        namespace: cfg.namespace.clone(),
        cache_dir: cfg.cache_dir.clone(),
        plugin_dirs: cfg.plugin_dirs.clone(),
        leader_election: false,
        install_crds: false,
        image_automation: false,
        application_namespaces: cfg.application_namespaces.clone(),
        plugin_env: cfg.plugin_env.clone(),
        namespaced: cfg.namespaced,
        ..ferry_controller::Config::default()
    };
    let (ctl, ctl_tasks) = ferry_controller::Controller::watch(client.clone(), ctl_cfg)
        .await
        .map_err(|e| ServerError::Setup(e.to_string()))?;
    let metrics = metrics::ServerMetrics::new();
    let client_for_tls = client.clone();
    let oidc = oidc::Oidc::new();
    let state = Arc::new(api::AppState {
        client,
        ns: cfg.namespace.clone(),
        ctl,
        settings,
        metrics: metrics.clone(),
        webhook_bucket: Mutex::new((40.0, Instant::now())),
        login_slots: tokio::sync::Semaphore::new(4),
        oidc,
        secure_cookies: !matches!(cfg.tls, tls::TlsMode::Off),
        namespaced: cfg.namespaced,
    });
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ServerError::Listen {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ServerError::Listen {
            addr: cfg.listen,
            source,
        })?;
    let tls = tls::server_config(&client_for_tls, &cfg.namespace, &cfg.tls).await?;
    let mut metrics_addr = None;
    if let Some(m) = cfg.metrics_listen {
        let render = {
            let metrics = metrics.clone();
            Arc::new(move || metrics.encode()) as Arc<dyn Fn() -> String + Send + Sync>
        };
        let (a, t) = metrics::serve(m, render)
            .await
            .map_err(|source| ServerError::Listen { addr: m, source })?;
        metrics_addr = Some(a);
        tasks.push(t);
    }
    // Rewritten before routing, so the route sees `ns%2Fname`.
    let app = tower::Layer::layer(
        &axum::middleware::map_request(app_namespace_param),
        router(state),
    );
    let cert_source = tls.as_ref().map(|(_, s)| s.clone());
    let serve = async move {
        let _keep = (ctl_tasks, Guard(tasks));
        match tls {
            Some((tls_cfg, _)) => tls::serve(listener, tls_cfg, app).await,
            None => {
                let app = axum::ServiceExt::<axum::extract::Request>::into_make_service(app);
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "server stopped");
                }
            }
        }
    };
    Ok((
        Started {
            addr,
            metrics_addr,
            initial_admin_password: initial,
            tls: cert_source,
        },
        serve,
    ))
}

/// Aborts the settings watches and the metrics listener with the server.
struct Guard(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Guard {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

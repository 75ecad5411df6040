//! The server's Prometheus metrics (API latency by route, webhook results)
//! and the listener that serves them with the controller's.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub provider: String,
    pub result: String,
}

pub struct ServerMetrics {
    pub requests: Family<RouteLabels, Histogram>,
    pub webhooks: Family<WebhookLabels, Counter>,
    pub registry: Registry,
}

impl ServerMetrics {
    pub fn new() -> Arc<ServerMetrics> {
        let requests = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        let webhooks = Family::<WebhookLabels, Counter>::default();
        let mut registry = Registry::default();
        registry.register(
            "ferry_api_request_duration_seconds",
            "API requests by method, route and status code",
            requests.clone(),
        );
        registry.register(
            "ferry_webhook_requests",
            "Webhook deliveries by provider and result",
            webhooks.clone(),
        );
        ferry_controller::metrics::register(&mut registry);
        ferry_controller::notifications::register(&mut registry);
        Arc::new(ServerMetrics {
            requests,
            webhooks,
            registry,
        })
    }

    pub fn webhook(&self, provider: &str, result: &str) {
        self.webhooks
            .get_or_create(&WebhookLabels {
                provider: provider.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `GET /metrics` from `registry` on `addr` until the task is dropped.
pub async fn serve(
    addr: std::net::SocketAddr,
    render: Arc<dyn Fn() -> String + Send + Sync>,
) -> std::io::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    serve_with_health(addr, render, Arc::new(|| true)).await
}

/// [`serve`], with `/healthz` (the process answers) and `/readyz` (`ready()`: 200 or 503) beside
/// `/metrics`, as Argo CD's controller serves its probe on the metrics port.
pub async fn serve_with_health(
    addr: std::net::SocketAddr,
    render: Arc<dyn Fn() -> String + Send + Sync>,
    ready: Arc<dyn Fn() -> bool + Send + Sync>,
) -> std::io::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let ready = ready();
                async move {
                    if ready {
                        (axum::http::StatusCode::OK, "ok")
                    } else {
                        (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            "caches not synced",
                        )
                    }
                }
            }),
        )
        .route(
            "/metrics",
            axum::routing::get(move || {
                let render = render.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        render(),
                    )
                }
            }),
        );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((local, task))
}

/// The controller's metrics alone (for `ferry controller --metrics-addr`).
pub fn controller_registry() -> Arc<dyn Fn() -> String + Send + Sync> {
    let mut registry = Registry::default();
    ferry_controller::metrics::register(&mut registry);
    ferry_controller::notifications::register(&mut registry);
    Arc::new(move || {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    })
}

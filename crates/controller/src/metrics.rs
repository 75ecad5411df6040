//! The controller's Prometheus metrics: reconciles, sync results, Git and
//! render durations. Process-wide, registered into whatever registry the
//! binary serves. Where Argo CD's application controller has a metric, it is
//! served under Argo CD's name and labels (`argocd_app_info`,
//! `argocd_app_sync_total`, `argocd_app_reconcile`, `argocd_git_request_total`,
//! `argocd_git_request_duration_seconds`) so existing dashboards and alerts
//! work; the rest are `ferry_*`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::LazyLock;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GitLabel {
    pub request_type: String,
}

fn buckets() -> impl Iterator<Item = f64> {
    // 5ms .. ~80s
    exponential_buckets(0.005, 2.0, 15)
}

/// Argo CD's `argocd_app_sync_total` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppSyncLabels {
    pub namespace: String,
    pub name: String,
    pub project: String,
    pub dest_server: String,
    pub phase: String,
}

/// Argo CD's `argocd_app_reconcile` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub namespace: String,
    pub dest_server: String,
}

/// Argo CD's `argocd_git_request_*` labels (`request_type`: ls-remote or fetch).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RepoLabels {
    pub repo: String,
    pub request_type: String,
}

pub struct Metrics {
    pub app_syncs: Family<AppSyncLabels, Counter>,
    pub app_reconcile: Family<ReconcileLabels, Histogram>,
    pub git_requests: Family<RepoLabels, Counter>,
    pub git_request_seconds: Family<RepoLabels, Histogram>,
    pub reconciles: Counter,
    pub reconcile_seconds: Histogram,
    pub syncs: Family<PhaseLabel, Counter>,
    pub git_seconds: Family<GitLabel, Histogram>,
    pub render_seconds: Histogram,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    app_syncs: Family::default(),
    // Argo CD's buckets.
    app_reconcile: Family::new_with_constructor(|| {
        Histogram::new([0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0])
    }),
    git_requests: Family::default(),
    git_request_seconds: Family::new_with_constructor(|| {
        Histogram::new([0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 10.0, 20.0])
    }),
    reconciles: Counter::default(),
    reconcile_seconds: Histogram::new(buckets()),
    syncs: Family::default(),
    git_seconds: Family::new_with_constructor(|| Histogram::new(buckets())),
    render_seconds: Histogram::new(buckets()),
});

pub fn get() -> &'static Metrics {
    &METRICS
}

/// Adds the controller's metrics to `registry` (names as Argo CD's where it has them).
pub fn register(registry: &mut Registry) {
    let m = get();
    registry.register_collector(Box::new(AppInfo));
    registry.register(
        "argocd_app_sync",
        "Number of application syncs.",
        m.app_syncs.clone(),
    );
    registry.register(
        "argocd_app_reconcile",
        "Application reconciliation performance in seconds.",
        m.app_reconcile.clone(),
    );
    registry.register(
        "argocd_git_request",
        "Number of git requests performed by repo server",
        m.git_requests.clone(),
    );
    registry.register(
        "argocd_git_request_duration_seconds",
        "Git requests duration seconds.",
        m.git_request_seconds.clone(),
    );
    registry.register(
        "ferry_app_reconcile",
        "Application reconciles",
        m.reconciles.clone(),
    );
    registry.register(
        "ferry_app_reconcile_duration_seconds",
        "Time one application reconcile took",
        m.reconcile_seconds.clone(),
    );
    registry.register(
        "ferry_app_sync",
        "Sync operations by result phase",
        m.syncs.clone(),
    );
    registry.register(
        "ferry_git_request_duration_seconds",
        "Git requests (ls-remote, fetch) by type",
        m.git_seconds.clone(),
    );
    registry.register(
        "ferry_render_duration_seconds",
        "Time one source took to render",
        m.render_seconds.clone(),
    );
}

/// A Git request to `repo` (`ls-remote`, or `checkout` — counted as Argo CD's `fetch`, cached
/// or not).
pub(crate) fn git(repo: &str, kind: &str, took: Duration) {
    let labels = RepoLabels {
        repo: repo.to_string(),
        request_type: if kind == "checkout" { "fetch" } else { kind }.to_string(),
    };
    get().git_requests.get_or_create(&labels).inc();
    get()
        .git_request_seconds
        .get_or_create(&labels)
        .observe(took.as_secs_f64());
    get()
        .git_seconds
        .get_or_create(&GitLabel {
            request_type: kind.to_string(),
        })
        .observe(took.as_secs_f64());
}

/// The Applications `argocd_app_info` describes: the leading controller's watch cache.
static APPS: std::sync::RwLock<Option<kube::runtime::reflector::Store<ferry_model::Application>>> =
    std::sync::RwLock::new(None);

pub(crate) fn watch_apps(store: kube::runtime::reflector::Store<ferry_model::Application>) {
    if let Ok(mut apps) = APPS.write() {
        *apps = Some(store);
    }
}

/// Argo CD's `argocd_app_info`: one series per Application, computed at scrape time from the
/// watch cache (no request to the API server).
#[derive(Debug)]
struct AppInfo;

impl prometheus_client::collector::Collector for AppInfo {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::MetricType;
        use prometheus_client::metrics::gauge::ConstGauge;
        let apps = match APPS.read().ok().and_then(|a| a.clone()) {
            Some(store) => store.state(),
            None => return Ok(()),
        };
        let mut family = encoder.encode_descriptor(
            "argocd_app_info",
            "Information about application.",
            None,
            MetricType::Gauge,
        )?;
        for app in apps {
            let labels = app_info_labels(&app);
            let metric = family.encode_family(&labels)?;
            ConstGauge::new(1i64).encode(metric)?;
        }
        Ok(())
    }
}

/// `argocd_app_info`'s labels, as Argo CD's controller sets them.
pub fn app_info_labels(app: &ferry_model::Application) -> Vec<(&'static str, String)> {
    let st = app.status.clone().unwrap_or_default();
    let or_unknown = |s: Option<String>| {
        s.filter(|s| !s.is_empty())
            .unwrap_or_else(|| "Unknown".into())
    };
    let operation = if app.metadata.deletion_timestamp.is_some() {
        "delete"
    } else if app.operation.as_ref().is_some_and(|o| o.sync.is_some()) {
        "sync"
    } else {
        ""
    };
    let repo = app
        .spec
        .source
        .as_ref()
        .map(|s| s.repo_url.clone())
        .or_else(|| {
            app.spec
                .sources
                .as_ref()?
                .first()
                .map(|s| s.repo_url.clone())
        })
        .unwrap_or_default();
    vec![
        (
            "namespace",
            app.metadata.namespace.clone().unwrap_or_default(),
        ),
        ("name", app.metadata.name.clone().unwrap_or_default()),
        ("project", app.spec.project.clone()),
        (
            "autosync_enabled",
            app.spec
                .sync_policy
                .as_ref()
                .is_some_and(|p| p.automated.is_some())
                .to_string(),
        ),
        ("repo", repo),
        (
            "dest_server",
            app.spec.destination.server.clone().unwrap_or_default(),
        ),
        (
            "dest_namespace",
            app.spec.destination.namespace.clone().unwrap_or_default(),
        ),
        ("sync_status", or_unknown(st.sync.map(|s| s.status))),
        ("health_status", or_unknown(st.health.map(|h| h.status))),
        ("operation", operation.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_info_is_argo_cds_series() {
        let (reader, mut writer) = kube::runtime::reflector::store::<ferry_model::Application>();
        let app: ferry_model::Application = serde_json::from_value(serde_json::json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": { "name": "guestbook", "namespace": "argocd" },
            "spec": {
                "project": "default",
                "source": { "repoURL": "https://example.com/repo.git", "path": "." },
                "destination": { "server": "https://kubernetes.default.svc", "namespace": "gb" },
                "syncPolicy": { "automated": {} },
            },
            "status": { "sync": { "status": "Synced" }, "health": { "status": "Healthy" } },
        }))
        .unwrap();
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(app));
        watch_apps(reader);
        let mut registry = Registry::default();
        register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                "argocd_app_info{namespace=\"argocd\",name=\"guestbook\",project=\"default\",autosync_enabled=\"true\",repo=\"https://example.com/repo.git\",dest_server=\"https://kubernetes.default.svc\",dest_namespace=\"gb\",sync_status=\"Synced\",health_status=\"Healthy\",operation=\"\"} 1"
            ),
            "{text}"
        );
    }
}

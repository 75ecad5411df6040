//! The controller's Prometheus metrics: reconciles, sync results, Git and
//! render durations. Process-wide, registered into whatever registry the
//! binary serves.

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

pub struct Metrics {
    pub reconciles: Counter,
    pub reconcile_seconds: Histogram,
    pub syncs: Family<PhaseLabel, Counter>,
    pub git_seconds: Family<GitLabel, Histogram>,
    pub render_seconds: Histogram,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
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

pub(crate) fn git(kind: &str, took: Duration) {
    get()
        .git_seconds
        .get_or_create(&GitLabel {
            request_type: kind.to_string(),
        })
        .observe(took.as_secs_f64());
}

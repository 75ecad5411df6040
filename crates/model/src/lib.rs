//! model: the API types Ferry serves (Argo CD `argoproj.io/v1alpha1` Application and AppProject) and their CRDs.
//!
//! Fields follow Argo CD's names exactly so existing YAML deserializes
//! unchanged. Unknown fields are tolerated: the CRDs preserve them, and Ferry
//! only ever writes `status` (by merge patch), never the whole object.

mod application;
pub mod crds;
mod project;
pub mod tracking;

pub use application::*;
pub use project::*;

/// Annotations and labels Argo CD users already put on their objects.
pub mod annotations {
    pub const TRACKING_ID: &str = "argocd.argoproj.io/tracking-id";
    pub const SYNC_WAVE: &str = "argocd.argoproj.io/sync-wave";
    pub const HOOK: &str = "argocd.argoproj.io/hook";
    pub const HOOK_DELETE_POLICY: &str = "argocd.argoproj.io/hook-delete-policy";
    pub const SYNC_OPTIONS: &str = "argocd.argoproj.io/sync-options";
    pub const COMPARE_OPTIONS: &str = "argocd.argoproj.io/compare-options";
    pub const REFRESH: &str = "argocd.argoproj.io/refresh";
    pub const SECRET_TYPE_LABEL: &str = "argocd.argoproj.io/secret-type";
    pub const RESOURCES_FINALIZER: &str = "resources-finalizer.argocd.argoproj.io";
    pub const RESOURCES_FINALIZER_BACKGROUND: &str =
        "resources-finalizer.argocd.argoproj.io/background";
    pub const RESOURCES_FINALIZER_FOREGROUND: &str =
        "resources-finalizer.argocd.argoproj.io/foreground";
    pub const MANIFEST_GENERATE_PATHS: &str = "argocd.argoproj.io/manifest-generate-paths";
}

/// The server URL Argo CD uses for the cluster it runs in.
pub const IN_CLUSTER_SERVER: &str = "https://kubernetes.default.svc";
pub const IN_CLUSTER_NAME: &str = "in-cluster";

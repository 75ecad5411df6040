//! model: the API types Ferry serves (Argo CD Application and AppProject, Flux image automation) and their CRDs.
//!
//! Fields follow Argo CD's names exactly so existing YAML deserializes
//! unchanged. Unknown fields are kept (each struct's flattened `unknown`) and
//! reported by `unsupported_fields`, so Ferry never acts as if a field it does
//! not implement were absent; it only ever writes `status`, never the whole object.

mod application;
pub mod appset;
pub mod crds;
mod duration;
pub mod flux;
pub mod glob;
mod project;
pub mod settings;
mod sync_window;
pub mod tracking;
mod unsupported;

pub use application::*;
pub use duration::parse_go_duration;
pub use project::*;
pub use sync_window::*;

/// Implements `kube::Resource` for a namespaced type with a static group,
/// version, kind and plural, so each API type is one line instead of twenty.
#[macro_export]
#[doc(hidden)]
macro_rules! namespaced_resource {
    ($ty:ty, $group:literal, $version:literal, $kind:literal, $plural:literal) => {
        impl kube::Resource for $ty {
            type DynamicType = ();
            type Scope = k8s_openapi::NamespaceResourceScope;
            fn kind(_: &()) -> std::borrow::Cow<'_, str> {
                $kind.into()
            }
            fn group(_: &()) -> std::borrow::Cow<'_, str> {
                $group.into()
            }
            fn version(_: &()) -> std::borrow::Cow<'_, str> {
                $version.into()
            }
            fn plural(_: &()) -> std::borrow::Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.metadata
            }
            fn meta_mut(
                &mut self,
            ) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

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

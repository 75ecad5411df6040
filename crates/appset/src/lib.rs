//! appset: Argo CD ApplicationSets, pure: parameter sets from generators over given inputs (clusters, repository trees), and the Applications the template makes of them.
//!
//! The controller fetches what generators read and implements [`Inputs`]; a generator that
//! needs a repository not fetched yet says so ([`Error::NeedRepo`]) and the controller fetches
//! it and asks again. Semantics follow Argo CD's applicationset controller (docs/applicationsets.md).

pub mod fields;
pub mod generate;
pub mod render;

pub use fields::unknown_fields;
pub use generate::{Cluster, Generated, Inputs, Tree, generate};
pub use render::{Rendered, render_all};

/// A parameter set: flat string values with dotted keys (`path.basename`) in the default
/// mode, nested values with `goTemplate: true`.
pub type Params = serde_json::Map<String, serde_json::Value>;

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum Error {
    /// The generator reads a repository revision the caller has not fetched yet.
    #[error("repository {url} at {revision} is needed")]
    NeedRepo { url: String, revision: String },
    /// The generator lists a forge's pull requests the caller has not fetched yet.
    #[error("pull requests of {0:?} are needed")]
    NeedPullRequests(Box<ferry_model::appset::PullRequestGenerator>),
    /// A generator's input or spec is wrong (Argo CD's `ApplicationGenerationFromParamsError`).
    #[error("{0}")]
    Generator(String),
    /// The template does not render, or renders into something that is not an Application
    /// (Argo CD's `RenderTemplateParamsError`).
    #[error("{0}")]
    Render(String),
}

pub const RESOURCES_FINALIZER: &str = "resources-finalizer.argocd.argoproj.io";

#[cfg(test)]
mod tests;

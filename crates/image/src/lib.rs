//! image: Flux-style image automation logic: registry tag scans, image policies, setter markers and commit messages.
//!
//! Everything here is I/O-free except `registry`, which talks to an OCI
//! registry; the controller wires these pieces to the cluster and to Git.

pub mod policy;
pub mod registry;
pub mod setters;
/// Commit message templates: Go's text/template (the `ferry-gotemplate` crate).
pub use ferry_gotemplate as template;

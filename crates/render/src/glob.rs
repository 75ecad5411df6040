//! Directory include/exclude and plugin discovery globs: the shared matcher
//! of `ferry_model::glob` (globset), which also serves project rules and RBAC.

pub(crate) use ferry_model::glob::Glob;

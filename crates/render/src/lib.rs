//! render: turns a checked-out source tree into Kubernetes objects (directory, Kustomize, Helm, CMP plugins), without cluster access.
//!
//! [`render`] follows Argo CD's repo-server: the same source type selection,
//! the same tool invocations and the same environment for plugins. It is
//! blocking (it runs external tools); callers run it on a blocking thread.
//! The checked-out tree is only read: whenever a tool needs to write
//! (`kustomize edit`, `helm dependency build`, plugins), it works on a copy in
//! a private temporary directory, so concurrent renders never interfere.

mod directory;
mod envsubst;
mod error;
mod exec;
mod fsutil;
mod glob;
mod helm;
mod jsonnet;
mod kustomize;
pub mod kustomize_edit;
mod manifest;
mod plugin;
mod tools;

pub use error::RenderError;
pub use manifest::parse_manifests;
pub use plugin::{PluginCommand, PluginConfig, PluginDiscover};
pub use tools::RenderTools;

use ferry_model::{ApplicationSource, DirectorySource, HelmSource, KustomizeSource};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything needed to render one Application source.
#[derive(Debug, Clone, Copy)]
pub struct RenderInput<'a> {
    pub app_name: &'a str,
    /// Destination namespace (helm --namespace, ARGOCD_APP_NAMESPACE).
    pub app_namespace: &'a str,
    pub source: &'a ApplicationSource,
    /// Root of the checked-out repository (or, when `source.chart` is set, the unpacked chart directory itself).
    pub repo_root: &'a Path,
    /// Resolved commit sha (or chart version for chart sources).
    pub revision: &'a str,
    /// `ref` name -> checked-out root of that other source, for Helm valueFiles like `$values/env/prod.yaml`.
    pub refs: &'a BTreeMap<String, PathBuf>,
    /// Kubernetes version of the destination, e.g. "1.20.2" (helm --kube-version, KUBE_VERSION).
    pub kube_version: &'a str,
    /// group/version strings the destination serves (helm --api-versions, KUBE_API_VERSIONS).
    pub api_versions: &'a [String],
    pub plugins: &'a [PluginConfig],
    pub tools: &'a RenderTools,
    /// Each external command is killed (whole process group) after this.
    pub timeout: Duration,
}

/// How a source was rendered; `as_str` gives Argo CD's `status.sourceType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceType {
    Directory,
    Kustomize,
    Helm,
    Plugin,
}

impl SourceType {
    pub fn as_str(&self) -> &'static str {
        match self {
            SourceType::Directory => "Directory",
            SourceType::Kustomize => "Kustomize",
            SourceType::Helm => "Helm",
            SourceType::Plugin => "Plugin",
        }
    }
}

impl std::fmt::Display for SourceType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The objects a source renders to, in the order the tool produced them.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub source_type: SourceType,
    pub objects: Vec<Value>,
    /// Directory sources: files present but not rendered (not a manifest
    /// extension), repository-relative. Empty for the other tools.
    pub skipped: Vec<String>,
}

/// What one render works with, resolved once.
pub(crate) struct Ctx<'a> {
    pub input: &'a RenderInput<'a>,
    /// Canonical repository root.
    pub root: PathBuf,
    /// Canonical application directory inside `root`.
    pub app: PathBuf,
    /// `app` relative to `root` (empty for the root itself).
    pub app_rel: PathBuf,
    /// Argo CD's build environment (ARGOCD_APP_*), for plugins and `$VAR`
    /// substitution.
    pub build_env: Vec<(String, String)>,
}

impl Ctx<'_> {
    pub fn source(&self) -> &ApplicationSource {
        self.input.source
    }

    /// A path under the app directory, as users know it (repository-relative).
    pub fn display(&self, p: &Path) -> String {
        p.strip_prefix(&self.root)
            .unwrap_or(p)
            .display()
            .to_string()
    }

    pub fn app_display(&self) -> String {
        let s = self.app_rel.display().to_string();
        if s.is_empty() { ".".into() } else { s }
    }
}

enum Selection<'p> {
    Directory,
    Kustomize,
    Helm,
    Plugin(&'p PluginConfig),
}

/// Renders one Application source into Kubernetes objects.
pub fn render(input: &RenderInput) -> Result<Rendered, RenderError> {
    let source = input.source;
    let root = fsutil::canonical_root(input.repo_root)?;
    fsutil::check_symlinks(&root, input.repo_root)?;
    // A chart source is rendered from the unpacked chart itself; its `path`
    // has no meaning there.
    let rel = if source.is_helm_repo() {
        ""
    } else {
        source.path.as_deref().unwrap_or("")
    };
    let app = fsutil::app_dir(&root, rel)?;
    let app_rel = app
        .strip_prefix(&root)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let ctx = Ctx {
        input,
        build_env: build_env(input),
        root,
        app,
        app_rel,
    };
    let tool = |source_type, objects| Rendered {
        source_type,
        objects,
        skipped: Vec::new(),
    };
    Ok(match select(&ctx)? {
        Selection::Directory => {
            let out = directory::render(&ctx)?;
            Rendered {
                source_type: SourceType::Directory,
                objects: out.objects,
                skipped: out.skipped,
            }
        }
        Selection::Kustomize => tool(SourceType::Kustomize, kustomize::render(&ctx)?),
        Selection::Helm => tool(SourceType::Helm, helm::render(&ctx)?),
        Selection::Plugin(p) => tool(SourceType::Plugin, plugin::render(&ctx, p)?),
    })
}

/// Argo CD's choice of tool: an explicitly configured type wins (blocks left
/// at their zero value do not count, as Argo CD normalises them away); a
/// chart source is Helm; otherwise a CMP plugin whose discovery rules match,
/// then a kustomization, then Chart.yaml, else plain manifests.
fn select<'p>(ctx: &'p Ctx) -> Result<Selection<'p>, RenderError> {
    let s = ctx.source();
    let mut explicit = Vec::new();
    if s.kustomize.as_ref().is_some_and(|k| !kustomize_is_zero(k)) {
        explicit.push(SourceType::Kustomize);
    }
    if s.helm.as_ref().is_some_and(|h| !helm_is_zero(h)) {
        explicit.push(SourceType::Helm);
    }
    if s.directory.as_ref().is_some_and(|d| !directory_is_zero(d)) {
        explicit.push(SourceType::Directory);
    }
    if s.plugin.is_some() {
        explicit.push(SourceType::Plugin);
    }
    if explicit.len() > 1 {
        let names: Vec<&str> = explicit.iter().map(SourceType::as_str).collect();
        return Err(RenderError::InvalidSource(format!(
            "multiple application sources defined: {}",
            names.join(",")
        )));
    }
    match (explicit.first(), s.is_helm_repo()) {
        (Some(SourceType::Plugin), _) => {
            let name = s
                .plugin
                .as_ref()
                .and_then(|p| p.name.as_deref())
                .unwrap_or("");
            return plugin::choose(ctx, name).map(Selection::Plugin);
        }
        (Some(SourceType::Helm), _) | (None, true) => return Ok(Selection::Helm),
        (Some(t), true) => {
            return Err(RenderError::InvalidSource(format!(
                "chart {:?} is rendered with Helm; {} options do not apply",
                s.chart.as_deref().unwrap_or_default(),
                t.as_str()
            )));
        }
        (Some(SourceType::Kustomize), false) => return Ok(Selection::Kustomize),
        (Some(SourceType::Directory), false) => return Ok(Selection::Directory),
        (None, false) => {}
    }
    if let Some(p) = plugin::discover(ctx)? {
        return Ok(Selection::Plugin(p));
    }
    if kustomize::kustomization_file(&ctx.app).is_some() {
        return Ok(Selection::Kustomize);
    }
    if ctx.app.join("Chart.yaml").is_file() {
        return Ok(Selection::Helm);
    }
    Ok(Selection::Directory)
}

fn helm_is_zero(h: &HelmSource) -> bool {
    h.value_files.is_empty()
        && h.values.as_deref().is_none_or(str::is_empty)
        && h.values_object.as_ref().is_none_or(Value::is_null)
        && h.parameters.is_empty()
        && h.release_name.as_deref().is_none_or(str::is_empty)
        && !h.skip_crds
        && !h.ignore_missing_value_files
        && !h.pass_credentials
        && h.namespace.as_deref().is_none_or(str::is_empty)
        && h.file_parameters.is_empty()
        && !h.skip_schema_validation
        && !h.skip_tests
        && h.version.as_deref().is_none_or(str::is_empty)
        && h.kube_version.as_deref().is_none_or(str::is_empty)
        && h.api_versions.is_empty()
}

pub(crate) fn kustomize_is_zero(k: &KustomizeSource) -> bool {
    k.images.is_empty()
        && k.name_prefix.as_deref().is_none_or(str::is_empty)
        && k.name_suffix.as_deref().is_none_or(str::is_empty)
        && k.namespace.as_deref().is_none_or(str::is_empty)
        && k.common_labels.is_empty()
        && k.common_annotations.is_empty()
        && k.patches.is_empty()
        && k.components.is_empty()
        && k.replicas.is_empty()
        && !k.force_common_labels
        && !k.force_common_annotations
        && !k.common_annotations_envsubst
        && !k.label_without_selector
        && !k.label_include_templates
        && !k.ignore_missing_components
        && k.version.as_deref().is_none_or(str::is_empty)
}

fn directory_is_zero(d: &DirectorySource) -> bool {
    !d.recurse
        && d.jsonnet
            .as_ref()
            .is_none_or(ferry_model::JsonnetSource::is_empty)
        && d.include.as_deref().is_none_or(str::is_empty)
        && d.exclude.as_deref().is_none_or(str::is_empty)
}

/// Argo CD's build environment variables.
fn build_env(input: &RenderInput) -> Vec<(String, String)> {
    let short = |n: usize| input.revision.chars().take(n).collect::<String>();
    let s = input.source;
    vec![
        ("ARGOCD_APP_NAME".into(), input.app_name.into()),
        ("ARGOCD_APP_NAMESPACE".into(), input.app_namespace.into()),
        ("ARGOCD_APP_REVISION".into(), input.revision.into()),
        ("ARGOCD_APP_REVISION_SHORT".into(), short(7)),
        ("ARGOCD_APP_REVISION_SHORT_8".into(), short(8)),
        (
            "ARGOCD_APP_SOURCE_PATH".into(),
            s.path.clone().unwrap_or_default(),
        ),
        ("ARGOCD_APP_SOURCE_REPO_URL".into(), s.repo_url.clone()),
        (
            "ARGOCD_APP_SOURCE_TARGET_REVISION".into(),
            s.target_revision.clone().unwrap_or_default(),
        ),
    ]
}

//! One helm or kustomize source fetched and rendered, for the callers without the Argo CD
//! pipeline's render cache: KubeVela's source components and `ferry render --fetch`.

use ferry_model::ApplicationSource;
use ferry_render::{PluginConfig, RenderTools};
use ferry_source::{RepoCredentials, SourceCache, scrub_url};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// A fetched tree and its revision (commit sha or chart version).
pub struct Fetched {
    pub dir: PathBuf,
    pub revision: String,
}

/// Fetches `source`: the chart (Helm repository) or the commit its revision resolves to.
/// `Ok(None)` when that commit is `unchanged_from`: there is nothing new to render.
pub async fn fetch(
    cache: &SourceCache,
    tools: &RenderTools,
    source: &ApplicationSource,
    creds: Option<&RepoCredentials>,
    unchanged_from: Option<&str>,
) -> Result<Option<Fetched>, String> {
    if source.is_helm_repo() {
        let chart = source.chart.clone().unwrap_or_default();
        let version = source.target_revision.clone().unwrap_or_default();
        let (dir, revision) = cache
            .helm_chart(&tools.helm, &source.repo_url, &chart, &version, creds)
            .await
            .map_err(|e| {
                format!(
                    "failed to fetch chart {chart} from {}: {e}",
                    scrub_url(&source.repo_url)
                )
            })?;
        return Ok(Some(Fetched { dir, revision }));
    }
    let sha = cache
        .resolve(&source.repo_url, source.revision(), creds)
        .await
        .map_err(|e| e.to_string())?;
    if unchanged_from == Some(sha.as_str()) {
        return Ok(None);
    }
    let dir = cache
        .checkout(&source.repo_url, &sha, creds)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Some(Fetched { dir, revision: sha }))
}

/// What to render a fetched tree for.
pub struct Target<'a> {
    pub app_name: &'a str,
    pub namespace: &'a str,
    /// Empty when there is no cluster to ask (`helm template` then uses its defaults).
    pub kube_version: &'a str,
    pub api_versions: &'a [String],
    pub plugins: &'a [PluginConfig],
    pub timeout: Duration,
}

/// Renders a fetched tree with `ferry-render` on a blocking thread.
pub async fn render(
    tools: &RenderTools,
    source: &ApplicationSource,
    fetched: Fetched,
    target: Target<'_>,
) -> Result<Vec<Value>, String> {
    let (tools, s) = (tools.clone(), source.clone());
    let (app, ns, kv) = (
        target.app_name.to_string(),
        target.namespace.to_string(),
        target.kube_version.to_string(),
    );
    let (api_versions, plugins, timeout) = (
        target.api_versions.to_vec(),
        target.plugins.to_vec(),
        target.timeout,
    );
    crate::RENDERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out = tokio::task::spawn_blocking(move || {
        let refs = std::collections::BTreeMap::new();
        ferry_render::render(&ferry_render::RenderInput {
            app_name: &app,
            app_namespace: &ns,
            source: &s,
            repo_root: &fetched.dir,
            revision: &fetched.revision,
            refs: &refs,
            kube_version: &kv,
            api_versions: &api_versions,
            plugins: &plugins,
            tools: &tools,
            timeout,
        })
    })
    .await
    .map_err(|e| format!("render task failed: {e}"))?
    .map_err(|e| {
        format!(
            "rendering {} failed: {e}",
            source
                .path
                .as_deref()
                .or(source.chart.as_deref())
                .unwrap_or(".")
        )
    })?;
    Ok(out.objects)
}

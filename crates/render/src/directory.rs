//! Plain manifests: every `*.yaml`, `*.yml`, `*.json` and `*.jsonnet` in the
//! app path, as Argo CD's directory source renders them.

use crate::glob::Glob;
use crate::jsonnet::Evaluator;
use crate::{Ctx, RenderError, manifest};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

/// What a directory render produced, and the files it did not read.
pub(crate) struct DirectoryOutput {
    pub objects: Vec<Value>,
    /// Files in the walked directories that are not manifests (`README.md`,
    /// `*.libsonnet`, `values.tmpl`): reported when nothing rendered, so an
    /// empty app says what it skipped.
    pub skipped: Vec<String>,
}

pub(crate) fn render(ctx: &Ctx) -> Result<DirectoryOutput, RenderError> {
    let dir = ctx.source().directory.clone().unwrap_or_default();
    let compile = |field: &str, p: &Option<String>| -> Result<Option<Glob>, RenderError> {
        match p.as_deref().filter(|p| !p.is_empty()) {
            None => Ok(None),
            Some(p) => Glob::new(p)
                .map(Some)
                .map_err(|e| RenderError::InvalidSource(format!("directory.{field}: {e}"))),
        }
    };
    let include = compile("include", &dir.include)?;
    let exclude = compile("exclude", &dir.exclude)?;

    let mut files = Vec::new();
    let mut skipped = Vec::new();
    collect(&ctx.app, &ctx.app, dir.recurse, &mut files, &mut skipped)?;
    // Component-wise order is the order Argo CD's directory walk yields.
    files.sort();
    skipped.sort();

    let jsonnet_spec = dir.jsonnet.clone().unwrap_or_default();
    let mut jsonnet: Option<Evaluator> = None;
    let mut objects = Vec::new();
    let mut total = 0usize;
    for rel in files {
        let rel_str = rel.to_string_lossy().replace('\\', "/");
        if exclude.as_ref().is_some_and(|g| g.matches(&rel_str)) {
            continue;
        }
        if include.as_ref().is_some_and(|g| !g.matches(&rel_str)) {
            continue;
        }
        let path = ctx.app.join(&rel);
        let shown = ctx.display(&path);
        if rel_str.ends_with(".jsonnet") {
            let evaluator = match &jsonnet {
                Some(e) => e,
                None => jsonnet.insert(Evaluator::new(ctx, &jsonnet_spec)?),
            };
            objects.extend(evaluator.render_file(&path, &shown)?);
            continue;
        }
        let size = fs::metadata(&path)
            .map_err(|e| RenderError::io(format!("reading {shown}"), e))?
            .len() as usize;
        total += size;
        if total > crate::exec::OUTPUT_MAX {
            return Err(RenderError::InvalidSource(format!(
                "the directory's manifests exceed {} MiB (at {shown}); Ferry refuses larger renders",
                crate::exec::OUTPUT_MAX / (1024 * 1024)
            )));
        }
        let bytes = fs::read(&path).map_err(|e| RenderError::io(format!("reading {shown}"), e))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| crate::error::manifest_error(&shown, "file is not valid UTF-8"))?;
        objects.extend(manifest::parse_manifests(&text, &shown)?);
    }
    let skipped = skipped
        .into_iter()
        .map(|rel| ctx.display(&ctx.app.join(rel)))
        .collect();
    Ok(DirectoryOutput { objects, skipped })
}

fn is_manifest_name(name: &str) -> bool {
    [".yaml", ".yml", ".json", ".jsonnet"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// Relative paths of manifest files under `dir`. Hidden directories (`.git`,
/// `.github`) are never entered; symlinked directories are not followed and
/// broken symlinks are skipped, as in Argo CD.
fn collect(
    base: &Path,
    dir: &Path,
    recurse: bool,
    out: &mut Vec<PathBuf>,
    skipped: &mut Vec<PathBuf>,
) -> Result<(), RenderError> {
    let entries =
        fs::read_dir(dir).map_err(|e| RenderError::io_path("reading directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| RenderError::io_path("reading directory", dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let path = entry.path();
        let Ok(lmeta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if lmeta.is_dir() {
            if recurse && !name.starts_with('.') {
                collect(base, &path, recurse, out, skipped)?;
            }
            continue;
        }
        if !is_manifest_name(&name) {
            if !name.starts_with('.') && lmeta.is_file() {
                skipped.push(path.strip_prefix(base).unwrap_or(&path).to_path_buf());
            }
            continue;
        }
        if lmeta.file_type().is_symlink() {
            // The repository-wide symlink check already confined the target.
            match fs::metadata(&path) {
                Ok(m) if m.is_file() => {}
                _ => continue,
            }
        } else if !lmeta.is_file() {
            continue;
        }
        out.push(path.strip_prefix(base).unwrap_or(&path).to_path_buf());
    }
    Ok(())
}

//! Plain manifests: every `*.yaml`, `*.yml` and `*.json` in the app path.

use crate::glob::Glob;
use crate::{Ctx, RenderError, manifest};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

pub(crate) fn render(ctx: &Ctx) -> Result<Vec<Value>, RenderError> {
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
    collect(&ctx.app, &ctx.app, dir.recurse, &mut files)?;
    // Component-wise order is the order Argo CD's directory walk yields.
    files.sort();

    let mut objects = Vec::new();
    for rel in files {
        let rel_str = rel.to_string_lossy().replace('\\', "/");
        if exclude.as_ref().is_some_and(|g| g.matches(&rel_str, false)) {
            continue;
        }
        if include
            .as_ref()
            .is_some_and(|g| !g.matches(&rel_str, false))
        {
            continue;
        }
        let path = ctx.app.join(&rel);
        let shown = ctx.display(&path);
        let bytes = fs::read(&path).map_err(|e| RenderError::io(format!("reading {shown}"), e))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| crate::error::manifest_error(&shown, "file is not valid UTF-8"))?;
        objects.extend(manifest::parse_manifests(&text, &shown)?);
    }
    Ok(objects)
}

fn is_manifest_name(name: &str) -> bool {
    [".yaml", ".yml", ".json"]
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
                collect(base, &path, recurse, out)?;
            }
            continue;
        }
        if !is_manifest_name(&name) {
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

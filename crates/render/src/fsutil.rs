//! Path handling inside a checked-out repository: confinement to the root,
//! the out-of-bounds symlink check, and copying a tree for tools that write.

use crate::RenderError;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// Lexically cleans a path: drops `.`, applies `..`. A relative path that
/// climbs above its start keeps the leading `..` so callers see it escape.
pub(crate) fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                let popped = matches!(out.components().next_back(), Some(Component::Normal(_)));
                if popped {
                    out.pop();
                } else if !out.has_root() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

pub(crate) fn canonical_root(root: &Path) -> Result<PathBuf, RenderError> {
    fs::canonicalize(root).map_err(|e| RenderError::io_path("repository root", root, e))
}

/// Resolves the application's path inside the (canonical) repository root.
/// Returns the canonical directory.
pub(crate) fn app_dir(root: &Path, rel: &str) -> Result<PathBuf, RenderError> {
    let invalid = |reason: &str| RenderError::InvalidPath {
        path: rel.to_string(),
        reason: reason.to_string(),
    };
    if Path::new(rel).is_absolute() {
        return Err(invalid("app path is absolute"));
    }
    let joined = normalize(&root.join(rel));
    if !joined.starts_with(root) {
        return Err(invalid("app path is outside the repository root"));
    }
    let resolved = match fs::canonicalize(&joined) {
        Ok(p) => p,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(RenderError::PathNotFound {
                path: display_rel(rel),
            });
        }
        Err(e) => return Err(RenderError::io_path("resolving app path", &joined, e)),
    };
    if !resolved.starts_with(root) {
        return Err(invalid(
            "app path resolves through a symlink to outside the repository root",
        ));
    }
    if !resolved.is_dir() {
        return Err(invalid("app path is not a directory"));
    }
    Ok(resolved)
}

fn display_rel(rel: &str) -> String {
    if rel.is_empty() {
        ".".to_string()
    } else {
        rel.to_string()
    }
}

/// Resolves `file` (relative to `base`, or to `root` when absolute) and makes
/// sure the result, symlinks followed, stays inside `root`. Both `root` and
/// `base` must be canonical. The file need not exist.
pub(crate) fn resolve_in_root(root: &Path, base: &Path, file: &str) -> Result<PathBuf, String> {
    let p = Path::new(file);
    let joined = if p.is_absolute() {
        normalize(&root.join(p.strip_prefix("/").unwrap_or(p)))
    } else {
        normalize(&base.join(p))
    };
    if !joined.starts_with(root) {
        return Err("resolves to outside the repository root".into());
    }
    let resolved = resolve_existing_prefix(&joined);
    if !resolved.starts_with(root) {
        return Err("resolves through a symlink to outside the repository root".into());
    }
    if resolved == root {
        return Err("resolves to the repository root itself".into());
    }
    Ok(resolved)
}

/// Canonicalizes the longest existing ancestor of an already-normalized
/// absolute path and appends the rest unchanged.
fn resolve_existing_prefix(p: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut cur = p.to_path_buf();
    loop {
        if let Ok(c) = fs::canonicalize(&cur) {
            let mut out = c;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return out;
        }
        match (cur.file_name().map(|f| f.to_os_string()), cur.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                cur = parent.to_path_buf();
            }
            _ => return p.to_path_buf(),
        }
    }
}

/// Every symlink in the repository must point inside it, as Argo CD's
/// repo-server requires: a link to `/etc/passwd` or `../../other-app` would
/// otherwise let a manifest read files it has no business reading.
pub(crate) fn check_symlinks(root: &Path, given_root: &Path) -> Result<(), RenderError> {
    let given_abs = if given_root.is_absolute() {
        normalize(given_root)
    } else {
        std::env::current_dir()
            .map(|d| normalize(&d.join(given_root)))
            .unwrap_or_else(|_| root.to_path_buf())
    };
    walk(root, &mut |path, meta| {
        if !meta.file_type().is_symlink() {
            return Ok(());
        }
        let target =
            fs::read_link(path).map_err(|e| RenderError::io_path("reading symlink", path, e))?;
        let abs = if target.is_absolute() {
            normalize(&target)
        } else {
            normalize(&path.parent().unwrap_or(root).join(&target))
        };
        if abs.starts_with(root) || abs.starts_with(&given_abs) {
            return Ok(());
        }
        Err(RenderError::OutOfBoundsSymlink {
            file: path
                .strip_prefix(root)
                .unwrap_or(path)
                .display()
                .to_string(),
            target: target.display().to_string(),
        })
    })
}

/// Visits every entry under `dir` (not following symlinks), skipping `.git`.
pub(crate) fn walk(
    dir: &Path,
    f: &mut dyn FnMut(&Path, &fs::Metadata) -> Result<(), RenderError>,
) -> Result<(), RenderError> {
    let entries =
        fs::read_dir(dir).map_err(|e| RenderError::io_path("reading directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| RenderError::io_path("reading directory", dir, e))?;
        if entry.file_name() == ".git" {
            continue;
        }
        let path = entry.path();
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            // Files can vanish under a concurrent git operation (lock files).
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(RenderError::io_path("reading", &path, e)),
        };
        f(&path, &meta)?;
        if meta.is_dir() {
            walk(&path, f)?;
        }
    }
    Ok(())
}

/// Copies the repository (without `.git`) so tools that write — `kustomize
/// edit`, plugins — never touch the read-only checkout. Symlinks are copied
/// as links; absolute ones into the source are re-pointed into the copy so
/// writes through them stay in the copy too.
pub(crate) fn copy_tree(src: &Path, dst: &Path, preserve_mode: bool) -> Result<(), RenderError> {
    fs::create_dir_all(dst).map_err(|e| RenderError::io_path("creating", dst, e))?;
    // Should the temporary directory live inside the repository, the copy
    // must not copy itself.
    let dst_real = fs::canonicalize(dst).unwrap_or_else(|_| dst.to_path_buf());
    walk(src, &mut |path, meta| {
        if path.starts_with(&dst_real) {
            return Ok(());
        }
        let rel = path.strip_prefix(src).unwrap_or(path);
        let to = dst.join(rel);
        let ft = meta.file_type();
        if ft.is_dir() {
            fs::create_dir(&to).map_err(|e| RenderError::io_path("creating", &to, e))?;
        } else if ft.is_file() {
            fs::copy(path, &to).map_err(|e| RenderError::io_path("copying", path, e))?;
            let mode = if preserve_mode {
                // Owner-writable, so a read-only file can still be edited in the copy.
                meta.permissions().mode() | 0o200
            } else {
                0o644
            };
            fs::set_permissions(&to, fs::Permissions::from_mode(mode))
                .map_err(|e| RenderError::io_path("setting mode of", &to, e))?;
        } else if ft.is_symlink() {
            let target = fs::read_link(path)
                .map_err(|e| RenderError::io_path("reading symlink", path, e))?;
            let target = match target.strip_prefix(src) {
                Ok(inside) if target.is_absolute() => dst.join(inside),
                _ => target,
            };
            std::os::unix::fs::symlink(&target, &to)
                .map_err(|e| RenderError::io_path("creating symlink", &to, e))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_cleans_and_keeps_escapes_visible() {
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(normalize(Path::new("/a/../../etc")), PathBuf::from("/etc"));
        assert_eq!(normalize(Path::new("a/../../b")), PathBuf::from("../b"));
    }

    #[test]
    fn resolve_in_root_confines_paths() {
        let t = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(t.path()).unwrap();
        fs::create_dir_all(root.join("app")).unwrap();
        fs::write(root.join("app/v.yaml"), "a: 1").unwrap();
        let base = root.join("app");
        assert_eq!(
            resolve_in_root(&root, &base, "v.yaml").unwrap(),
            root.join("app/v.yaml")
        );
        assert_eq!(
            resolve_in_root(&root, &base, "/app/v.yaml").unwrap(),
            root.join("app/v.yaml")
        );
        assert!(resolve_in_root(&root, &base, "../../x.yaml").is_err());
        std::os::unix::fs::symlink("/etc/hostname", root.join("app/link.yaml")).unwrap();
        let err = resolve_in_root(&root, &base, "link.yaml").unwrap_err();
        assert!(err.contains("symlink"), "{err}");
    }
}

//! The `kustomize` that config-management plugins see: `edit` natively (kubectl embeds only
//! `build`; see `ferry_render::kustomize_edit`), `build` through the kustomize Ferry renders
//! with (`kubectl kustomize`, which also takes `--enable-helm`). Run as `ferry kustomize ...` or
//! through a link named `kustomize`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ferry_render::kustomize_edit::{KUSTOMIZATION_FILES, edit};

pub fn run(args: Vec<String>) -> ExitCode {
    match args.first().map(String::as_str) {
        Some("edit") => match run_edit(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("Error: {e}");
                ExitCode::FAILURE
            }
        },
        Some("build") | Some("version") => build(&args),
        _ => {
            eprintln!(
                "usage: kustomize edit (set|add) ... | kustomize build [DIR] [--enable-helm] (Ferry's kustomize: edit natively, build through kubectl kustomize)"
            );
            ExitCode::from(2)
        }
    }
}

fn run_edit(args: &[String]) -> Result<(), String> {
    let cwd = std::env::current_dir().map_err(|e| e.to_string())?;
    let found: Vec<&str> = KUSTOMIZATION_FILES
        .iter()
        .copied()
        .filter(|f| cwd.join(f).exists())
        .collect();
    let file = match found.as_slice() {
        [] => return Err("Missing kustomization file 'kustomization.yaml'.".into()),
        [one] => cwd.join(one),
        many => return Err(format!("Found multiple kustomization file: {many:?}")),
    };
    if file.is_dir() {
        return Err(format!("{} should be a file", file.display()));
    }
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let glob = |pattern: &str| expand(&cwd, pattern);
    let out = edit(&text, args, &glob)?;
    std::fs::write(&file, out).map_err(|e| format!("{}: {e}", file.display()))
}

/// Files under `dir` matching `pattern` (relative, sorted); none for a plain path that does
/// not exist, which kustomize then treats as a directory or remote target.
fn expand(dir: &Path, pattern: &str) -> Vec<String> {
    if !pattern.contains(['*', '?', '[']) {
        return if dir.join(pattern).exists() {
            vec![pattern.to_string()]
        } else {
            vec![]
        };
    }
    let Ok(glob) = ferry_model::glob::Glob::new(pattern) else {
        return vec![];
    };
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(dir.join(&rel)) else {
            continue;
        };
        for e in rd.flatten() {
            let r = rel.join(e.file_name());
            let s = r.to_string_lossy().to_string();
            if e.path().is_dir() {
                stack.push(r);
            } else if glob.matches_path(&s) {
                out.push(s);
            }
        }
    }
    out.sort();
    out
}

/// `kustomize build ...` through the next `kustomize` on the PATH that is not this program
/// (Ferry's tools: a wrapper over `kubectl kustomize`), with `helm` from the PATH too.
fn build(args: &[String]) -> ExitCode {
    let me = std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok());
    let find = |name: &str| -> Option<PathBuf> {
        let path = std::env::var_os("PATH")?;
        let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
        // Then where `make setup` puts the tools.
        if let Ok(t) = ferry_render::RenderTools::locate() {
            dirs.extend(t.kustomize.parent().map(Path::to_path_buf));
        }
        dirs.into_iter()
            .map(|d| d.join(name))
            .find(|p| p.is_file() && p.canonicalize().ok() != me)
    };
    let Some(kustomize) = find("kustomize") else {
        eprintln!("Error: no kustomize to build with (besides this program); run `make setup`");
        return ExitCode::FAILURE;
    };
    let mut cmd = std::process::Command::new(&kustomize);
    cmd.args(args);
    if args.iter().any(|a| a == "--enable-helm")
        && !args.iter().any(|a| a.starts_with("--helm-command"))
        && let Some(helm) = find("helm")
    {
        cmd.arg("--helm-command").arg(helm);
    }
    match cmd.status() {
        Ok(s) => ExitCode::from(s.code().unwrap_or(1) as u8),
        Err(e) => {
            eprintln!("Error: running {}: {e}", kustomize.display());
            ExitCode::FAILURE
        }
    }
}

//! `helm template`, with Argo CD's arguments and value file rules.

use crate::envsubst::envsubst;
use crate::exec::{self, Cmd};
use crate::{Ctx, RenderError, fsutil, manifest};
use ferry_model::HelmSource;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

/// Helm's message when `dependencies` are declared but `charts/` lacks them.
const MISSING_DEPENDENCY: [&str; 2] = [
    "found in Chart.yaml, but missing in charts/ directory",
    "found in requirements.yaml, but missing in charts/ directory",
];

pub(crate) fn render(ctx: &Ctx) -> Result<Vec<Value>, RenderError> {
    let helm = ctx.source().helm.clone().unwrap_or_default();
    let input = ctx.input;
    let tmp = tempfile::Builder::new()
        .prefix("ferry-helm-")
        .tempdir()
        .map_err(|e| RenderError::io("creating a temporary directory", e))?;
    let home = tmp.path().join("home");
    fs::create_dir(&home).map_err(|e| RenderError::io_path("creating", &home, e))?;

    let release = helm
        .release_name
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or(input.app_name);
    let namespace = helm
        .namespace
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or(input.app_namespace);

    check_helm_version(&helm)?;
    // Everything after the chart directory, which may change to a copy.
    let mut args: Vec<std::ffi::OsString> = vec!["--namespace".into(), namespace.into()];
    // The source's own kubeVersion/apiVersions replace what the destination reports.
    let kube_version = helm
        .kube_version
        .as_deref()
        .filter(|v| !v.is_empty())
        .unwrap_or(input.kube_version);
    if !kube_version.is_empty() {
        args.push("--kube-version".into());
        args.push(kube_version.into());
    }
    let api_versions: &[String] = if helm.api_versions.is_empty() {
        input.api_versions
    } else {
        &helm.api_versions
    };
    for v in api_versions {
        args.push("--api-versions".into());
        args.push(v.into());
    }
    if !helm.skip_crds {
        args.push("--include-crds".into());
    }
    if helm.skip_schema_validation {
        args.push("--skip-schema-validation".into());
    }
    if helm.skip_tests {
        args.push("--skip-tests".into());
    }
    for (i, raw) in helm.value_files.iter().enumerate() {
        if let Some(mut p) = resolve_value_file(ctx, &helm, raw)? {
            // Helm splits `--values` on commas, so such a path goes via a copy.
            if p.as_os_str().to_string_lossy().contains(',') {
                let copy = tmp.path().join(format!("valuefile-{i}.yaml"));
                fs::copy(&p, &copy).map_err(|e| RenderError::io_path("copying", &p, e))?;
                p = copy;
            }
            args.push("--values".into());
            args.push(p.into());
        }
    }
    if let Some(values) = inline_values(&helm) {
        let p = tmp.path().join("values.yaml");
        fs::write(&p, values).map_err(|e| RenderError::io_path("writing", &p, e))?;
        args.push("--values".into());
        args.push(p.into());
    }
    for (flag, value) in set_flags(&helm, &ctx.build_env) {
        args.push(flag.into());
        args.push(value.into());
    }
    for p in &helm.file_parameters {
        let path = resolve_file_parameter(ctx, &p.path)?;
        let mut flag = std::ffi::OsString::from(format!("{}=", p.name));
        flag.push(path.as_os_str());
        args.push("--set-file".into());
        args.push(flag);
    }

    let command = |chart_dir: &Path| {
        let mut cmd = Cmd::new("helm template", &input.tools.helm, chart_dir);
        cmd.arg("template").arg(release).arg(chart_dir);
        cmd.args.extend(args.iter().cloned());
        helm_env(&mut cmd, &home);
        cmd
    };

    let out = match exec::run_checked(&command(&ctx.app), input.timeout) {
        Err(RenderError::Tool { message, .. })
            if MISSING_DEPENDENCY.iter().any(|m| message.contains(m)) =>
        {
            // Argo CD runs `helm dependency build` and tries again. That
            // writes into charts/, so it happens in a copy.
            let copy = tmp.path().join("repo");
            fsutil::copy_tree(&ctx.root, &copy, true)?;
            let chart = copy.join(&ctx.app_rel);
            let mut dep = Cmd::new("helm dependency build", &input.tools.helm, &chart);
            dep.arg("dependency").arg("build").arg(&chart);
            helm_env(&mut dep, &home);
            exec::run_checked(&dep, input.timeout)?;
            exec::run_checked(&command(&chart), input.timeout)?
        }
        other => other?,
    };
    let text = String::from_utf8_lossy(&out);
    manifest::parse_manifests(
        &text,
        &format!("output of `helm template` for {}", ctx.app_display()),
    )
}

/// Nothing leaks between apps or from the host: helm's home, cache, config
/// and data all live in this render's temporary directory.
fn helm_env(cmd: &mut Cmd, home: &Path) {
    cmd.env("PATH", exec::search_path())
        .env("HOME", home)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env("KUBECONFIG", home.join("kubeconfig"));
}

/// `valuesObject` wins over `values`, as in Argo CD's `ValuesYAML`.
fn inline_values(helm: &HelmSource) -> Option<String> {
    if let Some(obj) = helm.values_object.as_ref().filter(|v| !v.is_null()) {
        // JSON is YAML.
        return Some(obj.to_string());
    }
    helm.values.clone().filter(|v| !v.is_empty())
}

/// `--set` then `--set-string` flags; a later parameter of the same name
/// replaces an earlier one.
fn set_flags(helm: &HelmSource, env: &[(String, String)]) -> Vec<(&'static str, String)> {
    let mut set: Vec<(&str, String)> = Vec::new();
    let mut set_string: Vec<(&str, String)> = Vec::new();
    for p in &helm.parameters {
        set.retain(|(n, _)| *n != p.name);
        set_string.retain(|(n, _)| *n != p.name);
        let target = if p.force_string {
            &mut set_string
        } else {
            &mut set
        };
        target.push((p.name.as_str(), clean_set_value(&envsubst(&p.value, env))));
    }
    set.into_iter()
        .map(|(n, v)| ("--set", format!("{n}={v}")))
        .chain(
            set_string
                .into_iter()
                .map(|(n, v)| ("--set-string", format!("{n}={v}"))),
        )
        .collect()
}

/// Helm splits `--set` on commas; Argo CD escapes them so a value stays one
/// value, except for `{a,b}` list syntax.
fn clean_set_value(v: &str) -> String {
    if v.starts_with('{') && v.ends_with('}') {
        return v.to_string();
    }
    let mut out = String::with_capacity(v.len());
    let mut prev = None;
    for c in v.chars() {
        if c == ',' && prev != Some('\\') {
            out.push('\\');
        }
        out.push(c);
        prev = Some(c);
    }
    out
}

/// Resolves one `valueFiles` entry to a file inside the repository (or inside
/// a `$ref` source), or `None` when it is missing and may be.
fn resolve_value_file(
    ctx: &Ctx,
    helm: &HelmSource,
    raw: &str,
) -> Result<Option<PathBuf>, RenderError> {
    let err = |message: String| RenderError::ValueFile {
        file: raw.to_string(),
        message,
    };
    let (root, base, rel) = match ref_source(ctx, raw) {
        Some((ref_root, rest)) => {
            let root = fs::canonicalize(&ref_root).map_err(|e| {
                err(format!(
                    "referenced source checkout {}: {e}",
                    ref_root.display()
                ))
            })?;
            // Relative to the referenced repository's root, never above it.
            let rel = format!("/{}", envsubst(rest, &ctx.build_env));
            (root.clone(), root, rel)
        }
        None => {
            let rel = envsubst(raw, &ctx.build_env);
            if let Some(scheme) = url_scheme(&rel) {
                let lower = scheme.to_ascii_lowercase();
                return Err(err(if lower == "http" || lower == "https" {
                    "remote value files are not supported: rendering has no network access".into()
                } else {
                    format!("the URL scheme '{scheme}' is not allowed")
                }));
            }
            (ctx.root.clone(), ctx.app.clone(), rel)
        }
    };
    let path = fsutil::resolve_in_root(&root, &base, &rel).map_err(err)?;
    if path.is_file() {
        return Ok(Some(path));
    }
    if path.exists() {
        return Err(err("is not a file".into()));
    }
    if helm.ignore_missing_value_files {
        tracing::debug!(file = raw, "helm value file does not exist; ignored");
        return Ok(None);
    }
    Err(err(
        "does not exist (set ignoreMissingValueFiles to skip missing value files)".into(),
    ))
}

/// `helm.version` names the Helm major version; Ferry's helm renders v3 charts.
fn check_helm_version(helm: &HelmSource) -> Result<(), RenderError> {
    match helm.version.as_deref().map(str::trim) {
        None | Some("") | Some("v3") | Some("3") => Ok(()),
        Some(other) => Err(RenderError::InvalidSource(format!(
            "helm.version {other:?} is not available: Ferry renders with Helm v3-compatible templating (helm v4)"
        ))),
    }
}

/// A `fileParameters` path: inside the repository, relative to the app path.
fn resolve_file_parameter(ctx: &Ctx, raw: &str) -> Result<PathBuf, RenderError> {
    let err = |message: String| RenderError::ValueFile {
        file: raw.to_string(),
        message: format!("helm.fileParameters: {message}"),
    };
    let rel = envsubst(raw, &ctx.build_env);
    if url_scheme(&rel).is_some() {
        return Err(err("must be a path in the repository".into()));
    }
    let path = fsutil::resolve_in_root(&ctx.root, &ctx.app, &rel).map_err(err)?;
    if path.is_file() {
        Ok(path)
    } else {
        Err(err("does not exist".into()))
    }
}

/// `$name/rest` naming a known `ref` source: its checkout and `rest`. A `$`
/// prefix that names no ref source is an ordinary path, subject to variable
/// substitution, as in Argo CD.
fn ref_source<'r>(ctx: &Ctx, raw: &'r str) -> Option<(PathBuf, &'r str)> {
    let name_part = raw.strip_prefix('$')?;
    let (name, rest) = name_part.split_once('/').unwrap_or((name_part, ""));
    let refs = ctx.input.refs;
    refs.get(name)
        .or_else(|| refs.get(&format!("${name}")))
        .map(|root| (root.clone(), rest))
}

/// The scheme of `scheme://...`, if `s` is a URL.
fn url_scheme(s: &str) -> Option<&str> {
    let (scheme, _) = s.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(scheme)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_model::HelmParameter;

    #[test]
    fn set_values_escape_commas_except_lists() {
        assert_eq!(clean_set_value("a,b"), "a\\,b");
        assert_eq!(clean_set_value("a\\,b"), "a\\,b");
        assert_eq!(clean_set_value("{a,b}"), "{a,b}");
    }

    #[test]
    fn parameters_become_set_flags_with_substitution() {
        let p = |name: &str, value: &str, force_string| HelmParameter {
            name: name.into(),
            value: value.into(),
            force_string,
            ..Default::default()
        };
        let helm = HelmSource {
            parameters: vec![
                p("a", "1", false),
                p("b", "$ARGOCD_APP_NAME", true),
                p("a", "2", false),
            ],
            ..Default::default()
        };
        let env = vec![("ARGOCD_APP_NAME".to_string(), "guestbook".to_string())];
        assert_eq!(
            set_flags(&helm, &env),
            vec![
                ("--set", "a=2".to_string()),
                ("--set-string", "b=guestbook".to_string())
            ]
        );
    }

    #[test]
    fn values_object_wins_over_values() {
        let helm = HelmSource {
            values: Some("a: 1".into()),
            values_object: Some(serde_json::json!({"a": 2})),
            ..Default::default()
        };
        assert_eq!(inline_values(&helm).as_deref(), Some("{\"a\":2}"));
    }

    #[test]
    fn url_schemes() {
        assert_eq!(url_scheme("https://x/v.yaml"), Some("https"));
        assert_eq!(url_scheme("values.yaml"), None);
        assert_eq!(url_scheme("dir/a://b"), None);
    }
}

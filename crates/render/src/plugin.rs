//! Config Management Plugins (CMP v2): the `ConfigManagementPlugin` config of
//! a sidecar, plugin selection and discovery, and running `init`/`generate`.

use crate::envsubst::envsubst;
use crate::exec::{self, Cmd};
use crate::glob::Glob;
use crate::{Ctx, RenderError, fsutil, manifest};
use serde_json::Value;
use std::ffi::OsString;
use std::fs;
use std::path::Path;

/// A CMP v2 plugin (Argo's ConfigManagementPlugin kind, the plugin.yaml of a sidecar).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PluginConfig {
    pub name: String,
    pub version: Option<String>,
    pub init: Option<PluginCommand>,
    pub generate: PluginCommand,
    pub discover: Option<PluginDiscover>,
    pub preserve_file_mode: bool,
}

/// A command run directly (no shell unless the command is one).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PluginCommand {
    pub command: Vec<String>,
    pub args: Vec<String>,
}

/// Discovery rules; only the first one set is evaluated (fileName, then
/// find.glob, then find.command), as in Argo CD.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PluginDiscover {
    pub file_name: Option<String>,
    pub find_glob: Option<String>,
    pub find_command: Option<PluginCommand>,
}

impl PluginDiscover {
    fn is_empty(&self) -> bool {
        self.file_name.is_none() && self.find_glob.is_none() && self.find_command.is_none()
    }
}

impl PluginConfig {
    /// Parses one ConfigManagementPlugin YAML document (apiVersion argoproj.io/v1alpha1, kind ConfigManagementPlugin, metadata.name, spec.{version,init,generate,discover{fileName, find{glob | command,args}},preserveFileMode}).
    pub fn from_yaml(text: &str) -> Result<PluginConfig, RenderError> {
        let bad = |m: String| RenderError::InvalidPlugin(m);
        let doc = manifest::parse_single(text).map_err(bad)?;
        let Value::Object(doc) = doc else {
            return Err(bad("expected a ConfigManagementPlugin mapping".into()));
        };
        let api_version = doc
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
        if api_version != "argoproj.io/v1alpha1" || kind != "ConfigManagementPlugin" {
            return Err(bad(format!(
                "expected apiVersion argoproj.io/v1alpha1 and kind ConfigManagementPlugin, got {api_version:?} {kind:?}"
            )));
        }
        let name = doc
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad("metadata.name is required".into()))?
            .to_string();
        let in_plugin = |m: String| bad(format!("plugin {name:?}: {m}"));
        let empty = Value::Null;
        let spec = doc.get("spec").unwrap_or(&empty);
        if !spec.is_object() {
            return Err(in_plugin("spec is required".into()));
        }
        let version = match spec.get("version") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                scalar_string(v)
                    .ok_or_else(|| in_plugin("spec.version must be a string".into()))?,
            ),
        }
        .filter(|v| !v.is_empty());
        let init = command(spec.get("init"), "spec.init").map_err(in_plugin)?;
        let generate = command(spec.get("generate"), "spec.generate")
            .map_err(in_plugin)?
            .ok_or_else(|| in_plugin("spec.generate.command is required".into()))?;
        let discover = match spec.get("discover") {
            None | Some(Value::Null) => None,
            Some(d) if d.is_object() => {
                let opt_str =
                    |v: Option<&Value>, field: &str| -> Result<Option<String>, RenderError> {
                        match v {
                            None | Some(Value::Null) => Ok(None),
                            Some(Value::String(s)) if s.is_empty() => Ok(None),
                            Some(Value::String(s)) => Ok(Some(s.clone())),
                            Some(_) => Err(in_plugin(format!("{field} must be a string"))),
                        }
                    };
                let find = d.get("find");
                let disc = PluginDiscover {
                    file_name: opt_str(d.get("fileName"), "spec.discover.fileName")?,
                    find_glob: opt_str(
                        find.and_then(|f| f.get("glob")),
                        "spec.discover.find.glob",
                    )?,
                    find_command: command(find, "spec.discover.find").map_err(in_plugin)?,
                };
                (!disc.is_empty()).then_some(disc)
            }
            Some(_) => return Err(in_plugin("spec.discover must be a mapping".into())),
        };
        let preserve_file_mode = match spec.get("preserveFileMode") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(in_plugin(
                    "spec.preserveFileMode must be true or false".into(),
                ));
            }
        };
        Ok(PluginConfig {
            name,
            version,
            init,
            generate,
            discover,
            preserve_file_mode,
        })
    }

    /// `<name>-<version>` when a version is set, else `<name>`: the name an
    /// Application's `plugin.name` uses.
    pub fn full_name(&self) -> String {
        match &self.version {
            Some(v) => format!("{}-{v}", self.name),
            None => self.name.clone(),
        }
    }

    fn answers_to(&self, name: &str) -> bool {
        self.name == name || self.full_name() == name
    }
}

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `{command: [...], args: [...]}`; `None` when there is no command.
fn command(v: Option<&Value>, field: &str) -> Result<Option<PluginCommand>, String> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    if !v.is_object() {
        return Err(format!("{field} must be a mapping"));
    }
    let list = |key: &str| -> Result<Vec<String>, String> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            // A single string is taken as a one-element list.
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    scalar_string(x)
                        .ok_or_else(|| format!("{field}.{key} must be a list of strings"))
                })
                .collect(),
            Some(_) => Err(format!("{field}.{key} must be a list of strings")),
        }
    };
    let command = list("command")?;
    let args = list("args")?;
    if command.is_empty() {
        if !args.is_empty() {
            return Err(format!("{field} has args but no command"));
        }
        return Ok(None);
    }
    Ok(Some(PluginCommand { command, args }))
}

/// The plugin an Application with a `plugin` block uses: the one it names
/// (whose discovery rules, if it has any, must match, as in Argo CD), or
/// the first whose discovery rules match.
pub(crate) fn choose<'p>(ctx: &'p Ctx, name: &str) -> Result<&'p PluginConfig, RenderError> {
    if name.is_empty() {
        return discover(ctx)?.ok_or(RenderError::NoMatchingPlugin);
    }
    let plugins = ctx.input.plugins;
    let found = plugins
        .iter()
        .find(|p| p.full_name() == name)
        .or_else(|| plugins.iter().find(|p| p.answers_to(name)));
    let Some(p) = found else {
        let mut known: Vec<String> = plugins.iter().map(PluginConfig::full_name).collect();
        known.sort();
        let detail = if known.is_empty() {
            ": no plugins are configured".to_string()
        } else {
            format!(": configured plugins are {}", known.join(", "))
        };
        return Err(RenderError::NoPlugin {
            name: name.to_string(),
            detail,
        });
    };
    match &p.discover {
        Some(d) if !matches(ctx, p, d)? => Err(RenderError::NoPlugin {
            name: name.to_string(),
            detail: ": its discovery rules do not match the application".into(),
        }),
        _ => Ok(p),
    }
}

/// The first plugin (by `<name>-<version>`, the order Argo CD finds sidecar
/// sockets in) whose discovery rules match the application.
pub(crate) fn discover<'p>(ctx: &'p Ctx) -> Result<Option<&'p PluginConfig>, RenderError> {
    let mut candidates: Vec<&PluginConfig> = ctx
        .input
        .plugins
        .iter()
        .filter(|p| p.discover.is_some())
        .collect();
    candidates.sort_by_key(|p| p.full_name());
    for p in candidates {
        if let Some(d) = &p.discover
            && matches(ctx, p, d)?
        {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

fn matches(ctx: &Ctx, p: &PluginConfig, d: &PluginDiscover) -> Result<bool, RenderError> {
    let pattern = d.file_name.as_deref().or(d.find_glob.as_deref());
    if let Some(pattern) = pattern {
        let pattern = pattern.trim_start_matches("./");
        let glob = match Glob::new(pattern) {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(plugin = %p.full_name(), error = %e, "invalid discovery pattern");
                return Ok(false);
            }
        };
        let mut found = false;
        let _ = fsutil::walk(&ctx.app, &mut |path, _| {
            let rel = path
                .strip_prefix(&ctx.app)
                .unwrap_or(path)
                .to_string_lossy();
            if glob.matches_path(&rel) {
                found = true;
                // Stops the walk early; the error is never reported.
                return Err(RenderError::NoMatchingPlugin);
            }
            Ok(())
        });
        return Ok(found);
    }
    let Some(find) = &d.find_command else {
        return Ok(false);
    };
    // The find command may write, so it too runs in a copy.
    let work = Workspace::new(ctx, p.preserve_file_mode)?;
    let cmd = work.command(ctx, p, find, "discover")?;
    match exec::run(&cmd, ctx.input.timeout) {
        Ok(out) => {
            Ok(out.status.success() && !String::from_utf8_lossy(&out.stdout).trim().is_empty())
        }
        Err(e) => {
            tracing::warn!(plugin = %p.full_name(), error = %e, "plugin discovery command failed");
            Ok(false)
        }
    }
}

pub(crate) fn render(ctx: &Ctx, p: &PluginConfig) -> Result<Vec<Value>, RenderError> {
    let work = Workspace::new(ctx, p.preserve_file_mode)?;
    if let Some(init) = &p.init {
        exec::run_checked(&work.command(ctx, p, init, "init")?, ctx.input.timeout)?;
    }
    let out = exec::run_checked(
        &work.command(ctx, p, &p.generate, "generate")?,
        ctx.input.timeout,
    )?;
    let text = String::from_utf8(out).map_err(|_| RenderError::InvalidManifest {
        file: format!("output of plugin {}", p.full_name()),
        message: "output is not valid UTF-8".into(),
    })?;
    manifest::parse_manifests(&text, &format!("output of plugin {}", p.full_name()))
}

/// A private copy of the repository plus a home and temp directory.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new(ctx: &Ctx, preserve_mode: bool) -> Result<Workspace, RenderError> {
        let dir = tempfile::Builder::new()
            .prefix("ferry-plugin-")
            .tempdir()
            .map_err(|e| RenderError::io("creating a temporary directory", e))?;
        for sub in ["home", "tmp"] {
            let p = dir.path().join(sub);
            fs::create_dir(&p).map_err(|e| RenderError::io_path("creating", &p, e))?;
        }
        fsutil::copy_tree(&ctx.root, &dir.path().join("repo"), preserve_mode)?;
        Ok(Workspace { dir })
    }

    fn command(
        &self,
        ctx: &Ctx,
        p: &PluginConfig,
        c: &PluginCommand,
        phase: &str,
    ) -> Result<Cmd, RenderError> {
        let base = self.dir.path();
        let app = base.join("repo").join(&ctx.app_rel);
        let Some((program, rest)) = c.command.split_first() else {
            return Err(RenderError::InvalidPlugin(format!(
                "plugin {:?}: {phase} has no command",
                p.full_name()
            )));
        };
        let mut cmd = Cmd::new(format!("plugin {} {phase}", p.full_name()), program, &app);
        cmd.args
            .extend(rest.iter().chain(&c.args).map(OsString::from));
        let (env, secrets) = plugin_env(ctx, base)?;
        cmd.env = env;
        cmd.secrets = secrets;
        Ok(cmd)
    }
}

type EnvVars = Vec<(OsString, OsString)>;

/// Argo CD's CMP environment on a clean slate: PATH (plus where helm and
/// kustomize live, which plugins commonly call), a private HOME and TMPDIR,
/// the build variables, KUBE_VERSION, KUBE_API_VERSIONS, the Application's
/// `plugin.env` as `ARGOCD_ENV_*` and its parameters. Returns the env and the
/// values to keep out of error messages.
fn plugin_env(ctx: &Ctx, base: &Path) -> Result<(EnvVars, Vec<String>), RenderError> {
    let input = ctx.input;
    let mut path = std::ffi::OsString::new();
    for dir in &input.tools.plugin_path {
        path.push(dir);
        path.push(":");
    }
    path.push(exec::search_path());
    for tool in [&input.tools.helm, &input.tools.kustomize] {
        if let Some(dir) = tool.parent().filter(|d| !d.as_os_str().is_empty()) {
            path.push(":");
            path.push(dir);
        }
    }
    let mut vars: Vec<(String, String)> = ctx.build_env.clone();
    vars.push((
        "KUBE_VERSION".into(),
        input.kube_version.trim_start_matches('v').to_string(),
    ));
    vars.push(("KUBE_API_VERSIONS".into(), input.api_versions.join(",")));

    let mut env: Vec<(OsString, OsString)> = vec![
        ("PATH".into(), path),
        ("HOME".into(), base.join("home").into()),
        ("TMPDIR".into(), base.join("tmp").into()),
    ];
    env.extend(
        input
            .tools
            .plugin_env
            .iter()
            .map(|(k, v)| (k.into(), v.into())),
    );
    let mut secrets = Vec::new();
    if let Some(plugin) = &input.source.plugin {
        let mut extra = Vec::new();
        for e in &plugin.env {
            if e.name.is_empty() || e.name.contains(['=', '\0']) || e.value.contains('\0') {
                return Err(RenderError::InvalidSource(format!(
                    "plugin env entry {:?} is not a valid environment variable",
                    e.name
                )));
            }
            // Build variables may be referenced; the result is still secret.
            let value = envsubst(&e.value, &vars);
            secrets.push(e.value.clone());
            secrets.push(value.clone());
            extra.push((format!("ARGOCD_ENV_{}", e.name), value));
        }
        extra.extend(parameter_env(&plugin.parameters));
        vars.extend(extra);
    }
    env.extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
    Ok((env, secrets))
}

/// `ARGOCD_APP_PARAMETERS` (the JSON list) and one `PARAM_*` per value.
fn parameter_env(params: &[Value]) -> Vec<(String, String)> {
    let mut out = vec![(
        "ARGOCD_APP_PARAMETERS".to_string(),
        Value::Array(params.to_vec()).to_string(),
    )];
    let escape = |s: &str| -> String {
        s.to_uppercase()
            .chars()
            .map(|c| {
                if c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    for p in params {
        let Some(name) = p.get("name").and_then(Value::as_str) else {
            continue;
        };
        let base = format!("PARAM_{}", escape(name));
        if let Some(s) = p.get("string").and_then(scalar_string) {
            out.push((base.clone(), s));
        }
        if let Some(m) = p.get("map").and_then(Value::as_object) {
            for (k, v) in m {
                if let Some(v) = scalar_string(v) {
                    out.push((format!("{base}_{}", escape(k)), v));
                }
            }
        }
        if let Some(a) = p.get("array").and_then(Value::as_array) {
            for (i, v) in a.iter().enumerate() {
                if let Some(v) = scalar_string(v) {
                    out.push((format!("{base}_{i}"), v));
                }
            }
        }
    }
    out.retain(|(k, v)| !k.contains(['=', '\0']) && !v.contains('\0'));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_sidecar_plugin_yaml() {
        let p = PluginConfig::from_yaml(
            r#"
apiVersion: argoproj.io/v1alpha1
kind: ConfigManagementPlugin
metadata:
  name: my-plugin
spec:
  version: v1.0
  init:
    command: [sh]
    args: [-c, 'echo "Initializing..."']
  generate:
    command: [sh, -c]
    args: ["echo hi"]
  discover:
    find:
      command: [sh, -c, find . -name env.yaml]
  preserveFileMode: true
"#,
        )
        .unwrap();
        assert_eq!(p.name, "my-plugin");
        assert_eq!(p.full_name(), "my-plugin-v1.0");
        assert_eq!(p.init.unwrap().args, ["-c", "echo \"Initializing...\""]);
        assert_eq!(p.generate.command, ["sh", "-c"]);
        let d = p.discover.unwrap();
        assert_eq!(
            d.find_command.unwrap().command,
            ["sh", "-c", "find . -name env.yaml"]
        );
        assert!(d.file_name.is_none() && d.find_glob.is_none());
        assert!(p.preserve_file_mode);
    }

    #[test]
    fn rejects_other_kinds_and_missing_generate() {
        let err = PluginConfig::from_yaml("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
            .unwrap_err();
        assert!(err.to_string().contains("ConfigManagementPlugin"), "{err}");
        let err = PluginConfig::from_yaml(
            "apiVersion: argoproj.io/v1alpha1\nkind: ConfigManagementPlugin\nmetadata: {name: x}\nspec:\n  discover: {fileName: '*.x'}\n",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid ConfigManagementPlugin: plugin \"x\": spec.generate.command is required"
        );
    }

    #[test]
    fn parameters_become_env() {
        let params = vec![
            serde_json::json!({"name": "values-files", "array": ["a.yaml", "b.yaml"]}),
            serde_json::json!({"name": "helm-parameters", "map": {"image.tag": "v1"}}),
            serde_json::json!({"name": "mode", "string": "fast"}),
        ];
        let env = parameter_env(&params);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PARAM_VALUES_FILES_1"), Some("b.yaml"));
        assert_eq!(get("PARAM_HELM_PARAMETERS_IMAGE_TAG"), Some("v1"));
        assert_eq!(get("PARAM_MODE"), Some("fast"));
        assert!(get("ARGOCD_APP_PARAMETERS").is_some_and(|j| j.starts_with("[{")));
    }
}

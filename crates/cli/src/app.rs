//! `ferry app ...`: Applications through `ferry server`'s API, with the
//! argocd CLI's subcommands, flags and output shapes.
//!
//! Applications are handled as JSON values, not as typed structs, so that
//! a GET-modify-PUT (`app set`) keeps every field, including ones this CLI
//! does not know about.

use crate::client::{ApiError, Client, ClientOpts, seg};
use crate::output::{self, Progress, field, table};
use anyhow::{Context as _, Result, anyhow, bail};
use clap::{ArgAction, Args, Subcommand};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const API: &str = "/api/v1/applications";
const FINALIZER: &str = "resources-finalizer.argocd.argoproj.io";

#[derive(Subcommand)]
pub enum AppCommand {
    /// Create an application
    Create(CreateArgs),
    /// Show an application's details and resources
    Get(GetArgs),
    /// List applications
    List(ListArgs),
    /// Sync applications to their target state
    Sync(SyncArgs),
    /// Show the difference between target and live state (exit 1 when they differ, 2 on errors)
    Diff(DiffArgs),
    /// Show an application's deployment history
    History(HistoryArgs),
    /// Roll an application back to a deployment of its history
    Rollback(RollbackArgs),
    /// Delete applications
    Delete(DeleteArgs),
    /// Wait for applications to be synced and healthy
    Wait(WaitArgs),
    /// Print an application's manifests (from Git or live)
    Manifests(ManifestsArgs),
    /// Change an application's spec
    Set(SetArgs),
    /// Remove values from an application's spec
    Unset(UnsetArgs),
    /// Ask the server to compare an application with Git again
    Refresh(RefreshArgs),
    /// List an application's resources
    Resources(ResourcesArgs),
}

/// Spec flags shared by `create` and `set`.
// Booleans take `--flag`, `--flag=true` or `--flag=false`, as Go's pflag
// does for argocd; `require_equals` keeps `--flag NAME` from eating NAME.
#[derive(Args, Clone, Default)]
pub struct SpecFlags {
    /// Repository URL (Git, or Helm with --helm-chart)
    #[arg(long)]
    repo: Option<String>,
    /// Path in the repository to the app directory
    #[arg(long)]
    path: Option<String>,
    /// The tracked branch, tag or commit (targetRevision)
    #[arg(long)]
    revision: Option<String>,
    /// Helm chart name (with a Helm repository as --repo)
    #[arg(long)]
    helm_chart: Option<String>,
    /// Destination cluster URL
    #[arg(long, conflicts_with = "dest_name")]
    dest_server: Option<String>,
    /// Destination cluster name
    #[arg(long)]
    dest_name: Option<String>,
    /// Destination namespace
    #[arg(long)]
    dest_namespace: Option<String>,
    /// Project name
    #[arg(long)]
    project: Option<String>,
    /// Sync policy: automated (aliases auto, automatic) or manual (alias none)
    #[arg(long, value_parser = ["automated", "auto", "automatic", "manual", "none"])]
    sync_policy: Option<String>,
    /// Prune resources that left Git during automated syncs
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    auto_prune: Option<bool>,
    /// Undo changes made in the cluster during automated syncs
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    self_heal: Option<bool>,
    /// Let automated syncs leave the application with no resources
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    allow_empty: Option<bool>,
    /// Add a sync option (KEY=VALUE, comma-separated or repeated); `!KEY` removes one
    #[arg(long = "sync-option", value_name = "KEY=VALUE")]
    sync_options: Vec<String>,
    /// Config management plugin name
    #[arg(long)]
    config_management_plugin: Option<String>,
    /// Plugin environment variable NAME=VALUE (repeatable)
    #[arg(long = "plugin-env", value_name = "NAME=VALUE")]
    plugin_env: Vec<String>,
    /// Helm parameter NAME=VALUE (repeatable)
    #[arg(long = "helm-set", value_name = "NAME=VALUE")]
    helm_set: Vec<String>,
    /// Helm string parameter NAME=VALUE (repeatable)
    #[arg(long = "helm-set-string", value_name = "NAME=VALUE")]
    helm_set_string: Vec<String>,
    /// Helm values file in the repository (repeatable)
    #[arg(long = "values", value_name = "FILE")]
    values: Vec<String>,
    /// Helm release name
    #[arg(long)]
    release_name: Option<String>,
    /// Kustomize image override, e.g. nginx=nginx:1.27 (repeatable)
    #[arg(long = "kustomize-image", value_name = "IMAGE")]
    kustomize_images: Vec<String>,
    /// Kustomize name prefix
    #[arg(long)]
    nameprefix: Option<String>,
    /// Kustomize name suffix
    #[arg(long)]
    namesuffix: Option<String>,
    /// Recurse into subdirectories of a plain directory app
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    directory_recurse: Option<bool>,
    /// How many history entries to keep
    #[arg(long)]
    revision_history_limit: Option<i64>,
    /// Which source of a multi-source application to change (1-based)
    #[arg(long)]
    source_position: Option<usize>,
}

#[derive(Args)]
pub struct CreateArgs {
    /// Application name [default: metadata.name of --file]
    name: Option<String>,
    /// Application manifest to start from (YAML or JSON; `-` reads stdin)
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Label KEY=VALUE for the application (repeatable)
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Annotation KEY=VALUE for the application (repeatable)
    #[arg(
        long = "annotations",
        visible_alias = "annotation",
        value_name = "KEY=VALUE"
    )]
    annotations: Vec<String>,
    /// Update the application if it exists with a different spec
    #[arg(long)]
    upsert: bool,
    /// Delete the application's resources when it is deleted
    #[arg(long)]
    set_finalizer: bool,
    #[command(flatten)]
    spec: SpecFlags,
}

#[derive(Args)]
pub struct GetArgs {
    name: String,
    /// Refresh application data when retrieving
    #[arg(long, conflicts_with = "hard_refresh")]
    refresh: bool,
    /// Refresh application data as well as the target manifests cache
    #[arg(long)]
    hard_refresh: bool,
    /// Show the last operation
    #[arg(long)]
    show_operation: bool,
    /// Output format: wide, json or yaml
    #[arg(short, long, default_value = "wide", value_parser = ["wide", "json", "yaml"])]
    output: String,
}

#[derive(Args)]
pub struct ListArgs {
    /// Only applications of these projects (repeatable)
    #[arg(short = 'p', long = "project")]
    projects: Vec<String>,
    /// Only applications of this repository
    #[arg(short = 'r', long)]
    repo: Option<String>,
    /// Only applications matching this label selector, e.g. k=v,k2=v2
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Only applications of this destination cluster (name or URL)
    #[arg(short = 'c', long)]
    cluster: Option<String>,
    /// Output format: wide, json, yaml or name
    #[arg(short, long, default_value = "wide", value_parser = ["wide", "json", "yaml", "name"])]
    output: String,
}

#[derive(Args)]
pub struct SyncArgs {
    #[arg(required = true, value_name = "APPNAME")]
    names: Vec<String>,
    /// Sync to this revision instead of the tracked one
    #[arg(long)]
    revision: Option<String>,
    /// Delete resources that are no longer in Git
    #[arg(long)]
    prune: bool,
    /// Preview the apply without changing the cluster
    #[arg(long)]
    dry_run: bool,
    /// Sync only GROUP:KIND:NAME or GROUP:KIND:NAMESPACE/NAME (GROUP may be empty; repeatable)
    #[arg(long = "resource", value_name = "GROUP:KIND:NAME")]
    resources: Vec<String>,
    /// Sync option KEY=VALUE for this sync (comma-separated or repeated)
    #[arg(long = "sync-option", value_name = "KEY=VALUE")]
    sync_options: Vec<String>,
    /// Apply only out-of-sync resources (ApplyOutOfSyncOnly=true)
    #[arg(long)]
    apply_out_of_sync_only: bool,
    /// Use server-side apply (ServerSideApply=true)
    #[arg(long)]
    server_side: bool,
    /// Replace instead of apply (Replace=true)
    #[arg(long)]
    replace: bool,
    /// Sync strategy: apply (the manifests without their hooks) or hook
    #[arg(long, value_parser = ["apply", "hook"])]
    strategy: Option<String>,
    /// Delete and re-create what the API server will not change in place
    #[arg(long)]
    force: bool,
    /// Do not wait for the sync to finish
    #[arg(long = "async")]
    no_wait: bool,
    /// Give up waiting after this many seconds (0: no limit)
    #[arg(long, default_value_t = 0)]
    timeout: u64,
    /// Output format of the result: wide, json or yaml
    #[arg(short, long, default_value = "wide", value_parser = ["wide", "json", "yaml"])]
    output: String,
}

#[derive(Args)]
pub struct DiffArgs {
    name: String,
    /// Refresh application data before comparing
    #[arg(long, conflicts_with = "hard_refresh")]
    refresh: bool,
    /// Refresh application data and the target manifests cache before comparing
    #[arg(long)]
    hard_refresh: bool,
    /// Exit non-zero when there is a diff (--exit-code=false always exits 0 unless on errors)
    #[arg(long, default_value_t = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    exit_code: bool,
    /// Exit code when there is a diff
    #[arg(long, default_value_t = 1)]
    diff_exit_code: u8,
}

#[derive(Args)]
pub struct HistoryArgs {
    name: String,
    /// Output format: wide, id, json or yaml
    #[arg(short, long, default_value = "wide", value_parser = ["wide", "id", "json", "yaml"])]
    output: String,
}

#[derive(Args)]
pub struct RollbackArgs {
    name: String,
    /// History ID to roll back to [default: the deployment before the current one]
    id: Option<i64>,
    /// Delete resources that are not in the rolled-back revision
    #[arg(long)]
    prune: bool,
    /// Preview without changing the cluster
    #[arg(long)]
    dry_run: bool,
    /// Do not wait for the rollback to finish
    #[arg(long = "async")]
    no_wait: bool,
    /// Give up waiting after this many seconds (0: no limit)
    #[arg(long, default_value_t = 0)]
    timeout: u64,
    /// Output format of the result: wide, json or yaml
    #[arg(short, long, default_value = "wide", value_parser = ["wide", "json", "yaml"])]
    output: String,
}

#[derive(Args)]
pub struct DeleteArgs {
    #[arg(required = true, value_name = "APPNAME")]
    names: Vec<String>,
    /// Delete the application's resources too (--cascade=false keeps them)
    #[arg(long, default_value_t = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    cascade: bool,
    /// How the resources are deleted
    #[arg(short = 'p', long, default_value = "foreground", value_parser = ["foreground", "background"])]
    propagation_policy: String,
    /// Do not ask for confirmation
    #[arg(short = 'y', long)]
    yes: bool,
    /// Wait until the application is gone
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this many seconds (0: no limit)
    #[arg(long, default_value_t = 0)]
    timeout: u64,
}

#[derive(Args)]
pub struct WaitArgs {
    #[arg(required = true, value_name = "APPNAME")]
    names: Vec<String>,
    /// Wait for health
    #[arg(long)]
    health: bool,
    /// Wait for sync
    #[arg(long)]
    sync: bool,
    /// Wait for pending operations
    #[arg(long)]
    operation: bool,
    /// Wait for suspended
    #[arg(long)]
    suspended: bool,
    /// Wait for degraded
    #[arg(long)]
    degraded: bool,
    /// Wait for deletion
    #[arg(long)]
    delete: bool,
    /// Give up after this many seconds (0: no limit)
    #[arg(long, default_value_t = 0)]
    timeout: u64,
}

#[derive(Args)]
pub struct ManifestsArgs {
    name: String,
    /// Where the manifests come from: git (rendered) or live (cluster)
    #[arg(long, default_value = "git", value_parser = ["git", "live"])]
    source: String,
    /// Render this revision instead of the tracked one
    #[arg(long)]
    revision: Option<String>,
}

#[derive(Args)]
pub struct SetArgs {
    name: String,
    #[command(flatten)]
    spec: SpecFlags,
}

#[derive(Args)]
pub struct UnsetArgs {
    name: String,
    /// Helm values file to remove (repeatable)
    #[arg(long = "values", value_name = "FILE")]
    values: Vec<String>,
    /// Plugin environment variable to remove (repeatable)
    #[arg(long = "plugin-env", value_name = "NAME")]
    plugin_env: Vec<String>,
    /// Helm parameter to remove (repeatable)
    #[arg(short = 'p', long = "parameter", value_name = "NAME")]
    parameters: Vec<String>,
    /// Kustomize image override to remove, by image name (repeatable)
    #[arg(long = "kustomize-image", value_name = "IMAGE")]
    kustomize_images: Vec<String>,
    /// Remove the Kustomize name prefix
    #[arg(long)]
    nameprefix: bool,
    /// Remove the Kustomize name suffix
    #[arg(long)]
    namesuffix: bool,
    /// Which source of a multi-source application to change (1-based)
    #[arg(long)]
    source_position: Option<usize>,
}

#[derive(Args)]
pub struct RefreshArgs {
    name: String,
    /// Also drop the server's cache of rendered manifests
    #[arg(long)]
    hard: bool,
}

#[derive(Args)]
pub struct ResourcesArgs {
    name: String,
    /// Output format: wide, json or yaml
    #[arg(short, long, default_value = "wide", value_parser = ["wide", "json", "yaml"])]
    output: String,
}

pub async fn run(opts: ClientOpts, command: AppCommand) -> Result<ExitCode> {
    // `app diff` promises 0 (same), 1 (differs) and 2 for any error, even
    // one before the first request, so scripts can tell them apart.
    if let AppCommand::Diff(args) = command {
        let (exit_code, diff_code) = (args.exit_code, args.diff_exit_code);
        let outcome = diff(&opts, args).await;
        if let Err(e) = &outcome {
            eprintln!("error: {e:#}");
        }
        return Ok(ExitCode::from(diff_exit_code(
            &outcome, exit_code, diff_code,
        )));
    }
    let client = Client::from_opts(&opts)?;
    match command {
        AppCommand::Create(a) => create(&client, a).await?,
        AppCommand::Get(a) => get(&client, a).await?,
        AppCommand::List(a) => list(&client, a).await?,
        AppCommand::Sync(a) => sync(&client, a).await?,
        AppCommand::Diff(_) => unreachable!("handled above"),
        AppCommand::History(a) => history(&client, a).await?,
        AppCommand::Rollback(a) => rollback(&client, a).await?,
        AppCommand::Delete(a) => delete(&client, a).await?,
        AppCommand::Wait(a) => wait(&client, a).await?,
        AppCommand::Manifests(a) => manifests(&client, a).await?,
        AppCommand::Set(a) => set(&client, a).await?,
        AppCommand::Unset(a) => unset(&client, a).await?,
        AppCommand::Refresh(a) => {
            let mode = if a.hard { "hard" } else { "normal" };
            get_app(&client, &a.name, Some(mode)).await?;
            eprintln!("application '{}' refreshed ({mode})", a.name);
        }
        AppCommand::Resources(a) => resources(&client, a).await?,
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------- helpers

/// Rewords a 404 from an `/applications/{name}...` call.
fn app_error(name: &str) -> impl Fn(anyhow::Error) -> anyhow::Error + '_ {
    move |e| match ApiError::status_of(&e) {
        Some(404) => anyhow!("application '{name}' not found: `ferry app list` shows what exists"),
        _ => e,
    }
}

async fn get_app(client: &Client, name: &str, refresh: Option<&str>) -> Result<Value> {
    let query: Vec<(&str, String)> = refresh
        .map(|r| ("refresh", r.to_string()))
        .into_iter()
        .collect();
    client
        .get(&format!("{API}/{}", seg(name)), &query)
        .await
        .map_err(app_error(name))
}

fn text<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn or<'a>(s: &'a str, default: &'a str) -> &'a str {
    if s.is_empty() { default } else { s }
}

fn array<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// `v[key]` as an object, created (or replacing a non-object) as needed.
fn child<'a>(v: &'a mut Value, key: &str) -> &'a mut Value {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    let Value::Object(m) = v else {
        unreachable!("made an object above")
    };
    let e = m
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !e.is_object() {
        *e = Value::Object(Map::new());
    }
    e
}

/// `v[key]` as an array, created as needed.
fn list_at<'a>(v: &'a mut Value, key: &str) -> &'a mut Vec<Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    let Value::Object(m) = v else {
        unreachable!("made an object above")
    };
    let e = m.entry(key.to_string()).or_insert_with(|| json!([]));
    if !e.is_array() {
        *e = json!([]);
    }
    match e {
        Value::Array(a) => a,
        _ => unreachable!("made an array above"),
    }
}

/// Drops `v[key]` when it is an empty list or object, so edits leave no litter.
fn prune_empty(v: &mut Value, key: &str) {
    if let Some(m) = v.as_object_mut() {
        let empty = match m.get(key) {
            Some(Value::Array(a)) => a.is_empty(),
            Some(Value::Object(o)) => o.is_empty(),
            _ => false,
        };
        if empty {
            m.remove(key);
        }
    }
}

fn parse_kv(flag: &str, s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => bail!("{flag} '{s}': expected NAME=VALUE"),
    }
}

/// `--sync-option A=1,B=2 --sync-option C=3` → [A=1, B=2, C=3].
fn split_sync_options(args: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for raw in args {
        for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let body = part.strip_prefix('!').unwrap_or(part);
            let key_only = part.starts_with('!') && !body.contains('=');
            if body.is_empty() || (!key_only && !body.contains('=')) || body.starts_with('=') {
                bail!(
                    "--sync-option '{part}': expected KEY=VALUE, e.g. ServerSideApply=true (or !KEY to remove one)"
                );
            }
            out.push(part.to_string());
        }
    }
    Ok(out)
}

fn option_key(o: &str) -> &str {
    o.split_once('=').map_or(o, |(k, _)| k).trim()
}

/// Adds options (replacing one with the same key) and removes `!KEY` ones.
fn merge_sync_options(existing: &[Value], args: &[String]) -> Result<Vec<Value>> {
    let mut out: Vec<String> = existing
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    for o in split_sync_options(args)? {
        if let Some(rm) = o.strip_prefix('!') {
            out.retain(|e| option_key(e) != option_key(rm));
        } else if let Some(e) = out.iter_mut().find(|e| option_key(e) == option_key(&o)) {
            *e = o;
        } else {
            out.push(o);
        }
    }
    Ok(out.into_iter().map(Value::String).collect())
}

/// Sets `{name, value}` in a list of such objects, replacing a same-named one.
fn upsert_named(list: &mut Vec<Value>, name: &str, entry: Value) {
    match list.iter_mut().find(|e| e["name"] == name) {
        Some(e) => *e = entry,
        None => list.push(entry),
    }
}

/// The image name a Kustomize override applies to: `nginx` for
/// `nginx=nginx:1.2`, `nginx:1.2`, `nginx@sha256:...`; the port of a
/// registry host is not a tag.
fn image_name(img: &str) -> &str {
    if let Some((name, _)) = img.split_once('=') {
        return name;
    }
    let img = img.split_once('@').map_or(img, |(n, _)| n);
    match img.rfind(':') {
        Some(i) if !img[i..].contains('/') => &img[..i],
        _ => img,
    }
}

impl SpecFlags {
    fn touches_source(&self) -> bool {
        self.repo.is_some()
            || self.path.is_some()
            || self.revision.is_some()
            || self.helm_chart.is_some()
            || self.config_management_plugin.is_some()
            || !self.plugin_env.is_empty()
            || !self.helm_set.is_empty()
            || !self.helm_set_string.is_empty()
            || !self.values.is_empty()
            || self.release_name.is_some()
            || !self.kustomize_images.is_empty()
            || self.nameprefix.is_some()
            || self.namesuffix.is_some()
            || self.directory_recurse.is_some()
    }
}

/// The source to edit: `spec.source`, or `spec.sources[N-1]` of a
/// multi-source application (which needs --source-position, as in argocd).
fn source_mut(app: &mut Value, position: Option<usize>) -> Result<&mut Value> {
    let spec = child(app, "spec");
    let n = spec
        .get("sources")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if n > 0 {
        let Some(pos) = position else {
            bail!(
                "the application has {n} sources: pass --source-position N (1 to {n}) to pick one"
            );
        };
        if pos == 0 || pos > n {
            bail!("--source-position {pos}: the application has sources 1 to {n}");
        }
        let src = &mut spec["sources"][pos - 1];
        if !src.is_object() {
            *src = json!({});
        }
        return Ok(src);
    }
    if let Some(p) = position
        && p != 1
    {
        bail!("--source-position {p}: the application has a single source");
    }
    Ok(child(spec, "source"))
}

/// Applies `create`/`set` flags to an Application; answers how many flags
/// were given, so `set` with none can say so.
fn apply_spec_flags(app: &mut Value, f: &SpecFlags) -> Result<usize> {
    let mut n = 0;
    {
        let spec = child(app, "spec");
        if let Some(p) = &f.project {
            spec["project"] = json!(p);
            n += 1;
        }
        if let Some(s) = &f.dest_server {
            let d = child(spec, "destination");
            d["server"] = json!(s);
            // Argo CD refuses a destination with both; the new one wins.
            if let Some(m) = d.as_object_mut() {
                m.remove("name");
            }
            n += 1;
        }
        if let Some(s) = &f.dest_name {
            let d = child(spec, "destination");
            d["name"] = json!(s);
            if let Some(m) = d.as_object_mut() {
                m.remove("server");
            }
            n += 1;
        }
        if let Some(s) = &f.dest_namespace {
            child(spec, "destination")["namespace"] = json!(s);
            n += 1;
        }
        if let Some(l) = f.revision_history_limit {
            spec["revisionHistoryLimit"] = json!(l);
            n += 1;
        }
    }
    if f.touches_source() {
        let src = source_mut(app, f.source_position)?;
        for (value, key) in [
            (&f.repo, "repoURL"),
            (&f.path, "path"),
            (&f.revision, "targetRevision"),
            (&f.helm_chart, "chart"),
        ] {
            if let Some(v) = value {
                src[key] = json!(v);
                n += 1;
            }
        }
        if f.config_management_plugin.is_some() || !f.plugin_env.is_empty() {
            let plugin = child(src, "plugin");
            if let Some(name) = &f.config_management_plugin {
                plugin["name"] = json!(name);
                n += 1;
            }
            for e in &f.plugin_env {
                let (k, v) = parse_kv("--plugin-env", e)?;
                upsert_named(list_at(plugin, "env"), &k, json!({"name": k, "value": v}));
                n += 1;
            }
        }
        if !f.helm_set.is_empty()
            || !f.helm_set_string.is_empty()
            || !f.values.is_empty()
            || f.release_name.is_some()
        {
            let helm = child(src, "helm");
            for (flags, flag, force) in [
                (&f.helm_set, "--helm-set", false),
                (&f.helm_set_string, "--helm-set-string", true),
            ] {
                for p in flags {
                    let (k, v) = parse_kv(flag, p)?;
                    let mut entry = json!({"name": k, "value": v});
                    if force {
                        entry["forceString"] = json!(true);
                    }
                    upsert_named(list_at(helm, "parameters"), &k, entry);
                    n += 1;
                }
            }
            for file in &f.values {
                let files = list_at(helm, "valueFiles");
                if !files.iter().any(|v| v == file.as_str()) {
                    files.push(json!(file));
                }
                n += 1;
            }
            if let Some(r) = &f.release_name {
                helm["releaseName"] = json!(r);
                n += 1;
            }
        }
        if !f.kustomize_images.is_empty() || f.nameprefix.is_some() || f.namesuffix.is_some() {
            let k = child(src, "kustomize");
            for img in &f.kustomize_images {
                let images = list_at(k, "images");
                let name = image_name(img);
                match images
                    .iter_mut()
                    .find(|e| e.as_str().is_some_and(|s| image_name(s) == name))
                {
                    Some(e) => *e = json!(img),
                    None => images.push(json!(img)),
                }
                n += 1;
            }
            if let Some(p) = &f.nameprefix {
                k["namePrefix"] = json!(p);
                n += 1;
            }
            if let Some(s) = &f.namesuffix {
                k["nameSuffix"] = json!(s);
                n += 1;
            }
        }
        if let Some(r) = f.directory_recurse {
            child(src, "directory")["recurse"] = json!(r);
            n += 1;
        }
    }
    let spec = child(app, "spec");
    match f.sync_policy.as_deref() {
        Some("automated" | "auto" | "automatic") => {
            let sp = child(spec, "syncPolicy");
            if !sp.get("automated").is_some_and(Value::is_object) {
                sp["automated"] = json!({"prune": false, "selfHeal": false});
            }
            n += 1;
        }
        Some(_) => {
            if let Some(sp) = spec.get_mut("syncPolicy") {
                if let Some(m) = sp.as_object_mut() {
                    m.remove("automated");
                }
                if sp.as_object().is_some_and(Map::is_empty) {
                    spec.as_object_mut().map(|m| m.remove("syncPolicy"));
                }
            }
            n += 1;
        }
        None => {}
    }
    for (value, flag, key) in [
        (f.auto_prune, "--auto-prune", "prune"),
        (f.self_heal, "--self-heal", "selfHeal"),
        (f.allow_empty, "--allow-empty", "allowEmpty"),
    ] {
        if let Some(b) = value {
            let Some(auto) = spec
                .pointer_mut("/syncPolicy/automated")
                .filter(|a| a.is_object())
            else {
                bail!("{flag} only applies to automated sync: add --sync-policy automated");
            };
            auto[key] = json!(b);
            n += 1;
        }
    }
    if !f.sync_options.is_empty() {
        let sp = child(spec, "syncPolicy");
        let merged = merge_sync_options(array(sp, "/syncOptions"), &f.sync_options)?;
        sp["syncOptions"] = Value::Array(merged);
        prune_empty(sp, "syncOptions");
        n += f.sync_options.len();
    }
    Ok(n)
}

/// An Application from a YAML or JSON manifest.
fn parse_manifest(text: &str) -> Result<Value> {
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => serde_saphyr::from_str(text)
            .map_err(|e| anyhow!("{e}"))
            .context("the file is neither JSON nor YAML")?,
    };
    if !v.is_object() {
        bail!("the file does not hold an Application (a YAML or JSON object)");
    }
    let kind = text_of(&v, "kind");
    if !kind.is_empty() && kind != "Application" {
        bail!("the file holds a {kind}, not an Application");
    }
    Ok(v)
}

fn text_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The Application `ferry app create` sends.
fn build_create(args: &CreateArgs, file: Option<&str>) -> Result<Value> {
    let mut app = match file {
        Some(t) => parse_manifest(t)?,
        None => json!({"metadata": {}, "spec": {"source": {}, "destination": {}}}),
    };
    app["apiVersion"] = json!("argoproj.io/v1alpha1");
    app["kind"] = json!("Application");
    let name = match &args.name {
        Some(n) => n.clone(),
        None => text(&app, "/metadata/name").to_string(),
    };
    if name.is_empty() {
        bail!("no application name: `ferry app create NAME ...`, or metadata.name in --file");
    }
    child(&mut app, "metadata")["name"] = json!(name);
    apply_spec_flags(&mut app, &args.spec)?;
    let spec = child(&mut app, "spec");
    if text(spec, "/project").is_empty() {
        spec["project"] = json!("default");
    }
    if file.is_none() {
        if text(spec, "/source/repoURL").is_empty() {
            bail!(
                "--repo is required (the Git or Helm repository URL), or give a manifest with -f"
            );
        }
        if text(spec, "/destination/server").is_empty()
            && text(spec, "/destination/name").is_empty()
        {
            bail!("--dest-server or --dest-name is required (e.g. --dest-name in-cluster)");
        }
    }
    for (flags, flag, key) in [
        (&args.labels, "--label", "labels"),
        (&args.annotations, "--annotations", "annotations"),
    ] {
        for l in flags {
            let (k, v) = parse_kv(flag, l)?;
            child(child(&mut app, "metadata"), key)[k] = json!(v);
        }
    }
    if args.set_finalizer {
        let fins = list_at(child(&mut app, "metadata"), "finalizers");
        if !fins.iter().any(|f| f == FINALIZER) {
            fins.push(json!(FINALIZER));
        }
    }
    Ok(app)
}

// --------------------------------------------------------------- commands

async fn create(client: &Client, args: CreateArgs) -> Result<()> {
    let file = match &args.file {
        Some(p) if p.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
            Some(s)
        }
        Some(p) => {
            Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
        }
        None => None,
    };
    let app = build_create(&args, file.as_deref())?;
    let name = text(&app, "/metadata/name").to_string();
    let query: Vec<(&str, String)> = if args.upsert {
        vec![("upsert", "true".into())]
    } else {
        Vec::new()
    };
    client
        .post(API, &query, &app)
        .await
        .map_err(|e| match ApiError::status_of(&e) {
            Some(409) => anyhow!(
                "application '{name}' already exists with a different spec: add --upsert to replace it"
            ),
            _ => e,
        })?;
    println!("application '{name}' created");
    Ok(())
}

async fn get(client: &Client, args: GetArgs) -> Result<()> {
    let refresh = if args.hard_refresh {
        Some("hard")
    } else if args.refresh {
        Some("normal")
    } else {
        None
    };
    let app = get_app(client, &args.name, refresh).await?;
    match args.output.as_str() {
        "wide" => {
            let mut shown = report(&app, args.show_operation, false);
            // Argo CD's "Sync Window:" line, when the project has windows for the app.
            let windows = client
                .get(&format!("{API}/{}/syncwindows", seg(&args.name)), &[])
                .await?;
            if !array(&windows, "/assignedWindows").is_empty() {
                shown = with_sync_window(&shown, text(&windows, "/state"));
            }
            print!("{shown}")
        }
        f => print!("{}", output::structured(&app, f)?),
    }
    Ok(())
}

async fn list(client: &Client, args: ListArgs) -> Result<()> {
    let mut query: Vec<(&str, String)> = args
        .projects
        .iter()
        .map(|p| ("project", p.clone()))
        .collect();
    if let Some(r) = &args.repo {
        query.push(("repo", r.clone()));
    }
    if let Some(s) = &args.selector {
        query.push(("selector", s.clone()));
    }
    if let Some(c) = &args.cluster {
        query.push(("cluster", c.clone()));
    }
    let resp = client.get(API, &query).await?;
    print!("{}", list_output(array(&resp, "/items"), &args.output)?);
    Ok(())
}

fn dest_cluster(app: &Value) -> &str {
    or(
        text(app, "/spec/destination/server"),
        text(app, "/spec/destination/name"),
    )
}

fn sources(app: &Value) -> Vec<&Value> {
    let many = array(app, "/spec/sources");
    if !many.is_empty() {
        return many.iter().collect();
    }
    app.pointer("/spec/source")
        .filter(|s| s.is_object())
        .into_iter()
        .collect()
}

fn first_source(app: &Value) -> &Value {
    static NONE: Value = Value::Null;
    sources(app).into_iter().next().unwrap_or(&NONE)
}

fn list_sync_policy(app: &Value) -> &'static str {
    match app.pointer("/spec/syncPolicy/automated") {
        Some(a) if a.is_object() && a["enabled"] != false => {
            if a["prune"] == true {
                "Auto-Prune"
            } else {
                "Auto"
            }
        }
        _ => "Manual",
    }
}

/// "<none>", or the condition types with counts: `SyncError(2),ComparisonError`.
fn conditions_summary(app: &Value) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for c in array(app, "/status/conditions") {
        *counts.entry(text_of(c, "type")).or_default() += 1;
    }
    if counts.is_empty() {
        return "<none>".into();
    }
    counts
        .into_iter()
        .map(|(t, n)| {
            if n > 1 {
                format!("{t}({n})")
            } else {
                t.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn list_output(apps: &[Value], format: &str) -> Result<String> {
    match format {
        "name" => Ok(apps
            .iter()
            .map(|a| format!("{}\n", text(a, "/metadata/name")))
            .collect()),
        "wide" => {
            let rows: Vec<Vec<String>> = apps
                .iter()
                .map(|a| {
                    let src = first_source(a);
                    vec![
                        text(a, "/metadata/name").to_string(),
                        dest_cluster(a).to_string(),
                        text(a, "/spec/destination/namespace").to_string(),
                        or(text(a, "/spec/project"), "default").to_string(),
                        text(a, "/status/sync/status").to_string(),
                        text(a, "/status/health/status").to_string(),
                        list_sync_policy(a).to_string(),
                        conditions_summary(a),
                        text(src, "/repoURL").to_string(),
                        text(src, "/path").to_string(),
                        text(src, "/targetRevision").to_string(),
                    ]
                })
                .collect();
            Ok(table(
                &[
                    "NAME",
                    "CLUSTER",
                    "NAMESPACE",
                    "PROJECT",
                    "STATUS",
                    "HEALTH",
                    "SYNCPOLICY",
                    "CONDITIONS",
                    "REPO",
                    "PATH",
                    "TARGET",
                ],
                &rows,
            ))
        }
        f => output::structured(&Value::Array(apps.to_vec()), f),
    }
}

fn is_commit_sha(s: &str) -> bool {
    (7..=40).contains(&s.len()) && s.chars().all(|c| c.is_ascii_hexdigit())
}

fn source_fields(src: &Value, indent: &str, first: &str) -> String {
    let mut s = String::new();
    let mut label = first.to_string();
    let mut put = |k: &str, v: &str| {
        s.push_str(&field(&format!("{label}{k}"), v));
        label = indent.to_string();
    };
    put("Repo", text(src, "/repoURL"));
    put("Target", text(src, "/targetRevision"));
    if !text(src, "/chart").is_empty() {
        put("Chart", text(src, "/chart"));
    } else {
        put("Path", text(src, "/path"));
    }
    let values: Vec<&str> = array(src, "/helm/valueFiles")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    if !values.is_empty() {
        put("Helm Values", &values.join(","));
    }
    if !text(src, "/plugin/name").is_empty() {
        put("Plugin", text(src, "/plugin/name"));
    }
    s
}

fn sync_status_text(app: &Value) -> String {
    let status = or(text(app, "/status/sync/status"), "Unknown");
    let target = or(text(first_source(app), "/targetRevision"), "HEAD");
    let mut s = status.to_string();
    match status {
        "Synced" => s += &format!(" to {target}"),
        "OutOfSync" => s += &format!(" from {target}"),
        _ => {}
    }
    let rev = text(app, "/status/sync/revision");
    if !is_commit_sha(target) && rev.chars().count() > 7 {
        s += &format!(" ({})", rev.chars().take(7).collect::<String>());
    }
    s
}

/// The "Name: ... Health Status:" block of `argocd app get`.
fn summary(app: &Value) -> String {
    let mut s = String::new();
    s += &field("Name", text(app, "/metadata/name"));
    s += &field("Project", or(text(app, "/spec/project"), "default"));
    s += &field("Server", dest_cluster(app));
    s += &field("Namespace", text(app, "/spec/destination/namespace"));
    let srcs = sources(app);
    if srcs.len() == 1 {
        s += &source_fields(srcs[0], "", "");
    } else if srcs.len() > 1 {
        s += "Sources:\n";
        for src in srcs {
            s += &source_fields(src, "  ", "- ");
        }
    }
    let policy = match app.pointer("/spec/syncPolicy/automated") {
        Some(a) if a.is_object() && a["enabled"] != false => {
            if a["prune"] == true {
                "Automated (Prune)"
            } else {
                "Automated"
            }
        }
        _ => "Manual",
    };
    s += &field("Sync Policy", policy);
    s += &field("Sync Status", &sync_status_text(app));
    let health = or(text(app, "/status/health/status"), "Unknown");
    let msg = text(app, "/status/health/message");
    if msg.is_empty() {
        s += &field("Health Status", health);
    } else {
        s += &field("Health Status", &format!("{health} ({msg})"));
    }
    s
}

/// Inserts `Sync Window: <state>` after the Sync Policy line.
fn with_sync_window(report: &str, state: &str) -> String {
    let mut out = String::with_capacity(report.len() + 40);
    for line in report.lines() {
        out.push_str(line);
        out.push('\n');
        if line.starts_with("Sync Policy:") {
            out.push_str(&field("Sync Window", state));
        }
    }
    out
}

fn fmt_duration(secs: i64) -> String {
    let secs = secs.max(0);
    match (secs / 3600, secs % 3600 / 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

fn operation_block(app: &Value) -> String {
    let Some(op) = app
        .pointer("/status/operationState")
        .filter(|o| o.is_object())
    else {
        return String::new();
    };
    let mut s = String::from("\n");
    s += &field("Operation", "Sync");
    let rev = or(
        text(op, "/syncResult/revision"),
        text(op, "/operation/sync/revision"),
    );
    s += &field("Sync Revision", rev);
    s += &field("Phase", text(op, "/phase"));
    let (start, end) = (text(op, "/startedAt"), text(op, "/finishedAt"));
    s += &field("Start", start);
    s += &field("Finished", end);
    let ts = |t: &str| t.parse::<k8s_openapi::jiff::Timestamp>().ok();
    if let (Some(a), Some(b)) = (ts(start), ts(end)) {
        s += &field("Duration", &fmt_duration(b.as_second() - a.as_second()));
    }
    s += &field("Message", text(op, "/message"));
    s
}

fn conditions_block(app: &Value) -> String {
    let conds = array(app, "/status/conditions");
    if conds.is_empty() {
        return String::new();
    }
    let rows: Vec<Vec<&str>> = conds
        .iter()
        .map(|c| {
            vec![
                text_of(c, "type"),
                text_of(c, "message"),
                text_of(c, "lastTransitionTime"),
            ]
        })
        .collect();
    format!(
        "\n{}",
        table(&["CONDITION", "MESSAGE", "LAST TRANSITION"], &rows)
    )
}

fn same_resource(a: &Value, b: &Value) -> bool {
    ["group", "kind", "namespace", "name"]
        .iter()
        .all(|k| text_of(a, k) == text_of(b, k))
}

/// status.resources; with `results`, joined with the last sync's messages
/// and hooks, as `argocd app sync` prints them.
fn resources_table(app: &Value, results: bool) -> String {
    let resources = array(app, "/status/resources");
    if !results {
        let rows: Vec<Vec<&str>> = resources
            .iter()
            .map(|r| {
                vec![
                    text_of(r, "group"),
                    text_of(r, "kind"),
                    text_of(r, "namespace"),
                    text_of(r, "name"),
                    text_of(r, "status"),
                    text(r, "/health/status"),
                ]
            })
            .collect();
        return table(
            &["GROUP", "KIND", "NAMESPACE", "NAME", "STATUS", "HEALTH"],
            &rows,
        );
    }
    let synced = array(app, "/status/operationState/syncResult/resources");
    let mut rows: Vec<Vec<&str>> = resources
        .iter()
        .map(|r| {
            let msg = synced
                .iter()
                .find(|s| text_of(s, "hookType").is_empty() && same_resource(s, r))
                .map_or("", |s| text_of(s, "message"));
            vec![
                text_of(r, "group"),
                text_of(r, "kind"),
                text_of(r, "namespace"),
                text_of(r, "name"),
                text_of(r, "status"),
                text(r, "/health/status"),
                "",
                msg,
            ]
        })
        .collect();
    for h in synced.iter().filter(|s| !text_of(s, "hookType").is_empty()) {
        rows.push(vec![
            text_of(h, "group"),
            text_of(h, "kind"),
            text_of(h, "namespace"),
            text_of(h, "name"),
            text_of(h, "hookPhase"),
            "",
            text_of(h, "hookType"),
            text_of(h, "message"),
        ]);
    }
    table(
        &[
            "GROUP",
            "KIND",
            "NAMESPACE",
            "NAME",
            "STATUS",
            "HEALTH",
            "HOOK",
            "MESSAGE",
        ],
        &rows,
    )
}

/// Summary, conditions, optionally the last operation, then resources.
fn report(app: &Value, with_operation: bool, results: bool) -> String {
    let mut s = summary(app);
    s += &conditions_block(app);
    if with_operation {
        s += &operation_block(app);
    }
    s.push('\n');
    s += &resources_table(app, results);
    s
}

fn print_result(app: &Value, format: &str) -> Result<()> {
    match format {
        "wide" => print!("{}", report(app, true, true)),
        f => print!("{}", output::structured(app, f)?),
    }
    Ok(())
}

/// `GROUP:KIND:NAME` or `GROUP:KIND:NAMESPACE/NAME`, GROUP possibly empty.
fn parse_resource(s: &str) -> Result<Value> {
    let usage = "expected GROUP:KIND:NAME or GROUP:KIND:NAMESPACE/NAME (GROUP may be empty, as in :Service:web)";
    if s.starts_with('!') || s.contains('*') {
        bail!(
            "--resource '{s}': exclusions (!) and wildcards (*) are not supported; list each resource to sync"
        );
    }
    let parts: Vec<&str> = s.splitn(3, ':').collect();
    let [group, kind, rest] = parts.as_slice() else {
        bail!("--resource '{s}': {usage}");
    };
    let (ns, name) = match rest.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, *rest),
    };
    if kind.is_empty() || name.is_empty() || name.contains(':') {
        bail!("--resource '{s}': {usage}");
    }
    let mut r = json!({"group": group, "kind": kind, "name": name});
    if let Some(ns) = ns.filter(|n| !n.is_empty()) {
        r["namespace"] = json!(ns);
    }
    Ok(r)
}

fn sync_body(args: &SyncArgs) -> Result<Value> {
    let mut body = json!({});
    if let Some(r) = &args.revision {
        body["revision"] = json!(r);
    }
    if args.prune {
        body["prune"] = json!(true);
    }
    if args.dry_run {
        body["dryRun"] = json!(true);
    }
    if !args.resources.is_empty() {
        body["resources"] = Value::Array(
            args.resources
                .iter()
                .map(|r| parse_resource(r))
                .collect::<Result<_>>()?,
        );
    }
    let mut opts = split_sync_options(&args.sync_options)?;
    if opts.iter().any(|o| o.starts_with('!')) {
        bail!(
            "--sync-option with `!` removes an option from the app's spec: use `ferry app set`; a sync takes KEY=VALUE"
        );
    }
    for (on, opt) in [
        (args.apply_out_of_sync_only, "ApplyOutOfSyncOnly=true"),
        (args.server_side, "ServerSideApply=true"),
        (args.replace, "Replace=true"),
    ] {
        if on && !opts.iter().any(|o| o == opt) {
            opts.push(opt.to_string());
        }
    }
    if !opts.is_empty() {
        body["syncOptions"] = json!(opts);
    }
    match (args.strategy.as_deref(), args.force) {
        (Some(s), force) => body["strategy"] = json!({ s: { "force": force } }),
        (None, true) => body["strategy"] = json!({ "hook": { "force": true } }),
        (None, false) => {}
    }
    Ok(body)
}

fn op_phase(app: &Value) -> &str {
    text(app, "/status/operationState/phase")
}

/// An operation is requested (`operation` set) or has not finished.
fn operation_running(app: &Value) -> bool {
    let requested = app.get("operation").is_some_and(|o| !o.is_null());
    let st = app
        .pointer("/status/operationState")
        .filter(|s| s.is_object());
    requested || st.is_some_and(|s| text(s, "/finishedAt").is_empty())
}

fn deadline(timeout: u64) -> Option<Instant> {
    (timeout > 0).then(|| Instant::now() + Duration::from_secs(timeout))
}

/// Polls once a second until the requested operation has run: the
/// controller clears `operation` and records a finished operationState.
/// `requested` is the server's answer to the request; its operationState is
/// the previous operation's, which a lagging read may still show as finished.
async fn wait_operation(
    client: &Client,
    name: &str,
    timeout: u64,
    what: &str,
    requested: &Value,
) -> Result<Value> {
    let progress = Progress::new(format!("{what} {name}"));
    let until = deadline(timeout);
    let previous = requested.pointer("/status/operationState");
    loop {
        let app = get_app(client, name, None).await?;
        let state = app.pointer("/status/operationState");
        let ours = previous.is_none_or(|p| state != Some(p));
        if ours && !operation_running(&app) && !op_phase(&app).is_empty() {
            progress.finish();
            return Ok(app);
        }
        let phase = or(op_phase(&app), "Pending");
        progress.set(format!(
            "{what} {name}: {phase} {}",
            text(&app, "/status/operationState/message")
        ));
        if until.is_some_and(|d| Instant::now() >= d) {
            bail!(
                "timed out after {timeout}s waiting for the {what} of '{name}' to finish (it is {phase}): `ferry app get {name} --show-operation` shows progress"
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn check_phase(app: &Value, name: &str, what: &str) -> Result<()> {
    match op_phase(app) {
        "Succeeded" => Ok(()),
        phase => bail!(
            "the {what} of '{name}' ended in phase {phase}: {}",
            or(text(app, "/status/operationState/message"), "no message")
        ),
    }
}

async fn sync(client: &Client, args: SyncArgs) -> Result<()> {
    let body = sync_body(&args)?;
    for name in &args.names {
        let requested = client
            .post(&format!("{API}/{}/sync", seg(name)), &[], &body)
            .await
            .map_err(app_error(name))?;
        if args.no_wait {
            eprintln!("sync of '{name}' requested");
            continue;
        }
        let app = wait_operation(client, name, args.timeout, "sync", &requested).await?;
        print_result(&app, &args.output)?;
        check_phase(&app, name, "sync")?;
    }
    Ok(())
}

/// Which managed resources differ, rendered as argocd does: a header per
/// object and a unified diff of live → target YAML. Answers (text, found).
fn render_diff(managed: &Value) -> Result<(String, bool)> {
    fn state(v: &Value, what: &str) -> Result<Option<Value>> {
        match v {
            Value::Null => Ok(None),
            // Argo CD's API sends states as JSON text; ferry's as objects.
            Value::String(s) if s.trim().is_empty() || s.trim() == "null" => Ok(None),
            Value::String(s) => serde_json::from_str(s)
                .map(Some)
                .with_context(|| format!("the server sent a {what} that is not JSON")),
            other => Ok(Some(other.clone())),
        }
    }
    let mut out = String::new();
    let mut found = false;
    for item in array(managed, "/items") {
        if item["hook"] == true {
            continue;
        }
        let live = state(&item["liveState"], "liveState")?;
        let target = state(&item["targetState"], "targetState")?;
        let differs = match (&live, &target) {
            (None, None) => false,
            (Some(_), None) | (None, Some(_)) => true,
            (Some(_), Some(_)) => item["modified"] == true,
        };
        if !differs {
            continue;
        }
        found = true;
        let name = text_of(item, "name");
        out += &format!(
            "\n===== {}/{} {}/{} ======\n",
            text_of(item, "group"),
            text_of(item, "kind"),
            text_of(item, "namespace"),
            name
        );
        let yaml = |v: &Option<Value>| v.as_ref().map_or(Ok(String::new()), output::to_yaml);
        let (l, t) = (yaml(&live)?, yaml(&target)?);
        let d = similar::TextDiff::from_lines(&l, &t);
        out += &d
            .unified_diff()
            .header(&format!("{name}-live.yaml"), name)
            .to_string();
    }
    Ok((out, found))
}

/// argocd's contract: 0 no diff, 1 (or --diff-exit-code) diff, 2 error.
fn diff_exit_code(outcome: &Result<bool>, exit_code: bool, diff_code: u8) -> u8 {
    match outcome {
        Err(_) => 2,
        Ok(true) if exit_code => diff_code,
        Ok(_) => 0,
    }
}

async fn diff(opts: &ClientOpts, args: DiffArgs) -> Result<bool> {
    let client = Client::from_opts(opts)?;
    let refresh = if args.hard_refresh {
        Some("hard")
    } else if args.refresh {
        Some("normal")
    } else {
        None
    };
    if refresh.is_some() {
        get_app(&client, &args.name, refresh).await?;
    }
    let managed = client
        .get(&format!("{API}/{}/managed-resources", seg(&args.name)), &[])
        .await
        .map_err(app_error(&args.name))?;
    let (text, found) = render_diff(&managed)?;
    print!("{text}");
    Ok(found)
}

fn history_rows(app: &Value) -> Vec<Vec<String>> {
    array(app, "/status/history")
        .iter()
        .map(|h| {
            let rev = match text_of(h, "revision") {
                "" => array(h, "/revisions")
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","),
                r => r.to_string(),
            };
            vec![
                h["id"].as_i64().map(|i| i.to_string()).unwrap_or_default(),
                text_of(h, "deployedAt").to_string(),
                rev,
            ]
        })
        .collect()
}

async fn history(client: &Client, args: HistoryArgs) -> Result<()> {
    let app = get_app(client, &args.name, None).await?;
    let rows = history_rows(&app);
    match args.output.as_str() {
        "id" => {
            for r in rows {
                println!("{}", r[0]);
            }
        }
        "wide" => print!("{}", table(&["ID", "DATE", "REVISION"], &rows)),
        f => print!(
            "{}",
            output::structured(&Value::Array(array(&app, "/status/history").to_vec()), f)?
        ),
    }
    Ok(())
}

/// The history ID to roll back to: the given one if it exists, else the
/// deployment before the current (last) one.
fn pick_rollback_id(name: &str, history: &[Value], id: Option<i64>) -> Result<i64> {
    let ids: Vec<i64> = history.iter().filter_map(|h| h["id"].as_i64()).collect();
    match id {
        Some(i) if ids.contains(&i) => Ok(i),
        Some(i) => bail!(
            "no deployment {i} in the history of '{name}': `ferry app history {name}` lists them"
        ),
        None if ids.len() >= 2 => Ok(ids[ids.len() - 2]),
        None => bail!(
            "'{name}' has no earlier deployment to roll back to: `ferry app history {name}` lists them"
        ),
    }
}

async fn rollback(client: &Client, args: RollbackArgs) -> Result<()> {
    let app = get_app(client, &args.name, None).await?;
    let id = pick_rollback_id(&args.name, array(&app, "/status/history"), args.id)?;
    let mut body = json!({"id": id});
    if args.prune {
        body["prune"] = json!(true);
    }
    if args.dry_run {
        body["dryRun"] = json!(true);
    }
    let requested = client
        .post(&format!("{API}/{}/rollback", seg(&args.name)), &[], &body)
        .await
        .map_err(app_error(&args.name))?;
    if args.no_wait {
        eprintln!("rollback of '{}' to {id} requested", args.name);
        return Ok(());
    }
    let app = wait_operation(client, &args.name, args.timeout, "rollback", &requested).await?;
    print_result(&app, &args.output)?;
    check_phase(&app, &args.name, "rollback")
}

fn confirm(question: &str) -> Result<bool> {
    eprint!("{question} [y/n] ");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

async fn delete(client: &Client, args: DeleteArgs) -> Result<()> {
    for name in &args.names {
        // Like argocd, ask only a person at a terminal; scripts pass -y or
        // have no terminal.
        if !args.yes && output::stdin_is_terminal() {
            let q = if args.cascade {
                format!("Are you sure you want to delete '{name}' and all its resources?")
            } else {
                format!("Are you sure you want to delete '{name}'? (its resources are kept)")
            };
            if !confirm(&q)? {
                eprintln!("The command to delete '{name}' was cancelled.");
                continue;
            }
        }
        let query = [
            ("cascade", args.cascade.to_string()),
            ("propagationPolicy", args.propagation_policy.clone()),
        ];
        client
            .delete(&format!("{API}/{}", seg(name)), &query)
            .await
            .map_err(app_error(name))?;
        println!("application '{name}' deleted");
        if args.wait {
            let wf = WaitFor {
                delete: true,
                ..WaitFor::default()
            };
            wait_one(client, name, &wf, args.timeout).await?;
        }
    }
    Ok(())
}

/// What `app wait` waits for.
#[derive(Default)]
struct WaitFor {
    sync: bool,
    operation: bool,
    /// Acceptable health states (empty: health is not awaited).
    health: Vec<&'static str>,
    delete: bool,
}

impl WaitFor {
    fn from_args(a: &WaitArgs) -> WaitFor {
        let any = a.sync || a.health || a.operation || a.suspended || a.degraded || a.delete;
        let mut health = Vec::new();
        if a.health || !any {
            health.push("Healthy");
        }
        if a.suspended {
            health.push("Suspended");
        }
        if a.degraded {
            health.push("Degraded");
        }
        WaitFor {
            sync: a.sync || !any,
            operation: a.operation || !any,
            health,
            delete: a.delete,
        }
    }

    fn satisfied(&self, app: &Value) -> bool {
        (!self.sync || text(app, "/status/sync/status") == "Synced")
            && (!self.operation || !operation_running(app))
            && (self.health.is_empty() || self.health.contains(&text(app, "/status/health/status")))
    }

    /// What is still awaited, e.g. "sync status OutOfSync (waiting for Synced)".
    fn pending(&self, app: &Value) -> String {
        let mut out = Vec::new();
        let sync = or(text(app, "/status/sync/status"), "Unknown");
        if self.sync && sync != "Synced" {
            out.push(format!("sync status {sync} (waiting for Synced)"));
        }
        let health = or(text(app, "/status/health/status"), "Unknown");
        if !self.health.is_empty() && !self.health.contains(&health) {
            out.push(format!(
                "health {health} (waiting for {})",
                self.health.join(" or ")
            ));
        }
        if self.operation && operation_running(app) {
            out.push(format!("operation {}", or(op_phase(app), "pending")));
        }
        out.join(", ")
    }
}

/// Polls until `wf` holds; answers the app (None once deleted).
async fn wait_one(
    client: &Client,
    name: &str,
    wf: &WaitFor,
    timeout: u64,
) -> Result<Option<Value>> {
    let progress = Progress::new(format!("waiting for {name}"));
    let until = deadline(timeout);
    loop {
        // The raw answer: `get_app` words a 404 for people, which hides the status here.
        let got = client
            .get(&format!("{API}/{}", seg(name)), &[] as &[(&str, String)])
            .await;
        let pending = match got {
            Err(e) if wf.delete && ApiError::status_of(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(app_error(name)(e)),
            Ok(app) if !wf.delete && wf.satisfied(&app) => return Ok(Some(app)),
            Ok(_) if wf.delete => "still exists".to_string(),
            Ok(app) => wf.pending(&app),
        };
        progress.set(format!("waiting for {name}: {pending}"));
        if until.is_some_and(|d| Instant::now() >= d) {
            bail!("timed out after {timeout}s waiting for application '{name}': {pending}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn wait(client: &Client, args: WaitArgs) -> Result<()> {
    let wf = WaitFor::from_args(&args);
    for name in &args.names {
        if let Some(app) = wait_one(client, name, &wf, args.timeout).await? {
            print!("{}", report(&app, false, false));
        }
    }
    Ok(())
}

async fn manifests(client: &Client, args: ManifestsArgs) -> Result<()> {
    let mut query = vec![("source", args.source.clone())];
    if let Some(r) = &args.revision {
        query.push(("revision", r.clone()));
    }
    let resp = client
        .get(&format!("{API}/{}/manifests", seg(&args.name)), &query)
        .await
        .map_err(app_error(&args.name))?;
    print!("{}", manifests_text(&resp)?);
    Ok(())
}

fn manifests_text(resp: &Value) -> Result<String> {
    let mut out = String::new();
    for m in array(resp, "/manifests") {
        // Argo CD sends each manifest as JSON text; ferry as an object.
        let obj = match m {
            Value::String(s) => {
                serde_json::from_str(s).context("the server sent a manifest that is not JSON")?
            }
            other => other.clone(),
        };
        out += "---\n";
        out += &output::to_yaml(&obj)?;
    }
    Ok(out)
}

/// The Application as PUT takes it: no status, and no `operation`, which
/// would re-request an operation the controller may already have run.
fn for_update(mut app: Value) -> Value {
    if let Some(m) = app.as_object_mut() {
        m.remove("status");
        m.remove("operation");
    }
    app
}

async fn put_app(client: &Client, name: &str, app: Value) -> Result<()> {
    client
        .put(&format!("{API}/{}", seg(name)), &for_update(app))
        .await
        .map_err(|e| match ApiError::status_of(&e) {
            Some(409) => {
                anyhow!("application '{name}' changed while this command ran: run it again")
            }
            _ => app_error(name)(e),
        })?;
    Ok(())
}

async fn set(client: &Client, args: SetArgs) -> Result<()> {
    let mut app = get_app(client, &args.name, None).await?;
    if apply_spec_flags(&mut app, &args.spec)? == 0 {
        bail!(
            "nothing to set: pass at least one flag, e.g. --revision (`ferry app set --help` lists them)"
        );
    }
    put_app(client, &args.name, app).await
}

/// Removes what `unset` names; answers how many things were removed.
fn apply_unset(app: &mut Value, a: &UnsetArgs) -> Result<usize> {
    let mut removed = 0;
    let touches = !a.values.is_empty()
        || !a.plugin_env.is_empty()
        || !a.parameters.is_empty()
        || !a.kustomize_images.is_empty()
        || a.nameprefix
        || a.namesuffix;
    if !touches {
        bail!(
            "nothing to unset: pass e.g. --plugin-env NAME or --values FILE (`ferry app unset --help` lists them)"
        );
    }
    let src = source_mut(app, a.source_position)?;
    let mut drop_from = |obj: &str, key: &str, keep: &dyn Fn(&Value) -> bool| {
        if let Some(list) = src
            .pointer_mut(&format!("/{obj}/{key}"))
            .and_then(Value::as_array_mut)
        {
            let before = list.len();
            list.retain(|v| keep(v));
            removed += before - list.len();
        }
        if let Some(o) = src.get_mut(obj) {
            prune_empty(o, key);
        }
    };
    drop_from("helm", "valueFiles", &|v| {
        !a.values.iter().any(|f| v == f.as_str())
    });
    drop_from("plugin", "env", &|v| {
        !a.plugin_env.iter().any(|n| v["name"] == n.as_str())
    });
    drop_from("helm", "parameters", &|v| {
        !a.parameters.iter().any(|n| v["name"] == n.as_str())
    });
    drop_from("kustomize", "images", &|v| {
        let name = v.as_str().map(image_name).unwrap_or("");
        !a.kustomize_images.iter().any(|i| image_name(i) == name)
    });
    for (on, key) in [(a.nameprefix, "namePrefix"), (a.namesuffix, "nameSuffix")] {
        if on
            && let Some(k) = src.get_mut("kustomize").and_then(Value::as_object_mut)
            && k.remove(key).is_some()
        {
            removed += 1;
        }
    }
    for obj in ["helm", "plugin", "kustomize"] {
        // An empty `plugin: {}` still means "use a plugin"; keep it.
        if obj != "plugin" {
            prune_empty(src, obj);
        }
    }
    Ok(removed)
}

async fn unset(client: &Client, args: UnsetArgs) -> Result<()> {
    let mut app = get_app(client, &args.name, None).await?;
    if apply_unset(&mut app, &args)? == 0 {
        eprintln!("nothing to unset: '{}' has none of those set", args.name);
        return Ok(());
    }
    put_app(client, &args.name, app).await
}

async fn resources(client: &Client, args: ResourcesArgs) -> Result<()> {
    let app = get_app(client, &args.name, None).await?;
    let res = array(&app, "/status/resources");
    match args.output.as_str() {
        "wide" => {
            let rows: Vec<Vec<&str>> = res
                .iter()
                .map(|r| {
                    vec![
                        text_of(r, "group"),
                        text_of(r, "kind"),
                        text_of(r, "namespace"),
                        text_of(r, "name"),
                        "No",
                    ]
                })
                .collect();
            print!(
                "{}",
                table(&["GROUP", "KIND", "NAMESPACE", "NAME", "ORPHANED"], &rows)
            );
        }
        f => print!("{}", output::structured(&Value::Array(res.to_vec()), f)?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct TestCli {
        #[command(flatten)]
        opts: ClientOpts,
        #[command(subcommand)]
        command: AppCommand,
    }

    fn parse(line: &str) -> AppCommand {
        let args = std::iter::once("ferry-app").chain(line.split_whitespace());
        match TestCli::try_parse_from(args) {
            Ok(c) => c.command,
            Err(e) => panic!("{line}: {e}"),
        }
    }

    fn create_json(line: &str) -> Result<Value> {
        match parse(line) {
            AppCommand::Create(a) => build_create(&a, None),
            _ => panic!("not create"),
        }
    }

    const SEED: &str = "create myapp --repo https://git.example.com/r.git --path app --project default --dest-name in-cluster --dest-namespace ns1 --config-management-plugin=avp-kustomize --revision main --plugin-env AVP_SECRET=x --plugin-env APP_REPO=https://git.example.com/r.git --plugin-env IMAGE_NAME=img --plugin-env IMAGE_TAG=v1 --sync-policy automated --sync-option ApplyOutOfSyncOnly=true,ServerSideApply=true --upsert";

    #[test]
    fn seed_command_builds_the_application() {
        let app = create_json(SEED).unwrap();
        assert_eq!(
            app,
            json!({
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "Application",
                "metadata": {"name": "myapp"},
                "spec": {
                    "project": "default",
                    "source": {
                        "repoURL": "https://git.example.com/r.git",
                        "path": "app",
                        "targetRevision": "main",
                        "plugin": {
                            "name": "avp-kustomize",
                            "env": [
                                {"name": "AVP_SECRET", "value": "x"},
                                {"name": "APP_REPO", "value": "https://git.example.com/r.git"},
                                {"name": "IMAGE_NAME", "value": "img"},
                                {"name": "IMAGE_TAG", "value": "v1"}
                            ]
                        }
                    },
                    "destination": {"name": "in-cluster", "namespace": "ns1"},
                    "syncPolicy": {
                        "automated": {"prune": false, "selfHeal": false},
                        "syncOptions": ["ApplyOutOfSyncOnly=true", "ServerSideApply=true"]
                    }
                }
            })
        );
        let AppCommand::Create(a) = parse(SEED) else {
            panic!()
        };
        assert!(a.upsert);
    }

    #[test]
    fn create_flags_and_their_errors() {
        let app = create_json(
            "create h --repo r --dest-server https://k --helm-set a=1 --helm-set-string b=2 --values v.yaml \
             --release-name rel --label team=x --annotations note=y --sync-policy auto --auto-prune --self-heal=false --set-finalizer",
        )
        .unwrap();
        assert_eq!(app["spec"]["project"], "default");
        assert_eq!(
            app["spec"]["source"]["helm"],
            json!({"parameters": [{"name": "a", "value": "1"}, {"name": "b", "value": "2", "forceString": true}],
                   "valueFiles": ["v.yaml"], "releaseName": "rel"})
        );
        assert_eq!(
            app["spec"]["syncPolicy"]["automated"],
            json!({"prune": true, "selfHeal": false})
        );
        assert_eq!(app["metadata"]["labels"], json!({"team": "x"}));
        assert_eq!(app["metadata"]["annotations"], json!({"note": "y"}));
        assert_eq!(app["metadata"]["finalizers"], json!([FINALIZER]));

        let e = create_json("create x --repo r --dest-name c --auto-prune").unwrap_err();
        assert!(e.to_string().contains("--sync-policy automated"), "{e}");
        let e = create_json("create x --dest-name c").unwrap_err();
        assert!(e.to_string().contains("--repo"), "{e}");
        let e = create_json("create x --repo r").unwrap_err();
        assert!(e.to_string().contains("--dest-server"), "{e}");
        let e = create_json("create x --repo r --dest-name c --plugin-env NOVALUE").unwrap_err();
        assert!(e.to_string().contains("NAME=VALUE"), "{e}");
        assert!(
            TestCli::try_parse_from(["f", "create", "x", "--dest-name", "a", "--dest-server", "b"])
                .is_err()
        );
    }

    #[test]
    fn create_from_file_with_overrides() {
        let yaml = "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata:\n  name: fromfile\nspec:\n  project: p\n  source:\n    repoURL: r\n    targetRevision: main\n  destination:\n    name: in-cluster\n";
        let AppCommand::Create(a) = parse("create --revision v2") else {
            panic!()
        };
        let app = build_create(&a, Some(yaml)).unwrap();
        assert_eq!(app["metadata"]["name"], "fromfile");
        assert_eq!(app["spec"]["project"], "p");
        assert_eq!(app["spec"]["source"]["targetRevision"], "v2");
        assert!(build_create(&a, Some("kind: Deployment\n")).is_err());
    }

    #[test]
    fn sync_options_split_merge_and_remove() {
        let split = split_sync_options(&["A=1,B=2".into(), " C=3 ".into(), "!D".into()]).unwrap();
        assert_eq!(split, ["A=1", "B=2", "C=3", "!D"]);
        assert!(split_sync_options(&["Prune".into()]).is_err());
        assert!(split_sync_options(&["=x".into()]).is_err());
        let merged = merge_sync_options(
            &[json!("ServerSideApply=true"), json!("Prune=false")],
            &[
                "ServerSideApply=false,CreateNamespace=true".into(),
                "!Prune=false".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            merged,
            [
                json!("ServerSideApply=false"),
                json!("CreateNamespace=true")
            ]
        );
    }

    #[test]
    fn resource_parsing() {
        assert_eq!(
            parse_resource(":Service:web").unwrap(),
            json!({"group": "", "kind": "Service", "name": "web"})
        );
        assert_eq!(
            parse_resource("apps:Deployment:ns1/web").unwrap(),
            json!({"group": "apps", "kind": "Deployment", "namespace": "ns1", "name": "web"})
        );
        for bad in [
            "Service:web",
            "apps::web",
            "apps:Deployment:",
            "apps:Deployment:ns/",
            "!apps:Deployment:x",
            "*:Service:*",
        ] {
            assert!(parse_resource(bad).is_err(), "{bad}");
        }
        let AppCommand::Sync(s) = parse(
            "sync a b --prune --dry-run --revision v1 --resource :Service:web --resource apps:Deployment:ns/web \
             --sync-option Validate=false --server-side --async",
        ) else {
            panic!()
        };
        assert_eq!(s.names, ["a", "b"]);
        assert!(s.no_wait);
        assert_eq!(
            sync_body(&s).unwrap(),
            json!({"revision": "v1", "prune": true, "dryRun": true,
                   "resources": [{"group": "", "kind": "Service", "name": "web"},
                                 {"group": "apps", "kind": "Deployment", "namespace": "ns", "name": "web"}],
                   "syncOptions": ["Validate=false", "ServerSideApply=true"]})
        );
    }

    fn managed_sample() -> Value {
        json!({"items": [
            {"group": "apps", "version": "v1", "kind": "Deployment", "namespace": "ns1", "name": "web",
             "status": "OutOfSync", "modified": true,
             "liveState": {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 1}},
             "targetState": {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 3}}},
            {"group": "", "version": "v1", "kind": "Service", "namespace": "ns1", "name": "same",
             "status": "Synced", "modified": false,
             "liveState": {"kind": "Service"}, "targetState": {"kind": "Service"}},
            {"group": "", "version": "v1", "kind": "ConfigMap", "namespace": "ns1", "name": "new",
             "modified": false, "liveState": null, "targetState": "{\"kind\":\"ConfigMap\",\"data\":{\"a\":\"1\"}}"},
            {"group": "", "version": "v1", "kind": "ConfigMap", "namespace": "ns1", "name": "old",
             "requiresPruning": true, "liveState": {"kind": "ConfigMap"}, "targetState": null},
            {"group": "batch", "kind": "Job", "namespace": "ns1", "name": "hook", "hook": true,
             "liveState": null, "targetState": {"kind": "Job"}}
        ]})
    }

    #[test]
    fn diff_renders_changed_objects_only() {
        let (text, found) = render_diff(&managed_sample()).unwrap();
        assert!(found);
        assert_eq!(
            text,
            "\n===== apps/Deployment ns1/web ======\n\
             --- web-live.yaml\n+++ web\n@@ -3,4 +3,4 @@\n metadata:\n   name: web\n spec:\n-  replicas: 1\n+  replicas: 3\n\
             \n===== /ConfigMap ns1/new ======\n\
             --- new-live.yaml\n+++ new\n@@ -0,0 +1,3 @@\n+data:\n+  a: \"1\"\n+kind: ConfigMap\n\
             \n===== /ConfigMap ns1/old ======\n\
             --- old-live.yaml\n+++ old\n@@ -1 +0,0 @@\n-kind: ConfigMap\n"
        );
        let (text, found) =
            render_diff(&json!({"items": [managed_sample()["items"][1].clone()]})).unwrap();
        assert!(!found && text.is_empty());
        assert!(render_diff(&json!({"items": [{"name": "x", "liveState": "{bad"}]})).is_err());
    }

    #[test]
    fn diff_exit_codes() {
        assert_eq!(diff_exit_code(&Ok(false), true, 1), 0);
        assert_eq!(diff_exit_code(&Ok(true), true, 1), 1);
        assert_eq!(diff_exit_code(&Ok(true), true, 20), 20);
        assert_eq!(diff_exit_code(&Ok(true), false, 1), 0);
        assert_eq!(diff_exit_code(&Err(anyhow!("401")), true, 1), 2);
        assert_eq!(diff_exit_code(&Err(anyhow!("down")), false, 1), 2);
        let AppCommand::Diff(d) = parse("diff x --exit-code=false --hard-refresh") else {
            panic!()
        };
        assert!(!d.exit_code && d.hard_refresh);
    }

    fn sample_apps() -> Vec<Value> {
        vec![
            json!({"metadata": {"name": "guestbook"},
                   "spec": {"project": "default", "destination": {"server": "https://kubernetes.default.svc", "namespace": "gb"},
                            "source": {"repoURL": "https://git/r.git", "path": "guestbook", "targetRevision": "HEAD"},
                            "syncPolicy": {"automated": {"prune": true}}},
                   "status": {"sync": {"status": "Synced", "revision": "0123456789abcdef"}, "health": {"status": "Healthy"},
                              "conditions": [{"type": "SyncError", "message": "a"}, {"type": "SyncError", "message": "b"},
                                             {"type": "ComparisonError", "message": "c"}]}}),
            json!({"metadata": {"name": "plain"},
                   "spec": {"destination": {"name": "in-cluster", "namespace": "p"},
                            "source": {"repoURL": "https://git/p.git", "path": "p"}},
                   "status": {"sync": {"status": "OutOfSync"}, "health": {"status": "Missing"}}}),
        ]
    }

    #[test]
    fn list_output_formats() {
        let apps = sample_apps();
        assert_eq!(
            list_output(&apps, "wide").unwrap(),
            "NAME       CLUSTER                         NAMESPACE  PROJECT  STATUS     HEALTH   SYNCPOLICY  CONDITIONS                    REPO               PATH       TARGET\n\
             guestbook  https://kubernetes.default.svc  gb         default  Synced     Healthy  Auto-Prune  ComparisonError,SyncError(2)  https://git/r.git  guestbook  HEAD\n\
             plain      in-cluster                      p          default  OutOfSync  Missing  Manual      <none>                        https://git/p.git  p\n"
        );
        assert_eq!(list_output(&apps, "name").unwrap(), "guestbook\nplain\n");
        let json: Value = serde_json::from_str(&list_output(&apps, "json").unwrap()).unwrap();
        assert_eq!(json, Value::Array(apps.clone()));
        let yaml: Value = serde_saphyr::from_str(&list_output(&apps, "yaml").unwrap()).unwrap();
        assert_eq!(yaml, Value::Array(apps));
    }

    #[test]
    fn get_summary_is_argocd_like() {
        let mut app = sample_apps().remove(0);
        app["status"]["resources"] = json!([
            {"group": "apps", "kind": "Deployment", "namespace": "gb", "name": "web", "status": "Synced", "health": {"status": "Healthy"}},
            {"kind": "Service", "namespace": "gb", "name": "web", "status": "Synced"}
        ]);
        let s = report(&app, false, false);
        assert!(
            s.starts_with(
                "Name:               guestbook\n\
             Project:            default\n\
             Server:             https://kubernetes.default.svc\n\
             Namespace:          gb\n\
             Repo:               https://git/r.git\n\
             Target:             HEAD\n\
             Path:               guestbook\n\
             Sync Policy:        Automated (Prune)\n\
             Sync Status:        Synced to HEAD (0123456)\n\
             Health Status:      Healthy\n"
            ),
            "{s}"
        );
        assert!(
            s.ends_with(concat!(
                "\nGROUP  KIND        NAMESPACE  NAME  STATUS  HEALTH\n",
                "apps   Deployment  gb         web   Synced  Healthy\n",
                "       Service     gb         web   Synced\n",
            )),
            "{s}"
        );
        assert!(s.contains("\nSyncError        a\n"), "{s}");
    }

    #[test]
    fn operation_result_and_waiting() {
        let mut app = sample_apps().remove(0);
        app["status"]["operationState"] = json!({
            "phase": "Succeeded", "message": "successfully synced",
            "startedAt": "2024-01-01T00:00:00Z", "finishedAt": "2024-01-01T00:01:05Z",
            "syncResult": {"revision": "abc", "resources": [
                {"group": "apps", "kind": "Deployment", "namespace": "gb", "name": "web", "status": "Synced", "message": "deployment.apps/web configured"},
                {"group": "batch", "kind": "Job", "namespace": "gb", "name": "migrate", "hookType": "PreSync", "hookPhase": "Succeeded", "message": "done"}
            ]}
        });
        app["status"]["resources"] = json!([
            {"group": "apps", "kind": "Deployment", "namespace": "gb", "name": "web", "status": "Synced", "health": {"status": "Healthy"}}
        ]);
        let s = report(&app, true, true);
        assert!(s.contains("Duration:           1m5s\n"), "{s}");
        assert!(s.contains("Phase:              Succeeded\n"), "{s}");
        assert!(s.contains("deployment.apps/web configured"), "{s}");
        assert!(
            s.contains(
                "batch  Job         gb         migrate  Succeeded           PreSync  done\n"
            ),
            "{s}"
        );
        assert!(check_phase(&app, "guestbook", "sync").is_ok());
        assert!(!operation_running(&app));

        let all = WaitFor::from_args(&WaitArgs {
            names: vec![],
            health: false,
            sync: false,
            operation: false,
            suspended: false,
            degraded: false,
            delete: false,
            timeout: 0,
        });
        assert!(all.satisfied(&app));
        app["operation"] = json!({"sync": {}});
        assert!(!all.satisfied(&app));
        assert_eq!(all.pending(&app), "operation Succeeded");
        app["status"]["health"]["status"] = json!("Progressing");
        app["status"]["sync"]["status"] = json!("OutOfSync");
        app["status"]["operationState"]["phase"] = json!("Failed");
        assert!(check_phase(&app, "guestbook", "sync").is_err());
        let health_only = WaitFor {
            health: vec!["Healthy"],
            ..WaitFor::default()
        };
        assert_eq!(
            health_only.pending(&app),
            "health Progressing (waiting for Healthy)"
        );
    }

    #[test]
    fn history_and_rollback_choice() {
        let h = vec![
            json!({"id": 0, "revision": "a"}),
            json!({"id": 1, "revision": "b"}),
            json!({"id": 4, "revision": "c"}),
        ];
        assert_eq!(pick_rollback_id("x", &h, None).unwrap(), 1);
        assert_eq!(pick_rollback_id("x", &h, Some(0)).unwrap(), 0);
        assert!(pick_rollback_id("x", &h, Some(9)).is_err());
        assert!(pick_rollback_id("x", &h[..1], None).is_err());
        let app = json!({"status": {"history": [{"id": 3, "revision": "abc", "deployedAt": "2024-01-01T00:00:00Z"}]}});
        assert_eq!(history_rows(&app), [["3", "2024-01-01T00:00:00Z", "abc"]]);
    }

    #[test]
    fn set_and_unset_edit_the_spec() {
        let mut app = create_json(SEED).unwrap();
        app["status"] = json!({"sync": {"status": "Synced"}});
        app["operation"] = json!({"sync": {}});
        let AppCommand::Set(s) = parse(
            "set myapp --revision v2 --plugin-env IMAGE_TAG=v2 --sync-option !ApplyOutOfSyncOnly --self-heal --dest-server https://k",
        ) else {
            panic!()
        };
        assert_eq!(apply_spec_flags(&mut app, &s.spec).unwrap(), 5);
        assert_eq!(app["spec"]["source"]["targetRevision"], "v2");
        assert_eq!(
            app["spec"]["source"]["plugin"]["env"][3],
            json!({"name": "IMAGE_TAG", "value": "v2"})
        );
        assert_eq!(
            app["spec"]["source"]["plugin"]["env"]
                .as_array()
                .map(Vec::len),
            Some(4)
        );
        assert_eq!(
            app["spec"]["syncPolicy"]["syncOptions"],
            json!(["ServerSideApply=true"])
        );
        assert_eq!(app["spec"]["syncPolicy"]["automated"]["selfHeal"], true);
        assert_eq!(
            app["spec"]["destination"],
            json!({"server": "https://k", "namespace": "ns1"})
        );
        let AppCommand::Set(s) = parse("set myapp --sync-policy none") else {
            panic!()
        };
        apply_spec_flags(&mut app, &s.spec).unwrap();
        assert!(app["spec"]["syncPolicy"].get("automated").is_none());
        let AppCommand::Set(s) = parse("set myapp") else {
            panic!()
        };
        assert_eq!(apply_spec_flags(&mut app, &s.spec).unwrap(), 0);

        let AppCommand::Unset(u) =
            parse("unset myapp --plugin-env AVP_SECRET --plugin-env NOPE --values none.yaml")
        else {
            panic!()
        };
        assert_eq!(apply_unset(&mut app, &u).unwrap(), 1);
        assert_eq!(
            app["spec"]["source"]["plugin"]["env"][0]["name"],
            "APP_REPO"
        );
        let body = for_update(app);
        assert!(body.get("status").is_none() && body.get("operation").is_none());

        let mut multi = json!({"spec": {"sources": [{"repoURL": "a"}, {"repoURL": "b"}]}});
        let AppCommand::Set(s) = parse("set m --revision v1") else {
            panic!()
        };
        assert!(apply_spec_flags(&mut multi, &s.spec).is_err());
        let AppCommand::Set(s) = parse("set m --revision v1 --source-position 2") else {
            panic!()
        };
        apply_spec_flags(&mut multi, &s.spec).unwrap();
        assert_eq!(multi["spec"]["sources"][1]["targetRevision"], "v1");
    }

    #[test]
    fn kustomize_images_replace_by_name() {
        assert_eq!(image_name("nginx=nginx:1.2"), "nginx");
        assert_eq!(image_name("reg:5000/nginx:1.2"), "reg:5000/nginx");
        assert_eq!(image_name("reg:5000/nginx"), "reg:5000/nginx");
        assert_eq!(image_name("nginx@sha256:abc"), "nginx");
        let mut app =
            json!({"spec": {"source": {"kustomize": {"images": ["nginx:1.0", "redis:7"]}}}});
        let AppCommand::Set(s) = parse("set x --kustomize-image nginx:1.2") else {
            panic!()
        };
        apply_spec_flags(&mut app, &s.spec).unwrap();
        assert_eq!(
            app["spec"]["source"]["kustomize"]["images"],
            json!(["nginx:1.2", "redis:7"])
        );
    }

    #[test]
    fn manifests_are_yaml_documents() {
        let resp = json!({"manifests": [{"kind": "A"}, "{\"kind\":\"B\"}"]});
        assert_eq!(
            manifests_text(&resp).unwrap(),
            "---\nkind: A\n---\nkind: B\n"
        );
    }

    #[test]
    fn delete_flags_parse_like_argocd() {
        let AppCommand::Delete(d) = parse("delete a --cascade=false -p background -y") else {
            panic!()
        };
        assert!(!d.cascade && d.yes);
        assert_eq!(d.propagation_policy, "background");
        let AppCommand::Delete(d) = parse("delete a --cascade b") else {
            panic!()
        };
        assert!(d.cascade);
        assert_eq!(d.names, ["a", "b"]);
    }
}

//! ApplicationSets: a kube-runtime controller over the ApplicationSets of the controller's
//! namespace that owns their Applications. Each pass fetches what the generators read (cluster
//! Secrets from the shared cache, repositories through the source cache), renders every
//! Application with `ferry-appset`, and only when all of that succeeded creates, updates and
//! deletes as `syncPolicy.applicationsSync` allows. A failure changes no Application and shows
//! in the set's conditions.

use crate::Controller;
use crate::events::{AppEvent, emit_for};
use ferry_appset::generate::PullRequest;
use ferry_appset::render::Mode;
use ferry_appset::{Cluster, Error as GenError, Rendered, Tree};
use ferry_model::Application;
use ferry_model::appset::ApplicationSet;
use ferry_model::appset::PullRequestGenerator;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller as Runtime};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const REFRESH_ANNOTATION: &str = "argocd.argoproj.io/application-set-refresh";
/// Annotations of a generated Application the set never removes.
const PRESERVED_ANNOTATIONS: [&str; 2] = [
    "notified.notifications.argoproj.io",
    ferry_model::annotations::REFRESH,
];
/// How soon a set whose generation failed is tried again.
const RETRY: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

struct Ctx {
    client: Client,
    ctl: Arc<Controller>,
}

/// Runs until the returned task is aborted (when the controller stops leading).
pub fn start(client: Client, ctl: Arc<Controller>) -> tokio::task::JoinHandle<()> {
    let ns = ctl.cfg.namespace.clone();
    let sets: Api<ApplicationSet> = Api::namespaced(client.clone(), &ns);
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let runtime =
        Runtime::new(sets, watcher::Config::default()).owns(apps, watcher::Config::default());
    let store = runtime.store();
    // A cluster Secret added, changed or removed: every set may generate differently.
    let runtime = runtime.watches(
        secrets,
        watcher::Config::default().labels(&format!(
            "{}=cluster",
            ferry_model::annotations::SECRET_TYPE_LABEL
        )),
        move |_| {
            store
                .state()
                .iter()
                .map(|s| ObjectRef::from_obj(&**s))
                .collect::<Vec<_>>()
        },
    );
    let ctx = Arc::new(Ctx { client, ctl });
    tokio::spawn(async move {
        runtime
            .run(reconcile, error_policy, ctx)
            .for_each(|r| async move {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "applicationset controller");
                }
            })
            .await;
    })
}

fn error_policy(_: Arc<ApplicationSet>, e: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!(error = %e, "applicationset");
    Action::requeue(RETRY)
}

/// A checked-out revision's files.
pub struct DirTree {
    root: PathBuf,
}

impl DirTree {
    pub fn new(root: PathBuf) -> DirTree {
        DirTree { root }
    }

    fn walk(&self, dir: &Path, rel: &str, dirs: &mut Vec<String>, files: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            // Symbolic links are not followed: nothing outside the repository is read.
            let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            if meta.is_dir() {
                if name == ".git" {
                    continue;
                }
                dirs.push(path.clone());
                self.walk(&e.path(), &path, dirs, files);
            } else if meta.is_file() {
                files.push(path);
            }
        }
    }

    fn list(&self) -> (Vec<String>, Vec<String>) {
        let (mut dirs, mut files) = (Vec::new(), Vec::new());
        self.walk(&self.root, "", &mut dirs, &mut files);
        (dirs, files)
    }
}

impl Tree for DirTree {
    fn dirs(&self) -> Vec<String> {
        self.list().0
    }
    fn files(&self) -> Vec<String> {
        self.list().1
    }
    fn read(&self, path: &str) -> Result<Vec<u8>, String> {
        if path.split('/').any(|p| p == "..") {
            return Err("path leaves the repository".into());
        }
        let full = self.root.join(path);
        let meta = std::fs::symlink_metadata(&full).map_err(|e| e.to_string())?;
        if !meta.is_file() {
            return Err("not a regular file".into());
        }
        // A file generator reads parameters, not data sets: bounded.
        if meta.len() > 4 * 1024 * 1024 {
            return Err("larger than 4 MiB".into());
        }
        std::fs::read(full).map_err(|e| e.to_string())
    }
}

struct Fetched {
    clusters: Vec<Cluster>,
    repos: HashMap<(String, String), DirTree>,
    pulls: HashMap<String, Vec<PullRequest>>,
}

impl ferry_appset::Inputs for Fetched {
    fn clusters(&self) -> Vec<Cluster> {
        self.clusters.clone()
    }
    fn repo(&self, url: &str, revision: &str) -> Result<&dyn Tree, GenError> {
        self.repos
            .get(&(url.to_string(), revision.to_string()))
            .map(|t| t as &dyn Tree)
            .ok_or_else(|| GenError::NeedRepo {
                url: url.into(),
                revision: revision.into(),
            })
    }
    fn pull_requests(&self, g: &PullRequestGenerator) -> Result<Vec<PullRequest>, GenError> {
        self.pulls
            .get(&serde_json::to_string(g).unwrap_or_default())
            .cloned()
            .ok_or_else(|| GenError::NeedPullRequests(Box::new(g.clone())))
    }
}

/// The open pull requests of a GitHub or Gitea repository, through the forge's REST API with
/// the token of `tokenRef` (a Secret in the set's namespace).
async fn fetch_pull_requests(
    ctx: &Ctx,
    ns: &str,
    g: &PullRequestGenerator,
) -> Result<Vec<PullRequest>, String> {
    let (forge, github) = match (&g.github, &g.gitea) {
        (Some(f), _) => (f, true),
        (None, Some(f)) => (f, false),
        _ => return Err("pull request generator: name one of github and gitea".into()),
    };
    let token = match &forge.token_ref {
        Some(r) => {
            let s = Api::<Secret>::namespaced(ctx.client.clone(), ns)
                .get(&r.secret_name)
                .await
                .map_err(|e| format!("tokenRef: Secret {}: {e}", r.secret_name))?;
            let v = s.data.and_then(|d| d.get(&r.key).cloned()).ok_or_else(|| {
                format!("tokenRef: Secret {} has no key {}", r.secret_name, r.key)
            })?;
            Some(String::from_utf8_lossy(&v.0).trim().to_string())
        }
        None => None,
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .tls_danger_accept_invalid_certs(forge.insecure)
        .build()
        .map_err(|e| e.to_string())?;
    let base = match (&forge.api, github) {
        (Some(a), _) => a.trim_end_matches('/').to_string(),
        (None, true) => "https://api.github.com".to_string(),
        (None, false) => {
            return Err("pull request generator: gitea needs api (the server's URL)".into());
        }
    };
    let mut out = Vec::new();
    for page in 1..=20 {
        let url = if github {
            format!(
                "{base}/repos/{}/{}/pulls?per_page=100&page={page}",
                forge.owner, forge.repo
            )
        } else {
            format!(
                "{base}/api/v1/repos/{}/{}/pulls?state=open&limit=50&page={page}",
                forge.owner, forge.repo
            )
        };
        let mut req = http
            .get(&url)
            .header("user-agent", "ferry")
            .header("accept", "application/json");
        if let Some(t) = &token {
            req = req.header(
                "authorization",
                if github {
                    format!("Bearer {t}")
                } else {
                    format!("token {t}")
                },
            );
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("error listing pull requests: GET {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!(
                "error listing pull requests: GET {url}: {}",
                resp.status()
            ));
        }
        let items: Vec<Value> = resp
            .json()
            .await
            .map_err(|e| format!("error listing pull requests: {url}: {e}"))?;
        let n = items.len();
        for p in items {
            if p["state"].as_str().is_some_and(|s| s != "open") {
                continue;
            }
            out.push(PullRequest {
                number: p["number"].as_u64().unwrap_or_default(),
                title: p["title"].as_str().unwrap_or_default().into(),
                branch: p["head"]["ref"].as_str().unwrap_or_default().into(),
                target_branch: p["base"]["ref"].as_str().unwrap_or_default().into(),
                head_sha: p["head"]["sha"].as_str().unwrap_or_default().into(),
                labels: p["labels"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|l| l["name"].as_str().map(String::from))
                    .collect(),
                author: p["user"]["login"].as_str().unwrap_or_default().into(),
            });
        }
        if n < if github { 100 } else { 50 } {
            break;
        }
    }
    Ok(out)
}

fn cluster_inputs(ctl: &Controller) -> Vec<Cluster> {
    let mut out: Vec<Cluster> = ctl
        .secrets
        .state()
        .iter()
        .filter(|s| {
            s.labels()
                .get(ferry_model::annotations::SECRET_TYPE_LABEL)
                .map(String::as_str)
                == Some("cluster")
        })
        .map(|s| {
            let d = crate::clusters::decode(s);
            Cluster {
                name: d.get("name").cloned().unwrap_or_default(),
                server: d.get("server").cloned().unwrap_or_default(),
                project: d.get("project").cloned().unwrap_or_default(),
                labels: s.labels().clone(),
                annotations: s
                    .annotations()
                    .iter()
                    .filter(|(k, _)| *k != "kubectl.kubernetes.io/last-applied-configuration")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Generates and renders; fetches each repository a generator asks for, then asks again.
async fn desired(
    ctx: &Ctx,
    set: &ApplicationSet,
    fresh: bool,
) -> Result<(Vec<Rendered>, Option<Duration>), (String, String)> {
    let mode =
        Mode::of(set).map_err(|e| ("RenderTemplateParamsError".to_string(), e.to_string()))?;
    let mut inputs = Fetched {
        clusters: cluster_inputs(&ctx.ctl),
        repos: HashMap::new(),
        pulls: HashMap::new(),
    };
    for _ in 0..32 {
        match ferry_appset::generate(&set.spec.generators, &set.spec.template, &mode, &inputs) {
            Ok((generated, requeue)) => {
                let rendered = ferry_appset::render_all(set, &generated)
                    .map_err(|e| ("RenderTemplateParamsError".to_string(), e.to_string()))?;
                return Ok((rendered, requeue));
            }
            Err(GenError::NeedRepo { url, revision }) => {
                let dir = ctx
                    .ctl
                    .checkout_revision(&url, &revision, fresh)
                    .await
                    .map_err(|e| ("ApplicationGenerationFromParamsError".to_string(), e))?;
                inputs.repos.insert((url, revision), DirTree { root: dir });
            }
            Err(GenError::NeedPullRequests(g)) => {
                let ns = set.namespace().unwrap_or_default();
                let prs = fetch_pull_requests(ctx, &ns, &g)
                    .await
                    .map_err(|e| ("ApplicationGenerationFromParamsError".to_string(), e))?;
                inputs
                    .pulls
                    .insert(serde_json::to_string(&*g).unwrap_or_default(), prs);
            }
            Err(e) => {
                return Err((
                    "ApplicationGenerationFromParamsError".to_string(),
                    e.to_string(),
                ));
            }
        }
    }
    Err((
        "ApplicationGenerationFromParamsError".into(),
        "the generators read more than 32 repositories".into(),
    ))
}

fn owner_ref(set: &ApplicationSet) -> Value {
    json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "ApplicationSet",
        "name": set.name_any(), "uid": set.uid().unwrap_or_default(),
        "controller": true, "blockOwnerDeletion": true,
    })
}

fn owned_by(app: &Application, set: &ApplicationSet) -> bool {
    let uid = set.uid().unwrap_or_default();
    app.owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && o.kind == "ApplicationSet" && o.uid == uid)
}

/// Removes the values at the set's `ignoreApplicationDifferences` pointers from both, so
/// they neither count as a difference nor get overwritten.
fn ignored_pointers(set: &ApplicationSet, name: &str) -> Vec<String> {
    set.spec
        .ignore_application_differences
        .iter()
        .filter(|r| r.name.is_empty() || r.name == name)
        .flat_map(|r| r.json_pointers.clone())
        .collect()
}

/// What the live Application should become: the rendered one, keeping the live values of
/// preserved annotations and labels and of ignored fields.
fn merged(set: &ApplicationSet, live: &Value, rendered: &Value) -> Value {
    let mut want = rendered.clone();
    let mut keep_ann: Vec<String> = PRESERVED_ANNOTATIONS
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut keep_lab: Vec<String> = Vec::new();
    if let Some(p) = &set.spec.preserved_fields {
        keep_ann.extend(p.annotations.iter().cloned());
        keep_lab.extend(p.labels.iter().cloned());
    }
    for (field, keys) in [("annotations", &keep_ann), ("labels", &keep_lab)] {
        for k in keys {
            if let Some(v) = live["metadata"][field].get(k) {
                if !want["metadata"][field].is_object() {
                    want["metadata"][field] = json!({});
                }
                want["metadata"][field][k] = v.clone();
            }
        }
    }
    for p in ignored_pointers(set, want["metadata"]["name"].as_str().unwrap_or_default()) {
        let target = format!("/spec{p}");
        match live.pointer(&target) {
            Some(v) => {
                if let Some(slot) = want.pointer_mut(&target) {
                    *slot = v.clone();
                } else if let Some((parent, key)) = target.rsplit_once('/')
                    && let Some(Value::Object(m)) = want.pointer_mut(parent)
                {
                    m.insert(key.to_string(), v.clone());
                }
            }
            None => {
                if let Some((parent, key)) = target.rsplit_once('/')
                    && let Some(Value::Object(m)) = want.pointer_mut(parent)
                {
                    m.remove(key);
                }
            }
        }
    }
    want
}

fn differs(live: &Value, want: &Value) -> bool {
    let norm = |v: &Value| v.clone();
    norm(&live["spec"]) != norm(&want["spec"])
        || live["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_default()
            != want["metadata"]["labels"]
                .as_object()
                .cloned()
                .unwrap_or_default()
        || live["metadata"]["annotations"]
            .as_object()
            .cloned()
            .unwrap_or_default()
            != want["metadata"]["annotations"]
                .as_object()
                .cloned()
                .unwrap_or_default()
        || live["metadata"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            != want["metadata"]["finalizers"]
                .as_array()
                .cloned()
                .unwrap_or_default()
}

fn condition(type_: &str, status: bool, reason: &str, message: &str) -> Value {
    json!({ "type": type_, "status": if status { "True" } else { "False" }, "reason": reason, "message": message })
}

async fn write_status(
    ctx: &Ctx,
    set: &ApplicationSet,
    conditions: Vec<Value>,
    resources: Option<Vec<Value>>,
) -> Result<(), Error> {
    let old = set.status.clone().unwrap_or_default();
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let old_conditions = old["conditions"].as_array().cloned().unwrap_or_default();
    let conditions: Vec<Value> = conditions
        .into_iter()
        .map(|mut c| {
            // The transition time stays while the condition says the same.
            let same = old_conditions.iter().find(|o| {
                o["type"] == c["type"]
                    && o["status"] == c["status"]
                    && o["reason"] == c["reason"]
                    && o["message"] == c["message"]
            });
            c["lastTransitionTime"] = same
                .map(|o| o["lastTransitionTime"].clone())
                .unwrap_or_else(|| json!(now));
            c
        })
        .collect();
    let mut status = json!({ "conditions": conditions });
    status["resources"] = match resources {
        Some(r) => json!(r),
        None => old.get("resources").cloned().unwrap_or(json!([])),
    };
    if old.get("conditions") == status.get("conditions")
        && old.get("resources") == status.get("resources")
    {
        return Ok(());
    }
    let api: Api<ApplicationSet> =
        Api::namespaced(ctx.client.clone(), &set.namespace().unwrap_or_default());
    api.patch(
        &set.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await?;
    Ok(())
}

fn involved(set: &ApplicationSet) -> Value {
    json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "ApplicationSet",
        "name": set.name_any(), "namespace": set.namespace().unwrap_or_default(),
        "uid": set.uid().unwrap_or_default(), "resourceVersion": set.resource_version().unwrap_or_default(),
    })
}

async fn reconcile(set: Arc<ApplicationSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = set.namespace().unwrap_or_default();
    let dyn_apps: Api<kube::api::DynamicObject> = Api::namespaced_with(
        ctx.client.clone(),
        &ns,
        &kube::api::ApiResource::erase::<Application>(&()),
    );
    let policy = set
        .spec
        .sync_policy
        .as_ref()
        .and_then(|p| p.applications_sync.clone())
        .unwrap_or_else(|| "sync".into());
    let (allow_update, allow_delete) = match policy.as_str() {
        "create-only" => (false, false),
        "create-update" => (true, false),
        "create-delete" => (false, true),
        _ => (true, true),
    };
    let owned: Vec<Arc<Application>> = ctx
        .ctl
        .applications()
        .into_iter()
        .filter(|a| a.namespace().as_deref() == Some(ns.as_str()) && owned_by(a, &set))
        .collect();
    if set.metadata.deletion_timestamp.is_some() {
        if !allow_delete {
            // The policy keeps Applications: they outlive their set.
            for a in &owned {
                let _ = dyn_apps
                    .patch(
                        &a.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(json!({ "metadata": { "ownerReferences": [] } })),
                    )
                    .await;
            }
        }
        return Ok(Action::await_change());
    }
    let mut unsupported = ferry_appset::unknown_fields(&set.spec);
    if set.spec.sync_policy.is_some()
        && !matches!(
            policy.as_str(),
            "create-only" | "create-update" | "create-delete" | "sync"
        )
    {
        unsupported.push(format!("spec.syncPolicy.applicationsSync: {policy}"));
    }
    for r in &set.spec.ignore_application_differences {
        if !r.jq_path_expressions.is_empty() {
            unsupported.push("spec.ignoreApplicationDifferences[].jqPathExpressions".into());
        }
    }
    let fresh = set.annotations().contains_key(REFRESH_ANNOTATION);
    let outcome = if unsupported.is_empty() {
        desired(&ctx, &set, fresh).await
    } else {
        Err((
            "ApplicationGenerationFromParamsError".into(),
            format!("fields Ferry does not act on: {}", unsupported.join(", ")),
        ))
    };
    let (rendered, requeue) = match outcome {
        Ok(r) => r,
        Err((reason, message)) => {
            // Nothing is created, changed or deleted: the apps stay as they are.
            let generated = reason == "RenderTemplateParamsError";
            write_status(
                &ctx,
                &set,
                vec![
                    condition("ErrorOccurred", true, &reason, &message),
                    if generated {
                        condition(
                            "ParametersGenerated",
                            true,
                            "ParametersGenerated",
                            "Successfully generated parameters for all Applications",
                        )
                    } else {
                        condition("ParametersGenerated", false, "ErrorOccurred", &message)
                    },
                    condition("ResourcesUpToDate", false, &reason, &message),
                ],
                None,
            )
            .await?;
            emit_for(
                &ctx.client,
                involved(&set),
                json!({}),
                "applicationset-controller",
                vec![AppEvent {
                    warning: true,
                    reason: reason.clone().into(),
                    message,
                }],
            );
            return Ok(Action::requeue(RETRY));
        }
    };
    let live_by_name: BTreeMap<String, Arc<Application>> = ctx
        .ctl
        .applications()
        .into_iter()
        .filter(|a| a.namespace().as_deref() == Some(ns.as_str()))
        .map(|a| (a.name_any(), a))
        .collect();
    let mut events = Vec::new();
    let mut failure: Option<(String, String)> = None;
    for r in &rendered {
        let mut app = r.app.clone();
        app["metadata"]["ownerReferences"] = json!([owner_ref(&set)]);
        match live_by_name.get(&r.name) {
            None => {
                let obj: kube::api::DynamicObject = match serde_json::from_value(app) {
                    Ok(o) => o,
                    Err(e) => {
                        failure = Some(("CreateApplicationError".into(), e.to_string()));
                        continue;
                    }
                };
                match dyn_apps.create(&PostParams::default(), &obj).await {
                    Ok(_) => events.push(AppEvent::normal(
                        "created",
                        format!("created Application {:?}", r.name),
                    )),
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => {
                        failure =
                            Some(("CreateApplicationError".into(), format!("{}: {e}", r.name)))
                    }
                }
            }
            Some(live) if allow_update => {
                if !owned_by(live, &set) {
                    failure = Some((
                        "UpdateApplicationError".into(),
                        format!(
                            "Application {} exists and is not this ApplicationSet's",
                            r.name
                        ),
                    ));
                    continue;
                }
                let live_v = serde_json::to_value(&**live).unwrap_or_default();
                let want = merged(&set, &live_v, &app);
                if !differs(&live_v, &want) {
                    continue;
                }
                let ops = json!([
                    { "op": "test", "path": "/metadata/resourceVersion", "value": live.resource_version() },
                    { "op": "add", "path": "/spec", "value": want["spec"] },
                    { "op": "add", "path": "/metadata/labels", "value": want["metadata"]["labels"].as_object().cloned().unwrap_or_default() },
                    { "op": "add", "path": "/metadata/annotations", "value": want["metadata"]["annotations"].as_object().cloned().unwrap_or_default() },
                    { "op": "add", "path": "/metadata/finalizers", "value": want["metadata"]["finalizers"].as_array().cloned().unwrap_or_default() },
                ]);
                let patch: json_patch::Patch = match serde_json::from_value(ops) {
                    Ok(p) => p,
                    Err(e) => {
                        failure = Some(("UpdateApplicationError".into(), e.to_string()));
                        continue;
                    }
                };
                match dyn_apps
                    .patch(&r.name, &PatchParams::default(), &Patch::<()>::Json(patch))
                    .await
                {
                    Ok(_) => events.push(AppEvent::normal(
                        "updated",
                        format!("updated Application {:?}", r.name),
                    )),
                    Err(e) => {
                        failure =
                            Some(("UpdateApplicationError".into(), format!("{}: {e}", r.name)))
                    }
                }
            }
            Some(_) => {}
        }
    }
    if allow_delete && failure.is_none() {
        for a in &owned {
            if rendered.iter().any(|r| r.name == a.name_any()) {
                continue;
            }
            match dyn_apps
                .delete(&a.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => events.push(AppEvent::normal(
                    "Deleted",
                    format!("Deleted Application {:?}", a.name_any()),
                )),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    failure = Some((
                        "DeleteApplicationError".into(),
                        format!("{}: {e}", a.name_any()),
                    ))
                }
            }
        }
    }
    emit_for(
        &ctx.client,
        involved(&set),
        json!({}),
        "applicationset-controller",
        events,
    );
    // Every app the set has now, with its health and sync as its controller reports them.
    let mut resources: Vec<Value> = rendered
        .iter()
        .filter_map(|r| live_by_name.get(&r.name))
        .map(|a| {
            let st = a.status.clone().unwrap_or_default();
            let mut v = json!({
                "group": "argoproj.io", "version": "v1alpha1", "kind": "Application",
                "name": a.name_any(), "namespace": ns,
                "health": { "status": st.health.as_ref().map(|h| h.status.clone()).unwrap_or_default() },
            });
            if let Some(s) = st.sync.as_ref().map(|s| s.status.clone()).filter(|s| !s.is_empty()) {
                v["status"] = json!(s);
            }
            v
        })
        .collect();
    resources.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let conditions = match &failure {
        Some((reason, message)) => vec![
            condition("ErrorOccurred", true, reason, message),
            condition(
                "ParametersGenerated",
                true,
                "ParametersGenerated",
                "Successfully generated parameters for all Applications",
            ),
            condition("ResourcesUpToDate", false, reason, message),
        ],
        None => vec![
            condition(
                "ErrorOccurred",
                false,
                "ApplicationSetUpToDate",
                "Successfully generated parameters for all Applications",
            ),
            condition(
                "ParametersGenerated",
                true,
                "ParametersGenerated",
                "Successfully generated parameters for all Applications",
            ),
            condition(
                "ResourcesUpToDate",
                true,
                "ApplicationSetUpToDate",
                "ApplicationSet up to date",
            ),
        ],
    };
    write_status(&ctx, &set, conditions, Some(resources)).await?;
    if fresh && failure.is_none() {
        let api: Api<ApplicationSet> = Api::namespaced(ctx.client.clone(), &ns);
        api.patch(
            &set.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "annotations": { REFRESH_ANNOTATION: null } } })),
        )
        .await?;
    }
    Ok(match (failure, requeue) {
        (Some(_), _) => Action::requeue(RETRY),
        (None, Some(d)) => Action::requeue(d),
        // Newly created apps show their health on a later pass.
        (None, None)
            if rendered.len()
                != live_by_name
                    .iter()
                    .filter(|(n, _)| rendered.iter().any(|r| &r.name == *n))
                    .count() =>
        {
            Action::requeue(Duration::from_secs(5))
        }
        (None, None) => Action::requeue(Duration::from_secs(180)),
    })
}

//! Application endpoints, the shared state, and the authentication
//! extractor every protected handler takes.

use crate::auth::{self, Principal};
use crate::error::{ApiError, ApiResult};
use crate::settings::Settings;
use axum::Json;
use axum::extract::{FromRequestParts, Path, Query, RawQuery, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::sse::{Event, KeepAlive, Sse};
use ferry_controller::Controller;
use ferry_model::annotations::{REFRESH, RESOURCES_FINALIZER};
use ferry_model::{AppProject, Application};
use futures::StreamExt;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub struct AppState {
    pub client: Client,
    pub ns: String,
    pub ctl: Arc<Controller>,
    pub settings: Arc<Settings>,
    pub metrics: Arc<crate::metrics::ServerMetrics>,
    /// Token bucket for webhooks: (tokens, last refill).
    pub webhook_bucket: Mutex<(f64, Instant)>,
    /// Concurrent password checks allowed.
    pub login_slots: tokio::sync::Semaphore,
    /// Single sign-on: the provider's discovery and keys, fetched on first use.
    pub oidc: crate::oidc::Oidc,
    /// Session cookies are `Secure` when served over HTTPS.
    pub secure_cookies: bool,
    /// A namespaced install: objects are listed in `ns` only.
    pub namespaced: bool,
}

pub type St = State<Arc<AppState>>;

/// How a request carries its session: an API client's bearer token, or a browser's cookie.
pub enum Credential {
    Bearer(String),
    Cookie(String),
}

impl Credential {
    pub fn of(headers: &axum::http::HeaderMap) -> Option<Credential> {
        let header = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        if let Some(t) = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            return Some(Credential::Bearer(t.to_string()));
        }
        crate::ui::session_cookie(headers).map(Credential::Cookie)
    }

    pub fn token(&self) -> &str {
        match self {
            Credential::Bearer(t) | Credential::Cookie(t) => t,
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &Arc<AppState>) -> ApiResult<Principal> {
        let cred = Credential::of(&parts.headers).ok_or_else(|| {
            ApiError::unauthenticated(
                "no token: log in with `ferry login` or send Authorization: Bearer <token>",
            )
        })?;
        // A browser sends its cookie along with requests other sites make it send: a change
        // made with the cookie must also carry the token only Ferry's own pages know.
        if let Credential::Cookie(session) = &cred
            && !parts.method.is_safe()
        {
            crate::ui::check_csrf(&st.settings, &parts.headers, session)?;
        }
        auth::authenticate(&st.settings, &|p| st.ctl.app_project(p), cred.token())
    }
}

impl AppState {
    /// Whether `p` may do `action` on `resource` `object`.
    pub fn allowed(
        &self,
        p: &Principal,
        resource: &str,
        action: &str,
        object: &str,
    ) -> ApiResult<bool> {
        // A project-role token acts inside its own project only, whatever
        // the global policy grants everyone (as Argo CD confines them).
        if let Some((project, ..)) = &p.project_role
            && !(object == project || object.starts_with(&format!("{project}/")))
        {
            return Ok(false);
        }
        Ok(self
            .policy_for(p)?
            .enforce(&p.subjects(), resource, action, object))
    }

    /// The policy `p` is judged by: the settings' policy, plus a project
    /// role's own lines. Built once per request, and again only if the
    /// settings changed meanwhile (a long-lived stream).
    fn policy_for(&self, p: &Principal) -> ApiResult<auth::PolicyRef> {
        // A broken policy denies everything, with the reason.
        let base = self.settings.policy().map_err(|e| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                format!("the RBAC policy cannot be used, so nothing is allowed: {e}"),
            )
        })?;
        if let Some((built_from, effective)) = p.policy.get()
            && Arc::ptr_eq(built_from, &base)
        {
            return Ok(effective.clone());
        }
        let effective = match &p.project_role {
            Some((project, role, lines, groups)) => {
                // Lines Argo CD would have refused when the project was saved
                // (e.g. reaching into another project) are left out, one by
                // one, so the valid ones still work.
                let valid: Vec<String> = lines
                    .iter()
                    .filter(|l| {
                        let ok = base
                            .with_project_role(project, role, std::slice::from_ref(*l), &[])
                            .is_ok();
                        if !ok {
                            tracing::info!(%project, %role, line = %l, "ignoring an invalid project role policy line");
                        }
                        ok
                    })
                    .cloned()
                    .collect();
                Arc::new(
                    base.with_project_role(project, role, &valid, groups)
                        .map_err(|e| {
                            ApiError::forbidden("projects", "get", &format!("{project}: {e}"))
                        })?,
                )
            }
            None => base.clone(),
        };
        let _ = p.policy.set((base, effective.clone()));
        Ok(effective)
    }

    pub fn enforce(
        &self,
        p: &Principal,
        resource: &str,
        action: &str,
        object: &str,
    ) -> ApiResult<()> {
        if self.allowed(p, resource, action, object)? {
            Ok(())
        } else {
            Err(ApiError::forbidden(resource, action, object))
        }
    }

    pub fn dynamic<K: Resource<DynamicType = ()>>(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.ns, &ApiResource::erase::<K>(&()))
    }

    /// An app reference from a path: `name` in the server's namespace, or
    /// `namespace/name` (Argo CD's spelling) in a namespace the server serves.
    pub fn app_location<'k>(&self, key: &'k str) -> ApiResult<(String, &'k str)> {
        let (ns, name) = match key.split_once('/') {
            Some((ns, name)) => (ns, name),
            None => (self.ns.as_str(), key),
        };
        check_name(ns)?;
        check_name(name)?;
        if ns != self.ns && !self.ctl.serves_namespace(ns) {
            return Err(ApiError::not_found(format!(
                "application {key}: namespace {ns} is not served (ferry server --application-namespaces)"
            )));
        }
        Ok((ns.to_string(), name))
    }

    /// The Applications API of one namespace.
    pub fn apps_in(&self, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            ns,
            &ApiResource::erase::<Application>(&()),
        )
    }

    /// The RBAC object of an app: `project/name`, or `project/namespace/name`
    /// outside the server's namespace, as Argo CD names them.
    pub fn app_object(&self, a: &Application) -> String {
        let ns = a.metadata.namespace.as_deref().filter(|ns| *ns != self.ns);
        crate::rbac::app_object(a.project(), ns, &a.name_any())
    }

    /// The Application from the watch cache, or from the API server when the
    /// cache does not have it yet (created a moment ago).
    pub async fn app(&self, key: &str) -> ApiResult<Arc<Application>> {
        let (ns, name) = self.app_location(key)?;
        let ctl_key = if ns == self.ns {
            name.to_string()
        } else {
            format!("{ns}/{name}")
        };
        match self.ctl.application(&ctl_key) {
            Some(a) => Ok(a),
            None => self.live_app(key).await.map(Arc::new),
        }
    }

    /// The Application as the API server has it now. Requests that act on
    /// what they read (sync, rollback, delete) use this: the watch cache may
    /// not yet hold a change this client just made, such as turning auto-sync
    /// off right before a rollback.
    pub async fn live_app(&self, key: &str) -> ApiResult<Application> {
        let (ns, name) = self.app_location(key)?;
        Api::<Application>::namespaced(self.client.clone(), &ns)
            .get_opt(name)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("application {key}")))
    }
}

/// Kubernetes object names: what the API server would accept anyway, checked
/// here so odd input never reaches a URL.
pub fn check_name(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid name {name:?}: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
        )))
    }
}

fn query_pairs(raw: &Option<String>) -> Vec<(String, String)> {
    raw.as_deref()
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// `key=value,key!=value,key,!key` as kubectl's selectors.
pub(crate) fn labels_match(a: &Application, selector: &str) -> bool {
    let labels = a.labels();
    selector
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .all(|term| {
            if let Some((k, v)) = term.split_once("!=") {
                labels.get(k.trim()).map(String::as_str) != Some(v.trim())
            } else if let Some((k, v)) = term.split_once('=') {
                let v = v.trim_start_matches('=');
                labels.get(k.trim()).map(String::as_str) == Some(v.trim())
            } else if let Some(k) = term.strip_prefix('!') {
                !labels.contains_key(k.trim())
            } else {
                labels.contains_key(term)
            }
        })
}

pub async fn list_apps(
    State(st): St,
    p: Principal,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Value>> {
    let pairs = query_pairs(&q);
    let projects: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k == "project" || k == "projects")
        .map(|(_, v)| v.as_str())
        .collect();
    let get = |k: &str| pairs.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str());
    let repo = get("repo");
    let selector = get("selector").unwrap_or_default();
    let cluster = get("cluster");
    let mut items = Vec::new();
    let mut apps = st.ctl.applications();
    apps.sort_by_key(|a| a.name_any());
    for a in apps {
        if !projects.is_empty() && !projects.contains(&a.project()) {
            continue;
        }
        if let Some(r) = repo
            && !a
                .sources()
                .iter()
                .any(|s| ferry_source::same_repo(&s.repo_url, r))
        {
            continue;
        }
        if !labels_match(&a, selector) {
            continue;
        }
        if let Some(c) = cluster {
            let d = &a.spec.destination;
            let hit = d.name.as_deref() == Some(c)
                || d.server.as_deref() == Some(c)
                || (c == ferry_model::IN_CLUSTER_NAME
                    && d.server.as_deref() == Some(ferry_model::IN_CLUSTER_SERVER));
            if !hit {
                continue;
            }
        }
        if st.allowed(&p, "applications", "get", &st.app_object(&a))? {
            items.push(serde_json::to_value(&*a).map_err(|e| ApiError::internal(e.to_string()))?);
        }
    }
    Ok(Json(json!({ "items": items })))
}

#[derive(Deserialize, Default)]
pub struct GetQuery {
    refresh: Option<String>,
}

pub async fn get_app(
    State(st): St,
    p: Principal,
    Path(name): Path<String>,
    Query(q): Query<GetQuery>,
) -> ApiResult<Json<Value>> {
    let a = st.app(&name).await?;
    st.enforce(&p, "applications", "get", &st.app_object(&a))?;
    if let Some(kind) = q.refresh.as_deref().filter(|r| !r.is_empty()) {
        if kind != "normal" && kind != "hard" {
            return Err(ApiError::bad_request("refresh must be normal or hard"));
        }
        let body = json!({ "metadata": { "annotations": { REFRESH: kind } } });
        let o = st
            .apps_in(&a.namespace().unwrap_or_default())
            .patch(&a.name_any(), &PatchParams::default(), &Patch::Merge(&body))
            .await?;
        return Ok(Json(serde_json::to_value(o).unwrap_or_default()));
    }
    Ok(Json(serde_json::to_value(&*a).unwrap_or_default()))
}

/// `GET /api/v1/applications/{name}/syncwindows`: the project's windows that
/// apply to the app, those active now, and whether a manual sync may run
/// (Argo CD's ApplicationSyncWindowsResponse, plus `state` in its CLI wording).
pub async fn app_sync_windows(
    State(st): St,
    p: Principal,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let a = st.app(&name).await?;
    st.enforce(&p, "applications", "get", &st.app_object(&a))?;
    let windows = st
        .ctl
        .app_project(a.project())
        .map(|p| p.spec.sync_windows.clone())
        .unwrap_or_default();
    let now = chrono::Utc::now();
    let assigned: Vec<&ferry_model::SyncWindow> = windows
        .iter()
        .filter(|w| w.matches(&a.name_any(), &a.spec.destination))
        .collect();
    let active: Vec<&&ferry_model::SyncWindow> = assigned
        .iter()
        .filter(|w| w.is_active(now).unwrap_or(false))
        .collect();
    let verdict = ferry_model::window_verdict(&windows, &a.name_any(), &a.spec.destination, now);
    let (can_sync, state, error) = match &verdict {
        Ok(v) => (v.allows(true), v.as_str(), None),
        Err(e) => (false, "Sync Denied", Some(e.clone())),
    };
    Ok(Json(json!({
        "assignedWindows": assigned,
        "activeWindows": active,
        "canSync": can_sync,
        "state": state,
        "error": error,
    })))
}

#[derive(Deserialize, Default)]
pub struct UpsertQuery {
    #[serde(default)]
    upsert: Option<String>,
}

fn truthy(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|v| v == "true" || v == "1")
}

/// Checks an Application body and fills in what the server decides.
async fn prepare_app(
    st: &AppState,
    body: &Value,
    name_from_path: Option<&str>,
) -> ApiResult<(Value, Application)> {
    let mut v = body.clone();
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the body must be an Application object",
        ));
    }
    v["apiVersion"] = json!("argoproj.io/v1alpha1");
    v["kind"] = json!("Application");
    // The namespace comes from the path (`ns/name`), else the body, else the server's.
    let (app_ns, path_name) = match name_from_path {
        Some(key) => {
            let (ns, name) = st.app_location(key)?;
            (ns, Some(name))
        }
        None => {
            let body_ns = v
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .filter(|ns| !ns.is_empty())
                .unwrap_or(&st.ns)
                .to_string();
            let (ns, _) = st.app_location(&format!("{body_ns}/placeholder"))?;
            (ns, None)
        }
    };
    if let Some(n) = path_name {
        match v.pointer("/metadata/name").and_then(Value::as_str) {
            Some(b) if b != n => {
                return Err(ApiError::bad_request(format!(
                    "the body names application {b}, the path {n}"
                )));
            }
            _ => {
                if !v["metadata"].is_object() {
                    v["metadata"] = json!({});
                }
                v["metadata"]["name"] = json!(n);
            }
        }
    }
    if !v["metadata"].is_object() {
        return Err(ApiError::bad_request("metadata.name is required"));
    }
    v["metadata"]["namespace"] = json!(app_ns);
    // Only what a user may declare: an operation goes through /sync (and
    // its RBAC check), status is the controller's.
    if let Some(o) = v.as_object_mut() {
        o.remove("operation");
        o.remove("status");
    }
    if let Some(m) = v["metadata"].as_object_mut() {
        m.retain(|k, _| {
            matches!(
                k.as_str(),
                "name" | "namespace" | "labels" | "annotations" | "finalizers"
            )
        });
    }
    let app: Application = serde_json::from_value(v.clone())
        .map_err(|e| ApiError::bad_request(format!("not a valid Application: {e}")))?;
    check_name(&app.name_any())?;
    if app.sources().is_empty() {
        return Err(ApiError::bad_request(
            "spec.source or spec.sources is required",
        ));
    }
    // Refused here rather than stored for the controller to refuse.
    let unsupported = app.unsupported_fields();
    if !unsupported.is_empty() {
        return Err(ApiError::bad_request(format!(
            "fields Ferry does not support: {} (see docs/compatibility.md)",
            unsupported.join(", ")
        )));
    }
    check_name(app.project())
        .map_err(|_| ApiError::bad_request(format!("invalid project name {:?}", app.project())))?;
    // The cache may not yet hold a project created a moment ago.
    let known = st.ctl.app_project(app.project()).is_some()
        || Api::<AppProject>::namespaced(st.client.clone(), &st.ns)
            .get_opt(app.project())
            .await?
            .is_some();
    if !known {
        return Err(ApiError::bad_request(format!(
            "application references project {} which does not exist",
            app.project()
        )));
    }
    if app_ns != st.ns {
        let allowed = st.ctl.app_project(app.project()).is_some_and(|p| {
            ferry_controller::namespace_allowed(&p.spec.source_namespaces, &app_ns)
        });
        if !allowed {
            return Err(ApiError::bad_request(format!(
                "application {app_ns}/{} is not permitted to use project {}: namespace {app_ns} is not in the project's sourceNamespaces",
                app.name_any(),
                app.project()
            )));
        }
    }
    Ok((v, app))
}

pub async fn create_app(
    State(st): St,
    p: Principal,
    Query(q): Query<UpsertQuery>,
    Json(body): Json<Value>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let (v, app) = prepare_app(&st, &body, None).await?;
    let name = app.name_any();
    st.enforce(&p, "applications", "create", &st.app_object(&app))?;
    let api = st.apps_in(&app.namespace().unwrap_or_default());
    match api.get_opt(&name).await? {
        None => {
            let obj: DynamicObject =
                serde_json::from_value(v).map_err(|e| ApiError::bad_request(e.to_string()))?;
            let o = api.create(&PostParams::default(), &obj).await?;
            Ok((
                StatusCode::OK,
                Json(serde_json::to_value(o).unwrap_or_default()),
            ))
        }
        Some(existing) => {
            let same = existing.data.get("spec") == v.get("spec");
            if same {
                return Ok((
                    StatusCode::OK,
                    Json(serde_json::to_value(existing).unwrap_or_default()),
                ));
            }
            if !truthy(&q.upsert) {
                return Err(ApiError::bad_request(format!(
                    "existing application spec is different; use upsert flag to force update (application {name})"
                )));
            }
            let old_project = existing
                .data
                .pointer("/spec/project")
                .and_then(Value::as_str)
                .unwrap_or("default");
            let mut old = app.clone();
            old.spec.project = old_project.to_string();
            st.enforce(&p, "applications", "update", &st.app_object(&old))?;
            st.enforce(&p, "applications", "update", &st.app_object(&app))?;
            let o = replace_spec(&api, existing, &v).await?;
            Ok((
                StatusCode::OK,
                Json(serde_json::to_value(o).unwrap_or_default()),
            ))
        }
    }
}

/// Replaces spec (and labels/annotations/finalizers when given) of an
/// existing object, keeping everything else, guarded by its resourceVersion.
async fn replace_spec(
    api: &Api<DynamicObject>,
    mut existing: DynamicObject,
    new: &Value,
) -> ApiResult<DynamicObject> {
    if let Some(spec) = new.get("spec") {
        existing.data["spec"] = spec.clone();
    }
    // Labels, annotations and finalizers are taken when the body gives them.
    let meta: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta =
        serde_json::from_value(new["metadata"].clone()).unwrap_or_default();
    if meta.labels.is_some() {
        existing.metadata.labels = meta.labels;
    }
    if meta.annotations.is_some() {
        existing.metadata.annotations = meta.annotations;
    }
    if meta.finalizers.is_some() {
        existing.metadata.finalizers = meta.finalizers;
    }
    let name = existing.name_any();
    Ok(api
        .replace(&name, &PostParams::default(), &existing)
        .await?)
}

pub async fn update_app(
    State(st): St,
    p: Principal,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult<Json<Value>> {
    let (v, app) = prepare_app(&st, &body, Some(&name)).await?;
    let api = st.apps_in(&app.namespace().unwrap_or_default());
    let existing = api
        .get_opt(&app.name_any())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("application {name}")))?;
    let old_project = existing
        .data
        .pointer("/spec/project")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    let mut old = app.clone();
    old.spec.project = old_project;
    st.enforce(&p, "applications", "update", &st.app_object(&old))?;
    st.enforce(&p, "applications", "update", &st.app_object(&app))?;
    let o = replace_spec(&api, existing, &v).await?;
    Ok(Json(serde_json::to_value(o).unwrap_or_default()))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct DeleteQuery {
    cascade: Option<String>,
    propagation_policy: Option<String>,
}

pub async fn delete_app(
    State(st): St,
    p: Principal,
    Path(name): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> ApiResult<Json<Value>> {
    let a = st.live_app(&name).await?;
    st.enforce(&p, "applications", "delete", &st.app_object(&a))?;
    let cascade = q.cascade.as_deref().is_none_or(|c| c != "false");
    let finalizer = match q.propagation_policy.as_deref().unwrap_or("foreground") {
        "foreground" => RESOURCES_FINALIZER.to_string(),
        "background" => format!("{RESOURCES_FINALIZER}/background"),
        other => {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy {other:?}: use foreground or background"
            )));
        }
    };
    let mut finalizers: Vec<String> = a
        .finalizers()
        .iter()
        .filter(|f| !f.starts_with(RESOURCES_FINALIZER))
        .cloned()
        .collect();
    if cascade {
        finalizers.push(finalizer);
    }
    let api = st.apps_in(&a.namespace().unwrap_or_default());
    let bare = a.name_any();
    let body = json!({ "metadata": { "finalizers": finalizers } });
    api.patch(&bare, &PatchParams::default(), &Patch::Merge(&body))
        .await?;
    api.delete(&bare, &DeleteParams::default()).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SyncBody {
    #[serde(default)]
    revision: Option<String>,
    #[serde(default)]
    prune: bool,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    resources: Vec<SyncResource>,
    #[serde(default)]
    sync_options: Vec<String>,
    /// Argo CD's `strategy`: `{"apply": {"force"}}` (no hooks) or `{"hook": {"force"}}`.
    #[serde(default)]
    strategy: Option<ferry_model::SyncStrategy>,
}

#[derive(Deserialize, Default, serde::Serialize)]
pub struct SyncResource {
    #[serde(default)]
    group: String,
    kind: String,
    #[serde(default)]
    namespace: String,
    name: String,
}

async fn start_operation(
    st: &AppState,
    a: &Application,
    p: &Principal,
    sync: Value,
) -> ApiResult<Json<Value>> {
    let name = a.name_any();
    let busy = || {
        ApiError::conflict(format!(
            "another operation is already in progress on application {name}"
        ))
    };
    let api = st.apps_in(&a.namespace().unwrap_or_default());
    let (mut pending, mut rv) = (a.operation.is_some(), a.resource_version());
    // The watch cache may lag a request that just started an operation: the write carries
    // the resourceVersion it was decided on, and a conflict re-reads the live object.
    for _ in 0..3 {
        if pending {
            return Err(busy());
        }
        let body = json!({
            "metadata": { "resourceVersion": rv },
            "operation": { "sync": sync, "initiatedBy": { "username": p.subject } },
        });
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(o) => return Ok(Json(serde_json::to_value(o).unwrap_or_default())),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let live = api.get(&name).await?;
                pending = live.data.get("operation").is_some_and(|o| !o.is_null());
                rv = live.resource_version();
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(busy())
}

pub async fn sync_app(
    State(st): St,
    p: Principal,
    Path(name): Path<String>,
    body: Option<Json<SyncBody>>,
) -> ApiResult<Json<Value>> {
    let a = st.live_app(&name).await?;
    st.enforce(&p, "applications", "sync", &st.app_object(&a))?;
    let b = body.map(|Json(b)| b).unwrap_or_default();
    let mut sync = json!({ "prune": b.prune, "dryRun": b.dry_run });
    if let Some(r) = b.revision.filter(|r| !r.is_empty()) {
        let target = a
            .sources()
            .first()
            .map(|s| s.revision().to_string())
            .unwrap_or_default();
        let same = r == target || (target.is_empty() && r == "HEAD");
        if !same {
            // Syncing something other than what the spec tracks is an override.
            st.enforce(&p, "applications", "override", &st.app_object(&a))?;
            if a.automated().is_some() {
                return Err(ApiError::bad_request(format!(
                    "cannot sync to {r}: auto-sync is set to {target}; turn it off first (`ferry app set {name} --sync-policy none`)"
                )));
            }
        }
        sync["revision"] = json!(r);
    }
    if !b.resources.is_empty() {
        sync["resources"] = json!(b.resources);
    }
    if !b.sync_options.is_empty() {
        sync["syncOptions"] = json!(b.sync_options);
    }
    if let Some(strategy) = b.strategy {
        if !strategy.unknown.is_empty()
            || [&strategy.apply, &strategy.hook]
                .into_iter()
                .flatten()
                .any(|o| !o.unknown.is_empty())
        {
            return Err(ApiError::bad_request(
                "strategy: only apply and hook, each with force, are known",
            ));
        }
        sync["syncStrategy"] = serde_json::to_value(strategy).unwrap_or_default();
    }
    start_operation(&st, &a, &p, sync).await
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RollbackBody {
    id: i64,
    #[serde(default)]
    prune: bool,
    #[serde(default)]
    dry_run: bool,
}

pub async fn rollback_app(
    State(st): St,
    p: Principal,
    Path(name): Path<String>,
    Json(b): Json<RollbackBody>,
) -> ApiResult<Json<Value>> {
    let a = st.live_app(&name).await?;
    st.enforce(&p, "applications", "rollback", &st.app_object(&a))?;
    if a.automated().is_some() {
        return Err(ApiError::bad_request(format!(
            "rollback cannot be initiated when auto-sync is enabled: `ferry app set {name} --sync-policy none` first"
        )));
    }
    let history = a
        .status
        .as_ref()
        .map(|s| s.history.clone())
        .unwrap_or_default();
    let h = history.iter().find(|h| h.id == b.id).ok_or_else(|| {
        ApiError::bad_request(format!(
            "application {name} does not have history id {}",
            b.id
        ))
    })?;
    let mut sync = json!({ "prune": b.prune, "dryRun": b.dry_run });
    if let Some(r) = &h.revision {
        sync["revision"] = json!(r);
    }
    if !h.revisions.is_empty() {
        sync["revisions"] = json!(h.revisions);
    }
    if let Some(s) = &h.source {
        sync["source"] = serde_json::to_value(s).unwrap_or_default();
    }
    if let Some(s) = &h.sources {
        sync["sources"] = serde_json::to_value(s).unwrap_or_default();
    }
    start_operation(&st, &a, &p, sync).await
}

pub async fn managed_resources(
    State(st): St,
    p: Principal,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let a = st.app(&name).await?;
    st.enforce(&p, "applications", "get", &st.app_object(&a))?;
    let i = st
        .ctl
        .inspect(&a, None, true)
        .await
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    let items: Vec<Value> = i
        .objects
        .into_iter()
        .map(|o| {
            let modified = o.requires_pruning || o.target != o.live;
            json!({
                "group": o.group, "version": o.version, "kind": o.kind,
                "namespace": o.namespace, "name": o.name,
                "status": o.status, "health": o.health,
                "requiresPruning": o.requires_pruning, "hook": o.hook,
                "targetState": o.target, "liveState": o.live, "modified": modified,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items, "revisions": i.revisions })))
}

#[derive(Deserialize, Default)]
pub struct ManifestQuery {
    revision: Option<String>,
    source: Option<String>,
}

pub async fn manifests(
    State(st): St,
    p: Principal,
    Path(name): Path<String>,
    Query(q): Query<ManifestQuery>,
) -> ApiResult<Json<Value>> {
    let a = st.app(&name).await?;
    st.enforce(&p, "applications", "get", &st.app_object(&a))?;
    let live = match q.source.as_deref().unwrap_or("git") {
        "git" => false,
        "live" => true,
        other => {
            return Err(ApiError::bad_request(format!(
                "source {other:?}: use git or live"
            )));
        }
    };
    let revision = q.revision.as_deref().filter(|r| !r.is_empty());
    if let Some(r) = revision
        && (r.starts_with('-')
            || r.len() > 255
            || r.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(ApiError::bad_request(format!("invalid revision {r:?}")));
    }
    let i = st
        .ctl
        .inspect(&a, revision, false)
        .await
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    let manifests: Vec<Value> = i
        .objects
        .into_iter()
        .filter_map(|o| if live { o.live } else { o.desired })
        .collect();
    Ok(Json(
        json!({ "revision": i.revisions.first(), "revisions": i.revisions, "manifests": manifests }),
    ))
}

pub async fn resource_tree(
    State(st): St,
    p: Principal,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let a = st.app(&name).await?;
    st.enforce(&p, "applications", "get", &st.app_object(&a))?;
    let (client, _) = st
        .ctl
        .destination_client(&a)
        .await
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    let nodes = crate::tree::build(&client, &a).await?;
    Ok(Json(json!({ "nodes": nodes })))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct EventsQuery {
    resource_namespace: Option<String>,
    resource_name: Option<String>,
    #[serde(rename = "resourceUID")]
    resource_uid: Option<String>,
}

pub async fn app_events(
    State(st): St,
    p: Principal,
    Path(name): Path<String>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Json<Value>> {
    use k8s_openapi::api::core::v1::Event as KEvent;
    let a = st.app(&name).await?;
    st.enforce(&p, "applications", "get", &st.app_object(&a))?;
    let (api, fields): (Api<KEvent>, String) =
        match q.resource_name.as_deref().filter(|n| !n.is_empty()) {
            None => (
                Api::namespaced(st.client.clone(), &st.ns),
                format!("involvedObject.kind=Application,involvedObject.name={name}"),
            ),
            Some(rname) => {
                check_name(rname)?;
                let asked = q.resource_namespace.clone().unwrap_or_default();
                if !asked.is_empty() {
                    check_name(&asked)?;
                }
                // The namespace comes from what the app manages, so events of
                // same-named objects elsewhere are never looked at.
                let rns = a
                    .status
                    .as_ref()
                    .and_then(|s| {
                        s.resources
                            .iter()
                            .find(|r| r.name == rname && (asked.is_empty() || r.namespace == asked))
                            .map(|r| r.namespace.clone())
                    })
                    .ok_or_else(|| {
                        ApiError::not_found(format!("resource {rname} of application {name}"))
                    })?;
                let (client, _) = st
                    .ctl
                    .destination_client(&a)
                    .await
                    .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e))?;
                let mut f = format!("involvedObject.name={rname}");
                if let Some(uid) = q.resource_uid.as_deref().filter(|u| !u.is_empty()) {
                    if !uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                        return Err(ApiError::bad_request("invalid resourceUID"));
                    }
                    f.push_str(&format!(",involvedObject.uid={uid}"));
                }
                let api = if rns.is_empty() {
                    Api::all(client)
                } else {
                    Api::namespaced(client, &rns)
                };
                (api, f)
            }
        };
    let list = api
        .list(&kube::api::ListParams::default().fields(&fields))
        .await?;
    let items: Vec<Value> = list
        .items
        .into_iter()
        .map(|e| {
            json!({
                "type": e.type_, "reason": e.reason, "message": e.message, "count": e.count,
                "firstTimestamp": e.first_timestamp, "lastTimestamp": e.last_timestamp,
                "involvedObject": e.involved_object,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

#[derive(Deserialize, Default)]
pub struct StreamQuery {
    name: Option<String>,
}

pub async fn stream_apps(
    State(st): St,
    p: Principal,
    headers: axum::http::HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Sse<impl futures::Stream<Item = Result<Event, std::convert::Infallible>>> {
    let token = Credential::of(&headers)
        .map(|c| c.token().to_string())
        .unwrap_or_default();
    let rx = st.ctl.subscribe();
    let st2 = st.clone();
    let stream = tokio_stream_from(rx)
        // A token revoked, expired or outdated while streaming ends the stream.
        .take_while(move |_| {
            let ok = auth::authenticate(&st2.settings, &|x| st2.ctl.app_project(x), &token).is_ok();
            async move { ok }
        })
        .filter_map(move |a| {
            let st = st.clone();
            let p = p.clone();
            let name = q.name.clone();
            async move {
                if name.as_deref().is_some_and(|n| n != a.name_any()) {
                    return None;
                }
                if !st
                    .allowed(&p, "applications", "get", &st.app_object(&a))
                    .unwrap_or(false)
                {
                    return None;
                }
                let data = json!({ "type": "MODIFIED", "application": &*a }).to_string();
                Some(Ok(Event::default().data(data)))
            }
        });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// A broadcast receiver as a stream; a slow reader skips what it missed.
pub(crate) fn tokio_stream_from(
    rx: tokio::sync::broadcast::Receiver<Arc<Application>>,
) -> impl futures::Stream<Item = Arc<Application>> {
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(a) => return Some((a, rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

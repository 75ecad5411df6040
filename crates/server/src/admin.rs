//! Session, account, project, repository and cluster endpoints. Credentials
//! go in and are never sent back.

use crate::api::{AppState, St, check_name};
use crate::auth::{self, Principal};
use crate::error::{ApiError, ApiResult};
use crate::settings::ARGOCD_SECRET;
use axum::Json;
use axum::extract::{Path, Query, State};
use ferry_model::AppProject;
use ferry_model::annotations::SECRET_TYPE_LABEL;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;

// ---- session and accounts ----------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginBody {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    /// `ferry login --sso`: an ID token from the identity provider, exchanged for a session.
    #[serde(default)]
    id_token: Option<String>,
}

pub async fn login(State(st): St, Json(b): Json<LoginBody>) -> ApiResult<Json<Value>> {
    if let Some(id_token) = b.id_token.as_deref().filter(|t| !t.is_empty()) {
        let token = crate::oidc::session_from_id_token(&st, id_token).await?;
        return Ok(Json(json!({ "token": token })));
    }
    Ok(Json(
        json!({ "token": password_login(&st, b.username, b.password).await? }),
    ))
}

/// A local account's username and password → session token, with argon2 bounded and off the
/// async workers. Shared by the API and the UI's login form.
pub async fn password_login(
    st: &std::sync::Arc<AppState>,
    username: String,
    password: String,
) -> ApiResult<String> {
    // Each check hashes with argon2 (memory-hard on purpose): bound how many
    // run at once so a flood of logins cannot exhaust memory.
    let _slot = st.login_slots.try_acquire().map_err(|_| {
        ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "too many logins at once; retry in a moment",
        )
    })?;
    let st2 = st.clone();
    // argon2 is deliberately slow: keep it off the async workers.
    tokio::task::spawn_blocking(move || auth::login(&st2.settings, &username, &password))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
}

/// `GET /api/v1/settings`, public as Argo CD's: what a login screen or `ferry login --sso`
/// needs to know, and nothing secret.
pub async fn public_settings(State(st): St) -> Json<Value> {
    let oidc = crate::oidc::config(&st.settings).ok().flatten().map(|c| {
        json!({
            "name": c.name, "issuer": c.issuer, "clientID": c.client_id,
            "cliClientID": c.cli_client_id, "scopes": c.scopes(),
        })
    });
    let url = st.settings.config().get("url").cloned();
    Json(json!({ "url": url, "oidcConfig": oidc }))
}

pub async fn userinfo(p: Principal) -> Json<Value> {
    Json(
        json!({ "loggedIn": true, "username": p.subject, "groups": p.groups, "iss": auth::ISSUER }),
    )
}

pub async fn list_accounts(State(st): St, p: Principal) -> ApiResult<Json<Value>> {
    let mut items = Vec::new();
    for (name, enabled, caps) in auth::accounts(&st.settings) {
        if name == p.subject || st.allowed(&p, "accounts", "get", &name)? {
            items.push(json!({ "name": name, "enabled": enabled, "capabilities": caps }));
        }
    }
    Ok(Json(json!({ "items": items })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PasswordBody {
    #[serde(default)]
    name: Option<String>,
    current_password: String,
    new_password: String,
}

pub async fn update_password(
    State(st): St,
    p: Principal,
    Json(b): Json<PasswordBody>,
) -> ApiResult<Json<Value>> {
    if p.subject.starts_with("proj:") {
        return Err(ApiError::forbidden("accounts", "update", &p.subject));
    }
    let name = b
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| p.subject.clone());
    if name != p.subject {
        st.enforce(&p, "accounts", "update", &name)?;
    }
    if !auth::accounts(&st.settings).iter().any(|a| a.0 == name) {
        return Err(ApiError::not_found(format!("account {name}")));
    }
    if !(8..=128).contains(&b.new_password.chars().count()) {
        return Err(ApiError::bad_request(
            "the new password must have 8 to 128 characters",
        ));
    }
    let (st2, caller, current, new) = (
        st.clone(),
        p.subject.clone(),
        b.current_password,
        b.new_password,
    );
    let hash = tokio::task::spawn_blocking(move || {
        // The caller proves who they are with their own current password.
        if !auth::verify_password(&st2.settings, &caller, &current) {
            return Err(ApiError::unauthenticated("current password does not match"));
        }
        auth::hash_password(&new)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    let key = auth::password_key(&name);
    let body = json!({ "stringData": {
        key.clone(): hash,
        key.replace(".password", ".passwordMtime"): k8s_openapi::jiff::Timestamp::now().to_string(),
    }});
    Api::<Secret>::namespaced(st.client.clone(), &st.ns)
        .patch(ARGOCD_SECRET, &PatchParams::default(), &Patch::Merge(&body))
        .await?;
    Ok(Json(json!({})))
}

// ---- projects ----------------------------------------------------------

fn project_value(p: &AppProject) -> Value {
    let mut v = serde_json::to_value(p).unwrap_or_default();
    // Issued tokens are listed (iat, id, exp) but never the tokens themselves,
    // which are not stored anyway.
    v["apiVersion"] = json!("argoproj.io/v1alpha1");
    v["kind"] = json!("AppProject");
    v
}

pub async fn list_projects(State(st): St, p: Principal) -> ApiResult<Json<Value>> {
    let mut items = Vec::new();
    let mut projects = st.ctl.app_projects();
    projects.sort_by_key(|p| p.name_any());
    for proj in projects {
        if st.allowed(&p, "projects", "get", &proj.name_any())? {
            items.push(project_value(&proj));
        }
    }
    Ok(Json(json!({ "items": items })))
}

pub async fn get_project(
    State(st): St,
    p: Principal,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    check_name(&name)?;
    st.enforce(&p, "projects", "get", &name)?;
    let proj = st
        .ctl
        .app_project(&name)
        .ok_or_else(|| ApiError::not_found(format!("project {name}")))?;
    Ok(Json(project_value(&proj)))
}

fn prepare_project(st: &AppState, body: &Value, path_name: Option<&str>) -> ApiResult<Value> {
    let mut v = body.clone();
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the body must be an AppProject object",
        ));
    }
    if !v["metadata"].is_object() {
        v["metadata"] = json!({});
    }
    if let Some(n) = path_name {
        if v["metadata"]["name"].as_str().is_some_and(|b| b != n) {
            return Err(ApiError::bad_request(
                "the body and the path name different projects",
            ));
        }
        v["metadata"]["name"] = json!(n);
    }
    v["apiVersion"] = json!("argoproj.io/v1alpha1");
    v["kind"] = json!("AppProject");
    v["metadata"]["namespace"] = json!(st.ns);
    if !v["spec"].is_object() {
        v["spec"] = json!({});
    }
    let p: AppProject = serde_json::from_value(v.clone())
        .map_err(|e| ApiError::bad_request(format!("not a valid AppProject: {e}")))?;
    check_name(&p.name_any())?;
    Ok(v)
}

pub async fn create_project(
    State(st): St,
    p: Principal,
    Query(q): Query<crate::admin::Upsert>,
    Json(body): Json<Value>,
) -> ApiResult<Json<Value>> {
    let v = prepare_project(&st, &body, None)?;
    let name = v["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    st.enforce(&p, "projects", "create", &name)?;
    let api = st.dynamic::<AppProject>();
    match api.get_opt(&name).await? {
        None => {
            let obj: DynamicObject =
                serde_json::from_value(v).map_err(|e| ApiError::bad_request(e.to_string()))?;
            Ok(Json(
                serde_json::to_value(api.create(&PostParams::default(), &obj).await?)
                    .unwrap_or_default(),
            ))
        }
        Some(mut existing) => {
            if existing.data.get("spec") == v.get("spec") {
                return Ok(Json(serde_json::to_value(existing).unwrap_or_default()));
            }
            if q.upsert.as_deref() != Some("true") {
                return Err(ApiError::bad_request(format!(
                    "existing project spec is different; use upsert flag to force update (project {name})"
                )));
            }
            st.enforce(&p, "projects", "update", &name)?;
            existing.data["spec"] = keep_tokens(&existing.data["spec"], &v["spec"]);
            Ok(Json(
                serde_json::to_value(
                    api.replace(&name, &PostParams::default(), &existing)
                        .await?,
                )
                .unwrap_or_default(),
            ))
        }
    }
}

/// A project update keeps the server's list of issued tokens for each role:
/// a stale copy must not bring back a revoked token, nor drop a new one.
/// Tokens are issued and revoked through their own endpoints.
fn keep_tokens(old_spec: &Value, new_spec: &Value) -> Value {
    let mut spec = new_spec.clone();
    let old_roles = old_spec["roles"].as_array().cloned().unwrap_or_default();
    if let Some(roles) = spec.get_mut("roles").and_then(Value::as_array_mut) {
        for r in roles.iter_mut() {
            let old = old_roles.iter().find(|o| o["name"] == r["name"]);
            match old.and_then(|o| o.get("jwtTokens")) {
                Some(t) => r["jwtTokens"] = t.clone(),
                None => {
                    if let Some(m) = r.as_object_mut() {
                        m.remove("jwtTokens");
                    }
                }
            }
        }
    }
    spec
}

#[derive(Deserialize, Default)]
pub struct Upsert {
    pub upsert: Option<String>,
}

pub async fn update_project(
    State(st): St,
    p: Principal,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult<Json<Value>> {
    check_name(&name)?;
    let v = prepare_project(&st, &body, Some(&name))?;
    st.enforce(&p, "projects", "update", &name)?;
    let api = st.dynamic::<AppProject>();
    let mut existing = api
        .get_opt(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("project {name}")))?;
    existing.data["spec"] = keep_tokens(&existing.data["spec"], &v["spec"]);
    Ok(Json(
        serde_json::to_value(
            api.replace(&name, &PostParams::default(), &existing)
                .await?,
        )
        .unwrap_or_default(),
    ))
}

pub async fn delete_project(
    State(st): St,
    p: Principal,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    check_name(&name)?;
    st.enforce(&p, "projects", "delete", &name)?;
    st.ctl
        .app_project(&name)
        .ok_or_else(|| ApiError::not_found(format!("project {name}")))?;
    let users = st
        .ctl
        .applications()
        .iter()
        .filter(|a| a.project() == name)
        .count();
    if users > 0 {
        return Err(ApiError::conflict(format!(
            "project {name} is referenced by {users} applications"
        )));
    }
    st.dynamic::<AppProject>()
        .delete(&name, &DeleteParams::default())
        .await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TokenBody {
    #[serde(default)]
    expires_in: Option<i64>,
}

/// Applies `ops` (built from a fresh read of the project) guarded by its
/// resourceVersion, retrying when someone else wrote in between, so two
/// concurrent token changes cannot overwrite each other.
async fn patch_roles(
    st: &AppState,
    project: &str,
    role: &str,
    ops: impl Fn(usize, &Value) -> ApiResult<Vec<Value>>,
) -> ApiResult<()> {
    let api = st.dynamic::<AppProject>();
    for _ in 0..5 {
        let obj = api
            .get_opt(project)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("project {project}")))?;
        let rv = obj.metadata.resource_version.clone().unwrap_or_default();
        let roles = obj.data["spec"]["roles"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let i = roles
            .iter()
            .position(|r| r["name"] == role)
            .ok_or_else(|| ApiError::not_found(format!("role {role} in project {project}")))?;
        let mut all = vec![
            json!({ "op": "test", "path": "/metadata/resourceVersion", "value": rv }),
            json!({ "op": "test", "path": format!("/spec/roles/{i}/name"), "value": role }),
        ];
        all.extend(ops(i, &roles[i])?);
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(all))
            .map_err(|e| ApiError::internal(e.to_string()))?;
        match api
            .patch(project, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 422 || e.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::conflict(format!(
        "project {project} kept changing; try again"
    )))
}

/// How long (in 50 ms steps) a token change waits for the watch cache to see
/// it, so the token works (or stops working) as soon as the call returns.
const CACHE_WAIT_TRIES: u32 = 600;

pub async fn create_token(
    State(st): St,
    p: Principal,
    Path((project, role)): Path<(String, String)>,
    body: Option<Json<TokenBody>>,
) -> ApiResult<Json<Value>> {
    check_name(&project)?;
    st.enforce(&p, "projects", "update", &project)?;
    let ttl = body
        .and_then(|Json(b)| b.expires_in)
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(s.min(10 * 365 * 24 * 3600) as u64));
    let (token, claims) = auth::issue(&st.settings, &format!("proj:{project}:{role}"), ttl)?;
    let entry = json!({ "iat": claims.iat, "id": claims.jti, "exp": claims.exp });
    patch_roles(&st, &project, &role, |i, r| {
        Ok(vec![if r["jwtTokens"].is_array() {
            json!({ "op": "add", "path": format!("/spec/roles/{i}/jwtTokens/-"), "value": entry })
        } else {
            json!({ "op": "add", "path": format!("/spec/roles/{i}/jwtTokens"), "value": [entry] })
        }])
    })
    .await?;
    // Wait until the watch cache knows the token, so it works at once.
    for _ in 0..CACHE_WAIT_TRIES {
        if st.ctl.app_project(&project).is_some_and(|pr| {
            pr.spec
                .roles
                .iter()
                .any(|x| x.name == role && x.jwt_tokens.iter().any(|t| t.iat == claims.iat))
        }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Json(
        json!({ "token": token, "iat": claims.iat, "id": claims.jti }),
    ))
}

#[derive(Deserialize, Default)]
pub struct RevokeQuery {
    /// Which token, when several were issued in the same second.
    id: Option<String>,
}

pub async fn delete_token(
    State(st): St,
    p: Principal,
    Path((project, role, iat)): Path<(String, String, i64)>,
    Query(q): Query<RevokeQuery>,
) -> ApiResult<Json<Value>> {
    check_name(&project)?;
    st.enforce(&p, "projects", "update", &project)?;
    let id = q.id.filter(|i| !i.is_empty());
    patch_roles(&st, &project, &role, |i, r| {
        let tokens = r["jwtTokens"].as_array().cloned().unwrap_or_default();
        // Without an id, every token issued in that second goes (Argo CD
        // names tokens by issued-at).
        let mut doomed: Vec<usize> = tokens
            .iter()
            .enumerate()
            .filter(|(_, t)| {
                t["iat"].as_i64() == Some(iat)
                    && id.as_deref().is_none_or(|id| t["id"].as_str() == Some(id))
            })
            .map(|(j, _)| j)
            .collect();
        if doomed.is_empty() {
            return Err(ApiError::not_found(format!(
                "token issued at {iat} for role {role}"
            )));
        }
        doomed.reverse();
        Ok(doomed
            .into_iter()
            .map(|j| json!({ "op": "remove", "path": format!("/spec/roles/{i}/jwtTokens/{j}") }))
            .collect())
    })
    .await?;
    for _ in 0..CACHE_WAIT_TRIES {
        if st.ctl.app_project(&project).is_some_and(|pr| {
            !pr.spec.roles.iter().any(|x| {
                x.name == role
                    && x.jwt_tokens.iter().any(|t| {
                        t.iat == iat && id.as_deref().is_none_or(|id| t.id.as_deref() == Some(id))
                    })
            })
        }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Json(json!({})))
}

// ---- repositories and clusters -----------------------------------------

fn decode(s: &Secret) -> BTreeMap<String, String> {
    s.data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| String::from_utf8(v.0).ok().map(|x| (k, x)))
        .collect()
}

/// Repository and cluster credentials are Secrets handled alike; what
/// differs is named here once.
struct CredKind {
    /// The `argocd.argoproj.io/secret-type` label value.
    secret_type: &'static str,
    /// The RBAC resource.
    resource: &'static str,
    /// The data key that identifies one (and names it in RBAC objects).
    key_field: &'static str,
    name_prefix: &'static str,
}

const REPOSITORY: CredKind = CredKind {
    secret_type: "repository",
    resource: "repositories",
    key_field: "url",
    name_prefix: "repo",
};

const CLUSTER: CredKind = CredKind {
    secret_type: "cluster",
    resource: "clusters",
    key_field: "server",
    name_prefix: "cluster",
};

async fn secrets_of_type(st: &AppState, kind: &str) -> ApiResult<Vec<Secret>> {
    let lp = ListParams::default().labels(&format!("{SECRET_TYPE_LABEL}={kind}"));
    Ok(Api::<Secret>::namespaced(st.client.clone(), &st.ns)
        .list(&lp)
        .await?
        .items)
}

fn scoped(project: &str, what: &str) -> String {
    if project.is_empty() {
        what.to_string()
    } else {
        format!("{project}/{what}")
    }
}

fn repo_view(d: &BTreeMap<String, String>) -> Value {
    let has = [
        "password",
        "sshPrivateKey",
        "tlsClientCertKey",
        "githubAppPrivateKey",
    ]
    .iter()
    .any(|k| d.get(*k).is_some_and(|v| !v.is_empty()));
    json!({
        "repo": d.get("url").map(|u| without_userinfo(u)), "type": d.get("type").cloned().unwrap_or_else(|| "git".into()),
        "name": d.get("name"), "project": d.get("project"), "username": d.get("username"),
        "insecure": d.get("insecure").is_some_and(|v| v == "true"),
        "hasCredentials": has,
    })
}

pub async fn list_repos(State(st): St, p: Principal) -> ApiResult<Json<Value>> {
    let mut items = Vec::new();
    for s in secrets_of_type(&st, REPOSITORY.secret_type).await? {
        let d = decode(&s);
        let Some(url) = d.get("url") else { continue };
        let proj = d.get("project").cloned().unwrap_or_default();
        if st.allowed(&p, "repositories", "get", &scoped(&proj, url))? {
            items.push(repo_view(&d));
        }
    }
    Ok(Json(json!({ "items": items })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepoBody {
    repo: String,
    #[serde(default)]
    r#type: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    ssh_private_key: Option<String>,
    #[serde(default)]
    insecure: bool,
}

fn secret_name(prefix: &str, key: &str) -> String {
    let h = Sha256::digest(key.as_bytes());
    format!(
        "{prefix}-{}",
        h.iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

/// Creates the Secret for `key` (a repository URL or cluster server), or
/// with `upsert` replaces it. Replacing needs `update` on the existing
/// object (its own project) as well, and never touches a Secret of another type.
async fn upsert_secret(
    st: &AppState,
    p: &Principal,
    kind: &CredKind,
    key: &str,
    data: BTreeMap<String, String>,
    upsert: bool,
) -> ApiResult<()> {
    let name = secret_name(kind.name_prefix, key);
    let api = Api::<Secret>::namespaced(st.client.clone(), &st.ns);
    let s: Secret = serde_json::from_value(json!({
        "metadata": { "name": name, "labels": { SECRET_TYPE_LABEL: kind.secret_type } },
        "stringData": data,
    }))
    .map_err(|e| ApiError::internal(e.to_string()))?;
    match api.create(&PostParams::default(), &s).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            if !upsert {
                return Err(ApiError::conflict(format!(
                    "{} already exists; use upsert to replace it",
                    kind.secret_type
                )));
            }
            let mut existing = api.get(&name).await?;
            if existing.labels().get(SECRET_TYPE_LABEL).map(String::as_str)
                != Some(kind.secret_type)
            {
                return Err(ApiError::conflict(format!(
                    "Secret {name} exists and is not a {} Secret; remove it first",
                    kind.secret_type
                )));
            }
            let old = decode(&existing);
            let old_project = old.get("project").cloned().unwrap_or_default();
            let what = old.get(kind.key_field).cloned().unwrap_or_default();
            st.enforce(p, kind.resource, "update", &scoped(&old_project, &what))?;
            let new_project = data.get("project").cloned().unwrap_or_default();
            st.enforce(p, kind.resource, "update", &scoped(&new_project, &what))?;
            existing.data = None;
            existing.string_data = s.string_data;
            api.replace(&name, &PostParams::default(), &existing)
                .await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// A URL with any user info removed: credentials belong in the fields
/// made for them, and are never sent back.
fn without_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find('/').unwrap_or(rest.len());
            match rest[..end].rfind('@') {
                Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

pub async fn create_repo(
    State(st): St,
    p: Principal,
    Query(q): Query<Upsert>,
    Json(b): Json<RepoBody>,
) -> ApiResult<Json<Value>> {
    let url = b.repo.trim().to_string();
    if url.is_empty() || url.len() > 2048 || url.chars().any(char::is_control) {
        return Err(ApiError::bad_request("repo must be a repository URL"));
    }
    let project = b.project.clone().unwrap_or_default();
    if !project.is_empty() {
        check_name(&project)?;
    }
    st.enforce(&p, "repositories", "create", &scoped(&project, &url))?;
    let mut d = BTreeMap::new();
    d.insert("url".to_string(), url.clone());
    d.insert(
        "type".to_string(),
        b.r#type.clone().unwrap_or_else(|| "git".into()),
    );
    for (k, v) in [
        ("name", &b.name),
        ("project", &b.project),
        ("username", &b.username),
        ("password", &b.password),
        ("sshPrivateKey", &b.ssh_private_key),
    ] {
        if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
            d.insert(k.to_string(), v.clone());
        }
    }
    if b.insecure {
        d.insert("insecure".into(), "true".into());
    }
    let view = repo_view(&d);
    upsert_secret(
        &st,
        &p,
        &REPOSITORY,
        &url,
        d,
        q.upsert.as_deref() == Some("true"),
    )
    .await?;
    Ok(Json(view))
}

pub async fn delete_repo(
    State(st): St,
    p: Principal,
    Path(repo): Path<String>,
) -> ApiResult<Json<Value>> {
    delete_credential(&st, &p, &REPOSITORY, &repo).await
}

/// Deletes the credential Secret for `key`, with `delete` on its project.
async fn delete_credential(
    st: &AppState,
    p: &Principal,
    kind: &CredKind,
    key: &str,
) -> ApiResult<Json<Value>> {
    for s in secrets_of_type(st, kind.secret_type).await? {
        let d = decode(&s);
        if d.get(kind.key_field).map(String::as_str) == Some(key) {
            let proj = d.get("project").cloned().unwrap_or_default();
            st.enforce(p, kind.resource, "delete", &scoped(&proj, key))?;
            Api::<Secret>::namespaced(st.client.clone(), &st.ns)
                .delete(&s.name_any(), &DeleteParams::default())
                .await?;
            return Ok(Json(json!({})));
        }
    }
    Err(ApiError::not_found(format!("{} {key}", kind.secret_type)))
}

fn cluster_view(d: &BTreeMap<String, String>) -> Value {
    let config: Value = d
        .get("config")
        .and_then(|c| serde_json::from_str(c).ok())
        .unwrap_or(json!({}));
    json!({
        "name": d.get("name").or(d.get("server")), "server": d.get("server"),
        "namespaces": d.get("namespaces").map(|n| n.split(',').map(str::trim).filter(|s| !s.is_empty()).collect::<Vec<_>>()).unwrap_or_default(),
        "project": d.get("project"),
        "config": { "tlsClientConfig": { "insecure": config.pointer("/tlsClientConfig/insecure").and_then(Value::as_bool).unwrap_or(false) } },
    })
}

pub async fn list_clusters(State(st): St, p: Principal) -> ApiResult<Json<Value>> {
    let mut items = Vec::new();
    if st.allowed(&p, "clusters", "get", ferry_model::IN_CLUSTER_SERVER)? {
        items.push(json!({ "name": ferry_model::IN_CLUSTER_NAME, "server": ferry_model::IN_CLUSTER_SERVER, "namespaces": [], "config": { "tlsClientConfig": { "insecure": false } } }));
    }
    for s in secrets_of_type(&st, CLUSTER.secret_type).await? {
        let d = decode(&s);
        let Some(server) = d.get("server") else {
            continue;
        };
        let proj = d.get("project").cloned().unwrap_or_default();
        if st.allowed(&p, "clusters", "get", &scoped(&proj, server))? {
            items.push(cluster_view(&d));
        }
    }
    Ok(Json(json!({ "items": items })))
}

#[derive(Deserialize)]
pub struct ClusterBody {
    name: String,
    server: String,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    config: Value,
}

pub async fn create_cluster(
    State(st): St,
    p: Principal,
    Query(q): Query<Upsert>,
    Json(b): Json<ClusterBody>,
) -> ApiResult<Json<Value>> {
    let server = b.server.trim().to_string();
    if !(server.starts_with("https://") || server.starts_with("http://"))
        || server.len() > 2048
        || server.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request("server must be an http(s) URL"));
    }
    if b.name.trim().is_empty() || b.name.len() > 253 {
        return Err(ApiError::bad_request("name is required"));
    }
    let project = b.project.clone().unwrap_or_default();
    st.enforce(&p, "clusters", "create", &scoped(&project, &server))?;
    if !b.config.is_object() && !b.config.is_null() {
        return Err(ApiError::bad_request("config must be an object"));
    }
    let mut d = BTreeMap::new();
    d.insert("name".to_string(), b.name.trim().to_string());
    d.insert("server".to_string(), server.clone());
    d.insert(
        "config".to_string(),
        if b.config.is_null() {
            "{}".into()
        } else {
            b.config.to_string()
        },
    );
    if !b.namespaces.is_empty() {
        d.insert("namespaces".to_string(), b.namespaces.join(","));
    }
    if !project.is_empty() {
        d.insert("project".to_string(), project);
    }
    let view = cluster_view(&d);
    upsert_secret(
        &st,
        &p,
        &CLUSTER,
        &server,
        d,
        q.upsert.as_deref() == Some("true"),
    )
    .await?;
    Ok(Json(view))
}

pub async fn delete_cluster(
    State(st): St,
    p: Principal,
    Path(server): Path<String>,
) -> ApiResult<Json<Value>> {
    delete_credential(&st, &p, &CLUSTER, &server).await
}

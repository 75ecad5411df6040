//! KubeVela (OAM) Application endpoints: list, get, and resume a suspended workflow.
//! RBAC resource `oam-applications`, objects `<namespace>/<name>`.

use crate::api::{AppState, St, check_name};
use crate::auth::Principal;
use crate::error::ApiResult;
use axum::Json;
use axum::extract::{Path, Query, State};
use ferry_controller::oam::{applications, is_suspended, request_resume};
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ListParams};
use serde::Deserialize;
use serde_json::{Value, json};

pub const RESOURCE: &str = "oam-applications";

#[derive(Deserialize, Default)]
pub struct ListQuery {
    namespace: Option<String>,
}

fn api(st: &AppState, ns: Option<&str>) -> Api<DynamicObject> {
    applications(st.client.clone(), ns)
}

fn object(o: &DynamicObject) -> String {
    format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any())
}

pub async fn list(
    State(st): St,
    p: Principal,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let ns = q.namespace.filter(|n| !n.is_empty());
    if let Some(n) = &ns {
        check_name(n)?;
    }
    let list = api(&st, ns.as_deref()).list(&ListParams::default()).await?;
    let mut items = Vec::new();
    for o in list.items {
        if st.allowed(&p, RESOURCE, "get", &object(&o))? {
            items.push(serde_json::to_value(&o).unwrap_or(Value::Null));
        }
    }
    Ok(Json(json!({ "items": items })))
}

async fn fetch(
    st: &AppState,
    p: &Principal,
    ns: &str,
    name: &str,
    action: &str,
) -> ApiResult<DynamicObject> {
    check_name(ns)?;
    check_name(name)?;
    let object = format!("{ns}/{name}");
    // Deny before revealing whether the app exists.
    st.enforce(p, RESOURCE, action, &object)?;
    match api(st, Some(ns)).get_opt(name).await? {
        Some(o) => Ok(o),
        None => Err(crate::error::ApiError::not_found(format!(
            "application {object}"
        ))),
    }
}

pub async fn get(
    State(st): St,
    p: Principal,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let o = fetch(&st, &p, &ns, &name, "get").await?;
    Ok(Json(serde_json::to_value(&o).unwrap_or(Value::Null)))
}

/// Resumes a workflow waiting in a suspend step (KubeVela's `vela workflow resume`).
pub async fn resume(
    State(st): St,
    p: Principal,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let o = fetch(&st, &p, &ns, &name, "sync").await?;
    if !is_suspended(&o) {
        return Err(crate::error::ApiError::conflict(format!(
            "application {ns}/{name} is not suspended"
        )));
    }
    let o = request_resume(&api(&st, Some(&ns)), &name, &p.subject).await?;
    Ok(Json(serde_json::to_value(&o).unwrap_or(Value::Null)))
}

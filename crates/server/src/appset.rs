//! ApplicationSet endpoints: list, get, create (with upsert) and delete, under the RBAC
//! resource `applicationsets` with objects `<project>/<name>` as Argo CD names them.

use crate::api::{St, check_name};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::extract::{Path, Query, State};
use ferry_model::appset::{ApplicationSet, Generator};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

pub const RESOURCE: &str = "applicationsets";

fn api(st: &crate::api::AppState) -> Api<ApplicationSet> {
    Api::namespaced(st.client.clone(), &st.ns)
}

/// The project of the Applications a set makes, as written in its template.
fn project(set: &ApplicationSet) -> String {
    set.spec
        .template
        .spec
        .get("project")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .unwrap_or("default")
        .to_string()
}

fn object(set: &ApplicationSet) -> String {
    format!("{}/{}", project(set), set.name_any())
}

fn value(set: &ApplicationSet) -> Value {
    let mut v = serde_json::to_value(set).unwrap_or_default();
    v["apiVersion"] = json!("argoproj.io/v1alpha1");
    v["kind"] = json!("ApplicationSet");
    v
}

pub async fn list(State(st): St, p: Principal) -> ApiResult<Json<Value>> {
    let mut items = Vec::new();
    let mut sets = api(&st).list(&Default::default()).await?.items;
    sets.sort_by_key(|s| s.name_any());
    for s in sets {
        if st.allowed(&p, RESOURCE, "get", &object(&s))? {
            items.push(value(&s));
        }
    }
    Ok(Json(json!({ "items": items })))
}

pub async fn get(State(st): St, p: Principal, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    check_name(&name)?;
    let s = api(&st)
        .get_opt(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("applicationset {name}")))?;
    st.enforce(&p, RESOURCE, "get", &object(&s))?;
    Ok(Json(value(&s)))
}

fn unknown_generators(gs: &[Generator], out: &mut Vec<String>) {
    for g in gs {
        out.extend(g.unknown.keys().cloned());
        for c in [&g.matrix, &g.merge].into_iter().flatten() {
            unknown_generators(&c.generators, out);
        }
    }
}

#[derive(serde::Deserialize, Default)]
pub struct UpsertQuery {
    #[serde(default)]
    upsert: Option<String>,
}

pub async fn create(
    State(st): St,
    p: Principal,
    Query(q): Query<UpsertQuery>,
    Json(body): Json<Value>,
) -> ApiResult<Json<Value>> {
    let mut set: ApplicationSet = serde_json::from_value(body)
        .map_err(|e| ApiError::bad_request(format!("not a valid ApplicationSet: {e}")))?;
    let name = set.name_any();
    check_name(&name)?;
    let proj = project(&set);
    if proj.contains("{{") {
        return Err(ApiError::bad_request(
            "the API does not create ApplicationSets with a templated project: the RBAC check needs the project",
        ));
    }
    st.enforce(&p, RESOURCE, "create", &object(&set))?;
    if st.ctl.app_project(&proj).is_none() {
        return Err(ApiError::bad_request(format!(
            "ApplicationSet references project {proj} which does not exist"
        )));
    }
    let mut unknown = Vec::new();
    unknown_generators(&set.spec.generators, &mut unknown);
    if !unknown.is_empty() {
        return Err(ApiError::bad_request(format!(
            "ApplicationSet {name} contains generators Ferry does not run: {}",
            unknown.join(", ")
        )));
    }
    set.metadata.namespace = Some(st.ns.clone());
    set.metadata.resource_version = None;
    set.status = None;
    set.api_version = "argoproj.io/v1alpha1".into();
    set.kind = "ApplicationSet".into();
    let api = api(&st);
    match api.get_opt(&name).await? {
        None => Ok(Json(value(
            &api.create(&PostParams::default(), &set).await?,
        ))),
        Some(existing) => {
            if existing.spec.template == set.spec.template
                && serde_json::to_value(&existing.spec).ok() == serde_json::to_value(&set.spec).ok()
            {
                return Ok(Json(value(&existing)));
            }
            let upsert = q.upsert.as_deref().is_some_and(|u| u == "true" || u == "1");
            if !upsert {
                return Err(ApiError::conflict(format!(
                    "existing ApplicationSet spec is different, use upsert flag to force update: {name}"
                )));
            }
            st.enforce(&p, RESOURCE, "update", &object(&existing))?;
            st.enforce(&p, RESOURCE, "update", &object(&set))?;
            set.metadata.resource_version = existing.metadata.resource_version.clone();
            set.metadata.uid = existing.metadata.uid.clone();
            Ok(Json(value(
                &api.replace(&name, &PostParams::default(), &set).await?,
            )))
        }
    }
}

pub async fn delete(
    State(st): St,
    p: Principal,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    check_name(&name)?;
    let api = api(&st);
    let s = api
        .get_opt(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("applicationset {name}")))?;
    st.enforce(&p, RESOURCE, "delete", &object(&s))?;
    // Its Applications go with it (their owner reference), as in Argo CD.
    api.delete(&name, &DeleteParams::foreground()).await?;
    Ok(Json(json!({})))
}

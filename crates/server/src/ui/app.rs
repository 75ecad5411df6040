//! One application: summary, resource tree (siblings grouped past a threshold) and list,
//! diff, history with rollback, events, the resource panel, and the actions (sync with
//! Argo CD's options, refresh, auto-sync, rollback, delete). Actions call the API handlers.

use super::widgets::*;
use super::{UiError, UiResult, Viewer, form, from_json, page, toast};
use crate::api::{self, AppState, St};
use crate::error::ApiError;
use axum::Json;
use axum::extract::{Path, Query, State};
use ferry_model::Application;
use kube::ResourceExt;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// More siblings of one kind than this under one parent are shown as one group node, so a
/// Deployment with 500 Pods stays a page a browser draws at once.
pub const GROUP_THRESHOLD: usize = 10;

#[derive(Deserialize, Default)]
pub struct PageQuery {
    #[serde(default)]
    view: String,
    #[serde(default)]
    kind: String,
}

fn key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

async fn load(
    st: &Arc<AppState>,
    v: &Viewer,
    ns: &str,
    name: &str,
) -> Result<Arc<Application>, UiError> {
    let a = st.app(&key(ns, name)).await?;
    st.enforce(&v.p, "applications", "get", &st.app_object(&a))?;
    Ok(a)
}

pub async fn view(
    State(st): St,
    v: Viewer,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> UiResult {
    let a = load(&st, &v, &ns, &name).await?;
    let href = app_href(&a);
    let view = match q.view.as_str() {
        "list" | "diff" | "history" | "events" => q.view.as_str(),
        _ => "tree",
    };
    let body = match view {
        "list" => list_view(&st, &a, &q.kind).await?,
        "diff" => diff_view(&st, &v, &a).await?,
        "history" => history_view(&st, &v, &a)?,
        "events" => events_view(&st, &v, &a).await?,
        _ => tree_view(&st, &a).await?,
    };
    let tabs = [
        ("tree", "Tree"),
        ("list", "List"),
        ("diff", "Diff"),
        ("history", "History and rollback"),
        ("events", "Events"),
    ];
    let content = html! {
        nav.crumbs aria-label="Breadcrumb" { a href="/applications" { "Applications" } " / " (a.name_any()) }
        h1 { (a.name_any()) }
        (summary_block(&st, &v, &a)?)
        (action_bar(&st, &v, &a)?)
        nav.tabs aria-label="Views" {
            ul {
                @for (id, label) in tabs {
                    li {
                        @if id == view {
                            a href={ (href) "?view=" (id) } aria-current="page" { (label) }
                        } @else {
                            a href={ (href) "?view=" (id) } { (label) }
                        }
                    }
                }
            }
        }
        div.split {
            section #view aria-label=(view) { (body) }
            aside #panel aria-label="Resource" aria-live="polite" {}
        }
    };
    Ok(page(&v, &a.name_any(), "/applications", content))
}

fn summary_block(st: &AppState, v: &Viewer, a: &Application) -> UiResult {
    let _ = (st, v);
    let status = a.status.clone().unwrap_or_default();
    let revision = status
        .sync
        .as_ref()
        .and_then(|s| s.revision.clone().or_else(|| s.revisions.first().cloned()))
        .unwrap_or_default();
    let op = status.operation_state.as_ref();
    let auto = a.automated().is_some();
    let sources = a.sources();
    Ok(html! {
        section #summary.summary data-app=(key(&app_ns(a), &a.name_any())) hx-get={ (app_href(a)) "/summary" }
            hx-trigger="ferry:changed throttle:1s" hx-swap="outerHTML" aria-label="Summary" {
            p.status {
                (health_badge(&app_health(a))) " " (sync_badge(&app_sync(a)))
                " " span.badge { "Auto-sync: " (if auto { "on" } else { "off" }) }
            }
            dl.grid {
                dt { "Project" } dd { (a.project()) }
                dt { "Destination" } dd { (app_cluster(a)) " / " (app_dest_namespace(a)) }
                @for s in &sources {
                    dt { "Source" }
                    dd.wrap {
                        (s.repo_url)
                        @if let Some(p) = &s.path { " · path " (p) }
                        @if let Some(c) = &s.chart { " · chart " (c) }
                        " · " (s.revision())
                        // Helm values can hold secrets (argo-cd #14065): never shown.
                        @if s.helm.is_some() { " · Helm values hidden" }
                    }
                }
                dt { "Synced to" } dd.mono { (revision) }
                @if let Some(h) = status.health.as_ref().and_then(|h| h.message.clone()) {
                    dt { "Health" } dd { (h) }
                }
                @if let Some(op) = op {
                    dt { "Last operation" }
                    dd #operation {
                        strong { (op.phase) } ": " (op.message)
                        @if let Some(t) = &op.finished_at { " (finished " (t.0.to_string()) ")" }
                        @else if let Some(t) = &op.started_at { " (started " (t.0.to_string()) ")" }
                    }
                }
            }
            @if !status.conditions.is_empty() {
                ul.conditions aria-label="Conditions" {
                    @for c in &status.conditions {
                        li.alert.warn { strong { (c.type_) } ": " (c.message) }
                    }
                }
            }
        }
    })
}

pub async fn summary(
    State(st): St,
    v: Viewer,
    Path((ns, name)): Path<(String, String)>,
) -> UiResult {
    let a = load(&st, &v, &ns, &name).await?;
    summary_block(&st, &v, &a)
}

fn action_bar(st: &AppState, v: &Viewer, a: &Application) -> UiResult {
    let object = st.app_object(a);
    let href = app_href(a);
    let can_sync = st.allowed(&v.p, "applications", "sync", &object)?;
    let can_update = st.allowed(&v.p, "applications", "update", &object)?;
    let can_delete = st.allowed(&v.p, "applications", "delete", &object)?;
    let resources = a
        .status
        .as_ref()
        .map(|s| s.resources.clone())
        .unwrap_or_default();
    let auto = a.automated().is_some();
    Ok(html! {
        div.actionbar role="toolbar" aria-label="Application actions" {
            @if can_sync {
                details.dialog {
                    summary { "Sync…" }
                    form hx-post={ (href) "/sync" } hx-target="#toast" {
                        fieldset {
                            legend { "Sync options" }
                            label { input type="checkbox" name="prune" value="true"; " Prune" }
                            label { input type="checkbox" name="dryRun" value="true"; " Dry run" }
                            label { input type="checkbox" name="applyOnly" value="true"; " Apply only (skip hooks)" }
                            label { input type="checkbox" name="force" value="true"; " Force (delete and re-create what cannot change in place)" }
                            label { input type="checkbox" name="option" value="ServerSideApply=true"; " Server-side apply" }
                            label { input type="checkbox" name="option" value="PruneLast=true"; " Prune last" }
                            label { input type="checkbox" name="option" value="Replace=true"; " Replace" }
                            label { input type="checkbox" name="option" value="CreateNamespace=true"; " Create namespace" }
                            label { input type="checkbox" name="option" value="ApplyOutOfSyncOnly=true"; " Apply out of sync only" }
                        }
                        @if !resources.is_empty() {
                            fieldset.resources {
                                legend { "Resources (none ticked: all)" }
                                @for r in &resources {
                                    @let id = format!("{}/{}/{}/{}", r.group, r.kind, r.namespace, r.name);
                                    label { input type="checkbox" name="resource" value=(id); " " (r.kind) " " (r.name) }
                                }
                            }
                        }
                        button type="submit" { "Synchronize" }
                    }
                }
            }
            button type="button" hx-post={ (href) "/refresh" } hx-target="#toast" { "Refresh" }
            button type="button" hx-post={ (href) "/refresh?hard=true" } hx-target="#toast" { "Hard refresh" }
            @if can_update {
                button type="button" hx-post={ (href) "/autosync?enable=" (!auto) } hx-target="#toast" {
                    (if auto { "Disable auto-sync" } else { "Enable auto-sync" })
                }
            }
            @if can_delete {
                details.dialog {
                    summary.danger { "Delete…" }
                    form hx-post={ (href) "/delete" } hx-target="#toast"
                        hx-confirm={ "Delete application " (a.name_any()) "?" } {
                        fieldset {
                            legend { "Propagation" }
                            label { input type="radio" name="cascade" value="foreground" checked; " Foreground (delete its objects first)" }
                            label { input type="radio" name="cascade" value="background"; " Background" }
                            label { input type="radio" name="cascade" value="none"; " Non-cascading (keep its objects)" }
                        }
                        button.danger type="submit" { "Delete application" }
                    }
                }
            }
        }
    })
}

/// The tree's nodes: the API's resource tree of the app's destination.
async fn nodes(st: &AppState, a: &Application) -> Result<Vec<Value>, UiError> {
    let (client, _) = st.ctl.destination_client(a).await.map_err(|e| {
        UiError(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            e,
        ))
    })?;
    Ok(crate::tree::build(&client, a).await?)
}

fn node_id(n: &Value) -> String {
    n["uid"].as_str().unwrap_or_default().to_string()
}

fn resource_href(a: &Application, n: &Value) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for k in ["group", "version", "kind", "namespace", "name"] {
        s.append_pair(k, n[k].as_str().unwrap_or_default());
    }
    format!("{}/resource?{}", app_href(a), s.finish())
}

fn node_button(a: &Application, n: &Value) -> Markup {
    let kind = n["kind"].as_str().unwrap_or_default();
    let name = n["name"].as_str().unwrap_or_default();
    html! {
        button.node type="button" hx-get=(resource_href(a, n)) hx-target="#panel"
            data-kind=(kind) aria-label={ (kind) " " (name) } {
            span.kind { (kind) } " " span.name { (name) }
            @if let Some(h) = n["health"].as_str() { " " (health_badge(h)) }
            @if let Some(s) = n["status"].as_str() { " " (sync_badge(s)) }
        }
    }
}

type Children<'a> = HashMap<String, Vec<&'a Value>>;

fn render_children(a: &Application, children: &Children, parent: &str, depth: usize) -> Markup {
    let Some(kids) = children.get(parent) else {
        return html! {};
    };
    let mut by_kind: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for k in kids {
        by_kind
            .entry(k["kind"].as_str().unwrap_or_default())
            .or_default()
            .push(k);
    }
    html! {
        ul role="group" {
            @for (kind, items) in &by_kind {
                @if items.len() > GROUP_THRESHOLD {
                    @let mut counts: BTreeMap<String, usize> = BTreeMap::new();
                    @for i in items.iter() { ({ *counts.entry(i["health"].as_str().unwrap_or("Unknown").to_string()).or_default() += 1; "" }) }
                    li role="treeitem" aria-expanded="false" {
                        a.node.group href={ (app_href(a)) "?view=list&kind=" (kind) } {
                            span.kind { (kind) } " × " (items.len())
                            " (" @for (i, (h, c)) in counts.iter().enumerate() { @if i > 0 { ", " } (c) " " (h) } ")"
                        }
                    }
                } @else {
                    @for i in items {
                        li role="treeitem" {
                            (node_button(a, i))
                            // Owner chains are short; the bound keeps a cycle from recursing.
                            @if depth < 8 { (render_children(a, children, &node_id(i), depth + 1)) }
                        }
                    }
                }
            }
        }
    }
}

async fn tree_view(st: &AppState, a: &Application) -> UiResult {
    let nodes = nodes(st, a).await?;
    let mut children: Children = HashMap::new();
    for n in &nodes {
        let parents = n["parentRefs"].as_array().cloned().unwrap_or_default();
        if parents.is_empty() {
            children.entry(String::new()).or_default().push(n);
        }
        for p in parents {
            children
                .entry(p["uid"].as_str().unwrap_or_default().to_string())
                .or_default()
                .push(n);
        }
    }
    Ok(html! {
        p.count { (nodes.len()) " resources" }
        ul.tree role="tree" aria-label={ "Resources of " (a.name_any()) } {
            li role="treeitem" aria-expanded="true" {
                span.node.root { span.kind { "Application" } " " (a.name_any()) " " (health_badge(&app_health(a))) " " (sync_badge(&app_sync(a))) }
                (render_children(a, &children, "", 0))
            }
        }
    })
}

async fn list_view(st: &AppState, a: &Application, kind: &str) -> UiResult {
    let nodes = nodes(st, a).await?;
    let shown: Vec<&Value> = nodes
        .iter()
        .filter(|n| kind.is_empty() || n["kind"].as_str() == Some(kind))
        .collect();
    Ok(html! {
        p.count { (shown.len()) " resources" @if !kind.is_empty() { " of kind " (kind) " · " a href={ (app_href(a)) "?view=list" } { "show all" } } }
        table.resources {
            thead { tr { th scope="col" { "Kind" } th scope="col" { "Name" } th scope="col" { "Namespace" } th scope="col" { "Health" } th scope="col" { "Sync" } } }
            tbody {
                @for n in shown {
                    tr {
                        td { (n["kind"].as_str().unwrap_or_default()) }
                        th scope="row" { (node_button(a, n)) }
                        td { (n["namespace"].as_str().unwrap_or_default()) }
                        td { @if let Some(h) = n["health"].as_str() { (health_badge(h)) } }
                        td { @if let Some(s) = n["status"].as_str() { (sync_badge(s)) } }
                    }
                }
            }
        }
    })
}

async fn managed(st: &Arc<AppState>, v: &Viewer, a: &Application) -> Result<Vec<Value>, UiError> {
    let Json(m) = api::managed_resources(
        State(st.clone()),
        v.p.clone(),
        Path(key(&app_ns(a), &a.name_any())),
    )
    .await?;
    Ok(m["items"].as_array().cloned().unwrap_or_default())
}

fn manifests_of(item: &Value) -> (String, String) {
    let mut live = item.get("liveState").cloned().filter(|v| !v.is_null());
    let mut desired = item.get("targetState").cloned().filter(|v| !v.is_null());
    mask_secrets(live.as_mut(), desired.as_mut());
    (
        live.as_ref().map(yaml).unwrap_or_default(),
        desired.as_ref().map(yaml).unwrap_or_default(),
    )
}

async fn diff_view(st: &Arc<AppState>, v: &Viewer, a: &Application) -> UiResult {
    let items = managed(st, v, a).await?;
    let changed: Vec<&Value> = items
        .iter()
        .filter(|i| i["modified"].as_bool() == Some(true))
        .collect();
    Ok(html! {
        p.count { (changed.len()) " of " (items.len()) " resources differ from Git" }
        @for i in &changed {
            @let (live, desired) = manifests_of(i);
            details.diff-item open[changed.len() <= 5] {
                summary {
                    (i["kind"].as_str().unwrap_or_default()) " " (i["name"].as_str().unwrap_or_default())
                    @if i["requiresPruning"].as_bool() == Some(true) { " (not in Git: pruned by a sync with prune)" }
                }
                (diff_block(&diff(&live, &desired)))
            }
        }
    })
}

fn history_view(st: &AppState, v: &Viewer, a: &Application) -> UiResult {
    let history = a
        .status
        .as_ref()
        .map(|s| s.history.clone())
        .unwrap_or_default();
    let can = st.allowed(&v.p, "applications", "rollback", &st.app_object(a))?;
    let auto = a.automated().is_some();
    Ok(html! {
        @if auto && can { p.note { "Rollback needs auto-sync off." } }
        table.history {
            thead { tr { th scope="col" { "ID" } th scope="col" { "Revision" } th scope="col" { "Deployed" } th scope="col" { "Source" } th scope="col" { "Action" } } }
            tbody {
                @for h in history.iter().rev() {
                    tr {
                        th scope="row" { (h.id) }
                        td.mono { (h.revision.clone().unwrap_or_else(|| h.revisions.join(", "))) }
                        td { (h.deployed_at.as_ref().map(|t| t.0.to_string()).unwrap_or_default()) }
                        td.wrap { (h.source.as_ref().map(|s| format!("{} {}", s.repo_url, s.path.clone().unwrap_or_default())).unwrap_or_default()) }
                        td {
                            @if can && !auto {
                                button type="button" hx-post={ (app_href(a)) "/rollback?id=" (h.id) } hx-target="#toast"
                                    hx-confirm={ "Roll back to history " (h.id) "?" } aria-label={ "Roll back to " (h.id) } { "Rollback" }
                            }
                        }
                    }
                }
            }
        }
    })
}

fn events_table(items: &[Value]) -> Markup {
    html! {
        @if items.is_empty() { p.empty { "No events." } }
        @else {
            table.events {
                thead { tr { th scope="col" { "Type" } th scope="col" { "Reason" } th scope="col" { "Message" } th scope="col" { "Count" } th scope="col" { "Last seen" } } }
                tbody {
                    @for e in items {
                        tr {
                            td { (e["type"].as_str().unwrap_or_default()) }
                            td { (e["reason"].as_str().unwrap_or_default()) }
                            td.wrap { (e["message"].as_str().unwrap_or_default()) }
                            td { (e["count"].as_i64().unwrap_or(1)) }
                            td { (e["lastTimestamp"].as_str().unwrap_or_default()) }
                        }
                    }
                }
            }
        }
    }
}

async fn events_view(st: &Arc<AppState>, v: &Viewer, a: &Application) -> UiResult {
    let Json(e) = api::app_events(
        State(st.clone()),
        v.p.clone(),
        Path(key(&app_ns(a), &a.name_any())),
        Query(from_json(json!({}))?),
    )
    .await?;
    Ok(events_table(
        e["items"].as_array().map(Vec::as_slice).unwrap_or_default(),
    ))
}

#[derive(Deserialize, Default)]
pub struct ResourceQuery {
    #[serde(default)]
    group: String,
    #[serde(default)]
    version: String,
    kind: String,
    #[serde(default)]
    namespace: String,
    name: String,
}

/// The resource panel: live and desired manifests, their diff, and the object's events.
pub async fn resource(
    State(st): St,
    v: Viewer,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<ResourceQuery>,
) -> UiResult {
    let a = load(&st, &v, &ns, &name).await?;
    let items = managed(&st, &v, &a).await?;
    let found = items.iter().find(|i| {
        i["kind"].as_str() == Some(&q.kind)
            && i["name"].as_str() == Some(&q.name)
            && i["group"].as_str().unwrap_or_default() == q.group
            && i["namespace"].as_str().unwrap_or_default() == q.namespace
    });
    let (live, desired) = match found {
        Some(i) => manifests_of(i),
        None => {
            // An object the app does not manage but owns through one (a Pod): it must be in
            // the app's tree, so no other object of the cluster can be read through here.
            let nodes = nodes(&st, &a).await?;
            let in_tree = nodes.iter().any(|n| {
                n["kind"].as_str() == Some(&q.kind)
                    && n["name"].as_str() == Some(&q.name)
                    && n["namespace"].as_str().unwrap_or_default() == q.namespace
                    && n["group"].as_str().unwrap_or_default() == q.group
            });
            if !in_tree {
                return Err(UiError(ApiError::not_found(format!(
                    "{} {} in application {}",
                    q.kind,
                    q.name,
                    a.name_any()
                ))));
            }
            let (client, _) = st.ctl.destination_client(&a).await.map_err(|e| {
                UiError(ApiError::new(
                    axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                    e,
                ))
            })?;
            let gvk = kube::api::GroupVersionKind::gvk(&q.group, &q.version, &q.kind);
            let (ar, caps) = kube::discovery::pinned_kind(&client, &gvk)
                .await
                .map_err(|e| UiError(ApiError::not_found(format!("{}: {e}", q.kind))))?;
            let api: kube::Api<kube::api::DynamicObject> =
                if caps.scope == kube::discovery::Scope::Namespaced {
                    kube::Api::namespaced_with(client, &q.namespace, &ar)
                } else {
                    kube::Api::all_with(client, &ar)
                };
            let o = api.get(&q.name).await?;
            let mut live = serde_json::to_value(o).unwrap_or_default();
            mask_secrets(Some(&mut live), None);
            (yaml(&live), String::new())
        }
    };
    let events = api::app_events(
        State(st.clone()),
        v.p.clone(),
        Path(key(&ns, &name)),
        Query(from_json(
            json!({ "resourceNamespace": q.namespace, "resourceName": q.name }),
        )?),
    )
    .await
    .map(|Json(e)| e["items"].as_array().cloned().unwrap_or_default())
    .unwrap_or_default();
    Ok(html! {
        h2 { (q.kind) " " (q.name) }
        @if !q.namespace.is_empty() { p.count { "Namespace " (q.namespace) } }
        details open { summary { "Live manifest" } pre.manifest { (live) } }
        @if !desired.is_empty() {
            details { summary { "Desired manifest" } pre.manifest { (desired) } }
            details open { summary { "Diff" } (diff_block(&diff(&live, &desired))) }
        }
        details { summary { "Events" } (events_table(&events)) }
    })
}

pub async fn sync(
    State(st): St,
    v: Viewer,
    Path((ns, name)): Path<(String, String)>,
    body: String,
) -> UiResult {
    let f = form(&body);
    let has = |k: &str| f.iter().any(|(x, v)| x == k && v == "true");
    let options: Vec<&String> = f
        .iter()
        .filter(|(k, _)| k == "option")
        .map(|(_, v)| v)
        .collect();
    let mut resources = Vec::new();
    for (_, r) in f.iter().filter(|(k, _)| k == "resource") {
        let parts: Vec<&str> = r.splitn(4, '/').collect();
        let [group, kind, namespace, rname] = parts[..] else {
            return Err(UiError(ApiError::bad_request(format!(
                "resource {r:?}: group/kind/namespace/name"
            ))));
        };
        resources
            .push(json!({ "group": group, "kind": kind, "namespace": namespace, "name": rname }));
    }
    let mut body = json!({
        "prune": has("prune"), "dryRun": has("dryRun"),
        "syncOptions": options, "resources": resources,
    });
    if has("applyOnly") {
        body["strategy"] = json!({ "apply": { "force": has("force") } });
    } else if has("force") {
        body["strategy"] = json!({ "hook": { "force": true } });
    }
    let sync_body = from_json(body)?;
    let _ = api::sync_app(State(st), v.p, Path(key(&ns, &name)), Some(Json(sync_body))).await?;
    Ok(toast(&format!(
        "Sync of {name} started{}.",
        if has("dryRun") { " (dry run)" } else { "" }
    )))
}

#[derive(Deserialize, Default)]
pub struct RefreshQuery {
    #[serde(default)]
    hard: bool,
}

pub async fn refresh(
    State(st): St,
    v: Viewer,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<RefreshQuery>,
) -> UiResult {
    let kind = if q.hard { "hard" } else { "normal" };
    let _ = api::get_app(
        State(st),
        v.p,
        Path(key(&ns, &name)),
        Query(from_json(json!({ "refresh": kind }))?),
    )
    .await?;
    Ok(toast(&format!(
        "{} refresh of {name} requested.",
        if q.hard { "Hard" } else { "A" }
    )))
}

#[derive(Deserialize)]
pub struct RollbackQuery {
    id: i64,
}

pub async fn rollback(
    State(st): St,
    v: Viewer,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<RollbackQuery>,
) -> UiResult {
    let _ = api::rollback_app(
        State(st),
        v.p,
        Path(key(&ns, &name)),
        Json(from_json(json!({ "id": q.id }))?),
    )
    .await?;
    Ok(toast(&format!(
        "Rollback of {name} to history {} started.",
        q.id
    )))
}

#[derive(Deserialize)]
pub struct AutoSyncQuery {
    enable: bool,
}

pub async fn autosync(
    State(st): St,
    v: Viewer,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<AutoSyncQuery>,
) -> UiResult {
    let a = st.live_app(&key(&ns, &name)).await?;
    st.enforce(&v.p, "applications", "update", &st.app_object(&a))?;
    let automated = if q.enable { json!({}) } else { Value::Null };
    let body = json!({ "spec": { "syncPolicy": { "automated": automated } } });
    st.apps_in(&ns)
        .patch(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&body),
        )
        .await?;
    Ok(toast(&format!(
        "Auto-sync of {name} turned {}.",
        if q.enable { "on" } else { "off" }
    )))
}

pub async fn delete(
    State(st): St,
    v: Viewer,
    Path((ns, name)): Path<(String, String)>,
    body: String,
) -> UiResult {
    let f = form(&body);
    let cascade = f
        .iter()
        .find(|(k, _)| k == "cascade")
        .map(|(_, v)| v.as_str())
        .unwrap_or("foreground");
    let q = match cascade {
        "none" => json!({ "cascade": "false" }),
        "background" => json!({ "propagationPolicy": "background" }),
        _ => json!({ "propagationPolicy": "foreground" }),
    };
    let _ = api::delete_app(State(st), v.p, Path(key(&ns, &name)), Query(from_json(q)?)).await?;
    Ok(toast(&format!("Application {name} is being deleted.")))
}

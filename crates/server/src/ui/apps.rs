//! The applications screen: tiles or a table, filtered and paginated on the server, and the
//! stream that tells open pages which apps changed.

use super::widgets::*;
use super::{UiError, UiResult, Viewer, page};
use crate::api::{AppState, St};
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use ferry_model::Application;
use futures::StreamExt;
use kube::ResourceExt;
use maud::{Markup, html};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Apps per page: the list stays fast however many there are.
pub const PAGE_SIZE: usize = 50;

#[derive(Deserialize, Default, Clone)]
pub struct ListQuery {
    #[serde(default)]
    project: String,
    #[serde(default)]
    sync: String,
    #[serde(default)]
    health: String,
    #[serde(default)]
    cluster: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    repo: String,
    #[serde(default)]
    labels: String,
    #[serde(default)]
    search: String,
    #[serde(default)]
    page: Option<usize>,
    #[serde(default)]
    view: String,
}

impl ListQuery {
    fn matches(&self, a: &Application) -> bool {
        let eq = |want: &str, have: &str| want.is_empty() || want == have;
        eq(&self.project, a.project())
            && eq(&self.sync, &app_sync(a))
            && eq(&self.health, &app_health(a))
            && eq(&self.cluster, &app_cluster(a))
            && eq(&self.namespace, &app_dest_namespace(a))
            && eq(&self.repo, &app_repo(a))
            && crate::api::labels_match(a, &self.labels)
            && (self.search.is_empty()
                || a.name_any()
                    .to_lowercase()
                    .contains(&self.search.trim().to_lowercase()))
    }

    fn table(&self) -> bool {
        self.view == "table"
    }

    /// This query's URL with another page number.
    fn href(&self, page: usize) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("project", &self.project),
            ("sync", &self.sync),
            ("health", &self.health),
            ("cluster", &self.cluster),
            ("namespace", &self.namespace),
            ("repo", &self.repo),
            ("labels", &self.labels),
            ("search", &self.search),
            ("view", &self.view),
        ] {
            if !v.is_empty() {
                s.append_pair(k, v);
            }
        }
        if page > 1 {
            s.append_pair("page", &page.to_string());
        }
        format!("/applications?{}", s.finish())
    }
}

/// The apps the viewer may see.
fn visible(st: &AppState, v: &Viewer) -> Result<Vec<Arc<Application>>, UiError> {
    let mut out = Vec::new();
    for a in st.ctl.applications() {
        if st.allowed(&v.p, "applications", "get", &st.app_object(&a))? {
            out.push(a);
        }
    }
    out.sort_by_key(|a| (a.name_any(), app_ns(a)));
    Ok(out)
}

pub async fn list(State(st): St, v: Viewer, Query(q): Query<ListQuery>) -> UiResult {
    let apps = visible(&st, &v)?;
    let results = results(&st, &v, &apps, &q)?;
    if v.htmx {
        return Ok(results);
    }
    let facet = |f: &dyn Fn(&Application) -> String| -> BTreeSet<String> {
        apps.iter()
            .map(|a| f(a))
            .filter(|s| !s.is_empty())
            .collect()
    };
    let projects = facet(&|a| a.project().to_string());
    let clusters = facet(&app_cluster);
    let namespaces = facet(&app_dest_namespace);
    let repos = facet(&app_repo);
    let select = |name: &str, label: &str, chosen: &str, options: Vec<String>| {
        html! {
            label {
                span { (label) }
                select name=(name) {
                    option value="" { "All" }
                    @for o in &options {
                        option value=(o) selected[o == chosen] { (o) }
                    }
                }
            }
        }
    };
    let statuses = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let content = html! {
        h1 { "Applications" }
        form.filters role="search" action="/applications" method="get"
            hx-get="/applications" hx-target="#app-list" hx-swap="outerHTML" hx-push-url="true"
            hx-trigger="change, input changed delay:300ms from:#search, submit" {
            label {
                span { "Name" }
                input #search type="search" name="search" value=(q.search) placeholder="Search by name" autocomplete="off";
            }
            (select("project", "Project", &q.project, projects.into_iter().collect()))
            (select("sync", "Sync status", &q.sync, statuses(&["Synced", "OutOfSync", "Unknown"])))
            (select("health", "Health", &q.health, statuses(&["Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"])))
            (select("cluster", "Cluster", &q.cluster, clusters.into_iter().collect()))
            (select("namespace", "Namespace", &q.namespace, namespaces.into_iter().collect()))
            (select("repo", "Repository", &q.repo, repos.into_iter().collect()))
            label {
                span { "Labels" }
                input type="text" name="labels" value=(q.labels) placeholder="team=a,env!=prod";
            }
            fieldset.view {
                legend { "View" }
                label { input type="radio" name="view" value="tiles" checked[!q.table()]; " Tiles" }
                label { input type="radio" name="view" value="table" checked[q.table()]; " Table" }
            }
            noscript { button type="submit" { "Filter" } }
        }
        (results)
    };
    Ok(page(&v, "Applications", "/applications", content))
}

fn results(st: &AppState, v: &Viewer, apps: &[Arc<Application>], q: &ListQuery) -> UiResult {
    let matching: Vec<&Arc<Application>> = apps.iter().filter(|a| q.matches(a)).collect();
    let pages = matching.len().div_ceil(PAGE_SIZE).max(1);
    let page_no = q.page.unwrap_or(1).clamp(1, pages);
    let shown = &matching[((page_no - 1) * PAGE_SIZE).min(matching.len())
        ..(page_no * PAGE_SIZE).min(matching.len())];
    let mut items = Vec::with_capacity(shown.len());
    for a in shown {
        items.push(if q.table() {
            row(st, v, a)?
        } else {
            tile_card(st, v, a)?
        });
    }
    Ok(html! {
        div #app-list {
            p.count aria-live="polite" {
                (matching.len()) " of " (apps.len()) " applications"
                @if pages > 1 { " · page " (page_no) " of " (pages) }
            }
            @if matching.is_empty() {
                p.empty { "No applications match these filters." }
            } @else if q.table() {
                table.apps {
                    thead { tr {
                        th scope="col" { "Name" } th scope="col" { "Project" } th scope="col" { "Health" }
                        th scope="col" { "Sync" } th scope="col" { "Destination" } th scope="col" { "Repository" }
                        th scope="col" { "Actions" }
                    } }
                    tbody { @for i in &items { (i) } }
                }
            } @else {
                ul.tiles { @for i in &items { li { (i) } } }
            }
            @if pages > 1 {
                nav.pager aria-label="Pages" {
                    @if page_no > 1 { a rel="prev" href=(q.href(page_no - 1)) { "← Previous" } }
                    @if page_no < pages { a rel="next" href=(q.href(page_no + 1)) { "Next →" } }
                }
            }
        }
    })
}

/// Sync, Refresh and Delete, for those allowed them.
fn actions(st: &AppState, v: &Viewer, a: &Application) -> UiResult {
    let object = st.app_object(a);
    let href = app_href(a);
    let name = a.name_any();
    let can_sync = st.allowed(&v.p, "applications", "sync", &object)?;
    let can_delete = st.allowed(&v.p, "applications", "delete", &object)?;
    Ok(html! {
        div.actions {
            @if can_sync {
                button type="button" hx-post={ (href) "/sync" } hx-target="#toast" aria-label={ "Sync " (name) } { "Sync" }
            }
            button type="button" hx-post={ (href) "/refresh" } hx-target="#toast" aria-label={ "Refresh " (name) } { "Refresh" }
            @if can_delete {
                button.danger type="button" hx-post={ (href) "/delete" } hx-target="#toast"
                    hx-confirm={ "Delete application " (name) " and the objects it manages?" }
                    aria-label={ "Delete " (name) } { "Delete" }
            }
        }
    })
}

fn tile_card(st: &AppState, v: &Viewer, a: &Application) -> UiResult {
    let href = app_href(a);
    let key = format!("{}/{}", app_ns(a), a.name_any());
    let source = a.sources().into_iter().next();
    Ok(html! {
        article.tile data-app=(key) hx-get={ (href) "/tile" } hx-trigger="ferry:changed" hx-swap="outerHTML" {
            h2 { a href=(href) { (a.name_any()) } }
            p.status { (health_badge(&app_health(a))) " " (sync_badge(&app_sync(a))) }
            dl {
                dt { "Project" } dd { (a.project()) }
                dt { "Repository" } dd.wrap { (app_repo(a)) }
                @if let Some(s) = &source {
                    dt { "Path" } dd { (s.path.clone().or(s.chart.clone()).unwrap_or_default()) }
                    dt { "Target" } dd { (s.revision()) }
                }
                dt { "Destination" } dd { (app_cluster(a)) " / " (app_dest_namespace(a)) }
            }
            (actions(st, v, a)?)
        }
    })
}

fn row(st: &AppState, v: &Viewer, a: &Application) -> UiResult {
    let href = app_href(a);
    let key = format!("{}/{}", app_ns(a), a.name_any());
    Ok(html! {
        tr data-app=(key) hx-get={ (href) "/tile?view=table" } hx-trigger="ferry:changed" hx-swap="outerHTML" {
            th scope="row" { a href=(href) { (a.name_any()) } }
            td { (a.project()) }
            td { (health_badge(&app_health(a))) }
            td { (sync_badge(&app_sync(a))) }
            td { (app_cluster(a)) " / " (app_dest_namespace(a)) }
            td.wrap { (app_repo(a)) }
            td { (actions(st, v, a)?) }
        }
    })
}

#[derive(Deserialize, Default)]
pub struct TileQuery {
    #[serde(default)]
    view: String,
}

/// One app's tile or row again, after the stream said it changed.
pub async fn tile_fragment(
    st: &Arc<AppState>,
    v: &Viewer,
    ns: &str,
    name: &str,
    table: bool,
) -> Result<Markup, UiError> {
    let a = st.app(&format!("{ns}/{name}")).await?;
    st.enforce(&v.p, "applications", "get", &st.app_object(&a))?;
    if table {
        row(st, v, &a)
    } else {
        tile_card(st, v, &a)
    }
}

pub async fn tile(
    State(st): St,
    v: Viewer,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<TileQuery>,
) -> UiResult {
    tile_fragment(&st, &v, &ns, &name, q.view == "table").await
}

/// `ns/name` of every app that changes and that the viewer may see; pages refresh just
/// those parts.
pub async fn stream(
    State(st): St,
    v: Viewer,
    headers: axum::http::HeaderMap,
) -> Sse<impl futures::Stream<Item = Result<Event, std::convert::Infallible>>> {
    let session = super::session_cookie(&headers).unwrap_or_default();
    let rx = st.ctl.subscribe();
    let checker = st.clone();
    let stream = crate::api::tokio_stream_from(rx)
        // A session that ends (logout elsewhere, password change, expiry) ends the stream.
        .take_while(move |_| {
            let ok = crate::auth::authenticate(
                &checker.settings,
                &|x| checker.ctl.app_project(x),
                &session,
            )
            .is_ok();
            async move { ok }
        })
        .filter_map(move |a| {
            let st = st.clone();
            let allowed = st
                .allowed(&v.p, "applications", "get", &st.app_object(&a))
                .unwrap_or(false);
            async move {
                allowed.then(|| {
                    Ok(Event::default().event("app").data(format!(
                        "{}/{}",
                        app_ns(&a),
                        a.name_any()
                    )))
                })
            }
        });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

//! KubeVela applications (with Resume), image automation, and settings: repositories,
//! clusters, projects, accounts and project tokens. Credentials go in and never come back.

use super::{UiError, UiResult, Viewer, form, from_json, page, toast};
use crate::api::St;
use axum::Json;
use axum::extract::{Path, Query, State};
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use maud::{Markup, html};
use serde_json::{Value, json};

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or_default()
}

fn field(f: &[(String, String)], k: &str) -> String {
    f.iter()
        .find(|(x, _)| x == k)
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default()
}

fn healthy(ok: bool) -> Markup {
    super::widgets::health_badge(if ok { "Healthy" } else { "Degraded" })
}

pub async fn vela(State(st): St, v: Viewer) -> UiResult {
    let Json(list) =
        crate::oam::list(State(st.clone()), v.p.clone(), Query(from_json(json!({}))?)).await?;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let content = html! {
        h1 { "KubeVela applications" }
        @if items.is_empty() { p.empty { "No KubeVela applications." } }
        @for a in &items {
            @let ns = s(a, "/metadata/namespace");
            @let name = s(a, "/metadata/name");
            @let suspended = a.pointer("/status/workflow/suspend").and_then(Value::as_bool) == Some(true);
            @let can_resume = st.allowed(&v.p, crate::oam::RESOURCE, "sync", &format!("{ns}/{name}"))?;
            article.card data-vela={ (ns) "/" (name) } {
                h2 { (name) " " span.muted { "in " (ns) } }
                p.status {
                    span.badge { "Phase: " (s(a, "/status/status")) }
                    @if suspended { " " span.badge.health-suspended { span aria-hidden="true" { "‖" } " Workflow suspended" } }
                }
                @if suspended && can_resume {
                    button type="button" hx-post={ "/vela/" (ns) "/" (name) "/resume" } hx-target="#toast" { "Resume" }
                }
                h3 { "Workflow" }
                ol.steps {
                    @for step in a.pointer("/status/workflow/steps").and_then(Value::as_array).into_iter().flatten() {
                        li { strong { (s(step, "/name")) } " (" (s(step, "/type")) "): " (s(step, "/phase"))
                            @if !s(step, "/message").is_empty() { " — " (s(step, "/message")) } }
                    }
                }
                h3 { "Services" }
                table {
                    thead { tr { th scope="col" { "Component" } th scope="col" { "Health" } th scope="col" { "Traits" } } }
                    tbody {
                        @for svc in a.pointer("/status/services").and_then(Value::as_array).into_iter().flatten() {
                            tr {
                                th scope="row" { (s(svc, "/name")) }
                                td { (healthy(svc["healthy"].as_bool() == Some(true))) " " (s(svc, "/message")) }
                                td {
                                    @for t in svc["traits"].as_array().into_iter().flatten() {
                                        span.trait { (s(t, "/type")) ": " (healthy(t["healthy"].as_bool() == Some(true))) } " "
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page(&v, "KubeVela", "/vela", content))
}

pub async fn vela_resume(
    State(st): St,
    v: Viewer,
    Path((ns, name)): Path<(String, String)>,
) -> UiResult {
    let _ = crate::oam::resume(State(st), v.p, Path((ns.clone(), name.clone()))).await?;
    Ok(toast(&format!("Workflow of {ns}/{name} resumed.")))
}

async fn flux(st: &crate::api::AppState, kind: &str) -> Result<Vec<DynamicObject>, UiError> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        ferry_model::flux::IMAGE_GROUP,
        "v1",
        kind,
    ));
    let api: Api<DynamicObject> = if st.namespaced {
        Api::namespaced_with(st.client.clone(), &st.ns, &ar)
    } else {
        Api::all_with(st.client.clone(), &ar)
    };
    match api.list(&ListParams::default()).await {
        Ok(l) => Ok(l.items),
        // Image automation's CRDs are optional (`ferry install --no-image-automation`).
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

fn ready(o: &Value) -> (String, String) {
    o.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .map(|c| (s(c, "/status").to_string(), s(c, "/message").to_string()))
        .unwrap_or_else(|| ("Unknown".into(), String::new()))
}

pub async fn images(State(st): St, v: Viewer) -> UiResult {
    st.enforce(&v.p, "repositories", "get", "*")?;
    let repos = flux(&st, "ImageRepository").await?;
    let policies = flux(&st, "ImagePolicy").await?;
    let automations = flux(&st, "ImageUpdateAutomation").await?;
    let val = |o: &DynamicObject| serde_json::to_value(o).unwrap_or_default();
    let content = html! {
        h1 { "Image automation" }
        h2 { "Image repositories" }
        table.images {
            thead { tr { th scope="col" { "Name" } th scope="col" { "Image" } th scope="col" { "Tags" } th scope="col" { "Last scan" } th scope="col" { "Ready" } } }
            tbody {
                @for o in &repos {
                    @let j = val(o);
                    @let (r, m) = ready(&j);
                    tr { th scope="row" { (o.namespace().unwrap_or_default()) "/" (o.name_any()) } td.wrap { (s(&j, "/spec/image")) }
                        td { (j.pointer("/status/lastScanResult/tagCount").and_then(Value::as_u64).unwrap_or(0)) }
                        td { (s(&j, "/status/lastScanResult/scanTime")) } td { (r) " " (m) } }
                }
            }
        }
        h2 { "Image policies" }
        table.images {
            thead { tr { th scope="col" { "Name" } th scope="col" { "Repository" } th scope="col" { "Latest" } th scope="col" { "Ready" } } }
            tbody {
                @for o in &policies {
                    @let j = val(o);
                    @let (r, m) = ready(&j);
                    tr { th scope="row" { (o.namespace().unwrap_or_default()) "/" (o.name_any()) } td { (s(&j, "/spec/imageRepositoryRef/name")) }
                        td.mono { (s(&j, "/status/latestRef/name")) ":" (s(&j, "/status/latestRef/tag")) } td { (r) " " (m) } }
                }
            }
        }
        h2 { "Image update automations" }
        table.images {
            thead { tr { th scope="col" { "Name" } th scope="col" { "Last pushed commit" } th scope="col" { "Pushed at" } th scope="col" { "Ready" } } }
            tbody {
                @for o in &automations {
                    @let j = val(o);
                    @let (r, m) = ready(&j);
                    tr { th scope="row" { (o.namespace().unwrap_or_default()) "/" (o.name_any()) } td.mono { (s(&j, "/status/lastPushCommit")) }
                        td { (s(&j, "/status/lastPushTime")) } td { (r) " " (m) } }
                }
            }
        }
    };
    Ok(page(&v, "Image automation", "/images", content))
}

pub async fn settings(State(st): St, v: Viewer) -> UiResult {
    let repos = crate::admin::list_repos(State(st.clone()), v.p.clone())
        .await
        .map(|Json(r)| r["items"].as_array().cloned().unwrap_or_default());
    let clusters = crate::admin::list_clusters(State(st.clone()), v.p.clone())
        .await
        .map(|Json(r)| r["items"].as_array().cloned().unwrap_or_default());
    let Json(projects) = crate::admin::list_projects(State(st.clone()), v.p.clone()).await?;
    let projects = projects["items"].as_array().cloned().unwrap_or_default();
    let Json(accounts) = crate::admin::list_accounts(State(st.clone()), v.p.clone()).await?;
    let accounts = accounts["items"].as_array().cloned().unwrap_or_default();
    let can = |res: &str, act: &str| st.allowed(&v.p, res, act, "*").unwrap_or(false);
    let content = html! {
        h1 { "Settings" }
        section aria-labelledby="repos-h" {
            h2 #repos-h { "Repositories" }
            @match &repos {
                Err(e) => p.alert.warn { (e.message) },
                Ok(items) => table {
                    thead { tr { th scope="col" { "Repository" } th scope="col" { "Type" } th scope="col" { "Project" } th scope="col" { "Credentials" } th scope="col" { "Actions" } } }
                    tbody {
                        @for r in items {
                            tr { th scope="row" { (s(r, "/repo")) } td { (s(r, "/type")) } td { (s(r, "/project")) }
                                td { (if r["hasCredentials"].as_bool() == Some(true) { "set (write-only)" } else { "none" }) }
                                td { @if can("repositories", "delete") {
                                    form hx-post="/settings/repositories/delete" hx-target="#toast" hx-confirm="Remove this repository?" {
                                        input type="hidden" name="repo" value=(s(r, "/repo"));
                                        button.danger type="submit" { "Remove" }
                                    }
                                } }
                            }
                        }
                    }
                },
            }
            @if can("repositories", "create") {
                details.dialog { summary { "Connect or edit a repository…" }
                    form hx-post="/settings/repositories" hx-target="#toast" {
                        label { span { "URL" } input name="repo" required; }
                        label { span { "Type" } select name="type" { option value="git" { "git" } option value="helm" { "helm" } } }
                        label { span { "Name (Helm)" } input name="name"; }
                        label { span { "Project" } input name="project"; }
                        label { span { "Username" } input name="username" autocomplete="off"; }
                        label { span { "Password or token" } input name="password" type="password" autocomplete="new-password"; }
                        label { input type="checkbox" name="insecure" value="true"; " Skip TLS verification" }
                        button type="submit" { "Connect" }
                    }
                }
            }
        }
        section aria-labelledby="clusters-h" {
            h2 #clusters-h { "Clusters" }
            @match &clusters {
                Err(e) => p.alert.warn { (e.message) },
                Ok(items) => table {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Server" } th scope="col" { "Namespaces" } th scope="col" { "Actions" } } }
                    tbody {
                        @for c in items {
                            tr { th scope="row" { (s(c, "/name")) } td.wrap { (s(c, "/server")) }
                                td { (c["namespaces"].as_array().map(|n| n.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")).unwrap_or_default()) }
                                td { @if can("clusters", "delete") && s(c, "/server") != ferry_model::IN_CLUSTER_SERVER {
                                    form hx-post="/settings/clusters/delete" hx-target="#toast" hx-confirm="Remove this cluster?" {
                                        input type="hidden" name="server" value=(s(c, "/server"));
                                        button.danger type="submit" { "Remove" }
                                    }
                                } }
                            }
                        }
                    }
                },
            }
            @if can("clusters", "create") {
                details.dialog { summary { "Add or edit a cluster…" }
                    form hx-post="/settings/clusters" hx-target="#toast" {
                        label { span { "Name" } input name="name" required; }
                        label { span { "Server URL" } input name="server" required; }
                        label { span { "Bearer token" } input name="token" type="password" autocomplete="new-password"; }
                        label { span { "CA certificate (PEM, base64)" } input name="caData"; }
                        label { input type="checkbox" name="insecure" value="true"; " Skip TLS verification" }
                        button type="submit" { "Add" }
                    }
                }
            }
        }
        section aria-labelledby="projects-h" {
            h2 #projects-h { "Projects" }
            @for p in &projects {
                @let name = s(p, "/metadata/name");
                details.project {
                    summary { (name) " — " (s(p, "/spec/description")) }
                    @if can("projects", "update") {
                        (project_form(Some(p)))
                    } @else {
                        pre.manifest { (super::widgets::yaml(&p["spec"])) }
                    }
                    @for role in p.pointer("/spec/roles").and_then(Value::as_array).into_iter().flatten() {
                        @let rname = s(role, "/name");
                        p { "Role " strong { (rname) } ": " (role["jwtTokens"].as_array().map(Vec::len).unwrap_or(0)) " tokens" }
                        @if can("projects", "update") {
                            button type="button" hx-post={ "/settings/projects/" (name) "/token?role=" (rname) } hx-target="#toast" { "Create token for " (rname) }
                        }
                    }
                    @if name != "default" && st.allowed(&v.p, "projects", "delete", name).unwrap_or(false) {
                        button.danger type="button" hx-post={ "/settings/projects/" (name) "/delete" } hx-target="#toast"
                            hx-confirm={ "Delete project " (name) "?" } { "Delete project" }
                    }
                }
            }
            @if can("projects", "create") {
                details.dialog { summary { "New project…" } (project_form(None)) }
            }
        }
        section aria-labelledby="accounts-h" {
            h2 #accounts-h { "Accounts" }
            table {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Enabled" } th scope="col" { "Capabilities" } } }
                tbody {
                    @for a in &accounts {
                        tr { th scope="row" { (s(a, "/name")) } td { (if a["enabled"].as_bool() == Some(true) { "yes" } else { "no" }) }
                            td { (a["capabilities"].as_array().map(|c| c.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")).unwrap_or_default()) } }
                    }
                }
            }
        }
    };
    Ok(page(&v, "Settings", "/settings", content))
}

fn lines(v: Option<&Value>, f: impl Fn(&Value) -> String) -> String {
    v.and_then(Value::as_array)
        .map(|a| a.iter().map(f).collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}

fn project_form(p: Option<&Value>) -> Markup {
    let name = p.map(|p| s(p, "/metadata/name")).unwrap_or_default();
    let description = p.map(|p| s(p, "/spec/description")).unwrap_or_default();
    let repos = lines(p.and_then(|p| p.pointer("/spec/sourceRepos")), |v| {
        v.as_str().unwrap_or_default().to_string()
    });
    let dests = lines(p.and_then(|p| p.pointer("/spec/destinations")), |d| {
        format!(
            "{} {}",
            d["server"].as_str().or(d["name"].as_str()).unwrap_or("*"),
            d["namespace"].as_str().unwrap_or("*")
        )
    });
    html! {
        form hx-post="/settings/projects" hx-target="#toast" {
            @if p.is_some() { input type="hidden" name="existing" value="true"; }
            label { span { "Name" } input name="name" value=(name) required readonly[p.is_some()]; }
            label { span { "Description" } input name="description" value=(description); }
            label { span { "Source repositories (one per line)" } textarea name="sourceRepos" rows="3" { (repos) } }
            label { span { "Destinations (server-or-name namespace, one per line)" } textarea name="destinations" rows="3" { (dests) } }
            button type="submit" { (if p.is_some() { "Save" } else { "Create" }) }
        }
    }
}

pub async fn add_repo(State(st): St, v: Viewer, body: String) -> UiResult {
    let f = form(&body);
    let mut b = json!({ "repo": field(&f, "repo"), "type": field(&f, "type"), "insecure": field(&f, "insecure") == "true" });
    for k in ["name", "project", "username", "password"] {
        let val = field(&f, k);
        if !val.is_empty() {
            b[k] = json!(val);
        }
    }
    // Submitting an existing repository or cluster again edits it (its credentials included).
    let _ = crate::admin::create_repo(
        State(st),
        v.p,
        Query(from_json(json!({ "upsert": "true" }))?),
        Json(from_json(b)?),
    )
    .await?;
    Ok(toast(&format!(
        "Repository {} connected.",
        field(&f, "repo")
    )))
}

pub async fn delete_repo(State(st): St, v: Viewer, body: String) -> UiResult {
    let repo = field(&form(&body), "repo");
    let _ = crate::admin::delete_repo(State(st), v.p, Path(repo.clone())).await?;
    Ok(toast(&format!("Repository {repo} removed.")))
}

pub async fn add_cluster(State(st): St, v: Viewer, body: String) -> UiResult {
    let f = form(&body);
    let mut tls = json!({ "insecure": field(&f, "insecure") == "true" });
    if !field(&f, "caData").is_empty() {
        tls["caData"] = json!(field(&f, "caData"));
    }
    let mut config = json!({ "tlsClientConfig": tls });
    if !field(&f, "token").is_empty() {
        config["bearerToken"] = json!(field(&f, "token"));
    }
    let b = json!({ "name": field(&f, "name"), "server": field(&f, "server"), "config": config });
    // Submitting an existing repository or cluster again edits it (its credentials included).
    let _ = crate::admin::create_cluster(
        State(st),
        v.p,
        Query(from_json(json!({ "upsert": "true" }))?),
        Json(from_json(b)?),
    )
    .await?;
    Ok(toast(&format!("Cluster {} added.", field(&f, "name"))))
}

pub async fn delete_cluster(State(st): St, v: Viewer, body: String) -> UiResult {
    let server = field(&form(&body), "server");
    let _ = crate::admin::delete_cluster(State(st), v.p, Path(server.clone())).await?;
    Ok(toast(&format!("Cluster {server} removed.")))
}

pub async fn save_project(State(st): St, v: Viewer, body: String) -> UiResult {
    let f = form(&body);
    let name = field(&f, "name");
    let repo_text = field(&f, "sourceRepos");
    let repos: Vec<&str> = repo_text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let mut destinations = Vec::new();
    for line in field(&f, "destinations")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        let (target, ns) = line.split_once(char::is_whitespace).unwrap_or((line, "*"));
        let key = if target.contains("://") || target == "*" {
            "server"
        } else {
            "name"
        };
        destinations.push(json!({ key: target, "namespace": ns.trim() }));
    }
    let existing = field(&f, "existing") == "true";
    if existing {
        let Json(mut current) =
            crate::admin::get_project(State(st.clone()), v.p.clone(), Path(name.clone())).await?;
        current["spec"]["description"] = json!(field(&f, "description"));
        current["spec"]["sourceRepos"] = json!(repos);
        current["spec"]["destinations"] = json!(destinations);
        let _ =
            crate::admin::update_project(State(st), v.p, Path(name.clone()), Json(current)).await?;
        Ok(toast(&format!("Project {name} saved.")))
    } else {
        let p = json!({ "metadata": { "name": name }, "spec": {
            "description": field(&f, "description"), "sourceRepos": repos, "destinations": destinations } });
        let _ = crate::admin::create_project(State(st), v.p, Query(from_json(json!({}))?), Json(p))
            .await?;
        Ok(toast(&format!("Project {name} created.")))
    }
}

pub async fn delete_project(State(st): St, v: Viewer, Path(name): Path<String>) -> UiResult {
    let _ = crate::admin::delete_project(State(st), v.p, Path(name.clone())).await?;
    Ok(toast(&format!("Project {name} deleted.")))
}

#[derive(serde::Deserialize)]
pub struct TokenQuery {
    role: String,
}

/// A project token is shown once, here, and never again (it is not stored).
pub async fn create_token(
    State(st): St,
    v: Viewer,
    Path(name): Path<String>,
    Query(q): Query<TokenQuery>,
) -> UiResult {
    let Json(t) =
        crate::admin::create_token(State(st), v.p, Path((name.clone(), q.role.clone())), None)
            .await?;
    Ok(html! {
        div.alert.ok role="status" {
            p { "Token for role " (q.role) " of project " (name) " (copy it now; it is not shown again):" }
            pre.token { (s(&t, "/token")) }
        }
    })
}

//! The OpenAPI 3.0 document served at `/api/openapi.json`, built from one
//! table of operations so it cannot drift far from the router.

use serde_json::{Value, json};

/// (method, path, summary, query parameters, request body schema, public)
type Op = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    Option<&'static str>,
    bool,
);

const OPS: &[Op] = &[
    (
        "get",
        "/api/version",
        "Ferry's version, commit and the tools it found (Argo CD's field names)",
        &[],
        None,
        true,
    ),
    (
        "get",
        "/api/v1/applicationsets",
        "List ApplicationSets",
        &[],
        None,
        false,
    ),
    (
        "post",
        "/api/v1/applicationsets",
        "Create (or with upsert, update) an ApplicationSet",
        &[("upsert", "boolean")],
        Some("ApplicationSet"),
        false,
    ),
    (
        "get",
        "/api/v1/applicationsets/{name}",
        "Get an ApplicationSet",
        &[],
        None,
        false,
    ),
    (
        "delete",
        "/api/v1/applicationsets/{name}",
        "Delete an ApplicationSet and its Applications",
        &[],
        None,
        false,
    ),
    (
        "get",
        "/api/v1/settings",
        "What a login screen needs: the server's URL and its single sign-on provider (no secrets)",
        &[],
        None,
        true,
    ),
    (
        "post",
        "/api/v1/session",
        "Log in: username and password (or an SSO provider's ID token) for a session token",
        &[],
        Some("Login"),
        true,
    ),
    (
        "get",
        "/api/v1/session/userinfo",
        "Who the token belongs to",
        &[],
        None,
        false,
    ),
    (
        "get",
        "/api/v1/account",
        "List local accounts",
        &[],
        None,
        false,
    ),
    (
        "put",
        "/api/v1/account/password",
        "Change a password",
        &[],
        Some("PasswordChange"),
        false,
    ),
    (
        "get",
        "/api/v1/applications",
        "List applications",
        &[
            ("project", "string"),
            ("repo", "string"),
            ("selector", "string"),
            ("cluster", "string"),
        ],
        None,
        false,
    ),
    (
        "post",
        "/api/v1/applications",
        "Create (or with upsert, update) an application",
        &[("upsert", "boolean")],
        Some("Application"),
        false,
    ),
    (
        "get",
        "/api/v1/applications/{name}",
        "Get an application; optionally refresh it",
        &[("refresh", "string")],
        None,
        false,
    ),
    (
        "put",
        "/api/v1/applications/{name}",
        "Update an application",
        &[],
        Some("Application"),
        false,
    ),
    (
        "delete",
        "/api/v1/applications/{name}",
        "Delete an application",
        &[("cascade", "boolean"), ("propagationPolicy", "string")],
        None,
        false,
    ),
    (
        "post",
        "/api/v1/applications/{name}/sync",
        "Start a sync",
        &[],
        Some("SyncRequest"),
        false,
    ),
    (
        "post",
        "/api/v1/applications/{name}/rollback",
        "Roll back to a history id",
        &[],
        Some("RollbackRequest"),
        false,
    ),
    (
        "get",
        "/api/v1/applications/{name}/syncwindows",
        "The project's sync windows that apply to the app, and whether it may sync now",
        &[],
        None,
        false,
    ),
    (
        "get",
        "/api/v1/applications/{name}/managed-resources",
        "Managed objects with target and live state (the diff)",
        &[],
        None,
        false,
    ),
    (
        "get",
        "/api/v1/applications/{name}/manifests",
        "Manifests from Git or live",
        &[("revision", "string"), ("source", "string")],
        None,
        false,
    ),
    (
        "get",
        "/api/v1/applications/{name}/resource-tree",
        "Managed objects and their children",
        &[],
        None,
        false,
    ),
    (
        "get",
        "/api/v1/applications/{name}/events",
        "Events of the application or of one of its resources",
        &[
            ("resourceNamespace", "string"),
            ("resourceName", "string"),
            ("resourceUID", "string"),
        ],
        None,
        false,
    ),
    (
        "get",
        "/api/v1/stream/applications",
        "Application changes as server-sent events",
        &[("name", "string")],
        None,
        false,
    ),
    (
        "get",
        "/api/v1/oam/applications",
        "List KubeVela (OAM) applications",
        &[("namespace", "string")],
        None,
        false,
    ),
    (
        "get",
        "/api/v1/oam/applications/{namespace}/{name}",
        "Get a KubeVela (OAM) application with its workflow and services",
        &[],
        None,
        false,
    ),
    (
        "post",
        "/api/v1/oam/applications/{namespace}/{name}/resume",
        "Resume a KubeVela workflow waiting in a suspend step",
        &[],
        None,
        false,
    ),
    ("get", "/api/v1/projects", "List projects", &[], None, false),
    (
        "post",
        "/api/v1/projects",
        "Create a project",
        &[("upsert", "boolean")],
        Some("AppProject"),
        false,
    ),
    (
        "get",
        "/api/v1/projects/{name}",
        "Get a project",
        &[],
        None,
        false,
    ),
    (
        "put",
        "/api/v1/projects/{name}",
        "Update a project",
        &[],
        Some("AppProject"),
        false,
    ),
    (
        "delete",
        "/api/v1/projects/{name}",
        "Delete a project",
        &[],
        None,
        false,
    ),
    (
        "post",
        "/api/v1/projects/{project}/roles/{role}/token",
        "Issue a project-role token",
        &[],
        Some("TokenRequest"),
        false,
    ),
    (
        "delete",
        "/api/v1/projects/{project}/roles/{role}/token/{iat}",
        "Revoke a project-role token",
        &[],
        None,
        false,
    ),
    (
        "get",
        "/api/v1/repositories",
        "List repositories (no credentials)",
        &[],
        None,
        false,
    ),
    (
        "post",
        "/api/v1/repositories",
        "Add a repository",
        &[("upsert", "boolean")],
        Some("Repository"),
        false,
    ),
    (
        "delete",
        "/api/v1/repositories/{repo}",
        "Remove a repository",
        &[],
        None,
        false,
    ),
    (
        "get",
        "/api/v1/clusters",
        "List clusters (no credentials)",
        &[],
        None,
        false,
    ),
    (
        "post",
        "/api/v1/clusters",
        "Add a cluster",
        &[("upsert", "boolean")],
        Some("Cluster"),
        false,
    ),
    (
        "delete",
        "/api/v1/clusters/{server}",
        "Remove a cluster",
        &[],
        None,
        false,
    ),
    (
        "post",
        "/api/webhook",
        "Git provider push events (signed)",
        &[],
        Some("WebhookPayload"),
        true,
    ),
];

fn schemas() -> Value {
    // OpenAPI 3.0 wants `required` absent rather than empty.
    let obj = |props: Value, required: &[&str]| {
        let mut o = json!({ "type": "object", "properties": props });
        if !required.is_empty() {
            o["required"] = json!(required);
        }
        o
    };
    json!({
        "Error": obj(json!({ "error": { "type": "string" }, "code": { "type": "integer" } }), &["error"]),
        "ApplicationSet": obj(json!({ "metadata": { "type": "object" }, "spec": { "type": "object" } }), &["metadata", "spec"]),
        "Login": obj(json!({ "username": { "type": "string" }, "password": { "type": "string" }, "idToken": { "type": "string" } }), &[]),
        "PasswordChange": obj(json!({ "name": { "type": "string" }, "currentPassword": { "type": "string" }, "newPassword": { "type": "string" } }), &["currentPassword", "newPassword"]),
        "Application": {
            "type": "object",
            "description": "argoproj.io/v1alpha1 Application",
            "properties": {
                "apiVersion": { "type": "string" }, "kind": { "type": "string" },
                "metadata": obj(json!({ "name": { "type": "string" }, "labels": { "type": "object", "additionalProperties": { "type": "string" } } }), &["name"]),
                "spec": obj(json!({
                    "project": { "type": "string" },
                    "source": obj(json!({ "repoURL": { "type": "string" }, "path": { "type": "string" }, "targetRevision": { "type": "string" } }), &["repoURL"]),
                    "destination": obj(json!({ "server": { "type": "string" }, "name": { "type": "string" }, "namespace": { "type": "string" } }), &[]),
                    "syncPolicy": { "type": "object" },
                }), &["source", "destination"]),
            },
            "required": ["metadata", "spec"],
        },
        "SyncRequest": obj(json!({
            "revision": { "type": "string" }, "prune": { "type": "boolean" }, "dryRun": { "type": "boolean" },
            "syncOptions": { "type": "array", "items": { "type": "string" } },
            "resources": { "type": "array", "items": obj(json!({ "group": { "type": "string" }, "kind": { "type": "string" }, "namespace": { "type": "string" }, "name": { "type": "string" } }), &["kind", "name"]) },
        }), &[]),
        "RollbackRequest": obj(json!({ "id": { "type": "integer" }, "prune": { "type": "boolean" }, "dryRun": { "type": "boolean" } }), &["id"]),
        "AppProject": {
            "type": "object",
            "properties": {
                "metadata": obj(json!({ "name": { "type": "string" } }), &["name"]),
                "spec": { "type": "object" },
            },
            "required": ["metadata"],
        },
        "TokenRequest": obj(json!({ "expiresIn": { "type": "integer" } }), &[]),
        "Repository": obj(json!({
            "repo": { "type": "string" }, "type": { "type": "string" }, "name": { "type": "string" }, "project": { "type": "string" },
            "username": { "type": "string" }, "password": { "type": "string", "writeOnly": true }, "sshPrivateKey": { "type": "string", "writeOnly": true }, "insecure": { "type": "boolean" },
        }), &["repo"]),
        "Cluster": obj(json!({
            "name": { "type": "string" }, "server": { "type": "string" }, "namespaces": { "type": "array", "items": { "type": "string" } }, "project": { "type": "string" },
            "config": { "type": "object", "writeOnly": true },
        }), &["name", "server"]),
        "WebhookPayload": { "type": "object" },
    })
}

pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for (method, path, summary, query, body, public) in OPS {
        let mut params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|p| {
                let schema = if p == "iat" {
                    json!({ "type": "integer" })
                } else {
                    json!({ "type": "string" })
                };
                json!({ "name": p, "in": "path", "required": true, "schema": schema })
            })
            .collect();
        params.extend(query.iter().map(|(n, t)| json!({ "name": n, "in": "query", "required": false, "schema": { "type": t } })));
        let err = json!({ "description": "error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
        let mut responses = json!({
            "200": { "description": "OK", "content": { "application/json": { "schema": { "type": "object" } } } },
            "400": err, "404": err, "409": err,
        });
        if !public {
            responses["401"] = err.clone();
            responses["403"] = err.clone();
        }
        if path.ends_with("/stream/applications") {
            responses["200"] = json!({ "description": "server-sent events", "content": { "text/event-stream": { "schema": { "type": "string" } } } });
        }
        if *path == "/api/webhook" {
            responses["401"] = err.clone();
            responses["413"] = err.clone();
            responses["429"] = err.clone();
        }
        let mut op = json!({
            "summary": summary,
            "operationId": format!("{method}{}", path.replace(['/', '{', '}', '-'], "_")),
            "parameters": params,
            "responses": responses,
        });
        if let Some(b) = body {
            op["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{b}") } } } });
        }
        if *public {
            op["security"] = json!([]);
        }
        paths
            .entry(path.to_string())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .map(|m| m.insert(method.to_string(), op));
    }
    json!({
        "openapi": "3.0.3",
        "info": { "title": "Ferry API", "version": env!("CARGO_PKG_VERSION"), "description": "See docs/api.md" },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" } },
        },
        "security": [{ "bearer": [] }],
    })
}

/// The operations, for tests that walk every endpoint.
pub fn operations() -> Vec<(&'static str, &'static str, bool)> {
    OPS.iter()
        .map(|(m, p, _, _, _, public)| (*m, *p, *public))
        .collect()
}

//! The resource tree: an app's managed objects and what they own
//! (ReplicaSets, Pods, Jobs, Endpoints), linked through owner references.

use crate::error::ApiResult;
use ferry_model::Application;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::discovery::ApiCapabilities;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};

/// Kinds whose objects are owned by managed objects and worth showing.
const CHILD_KINDS: &[(&str, &str, &str)] = &[
    ("apps", "v1", "ReplicaSet"),
    ("", "v1", "Pod"),
    ("batch", "v1", "Job"),
];

fn node(o: &DynamicObject, ar: &ApiResource, parents: Vec<Value>, health: Option<String>) -> Value {
    json!({
        "group": ar.group, "version": ar.version, "kind": ar.kind,
        "namespace": o.namespace().unwrap_or_default(), "name": o.name_any(),
        "uid": o.uid(), "parentRefs": parents, "health": health,
        "createdAt": o.metadata.creation_timestamp,
    })
}

async fn resolve(
    client: &Client,
    group: &str,
    version: &str,
    kind: &str,
) -> Option<(ApiResource, ApiCapabilities)> {
    let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
    kube::discovery::pinned_kind(client, &gvk).await.ok()
}

fn health_of(o: &DynamicObject) -> Option<String> {
    let v = serde_json::to_value(o).ok()?;
    ferry_engine::health::assess(&v).map(|h| h.status)
}

pub async fn build(client: &Client, app: &Application) -> ApiResult<Vec<Value>> {
    let resources = app
        .status
        .as_ref()
        .map(|s| s.resources.clone())
        .unwrap_or_default();
    let mut nodes = Vec::new();
    let mut uids: HashMap<String, (String, String, String, String)> = HashMap::new();
    let mut namespaces = BTreeSet::new();
    // One discovery lookup per kind and one LIST per kind and namespace, not a GET per
    // object: an app of 500 objects costs a few requests, not 500.
    type Found = Option<(ApiResource, ApiCapabilities)>;
    let mut kinds: HashMap<(String, String, String), Found> = HashMap::new();
    let mut listed: HashMap<(String, String, String, String), HashMap<String, DynamicObject>> =
        HashMap::new();
    let mut endpoints: HashMap<String, HashMap<String, DynamicObject>> = HashMap::new();
    let endpoints_ar = ApiResource::erase::<k8s_openapi::api::core::v1::Endpoints>(&());
    for r in &resources {
        let key = (r.group.clone(), r.version.clone(), r.kind.clone());
        if !kinds.contains_key(&key) {
            let found = resolve(client, &r.group, &r.version, &r.kind).await;
            kinds.insert(key.clone(), found);
        }
        let Some((ar, caps)) = kinds.get(&key).cloned().flatten() else {
            continue;
        };
        let namespaced = caps.scope == kube::discovery::Scope::Namespaced;
        let list_key = (
            r.group.clone(),
            r.version.clone(),
            r.kind.clone(),
            if namespaced {
                r.namespace.clone()
            } else {
                String::new()
            },
        );
        if !listed.contains_key(&list_key) {
            let api: Api<DynamicObject> = if namespaced {
                Api::namespaced_with(client.clone(), &r.namespace, &ar)
            } else {
                Api::all_with(client.clone(), &ar)
            };
            let by_name = match api.list(&ListParams::default()).await {
                Ok(l) => l.items.into_iter().map(|o| (o.name_any(), o)).collect(),
                Err(e) => {
                    tracing::warn!(namespace = %r.namespace, kind = %ar.kind, error = %e, "resource tree: cannot list");
                    HashMap::new()
                }
            };
            listed.insert(list_key.clone(), by_name);
        }
        let Some(o) = listed.get(&list_key).and_then(|m| m.get(&r.name)) else {
            continue;
        };
        let mut n = node(o, &ar, vec![], r.health.as_ref().map(|h| h.status.clone()));
        n["status"] = json!(r.status);
        nodes.push(n);
        if let Some(uid) = o.uid() {
            uids.insert(
                uid,
                (
                    ar.group.clone(),
                    ar.kind.clone(),
                    o.namespace().unwrap_or_default(),
                    o.name_any(),
                ),
            );
        }
        if !r.namespace.is_empty() {
            namespaces.insert(r.namespace.clone());
        }
        if r.kind == "Service" && r.group.is_empty() {
            if !endpoints.contains_key(&r.namespace) {
                let eps: Api<DynamicObject> =
                    Api::namespaced_with(client.clone(), &r.namespace, &endpoints_ar);
                let by_name = eps
                    .list(&ListParams::default())
                    .await
                    .map(|l| l.items.into_iter().map(|o| (o.name_any(), o)).collect())
                    .unwrap_or_default();
                endpoints.insert(r.namespace.clone(), by_name);
            }
            if let Some(e) = endpoints.get(&r.namespace).and_then(|m| m.get(&r.name)) {
                let parent = json!({ "group": "", "kind": "Service", "namespace": r.namespace, "name": r.name, "uid": o.uid() });
                nodes.push(node(e, &endpoints_ar, vec![parent], None));
            }
        }
    }
    // Owned objects, found level by level (Deployment → ReplicaSet → Pod).
    let mut children: Vec<(DynamicObject, ApiResource)> = Vec::new();
    let mut child_kinds = Vec::new();
    for (g, v, k) in CHILD_KINDS {
        if let Some((ar, _)) = resolve(client, g, v, k).await {
            child_kinds.push(ar);
        }
    }
    for ns in &namespaces {
        for ar in &child_kinds {
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, ar);
            match api.list(&ListParams::default()).await {
                Ok(list) => children.extend(list.items.into_iter().map(|o| (o, ar.clone()))),
                // The tree is still worth showing; the operator needs to know why it is short.
                Err(e) => {
                    tracing::warn!(namespace = %ns, kind = %ar.kind, error = %e, "resource tree: cannot list children")
                }
            }
        }
    }
    loop {
        let mut added = false;
        children.retain(|(o, ar)| {
            let parents: Vec<Value> = o
                .owner_references()
                .iter()
                .filter_map(|r| uids.get(&r.uid).map(|(g, k, ns, n)| json!({ "group": g, "kind": k, "namespace": ns, "name": n, "uid": r.uid })))
                .collect();
            if parents.is_empty() {
                return true;
            }
            nodes.push(node(o, ar, parents, health_of(o)));
            if let Some(uid) = o.uid() {
                uids.insert(uid, (ar.group.clone(), ar.kind.clone(), o.namespace().unwrap_or_default(), o.name_any()));
            }
            added = true;
            false
        });
        if !added {
            break;
        }
    }
    Ok(nodes)
}

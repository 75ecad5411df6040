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
    // One discovery lookup per kind, not per object.
    type Found = Option<(ApiResource, ApiCapabilities)>;
    let mut kinds: HashMap<(String, String, String), Found> = HashMap::new();
    for r in &resources {
        let key = (r.group.clone(), r.version.clone(), r.kind.clone());
        if !kinds.contains_key(&key) {
            let found = resolve(client, &r.group, &r.version, &r.kind).await;
            kinds.insert(key.clone(), found);
        }
        let Some((ar, caps)) = kinds.get(&key).cloned().flatten() else {
            continue;
        };
        let api: Api<DynamicObject> = if caps.scope == kube::discovery::Scope::Namespaced {
            Api::namespaced_with(client.clone(), &r.namespace, &ar)
        } else {
            Api::all_with(client.clone(), &ar)
        };
        let Ok(Some(o)) = api.get_opt(&r.name).await else {
            continue;
        };
        let mut n = node(&o, &ar, vec![], r.health.as_ref().map(|h| h.status.clone()));
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
            let eps: Api<DynamicObject> = Api::namespaced_with(
                client.clone(),
                &r.namespace,
                &ApiResource::erase::<k8s_openapi::api::core::v1::Endpoints>(&()),
            );
            if let Ok(Some(e)) = eps.get_opt(&r.name).await {
                let parent = json!({ "group": "", "kind": "Service", "namespace": r.namespace, "name": r.name, "uid": o.uid() });
                nodes.push(node(
                    &e,
                    &ApiResource::erase::<k8s_openapi::api::core::v1::Endpoints>(&()),
                    vec![parent],
                    None,
                ));
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

//! Reads what `ref-objects` components select from the hub, as KubeVela's parser does on every
//! reconcile, so a changed source object is copied again on the next pass.

use std::collections::BTreeMap;

use ferry_oam::refs::{self, RefSelector, RefType};
use ferry_oam::{Application, Definitions};
use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::{self, ApiResource, Scope};
use kube::{Client, ResourceExt};
use serde_json::Value;

/// Fills `referred` on every ref-objects component of `app` with the cleaned objects its
/// selectors read from the hub (sorted by kind and name, later duplicates dropped). A missing
/// named object is an error that names it: nothing of the app is applied then.
pub(crate) async fn resolve(
    client: &Client,
    app: &mut Application,
    defs: &Definitions,
) -> Result<(), String> {
    let app_ns = app
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    for c in app.spec.components.iter_mut() {
        let Some(def) = defs.component(&c.type_name) else {
            continue;
        };
        if !refs::is_ref_objects_definition(def) {
            continue;
        }
        let selectors = refs::selectors(c, &app_ns).map_err(|e| e.to_string())?;
        let mut found: BTreeMap<String, Value> = BTreeMap::new();
        for s in &selectors {
            for o in read(client, s).await? {
                let key = format!(
                    "{}|{}|{}/{}",
                    o["apiVersion"].as_str().unwrap_or_default(),
                    o["kind"].as_str().unwrap_or_default(),
                    o["metadata"]["namespace"].as_str().unwrap_or_default(),
                    o["metadata"]["name"].as_str().unwrap_or_default()
                );
                found.entry(key).or_insert_with(|| refs::clean(&o));
            }
        }
        c.referred = Some(found.into_values().collect());
    }
    Ok(())
}

/// The API resource a selector names: `resource` matched against each kind's plural, singular
/// or lower-cased kind in `group` (core when empty), as a RESTMapper does; or `apiVersion` and
/// `kind` directly.
async fn api_resource(client: &Client, what: &RefType) -> Result<(ApiResource, bool), String> {
    match what {
        RefType::Resource { group, resource } => {
            let g = discovery::group(client, group)
                .await
                .map_err(|e| format!("API group `{group}`: {e}"))?;
            let want = resource.to_lowercase();
            g.recommended_resources()
                .into_iter()
                .find(|(ar, _)| {
                    ar.plural == want
                        || ar.kind.to_lowercase() == want
                        || format!("{}s", ar.kind.to_lowercase()) == want
                })
                .map(|(ar, caps)| (ar, caps.scope == Scope::Namespaced))
                .ok_or_else(|| {
                    let in_group = if group.is_empty() {
                        "the core group".to_string()
                    } else {
                        format!("group `{group}`")
                    };
                    format!("no kind found for resource `{resource}` in {in_group}")
                })
        }
        RefType::Kind { api_version, kind } => {
            let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
            let gvk = kube::core::GroupVersionKind::gvk(group, version, kind);
            let (ar, caps) = discovery::pinned_kind(client, &gvk)
                .await
                .map_err(|e| format!("{api_version} {kind}: {e}"))?;
            Ok((ar, caps.scope == Scope::Namespaced))
        }
    }
}

async fn read(client: &Client, s: &RefSelector) -> Result<Vec<Value>, String> {
    let (ar, namespaced) = api_resource(client, &s.what).await?;
    let api: Api<DynamicObject> = if namespaced {
        Api::namespaced_with(client.clone(), &s.namespace, &ar)
    } else {
        Api::all_with(client.clone(), &ar)
    };
    let objs = match (&s.name, &s.label_selector) {
        (Some(name), _) => vec![api.get(name).await.map_err(|e| {
            format!(
                "failed to load ref object {} {}/{name}: {}",
                ar.kind,
                s.namespace,
                ferry_engine::sync::api_message(&e)
            )
        })?],
        (None, labels) => {
            let selector = labels
                .iter()
                .flatten()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            api.list(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| {
                    format!(
                        "failed to list ref objects {} in {} ({selector}): {}",
                        ar.kind,
                        s.namespace,
                        ferry_engine::sync::api_message(&e)
                    )
                })?
                .items
        }
    };
    Ok(objs
        .into_iter()
        .map(|o| {
            let name = o.name_any();
            let mut v = serde_json::to_value(&o).unwrap_or(Value::Null);
            v["apiVersion"] = Value::String(ar.api_version.clone());
            v["kind"] = Value::String(ar.kind.clone());
            if v["metadata"]["name"].is_null() {
                v["metadata"]["name"] = Value::String(name);
            }
            v
        })
        .collect())
}

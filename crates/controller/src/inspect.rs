//! Read-only views of one app for the API server: rendered manifests, live
//! objects and what differs, from the same compare the controller runs.
//! Secret values are masked before anything leaves this module.

use crate::Controller;
use ferry_engine::{diff, sync};
use ferry_model::{Application, Operation, SyncOperation};
use serde_json::Value;
use std::collections::BTreeMap;

/// One object of an app.
#[derive(Clone, Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectView {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// Synced / OutOfSync, as in the app's status.
    pub status: Option<String>,
    pub health: Option<String>,
    pub requires_pruning: bool,
    pub hook: bool,
    /// What Git renders (as rendered, before the API server defaults it).
    pub desired: Option<Value>,
    /// What applying would leave, normalised for comparison (None for
    /// objects to prune). Equal to `live` when in sync.
    pub target: Option<Value>,
    /// The live object, normalised (None when missing).
    pub live: Option<Value>,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Inspection {
    pub revisions: Vec<String>,
    pub objects: Vec<ObjectView>,
}

impl Controller {
    /// Renders and compares `app` (at `revision` when given) without
    /// changing anything. With `diffs`, out-of-sync objects get a dry-run
    /// prediction as `target`; otherwise `target` is left empty.
    pub async fn inspect(
        &self,
        app: &Application,
        revision: Option<&str>,
        diffs: bool,
    ) -> Result<Inspection, String> {
        let op = revision.map(|r| Operation {
            sync: Some(SyncOperation {
                revision: Some(r.to_string()),
                ..SyncOperation::default()
            }),
            ..Operation::default()
        });
        let c = self
            .compare(app, op.as_ref(), false, false)
            .await
            .map_err(|s| format!("{}: {}", s.type_, s.message))?;
        let store_values = self
            .secret_values
            .lock()
            .ok()
            .and_then(|m| m.get(&self.app_key(app)).cloned())
            .unwrap_or_default();
        let mask_store = |view: &mut ObjectView| {
            if store_values.is_empty() {
                return;
            }
            for o in [&mut view.desired, &mut view.target, &mut view.live]
                .into_iter()
                .flatten()
            {
                crate::secrets::mask_values(o, &store_values);
            }
        };
        let status_of = |g: &str, k: &str, ns: &str, n: &str| {
            c.statuses
                .iter()
                .find(|s| s.group == g && s.kind == k && s.namespace == ns && s.name == n)
        };
        let mut objects = Vec::new();
        for r in &c.resources {
            let k = &r.key;
            let st = status_of(&k.group, &k.kind, &k.namespace, &k.name);
            let live = match &r.resolved {
                Some(res) => c.conn.live(res, &k.namespace, &k.name).await?,
                None => None,
            };
            let mut live_n = live.clone();
            if let Some(l) = live_n.as_mut() {
                diff::normalize(l);
            }
            let rules = diff::rules_for(c.ignore_rules(), &k.group, &k.kind, &k.namespace, &k.name);
            let owners = match &r.resolved {
                Some(res) if live.is_some() => {
                    crate::reconcile::live_managed_fields(&c.conn, res, k, &rules).await?
                }
                _ => None,
            };
            let mut target = None;
            if diffs {
                target = if !r.out_of_sync {
                    live_n.clone()
                } else if let Some(res) = &r.resolved {
                    match sync::dry_run_apply(&c.conn, res, k, &r.desired).await {
                        Ok(mut p) => {
                            diff::normalize(&mut p);
                            diff::apply_ignores(&mut p, &rules, owners.as_ref());
                            Some(p)
                        }
                        // Cannot be predicted because its namespace does not exist yet
                        // (the sync creates it): show what Git has.
                        Err(kube::Error::Api(e)) if e.code == 404 => {
                            let mut d = r.desired.clone();
                            diff::normalize(&mut d);
                            Some(d)
                        }
                        // Anything else (forbidden, invalid) would make Git's text pass for
                        // a prediction, the API server's defaults for differences: say so.
                        Err(e) => {
                            return Err(format!(
                                "{} {}/{}: cannot predict the applied object: {}",
                                k.kind,
                                k.namespace,
                                k.name,
                                sync::api_message(&e)
                            ));
                        }
                    }
                } else {
                    Some(r.desired.clone())
                };
            }
            if let Some(l) = live_n.as_mut() {
                diff::apply_ignores(l, &rules, owners.as_ref());
            }
            let mut view = ObjectView {
                group: k.group.clone(),
                version: st.map(|s| s.version.clone()).unwrap_or_default(),
                kind: k.kind.clone(),
                namespace: k.namespace.clone(),
                name: k.name.clone(),
                status: st.and_then(|s| s.status.clone()),
                health: st.and_then(|s| s.health.as_ref().map(|h| h.status.clone())),
                requires_pruning: false,
                hook: r.hook != ferry_engine::plan::HookKind::None,
                desired: Some(r.desired.clone()),
                target,
                live: live_n,
            };
            mask_secret(&mut view);
            mask_store(&mut view);
            objects.push(view);
        }
        for p in &c.prune {
            let k = &p.key;
            let st = status_of(&k.group, &k.kind, &k.namespace, &k.name);
            let mut live = c.conn.live(&p.resolved, &k.namespace, &k.name).await?;
            if let Some(l) = live.as_mut() {
                diff::normalize(l);
            }
            let mut view = ObjectView {
                group: k.group.clone(),
                version: p.version.clone(),
                kind: k.kind.clone(),
                namespace: k.namespace.clone(),
                name: k.name.clone(),
                status: Some("OutOfSync".into()),
                health: st.and_then(|s| s.health.as_ref().map(|h| h.status.clone())),
                requires_pruning: true,
                hook: false,
                desired: None,
                target: None,
                live,
            };
            mask_secret(&mut view);
            mask_store(&mut view);
            objects.push(view);
        }
        Ok(Inspection {
            revisions: c.revisions.clone(),
            objects,
        })
    }
}

/// Replaces a Secret's values with runs of `+`, as Argo CD does: equal
/// values get equal masks, different values different ones, so a diff still
/// shows *that* a value changed but never what it is.
pub fn mask_secret(view: &mut ObjectView) {
    if !view.group.is_empty() || view.kind != "Secret" {
        return;
    }
    let mut masks: BTreeMap<String, String> = BTreeMap::new();
    let mut mask_obj = |o: &mut Option<Value>| {
        let Some(obj) = o.as_mut() else { return };
        // What Git has in stringData ends up in data; mask both.
        for field in ["data", "stringData"] {
            if let Some(map) = obj.get_mut(field).and_then(Value::as_object_mut) {
                for v in map.values_mut() {
                    let raw = v.as_str().unwrap_or_default().to_string();
                    let n = masks.len();
                    let m = masks
                        .entry(raw)
                        .or_insert_with(|| "+".repeat(8 + n))
                        .clone();
                    *v = Value::String(m);
                }
            }
        }
        if let Some(ann) = obj
            .pointer_mut("/metadata/annotations")
            .and_then(Value::as_object_mut)
        {
            // kubectl's last-applied copy carries the values in clear.
            ann.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
    };
    mask_obj(&mut view.desired);
    mask_obj(&mut view.target);
    mask_obj(&mut view.live);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_values_are_masked_consistently() {
        let mut v = ObjectView {
            kind: "Secret".into(),
            desired: Some(json!({"stringData": {"a": "x", "b": "y"}})),
            target: Some(json!({"data": {"a": "eA==", "b": "eQ=="}})),
            live: Some(json!({"data": {"a": "eA==", "b": "eg=="},
                "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{\"a\":\"eA==\"}}"}}})),
            ..ObjectView::default()
        };
        mask_secret(&mut v);
        let all = serde_json::to_string(&v).unwrap();
        for secret in ["eA==", "eQ==", "eg==", "\"x\"", "\"y\""] {
            assert!(!all.contains(secret), "{secret} leaked: {all}");
        }
        let t = v.target.unwrap();
        let l = v.live.unwrap();
        assert_eq!(t["data"]["a"], l["data"]["a"], "same value, same mask");
        assert_ne!(
            t["data"]["b"], l["data"]["b"],
            "a changed value shows as changed"
        );
        let mut cm = ObjectView {
            kind: "ConfigMap".into(),
            live: Some(json!({"data": {"a": "x"}})),
            ..ObjectView::default()
        };
        mask_secret(&mut cm);
        assert_eq!(cm.live.unwrap()["data"]["a"], "x");
    }
}

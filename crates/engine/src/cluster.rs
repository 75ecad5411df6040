//! One destination cluster: a client, a discovery cache, and one watch per
//! resource kind in use, shared by every app, feeding an in-memory cache of
//! live objects and telling the controller which app's object changed.

use ferry_model::annotations::TRACKING_ID;
use ferry_model::tracking::parse_tracking_id;
use futures::StreamExt;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::discovery::Scope;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc::UnboundedSender;

/// A kind the cluster serves.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub api: ApiResource,
    pub namespaced: bool,
}

/// One kind's cache and a flag that turns true once its initial list is in.
type KindCache = (Store<DynamicObject>, tokio::sync::watch::Receiver<bool>);

/// Sent when a live object carrying a tracking id changes: (cluster name, app instance name).
pub type Trigger = (String, String);

pub struct ClusterConn {
    pub name: String,
    pub server: String,
    pub client: Client,
    kinds: Mutex<HashMap<(String, String), Resolved>>,
    /// Per kind: the cache and a flag that turns true once its initial list is in.
    stores: Mutex<HashMap<(String, String), KindCache>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    api_versions: Mutex<Option<(std::time::Instant, Vec<String>)>>,
    triggers: UnboundedSender<Trigger>,
    /// A namespaced install: the only namespace Ferry may watch and deliver to on this cluster.
    scope: Option<String>,
}

impl std::fmt::Debug for ClusterConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConn")
            .field("name", &self.name)
            .field("server", &self.server)
            .finish()
    }
}

impl Drop for ClusterConn {
    fn drop(&mut self) {
        if let Ok(tasks) = self.tasks.lock() {
            for t in tasks.iter() {
                t.abort();
            }
        }
    }
}

impl ClusterConn {
    pub fn new(
        name: &str,
        server: &str,
        client: Client,
        triggers: UnboundedSender<Trigger>,
    ) -> Arc<ClusterConn> {
        Arc::new(ClusterConn {
            name: name.into(),
            server: server.into(),
            client,
            kinds: Mutex::new(HashMap::new()),
            stores: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
            api_versions: Mutex::new(None),
            triggers,
            scope: None,
        })
    }

    /// [`ClusterConn::new`] for a namespaced install: watches and deliveries stay in `namespace`;
    /// anything else is an error that says so, not a 403 to wait out.
    pub fn scoped(
        name: &str,
        server: &str,
        client: Client,
        triggers: UnboundedSender<Trigger>,
        namespace: &str,
    ) -> Arc<ClusterConn> {
        let mut conn = ClusterConn::new(name, server, client, triggers);
        if let Some(c) = Arc::get_mut(&mut conn) {
            c.scope = Some(namespace.to_string());
        }
        conn
    }

    /// Whether `namespace` (of a `namespaced` kind, or a cluster-scoped one) is this
    /// connection's to manage; the error says why not.
    pub fn check_scope(&self, kind: &str, namespaced: bool, namespace: &str) -> Result<(), String> {
        match &self.scope {
            None => Ok(()),
            Some(scope) if !namespaced => Err(format!(
                "{kind} is cluster-scoped: a namespaced install manages namespace {scope} only"
            )),
            Some(scope) if namespace != scope => Err(format!(
                "{kind} in namespace {namespace}: a namespaced install manages namespace {scope} only"
            )),
            Some(_) => Ok(()),
        }
    }

    /// Finds how the cluster serves `apiVersion`/`kind`. Only hits are cached,
    /// so a kind whose CRD is created later resolves then.
    pub async fn resolve(&self, api_version: &str, kind: &str) -> Result<Resolved, kube::Error> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some(r) = self.kinds.lock().ok().and_then(|k| k.get(&key).cloned()) {
            return Ok(r);
        }
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (api, caps) = kube::discovery::pinned_kind(&self.client, &gvk).await?;
        let r = Resolved {
            api,
            namespaced: caps.scope == Scope::Namespaced,
        };
        if let Ok(mut k) = self.kinds.lock() {
            k.insert(key, r.clone());
        }
        Ok(r)
    }

    pub fn api(&self, r: &Resolved, namespace: &str) -> Api<DynamicObject> {
        if r.namespaced {
            Api::namespaced_with(self.client.clone(), namespace, &r.api)
        } else {
            Api::all_with(self.client.clone(), &r.api)
        }
    }

    /// The live object from the shared cache, starting the kind's watch on
    /// first use. Err when the cache could not be filled: then nothing is
    /// known, and callers must not take the object for missing.
    pub async fn live(
        &self,
        r: &Resolved,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, String> {
        self.check_scope(&r.api.kind, r.namespaced, namespace)?;
        let store = self.store(r).await?;
        let ns = if r.namespaced {
            Some(namespace.to_string())
        } else {
            None
        };
        let mut oref = ObjectRef::<DynamicObject>::new_with(name, r.api.clone());
        oref.namespace = ns;
        Ok(store.get(&oref).map(|o| to_value(&o, &r.api)))
    }

    /// Every cached object of a kind that `app` manages: its tracking id
    /// names this app *and this very object* (annotations copied onto other
    /// objects, as controllers do onto ReplicaSets, do not count), and no
    /// owner manages it instead.
    pub async fn tracked_by(&self, r: &Resolved, app: &str) -> Result<Vec<Value>, String> {
        if self.scope.is_some() && !r.namespaced {
            // Nothing cluster-scoped can be ours in a namespaced install.
            return Ok(Vec::new());
        }
        let store = self.store(r).await?;
        let group = r.api.group.clone();
        Ok(store
            .state()
            .iter()
            .filter(|o| {
                o.metadata
                    .owner_references
                    .as_ref()
                    .is_none_or(|v| v.is_empty())
            })
            .filter(|o| {
                o.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(TRACKING_ID))
                    .and_then(|id| parse_tracking_id(id))
                    .is_some_and(|(a, key)| {
                        a == app
                            && key.group == group
                            && key.kind == r.api.kind
                            && key.name == o.metadata.name.clone().unwrap_or_default()
                            && key.namespace == o.metadata.namespace.clone().unwrap_or_default()
                    })
            })
            .map(|o| to_value(o, &r.api))
            .collect())
    }

    async fn store(&self, r: &Resolved) -> Result<Store<DynamicObject>, String> {
        let key = (r.api.api_version.clone(), r.api.kind.clone());
        let (store, mut ready) = {
            let mut stores = match self.stores.lock() {
                Ok(s) => s,
                Err(p) => p.into_inner(),
            };
            match stores.get(&key) {
                Some(entry) => entry.clone(),
                None => {
                    let writer = reflector::store::Writer::<DynamicObject>::new(r.api.clone());
                    let reader = writer.as_reader();
                    let (tx, rx) = tokio::sync::watch::channel(false);
                    stores.insert(key.clone(), (reader.clone(), rx.clone()));
                    self.spawn_watch(r.api.clone(), writer, tx);
                    (reader, rx)
                }
            }
        };
        // A kind we may not list (RBAC) must not hang the app forever, nor
        // pass for "nothing there": the compare fails with this message.
        let wait = ready.wait_for(|r| *r);
        if tokio::time::timeout(std::time::Duration::from_secs(30), wait)
            .await
            .is_err()
        {
            return Err(format!(
                "cannot watch {} on cluster {}: the list did not complete within 30s (missing permission?)",
                r.api.kind, self.name
            ));
        }
        Ok(store)
    }

    fn spawn_watch(
        &self,
        ar: ApiResource,
        writer: reflector::store::Writer<DynamicObject>,
        ready: tokio::sync::watch::Sender<bool>,
    ) {
        let api: Api<DynamicObject> = match &self.scope {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        };
        let triggers = self.triggers.clone();
        let cluster = self.name.clone();
        let stream = reflector::reflector(
            writer,
            watcher(api, watcher::Config::default()).default_backoff(),
        );
        let task = tokio::spawn(async move {
            let mut s = stream.boxed();
            while let Some(ev) = s.next().await {
                let obj = match ev {
                    Ok(watcher::Event::InitDone) => {
                        let _ = ready.send(true);
                        continue;
                    }
                    Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o)) => Ok(o),
                    Ok(_) => continue,
                    Err(e) => Err(e),
                };
                match obj {
                    Ok(obj) => {
                        let app = obj
                            .metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get(TRACKING_ID))
                            .and_then(|id| parse_tracking_id(id))
                            .map(|(a, _)| a);
                        if let Some(app) = app {
                            let _ = triggers.send((cluster.clone(), app));
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, kind = %ar.kind, "watch error (retrying)")
                    }
                }
            }
        });
        if let Ok(mut t) = self.tasks.lock() {
            t.push(task);
        }
    }

    /// Every `group/version` the cluster serves (what Helm's
    /// `.Capabilities.APIVersions` and CMP plugins' KUBE_API_VERSIONS carry).
    pub async fn api_versions(&self) -> Result<Vec<String>, kube::Error> {
        // Re-read now and then: a CRD installed later adds a group.
        if let Some((at, v)) = self.api_versions.lock().ok().and_then(|g| g.clone())
            && at.elapsed() < std::time::Duration::from_secs(60)
        {
            return Ok(v);
        }
        let mut out: Vec<String> = self.client.list_core_api_versions().await?.versions;
        for g in self.client.list_api_groups().await?.groups {
            out.extend(g.versions.into_iter().map(|v| v.group_version));
        }
        out.sort();
        out.dedup();
        if let Ok(mut g) = self.api_versions.lock() {
            *g = Some((std::time::Instant::now(), out.clone()));
        }
        Ok(out)
    }

    /// `major.minor.patch` of the API server, e.g. `1.20.2`.
    pub async fn version(&self) -> Result<String, kube::Error> {
        let info = self.client.apiserver_version().await?;
        Ok(info
            .git_version
            .trim_start_matches('v')
            .split(['-', '+'])
            .next()
            .unwrap_or_default()
            .to_string())
    }
}

fn to_value(o: &DynamicObject, ar: &ApiResource) -> Value {
    let mut v = serde_json::to_value(o).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.insert("apiVersion".into(), Value::String(ar.api_version.clone()));
        m.insert("kind".into(), Value::String(ar.kind.clone()));
    }
    v
}

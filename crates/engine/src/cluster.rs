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

/// One kind's cache, the index of its objects by the app their tracking id names, and a flag
/// that turns true once its initial list is in.
type KindCache = (
    Store<DynamicObject>,
    Arc<Mutex<TrackIndex>>,
    tokio::sync::watch::Receiver<bool>,
);

/// `(namespace, name)` of an object within its kind's cache.
type ObjectKeyInKind = (String, String);

/// Which cached objects each app's tracking id names: an app's objects are found without
/// scanning the kind's whole cache, so a compare costs the same with 10 apps or 10,000.
#[derive(Default)]
pub struct TrackIndex {
    by_app: HashMap<String, std::collections::HashSet<ObjectKeyInKind>>,
    app_of: HashMap<ObjectKeyInKind, String>,
}

impl TrackIndex {
    /// Records that `object` names `app` (or no app).
    fn set(&mut self, object: ObjectKeyInKind, app: Option<String>) {
        if let Some(old) = self.app_of.remove(&object)
            && let Some(set) = self.by_app.get_mut(&old)
        {
            set.remove(&object);
            if set.is_empty() {
                self.by_app.remove(&old);
            }
        }
        if let Some(app) = app {
            self.by_app
                .entry(app.clone())
                .or_default()
                .insert(object.clone());
            self.app_of.insert(object, app);
        }
    }

    fn of(&self, app: &str) -> Vec<ObjectKeyInKind> {
        self.by_app
            .get(app)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// The object's key in its kind and the app its tracking id names.
fn tracking_of(obj: &DynamicObject) -> (ObjectKeyInKind, Option<String>) {
    let key = (
        obj.metadata.namespace.clone().unwrap_or_default(),
        obj.metadata.name.clone().unwrap_or_default(),
    );
    let app = obj
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(TRACKING_ID))
        .and_then(|id| parse_tracking_id(id))
        .map(|(a, _)| a);
    (key, app)
}

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
    /// The API server's version, read again after a minute (an upgrade changes it).
    server_version: Mutex<Option<(std::time::Instant, String)>>,
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
            server_version: Mutex::new(None),
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
        let (store, index) = self.store_and_index(r).await?;
        let group = r.api.group.clone();
        let keys = index.lock().unwrap_or_else(|e| e.into_inner()).of(app);
        Ok(keys
            .into_iter()
            .filter_map(|(ns, name)| {
                let mut oref = ObjectRef::<DynamicObject>::new_with(&name, r.api.clone());
                oref.namespace = (!ns.is_empty()).then_some(ns);
                store.get(&oref)
            })
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
            .map(|o| to_value(&o, &r.api))
            .collect())
    }

    async fn store(&self, r: &Resolved) -> Result<Store<DynamicObject>, String> {
        Ok(self.store_and_index(r).await?.0)
    }

    async fn store_and_index(
        &self,
        r: &Resolved,
    ) -> Result<(Store<DynamicObject>, Arc<Mutex<TrackIndex>>), String> {
        let key = (r.api.api_version.clone(), r.api.kind.clone());
        let (store, index, mut ready) = {
            let mut stores = match self.stores.lock() {
                Ok(s) => s,
                Err(p) => p.into_inner(),
            };
            match stores.get(&key) {
                Some(entry) => entry.clone(),
                None => {
                    let writer = reflector::store::Writer::<DynamicObject>::new(r.api.clone());
                    let reader = writer.as_reader();
                    let index = Arc::new(Mutex::new(TrackIndex::default()));
                    let (tx, rx) = tokio::sync::watch::channel(false);
                    stores.insert(key.clone(), (reader.clone(), index.clone(), rx.clone()));
                    self.spawn_watch(r.api.clone(), writer, index.clone(), tx);
                    (reader, index, rx)
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
        Ok((store, index))
    }

    fn spawn_watch(
        &self,
        ar: ApiResource,
        writer: reflector::store::Writer<DynamicObject>,
        index: Arc<Mutex<TrackIndex>>,
        ready: tokio::sync::watch::Sender<bool>,
    ) {
        let api: Api<DynamicObject> = match &self.scope {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        };
        let triggers = self.triggers.clone();
        let cluster = self.name.clone();
        // managedFields are most of a small object's size and nothing in the cache reads them:
        // the rules that do (ignoreDifferences' managedFieldsManagers) take them from the
        // dry-run response, which carries the live object's.
        let stream = reflector::reflector(
            writer,
            watcher(api, watcher::Config::default())
                .default_backoff()
                .modify(|o| {
                    o.metadata.managed_fields = None;
                }),
        );
        let task = tokio::spawn(async move {
            let mut s = stream.boxed();
            // A (re)list builds a fresh index, swapped in when the store is: objects deleted
            // while the watch was down leave both together.
            let mut relisting: Option<TrackIndex> = None;
            while let Some(ev) = s.next().await {
                let obj = match ev {
                    Ok(watcher::Event::Init) => {
                        relisting = Some(TrackIndex::default());
                        continue;
                    }
                    Ok(watcher::Event::InitApply(o)) => {
                        let (key, app) = tracking_of(&o);
                        relisting
                            .get_or_insert_with(TrackIndex::default)
                            .set(key, app);
                        continue;
                    }
                    Ok(watcher::Event::InitDone) => {
                        if let Some(fresh) = relisting.take() {
                            *index.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
                        }
                        let _ = ready.send(true);
                        continue;
                    }
                    Ok(watcher::Event::Apply(o)) => {
                        let (key, app) = tracking_of(&o);
                        index
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .set(key, app);
                        Ok(o)
                    }
                    Ok(watcher::Event::Delete(o)) => {
                        let (key, _) = tracking_of(&o);
                        index
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .set(key, None);
                        Ok(o)
                    }
                    Err(e) => Err(e),
                };
                match obj {
                    Ok(obj) => {
                        let (_, app) = tracking_of(&obj);
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
        if let Some(v) = fresh_or_claim(&self.api_versions) {
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
    /// Cached for a minute: every compare asks (it is part of the render key), and a GET of
    /// `/version` per app was the one request a steady pass still made.
    pub async fn version(&self) -> Result<String, kube::Error> {
        if let Some(v) = fresh_or_claim(&self.server_version) {
            return Ok(v);
        }
        let info = self.client.apiserver_version().await?;
        let version = info
            .git_version
            .trim_start_matches('v')
            .split(['-', '+'])
            .next()
            .unwrap_or_default()
            .to_string();
        if let Ok(mut g) = self.server_version.lock() {
            *g = Some((std::time::Instant::now(), version.clone()));
        }
        Ok(version)
    }
}

/// A value re-read once a minute: the cached one while it is fresh; when it is stale, the
/// first caller gets None (and reads it again) while the others keep the stale value until
/// then, so a pass of many apps makes one request, not one per worker.
fn fresh_or_claim<T: Clone>(slot: &Mutex<Option<(std::time::Instant, T)>>) -> Option<T> {
    let mut g = slot.lock().ok()?;
    let (at, v) = g.as_mut()?;
    if at.elapsed() < std::time::Duration::from_secs(60) {
        return Some(v.clone());
    }
    // Claimed: the others see it fresh until this caller stores the new value (or, if its
    // request fails, for the next minute, with the last value read).
    *at = std::time::Instant::now();
    None
}

fn to_value(o: &DynamicObject, ar: &ApiResource) -> Value {
    let mut v = serde_json::to_value(o).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.insert("apiVersion".into(), Value::String(ar.api_version.clone()));
        m.insert("kind".into(), Value::String(ar.kind.clone()));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, name: &str) -> ObjectKeyInKind {
        (ns.to_string(), name.to_string())
    }

    #[test]
    fn the_index_follows_tracking_ids_as_they_change() {
        let mut i = TrackIndex::default();
        i.set(key("a", "one"), Some("app-a".into()));
        i.set(key("a", "two"), Some("app-a".into()));
        i.set(key("b", "one"), Some("app-b".into()));
        i.set(key("c", "free"), None);
        let mut of_a = i.of("app-a");
        of_a.sort();
        assert_eq!(of_a, [key("a", "one"), key("a", "two")]);
        // Re-labelled to another app: moves; deleted: gone; an app with nothing left is dropped.
        i.set(key("a", "two"), Some("app-b".into()));
        i.set(key("a", "one"), None);
        assert!(i.of("app-a").is_empty());
        assert!(!i.by_app.contains_key("app-a"));
        let mut of_b = i.of("app-b");
        of_b.sort();
        assert_eq!(of_b, [key("a", "two"), key("b", "one")]);
        assert_eq!(i.app_of.len(), 2);
    }

    #[test]
    fn tracking_of_reads_the_app_from_the_annotation() {
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cm", "namespace": "ns", "annotations": {
                TRACKING_ID: "guestbook:/ConfigMap:ns/cm"
            }}
        }))
        .unwrap();
        assert_eq!(
            tracking_of(&obj),
            (key("ns", "cm"), Some("guestbook".into()))
        );
        let plain: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}
        }))
        .unwrap();
        assert_eq!(tracking_of(&plain), (key("", "cm"), None));
    }
}

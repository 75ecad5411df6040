//! KubeVela (`core.oam.dev/v1beta1`) Applications on the engine: render with `ferry-oam`
//! (Jsonnet definitions, built-in and from the cluster), run the workflow, apply each step's
//! objects with server-side apply, wait for health, and write KubeVela's status.
//!
//! One pass per Application: prepare (render every deploy step for every target, fetch
//! source components) before anything is applied, then advance the workflow. What ran is
//! recorded in `status.appliedResources`, which is also what garbage collection reads.

use crate::Controller;

mod refs;
mod steps;
use ferry_engine::cluster::ClusterConn;
use ferry_engine::{health, plan, sync};
use ferry_model::annotations::TRACKING_ID;
use ferry_model::tracking::{self, ObjectKey};
use ferry_model::{Destination, SyncOptions};
use ferry_oam::policy::{self, ClusterInfo, Placement};
use ferry_oam::workflow::{self, Action, Outcome, Phase, Plan, State, StepKind};
use ferry_oam::{Definitions, Rendered, SourceSpec};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const GROUP: &str = "core.oam.dev";
pub const VERSION: &str = "v1beta1";
/// Held while the Application's resources exist, so deleting it deletes them (KubeVela's name).
pub const FINALIZER: &str = "app.oam.dev/resource-tracker-finalizer";
/// Set (to any value) by `ferry workflow resume` and the API: resume a suspended workflow.
pub const RESUME_ANNOTATION: &str = "workflow.ferry.dev/resume";
/// Tracking ids of OAM objects start with this, then `<namespace>_<name>`; Argo CD
/// Application instances never do (a namespace cannot contain a dot).
pub const INSTANCE_PREFIX: &str = "oam.";
/// Namespace of platform-wide definitions (KubeVela's).
pub const SYSTEM_NAMESPACE: &str = "vela-system";

/// Re-check a finished Application this often even when nothing triggered it.
const RESYNC: Duration = Duration::from_secs(300);
/// How often a step waiting for health is re-checked besides watch triggers.
const WAIT_POLL: Duration = Duration::from_secs(5);

pub fn api_resource(kind: &str) -> ApiResource {
    let plural = match kind {
        "Application" => "applications",
        "ComponentDefinition" => "componentdefinitions",
        "TraitDefinition" => "traitdefinitions",
        "WorkflowStepDefinition" => "workflowstepdefinitions",
        _ => "policydefinitions",
    };
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, kind), plural)
}

/// The API of KubeVela Applications in `namespace`, or in all namespaces.
pub fn applications(client: Client, namespace: Option<&str>) -> Api<DynamicObject> {
    let ar = api_resource("Application");
    match namespace {
        Some(ns) => Api::namespaced_with(client, ns, &ar),
        None => Api::all_with(client, &ar),
    }
}

/// Whether an Application's workflow waits in a suspend step.
pub fn is_suspended(app: &DynamicObject) -> bool {
    app.data.pointer("/status/workflow/suspend") == Some(&json!(true))
        || app.data.pointer("/status/status") == Some(&json!("workflowSuspending"))
}

/// Asks the controller to resume a suspended workflow, recording who asked. The controller
/// removes the annotation once the resumed state is stored.
pub async fn request_resume(
    api: &Api<DynamicObject>,
    name: &str,
    by: &str,
) -> Result<DynamicObject, kube::Error> {
    let patch = json!({"metadata": {"annotations": {RESUME_ANNOTATION: by}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
}

/// The tracking-id instance of an OAM Application.
pub fn instance(namespace: &str, name: &str) -> String {
    format!("{INSTANCE_PREFIX}{namespace}_{name}")
}

/// The Application (`namespace`, `name`) a tracking instance names, if it is an OAM one.
pub fn parse_instance(instance: &str) -> Option<(String, String)> {
    let rest = instance.strip_prefix(INSTANCE_PREFIX)?;
    let (ns, name) = rest.split_once('_')?;
    Some((ns.to_string(), name.to_string()))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The (instance, object key) a live object's tracking id names.
fn tracked_as(live: &Value) -> Option<(String, ObjectKey)> {
    live.pointer("/metadata/annotations")
        .and_then(|a| a.get(TRACKING_ID))
        .and_then(Value::as_str)
        .and_then(tracking::parse_tracking_id)
}

/// Identity of a source component's fetch (a Debug rendering: SourceSpec holds no floats).
fn spec_hash(spec: &SourceSpec) -> u64 {
    hash_of(&format!("{spec:?}"))
}

fn hash_of(v: &impl Hash) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// One object a step applies, placed and labelled.
#[derive(Clone, Debug)]
struct Desired {
    component: String,
    trait_type: Option<String>,
    output: Option<String>,
    key: ObjectKey,
    api_version: String,
    object: Value,
}

/// A deploy step's work on one cluster.
#[derive(Clone, Debug)]
struct Target {
    placement: Placement,
    /// Component layers (dependsOn order) of this step.
    layers: Vec<Vec<String>>,
    components: Vec<ferry_oam::Component>,
    rendered: Vec<Rendered>,
    /// Its helm/kustomize components' sources, after this target's overrides.
    sources: Vec<SourceSpec>,
}

/// Everything computed from the Application and definitions alone.
struct Prepared {
    plan: Plan,
    targets: HashMap<String, Vec<Target>>,
    sources: Vec<SourceSpec>,
    defs: Arc<Definitions>,
}

/// A source component's last fetch: (spec hash, fetched at, revision, objects).
type SourceMemo = (u64, Instant, String, Arc<Vec<Value>>);

#[derive(Default)]
struct Memo {
    prepared: Option<(u64, Arc<Prepared>)>,
    sources: HashMap<String, SourceMemo>,
    /// Finished notification (and unsupported) steps, reported to the next `advance`.
    outcomes: Vec<Outcome>,
    /// (cluster, key) -> (desired hash, live generation or resourceVersion after our apply).
    applied: HashMap<(String, ObjectKey), (u64, String)>,
    /// step -> (consecutive passes with an apply error, the last such pass)
    failures: HashMap<String, (u32, u64)>,
    /// Passes run so far: failures count once per pass, however many rounds it has.
    pass: u64,
    /// Notification steps sent for the current generation (at most once each, unless the
    /// controller restarts with the step still running: then it is sent again).
    notified: HashSet<String>,
    /// The status our last write produced and the resourceVersion it got: newer than the
    /// watch cache until the cache catches up, so a quick next pass does not act on the
    /// state before it (and, say, send a notification twice).
    written: Option<(u64, Value)>,
    /// Step outputs of the current generation by name (see `steps`); `None` = not loaded.
    step_outputs: Option<BTreeMap<String, Value>>,
}

pub(crate) struct Oam {
    ctl: Arc<Controller>,
    apps: Store<DynamicObject>,
    comp_defs: Store<DynamicObject>,
    trait_defs: Store<DynamicObject>,
    memo: Mutex<HashMap<String, Memo>>,
    /// Each cluster's Kubernetes version and when it was asked.
    versions: Mutex<HashMap<String, (ferry_oam::ClusterVersion, std::time::Instant)>>,
}

/// Per component and cluster: KubeVela's `status.services[]` entry.
#[derive(Clone, Debug)]
struct Service {
    name: String,
    namespace: String,
    cluster: String,
    healthy: bool,
    message: String,
    workload: Option<(String, String)>,
    traits: Vec<(String, bool, String)>,
}

impl Service {
    fn to_json(&self) -> Value {
        let mut v = json!({
            "name": self.name,
            "namespace": self.namespace,
            "cluster": self.cluster,
            "healthy": self.healthy,
            "traits": self.traits.iter().map(|(t, h, m)| {
                let mut o = json!({"type": t, "healthy": h});
                if !m.is_empty() { o["message"] = json!(m); }
                o
            }).collect::<Vec<_>>(),
        });
        if !self.message.is_empty() {
            v["message"] = json!(self.message);
        }
        if let Some((a, k)) = &self.workload {
            v["workloadDefinition"] = json!({"apiVersion": a, "kind": k});
        }
        v
    }
}

/// What an apply must respect besides the rendered object.
struct ApplyCtx {
    /// `namespace/name`: the memo key.
    key: String,
    /// This app's tracking instance.
    instance: String,
    apply_once: Option<policy::ApplyOnce>,
    shared: Option<policy::SharedResource>,
    take_over: Option<policy::SharedResource>,
    read_only: Option<policy::ReadOnly>,
    resource_update: Option<policy::ResourceUpdate>,
    stage: policy::ApplyStage,
    /// (group, kind) -> namespaced, of the CRDs this app itself brings.
    crds: HashMap<(String, String), bool>,
    defs: Arc<Definitions>,
}

enum Progress {
    Done,
    Waiting(String),
    Failed(String),
}

impl Oam {
    /// Watches OAM Applications and definitions in every namespace and runs the loop.
    pub(crate) async fn start(client: Client, ctl: Arc<Controller>) -> crate::TaskGuard {
        let app_ar = api_resource("Application");
        let writer = reflector::store::Writer::<DynamicObject>::new(app_ar.clone());
        let apps_store = writer.as_reader();
        let cd_ar = api_resource("ComponentDefinition");
        let td_ar = api_resource("TraitDefinition");
        let cd_w = reflector::store::Writer::<DynamicObject>::new(cd_ar.clone());
        let td_w = reflector::store::Writer::<DynamicObject>::new(td_ar.clone());
        let oam = Arc::new(Oam {
            ctl: ctl.clone(),
            apps: apps_store,
            comp_defs: cd_w.as_reader(),
            trait_defs: td_w.as_reader(),
            memo: Mutex::new(HashMap::new()),
            versions: Mutex::new(HashMap::new()),
        });
        let mut tasks = Vec::new();
        let q = ctl.oam_queue.clone();
        let stream = reflector::reflector(
            writer,
            watcher(
                match &ctl.cfg.oam_namespace {
                    Some(ns) => Api::<DynamicObject>::namespaced_with(client.clone(), ns, &app_ar),
                    None => Api::<DynamicObject>::all_with(client.clone(), &app_ar),
                },
                watcher::Config::default(),
            ),
        )
        .default_backoff()
        .touched_objects();
        tasks.push(tokio::spawn(async move {
            let mut s = stream.boxed();
            while let Some(ev) = s.next().await {
                match ev {
                    Ok(o) => q.add(&format!(
                        "{}/{}",
                        o.namespace().unwrap_or_default(),
                        o.name_any()
                    )),
                    Err(e) => tracing::debug!(error = %e, "oam application watch error"),
                }
            }
        }));
        // A definition changed: every app may render differently (TraitDefinitions applied at
        // runtime take effect without a restart).
        for (w, ar) in [(cd_w, cd_ar), (td_w, td_ar)] {
            let oam2 = oam.clone();
            let stream = reflector::reflector(
                w,
                watcher(
                    // A namespaced install reads definitions from its namespace only.
                    match &ctl.cfg.oam_namespace {
                        Some(ns) if ctl.cfg.namespaced => {
                            Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar)
                        }
                        _ => Api::<DynamicObject>::all_with(client.clone(), &ar),
                    },
                    watcher::Config::default(),
                ),
            )
            .default_backoff()
            .touched_objects();
            tasks.push(tokio::spawn(async move {
                let mut s = stream.boxed();
                while s.next().await.is_some() {
                    for a in oam2.apps.state() {
                        oam2.ctl.oam_queue.add(&format!(
                            "{}/{}",
                            a.namespace().unwrap_or_default(),
                            a.name_any()
                        ));
                    }
                }
            }));
        }
        for _ in 0..ctl.cfg.workers.clamp(1, 4) {
            let oam = oam.clone();
            tasks.push(tokio::spawn(async move {
                // A pass before the definitions are listed would render with the built-ins
                // alone and could collect what a platform definition renders.
                for s in [&oam.apps, &oam.comp_defs, &oam.trait_defs] {
                    if s.wait_until_ready().await.is_err() {
                        return;
                    }
                }
                loop {
                    let key = oam.ctl.oam_queue.next().await;
                    let next = oam.reconcile(&key).await;
                    oam.ctl.oam_queue.done(&key);
                    if let Some(d) = next {
                        oam.ctl.oam_queue.add_after(&key, d);
                    }
                }
            }));
        }
        crate::TaskGuard(tasks)
    }

    /// Which cluster definitions an app in `namespace` sees, as a hash of their versions:
    /// cheap, so a pass whose inputs did not change skips building the registry.
    fn definitions_version(&self, namespace: &str) -> u64 {
        let mut versions: Vec<(String, String, String, bool)> = Vec::new();
        for ns in [SYSTEM_NAMESPACE, namespace] {
            for (store, comp) in [(&self.comp_defs, true), (&self.trait_defs, false)] {
                for o in store.state() {
                    if o.namespace().as_deref() == Some(ns) {
                        versions.push((
                            ns.to_string(),
                            o.name_any(),
                            o.resource_version().unwrap_or_default(),
                            comp,
                        ));
                    }
                }
            }
        }
        versions.sort();
        hash_of(&versions)
    }

    fn definitions(&self, namespace: &str) -> (Definitions, Vec<(String, String)>) {
        let mut defs = match ferry_oam::sources::builtin_definitions() {
            Ok(d) => d.clone(),
            Err(e) => {
                tracing::error!(error = %e, "built-in definitions do not parse");
                Definitions::new()
            }
        };
        let mut broken = Vec::new();
        // KubeVela's lookup: the app's namespace wins over vela-system.
        for ns in [SYSTEM_NAMESPACE, namespace] {
            for store in [&self.comp_defs, &self.trait_defs] {
                let mut objs: Vec<_> = store
                    .state()
                    .into_iter()
                    .filter(|o| o.namespace().as_deref() == Some(ns))
                    .collect();
                objs.sort_by_key(|o| o.name_any());
                for o in objs {
                    let mut v = serde_json::to_value(&*o).unwrap_or(Value::Null);
                    let kind = if std::ptr::eq(store, &self.comp_defs) {
                        "ComponentDefinition"
                    } else {
                        "TraitDefinition"
                    };
                    v["kind"] = json!(kind);
                    if let Err(e) = defs.add_value(v) {
                        broken.push((o.name_any(), e.to_string()));
                    }
                }
            }
            if ns == namespace {
                break;
            }
        }
        (defs, broken)
    }

    /// A cluster's Kubernetes version, asked at most every ten minutes; None
    /// when it cannot be reached (the render then assumes a current one, and
    /// the apply reports the unreachable cluster).
    async fn cluster_version(&self, name: &str) -> Option<ferry_oam::ClusterVersion> {
        const TTL: Duration = Duration::from_secs(600);
        if let Some((v, at)) = self.versions.lock().ok().and_then(|m| m.get(name).copied())
            && at.elapsed() < TTL
        {
            return Some(v);
        }
        let conn = if name == policy::LOCAL_CLUSTER {
            self.ctl.local.clone()
        } else {
            let dest = ferry_model::Destination {
                name: Some(name.to_string()),
                ..Default::default()
            };
            self.ctl.destination(&dest).await.ok()?.0
        };
        let v = ferry_oam::ClusterVersion::parse(&conn.version().await.ok()?).ok()?;
        if let Ok(mut m) = self.versions.lock() {
            m.insert(name.to_string(), (v, std::time::Instant::now()));
        }
        Some(v)
    }

    fn cluster_infos(&self) -> Vec<ClusterInfo> {
        let mut out = vec![ClusterInfo {
            name: policy::LOCAL_CLUSTER.into(),
            labels: BTreeMap::new(),
            version: None,
        }];
        for s in self.ctl.secrets.state() {
            if s.labels()
                .get(ferry_model::annotations::SECRET_TYPE_LABEL)
                .map(String::as_str)
                != Some("cluster")
            {
                continue;
            }
            if let Some(cs) = crate::ClusterSecret::from_secret(&s) {
                let labels: BTreeMap<String, String> = s
                    .labels()
                    .iter()
                    .filter(|(k, _)| k.as_str() != ferry_model::annotations::SECRET_TYPE_LABEL)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                out.push(ClusterInfo {
                    name: cs.name,
                    labels,
                    version: None,
                });
            }
        }
        out
    }

    async fn conn(&self, cluster: &str) -> Result<Arc<ClusterConn>, String> {
        if cluster == policy::LOCAL_CLUSTER {
            return Ok(self.ctl.local.clone());
        }
        let d = Destination {
            name: Some(cluster.to_string()),
            ..Destination::default()
        };
        self.ctl
            .destination(&d)
            .await
            .map(|(c, _, _)| c)
            .map_err(|s| s.message)
    }

    pub(crate) async fn reconcile(&self, key: &str) -> Option<Duration> {
        let (ns, name) = key.split_once('/')?;
        let oref = ObjectRef::new_with(name, api_resource("Application")).within(ns);
        let Some(obj) = self.apps.get(&oref) else {
            if let Ok(mut m) = self.memo.lock() {
                m.remove(key);
            }
            return None;
        };
        let started = Instant::now();
        let out = self.reconcile_app(ns, name, &obj).await;
        tracing::debug!(app = %key, ms = started.elapsed().as_millis() as u64, "oam reconciled");
        out
    }

    fn api(&self, ns: &str) -> Api<DynamicObject> {
        applications(self.ctl.client.clone(), Some(ns))
    }

    async fn reconcile_app(&self, ns: &str, name: &str, obj: &DynamicObject) -> Option<Duration> {
        let key = format!("{ns}/{name}");
        let raw = serde_json::to_value(obj).unwrap_or(Value::Null);
        let store_rv = obj
            .resource_version()
            .and_then(|r| r.parse::<u64>().ok())
            .unwrap_or(0);
        let old_status = {
            let mut m = self.memo.lock().ok();
            let e = m.as_mut().map(|m| m.entry(key.clone()).or_default());
            match e {
                Some(e) => {
                    e.pass += 1;
                    match &e.written {
                        Some((rv, st)) if *rv > store_rv => st.clone(),
                        _ => raw.get("status").cloned().unwrap_or(Value::Null),
                    }
                }
                None => raw.get("status").cloned().unwrap_or(Value::Null),
            }
        };
        if obj.metadata.deletion_timestamp.is_some() {
            return self.finalize(ns, name, obj, &old_status).await;
        }
        if !obj.finalizers().iter().any(|f| f == FINALIZER) {
            let mut fins = obj.finalizers().to_vec();
            fins.push(FINALIZER.into());
            let patch = json!({"metadata": {"finalizers": fins, "resourceVersion": obj.resource_version()}});
            if let Err(e) = self
                .api(ns)
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::debug!(app = %key, error = %e, "adding finalizer");
            }
            // The watch brings the updated object back.
            return None;
        }
        let generation = obj.metadata.generation.unwrap_or(0);
        let mut app: ferry_oam::Application = match ferry_oam::application_from_value(raw.clone()) {
            Ok(a) => a,
            Err(e) => {
                self.write_error(ns, name, &old_status, "Parsed", &e.to_string())
                    .await;
                return None;
            }
        };
        // ref-objects components copy hub objects: read them on every pass, as KubeVela does.
        if self.may_refer(&app) {
            let (defs, _) = self.definitions(ns);
            if let Err(e) = refs::resolve(&self.ctl.client, &mut app, &defs).await {
                self.write_error(ns, name, &old_status, "Rendered", &e)
                    .await;
                return Some(RESYNC);
            }
        }
        let resume = obj.annotations().contains_key(RESUME_ANNOTATION);

        // 1. Prepare: render every step for every target. Nothing touches a cluster yet.
        let prepared = match self.prepare(&key, &app, ns).await {
            Ok(p) => p,
            Err(msg) => {
                self.write_error(ns, name, &old_status, "Rendered", &msg)
                    .await;
                return Some(RESYNC);
            }
        };
        // 2. Fetch source components (helm, kustomize) on their pull interval.
        let mut next = RESYNC;
        let mut source_objects: HashMap<u64, Arc<Vec<Value>>> = HashMap::new();
        for spec in &prepared.sources {
            next = next.min(spec.poll_interval.max(Duration::from_secs(1)));
            match self.fetch_source(&key, ns, &app, spec).await {
                // An empty render is far more often a broken path or chart than an intent to
                // delete everything (Argo CD's allowEmpty is off by default too).
                Ok(objs) if objs.is_empty() => {
                    let msg = format!(
                        "component `{}`: {} rendered no objects; refusing to apply or prune",
                        spec.component,
                        spec.source
                            .path
                            .as_deref()
                            .or(spec.source.chart.as_deref())
                            .unwrap_or(".")
                    );
                    self.write_error(ns, name, &old_status, "Rendered", &msg)
                        .await;
                    return Some(next);
                }
                Ok(objs) => {
                    let extra = ferry_oam::image_automation_objects(spec);
                    let objs = if extra.is_empty() {
                        objs
                    } else {
                        Arc::new(objs.iter().cloned().chain(extra).collect())
                    };
                    source_objects.insert(spec_hash(spec), objs);
                }
                Err(msg) => {
                    let msg = format!("component `{}`: {msg}", spec.component);
                    self.write_error(ns, name, &old_status, "Rendered", &msg)
                        .await;
                    return Some(Duration::from_secs(15).min(next));
                }
            }
        }
        // Kinds whose CRD this app brings itself may not be served yet.
        let mut crd_scopes: HashMap<(String, String), bool> = HashMap::new();
        {
            let mut note = |o: &Value| {
                if o["kind"] == "CustomResourceDefinition"
                    && let (Some(g), Some(k)) = (
                        o.pointer("/spec/group").and_then(Value::as_str),
                        o.pointer("/spec/names/kind").and_then(Value::as_str),
                    )
                {
                    let namespaced =
                        o.pointer("/spec/scope").and_then(Value::as_str) != Some("Cluster");
                    crd_scopes.insert((g.to_string(), k.to_string()), namespaced);
                }
            };
            source_objects
                .values()
                .flat_map(|v| v.iter())
                .for_each(&mut note);
            prepared
                .targets
                .values()
                .flatten()
                .flat_map(|t| t.rendered.iter())
                .for_each(|r| note(&r.object));
        }
        // Place and label every object of every step now: a bad object stops the app before
        // anything is applied.
        let mut desired: HashMap<String, Vec<(Target, Vec<Desired>)>> = HashMap::new();
        for (step, targets) in &prepared.targets {
            let mut v = Vec::new();
            for t in targets {
                match self.place(&app, t, &source_objects, &crd_scopes).await {
                    Ok(d) => v.push((t.clone(), d)),
                    Err(msg) => {
                        self.write_error(ns, name, &old_status, "Rendered", &msg)
                            .await;
                        return Some(Duration::from_secs(30));
                    }
                }
            }
            desired.insert(step.clone(), v);
        }

        let policy_of = |t: &str| app.spec.policies.iter().find(|p| p.type_name == t);
        let mut ctx = ApplyCtx {
            key: key.clone(),
            instance: instance(ns, name),
            apply_once: policy_of("apply-once")
                .and_then(|p| policy::ApplyOnce::from_policy(p).ok()),
            shared: policy_of("shared-resource")
                .and_then(|p| policy::SharedResource::from_policy(p).ok()),
            take_over: policy_of("take-over")
                .and_then(|p| policy::SharedResource::take_over_from_policy(p).ok()),
            read_only: policy::ReadOnly::of(&app).ok().flatten(),
            resource_update: policy::ResourceUpdate::of(&app).ok().flatten(),
            stage: policy::ApplyStage::Update,
            crds: crd_scopes,
            defs: prepared.defs.clone(),
        };

        // 3. Workflow.
        let restarted =
            old_status.get("observedGeneration").and_then(Value::as_i64) != Some(generation);
        let prev: State = if restarted {
            State::new(&prepared.plan)
        } else {
            old_status
                .get("workflow")
                .and_then(|w| serde_json::from_value(w.clone()).ok())
                .unwrap_or_else(|| State::new(&prepared.plan))
        };
        if restarted && let Ok(mut m) = self.memo.lock() {
            let e = m.entry(key.clone()).or_default();
            e.outcomes.clear();
            e.failures.clear();
            e.notified.clear();
            e.step_outputs = None;
        }
        let mut state = prev;
        let mut services: BTreeMap<(String, String, String), Service> = BTreeMap::new();
        let mut step_messages: HashMap<String, String> = HashMap::new();
        let mut resume_now = resume;
        for _round in 0..16 {
            let mut outcomes: Vec<Outcome> = self
                .memo
                .lock()
                .ok()
                .map(|mut m| std::mem::take(&mut m.entry(key.clone()).or_default().outcomes))
                .unwrap_or_default();
            for step in running_steps(&state) {
                let Some(kind) = find_step(&prepared.plan.steps, &step).map(|s| s.kind.clone())
                else {
                    continue;
                };
                if kind == StepKind::Notification {
                    // Running with no outcome on record: this process never sent it (a
                    // restart or a new leader). Send it now.
                    let sent =
                        self.memo.lock().ok().is_some_and(|m| {
                            m.get(&key).is_some_and(|e| e.notified.contains(&step))
                        });
                    if !sent && let Some(st) = find_step(&prepared.plan.steps, &step) {
                        let props = st.properties.clone();
                        let o = self.run_notification(&key, ns, &step, &props).await;
                        outcomes.push(o);
                    }
                    continue;
                }
                if matches!(
                    kind,
                    StepKind::DependsOnApp { .. } | StepKind::ApplyObject | StepKind::ReadObject
                ) {
                    let Some(st) = find_step(&prepared.plan.steps, &step) else {
                        continue;
                    };
                    let mut values = self.step_outputs(&key, ns, name, generation).await;
                    let run = self.run_object_step(&app, ns, st, &values).await;
                    match run.progress {
                        Progress::Done => {
                            if !run.outputs.is_empty() {
                                values.extend(run.outputs);
                                if let Err(e) = self
                                    .save_step_outputs(&key, ns, obj, generation, &values)
                                    .await
                                {
                                    step_messages.insert(step.clone(), e);
                                    next = next.min(Duration::from_secs(3));
                                    continue;
                                }
                            }
                            outcomes.push(Outcome::succeeded(&step));
                        }
                        Progress::Failed(m) => outcomes.push(Outcome::failed(&step, &m)),
                        Progress::Waiting(m) => {
                            step_messages.insert(step.clone(), m);
                            // Nothing watches the other object: look again soon.
                            next = next.min(Duration::from_secs(3));
                        }
                    }
                    continue;
                }
                if !matches!(
                    kind,
                    StepKind::Deploy { .. } | StepKind::ApplyComponent { .. }
                ) {
                    continue;
                }
                match self
                    .progress(&app, &step, &desired, &ctx, &mut services)
                    .await
                {
                    Progress::Done => outcomes.push(Outcome::succeeded(&step)),
                    Progress::Failed(m) => outcomes.push(Outcome::failed(&step, &m)),
                    Progress::Waiting(m) => {
                        step_messages.insert(step.clone(), m);
                    }
                }
            }
            let now = unix_now();
            let before = state.clone();
            let (s, actions) =
                workflow::advance(&prepared.plan, &app, &state, &outcomes, now, resume_now);
            resume_now = false;
            state = s;
            let mut started_any = false;
            for a in actions {
                match a {
                    Action::Apply { .. } => started_any = true,
                    Action::Notify { step, properties } => {
                        let outcome = self.run_notification(&key, ns, &step, &properties).await;
                        self.push_outcome(&key, outcome);
                        started_any = true;
                    }
                    // Object steps run in the loop above, from the next round on.
                    Action::Run { type_name, .. }
                        if matches!(
                            type_name.as_str(),
                            "depends-on-app" | "apply-object" | "read-object"
                        ) =>
                    {
                        started_any = true;
                    }
                    Action::Run {
                        step, type_name, ..
                    } => {
                        self.push_outcome(
                            &key,
                            Outcome::failed(
                                &step,
                                &format!("step type `{type_name}` is not supported by Ferry"),
                            ),
                        );
                        started_any = true;
                    }
                    Action::WaitUntil(t) => {
                        next = next.min(Duration::from_secs(t.saturating_sub(now).max(1)));
                    }
                }
            }
            if !started_any && state == before {
                break;
            }
        }
        for s in state.steps.iter_mut() {
            if let Some(m) = step_messages.get(&s.name)
                && s.phase == Phase::Running
            {
                s.message = Some(m.clone());
            }
        }

        // 4. A finished workflow keeps its objects as declared (drift is re-applied) and its
        // health reported; garbage collection runs only after every step succeeded.
        let all_ok = state.finished
            && state
                .steps
                .iter()
                .all(|s| matches!(s.phase, Phase::Succeeded | Phase::Skipped));
        let mut applied_refs: Vec<Value> = Vec::new();
        let mut kept: HashSet<(String, ObjectKey)> = HashSet::new();
        for st in &state.steps {
            for name_ in std::iter::once(&st.name).chain(st.sub_steps.iter().map(|s| &s.name)) {
                let done = phase_of(&state, name_) == Some(Phase::Succeeded);
                let running = phase_of(&state, name_) == Some(Phase::Running);
                if !(done || running) {
                    continue;
                }
                if done && state.finished {
                    // Drift correction of the same revision: KubeVela's state keep.
                    ctx.stage = policy::ApplyStage::StateKeep;
                    let _ = self
                        .progress(&app, name_, &desired, &ctx, &mut services)
                        .await;
                }
                for (t, objs) in desired.get(name_).map(Vec::as_slice).unwrap_or(&[]) {
                    for d in objs {
                        if kept.insert((t.placement.cluster.clone(), d.key.clone())) {
                            applied_refs.push(json!({
                                "cluster": t.placement.cluster,
                                "creator": "workflow",
                                "apiVersion": d.api_version,
                                "kind": d.key.kind,
                                "namespace": d.key.namespace,
                                "name": d.key.name,
                            }));
                        }
                    }
                }
            }
        }
        let old_refs: Vec<Value> = old_status
            .get("appliedResources")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut gc_errors = Vec::new();
        // kustomize components with `prune: false` leave what left Git in place.
        let unpruned: HashSet<String> = prepared
            .sources
            .iter()
            .filter(|s| {
                matches!(
                    s.kind,
                    ferry_oam::SourceComponent::Kustomize { prune: false, .. }
                )
            })
            .map(|s| s.component.clone())
            .collect();
        if all_ok {
            let gc = app
                .spec
                .policies
                .iter()
                .find(|p| p.type_name == "garbage-collect")
                .and_then(|p| policy::GarbageCollect::from_policy(p).ok());
            for r in &old_refs {
                let Some((cluster, k, av)) = ref_key(r) else {
                    continue;
                };
                if kept.contains(&(cluster.clone(), k.clone())) {
                    continue;
                }
                match self
                    .collect(&key, &cluster, &k, &av, gc.as_ref(), &unpruned)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => applied_refs.push(r.clone()),
                    Err(e) => {
                        gc_errors.push(format!("deleting {k}: {e}"));
                        applied_refs.push(r.clone());
                    }
                }
            }
        } else {
            // Not finished: what was applied before stays recorded until the workflow ends.
            for r in &old_refs {
                if let Some((c, k, _)) = ref_key(r)
                    && !kept.contains(&(c, k))
                {
                    applied_refs.push(r.clone());
                }
            }
        }

        // 5. Status.
        let healthy = services.values().all(|s| s.healthy);
        let phase = match state.app_phase {
            workflow::AppPhase::RunningWorkflow => "runningWorkflow",
            workflow::AppPhase::WorkflowSuspending => "workflowSuspending",
            workflow::AppPhase::WorkflowTerminated => "workflowTerminated",
            workflow::AppPhase::Running if !healthy => "unhealthy",
            workflow::AppPhase::Running => "running",
        };
        let mut conditions = vec![
            condition("Parsed", true, "Parsed", ""),
            condition("Rendered", true, "Rendered", ""),
        ];
        if !gc_errors.is_empty() {
            conditions.push(condition(
                "GarbageCollected",
                false,
                "Error",
                &gc_errors.join("; "),
            ));
        }
        let status = json!({
            "observedGeneration": generation,
            "status": phase,
            "workflow": state,
            "services": services.values().map(Service::to_json).collect::<Vec<_>>(),
            "appliedResources": applied_refs,
            "conditions": conditions,
        });
        let written = self.write_status(ns, name, &old_status, status).await;
        // The request is consumed only once the state it produced is stored.
        if resume && written {
            let patch = json!({"metadata": {"annotations": {RESUME_ANNOTATION: null}}});
            let _ = self
                .api(ns)
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
        }
        if matches!(state.app_phase, workflow::AppPhase::RunningWorkflow)
            || (state.finished && !healthy)
        {
            next = next.min(WAIT_POLL);
        }
        Some(next)
    }

    fn push_outcome(&self, key: &str, o: Outcome) {
        if let Ok(mut m) = self.memo.lock() {
            m.entry(key.to_string()).or_default().outcomes.push(o);
        }
    }

    /// Whether a component may be a ref-objects one: its type is the built-in `ref-objects` or
    /// not a built-in at all (a platform team's definition could be one).
    fn may_refer(&self, app: &ferry_oam::Application) -> bool {
        let builtin = ferry_oam::sources::builtin_definitions().ok();
        app.spec
            .components
            .iter()
            .any(|c| match builtin.and_then(|b| b.component(&c.type_name)) {
                Some(d) => ferry_oam::refs::is_ref_objects_definition(d),
                None => true,
            })
    }

    async fn prepare(
        &self,
        key: &str,
        app: &ferry_oam::Application,
        ns: &str,
    ) -> Result<Arc<Prepared>, String> {
        let defs_version = self.definitions_version(ns);
        let mut clusters = self.cluster_infos();
        for c in clusters.iter_mut() {
            c.version = self.cluster_version(&c.name).await;
        }
        // Names, labels and versions: what placement and API versions depend on.
        let cluster_key: Vec<String> = clusters
            .iter()
            .map(|c| format!("{}|{:?}|{:?}", c.name, c.labels, c.version))
            .collect();
        // The objects ref-objects components read are not part of the Application's JSON.
        let referred: Vec<String> = app
            .spec
            .components
            .iter()
            .filter_map(|c| c.referred.as_ref())
            .map(|r| serde_json::to_string(r).unwrap_or_default())
            .collect();
        let input_key = hash_of(&(
            serde_json::to_string(app).unwrap_or_default(),
            referred,
            defs_version,
            cluster_key,
        ));
        if let Some((k, p)) = self
            .memo
            .lock()
            .ok()
            .and_then(|m| m.get(key).and_then(|e| e.prepared.clone()))
            && k == input_key
        {
            return Ok(p);
        }
        let (defs, broken) = self.definitions(ns);
        let app2 = app.clone();
        // Jsonnet values are not Send: the whole render runs on one blocking thread.
        let timeout = self.ctl.cfg.render_timeout;
        let task = tokio::task::spawn_blocking(move || prepare(&app2, defs, &clusters));
        let out = tokio::time::timeout(timeout, task)
            .await
            .map_err(|_| format!("rendering took longer than {}s", timeout.as_secs()))?
            .map_err(|e| format!("render task failed: {e}"))?;
        let p = match out {
            Ok(p) => Arc::new(p),
            Err(e) => {
                // A type whose definition is broken reads as "unknown"; say why instead.
                let used: HashSet<&str> = app
                    .spec
                    .components
                    .iter()
                    .flat_map(|c| {
                        std::iter::once(c.type_name.as_str())
                            .chain(c.traits.iter().map(|t| t.type_name.as_str()))
                    })
                    .collect();
                if let Some((n, why)) = broken.iter().find(|(n, _)| used.contains(n.as_str())) {
                    return Err(format!("definition `{n}` is invalid: {why}"));
                }
                return Err(e);
            }
        };
        if let Ok(mut m) = self.memo.lock() {
            m.entry(key.to_string()).or_default().prepared = Some((input_key, p.clone()));
        }
        Ok(p)
    }

    /// Fetches and renders a helm or kustomize component, at most once per pull interval.
    async fn fetch_source(
        &self,
        key: &str,
        ns: &str,
        app: &ferry_oam::Application,
        spec: &SourceSpec,
    ) -> Result<Arc<Vec<Value>>, String> {
        let spec_key = spec_hash(spec);
        // Per spec, not per component: an override may give one component a different
        // source on each cluster.
        let memo_key = format!("{}/{spec_key:x}", spec.component);
        let cached = self
            .memo
            .lock()
            .ok()
            .and_then(|m| m.get(key).and_then(|e| e.sources.get(&memo_key).cloned()));
        if let Some((k, at, _, objs)) = &cached
            && *k == spec_key
            && at.elapsed() < spec.poll_interval
        {
            return Ok(objs.clone());
        }
        // Only the app's own secretRef: Argo CD's repository credentials belong to its
        // projects, which KubeVela Applications are not part of.
        let creds = match &spec.secret_ref {
            Some(secret) => Some(self.secret_credentials(ns, secret).await?),
            None => None,
        };
        let tools = self.ctl.tools.clone()?;
        let s = &spec.source;
        let dest_ns = spec
            .destination_namespace
            .clone()
            .unwrap_or_else(|| ns.to_string());
        let same_as = cached
            .as_ref()
            .filter(|c| c.0 == spec_key)
            .map(|c| c.2.as_str());
        let Some(fetched) =
            crate::fetch::fetch(&self.ctl.sources, &tools, s, creds.as_ref(), same_as).await?
        else {
            // Same commit as last time: nothing to render again.
            if let Ok(mut m) = self.memo.lock()
                && let Some(e) = m.get_mut(key).and_then(|e| e.sources.get_mut(&memo_key))
            {
                e.1 = Instant::now();
            }
            return Ok(cached.map(|c| c.3).unwrap_or_default());
        };
        let revision = fetched.revision.clone();
        let conn = self.ctl.local.clone();
        let kube_version = conn.version().await.map_err(|e| sync::api_message(&e))?;
        let api_versions = conn
            .api_versions()
            .await
            .map_err(|e| sync::api_message(&e))?;
        let plugins = self.ctl.plugins();
        let target = crate::fetch::Target {
            app_name: &app.metadata.name,
            namespace: &dest_ns,
            kube_version: &kube_version,
            api_versions: &api_versions,
            plugins: &plugins,
            timeout: self.ctl.cfg.render_timeout,
        };
        let objs = Arc::new(crate::fetch::render(&tools, s, fetched, target).await?);
        if let Ok(mut m) = self.memo.lock() {
            m.entry(key.to_string())
                .or_default()
                .sources
                .insert(memo_key, (spec_key, Instant::now(), revision, objs.clone()));
        }
        Ok(objs)
    }

    /// Flux's `secretRef` in the app's namespace, read as Flux's GitRepository reads it.
    async fn secret_credentials(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<ferry_source::RepoCredentials, String> {
        let api: Api<Secret> = Api::namespaced(self.ctl.client.clone(), ns);
        let s = api
            .get(name)
            .await
            .map_err(|e| format!("secretRef {name}: {}", sync::api_message(&e)))?;
        Ok(crate::images::git_credentials(&s))
    }

    /// Places a target's objects: namespace, ownership labels, tracking id.
    async fn place(
        &self,
        app: &ferry_oam::Application,
        t: &Target,
        sources: &HashMap<u64, Arc<Vec<Value>>>,
        crds: &HashMap<(String, String), bool>,
    ) -> Result<Vec<Desired>, String> {
        let app_ns = app
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let ns = t.placement.namespace.clone().unwrap_or(app_ns.clone());
        let conn = self.conn(&t.placement.cluster).await?;
        let inst = instance(&app_ns, &app.metadata.name);
        let mut items: Vec<(String, Option<String>, Option<String>, Value)> = Vec::new();
        for c in &t.components {
            let spec = t.sources.iter().find(|s| s.component == c.name);
            if let Some(objs) = spec.and_then(|s| sources.get(&spec_hash(s))) {
                for o in objs.iter() {
                    items.push((c.name.clone(), None, None, o.clone()));
                }
            }
        }
        for r in &t.rendered {
            items.push((
                r.component.clone(),
                r.trait_type.clone(),
                r.output.clone(),
                r.object.clone(),
            ));
        }
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for (component, trait_type, output, mut obj) in items {
            let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_string();
            let kind = obj["kind"].as_str().unwrap_or_default().to_string();
            let group = api_version
                .rsplit_once('/')
                .map(|(g, _)| g.to_string())
                .unwrap_or_default();
            let namespaced = match conn.resolve(&api_version, &kind).await {
                Ok(r) => r.namespaced,
                Err(e) => match crds.get(&(group.clone(), kind.clone())) {
                    // Its CRD comes earlier in this app (the helm chart before the raw object).
                    Some(namespaced) => *namespaced,
                    None => {
                        return Err(format!(
                            "component `{component}`: cluster {} does not serve {api_version} {kind}: {}",
                            t.placement.cluster,
                            sync::api_message(&e)
                        ));
                    }
                },
            };
            let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
                return Err(format!("component `{component}`: {kind} without metadata"));
            };
            let name = meta
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if name.is_empty() {
                return Err(format!(
                    "component `{component}`: {kind} without metadata.name"
                ));
            }
            let mut obj_ns = meta
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if namespaced {
                if obj_ns.is_empty() || t.placement.namespace.is_some() && obj_ns == app_ns {
                    obj_ns = ns.clone();
                }
                meta.insert("namespace".into(), json!(obj_ns));
            } else {
                meta.remove("namespace");
                obj_ns.clear();
            }
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.entry(ferry_oam::LABEL_APP)
                    .or_insert_with(|| json!(app.metadata.name));
                l.entry(ferry_oam::LABEL_COMPONENT)
                    .or_insert_with(|| json!(component));
                l.entry("app.oam.dev/namespace")
                    .or_insert_with(|| json!(app_ns));
            }
            let key = ObjectKey {
                group,
                kind: kind.clone(),
                namespace: obj_ns,
                name,
            };
            let anns = meta.entry("annotations").or_insert_with(|| json!({}));
            if let Some(a) = anns.as_object_mut() {
                a.insert(
                    TRACKING_ID.into(),
                    json!(tracking::tracking_id(&inst, &key)),
                );
            }
            ferry_engine::diff::default_list_map_keys(&mut obj);
            if !seen.insert(key.clone()) {
                continue;
            }
            out.push(Desired {
                component,
                trait_type,
                output,
                key,
                api_version,
                object: obj,
            });
        }
        Ok(out)
    }

    /// Applies a step's objects layer by layer (each layer once the previous one is healthy)
    /// and reports whether every component is healthy on every target.
    async fn progress(
        &self,
        app: &ferry_oam::Application,
        step: &str,
        desired: &HashMap<String, Vec<(Target, Vec<Desired>)>>,
        ctx: &ApplyCtx,
        services: &mut BTreeMap<(String, String, String), Service>,
    ) -> Progress {
        let key = ctx.key.as_str();
        let Some(targets) = desired.get(step) else {
            return Progress::Done;
        };
        let mut waiting: Vec<String> = Vec::new();
        for (t, objs) in targets {
            let conn = match self.conn(&t.placement.cluster).await {
                Ok(c) => c,
                Err(e) => {
                    return self.failure(
                        key,
                        step,
                        format!("cluster {}: {e}", t.placement.cluster),
                    );
                }
            };
            if let Some(ns) = &t.placement.namespace
                && let Err(e) = self
                    .ensure_namespace(key, &conn, &t.placement.cluster, ns)
                    .await
            {
                return self.failure(key, step, format!("namespace {ns}: {e}"));
            }
            'layers: for layer in &t.layers {
                let mut layer_objs: Vec<Desired> = objs
                    .iter()
                    .filter(|d| layer.contains(&d.component))
                    .cloned()
                    .collect();
                // Components reading other components' outputs render now, from live values.
                for c in layer {
                    let Some(component) = t.components.iter().find(|x| &x.name == c) else {
                        continue;
                    };
                    if component.inputs.as_array().is_none_or(|a| a.is_empty()) {
                        continue;
                    }
                    // The producer may be deployed by another step (the implicit workflow has
                    // one per component): look in every step's objects for this cluster.
                    let here: Vec<&Desired> = desired
                        .values()
                        .flatten()
                        .filter(|(o, _)| o.placement == t.placement)
                        .flat_map(|(_, d)| d.iter())
                        .collect();
                    match self
                        .resolve_inputs(app, t, &here, component, &conn, ctx)
                        .await
                    {
                        Ok(fresh) => {
                            layer_objs.retain(|d| &d.component != c);
                            layer_objs.extend(fresh);
                        }
                        Err(e) => return self.failure(key, step, e),
                    }
                }
                layer_objs.sort_by_key(|d| plan::kind_rank(&d.key.kind));
                for d in &layer_objs {
                    if let Err(e) = self.ensure(key, &conn, &t.placement.cluster, d, ctx).await {
                        return self.failure(key, step, format!("{}: {e}", d.key));
                    }
                }
                let mut layer_ok = true;
                // A replicated component is judged copy by copy (each by its own objects).
                let copies: Vec<&ferry_oam::Component> = t
                    .components
                    .iter()
                    .filter(|x| layer.contains(&x.name))
                    .collect();
                for component in copies {
                    let c = &component.name;
                    let mine: Vec<&Desired> = layer_objs
                        .iter()
                        .filter(|d| {
                            &d.component == c
                                && d.object
                                    .pointer("/metadata/labels")
                                    .and_then(|l| l.get(ferry_oam::LABEL_REPLICA_KEY))
                                    .and_then(Value::as_str)
                                    == component.replica_key.as_deref()
                        })
                        .collect();
                    let svc = self
                        .component_health(app, component, &conn, &t.placement, &mine, &ctx.defs)
                        .await;
                    if !svc.healthy {
                        layer_ok = false;
                        waiting.push(format!(
                            "waiting for component `{c}` on cluster {} to be healthy{}",
                            t.placement.cluster,
                            if svc.message.is_empty() {
                                String::new()
                            } else {
                                format!(": {}", svc.message)
                            }
                        ));
                    }
                    // Copies of a replicated component share one entry: healthy when all are.
                    let k = (svc.name.clone(), svc.cluster.clone(), svc.namespace.clone());
                    match services.get_mut(&k) {
                        Some(prev) if component.replica_key.is_some() => {
                            prev.healthy &= svc.healthy;
                            if !svc.message.is_empty() && !prev.message.contains(&svc.message) {
                                if !prev.message.is_empty() {
                                    prev.message.push_str("; ");
                                }
                                prev.message.push_str(&svc.message);
                            }
                        }
                        _ => {
                            services.insert(k, svc);
                        }
                    }
                }
                if !layer_ok {
                    break 'layers;
                }
            }
        }
        if let Ok(mut m) = self.memo.lock() {
            m.entry(key.to_string()).or_default().failures.remove(step);
        }
        if waiting.is_empty() {
            Progress::Done
        } else {
            Progress::Waiting(waiting.join("; "))
        }
    }

    /// Renders `component` with its `inputs` filled from the live outputs of the components
    /// that declare them (on the same target).
    async fn resolve_inputs(
        &self,
        app: &ferry_oam::Application,
        t: &Target,
        objs: &[&Desired],
        component: &ferry_oam::Component,
        conn: &ClusterConn,
        ctx: &ApplyCtx,
    ) -> Result<Vec<Desired>, String> {
        let mut c = component.clone();
        let mut values = Vec::new();
        for input in component.inputs.as_array().into_iter().flatten() {
            let from = input
                .get("from")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let key = input
                .get("parameterKey")
                .and_then(Value::as_str)
                .unwrap_or_default();
            // Overrides may have changed the producer on this target; else the app's own.
            let found = t
                .components
                .iter()
                .chain(&app.spec.components)
                .find_map(|p| {
                    let o = p
                        .outputs
                        .as_array()?
                        .iter()
                        .find(|o| o.get("name").and_then(Value::as_str) == Some(from))?;
                    Some((p.name.clone(), o.get("valueFrom")?.as_str()?.to_string()))
                });
            let Some((producer, expr)) = found else {
                return Err(format!(
                    "component `{}`: input `{from}`: no component has an output of that name",
                    component.name
                ));
            };
            if key.is_empty() {
                return Err(format!(
                    "component `{}`: input `{from}` needs a parameterKey",
                    component.name
                ));
            }
            let mut output = json!({});
            let mut outputs = serde_json::Map::new();
            for d in objs
                .iter()
                .filter(|d| d.component == producer && d.trait_type.is_none())
            {
                let live = match conn.resolve(&d.api_version, &d.key.kind).await {
                    Ok(r) => conn.live(&r, &d.key.namespace, &d.key.name).await?,
                    Err(e) => return Err(sync::api_message(&e)),
                };
                let live = live.unwrap_or_else(|| d.object.clone());
                match &d.output {
                    None => output = live,
                    Some(n) => {
                        outputs.insert(n.clone(), live);
                    }
                }
            }
            values.push((
                producer,
                expr,
                output,
                Value::Object(outputs),
                key.to_string(),
            ));
        }
        c.depends_on.clear();
        // valueFrom and the template are user Jsonnet: off the async workers, with a limit.
        let (mut c2, mut a, defs) = (c.clone(), app.clone(), ctx.defs.clone());
        let version = self
            .cluster_version(&t.placement.cluster)
            .await
            .unwrap_or_default();
        let task = tokio::task::spawn_blocking(move || {
            for (producer, expr, output, outputs, key) in values {
                let v = ferry_oam::value_from(&producer, &expr, &output, &outputs)
                    .map_err(|e| e.to_string())?;
                ferry_oam::set_parameter(&mut c2.properties, &key, v);
            }
            a.spec.components = vec![c2.clone()];
            let rendered = ferry_oam::render_for(&a, &defs, version).map_err(|e| e.to_string())?;
            Ok::<_, String>((c2, rendered))
        });
        let limit = self.ctl.cfg.render_timeout;
        let (c, rendered) = tokio::time::timeout(limit, task)
            .await
            .map_err(|_| format!("rendering took longer than {}s", limit.as_secs()))?
            .map_err(|e| format!("render task failed: {e}"))??;
        let one = Target {
            placement: t.placement.clone(),
            layers: Vec::new(),
            components: vec![c],
            rendered,
            sources: Vec::new(),
        };
        self.place(app, &one, &HashMap::new(), &ctx.crds).await
    }

    /// A topology's namespace is created when missing, as KubeVela does.
    async fn ensure_namespace(
        &self,
        key: &str,
        conn: &ClusterConn,
        cluster: &str,
        ns: &str,
    ) -> Result<(), String> {
        let mk = (
            cluster.to_string(),
            ObjectKey {
                group: String::new(),
                kind: "Namespace".into(),
                namespace: String::new(),
                name: ns.to_string(),
            },
        );
        let known = self
            .memo
            .lock()
            .ok()
            .is_some_and(|m| m.get(key).is_some_and(|e| e.applied.contains_key(&mk)));
        if known {
            return Ok(());
        }
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(conn.client.clone());
        if api
            .get_opt(ns)
            .await
            .map_err(|e| sync::api_message(&e))?
            .is_none()
        {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            api.patch(
                ns,
                &PatchParams::apply(sync::FIELD_MANAGER),
                &Patch::Apply(&obj),
            )
            .await
            .map_err(|e| sync::api_message(&e))?;
        }
        if let Ok(mut m) = self.memo.lock() {
            m.entry(key.to_string())
                .or_default()
                .applied
                .insert(mk, (0, String::new()));
        }
        Ok(())
    }

    /// Apply errors are retried on the next passes; the third in a row fails the step.
    fn failure(&self, key: &str, step: &str, msg: String) -> Progress {
        let n = self
            .memo
            .lock()
            .ok()
            .map(|mut m| {
                let e = m.entry(key.to_string()).or_default();
                let pass = e.pass;
                let f = e.failures.entry(step.into()).or_insert((0, 0));
                if f.1 != pass {
                    *f = (f.0 + 1, pass);
                }
                f.0
            })
            .unwrap_or(3);
        if n >= 3 {
            Progress::Failed(msg)
        } else {
            Progress::Waiting(msg)
        }
    }

    /// Applies one object unless the live one is what our last apply left.
    async fn ensure(
        &self,
        key: &str,
        conn: &ClusterConn,
        cluster: &str,
        d: &Desired,
        ctx: &ApplyCtx,
    ) -> Result<(), String> {
        let want = hash_of(&d.object.to_string());
        let resolved = conn.resolve(&d.api_version, &d.key.kind).await.ok();
        let live = match &resolved {
            Some(r) => conn.live(r, &d.key.namespace, &d.key.name).await?,
            None => None,
        };
        let mk = (cluster.to_string(), d.key.clone());
        // read-only: looked at, never written, and whoever owns it may keep it.
        if ctx.read_only.as_ref().is_some_and(|p| p.selects(&d.object)) {
            return match live {
                Some(_) => Ok(()),
                None => Err(format!(
                    "{} ({}) is marked as read-only but does not exist; create it or remove it from the read-only policy",
                    d.key.kind, d.key.name
                )),
            };
        }
        if let Some(l) = &live {
            let mark = live_mark(l);
            let same = self
                .memo
                .lock()
                .ok()
                .and_then(|m| m.get(key).and_then(|e| e.applied.get(&mk).cloned()))
                .is_some_and(|(h, rv)| h == want && rv == mark);
            if same {
                return Ok(());
            }
        }
        // Another application's object: shared only when a shared-resource policy says so,
        // and then the first owner writes it (KubeVela's semantics).
        let tracked = live.as_ref().and_then(tracked_as);
        let owner = tracked
            .as_ref()
            .map(|(inst, _)| inst.clone())
            .filter(|inst| *inst != ctx.instance);
        if let Some(owner) = owner {
            if ctx
                .shared
                .as_ref()
                .is_some_and(|p| policy::is_shared(p, &d.object))
            {
                return Ok(());
            }
            let who = parse_instance(&owner)
                .map(|(n, a)| format!("application {n}/{a}"))
                .unwrap_or_else(|| format!("Argo CD application {owner}"));
            return Err(format!(
                "already managed by {who}; share it with a shared-resource policy"
            ));
        }
        // An object no application manages is adopted only when a take-over policy says so.
        let untracked = live.is_some() && tracked.is_none();
        if untracked
            && !ctx
                .take_over
                .as_ref()
                .is_some_and(|p| policy::is_shared(p, &d.object))
        {
            return Err(
                "already exists and no application manages it; adopt it with a take-over policy"
                    .to_string(),
            );
        }
        let desired = match &ctx.apply_once {
            Some(p) => {
                let paths = policy::apply_once_paths(p, &d.object, ctx.stage);
                match policy::keep_live_fields(&d.object, live.as_ref(), &paths) {
                    Some(v) => v,
                    // `*`: the object exists and is left alone.
                    None => return Ok(()),
                }
            }
            None => d.object.clone(),
        };
        let mut options = SyncOptions::default();
        if let (Some(strategy), Some(l)) = (
            ctx.resource_update
                .as_ref()
                .and_then(|p| p.strategy(&d.object)),
            &live,
        ) {
            if policy::must_recreate(strategy, &desired, l)? {
                self.recreate(conn, resolved.as_ref(), d).await?;
            } else if strategy.op == policy::UpdateOp::Replace {
                options.replace = true;
            }
        }
        let res = sync::Resource {
            key: d.key.clone(),
            resolved: resolved.clone(),
            desired,
            hook: plan::HookKind::None,
            options,
            out_of_sync: true,
        };
        let (_msg, applied) = sync::apply(conn, &res, false).await?;
        if let Some(a) = applied
            && let Ok(mut m) = self.memo.lock()
        {
            m.entry(key.to_string())
                .or_default()
                .applied
                .insert(mk, (want, live_mark(&a)));
        }
        Ok(())
    }

    /// Deletes the live object and waits until it is gone, so the apply after it creates it
    /// afresh (resource-update `recreateFields`).
    async fn recreate(
        &self,
        conn: &ClusterConn,
        resolved: Option<&ferry_engine::cluster::Resolved>,
        d: &Desired,
    ) -> Result<(), String> {
        let Some(r) = resolved else {
            return Ok(());
        };
        let api = conn.api(r, &d.key.namespace);
        match api.delete(&d.key.name, &Default::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(e) => {
                return Err(format!(
                    "deleting {} to recreate it: {}",
                    d.key,
                    sync::api_message(&e)
                ));
            }
        }
        for _ in 0..120 {
            match api.get_opt(&d.key.name).await {
                Ok(None) => return Ok(()),
                Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(500)).await,
                Err(e) => return Err(sync::api_message(&e)),
            }
        }
        Err(format!(
            "{} was not deleted within 60s to be recreated",
            d.key
        ))
    }

    /// Health of one component on one target: its definition's `healthPolicy` when it has
    /// one, otherwise the engine's assessment of its objects; each trait by its own policy.
    async fn component_health(
        &self,
        app: &ferry_oam::Application,
        component: &ferry_oam::Component,
        conn: &ClusterConn,
        placement: &Placement,
        objs: &[&Desired],
        defs: &Arc<Definitions>,
    ) -> Service {
        let mut live: Vec<(Desired, Option<Value>)> = Vec::new();
        let mut missing = Vec::new();
        for d in objs {
            let l = match conn.resolve(&d.api_version, &d.key.kind).await {
                Ok(r) => conn
                    .live(&r, &d.key.namespace, &d.key.name)
                    .await
                    .ok()
                    .flatten(),
                Err(_) => None,
            };
            if l.is_none() {
                missing.push(d.key.to_string());
            }
            live.push(((*d).clone(), l));
        }
        // Health expressions are user Jsonnet: they run off the async workers, with a limit.
        let (app2, comp2, place2, defs2) = (
            app.clone(),
            component.clone(),
            placement.clone(),
            defs.clone(),
        );
        let task = tokio::task::spawn_blocking(move || {
            assess_component(&app2, &comp2, &place2, &live, missing, &defs2)
        });
        let limit = self.ctl.cfg.render_timeout;
        match tokio::time::timeout(limit, task).await {
            Ok(Ok(svc)) => svc,
            outcome => Service {
                name: component.name.clone(),
                namespace: placement
                    .namespace
                    .clone()
                    .unwrap_or_else(|| app.metadata.namespace.clone().unwrap_or_default()),
                cluster: placement.cluster.clone(),
                healthy: false,
                message: match outcome {
                    Err(_) => format!("health evaluation took longer than {}s", limit.as_secs()),
                    _ => "health evaluation failed".to_string(),
                },
                workload: None,
                traits: Vec::new(),
            },
        }
    }

    /// Deletes one object that left the Application, unless a policy keeps it. Ok(false) =
    /// kept (and still recorded).
    /// The live object a record names, if it is this app's own: its tracking id names this
    /// app *and this very key*. `Ok(None)` = gone, or someone else's (then the record is
    /// stale and nothing may be deleted). A kind the cluster no longer serves counts as
    /// gone; any other failure to look is an error, never "gone".
    async fn owned_live(
        &self,
        key: &str,
        cluster: &str,
        k: &ObjectKey,
        api_version: &str,
    ) -> Result<Option<(Arc<ClusterConn>, ferry_engine::cluster::Resolved, Value)>, String> {
        let conn = self.conn(cluster).await?;
        let resolved = match conn.resolve(api_version, &k.kind).await {
            Ok(r) => r,
            Err(e) => {
                let served = conn
                    .api_versions()
                    .await
                    .map_err(|e2| format!("cluster {cluster}: {}", sync::api_message(&e2)))?;
                if served.iter().any(|v| v == api_version) {
                    return Err(sync::api_message(&e));
                }
                return Ok(None);
            }
        };
        let Some(live) = conn.live(&resolved, &k.namespace, &k.name).await? else {
            return Ok(None);
        };
        let (ns, name) = key.split_once('/').unwrap_or_default();
        let me = instance(ns, name);
        let ours = tracked_as(&live).is_some_and(|(inst, tk)| inst == me && tk == *k);
        Ok(ours.then_some((conn, resolved, live)))
    }

    /// Deletes one object that left the Application, unless a policy keeps it. Ok(false) =
    /// kept (and still recorded).
    async fn collect(
        &self,
        key: &str,
        cluster: &str,
        k: &ObjectKey,
        api_version: &str,
        gc: Option<&policy::GarbageCollect>,
        unpruned: &HashSet<String>,
    ) -> Result<bool, String> {
        let Some((conn, resolved, live)) = self.owned_live(key, cluster, k, api_version).await?
        else {
            return Ok(true);
        };
        if let Some(gc) = gc
            && policy::gc_strategy(gc, &live) != policy::GcStrategy::OnAppUpdate
        {
            return Ok(false);
        }
        let component = live
            .pointer("/metadata/labels")
            .and_then(|l| l.get(ferry_oam::LABEL_COMPONENT))
            .and_then(Value::as_str)
            .unwrap_or_default();
        if unpruned.contains(component) {
            return Ok(false);
        }
        sync::delete(&conn, Some(&resolved), k, "foreground").await?;
        Ok(true)
    }

    async fn finalize(
        &self,
        ns: &str,
        name: &str,
        obj: &DynamicObject,
        status: &Value,
    ) -> Option<Duration> {
        let key = format!("{ns}/{name}");
        if !obj.finalizers().iter().any(|f| f == FINALIZER) {
            return None;
        }
        let app: Option<ferry_oam::Application> = serde_json::to_value(obj)
            .ok()
            .and_then(|v| serde_json::from_value(v).ok());
        let gc = app.as_ref().and_then(|a| {
            a.spec
                .policies
                .iter()
                .find(|p| p.type_name == "garbage-collect")
                .and_then(|p| policy::GarbageCollect::from_policy(p).ok())
        });
        let mut errors = Vec::new();
        for r in status
            .get("appliedResources")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            let Some((cluster, k, av)) = ref_key(&r) else {
                continue;
            };
            // Only this app's own objects go: not another app's, not a shared one it only
            // used, not one a failed step never took.
            let res = match self.owned_live(&key, &cluster, &k, &av).await {
                Ok(Some((conn, resolved, live))) => {
                    if gc
                        .as_ref()
                        .is_some_and(|g| policy::gc_strategy(g, &live) == policy::GcStrategy::Never)
                    {
                        continue;
                    }
                    // OnAppDelete objects go now too; collect() keeps them only on update.
                    sync::delete(&conn, Some(&resolved), &k, "foreground").await
                }
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = res {
                errors.push(format!("{k}: {e}"));
            }
        }
        if !errors.is_empty() {
            tracing::warn!(app = %key, errors = %errors.join("; "), "deleting resources");
            return Some(Duration::from_secs(10));
        }
        let fins: Vec<String> = obj
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .cloned()
            .collect();
        let patch =
            json!({"metadata": {"finalizers": fins, "resourceVersion": obj.resource_version()}});
        if let Err(e) = self
            .api(ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::debug!(app = %key, error = %e, "removing finalizer");
            return Some(Duration::from_secs(2));
        }
        if let Ok(mut m) = self.memo.lock() {
            m.remove(&key);
        }
        None
    }

    /// KubeVela's notification step, webhook flavour: POST `message` as JSON to `url`.
    async fn notify(&self, ns: &str, properties: &Value) -> Result<(), String> {
        let hook = properties
            .get("webhook")
            .ok_or("only webhook notifications are supported (properties.webhook)")?;
        let url = match hook.get("url") {
            Some(Value::String(s)) => s.clone(),
            Some(u) => match (u.get("value"), u.get("secretRef")) {
                (Some(Value::String(s)), _) => s.clone(),
                (_, Some(r)) => {
                    let name = r.get("name").and_then(Value::as_str).unwrap_or_default();
                    let k = r.get("key").and_then(Value::as_str).unwrap_or("url");
                    let api: Api<Secret> = Api::namespaced(self.ctl.client.clone(), ns);
                    let s = api.get(name).await.map_err(|e| {
                        format!("webhook secretRef {name}: {}", sync::api_message(&e))
                    })?;
                    s.data
                        .and_then(|d| d.get(k).cloned())
                        .and_then(|b| String::from_utf8(b.0).ok())
                        .ok_or_else(|| format!("webhook secretRef {name} has no key {k}"))?
                }
                _ => return Err("webhook.url needs value or secretRef".into()),
            },
            None => return Err("webhook.url is required".into()),
        };
        let message = hook.get("message").cloned().unwrap_or(json!({}));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        // The URL may carry a token (Slack, DingTalk): errors name the host only.
        let host = reqwest::Url::parse(&url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        let resp = client
            .post(&url)
            .json(&message)
            .send()
            .await
            .map_err(|e| format!("webhook to {host}: {}", e.without_url()))?;
        if !resp.status().is_success() {
            return Err(format!("webhook to {host} answered {}", resp.status()));
        }
        Ok(())
    }

    async fn write_error(&self, ns: &str, name: &str, old: &Value, type_: &str, msg: &str) {
        let mut status = if old.is_object() {
            old.clone()
        } else {
            json!({})
        };
        status["status"] = json!("rendering");
        // Keep the generation the workflow last ran for: fixing the error restarts it.
        let ok = |t: &str| condition(t, true, t, "");
        let conds = match type_ {
            "Parsed" => vec![condition("Parsed", false, "ParseError", msg)],
            _ => vec![
                ok("Parsed"),
                condition("Rendered", false, "RenderError", msg),
            ],
        };
        status["conditions"] = json!(conds);
        self.write_status(ns, name, old, status).await;
    }

    /// Replaces `status` when it differs from what the API server has.
    /// Returns whether the API server has `new` now (written, or already equal).
    async fn write_status(&self, ns: &str, name: &str, old: &Value, new: Value) -> bool {
        if strip_times(old) == strip_times(&new) {
            return true;
        }
        let patch = json!({"status": new});
        match self
            .api(ns)
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(&patch_with_nulls(old, &patch)),
            )
            .await
        {
            Ok(o) => {
                let involved = json!({
                    "apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
                    "namespace": ns, "name": name, "uid": o.uid(),
                });
                crate::events::emit_for(
                    &self.ctl.client,
                    involved,
                    json!({}),
                    "ferry-kubevela",
                    crate::events::oam_status_changes(old, &new),
                );
                let rv = o
                    .resource_version()
                    .and_then(|r| r.parse::<u64>().ok())
                    .unwrap_or(0);
                if let Ok(mut m) = self.memo.lock() {
                    m.entry(format!("{ns}/{name}")).or_default().written = Some((rv, new));
                }
                true
            }
            Err(e) => {
                tracing::debug!(app = %format!("{ns}/{name}"), error = %e, "writing status");
                false
            }
        }
    }

    /// Sends a notification step once per generation and records that it was sent.
    async fn run_notification(&self, key: &str, ns: &str, step: &str, props: &Value) -> Outcome {
        if let Ok(mut m) = self.memo.lock() {
            m.entry(key.to_string())
                .or_default()
                .notified
                .insert(step.to_string());
        }
        match self.notify(ns, props).await {
            Ok(()) => Outcome::succeeded(step),
            Err(m) => Outcome::failed(step, &m),
        }
    }
}

/// Health of one component on one target from its live objects: its definition's
/// `healthPolicy` when it has one, otherwise the engine's assessment of its objects; each
/// trait by its own policy.
fn assess_component(
    app: &ferry_oam::Application,
    component: &ferry_oam::Component,
    placement: &Placement,
    live: &[(Desired, Option<Value>)],
    missing: Vec<String>,
    defs: &Definitions,
) -> Service {
    let workload = live
        .iter()
        .find(|(d, _)| d.trait_type.is_none() && d.output.is_none())
        .or_else(|| live.iter().find(|(d, _)| d.trait_type.is_none()));
    let ns = workload
        .map(|(d, _)| d.key.namespace.clone())
        .or_else(|| placement.namespace.clone())
        .unwrap_or_else(|| app.metadata.namespace.clone().unwrap_or_default());
    let mut svc = Service {
        name: component.name.clone(),
        namespace: ns,
        cluster: placement.cluster.clone(),
        healthy: true,
        message: String::new(),
        workload: workload.map(|(d, _)| (d.api_version.clone(), d.key.kind.clone())),
        traits: Vec::new(),
    };
    if !missing.is_empty() {
        svc.healthy = false;
        svc.message = format!("missing: {}", missing.join(", "));
    }
    let mut ctx = ferry_oam::component_context(app, component);
    let outputs_of = |tt: Option<&str>| -> Value {
        let mut m = serde_json::Map::new();
        for (d, l) in live {
            if d.trait_type.as_deref() == tt
                && let (Some(o), Some(l)) = (&d.output, l)
            {
                m.insert(o.clone(), l.clone());
            }
        }
        Value::Object(m)
    };
    ctx["output"] = workload.and_then(|(_, l)| l.clone()).unwrap_or(json!({}));
    let comp_def = defs.component(&component.type_name);
    let def_status = comp_def.and_then(|d| d.spec.status.clone());
    let comp_param = comp_def
        .map(|d| ferry_oam::parameter(&d.spec.schematic, &component.properties))
        .unwrap_or_else(|| component.properties.clone());
    let site = ferry_oam::Site {
        component: component.name.clone(),
        trait_type: None,
    };
    let has_policy = def_status
        .as_ref()
        .is_some_and(|s| s.health_policy.is_some());
    if svc.healthy {
        if has_policy {
            let mut c = ctx.clone();
            c["outputs"] = outputs_of(None);
            match ferry_oam::evaluate_status(
                &component.type_name,
                def_status.as_ref(),
                &comp_param,
                &c,
                &site,
            ) {
                Ok(h) => {
                    svc.healthy = h.healthy;
                    svc.message = h.message.unwrap_or_default();
                }
                Err(e) => {
                    svc.healthy = false;
                    svc.message = e.to_string();
                }
            }
        } else {
            let hs: Vec<_> = live
                .iter()
                .filter(|(d, _)| d.trait_type.is_none())
                .filter_map(|(_, l)| l.as_ref().and_then(health::assess))
                .collect();
            let worst = health::worst(hs.iter());
            if worst.status != health::HEALTHY && !hs.is_empty() {
                svc.healthy = false;
                svc.message = worst.message.clone().unwrap_or(worst.status.clone());
            }
        }
    }
    for t in &component.traits {
        let Some(def) = defs.trait_def(&t.type_name) else {
            continue;
        };
        let mut c = ctx.clone();
        c["outputs"] = outputs_of(Some(&t.type_name));
        let site = ferry_oam::Site {
            component: component.name.clone(),
            trait_type: Some(t.type_name.clone()),
        };
        let trait_missing = live
            .iter()
            .any(|(d, l)| d.trait_type.as_deref() == Some(t.type_name.as_str()) && l.is_none());
        let (h, m) = if trait_missing {
            (false, "waiting for its objects".to_string())
        } else {
            match ferry_oam::evaluate_status(
                &t.type_name,
                def.spec.status.as_ref(),
                &ferry_oam::parameter(&def.spec.schematic, &t.properties),
                &c,
                &site,
            ) {
                Ok(h) => (h.healthy, h.message.unwrap_or_default()),
                Err(e) => (false, e.to_string()),
            }
        };
        if !h {
            svc.healthy = false;
        }
        svc.traits.push((t.type_name.clone(), h, m));
    }
    svc
}

fn prepare(
    app: &ferry_oam::Application,
    defs: Definitions,
    clusters: &[ClusterInfo],
) -> Result<Prepared, String> {
    policy::check_policies(app).map_err(|e| e.to_string())?;
    let with_inputs = ferry_oam::with_input_dependencies(app);
    let app = &with_inputs;
    let plan = Plan::from_application(app, &[]).map_err(|e| e.to_string())?;
    // The whole app renders (and validates) even when a step deploys only part of it.
    ferry_oam::render(app, &defs).map_err(|e| e.to_string())?;
    // Every distinct source any target fetches (overrides may differ per cluster).
    let mut sources = ferry_oam::sources(app, &defs).map_err(|e| e.to_string())?;
    let mut targets = HashMap::new();
    let mut all = Vec::new();
    visit(&plan.steps, &mut |s| all.push(s.clone()));
    for step in all {
        let ts: Vec<(Placement, Vec<ferry_oam::Component>)> = match &step.kind {
            StepKind::Deploy { policies } => policy::deploy_targets(app, policies, clusters)
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|t| (t.placement, t.components))
                .collect(),
            StepKind::ApplyComponent { component } => {
                let c = app
                    .spec
                    .components
                    .iter()
                    .find(|c| &c.name == component)
                    .cloned()
                    .ok_or_else(|| format!("step `{}`: no component `{component}`", step.name))?;
                let cluster = step
                    .properties
                    .get("cluster")
                    .and_then(Value::as_str)
                    .unwrap_or(policy::LOCAL_CLUSTER)
                    .to_string();
                vec![(
                    Placement {
                        cluster,
                        namespace: None,
                    },
                    vec![c],
                )]
            }
            _ => continue,
        };
        let mut v = Vec::new();
        for (placement, components) in ts {
            let mut a = app.clone();
            a.spec.components = components.clone();
            // dependsOn outside this step's components is the workflow's business.
            let names: HashSet<String> = components.iter().map(|c| c.name.clone()).collect();
            for c in a.spec.components.iter_mut() {
                c.depends_on.retain(|d| names.contains(d));
            }
            let layers = workflow::component_order(&a).map_err(|e| e.to_string())?;
            // API versions follow the target cluster (KubeVela's context.clusterVersion).
            let version = clusters
                .iter()
                .find(|c| c.name == placement.cluster)
                .and_then(|c| c.version)
                .unwrap_or_default();
            let rendered = ferry_oam::render_for(&a, &defs, version).map_err(|e| e.to_string())?;
            let target_sources = ferry_oam::sources(&a, &defs).map_err(|e| e.to_string())?;
            for s in &target_sources {
                if !sources.iter().any(|x| spec_hash(x) == spec_hash(s)) {
                    sources.push(s.clone());
                }
            }
            v.push(Target {
                placement,
                layers,
                components: a.spec.components.clone(),
                rendered,
                sources: target_sources,
            });
        }
        targets.insert(step.name.clone(), v);
    }
    Ok(Prepared {
        plan,
        targets,
        sources,
        defs: Arc::new(defs),
    })
}

fn visit(steps: &[workflow::Step], f: &mut impl FnMut(&workflow::Step)) {
    for s in steps {
        f(s);
        if let StepKind::StepGroup { sub_steps } = &s.kind {
            visit(sub_steps, f);
        }
    }
}

fn find_step<'a>(steps: &'a [workflow::Step], name: &str) -> Option<&'a workflow::Step> {
    for s in steps {
        if s.name == name {
            return Some(s);
        }
        if let StepKind::StepGroup { sub_steps } = &s.kind
            && let Some(f) = find_step(sub_steps, name)
        {
            return Some(f);
        }
    }
    None
}

fn running_steps(state: &State) -> Vec<String> {
    let mut out = Vec::new();
    for s in &state.steps {
        if s.phase == Phase::Running {
            out.push(s.name.clone());
        }
        for ss in &s.sub_steps {
            if ss.phase == Phase::Running {
                out.push(ss.name.clone());
            }
        }
    }
    out
}

fn phase_of(state: &State, name: &str) -> Option<Phase> {
    state.step(name).map(|s| s.phase)
}

/// What our last apply left: objects whose spec has a generation change it on every spec
/// write; others (ConfigMaps, Services) change their resourceVersion.
fn live_mark(v: &Value) -> String {
    match v.pointer("/metadata/generation").and_then(Value::as_i64) {
        Some(g) => format!("g{g}"),
        None => v
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .map(|r| format!("rv{r}"))
            .unwrap_or_default(),
    }
}

fn ref_key(r: &Value) -> Option<(String, ObjectKey, String)> {
    let s = |k: &str| {
        r.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let av = s("apiVersion");
    let kind = s("kind");
    let name = s("name");
    if kind.is_empty() || name.is_empty() {
        return None;
    }
    let group = av
        .rsplit_once('/')
        .map(|(g, _)| g.to_string())
        .unwrap_or_default();
    let cluster = match s("cluster") {
        c if c.is_empty() => policy::LOCAL_CLUSTER.to_string(),
        c => c,
    };
    Some((
        cluster,
        ObjectKey {
            group,
            kind,
            namespace: s("namespace"),
            name,
        },
        av,
    ))
}

fn condition(type_: &str, ok: bool, reason: &str, message: &str) -> Value {
    let mut c = json!({
        "type": type_,
        "status": if ok { "True" } else { "False" },
        "reason": reason,
    });
    if !message.is_empty() {
        c["message"] = json!(message);
    }
    c
}

/// Status without step times, so a pass that changed nothing else writes nothing.
fn strip_times(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(steps) = v
        .pointer_mut("/workflow/steps")
        .and_then(Value::as_array_mut)
    {
        for s in steps {
            if let Some(o) = s.as_object_mut() {
                o.remove("lastExecuteTime");
            }
            if let Some(subs) = s.get_mut("subSteps").and_then(Value::as_array_mut) {
                for ss in subs {
                    if let Some(o) = ss.as_object_mut() {
                        o.remove("lastExecuteTime");
                    }
                }
            }
        }
    }
    v
}

/// A merge patch that also removes the old status keys the new one lacks (a merge patch
/// would otherwise keep them).
fn patch_with_nulls(old: &Value, patch: &Value) -> Value {
    fn fill(old: &Value, new: &mut Value) {
        if let (Some(o), Some(n)) = (old.as_object(), new.as_object_mut()) {
            for (k, ov) in o {
                match n.get_mut(k) {
                    None => {
                        n.insert(k.clone(), Value::Null);
                    }
                    Some(nv) => fill(ov, nv),
                }
            }
        }
    }
    let mut p = patch.clone();
    if let Some(s) = p.get_mut("status") {
        fill(old, s);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_round_trip_and_never_look_like_argo_ones() {
        let i = instance("default", "my-app");
        assert_eq!(
            parse_instance(&i),
            Some(("default".into(), "my-app".into()))
        );
        assert_eq!(parse_instance("default_my-app"), None);
        assert_eq!(parse_instance("my-app"), None);
    }

    #[test]
    fn merge_patch_removes_keys_the_new_status_lacks() {
        let old = json!({"a": 1, "w": {"x": 1, "y": 2}, "l": [1]});
        let p = patch_with_nulls(&old, &json!({"status": {"w": {"x": 3}}}));
        assert_eq!(
            p,
            json!({"status": {"a": null, "w": {"x": 3, "y": null}, "l": null}})
        );
    }

    #[test]
    fn live_mark_prefers_generation() {
        assert_eq!(
            live_mark(&json!({"metadata": {"generation": 3, "resourceVersion": "9"}})),
            "g3"
        );
        assert_eq!(
            live_mark(&json!({"metadata": {"resourceVersion": "9"}})),
            "rv9"
        );
    }
}

//! Flux image automation, reconciled natively: ImageRepository scans a
//! registry, ImagePolicy picks a tag, ImageUpdateAutomation writes it into
//! Git as one commit, and the Applications reading that repository are
//! refreshed at once.
//!
//! Scanned tags live in memory only (a new leader scans again); everything
//! a user sees is in the objects' status.

use crate::Controller;
use crate::queue::Queue;
use ferry_image::policy::{Choice, Order, Policy, TagFilter};
use ferry_image::registry::{self, ImageName};
use ferry_image::setters::{self, LatestImage, PolicyRef};
use ferry_image::template::{self, Value};
use ferry_model::flux::{
    Condition, GitRepository, ImagePolicy, ImagePolicyStatus, ImageRef, ImageRepository,
    ImageRepositoryStatus, ImageUpdateAutomation, ImageUpdateAutomationStatus,
    RECONCILE_REQUESTED_AT, ScanResult,
};
use ferry_model::parse_go_duration;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);
/// First retry delay after a failure; it doubles per consecutive failure up
/// to the object's interval, so a fixed Secret is noticed soon but a broken
/// registry or Git server is not hammered (nor a registry account locked).
const RETRY: Duration = Duration::from_secs(10);

/// Flux's default commit message when `messageTemplate` is empty.
const DEFAULT_MESSAGE: &str = "Update from image update automation";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Repo,
    Policy,
    Auto,
}

fn key(kind: Kind, ns: &str, name: &str) -> String {
    let k = match kind {
        Kind::Repo => "r",
        Kind::Policy => "p",
        Kind::Auto => "a",
    };
    format!("{k}/{ns}/{name}")
}

fn parse_key(k: &str) -> Option<(Kind, &str, &str)> {
    let mut it = k.splitn(3, '/');
    let kind = match it.next()? {
        "r" => Kind::Repo,
        "p" => Kind::Policy,
        "a" => Kind::Auto,
        _ => return None,
    };
    Some((kind, it.next()?, it.next()?))
}

/// What makes an object worth another run: a new object (uid), a spec
/// change (generation) or a `reconcile.fluxcd.io/requestedAt` request.
type Signature = (Option<String>, Option<i64>, Option<String>);

struct Scanned {
    canonical: String,
    tags: Arc<Vec<String>>,
}

pub(crate) struct Images {
    client: Client,
    ctl: Arc<Controller>,
    repos: Store<ImageRepository>,
    policies: Store<ImagePolicy>,
    autos: Store<ImageUpdateAutomation>,
    gitrepos: Store<GitRepository>,
    scanned: Mutex<HashMap<(String, String), Scanned>>,
    /// Each policy's pick as this process last computed it: newer than the
    /// watch cache until our status write comes back.
    latest: Mutex<HashMap<(String, String), ImageRef>>,
    /// Signature last acted on per object: status writes come back as watch
    /// events and must not trigger another run.
    seen: Mutex<HashMap<String, Signature>>,
    /// Consecutive failures per queue key, for the retry backoff.
    failures: Mutex<HashMap<String, u32>>,
    queue: Queue,
}

/// The outcome of one run, for the Ready condition.
struct Outcome {
    ok: bool,
    reason: &'static str,
    message: String,
}

impl Outcome {
    fn ok(message: String) -> Outcome {
        Outcome {
            ok: true,
            reason: "Succeeded",
            message,
        }
    }
    fn failed(reason: &'static str, message: String) -> Outcome {
        Outcome {
            ok: false,
            reason,
            message,
        }
    }
}

/// Why a policy has no pick.
enum NoPick {
    /// This process has not scanned the repository yet (a new leader):
    /// not a failure, and not worth a status write.
    NotScannedYet,
    Failed(&'static str, String),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now() -> String {
    let t = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

/// The Ready condition, keeping the transition time when nothing changed.
fn ready(
    prev: &[Condition],
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Vec<Condition> {
    let status = if ok { "True" } else { "False" };
    let old = prev.iter().find(|c| c.type_ == "Ready");
    let time = match old {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => None,
    }
    .unwrap_or_else(now);
    vec![Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: Some(time),
        observed_generation: generation,
    }]
}

fn interval_of(spec: Option<&str>) -> Duration {
    spec.and_then(parse_go_duration)
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_INTERVAL)
}

fn requested_at<K: Resource>(o: &K) -> Option<String> {
    o.meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(RECONCILE_REQUESTED_AT).cloned())
}

impl Images {
    /// Starts the watches and workers in the background (Applications are
    /// served meanwhile); they stop when the returned guard is dropped.
    /// Does nothing, with a warning, when the v1 API is not served or Flux's
    /// own image controllers are running.
    pub(crate) async fn start(client: Client, ctl: Arc<Controller>) -> crate::TaskGuard {
        let mut tasks = crate::TaskGuard(Vec::new());
        for gv in ["image.toolkit.fluxcd.io/v1", "source.toolkit.fluxcd.io/v1"] {
            if let Err(e) = client.list_api_group_resources(gv).await {
                tracing::warn!(api = gv, error = %e, "image automation off: the API is not served (Flux CRDs older than v2.7 installed?)");
                return tasks;
            }
        }
        if let Some(d) = flux_image_controller(&client).await {
            tracing::warn!(deployment = %d, "image automation off: Flux's own image controller is running; Ferry will not fight it");
            return tasks;
        }
        fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
        where
            K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
        {
            match ns {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            }
        }
        let scope = ctl.cfg.image_namespace.clone();
        let scope = scope.as_deref();
        let (repos, repos_w) = reflector::store::<ImageRepository>();
        let (policies, policies_w) = reflector::store::<ImagePolicy>();
        let (autos, autos_w) = reflector::store::<ImageUpdateAutomation>();
        let (gitrepos, gitrepos_w) = reflector::store::<GitRepository>();
        let me = Arc::new(Images {
            client: client.clone(),
            ctl,
            repos: repos.clone(),
            policies: policies.clone(),
            autos: autos.clone(),
            gitrepos: gitrepos.clone(),
            scanned: Mutex::new(HashMap::new()),
            latest: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            queue: Queue::default(),
        });
        tasks
            .0
            .push(me.clone().watch(api(&client, scope), repos_w, |o| {
                vec![(Kind::Repo, o.namespace().unwrap_or_default(), o.name_any())]
            }));
        tasks
            .0
            .push(me.clone().watch(api(&client, scope), policies_w, |o| {
                vec![(
                    Kind::Policy,
                    o.namespace().unwrap_or_default(),
                    o.name_any(),
                )]
            }));
        tasks
            .0
            .push(me.clone().watch(api(&client, scope), autos_w, |o| {
                vec![(Kind::Auto, o.namespace().unwrap_or_default(), o.name_any())]
            }));
        // A GitRepository change matters to the automations that use it.
        let me2 = me.clone();
        tasks.0.push(me.clone().watch(
            api(&client, scope),
            gitrepos_w,
            move |g: &GitRepository| {
                let ns = g.namespace().unwrap_or_default();
                me2.autos
                    .state()
                    .iter()
                    .filter(|a| {
                        a.spec.source_ref.name == g.name_any()
                            && a.spec
                                .source_ref
                                .namespace
                                .clone()
                                .or_else(|| a.namespace())
                                .as_deref()
                                == Some(ns.as_str())
                    })
                    .map(|a| (Kind::Auto, a.namespace().unwrap_or_default(), a.name_any()))
                    .collect()
            },
        ));
        let me2 = me.clone();
        tasks.0.push(tokio::spawn(async move {
            for r in [
                repos.wait_until_ready().await,
                policies.wait_until_ready().await,
                autos.wait_until_ready().await,
                gitrepos.wait_until_ready().await,
            ] {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "image automation off: initial list failed");
                    return;
                }
            }
            // Dropped (aborting the workers) when this task is aborted.
            let mut workers = crate::TaskGuard(Vec::new());
            for _ in 0..4 {
                let me = me2.clone();
                workers.0.push(tokio::spawn(async move {
                    loop {
                        let k = me.queue.next().await;
                        let next = me.reconcile(&k).await;
                        me.queue.done(&k);
                        if let Some(d) = next {
                            me.queue.add_after(&k, d);
                        }
                    }
                }));
            }
            futures::future::join_all(workers.0.iter_mut()).await;
        }));
        tasks
    }

    fn watch<K, F>(
        self: Arc<Self>,
        api: Api<K>,
        writer: reflector::store::Writer<K>,
        keys: F,
    ) -> tokio::task::JoinHandle<()>
    where
        K: Resource<DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + Send
            + Sync
            + 'static,
        F: Fn(&K) -> Vec<(Kind, String, String)> + Send + 'static,
    {
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .touched_objects();
        tokio::spawn(async move {
            let mut s = stream.boxed();
            while let Some(ev) = s.next().await {
                let Ok(obj) = ev else { continue };
                let sig = (
                    obj.meta().uid.clone(),
                    obj.meta().generation,
                    requested_at(&obj),
                );
                let id = seen_key::<K>(
                    obj.meta().namespace.as_deref().unwrap_or_default(),
                    obj.meta().name.as_deref().unwrap_or_default(),
                );
                {
                    let mut seen = lock(&self.seen);
                    if seen.get(&id) == Some(&sig) {
                        continue;
                    }
                    seen.insert(id, sig);
                }
                for (kind, ns, name) in keys(&obj) {
                    self.queue.add(&key(kind, &ns, &name));
                }
            }
        })
    }

    /// The delay after a run: the interval on success, a doubling retry
    /// (capped at the interval) on failure.
    fn next_run(&self, k: &str, ok: bool, interval: Duration) -> Duration {
        let mut failures = lock(&self.failures);
        if ok {
            failures.remove(k);
            return interval;
        }
        let n = failures.entry(k.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        let backoff = RETRY.saturating_mul(1u32 << (*n - 1).min(16));
        backoff.min(interval)
    }

    async fn reconcile(self: &Arc<Self>, k: &str) -> Option<Duration> {
        let (kind, ns, name) = parse_key(k)?;
        match kind {
            Kind::Repo => self.reconcile_repo(ns, name).await,
            Kind::Policy => self.reconcile_policy(ns, name).await,
            Kind::Auto => self.reconcile_auto(ns, name).await,
        }
    }

    fn find<K>(store: &Store<K>, ns: &str, name: &str) -> Option<Arc<K>>
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        store.get(&reflector::ObjectRef::new(name).within(ns))
    }

    async fn secret(&self, ns: &str, name: &str) -> Result<Secret, String> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        match api.get_opt(name).await {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err(format!("Secret {ns}/{name} not found")),
            Err(e) => Err(format!("reading Secret {ns}/{name}: {e}")),
        }
    }

    // ---- ImageRepository -------------------------------------------------

    async fn reconcile_repo(self: &Arc<Self>, ns: &str, name: &str) -> Option<Duration> {
        let Some(repo) = Self::find(&self.repos, ns, name) else {
            lock(&self.scanned).remove(&(ns.to_string(), name.to_string()));
            lock(&self.seen).remove(&seen_key::<ImageRepository>(ns, name));
            return None;
        };
        if repo.spec.suspend {
            return None;
        }
        let interval = interval_of(repo.spec.interval.as_deref());
        let prev = repo.status.clone().unwrap_or_default();
        let generation = repo.metadata.generation;
        let mut status = ImageRepositoryStatus {
            observed_generation: generation,
            last_handled_reconcile_at: requested_at(&*repo)
                .or(prev.last_handled_reconcile_at.clone()),
            observed_exclusion_list: repo.spec.exclusion_list.clone().unwrap_or_else(|| {
                registry::DEFAULT_EXCLUSIONS
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            }),
            ..prev.clone()
        };
        let result = self.scan(ns, &repo, interval).await;
        let next = match result {
            Ok((canonical, tags)) => {
                tracing::debug!(imagerepository = %format!("{ns}/{name}"), tags = tags.len(), "scanned");
                status.canonical_image_name = Some(canonical.clone());
                status.last_scan_result = Some(ScanResult {
                    tag_count: tags.len(),
                    scan_time: Some(now()),
                    latest_tags: registry::latest_tags(&tags),
                });
                status.conditions = ready(
                    &prev.conditions,
                    true,
                    "Succeeded",
                    &format!("successful scan: found {} tags", tags.len()),
                    generation,
                );
                let changed = {
                    let mut scanned = lock(&self.scanned);
                    let k = (ns.to_string(), name.to_string());
                    let changed = scanned
                        .get(&k)
                        .is_none_or(|s| *s.tags != tags || s.canonical != canonical);
                    scanned.insert(
                        k,
                        Scanned {
                            canonical,
                            tags: Arc::new(tags),
                        },
                    );
                    changed
                };
                if changed {
                    for p in self.policies.state() {
                        let pns = p.namespace().unwrap_or_default();
                        let rns = p
                            .spec
                            .image_repository_ref
                            .namespace
                            .clone()
                            .unwrap_or_else(|| pns.clone());
                        if rns == ns && p.spec.image_repository_ref.name == name {
                            self.queue.add(&key(Kind::Policy, &pns, &p.name_any()));
                        }
                    }
                }
                self.next_run(&key(Kind::Repo, ns, name), true, interval)
            }
            Err((reason, message)) => {
                tracing::info!(imagerepository = %format!("{ns}/{name}"), %message, "scan failed");
                status.conditions = ready(&prev.conditions, false, reason, &message, generation);
                self.next_run(&key(Kind::Repo, ns, name), false, interval)
            }
        };
        self.write_status::<ImageRepository, _>(ns, name, &prev, &status)
            .await;
        Some(next)
    }

    async fn scan(
        &self,
        ns: &str,
        repo: &ImageRepository,
        interval: Duration,
    ) -> Result<(String, Vec<String>), (&'static str, String)> {
        let image =
            ImageName::parse(&repo.spec.image).map_err(|e| ("InvalidImage", e.to_string()))?;
        let excluded = registry::exclusions(repo.spec.exclusion_list.as_deref())
            .map_err(|e| ("InvalidExclusionList", e.to_string()))?;
        let creds = match &repo.spec.secret_ref {
            None => None,
            Some(r) => {
                let secret = self
                    .secret(ns, &r.name)
                    .await
                    .map_err(|m| ("AuthenticationFailed", m))?;
                let data = secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get(".dockerconfigjson"))
                    .ok_or_else(|| {
                        (
                            "AuthenticationFailed",
                            format!(
                                "Secret {ns}/{} has no .dockerconfigjson (create it with `kubectl create secret docker-registry`)",
                                r.name
                            ),
                        )
                    })?;
                registry::credentials_from_docker_config(&data.0, &image.registry).map_err(|e| {
                    (
                        "AuthenticationFailed",
                        format!("Secret {ns}/{}: {e}", r.name),
                    )
                })?
            }
        };
        let timeout = repo
            .spec
            .timeout
            .as_deref()
            .and_then(parse_go_duration)
            .filter(|d| !d.is_zero())
            .unwrap_or(interval.min(Duration::from_secs(60)));
        let tags = registry::scan(
            &image,
            creds.as_ref(),
            repo.spec.insecure,
            timeout,
            &excluded,
        )
        .await
        .map_err(|e| {
            let reason = match e {
                registry::ScanError::Unauthorized { .. } => "AuthenticationFailed",
                _ => "ReadOperationFailed",
            };
            (reason, e.to_string())
        })?;
        Ok((image.canonical(), tags))
    }

    // ---- ImagePolicy -----------------------------------------------------

    /// Policies have no interval: they run when their repository's tags
    /// change, when they change, or again after a failed status write.
    async fn reconcile_policy(self: &Arc<Self>, ns: &str, name: &str) -> Option<Duration> {
        let Some(policy) = Self::find(&self.policies, ns, name) else {
            lock(&self.seen).remove(&seen_key::<ImagePolicy>(ns, name));
            lock(&self.latest).remove(&(ns.to_string(), name.to_string()));
            return None;
        };
        let prev = policy.status.clone().unwrap_or_default();
        let generation = policy.metadata.generation;
        let mut status = ImagePolicyStatus {
            observed_generation: generation,
            ..prev.clone()
        };
        match self.pick(ns, &policy) {
            Ok(latest) => {
                if prev.latest_ref.as_ref() != Some(&latest) {
                    status.observed_previous_ref = prev.latest_ref.clone();
                }
                let msg = format!(
                    "Latest image tag for {} resolved to {}",
                    latest.name, latest.tag
                );
                lock(&self.latest).insert((ns.to_string(), name.to_string()), latest.clone());
                status.latest_ref = Some(latest);
                status.conditions = ready(&prev.conditions, true, "Succeeded", &msg, generation);
            }
            Err(NoPick::NotScannedYet) => return None,
            Err(NoPick::Failed(reason, message)) => {
                status.conditions = ready(&prev.conditions, false, reason, &message, generation);
            }
        }
        let moved = status.latest_ref != prev.latest_ref;
        let written = self
            .write_status::<ImagePolicy, _>(ns, name, &prev, &status)
            .await;
        if moved {
            for a in self.autos.state() {
                if a.namespace().as_deref() == Some(ns) {
                    self.queue.add(&key(Kind::Auto, ns, &a.name_any()));
                }
            }
        }
        (!written).then_some(RETRY)
    }

    fn pick(&self, ns: &str, policy: &ImagePolicy) -> Result<ImageRef, NoPick> {
        let spec = &policy.spec;
        let choice = match (
            &spec.policy.semver,
            &spec.policy.alphabetical,
            &spec.policy.numerical,
        ) {
            (Some(s), None, None) => Choice::Semver {
                range: s.range.clone(),
            },
            (None, Some(a), None) => Choice::Alphabetical {
                order: Order::parse(a.order.as_deref().unwrap_or_default())
                    .map_err(|e| NoPick::Failed("InvalidPolicy", e.to_string()))?,
            },
            (None, None, Some(n)) => Choice::Numerical {
                order: Order::parse(n.order.as_deref().unwrap_or_default())
                    .map_err(|e| NoPick::Failed("InvalidPolicy", e.to_string()))?,
            },
            _ => {
                return Err(NoPick::Failed(
                    "InvalidPolicy",
                    "spec.policy needs exactly one of semver, alphabetical or numerical".into(),
                ));
            }
        };
        let filter = TagFilter {
            pattern: spec.filter_tags.as_ref().and_then(|f| f.pattern.clone()),
            extract: spec.filter_tags.as_ref().and_then(|f| f.extract.clone()),
        };
        let compiled = Policy::new(choice, filter)
            .map_err(|e| NoPick::Failed("InvalidPolicy", e.to_string()))?;
        let rns = spec
            .image_repository_ref
            .namespace
            .clone()
            .unwrap_or_else(|| ns.to_string());
        let rname = &spec.image_repository_ref.name;
        let Some(repo) = Self::find(&self.repos, &rns, rname) else {
            return Err(NoPick::Failed(
                "DependencyNotReady",
                format!("ImageRepository {rns}/{rname} not found"),
            ));
        };
        let (tags, _canonical) = {
            let scanned = lock(&self.scanned);
            match scanned.get(&(rns.clone(), rname.clone())) {
                Some(s) => (s.tags.clone(), s.canonical.clone()),
                None => return Err(NoPick::NotScannedYet),
            }
        };
        let tag = compiled
            .select(&tags)
            .map_err(|e| NoPick::Failed("ReconciliationFailed", e.to_string()))?
            .ok_or_else(|| {
                NoPick::Failed(
                    "ReconciliationFailed",
                    format!(
                        "none of the {} tags of ImageRepository {rns}/{rname} matches the policy",
                        tags.len()
                    ),
                )
            })?;
        Ok(ImageRef {
            name: repo.spec.image.trim().to_string(),
            tag,
            digest: None,
        })
    }

    // ---- ImageUpdateAutomation -------------------------------------------

    async fn reconcile_auto(self: &Arc<Self>, ns: &str, name: &str) -> Option<Duration> {
        let Some(auto) = Self::find(&self.autos, ns, name) else {
            lock(&self.seen).remove(&seen_key::<ImageUpdateAutomation>(ns, name));
            return None;
        };
        if auto.spec.suspend {
            return None;
        }
        let interval = interval_of(auto.spec.interval.as_deref());
        let prev = auto.status.clone().unwrap_or_default();
        let generation = auto.metadata.generation;
        let mut status = ImageUpdateAutomationStatus {
            observed_generation: generation,
            last_automation_run_time: Some(now()),
            last_handled_reconcile_at: requested_at(&*auto)
                .or(prev.last_handled_reconcile_at.clone()),
            ..prev.clone()
        };
        let outcome = match self.run_automation(ns, &auto, &mut status).await {
            Ok(o) => o,
            Err((reason, message)) => Outcome::failed(reason, message),
        };
        if !outcome.ok {
            tracing::info!(imageupdateautomation = %format!("{ns}/{name}"), reason = outcome.reason, message = %outcome.message, "automation failed");
        }
        status.conditions = ready(
            &prev.conditions,
            outcome.ok,
            outcome.reason,
            &outcome.message,
            generation,
        );
        // A missing policy is a configuration problem, not a transient one:
        // the interval (or the policy appearing) brings the next run.
        let transient = !outcome.ok && outcome.reason != "PolicyNotFound";
        let next = self.next_run(&key(Kind::Auto, ns, name), !transient, interval);
        self.write_status::<ImageUpdateAutomation, _>(ns, name, &prev, &status)
            .await;
        Some(next)
    }

    /// One automation run; `Err` is a failure before anything was pushed.
    async fn run_automation(
        &self,
        ns: &str,
        auto: &ImageUpdateAutomation,
        status: &mut ImageUpdateAutomationStatus,
    ) -> Result<Outcome, (&'static str, String)> {
        let spec = &auto.spec;
        let sref = &spec.source_ref;
        if !sref.kind.is_empty() && sref.kind != "GitRepository" {
            return Err((
                "InvalidSourceRef",
                format!(
                    "sourceRef.kind {:?} is not supported; use GitRepository",
                    sref.kind
                ),
            ));
        }
        let gns = sref.namespace.clone().unwrap_or_else(|| ns.to_string());
        let git_repo = Self::find(&self.gitrepos, &gns, &sref.name).ok_or_else(|| {
            (
                "SourceNotFound",
                format!("GitRepository {gns}/{} not found", sref.name),
            )
        })?;
        let Some(git) = &spec.git else {
            return Err(("InvalidSpec", "spec.git is required".into()));
        };
        let checkout = git
            .checkout
            .as_ref()
            .map(|c| c.reference.clone())
            .or_else(|| git_repo.spec.reference.clone())
            .unwrap_or_default();
        if (checkout.tag.is_some() || checkout.commit.is_some() || checkout.name.is_some())
            && checkout.branch.is_none()
        {
            return Err((
                "InvalidSpec",
                "only branch checkouts can be updated: set spec.git.checkout.ref.branch".into(),
            ));
        }
        let checkout_branch = checkout.branch.unwrap_or_else(|| "main".into());
        if git.push.as_ref().is_some_and(|p| p.refspec.is_some()) {
            return Err((
                "InvalidSpec",
                "spec.git.push.refspec is not supported yet; use spec.git.push.branch".into(),
            ));
        }
        let push_branch = git
            .push
            .as_ref()
            .and_then(|p| p.branch.clone())
            .unwrap_or_else(|| checkout_branch.clone());
        let creds = match &git_repo.spec.secret_ref {
            None => None,
            Some(r) => Some(git_credentials(
                &self
                    .secret(&gns, &r.name)
                    .await
                    .map_err(|m| ("GitOperationFailed", m))?,
            )),
        };

        // The policies this automation may use, by (namespace, name).
        let selector = spec
            .policy_selector
            .as_ref()
            .map(|s| s.match_labels.clone())
            .unwrap_or_default();
        let mut latest: BTreeMap<PolicyRef, ImageRef> = BTreeMap::new();
        for p in self.policies.state() {
            if p.namespace().as_deref() != Some(ns) {
                continue;
            }
            let labels = p.labels();
            if !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                continue;
            }
            // This process's own pick first: the watch cache may not have our
            // status write yet, and its event would not bring another run.
            let mine = lock(&self.latest)
                .get(&(ns.to_string(), p.name_any()))
                .cloned();
            if let Some(r) = mine.or_else(|| p.status.as_ref().and_then(|s| s.latest_ref.clone())) {
                latest.insert(
                    PolicyRef {
                        namespace: ns.to_string(),
                        name: p.name_any(),
                    },
                    r,
                );
            }
        }
        status.observed_policies = latest
            .iter()
            .map(|(k, v)| (k.name.clone(), v.clone()))
            .collect();

        let url = git_repo.spec.url.clone();
        let writer = format!("{ns}/{}", auto.name_any());
        let tree = self
            .ctl
            .sources
            .worktree(
                &writer,
                &url,
                creds.as_ref(),
                &checkout_branch,
                &push_branch,
            )
            .await
            .map_err(|e| ("GitOperationFailed", e.to_string()))?;
        let tree_base = tree.base().to_string();
        status.observed_source_revision = Some(format!("{checkout_branch}@sha1:{tree_base}"));
        let path = spec
            .update
            .as_ref()
            .and_then(|u| u.path.clone())
            .unwrap_or_else(|| ".".into());
        let lookup = |r: &PolicyRef| {
            latest.get(r).map(|i| LatestImage {
                name: i.name.clone(),
                tag: i.tag.clone(),
                digest: i.digest.clone(),
            })
        };
        let update = setters::update_dir(tree.path(), &path, &lookup)
            .map_err(|e| ("UpdateFailed", e.to_string()))?;
        for (file, why) in &update.skipped {
            tracing::info!(automation = %writer, %file, reason = %why, "skipped a file");
        }
        // Markers naming a policy that exists elsewhere belong to someone
        // else; only policies that exist nowhere are reported.
        let missing: Vec<String> = update
            .unresolved
            .iter()
            .filter(|u| Self::find(&self.policies, &u.policy.namespace, &u.policy.name).is_none())
            .map(|u| {
                format!(
                    "{}:{} names ImagePolicy {}/{}",
                    u.file, u.line, u.policy.namespace, u.policy.name
                )
            })
            .collect();
        let mut msg = String::new();
        if !update.changes.is_empty() {
            let mut images: Vec<String> = Vec::new();
            for c in &update.changes {
                if let Some(i) = latest.get(&c.policy).map(ToString::to_string)
                    && !images.contains(&i)
                {
                    images.push(i);
                }
            }
            let data = message_data(
                ns,
                &auto.name_any(),
                &update.changes,
                &images,
                &git.commit.message_template_values,
            );
            let tmpl = git
                .commit
                .message_template
                .as_deref()
                .filter(|t| !t.trim().is_empty())
                .unwrap_or(DEFAULT_MESSAGE);
            let message = template::render(tmpl, &data).map_err(|e| {
                (
                    "InvalidMessageTemplate",
                    format!("spec.git.commit.messageTemplate: {e}"),
                )
            })?;
            let author = ferry_source::CommitAuthor {
                name: git.commit.author.name.clone(),
                email: git.commit.author.email.clone(),
            };
            match tree
                .commit_and_push(&author, &message, &push_branch)
                .await
                .map_err(|e| ("GitOperationFailed", e.to_string()))?
            {
                ferry_source::PushOutcome::Pushed { commit } => {
                    status.last_push_commit = Some(commit.clone());
                    status.last_push_time = Some(now());
                    msg = format!(
                        "pushed commit '{}' to branch '{push_branch}'",
                        &commit[..7.min(commit.len())]
                    );
                    drop(tree);
                    self.ctl.repo_pushed(&url);
                }
                ferry_source::PushOutcome::NothingToCommit => {}
            }
        }
        if msg.is_empty() {
            msg = format!(
                "repository up-to-date at {checkout_branch}@sha1:{}",
                tree_base
            );
        }
        if !update.skipped.is_empty() {
            let skipped: Vec<String> = update
                .skipped
                .iter()
                .map(|(f, why)| format!("{f} ({why})"))
                .collect();
            msg.push_str(&format!("; skipped: {}", skipped.join("; ")));
        }
        if !missing.is_empty() {
            return Ok(Outcome::failed(
                "PolicyNotFound",
                format!(
                    "markers name ImagePolicies that do not exist: {}; other markers: {msg}",
                    missing.join("; ")
                ),
            ));
        }
        Ok(Outcome::ok(msg))
    }

    /// Merge-patches `status` when it differs from what the object has;
    /// false when the write failed.
    async fn write_status<K, S>(&self, ns: &str, name: &str, prev: &S, status: &S) -> bool
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned,
        S: serde::Serialize + PartialEq,
    {
        if prev == status {
            return true;
        }
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        let body = serde_json::json!({ "status": status });
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Err(e) => {
                tracing::info!(kind = %K::kind(&()), %ns, %name, error = %e, "status write failed");
                false
            }
            Ok(written) => {
                let kind = K::kind(&()).to_string();
                let events = crate::events::image_status_changes(
                    &kind,
                    &serde_json::to_value(prev).unwrap_or_default(),
                    &serde_json::to_value(status).unwrap_or_default(),
                );
                let involved = serde_json::json!({
                    "apiVersion": K::api_version(&()), "kind": kind, "namespace": ns, "name": name,
                    "uid": written.meta().uid,
                });
                crate::events::emit_for(
                    &self.client,
                    involved,
                    serde_json::json!({}),
                    "ferry-image-automation",
                    events,
                );
                true
            }
        }
    }
}

fn seen_key<K: Resource<DynamicType = ()>>(ns: &str, name: &str) -> String {
    format!("{}/{ns}/{name}", K::kind(&()))
}

/// A ready Deployment of Flux's image-reflector or image-automation controller.
async fn flux_image_controller(client: &Client) -> Option<String> {
    use k8s_openapi::api::apps::v1::Deployment;
    let api: Api<Deployment> = Api::all(client.clone());
    for name in ["image-reflector-controller", "image-automation-controller"] {
        let lp = kube::api::ListParams::default().fields(&format!("metadata.name={name}"));
        if let Ok(list) = api.list(&lp).await {
            for d in list.items {
                if d.status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0)
                    > 0
                {
                    return Some(format!("{}/{name}", d.namespace().unwrap_or_default()));
                }
            }
        }
    }
    None
}

/// Flux GitRepository Secret keys: `username`/`password` for http,
/// `identity`/`known_hosts` for ssh. (`bearerToken` is not supported: git
/// would need it as an extra header, not as a password.)
pub(crate) fn git_credentials(secret: &Secret) -> ferry_source::RepoCredentials {
    let get = |k: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .filter(|s| !s.is_empty())
    };
    ferry_source::RepoCredentials {
        username: get("username"),
        password: get("password"),
        ssh_private_key: get("identity"),
        known_hosts: get("known_hosts"),
        ..Default::default()
    }
}

fn obj(fields: Vec<(&str, Value)>, display: String) -> Value {
    Value::Object {
        fields: fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        display,
    }
}

/// The data a Flux commit message template sees: `.AutomationObject`,
/// `.Changed` (v1) and `.Updated` (the older form seed 001 uses), `.Values`.
fn message_data(
    ns: &str,
    name: &str,
    changes: &[setters::Change],
    images: &[String],
    values: &BTreeMap<String, String>,
) -> Value {
    let change_value = |c: &setters::Change| {
        obj(
            vec![
                ("OldValue", Value::Str(c.old_value.clone())),
                ("NewValue", Value::Str(c.new_value.clone())),
                ("Setter", Value::Str(c.setter.clone())),
            ],
            format!("{{{} {} {}}}", c.old_value, c.new_value, c.setter),
        )
    };
    let object_value = |o: &Option<setters::ObjectId>| {
        let o = o.clone().unwrap_or(setters::ObjectId {
            api_version: String::new(),
            kind: String::new(),
            namespace: String::new(),
            name: String::new(),
        });
        obj(
            vec![
                ("APIVersion", Value::Str(o.api_version.clone())),
                ("Kind", Value::Str(o.kind.clone())),
                ("Namespace", Value::Str(o.namespace.clone())),
                ("Name", Value::Str(o.name.clone())),
            ],
            format!("{} {}/{}", o.kind, o.namespace, o.name),
        )
    };
    // Go ranges over struct-keyed maps in field order: Name, Namespace,
    // APIVersion, Kind (kyaml's ResourceIdentifier).
    let sort_key = |o: &Option<setters::ObjectId>| {
        o.as_ref()
            .map(|o| {
                (
                    o.name.clone(),
                    o.namespace.clone(),
                    o.api_version.clone(),
                    o.kind.clone(),
                )
            })
            .unwrap_or_default()
    };
    type Grouped = BTreeMap<(String, String, String, String), (Value, Vec<Value>)>;
    let pairs =
        |g: Grouped| Value::Pairs(g.into_values().map(|(k, v)| (k, Value::List(v))).collect());
    let mut files: BTreeMap<String, Grouped> = BTreeMap::new();
    let mut objects: Grouped = BTreeMap::new();
    for c in changes {
        files
            .entry(c.file.clone())
            .or_default()
            .entry(sort_key(&c.object))
            .or_insert_with(|| (object_value(&c.object), Vec::new()))
            .1
            .push(change_value(c));
        objects
            .entry(sort_key(&c.object))
            .or_insert_with(|| (object_value(&c.object), Vec::new()))
            .1
            .push(change_value(c));
    }
    let file_changes: BTreeMap<String, Value> =
        files.into_iter().map(|(f, g)| (f, pairs(g))).collect();
    let updated_images = images
        .iter()
        .map(|i| Value::Str(i.clone()))
        .collect::<Vec<_>>();
    obj(
        vec![
            (
                "AutomationObject",
                obj(
                    vec![
                        ("Namespace", Value::Str(ns.into())),
                        ("Name", Value::Str(name.into())),
                    ],
                    format!("{ns}/{name}"),
                ),
            ),
            (
                "Changed",
                obj(
                    vec![
                        (
                            "Changes",
                            Value::List(changes.iter().map(change_value).collect()),
                        ),
                        ("FileChanges", Value::Map(file_changes)),
                        ("Objects", pairs(objects)),
                    ],
                    String::new(),
                ),
            ),
            (
                "Updated",
                obj(vec![("Images", Value::List(updated_images))], String::new()),
            ),
            (
                "Values",
                Value::Map(
                    values
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::Str(v.clone())))
                        .collect(),
                ),
            ),
        ],
        String::new(),
    )
}

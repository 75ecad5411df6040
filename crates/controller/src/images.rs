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
    RECONCILE_REQUESTED_AT, ScanResult, parse_duration,
};
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
/// Retry delay after a failure, so a fixed Secret or registry is noticed
/// well before the next interval.
const RETRY: Duration = Duration::from_secs(10);

/// Flux's default commit message when `messageTemplate` is empty.
const DEFAULT_MESSAGE: &str = "Automated image update\n\nAutomation name: {{ .AutomationObject }}\n\nFiles:\n{{ range $filename, $_ := .Changed.FileChanges -}}\n- {{ $filename }}\n{{ end -}}\n\nObjects:\n{{ range $resource, $changes := .Changed.Objects -}}\n- {{ $resource.Kind }} {{ $resource.Name }}\n  Changes:\n{{- range $_, $change := $changes }}\n    - {{ $change.OldValue }} -> {{ $change.NewValue }}\n{{ end -}}\n{{ end -}}\n";

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
    /// (generation, reconcile request) last acted on per key: status writes
    /// come back as watch events and must not trigger another run.
    seen: Mutex<HashMap<String, Signature>>,
    queue: Queue,
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
    spec.and_then(parse_duration)
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
    /// Starts the watches and workers; they stop when the returned guard
    /// is dropped.
    pub(crate) async fn start(
        client: Client,
        ctl: Arc<Controller>,
    ) -> Result<crate::TaskGuard, crate::Error> {
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
            seen: Mutex::new(HashMap::new()),
            queue: Queue::default(),
        });
        let mut tasks = crate::TaskGuard(Vec::new());
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
        for r in [
            repos.wait_until_ready().await,
            policies.wait_until_ready().await,
            autos.wait_until_ready().await,
            gitrepos.wait_until_ready().await,
        ] {
            r.map_err(|e| crate::Error::Setup(format!("initial list failed: {e}")))?;
        }
        for _ in 0..4 {
            let me = me.clone();
            tasks.0.push(tokio::spawn(async move {
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
        Ok(tasks)
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
                for (kind, ns, name) in keys(&obj) {
                    let k = key(kind, &ns, &name);
                    let own = key_of(&obj).is_some_and(|o| o == k);
                    if own {
                        let mut seen = lock(&self.seen);
                        if seen.get(&k) == Some(&sig) {
                            continue;
                        }
                        seen.insert(k.clone(), sig.clone());
                    }
                    self.queue.add(&k);
                }
            }
        })
    }

    async fn reconcile(self: &Arc<Self>, k: &str) -> Option<Duration> {
        let (kind, ns, name) = parse_key(k)?;
        match kind {
            Kind::Repo => self.reconcile_repo(ns, name).await,
            Kind::Policy => {
                self.reconcile_policy(ns, name).await;
                None
            }
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
            lock(&self.seen).remove(&key(Kind::Repo, ns, name));
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
                interval
            }
            Err((reason, message)) => {
                tracing::info!(imagerepository = %format!("{ns}/{name}"), %message, "scan failed");
                status.conditions = ready(&prev.conditions, false, reason, &message, generation);
                interval.min(RETRY)
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
            .and_then(parse_duration)
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
            let msg = e.to_string();
            let reason = if msg.contains("401") || msg.contains("uthenticat") {
                "AuthenticationFailed"
            } else {
                "ReadOperationFailed"
            };
            (reason, msg)
        })?;
        Ok((image.canonical(), tags))
    }

    // ---- ImagePolicy -----------------------------------------------------

    async fn reconcile_policy(self: &Arc<Self>, ns: &str, name: &str) {
        let Some(policy) = Self::find(&self.policies, ns, name) else {
            lock(&self.seen).remove(&key(Kind::Policy, ns, name));
            return;
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
                status.latest_ref = Some(latest);
                status.conditions = ready(&prev.conditions, true, "Succeeded", &msg, generation);
            }
            Err((reason, message)) => {
                status.conditions = ready(&prev.conditions, false, reason, &message, generation);
            }
        }
        let moved = status.latest_ref != prev.latest_ref;
        self.write_status::<ImagePolicy, _>(ns, name, &prev, &status)
            .await;
        if moved {
            for a in self.autos.state() {
                if a.namespace().as_deref() == Some(ns) {
                    self.queue.add(&key(Kind::Auto, ns, &a.name_any()));
                }
            }
        }
    }

    fn pick(&self, ns: &str, policy: &ImagePolicy) -> Result<ImageRef, (&'static str, String)> {
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
                    .map_err(|e| ("InvalidPolicy", e.to_string()))?,
            },
            (None, None, Some(n)) => Choice::Numerical {
                order: Order::parse(n.order.as_deref().unwrap_or_default())
                    .map_err(|e| ("InvalidPolicy", e.to_string()))?,
            },
            _ => {
                return Err((
                    "InvalidPolicy",
                    "spec.policy needs exactly one of semver, alphabetical or numerical".into(),
                ));
            }
        };
        let filter = TagFilter {
            pattern: spec.filter_tags.as_ref().and_then(|f| f.pattern.clone()),
            extract: spec.filter_tags.as_ref().and_then(|f| f.extract.clone()),
        };
        let compiled = Policy::new(choice, filter).map_err(|e| ("InvalidPolicy", e.to_string()))?;
        let rns = spec
            .image_repository_ref
            .namespace
            .clone()
            .unwrap_or_else(|| ns.to_string());
        let rname = &spec.image_repository_ref.name;
        let Some(repo) = Self::find(&self.repos, &rns, rname) else {
            return Err((
                "DependencyNotReady",
                format!("ImageRepository {rns}/{rname} not found"),
            ));
        };
        let (tags, _canonical) = {
            let scanned = lock(&self.scanned);
            match scanned.get(&(rns.clone(), rname.clone())) {
                Some(s) => (s.tags.clone(), s.canonical.clone()),
                None => {
                    return Err((
                        "DependencyNotReady",
                        format!("ImageRepository {rns}/{rname} has not been scanned yet"),
                    ));
                }
            }
        };
        let tag = compiled
            .select(&tags)
            .map_err(|e| ("ReconciliationFailed", e.to_string()))?
            .ok_or_else(|| {
                (
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
            lock(&self.seen).remove(&key(Kind::Auto, ns, name));
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
        let next = match self.run_automation(ns, &auto, &mut status).await {
            Ok(message) => {
                let (ok, reason) = if message.starts_with("markers name") {
                    (false, "PolicyNotFound")
                } else {
                    (true, "Succeeded")
                };
                status.conditions = ready(&prev.conditions, ok, reason, &message, generation);
                interval
            }
            Err((reason, message)) => {
                tracing::info!(imageupdateautomation = %format!("{ns}/{name}"), %message, "automation failed");
                status.conditions = ready(&prev.conditions, false, reason, &message, generation);
                interval.min(RETRY)
            }
        };
        self.write_status::<ImageUpdateAutomation, _>(ns, name, &prev, &status)
            .await;
        Some(next)
    }

    /// One automation run; returns the Ready message.
    async fn run_automation(
        &self,
        ns: &str,
        auto: &ImageUpdateAutomation,
        status: &mut ImageUpdateAutomationStatus,
    ) -> Result<String, (&'static str, String)> {
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
            if let Some(r) = p.status.as_ref().and_then(|s| s.latest_ref.clone()) {
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
        status.observed_source_revision = Some(format!("{checkout_branch}@sha1:{}", tree.base()));
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
            tracing::info!(automation = %writer, %file, reason = %why, "skipped a file that is not valid YAML");
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
        if !missing.is_empty() {
            let mut m = format!(
                "markers name ImagePolicies that do not exist: {}",
                missing.join("; ")
            );
            if !msg.is_empty() {
                m.push_str(&format!("; other markers were updated: {msg}"));
            }
            return Ok(m);
        }
        if msg.is_empty() {
            msg = format!(
                "repository up-to-date at {checkout_branch}@sha1:{}",
                status
                    .observed_source_revision
                    .as_deref()
                    .and_then(|r| r.rsplit(':').next())
                    .unwrap_or_default()
            );
        }
        Ok(msg)
    }

    /// Merge-patches `status` when it differs from what the object has.
    async fn write_status<K, S>(&self, ns: &str, name: &str, prev: &S, status: &S)
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned,
        S: serde::Serialize + PartialEq,
    {
        if prev == status {
            return;
        }
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        let body = serde_json::json!({ "status": status });
        if let Err(e) = api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            tracing::info!(kind = %K::kind(&()), %ns, %name, error = %e, "status write failed");
        }
    }
}

fn key_of<K: Resource<DynamicType = ()>>(o: &K) -> Option<String> {
    let kind = match K::kind(&()).as_ref() {
        "ImageRepository" => Kind::Repo,
        "ImagePolicy" => Kind::Policy,
        "ImageUpdateAutomation" => Kind::Auto,
        _ => return None,
    };
    Some(key(
        kind,
        o.meta().namespace.as_deref().unwrap_or_default(),
        o.meta().name.as_deref().unwrap_or_default(),
    ))
}

/// Flux GitRepository Secret keys: `username`/`password` for http,
/// `identity`/`known_hosts` for ssh.
fn git_credentials(secret: &Secret) -> ferry_source::RepoCredentials {
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
        password: get("password").or_else(|| get("bearerToken")),
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

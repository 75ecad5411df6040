//! Argo CD's notifications controller, served by the leader: reads `argocd-notifications-cm`
//! and `argocd-notifications-secret`, evaluates each subscribed Application's triggers when it
//! changes (and every minute, for conditions on time), and delivers what is due.
//!
//! Exactly once, as far as a receiver without idempotency keys allows: a delivery is recorded
//! in the app's `notified.notifications.argoproj.io` annotation right after it succeeds, one
//! patch per delivery, so a restart or a new leader finds it; the window between a receiver's
//! answer and that patch is the only place a notification can repeat. A delivery that fails
//! is not recorded and is retried with backoff while its condition holds, with a metric and
//! a Warning Event on the Application; it never fails the reconcile of anything else.

use crate::Controller;
use crate::events::{self, AppEvent};
use crate::queue::Queue;
use ferry_model::{AppProject, Application};
use ferry_notify::config::{CONFIG_MAP, SECRET};
use ferry_notify::{Config, State, state::ANNOTATION};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

/// Conditions may depend on time (`time.Now()`): Argo CD re-evaluates every minute too.
const RESYNC: Duration = Duration::from_secs(60);
const RETRY_FIRST: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(300);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub trigger: String,
    pub service: String,
    pub succeeded: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EvalLabels {
    pub name: String,
    pub triggered: String,
}

struct NotifyMetrics {
    deliveries: Family<DeliveryLabels, Counter>,
    evaluations: Family<EvalLabels, Counter>,
}

static METRICS: LazyLock<NotifyMetrics> = LazyLock::new(|| NotifyMetrics {
    deliveries: Family::default(),
    evaluations: Family::default(),
});

/// Argo CD's notification metrics, under its names.
pub fn register(registry: &mut Registry) {
    registry.register(
        "argocd_notifications_deliveries",
        "Number of delivered notifications.",
        METRICS.deliveries.clone(),
    );
    registry.register(
        "argocd_notifications_trigger_eval",
        "Number of trigger evaluations.",
        METRICS.evaluations.clone(),
    );
}

/// Deliveries so far with this trigger, service and outcome (for tests and the bench).
pub fn deliveries(trigger: &str, service: &str, succeeded: bool) -> u64 {
    METRICS
        .deliveries
        .get_or_create(&DeliveryLabels {
            trigger: trigger.into(),
            service: service.into(),
            succeeded: succeeded.to_string(),
        })
        .get()
}

/// A parsed configuration and the (ConfigMap, Secret) resource versions it came from.
type Parsed = ((String, String), Arc<Config>);

struct Ctx {
    client: Client,
    ctl: Arc<Controller>,
    config_map: Store<ConfigMap>,
    secret: Store<Secret>,
    /// The parsed configuration and the resource versions it was parsed from.
    parsed: Mutex<Option<Parsed>>,
    /// What this process last wrote per app uid, with the resource version the write made:
    /// the watch may deliver an older copy of the app before its own patch.
    written: Mutex<HashMap<String, (u64, State)>>,
    /// Failed attempts per app uid, for backoff.
    attempts: Mutex<HashMap<String, u32>>,
    /// Errors already reported per app uid: an Event per new error, not per evaluation.
    reported: Mutex<HashMap<String, HashSet<String>>>,
}

/// Evaluations run at once; a slow receiver holds one of them, never the others' apps.
const WORKERS: usize = 2;

/// Starts the notifications controller on the main controller's Application cache and its
/// change feed (no watch or copy of its own), plus watches of the ConfigMap, the Secret and
/// AppProjects, any change of which re-evaluates every app.
pub fn start(client: Client, ctl: Arc<Controller>) -> tokio::task::JoinHandle<()> {
    let ns = ctl.cfg.namespace.clone();
    let (config_map, cm_writer) = reflector::store::<ConfigMap>();
    let (secret, secret_writer) = reflector::store::<Secret>();
    let by_name = |name: &str| watcher::Config::default().fields(&format!("metadata.name={name}"));
    let cm_stream = reflector::reflector(
        cm_writer,
        watcher(
            Api::<ConfigMap>::namespaced(client.clone(), &ns),
            by_name(CONFIG_MAP),
        ),
    )
    .default_backoff()
    .touched_objects();
    let secret_stream = reflector::reflector(
        secret_writer,
        watcher(
            Api::<Secret>::namespaced(client.clone(), &ns),
            by_name(SECRET),
        ),
    )
    .default_backoff()
    .touched_objects();
    let project_stream = watcher(
        Api::<AppProject>::namespaced(client.clone(), &ns),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects();
    let mut app_changes = ctl.subscribe();
    let ctx = Arc::new(Ctx {
        client,
        ctl,
        config_map,
        secret,
        parsed: Mutex::new(None),
        written: Mutex::new(HashMap::new()),
        attempts: Mutex::new(HashMap::new()),
        reported: Mutex::new(HashMap::new()),
    });
    let queue = Queue::default();
    tokio::spawn(async move {
        let mut tasks = Vec::new();
        let all = {
            let (ctx, queue) = (ctx.clone(), queue.clone());
            move || {
                for app in ctx.ctl.applications() {
                    queue.add(&ctx.ctl.app_key(&app));
                }
            }
        };
        let inputs = futures::stream::select_all([
            cm_stream.map(|_| ()).boxed(),
            secret_stream.map(|_| ()).boxed(),
            project_stream.map(|_| ()).boxed(),
        ]);
        let all_on_input = all.clone();
        tasks.push(tokio::spawn(async move {
            let mut inputs = inputs;
            while inputs.next().await.is_some() {
                all_on_input();
            }
        }));
        let (feed_ctx, feed_queue, all_on_lag) = (ctx.clone(), queue.clone(), all.clone());
        tasks.push(tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match app_changes.recv().await {
                    Ok(app) => feed_queue.add(&feed_ctx.ctl.app_key(&app)),
                    // Changes were missed: look at every app.
                    Err(RecvError::Lagged(_)) => all_on_lag(),
                    Err(RecvError::Closed) => return,
                }
            }
        }));
        let ready = ctx.config_map.wait_until_ready().await.is_ok()
            && ctx.secret.wait_until_ready().await.is_ok();
        if !ready {
            tracing::warn!("notifications: the configuration watch ended before listing");
        }
        all();
        for _ in 0..WORKERS {
            let (ctx, queue) = (ctx.clone(), queue.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let key = queue.next().await;
                    let again = match ctx.ctl.application(&key) {
                        Some(app) => match reconcile(&key, app, &ctx).await {
                            Ok(again) => again,
                            Err(e) => {
                                tracing::warn!(app = %key, error = %e, "notifications");
                                Some(RETRY_FIRST)
                            }
                        },
                        None => {
                            ctx.forget(&key);
                            None
                        }
                    };
                    queue.done(&key);
                    if let Some(delay) = again {
                        queue.add_after(&key, delay);
                    }
                }
            }));
        }
        let _guard = crate::TaskGuard(tasks);
        std::future::pending::<()>().await;
    })
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("{0}")]
    Kube(#[from] kube::Error),
}

impl Ctx {
    /// The configuration, parsed again only when the ConfigMap or Secret changed. A parse
    /// with problems is reported once, on the ConfigMap.
    fn config(&self) -> Arc<Config> {
        let ns = self.ctl.cfg.namespace.clone();
        let cm = self
            .config_map
            .get(&reflector::ObjectRef::new(CONFIG_MAP).within(&ns));
        let secret = self
            .secret
            .get(&reflector::ObjectRef::new(SECRET).within(&ns));
        let versions = (
            cm.as_ref()
                .and_then(|c| c.resource_version())
                .unwrap_or_default(),
            secret
                .as_ref()
                .and_then(|s| s.resource_version())
                .unwrap_or_default(),
        );
        let mut parsed = self.parsed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((v, cfg)) = parsed.as_ref()
            && *v == versions
        {
            return cfg.clone();
        }
        let data: BTreeMap<String, String> =
            cm.as_ref().and_then(|c| c.data.clone()).unwrap_or_default();
        // The API server never returns stringData: `data` is the whole Secret.
        let secret_data = secret
            .as_deref()
            .map(crate::clusters::decode)
            .unwrap_or_default();
        let cfg = Arc::new(Config::parse(&data, &secret_data));
        if let Some(cm) = &cm
            && !cfg.problems.is_empty()
        {
            let list: Vec<String> = cfg
                .problems
                .iter()
                .map(|p| format!("{}: {}", p.key, cfg.redact(&p.message)))
                .collect();
            tracing::warn!(problems = %list.join("; "), "{CONFIG_MAP} has problems");
            events::emit_for(
                &self.client,
                json!({
                    "apiVersion": "v1", "kind": "ConfigMap", "name": CONFIG_MAP,
                    "namespace": ns, "uid": cm.uid().unwrap_or_default(),
                    "resourceVersion": cm.resource_version().unwrap_or_default(),
                }),
                json!({}),
                "ferry-notifications",
                vec![AppEvent::warning(
                    "InvalidConfiguration",
                    format!(
                        "{} problem(s); the rest of the configuration is used: {}",
                        list.len(),
                        list.join("; ")
                    ),
                )],
            );
        }
        *parsed = Some((versions, cfg.clone()));
        cfg
    }

    /// The app's notified state: the annotation, or what this process wrote if the watch
    /// has not caught up with it yet.
    fn state_of(&self, key: &str, app: &Application) -> State {
        let from_annotation =
            State::from_annotation(app.annotations().get(ANNOTATION).map(String::as_str));
        let uid = key.to_string();
        let seen: u64 = app
            .resource_version()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        match written.get(&uid) {
            Some((version, state)) if *version > seen => state.clone(),
            Some(_) => {
                written.remove(&uid);
                from_annotation
            }
            None => from_annotation,
        }
    }

    async fn persist(
        &self,
        key: &str,
        app: &Application,
        state: &State,
    ) -> Result<(), kube::Error> {
        let api: Api<Application> =
            Api::namespaced(self.client.clone(), &app.namespace().unwrap_or_default());
        let patch = json!({ "metadata": { "annotations": { ANNOTATION: state.to_annotation() } } });
        let updated = api
            .patch(
                &app.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        let version = updated
            .resource_version()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), (version, state.clone()));
        Ok(())
    }

    /// Drops what is kept about an app that is gone.
    fn forget(&self, key: &str) {
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        self.attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        self.reported
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// Reports `message` on the app once (until it stops happening).
    fn report(&self, key: &str, app: &Application, reason: &'static str, message: String) {
        let uid = key.to_string();
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        if reported.entry(uid).or_default().insert(message.clone()) {
            tracing::warn!(app = %app.name_any(), %message, "notification");
            events::emit(&self.client, app, vec![AppEvent::warning(reason, message)]);
        }
    }
}

/// Evaluates one app and delivers what is due; when to look again (`None`: on its next change).
async fn reconcile(key: &str, app: Arc<Application>, ctx: &Ctx) -> Result<Option<Duration>, Error> {
    let uid = key.to_string();
    let cfg = ctx.config();
    let mut destinations = ferry_notify::Destinations::new();
    let mut subscription_problems = ferry_notify::subscribe::from_annotations(
        &mut destinations,
        app.annotations().iter(),
        &cfg,
    );
    if let Some(project) = ctx.ctl.app_project(&app.spec.project) {
        subscription_problems.extend(ferry_notify::subscribe::from_annotations(
            &mut destinations,
            project.annotations().iter(),
            &cfg,
        ));
    }
    ferry_notify::subscribe::global(&mut destinations, app.labels(), &cfg);
    for problem in &subscription_problems {
        ctx.report(key, &app, "InvalidSubscription", problem.clone());
    }
    if destinations.is_empty() {
        return Ok(None);
    }
    let mut app_json = serde_json::to_value(&*app).unwrap_or_default();
    ferry_notify::argo_shape(&mut app_json);
    if ferry_notify::status_out_of_date(&app_json) {
        // The next status write wakes this app again.
        return Ok(Some(RESYNC));
    }
    let mut state = ctx.state_of(key, &app);
    let plan = ferry_notify::plan(&cfg, &app_json, &destinations, &state, chrono::Utc::now());
    for (trigger, triggered) in &plan.evaluations {
        METRICS
            .evaluations
            .get_or_create(&EvalLabels {
                name: trigger.clone(),
                triggered: triggered.to_string(),
            })
            .inc();
    }
    let mut current_errors: HashSet<String> = subscription_problems.into_iter().collect();
    for (trigger, message) in &plan.errors {
        let message = format!("trigger {trigger}: {}", cfg.redact(message));
        current_errors.insert(message.clone());
        ctx.report(key, &app, "NotificationTriggerFailed", message);
    }
    if !plan.forget.is_empty() {
        for key in &plan.forget {
            state.forget(key);
        }
        ctx.persist(key, &app, &state).await?;
    }
    let mut failed = false;
    for due in &plan.due {
        let dest = &due.destination;
        let outcome = match ferry_notify::render(&cfg, &app_json, due) {
            Ok(n) => ferry_notify::send::deliver(&cfg, &n, dest).await,
            Err(e) => Err(e),
        };
        let succeeded = outcome.is_ok();
        METRICS
            .deliveries
            .get_or_create(&DeliveryLabels {
                trigger: due.trigger.clone(),
                service: dest.service.clone(),
                succeeded: succeeded.to_string(),
            })
            .inc();
        let to = if dest.recipient.is_empty() {
            dest.service.clone()
        } else {
            format!("{}:{}", dest.service, dest.recipient)
        };
        match outcome {
            Ok(()) => {
                state.record(&due.state_key, chrono::Utc::now().timestamp());
                ctx.persist(key, &app, &state).await?;
                tracing::info!(app = %app.name_any(), trigger = %due.trigger, to = %to, "notification sent");
                events::emit(
                    &ctx.client,
                    &app,
                    vec![AppEvent::normal(
                        "NotificationSent",
                        format!("{} notified {to}", due.trigger),
                    )],
                );
            }
            Err(e) => {
                failed = true;
                let message = format!(
                    "{} could not notify {to}: {} (retrying)",
                    due.trigger,
                    cfg.redact(&e)
                );
                current_errors.insert(message.clone());
                ctx.report(key, &app, "NotificationFailed", message);
            }
        }
    }
    // Errors that stopped happening may be reported again if they come back.
    if let Some(seen) = ctx
        .reported
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_mut(&uid)
    {
        seen.retain(|m| current_errors.contains(m));
    }
    let mut attempts = ctx.attempts.lock().unwrap_or_else(|e| e.into_inner());
    if failed {
        let n = attempts.entry(uid).or_insert(0);
        let wait = RETRY_FIRST
            .saturating_mul(2u32.saturating_pow((*n).min(16)))
            .min(RETRY_MAX);
        *n += 1;
        Ok(Some(wait))
    } else {
        attempts.remove(&uid);
        Ok(Some(RESYNC))
    }
}

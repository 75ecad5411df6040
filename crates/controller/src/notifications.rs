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
use ferry_model::{AppProject, Application};
use ferry_notify::config::{CONFIG_MAP, SECRET};
use ferry_notify::{Config, State, state::ANNOTATION};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller as Runtime};
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

pub fn start(client: Client, ctl: Arc<Controller>) -> tokio::task::JoinHandle<()> {
    let ns = ctl.cfg.namespace.clone();
    let (config_map, cm_writer) = reflector::store::<ConfigMap>();
    let (secret, secret_writer) = reflector::store::<Secret>();
    let (changed_tx, changed_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
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
    let apps_api = if ctl.cfg.application_namespaces.is_empty() {
        Api::<Application>::namespaced(client.clone(), &ns)
    } else {
        Api::<Application>::all(client.clone())
    };
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
    tokio::spawn(async move {
        // The configuration, its Secret or a project's subscriptions changed: every app.
        let inputs = futures::stream::select_all([
            cm_stream.map(|_| ()).boxed(),
            secret_stream.map(|_| ()).boxed(),
            project_stream.map(|_| ()).boxed(),
        ]);
        let feed = changed_tx.clone();
        let forward = tokio::spawn(async move {
            let mut inputs = inputs;
            while inputs.next().await.is_some() {
                let _ = feed.send(());
            }
        });
        let ready = ctx.config_map.wait_until_ready().await.is_ok()
            && ctx.secret.wait_until_ready().await.is_ok();
        if !ready {
            tracing::warn!("notifications: the configuration watch ended before listing");
        }
        Runtime::new(apps_api, watcher::Config::default())
            .reconcile_all_on(tokio_stream_of(changed_rx))
            .run(reconcile, error_policy, ctx)
            .for_each(|_| async {})
            .await;
        forward.abort();
    })
}

fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<()>,
) -> impl futures::Stream<Item = ()> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("{0}")]
    Kube(#[from] kube::Error),
}

fn error_policy(_: Arc<Application>, e: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!(error = %e, "notifications");
    Action::requeue(RETRY_FIRST)
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
        let secret_data: BTreeMap<String, String> = secret
            .as_ref()
            .map(|s| {
                let mut out: BTreeMap<String, String> = s
                    .data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
                    .collect();
                for (k, v) in s.string_data.iter().flatten() {
                    out.insert(k.clone(), v.clone());
                }
                out
            })
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
    fn state_of(&self, app: &Application) -> State {
        let from_annotation =
            State::from_annotation(app.annotations().get(ANNOTATION).map(String::as_str));
        let uid = app.uid().unwrap_or_default();
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

    async fn persist(&self, app: &Application, state: &State) -> Result<(), kube::Error> {
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
            .insert(app.uid().unwrap_or_default(), (version, state.clone()));
        Ok(())
    }

    /// Reports `message` on the app once (until it stops happening).
    fn report(&self, app: &Application, reason: &'static str, message: String) {
        let uid = app.uid().unwrap_or_default();
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        if reported.entry(uid).or_default().insert(message.clone()) {
            tracing::warn!(app = %app.name_any(), %message, "notification");
            events::emit(&self.client, app, vec![AppEvent::warning(reason, message)]);
        }
    }
}

async fn reconcile(app: Arc<Application>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let uid = app.uid().unwrap_or_default();
    if !ctx.ctl.serves(&app) {
        return Ok(Action::await_change());
    }
    let cfg = ctx.config();
    let mut destinations = ferry_notify::Destinations::new();
    ferry_notify::subscribe::from_annotations(&mut destinations, app.annotations().iter(), &cfg);
    if let Some(project) = ctx.ctl.app_project(&app.spec.project) {
        ferry_notify::subscribe::from_annotations(
            &mut destinations,
            project.annotations().iter(),
            &cfg,
        );
    }
    ferry_notify::subscribe::global(&mut destinations, app.labels(), &cfg);
    if destinations.is_empty() {
        return Ok(Action::await_change());
    }
    let mut app_json = serde_json::to_value(&*app).unwrap_or_default();
    ferry_notify::argo_shape(&mut app_json);
    if ferry_notify::status_out_of_date(&app_json) {
        // The next status write wakes this app again.
        return Ok(Action::requeue(RESYNC));
    }
    let mut state = ctx.state_of(&app);
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
    let mut current_errors = HashSet::new();
    for (trigger, message) in &plan.errors {
        let message = format!("trigger {trigger}: {}", cfg.redact(message));
        current_errors.insert(message.clone());
        ctx.report(&app, "NotificationTriggerFailed", message);
    }
    if !plan.forget.is_empty() {
        for key in &plan.forget {
            state.forget(key);
        }
        ctx.persist(&app, &state).await?;
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
                ctx.persist(&app, &state).await?;
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
                ctx.report(&app, "NotificationFailed", message);
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
        Ok(Action::requeue(wait))
    } else {
        attempts.remove(&uid);
        Ok(Action::requeue(RESYNC))
    }
}

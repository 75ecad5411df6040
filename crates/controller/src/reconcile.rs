//! One pass over one Application: source → render → compare → (sync) → status.
//! Nothing is applied until every source has rendered and every object has
//! passed a server-side dry-run; failures become conditions, never prunes.

use crate::Controller;
use crate::clusters::{ClusterSecret, decode};
use crate::decide::{CompareFacts, Decision, RETRYING, retry_delay};
use ferry_engine::cluster::{ClusterConn, Resolved};
use ferry_engine::plan::{self, HookKind};
use ferry_engine::sync::{self, PruneTarget, Resource, SyncRequest};
use ferry_engine::{diff, health};
use ferry_model::annotations::{self, SECRET_TYPE_LABEL};
use ferry_model::settings::ResourceSettings;
use ferry_model::tracking::{self, ObjectKey};
use ferry_model::*;
use ferry_source::scrub_url;
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A failure that stops the pass before anything is applied; becomes a condition.
pub(crate) struct Stop {
    pub(crate) type_: &'static str,
    pub(crate) message: String,
}

fn stop(type_: &'static str, message: impl Into<String>) -> Stop {
    Stop {
        type_,
        message: message.into(),
    }
}

/// What the destination cluster reports about itself, for helm's
/// `--kube-version`/`--api-versions` and plugins' KUBE_* variables.
#[derive(Clone)]
struct ClusterFacts {
    kube_version: String,
    api_versions: Vec<String>,
}

/// One source to render, with everything its result depends on.
struct SourceRender<'a> {
    app_name: &'a str,
    dest_ns: &'a str,
    source: &'a ApplicationSource,
    /// The checked-out repository (or unpacked chart).
    checkout: &'a std::path::Path,
    revision: &'a str,
    /// Git tree id of the source's path, when known: the render cache key.
    tree: Option<&'a str>,
    refs: &'a BTreeMap<String, std::path::PathBuf>,
    cluster: &'a ClusterFacts,
    plugins: &'a [ferry_render::PluginConfig],
    tools: &'a Result<ferry_render::RenderTools, Stop>,
    /// Hard refresh: render again even when the inputs are unchanged.
    hard: bool,
}

/// argocd-cm keys that change delivery in Argo CD and that Ferry does not act on.
pub(crate) const SETTINGS_CONDITION: &str = "UnsupportedSettingWarning";

/// Argo CD's condition for rendered objects argocd-cm excludes.
pub(crate) const EXCLUDED_CONDITION: &str = "ExcludedResourceWarning";

/// Condition type while a sync window holds back a sync.
pub(crate) const SYNC_WINDOW_CONDITION: &str = "SyncWindowWarning";

/// Condition type for an app whose sources rendered no object. Argo CD shows
/// nothing in that case; a `*Warning` type is what its UI and CLI list as a warning.
pub(crate) const EMPTY_RENDER_CONDITION: &str = "EmptyManifestWarning";

/// The condition message for an app whose sources rendered no object.
fn empty_render_message(skipped: &[String]) -> String {
    let mut msg = String::from("the application's sources rendered no resources");
    if !skipped.is_empty() {
        const SHOWN: usize = 10;
        let list: Vec<&str> = skipped.iter().take(SHOWN).map(String::as_str).collect();
        msg.push_str(&format!(
            "; files present but not rendered (not .yaml, .yml, .json or .jsonnet): {}",
            list.join(", ")
        ));
        if skipped.len() > SHOWN {
            msg.push_str(&format!(" and {} more", skipped.len() - SHOWN));
        }
    }
    msg
}

/// The result of comparing one app.
pub(crate) struct Comparison {
    pub(crate) conn: Arc<ClusterConn>,
    pub(crate) revisions: Vec<String>,
    sources: Vec<ApplicationSource>,
    source_type: String,
    pub(crate) resources: Vec<Resource>,
    pub(crate) prune: Vec<PruneTarget>,
    pub(crate) statuses: Vec<ResourceStatus>,
    synced: bool,
    health: HealthStatus,
    /// Non-fatal: e.g. dry-run failures that block a sync.
    errors: Vec<String>,
    /// Set when the sources rendered nothing: shown as a condition, since
    /// "Synced" with zero resources is indistinguishable from delivered.
    empty_render: Option<String>,
    /// The app's ignoreDifferences plus argocd-cm's, as compared.
    ignores: Vec<IgnoreDifferences>,
    settings: Arc<ResourceSettings>,
    /// Extraneous live objects marked `IgnoreExtraneous`.
    ignored_extraneous: HashSet<ObjectKey>,
    /// Rendered objects argocd-cm excludes from management, described.
    excluded: Vec<String>,
    /// When the operation this compare serves started (a running one's recorded start, or
    /// now): `generateName` hooks are named from it, so every step of one sync, in any
    /// process, addresses the same hook.
    pub(crate) operation_started: Time,
}

impl Comparison {
    /// The ignoreDifferences rules this comparison applied.
    pub(crate) fn ignore_rules(&self) -> &[IgnoreDifferences] {
        &self.ignores
    }

    /// Argo CD records `source` for single-source apps and `sources` otherwise.
    fn single_source(&self) -> Option<ApplicationSource> {
        (self.sources.len() == 1).then(|| self.sources[0].clone())
    }

    fn multi_sources(&self) -> Option<Vec<ApplicationSource>> {
        (self.sources.len() > 1).then(|| self.sources.clone())
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("")
}

impl Controller {
    /// Reconciles one app; returns when to look again.
    /// `key` is the app's queue key: `name`, or `namespace/name` outside the
    /// controller's namespace.
    pub(crate) async fn reconcile(self: &Arc<Self>, key: &str) -> Option<Duration> {
        let cached = self.application(key).map(|a| (*a).clone());
        let Some(cached) = cached else {
            if let Ok(mut w) = self.written.lock() {
                w.remove(key);
            }
            return None;
        };
        let name = key;
        // Our own last write, until the watch has delivered it; then the copy goes, so steady
        // state keeps one copy of each app (the cache's), not two.
        let app = {
            let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
            match written.get(key) {
                Some(w) if rv_num(w) > rv_num(&cached) => w.clone(),
                Some(_) => {
                    written.remove(key);
                    cached
                }
                None => cached,
            }
        };
        if app.metadata.deletion_timestamp.is_some() {
            return self.finalize(&app).await;
        }
        let refresh_requested = app.annotations().contains_key(annotations::REFRESH);
        let hard = app
            .annotations()
            .get(annotations::REFRESH)
            .map(String::as_str)
            == Some("hard");
        let old = app.status.clone().unwrap_or_default();
        let mut st = old.clone();
        let op = app.operation.clone();
        let mut next = self.poll_delay(name);
        // Set when a Running operation state was written mid-pass: the final
        // status write must expect that resourceVersion.
        let mut running_rv: Option<String> = None;

        // A sync that waited in an earlier step (in this process or another) goes on from
        // what it recorded, at the revision it started with.
        let resuming = in_progress(&old, op.as_ref()).cloned();
        let op = op.or_else(|| resuming.as_ref().map(|o| o.operation.clone()));
        let cmp = self
            .compare(&app, op.as_ref(), refresh_requested, hard)
            .await;
        let mut ran_op = false;
        match cmp {
            Err(s) => {
                set_condition(&mut st, s.type_, &s.message);
                st.sync = Some(SyncStatus {
                    status: "Unknown".into(),
                    ..st.sync.clone().unwrap_or_default()
                });
                let pending = st
                    .operation_state
                    .as_ref()
                    .filter(|o| Some(&o.operation) == op.as_ref() && o.phase == "Running");
                // Still inside the previous attempt's backoff: not a new attempt
                // (our own status write re-queues the app at once).
                let backing_off = pending.and_then(|o| {
                    let delay = retry_delay(op.as_ref()?.retry.as_ref()?, o.retry_count)?;
                    let failed = o.finished_at.as_ref()?.0.as_second();
                    let due = failed + delay.as_secs() as i64;
                    let now_s = k8s_openapi::jiff::Timestamp::now().as_second();
                    (o.message.starts_with(RETRYING) && now_s < due)
                        .then(|| Duration::from_secs((due - now_s) as u64))
                });
                let attempt = pending.map(|o| o.retry_count).unwrap_or(0) + 1;
                let retry = op
                    .as_ref()
                    .and_then(|o| o.retry.as_ref())
                    .and_then(|r| retry_delay(r, attempt))
                    .filter(|_| s.type_ == "ComparisonError");
                let sync_under_way = resuming.as_ref().map(|r| {
                    let started = r.started_at.clone().unwrap_or_else(now);
                    let scope = self.operation_scope(&app, &started);
                    (self.wait_clock.waited(&format!("{scope}/compare")), scope)
                });
                if let Some(wait) = backing_off {
                    next = next.min(wait);
                } else if let Some((waited, _)) = &sync_under_way
                    && *waited <= self.cfg.wave_timeout
                {
                    // A sync under way waits for its source or cluster to answer again (as
                    // long as it would wait for a wave) rather than failing halfway.
                    next = next.min(Duration::from_secs(5));
                } else if let (Some(op), Some(delay)) = (&op, retry) {
                    // A source or cluster that failed this pass may answer the
                    // next: a retried operation stays pending, as a failed sync would.
                    st.operation_state = Some(OperationState {
                        operation: op.clone(),
                        phase: "Running".into(),
                        message: format!(
                            "{RETRYING} #{attempt} in {}s: {}",
                            delay.as_secs(),
                            s.message
                        ),
                        started_at: Some(now()),
                        finished_at: Some(now()),
                        retry_count: attempt,
                        ..OperationState::default()
                    });
                    next = next.min(delay);
                } else if let Some(op) = &op {
                    // The requested operation cannot run; record why and drop it.
                    st.operation_state = Some(OperationState {
                        operation: op.clone(),
                        phase: "Error".into(),
                        message: s.message.clone(),
                        started_at: Some(now()),
                        finished_at: Some(now()),
                        ..OperationState::default()
                    });
                    ran_op = true;
                }
                // Unreachable sources heal by themselves: look again sooner.
                next = next.min(Duration::from_secs(30));
            }
            Ok(mut c) => {
                clear_conditions(
                    &mut st,
                    &[
                        "ComparisonError",
                        "InvalidSpecError",
                        "SyncError",
                        EMPTY_RENDER_CONDITION,
                        SYNC_WINDOW_CONDITION,
                        EXCLUDED_CONDITION,
                        SETTINGS_CONDITION,
                    ],
                );
                for e in &c.errors {
                    set_condition(&mut st, "ComparisonError", e);
                }
                if let Some(msg) = &c.empty_render {
                    set_condition(&mut st, EMPTY_RENDER_CONDITION, msg);
                }
                if !c.excluded.is_empty() {
                    set_condition(&mut st, EXCLUDED_CONDITION, &c.excluded.join("; "));
                }
                if !c.settings.unsupported.is_empty() {
                    set_condition(
                        &mut st,
                        SETTINGS_CONDITION,
                        &format!(
                            "argocd-cm settings Ferry does not act on: {} (see docs/compatibility.md)",
                            c.settings.unsupported.join(", ")
                        ),
                    );
                }
                self.fill_status(&mut st, &c);
                let decision = match &resuming {
                    Some(running) => {
                        let s = running.operation.sync.clone().unwrap_or_default();
                        Decision::Sync {
                            operation: Box::new(running.operation.clone()),
                            prune: s.prune,
                            dry_run: s.dry_run,
                            automated: running.operation.is_automated(),
                        }
                    }
                    None => self.decide(&app, op.as_ref(), &c, &st),
                };
                match decision {
                    Decision::None => {}
                    Decision::Later(d) => next = next.min(d),
                    Decision::Skip(msg) => set_condition(&mut st, "SyncError", &msg),
                    Decision::Blocked { message, operation } => {
                        set_condition(&mut st, SYNC_WINDOW_CONDITION, &message);
                        if let Some(operation) = operation {
                            let started = st
                                .operation_state
                                .as_ref()
                                .filter(|o| o.phase == "Running" && o.operation == *operation)
                                .and_then(|o| o.started_at.clone())
                                .unwrap_or_else(now);
                            // A retried operation keeps its count and last failure.
                            let previous = st
                                .operation_state
                                .as_ref()
                                .filter(|o| o.phase == "Running" && o.operation == *operation);
                            let retry_count = previous.map(|o| o.retry_count).unwrap_or(0);
                            let finished_at = previous.and_then(|o| o.finished_at.clone());
                            st.operation_state = Some(OperationState {
                                operation: *operation,
                                phase: "Running".into(),
                                message: "Sync operation blocked by sync window".into(),
                                started_at: Some(started),
                                retry_count,
                                finished_at,
                                ..OperationState::default()
                            });
                        }
                        next = next.min(Duration::from_secs(30));
                    }
                    Decision::Sync {
                        operation,
                        prune,
                        dry_run,
                        automated,
                    } => {
                        let operation = *operation;
                        ran_op = op.is_some();
                        let blocking = blocking_errors(&c, &operation);
                        if !blocking.is_empty() {
                            let msg = format!("sync refused: {}", blocking.join("; "));
                            st.operation_state = Some(OperationState {
                                operation,
                                phase: "Failed".into(),
                                message: msg,
                                started_at: Some(now()),
                                finished_at: Some(now()),
                                sync_result: Some(SyncOperationResult {
                                    revision: c.revisions.first().cloned().unwrap_or_default(),
                                    revisions: c.revisions.clone(),
                                    ..Default::default()
                                }),
                                ..OperationState::default()
                            });
                        } else {
                            let resumed = resuming.as_ref().filter(|r| r.operation == operation);
                            let started = c.operation_started.clone();
                            let retry_count = match &st.operation_state {
                                Some(o) if resumed.is_some() => o.retry_count,
                                Some(o)
                                    if automated
                                        && o.phase == "Failed"
                                        && o.sync_result.as_ref().map(|r| &r.revision)
                                            == c.revisions.first() =>
                                {
                                    o.retry_count + 1
                                }
                                // A requested operation being retried: the same
                                // operation, still pending, after a failed attempt.
                                Some(o)
                                    if !automated
                                        && o.phase == "Running"
                                        && o.operation == operation =>
                                {
                                    o.retry_count
                                }
                                _ => 0,
                            };
                            if resumed.is_none() {
                                tracing::info!(app = %name, "sync started");
                            }
                            if automated && resumed.is_none() {
                                let rev = c.revisions.first().cloned().unwrap_or_default();
                                crate::events::emit(
                                    &self.client,
                                    &app,
                                    vec![crate::events::AppEvent::normal(
                                        crate::events::OPERATION_STARTED,
                                        format!("Initiated automated sync to '{rev}'"),
                                    )],
                                );
                            }
                            // Argo CD shows a sync in progress as phase
                            // Running; users and tools (`app wait
                            // --operation`) watch for it.
                            if resumed.is_none() {
                                running_rv = self
                                    .write_running(&app, &operation, started.clone(), &c)
                                    .await;
                            }
                            let progress = resumed
                                .map(|r| sync::Progress {
                                    results: r
                                        .sync_result
                                        .as_ref()
                                        .map(|x| x.resources.as_slice())
                                        .unwrap_or_default(),
                                    message: &r.message,
                                })
                                .unwrap_or_default();
                            let scope = self.operation_scope(&app, &started);
                            let step = self
                                .sync(
                                    &app,
                                    &c,
                                    &operation,
                                    prune,
                                    dry_run,
                                    progress,
                                    scope.clone(),
                                )
                                .await;
                            let mut outcome = match step {
                                sync::Step::Finished(outcome) => outcome,
                                sync::Step::Waiting(outcome) => {
                                    // Recorded, so the next step (here or in another
                                    // process) goes on from it; no worker waits.
                                    st.operation_state = Some(OperationState {
                                        operation: operation.clone(),
                                        phase: "Running".into(),
                                        message: outcome.message,
                                        sync_result: Some(SyncOperationResult {
                                            resources: outcome.results,
                                            revision: c
                                                .revisions
                                                .first()
                                                .cloned()
                                                .unwrap_or_default(),
                                            revisions: c.revisions.clone(),
                                            source: c.single_source(),
                                            sources: c.multi_sources(),
                                        }),
                                        started_at: Some(started),
                                        finished_at: None,
                                        retry_count,
                                    });
                                    ran_op = false;
                                    next = next.min(STEP_POLL);
                                    return self
                                        .finish_pass(PassEnd {
                                            app,
                                            name,
                                            old: &old,
                                            st,
                                            running_rv,
                                            ran_op,
                                            refresh_requested,
                                            next,
                                        })
                                        .await;
                                }
                            };
                            self.wait_clock.forget(&scope);
                            tracing::info!(app = %name, ok = outcome.succeeded, message = %outcome.message, "sync finished");
                            let applied = std::mem::take(&mut outcome.applied);
                            let pruned = std::mem::take(&mut outcome.pruned);
                            // Only a sync done in one step has every apply response.
                            let fast_path = outcome.succeeded && !dry_run && resumed.is_none();
                            let finished = now();
                            let rev = c.revisions.first().cloned().unwrap_or_default();
                            // Argo CD records history only for whole-app syncs.
                            let whole_app = operation
                                .sync
                                .as_ref()
                                .is_none_or(|s| s.resources.is_empty());
                            if outcome.succeeded && !dry_run && whole_app {
                                push_history(
                                    &mut st,
                                    &app,
                                    &c,
                                    &rev,
                                    started.clone(),
                                    finished.clone(),
                                );
                            }
                            if !dry_run {
                                let mut events = crate::events::resources(
                                    &changed_resources(&c, &outcome.results),
                                    &pruned_resources(&outcome.results),
                                );
                                events.push(crate::events::operation_completed(
                                    &rev,
                                    outcome.succeeded,
                                    !whole_app,
                                    &outcome.message,
                                ));
                                crate::events::emit(&self.client, &app, events);
                            }
                            st.operation_state = Some(OperationState {
                                operation: operation.clone(),
                                phase: if outcome.succeeded {
                                    "Succeeded".into()
                                } else {
                                    "Failed".into()
                                },
                                message: outcome.message.clone(),
                                sync_result: Some(SyncOperationResult {
                                    resources: outcome.results,
                                    revision: rev,
                                    revisions: c.revisions.clone(),
                                    source: c.single_source(),
                                    sources: c.multi_sources(),
                                }),
                                started_at: Some(started),
                                finished_at: Some(finished),
                                retry_count,
                            });
                            if !outcome.succeeded {
                                set_condition(&mut st, "SyncError", &outcome.message);
                                let policy = if automated {
                                    app.spec.sync_policy.as_ref().and_then(|p| p.retry.as_ref())
                                } else {
                                    operation.retry.as_ref()
                                };
                                let attempt = retry_count + 1;
                                match policy.and_then(|p| retry_delay(p, attempt)) {
                                    // A requested operation stays pending until it
                                    // succeeds or its retries run out, as in Argo CD.
                                    Some(delay) if !automated && !dry_run => {
                                        if let Some(os) = st.operation_state.as_mut() {
                                            os.phase = "Running".into();
                                            // finishedAt keeps the failed attempt's
                                            // end: the next one waits from there.
                                            os.retry_count = attempt;
                                            os.message = format!(
                                                "{RETRYING} #{attempt} in {}s: {}",
                                                delay.as_secs(),
                                                outcome.message
                                            );
                                        }
                                        ran_op = false;
                                        next = next.min(delay);
                                    }
                                    Some(delay) => next = next.min(delay),
                                    None => {}
                                }
                            }
                            // The apply responses are the live state now; only a
                            // failed or partial sync needs another comparison.
                            if fast_path {
                                self.absorb(&mut c, applied, &pruned);
                                self.fill_status(&mut st, &c);
                            } else if let Ok(c2) =
                                self.compare(&app, op.as_ref(), false, false).await
                            {
                                c = c2;
                                self.fill_status(&mut st, &c);
                            }
                        }
                    }
                }
                if c.health.status == health::PROGRESSING || c.health.status == health::MISSING {
                    next = next.min(Duration::from_secs(5));
                }
            }
        }
        self.finish_pass(PassEnd {
            app,
            name,
            old: &old,
            st,
            running_rv,
            ran_op,
            refresh_requested,
            next,
        })
        .await
    }

    /// The end of every pass: metrics for a finished operation, the status write, Events.
    async fn finish_pass(&self, end: PassEnd<'_>) -> Option<Duration> {
        let PassEnd {
            app,
            name,
            old,
            st,
            running_rv,
            ran_op,
            refresh_requested,
            mut next,
        } = end;
        if ran_op && let Some(os) = &st.operation_state {
            crate::metrics::get()
                .syncs
                .get_or_create(&crate::metrics::PhaseLabel {
                    phase: os.phase.clone(),
                })
                .inc();
            // Argo CD counts completed operations only.
            if matches!(os.phase.as_str(), "Succeeded" | "Failed" | "Error") {
                crate::metrics::get()
                    .app_syncs
                    .get_or_create(&crate::metrics::AppSyncLabels {
                        namespace: app.namespace().unwrap_or_default(),
                        name: app.name_any(),
                        project: app.spec.project.clone(),
                        dest_server: app.spec.destination.server.clone().unwrap_or_default(),
                        phase: os.phase.clone(),
                    })
                    .inc();
            }
        }
        let app = match running_rv {
            Some(rv) => {
                let mut a = app;
                a.metadata.resource_version = Some(rv);
                a
            }
            None => app,
        };
        let status_events = crate::events::status_changes(
            &old.sync
                .as_ref()
                .map(|s| s.status.clone())
                .unwrap_or_default(),
            &st.sync
                .as_ref()
                .map(|s| s.status.clone())
                .unwrap_or_default(),
            &old.health
                .as_ref()
                .map(|h| h.status.clone())
                .unwrap_or_default(),
            &st.health
                .as_ref()
                .map(|h| h.status.clone())
                .unwrap_or_default(),
        );
        let written = self
            .write_status(&app, old, st, ran_op, refresh_requested)
            .await;
        if written.is_ok() {
            crate::events::emit(&self.client, &app, status_events);
        }
        if let Err(e) = written {
            tracing::warn!(app = %name, error = %e, "writing status failed");
            next = next.min(Duration::from_secs(5));
        }
        Some(next)
    }

    fn poll_delay(&self, name: &str) -> Duration {
        // ±10% jitter so apps on one repository do not all poll at once.
        let base = self.cfg.poll_interval.as_millis() as u64;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(0);
        let seed = hash(&format!("{name}{nanos}"));
        let r = u64::from_str_radix(&seed[..8], 16).unwrap_or(0);
        Duration::from_millis(base - base / 10 + r % (base / 5 + 1))
    }

    fn project(&self, name: &str) -> Option<AppProject> {
        self.projects
            .state()
            .into_iter()
            .find(|p| p.name_any() == name)
            .map(|p| (*p).clone())
    }

    /// Credentials for a repository URL; ssh host keys come from Argo CD's
    /// known-hosts ConfigMap unless the Secret names its own.
    pub(crate) fn credentials(&self, url: &str) -> Option<ferry_source::RepoCredentials> {
        let mut creds = ferry_source::credentials_for(url, &self.repo_secrets());
        let known = self
            .known_hosts
            .state()
            .first()
            .and_then(|cm| cm.data.as_ref()?.get("ssh_known_hosts").cloned());
        if let Some(k) = known {
            let c = creds.get_or_insert_with(Default::default);
            if c.known_hosts.is_none() {
                c.known_hosts = Some(k);
            }
        }
        creds
    }

    /// `argocd-cm`'s resource settings; a malformed key stops every app's pass
    /// with the key named, rather than comparing or assessing without it.
    pub(crate) fn resource_settings(&self) -> Result<Arc<ResourceSettings>, Stop> {
        let cm = self.settings_cm.state().into_iter().next();
        let rv = cm
            .as_ref()
            .and_then(|c| c.metadata.resource_version.clone())
            .unwrap_or_default();
        if let Ok(cached) = self.settings_parsed.lock()
            && let Some((seen, parsed)) = cached.as_ref()
            && *seen == rv
        {
            return parsed.clone().map_err(|e| stop("ComparisonError", e));
        }
        let data = cm.and_then(|c| c.data.clone()).unwrap_or_default();
        let parsed = ResourceSettings::parse(&data).map(Arc::new);
        if let Err(e) = &parsed {
            tracing::warn!(error = %e, "argocd-cm resource settings are invalid");
        }
        if let Ok(mut cached) = self.settings_parsed.lock() {
            *cached = Some((rv, parsed.clone()));
        }
        parsed.map_err(|e| stop("ComparisonError", e))
    }

    fn repo_secrets(&self) -> Vec<ferry_source::RepoSecret> {
        self.secrets
            .state()
            .iter()
            .filter_map(|s| {
                let kind = match s.labels().get(SECRET_TYPE_LABEL).map(String::as_str) {
                    Some("repository") => ferry_source::SecretKind::Repository,
                    Some("repo-creds") => ferry_source::SecretKind::RepoCreds,
                    _ => return None,
                };
                ferry_source::RepoSecret::from_secret_data(kind, &decode(s))
            })
            .collect()
    }

    /// The connection for an app's destination.
    pub(crate) async fn destination(
        &self,
        d: &Destination,
    ) -> Result<(Arc<ClusterConn>, String, String), Stop> {
        let server = d.server.clone().unwrap_or_default();
        let name = d.name.clone().unwrap_or_default();
        if (server.is_empty() && name.is_empty())
            || server == IN_CLUSTER_SERVER
            || (server.is_empty() && name == IN_CLUSTER_NAME)
        {
            return Ok((
                self.local.clone(),
                IN_CLUSTER_SERVER.into(),
                IN_CLUSTER_NAME.into(),
            ));
        }
        let secrets: Vec<ClusterSecret> = self
            .secrets
            .state()
            .iter()
            .filter(|s| s.labels().get(SECRET_TYPE_LABEL).map(String::as_str) == Some("cluster"))
            .filter_map(|s| ClusterSecret::from_secret(s))
            .collect();
        let found = secrets.into_iter().find(|c| {
            if !server.is_empty() {
                c.server.trim_end_matches('/') == server.trim_end_matches('/')
            } else {
                c.name == name
            }
        });
        let Some(cs) = found else {
            let what = if server.is_empty() {
                format!("name '{name}'")
            } else {
                format!("server '{server}'")
            };
            return Err(stop(
                "InvalidSpecError",
                format!("there are no clusters with this {what}"),
            ));
        };
        let cached = self
            .clusters
            .lock()
            .ok()
            .and_then(|m| m.get(&cs.server).cloned());
        if let Some((rv, conn)) = cached
            && rv == cs.resource_version
        {
            return Ok((conn, cs.server.clone(), cs.name.clone()));
        }
        let client = cs.client().await.map_err(|e| stop("ComparisonError", e))?;
        let conn = ClusterConn::new(&cs.name, &cs.server, client, self.triggers.clone());
        if let Ok(mut m) = self.clusters.lock() {
            m.insert(
                cs.server.clone(),
                (cs.resource_version.clone(), conn.clone()),
            );
        }
        Ok((conn, cs.server.clone(), cs.name.clone()))
    }

    /// A revision's files, for ApplicationSet git generators: resolved as the apps' sources are
    /// (`fresh` skips the poll interval's memory), checked out read-only.
    pub(crate) async fn checkout_revision(
        &self,
        url: &str,
        revision: &str,
        fresh: bool,
    ) -> Result<std::path::PathBuf, String> {
        let sha = self
            .resolve(url, revision, fresh)
            .await
            .map_err(|s| s.message)?;
        let creds = self.credentials(url);
        self.sources
            .checkout(url, &sha, creds.as_ref())
            .await
            .map_err(|e| e.to_string())
    }

    /// Resolves a revision, at most once per poll interval per (repo, revision).
    async fn resolve(&self, url: &str, revision: &str, fresh: bool) -> Result<String, Stop> {
        let key = (url.to_string(), revision.to_string());
        if !fresh
            && let Some((sha, at)) = self.resolved.lock().ok().and_then(|m| m.get(&key).cloned())
            && at.elapsed() < self.cfg.poll_interval / 2
        {
            return Ok(sha);
        }
        let creds = self.credentials(url);
        let started = Instant::now();
        let sha = self
            .sources
            .resolve(url, revision, creds.as_ref())
            .await
            .inspect(|_| crate::metrics::git(url, "ls-remote", started.elapsed()))
            .map_err(|e| stop("ComparisonError", e.to_string()))?;
        if let Ok(mut m) = self.resolved.lock() {
            m.insert(key, (sha.clone(), Instant::now()));
        }
        Ok(sha)
    }

    pub(crate) fn plugins(&self) -> Vec<ferry_render::PluginConfig> {
        let mut out = Vec::new();
        for cm in self.plugin_maps.state() {
            for text in cm.data.clone().unwrap_or_default().values() {
                match ferry_render::PluginConfig::from_yaml(text) {
                    Ok(p) => out.push(p),
                    Err(e) => {
                        tracing::warn!(configmap = %cm.name_any(), error = %e, "invalid plugin config")
                    }
                }
            }
        }
        for dir in &self.cfg.plugin_dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in entries.flatten() {
                if let Ok(text) = std::fs::read_to_string(e.path())
                    && let Ok(p) = ferry_render::PluginConfig::from_yaml(&text)
                {
                    out.push(p);
                }
            }
        }
        out
    }

    /// `refresh`: re-resolve revisions now; `hard`: also render again.
    /// [`dir_reads_beyond`] once per checked-out directory: checkouts are
    /// per commit and read-only, so a steady pass touches no file for it.
    fn reads_beyond_path(&self, app_dir: &std::path::Path, recurse: bool) -> bool {
        let key = (app_dir.to_path_buf(), recurse);
        if let Some(hit) = self
            .dir_facts
            .lock()
            .ok()
            .and_then(|m| m.get(&key).copied())
        {
            return hit;
        }
        let fact = dir_reads_beyond(app_dir, recurse);
        if let Ok(mut m) = self.dir_facts.lock() {
            // Bounded; dropping one entry at a time costs one re-read later.
            if m.len() >= 4096
                && let Some(k) = m.keys().next().cloned()
            {
                m.remove(&k);
            }
            m.insert(key, fact);
        }
        fact
    }

    /// Stage 3 of [`Self::compare`]: one source rendered, or taken from the
    /// render cache when its inputs are unchanged.
    async fn render_source(
        &self,
        job: SourceRender<'_>,
    ) -> Result<Arc<crate::RenderedSource>, Stop> {
        let s = job.source;
        let contained = !s.is_helm_repo()
            && self_contained(
                s,
                self.reads_beyond_path(
                    &job.checkout.join(s.path.as_deref().unwrap_or(".")),
                    s.directory.as_ref().is_some_and(|d| d.recurse),
                ),
                job.refs,
                job.plugins,
            );
        let key = render_key(
            job.app_name,
            job.dest_ns,
            s,
            job.revision,
            job.tree,
            contained,
            job.refs,
            &format!(
                "{}|{}",
                job.cluster.kube_version,
                hash(&job.cluster.api_versions.join(","))
            ),
            job.plugins,
        );
        if !job.hard
            && let Some(cached) = self
                .rendered
                .lock()
                .ok()
                .and_then(|mut m| m.get(&key).cloned())
        {
            return Ok(cached);
        }
        let tools = job
            .tools
            .as_ref()
            .map_err(|e| stop(e.type_, e.message.clone()))?
            .clone();
        let source = s.clone();
        let checkout = job.checkout.to_path_buf();
        let revision = job.revision.to_string();
        let refs = job.refs.clone();
        let cluster = job.cluster.clone();
        let plugins = job.plugins.to_vec();
        let app_name = job.app_name.to_string();
        let dest_ns = job.dest_ns.to_string();
        let timeout = self.cfg.render_timeout;
        crate::RENDERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let render_started = Instant::now();
        let task = tokio::task::spawn_blocking(move || {
            ferry_render::render(&ferry_render::RenderInput {
                app_name: &app_name,
                app_namespace: &dest_ns,
                source: &source,
                repo_root: &checkout,
                revision: &revision,
                refs: &refs,
                kube_version: &cluster.kube_version,
                api_versions: &cluster.api_versions,
                plugins: &plugins,
                tools: &tools,
                timeout,
            })
        });
        let shown = s.path.as_deref().or(s.chart.as_deref()).unwrap_or(".");
        // External tools are killed at `timeout` by the render itself; in-process
        // evaluation (Jsonnet) cannot be, so the pass stops waiting for it here.
        let joined = tokio::time::timeout(timeout + Duration::from_secs(5), task)
            .await
            .map_err(|_| {
                stop(
                    "ComparisonError",
                    format!(
                        "rendering {shown} did not finish within {}s",
                        timeout.as_secs()
                    ),
                )
            })?;
        crate::metrics::get()
            .render_seconds
            .observe(render_started.elapsed().as_secs_f64());
        let out = joined
            .map_err(|e| stop("ComparisonError", format!("render task failed: {e}")))?
            .map_err(|e| stop("ComparisonError", format!("rendering {shown} failed: {e}")))?;
        let rendered = Arc::new(crate::RenderedSource {
            source_type: out.source_type.as_str().to_string(),
            objects: out.objects,
            skipped: out.skipped,
        });
        if let Ok(mut m) = self.rendered.lock() {
            m.put(key, rendered.clone());
        }
        Ok(rendered)
    }

    /// Placeholders of a natively served avp app, resolved from its store.
    async fn resolve_secrets(
        &self,
        app_key: &str,
        source: &ApplicationSource,
        base: &std::path::Path,
        objects: &[Value],
        hard: bool,
    ) -> Result<Vec<Value>, Stop> {
        let secret_error = |m: String| stop("ComparisonError", format!("secrets: {m}"));
        let config = self
            .resolvers
            .config(&self.client, source, hard)
            .await
            .map_err(secret_error)?;
        let resolver = self
            .resolvers
            .get(&config, &self.client, base)
            .map_err(secret_error)?;
        let (resolved, values) = crate::secrets::resolve(&resolver, &config, objects, hard)
            .await
            .map_err(secret_error)?;
        if let Ok(mut m) = self.secret_values.lock() {
            m.insert(app_key.to_string(), Arc::new(values));
        }
        Ok(resolved)
    }

    pub(crate) async fn compare(
        &self,
        app: &Application,
        op: Option<&Operation>,
        refresh: bool,
        hard: bool,
    ) -> Result<Comparison, Stop> {
        let app_name = app.name_any();
        let t0 = Instant::now();
        let status = app.status.clone().unwrap_or_default();
        let running = in_progress(&status, op);
        let operation_started = running
            .and_then(|o| o.started_at.clone())
            .unwrap_or_else(now);
        let operation_seed = format!(
            "{}/{}/{}",
            operation_started.0,
            status.history.len(),
            running.map(|o| o.retry_count).unwrap_or(0)
        );
        // Fields Ferry does not implement are refused by name, never ignored.
        let unsupported = app.unsupported_fields();
        if !unsupported.is_empty() {
            return Err(stop(
                "InvalidSpecError",
                format!(
                    "fields Ferry does not support: {} (see docs/compatibility.md)",
                    unsupported.join(", ")
                ),
            ));
        }
        if let Some(op) = op {
            let mut unsupported = op.unsupported_fields();
            if let Some(sync_op) = &op.sync {
                unsupported.extend(
                    SyncOptions::parse(&sync_op.sync_options)
                        .unsupported
                        .into_iter()
                        .map(|o| format!("operation.sync.syncOptions {o}")),
                );
            }
            if !unsupported.is_empty() {
                return Err(stop(
                    "InvalidSpecError",
                    format!(
                        "operation fields Ferry does not support: {} (see docs/compatibility.md)",
                        unsupported.join(", ")
                    ),
                ));
            }
        }
        let instance = tracking::app_instance_name(
            &app.namespace().unwrap_or_default(),
            &app_name,
            &self.cfg.namespace,
        );
        let project_name = app.project().to_string();
        let project = self.project(&project_name).ok_or_else(|| {
            stop(
                "InvalidSpecError",
                format!("application references project {project_name} which does not exist"),
            )
        })?;
        let unsupported = project.spec.unsupported_fields();
        if !unsupported.is_empty() {
            return Err(stop(
                "InvalidSpecError",
                format!(
                    "project {project_name} uses fields Ferry does not support: {} (see docs/compatibility.md)",
                    unsupported.join(", ")
                ),
            ));
        }
        let app_ns = app.namespace().unwrap_or_default();
        if app_ns != self.cfg.namespace
            && !crate::namespace_allowed(&project.spec.source_namespaces, &app_ns)
        {
            return Err(stop(
                "InvalidSpecError",
                format!(
                    "application {app_ns}/{app_name} is not permitted to use project {project_name}: namespace {app_ns} is not in the project's sourceNamespaces"
                ),
            ));
        }
        let rollback = op
            .and_then(|o| o.sync.as_ref())
            .filter(|s| s.source.is_some() || s.sources.is_some());
        let sources: Vec<ApplicationSource> = match rollback {
            Some(s) => s
                .sources
                .clone()
                .or_else(|| s.source.clone().map(|x| vec![x]))
                .unwrap_or_default(),
            None => app.sources(),
        };
        if sources.is_empty() {
            return Err(stop(
                "InvalidSpecError",
                "spec.source or spec.sources is required",
            ));
        }
        for s in &sources {
            project
                .spec
                .check_source(&project_name, &scrub_url(&s.repo_url))
                .map_err(|v| stop("InvalidSpecError", v.0))?;
        }
        // A rule that cannot be evaluated is an error, never a rule skipped quietly.
        diff::validate_rules(&app.spec.ignore_differences)
            .map_err(|e| stop("ComparisonError", format!("spec.ignoreDifferences: {e}")))?;
        let settings = self.resource_settings()?;
        diff::validate_rules(&settings.ignore_differences).map_err(|e| {
            stop(
                "ComparisonError",
                format!("argocd-cm resource.customizations.ignoreDifferences: {e}"),
            )
        })?;
        let ignores: Vec<IgnoreDifferences> = app
            .spec
            .ignore_differences
            .iter()
            .chain(&settings.ignore_differences)
            .cloned()
            .collect();
        let dest_ns = app.spec.destination.namespace.clone().unwrap_or_default();
        let (conn, server, cluster_name) = self.destination(&app.spec.destination).await?;
        project
            .spec
            .check_destination(&project_name, &server, &cluster_name, &dest_ns)
            .map_err(|v| stop("InvalidSpecError", v.0))?;

        // A requested operation pins revisions (`argocd app sync --revision`,
        // or a rollback's recorded ones).
        let pinned: Vec<String> = op
            .and_then(|o| o.sync.as_ref())
            .map(|s| {
                if s.revisions.is_empty() {
                    s.revision.iter().cloned().collect()
                } else {
                    s.revisions.clone()
                }
            })
            .unwrap_or_default();
        let tools = self.tools.clone().map_err(|e| stop("ComparisonError", e));
        let mut trees = Vec::new();
        let mut revisions = Vec::new();
        for (i, s) in sources.iter().enumerate() {
            let creds = self.credentials(&s.repo_url);
            if s.is_helm_repo() {
                let tools = tools
                    .as_ref()
                    .map_err(|e| stop(e.type_, e.message.clone()))?;
                let chart = s.chart.clone().unwrap_or_default();
                let version = pinned
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| s.target_revision.clone().unwrap_or_default());
                let (dir, v) = self
                    .sources
                    .helm_chart(&tools.helm, &s.repo_url, &chart, &version, creds.as_ref())
                    .await
                    .map_err(|e| {
                        stop(
                            "ComparisonError",
                            format!(
                                "failed to fetch chart {chart} from {}: {e}",
                                scrub_url(&s.repo_url)
                            ),
                        )
                    })?;
                trees.push((dir, v.clone(), None));
                revisions.push(v);
            } else {
                let sha = match pinned.get(i) {
                    Some(p) if !p.is_empty() => self.resolve(&s.repo_url, p, true).await?,
                    _ => self.resolve(&s.repo_url, s.revision(), refresh).await?,
                };
                let started = Instant::now();
                let dir = self
                    .sources
                    .checkout(&s.repo_url, &sha, creds.as_ref())
                    .await
                    .inspect(|_| crate::metrics::git(&s.repo_url, "checkout", started.elapsed()))
                    .map_err(|e| stop("ComparisonError", e.to_string()))?;
                let tree = self
                    .sources
                    .tree_id(&s.repo_url, &sha, s.path.as_deref().unwrap_or(""))
                    .await
                    .ok()
                    .flatten();
                trees.push((dir, sha.clone(), tree));
                revisions.push(sha);
            }
        }
        tracing::debug!(app = %app_name, ms = t0.elapsed().as_millis() as u64, "sources fetched");
        let refs: BTreeMap<String, std::path::PathBuf> = sources
            .iter()
            .zip(&trees)
            .filter_map(|(s, (dir, _, _))| s.ref_name.clone().map(|r| (r, dir.clone())))
            .collect();

        let kube_version = conn.version().await.map_err(|e| {
            stop(
                "ComparisonError",
                format!("cluster {}: {}", conn.name, sync::api_message(&e)),
            )
        })?;
        let api_versions = conn.api_versions().await.map_err(|e| {
            stop(
                "ComparisonError",
                format!("cluster {}: {}", conn.name, sync::api_message(&e)),
            )
        })?;
        let plugins = self.plugins();
        let cluster = ClusterFacts {
            kube_version,
            api_versions,
        };
        let mut objects: Vec<Value> = Vec::new();
        let mut source_type = String::new();
        let mut skipped: Vec<String> = Vec::new();
        let mut empty_render = None;
        for (s, (dir, rev, tree)) in sources.iter().zip(&trees) {
            // A source that only provides `$ref` values renders nothing.
            if s.ref_name.is_some() && s.path.is_none() && !s.is_helm_repo() {
                continue;
            }
            // avp's standard plugins are served natively: rendered without a plugin process,
            // placeholders resolved below (after the render cache).
            let native = crate::secrets::is_native(s, &plugins);
            let plain;
            let render_as = if native {
                plain = crate::secrets::without_plugin(s);
                &plain
            } else {
                s
            };
            let rendered = self
                .render_source(SourceRender {
                    app_name: &app_name,
                    dest_ns: &dest_ns,
                    source: render_as,
                    checkout: dir,
                    revision: rev,
                    tree: tree.as_deref(),
                    refs: &refs,
                    cluster: &cluster,
                    plugins: &plugins,
                    tools: &tools,
                    hard,
                })
                .await?;
            source_type = rendered.source_type.clone();
            if native {
                let base = dir.join(s.path.as_deref().unwrap_or("."));
                let resolved = self
                    .resolve_secrets(&self.app_key(app), s, &base, &rendered.objects, hard)
                    .await?;
                source_type = "Plugin".into();
                objects.extend(resolved);
                skipped.extend(rendered.skipped.iter().cloned());
                continue;
            }
            objects.extend(rendered.objects.iter().cloned());
            skipped.extend(rendered.skipped.iter().cloned());
        }
        if objects.is_empty() {
            empty_render = Some(empty_render_message(&skipped));
        }

        tracing::debug!(app = %app_name, ms = t0.elapsed().as_millis() as u64, "rendered");
        // Resolve kinds, place objects, check the project.
        let crd_kinds: HashSet<(String, String)> = objects
            .iter()
            .filter(|o| o["kind"] == "CustomResourceDefinition")
            .filter_map(|o| {
                let g = o.pointer("/spec/group")?.as_str()?;
                let k = o.pointer("/spec/names/kind")?.as_str()?;
                Some((g.to_string(), k.to_string()))
            })
            .collect();
        let mut resources: Vec<Resource> = Vec::new();
        let mut seen = HashSet::new();
        let app_opts = app.sync_options();
        if !app_opts.unsupported.is_empty() {
            return Err(stop(
                "InvalidSpecError",
                format!(
                    "spec.syncPolicy.syncOptions Ferry does not support: {} (see docs/compatibility.md)",
                    app_opts.unsupported.join(", ")
                ),
            ));
        }
        let mut excluded = Vec::new();
        for mut obj in objects {
            let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_string();
            let kind = obj["kind"].as_str().unwrap_or_default().to_string();
            let group = group_of(&api_version).to_string();
            // argocd-cm's resource.exclusions/inclusions: never managed, and said so.
            if let Some(rule) = settings.excluded(&group, &kind, &server) {
                excluded.push(format!(
                    "{kind}/{} is excluded by {rule}",
                    obj.pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                ));
                continue;
            }
            let mut options = app_opts.clone();
            if let Some(o) = plan::annotation(&obj, annotations::SYNC_OPTIONS) {
                options.apply(
                    &o.split(',')
                        .map(|s| s.trim().to_string())
                        .collect::<Vec<_>>(),
                );
            }
            if !options.unsupported.is_empty() {
                return Err(stop(
                    "InvalidSpecError",
                    format!(
                        "{kind} {}: sync options Ferry does not support: {}",
                        obj.pointer("/metadata/name")
                            .and_then(Value::as_str)
                            .unwrap_or_default(),
                        options.unsupported.join(", ")
                    ),
                ));
            }
            let resolved = match conn.resolve(&api_version, &kind).await {
                Ok(r) => Some(r),
                Err(_) if crd_kinds.contains(&(group.clone(), kind.clone())) => None,
                // The kind may be served by the time the sync applies it.
                Err(_) if options.skip_dry_run_on_missing_resource => None,
                Err(e) => {
                    return Err(stop(
                        "ComparisonError",
                        format!(
                            "the server could not find the requested resource {api_version}/{kind}: {}",
                            sync::api_message(&e)
                        ),
                    ));
                }
            };
            // Custom resources whose CRD comes with this sync are namespaced unless proven otherwise.
            let namespaced = resolved.as_ref().map(|r| r.namespaced).unwrap_or(true);
            let is_hook = plan::hook_kind(&obj) != HookKind::None;
            let meta = obj["metadata"]
                .as_object_mut()
                .ok_or_else(|| stop("ComparisonError", "object without metadata"))?;
            let mut ns = meta
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if namespaced && ns.is_empty() {
                ns = dest_ns.clone();
                meta.insert("namespace".into(), json!(ns));
            } else if !namespaced {
                meta.remove("namespace");
                ns.clear();
            }
            let mut name = meta
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            // Hooks may use generateName (Argo CD's docs do). Name them here,
            // as the API server would, so apply, wait and delete policies
            // all address the object this sync creates; the name comes from the
            // operation, so a sync resumed (after a wait or a restart) finds its hook.
            let generate = meta
                .get("generateName")
                .and_then(Value::as_str)
                .map(str::to_string);
            if name.is_empty()
                && is_hook
                && let Some(prefix) = generate
            {
                name = format!(
                    "{prefix}{}",
                    &hash(&format!("{app_name}{prefix}{operation_seed}"))[..5]
                );
                meta.insert("name".into(), json!(name));
                meta.remove("generateName");
            }
            let key = ObjectKey {
                group: group.clone(),
                kind: kind.clone(),
                namespace: ns.clone(),
                name,
            };
            project
                .spec
                .check_resource(&project_name, &group, &kind, namespaced)
                .map_err(|v| stop("InvalidSpecError", v.0))?;
            if namespaced && !ns.is_empty() {
                project
                    .spec
                    .check_destination(&project_name, &server, &cluster_name, &ns)
                    .map_err(|v| stop("InvalidSpecError", format!("{}: {v}", key)))?;
            }
            let anns = meta.entry("annotations").or_insert_with(|| json!({}));
            if let Some(a) = anns.as_object_mut() {
                a.insert(
                    annotations::TRACKING_ID.into(),
                    json!(tracking::tracking_id(&instance, &key)),
                );
            }
            diff::default_list_map_keys(&mut obj);
            if !seen.insert(key.clone()) {
                continue;
            }
            resources.push(Resource {
                hook: plan::hook_kind(&obj),
                key,
                resolved,
                desired: obj,
                options,
                out_of_sync: true,
            });
        }

        tracing::debug!(app = %app_name, ms = t0.elapsed().as_millis() as u64, "kinds resolved");
        // Compare each non-hook object with live through a dry-run apply.
        let mut statuses = Vec::new();
        let mut healths = Vec::new();
        let mut errors = Vec::new();
        let mut synced = true;
        // Live reads come from the shared cache; dry-runs go out concurrently.
        // Kubernetes fills the rules of an aggregated ClusterRole; Git has none.
        let mut ignores = ignores;
        if settings.ignore_aggregated_roles {
            for r in &resources {
                if r.key.kind == "ClusterRole" && r.desired.get("aggregationRule").is_some() {
                    ignores.push(IgnoreDifferences {
                        group: r.key.group.clone(),
                        kind: r.key.kind.clone(),
                        name: Some(r.key.name.clone()),
                        json_pointers: vec!["/rules".into()],
                        ..IgnoreDifferences::default()
                    });
                }
            }
        }
        let ignores = &ignores;
        let create_ns = app_opts.create_namespace;
        let conn_ref = &conn;
        let dest_ref = &dest_ns;
        let mut pending = Vec::new();
        for (i, r) in resources.iter().enumerate() {
            if r.hook != HookKind::None {
                continue;
            }
            pending.push(async move {
                let (live, unknown) = match &r.resolved {
                    Some(res) => match conn_ref.live(res, &r.key.namespace, &r.key.name).await {
                        Ok(l) => (l, None),
                        Err(e) => (None, Some(e)),
                    },
                    None => (None, None),
                };
                let diffs = match (&r.resolved, unknown) {
                    // Not knowing the live state is an error, never "missing".
                    (_, Some(e)) => Err(e),
                    (None, None) => Ok(vec!["(kind not served yet)".to_string()]),
                    (Some(res), None) => {
                        self.diff(
                            conn_ref,
                            res,
                            &r.key,
                            &r.desired,
                            live.as_ref(),
                            ignores,
                            dest_ref,
                            create_ns,
                        )
                        .await
                    }
                };
                (i, live, diffs)
            });
        }
        let checks: Vec<(usize, Option<Value>, DiffResult)> =
            futures::stream::iter(pending).buffered(16).collect().await;
        for (i, live, diffs) in checks {
            let r = &mut resources[i];
            let version = r.desired["apiVersion"]
                .as_str()
                .unwrap_or_default()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
            let mut status = ResourceStatus {
                group: r.key.group.clone(),
                version,
                kind: r.key.kind.clone(),
                namespace: r.key.namespace.clone(),
                name: r.key.name.clone(),
                sync_wave: Some(plan::wave(&r.desired)).filter(|w| *w != 0),
                ..ResourceStatus::default()
            };
            if let Some(l) = &live
                && app_opts.fail_on_shared_resource
                && let Some(id) = plan::annotation(l, annotations::TRACKING_ID)
                && let Some((owner, _)) = tracking::parse_tracking_id(id)
                && owner != instance
            {
                errors.push(format!(
                    "{} is part of applications {owner} and {instance}",
                    r.key
                ));
            }
            let diffs = match diffs {
                Ok(d) => d,
                Err(msg) => {
                    errors.push(format!("{}: {msg}", r.key));
                    vec![msg]
                }
            };
            r.out_of_sync = !diffs.is_empty();
            status.status = Some(if r.out_of_sync {
                "OutOfSync".into()
            } else {
                "Synced".into()
            });
            let h = match &live {
                None => HealthStatus {
                    status: health::MISSING.into(),
                    message: None,
                },
                Some(l) => health::assess_with(l, &settings).unwrap_or(HealthStatus {
                    status: health::HEALTHY.into(),
                    message: None,
                }),
            };
            healths.push(h.clone());
            status.health = Some(h);
            if r.out_of_sync {
                synced = false;
            }
            statuses.push(status);
        }

        tracing::debug!(app = %app_name, ms = t0.elapsed().as_millis() as u64, "compared");
        // What this app manages live but Git no longer has.
        let mut kinds: Vec<(String, String)> = resources
            .iter()
            .map(|r| {
                (
                    r.desired["apiVersion"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    r.key.kind.clone(),
                )
            })
            .collect();
        for s in &app.status.clone().unwrap_or_default().resources {
            let av = if s.group.is_empty() {
                s.version.clone()
            } else {
                format!("{}/{}", s.group, s.version)
            };
            kinds.push((av, s.kind.clone()));
        }
        kinds.sort();
        kinds.dedup();
        let desired_keys: HashSet<ObjectKey> = resources.iter().map(|r| r.key.clone()).collect();
        let mut prune = Vec::new();
        let mut ignored_extraneous = HashSet::new();
        for (av, kind) in kinds {
            if settings.excluded(group_of(&av), &kind, &server).is_some() {
                continue;
            }
            let Ok(res) = conn.resolve(&av, &kind).await else {
                continue;
            };
            let tracked = conn
                .tracked_by(&res, &instance)
                .await
                .map_err(|e| stop("ComparisonError", e))?;
            for live in tracked {
                let ns = live
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let name = live
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let key = ObjectKey {
                    group: group_of(&av).to_string(),
                    kind: kind.clone(),
                    namespace: ns,
                    name,
                };
                if desired_keys.contains(&key) || plan::hook_kind(&live) != HookKind::None {
                    continue;
                }
                let mut o = SyncOptions::parse(&[]);
                if let Some(a) = plan::annotation(&live, annotations::SYNC_OPTIONS) {
                    o.apply(
                        &a.split(',')
                            .map(|s| s.trim().to_string())
                            .collect::<Vec<_>>(),
                    );
                }
                // `IgnoreExtraneous`: listed and prunable, but the app's sync
                // status does not depend on it.
                let extraneous_ok = plan::annotation(&live, annotations::COMPARE_OPTIONS)
                    .is_some_and(|c| c.split(',').any(|x| x.trim() == "IgnoreExtraneous"));
                if extraneous_ok {
                    ignored_extraneous.insert(key.clone());
                } else {
                    synced = false;
                }
                statuses.push(ResourceStatus {
                    group: key.group.clone(),
                    version: av.rsplit('/').next().unwrap_or_default().to_string(),
                    kind: key.kind.clone(),
                    namespace: key.namespace.clone(),
                    name: key.name.clone(),
                    status: Some("OutOfSync".into()),
                    requires_pruning: true,
                    health: health::assess_with(&live, &settings),
                    ..ResourceStatus::default()
                });
                prune.push(PruneTarget {
                    uid: live
                        .pointer("/metadata/uid")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    key,
                    resolved: res.clone(),
                    version: av.rsplit('/').next().unwrap_or_default().to_string(),
                    disabled: !o.prune,
                    wave: plan::wave(&live),
                    prune_last: o.prune_last || app_opts.prune_last,
                });
            }
        }
        statuses.sort_by(|a, b| {
            (&a.group, &a.kind, &a.namespace, &a.name).cmp(&(
                &b.group,
                &b.kind,
                &b.namespace,
                &b.name,
            ))
        });
        Ok(Comparison {
            conn,
            revisions,
            sources,
            source_type,
            resources,
            prune,
            statuses,
            synced,
            health: health::worst(healths.iter()),
            errors,
            empty_render,
            ignores: ignores.clone(),
            settings,
            ignored_extraneous,
            excluded,
            operation_started,
        })
    }

    /// Differences between what applying `desired` would produce and live;
    /// cached on (desired, live resourceVersion) so a steady state costs no request.
    #[allow(clippy::too_many_arguments)]
    async fn diff(
        &self,
        conn: &ClusterConn,
        res: &Resolved,
        key: &ObjectKey,
        desired: &Value,
        live: Option<&Value>,
        ignores: &[IgnoreDifferences],
        dest_ns: &str,
        create_namespace: bool,
    ) -> Result<Vec<String>, String> {
        let rv = live
            .and_then(|l| l.pointer("/metadata/resourceVersion"))
            .and_then(Value::as_str)
            .unwrap_or("-");
        let rules = diff::rules_for(ignores, &key.group, &key.kind, &key.namespace, &key.name);
        let cache_key = compare_key(&conn.server, key, rv, desired, &rules);
        if let Some(d) = self
            .compared
            .lock()
            .ok()
            .and_then(|mut m| m.get(&cache_key).cloned())
        {
            return Ok(d);
        }
        let predicted = match sync::dry_run_apply(conn, res, key, desired).await {
            Ok(p) => p,
            Err(kube::Error::Api(s))
                if s.code == 404 && create_namespace && key.namespace == dest_ns =>
            {
                // The namespace is created by the sync.
                return Ok(vec!["(namespace to be created)".into()]);
            }
            Err(e) => return Err(sync::api_message(&e)),
        };
        let Some(live) = live else {
            return Ok(vec!["(missing)".into()]);
        };
        let mut a = predicted;
        let mut b = live.clone();
        let owners = live_managed_fields(conn, res, key, &rules).await?;
        diff::normalize(&mut a);
        diff::normalize(&mut b);
        diff::apply_ignores(&mut a, &rules, owners.as_ref());
        diff::apply_ignores(&mut b, &rules, owners.as_ref());
        let d = diff::differences(&a, &b);
        if let Ok(mut m) = self.compared.lock() {
            m.put(cache_key, d.clone());
        }
        Ok(d)
    }

    /// Takes a successful sync's apply responses as the new live state: every
    /// applied object is in sync at the returned resourceVersion (remembered,
    /// so the next pass needs no dry-run), and pruned objects are gone.
    fn absorb(&self, c: &mut Comparison, applied: Vec<(ObjectKey, Value)>, pruned: &[ObjectKey]) {
        let ignores = c.ignores.clone();
        let settings = c.settings.clone();
        let applied: std::collections::HashMap<ObjectKey, Value> = applied.into_iter().collect();
        let key_of = |s: &ResourceStatus| ObjectKey {
            group: s.group.clone(),
            kind: s.kind.clone(),
            namespace: s.namespace.clone(),
            name: s.name.clone(),
        };
        c.statuses
            .retain(|s| !(s.requires_pruning && pruned.contains(&key_of(s))));
        c.prune.retain(|p| !pruned.contains(&p.key));
        for r in c.resources.iter_mut() {
            let Some(live) = applied.get(&r.key) else {
                continue;
            };
            r.out_of_sync = false;
            let rv = live
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("-");
            if let Ok(mut m) = self.compared.lock() {
                m.put(
                    compare_key(
                        &c.conn.server,
                        &r.key,
                        rv,
                        &r.desired,
                        &diff::rules_for(
                            &ignores,
                            &r.key.group,
                            &r.key.kind,
                            &r.key.namespace,
                            &r.key.name,
                        ),
                    ),
                    Vec::new(),
                );
            }
        }
        for s in c.statuses.iter_mut() {
            if let Some(live) = applied.get(&key_of(s)) {
                s.status = Some("Synced".into());
                s.health = Some(
                    health::assess_with(live, &settings).unwrap_or(HealthStatus {
                        status: health::HEALTHY.into(),
                        message: None,
                    }),
                );
            }
        }
        c.synced = c.statuses.iter().all(|s| {
            (s.status.as_deref() == Some("Synced") && !s.requires_pruning)
                || (s.requires_pruning && c.ignored_extraneous.contains(&key_of(s)))
        });
        let healths: Vec<HealthStatus> = c
            .statuses
            .iter()
            .filter(|s| !s.requires_pruning)
            .filter_map(|s| s.health.clone())
            .collect();
        c.health = health::worst(healths.iter());
    }

    fn fill_status(&self, st: &mut ApplicationStatus, c: &Comparison) {
        st.resources = c.statuses.clone();
        let compared_to = json!({ "source": c.sources.first(), "destination": {} });
        st.sync = Some(SyncStatus {
            status: if c.synced {
                "Synced".into()
            } else {
                "OutOfSync".into()
            },
            revision: if c.revisions.len() == 1 {
                c.revisions.first().cloned()
            } else {
                None
            },
            revisions: if c.revisions.len() > 1 {
                c.revisions.clone()
            } else {
                Vec::new()
            },
            compared_to: Some(compared_to),
        });
        st.health = Some(c.health.clone());
        st.source_type = Some(c.source_type.clone()).filter(|s| !s.is_empty());
    }

    /// Why the project's sync windows keep this app from syncing now, if they do.
    fn window_block(&self, app: &Application, manual: bool) -> Option<String> {
        let project = self.project(app.project())?;
        if project.spec.sync_windows.is_empty() {
            return None;
        }
        let verdict = window_verdict(
            &project.spec.sync_windows,
            &app.name_any(),
            &app.spec.destination,
            chrono::Utc::now(),
        );
        match verdict {
            Err(e) => Some(e),
            Ok(v) if v.allows(manual) => None,
            Ok(v) => Some(format!(
                "{} sync blocked by a sync window of project {} ({})",
                if manual { "manual" } else { "automated" },
                app.project(),
                v.as_str()
            )),
        }
    }

    /// What to do after comparing: [`Self::decide_sync`], held back while a
    /// sync window forbids it.
    fn decide(
        &self,
        app: &Application,
        op: Option<&Operation>,
        c: &Comparison,
        st: &ApplicationStatus,
    ) -> Decision {
        let decision = self.decide_sync(app, op, c, st);
        let Decision::Sync { operation, .. } = &decision else {
            return decision;
        };
        let manual = op.is_some() && !operation.is_automated();
        match self.window_block(app, manual) {
            Some(message) => Decision::Blocked {
                message,
                operation: op.map(|o| Box::new(o.clone())),
            },
            None => decision,
        }
    }

    fn decide_sync(
        &self,
        app: &Application,
        op: Option<&Operation>,
        c: &Comparison,
        st: &ApplicationStatus,
    ) -> Decision {
        let facts = CompareFacts {
            synced: c.synced,
            desired: c
                .resources
                .iter()
                .filter(|r| r.hook == HookKind::None)
                .count(),
            only_prune: c
                .statuses
                .iter()
                .all(|s| s.requires_pruning || s.status.as_deref() == Some("Synced")),
            revisions: c.revisions.clone(),
            sources: c.sources.clone(),
        };
        crate::decide::decide_sync(
            app,
            op,
            &facts,
            st,
            k8s_openapi::jiff::Timestamp::now().as_second(),
        )
    }

    /// Names one operation of one app (its start, and the count of syncs before it, since a
    /// start is recorded to the second); marks the hooks it creates.
    fn operation_scope(&self, app: &Application, started: &Time) -> String {
        let st = app.status.as_ref();
        format!(
            "{}@{}#{}",
            self.app_key(app),
            started.0,
            st.map(|s| s.history.len()).unwrap_or(0)
        )
    }

    #[allow(clippy::too_many_arguments)]
    async fn sync(
        &self,
        app: &Application,
        c: &Comparison,
        op: &Operation,
        prune: bool,
        dry_run: bool,
        progress: sync::Progress<'_>,
        scope: String,
    ) -> sync::Step {
        let s = op.sync.clone().unwrap_or_default();
        let mut options = app.sync_options();
        options.apply(&s.sync_options);
        let mut resources = c.resources.clone();
        if !s.resources.is_empty() {
            resources.retain(|r| {
                s.resources.iter().any(|w| {
                    w.kind == r.key.kind
                        && w.name == r.key.name
                        && w.group == r.key.group
                        && w.namespace
                            .as_deref()
                            .is_none_or(|n| n.is_empty() || n == r.key.namespace)
                })
            });
        }
        // Options given with the operation (`argocd app sync --sync-option`)
        // apply to every resource, over the app's and the object's own.
        if !s.sync_options.is_empty() {
            for r in resources.iter_mut() {
                r.options.apply(&s.sync_options);
            }
        }
        // `syncStrategy.apply` (argocd app sync --strategy apply, the UI's "apply only"):
        // the manifests without their hooks; `force` in either strategy: `Force=true` for all.
        let strategy = s.sync_strategy.clone().unwrap_or_default();
        if strategy.apply_only() {
            resources.retain(|r| r.hook == HookKind::None);
        }
        if strategy.force() {
            for r in resources.iter_mut() {
                r.options.force = true;
            }
        }
        let dest_ns = app.spec.destination.namespace.clone().unwrap_or_default();
        let create_namespace = (options.create_namespace && !dest_ns.is_empty()).then(|| {
            (
                dest_ns.clone(),
                app.spec
                    .sync_policy
                    .as_ref()
                    .and_then(|p| p.managed_namespace_metadata.clone()),
            )
        });
        let req = SyncRequest {
            conn: &c.conn,
            resources,
            prune: if s.resources.is_empty() {
                c.prune.clone()
            } else {
                Vec::new()
            },
            prune_enabled: prune,
            options,
            dry_run,
            create_namespace,
            wave_timeout: self.cfg.wave_timeout,
            settings: &c.settings,
            clock: &self.wait_clock,
            scope,
        };
        sync::step(req, progress).await
    }

    /// Records that a sync is under way (`operationState.phase: Running`),
    /// guarded by the resourceVersion this pass read. Returns the new
    /// resourceVersion, or None when the write did not happen (then the
    /// final write proceeds as before).
    async fn write_running(
        &self,
        app: &Application,
        operation: &Operation,
        started: Time,
        c: &Comparison,
    ) -> Option<String> {
        // With a (still empty) result, the state is already one a restarted controller goes
        // on with, at this revision, rather than starting another sync.
        let state = OperationState {
            operation: operation.clone(),
            phase: "Running".into(),
            message: "syncing".into(),
            started_at: Some(started),
            sync_result: Some(SyncOperationResult {
                revision: c.revisions.first().cloned().unwrap_or_default(),
                revisions: c.revisions.clone(),
                source: c.single_source(),
                sources: c.multi_sources(),
                ..SyncOperationResult::default()
            }),
            ..OperationState::default()
        };
        let ops = json!([
            { "op": "test", "path": "/metadata/resourceVersion", "value": app.resource_version() },
            { "op": "add", "path": "/status", "value": app.status.clone().unwrap_or_default() },
            { "op": "add", "path": "/status/operationState", "value": state },
        ]);
        let patch: json_patch::Patch = serde_json::from_value(ops).ok()?;
        let api: Api<Application> =
            Api::namespaced(self.client.clone(), &app.namespace().unwrap_or_default());
        match api
            .patch(
                &app.name_any(),
                &PatchParams::default(),
                &Patch::<()>::Json(patch),
            )
            .await
        {
            Ok(updated) => {
                let rv = updated.resource_version();
                if let Ok(mut w) = self.written.lock() {
                    w.insert(self.app_key(app), updated);
                }
                rv
            }
            Err(e) => {
                tracing::debug!(app = %app.name_any(), error = %e, "could not record the running sync");
                None
            }
        }
    }

    async fn write_status(
        &self,
        app: &Application,
        old: &ApplicationStatus,
        mut st: ApplicationStatus,
        clear_op: bool,
        clear_refresh: bool,
    ) -> Result<(), kube::Error> {
        // A condition cleared and set again with the same message in this
        // pass keeps its time: otherwise every pass would write (and our own
        // write re-queue the app) for as long as the condition holds.
        for c in st.conditions.iter_mut() {
            if let Some(prev) = old
                .conditions
                .iter()
                .find(|o| o.type_ == c.type_ && o.message == c.message)
            {
                c.last_transition_time
                    .clone_from(&prev.last_transition_time);
            }
        }
        let changed = {
            let mut a = old.clone();
            a.reconciled_at = None;
            let mut b = st.clone();
            b.reconciled_at = None;
            a != b
        };
        if !changed && !clear_op && !clear_refresh {
            return Ok(());
        }
        st.reconciled_at = Some(now());
        // Fails (and is retried) if the object changed since we read it.
        let mut ops = vec![
            json!({ "op": "test", "path": "/metadata/resourceVersion", "value": app.resource_version() }),
            json!({ "op": "add", "path": "/status", "value": st }),
        ];
        if clear_op && app.operation.is_some() {
            ops.push(json!({ "op": "remove", "path": "/operation" }));
        }
        if clear_refresh && app.annotations().contains_key(annotations::REFRESH) {
            ops.push(json!({ "op": "remove", "path": "/metadata/annotations/argocd.argoproj.io~1refresh" }));
        }
        let patch: json_patch::Patch =
            serde_json::from_value(Value::Array(ops)).map_err(kube::Error::SerdeError)?;
        let api: Api<Application> =
            Api::namespaced(self.client.clone(), &app.namespace().unwrap_or_default());
        let mut result = api
            .patch(
                &app.name_any(),
                &PatchParams::default(),
                &Patch::<()>::Json(patch),
            )
            .await;
        // After an operation the result must not be lost to a concurrent
        // edit (a label, an annotation): re-read and write again as long as
        // the operation is still the one we ran.
        let mut tries = 0;
        while clear_op
            && tries < 3
            && matches!(&result, Err(kube::Error::Api(e)) if e.code == 422 || e.code == 409)
        {
            tries += 1;
            let fresh = api.get(&app.name_any()).await?;
            if fresh.operation != app.operation {
                break;
            }
            let mut ops = vec![
                json!({ "op": "test", "path": "/metadata/resourceVersion", "value": fresh.resource_version() }),
                json!({ "op": "add", "path": "/status", "value": st }),
            ];
            if fresh.operation.is_some() {
                ops.push(json!({ "op": "remove", "path": "/operation" }));
            }
            let patch: json_patch::Patch =
                serde_json::from_value(Value::Array(ops)).map_err(kube::Error::SerdeError)?;
            result = api
                .patch(
                    &app.name_any(),
                    &PatchParams::default(),
                    &Patch::<()>::Json(patch),
                )
                .await;
        }
        let updated = result?;
        if let Ok(mut w) = self.written.lock() {
            w.insert(self.app_key(app), updated);
        }
        Ok(())
    }

    /// Deletion with `resources-finalizer.argocd.argoproj.io`: delete what the
    /// app manages, then let the Application go.
    async fn finalize(&self, app: &Application) -> Option<Duration> {
        let finalizers = app.finalizers().to_vec();
        let fg = finalizers.iter().any(|f| {
            f == annotations::RESOURCES_FINALIZER
                || f == annotations::RESOURCES_FINALIZER_FOREGROUND
        });
        let bg = finalizers
            .iter()
            .any(|f| f == annotations::RESOURCES_FINALIZER_BACKGROUND);
        if !fg && !bg {
            return None;
        }
        let instance = tracking::app_instance_name(
            &app.namespace().unwrap_or_default(),
            &app.name_any(),
            &self.cfg.namespace,
        );
        let conn = match self.destination(&app.spec.destination).await {
            Ok((c, _, _)) => c,
            // The cluster itself is gone: nothing is left to delete there.
            Err(s) if s.type_ == "InvalidSpecError" => {
                tracing::warn!(app = %app.name_any(), error = %s.message, "destination no longer exists; releasing the Application");
                return self.release_finalizers(app).await;
            }
            Err(s) => {
                tracing::warn!(app = %app.name_any(), error = %s.message, "cannot reach destination to delete resources");
                return Some(Duration::from_secs(10));
            }
        };
        let policy = if fg { "foreground" } else { "background" };
        let mut remaining = 0;
        for s in &app.status.clone().unwrap_or_default().resources {
            let av = if s.group.is_empty() {
                s.version.clone()
            } else {
                format!("{}/{}", s.group, s.version)
            };
            let Ok(res) = conn.resolve(&av, &s.kind).await else {
                continue;
            };
            let api = conn.api(&res, &s.namespace);
            let Ok(Some(live)) = api.get_opt(&s.name).await else {
                continue;
            };
            let owned = live
                .annotations()
                .get(annotations::TRACKING_ID)
                .and_then(|id| tracking::parse_tracking_id(id))
                .is_some_and(|(a, _)| a == instance);
            // `Delete=false` keeps an object (a PVC, a namespace) when its app goes.
            let keep = live
                .annotations()
                .get(annotations::SYNC_OPTIONS)
                .is_some_and(|o| o.split(',').any(|x| x.trim() == "Delete=false"));
            if !owned || keep {
                continue;
            }
            remaining += 1;
            if live.metadata.deletion_timestamp.is_none() {
                let key = ObjectKey {
                    group: s.group.clone(),
                    kind: s.kind.clone(),
                    namespace: s.namespace.clone(),
                    name: s.name.clone(),
                };
                if let Err(e) = sync::delete(&conn, Some(&res), &key, policy).await {
                    tracing::warn!(app = %app.name_any(), resource = %key, error = %e, "cascade delete failed");
                }
            }
        }
        if remaining > 0 && fg {
            return Some(Duration::from_secs(2));
        }
        self.release_finalizers(app).await
    }

    /// Removes Ferry's finalizers so the Application can go.
    async fn release_finalizers(&self, app: &Application) -> Option<Duration> {
        let keep: Vec<String> = app
            .finalizers()
            .iter()
            .filter(|f| {
                *f != annotations::RESOURCES_FINALIZER
                    && *f != annotations::RESOURCES_FINALIZER_BACKGROUND
                    && *f != annotations::RESOURCES_FINALIZER_FOREGROUND
            })
            .cloned()
            .collect();
        let api: Api<Application> =
            Api::namespaced(self.client.clone(), &app.namespace().unwrap_or_default());
        let patch = json!({ "metadata": { "finalizers": keep, "resourceVersion": app.resource_version() } });
        match api
            .patch(
                &app.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(app = %app.name_any(), error = %e, "removing finalizer failed");
                Some(Duration::from_secs(2))
            }
        }
    }
}

/// The live object's managedFields when a rule needs them (`managedFieldsManagers`): the watch
/// cache does not keep them (they are most of a small object's size), so they are read from
/// the API server for these objects only. A forced dry-run apply cannot stand in: it moves the
/// contested fields to Ferry.
pub(crate) async fn live_managed_fields(
    conn: &ClusterConn,
    res: &Resolved,
    key: &ObjectKey,
    rules: &[&IgnoreDifferences],
) -> Result<Option<Value>, String> {
    if rules.iter().all(|r| r.managed_fields_managers.is_empty()) {
        return Ok(None);
    }
    match conn.api(res, &key.namespace).get_opt(&key.name).await {
        Ok(Some(o)) => Ok(serde_json::to_value(&o)
            .ok()
            .and_then(|v| v.pointer("/metadata/managedFields").cloned())),
        Ok(None) => Ok(None),
        Err(e) => Err(sync::api_message(&e)),
    }
}

/// Differences with live (JSON pointers), or why the dry-run failed.
type DiffResult = Result<Vec<String>, String>;

/// The sync an earlier step left waiting (`Running` with recorded results), which this pass
/// goes on with: the requested operation, or an automated one when none is requested.
/// A retry waiting out its backoff, or a sync blocked by a window, starts afresh instead.
pub(crate) fn in_progress<'s>(
    st: &'s ApplicationStatus,
    requested: Option<&Operation>,
) -> Option<&'s OperationState> {
    let o = st.operation_state.as_ref()?;
    if o.phase != "Running" || o.sync_result.is_none() || o.message.starts_with(RETRYING) {
        return None;
    }
    match requested {
        Some(op) => (*op == o.operation).then_some(o),
        None => o.operation.is_automated().then_some(o),
    }
}

/// What the end of a pass writes.
struct PassEnd<'a> {
    app: Application,
    name: &'a str,
    old: &'a ApplicationStatus,
    st: ApplicationStatus,
    /// Set when a Running operation state was written mid-pass: the status write must
    /// expect that resourceVersion.
    running_rv: Option<String>,
    ran_op: bool,
    refresh_requested: bool,
    next: Duration,
}

/// How soon a sync waiting on a wave or a hook looks again when no watched object changed.
const STEP_POLL: Duration = Duration::from_secs(2);

fn rv_num(a: &Application) -> u64 {
    a.metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn push_history(
    st: &mut ApplicationStatus,
    app: &Application,
    c: &Comparison,
    rev: &str,
    started: Time,
    finished: Time,
) {
    let id = st.history.iter().map(|h| h.id).max().unwrap_or(-1) + 1;
    st.history.push(RevisionHistory {
        id,
        revision: Some(rev.to_string()),
        revisions: if c.revisions.len() > 1 {
            c.revisions.clone()
        } else {
            Vec::new()
        },
        deployed_at: Some(finished),
        deploy_started_at: Some(started),
        source: c.single_source(),
        sources: c.multi_sources(),
    });
    let limit = app.spec.revision_history_limit.unwrap_or(10).max(1) as usize;
    if st.history.len() > limit {
        let drop = st.history.len() - limit;
        st.history.drain(..drop);
    }
}

fn set_condition(st: &mut ApplicationStatus, type_: &str, message: &str) {
    if let Some(c) = st.conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.message != message {
            c.message = message.to_string();
            c.last_transition_time = Some(now());
        }
        return;
    }
    st.conditions.push(ApplicationCondition {
        type_: type_.into(),
        message: message.into(),
        last_transition_time: Some(now()),
    });
}

fn clear_conditions(st: &mut ApplicationStatus, types: &[&str]) {
    st.conditions.retain(|c| !types.contains(&c.type_.as_str()));
}

/// What a comparison depends on: the desired object, the live version, and
/// the ignoreDifferences rules that apply to it.
fn compare_key(
    server: &str,
    key: &ObjectKey,
    rv: &str,
    desired: &Value,
    rules: &[&IgnoreDifferences],
) -> String {
    let rules_key = serde_json::to_string(rules).unwrap_or_default();
    format!(
        "{server}|{key}|{rv}|{}|{}",
        hash(&desired.to_string()),
        hash(&rules_key)
    )
}

fn hash(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether a source's render can only depend on files under its own path,
/// so that its cache may key on that path's git tree instead of the commit.
/// Kustomizations (which may load `../base`), plugins (which may read
/// anything), Helm charts with local dependencies or value files from
/// elsewhere, and multi-source `$ref`s all read beyond the path.
fn self_contained(
    s: &ApplicationSource,
    reads_beyond_path: bool,
    refs: &BTreeMap<String, std::path::PathBuf>,
    plugins: &[ferry_render::PluginConfig],
) -> bool {
    s.plugin.is_none()
        && s.kustomize.is_none()
        && !reads_beyond_path
        && refs.is_empty()
        && plugins.iter().all(|p| p.discover.is_none())
        && s.helm.as_ref().is_none_or(|h| {
            h.value_files
                .iter()
                .all(|f| !f.contains("..") && !f.starts_with('$') && !f.starts_with('/'))
        })
}

/// Whether what is in `app_dir` can make a render read beyond it: a
/// kustomization, a chart with `file://` dependencies, Jsonnet (imports).
fn dir_reads_beyond(app_dir: &std::path::Path, recurse: bool) -> bool {
    let kustomization = ["kustomization.yaml", "kustomization.yml", "Kustomization"]
        .iter()
        .any(|f| app_dir.join(f).exists());
    let chart_deps = std::fs::read_to_string(app_dir.join("Chart.yaml"))
        .map(|c| c.contains("file://"))
        .unwrap_or(false);
    kustomization || chart_deps || has_jsonnet(app_dir, recurse)
}

/// Whether a directory source holds Jsonnet, whose imports may read anywhere in
/// the repository. The walk is bounded; a tree too big to check counts as Jsonnet.
fn has_jsonnet(dir: &std::path::Path, recurse: bool) -> bool {
    let mut budget = 2000usize;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            budget = match budget.checked_sub(1) {
                Some(b) => b,
                None => return true,
            };
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".jsonnet") {
                return true;
            }
            if recurse && !name.starts_with('.') && e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    false
}

#[allow(clippy::too_many_arguments)]
fn render_key(
    app: &str,
    ns: &str,
    s: &ApplicationSource,
    rev: &str,
    tree: Option<&str>,
    self_contained: bool,
    refs: &BTreeMap<String, std::path::PathBuf>,
    kube_version: &str,
    plugins: &[ferry_render::PluginConfig],
) -> String {
    // Keyed on the path's tree, not the commit, when the render cannot read
    // beyond the path: then commits elsewhere do not re-render this app.
    let version_key = match tree {
        Some(t) if self_contained => format!("tree:{t}"),
        _ => format!("rev:{rev}"),
    };
    let refs_key: Vec<String> = refs
        .iter()
        .map(|(k, v)| format!("{k}={}", v.display()))
        .collect();
    let plugin_key: Vec<String> = plugins.iter().map(|p| format!("{p:?}")).collect();
    hash(&format!(
        "{app}|{ns}|{}|{version_key}|{}|{kube_version}|{}",
        serde_json::to_string(s).unwrap_or_default(),
        refs_key.join(","),
        hash(&plugin_key.join(","))
    ))
}

/// Resources a sync changed (it applied them and they differed from Git, or were missing), for
/// their Events: group, kind, namespace, name, whether they existed, the apply's message.
fn changed_resources(
    c: &Comparison,
    results: &[ResourceResult],
) -> Vec<(String, String, String, String, bool, String)> {
    results
        .iter()
        .filter(|r| r.status == "Synced" && r.hook_type.is_empty())
        .filter_map(|r| {
            let status = c.statuses.iter().find(|s| {
                s.kind == r.kind
                    && s.name == r.name
                    && s.group == r.group
                    && s.namespace == r.namespace
            })?;
            (status.status.as_deref() != Some("Synced")).then(|| {
                let missing = status
                    .health
                    .as_ref()
                    .is_some_and(|h| h.status == "Missing");
                (
                    r.group.clone(),
                    r.kind.clone(),
                    r.namespace.clone(),
                    r.name.clone(),
                    !missing,
                    r.message.clone(),
                )
            })
        })
        .collect()
}

fn pruned_resources(results: &[ResourceResult]) -> Vec<(String, String, String, String)> {
    results
        .iter()
        .filter(|r| r.status == "Pruned")
        .map(|r| {
            (
                r.group.clone(),
                r.kind.clone(),
                r.namespace.clone(),
                r.name.clone(),
            )
        })
        .collect()
}

/// The compare's errors that stop this operation. An object the API server refuses to change
/// in place (an immutable field) does not stop a sync that forces it (`syncStrategy` with
/// `force`, or the object's `Force=true`): that sync deletes and re-creates it.
fn blocking_errors(c: &Comparison, operation: &Operation) -> Vec<String> {
    let forced_op = operation
        .sync
        .as_ref()
        .and_then(|s| s.sync_strategy.as_ref())
        .is_some_and(|s| s.force());
    c.errors
        .iter()
        .filter(|e| {
            let immutable = e.contains("field is immutable");
            let forced = forced_op
                || c.resources
                    .iter()
                    .any(|r| r.options.force && e.starts_with(&format!("{}: ", r.key)));
            !(immutable && forced)
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::parse_duration;

    #[test]
    fn durations_as_argo_cd_writes_them() {
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("3m"), Some(Duration::from_secs(180)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration("12"), Some(Duration::from_secs(12)));
        // A user's absurd value is refused, not a panic in a worker.
        assert_eq!(parse_duration("99999999999999999999999h"), None);
    }
}

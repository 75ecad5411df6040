//! Splitting Applications across controller replicas. There are N shards, each held by a
//! Lease (`ferry-controller-shard-<i>`); an app's shard comes from its destination cluster
//! (Argo CD's `shard` field on the cluster Secret, else a stable hash of the server URL, as
//! Argo CD's legacy algorithm) or from a hash of the app. Each replica keeps a member Lease
//! and holds its fair share (shards / live members, rounded up): it takes free or expired
//! shards, and hands back extra ones only once its reconciles of their apps have ended, so
//! no app is reconciled by two replicas at once. A replica that stops renewing loses its
//! shards when their Leases expire, and the others take them.

use crate::leader::LeaderElection;
use ferry_model::Application;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SHARD_LEASE: &str = "ferry-controller-shard-";
const MEMBER_LEASE: &str = "ferry-controller-member-";

/// What decides an app's shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardBy {
    /// The destination cluster, as Argo CD: every app of one cluster in one shard.
    Cluster,
    /// A hash of the app's namespace and name: apps of one cluster spread out.
    App,
}

/// The stable 32-bit FNV-1a hash (Argo CD's choice for clusters): every replica, of any
/// build, puts an app in the same shard.
fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The shard of `app` among `n`. `cluster_shard` is the `shard` field of the destination's
/// cluster Secret, when it has one.
pub fn shard_of(app: &Application, n: u32, by: ShardBy, cluster_shard: Option<u32>) -> u32 {
    if n <= 1 {
        return 0;
    }
    match by {
        ShardBy::Cluster => {
            if let Some(s) = cluster_shard {
                return s % n;
            }
            let dest = &app.spec.destination;
            let server = dest
                .server
                .clone()
                .or_else(|| dest.name.clone())
                .unwrap_or_default();
            fnv1a(&server) % n
        }
        ShardBy::App => {
            fnv1a(&format!(
                "{}/{}",
                app.namespace().unwrap_or_default(),
                app.name_any()
            )) % n
        }
    }
}

#[derive(Default)]
struct State {
    owned: BTreeSet<u32>,
    /// Being handed back: no new reconcile starts.
    draining: BTreeSet<u32>,
    active: BTreeMap<u32, usize>,
}

/// The shards this replica holds, and the reconciles running in each.
pub struct Shards {
    pub n: u32,
    pub by: ShardBy,
    state: Mutex<State>,
    /// Problems already logged (a cluster Secret's unreadable `shard` field), so each is said
    /// once, not on every reconcile.
    reported: Mutex<BTreeSet<String>>,
}

impl Shards {
    pub fn new(n: u32, by: ShardBy) -> Self {
        Shards {
            n: n.max(1),
            by,
            state: Mutex::default(),
            reported: Mutex::default(),
        }
    }

    /// True the first time `problem` is seen.
    pub fn first_report(&self, problem: &str) -> bool {
        self.reported
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(problem.to_string())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A reconcile of an app in `shard` may start (and is counted until `end`).
    pub fn begin(&self, shard: u32) -> bool {
        let mut s = self.state();
        if !s.owned.contains(&shard) || s.draining.contains(&shard) {
            return false;
        }
        *s.active.entry(shard).or_default() += 1;
        true
    }

    pub fn end(&self, shard: u32) {
        let mut s = self.state();
        if let Some(n) = s.active.get_mut(&shard) {
            *n = n.saturating_sub(1);
        }
    }

    pub fn owned(&self) -> Vec<u32> {
        self.state().owned.iter().copied().collect()
    }

    fn idle(&self, shard: u32) -> bool {
        self.state().active.get(&shard).copied().unwrap_or(0) == 0
    }
}

/// Lease names allow lowercase alphanumerics, `-` and `.`.
fn lease_name(prefix: &str, id: &str) -> String {
    let clean: String = id
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let mut name = format!("{prefix}{clean}");
    name.truncate(253);
    name.trim_end_matches('-').to_string()
}

/// Live members: member Leases renewed within their duration.
async fn live_members(api: &Api<Lease>) -> Result<usize, kube::Error> {
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let leases = api.list(&ListParams::default()).await?;
    Ok(leases
        .items
        .iter()
        .filter(|l| l.name_any().starts_with(MEMBER_LEASE))
        .filter_map(|l| l.spec.as_ref())
        .filter(|s| s.holder_identity.as_deref().is_some_and(|h| !h.is_empty()))
        .filter(|s| {
            let renewed = s.renew_time.as_ref().map(|t| t.0.as_second()).unwrap_or(0);
            renewed + i64::from(s.lease_duration_seconds.unwrap_or(15)) >= now
        })
        .count())
}

/// Keeps this replica's share of shards until `stopping`, then hands every shard back (once
/// the workers have stopped) and leaves. `acquired` is called with each newly held shard, so
/// its apps are queued.
pub async fn run(
    client: Client,
    namespace: &str,
    identity: &str,
    lease_duration: Duration,
    shards: &Shards,
    acquired: impl Fn(u32),
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let member = LeaderElection::new(
        client.clone(),
        namespace,
        &lease_name(MEMBER_LEASE, identity),
        identity,
        lease_duration,
    );
    let leases: Vec<LeaderElection> = (0..shards.n)
        .map(|i| {
            LeaderElection::new(
                client.clone(),
                namespace,
                &format!("{SHARD_LEASE}{i}"),
                identity,
                lease_duration,
            )
        })
        .collect();
    // Where this replica starts looking, so replicas do not all race for shard 0.
    let start = fnv1a(identity) % shards.n;
    let mut renewed: BTreeMap<u32, Instant> = BTreeMap::new();
    let renew_deadline = lease_duration * 2 / 3;
    loop {
        if let Err(e) = member.try_acquire().await {
            tracing::warn!(error = %e, "sharding: member lease renewal failed");
        }
        let members = live_members(&api).await.unwrap_or(1).max(1);
        let fair = shards.n.div_ceil(members as u32) as usize;
        // Renew what we hold; a shard whose renewals failed past the deadline is dropped
        // before anyone else may take it.
        for shard in shards.owned() {
            let attempt = Instant::now();
            match leases[shard as usize].try_acquire().await {
                Ok(true) => {
                    renewed.insert(shard, attempt);
                }
                Ok(false) => drop_shard(shards, shard, "taken over"),
                Err(e) => tracing::warn!(shard, error = %e, "sharding: renewal failed"),
            }
            if renewed
                .get(&shard)
                .is_none_or(|t| t.elapsed() > renew_deadline)
            {
                drop_shard(shards, shard, "renewals failed");
            }
        }
        let owned = shards.owned();
        if owned.len() > fair
            && let Some(&extra) = owned.last()
        {
            hand_back(shards, &leases[extra as usize], extra).await;
        } else if owned.len() < fair {
            for k in 0..shards.n {
                let shard = (start + k) % shards.n;
                if shards.owned().len() >= fair {
                    break;
                }
                if owned.contains(&shard) {
                    continue;
                }
                let attempt = Instant::now();
                if let Ok(true) = leases[shard as usize].try_acquire().await {
                    renewed.insert(shard, attempt);
                    shards.state().owned.insert(shard);
                    tracing::info!(shard, members, "sharding: took shard");
                    acquired(shard);
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(lease_duration / 5) => {}
            _ = stopping.wait_for(|s| *s) => break,
        }
    }
    // Stopping: the workers are ending; hand every shard back once its reconciles ended.
    for shard in shards.owned() {
        hand_back(shards, &leases[shard as usize], shard).await;
    }
    let _ = api
        .delete(
            &lease_name(MEMBER_LEASE, identity),
            &DeleteParams::default(),
        )
        .await;
}

fn drop_shard(shards: &Shards, shard: u32, why: &str) {
    let mut s = shards.state();
    if s.owned.remove(&shard) {
        tracing::warn!(shard, why, "sharding: lost shard");
    }
}

/// Stops new reconciles of the shard's apps, waits for running ones (up to a third of a
/// lease), then releases its Lease so another replica takes it at once.
async fn hand_back(shards: &Shards, lease: &LeaderElection, shard: u32) {
    shards.state().draining.insert(shard);
    let deadline = Instant::now() + lease.duration() / 3;
    while !shards.idle(shard) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !shards.idle(shard) {
        // Still busy: keep it (renewed on the next round) rather than share an app.
        shards.state().draining.remove(&shard);
        return;
    }
    {
        let mut s = shards.state();
        s.owned.remove(&shard);
        s.draining.remove(&shard);
    }
    match lease.release().await {
        Ok(()) => tracing::info!(shard, "sharding: handed shard back"),
        Err(e) => tracing::warn!(shard, error = %e, "sharding: release failed; it expires"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(ns: &str, name: &str, server: &str) -> Application {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": { "name": name, "namespace": ns },
            "spec": { "project": "default", "destination": { "server": server } }
        }))
        .unwrap()
    }

    #[test]
    fn apps_of_one_cluster_share_a_shard_unless_split_by_app() {
        let a = app("argocd", "a", "https://one.example");
        let b = app("argocd", "b", "https://one.example");
        assert_eq!(
            shard_of(&a, 4, ShardBy::Cluster, None),
            shard_of(&b, 4, ShardBy::Cluster, None)
        );
        assert_eq!(shard_of(&a, 4, ShardBy::Cluster, Some(6)), 2);
        // Spread by app: 200 apps land in every one of 4 shards.
        let used: BTreeSet<u32> = (0..200)
            .map(|i| {
                shard_of(
                    &app("argocd", &format!("app-{i}"), "x"),
                    4,
                    ShardBy::App,
                    None,
                )
            })
            .collect();
        assert_eq!(used.len(), 4);
        assert_eq!(shard_of(&a, 1, ShardBy::App, None), 0);
    }

    #[test]
    fn fnv1a_is_the_published_function() {
        // Test vectors of FNV-1a 32.
        assert_eq!(fnv1a(""), 0x811c_9dc5);
        assert_eq!(fnv1a("a"), 0xe40c_292c);
        assert_eq!(fnv1a("foobar"), 0xbf9c_f968);
    }

    #[test]
    fn a_draining_shard_starts_nothing_new_and_counts_what_runs() {
        let s = Shards::new(2, ShardBy::App);
        assert!(!s.begin(0), "not owned");
        s.state().owned.insert(0);
        assert!(s.begin(0));
        assert!(!s.idle(0));
        s.state().draining.insert(0);
        assert!(!s.begin(0), "draining");
        s.end(0);
        assert!(s.idle(0));
    }

    #[test]
    fn lease_names_are_valid() {
        assert_eq!(
            lease_name(MEMBER_LEASE, "Host_1:42"),
            "ferry-controller-member-host-1-42"
        );
    }
}

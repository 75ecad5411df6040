//! Leader election on a coordination/v1 Lease: of several replicas only the
//! holder acts; another takes over once the holder stops renewing.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;
use std::time::Duration;

pub struct LeaderElection {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
}

impl LeaderElection {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        lease_duration: Duration,
    ) -> Self {
        LeaderElection {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            lease_duration,
        }
    }

    pub fn duration(&self) -> Duration {
        self.lease_duration
    }

    /// One attempt to take or renew the lease, bounded in time (a hung
    /// request must not keep a replica believing it leads). Ok(true) when we hold it.
    pub async fn try_acquire(&self) -> Result<bool, kube::Error> {
        match tokio::time::timeout(self.lease_duration / 3, self.try_acquire_inner()).await {
            Ok(r) => r,
            Err(_) => Ok(false),
        }
    }

    async fn try_acquire_inner(&self) -> Result<bool, kube::Error> {
        let now = k8s_openapi::jiff::Timestamp::now();
        let secs = self.lease_duration.as_secs() as i32;
        match self.api.get_opt(&self.name).await? {
            None => {
                let lease: Lease = serde_json::from_value(json!({
                    "metadata": { "name": self.name },
                    "spec": {
                        "holderIdentity": self.identity,
                        "leaseDurationSeconds": secs,
                        "acquireTime": MicroTime(now),
                        "renewTime": MicroTime(now),
                        "leaseTransitions": 0,
                    }
                }))
                .map_err(kube::Error::SerdeError)?;
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Some(mut lease) => {
                let spec = lease.spec.clone().unwrap_or_default();
                let holder = spec.holder_identity.clone().unwrap_or_default();
                let expired = match &spec.renew_time {
                    None => true,
                    Some(MicroTime(t)) => {
                        let dur = spec.lease_duration_seconds.unwrap_or(secs) as i64;
                        now.as_second() > t.as_second() + dur
                    }
                };
                if holder != self.identity && !expired && !holder.is_empty() {
                    return Ok(false);
                }
                let mut new_spec = spec.clone();
                if holder != self.identity {
                    new_spec.acquire_time = Some(MicroTime(now));
                    new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                new_spec.holder_identity = Some(self.identity.clone());
                new_spec.lease_duration_seconds = Some(secs);
                new_spec.renew_time = Some(MicroTime(now));
                lease.spec = Some(new_spec);
                // The resourceVersion in `lease` makes this a compare-and-swap.
                match self
                    .api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Blocks until this replica holds the lease. Besides retrying every fifth of a lease, it
    /// watches the Lease, so one released by a leader shutting down is taken within a moment.
    pub async fn acquire(&self) {
        use futures::StreamExt;
        let changes = kube::runtime::watcher(
            self.api.clone(),
            kube::runtime::watcher::Config::default()
                .fields(&format!("metadata.name={}", self.name)),
        );
        let mut changes = std::pin::pin!(changes);
        loop {
            match self.try_acquire().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election: lease request failed"),
            }
            tokio::select! {
                () = tokio::time::sleep(self.lease_duration / 5) => {}
                _ = changes.next() => {}
            }
        }
    }

    /// Gives the lease up if this replica holds it (client-go's ReleaseOnCancel): no holder,
    /// and a one-second duration, so a standby takes it now.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
        lease.spec = Some(spec);
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map(drop)
    }

    /// Renews until renewals have failed past the renew deadline (two thirds
    /// of the lease, as client-go's renewDeadline), then returns so the
    /// caller stops acting before any other replica may take over.
    pub async fn hold(&self) {
        let deadline = self.lease_duration * 2 / 3;
        // Measured from before the request, so it is never later than the
        // renewTime other replicas judge by.
        let mut last_ok = std::time::Instant::now();
        loop {
            tokio::time::sleep(self.lease_duration / 5).await;
            let attempt = std::time::Instant::now();
            match self.try_acquire().await {
                Ok(true) => last_ok = attempt,
                Ok(false) => return,
                Err(e) => tracing::warn!(error = %e, "leader election: renewal failed"),
            }
            if last_ok.elapsed() > deadline {
                return;
            }
        }
    }
}

//! A rolling restart of the controller, as `kubectl rollout restart` does it: two replicas with
//! leader election over every app of the run, SIGTERM to the leader, and how long until the
//! standby holds the Lease and reconciles its first app.

use anyhow::bail;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub struct Figures {
    pub lease_secs: f64,
    pub first_reconcile_secs: f64,
    pub lease_duration: u64,
}

const LEASE_SECONDS: u64 = 15;

fn spawn(
    ferry: &Path,
    kubeconfig: &Path,
    ns: &str,
    id: &str,
    dir: &Path,
) -> anyhow::Result<(Child, PathBuf)> {
    let log = dir.join(format!("{id}.log"));
    let child = Command::new(ferry)
        .args([
            "controller",
            "--namespace",
            ns,
            "--identity",
            id,
            "--poll-seconds",
            "3600",
        ])
        .args([
            "--lease-seconds",
            &LEASE_SECONDS.to_string(),
            "--log",
            "ferry_controller=debug",
        ])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(dir.join(format!("{id}-cache")))
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    Ok((child, log))
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("ferry-controller")
        .await
        .ok()??
        .spec?
        .holder_identity
}

fn log_has(log: &Path, what: &str) -> bool {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains(what)
}

pub async fn run(
    ferry: &Path,
    kubeconfig: &Path,
    client: &Client,
    ns: &str,
    apps: usize,
    dir: &Path,
) -> anyhow::Result<Figures> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let (mut a, log_a) = spawn(ferry, kubeconfig, ns, "replica-a", dir)?;
    let t = Instant::now();
    while holder(&leases).await.as_deref() != Some("replica-a")
        || std::fs::read_to_string(&log_a)
            .unwrap_or_default()
            .matches("reconciled")
            .count()
            < apps
    {
        if t.elapsed() > Duration::from_secs(600) {
            bail!(
                "replica a did not lead and reconcile every app; see {}",
                log_a.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut b, log_b) = spawn(ferry, kubeconfig, ns, "replica-b", dir)?;
    while !log_has(&log_b, "waiting for leadership") {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(a.id() as libc::pid_t, libc::SIGTERM);
    }
    let sent = Instant::now();
    let mut lease_secs = None;
    let first_reconcile_secs = loop {
        if lease_secs.is_none() && holder(&leases).await.as_deref() == Some("replica-b") {
            lease_secs = Some(sent.elapsed().as_secs_f64());
        }
        if log_has(&log_b, "reconciled") {
            break sent.elapsed().as_secs_f64();
        }
        if sent.elapsed() > Duration::from_secs(120) {
            bail!("replica b did not take over; see {}", log_b.display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let lease_secs = lease_secs.unwrap_or(first_reconcile_secs);
    let _ = a.wait();
    let _ = b.kill();
    let _ = b.wait();
    Ok(Figures {
        lease_secs,
        first_reconcile_secs,
        lease_duration: LEASE_SECONDS,
    })
}

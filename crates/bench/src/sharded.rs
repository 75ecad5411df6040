//! Several controller replicas splitting the apps by shard (`--shards 4 --shard-by app`):
//! cold sync of every app, one steady-state pass over all of them (CPU summed over the
//! replicas, Ferry's requests from the audit log), each replica's peak RSS, and how long
//! until a killed replica's shards are held by the others.

use crate::{NS, audit_counts, count_reconciles, peak_rss_mib, proc_cpu_seconds, write_total};
use anyhow::{Context, bail};
use ferry_model::Application;
use ferry_testenv::TestEnv;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub const SHARDS: u32 = 4;

pub struct Figures {
    pub replicas: usize,
    pub cold_secs: f64,
    pub steady_secs: f64,
    pub steady_cpu: f64,
    pub ferry_requests: BTreeMap<String, f64>,
    pub rss_mib: Vec<f64>,
    pub takeover_secs: f64,
}

fn spawn(ferry: &Path, env: &TestEnv, id: &str) -> anyhow::Result<(Child, PathBuf)> {
    let log = env.dir.join(format!("{id}.log"));
    let child = Command::new(ferry)
        .args(["controller", "--namespace", NS, "--identity", id])
        .args(["--poll-seconds", "3600", "--lease-seconds", "10"])
        .args(["--shards", &SHARDS.to_string(), "--shard-by", "app"])
        .args(["--log", "ferry_controller=debug"])
        .arg("--kubeconfig")
        .arg(&env.cluster.kubeconfig)
        .arg("--cache-dir")
        .arg(env.dir.join(format!("{id}-cache")))
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    Ok((child, log))
}

async fn holders(leases: &Api<Lease>) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..SHARDS {
        let h = leases
            .get_opt(&format!("ferry-controller-shard-{i}"))
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity)
            .unwrap_or_default();
        out.push(h);
    }
    out
}

pub async fn run(
    ferry: &Path,
    env: &TestEnv,
    client: &Client,
    n: usize,
    replicas: usize,
) -> anyhow::Result<Figures> {
    let mut procs = Vec::new();
    for i in 0..replicas {
        procs.push(spawn(ferry, env, &format!("replica-{i}"))?);
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    // Every shard held, by every replica: the split is done before the apps arrive.
    let t = Instant::now();
    loop {
        let h = holders(&leases).await;
        let distinct: std::collections::BTreeSet<&String> =
            h.iter().filter(|x| !x.is_empty()).collect();
        if h.iter().all(|x| !x.is_empty()) && distinct.len() == replicas {
            break;
        }
        if t.elapsed() > Duration::from_secs(120) {
            bail!("the shards were not split across {replicas} replicas: {h:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let apps: Api<Application> = Api::namespaced(client.clone(), NS);
    eprintln!("sharded: cold sync of {n} applications over {replicas} replicas...");
    let t = Instant::now();
    crate::create_apps(env, client, n).await?;
    while !crate::all_synced(&apps, "bench-", n).await? {
        if t.elapsed() > Duration::from_secs(3600) {
            bail!("cold sync did not finish in an hour");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let cold_secs = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(10)).await;

    eprintln!("sharded: one steady-state pass...");
    let audit_log = env.cluster.audit_log.clone().context("audit log")?;
    let audit_mark = std::fs::metadata(&audit_log).map(|m| m.len() as usize)?;
    let marks: Vec<usize> = procs
        .iter()
        .map(|(_, log)| {
            std::fs::metadata(log)
                .map(|m| m.len() as usize)
                .unwrap_or(0)
        })
        .collect();
    let cpu0: f64 = procs.iter().map(|(c, _)| proc_cpu_seconds(c.id())).sum();
    let t = Instant::now();
    for (c, _) in &procs {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(c.id() as libc::pid_t, libc::SIGUSR1);
        }
    }
    // Each replica re-checks every app it is sent and reconciles its own shards' apps.
    while procs
        .iter()
        .zip(&marks)
        .map(|((_, log), m)| count_reconciles(log, *m))
        .sum::<usize>()
        < n
    {
        if t.elapsed() > Duration::from_secs(600) {
            bail!("the steady-state pass did not finish");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let steady_secs = t.elapsed().as_secs_f64();
    let steady_cpu = procs
        .iter()
        .map(|(c, _)| proc_cpu_seconds(c.id()))
        .sum::<f64>()
        - cpu0;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ferry_requests, _) = audit_counts(&audit_log, audit_mark);
    eprintln!(
        "sharded: Ferry's steady requests {ferry_requests:?}, writes {}",
        write_total(&ferry_requests)
    );
    let rss_mib: Vec<f64> = procs.iter().map(|(c, _)| peak_rss_mib(c.id())).collect();

    eprintln!("sharded: SIGKILL to one replica...");
    let (mut dead, _) = procs.pop().context("a replica")?;
    let dead_id = format!("replica-{}", procs.len());
    dead.kill()?;
    dead.wait()?;
    let t = Instant::now();
    loop {
        let h = holders(&leases).await;
        if h.iter().all(|x| !x.is_empty() && *x != dead_id) {
            break;
        }
        if t.elapsed() > Duration::from_secs(120) {
            bail!("the dead replica's shards were not taken: {h:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let takeover_secs = t.elapsed().as_secs_f64();
    for (mut c, _) in procs {
        let _ = c.kill();
        let _ = c.wait();
    }
    Ok(Figures {
        replicas,
        cold_secs,
        steady_secs,
        steady_cpu,
        ferry_requests,
        rss_mib,
        takeover_secs,
    })
}

//! ferry-bench: measures Ferry on the local environment and writes docs/benchmarks.md.
//!
//! 1. Cold sync of N Applications x R resources from one repository, against
//!    `kubectl apply --server-side` of the same objects (the API server's own cost).
//! 2. One steady-state pass with nothing changed: wall time, API requests by
//!    verb (from the API server's own metrics), controller CPU seconds.
//! 3. Commit -> applied latency after a refresh, p50 and p95.
//! 4. Controller peak RSS.
//! 5. Secrets ([`secrets`]): apps whose placeholders are resolved from OpenBao, against the same
//!    apps with the values written in; store requests in a cold sync and in a steady pass.

mod appset;
mod handover;
mod secrets;
mod sharded;
mod ui;

use anyhow::{Context, bail};
use clap::Parser;
use ferry_model::Application;
use ferry_testenv::{Options, TestEnv};
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 200)]
    apps: usize,
    #[arg(long, default_value_t = 10)]
    resources: usize,
    /// Commits measured for the latency percentiles.
    #[arg(long, default_value_t = 20)]
    samples: usize,
    /// Markdown file to write the results to.
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
    /// Applications in the secrets workload (0 skips it).
    #[arg(long, default_value_t = 200)]
    secret_apps: usize,
    /// Applications in the server's cache when the web UI is timed (the run's own, then
    /// unsynced ones added up to this number).
    #[arg(long, default_value_t = 1000)]
    ui_apps: usize,
    /// Run this many controller replicas splitting the apps by shard instead of the single
    /// controller (cold sync, steady pass, RSS, takeover only).
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Steady-state passes after the measured one, unmeasured (for attaching a profiler:
    /// `perf record -p <controller pid>` while they run).
    #[arg(long, default_value_t = 0)]
    extra_steady_passes: usize,
    /// The ferry binary (default: next to this one).
    #[arg(long)]
    ferry: Option<PathBuf>,
}

pub(crate) const NS: &str = "argocd";

fn manifests(app: usize, resources: usize, generation: usize) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for r in 0..resources {
        let body = if r % 5 == 4 {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{r}\n  labels:\n    app: bench-{app}\nspec:\n  selector:\n    app: bench-{app}\n  ports:\n  - port: {}\n    protocol: TCP\n    targetPort: 8080\n",
                8000 + r
            )
        } else {
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{r}\n  labels:\n    app: bench-{app}\ndata:\n  index: \"{r}\"\n  generation: \"{generation}\"\n  payload: \"{}\"\n",
                "x".repeat(200)
            )
        };
        files.push((format!("app-{app}/r{r}.yaml"), body));
    }
    files
}

fn write_tree(root: &Path, files: &[(String, String)]) -> anyhow::Result<()> {
    for (p, c) in files {
        let path = root.join(p);
        std::fs::create_dir_all(path.parent().context("no parent")?)?;
        std::fs::write(path, c)?;
    }
    Ok(())
}

/// apiserver_request_total by verb, excluding dry runs and watches' own bookkeeping.
async fn request_counts(client: &Client) -> anyhow::Result<BTreeMap<String, f64>> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(req).await?;
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let (labels, value) = line.rsplit_once(' ').context("metrics line")?;
        let get = |k: &str| {
            labels
                .split(&format!("{k}=\""))
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap_or_default()
                .to_string()
        };
        // Only what a delivery engine touches; the controller manager's own
        // traffic (leases, endpoints, events) is left out.
        let resource = get("resource");
        if ![
            "configmaps",
            "services",
            "applications",
            "applicationsets",
            "appprojects",
            "secrets",
            "namespaces",
        ]
        .contains(&resource.as_str())
        {
            continue;
        }
        let verb = if get("dry_run").is_empty() {
            format!("{} {resource}", get("verb"))
        } else {
            format!("{} {resource} (dry-run)", get("verb"))
        };
        *out.entry(verb).or_default() += value.parse::<f64>().unwrap_or(0.0);
    }
    Ok(out)
}

/// Requests in the API server's audit log from byte `from` on, by client: Ferry's (its
/// `User-Agent` is `ferry/<version>`) and everyone else's, each by verb and resource.
pub(crate) fn audit_counts(
    log: &Path,
    from: usize,
) -> (BTreeMap<String, f64>, BTreeMap<String, f64>) {
    let text = std::fs::read(log).unwrap_or_default();
    let text = String::from_utf8_lossy(text.get(from..).unwrap_or_default());
    let (mut ferry, mut others) = (BTreeMap::new(), BTreeMap::new());
    for event in text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        let agent = event["userAgent"].as_str().unwrap_or_default();
        let verb = event["verb"].as_str().unwrap_or_default().to_uppercase();
        let resource = event["objectRef"]["resource"]
            .as_str()
            .unwrap_or("(non-resource)");
        let dry_run = event["requestURI"]
            .as_str()
            .is_some_and(|u| u.contains("dryRun="));
        let key = if dry_run {
            format!("{verb} {resource} (dry-run)")
        } else {
            format!("{verb} {resource}")
        };
        if agent.starts_with("ferry/") {
            *ferry.entry(key).or_default() += 1.0;
        } else {
            let client = agent.split('/').next().unwrap_or("unknown");
            *others.entry(format!("{client}: {key}")).or_default() += 1.0;
        }
    }
    (ferry, others)
}

/// The workload's Applications `bench-0..n`, one per directory of the `bench` repository,
/// each delivering into its own namespace, automated with prune and self-heal.
pub(crate) async fn create_apps(env: &TestEnv, client: &Client, n: usize) -> anyhow::Result<()> {
    let ar = kube::api::ApiResource::erase::<Application>(&());
    let dyn_apps: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &ar);
    let url = env.git.file_url("bench");
    let pp = PatchParams::apply("bench");
    for a in 0..n {
        let app = json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": { "name": format!("bench-{a}"), "namespace": NS },
            "spec": {
                "project": "default",
                "source": { "repoURL": url, "path": format!("app-{a}"), "targetRevision": "main" },
                "destination": { "server": "https://kubernetes.default.svc", "namespace": format!("ferry-{a}") },
                "syncPolicy": { "automated": { "prune": true, "selfHeal": true }, "syncOptions": ["CreateNamespace=true"] },
            },
        });
        dyn_apps
            .patch(&format!("bench-{a}"), &pp, &Patch::Apply(&app))
            .await?;
    }
    Ok(())
}

/// Non-dry-run requests that change something.
pub(crate) fn write_total(counts: &BTreeMap<String, f64>) -> f64 {
    counts
        .iter()
        .filter(|(k, _)| {
            // Keys are "VERB resource", or "client: VERB resource" for other clients.
            let k = k.rsplit(": ").next().unwrap_or(k);
            !k.contains("dry-run")
                && !k.starts_with("GET")
                && !k.starts_with("LIST")
                && !k.starts_with("WATCH")
        })
        .map(|(_, v)| v)
        .sum::<f64>()
        + 0.0
}

pub(crate) fn proc_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let ut: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let st: f64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    (ut + st) / ticks
}

pub(crate) fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// Whether the `n` apps whose names start with `prefix` are all Synced and Healthy.
pub(crate) async fn all_synced(
    apps: &Api<Application>,
    prefix: &str,
    n: usize,
) -> anyhow::Result<bool> {
    let ok = apps
        .list(&Default::default())
        .await?
        .items
        .iter()
        .filter(|a| a.metadata.name.as_deref().unwrap_or("").starts_with(prefix))
        .filter(|a| {
            let st = a.status.clone().unwrap_or_default();
            st.sync.map(|s| s.status) == Some("Synced".into())
                && st.health.map(|h| h.status) == Some("Healthy".into())
        })
        .count();
    Ok(ok == n)
}

pub(crate) fn count_reconciles(log: &Path, from: usize) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .get(from..)
        .unwrap_or_default()
        .matches("reconciled")
        .count()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let ferry = match args.ferry.clone() {
        Some(f) => f,
        None => std::env::current_exe()?
            .parent()
            .context("exe dir")?
            .join("ferry"),
    };
    if !ferry.exists() {
        bail!(
            "{} not found; build it with `cargo build --release -p ferry`",
            ferry.display()
        );
    }
    eprintln!("starting the environment...");
    let env = tokio::task::spawn_blocking(|| {
        TestEnv::start(Options {
            second_cluster: false,
            audit_log: true,
            ..Options::default()
        })
    })
    .await??;
    let client = env.cluster.client().await?;
    let (n, r) = (args.apps, args.resources);

    // The repository: one directory per app.
    let src = tempfile::tempdir()?;
    let mut files = Vec::new();
    for a in 0..n {
        files.extend(manifests(a, r, 0));
    }
    write_tree(src.path(), &files)?;
    env.git.create_repo("bench")?;
    env.git.commit_dir("bench", src.path(), "bench")?;

    // Baseline: the same objects, one kubectl server-side apply.
    eprintln!(
        "baseline: kubectl apply --server-side of {} objects...",
        n * r
    );
    let mut all = String::new();
    for a in 0..n {
        all.push_str(&format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: kubectl-{a}\n"
        ));
        for (_, body) in manifests(a, r, 0) {
            all.push_str("---\n");
            all.push_str(&body.replacen(
                "metadata:\n",
                &format!("metadata:\n  namespace: kubectl-{a}\n"),
                1,
            ));
        }
    }
    let all_file = src.path().join("all.yaml");
    std::fs::write(&all_file, all)?;
    let t = Instant::now();
    let out = Command::new(&env.tools.kubectl)
        .args(["apply", "--server-side", "--field-manager=bench", "-f"])
        .arg(&all_file)
        .env("KUBECONFIG", &env.cluster.kubeconfig)
        .stdout(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!(
            "kubectl apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let kubectl_secs = t.elapsed().as_secs_f64();
    if args.replicas > 1 {
        let ns_api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        ns_api
            .patch(
                NS,
                &PatchParams::apply("bench"),
                &Patch::Apply(
                    json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": NS } }),
                ),
            )
            .await?;
        let f = sharded::run(&ferry, &env, &client, n, args.replicas).await?;
        let mut verbs: Vec<String> = f
            .ferry_requests
            .iter()
            .map(|(k, v)| format!("{k}: {v:.0}"))
            .collect();
        if verbs.is_empty() {
            verbs.push("none".into());
        }
        let rss: Vec<String> = f.rss_mib.iter().map(|r| format!("{r:.0} MiB")).collect();
        let s = format!(
            "| measure | result | aim |\n|---|---|---|\n\
             | cold sync, {n} apps x {r} resources, {reps} replicas, {shards} shards by app | {:.1} s | |\n\
             | same objects, `kubectl apply --server-side` | {kubectl_secs:.1} s | |\n\
             | Ferry / kubectl | {:.2}x | <= 1.1x |\n\
             | steady-state pass, wall time | {:.2} s | |\n\
             | steady-state pass, Ferry's API requests (audit log) | {} | zero writes |\n\
             | steady-state pass, CPU of all replicas | {:.2} s ({:.2} ms per app) | < 0.5 ms per app |\n\
             | peak RSS per replica | {} | |\n\
             | SIGKILL to one replica -> its shards held by the other | {:.1} s | seconds |\n",
            f.cold_secs,
            f.cold_secs / kubectl_secs,
            f.steady_secs,
            verbs.join(", "),
            f.steady_cpu,
            f.steady_cpu * 1000.0 / n as f64,
            rss.join(", "),
            f.takeover_secs,
            reps = f.replicas,
            shards = sharded::SHARDS,
        );
        println!("{s}");
        std::fs::write(&args.out, s)?;
        return Ok(());
    }

    // Ferry.
    let ns_api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let pp = PatchParams::apply("bench");
    ns_api
        .patch(
            NS,
            &pp,
            &Patch::Apply(
                json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": NS } }),
            ),
        )
        .await?;
    let log = env.dir.join("ferry-controller.log");
    let mut ctl: Child = Command::new(&ferry)
        .args([
            "controller",
            "--namespace",
            NS,
            "--poll-seconds",
            "3600",
            "--no-leader-election",
            "--log",
            "ferry_controller=debug",
        ])
        .arg("--kubeconfig")
        .arg(&env.cluster.kubeconfig)
        .arg("--cache-dir")
        .arg(env.dir.join("ferry-cache"))
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let pid = ctl.id();
    let result = run_ferry(&env, &client, n, r, args.samples, &log, pid, &src).await;
    for pass in 0..args.extra_steady_passes {
        eprintln!("extra steady-state pass {pass} (controller pid {pid})...");
        let mark = std::fs::read_to_string(&log).unwrap_or_default().len();
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGUSR1);
        }
        while count_reconciles(&log, mark) < n {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let rss = peak_rss_mib(pid);
    let secret_figures = match (&result, args.secret_apps) {
        (Ok(_), m) if m > 0 => {
            let total = n + 2 * m;
            let log2 = log.clone();
            Some(
                secrets::run(&env, &client, NS, m, r, &log, || async move {
                    let mark = std::fs::read_to_string(&log2).unwrap_or_default().len();
                    // SAFETY: signalling our own child.
                    unsafe {
                        libc::kill(pid as libc::pid_t, libc::SIGUSR1);
                    }
                    let t = Instant::now();
                    while count_reconciles(&log2, mark) < total {
                        if t.elapsed() > Duration::from_secs(600) {
                            bail!(
                                "the steady-state pass did not finish; see {}",
                                log2.display()
                            );
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Ok(total)
                })
                .await,
            )
        }
        _ => None,
    };
    let appset_figures = match &result {
        Ok(_) => {
            eprintln!("applicationset: {} git directories...", appset::DIRS);
            Some(appset::run(&env, &client, NS).await)
        }
        Err(_) => None,
    };
    let ui_prepared = match &result {
        Ok(_) => Some(ui::prepare(&env, &client, NS).await),
        Err(_) => None,
    };
    let _ = ctl.kill();
    let _ = ctl.wait();
    let ui_figures = match ui_prepared {
        Some(Ok(())) => {
            eprintln!(
                "web UI: pages with {} apps in the server's cache...",
                args.ui_apps
            );
            Some(ui::run(&ferry, &env, &client, NS, args.ui_apps).await)
        }
        Some(Err(e)) => Some(Err(e)),
        None => None,
    };
    let ui_section = match ui_figures.transpose()? {
        None => String::new(),
        Some(f) => {
            let s = format!(
                "| measure | result | aim |\n|---|---|---|\n\
                 | applications page (first page of {apps}), p50 / p95 | {:.1} / {:.1} ms | p50 < 50 ms |\n\
                 | applications page, bytes | {} | |\n\
                 | app page, tree of {t} objects (siblings grouped: {} nodes drawn), p50 / p95 | {:.1} / {:.1} ms | < 100 ms |\n\
                 | app page, tree, bytes | {} | |\n\
                 | app page, list view of all {} objects, p50 | {:.1} ms | |\n\
                 | app page, list view, bytes | {} | |\n\
                 | server peak RSS | {:.0} MiB | |\n",
                f.list_p50_ms,
                f.list_p95_ms,
                f.list_bytes,
                f.tree_nodes,
                f.tree_p50_ms,
                f.tree_p95_ms,
                f.tree_bytes,
                f.rows,
                f.rows_p50_ms,
                f.rows_bytes,
                f.server_rss_mib,
                apps = f.apps,
                t = ui::TREE_OBJECTS,
            );
            println!("{s}");
            format!(
                "\n## Web UI\n\n`ferry server --insecure` with {apps} Applications in its cache: every one above, one more \
                 that renders {t} ConfigMaps, and Applications added (with a spec, no status: the controller is stopped by \
                 then) up to {apps}. Pages are fetched with a session cookie over loopback HTTP, so the times include \
                 HTTP but not TLS; each figure is over 20-30 requests after two warm-up requests.\n\n{s}",
                apps = f.apps,
                t = ui::TREE_OBJECTS,
            )
        }
    };
    let appset_section = match appset_figures.transpose()? {
        None => String::new(),
        Some(f) => {
            let mut verbs: Vec<String> = f
                .steady_verbs
                .iter()
                .map(|(k, v)| format!("{k}: {v:.0}"))
                .collect();
            if verbs.is_empty() {
                verbs.push("none".into());
            }
            let s = format!(
                "| measure | result | aim |\n|---|---|---|\n\
                 | push of {d} directories -> all {d} Applications created | {:.1} s | |\n\
                 | steady state, {passes} generator passes (requeue every {every} s), API requests | {} | |\n\
                 | steady state, writes | {:.0} | 0 |\n",
                f.create_secs,
                verbs.join(", "),
                f.steady_writes,
                d = appset::DIRS,
                passes = appset::STEADY_PASSES,
                every = appset::REQUEUE_SECS,
            );
            println!("{s}");
            format!(
                "\n## ApplicationSet\n\nOne ApplicationSet with a git directories generator over a repository of {d} directories \
                 (one ConfigMap each), its template making one Application per directory (manual sync, so the apps are compared, \
                 not applied). Timed from creating the set to the {d}th Application existing; the steady window counts the API \
                 server's requests (all clients, for the delivery resources and applicationsets) while the generator runs \
                 {passes} more times with nothing changed.\n\n{s}",
                d = appset::DIRS,
                passes = appset::STEADY_PASSES,
            )
        }
    };
    let (cold_secs, steady_secs, steady_cpu, verbs, lat, others_writes) = result?;
    eprintln!("handover: SIGTERM to the leader of two replicas...");
    let total_apps = n + 2 * args.secret_apps;
    let handover = handover::run(
        &ferry,
        &env.cluster.kubeconfig,
        &client,
        NS,
        total_apps,
        &env.dir,
    )
    .await?;
    let handover_section = format!(
        "\n## Rolling restart\n\nTwo controller replicas with leader election ({}-second Lease) over the {total_apps} apps above; the leader \
         gets SIGTERM, as a rolling restart of the Deployment sends it: it finishes its running reconciles and releases the \
         Lease, and the standby, watching the Lease, takes it.\n\n| measure | result | aim |\n|---|---|---|\n\
         | SIGTERM -> standby holds the Lease | {:.2} s | < 2 s |\n\
         | SIGTERM -> standby reconciled its first app | {:.2} s | |\n",
        handover.lease_duration, handover.lease_secs, handover.first_reconcile_secs
    );
    println!("{handover_section}");
    let secrets_section = match secret_figures.transpose()? {
        None => String::new(),
        Some(f) => {
            let s = format!(
                "| measure | result | aim |\n|---|---|---|\n\
                 | cold sync, {m} apps with placeholders (resolved natively) | {:.1} s | |\n\
                 | cold sync, the same {m} apps with the values written in | {:.1} s | |\n\
                 | placeholders / values written in | {:.2}x | <= 1.1x |\n\
                 | store requests in the cold sync: secret reads / logins | {} / {} | {} / 1 |\n\
                 | store requests in a steady pass over {} apps: reads / logins | {} / {} | 0 / 0 |\n",
                f.vault_cold_secs,
                f.plain_cold_secs,
                f.vault_cold_secs / f.plain_cold_secs,
                f.cold_reads,
                f.cold_logins,
                secrets::PATHS,
                f.steady_apps,
                f.steady_reads,
                f.steady_logins,
                m = f.apps,
            );
            println!("{s}");
            format!(
                "\n## Secrets from a store\n\n{m} more Applications, each rendering {r} objects of which a ConfigMap holds three \
                 argocd-vault-plugin placeholders and a Secret two (`<path:kv/data/bench/sN#kI>`, base64 text in the Secret's data), \
                 {p} placeholders per app over {paths} distinct KV v2 paths of a real OpenBao server, resolved natively (plugin \
                 `argocd-vault-plugin` with `AVP_SECRET` naming a Secret with AppRole credentials, as in seed 002). The comparison \
                 is {m} apps with the same objects and the values written in, synced after them. Store requests are counted \
                 from OpenBao's file audit device; the steady pass runs over every app in the controller, these and the ones above.\n\n{s}",
                m = f.apps,
                p = secrets::PLACEHOLDERS,
                paths = secrets::PATHS,
            )
        }
    };

    let ratio = cold_secs / kubectl_secs;
    let mut verbs_s: Vec<String> = verbs.iter().map(|(k, v)| format!("{k}: {v:.0}")).collect();
    if verbs_s.is_empty() {
        verbs_s.push("none".into());
    }
    let writes = write_total(&verbs);
    let p50 = percentile(&lat, 0.5);
    let p95 = percentile(&lat, 0.95);
    let machine = format!(
        "{} cores, {:.0} GiB RAM; Kubernetes v{} (etcd in /dev/shm); {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| m
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok()))
            .unwrap_or(0.0)
            / 1048576.0,
        ferry_testenv::KUBERNETES_VERSION,
        if cfg!(debug_assertions) {
            "debug build"
        } else {
            "release build"
        },
    );
    let cpu_per_app = steady_cpu * 1000.0 / n as f64;
    let table = format!(
        "| measure | result | aim |\n|---|---|---|\n\
         | cold sync, {n} apps x {r} resources (Ferry) | {cold_secs:.1} s | |\n\
         | same objects, `kubectl apply --server-side` | {kubectl_secs:.1} s | |\n\
         | Ferry / kubectl | {ratio:.2}x | <= 1.1x |\n\
         | steady-state pass, wall time | {steady_secs:.2} s | |\n\
         | steady-state pass, Ferry's API requests by verb (audit log, `User-Agent: ferry/…`) | {} | zero writes |\n\
         | steady-state pass, Ferry's writes | {writes:.0} | 0 |\n\
         | steady-state pass, other clients' writes in the same window | {others_writes:.0} | |\n\
         | steady-state pass, controller CPU | {steady_cpu:.2} s ({cpu_per_app:.2} ms per app) | < 0.5 ms per app |\n\
         | commit -> applied after refresh, p50 | {p50:.2} s | |\n\
         | commit -> applied after refresh, p95 | {p95:.2} s | |\n\
         | controller peak RSS | {rss:.0} MiB | < 150 MiB |\n",
        verbs_s.join(", ")
    );
    println!("{table}");
    let doc = format!(
        "# Benchmarks\n\nProduced by `make bench` (`ferry-bench`), which starts its own local environment and writes this file.\n\n\
         Machine: {machine}.\n\nWorkload: one Git repository with {n} directories of {r} objects each (ConfigMaps and Services), \
         one Application per directory, each in its own namespace (CreateNamespace). The baseline applies the same objects \
         with one `kubectl apply --server-side`. Steady-state requests are counted by client from the API server's audit log \
         (Metadata level): Ferry's are those with its `User-Agent` (`ferry/<version>`); other clients' writes in the same \
         window (the controller manager's, for the new namespaces) are counted apart; dry-run requests are listed apart; \
         the steady-state window starts once the API server has seen no write for 3 seconds (the controller manager finishes its own work for the new namespaces first). Latency samples: {} commits, each followed by a `refresh` annotation.\n\n{table}{secrets_section}{appset_section}{ui_section}{handover_section}",
        args.samples
    );
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, doc)?;
    eprintln!("wrote {}", args.out.display());
    drop(env);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn run_ferry(
    env: &TestEnv,
    client: &Client,
    n: usize,
    r: usize,
    samples: usize,
    log: &Path,
    pid: u32,
    src: &tempfile::TempDir,
) -> anyhow::Result<(f64, f64, f64, BTreeMap<String, f64>, Vec<f64>, f64)> {
    let apps: Api<Application> = Api::namespaced(client.clone(), NS);
    // Wait for the controller to install the CRD.
    let deadline = Instant::now() + Duration::from_secs(60);
    while apps.list(&Default::default()).await.is_err() {
        if Instant::now() > deadline {
            bail!(
                "the controller did not install the Application CRD; see {}",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("Ferry: cold sync of {n} applications...");
    let t = Instant::now();
    create_apps(env, client, n).await?;
    while !all_synced(&apps, "bench-", n).await? {
        if t.elapsed() > Duration::from_secs(1800) {
            bail!(
                "cold sync did not finish in 30 minutes; see {}",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let cold = t.elapsed().as_secs_f64();
    // Wait until nothing writes any more: after 200 new namespaces the
    // controller manager keeps creating service-account tokens and
    // kube-root-ca.crt ConfigMaps for a while, which are not Ferry's.
    let quiet_deadline = Instant::now() + Duration::from_secs(120);
    let mut last = write_total(&request_counts(client).await?);
    let mut quiet = 0;
    while quiet < 3 && Instant::now() < quiet_deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = write_total(&request_counts(client).await?);
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
    }

    eprintln!("Ferry: one steady-state pass...");
    let before = request_counts(client).await?;
    let audit_log = env
        .cluster
        .audit_log
        .clone()
        .context("the API server's audit log")?;
    let audit_mark = std::fs::metadata(&audit_log)
        .map(|m| m.len() as usize)
        .unwrap_or(0);
    let cpu0 = proc_cpu_seconds(pid);
    let mark = std::fs::read_to_string(log).unwrap_or_default().len();
    let t = Instant::now();
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGUSR1);
    }
    while count_reconciles(log, mark) < n {
        if t.elapsed() > Duration::from_secs(600) {
            bail!(
                "the steady-state pass did not finish; see {}",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let steady = t.elapsed().as_secs_f64();
    let cpu = proc_cpu_seconds(pid) - cpu0;
    let after = request_counts(client).await?;
    let mut by_resource = BTreeMap::new();
    for (k, v) in &after {
        let d = v - before.get(k).copied().unwrap_or(0.0);
        if d > 0.0 {
            by_resource.insert(k.clone(), d);
        }
    }
    // The audit backend writes each event as its response completes; a moment for the last.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ferry_verbs, other_verbs) = audit_counts(&audit_log, audit_mark);
    eprintln!("steady window by resource (all clients): {by_resource:?}");
    eprintln!("steady window, other clients: {other_verbs:?}");
    let others_writes = write_total(&other_verbs);
    let verbs = ferry_verbs;

    eprintln!("Ferry: commit -> applied latency over {samples} commits...");
    let mut lat = Vec::new();
    let cms = |a: usize| {
        Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(
            client.clone(),
            &format!("ferry-{a}"),
        )
    };
    for s in 0..samples {
        let a = s % n;
        let generation = s + 1;
        // Only app `a` changes; the rest of the tree stays as committed.
        let mut files = Vec::new();
        for b in 0..n {
            let g = if b == a { generation } else { 0 };
            files.extend(manifests(b, r, g));
        }
        let _ = std::fs::remove_dir_all(src.path().join("tree"));
        let tree = src.path().join("tree");
        write_tree(&tree, &files)?;
        let t = Instant::now();
        env.git.commit_dir("bench", &tree, &format!("sample {s}"))?;
        let refresh =
            json!({ "metadata": { "annotations": { "argocd.argoproj.io/refresh": "normal" } } });
        apps.patch(
            &format!("bench-{a}"),
            &PatchParams::default(),
            &Patch::Merge(&refresh),
        )
        .await?;
        loop {
            let v = cms(a)
                .get_opt("cm-0")
                .await?
                .and_then(|c| c.data)
                .and_then(|d| d.get("generation").cloned());
            if v.as_deref() == Some(generation.to_string().as_str()) {
                break;
            }
            if t.elapsed() > Duration::from_secs(120) {
                bail!("sample {s}: change not applied within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        lat.push(t.elapsed().as_secs_f64());
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    Ok((cold, steady, cpu, verbs, lat, others_writes))
}

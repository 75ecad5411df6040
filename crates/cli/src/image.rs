//! `ferry image`: look at and poke Flux image automation objects, and try a
//! policy against a list of tags without a cluster.

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use comfy_table::{Table, presets::NOTHING};
use ferry_image::policy::{Choice, Order, Policy, TagFilter};
use ferry_model::flux::{
    Condition, ImagePolicy, ImageRepository, ImageUpdateAutomation, RECONCILE_REQUESTED_AT,
};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Subcommand)]
pub enum ImageCommand {
    /// What would this policy pick from these tags? Works offline.
    ///
    /// Example: ferry image policy --semver '~> 1.1' --tags 1.0.0,1.1.2,1.9.0,2.0.0
    Policy(PolicyArgs),
    /// List ImageRepositories, ImagePolicies and ImageUpdateAutomations.
    List(ListArgs),
    /// Show one object's spec summary and status.
    Get(ObjectArgs),
    /// Ask for a scan / policy check / automation run now, and wait for it.
    Reconcile(ReconcileArgs),
}

#[derive(Args)]
pub struct PolicyArgs {
    /// A semver range: `>=1.0.0 <2.0.0`, `~1.2`, `^1`, `1.x || >=2.5.0`, `*`, `~> 1.1`.
    #[arg(long, group = "choice")]
    semver: Option<String>,
    /// Alphabetical order; `asc` picks the last tag, `desc` the first.
    #[arg(long, group = "choice", num_args = 0..=1, default_missing_value = "asc")]
    alphabetical: Option<String>,
    /// Numerical order; `asc` picks the largest, `desc` the smallest.
    #[arg(long, group = "choice", num_args = 0..=1, default_missing_value = "asc")]
    numerical: Option<String>,
    /// filterTags.pattern: a regular expression tags must match.
    #[arg(long)]
    pattern: Option<String>,
    /// filterTags.extract: what to compare, e.g. `$ts` for a named group.
    #[arg(long)]
    extract: Option<String>,
    /// Tags, comma-separated. Without --tags or --tags-file, tags are read from stdin.
    #[arg(long, value_delimiter = ',')]
    tags: Vec<String>,
    /// A file with tags, one per line (`-` for stdin).
    #[arg(long)]
    tags_file: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ImageKind {
    #[value(alias = "repositories", alias = "repo", alias = "imagerepository")]
    Repository,
    #[value(alias = "policies", alias = "imagepolicy")]
    Policy,
    #[value(
        alias = "updates",
        alias = "automation",
        alias = "imageupdateautomation"
    )]
    Update,
}

#[derive(Args)]
pub struct Target {
    /// Kubeconfig to use (default: $KUBECONFIG, ~/.kube/config, then in-cluster).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// Namespace.
    #[arg(short, long, default_value = "flux-system", global = true)]
    namespace: String,
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    target: Target,
    /// All namespaces.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
}

#[derive(Args)]
pub struct ObjectArgs {
    kind: ImageKind,
    name: String,
    #[command(flatten)]
    target: Target,
}

#[derive(Args)]
pub struct ReconcileArgs {
    kind: ImageKind,
    name: String,
    #[command(flatten)]
    target: Target,
    /// Seconds to wait for the controller to act on the request.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

pub async fn run(cmd: ImageCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ImageCommand::Policy(a) => policy(a),
        ImageCommand::List(a) => list(a).await.map(|()| ExitCode::SUCCESS),
        ImageCommand::Get(a) => get(a).await.map(|()| ExitCode::SUCCESS),
        ImageCommand::Reconcile(a) => reconcile(a).await.map(|()| ExitCode::SUCCESS),
    }
}

/// Exit 0 with the tag; 1 when no tag qualifies; errors exit 2 via main.
fn policy(a: PolicyArgs) -> anyhow::Result<ExitCode> {
    let choice = match (&a.semver, &a.alphabetical, &a.numerical) {
        (Some(r), None, None) => Choice::Semver { range: r.clone() },
        (None, Some(o), None) => Choice::Alphabetical {
            order: Order::parse(o)?,
        },
        (None, None, Some(o)) => Choice::Numerical {
            order: Order::parse(o)?,
        },
        _ => bail!("give one of --semver RANGE, --alphabetical [asc|desc], --numerical [asc|desc]"),
    };
    let policy = Policy::new(
        choice,
        TagFilter {
            pattern: a.pattern,
            extract: a.extract,
        },
    )?;
    let mut tags: Vec<String> = a.tags.iter().map(|t| t.trim().to_string()).collect();
    let from_stdin = a.tags.is_empty() && a.tags_file.is_none()
        || a.tags_file.as_deref() == Some(std::path::Path::new("-"));
    let text = if from_stdin {
        if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            bail!("no tags: pass --tags a,b,c, --tags-file FILE, or pipe tags on stdin");
        }
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading tags from stdin")?;
        s
    } else if let Some(f) = &a.tags_file {
        std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
    } else {
        String::new()
    };
    tags.extend(
        text.split(['\n', ','])
            .map(str::trim)
            .filter(|t| !t.is_empty() && !t.starts_with('#'))
            .map(str::to_string),
    );
    tags.retain(|t| !t.is_empty());
    match policy.select(&tags)? {
        Some(tag) => {
            println!("{tag}");
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!("no tag of the {} given matches the policy", tags.len());
            Ok(ExitCode::from(1))
        }
    }
}

fn ready(conditions: &[Condition]) -> (String, String) {
    conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.message.clone()))
        .unwrap_or_else(|| ("Unknown".into(), "waiting for the controller".into()))
}

async fn list(a: ListArgs) -> anyhow::Result<()> {
    let client = crate::controller::kube_client(a.target.kubeconfig.as_deref()).await?;
    let ns = a.target.namespace.as_str();
    let api = |c: &kube::Client| -> (
        Api<ImageRepository>,
        Api<ImagePolicy>,
        Api<ImageUpdateAutomation>,
    ) {
        if a.all_namespaces {
            (
                Api::all(c.clone()),
                Api::all(c.clone()),
                Api::all(c.clone()),
            )
        } else {
            (
                Api::namespaced(c.clone(), ns),
                Api::namespaced(c.clone(), ns),
                Api::namespaced(c.clone(), ns),
            )
        }
    };
    let (repos, policies, autos) = api(&client);
    let lp = ListParams::default();
    let mut table = Table::new();
    table.load_preset(NOTHING);
    table.set_header(["KIND", "NAMESPACE", "NAME", "READY", "LATEST", "MESSAGE"]);
    for r in repos.list(&lp).await.context("listing ImageRepositories")? {
        let st = r.status.clone().unwrap_or_default();
        let (ok, msg) = ready(&st.conditions);
        let latest = st
            .last_scan_result
            .map(|s| format!("{} tags", s.tag_count))
            .unwrap_or_default();
        table.add_row([
            "ImageRepository".into(),
            r.namespace().unwrap_or_default(),
            r.name_any(),
            ok,
            latest,
            msg,
        ]);
    }
    for p in policies.list(&lp).await.context("listing ImagePolicies")? {
        let st = p.status.clone().unwrap_or_default();
        let (ok, msg) = ready(&st.conditions);
        let latest = st.latest_ref.map(|l| l.to_string()).unwrap_or_default();
        table.add_row([
            "ImagePolicy".into(),
            p.namespace().unwrap_or_default(),
            p.name_any(),
            ok,
            latest,
            msg,
        ]);
    }
    for u in autos
        .list(&lp)
        .await
        .context("listing ImageUpdateAutomations")?
    {
        let st = u.status.clone().unwrap_or_default();
        let (ok, msg) = ready(&st.conditions);
        let latest = st
            .last_push_commit
            .map(|c| c.chars().take(8).collect())
            .unwrap_or_default();
        table.add_row([
            "ImageUpdateAutomation".into(),
            u.namespace().unwrap_or_default(),
            u.name_any(),
            ok,
            latest,
            msg,
        ]);
    }
    println!("{table}");
    Ok(())
}

async fn get(a: ObjectArgs) -> anyhow::Result<()> {
    let client = crate::controller::kube_client(a.target.kubeconfig.as_deref()).await?;
    let ns = &a.target.namespace;
    let (kind, spec, status) = match a.kind {
        ImageKind::Repository => {
            let o = fetch::<ImageRepository>(&client, ns, &a.name).await?;
            (
                "ImageRepository",
                serde_json::to_value(&o.spec)?,
                serde_json::to_value(&o.status)?,
            )
        }
        ImageKind::Policy => {
            let o = fetch::<ImagePolicy>(&client, ns, &a.name).await?;
            (
                "ImagePolicy",
                serde_json::to_value(&o.spec)?,
                serde_json::to_value(&o.status)?,
            )
        }
        ImageKind::Update => {
            let o = fetch::<ImageUpdateAutomation>(&client, ns, &a.name).await?;
            (
                "ImageUpdateAutomation",
                serde_json::to_value(&o.spec)?,
                serde_json::to_value(&o.status)?,
            )
        }
    };
    let doc = serde_json::json!({ "kind": kind, "name": a.name, "namespace": ns, "spec": spec, "status": status });
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}

async fn fetch<K>(client: &kube::Client, ns: &str, name: &str) -> anyhow::Result<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    api.get_opt(name)
        .await
        .with_context(|| format!("reading {} {ns}/{name}", K::kind(&())))?
        .with_context(|| {
            format!(
                "{} {ns}/{name} not found (list them with `ferry image list -A`)",
                K::kind(&())
            )
        })
}

async fn reconcile(a: ReconcileArgs) -> anyhow::Result<()> {
    let client = crate::controller::kube_client(a.target.kubeconfig.as_deref()).await?;
    let ns = a.target.namespace.as_str();
    let stamp = k8s_openapi::jiff::Timestamp::now().to_string();
    let body =
        serde_json::json!({ "metadata": { "annotations": { RECONCILE_REQUESTED_AT: stamp } } });
    let pp = PatchParams::default();
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    macro_rules! request_and_wait {
        ($ty:ty, $handled:expr) => {{
            let api: Api<$ty> = Api::namespaced(client.clone(), ns);
            fetch::<$ty>(&client, ns, &a.name).await?;
            api.patch(&a.name, &pp, &Patch::Merge(&body))
                .await
                .with_context(|| format!("annotating {} {ns}/{}", <$ty>::kind(&()), a.name))?;
            loop {
                let o = fetch::<$ty>(&client, ns, &a.name).await?;
                let handled: Option<String> = $handled(&o);
                if handled.as_deref() == Some(stamp.as_str()) {
                    let (ok, msg) = ready(&o.status.clone().unwrap_or_default().conditions);
                    if ok == "True" {
                        println!("✔ {msg}");
                        return Ok(());
                    }
                    bail!("{} {ns}/{} is not ready: {msg}", <$ty>::kind(&()), a.name);
                }
                if Instant::now() > deadline {
                    bail!(
                        "the controller did not act on the request within {}s; is `ferry controller` running against this cluster?",
                        a.timeout
                    );
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }};
    }
    match a.kind {
        ImageKind::Repository => request_and_wait!(ImageRepository, |o: &ImageRepository| o
            .status
            .as_ref()
            .and_then(|s| s.last_handled_reconcile_at.clone())),
        ImageKind::Update => {
            request_and_wait!(ImageUpdateAutomation, |o: &ImageUpdateAutomation| o
                .status
                .as_ref()
                .and_then(|s| s.last_handled_reconcile_at.clone()))
        }
        ImageKind::Policy => {
            // A policy is re-evaluated whenever its repository is scanned:
            // ask the repository.
            let p = fetch::<ImagePolicy>(&client, ns, &a.name).await?;
            let repo_ns = p
                .spec
                .image_repository_ref
                .namespace
                .clone()
                .unwrap_or_else(|| ns.to_string());
            let name = p.spec.image_repository_ref.name.clone();
            let args = ReconcileArgs {
                kind: ImageKind::Repository,
                name,
                target: Target {
                    kubeconfig: a.target.kubeconfig.clone(),
                    namespace: repo_ns,
                },
                timeout: a.timeout,
            };
            Box::pin(reconcile(args)).await
        }
    }
}

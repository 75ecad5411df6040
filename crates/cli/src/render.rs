//! `ferry render`: renders KubeVela (OAM) Applications offline into Kubernetes
//! manifests, as `vela dry-run` does, and passes every other manifest through.
//! With `--plugin` it is a config management plugin's `generate` command.

use anyhow::{Context, Result, bail};
use clap::Args;
use ferry_oam::{Application, Definitions, Rendered};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct RenderArgs {
    /// Input file, directory (its *.yaml and *.yml files, sorted) or `-` for
    /// stdin; repeatable. ComponentDefinitions and TraitDefinitions found here are
    /// added to the built-in ones; other non-OAM documents are printed unchanged.
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    files: Vec<String>,
    /// Directory (or file) of extra ComponentDefinitions/TraitDefinitions; repeatable.
    /// Later definitions replace earlier ones of the same name.
    #[arg(
        short = 'd',
        long = "definitions",
        visible_alias = "definition",
        value_name = "DIR"
    )]
    definitions: Vec<PathBuf>,
    /// Namespace for Applications without metadata.namespace (`context.namespace`).
    /// In --plugin mode it defaults to $ARGOCD_APP_NAMESPACE.
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Config management plugin mode: render every *.yaml/*.yml under the current
    /// directory (recursively, sorted, hidden directories skipped) and print plain
    /// YAML documents without header comments.
    #[arg(long, conflicts_with = "files")]
    plugin: bool,
    /// Also fetch and render helm and kustomize components (Git and chart repositories,
    /// with the `helm` and `kustomize` binaries), as the controller does. Always on with
    /// --plugin; otherwise such components print a comment saying what they would fetch.
    #[arg(long)]
    fetch: bool,
    /// The Kubernetes version to render for (`context.clusterVersion`: e.g. CronJob is
    /// batch/v1 from 1.21, batch/v1beta1 before). Default: a current Kubernetes (1.34);
    /// in --plugin mode, $KUBE_VERSION as Argo CD passes it.
    #[arg(long, value_name = "VERSION")]
    kube_version: Option<String>,
}

/// One parsed input document and the file it came from.
struct Doc {
    origin: String,
    value: Value,
}

pub async fn run(args: RenderArgs) -> Result<()> {
    let out = render_to_string(&args).await?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

async fn render_to_string(args: &RenderArgs) -> Result<String> {
    let wanted = args.kube_version.clone().or_else(|| {
        args.plugin
            .then(|| std::env::var("KUBE_VERSION").ok())
            .flatten()
            .filter(|v| !v.is_empty())
    });
    let cluster_version = match wanted {
        Some(v) => ferry_oam::ClusterVersion::parse(&v)
            .map_err(|e| anyhow::anyhow!("--kube-version: {e}"))?,
        None => ferry_oam::ClusterVersion::CURRENT,
    };
    let inputs: Vec<(String, String)> = if args.plugin {
        let mut files = Vec::new();
        collect_yaml(Path::new("."), true, &mut files)?;
        read_files(&files)?
    } else {
        if args.files.is_empty() {
            bail!("no input: give -f FILE|DIR|- (or --plugin to render the current directory)");
        }
        let mut inputs = Vec::new();
        for f in &args.files {
            if f == "-" {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("reading stdin")?;
                inputs.push(("<stdin>".to_string(), text));
            } else {
                let p = Path::new(f);
                if p.is_dir() {
                    let mut files = Vec::new();
                    collect_yaml(p, false, &mut files)?;
                    inputs.extend(read_files(&files)?);
                } else {
                    inputs.extend(read_files(&[p.to_path_buf()])?);
                }
            }
        }
        inputs
    };
    let namespace = args.namespace.clone().or_else(|| {
        args.plugin
            .then(|| std::env::var("ARGOCD_APP_NAMESPACE").ok())
            .flatten()
            .filter(|s| !s.is_empty())
    });

    let mut defs = Definitions::builtin().context("built-in OAM definitions")?;
    for d in &args.definitions {
        let mut files = Vec::new();
        if d.is_dir() {
            collect_yaml(d, true, &mut files)?;
        } else {
            files.push(d.clone());
        }
        for doc in parse(&read_files(&files)?)? {
            match definition_kind(&doc.value) {
                Some(true) => add_definition(&mut defs, doc)?,
                // Workflow-step and policy definitions: nothing here uses them.
                Some(false) => {}
                None => bail!(
                    "{}: {} is not a ComponentDefinition or TraitDefinition",
                    doc.origin,
                    describe(&doc.value)
                ),
            }
        }
    }

    // Definitions in the inputs apply to every Application in them, wherever they
    // appear; they are consumed, not printed (Ferry, not KubeVela, evaluates them).
    let docs = parse(&inputs)?;
    let mut rest = Vec::with_capacity(docs.len());
    for doc in docs {
        match definition_kind(&doc.value) {
            Some(true) => add_definition(&mut defs, doc)?,
            Some(false) => {}
            None => rest.push(doc),
        }
    }

    let mut out = String::new();
    for doc in rest {
        if !is_oam_application(&doc.value) {
            push_doc(&mut out, None, &doc.value)?;
            continue;
        }
        // Errors name the field's path (`spec.components[1].traits[0]`).
        let mut app: Application =
            ferry_oam::application_from_value(doc.value).with_context(|| doc.origin.clone())?;
        if app
            .metadata
            .namespace
            .as_deref()
            .unwrap_or_default()
            .is_empty()
        {
            app.metadata.namespace = namespace.clone();
        }
        // One block per deploy step and topology, with that step's overrides applied, as
        // `vela dry-run` prints them.
        let blocks = ferry_oam::dry_run_blocks(&app).with_context(|| doc.origin.clone())?;
        if args.plugin && blocks.len() > 1 {
            bail!(
                "{}: Application `{}` deploys {} variants ({}); one Argo CD app takes one set of manifests: render it without --plugin to see them, or give each target its own Application",
                doc.origin,
                app.metadata.name,
                blocks.len(),
                blocks
                    .iter()
                    .map(|b| b.label.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        for block in blocks {
            let label = block.label;
            let app = block.app;
            let rendered = ferry_oam::render_for(&app, &defs, cluster_version)
                .with_context(|| doc.origin.clone())?;
            let sources = ferry_oam::sources(&app, &defs).with_context(|| doc.origin.clone())?;
            // In component order, as vela dry-run prints them.
            for c in &app.spec.components {
                // ref-objects copy objects from the hub: offline there is nothing to print
                // but the note that says so (vela dry-run fails outright here).
                if defs
                    .component(&c.type_name)
                    .is_some_and(ferry_oam::refs::is_ref_objects_definition)
                {
                    out.push_str(&format!(
                        "---\n# Application({label}) -- Component({})\n## ref-objects: the selected objects are read from the hub at deploy time\n",
                        c.name
                    ));
                    continue;
                }
                if let Some(spec) = sources.iter().find(|s| s.component == c.name) {
                    let what = describe_source(spec);
                    let head = format!(
                        "# Application({}) -- Component({})\n## From {what}\n",
                        label, c.name
                    );
                    if !(args.fetch || args.plugin) {
                        out.push_str(&format!(
                            "---\n# Application({}) -- Component({})\n## {what}: fetched at deploy time (--fetch renders it here)\n",
                            label, c.name
                        ));
                        continue;
                    }
                    let app_ns = app
                        .metadata
                        .namespace
                        .clone()
                        .unwrap_or_else(|| "default".into());
                    let objs = fetch_source(spec, &app.metadata.name, &app_ns)
                        .await
                        .with_context(|| format!("{}: component `{}`", doc.origin, c.name))?;
                    for o in objs
                        .iter()
                        .chain(&ferry_oam::image_automation_objects(spec))
                    {
                        let h = (!args.plugin).then_some(head.as_str());
                        push_doc(&mut out, h, o)?;
                    }
                    continue;
                }
                for r in rendered.iter().filter(|r| r.component == c.name) {
                    let header = (!args.plugin).then(|| header(&label, r));
                    push_doc(&mut out, header.as_deref(), &r.object)?;
                }
            }
        }
    }
    Ok(out)
}

fn describe_source(spec: &ferry_oam::SourceSpec) -> String {
    let s = &spec.source;
    let url = ferry_source::scrub_url(&s.repo_url);
    match (&s.chart, &s.path) {
        (Some(chart), _) => format!(
            "the helm chart {chart} {} of {url}",
            s.target_revision.as_deref().unwrap_or("(latest)")
        ),
        (None, Some(path)) => format!(
            "{path} of {url} at {}",
            s.target_revision.as_deref().unwrap_or("HEAD")
        ),
        (None, None) => url,
    }
}

/// What the controller's source pipeline renders for a helm or kustomize component: the
/// same `ferry-source` fetch and `ferry-render` tools, without credentials (git's own
/// configuration applies) and without a cluster to ask for its version.
async fn fetch_source(
    spec: &ferry_oam::SourceSpec,
    app_name: &str,
    app_namespace: &str,
) -> Result<Vec<Value>> {
    let tools = ferry_render::RenderTools::locate()?;
    let cache_dir = std::env::var_os("FERRY_RENDER_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("ferry-render-cache"));
    let cache = ferry_source::SourceCache::new(cache_dir)?;
    let s = &spec.source;
    let fetched = ferry_controller::fetch::fetch(&cache, &tools, s, None, None)
        .await
        .map_err(anyhow::Error::msg)?
        .context("nothing fetched")?;
    let ns = spec
        .destination_namespace
        .clone()
        .unwrap_or_else(|| app_namespace.to_string());
    let target = ferry_controller::fetch::Target {
        app_name,
        namespace: &ns,
        kube_version: "",
        api_versions: &[],
        plugins: &[],
        timeout: std::time::Duration::from_secs(90),
    };
    ferry_controller::fetch::render(&tools, s, fetched, target)
        .await
        .map_err(anyhow::Error::msg)
}

/// `vela dry-run`'s comment lines (pkg/appfile/dryrun/dryrun.go, PrintDryRun):
/// `# Application(app) -- Component(c)`, then for an object other than the
/// workload `## From the trait <type>` or `## From the auxiliary workload`.
fn header(app: &str, r: &Rendered) -> String {
    let mut h = format!("# Application({app}) -- Component({})\n", r.component);
    match (&r.trait_type, &r.output) {
        (Some(t), _) => h.push_str(&format!("## From the trait {t}\n")),
        (None, Some(_)) => h.push_str("## From the auxiliary workload\n"),
        (None, None) => {}
    }
    h
}

fn push_doc(out: &mut String, header: Option<&str>, v: &Value) -> Result<()> {
    out.push_str("---\n");
    if let Some(h) = header {
        out.push_str(h);
    }
    let yaml = serde_saphyr::to_string(v)?;
    out.push_str(&yaml);
    if !yaml.ends_with('\n') {
        out.push('\n');
    }
    Ok(())
}

fn is_oam_application(v: &Value) -> bool {
    v.get("kind").and_then(Value::as_str) == Some("Application")
        && v.get("apiVersion")
            .and_then(Value::as_str)
            .is_some_and(|a| a.starts_with("core.oam.dev/"))
}

/// `Some(true)` for a Component/TraitDefinition, `Some(false)` for another
/// `core.oam.dev` definition kind (policy, workflow step, workload), `None` otherwise.
fn definition_kind(v: &Value) -> Option<bool> {
    let api = v.get("apiVersion").and_then(Value::as_str)?;
    let kind = v.get("kind").and_then(Value::as_str)?;
    if !api.starts_with("core.oam.dev/") || !kind.ends_with("Definition") {
        return None;
    }
    Some(kind == "ComponentDefinition" || kind == "TraitDefinition")
}

fn add_definition(defs: &mut Definitions, doc: Doc) -> Result<()> {
    defs.add_value(doc.value)
        .with_context(|| doc.origin.clone())
}

fn describe(v: &Value) -> String {
    let s = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or("?");
    format!(
        "{}/{} {}",
        s("/apiVersion"),
        s("/kind"),
        s("/metadata/name")
    )
}

fn parse(inputs: &[(String, String)]) -> Result<Vec<Doc>> {
    let mut docs = Vec::new();
    for (origin, text) in inputs {
        let values = ferry_render::parse_manifests(text, origin)?;
        docs.extend(values.into_iter().map(|value| Doc {
            origin: origin.clone(),
            value,
        }));
    }
    Ok(docs)
}

fn read_files(files: &[PathBuf]) -> Result<Vec<(String, String)>> {
    files
        .iter()
        .map(|p| {
            let name = p.strip_prefix("./").unwrap_or(p).display().to_string();
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Ok((name, text))
        })
        .collect()
}

/// The *.yaml/*.yml files in `dir`, sorted by path; with `recursive`, also in
/// its subdirectories (hidden ones such as `.git` skipped).
fn collect_yaml(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading directory {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading directory {}", dir.display()))?;
    entries.sort();
    for p in entries {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if p.is_dir() {
            if recursive && !name.starts_with('.') {
                collect_yaml(&p, true, out)?;
            }
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            out.push(p);
        }
    }
    Ok(())
}

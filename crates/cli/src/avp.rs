//! `ferry avp generate` — and the same binary run as `argocd-vault-plugin`: avp's CLI, so the
//! config-management plugins written for avp run unchanged with Ferry on the PATH under that
//! name. Reads manifests from a directory or stdin, resolves their placeholders and prints them.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ferry_secrets::{AvpConfig, Resolver};
use serde_json::Value;

/// argocd-vault-plugin's command line.
#[derive(Parser, Debug)]
#[command(
    name = "argocd-vault-plugin",
    about = "Resolve argocd-vault-plugin placeholders in Kubernetes manifests from a secret store"
)]
pub struct AvpCli {
    /// avp's settings, which its command lines give before or after `generate`.
    #[command(flatten)]
    pub settings: SettingsArgs,
    #[command(subcommand)]
    pub command: Option<AvpCommand>,
}

#[derive(clap::Args, Debug, Default)]
pub struct SettingsArgs {
    /// A configuration file (YAML, JSON or KEY=value lines) with avp's settings.
    #[arg(short = 'c', long = "config-path", global = true)]
    pub config_path: Option<PathBuf>,
    /// A Secret with avp's settings, `[namespace:]name` (namespace `argocd` by default).
    #[arg(short = 's', long = "secret-name", global = true)]
    pub secret_name: Option<String>,
    /// Accepted for avp's command lines: Ferry never prints secret values, verbose or not.
    #[arg(long = "verbose-sensitive-output", global = true)]
    pub verbose_sensitive_output: bool,
}

#[derive(Subcommand, Debug)]
pub enum AvpCommand {
    /// Resolve the placeholders in the manifests at PATH (a file or a directory, read
    /// recursively for .yaml, .yml and .json files) or on stdin (`-`), and print them.
    Generate(GenerateArgs),
    /// Print the version.
    Version,
}

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// A file, a directory, or `-` for stdin.
    pub path: Option<String>,
}

/// Runs avp's CLI; errors print as avp prints them (`Error: ...`) and exit 1.
pub async fn run(cli: AvpCli) -> ExitCode {
    match cli.command {
        None => {
            println!("argocd-vault-plugin (Ferry): use `generate <path>|-`; see --help");
            ExitCode::SUCCESS
        }
        Some(AvpCommand::Version) => {
            println!(
                "argocd-vault-plugin ferry-{} (Ferry's implementation)",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::SUCCESS
        }
        Some(AvpCommand::Generate(args)) => {
            let mut stdout = std::io::stdout().lock();
            match generate(args, &cli.settings, &mut stdout).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("Error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Resolves and writes each manifest, in order, with `---` after each (as avp prints them);
/// stops at the first manifest that fails, after writing the ones before it.
pub async fn generate(
    args: GenerateArgs,
    settings: &SettingsArgs,
    out: &mut dyn std::io::Write,
) -> Result<(), String> {
    let path = args
        .path
        .ok_or("<path> argument required to generate manifests")?;
    let (manifests, base) = read_manifests(&path)?;
    let file = match (&settings.config_path, &settings.secret_name) {
        (Some(p), _) => Some(ferry_secrets::config::read_config_file(p)?),
        (None, Some(s)) => Some(read_config_secret(s).await?),
        (None, None) => None,
    };
    let config = AvpConfig::new(std::env::vars(), file);
    let kube = if config.value("AVP_TYPE").as_deref() == Some("kubernetessecret") {
        Some(kube::Client::try_default().await.map_err(|e| {
            format!("Failed to perform login for kubernetes secret backend: could not connect to local Kubernetes cluster to read Secret: {e}")
        })?)
    } else {
        None
    };
    let backend = ferry_secrets::backend_from_config(&config, kube, base, sops_binary())?;
    let settings = ferry_secrets::settings_from_config(&config)?;
    let resolver = Resolver::new(backend, Duration::from_secs(0));
    resolver.login().await?;
    let results = resolver.resolve(&manifests, &settings).await?;
    for r in results {
        let m = r.map_err(|e| e.0)?;
        let yaml = serde_saphyr::to_string(&m).map_err(|e| e.to_string())?;
        write!(out, "{yaml}").map_err(|e| e.to_string())?;
        if !yaml.ends_with('\n') {
            writeln!(out).map_err(|e| e.to_string())?;
        }
        writeln!(out, "---").map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The manifests at `path` and the directory a sops path is relative to.
fn read_manifests(path: &str) -> Result<(Vec<Value>, PathBuf), String> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    if path == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("reading stdin: {e}"))?;
        let docs = ferry_render::parse_manifests(&text, "stdin").map_err(|e| e.to_string())?;
        return Ok((docs, cwd));
    }
    let p = Path::new(path);
    let mut files = Vec::new();
    collect(p, &mut files);
    if files.is_empty() {
        return Err(format!("no YAML or JSON files were found in {path}"));
    }
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for f in &files {
        match std::fs::read_to_string(f) {
            Ok(text) => match ferry_render::parse_manifests(&text, &f.display().to_string()) {
                Ok(docs) => out.extend(docs),
                Err(e) => errors.push(format!(
                    "could not read file: {} from disk: {e}",
                    f.display()
                )),
            },
            Err(e) => errors.push(format!(
                "could not read file: {} from disk: {e}",
                f.display()
            )),
        }
    }
    if !errors.is_empty() {
        return Err(format!(
            "could not read YAML/JSON files:\n{}",
            errors.join("\n")
        ));
    }
    let base = if p.is_dir() {
        p.to_path_buf()
    } else {
        p.parent().map(Path::to_path_buf).unwrap_or(cwd)
    };
    Ok((out, base))
}

/// avp's walk: recursive, in lexical order, `.yaml`, `.yml` and `.json` files.
fn collect(p: &Path, out: &mut Vec<PathBuf>) {
    if p.is_file() {
        if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(p.to_path_buf());
        }
        return;
    }
    let Ok(rd) = std::fs::read_dir(p) else { return };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for e in entries {
        if e.is_symlink() && e.is_dir() {
            continue;
        }
        collect(&e, out);
    }
}

/// `-s [namespace:]name`: the Secret's keys as settings.
async fn read_config_secret(name: &str) -> Result<BTreeMap<String, String>, String> {
    let client = kube::Client::try_default().await.map_err(|e| {
        format!("could not connect to local Kubernetes cluster to read Secret: {e}")
    })?;
    ferry_secrets::config::read_secret(&client, name).await
}

/// `sops` from `$FERRY_SOPS`, else the PATH.
fn sops_binary() -> PathBuf {
    std::env::var_os("FERRY_SOPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("sops"))
}

//! `ferry version`: this binary's version and tools, and the server's when one is configured, in
//! `argocd version`'s layout.

use clap::Args;
use ferry_server::version::{VersionInfo, info};
use serde_json::Value;

use crate::client::{self, ClientOpts};

#[derive(Args)]
pub struct VersionArgs {
    #[command(flatten)]
    opts: ClientOpts,
    /// Only this binary, without asking the server.
    #[arg(long)]
    client: bool,
    /// Output format: json, yaml, short or wide (the default).
    #[arg(short, long, default_value = "wide")]
    output: String,
}

fn wide(name: &str, v: &Value) -> String {
    let mut out = format!("{name}: {}\n", v["Version"].as_str().unwrap_or("?"));
    if let Some(m) = v.as_object() {
        for (k, val) in m.iter().filter(|(k, _)| *k != "Version") {
            out.push_str(&format!("  {k}: {}\n", val.as_str().unwrap_or("")));
        }
    }
    out
}

pub async fn run(args: VersionArgs) -> anyhow::Result<()> {
    let me: VersionInfo = tokio::task::spawn_blocking(info).await?;
    let me = serde_json::to_value(me)?;
    // The server only when asked for one: a flag, the environment or a stored context.
    let server = if args.client {
        None
    } else {
        let cfg = client::Config::load(&args.opts.config_path()?).unwrap_or_default();
        match client::resolve(&args.opts, &cfg) {
            Ok(target) => Some(
                match client::Client::new(&target)?.get("/api/version", &[]).await {
                    Ok(v) => v,
                    Err(e) => serde_json::json!({ "Version": format!("unreachable: {e:#}") }),
                },
            ),
            Err(_) => None,
        }
    };
    match args.output.as_str() {
        "json" | "yaml" => {
            let mut doc = serde_json::json!({ "client": me });
            if let Some(s) = server {
                doc["server"] = s;
            }
            if args.output == "json" {
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                print!("{}", crate::output::to_yaml(&doc)?);
            }
        }
        "short" => {
            println!("ferry: {}", me["Version"].as_str().unwrap_or("?"));
            if let Some(s) = server {
                println!("ferry-server: {}", s["Version"].as_str().unwrap_or("?"));
            }
        }
        "wide" => {
            print!("{}", wide("ferry", &me));
            if let Some(s) = server {
                print!("{}", wide("ferry-server", &s));
            }
        }
        other => anyhow::bail!("unknown output format {other}: use json, yaml, short or wide"),
    }
    Ok(())
}

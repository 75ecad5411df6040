//! `ferry notifications check | trigger get | trigger run | template notify`: Argo CD's
//! `argocd admin notifications` tools over `argocd-notifications-cm` and its Secret, read from
//! files (offline) or from the cluster. Secret values are never printed.

use crate::output::{table, to_yaml};
use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use ferry_notify::Config;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct Source {
    /// The ConfigMap as a YAML file (`-` for stdin); default: argocd-notifications-cm in the cluster
    #[arg(long, global = true)]
    config_map: Option<PathBuf>,
    /// The Secret as a YAML file, or `:empty`; default: argocd-notifications-secret in the cluster
    #[arg(long, global = true)]
    secret: Option<String>,
    /// Namespace of the ConfigMap and Secret in the cluster
    #[arg(short, long, global = true, default_value = "argocd")]
    namespace: String,
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum NotificationsCommand {
    /// Check the configuration: every trigger, template, service and subscription; exits 1 on a problem
    Check,
    /// Triggers
    Trigger {
        #[command(subcommand)]
        command: TriggerCommand,
    },
    /// Templates
    Template {
        #[command(subcommand)]
        command: TemplateCommand,
    },
}

#[derive(Subcommand)]
pub enum TriggerCommand {
    /// List triggers with their templates and conditions
    Get { name: Option<String> },
    /// Evaluate a trigger's conditions against an Application in a YAML file
    Run { name: String, application: PathBuf },
}

#[derive(Subcommand)]
pub enum TemplateCommand {
    /// List templates with a preview of their message
    Get { name: Option<String> },
    /// Render a template for an Application in a YAML file and print the notification
    Notify {
        name: String,
        application: PathBuf,
        /// The service the notification is rendered for (`.serviceType`)
        #[arg(long, default_value = "console")]
        service: String,
        #[arg(long, default_value = "")]
        recipient: String,
    },
}

fn read_yaml(path: &Path) -> Result<Value> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    serde_saphyr::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn strings(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), text)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn secret_data(secret: &Value) -> Result<BTreeMap<String, String>> {
    use base64::Engine;
    let mut out = BTreeMap::new();
    for (k, v) in strings(&secret["data"]) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v.trim())
            .with_context(|| format!("the Secret's data.{k} is not base64"))?;
        out.insert(k, String::from_utf8_lossy(&bytes).into_owned());
    }
    out.extend(strings(&secret["stringData"]));
    Ok(out)
}

async fn load(source: &Source) -> Result<Config> {
    let client = if source.config_map.is_none() || source.secret.is_none() {
        Some(crate::controller::kube_client(source.kubeconfig.as_deref()).await?)
    } else {
        None
    };
    let cm = match &source.config_map {
        Some(path) => read_yaml(path)?,
        None => {
            let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
                kube::Api::namespaced(client.clone().context("no cluster")?, &source.namespace);
            match api.get_opt(ferry_notify::config::CONFIG_MAP).await? {
                Some(cm) => serde_json::to_value(cm)?,
                None => Value::Null,
            }
        }
    };
    let secret = match source.secret.as_deref() {
        Some(":empty") => BTreeMap::new(),
        Some(path) => secret_data(&read_yaml(Path::new(path))?)?,
        None => {
            let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
                kube::Api::namespaced(client.context("no cluster")?, &source.namespace);
            match api.get_opt(ferry_notify::config::SECRET).await? {
                Some(s) => secret_data(&serde_json::to_value(s)?)?,
                None => BTreeMap::new(),
            }
        }
    };
    Ok(Config::parse(&strings(&cm["data"]), &secret))
}

fn application(path: &Path) -> Result<Value> {
    let mut app = read_yaml(path)?;
    ferry_notify::argo_shape(&mut app);
    Ok(app)
}

pub async fn run(source: Source, command: NotificationsCommand) -> Result<()> {
    let cfg = load(&source).await?;
    match command {
        NotificationsCommand::Check => {
            if cfg.problems.is_empty() {
                println!(
                    "ok: {} triggers, {} templates, {} services, {} subscriptions",
                    cfg.triggers.len(),
                    cfg.templates.len(),
                    cfg.services.len(),
                    cfg.subscriptions.len()
                );
                return Ok(());
            }
            for p in &cfg.problems {
                println!("{}: {}", p.key, cfg.redact(&p.message));
            }
            bail!(
                "{} problem(s) in the notifications configuration",
                cfg.problems.len()
            );
        }
        NotificationsCommand::Trigger {
            command: TriggerCommand::Get { name },
        } => {
            let mut rows = Vec::new();
            for (trigger, conditions) in &cfg.triggers {
                if name.as_ref().is_some_and(|n| n != trigger) {
                    continue;
                }
                for (i, c) in conditions.iter().enumerate() {
                    rows.push(vec![
                        if i == 0 {
                            trigger.clone()
                        } else {
                            String::new()
                        },
                        c.send.join(", "),
                        c.when.source().to_string(),
                    ]);
                }
            }
            if let Some(n) = &name
                && rows.is_empty()
            {
                bail!("trigger with name '{n}' does not exist");
            }
            print!("{}", table(&["NAME", "TEMPLATE", "CONDITION"], &rows));
        }
        NotificationsCommand::Trigger {
            command:
                TriggerCommand::Run {
                    name,
                    application: path,
                },
        } => {
            let app = application(&path)?;
            let mut dests = ferry_notify::Destinations::new();
            dests.insert(
                name.clone(),
                vec![ferry_notify::Destination {
                    service: "console".into(),
                    recipient: String::new(),
                }],
            );
            let Some(conditions) = cfg.triggers.get(&name) else {
                bail!("trigger with name '{name}' does not exist");
            };
            let plan =
                ferry_notify::plan(&cfg, &app, &dests, &Default::default(), chrono::Utc::now());
            for (trigger, message) in &plan.errors {
                eprintln!("{trigger}: {}", cfg.redact(message));
            }
            let rows: Vec<Vec<String>> = conditions
                .iter()
                .zip(plan.evaluations.iter())
                .map(|(c, (_, triggered))| vec![c.when.source().to_string(), triggered.to_string()])
                .collect();
            print!("{}", table(&["CONDITION", "RESULT"], &rows));
        }
        NotificationsCommand::Template {
            command: TemplateCommand::Get { name },
        } => {
            let mut rows = Vec::new();
            for (template, t) in &cfg.templates {
                if name.as_ref().is_some_and(|n| n != template) {
                    continue;
                }
                let first = t.message.lines().next().unwrap_or_default();
                let preview = if first.chars().count() > 100 {
                    format!("{}...", first.chars().take(99).collect::<String>())
                } else {
                    first.to_string()
                };
                rows.push(vec![template.clone(), preview]);
            }
            if let Some(n) = &name
                && rows.is_empty()
            {
                bail!("template with name '{n}' does not exist");
            }
            print!("{}", table(&["NAME", "PREVIEW"], &rows));
        }
        NotificationsCommand::Template {
            command:
                TemplateCommand::Notify {
                    name,
                    application: path,
                    service,
                    recipient,
                },
        } => {
            let app = application(&path)?;
            let due = ferry_notify::Due {
                trigger: String::new(),
                templates: vec![name],
                destination: ferry_notify::Destination { service, recipient },
                state_key: String::new(),
                once_per: None,
            };
            let n = ferry_notify::render(&cfg, &app, &due)
                .map_err(|e| anyhow::anyhow!(cfg.redact(&e)))?;
            // A template may print `.secrets`: the terminal gets them masked.
            let mut text = to_yaml(&serde_json::to_value(n)?)?;
            for v in cfg.secrets.values().filter(|v| v.len() >= 3) {
                text = text.replace(v.as_str(), "******");
            }
            print!("{text}");
        }
    }
    Ok(())
}

//! `ferry appset list | get | create | delete | generate`, as `argocd appset` does them.
//! `generate` runs offline: it reads the set from a file, fetches the Git repositories its
//! generators read, and prints the Applications it would make.

use crate::client::{Client, ClientOpts, seg};
use crate::output::{table, to_yaml};
use anyhow::{Context as _, Result, bail};
use clap::Subcommand;
use ferry_appset::render::Mode;
use ferry_appset::{Error as GenError, Tree};
use ferry_model::appset::ApplicationSet;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum AppsetCommand {
    /// List ApplicationSets
    List {
        /// Output format: wide, json, yaml or name
        #[arg(short, long, default_value = "wide", value_parser = ["wide", "json", "yaml", "name"])]
        output: String,
    },
    /// Show an ApplicationSet
    Get {
        name: String,
        /// Output format: wide, json or yaml
        #[arg(short, long, default_value = "wide", value_parser = ["wide", "json", "yaml"])]
        output: String,
    },
    /// Create ApplicationSets from files
    Create {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Replace an existing set with a different spec
        #[arg(long)]
        upsert: bool,
    },
    /// Delete ApplicationSets (and their Applications)
    Delete {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Print the Applications a set in a file would make, without a server
    Generate {
        file: PathBuf,
        /// Output format: wide, json or yaml
        #[arg(short, long, default_value = "wide", value_parser = ["wide", "json", "yaml"])]
        output: String,
    },
}

fn read_sets(file: &PathBuf) -> Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut out = Vec::new();
    for doc in text
        .split("\n---")
        .filter(|d| !d.trim().is_empty() && d.trim() != "---")
    {
        let v: Value = serde_saphyr::from_str(doc)
            .with_context(|| format!("{} is not YAML", file.display()))?;
        if v.is_null() {
            continue;
        }
        if v["kind"] != "ApplicationSet" {
            bail!(
                "{}: a {} where an ApplicationSet was expected",
                file.display(),
                v["kind"]
            );
        }
        out.push(v);
    }
    Ok(out)
}

fn print_apps(apps: &[Value], output: &str) -> Result<()> {
    match output {
        "json" | "yaml" => {
            let v = if apps.len() == 1 {
                apps[0].clone()
            } else {
                json!(apps)
            };
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", to_yaml(&v)?);
            }
        }
        _ => {
            let rows: Vec<Vec<String>> = apps
                .iter()
                .map(|a| {
                    let s = |p: &str| {
                        a.pointer(p)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string()
                    };
                    let cluster = Some(s("/spec/destination/server"))
                        .filter(|x| !x.is_empty())
                        .unwrap_or_else(|| s("/spec/destination/name"));
                    vec![
                        s("/metadata/name"),
                        cluster,
                        s("/spec/destination/namespace"),
                        s("/spec/project"),
                        s("/spec/source/repoURL"),
                        s("/spec/source/path"),
                        s("/spec/source/targetRevision"),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &[
                        "NAME",
                        "CLUSTER",
                        "NAMESPACE",
                        "PROJECT",
                        "REPO",
                        "PATH",
                        "TARGET"
                    ],
                    &rows
                )
            );
        }
    }
    Ok(())
}

struct Offline {
    repos: HashMap<(String, String), ferry_controller::appset::DirTree>,
}

impl ferry_appset::Inputs for Offline {
    fn clusters(&self) -> Vec<ferry_appset::Cluster> {
        Vec::new()
    }
    fn repo(&self, url: &str, revision: &str) -> Result<&dyn Tree, GenError> {
        self.repos
            .get(&(url.to_string(), revision.to_string()))
            .map(|t| t as &dyn Tree)
            .ok_or_else(|| GenError::NeedRepo {
                url: url.into(),
                revision: revision.into(),
            })
    }
}

/// The Applications of a set, generated here: list, git (fetched with the local git), matrix,
/// merge, and clusters (the local cluster only: cluster Secrets live in a cluster).
async fn generate_offline(set: &ApplicationSet) -> Result<Vec<Value>> {
    let mode = Mode::of(set)?;
    let unknown = ferry_appset::unknown_fields(&set.spec);
    if !unknown.is_empty() {
        bail!("fields Ferry does not act on: {}", unknown.join(", "));
    }
    let cache = tempfile::tempdir()?;
    let sources = ferry_source::SourceCache::new(cache.path().to_path_buf())?;
    let mut inputs = Offline {
        repos: HashMap::new(),
    };
    for _ in 0..32 {
        match ferry_appset::generate(&set.spec.generators, &set.spec.template, &mode, &inputs) {
            Ok((generated, _)) => {
                let rendered = ferry_appset::render_all(set, &generated)?;
                return Ok(rendered
                    .into_iter()
                    .map(|r| {
                        let mut app = r.app;
                        if let Some(m) = app["metadata"].as_object_mut() {
                            m.remove("namespace");
                        }
                        app
                    })
                    .collect());
            }
            Err(GenError::NeedRepo { url, revision }) => {
                let sha = sources
                    .resolve(&url, &revision, None)
                    .await
                    .with_context(|| format!("fetching {url} at {revision}"))?;
                let dir = sources.checkout(&url, &sha, None).await?;
                inputs
                    .repos
                    .insert((url, revision), ferry_controller::appset::DirTree::new(dir));
            }
            Err(GenError::NeedPullRequests(_)) => {
                bail!(
                    "the pull request generator reads a forge with the set's token Secret: run the set in a cluster"
                )
            }
            Err(e) => return Err(e.into()),
        }
    }
    bail!("the generators read more than 32 repositories")
}

pub async fn run(opts: ClientOpts, command: AppsetCommand) -> Result<()> {
    if let AppsetCommand::Generate { file, output } = &command {
        let sets = read_sets(file)?;
        let [set] = sets.as_slice() else {
            bail!("Input file must contain one ApplicationSet");
        };
        let set: ApplicationSet =
            serde_json::from_value(set.clone()).context("not a valid ApplicationSet")?;
        if set.metadata.name.as_deref().unwrap_or_default().is_empty() {
            bail!("the ApplicationSet does not have metadata.name set");
        }
        let apps = generate_offline(&set).await?;
        return print_apps(&apps, output);
    }
    let client = Client::from_opts(&opts)?;
    match command {
        AppsetCommand::List { output } => {
            let v = client.get("/api/v1/applicationsets", &[]).await?;
            let items = v["items"].as_array().cloned().unwrap_or_default();
            match output.as_str() {
                "json" => println!("{}", serde_json::to_string_pretty(&items)?),
                "yaml" => print!("{}", to_yaml(&json!(items))?),
                "name" => items.iter().for_each(|s| {
                    println!("{}", s["metadata"]["name"].as_str().unwrap_or_default())
                }),
                _ => {
                    let rows: Vec<Vec<String>> = items
                        .iter()
                        .map(|s| {
                            let conds = s["status"]["conditions"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter(|c| c["status"] == "True")
                                .map(|c| c["type"].as_str().unwrap_or_default().to_string())
                                .collect::<Vec<_>>()
                                .join(",");
                            vec![
                                s["metadata"]["name"]
                                    .as_str()
                                    .unwrap_or_default()
                                    .to_string(),
                                s["spec"]["template"]["spec"]["project"]
                                    .as_str()
                                    .unwrap_or("default")
                                    .to_string(),
                                s["spec"]["syncPolicy"]["applicationsSync"]
                                    .as_str()
                                    .unwrap_or("sync")
                                    .to_string(),
                                conds,
                                s["status"]["resources"]
                                    .as_array()
                                    .map(Vec::len)
                                    .unwrap_or(0)
                                    .to_string(),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        table(
                            &[
                                "NAME",
                                "PROJECT",
                                "SYNCPOLICY",
                                "CONDITIONS",
                                "APPLICATIONS"
                            ],
                            &rows
                        )
                    );
                }
            }
        }
        AppsetCommand::Get { name, output } => {
            let s = client
                .get(&format!("/api/v1/applicationsets/{}", seg(&name)), &[])
                .await?;
            match output.as_str() {
                "json" => println!("{}", serde_json::to_string_pretty(&s)?),
                "yaml" => print!("{}", to_yaml(&s)?),
                _ => {
                    println!(
                        "Name:          {}",
                        s["metadata"]["name"].as_str().unwrap_or_default()
                    );
                    println!(
                        "Project:       {}",
                        s["spec"]["template"]["spec"]["project"]
                            .as_str()
                            .unwrap_or("default")
                    );
                    println!(
                        "Sync policy:   {}",
                        s["spec"]["syncPolicy"]["applicationsSync"]
                            .as_str()
                            .unwrap_or("sync")
                    );
                    println!("\nCONDITION\tSTATUS\tMESSAGE");
                    for c in s["status"]["conditions"].as_array().into_iter().flatten() {
                        println!(
                            "{}\t{}\t{}",
                            c["type"].as_str().unwrap_or_default(),
                            c["status"].as_str().unwrap_or_default(),
                            c["message"].as_str().unwrap_or_default()
                        );
                    }
                    println!("\nAPPLICATION\tSYNC\tHEALTH");
                    for r in s["status"]["resources"].as_array().into_iter().flatten() {
                        println!(
                            "{}\t{}\t{}",
                            r["name"].as_str().unwrap_or_default(),
                            r["status"].as_str().unwrap_or_default(),
                            r["health"]["status"].as_str().unwrap_or_default()
                        );
                    }
                }
            }
        }
        AppsetCommand::Create { files, upsert } => {
            for f in &files {
                for set in read_sets(f)? {
                    let query = [("upsert", upsert.to_string())];
                    let created = client.post("/api/v1/applicationsets", &query, &set).await?;
                    println!(
                        "ApplicationSet '{}' created",
                        created["metadata"]["name"].as_str().unwrap_or_default()
                    );
                }
            }
        }
        AppsetCommand::Delete { names } => {
            for name in names {
                client
                    .delete(&format!("/api/v1/applicationsets/{}", seg(&name)), &[])
                    .await?;
                println!("applicationset '{name}' deleted");
            }
        }
        AppsetCommand::Generate { .. } => unreachable!("handled above"),
    }
    Ok(())
}

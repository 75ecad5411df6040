//! `ferry ls`, `ferry status` and `ferry workflow`: KubeVela's `vela ls`, `vela status` and
//! `vela workflow resume`, read from the cluster the kubeconfig points at.

use crate::output::table;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use ferry_controller::oam::{applications, is_suspended, parse_instance, request_resume};
use ferry_model::annotations::TRACKING_ID;
use kube::ResourceExt;
use kube::api::{DynamicObject, ListParams};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Args)]
pub struct Target {
    /// Kubeconfig to use (default: $KUBECONFIG, ~/.kube/config, then in-cluster).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// Namespace of the Applications.
    #[arg(short, long, default_value = "default", global = true)]
    namespace: String,
}

#[derive(Args)]
pub struct LsArgs {
    #[command(flatten)]
    target: Target,
    /// Applications of every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
}

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    target: Target,
    /// Application name.
    app: String,
}

#[derive(Subcommand)]
pub enum WorkflowCommand {
    /// Resume a workflow waiting in a suspend step.
    Resume {
        #[command(flatten)]
        target: Target,
        /// Application name.
        app: String,
    },
}

/// `2021-09-26T12:48:09Z` as vela prints it: `2021-09-26 12:48:09 +0000 UTC`.
fn created(o: &DynamicObject) -> String {
    o.metadata
        .creation_timestamp
        .as_ref()
        .map(|t| {
            let s = t.0.to_string();
            let s = s.trim_end_matches('Z').replacen('T', " ", 1);
            format!("{} +0000 UTC", s.split('.').next().unwrap_or(&s))
        })
        .unwrap_or_default()
}

/// The Application that applied `o`, from its tracking id: `namespace/name`.
fn parent(o: &DynamicObject) -> Option<String> {
    let id = o.annotations().get(TRACKING_ID)?;
    let (instance, _) = id.split_once(':')?;
    let (ns, name) = parse_instance(instance)?;
    Some(format!("{ns}/{name}"))
}

fn key(o: &DynamicObject) -> String {
    format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any())
}

/// One row per component: APP, COMPONENT, TYPE, TRAITS, PHASE, HEALTHY, STATUS, CREATED-TIME.
/// Apps applied by another app follow it, indented one level per generation.
pub fn ls_table(items: &[DynamicObject]) -> String {
    let by_key: BTreeMap<String, &DynamicObject> = items.iter().map(|o| (key(o), o)).collect();
    let mut children: BTreeMap<Option<String>, Vec<&DynamicObject>> = BTreeMap::new();
    for o in items {
        let p = parent(o).filter(|p| by_key.contains_key(p) && *p != key(o));
        children.entry(p).or_default().push(o);
    }
    for v in children.values_mut() {
        v.sort_by_key(|o| key(o));
    }
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut stack: Vec<(&DynamicObject, usize)> = children
        .get(&None)
        .map(|v| v.iter().rev().map(|o| (*o, 0)).collect())
        .unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    while let Some((o, depth)) = stack.pop() {
        if !seen.insert(key(o)) {
            continue;
        }
        rows.extend(app_rows(o, depth));
        if let Some(kids) = children.get(&Some(key(o))) {
            for k in kids.iter().rev() {
                stack.push((k, depth + 1));
            }
        }
    }
    table(
        &[
            "APP",
            "COMPONENT",
            "TYPE",
            "TRAITS",
            "PHASE",
            "HEALTHY",
            "STATUS",
            "CREATED-TIME",
        ],
        &rows,
    )
}

fn app_rows(o: &DynamicObject, depth: usize) -> Vec<Vec<String>> {
    let d = &o.data;
    let indent = "  ".repeat(depth);
    let phase = d
        .pointer("/status/status")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let services: Vec<Value> = d
        .pointer("/status/services")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let comps: Vec<Value> = d
        .pointer("/spec/components")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let n = comps.len();
    let mut rows = Vec::new();
    for (i, c) in comps.iter().enumerate() {
        let name = c["name"].as_str().unwrap_or_default();
        let traits: Vec<&str> = c["traits"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["type"].as_str())
            .collect();
        let mine: Vec<&Value> = services.iter().filter(|s| s["name"] == name).collect();
        let healthy = if mine.is_empty() {
            String::new()
        } else if mine.iter().all(|s| s["healthy"] == true) {
            "healthy".to_string()
        } else {
            "unhealthy".to_string()
        };
        let status = mine
            .iter()
            .filter_map(|s| s["message"].as_str())
            .filter(|m| !m.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        let app = if i == 0 {
            format!("{indent}{}", o.name_any())
        } else if i + 1 == n {
            format!("{indent}└─")
        } else {
            format!("{indent}├─")
        };
        rows.push(vec![
            app,
            name.to_string(),
            c["type"].as_str().unwrap_or_default().to_string(),
            traits.join(","),
            phase.clone(),
            healthy,
            status,
            created(o),
        ]);
    }
    rows
}

pub async fn ls(args: LsArgs) -> anyhow::Result<()> {
    let client = crate::controller::kube_client(args.target.kubeconfig.as_deref()).await?;
    let ns = (!args.all_namespaces).then_some(args.target.namespace.as_str());
    let list = applications(client, ns)
        .list(&ListParams::default())
        .await
        .context("listing core.oam.dev Applications (is `ferry controller` installed?)")?;
    print!("{}", ls_table(&list.items));
    Ok(())
}

pub fn status_text(o: &DynamicObject) -> String {
    let d = &o.data;
    let s = |p: &str| {
        d.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let mut out = String::new();
    out.push_str("About:\n\n");
    out.push_str(&format!("  Name:         {}\n", o.name_any()));
    out.push_str(&format!(
        "  Namespace:    {}\n",
        o.namespace().unwrap_or_default()
    ));
    out.push_str(&format!("  Created at:   {}\n", created(o)));
    out.push_str(&format!("  Status:       {}\n", s("/status/status")));
    let failed: Vec<String> = d
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| c["status"] == "False")
        .map(|c| {
            format!(
                "{}: {}",
                c["type"].as_str().unwrap_or_default(),
                c["message"].as_str().unwrap_or_default()
            )
        })
        .collect();
    for f in &failed {
        out.push_str(&format!("  Error:        {f}\n"));
    }
    out.push_str("\nWorkflow:\n\n");
    out.push_str(&format!("  mode: {}\n", s("/status/workflow/mode")));
    for f in ["finished", "suspend", "terminated"] {
        let v = d
            .pointer(&format!("/status/workflow/{f}"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        out.push_str(&format!("  {f}: {v}\n"));
    }
    out.push_str("  Steps\n");
    let step_line = |st: &Value, pad: &str| {
        let mut l = format!(
            "{pad}- name: {}\n{pad}  type: {}\n{pad}  phase: {}\n",
            st["name"].as_str().unwrap_or_default(),
            st["type"].as_str().unwrap_or_default(),
            st["phase"].as_str().unwrap_or_default()
        );
        for k in ["reason", "message"] {
            if let Some(v) = st[k].as_str() {
                l.push_str(&format!("{pad}  {k}: {v}\n"));
            }
        }
        l
    };
    for st in d
        .pointer("/status/workflow/steps")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.push_str(&step_line(st, "  "));
        for sub in st["subSteps"].as_array().into_iter().flatten() {
            out.push_str(&step_line(sub, "      "));
        }
    }
    out.push_str("\nServices:\n\n");
    let comps: Vec<Value> = d
        .pointer("/spec/components")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for svc in d
        .pointer("/status/services")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = svc["name"].as_str().unwrap_or_default();
        let type_ = comps
            .iter()
            .find(|c| c["name"] == name)
            .and_then(|c| c["type"].as_str())
            .unwrap_or_default();
        let healthy = if svc["healthy"] == true {
            "Healthy"
        } else {
            "Unhealthy"
        };
        out.push_str(&format!(
            "  - Name: {name}  \n    Cluster: {}  Namespace: {}\n    Type: {type_}\n    {healthy} {}\n",
            svc["cluster"].as_str().unwrap_or_default(),
            svc["namespace"].as_str().unwrap_or_default(),
            svc["message"].as_str().unwrap_or_default()
        ));
        let traits: Vec<&Value> = svc["traits"].as_array().into_iter().flatten().collect();
        if traits.is_empty() {
            out.push_str("    No trait applied\n");
        } else {
            out.push_str("    Traits:\n");
            for t in traits {
                let mark = if t["healthy"] == true { "✅" } else { "❌" };
                out.push_str(&format!(
                    "      {mark} {}{}\n",
                    t["type"].as_str().unwrap_or_default(),
                    t["message"]
                        .as_str()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                ));
            }
        }
    }
    out
}

pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let client = crate::controller::kube_client(args.target.kubeconfig.as_deref()).await?;
    let o = applications(client, Some(&args.target.namespace))
        .get_opt(&args.app)
        .await?
        .with_context(|| {
            format!(
                "application {} not found in namespace {}",
                args.app, args.target.namespace
            )
        })?;
    print!("{}", status_text(&o));
    Ok(())
}

pub async fn workflow(cmd: WorkflowCommand) -> anyhow::Result<()> {
    match cmd {
        WorkflowCommand::Resume { target, app } => {
            let client = crate::controller::kube_client(target.kubeconfig.as_deref()).await?;
            let api = applications(client, Some(&target.namespace));
            let o = api.get_opt(&app).await?.with_context(|| {
                format!(
                    "application {app} not found in namespace {}",
                    target.namespace
                )
            })?;
            if !is_suspended(&o) {
                bail!("application {app} is not suspended");
            }
            request_resume(&api, &app, "ferry-cli").await?;
            println!("Successfully resumed workflow: {app}");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app(name: &str, parent: Option<&str>, comps: Value, status: Value) -> DynamicObject {
        let mut anns = serde_json::Map::new();
        if let Some(p) = parent {
            anns.insert(
                TRACKING_ID.into(),
                json!(format!(
                    "oam.default_{p}:core.oam.dev/Application:default/{name}"
                )),
            );
        }
        serde_json::from_value(json!({
            "apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
            "metadata": {"name": name, "namespace": "default", "annotations": anns,
                         "creationTimestamp": "2021-09-26T12:48:09Z"},
            "spec": {"components": comps},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn ls_nests_apps_under_the_app_that_applied_them() {
        let ok = |n: &str| json!({"name": n, "healthy": true});
        let items = vec![
            app(
                "mysql",
                Some("infra"),
                json!([{"name": "mysql-controller", "type": "helm"},
                       {"name": "mysql-cluster", "type": "raw", "dependsOn": ["mysql-controller"]}]),
                json!({"status": "running", "services": [ok("mysql-controller"), ok("mysql-cluster")]}),
            ),
            app(
                "infra",
                None,
                json!([{"name": "database-config", "type": "kustomize"}]),
                json!({"status": "running", "services": [ok("database-config")]}),
            ),
            app(
                "my-app",
                Some("apps"),
                json!([{"name": "my-server", "type": "webservice", "traits": [{"type": "ingress"}]}]),
                json!({"status": "runningWorkflow", "services": [{"name": "my-server", "healthy": false, "message": "Ready:0/1"}]}),
            ),
        ];
        let t = ls_table(&items);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 5, "{t}");
        assert!(lines[0].starts_with("APP"));
        assert!(lines[0].contains("CREATED-TIME"));
        // my-app's parent `apps` is not listed: it stays at the top level.
        assert!(lines[1].starts_with("infra "), "{t}");
        assert!(lines[2].starts_with("  mysql "), "{t}");
        assert!(lines[3].starts_with("  └─"), "{t}");
        assert!(lines[3].contains("mysql-cluster"));
        assert!(lines[4].starts_with("my-app "));
        assert!(lines[4].contains("ingress"));
        assert!(lines[4].contains("unhealthy"));
        assert!(lines[4].contains("Ready:0/1"));
        assert!(lines[1].contains("2021-09-26 12:48:09 +0000 UTC"));
    }
}

//! `ferry proj windows list`: an AppProject's sync windows, as `argocd proj windows list` shows them.

use crate::client::{Client, ClientOpts, seg};
use crate::output::table;
use anyhow::{Context as _, Result};
use clap::Subcommand;
use ferry_model::SyncWindow;

#[derive(Subcommand)]
pub enum ProjCommand {
    /// Sync windows of a project
    Windows {
        #[command(subcommand)]
        command: WindowsCommand,
    },
}

#[derive(Subcommand)]
pub enum WindowsCommand {
    /// List a project's sync windows with whether each is active now
    List {
        /// Project name
        project: String,
    },
}

pub async fn run(opts: ClientOpts, command: ProjCommand) -> Result<()> {
    let client = Client::from_opts(&opts)?;
    match command {
        ProjCommand::Windows {
            command: WindowsCommand::List { project },
        } => {
            let proj = client
                .get(&format!("/api/v1/projects/{}", seg(&project)), &[])
                .await?;
            let windows: Vec<SyncWindow> = serde_json::from_value(
                proj.pointer("/spec/syncWindows")
                    .cloned()
                    .unwrap_or_else(|| serde_json::json!([])),
            )
            .context("reading spec.syncWindows")?;
            print!("{}", windows_table(&windows, chrono::Utc::now()));
        }
    }
    Ok(())
}

fn windows_table(windows: &[SyncWindow], now: chrono::DateTime<chrono::Utc>) -> String {
    let list = |v: &[String]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(",")
        }
    };
    let rows: Vec<Vec<String>> = windows
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let status = match w.is_active(now) {
                Ok(true) => "Active".to_string(),
                Ok(false) => "Inactive".to_string(),
                Err(e) => format!("Invalid: {e}"),
            };
            vec![
                i.to_string(),
                status,
                w.kind.clone(),
                w.schedule.clone(),
                w.duration.clone(),
                list(&w.applications),
                list(&w.namespaces),
                list(&w.clusters),
                if w.manual_sync { "Enabled" } else { "Disabled" }.to_string(),
                if w.time_zone.is_empty() {
                    "UTC".to_string()
                } else {
                    w.time_zone.clone()
                },
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "STATUS",
            "KIND",
            "SCHEDULE",
            "DURATION",
            "APPLICATIONS",
            "NAMESPACES",
            "CLUSTERS",
            "MANUALSYNC",
            "TIMEZONE",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn windows_are_listed_as_argo_cd_lists_them() {
        let windows: Vec<SyncWindow> = serde_json::from_value(serde_json::json!([
            { "kind": "deny", "schedule": "0 22 * * *", "duration": "1h", "applications": ["web-*"], "manualSync": true },
            { "kind": "allow", "schedule": "0 8 * * 1-5", "duration": "10h", "namespaces": ["prod"], "timeZone": "Europe/Amsterdam" },
        ]))
        .unwrap();
        let now = chrono::Utc
            .with_ymd_and_hms(2026, 12, 7, 22, 30, 0)
            .unwrap();
        let text = windows_table(&windows, now);
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines[0][..3], ["ID", "STATUS", "KIND"]);
        assert_eq!(
            lines[1],
            [
                "0", "Active", "deny", "0", "22", "*", "*", "*", "1h", "web-*", "-", "-",
                "Enabled", "UTC"
            ]
        );
        assert_eq!(lines[2][1], "Inactive");
        assert_eq!(lines[2].last(), Some(&"Europe/Amsterdam"));
    }
}

//! What `ferry version` and `GET /api/version` report: Ferry's version, the commit it was built
//! from, and the versions of the tools it runs, under Argo CD's field names so scripts that read
//! `argocd version -o json` keep working.

use serde::Serialize;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const GIT_COMMIT: &str = env!("FERRY_GIT_COMMIT");
/// The commit's date: builds of one commit are identical.
pub const BUILD_DATE: &str = env!("FERRY_BUILD_DATE");

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VersionInfo {
    pub version: String,
    pub build_date: String,
    pub git_commit: String,
    pub platform: String,
    /// `git --version`, or why it is missing.
    pub git_version: String,
    pub helm_version: String,
    pub kubectl_version: String,
    pub kustomize_version: String,
}

/// First line of a tool's output, or a note that it did not run.
fn tool(program: &std::path::Path, args: &[&str]) -> String {
    tool_line(program, args, |_| true)
}

/// The first line of a tool's output that `pick` accepts.
fn tool_line(program: &std::path::Path, args: &[&str], pick: impl Fn(&str) -> bool) -> String {
    let mut child = match Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return format!("not found ({}: {e})", program.display()),
    };
    // A tool that hangs must not hang `version`.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                return format!("{} did not answer", program.display());
            }
        }
    }
    let out = child
        .wait_with_output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&out);
    text.lines()
        .find(|l| pick(l))
        .or_else(|| text.lines().next())
        .unwrap_or("")
        .trim()
        .to_string()
}

fn collect() -> VersionInfo {
    let tools = ferry_render::RenderTools::locate();
    let (helm, kustomize) = match &tools {
        Ok(t) => (t.helm.clone(), t.kustomize.clone()),
        Err(_) => ("helm".into(), "kustomize".into()),
    };
    let kubectl = kustomize
        .parent()
        .map(|d| d.join("kubectl"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| "kubectl".into());
    VersionInfo {
        version: format!("v{VERSION}+{}", &GIT_COMMIT[..GIT_COMMIT.len().min(7)]),
        build_date: BUILD_DATE.into(),
        git_commit: GIT_COMMIT.into(),
        // Go's names, as Argo CD reports them.
        platform: format!(
            "{}/{}",
            std::env::consts::OS,
            match std::env::consts::ARCH {
                "x86_64" => "amd64",
                "aarch64" => "arm64",
                other => other,
            }
        ),
        git_version: tool("git".as_ref(), &["--version"]),
        helm_version: tool(&helm, &["version", "--short"]),
        kubectl_version: tool(&kubectl, &["version", "--client"]),
        // Ferry's kustomize is kubectl's, which names its version on a line of its own.
        kustomize_version: tool_line(&kustomize, &["version"], |l| l.contains("Kustomize")),
    }
}

/// Computed once per process: the tools do not change under a running binary.
pub fn info() -> VersionInfo {
    static INFO: OnceLock<VersionInfo> = OnceLock::new();
    INFO.get_or_init(collect).clone()
}

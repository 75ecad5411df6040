//! Records the commit Ferry is built from and that commit's date (not the wall clock, so two
//! builds of one commit are the same binary) for `ferry version` and `/api/version`.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    let commit = std::env::var("FERRY_GIT_COMMIT")
        .ok()
        .or_else(|| git(&["rev-parse", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let date = std::env::var("FERRY_BUILD_DATE")
        .ok()
        .or_else(|| git(&["log", "-1", "--format=%cI", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=FERRY_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=FERRY_BUILD_DATE={date}");
    println!("cargo:rerun-if-env-changed=FERRY_GIT_COMMIT");
    println!("cargo:rerun-if-env-changed=FERRY_BUILD_DATE");
    // A new commit moves HEAD's branch: watch HEAD and the files a branch can live in.
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        let dir = Path::new(&git_dir);
        println!("cargo:rerun-if-changed={}", dir.join("HEAD").display());
        println!(
            "cargo:rerun-if-changed={}",
            dir.join("packed-refs").display()
        );
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={}", dir.join(branch).display());
        }
    }
}

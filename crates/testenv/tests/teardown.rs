//! Dropping an environment leaves no process and no directory behind.

use ferry_testenv::{Options, TestEnv};
use std::path::Path;

/// Pids of live processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn dropping_the_handle_stops_every_process_and_removes_its_directory() {
    let env = TestEnv::start(Options::default()).expect("starting the environment");
    let dir = env.dir.clone();
    let pids = env.pids();
    // etcd, 2 x (apiserver, controller manager, scheduler), fcgiwrap, nginx, sshd, registry
    assert_eq!(pids.len(), 11, "{pids:?}");
    let needle = dir.display().to_string();
    let running = processes_mentioning(&needle);
    for p in &pids {
        assert!(running.contains(p), "pid {p} is not running");
    }

    drop(env);

    let left = processes_mentioning(&needle);
    assert!(left.is_empty(), "processes left behind: {left:?}");
    for p in pids {
        assert!(
            !Path::new(&format!("/proc/{p}")).exists(),
            "pid {p} still exists"
        );
    }
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

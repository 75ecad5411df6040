//! `ferry dev up --demo` (what `make demo` runs) delivers the examples,
//! prints a working kubeconfig, and stops everything on Ctrl-C.

use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn ferry_path() -> String {
    std::path::Path::new(env!("CARGO_BIN_EXE_ferry"))
        .canonicalize()
        .unwrap()
        .display()
        .to_string()
}

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

/// A failing test must not leave the environment running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: kill(2) on our own child; SIGINT lets it clean up.
            unsafe {
                libc::kill(self.0.id() as libc::pid_t, libc::SIGINT);
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline && matches!(self.0.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[tokio::test]
async fn demo_delivers_the_examples_and_ctrl_c_removes_everything() {
    let examples = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let logs = tempfile::tempdir().unwrap();
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["dev", "up", "--no-second-cluster", "--demo", "--examples"])
            .arg(&examples)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(logs.path().join("stderr")).unwrap())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let mut kubeconfig: Option<PathBuf> = None;
    let mut dir: Option<PathBuf> = None;
    let mut login: Option<Vec<String>> = None;
    let mut password: Option<String> = None;
    let mut ui_url: Option<String> = None;
    let mut printed = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let t = line.trim();
        if let Some(p) = t.split("argocd-initial-admin-secret): ").nth(1) {
            password = Some(p.trim().to_string());
        }
        // What a failing assertion shows never carries the password.
        match &password {
            Some(p) => printed.push_str(&line.replace(p.as_str(), "***")),
            None => printed.push_str(&line),
        }
        printed.push('\n');
        if let Some(p) = t.strip_prefix("KUBECONFIG=")
            && kubeconfig.is_none()
        {
            kubeconfig = Some(PathBuf::from(p));
        }
        if let Some(p) = t.strip_prefix("all state, logs and credentials:") {
            dir = Some(PathBuf::from(p.trim()));
        }
        // The printed command names this binary by its full path (it is not on the PATH).
        if let Some(args) = t.strip_prefix(&format!("{} login ", ferry_path())) {
            login = Some(args.split_whitespace().map(str::to_string).collect());
        }
        if t.starts_with("http://") && t.ends_with("/applications") {
            ui_url = Some(t.to_string());
        }
        if t.starts_with("Press Ctrl-C") {
            break;
        }
    }
    let stderr = || std::fs::read_to_string(logs.path().join("stderr")).unwrap_or_default();
    let kubeconfig = kubeconfig
        .unwrap_or_else(|| panic!("no KUBECONFIG line in:\n{printed}\nstderr:\n{}", stderr()));
    let dir = dir.unwrap_or_else(|| panic!("no directory line in:\n{printed}"));
    assert!(!printed.contains("token:"), "{printed}");

    let kc = Kubeconfig::read_from(&kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(nodes.items.len(), 1);
    // The demo printed its table only once every app was Synced and Healthy.
    for app in [
        "message-app-staging",
        "guestbook-prod",
        "web-staging",
        "podinfo",
    ] {
        let line = printed
            .lines()
            .find(|l| l.starts_with(app))
            .unwrap_or_else(|| panic!("{app} missing in:\n{printed}"));
        assert!(
            line.contains("Synced") && line.contains("Healthy"),
            "{line}"
        );
    }
    // The other two front doors: the KubeVela app ran, and a new tag was committed and
    // delivered.
    assert!(
        printed.contains("KubeVela: hello-vela (examples/demo/hello-vela.yaml) is running"),
        "{printed}"
    );
    let automation = printed
        .lines()
        .find(|l| l.starts_with("Image automation: a new tag of demo/podinfo became commit "))
        .unwrap_or_else(|| panic!("no image automation line in:\n{printed}"));
    assert!(automation.contains("/demo/podinfo:1.1.0"), "{automation}");
    // Credentials are named by file, each readable by its owner only, never printed.
    let git_password = dir.join("git-http-password");
    assert!(
        printed.contains(&git_password.display().to_string()),
        "{printed}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&git_password)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let secret = std::fs::read_to_string(&git_password).unwrap();
    assert!(
        !secret.is_empty() && !printed.contains(&secret),
        "{printed}"
    );

    // The printed login line works, and the CLI sees the demo's apps.
    let login = login.unwrap_or_else(|| panic!("no login line in:\n{printed}"));
    let cli_config = logs.path().join("ferry-config");
    let password = password.unwrap_or_else(|| panic!("no admin password line in:\n{printed}"));
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(args)
            .env("FERRY_CONFIG", &cli_config)
            .env("FERRY_PASSWORD", &password)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let mut args = vec!["login"];
    args.extend(login.iter().map(String::as_str));
    let o = run(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&["app", "list", "-o", "name"]);
    let names = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(names.lines().any(|l| l == "message-app-staging"), "{names}");

    // The printed web UI URL: its login form lets admin in, and the page lists the demo apps.
    let ui_url = ui_url.unwrap_or_else(|| panic!("no web UI URL in:\n{printed}"));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = ui_url.trim_end_matches("/applications");
    let form = format!(
        "username=admin&password={}&return=%2Fapplications",
        password
            .replace('%', "%25")
            .replace('&', "%26")
            .replace('+', "%2B")
            .replace('=', "%3D")
    );
    let resp = http
        .post(format!("{base}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        303,
        "the login form answers with a redirect"
    );
    let cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("ferry.token="))
        .expect("a session cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page = http
        .get(&ui_url)
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("message-app-staging"),
        "the UI's first page shows the demo apps"
    );
    let cm = Api::<ConfigMap>::namespaced(client, "staging")
        .get("message-app-config")
        .await
        .unwrap();
    assert_eq!(cm.data.unwrap()["MESSAGE"], "Hello from Ferry");

    let needle = dir.display().to_string();
    assert!(processes_mentioning(&needle).len() >= 7);

    // What a terminal's Ctrl-C sends.
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.0.id() as libc::pid_t, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "ferry dev up did not stop within 60s of SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
    assert_eq!(processes_mentioning(&needle), Vec::<u32>::new());
    assert!(!Path::new(&dir).exists());
}

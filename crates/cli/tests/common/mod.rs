//! Helpers the CLI's end-to-end tests share.
// Each test binary uses its own subset.
#![allow(dead_code)]

pub mod webdriver;

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};

/// A process the test started: killed when the test ends, also when it fails
/// half-way.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `cmd` to completion, feeding it `stdin` when given (else /dev/null).
pub fn run(mut cmd: Command, stdin: Option<&str>) -> Output {
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

/// Exit status, stdout and stderr, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `ferry controller` for `ns` with `kubeconfig`, logging to `log`, as the install runs it
/// (leader election on, with its own identity).
pub fn start_controller(
    kubeconfig: &std::path::Path,
    ns: &str,
    work: &std::path::Path,
    log: &std::path::Path,
) -> KillOnDrop {
    start_controller_with(kubeconfig, ns, work, log, &[])
}

/// [`start_controller`] with more arguments.
pub fn start_controller_with(
    kubeconfig: &std::path::Path,
    ns: &str,
    work: &std::path::Path,
    log: &std::path::Path,
    extra: &[&str],
) -> KillOnDrop {
    KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(extra)
            .args([
                "controller",
                "--namespace",
                ns,
                "--identity",
                "ferry-controller-0",
            ])
            .args([
                "--poll-seconds",
                "5",
                "--log",
                "info",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(work.join("controller-cache"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// `ferry server --insecure` (plain HTTP) for `ns` on a free loopback port: the process, the
/// admin password it made (when it made one) and its address.
pub fn start_server(
    kubeconfig: &std::path::Path,
    ns: &str,
    work: &std::path::Path,
    log: &std::path::Path,
) -> (KillOnDrop, Option<String>, String) {
    start_server_with(kubeconfig, ns, work, log, false)
}

/// [`start_server`], over HTTPS with its self-signed certificate when `tls`.
pub fn start_server_with(
    kubeconfig: &std::path::Path,
    ns: &str,
    work: &std::path::Path,
    log: &std::path::Path,
    tls: bool,
) -> (KillOnDrop, Option<String>, String) {
    use std::io::{BufRead, BufReader};
    let (flags, prefix): (&[&str], _) = if tls {
        (&[], "Serving the API on https://")
    } else {
        (&["--insecure"], "Serving the API on http://")
    };
    let mut server = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args([
                "server",
                "--namespace",
                ns,
                "--listen",
                "127.0.0.1:0",
                "--log",
                "info",
            ])
            .args(flags)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(work.join("server-cache"))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    );
    let stdout = server.0.stdout.take().unwrap();
    let mut password = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(p) = line.split("argocd-initial-admin-secret): ").nth(1) {
            password = Some(p.trim().to_string());
        }
        if let Some(a) = line.strip_prefix(prefix) {
            return (server, password, a.trim().to_string());
        }
    }
    panic!(
        "the server exited before serving:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// The `ferry` CLI with its own config file and the admin password in the environment.
pub fn cli(config: &std::path::Path, password: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env("FERRY_CONFIG", config)
        .env("FERRY_PASSWORD", password)
        .env_remove("FERRY_SERVER")
        .env_remove("FERRY_AUTH_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A token for ServiceAccount `sa` in `ns` from the API server (TokenRequest, an hour long):
/// what a kubelet mounts into the ServiceAccount's pods.
pub async fn service_account_token(client: &kube::Client, ns: &str, sa: &str) -> String {
    let req = serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": { "audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3600 },
    });
    let resp: serde_json::Value =
        kube::Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), ns)
            .create_subresource("token", sa, &Default::default(), &req)
            .await
            .unwrap();
    resp["status"]["token"].as_str().unwrap().to_string()
}

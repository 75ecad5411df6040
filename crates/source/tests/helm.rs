//! Charts from a real Helm repository: `helm package` + `helm repo index`,
//! served by a small http server with basic auth started by the test.

use base64::Engine;
use ferry_source::{RepoCredentials, SourceCache, SourceError};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const USER: &str = "charts";
const PASSWORD: &str = "chart-repo-password-5f1e";

fn helm() -> PathBuf {
    ferry_testenv::SearchPath::from_env().tools_bin.join("helm")
}

/// Serves `dir` on 127.0.0.1, asking for basic auth when `auth` is set.
/// Returns the base URL and a counter of requests served.
async fn serve(
    dir: PathBuf,
    auth: Option<(&str, &str)>,
) -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let want = auth.map(|(u, p)| {
        format!(
            "basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    });
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (dir, want, counter) = (dir.clone(), want.clone(), counter.clone());
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 65536 {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let req = String::from_utf8_lossy(&req).to_string();
                let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
                let authorized = want.as_ref().is_none_or(|w| {
                    req.lines().any(|l| {
                        l.to_lowercase().starts_with("authorization:")
                            && l[14..].trim().eq_ignore_ascii_case(w)
                    })
                });
                let file = dir.join(path.trim_start_matches('/'));
                let (status, body) = if !authorized {
                    (
                        "401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"charts\"",
                        Vec::new(),
                    )
                } else if path.contains("..") {
                    ("400 Bad Request", Vec::new())
                } else {
                    match std::fs::read(&file) {
                        Ok(b) => ("200 OK", b),
                        Err(_) => ("404 Not Found", Vec::new()),
                    }
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&body).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (base, hits, task)
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Packages `demo` at each version into `repo_dir` and indexes it for `base`.
fn build_repo(repo_dir: &Path, base: &str, versions: &[&str]) {
    let src = tempfile::tempdir().unwrap();
    let chart = src.path().join("demo");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    for v in versions {
        std::fs::write(
            chart.join("Chart.yaml"),
            format!("apiVersion: v2\nname: demo\nversion: {v}\nappVersion: \"{v}\"\n"),
        )
        .unwrap();
        std::fs::write(
            chart.join("templates/cm.yaml"),
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: demo\ndata:\n  version: \"{v}\"\n"),
        )
        .unwrap();
        run(Command::new(helm())
            .arg("package")
            .arg(&chart)
            .arg("--destination")
            .arg(repo_dir));
    }
    run(Command::new(helm())
        .args(["repo", "index"])
        .arg(repo_dir)
        .args(["--url", base]));
}

fn creds(password: &str) -> RepoCredentials {
    RepoCredentials {
        username: Some(USER.into()),
        password: Some(password.into()),
        ..Default::default()
    }
}

fn chart_version(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("Chart.yaml")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("version: "))
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_exact_range_and_latest_versions_with_credentials() {
    let served = tempfile::tempdir().unwrap();
    let (base, hits, server) = serve(served.path().to_path_buf(), Some((USER, PASSWORD))).await;
    build_repo(served.path(), &base, &["0.1.0", "0.1.5", "0.2.0"]);
    let root = tempfile::tempdir().unwrap();
    let cache = SourceCache::new(root.path().to_path_buf()).unwrap();
    let c = creds(PASSWORD);

    let (dir, v) = cache
        .helm_chart(&helm(), &base, "demo", "0.1.0", Some(&c))
        .await
        .unwrap();
    assert_eq!(v, "0.1.0");
    assert_eq!(chart_version(&dir), "0.1.0");
    assert!(
        std::fs::read_to_string(dir.join("templates/cm.yaml"))
            .unwrap()
            .contains("\"0.1.0\"")
    );

    let (latest, v) = cache
        .helm_chart(&helm(), &base, "demo", "", Some(&c))
        .await
        .unwrap();
    assert_eq!(v, "0.2.0");
    assert_eq!(chart_version(&latest), "0.2.0");

    let (ranged, v) = cache
        .helm_chart(&helm(), &base, "demo", "^0.1.0", Some(&c))
        .await
        .unwrap();
    assert_eq!(v, "0.1.5");
    assert_eq!(chart_version(&ranged), "0.1.5");
    let (_, v) = cache
        .helm_chart(&helm(), &base, "demo", ">=0.1.0 <0.1.5", Some(&c))
        .await
        .unwrap();
    assert_eq!(v, "0.1.0");

    // Cached: an exact version and a recently resolved range need no server.
    let before = hits.load(Ordering::SeqCst);
    let (again, v) = cache
        .helm_chart(&helm(), &base, "demo", "0.1.0", Some(&c))
        .await
        .unwrap();
    assert_eq!((again, v.as_str()), (dir.clone(), "0.1.0"));
    let (again, _) = cache
        .helm_chart(&helm(), &base, "demo", "^0.1.0", Some(&c))
        .await
        .unwrap();
    assert_eq!(again, ranged);
    assert_eq!(hits.load(Ordering::SeqCst), before);
    // Nothing of helm's temporary configuration (which held the password) is left.
    assert_eq!(
        files_containing(root.path(), PASSWORD),
        Vec::<PathBuf>::new()
    );

    let err = cache
        .helm_chart(&helm(), &base, "demo", "9.9.9", Some(&c))
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::Command { .. }), "{err:?}");
    assert!(err.to_string().contains("9.9.9"), "{err}");
    let err = cache
        .helm_chart(&helm(), &base, "nope", "", Some(&c))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_credentials_fail_without_showing_the_password() {
    let served = tempfile::tempdir().unwrap();
    let (base, _hits, server) = serve(served.path().to_path_buf(), Some((USER, PASSWORD))).await;
    build_repo(served.path(), &base, &["1.0.0"]);
    let root = tempfile::tempdir().unwrap();
    let cache = SourceCache::new(root.path().to_path_buf()).unwrap();

    let wrong_password = format!("{PASSWORD}-wrong");
    let errors = [
        cache
            .helm_chart(
                &helm(),
                &base,
                "demo",
                "1.0.0",
                Some(&creds(&wrong_password)),
            )
            .await
            .unwrap_err(),
        cache
            .helm_chart(&helm(), &base, "demo", "1.0.0", None)
            .await
            .unwrap_err(),
        cache
            .helm_chart(
                &helm(),
                &base.replace("http://", &format!("http://{USER}:{wrong_password}@")),
                "demo",
                "1.0.0",
                None,
            )
            .await
            .unwrap_err(),
    ];
    for e in &errors {
        for shown in [e.to_string(), format!("{e:?}")] {
            assert!(shown.contains("401"), "{shown}");
            assert!(!shown.contains(PASSWORD), "{shown}");
        }
    }
    let (_, v) = cache
        .helm_chart(&helm(), &base, "demo", "1.0.0", Some(&creds(PASSWORD)))
        .await
        .unwrap();
    assert_eq!(v, "1.0.0");
    assert!(
        cache
            .helm_chart(&helm(), &base, "../demo", "", None)
            .await
            .is_err()
    );
    assert!(
        cache
            .helm_chart(&helm(), "oci://registry/charts", "demo", "", None)
            .await
            .is_err()
    );
    server.abort();
}

#[tokio::test]
async fn unreachable_helm_repository_fails() {
    let root = tempfile::tempdir().unwrap();
    let cache = SourceCache::new(root.path().to_path_buf()).unwrap();
    let err = cache
        .helm_chart(&helm(), "http://127.0.0.1:1/charts", "demo", "1.0.0", None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
}

fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            out.extend(files_containing(&p, needle));
        } else if ft.is_file()
            && let Ok(bytes) = std::fs::read(&p)
            && String::from_utf8_lossy(&bytes).contains(needle)
        {
            out.push(p);
        }
    }
    out
}

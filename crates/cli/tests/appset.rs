//! `ferry appset`: generate offline from a file, and create, list, get and delete through
//! `ferry server` with a controller generating the Applications.

mod common;

use common::{cli, start_controller, start_server, text};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn set_yaml(name: &str, url: &str) -> String {
    format!(
        "apiVersion: argoproj.io/v1alpha1\nkind: ApplicationSet\nmetadata:\n  name: {name}\nspec:\n  generators:\n  - matrix:\n      generators:\n      - git:\n          repoURL: {url}\n          revision: HEAD\n          directories:\n          - path: apps/*\n      - list:\n          elements:\n          - env: staging\n  template:\n    metadata:\n      name: '{{{{path.basename}}}}-{{{{env}}}}'\n    spec:\n      project: default\n      source:\n        repoURL: {url}\n        path: '{{{{path}}}}'\n        targetRevision: HEAD\n      destination:\n        server: https://kubernetes.default.svc\n        namespace: '{{{{env}}}}'\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appset_generate_offline_and_manage_through_the_server() {
    let env = ferry_testenv::shared();
    let client = env.cluster.client().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let repo = "appset-cli";
    env.git.create_repo(repo).unwrap();
    let src = work.path().join("src");
    for d in ["apps/web", "apps/api"] {
        std::fs::create_dir_all(src.join(d)).unwrap();
        std::fs::write(
            src.join(d).join("cm.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
        )
        .unwrap();
    }
    env.git.commit_dir(repo, &src, "two apps").unwrap();
    let url = env.git.file_url(repo);
    let file = work.path().join("set.yaml");
    std::fs::write(&file, set_yaml("envs", &url)).unwrap();

    // Offline: no server, no cluster.
    let o = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["appset", "generate"])
        .arg(&file)
        .args(["-o", "json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let apps: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = apps
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api-staging", "web-staging"]);
    assert_eq!(apps[0]["spec"]["source"]["path"], "apps/api");
    assert!(apps[0]["metadata"].get("namespace").is_none());

    // Through the server.
    let ns = env
        .cluster
        .create_namespace(&client, "appset-cli")
        .await
        .unwrap();
    let kubeconfig = env.cluster.kubeconfig.clone();
    let _controller = start_controller(
        &kubeconfig,
        &ns,
        work.path(),
        &work.path().join("controller.log"),
    );
    let (_server, password, addr) = start_server(
        &kubeconfig,
        &ns,
        work.path(),
        &work.path().join("server.log"),
    );
    let password = password.unwrap();
    let config = work.path().join("config");
    let ferry = |args: &[&str]| cli(&config, &password, args);
    let o = ferry(&["login", &addr, "--plaintext", "--username", "admin"]);
    assert!(o.status.success(), "{}", text(&o));
    let f = file.to_string_lossy().to_string();
    let o = ferry(&["appset", "create", &f]);
    assert!(o.status.success(), "{}", text(&o));
    let o = ferry(&["appset", "list", "-o", "name"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "envs",
        "{}",
        text(&o)
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let o = ferry(&["app", "list", "-o", "name"]);
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        if out.contains("api-staging") && out.contains("web-staging") {
            break;
        }
        assert!(Instant::now() < deadline, "no generated apps: {}", text(&o));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let o = ferry(&["appset", "get", "envs"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("ParametersGenerated"),
        "{}",
        text(&o)
    );
    // An unchanged create is fine; a different one needs --upsert.
    std::fs::write(
        &file,
        set_yaml("envs", &url).replace("env: staging", "env: prod"),
    )
    .unwrap();
    let o = ferry(&["appset", "create", &f]);
    assert!(
        !o.status.success() && text(&o).contains("upsert"),
        "{}",
        text(&o)
    );
    let o = ferry(&["appset", "create", &f, "--upsert"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = ferry(&["appset", "delete", "envs"]);
    assert!(o.status.success(), "{}", text(&o));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let o = ferry(&["app", "list", "-o", "name"]);
        if String::from_utf8_lossy(&o.stdout).trim().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "apps left after deleting their set: {}",
            text(&o)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

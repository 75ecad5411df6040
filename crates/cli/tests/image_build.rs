//! Ferry's container image, built as `make image` builds it — offline from the Debian mirror
//! (mmdebstrap, umoci), no container runtime — pushed to the test environment's registry, and
//! its root filesystem run with chroot: `ferry version`, git, helm, kubectl, sops and ssh work
//! inside it as the image's user; then the controller runs inside it under the install
//! manifest's ServiceAccount with in-cluster configuration — the token, CA and namespace where a
//! kubelet mounts them, `KUBERNETES_SERVICE_HOST/PORT` — and delivers an Application. Needs
//! root, as `make setup` does.

mod common;

use common::{KillOnDrop, run, text};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Command, Stdio};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_builds_offline_pushes_and_its_root_filesystem_runs_the_tools() {
    let env = ferry_testenv::shared();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = tempfile::tempdir().unwrap();
    let tag = format!("test-{}", std::process::id());
    let mut build = Command::new("bash");
    build
        .arg(root.join("deploy/image/build.sh"))
        .env("FERRY_BIN", env!("CARGO_BIN_EXE_ferry"))
        .env("OUT", out.path())
        .env("TAG", &tag)
        .env("REGISTRY", &env.registry.host)
        .env("REGISTRY_USER", env.registry.user())
        .env("REGISTRY_PASSWORD", env.registry.password().expose())
        .env("INSECURE", "1");
    let o = tokio::task::block_in_place(|| run(build, None));
    assert!(o.status.success(), "build.sh: {}", text(&o));
    assert!(
        !text(&o).contains(env.registry.password().expose()),
        "the registry password never shows"
    );
    let tags = env.registry.list_tags("ferry").unwrap();
    assert!(tags.contains(&tag), "pushed: {tags:?}");

    let mut smoke = Command::new("bash");
    smoke
        .arg(root.join("deploy/image/smoke.sh"))
        .arg(out.path().join("rootfs"));
    let o = tokio::task::block_in_place(|| run(smoke, None));
    let shown = text(&o);
    assert!(o.status.success(), "smoke.sh: {shown}");
    for tool in [
        "ferry: v",
        "git version",
        "v4.",
        "Client Version",
        "sops",
        "OpenSSH",
    ] {
        assert!(shown.contains(tool), "{tool} missing: {shown}");
    }

    components_in_the_image(&out.path().join("rootfs"), &root).await;
}

/// A ServiceAccount's token, CA and namespace in a directory, as a kubelet mounts them.
async fn service_account_dir(
    client: &kube::Client,
    ns: &str,
    sa: &str,
    ca: &[u8],
    dir: &std::path::Path,
) -> PathBuf {
    let token = common::service_account_token(client, ns, sa).await;
    let out = dir.join(format!("sa-{sa}"));
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("token"), token).unwrap();
    std::fs::write(out.join("ca.crt"), ca).unwrap();
    std::fs::write(out.join("namespace"), ns).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in ["token", "ca.crt", "namespace"] {
        std::fs::set_permissions(out.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    out
}

/// A container's args from the manifest, for a process on this machine: its pod name, free
/// loopback ports instead of the pod's, and a private cache directory.
fn container_args(objs: &serde_json::Map<String, Value>, deployment: &str) -> Vec<String> {
    objs[deployment]["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let a = a.as_str().unwrap();
            match a {
                "$(POD_NAME)" => format!(
                    "{}-0",
                    objs[deployment]["metadata"]["name"].as_str().unwrap()
                ),
                a if a.starts_with("0.0.0.0:") => "127.0.0.1:0".to_string(),
                "/home/ferry/.cache/ferry" => "/tmp/cache".to_string(),
                a => a.to_string(),
            }
        })
        .collect()
}

/// Ferry's two Deployments, as pods of the install manifest would run them: the image's root
/// filesystem, its user, the manifest's arguments, each ServiceAccount's token where a kubelet
/// mounts it and in-cluster configuration. Then the README's commands against them.
async fn components_in_the_image(rootfs: &std::path::Path, root: &std::path::Path) {
    let env = ferry_testenv::shared();
    let client = env.cluster.client().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let ns = "ferry-image";
    let manifest = String::from_utf8(
        run(
            {
                let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
                c.args(["install", "--namespace", ns])
                    .args(["--kube-version", ferry_testenv::KUBERNETES_VERSION]);
                c
            },
            None,
        )
        .stdout,
    )
    .unwrap();
    let mut apply = Command::new(&env.tools.kubectl);
    apply
        .args(["apply", "-f", "-", "--kubeconfig"])
        .arg(&env.cluster.kubeconfig);
    let o = run(apply, Some(&manifest));
    assert!(o.status.success(), "kubectl apply: {}", text(&o));
    let objs: serde_json::Map<String, Value> = serde_saphyr::from_multiple::<Value>(&manifest)
        .unwrap()
        .into_iter()
        .filter(|d| d.is_object())
        .map(|d| {
            (
                format!(
                    "{}/{}",
                    d["kind"].as_str().unwrap(),
                    d["metadata"]["name"].as_str().unwrap()
                ),
                d,
            )
        })
        .collect();

    let kc: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(&env.cluster.kubeconfig).unwrap()).unwrap();
    let cluster = &kc["clusters"][0]["cluster"];
    let ca = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        cluster["certificate-authority-data"].as_str().unwrap(),
    )
    .unwrap();
    let server = cluster["server"].as_str().unwrap();
    let (host, port) = server
        .trim_start_matches("https://")
        .rsplit_once(':')
        .unwrap();
    let in_image =
        |sa_dir: &std::path::Path, args: Vec<String>, log: &std::path::Path, stdout: Stdio| {
            KillOnDrop(
                Command::new("bash")
                    .arg(root.join("deploy/image/run.sh"))
                    .arg(rootfs)
                    .arg(format!("KUBERNETES_SERVICE_HOST={host}"))
                    .arg(format!("KUBERNETES_SERVICE_PORT={port}"))
                    .args(["--", "ferry"])
                    .args(&args)
                    .args(["--log", "info"])
                    .env("SERVICEACCOUNT_DIR", sa_dir)
                    .stdout(stdout)
                    .stderr(std::fs::File::create(log).unwrap())
                    .spawn()
                    .unwrap(),
            )
        };
    let ctl_sa = service_account_dir(&client, ns, "ferry-controller", &ca, work.path()).await;
    let srv_sa = service_account_dir(&client, ns, "ferry-server", &ca, work.path()).await;
    let ctl_log = work.path().join("controller.log");
    let srv_log = work.path().join("server.log");
    let mut ctl_args = container_args(&objs, "Deployment/ferry-controller");
    ctl_args.extend(["--poll-seconds".to_string(), "5".to_string()]);
    let _controller = in_image(&ctl_sa, ctl_args, &ctl_log, Stdio::null());
    let mut server = in_image(
        &srv_sa,
        container_args(&objs, "Deployment/ferry-server"),
        &srv_log,
        Stdio::piped(),
    );
    let stdout = server.0.stdout.take().unwrap();
    let (password, addr) = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut password = None;
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(p) = line.split("argocd-initial-admin-secret): ").nth(1) {
                password = Some(p.trim().to_string());
            }
            if let Some(a) = line.strip_prefix("Serving the API on https://") {
                return (password, a.trim().to_string());
            }
        }
        (None, String::new())
    })
    .await
    .unwrap();
    assert!(
        !addr.is_empty(),
        "the server in the image did not start:\n{}",
        std::fs::read_to_string(&srv_log).unwrap_or_default()
    );
    let password = password.expect("the server made the admin password");

    // A repository, and the README's commands.
    let repo = "image-app";
    env.git.create_repo(repo).unwrap();
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("app")).unwrap();
    std::fs::write(
        src.path().join("app/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-the-image\ndata:\n  by: ferry\n",
    )
    .unwrap();
    env.git.commit_dir(repo, src.path(), "app").unwrap();
    let url = env.git.http_url(repo);
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": { "name": "repo", "labels": { "argocd.argoproj.io/secret-type": "repository" } },
                "stringData": { "type": "git", "url": url, "username": env.git.user(), "password": env.git.password().expose() },
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let config = work.path().join("ferry-config");
    let cli = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(args)
            .env("FERRY_CONFIG", &config)
            .env("FERRY_PASSWORD", &password)
            .env_remove("FERRY_SERVER")
            .env_remove("FERRY_AUTH_TOKEN")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "ferry {args:?}: {}\ncontroller:\n{}\nserver:\n{}",
            text(&o),
            std::fs::read_to_string(&ctl_log).unwrap_or_default(),
            std::fs::read_to_string(&srv_log).unwrap_or_default()
        );
        o
    };
    cli(&["login", &addr, "--insecure", "--username", "admin"]);
    cli(&[
        "app",
        "create",
        "myapp",
        "--repo",
        &url,
        "--path",
        "app",
        "--dest-name",
        "in-cluster",
        "--dest-namespace",
        ns,
        "--sync-policy",
        "automated",
        "--upsert",
    ]);
    cli(&[
        "app",
        "wait",
        "myapp",
        "--health",
        "--sync",
        "--timeout",
        "120",
    ]);
    cli(&["app", "diff", "myapp"]);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    assert!(cms.get_opt("from-the-image").await.unwrap().is_some());
    for log in [&ctl_log, &srv_log] {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        assert!(!text.contains("orbidden"), "{}: {text}", log.display());
    }
}

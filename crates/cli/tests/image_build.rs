//! Ferry's container image, built as `make image` builds it — offline from the Debian mirror
//! (mmdebstrap, umoci), no container runtime — pushed to the test environment's registry, and
//! its root filesystem run with chroot: `ferry version`, git, helm, kubectl, sops and ssh work
//! inside it as the image's user; then the controller runs inside it under the install
//! manifest's ServiceAccount with in-cluster configuration — the token, CA and namespace where a
//! kubelet mounts them, `KUBERNETES_SERVICE_HOST/PORT` — and delivers an Application. Needs
//! root, as `make setup` does.

mod common;

use common::{KillOnDrop, run, text};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

    controller_in_the_image(&out.path().join("rootfs"), &root).await;
}

/// The controller inside the image, as a pod of the install's Deployment would run it.
async fn controller_in_the_image(rootfs: &std::path::Path, root: &std::path::Path) {
    let env = ferry_testenv::shared();
    let client = env.cluster.client().await.unwrap();
    let ns = "ferry-image";
    let manifest = String::from_utf8(
        run(
            {
                let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
                c.args(["install", "--namespace", ns, "--no-server"])
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

    // What a kubelet mounts for the pod's ServiceAccount. (/var/run is a link to /run inside
    // the image; from outside, write through /run of the root filesystem.)
    let token: Value = Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_subresource(
            "token",
            "ferry-controller",
            &PostParams::default(),
            &json!({ "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": { "audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3600 } }),
        )
        .await
        .unwrap();
    let kc: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(&env.cluster.kubeconfig).unwrap()).unwrap();
    let cluster = &kc["clusters"][0]["cluster"];
    let ca = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        cluster["certificate-authority-data"].as_str().unwrap(),
    )
    .unwrap();
    let sa_dir = rootfs.join("run/secrets/kubernetes.io/serviceaccount");
    std::fs::create_dir_all(&sa_dir).unwrap();
    std::fs::write(
        sa_dir.join("token"),
        token["status"]["token"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::write(sa_dir.join("ca.crt"), ca).unwrap();
    std::fs::write(sa_dir.join("namespace"), ns).unwrap();
    let server = cluster["server"].as_str().unwrap();
    let hostport = server.trim_start_matches("https://");
    let (host, port) = hostport.rsplit_once(':').unwrap();

    // An app for it to deliver, from the test Git server over http.
    let repo = "image-app";
    env.git.create_repo(repo).unwrap();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(
        src.path().join("cm.yaml"),
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

    let log = rootfs.parent().unwrap().join("controller.log");
    let _controller = KillOnDrop(
        Command::new("bash")
            .arg(root.join("deploy/image/run.sh"))
            .arg(rootfs)
            .arg(format!("KUBERNETES_SERVICE_HOST={host}"))
            .arg(format!("KUBERNETES_SERVICE_PORT={port}"))
            .args([
                "--",
                "ferry",
                "controller",
                "--namespace",
                ns,
                "--no-leader-election",
            ])
            .args(["--poll-seconds", "5", "--log", "info"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let ar = kube::api::ApiResource::erase::<ferry_model::Application>(&());
    let apps: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let app = json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": { "name": "from-the-image", "namespace": ns },
        "spec": {
            "project": "default",
            "source": { "repoURL": url, "path": ".", "targetRevision": "main" },
            "destination": { "server": "https://kubernetes.default.svc", "namespace": ns },
            "syncPolicy": { "automated": {} },
        },
    });
    apps.patch(
        "from-the-image",
        &PatchParams::apply("test"),
        &Patch::Apply(&app),
    )
    .await
    .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let start = Instant::now();
    while cms.get_opt("from-the-image").await.unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the controller in the image delivered nothing:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!text.contains("orbidden"), "{text}");
}

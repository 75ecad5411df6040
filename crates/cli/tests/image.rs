//! `ferry image`: the offline policy command, and list / get / reconcile
//! against a real `ferry controller` on the test environment.

mod common;

use common::KillOnDrop;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::json;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn ferry(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.args(args);
    common::run(cmd, stdin)
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn policy_command_answers_offline() {
    // Seed 004's `~> 1.1`, read as Flux reads it (Masterminds: the same as `~1.1`).
    let o = ferry(
        &[
            "image",
            "policy",
            "--semver",
            "~> 1.1",
            "--tags",
            "1.0.0,1.1.2,v1.9.0,2.0.0,1.9.1-rc.1",
        ],
        None,
    );
    assert!(o.status.success(), "{o:?}");
    assert_eq!(out(&o), "1.1.2");

    // Seed 001's filter from stdin; the feature branch and a signature are ignored.
    let tags = "master-abc1234-1700000000\nmaster-abc1234-1700000001\nfeature-x-1800000000\nmaster-abc1234-1700000002.sig\n";
    let o = ferry(
        &[
            "image",
            "policy",
            "--numerical",
            "asc",
            "--pattern",
            "^master-[a-f0-9]+-(?P<ts>[0-9]+)$",
            "--extract",
            "$ts",
        ],
        Some(tags),
    );
    assert!(o.status.success(), "{o:?}");
    assert_eq!(out(&o), "master-abc1234-1700000001");

    // From a file, alphabetical descending picks the first.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tags.txt");
    std::fs::write(&file, "b\n# a comment\na\nc\n").unwrap();
    let o = ferry(
        &[
            "image",
            "policy",
            "--alphabetical",
            "desc",
            "--tags-file",
            file.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out(&o), "a", "{o:?}");

    // Nothing matches: exit 1. A broken pattern: exit 2 naming the field.
    let o = ferry(
        &["image", "policy", "--semver", ">=3", "--tags", "1.0.0"],
        None,
    );
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let o = ferry(
        &[
            "image",
            "policy",
            "--numerical",
            "--pattern",
            "(",
            "--tags",
            "1",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("filterTags.pattern"),
        "{o:?}"
    );
}

#[tokio::test]
async fn list_get_and_reconcile_against_a_running_controller() {
    let env = ferry_testenv::shared();
    let client = env.cluster.client().await.unwrap();
    let ns = env.cluster.create_namespace(&client, "img").await.unwrap();
    let kubeconfig = env.cluster.kubeconfig.to_str().unwrap().to_string();
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("controller.log");
    let _controller = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args([
                "controller",
                "--namespace",
                &ns,
                "--image-namespace",
                &ns,
                "--no-leader-election",
                "--kubeconfig",
                &kubeconfig,
                "--log",
                "debug",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let image_repo = format!("{ns}/app");
    env.registry.push_image(&image_repo, "1.0.0").unwrap();
    env.registry.push_image(&image_repo, "1.2.0").unwrap();

    let apply = |obj: serde_json::Value| {
        let client = client.clone();
        let ns = ns.clone();
        async move {
            let av = obj["apiVersion"].as_str().unwrap().to_string();
            let kind = obj["kind"].as_str().unwrap().to_string();
            let (g, v) = av.rsplit_once('/').unwrap_or(("", &av));
            let gvk = kube::api::GroupVersionKind::gvk(g, v, &kind);
            let deadline = Instant::now() + Duration::from_secs(60);
            // The controller installs the CRDs; wait until they are served.
            let ar = loop {
                match kube::discovery::pinned_kind(&client, &gvk).await {
                    Ok((ar, _)) => break ar,
                    Err(_) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(250)).await
                    }
                    Err(e) => panic!("{kind} not served: {e}"),
                }
            };
            let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &ar);
            let name = obj["metadata"]["name"].as_str().unwrap().to_string();
            api.patch(
                &name,
                &PatchParams::apply("test").force(),
                &Patch::Apply(&obj),
            )
            .await
            .unwrap();
        }
    };
    apply(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "regcred", "namespace": ns },
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": { ".dockerconfigjson": env.registry.docker_config_json().unwrap() },
    }))
    .await;
    apply(json!({
        "apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImageRepository",
        "metadata": { "name": "app", "namespace": ns },
        "spec": { "image": format!("{}/{image_repo}", env.registry.host), "interval": "1h", "insecure": true, "secretRef": { "name": "regcred" } },
    }))
    .await;
    apply(json!({
        "apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImagePolicy",
        "metadata": { "name": "app", "namespace": ns },
        "spec": { "imageRepositoryRef": { "name": "app" }, "policy": { "semver": { "range": "^1" } } },
    }))
    .await;

    let wait_policy = |tag: &'static str| {
        let kubeconfig = kubeconfig.clone();
        let ns = ns.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                let o = ferry(
                    &[
                        "image",
                        "get",
                        "policy",
                        "app",
                        "-n",
                        &ns,
                        "--kubeconfig",
                        &kubeconfig,
                    ],
                    None,
                );
                let v: serde_json::Value =
                    serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
                if v["status"]["latestRef"]["tag"] == tag {
                    return v;
                }
                assert!(
                    Instant::now() < deadline,
                    "policy never reached {tag}: {o:?}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    wait_policy("1.2.0").await;

    // A new tag: with a one-hour interval only an explicit reconcile finds it.
    env.registry.push_image(&image_repo, "1.3.0").unwrap();
    let o = ferry(
        &[
            "image",
            "reconcile",
            "repository",
            "app",
            "-n",
            &ns,
            "--kubeconfig",
            &kubeconfig,
            "--timeout",
            "60",
        ],
        None,
    );
    assert!(o.status.success(), "{o:?}");
    assert!(out(&o).contains("found 3 tags"), "{o:?}");
    wait_policy("1.3.0").await;

    let o = ferry(
        &["image", "list", "-n", &ns, "--kubeconfig", &kubeconfig],
        None,
    );
    assert!(o.status.success(), "{o:?}");
    let table = out(&o);
    let policy_row = table
        .lines()
        .find(|l| l.contains("ImagePolicy"))
        .unwrap_or_default();
    assert!(
        policy_row.contains(":1.3.0") && policy_row.contains("True"),
        "{table}"
    );
    assert!(table.contains("3 tags"), "{table}");

    // Unknown object: a clear error, exit 2.
    let o = ferry(
        &[
            "image",
            "get",
            "update",
            "nope",
            "-n",
            &ns,
            "--kubeconfig",
            &kubeconfig,
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not found"),
        "{o:?}"
    );

    // The registry password appears in no log line.
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("scanned"),
        "the scan is logged at debug level"
    );
    assert!(!logged.contains(env.registry.password().expose()));
}

//! Seed 001 as written: a Git repository with `clusters/{apps,infra}.yaml`, `apps/my-app.yaml`
//! and `infrastructure/mysql.yaml`. The user runs only `kubectl apply -f clusters/infra.yaml`
//! and `kubectl apply -f clusters/apps.yaml`; a real `ferry controller` process pulls both
//! directories, deploys the helm component before the raw one that depends on it, deploys
//! my-app, and `ferry ls` shows the nested table. A later commit changing the ingress port
//! reaches the cluster with nobody touching it.
//!
//! The MySQL operator chart cannot be reached from here: the chart is the project's own
//! `mysql-operator` 0.4.0 (a CRD and a Deployment), served from a local chart repository.

mod common;

use common::{KillOnDrop, text};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn tools() -> PathBuf {
    ferry_testenv::SearchPath::from_env().tools_bin
}

/// A static file server: the local chart repository.
async fn serve(dir: PathBuf) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let dir = dir.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 65536 {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let req = String::from_utf8_lossy(&req).to_string();
                let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
                let file = dir.join(path.trim_start_matches('/'));
                let resp = match std::fs::read(&file) {
                    Ok(body) if !path.contains("..") => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        r.extend(body);
                        r
                    }
                    _ => {
                        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = s.write_all(&resp).await;
            });
        }
    });
    base
}

/// `helm package` + `helm repo index` of the project's own mysql-operator chart.
fn chart_repo(work: &Path, url: &str) -> PathBuf {
    let chart = work.join("chart-src/mysql-operator");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::create_dir_all(chart.join("crds")).unwrap();
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: mysql-operator\nversion: 0.4.0\ndescription: Stand-in for the presslabs MySQL operator\n",
    )
    .unwrap();
    std::fs::write(
        chart.join("crds/mysqlclusters.yaml"),
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: mysqlclusters.mysql.presslabs.org
spec:
  group: mysql.presslabs.org
  scope: Namespaced
  names: {plural: mysqlclusters, singular: mysqlcluster, kind: MysqlCluster, listKind: MysqlClusterList}
  versions:
    - name: v1alpha1
      served: true
      storage: true
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#,
    )
    .unwrap();
    std::fs::write(
        chart.join("templates/deployment.yaml"),
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-mysql-operator
  labels: {app: mysql-operator}
spec:
  replicas: {{ .Values.replicas }}
  selector: {matchLabels: {app: mysql-operator}}
  template:
    metadata: {labels: {app: mysql-operator}}
    spec:
      containers:
        - {name: operator, image: "registry.local/mysql-operator:0.4.0"}
"#,
    )
    .unwrap();
    std::fs::write(chart.join("values.yaml"), "replicas: 1\n").unwrap();
    let repo = work.join("charts");
    std::fs::create_dir_all(&repo).unwrap();
    let helm = tools().join("helm");
    let o = Command::new(&helm)
        .arg("package")
        .arg(&chart)
        .arg("-d")
        .arg(&repo)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = Command::new(&helm)
        .args(["repo", "index"])
        .arg(&repo)
        .args(["--url", url])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    repo
}

fn kubectl(kubeconfig: &str, args: &[&str]) -> Output {
    Command::new(tools().join("kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .unwrap()
}

fn ferry(kubeconfig: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

async fn eventually<T>(what: &str, secs: u64, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn seed_001_gitops_with_kubevela_applications() {
    let env = ferry_testenv::shared();
    let client = env.cluster.client().await.unwrap();
    let kubeconfig = env.cluster.kubeconfig.to_str().unwrap().to_string();
    let work = tempfile::tempdir().unwrap();

    // The chart repository and the configuration repository.
    let listener_dir = work.path().join("charts");
    std::fs::create_dir_all(&listener_dir).unwrap();
    let chart_url = serve(listener_dir.clone()).await;
    chart_repo(work.path(), &chart_url);
    // The application image: the tag my-app.yaml starts with, in the test registry.
    let image_repo = format!("fogdong/test-fog-{}", std::process::id());
    let image = format!("{}/{image_repo}", env.registry.host);
    env.registry
        .push_image(&image_repo, "master-cba5605f-1632714412")
        .unwrap();
    let repo = format!("kubevela-gitops-{}", std::process::id());
    env.git.create_repo(&repo).unwrap();
    let git_url = env.git.http_url(&repo);
    let src = work.path().join("src");
    let seed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/kubevela-gitops");
    let mut files = Vec::new();
    for rel in [
        "clusters/apps.yaml",
        "clusters/infra.yaml",
        "apps/my-app.yaml",
        "infrastructure/mysql.yaml",
    ] {
        let content = std::fs::read_to_string(seed.join(rel))
            .unwrap()
            .replace("<git-repo-url>", &git_url)
            .replace("<chart-repo-url>", &chart_url)
            .replace("<image>", &image);
        files.push((rel, content));
    }
    let write_all = |files: &[(&str, String)]| {
        for (rel, content) in files {
            let p = src.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, content).unwrap();
        }
    };
    write_all(&files);
    env.git.commit_dir(&repo, &src, "kubevela gitops").unwrap();

    // What the seed asks the user to have: the Git credentials and the database password.
    for (name, data) in [
        (
            "git-secret",
            json!({"username": env.git.user(), "password": env.git.password().expose()}),
        ),
        ("mysql-secret", json!({"ROOT_PASSWORD": "seed-001-root-pw"})),
        (
            "imagesecret",
            json!({".dockerconfigjson": env.registry.docker_config_json().unwrap()}),
        ),
    ] {
        let type_ = if name == "imagesecret" {
            "kubernetes.io/dockerconfigjson"
        } else {
            "Opaque"
        };
        let s: Secret = serde_json::from_value(
            json!({"metadata": {"name": name}, "type": type_, "stringData": data}),
        )
        .unwrap();
        Api::<Secret>::namespaced(client.clone(), "default")
            .create(&PostParams::default(), &s)
            .await
            .unwrap();
    }

    let argocd_ns = env
        .cluster
        .create_namespace(&client, "seed001")
        .await
        .unwrap();
    let log = work.path().join("controller.log");
    let _controller = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args([
                "controller",
                "--namespace",
                &argocd_ns,
                "--no-leader-election",
                "--kubeconfig",
                &kubeconfig,
                "--log",
                "info",
            ])
            .arg("--cache-dir")
            .arg(work.path().join("cache"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );

    // The user's only commands. The controller installs the CRD on start.
    for f in ["clusters/infra.yaml", "clusters/apps.yaml"] {
        let path = src.join(f);
        let p = path.to_str().unwrap().to_string();
        eventually(&format!("kubectl apply -f {f}"), 60, async || {
            let o = kubectl(&kubeconfig, &["apply", "-f", &p]);
            o.status.success().then_some(())
        })
        .await;
    }

    let cluster_api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("mysql.presslabs.org", "v1alpha1", "MysqlCluster"),
            "mysqlclusters",
        ),
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(180);
    let ls = loop {
        let o = ferry(&kubeconfig, &["ls"]);
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        let rows: Vec<&str> = out.lines().skip(1).collect();
        if o.status.success()
            && rows.len() == 5
            && rows
                .iter()
                .all(|r| r.contains(" running ") && r.contains(" healthy "))
        {
            break out;
        }
        if Instant::now() > deadline {
            let apps = kubectl(
                &kubeconfig,
                &["get", "applications.core.oam.dev", "-A", "-o", "yaml"],
            );
            let logs = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = logs.lines().rev().take(40).collect();
            panic!(
                "timed out waiting for every app running and healthy in `ferry ls`:\n{}\n{}\ncontroller log tail:\n{}",
                text(&o),
                String::from_utf8_lossy(&apps.stdout),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!("{ls}");
    let lines: Vec<&str> = ls.lines().collect();
    let cols = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(
        cols(lines[0]),
        [
            "APP",
            "COMPONENT",
            "TYPE",
            "TRAITS",
            "PHASE",
            "HEALTHY",
            "STATUS",
            "CREATED-TIME"
        ]
    );
    assert_eq!(cols(lines[1])[..3], ["apps", "apps", "kustomize"], "{ls}");
    assert!(lines[2].starts_with("  my-app "), "{ls}");
    assert_eq!(
        cols(lines[2])[..4],
        ["my-app", "my-server", "webservice", "ingress"]
    );
    assert_eq!(
        cols(lines[3])[..3],
        ["infra", "database-config", "kustomize"],
        "{ls}"
    );
    assert!(lines[4].starts_with("  mysql "), "{ls}");
    assert_eq!(cols(lines[4])[..3], ["mysql", "mysql-controller", "helm"]);
    assert!(lines[5].starts_with("  └─ "), "{ls}");
    assert_eq!(cols(lines[5])[..3], ["└─", "mysql-cluster", "raw"]);

    // The helm component first; the raw one only once the operator was available.
    let op = deployments
        .get("mysql-controller-mysql-operator")
        .await
        .unwrap();
    let available_at = op
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True"))
        .and_then(|c| c.last_transition_time)
        .expect("operator Available")
        .0;
    let mc = cluster_api.get("mysql-cluster").await.unwrap();
    let mc_created = mc.metadata.creation_timestamp.unwrap().0;
    assert!(
        mc_created >= available_at,
        "MysqlCluster created {mc_created} before the operator was available {available_at}"
    );
    assert_eq!(mc.data["spec"]["secretName"], "mysql-secret");

    // my-app: a Deployment on port 8088, env from the Secret, and the ingress.
    let app = deployments.get("my-server").await.unwrap();
    let c = &app.spec.template.spec.unwrap().containers[0];
    assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 8088);
    let pw = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == "DB_PASSWORD")
        .unwrap();
    assert_eq!(
        pw.value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap()
            .key,
        "ROOT_PASSWORD"
    );
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), "default");
    let port_of = |i: &Ingress| {
        i.spec.as_ref().unwrap().rules.as_ref().unwrap()[0]
            .http
            .as_ref()
            .unwrap()
            .paths[0]
            .backend
            .service
            .as_ref()
            .unwrap()
            .port
            .as_ref()
            .unwrap()
            .number
    };
    assert_eq!(
        port_of(&ingresses.get("my-server").await.unwrap()),
        Some(8088)
    );

    // `ferry status` tells the same story.
    let o = ferry(&kubeconfig, &["status", "mysql"]);
    let st = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", text(&o));
    assert!(st.contains("Status:       running"), "{st}");
    assert!(st.contains("Name: mysql-cluster"), "{st}");

    // A commit changing the ingress port reaches the cluster on the pull interval alone.
    let (rel, content) = &files[2];
    assert_eq!(*rel, "apps/my-app.yaml");
    assert!(content.contains("/: 8088"));
    files[2].1 = content.replace("/: 8088", "/: 8089");
    write_all(&files);
    env.git.commit_dir(&repo, &src, "ingress on 8089").unwrap();
    eventually("the ingress on port 8089", 120, async || {
        let i = ingresses.get("my-server").await.ok()?;
        (port_of(&i) == Some(8089)).then_some(())
    })
    .await;

    // Delivery for end developers: CI pushes a new image; the bot commits it to the marker
    // in apps/my-app.yaml, and the next pull rolls my-server out with it.
    let dep_image = async || {
        deployments
            .get("my-server")
            .await
            .ok()?
            .spec
            .template
            .spec?
            .containers[0]
            .image
            .clone()
    };
    assert_eq!(
        dep_image().await.unwrap(),
        format!("{image}:master-cba5605f-1632714412")
    );
    env.registry
        .push_image(&image_repo, "master-abc1234-1700000000")
        .unwrap();
    let want = format!("{image}:master-abc1234-1700000000");
    eventually("my-server on the new image", 120, async || {
        (dep_image().await? == want).then_some(())
    })
    .await;
    let log_out = Command::new("git")
        .arg("--git-dir")
        .arg(env.git.root.join(format!("{repo}.git")))
        .args(["log", "-1", "--format=%an%n%B", "main"])
        .output()
        .unwrap();
    let last = String::from_utf8_lossy(&log_out.stdout).to_string();
    assert!(
        last.starts_with("kubevelabot\nUpdate image automatically.\nImage: "),
        "{last}"
    );
    assert!(last.contains(&want), "{last}");

    // A workflow suspended for approval, resumed from the CLI.
    let gate = src.join("gate.yaml");
    std::fs::write(
        &gate,
        r#"apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: gate
spec:
  components:
    - {name: gated, type: webservice, properties: {image: registry.local/gated:1}}
  workflow:
    steps:
      - {name: approve, type: suspend}
      - {name: deploy, type: deploy}
"#,
    )
    .unwrap();
    let o = kubectl(&kubeconfig, &["apply", "-f", gate.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    eventually("gate suspended", 60, async || {
        let o = ferry(&kubeconfig, &["status", "gate"]);
        String::from_utf8_lossy(&o.stdout)
            .contains("Status:       workflowSuspending")
            .then_some(())
    })
    .await;
    assert!(deployments.get_opt("gated").await.unwrap().is_none());
    let o = ferry(&kubeconfig, &["workflow", "resume", "gate"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Successfully resumed workflow: gate"));
    eventually("gate running", 60, async || {
        let o = ferry(&kubeconfig, &["status", "gate"]);
        String::from_utf8_lossy(&o.stdout)
            .contains("Status:       running")
            .then_some(())
    })
    .await;
    assert!(deployments.get_opt("gated").await.unwrap().is_some());
    let o = ferry(&kubeconfig, &["workflow", "resume", "gate"]);
    assert!(
        !o.status.success(),
        "resuming a running workflow is an error"
    );
    assert!(text(&o).contains("is not suspended"), "{}", text(&o));

    // Nothing printed the database password or the Git password.
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(!logs.contains("seed-001-root-pw"));
    assert!(!logs.contains(env.git.password().expose()));
}

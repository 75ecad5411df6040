//! `ferry install`, `deploy/install.yaml` and the Helm chart in `deploy/chart`: the committed
//! manifest is what the command prints, the chart renders the same objects, and Ferry does its
//! main jobs under the identity the manifest gives it — the ServiceAccounts and RBAC it creates,
//! on a real API server, so a permission the manifest lacks shows as the API server's 403.

mod common;

use common::{cli, run, start_controller, start_server, text};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The CRDs are cluster-wide and both end-to-end tests here apply them.
static CRD_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ferry(args: &[&str]) -> Output {
    let o = run(
        {
            let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
            c.args(args);
            c
        },
        None,
    );
    assert!(o.status.success(), "ferry {args:?}: {}", text(&o));
    o
}

fn helm() -> PathBuf {
    ferry_render::RenderTools::locate().unwrap().helm
}

/// A YAML stream as objects keyed by kind, namespace and name.
fn objects(yaml: &str) -> BTreeMap<String, Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).unwrap();
    docs.into_iter()
        .filter(|d| d.is_object())
        .map(|d| {
            let key = format!(
                "{}/{}/{}",
                d["kind"].as_str().unwrap_or(""),
                d["metadata"]["namespace"].as_str().unwrap_or(""),
                d["metadata"]["name"].as_str().unwrap_or("")
            );
            (key, d)
        })
        .collect()
}

fn helm_template(extra: &[&str]) -> BTreeMap<String, Value> {
    let chart = repo_root().join("deploy/chart");
    let mut cmd = Command::new(helm());
    cmd.args(["template", "ferry"])
        .arg(&chart)
        .args(["--namespace", "argocd"])
        .args(extra);
    let o = run(cmd, None);
    assert!(o.status.success(), "helm template: {}", text(&o));
    objects(&String::from_utf8_lossy(&o.stdout))
}

fn install(extra: &[&str]) -> BTreeMap<String, Value> {
    let mut args = vec!["install"];
    args.extend(extra);
    let mut objs = objects(&String::from_utf8_lossy(&ferry(&args).stdout));
    // Helm makes the release namespace (`--create-namespace`); the chart does not.
    objs.retain(|k, _| !k.starts_with("Namespace/"));
    objs
}

fn assert_same(what: &str, chart: &BTreeMap<String, Value>, ours: &BTreeMap<String, Value>) {
    let a: Vec<_> = chart.keys().collect();
    let b: Vec<_> = ours.keys().collect();
    assert_eq!(
        a, b,
        "{what}: the chart and `ferry install` make different objects"
    );
    for (k, v) in ours {
        assert_eq!(
            &chart[k], v,
            "{what}: {k} differs between the chart and `ferry install`"
        );
    }
}

#[test]
fn the_committed_manifest_and_the_chart_are_what_ferry_install_prints() {
    let printed = String::from_utf8(ferry(&["install"]).stdout).unwrap();
    let committed = std::fs::read_to_string(repo_root().join("deploy/install.yaml")).unwrap();
    assert!(
        printed == committed,
        "deploy/install.yaml is stale: run `make manifests`"
    );
    let crds = String::from_utf8(ferry(&["install", "--crds-only"]).stdout).unwrap();
    let chart_crds =
        std::fs::read_to_string(repo_root().join("deploy/chart/crds/crds.yaml")).unwrap();
    assert!(
        crds == chart_crds,
        "deploy/chart/crds/crds.yaml is stale: run `make manifests`"
    );

    // What the manifest is made of.
    let objs = objects(&printed);
    let kinds = |k: &str| {
        objs.keys()
            .filter(|o| o.starts_with(&format!("{k}/")))
            .count()
    };
    assert_eq!(kinds("Namespace"), 1);
    assert_eq!(kinds("CustomResourceDefinition"), 12, "{:?}", objs.keys());
    assert_eq!(kinds("ClusterRole"), 2);
    assert_eq!(kinds("Deployment"), 2);
    assert_eq!(kinds("PodDisruptionBudget"), 1);
    let ctl = &objs["Deployment/argocd/ferry-controller"];
    assert_eq!(ctl["spec"]["replicas"], 2);
    let pod = &ctl["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert!(c["resources"]["requests"]["cpu"].is_string());
    assert!(
        !c["args"]
            .as_array()
            .unwrap()
            .contains(&json!("--no-leader-election")),
        "two replicas elect a leader"
    );

    // The chart: lint, and the same objects for the same options.
    let chart = repo_root().join("deploy/chart");
    let o = run(
        {
            let mut c = Command::new(helm());
            c.arg("lint").arg(&chart);
            c
        },
        None,
    );
    assert!(o.status.success(), "helm lint: {}", text(&o));
    assert_same(
        "defaults",
        &helm_template(&["--include-crds"]),
        &install(&[]),
    );
    assert_same(
        "namespaced, no server, one replica, another image",
        &helm_template(&[
            "--set",
            "namespaced=true,server.enabled=false,controller.replicas=1,image=registry.example/ferry:dev",
        ]),
        &install(&[
            "--namespaced",
            "--no-server",
            "--controller-replicas",
            "1",
            "--image",
            "registry.example/ferry:dev",
        ]),
    );
    assert_same(
        "front doors off, Kubernetes 1.20",
        &helm_template(&[
            "--include-crds",
            "--kube-version",
            "1.20.2",
            "--set",
            "oam.enabled=false,imageAutomation.enabled=false",
        ]),
        &install(&[
            "--no-oam",
            "--no-image-automation",
            "--kube-version",
            "1.20.2",
        ]),
    );
    assert_same(
        "namespaced with the server",
        &helm_template(&["--set", "namespaced=true"]),
        &install(&["--namespaced"]),
    );
    assert_same(
        "without CRDs (a cluster that has Argo CD's)",
        &helm_template(&[]),
        &install(&["--no-crds"]),
    );
    let namespaced = install(&["--namespaced"]);
    assert!(
        namespaced
            .keys()
            .all(|k| !k.starts_with("ClusterRole") && !k.starts_with("CustomResourceDefinition")),
        "a namespaced install asks for nothing cluster-wide: {:?}",
        namespaced.keys()
    );
}

/// A kubeconfig for `sa` in `ns`, from a token the API server issues (TokenRequest), as a
/// kubelet would mount it: the same identity a pod of the install's Deployments gets.
async fn service_account_kubeconfig(
    client: &kube::Client,
    admin_kubeconfig: &Path,
    ns: &str,
    sa: &str,
    out: &Path,
) -> PathBuf {
    let token = common::service_account_token(client, ns, sa).await;
    let mut kc: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(admin_kubeconfig).unwrap()).unwrap();
    for u in kc["users"].as_array_mut().unwrap() {
        u["user"] = json!({ "token": token });
    }
    let path = out.join(format!("{sa}.kubeconfig"));
    std::fs::write(&path, serde_json::to_string(&kc).unwrap()).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    path
}

async fn eventually<T, F, Fut>(what: &str, timeout: Duration, logs: &[&Path], mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > timeout {
            let logs: Vec<String> = logs
                .iter()
                .map(|p| {
                    format!(
                        "--- {}:\n{}",
                        p.display(),
                        std::fs::read_to_string(p).unwrap_or_default()
                    )
                })
                .collect();
            panic!("timed out waiting for {what}\n{}", logs.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn apply(client: &kube::Client, obj: Value) {
    let gvk = kube::api::GroupVersionKind::try_from(&kube::api::TypeMeta {
        api_version: obj["apiVersion"].as_str().unwrap().into(),
        kind: obj["kind"].as_str().unwrap().into(),
    })
    .unwrap();
    let (ar, _) = kube::discovery::pinned_kind(client, &gvk).await.unwrap();
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        obj["metadata"]["namespace"].as_str().unwrap(),
        &ar,
    );
    api.patch(
        obj["metadata"]["name"].as_str().unwrap(),
        &kube::api::PatchParams::apply("test").force(),
        &kube::api::Patch::Apply(&obj),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferry_delivers_under_the_identity_the_install_manifest_gives_it() {
    let env = ferry_testenv::shared();
    let client = env.cluster.client().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let ns = "ferry-system";

    // The manifest as a user applies it (the local API server is 1.20: PodDisruptionBudget is
    // still policy/v1beta1 there; everything else is deploy/install.yaml's).
    // Held until the controller has upgraded the CRD this test makes stale, so the other test's
    // apply of the same CRDs cannot undo the staleness first.
    let crd_guard = CRD_LOCK.lock().await;
    let manifest = String::from_utf8(
        ferry(&[
            "install",
            "--namespace",
            ns,
            "--kube-version",
            ferry_testenv::KUBERNETES_VERSION,
        ])
        .stdout,
    )
    .unwrap();
    let kubectl = env.tools.kubectl.clone();
    kubectl_apply(&kubectl, &env.cluster.kubeconfig, &manifest).await;

    let ctl_kc = service_account_kubeconfig(
        &client,
        &env.cluster.kubeconfig,
        ns,
        "ferry-controller",
        work.path(),
    )
    .await;
    let srv_kc = service_account_kubeconfig(
        &client,
        &env.cluster.kubeconfig,
        ns,
        "ferry-server",
        work.path(),
    )
    .await;
    // The identities are not the administrator's: the server may not create a ConfigMap
    // outside its namespace.
    let srv_client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&srv_kc).unwrap(),
            &Default::default(),
        )
        .await
        .unwrap(),
    )
    .unwrap();
    let denied = Api::<ConfigMap>::namespaced(srv_client, "default")
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "nope"}})).unwrap(),
        )
        .await;
    assert!(
        matches!(&denied, Err(kube::Error::Api(s)) if s.code == 403),
        "{denied:?}"
    );

    // An older Ferry's CRD (one without printer columns): the controller upgrades its own.
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    let old_crd = "imagepolicies.image.toolkit.fluxcd.io";
    let mut stale = crds.get(old_crd).await.unwrap();
    stale.spec.versions[0].additional_printer_columns = None;
    crds.replace(old_crd, &PostParams::default(), &stale)
        .await
        .unwrap();

    // The two components, as the install's Deployments run them, but for the kubeconfig.
    let ctl_log = work.path().join("controller.log");
    let srv_log = work.path().join("server.log");
    let _controller = start_controller(&ctl_kc, ns, work.path(), &ctl_log);
    eventually(
        "the older CRD upgraded",
        Duration::from_secs(60),
        &[ctl_log.as_path()],
        || {
            let crds = crds.clone();
            async move {
                let c = crds.get(old_crd).await.ok()?;
                c.spec.versions[0]
                    .additional_printer_columns
                    .is_some()
                    .then_some(())
            }
        },
    )
    .await;
    drop(crd_guard);
    let (_server, password, addr) =
        tokio::task::block_in_place(|| start_server(&srv_kc, ns, work.path(), &srv_log));
    let logs = [ctl_log.as_path(), srv_log.as_path()];
    let password = password.expect("the server made the admin password");

    // Sources: a Git repository with an Argo CD app's objects and an image-automated file.
    let repo = "install-identity";
    env.git.create_repo(repo).unwrap();
    let src = work.path().join("src");
    std::fs::create_dir_all(src.join("app")).unwrap();
    std::fs::create_dir_all(src.join("images")).unwrap();
    std::fs::write(
        src.join("app/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: delivered\ndata:\n  by: ferry\n",
    )
    .unwrap();
    std::fs::write(
        src.join("app/deploy.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: nginx:1.25\n",
    )
    .unwrap();
    let image_repo = "install/app";
    let image = format!("{}/{image_repo}", env.registry.host);
    env.registry.push_image(image_repo, "1.0.0").unwrap();
    env.registry.push_image(image_repo, "1.1.0").unwrap();
    std::fs::write(
        src.join("images/pod.yaml"),
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: image\ndata:\n  image: {image}:1.0.0 # {{\"$imagepolicy\": \"{ns}:app\"}}\n"
        ),
    )
    .unwrap();
    env.git.commit_dir(repo, &src, "objects").unwrap();
    let url = env.git.http_url(repo);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    for s in [
        json!({
            "metadata": { "name": "repo", "labels": { "argocd.argoproj.io/secret-type": "repository" } },
            "stringData": { "type": "git", "url": url, "username": env.git.user(), "password": env.git.password().expose() },
        }),
        json!({
            "metadata": { "name": "git-secret" },
            "stringData": { "username": env.git.user(), "password": env.git.password().expose() },
        }),
        json!({
            "metadata": { "name": "regcred" }, "type": "kubernetes.io/dockerconfigjson",
            "stringData": { ".dockerconfigjson": env.registry.docker_config_json().unwrap() },
        }),
    ] {
        secrets
            .create(&PostParams::default(), &serde_json::from_value(s).unwrap())
            .await
            .unwrap();
    }

    // 1. An Argo CD Application.
    apply(
        &client,
        json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": { "name": "guestbook", "namespace": ns },
            "spec": {
                "project": "default",
                "source": { "repoURL": url, "path": "app", "targetRevision": "main" },
                "destination": { "server": "https://kubernetes.default.svc", "namespace": "delivered" },
                "syncPolicy": { "automated": { "prune": true, "selfHeal": true }, "syncOptions": ["CreateNamespace=true"] },
            },
        }),
    )
    .await;
    // 2. A KubeVela Application.
    apply(
        &client,
        json!({
            "apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
            "metadata": { "name": "vela-app", "namespace": ns },
            "spec": { "components": [{
                "name": "settings", "type": "k8s-objects",
                "properties": { "objects": [{ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "from-vela" }, "data": { "by": "kubevela" } }] },
            }]},
        }),
    )
    .await;
    // 3. Image automation: a scan, a policy and a commit back to Git.
    for obj in [
        json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": { "name": "config", "namespace": ns },
            "spec": { "url": url, "interval": "1m", "ref": { "branch": "main" }, "secretRef": { "name": "git-secret" } },
        }),
        json!({
            "apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImageRepository",
            "metadata": { "name": "app", "namespace": ns },
            "spec": { "image": image, "interval": "2s", "insecure": true, "secretRef": { "name": "regcred" } },
        }),
        json!({
            "apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImagePolicy",
            "metadata": { "name": "app", "namespace": ns },
            "spec": { "imageRepositoryRef": { "name": "app" }, "policy": { "semver": { "range": ">=1.0.0" } } },
        }),
        json!({
            "apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImageUpdateAutomation",
            "metadata": { "name": "apps", "namespace": ns },
            "spec": {
                "interval": "2s",
                "sourceRef": { "kind": "GitRepository", "name": "config" },
                "git": {
                    "checkout": { "ref": { "branch": "main" } },
                    "commit": { "author": { "name": "ferry-bot", "email": "bot@ferry.dev" }, "messageTemplate": "images" },
                    "push": { "branch": "main" },
                },
                "update": { "path": "./images", "strategy": "Setters" },
            },
        }),
    ] {
        apply(&client, obj).await;
    }

    let delivered: Api<ConfigMap> = Api::namespaced(client.clone(), "delivered");
    eventually(
        "the Argo CD app's ConfigMap",
        Duration::from_secs(90),
        &logs,
        || {
            let delivered = delivered.clone();
            async move { delivered.get_opt("delivered").await.ok().flatten() }
        },
    )
    .await;
    let vela: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    eventually(
        "the KubeVela app's ConfigMap",
        Duration::from_secs(90),
        &logs,
        || {
            let vela = vela.clone();
            async move { vela.get_opt("from-vela").await.ok().flatten() }
        },
    )
    .await;
    let git_dir = work.path().join("clone");
    eventually(
        "the automation's commit",
        Duration::from_secs(90),
        &logs,
        || {
            let (git_dir, url) = (git_dir.clone(), env.git.file_url(repo));
            async move {
                let _ = std::fs::remove_dir_all(&git_dir);
                let ok = Command::new("git")
                    .args(["clone", "-q", &url])
                    .arg(&git_dir)
                    .status()
                    .ok()?
                    .success();
                let text = std::fs::read_to_string(git_dir.join("images/pod.yaml")).ok()?;
                (ok && text.contains(":1.1.0")).then_some(())
            }
        },
    )
    .await;

    // 4. The API: log in and sync.
    let config = work.path().join("ferry-config");
    let cli = |args: &[&str]| cli(&config, &password, args);
    let o = cli(&["login", &addr, "--plaintext", "--username", "admin"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = cli(&["app", "sync", "guestbook", "--timeout", "60"]);
    assert!(
        o.status.success(),
        "{}\n{}",
        text(&o),
        std::fs::read_to_string(&srv_log).unwrap_or_default()
    );
    let o = cli(&[
        "app",
        "wait",
        "guestbook",
        "--sync",
        "--health",
        "--timeout",
        "60",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    // Events on the Application, with Argo CD's reasons and messages, written under the
    // controller's identity.
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), ns);
    let seen = eventually("the app's events", Duration::from_secs(30), &logs, || {
        let events = events.clone();
        async move {
            let lp = kube::api::ListParams::default().fields("involvedObject.name=guestbook");
            let list: Vec<String> = events
                .list(&lp)
                .await
                .ok()?
                .items
                .into_iter()
                .map(|e| {
                    format!(
                        "{} {}",
                        e.reason.unwrap_or_default(),
                        e.message.unwrap_or_default()
                    )
                })
                .collect();
            let want = [
                "OperationStarted Initiated automated sync to '",
                "OperationCompleted Sync operation to ",
                "ResourceUpdated Updated sync status: ",
                "ResourceUpdated Updated health status: ",
                "ResourceCreated Applied 2 resources: ",
            ];
            want.iter()
                .all(|w| list.iter().any(|e| e.starts_with(w)))
                .then_some(list)
        }
    })
    .await;
    assert!(seen.iter().any(|e| e.contains("succeeded")), "{seen:?}");

    // KubeVela and image automation objects get events for their state changes too.
    let found = |name: &'static str, want: &'static str| {
        let events = events.clone();
        async move {
            let lp =
                kube::api::ListParams::default().fields(&format!("involvedObject.name={name}"));
            let list = events.list(&lp).await.ok()?.items;
            list.iter()
                .any(|e| e.message.as_deref().unwrap_or_default().contains(want))
                .then_some(())
        }
    };
    for (name, want) in [
        ("vela-app", "Deployed successfully"),
        ("app", "resolved to 1.1.0"),
        ("apps", "pushed commit '"),
    ] {
        eventually(
            &format!("an event on {name}: {want}"),
            Duration::from_secs(30),
            &logs,
            || found(name, want),
        )
        .await;
    }

    // The views the server builds from the live cluster: the diff and the resource tree down
    // to the Deployment's ReplicaSet and Pod.
    let o = cli(&["app", "diff", "guestbook"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = cli(&["app", "resources", "guestbook"]);
    assert!(o.status.success(), "{}", text(&o));
    let token = {
        let cfg: Value =
            serde_saphyr::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
        cfg["contexts"][0]["token"].as_str().unwrap().to_string()
    };
    let tree: Value = reqwest::Client::new()
        .get(format!(
            "http://{addr}/api/v1/applications/guestbook/resource-tree"
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kinds: Vec<&str> = tree["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"ReplicaSet"), "{tree}");
    let o = cli(&["version", "-o", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["client"]["GitCommit"], v["server"]["GitCommit"], "{v}");
    assert!(
        v["server"]["Version"].as_str().unwrap().starts_with('v'),
        "{v}"
    );

    let upgraded = crds.get(old_crd).await.unwrap();
    assert!(
        upgraded.spec.versions[0]
            .additional_printer_columns
            .is_some(),
        "the controller upgraded the older CRD"
    );
    let ctl_text = std::fs::read_to_string(&ctl_log).unwrap();
    assert_eq!(
        ctl_text.matches("upgraded CRD").count(),
        1,
        "only the older CRD is upgraded; the manifest's are the controller's own:\n{ctl_text}"
    );
    assert!(ctl_text.contains(&format!("upgraded CRD crd={old_crd}")));

    // Probes: the controller serves them beside its metrics, the server beside its API.
    let ctl_metrics = metrics_addr(&ctl_log).expect("the controller logs its metrics address");
    let http = reqwest::Client::new();
    let status = |url: String| {
        let http = http.clone();
        async move { http.get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(format!("http://{ctl_metrics}/healthz")).await, 200);
    assert_eq!(status(format!("http://{ctl_metrics}/readyz")).await, 200);
    assert_eq!(status(format!("http://{addr}/healthz")).await, 200);
    assert_eq!(status(format!("http://{addr}/readyz")).await, 200);
    // A replica whose caches cannot list (an identity without any permission) is alive but
    // never ready.
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "nobody"}})).unwrap(),
    )
    .await
    .unwrap();
    // It may read its project (the controller checks the default one exists), nothing else.
    let rbac = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: nobody\n  namespace: {ns}\nrules:\n- apiGroups: [argoproj.io]\n  resources: [appprojects]\n  verbs: [get]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: nobody\n  namespace: {ns}\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: nobody\nsubjects:\n- kind: ServiceAccount\n  name: nobody\n  namespace: {ns}\n"
    );
    let mut cmd = Command::new(&kubectl);
    cmd.args(["apply", "-f", "-", "--kubeconfig"])
        .arg(&env.cluster.kubeconfig);
    let o = run(cmd, Some(&rbac));
    assert!(o.status.success(), "{}", text(&o));
    let nobody_kc =
        service_account_kubeconfig(&client, &env.cluster.kubeconfig, ns, "nobody", work.path())
            .await;
    let nobody_log = work.path().join("nobody.log");
    let _nobody = common::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args([
                "controller",
                "--namespace",
                ns,
                "--no-leader-election",
                "--no-install-crds",
            ])
            .args(["--metrics-addr", "127.0.0.1:0", "--log", "info"])
            .arg("--kubeconfig")
            .arg(&nobody_kc)
            .arg("--cache-dir")
            .arg(work.path().join("nobody-cache"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&nobody_log).unwrap())
            .spawn()
            .unwrap(),
    );
    let nobody_addr = eventually(
        "the unready replica's metrics address",
        Duration::from_secs(30),
        &[nobody_log.as_path()],
        || {
            let log = nobody_log.clone();
            async move { metrics_addr(&log) }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(status(format!("http://{nobody_addr}/healthz")).await, 200);
    assert_eq!(status(format!("http://{nobody_addr}/readyz")).await, 503);

    // Nothing was refused on the way: a permission the manifest lacks is a 403 (Forbidden) in a
    // log.
    for log in logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for refused in ["forbidden", "Forbidden"] {
            assert!(
                !text.contains(refused),
                "{} has `{refused}`: the install's RBAC lacks a permission\n{text}",
                log.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespaced_install_delivers_in_its_namespace_and_refuses_others_by_name() {
    let env = ferry_testenv::shared();
    let client = env.cluster.client().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let ns = "ferry-ns";
    let kubectl = env.tools.kubectl.clone();
    let apply = |yaml: &str| {
        let mut cmd = Command::new(&kubectl);
        cmd.args(["apply", "-f", "-", "--kubeconfig"])
            .arg(&env.cluster.kubeconfig);
        let o = run(cmd, Some(yaml));
        assert!(o.status.success(), "kubectl apply: {}", text(&o));
    };
    // The CRDs once, by an administrator (the other test may be applying them at the same
    // moment: a conflict is retried); then the namespaced manifest.
    let crds = String::from_utf8(ferry(&["install", "--crds-only"]).stdout).unwrap();
    {
        let _guard = CRD_LOCK.lock().await;
        kubectl_apply(&kubectl, &env.cluster.kubeconfig, &crds).await;
    }
    let manifest = String::from_utf8(
        ferry(&[
            "install",
            "--namespaced",
            "--no-server",
            "--namespace",
            ns,
            "--kube-version",
            ferry_testenv::KUBERNETES_VERSION,
        ])
        .stdout,
    )
    .unwrap();
    apply(&manifest);
    let kc = service_account_kubeconfig(
        &client,
        &env.cluster.kubeconfig,
        ns,
        "ferry-controller",
        work.path(),
    )
    .await;

    // The controller with the arguments the manifest gives it.
    let objs = objects(&manifest);
    let args: Vec<String> = objs[&format!("Deployment/{ns}/ferry-controller")]["spec"]["template"]
        ["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            a.as_str()
                .unwrap()
                .replace("$(POD_NAME)", "ferry-controller-0")
        })
        .collect();
    assert!(args.contains(&"--namespaced".to_string()), "{args:?}");
    let log = work.path().join("controller.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    let mut args = args.clone();
    let cache = args.iter().position(|a| a == "--cache-dir").unwrap() + 1;
    args[cache] = work.path().join("cache").display().to_string();
    cmd.args(&args)
        .args(["--poll-seconds", "5", "--log", "info", "--kubeconfig"])
        .arg(&kc)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let _controller = common::KillOnDrop(cmd.spawn().unwrap());

    let repo = "namespaced";
    env.git.create_repo(repo).unwrap();
    let src = work.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: in-scope\ndata:\n  by: ferry\n",
    )
    .unwrap();
    env.git.commit_dir(repo, &src, "cm").unwrap();
    let url = env.git.file_url(repo);
    for (name, dest) in [("inside", ns), ("outside", "default")] {
        apply_app(&client, ns, name, &url, dest).await;
    }
    let logs = [log.as_path()];
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    eventually(
        "the in-namespace app's ConfigMap",
        Duration::from_secs(90),
        &logs,
        || {
            let cms = cms.clone();
            async move { cms.get_opt("in-scope").await.ok().flatten() }
        },
    )
    .await;
    let ar = kube::api::ApiResource::erase::<ferry_model::Application>(&());
    let apps: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let condition = eventually(
        "the outside app's condition",
        Duration::from_secs(60),
        &logs,
        || {
            let apps = apps.clone();
            async move {
                let a = apps.get("outside").await.ok()?;
                let text = a.data["status"]["conditions"].to_string();
                text.contains("namespaced install").then_some(text)
            }
        },
    )
    .await;
    assert!(
        condition.contains("a namespaced install manages namespace ferry-ns only"),
        "{condition}"
    );
    assert!(
        Api::<ConfigMap>::namespaced(client.clone(), "default")
            .get_opt("in-scope")
            .await
            .unwrap()
            .is_none(),
        "nothing delivered outside"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("orbidden"),
        "no request beyond the Role:\n{text}"
    );
}

async fn apply_app(client: &kube::Client, ns: &str, name: &str, url: &str, dest: &str) {
    let ar = kube::api::ApiResource::erase::<ferry_model::Application>(&());
    let apps: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let app = json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": { "name": name, "namespace": ns },
        "spec": {
            "project": "default",
            "source": { "repoURL": url, "path": ".", "targetRevision": "main" },
            "destination": { "server": "https://kubernetes.default.svc", "namespace": dest },
            "syncPolicy": { "automated": {} },
        },
    });
    let start = Instant::now();
    // The CRD may still be establishing.
    while apps
        .patch(
            name,
            &kube::api::PatchParams::apply("test"),
            &kube::api::Patch::Apply(&app),
        )
        .await
        .is_err()
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "cannot create {name}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `kubectl apply` of `yaml`; the two tests here apply the same CRDs at the same time, so a
/// conflict is retried.
async fn kubectl_apply(kubectl: &Path, kubeconfig: &Path, yaml: &str) {
    for attempt in 0.. {
        let mut cmd = Command::new(kubectl);
        cmd.args(["apply", "-f", "-", "--kubeconfig"])
            .arg(kubeconfig);
        let o = run(cmd, Some(yaml));
        if o.status.success() {
            return;
        }
        assert!(attempt < 10, "kubectl apply: {}", text(&o));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The metrics (and probe) address a controller logged at start.
fn metrics_addr(log: &Path) -> Option<String> {
    std::fs::read_to_string(log).ok()?.lines().find_map(|l| {
        l.split("serving metrics local=")
            .nth(1)
            .map(|a| a.trim().to_string())
    })
}

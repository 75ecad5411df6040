//! The `ferry` CLI against a real `ferry server` and `ferry controller`:
//! seed 002's `app create` command line, then the everyday app commands.

mod common;

use common::{KillOnDrop, text};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn ferry(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env("FERRY_CONFIG", config)
        .env_remove("FERRY_SERVER")
        .env_remove("FERRY_AUTH_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[tokio::test]
async fn seed_002_command_line_creates_an_app_that_syncs() {
    let env = ferry_testenv::shared();
    let client = env.cluster.client().await.unwrap();
    let ns = env.cluster.create_namespace(&client, "cli").await.unwrap();
    let dest = env
        .cluster
        .create_namespace(&client, "cli-dest")
        .await
        .unwrap();
    let kubeconfig = env.cluster.kubeconfig.to_str().unwrap().to_string();
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("ferry-config");

    // The repository and its credentials, as an Argo CD user declares them.
    let repo = format!("avp-{}", std::process::id());
    env.git.create_repo(&repo).unwrap();
    let src = work.path().join("src");
    std::fs::create_dir_all(src.join("app")).unwrap();
    for f in [
        "kustomization.yaml",
        "deployment.yaml",
        "service.yaml",
        "secret.yaml",
    ] {
        std::fs::copy(examples().join("avp").join(f), src.join("app").join(f)).unwrap();
    }
    env.git.commit_dir(&repo, &src, "avp app").unwrap();
    let url = env.git.http_url(&repo);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "avp-repo", "labels": { "argocd.argoproj.io/secret-type": "repository" } },
        "stringData": { "type": "git", "url": url, "username": env.git.user(), "password": env.git.password().expose() },
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    // Seed 002's store: OpenBao with a KV v2 engine at `kv`, the app's value at
    // kv/<namespace>/<app>, and AppRole credentials for avp in the Secret AVP_SECRET names.
    let bao = ferry_testenv::OpenBao::start(work.path()).await.unwrap();
    bao.mount_kv("kv", 2).await.unwrap();
    let vault_value = format!("pw-{}", ferry_testenv::Secret::random().expose());
    bao.kv_put(
        "kv",
        2,
        "shop/avp-demo",
        json!({"password-vault-key": vault_value}),
    )
    .await
    .unwrap();
    bao.call(
        "PUT",
        "sys/policies/acl/avp",
        Some(json!({"policy": "path \"kv/data/*\" { capabilities = [\"read\"] }"})),
    )
    .await
    .unwrap();
    let (role_id, secret_id) = bao.approle("argocd", &["avp"]).await.unwrap();
    let avp_config: Secret = serde_json::from_value(json!({
        "metadata": { "name": "avp-config" },
        "stringData": { "AVP_TYPE": "vault", "AVP_AUTH_TYPE": "approle", "VAULT_ADDR": bao.addr,
            "AVP_ROLE_ID": role_id, "AVP_SECRET_ID": secret_id },
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &avp_config)
        .await
        .unwrap();
    let avp_secret = format!("AVP_SECRET={ns}:avp-config");

    // The plugin seed 002 names, its commands verbatim.
    let plugin = std::fs::read_to_string(examples().join("plugins/avp-kustomize.yaml")).unwrap();
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": "cmp-avp-kustomize", "labels": { "ferry.dev/cmp-plugin": "true" } },
        "data": { "plugin.yaml": plugin },
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();

    let controller_log = work.path().join("controller.log");
    let _controller = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args([
                "controller",
                "--namespace",
                &ns,
                "--no-leader-election",
                "--no-image-automation",
            ])
            .args([
                "--poll-seconds",
                "5",
                "--kubeconfig",
                &kubeconfig,
                "--log",
                "info",
            ])
            .arg("--cache-dir")
            .arg(work.path().join("controller-cache"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&controller_log).unwrap())
            .spawn()
            .unwrap(),
    );
    let server_log = work.path().join("server.log");
    let mut server = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args([
                "server",
                "--insecure",
                "--namespace",
                &ns,
                "--listen",
                "127.0.0.1:0",
                "--kubeconfig",
                &kubeconfig,
            ])
            .args(["--log", "info"])
            .arg("--cache-dir")
            .arg(work.path().join("server-cache"))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&server_log).unwrap())
            .spawn()
            .unwrap(),
    );
    // The server prints the generated admin password once, then its address.
    let stdout = server.0.stdout.take().unwrap();
    let (password, addr) = tokio::task::spawn_blocking(move || {
        let mut password = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(p) = line.split("argocd-initial-admin-secret): ").nth(1) {
                password = Some(p.trim().to_string());
            }
            if let Some(a) = line.strip_prefix("Serving the API on http://") {
                return (
                    password.expect("password printed before the address"),
                    a.trim().to_string(),
                );
            }
        }
        panic!("the server exited before serving");
    })
    .await
    .unwrap();

    // The password goes in through the environment, never a command line.
    let o = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["login", &addr, "--plaintext", "--username", "admin"])
        .env("FERRY_CONFIG", &config)
        .env("FERRY_PASSWORD", &password)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("logged in successfully"),
        "{}",
        text(&o)
    );

    // Seed 002, with only the program name changed.
    let o = ferry(
        &config,
        &[
            "app",
            "create",
            "myapp",
            "--repo",
            &url,
            "--path",
            "app",
            "--project",
            "default",
            "--dest-name",
            "in-cluster",
            "--dest-namespace",
            &dest,
            "--config-management-plugin=avp-kustomize",
            "--revision",
            "main",
            "--plugin-env",
            &avp_secret,
            "--plugin-env",
            &format!("APP_REPO={url}"),
            "--plugin-env",
            "IMAGE_NAME=registry.local/team/app",
            "--plugin-env",
            "IMAGE_TAG=1.4.2",
            "--sync-policy",
            "automated",
            "--sync-option",
            "ApplyOutOfSyncOnly=true,ServerSideApply=true",
            "--upsert",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));

    let o = ferry(
        &config,
        &[
            "app",
            "wait",
            "myapp",
            "--health",
            "--sync",
            "--timeout",
            "60",
        ],
    );
    if !o.status.success() {
        let app = ferry(&config, &["app", "get", "myapp", "-o", "json"]);
        panic!(
            "{}\napp: {}\ncontroller log: {}",
            text(&o),
            String::from_utf8_lossy(&app.stdout),
            std::fs::read_to_string(&controller_log).unwrap_or_default()
        );
    }
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), &dest);
    let d = serde_json::to_value(deploys.get("avp-demo").await.unwrap()).unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.local/team/app:1.4.2"
    );
    assert_eq!(
        d["metadata"]["annotations"]["github.com/url"],
        url.as_str(),
        "kustomize edit set annotation ran"
    );
    // The Secret holds the value from OpenBao.
    let s = Api::<Secret>::namespaced(client.clone(), &dest)
        .get("avp-demo")
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(s.data.unwrap()["password"].0.clone()).unwrap(),
        vault_value
    );

    // The app as the CLI shows it.
    let o = ferry(&config, &["app", "get", "myapp", "-o", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    let app: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(app["spec"]["source"]["plugin"]["name"], "avp-kustomize");
    assert_eq!(app["status"]["sync"]["status"], "Synced");
    let opts = app["spec"]["syncPolicy"]["syncOptions"].as_array().unwrap();
    assert!(opts.iter().any(|o| o == "ServerSideApply=true"), "{opts:?}");
    let o = ferry(&config, &["app", "list", "-o", "name"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "myapp",
        "{}",
        text(&o)
    );
    let o = ferry(&config, &["app", "list"]);
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        table.contains("NAME") && table.contains("Synced") && table.contains("Healthy"),
        "{table}"
    );
    let o = ferry(&config, &["app", "manifests", "myapp"]);
    let m = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        m.contains("kind: Deployment") && m.contains("registry.local/team/app:1.4.2"),
        "{}",
        text(&o)
    );
    let encoded = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(&vault_value)
    };
    assert!(
        m.contains("kind: Secret") && !m.contains(&vault_value) && !m.contains(&encoded),
        "the store's value never shows: {m}"
    );
    let o = ferry(&config, &["app", "history", "myapp"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).lines().count() >= 2,
        "{}",
        text(&o)
    );
    let o = ferry(&config, &["app", "resources", "myapp"]);
    let r = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        r.contains("Deployment") && r.contains("Service"),
        "{}",
        text(&o)
    );

    // diff: 0 when in sync, 1 after a manual change, 2 on an error.
    let o = ferry(&config, &["app", "diff", "myapp"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    deploys
        .patch(
            "avp-demo",
            &PatchParams::apply("someone").force(),
            &Patch::Apply(json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "avp-demo" }, "spec": { "replicas": 3 } })),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = ferry(&config, &["app", "diff", "myapp"]);
        if o.status.code() == Some(1) {
            let out = String::from_utf8_lossy(&o.stdout).to_string();
            assert!(
                out.contains("replicas") && out.contains("Deployment"),
                "{}",
                text(&o)
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "diff never showed the change: {}",
            text(&o)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let o = ferry(&config, &["app", "diff", "no-such-app"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not found"),
        "{}",
        text(&o)
    );

    // A manual sync puts it back and reports the result.
    let o = ferry(&config, &["app", "sync", "myapp", "--timeout", "120"]);
    assert!(o.status.success(), "{}", text(&o));
    // The server compares against its own watch of the cluster, which may
    // see the sync's writes a moment later.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = ferry(&config, &["app", "diff", "myapp"]);
        if o.status.code() == Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "diff still differs after the sync: {}",
            text(&o)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Seed 002's CI deploy stage: the same line with a new IMAGE_TAG rolls the Deployment,
    // no commit needed.
    let o = ferry(
        &config,
        &[
            "app",
            "create",
            "myapp",
            "--repo",
            &url,
            "--path",
            "app",
            "--project",
            "default",
            "--dest-name",
            "in-cluster",
            "--dest-namespace",
            &dest,
            "--config-management-plugin=avp-kustomize",
            "--revision",
            "main",
            "--plugin-env",
            &avp_secret,
            "--plugin-env",
            &format!("APP_REPO={url}"),
            "--plugin-env",
            "IMAGE_NAME=registry.local/team/app",
            "--plugin-env",
            "IMAGE_TAG=1.4.3",
            "--sync-policy",
            "automated",
            "--sync-option",
            "ApplyOutOfSyncOnly=true,ServerSideApply=true",
            "--upsert",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let d = serde_json::to_value(deploys.get("avp-demo").await.unwrap()).unwrap();
        if d["spec"]["template"]["spec"]["containers"][0]["image"]
            == "registry.local/team/app:1.4.3"
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new tag never rolled out: {d}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let o = ferry(&config, &["app", "diff", "myapp"]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        !out.contains(&vault_value) && !out.contains(&encoded),
        "{out}"
    );

    // The same app served natively: avp's standard `argocd-vault-plugin-kustomize`, which no
    // plugin defines here, so no plugin process runs; Kustomize's own images and
    // commonAnnotations stand in for the seed's `kustomize edit`. Same objects, same value.
    let dest2 = env
        .cluster
        .create_namespace(&client, "cli-native")
        .await
        .unwrap();
    let native: ferry_model::Application = serde_json::from_value(json!({
        "metadata": { "name": "myapp-native", "namespace": ns },
        "spec": {
            "project": "default",
            "source": {
                "repoURL": url, "path": "app", "targetRevision": "main",
                "plugin": { "name": "argocd-vault-plugin-kustomize",
                    "env": [{ "name": "AVP_SECRET", "value": format!("{ns}:avp-config") },
                            { "name": "FERRY_SECRETS_TTL", "value": "2s" }] },
                "kustomize": { "images": ["registry.local/team/app:1.4.3"],
                    "commonAnnotations": { "github.com/url": url } },
            },
            "destination": { "name": "in-cluster", "namespace": dest2 },
            // selfHeal: as in Argo CD, an automated sync does not repeat a sync to the same
            // revision unless told to; a rotated value is such a change.
            "syncPolicy": { "automated": { "selfHeal": true }, "syncOptions": ["ServerSideApply=true"] },
        },
    }))
    .unwrap();
    Api::<ferry_model::Application>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &native)
        .await
        .unwrap();
    let o = ferry(
        &config,
        &[
            "app",
            "wait",
            "myapp-native",
            "--health",
            "--sync",
            "--timeout",
            "120",
        ],
    );
    if !o.status.success() {
        let app = ferry(&config, &["app", "get", "myapp-native", "-o", "json"]);
        panic!(
            "{}\napp: {}",
            text(&o),
            String::from_utf8_lossy(&app.stdout)
        );
    }
    let by_plugin = deploys.get("avp-demo").await.unwrap();
    let natively = Api::<Deployment>::namespaced(client.clone(), &dest2)
        .get("avp-demo")
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(&natively.spec).unwrap(),
        serde_json::to_value(&by_plugin.spec).unwrap()
    );
    assert_eq!(
        natively.metadata.annotations.as_ref().unwrap()["github.com/url"],
        url
    );
    let s = Api::<Secret>::namespaced(client.clone(), &dest2)
        .get("avp-demo")
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(s.data.unwrap()["password"].0.clone()).unwrap(),
        vault_value
    );
    let o = ferry(&config, &["app", "manifests", "myapp-native"]);
    let m = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        m.contains("kind: Secret") && !m.contains(&vault_value) && !m.contains(&encoded),
        "{m}"
    );
    // Rotation: a new value in the store reaches the cluster on a hard refresh, no commit.
    let rotated = format!("pw-{}", ferry_testenv::Secret::random().expose());
    bao.kv_put(
        "kv",
        2,
        "shop/avp-demo",
        json!({"password-vault-key": rotated}),
    )
    .await
    .unwrap();
    let o = ferry(&config, &["app", "get", "myapp-native", "--hard-refresh"]);
    assert!(o.status.success(), "{}", text(&o));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = Api::<Secret>::namespaced(client.clone(), &dest2)
            .get("avp-demo")
            .await
            .unwrap();
        if String::from_utf8(s.data.unwrap()["password"].0.clone()).unwrap() == rotated {
            break;
        }
        assert!(Instant::now() < deadline, "the rotated value never arrived");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // ... and without one, once the re-resolve interval (FERRY_SECRETS_TTL, 2s here) is over.
    let rotated_again = format!("pw-{}", ferry_testenv::Secret::random().expose());
    bao.kv_put(
        "kv",
        2,
        "shop/avp-demo",
        json!({"password-vault-key": rotated_again}),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = Api::<Secret>::namespaced(client.clone(), &dest2)
            .get("avp-demo")
            .await
            .unwrap();
        if String::from_utf8(s.data.unwrap()["password"].0.clone()).unwrap() == rotated_again {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the value rotated in the store never arrived"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The full cycle, watched for the store's values: drift, diff, manifests, the app with
    // its status and history, rollback, events, delete; then every output, both logs and
    // both cache directories are searched for every value the store held (and its base64).
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut keep = |what: &str, o: &Output| {
        seen.push((what.to_string(), text(o)));
    };
    Api::<Deployment>::namespaced(client.clone(), &dest2)
        .patch(
            "avp-demo",
            &PatchParams::apply("someone").force(),
            &Patch::Apply(json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "avp-demo" }, "spec": { "replicas": 2 } })),
        )
        .await
        .unwrap();
    keep("diff", &ferry(&config, &["app", "diff", "myapp-native"]));
    keep(
        "manifests",
        &ferry(&config, &["app", "manifests", "myapp-native"]),
    );
    keep(
        "get",
        &ferry(&config, &["app", "get", "myapp-native", "-o", "json"]),
    );
    keep(
        "get wide",
        &ferry(&config, &["app", "get", "myapp-native", "--show-operation"]),
    );
    keep(
        "history",
        &ferry(&config, &["app", "history", "myapp-native", "-o", "json"]),
    );
    keep(
        "resources",
        &ferry(&config, &["app", "resources", "myapp-native"]),
    );
    keep("list", &ferry(&config, &["app", "list", "-o", "json"]));
    // Rollback needs automation off, as in Argo CD.
    Api::<ferry_model::Application>::namespaced(client.clone(), &ns)
        .patch(
            "myapp-native",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "syncPolicy": null } })),
        )
        .await
        .unwrap();
    let o = ferry(
        &config,
        &["app", "rollback", "myapp-native", "--timeout", "60"],
    );
    assert!(o.status.success(), "{}", text(&o));
    keep("rollback", &o);
    keep(
        "history after rollback",
        &ferry(&config, &["app", "history", "myapp-native"]),
    );
    for namespace in [&ns, &dest2] {
        let events =
            Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), namespace)
                .list(&Default::default())
                .await
                .unwrap();
        seen.push((
            format!("events in {namespace}"),
            serde_json::to_string(&events.items).unwrap(),
        ));
    }
    let o = ferry(
        &config,
        &[
            "app",
            "delete",
            "myapp-native",
            "-y",
            "--wait",
            "--timeout",
            "60",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    seen.push(("delete".into(), text(&o)));
    for dir in ["controller-cache", "server-cache"] {
        let mut stack = vec![work.path().join(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Ok(bytes) = std::fs::read(&p) {
                    seen.push((
                        p.display().to_string(),
                        String::from_utf8_lossy(&bytes).into_owned(),
                    ));
                }
            }
        }
    }
    let secrets_held = [&vault_value, &rotated, &rotated_again];
    for (what, text) in &seen {
        for v in secrets_held {
            let encoded = {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.encode(v)
            };
            assert!(
                !text.contains(v.as_str()) && !text.contains(&encoded),
                "a store value in {what}"
            );
        }
    }
    assert!(seen.len() > 12, "the search covered the outputs and caches");

    // Logged out, the CLI says what to do.
    let o = ferry(&config, &["logout"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = ferry(&config, &["app", "list"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("ferry login"),
        "{}",
        text(&o)
    );

    // No password or token in any log line.
    let token_free = |p: &Path| std::fs::read_to_string(p).unwrap();
    for log in [&controller_log, &server_log] {
        let l = token_free(log);
        assert!(
            !l.contains(&password),
            "admin password in {}",
            log.display()
        );
        assert!(
            !l.contains(env.git.password().expose()),
            "git password in {}",
            log.display()
        );
        assert!(!l.contains("eyJ"), "a JWT in {}", log.display());
        assert!(
            !l.contains(&vault_value)
                && !l.contains(&secret_id)
                && !l.contains(&rotated)
                && !l.contains(&rotated_again),
            "a secret from the store in {}",
            log.display()
        );
    }
}

//! The web UI in a real browser (Debian's chromium through chromedriver) against `ferry
//! server` over HTTPS with its self-signed certificate and `ferry controller` on the test
//! environment: logging in, filtering the list, the resource tree with its Pods, a hand edit
//! seen in the diff, a sync with prune, a rollback from history, resuming a suspended
//! KubeVela workflow, a read-only user, single sign-on against a real OIDC provider (browser
//! and `ferry login --sso`), and the XSS and CSRF cases. Screenshots go to
//! `$CARGO_TARGET_DIR/ui-screenshots` (docs/ui/ with FERRY_UPDATE_SCREENSHOTS=1).

mod common;

use common::webdriver::{Browser, Driver};
use common::{KillOnDrop, cli, start_controller, start_server_with, text};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn screenshots() -> PathBuf {
    if std::env::var_os("FERRY_UPDATE_SCREENSHOTS").is_some() {
        return PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/ui");
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join("ui-screenshots")
}

fn apps_api(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        ns,
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "argoproj.io",
            "v1alpha1",
            "Application",
        )),
    )
}

async fn merge(client: &kube::Client, ns: &str, kind: &str, name: &str, body: Value) {
    let pp = PatchParams::default();
    match kind {
        "ConfigMap" => {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
            if api.get_opt(name).await.unwrap().is_none() {
                let cm: ConfigMap =
                    serde_json::from_value(json!({ "metadata": { "name": name } })).unwrap();
                api.create(&PostParams::default(), &cm).await.unwrap();
            }
            api.patch(name, &pp, &Patch::Merge(&body)).await.unwrap();
        }
        _ => {
            let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), ns);
            api.patch(name, &pp, &Patch::Merge(&body)).await.unwrap();
        }
    }
}

async fn wait_until<F, Fut>(what: &str, secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "{what} within {secs} s");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn log_in(b: &Browser, base: &str, user: &str, password: &str) {
    b.goto(&format!("{base}/applications")).await;
    b.wait("#username", 20).await;
    assert!(
        b.url().await.contains("/login?return="),
        "{}",
        b.url().await
    );
    b.fill("#username", user).await;
    b.fill("#password", password).await;
    b.click("#login").await;
    b.wait_text("#whoami", user, 20).await;
}

/// A POST from the page's own script: status code.
async fn post_from_page(b: &Browser, path: &str, with_csrf: bool) -> i64 {
    let script = format!(
        r#"var done = arguments[arguments.length - 1];
        var h = {{ "content-type": "application/x-www-form-urlencoded" }};
        if ({with_csrf}) {{ h["X-CSRF-Token"] = JSON.parse(document.body.getAttribute("hx-headers"))["X-CSRF-Token"]; }}
        fetch("{path}", {{ method: "POST", headers: h, body: "" }}).then(function (r) {{ done(r.status); }}, function (e) {{ done(String(e)); }});"#
    );
    let v = b.run(&script).await;
    v.as_i64().unwrap_or_else(|| panic!("fetch failed: {v}"))
}

const WEB_DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n      - name: web\n        image: nginx:1.25\n";

fn config_map(name: &str, value: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  value: {value}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_lists_syncs_prunes_rolls_back_and_refuses_what_it_should() {
    let env = ferry_testenv::shared();
    let client = env.cluster.client().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let shots = screenshots();
    let ns = &env.cluster.create_namespace(&client, "ui").await.unwrap();
    let dest = "ui-web";
    let kubeconfig = env.cluster.kubeconfig.clone();
    let _controller = start_controller(
        &kubeconfig,
        ns,
        work.path(),
        &work.path().join("controller.log"),
    );
    let (_server, password, addr) = start_server_with(
        &kubeconfig,
        ns,
        work.path(),
        &work.path().join("server.log"),
        true,
    );
    let password = password.expect("a fresh install prints the admin password");
    let base = format!("https://{addr}");

    // Git: commit 1 has web, cm-a and cm-b; commit 2 drops cm-b.
    let repo = "ui-web";
    env.git.create_repo(repo).unwrap();
    let mut revisions = Vec::new();
    for (i, files) in [
        vec![
            ("web.yaml", WEB_DEPLOYMENT.to_string()),
            ("cm-a.yaml", config_map("cm-a", "one")),
            ("cm-b.yaml", config_map("cm-b", "two")),
        ],
        vec![
            ("web.yaml", WEB_DEPLOYMENT.to_string()),
            ("cm-a.yaml", config_map("cm-a", "one")),
        ],
    ]
    .into_iter()
    .enumerate()
    {
        let dir = work.path().join(format!("src-{i}"));
        std::fs::create_dir_all(dir.join("app")).unwrap();
        for (f, body) in files {
            std::fs::write(dir.join("app").join(f), body).unwrap();
        }
        revisions.push(dir);
    }
    env.git
        .commit_dir(repo, &revisions[0], "three objects")
        .unwrap();
    let url = env.git.file_url(repo);

    // A read-only account and the policy for it.
    merge(
        &client,
        ns,
        "ConfigMap",
        "argocd-cm",
        json!({ "data": { "accounts.reader": "login" } }),
    )
    .await;
    merge(
        &client,
        ns,
        "ConfigMap",
        "argocd-rbac-cm",
        json!({ "data": { "policy.csv": "g, reader, role:readonly\n" } }),
    )
    .await;
    let config = work.path().join("ferry-config");
    let o = cli(
        &config,
        &password,
        &["login", &addr, "--insecure", "--username", "admin"],
    );
    assert!(
        o.status.success(),
        "`ferry login` over HTTPS without --plaintext: {}\nserver log:\n{}",
        text(&o),
        std::fs::read_to_string(work.path().join("server.log")).unwrap_or_default()
    );
    let o = cli(
        &config,
        &password,
        &[
            "account",
            "update-password",
            "--account",
            "reader",
            "--current-password",
            &password,
            "--new-password",
            "reader-pass-1",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));

    // Three apps: the one the test drives, one with a label, and one whose path is markup.
    let apps = apps_api(&client, ns);
    for (name, path, labels) in [
        ("web", "app", json!({})),
        ("other", "app", json!({ "team": "b" })),
        ("xss", "<script>window.xssRan=1</script>", json!({})),
    ] {
        let app = json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": { "name": name, "namespace": ns, "labels": labels },
            "spec": { "project": "default",
                "source": { "repoURL": url, "path": path, "targetRevision": "main" },
                "destination": { "server": "https://kubernetes.default.svc", "namespace": if name == "web" { dest.to_string() } else { format!("{dest}-{name}") } },
                "syncPolicy": { "syncOptions": ["CreateNamespace=true"] } },
        });
        apps.create(
            &PostParams::default(),
            &serde_json::from_value(app).unwrap(),
        )
        .await
        .unwrap();
    }

    let driver = Driver::start(&work.path().join("chromedriver.log")).await;
    let admin = driver.browser().await;

    // Logging in.
    admin.goto(&format!("{base}/applications")).await;
    admin.wait("#username", 20).await;
    admin.screenshot(&shots.join("login.png")).await;
    log_in(&admin, &base, "admin", &password).await;

    // The list, and its filters (on the server: the count says so).
    admin
        .wait_text("#app-list .count", "3 of 3 applications", 20)
        .await;
    admin.screenshot(&shots.join("applications.png")).await;
    admin.fill("#search", "web").await;
    admin
        .wait_text("#app-list .count", "1 of 3 applications", 10)
        .await;
    assert!(
        admin.url().await.contains("search=web"),
        "the filter is in the URL"
    );
    admin
        .goto(&format!("{base}/applications?labels=team%3Db&view=table"))
        .await;
    admin
        .wait_text("#app-list .count", "1 of 3 applications", 10)
        .await;
    assert!(admin.text("table.apps").await.contains("other"));

    // XSS: the path is shown as text and never runs.
    admin.goto(&format!("{base}/applications/{ns}/xss")).await;
    admin.wait("#summary", 20).await;
    let inert = admin
        .run("var done = arguments[arguments.length - 1]; done([window.xssRan === undefined, document.body.innerText.indexOf('<script>window.xssRan=1</script>') >= 0]);")
        .await;
    assert_eq!(
        inert,
        json!([true, true]),
        "markup in an app's fields renders as text"
    );

    // Sync from the app page, then the tree with the Deployment's Pods.
    let app_page = format!("{base}/applications/{ns}/web");
    admin.goto(&app_page).await;
    admin.click("details.dialog summary").await;
    admin
        .click("form[hx-post$='/sync'] button[type=submit]")
        .await;
    admin.wait_text("#toast", "Sync of web started", 10).await;
    admin.wait_text("#summary", "Synced", 90).await;
    admin.wait_text("#summary", "Succeeded", 30).await;
    // The tree is drawn when the page loads: the Deployment's Pods may come a moment after the
    // sync, so the page is loaded again until they are there (as a user would).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        admin.goto(&format!("{app_page}?view=tree")).await;
        admin.wait("#view", 20).await;
        if admin.has("button.node[data-kind=Pod]").await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no Pods in the tree: {}",
            admin.text("#view").await
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    admin.wait("button.node[data-kind=ReplicaSet]", 5).await;
    admin.screenshot(&shots.join("tree.png")).await;
    admin.click("button.node[data-kind=Pod]").await;
    admin.wait_text("#panel", "Live manifest", 10).await;

    // A hand edit of a live object shows in the diff.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), dest);
    cms.patch(
        "cm-a",
        &PatchParams::default(),
        &Patch::Merge(json!({ "data": { "value": "changed-by-hand" } })),
    )
    .await
    .unwrap();
    admin.goto(&format!("{app_page}?view=diff")).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if admin.text("#view").await.contains("changed-by-hand") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the hand edit never showed in the diff: {}",
            admin.text("#view").await
        );
        admin.click("button[hx-post$='/refresh']").await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        admin.goto(&format!("{app_page}?view=diff")).await;
    }
    admin.screenshot(&shots.join("diff.png")).await;

    // Commit 2 drops cm-b: a sync with prune removes it.
    env.git
        .commit_dir(repo, &revisions[1], "drop cm-b")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        admin.click("button[hx-post$='/refresh?hard=true']").await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        admin.goto(&format!("{app_page}?view=diff")).await;
        if admin.text("#view").await.contains("not in Git") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cm-b never showed as to be pruned: {}",
            admin.text("#view").await
        );
    }
    admin.click("details.dialog summary").await;
    admin
        .click("form[hx-post$='/sync'] input[name=prune]")
        .await;
    admin
        .click("form[hx-post$='/sync'] button[type=submit]")
        .await;
    admin.wait_text("#toast", "Sync of web started", 10).await;
    wait_until("cm-b pruned", 90, || async {
        cms.get_opt("cm-b").await.unwrap().is_none()
    })
    .await;

    // History and rollback to the first sync brings cm-b back.
    let app_api = apps_api(&client, ns);
    wait_until("two history entries", 60, || async {
        let a = app_api.get("web").await.unwrap();
        a.data
            .pointer("/status/history")
            .and_then(Value::as_array)
            .map(Vec::len)
            == Some(2)
            && a.data.get("operation").is_none_or(Value::is_null)
    })
    .await;
    admin.goto(&format!("{app_page}?view=history")).await;
    admin
        .wait("table.history tbody tr:last-child button", 20)
        .await;
    admin.screenshot(&shots.join("history.png")).await;
    admin
        .click("table.history tbody tr:last-child button")
        .await;
    admin.accept_dialog().await;
    admin.wait_text("#toast", "Rollback of web", 10).await;
    wait_until("cm-b back after the rollback", 90, || async {
        cms.get_opt("cm-b").await.unwrap().is_some()
    })
    .await;

    // CSRF: a change with the session cookie but without the page's token is refused, by the
    // UI's routes and the API's alike; with the token it goes through.
    admin.goto(&app_page).await;
    admin.wait("#summary", 20).await;
    assert_eq!(
        post_from_page(&admin, &format!("/applications/{ns}/web/refresh"), false).await,
        403
    );
    assert_eq!(
        post_from_page(&admin, "/api/v1/applications/web/sync", false).await,
        403
    );
    assert_eq!(
        post_from_page(&admin, &format!("/applications/{ns}/web/refresh"), true).await,
        200
    );

    // The other screens render.
    for (path, heading, shot) in [
        ("/images", "Image automation", "images.png"),
        ("/settings", "Settings", "settings.png"),
    ] {
        admin.goto(&format!("{base}{path}")).await;
        admin.wait_text("h1", heading, 20).await;
        admin.screenshot(&shots.join(shot)).await;
    }
    // A repository connected from the settings: its password goes in and never comes back.
    admin
        .click("section[aria-labelledby=repos-h] details.dialog summary")
        .await;
    admin
        .fill(
            "form[hx-post='/settings/repositories'] input[name=repo]",
            "https://git.example/team/app.git",
        )
        .await;
    admin
        .fill(
            "form[hx-post='/settings/repositories'] input[name=username]",
            "deploy",
        )
        .await;
    admin
        .fill(
            "form[hx-post='/settings/repositories'] input[name=password]",
            "s3cret-repo-pass",
        )
        .await;
    admin
        .click("form[hx-post='/settings/repositories'] button[type=submit]")
        .await;
    admin.wait_text("#toast", "connected", 10).await;
    admin.goto(&format!("{base}/settings")).await;
    admin
        .wait_text(
            "section[aria-labelledby=repos-h]",
            "https://git.example/team/app.git",
            10,
        )
        .await;
    assert!(
        admin
            .text("section[aria-labelledby=repos-h]")
            .await
            .contains("set (write-only)")
    );
    let source = admin
        .run("arguments[arguments.length - 1](document.documentElement.outerHTML)")
        .await;
    assert!(
        !source.as_str().unwrap().contains("s3cret-repo-pass"),
        "a repository password in the page"
    );

    // A suspended KubeVela workflow, resumed from the UI.
    let vela_ns = env
        .cluster
        .create_namespace(&client, "ui-vela")
        .await
        .unwrap();
    let vela: Api<DynamicObject> =
        ferry_controller::oam::applications(client.clone(), Some(&vela_ns));
    let gate: DynamicObject = serde_saphyr::from_str(
        "apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata:\n  name: gate\nspec:\n  components:\n    - {name: gated, type: webservice, properties: {image: registry.local/gated:1}}\n  workflow:\n    steps:\n      - {name: approve, type: suspend}\n      - {name: deploy, type: deploy}\n",
    )
    .unwrap();
    vela.create(&PostParams::default(), &gate).await.unwrap();
    admin.goto(&format!("{base}/vela")).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !admin.text("#main").await.contains("Workflow suspended") {
        assert!(
            Instant::now() < deadline,
            "the workflow never showed as suspended: {}",
            admin.text("#main").await
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        admin.goto(&format!("{base}/vela")).await;
    }
    admin.screenshot(&shots.join("kubevela.png")).await;
    admin
        .click(&format!(
            "[data-vela='{vela_ns}/gate'] button[hx-post$='/resume']"
        ))
        .await;
    admin.wait_text("#toast", "resumed", 10).await;
    wait_until("the workflow past its suspend step", 60, || async {
        let g = vela.get("gate").await.unwrap();
        g.data
            .pointer("/status/workflow/suspend")
            .and_then(Value::as_bool)
            != Some(true)
            && g.data.pointer("/status/status").and_then(Value::as_str)
                != Some("workflowSuspending")
    })
    .await;

    // The read-only user sees no Sync, and a forged sync with a valid page token is refused.
    let reader = driver.browser().await;
    log_in(&reader, &base, "reader", "reader-pass-1").await;
    reader.goto(&app_page).await;
    reader.wait("#summary", 20).await;
    assert!(
        !reader.has("form[hx-post$='/sync']").await,
        "a read-only user sees no Sync"
    );
    assert!(!reader.has("button[hx-post$='/sync']").await);
    assert!(!reader.has("form[hx-post$='/delete']").await);
    assert_eq!(
        post_from_page(&reader, &format!("/applications/{ns}/web/sync"), true).await,
        403
    );
    reader.screenshot(&shots.join("read-only.png")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_sign_on_in_the_browser_and_the_cli_maps_groups_to_roles() {
    let env = ferry_testenv::shared();
    let client = env.cluster.client().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let ns = env
        .cluster
        .create_namespace(&client, "ui-sso")
        .await
        .unwrap();
    let kubeconfig = env.cluster.kubeconfig.clone();
    // CRDs come from a controller; this test needs none running after that.
    ferry_controller::install_crds(&client).await.unwrap();
    let (_server, password, addr) = start_server_with(
        &kubeconfig,
        &ns,
        work.path(),
        &work.path().join("server.log"),
        true,
    );
    let password = password.unwrap();
    let base = format!("https://{addr}");
    let cli_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let secret = ferry_testenv::Secret::random();
    let provider = ferry_testenv::OidcProvider::start(
        work.path(),
        &[
            ferry_testenv::OidcClient::confidential(
                "ferry",
                &secret,
                &format!("{base}/auth/callback"),
            ),
            ferry_testenv::OidcClient::public(
                "ferry-cli",
                &format!("http://localhost:{cli_port}/auth/callback"),
            ),
        ],
        &[
            ferry_testenv::OidcUser::new("alice", "alice-pass", &["ferry-admins"]),
            ferry_testenv::OidcUser::new("bob", "bob-pass", &["ferry-readers"]),
        ],
    )
    .await
    .unwrap();
    merge(
        &client,
        &ns,
        "Secret",
        "argocd-secret",
        json!({ "stringData": { "oidc.clientSecret": secret.expose() } }),
    )
    .await;
    merge(
        &client,
        &ns,
        "ConfigMap",
        "argocd-rbac-cm",
        json!({ "data": {
        "policy.csv": "g, ferry-admins, role:admin\ng, ferry-readers, role:readonly\n" } }),
    )
    .await;
    merge(&client, &ns, "ConfigMap", "argocd-cm", json!({ "data": { "oidc.config": format!(
        "name: Test IdP\nissuer: {}\nclientID: ferry\nclientSecret: $oidc.clientSecret\ncliClientID: ferry-cli\nrequestedScopes: [openid, profile, email, groups]\n",
        provider.issuer) } })).await;
    let apps = apps_api(&client, &ns);
    apps.create(&PostParams::default(), &serde_json::from_value(json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": { "name": "sso-app", "namespace": ns },
        "spec": { "project": "default", "source": { "repoURL": "https://example.invalid/r.git", "path": "p" },
            "destination": { "server": "https://kubernetes.default.svc", "namespace": "sso" } },
    })).unwrap()).await.unwrap();
    // The server reloads argocd-cm on its own.
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    wait_until("oidc.config served", 30, || async {
        let v: Value = http
            .get(format!("{base}/api/v1/settings"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["oidcConfig"]["issuer"].as_str() == Some(provider.issuer.as_str())
    })
    .await;

    let driver = Driver::start(&work.path().join("chromedriver.log")).await;
    let shots = screenshots();

    // A callback this browser did not start is refused.
    let stranger = driver.browser().await;
    stranger
        .goto(&format!("{base}/auth/callback?code=stolen&state=guess"))
        .await;
    stranger
        .wait_text("#login-error", "no login in progress", 10)
        .await;

    // Alice (group ferry-admins → role:admin) through the provider's login form.
    let alice = driver.browser().await;
    alice.goto(&format!("{base}/applications")).await;
    alice.click("#sso").await;
    alice.wait("#username", 20).await;
    alice.screenshot(&shots.join("sso-provider.png")).await;
    alice.fill("#username", "alice").await;
    alice.fill("#password", "alice-pass").await;
    alice.click(ferry_testenv::oidc::SUBMIT_SELECTOR).await;
    alice.wait_text("#whoami", "alice", 30).await;
    alice.wait_text("#app-list", "sso-app", 20).await;
    assert!(
        alice.has("button[hx-post$='/sync']").await,
        "the admins' group may sync"
    );

    // Bob through `ferry login --sso`: the CLI prints the URL, the browser completes it.
    let config = work.path().join("bob-config");
    let mut login = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args([
                "login",
                &addr,
                "--insecure",
                "--sso",
                "--sso-port",
                &cli_port.to_string(),
            ])
            .env("FERRY_CONFIG", &config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = login.0.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("ferry login --sso printed no URL")
            .unwrap();
        if line.starts_with("http") {
            break line;
        }
    };
    let bob = driver.browser().await;
    bob.goto(&url).await;
    bob.fill("#username", "bob").await;
    bob.fill("#password", "bob-pass").await;
    bob.click(ferry_testenv::oidc::SUBMIT_SELECTOR).await;
    let status = tokio::task::spawn_blocking(move || login.0.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "ferry login --sso failed");
    let o = cli(&config, "", &["app", "list"]);
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("sso-app"),
        "{}",
        text(&o)
    );
    let o = cli(&config, "", &["app", "sync", "sso-app"]);
    assert!(
        !o.status.success() && text(&o).contains("permission denied"),
        "the readers' group may not sync: {}",
        text(&o)
    );
    drop(provider);
    let _ = password;
}

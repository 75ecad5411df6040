//! The API server against the test environment's real API server: anonymous
//! callers, RBAC roles, project-role tokens and their revocation, webhooks,
//! and a scan of every response and log line for credentials.

use hmac::{Hmac, Mac};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Everything the server logs, for the leak scan.
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static LogBuf {
    static LOGS: OnceLock<LogBuf> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = LogBuf::default();
        let w = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "debug,hyper=info,h2=info,tower=info",
            ))
            .with_ansi(false)
            .with_writer(move || w.clone())
            .try_init();
        buf
    })
}

struct Server {
    base: String,
    metrics: String,
    ns: String,
    client: kube::Client,
    http: reqwest::Client,
    admin_password: String,
    /// Every response body seen, for the leak scan.
    seen: Arc<Mutex<String>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self._task.abort();
    }
}

impl Server {
    async fn start(prefix: &str) -> Server {
        Server::start_with(prefix, Vec::new()).await
    }

    async fn start_with(prefix: &str, application_namespaces: Vec<String>) -> Server {
        logs();
        let env = ferry_testenv::shared();
        let client = env.cluster.client().await.unwrap();
        let ns = env.cluster.create_namespace(&client, prefix).await.unwrap();
        ferry_controller::install_crds(&client).await.unwrap();
        // The default project, as the controller would create it.
        let p = ferry_model::AppProject::default_project(&ns);
        Api::<ferry_model::AppProject>::namespaced(client.clone(), &ns)
            .patch("default", &PatchParams::apply("test"), &Patch::Apply(&p))
            .await
            .unwrap();
        let cfg = ferry_server::ServerConfig {
            namespace: ns.clone(),
            listen: "127.0.0.1:0".parse().unwrap(),
            metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
            cache_dir: std::env::temp_dir()
                .join(format!("ferry-server-test-{}", std::process::id())),
            plugin_dirs: vec![],
            application_namespaces,
            plugin_env: Vec::new(),
            namespaced: false,
            tls: ferry_server::tls::TlsMode::Off,
        };
        let (started, serve) = ferry_server::start(client.clone(), cfg).await.unwrap();
        let admin_password = started
            .initial_admin_password
            .clone()
            .expect("first start generates a password");
        // The generated password is also in the initial-admin Secret.
        let initial = Api::<Secret>::namespaced(client.clone(), &ns)
            .get(ferry_server::INITIAL_ADMIN_SECRET)
            .await
            .unwrap();
        assert_eq!(
            initial.data.unwrap()["password"].0,
            admin_password.as_bytes(),
        );
        Server {
            base: format!("http://{}", started.addr),
            metrics: format!("http://{}/metrics", started.metrics_addr.unwrap()),
            ns,
            client,
            http: reqwest::Client::new(),
            admin_password,
            seen: Arc::default(),
            _task: tokio::spawn(serve),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(m, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        self.seen.lock().unwrap().push_str(&text);
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn login(&self, user: &str, password: &str) -> String {
        let (s, v) = self
            .call(
                "POST",
                "/api/v1/session",
                None,
                Some(json!({ "username": user, "password": password })),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["token"].as_str().unwrap().to_string()
    }

    async fn set_cm(&self, name: &str, data: Value) {
        Api::<ConfigMap>::namespaced(self.client.clone(), &self.ns)
            .patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&json!({
                "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": name }, "data": data,
            })))
            .await
            .unwrap();
    }

    async fn app(&self, name: &str, project: &str, repo: &str, revision: &str) {
        let body = json!({
            "metadata": { "name": name },
            "spec": {
                "project": project,
                "source": { "repoURL": repo, "path": ".", "targetRevision": revision },
                "destination": { "server": "https://kubernetes.default.svc", "namespace": "default" },
            },
        });
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &self.ns,
            &kube::api::ApiResource::erase::<ferry_model::Application>(&()),
        );
        let mut b = body.clone();
        b["apiVersion"] = json!("argoproj.io/v1alpha1");
        b["kind"] = json!("Application");
        api.patch(name, &PatchParams::apply("test"), &Patch::Apply(&b))
            .await
            .unwrap();
    }

    /// Waits until the server's caches see `f` hold.
    async fn eventually<F, Fut>(&self, what: &str, f: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !f().await {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn fill(path: &str) -> String {
    path.replace("{name}", "app-x")
        .replace("{namespace}", "default")
        .replace("{project}", "default")
        .replace("{role}", "ci")
        .replace("{iat}", "1")
        .replace("{repo}", "https%3A%2F%2Fexample.com%2Fr.git")
        .replace("{server}", "https%3A%2F%2Fexample.com")
}

#[tokio::test]
async fn anonymous_callers_and_bad_tokens_are_refused_everywhere() {
    let s = Server::start("api-anon").await;
    let ops = ferry_server::openapi::operations();
    assert!(ops.len() >= 25, "{}", ops.len());
    let mut checked = 0;
    for (method, path, public) in ops {
        if public {
            continue;
        }
        let body = (method == "post" || method == "put").then(|| json!({}));
        for token in [
            None,
            Some("not-a-jwt"),
            Some("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2ln"),
        ] {
            let (status, v) = s
                .call(&method.to_uppercase(), &fill(path), token, body.clone())
                .await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {token:?}: {v}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 25);
    // Forged tokens: no algorithm, a wrong key, a wrong issuer, expired. The
    // real key signing a good token works, so the refusals are about what
    // they claim to be.
    let key = Api::<Secret>::namespaced(s.client.clone(), &s.ns)
        .get(ferry_server::ARGOCD_SECRET)
        .await
        .unwrap()
        .data
        .unwrap()["server.secretkey"]
        .0
        .clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let b64 = |v: &Value| {
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            v.to_string(),
        )
    };
    let sign = |header: Value, claims: Value, key: &[u8]| {
        let msg = format!("{}.{}", b64(&header), b64(&claims));
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(msg.as_bytes());
        let sig = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            mac.finalize().into_bytes(),
        );
        format!("{msg}.{sig}")
    };
    let hs = json!({ "alg": "HS256", "typ": "JWT" });
    let good = json!({ "iss": "ferry", "sub": "admin", "iat": now, "exp": now + 600 });
    let forged = [
        (
            "alg none",
            format!("{}.{}.", b64(&json!({ "alg": "none" })), b64(&good)),
        ),
        ("wrong key", sign(hs.clone(), good.clone(), b"not-the-key")),
        (
            "wrong issuer",
            sign(
                hs.clone(),
                json!({ "iss": "argocd", "sub": "admin", "iat": now }),
                &key,
            ),
        ),
        (
            "expired",
            sign(
                hs.clone(),
                json!({ "iss": "ferry", "sub": "admin", "iat": now - 100, "exp": now - 10 }),
                &key,
            ),
        ),
        (
            "unknown account",
            sign(
                hs.clone(),
                json!({ "iss": "ferry", "sub": "ghost", "iat": now }),
                &key,
            ),
        ),
    ];
    for (what, t) in &forged {
        let (status, v) = s.call("GET", "/api/v1/applications", Some(t), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {v}");
    }
    let (status, v) = s
        .call(
            "GET",
            "/api/v1/applications",
            Some(&sign(hs, good, &key)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "a correctly signed token: {v}");

    // The OpenAPI document is public and lists every route.
    let (status, doc) = s.call("GET", "/api/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.0.3");
    assert!(doc["paths"]["/api/v1/applications/{name}/sync"]["post"].is_object());
    // A wrong password is refused without saying which part was wrong.
    let (status, v) = s
        .call(
            "POST",
            "/api/v1/session",
            None,
            Some(json!({ "username": "admin", "password": "wrong" })),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    let (status, _) = s
        .call(
            "POST",
            "/api/v1/session",
            None,
            Some(json!({ "username": "nobody", "password": "wrong" })),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn roles_tokens_revocation_and_no_leaks() {
    let s = Server::start("api-rbac").await;
    let admin = s.login("admin", &s.admin_password).await;
    let (status, me) = s
        .call("GET", "/api/v1/session/userinfo", Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["username"], "admin");

    // A read-only account.
    s.set_cm(
        ferry_server::ARGOCD_CM,
        json!({ "accounts.viewer": "login" }),
    )
    .await;
    s.set_cm(
        ferry_server::RBAC_CM,
        json!({ "policy.default": "role:readonly" }),
    )
    .await;
    let viewer_password = "viewer-pass-123";
    s.eventually("viewer account visible", || async {
        s.call("PUT", "/api/v1/account/password", Some(&admin), Some(json!({
            "name": "viewer", "currentPassword": s.admin_password, "newPassword": viewer_password,
        })))
        .await
        .0 == StatusCode::OK
    })
    .await;
    let mut viewer = String::new();
    s.eventually("viewer can log in", || {
        let s = &s;
        async move {
            s.call(
                "POST",
                "/api/v1/session",
                None,
                Some(json!({ "username": "viewer", "password": viewer_password })),
            )
            .await
            .0 == StatusCode::OK
        }
    })
    .await;
    viewer.push_str(&s.login("viewer", viewer_password).await);

    // A project with a CI role that may sync only its own apps.
    let (status, v) = s
        .call(
            "POST",
            "/api/v1/projects",
            Some(&admin),
            Some(json!({
                "metadata": { "name": "team-a" },
                "spec": {
                    "sourceRepos": ["*"],
                    "destinations": [{ "server": "*", "namespace": "*" }],
                    "roles": [{ "name": "ci", "policies": [
                        "p, proj:team-a:ci, applications, get, team-a/*, allow",
                        "p, proj:team-a:ci, applications, sync, team-a/*, allow",
                        // A role cannot grant itself another project: ignored.
                        "p, proj:team-a:ci, applications, sync, default/*, allow",
                    ]}],
                },
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    s.app(
        "a-app",
        "team-a",
        "https://git.example.com/team-a.git",
        "main",
    )
    .await;
    s.app(
        "d-app",
        "default",
        "https://git.example.com/other.git",
        "main",
    )
    .await;
    s.eventually("apps visible", || async {
        let (_, v) = s
            .call("GET", "/api/v1/applications", Some(&admin), None)
            .await;
        v["items"].as_array().is_some_and(|a| a.len() == 2)
    })
    .await;

    // Read-only: can look, cannot sync (once the server has the RBAC policy).
    s.eventually("the read-only default policy", || async {
        s.call("GET", "/api/v1/applications/d-app", Some(&viewer), None)
            .await
            .0
            == StatusCode::OK
    })
    .await;
    let (status, v) = s
        .call(
            "POST",
            "/api/v1/applications/d-app/sync",
            Some(&viewer),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    let (status, _) = s
        .call("DELETE", "/api/v1/applications/d-app", Some(&viewer), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // KubeVela Applications: readonly may look, only admin may resume, and only a suspended one.
    let oam_api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        s.client.clone(),
        &s.ns,
        &ferry_controller::oam::api_resource("Application"),
    );
    for (name, phase) in [
        ("paused", "workflowSuspending"),
        ("busy", "runningWorkflow"),
    ] {
        let obj: kube::api::DynamicObject = serde_json::from_value(json!({
            "apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
            "metadata": { "name": name },
            "spec": { "components": [{ "name": "c", "type": "webservice", "properties": { "image": "x" } }] },
        }))
        .unwrap();
        oam_api.create(&PostParams::default(), &obj).await.unwrap();
        oam_api
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": { "status": phase, "workflow": { "suspend": phase == "workflowSuspending" } } })),
            )
            .await
            .unwrap();
    }
    let paused = format!("/api/v1/oam/applications/{}/paused", s.ns);
    let (status, v) = s.call("GET", &paused, Some(&viewer), None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["status"]["status"], "workflowSuspending");
    let (status, v) = s
        .call(
            "GET",
            &format!("/api/v1/oam/applications?namespace={}", s.ns),
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["items"].as_array().map(Vec::len), Some(2), "{v}");
    let resume = format!("{paused}/resume");
    let (status, _) = s.call("POST", &resume, Some(&viewer), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, v) = s.call("POST", &resume, Some(&admin), None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let anns = oam_api
        .get("paused")
        .await
        .unwrap()
        .metadata
        .annotations
        .unwrap_or_default();
    assert_eq!(
        anns.get(ferry_controller::oam::RESUME_ANNOTATION)
            .map(String::as_str),
        Some("admin")
    );
    let (status, v) = s
        .call(
            "POST",
            &format!("/api/v1/oam/applications/{}/busy/resume", s.ns),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    let (status, _) = s
        .call(
            "GET",
            &format!("/api/v1/oam/applications/{}/nope", s.ns),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, tok) = s
        .call(
            "POST",
            "/api/v1/projects/team-a/roles/ci/token",
            Some(&admin),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{tok}");
    let ci = tok["token"].as_str().unwrap().to_string();
    let iat = tok["iat"].as_i64().unwrap();
    // Syncs only its own project's apps. (It can still read the others:
    // `policy.default` applies to every caller, project tokens included, as
    // in Argo CD.)
    let (_, list) = s.call("GET", "/api/v1/applications", Some(&ci), None).await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["metadata"]["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"a-app"), "{names:?}");
    let (status, v) = s
        .call(
            "POST",
            "/api/v1/applications/a-app/sync",
            Some(&ci),
            Some(json!({ "prune": true })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["operation"]["sync"]["prune"], true);
    assert_eq!(v["operation"]["initiatedBy"]["username"], "proj:team-a:ci");
    let (status, v) = s
        .call(
            "POST",
            "/api/v1/applications/d-app/sync",
            Some(&ci),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    // A second sync while one is pending is a conflict.
    let (status, _) = s
        .call(
            "POST",
            "/api/v1/applications/a-app/sync",
            Some(&ci),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    // Two tokens issued back to back (likely in the same second): revoking
    // one by its id leaves the other working.
    let (_, t1) = s
        .call(
            "POST",
            "/api/v1/projects/team-a/roles/ci/token",
            Some(&admin),
            Some(json!({})),
        )
        .await;
    let (_, t2) = s
        .call(
            "POST",
            "/api/v1/projects/team-a/roles/ci/token",
            Some(&admin),
            Some(json!({})),
        )
        .await;
    let (status, v) = s
        .call(
            "DELETE",
            &format!(
                "/api/v1/projects/team-a/roles/ci/token/{}?id={}",
                t1["iat"],
                t1["id"].as_str().unwrap()
            ),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, _) = s
        .call(
            "GET",
            "/api/v1/applications/a-app",
            Some(t1["token"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = s
        .call(
            "GET",
            "/api/v1/applications/a-app",
            Some(t2["token"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // An operation or status in a create body is not taken: syncing needs
    // the sync endpoint and its permission.
    let (status, v) = s
        .call("POST", "/api/v1/applications", Some(&admin), Some(json!({
            "metadata": { "name": "sneaky" },
            "spec": { "project": "default", "source": { "repoURL": "https://git.example.com/x.git", "path": "." },
                      "destination": { "server": "https://kubernetes.default.svc", "namespace": "default" } },
            "operation": { "sync": { "prune": true } },
            "status": { "history": [{ "id": 9, "revision": "deadbeef" }] },
        })))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(
        v.get("operation").is_none() && v.get("status").is_none(),
        "{v}"
    );

    // Revoked: the same token no longer works.
    let (status, v) = s
        .call(
            "DELETE",
            &format!("/api/v1/projects/team-a/roles/ci/token/{iat}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = s
        .call("GET", "/api/v1/applications/a-app", Some(&ci), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    assert!(v["error"].as_str().unwrap().contains("revoked"), "{v}");

    // Credentials go in and never come out.
    let repo_password = "repo-secret-password-42";
    let (status, v) = s
        .call("POST", "/api/v1/repositories", Some(&admin), Some(json!({
            "repo": "https://git.example.com/team-a.git", "username": "git", "password": repo_password,
        })))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["hasCredentials"], true);
    let bearer = "cluster-bearer-token-xyz";
    let (status, v) = s
        .call(
            "POST",
            "/api/v1/clusters",
            Some(&admin),
            Some(json!({
                "name": "far", "server": "https://far.example.com:6443",
                "config": { "bearerToken": bearer, "tlsClientConfig": { "insecure": true } },
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (_, repos) = s
        .call("GET", "/api/v1/repositories", Some(&admin), None)
        .await;
    assert_eq!(repos["items"][0]["username"], "git");
    let (_, clusters) = s.call("GET", "/api/v1/clusters", Some(&admin), None).await;
    assert_eq!(clusters["items"].as_array().unwrap().len(), 2, "{clusters}");
    let (status, _) = s
        .call("GET", "/api/v1/repositories", Some(&viewer), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s
        .call(
            "DELETE",
            "/api/v1/repositories/https%3A%2F%2Fgit.example.com%2Fteam-a.git",
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Changing a password ends the sessions that came before.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, v) = s
        .call("PUT", "/api/v1/account/password", Some(&admin), Some(json!({
            "name": "viewer", "currentPassword": s.admin_password, "newPassword": "viewer-pass-456",
        })))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    s.eventually("old viewer session refused", || async {
        s.call("GET", "/api/v1/session/userinfo", Some(&viewer), None)
            .await
            .0
            == StatusCode::UNAUTHORIZED
    })
    .await;

    let logged = String::from_utf8_lossy(&logs().0.lock().unwrap()).into_owned();
    let responses = s.seen.lock().unwrap().clone();
    assert!(logged.len() > 1000, "the server logged almost nothing?");
    for (what, secret) in [
        ("admin password", s.admin_password.as_str()),
        ("viewer password", viewer_password),
        ("repository password", repo_password),
        ("cluster token", bearer),
        ("admin token", admin.as_str()),
        ("viewer token", viewer.as_str()),
        ("project token", ci.as_str()),
    ] {
        assert!(!logged.contains(secret), "{what} in the logs");
        if what.ends_with("password") || what == "cluster token" {
            assert!(!responses.contains(secret), "{what} in a response");
        }
    }
}

fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

#[tokio::test]
async fn webhooks_refresh_exactly_the_matching_apps() {
    let s = Server::start("api-hook").await;
    let secret = "hook-secret";
    Api::<Secret>::namespaced(s.client.clone(), &s.ns)
        .patch(
            ferry_server::ARGOCD_SECRET,
            &PatchParams::default(),
            &Patch::Merge(json!({ "stringData": { "webhook.github.secret": secret } })),
        )
        .await
        .unwrap();
    let repo = "https://git.example.com/org/config";
    s.app("on-main", "default", &format!("{repo}.git"), "main")
        .await;
    s.app("on-head", "default", repo, "HEAD").await;
    s.app("on-dev", "default", repo, "dev").await;
    s.app(
        "other-repo",
        "default",
        "https://git.example.com/org/other.git",
        "main",
    )
    .await;
    let admin = s.login("admin", &s.admin_password).await;
    s.eventually("apps visible", || async {
        s.call("GET", "/api/v1/applications", Some(&admin), None)
            .await
            .1["items"]
            .as_array()
            .is_some_and(|a| a.len() == 4)
    })
    .await;
    // ApplicationSets whose git generator (here inside a matrix) reads the pushed branch are
    // refreshed too; one on another branch is not.
    let sets: Api<ferry_model::appset::ApplicationSet> = Api::namespaced(s.client.clone(), &s.ns);
    for (name, revision) in [("set-main", "main"), ("set-dev", "dev")] {
        let set: ferry_model::appset::ApplicationSet = serde_json::from_value(json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "ApplicationSet",
            "metadata": { "name": name },
            "spec": { "generators": [{ "matrix": { "generators": [
                { "git": { "repoURL": repo, "revision": revision, "directories": [{ "path": "*" }] } },
                { "list": { "elements": [{ "x": "1" }] } },
            ] } }], "template": { "metadata": { "name": "{{path.basename}}" }, "spec": {} } },
        }))
        .unwrap();
        sets.create(&Default::default(), &set).await.unwrap();
    }
    let body = serde_json::to_vec(&json!({
        "ref": "refs/heads/main",
        "before": "0000000000000000000000000000000000000000",
        "after": "1111111111111111111111111111111111111111",
        "repository": {
            "html_url": "https://git.example.com/org/config",
            "clone_url": "https://git.example.com/org/config.git",
            "ssh_url": "git@git.example.com:org/config.git",
            "default_branch": "main",
        },
        "commits": [{ "added": [], "modified": ["apps/a.yaml"], "removed": [] }],
    }))
    .unwrap();
    let refreshed = || async {
        let api: Api<ferry_model::Application> = Api::namespaced(s.client.clone(), &s.ns);
        let mut out = Vec::new();
        for a in api.list(&Default::default()).await.unwrap() {
            if a.metadata
                .annotations
                .as_ref()
                .is_some_and(|m| m.contains_key("argocd.argoproj.io/refresh"))
            {
                out.push(a.metadata.name.clone().unwrap());
            }
        }
        out.sort();
        out
    };
    let send = |sig: Option<String>| {
        let body = body.clone();
        let url = format!("{}/api/webhook", s.base);
        let http = s.http.clone();
        async move {
            let mut req = http
                .post(url)
                .header("X-GitHub-Event", "push")
                .header("Content-Type", "application/json")
                .body(body);
            if let Some(sig) = sig {
                req = req.header("X-Hub-Signature-256", sig);
            }
            req.send().await.unwrap().status()
        }
    };
    // Wait until the server has the secret (it reloads settings on change): a
    // signed ping is answered 200 only then, and refreshes nothing.
    s.eventually("webhook secret loaded", || async {
        let ping = b"{}".to_vec();
        s.http
            .post(format!("{}/api/webhook", s.base))
            .header("X-GitHub-Event", "ping")
            .header("Content-Type", "application/json")
            .header("X-Hub-Signature-256", github_signature(secret, &ping))
            .body(ping)
            .send()
            .await
            .unwrap()
            .status()
            == StatusCode::OK
    })
    .await;
    assert_eq!(
        send(Some(github_signature("not-the-secret", &body))).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(send(None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        send(Some(github_signature("wrong", &body))).await,
        StatusCode::UNAUTHORIZED
    );
    assert!(
        refreshed().await.is_empty(),
        "a bad signature refreshed something"
    );

    assert_eq!(
        send(Some(github_signature(secret, &body))).await,
        StatusCode::OK
    );
    assert_eq!(refreshed().await, ["on-head", "on-main"]);
    let refresh_of = |name: &'static str| {
        let sets = sets.clone();
        async move {
            sets.get(name)
                .await
                .unwrap()
                .metadata
                .annotations
                .unwrap_or_default()
                .contains_key("argocd.argoproj.io/application-set-refresh")
        }
    };
    assert!(
        refresh_of("set-main").await,
        "the set reading main is refreshed"
    );
    assert!(!refresh_of("set-dev").await, "the set reading dev is not");

    // Too big a body is refused before anything is read.
    let big = vec![b' '; 2 * 1024 * 1024];
    let status = s
        .http
        .post(format!("{}/api/webhook", s.base))
        .header("X-GitHub-Event", "push")
        .header("X-Hub-Signature-256", github_signature(secret, &big))
        .body(big)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // Counted in the metrics, which live on their own listener.
    let status = s
        .http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::NOT_FOUND);
    let text = s
        .http
        .get(&s.metrics)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |labels: &str| {
        text.lines()
            .find(|l| l.starts_with("ferry_webhook_requests_total{") && l.contains(labels))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(count("result=\"bad_signature\"") >= 3.0, "{text}");
    assert_eq!(count("result=\"refreshed\""), 1.0, "{text}");
    assert!(
        text.contains("ferry_api_request_duration_seconds_bucket{"),
        "{text}"
    );

    // A flood of 120 signed deliveries at once (to a repository no app reads): past the
    // burst they are refused with 429, nothing queues up, and the server keeps answering.
    let flood_body = serde_json::to_vec(&json!({
        "ref": "refs/heads/main",
        "repository": { "html_url": "https://git.example.com/org/unused", "clone_url": "https://git.example.com/org/unused.git", "default_branch": "main" },
        "commits": [],
    }))
    .unwrap();
    let statuses = futures::future::join_all((0..120).map(|_| {
        let req = s
            .http
            .post(format!("{}/api/webhook", s.base))
            .header("X-GitHub-Event", "push")
            .header("Content-Type", "application/json")
            .header("X-Hub-Signature-256", github_signature(secret, &flood_body))
            .body(flood_body.clone());
        async move { req.send().await.unwrap().status() }
    }))
    .await;
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    let accepted = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(limited + accepted, 120, "{statuses:?}");
    assert!(
        limited >= 40 && accepted >= 20,
        "{accepted} accepted, {limited} limited"
    );
    assert_eq!(
        s.call("GET", "/api/v1/applications", Some(&admin), None)
            .await
            .0,
        StatusCode::OK
    );
}

/// Where `make setup` put a tool (recorded in `$FERRY_CACHE/env`).
fn setup_tool(key: &str) -> std::path::PathBuf {
    let cache = std::env::var_os("FERRY_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/ferry")
        });
    let env = std::fs::read_to_string(cache.join("env")).expect("run `make setup` first");
    let path = env
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| {
            panic!(
                "{key} missing from {}: run `make setup`",
                cache.join("env").display()
            )
        });
    std::path::PathBuf::from(path)
}

#[tokio::test]
async fn openapi_document_validates_and_fuzzing_finds_no_server_errors() {
    let s = Server::start("api-fuzz").await;
    let admin = s.login("admin", &s.admin_password).await;
    s.app(
        "fuzzed",
        "default",
        "https://git.example.com/org/config.git",
        "main",
    )
    .await;
    let st_bin = setup_tool("FERRY_SCHEMATHESIS");
    let bin_dir = st_bin.parent().unwrap().to_path_buf();

    let doc = s
        .http
        .get(format!("{}/api/openapi.json", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &doc).unwrap();
    let out = tokio::process::Command::new(bin_dir.join("openapi-spec-validator"))
        .arg(&file)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "openapi-spec-validator: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let out = tokio::process::Command::new(&st_bin)
        .args(["run", &format!("{}/api/openapi.json", s.base)])
        .args(["--checks", "not_a_server_error"])
        .args(["--header", &format!("Authorization: Bearer {admin}")])
        .args(["--exclude-path", "/api/v1/stream/applications"])
        .args(["--max-examples", "20", "--seed", "7", "--workers", "2"])
        // The coverage phase trips a CPython 3.11 AST recursion bug inside
        // hypothesis ("AST constructor recursion depth mismatch") on this
        // document; the fuzzing phase exercises every operation.
        .args(["--phases", "examples,fuzzing"])
        .args(["--request-timeout", "30", "--max-time", "100"])
        .arg("--no-color")
        .current_dir(dir.path())
        .env("SCHEMATHESIS_HOOKS", "")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    // Failure reports may quote requests; the token stays out of test output.
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .replace(admin.as_str(), "***");
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}"
    );
    assert!(report.contains("passed"), "{report}");
    // The summary, for whoever runs this with --nocapture.
    let lines: Vec<&str> = report.lines().collect();
    for l in &lines[lines.len().saturating_sub(25)..] {
        println!("schemathesis: {l}");
    }
}

#[tokio::test]
async fn live_views_filters_rollback_and_metrics_with_a_controller() {
    let s = Server::start("api-live").await;
    let env = ferry_testenv::shared();
    let dest = env
        .cluster
        .create_namespace(&s.client, "api-live-dest")
        .await
        .unwrap();
    let cfg = ferry_controller::Config {
        namespace: s.ns.clone(),
        cache_dir: std::env::temp_dir().join(format!("ferry-server-live-{}", std::process::id())),
        poll_interval: Duration::from_secs(3),
        leader_election: false,
        image_namespace: Some(s.ns.clone()),
        identity: s.ns.clone(),
        ..ferry_controller::Config::default()
    };
    let c = s.client.clone();
    let _controller = AbortOnDrop(tokio::spawn(async move {
        let _ = ferry_controller::run(c, cfg).await;
    }));

    // The message-app of seed 003 plus a Secret, whose value must never show.
    let in_git = "s3cr3t-in-git-123";
    let root =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/message-app");
    let work = tempfile::tempdir().unwrap();
    for f in ["configmap.yaml", "deployment.yaml", "service.yaml"] {
        std::fs::copy(root.join(f), work.path().join(f)).unwrap();
    }
    std::fs::write(
        work.path().join("secret.yaml"),
        format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: app-secret\nstringData:\n  token: {in_git}\n"),
    )
    .unwrap();
    let repo = format!("api-live-{}", std::process::id());
    env.git.create_repo(&repo).unwrap();
    let first = env.git.commit_dir(&repo, work.path(), "first").unwrap();
    let url = env.git.http_url(&repo);
    let admin = s.login("admin", &s.admin_password).await;
    let (status, v) = s
        .call(
            "POST",
            "/api/v1/repositories",
            Some(&admin),
            Some(json!({
                "repo": url, "username": env.git.user(), "password": env.git.password().expose(),
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = s
        .call("POST", "/api/v1/applications", Some(&admin), Some(json!({
            "metadata": { "name": "live", "labels": { "team": "x" } },
            "spec": {
                "project": "default",
                "source": { "repoURL": url, "path": ".", "targetRevision": "main" },
                "destination": { "server": "https://kubernetes.default.svc", "namespace": dest },
                "syncPolicy": { "automated": {} },
            },
        })))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let synced_at = |rev: String| {
        let s = &s;
        let admin = admin.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let (_, a) = s
                    .call("GET", "/api/v1/applications/live", Some(&admin), None)
                    .await;
                if a["status"]["sync"]["status"] == "Synced"
                    && a["status"]["health"]["status"] == "Healthy"
                    && a["status"]["sync"]["revision"] == rev.as_str()
                {
                    return a;
                }
                assert!(
                    Instant::now() < deadline,
                    "never synced at {rev}: {}",
                    a["status"]
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    };
    synced_at(first.clone()).await;

    // Filters.
    for (query, expect) in [
        ("project=default", true),
        ("project=nope", false),
        (
            &*format!("repo={}", url.replace(':', "%3A").replace('/', "%2F")),
            true,
        ),
        ("repo=https%3A%2F%2Felsewhere.example%2Fr.git", false),
        ("selector=team%3Dx", true),
        ("selector=team%3Dy", false),
        ("cluster=in-cluster", true),
        ("cluster=far", false),
    ] {
        let (_, v) = s
            .call(
                "GET",
                &format!("/api/v1/applications?{query}"),
                Some(&admin),
                None,
            )
            .await;
        let found = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["metadata"]["name"] == "live");
        assert_eq!(found, expect, "{query}");
    }

    // The resource tree reaches the Pods through their ReplicaSet.
    let (status, tree) = s
        .call(
            "GET",
            "/api/v1/applications/live/resource-tree",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{tree}");
    let nodes = tree["nodes"].as_array().unwrap();
    let kinds: Vec<&str> = nodes.iter().map(|n| n["kind"].as_str().unwrap()).collect();
    for k in [
        "Deployment",
        "ReplicaSet",
        "Pod",
        "Service",
        "ConfigMap",
        "Secret",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    let pod = nodes.iter().find(|n| n["kind"] == "Pod").unwrap();
    assert_eq!(pod["parentRefs"][0]["kind"], "ReplicaSet", "{pod}");

    // Manifests from Git and live, and the diff: Secret values masked.
    let (status, m) = s
        .call(
            "GET",
            "/api/v1/applications/live/manifests",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{m}");
    assert_eq!(m["revision"], first.as_str());
    let git_secret = m["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "Secret")
        .unwrap()
        .clone();
    assert!(
        git_secret["stringData"]["token"]
            .as_str()
            .unwrap()
            .starts_with("++++"),
        "{git_secret}"
    );
    let (status, m) = s
        .call(
            "GET",
            "/api/v1/applications/live/manifests?source=live",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{m}");
    assert_eq!(m["manifests"].as_array().unwrap().len(), 4, "{m}");
    let (status, d) = s
        .call(
            "GET",
            "/api/v1/applications/live/managed-resources",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{d}");
    assert!(
        d["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["modified"] == false),
        "{d}"
    );
    let (status, ev) = s
        .call(
            "GET",
            &format!(
                "/api/v1/applications/live/events?resourceName=message-app&resourceNamespace={dest}"
            ),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ev}");
    assert!(ev["items"].is_array());
    let (status, _) = s
        .call(
            "GET",
            "/api/v1/applications/live/events?resourceName=not-managed",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A new commit, a hard refresh, then a rollback to the first deploy.
    std::fs::write(
        work.path().join("configmap.yaml"),
        std::fs::read_to_string(root.join("configmap.yaml"))
            .unwrap()
            .replace("Hello from Ferry", "Second"),
    )
    .unwrap();
    let second = env.git.commit_dir(&repo, work.path(), "second").unwrap();
    let (status, _) = s
        .call(
            "GET",
            "/api/v1/applications/live?refresh=hard",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let a = synced_at(second.clone()).await;
    assert_eq!(a["status"]["history"].as_array().unwrap().len(), 2);
    let (status, v) = s
        .call(
            "POST",
            "/api/v1/applications/live/rollback",
            Some(&admin),
            Some(json!({ "id": 0 })),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "rollback with auto-sync on: {v}"
    );
    let mut spec = a["spec"].clone();
    spec.as_object_mut().unwrap().remove("syncPolicy");
    let (status, v) = s
        .call(
            "PUT",
            "/api/v1/applications/live",
            Some(&admin),
            Some(
                json!({ "metadata": { "name": "live", "labels": { "team": "x" } }, "spec": spec }),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = s
        .call(
            "POST",
            "/api/v1/applications/live/rollback",
            Some(&admin),
            Some(json!({ "id": 0 })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), &dest);
    s.eventually("the first message back", || async {
        cms.get("message-app-config")
            .await
            .ok()
            .and_then(|c| c.data)
            .is_some_and(|d| d["MESSAGE"] == "Hello from Ferry")
    })
    .await;

    // The controller's metrics reach the server's listener (same process).
    let text = s
        .http
        .get(&s.metrics)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("ferry_app_reconcile_total ") && !l.ends_with(" 0")),
        "{text}"
    );
    assert!(
        text.contains("ferry_app_sync_total{phase=\"Succeeded\"}"),
        "{text}"
    );
    assert!(
        text.contains("ferry_git_request_duration_seconds_count{request_type=\"ls-remote\"}"),
        "{text}"
    );
    // Argo CD's names and labels, for existing dashboards and alerts.
    let has = |prefix: &str, parts: &[&str]| {
        text.lines()
            .any(|l| l.starts_with(prefix) && parts.iter().all(|p| l.contains(p)))
    };
    assert!(
        has(
            "argocd_app_info{",
            &[
                "name=\"live\"",
                "autosync_enabled=\"false\"",
                "sync_status=",
                "health_status=",
                "autosync_enabled=",
                "dest_server=",
                "operation=\"\""
            ]
        ),
        "{text}"
    );
    assert!(
        has(
            "argocd_app_sync_total{",
            &["name=\"live\"", "phase=\"Succeeded\""]
        ),
        "{text}"
    );
    assert!(
        has("argocd_app_reconcile_bucket{", &["le=\"0.25\""]),
        "{text}"
    );
    assert!(
        has(
            "argocd_git_request_total{",
            &["request_type=\"ls-remote\"", "repo="]
        ),
        "{text}"
    );

    let responses = s.seen.lock().unwrap().clone();
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, in_git);
    for secret in [in_git, b64.as_str(), env.git.password().expose()] {
        assert!(!responses.contains(secret), "{secret} in a response");
    }
    let logged = String::from_utf8_lossy(&logs().0.lock().unwrap()).into_owned();
    for secret in [in_git, b64.as_str(), env.git.password().expose()] {
        assert!(!logged.contains(secret), "{secret} in the logs");
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[tokio::test]
async fn applications_in_other_namespaces_by_path_or_app_namespace() {
    let env = ferry_testenv::shared();
    let client = env.cluster.client().await.unwrap();
    let team = env
        .cluster
        .create_namespace(&client, "api-team")
        .await
        .unwrap();
    let srv = Server::start_with("anyns-api", vec![team.clone()]).await;
    let token = srv.login("admin", &srv.admin_password.clone()).await;
    let project = json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "AppProject",
        "metadata": { "name": "team", "namespace": srv.ns },
        "spec": { "sourceRepos": ["*"], "destinations": [{ "server": "*", "namespace": "*" }],
            "sourceNamespaces": [team] },
    });
    Api::<ferry_model::AppProject>::namespaced(srv.client.clone(), &srv.ns)
        .patch("team", &PatchParams::apply("test"), &Patch::Apply(&project))
        .await
        .unwrap();
    let app = |project: &str, ns: &str| {
        json!({
            "metadata": { "name": "svc", "namespace": ns },
            "spec": { "project": project,
                "source": { "repoURL": "https://git.example.com/r.git", "path": "." },
                "destination": { "server": "https://kubernetes.default.svc", "namespace": "x" } },
        })
    };
    // The default project does not list the namespace in sourceNamespaces.
    let (s, v) = srv
        .call(
            "POST",
            "/api/v1/applications",
            Some(&token),
            Some(app("default", &team)),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("not permitted to use project default"),
        "{v}"
    );
    // A namespace the server does not serve.
    let (s, v) = srv
        .call(
            "POST",
            "/api/v1/applications",
            Some(&token),
            Some(app("team", "kube-public")),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, v) = srv
        .call(
            "POST",
            "/api/v1/applications",
            Some(&token),
            Some(app("team", &team)),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["metadata"]["namespace"], team);

    // Argo CD's two spellings reach the same app; the bare name does not.
    for path in [
        format!("/api/v1/applications/{team}%2Fsvc"),
        format!("/api/v1/applications/svc?appNamespace={team}"),
    ] {
        let (s, v) = srv.call("GET", &path, Some(&token), None).await;
        assert_eq!(s, StatusCode::OK, "{path}: {v}");
        assert_eq!(v["metadata"]["namespace"], team, "{path}");
    }
    let (s, _) = srv
        .call("GET", "/api/v1/applications/svc", Some(&token), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = srv
        .call(
            "DELETE",
            &format!("/api/v1/applications/svc?appNamespace={team}&cascade=false"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

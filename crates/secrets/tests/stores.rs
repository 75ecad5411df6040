//! The backends against the real stores: an OpenBao server (KV v1 and v2, versions; auth
//! token, approle, userpass and kubernetes through the test cluster's TokenReview), Kubernetes
//! Secrets on the test cluster, and SOPS files encrypted with age. GitHub auth has no server
//! here: a loopback stand-in answers its login endpoint and forwards the rest to OpenBao.

use std::sync::Arc;
use std::time::Duration;

use ferry_secrets::{AvpConfig, Backend, Resolver, Settings};
use ferry_testenv::{OpenBao, Secret};
use k8s_openapi::api::core::v1::{Namespace, Secret as KubeSecret, ServiceAccount};
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

fn config(pairs: &[(&str, &str)]) -> AvpConfig {
    AvpConfig::new(
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        None,
    )
}

fn vault(pairs: &[(&str, &str)]) -> Result<Arc<dyn Backend>, String> {
    ferry_secrets::backend_from_config(&config(pairs), None, ".".into(), "sops".into())
}

async fn resolve_one(backend: Arc<dyn Backend>, manifest: Value) -> Result<Value, String> {
    let r = Resolver::new(backend, Duration::from_secs(60));
    let out = r.resolve(&[manifest], &Settings::default()).await?;
    out.into_iter().next().unwrap().map_err(|e| e.0)
}

fn cm(data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data})
}

/// A stand-in for Vault's GitHub auth (OpenBao has none): `PUT /v1/auth/github/login` with the
/// expected GitHub token answers `token`; anything else is forwarded to OpenBao.
async fn github_stand_in(upstream: String, github_token: String, token: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let (upstream, github_token, token, http) = (
                upstream.clone(),
                github_token.clone(),
                token.clone(),
                http.clone(),
            );
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Headers, then Content-Length bytes of body.
                let (head, body) = loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..pos]).to_string();
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        while buf.len() < pos + 4 + len {
                            let n = sock.read(&mut chunk).await.unwrap_or(0);
                            if n == 0 {
                                break;
                            }
                            buf.extend_from_slice(&chunk[..n]);
                        }
                        break (head, buf[pos + 4..].to_vec());
                    }
                };
                let mut first = head.lines().next().unwrap_or("").split(' ');
                let (method, path) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
                let (status, reply) = if method == "PUT" && path == "/v1/auth/github/login" {
                    let b: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    if b["token"] == github_token.as_str() {
                        (200, json!({"auth": {"client_token": token}}).to_string())
                    } else {
                        (400, json!({"errors": ["invalid github token"]}).to_string())
                    }
                } else {
                    let vault_token = head
                        .lines()
                        .find_map(|l| {
                            l.strip_prefix("X-Vault-Token: ")
                                .or(l.strip_prefix("x-vault-token: "))
                        })
                        .unwrap_or("")
                        .to_string();
                    let r = http
                        .get(format!("{upstream}{path}"))
                        .header("X-Vault-Token", vault_token)
                        .send()
                        .await
                        .unwrap();
                    (r.status().as_u16(), r.text().await.unwrap_or_default())
                };
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                    reply.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn vault_kv_versions_and_every_auth_method_against_openbao() {
    let env = ferry_testenv::shared();
    let dir = tempfile::tempdir().unwrap();
    let bao = OpenBao::start(dir.path()).await.unwrap();
    let password = Secret::random();
    bao.mount_kv("kv", 2).await.unwrap();
    bao.mount_kv("kv1", 1).await.unwrap();
    bao.kv_put(
        "kv",
        2,
        "apps/web",
        json!({"password": "first", "user": "web"}),
    )
    .await
    .unwrap();
    bao.kv_put(
        "kv",
        2,
        "apps/web",
        json!({"password": password.expose(), "user": "web", "port": 8080}),
    )
    .await
    .unwrap();
    bao.kv_put("kv1", 1, "legacy", json!({"token": "v1-token"}))
        .await
        .unwrap();
    bao.kv_put("kv", 2, "forbidden/x", json!({"k": "v"}))
        .await
        .unwrap();
    bao.call(
        "PUT",
        "sys/policies/acl/avp",
        Some(json!({"policy": "path \"kv/data/apps/*\" { capabilities = [\"read\"] }\npath \"kv1/*\" { capabilities = [\"read\"] }\n"})),
    )
    .await
    .unwrap();

    let addr = bao.addr.clone();
    let root = bao.root_token().expose().to_string();
    let manifest = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "web", "annotations": {"avp.kubernetes.io/path": "kv/data/apps/web"}},
        "stringData": {"password": "<password>", "user": "<user>",
            "old": "<path:kv/data/apps/web#password#1>", "legacy": "<path:kv1/legacy#token>"},
        "data": {"encoded": "<password | base64encode>"},
    });
    let mut manifest_kv1 = manifest.clone();
    manifest_kv1["stringData"] = json!({"legacy": "<path:kv1/legacy#token>"});
    manifest_kv1["metadata"]["annotations"] = json!({"avp.kubernetes.io/kv-version": "1"});
    let check = |out: &Value| {
        assert_eq!(out["stringData"]["password"], password.expose());
        assert_eq!(out["stringData"]["user"], "web");
        assert_eq!(out["stringData"]["old"], "first", "#1 reads version 1");
        use base64::Engine;
        assert_eq!(
            out["data"]["encoded"],
            base64::engine::general_purpose::STANDARD.encode(password.expose())
        );
    };

    // token
    let token_backend = vault(&[
        ("AVP_TYPE", "vault"),
        ("AVP_AUTH_TYPE", "token"),
        ("VAULT_ADDR", &addr),
        ("VAULT_TOKEN", &root),
    ])
    .unwrap();
    let mut m = manifest.clone();
    m["stringData"].as_object_mut().unwrap().remove("legacy");
    check(&resolve_one(token_backend.clone(), m.clone()).await.unwrap());
    // KV v1 through the annotation, and through AVP_KV_VERSION.
    let out = resolve_one(token_backend.clone(), manifest_kv1.clone())
        .await
        .unwrap();
    assert_eq!(out["stringData"]["legacy"], "v1-token");
    let kv1 = vault(&[
        ("AVP_TYPE", "vault"),
        ("AVP_AUTH_TYPE", "token"),
        ("VAULT_ADDR", &addr),
        ("VAULT_TOKEN", &root),
        ("AVP_KV_VERSION", "1"),
    ])
    .unwrap();
    let out = resolve_one(kv1, cm(json!({"t": "<path:kv1/legacy#token>"})))
        .await
        .unwrap();
    assert_eq!(out["data"]["t"], "v1-token");

    // approle
    let (role_id, secret_id) = bao.approle("avp", &["avp"]).await.unwrap();
    let approle = vault(&[
        ("AVP_TYPE", "vault"),
        ("AVP_AUTH_TYPE", "approle"),
        ("VAULT_ADDR", &addr),
        ("AVP_ROLE_ID", &role_id),
        ("AVP_SECRET_ID", &secret_id),
    ])
    .unwrap();
    check(&resolve_one(approle.clone(), m.clone()).await.unwrap());
    // The policy does not cover kv/data/forbidden: a 403 that says so.
    let e = resolve_one(approle, cm(json!({"x": "<path:kv/data/forbidden/x#k>"})))
        .await
        .unwrap_err();
    assert!(
        e.contains("Code: 403") && e.contains("kv/data/forbidden/x"),
        "{e}"
    );

    // userpass, and a wrong password
    bao.call(
        "POST",
        "sys/auth/userpass",
        Some(json!({"type": "userpass"})),
    )
    .await
    .unwrap();
    bao.call(
        "POST",
        "auth/userpass/users/avp",
        Some(json!({"password": "pw-123", "token_policies": ["avp"]})),
    )
    .await
    .unwrap();
    let userpass = vault(&[
        ("AVP_TYPE", "vault"),
        ("AVP_AUTH_TYPE", "userpass"),
        ("VAULT_ADDR", &addr),
        ("AVP_USERNAME", "avp"),
        ("AVP_PASSWORD", "pw-123"),
    ])
    .unwrap();
    check(&resolve_one(userpass, m.clone()).await.unwrap());
    let wrong = vault(&[
        ("AVP_TYPE", "vault"),
        ("AVP_AUTH_TYPE", "userpass"),
        ("VAULT_ADDR", &addr),
        ("AVP_USERNAME", "avp"),
        ("AVP_PASSWORD", "nope"),
    ])
    .unwrap();
    let e = resolve_one(wrong, m.clone()).await.unwrap_err();
    assert!(
        e.contains("auth/userpass/login/avp") && e.contains("Code: 400"),
        "{e}"
    );
    assert!(!e.contains("nope"), "the password never shows: {e}");

    // k8s: a ServiceAccount's token, checked by the test cluster's TokenReview.
    let client = env.cluster.client().await.unwrap();
    let ns = format!("avp-k8s-{}", std::process::id());
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "avp"}})).unwrap(),
    )
    .await
    .unwrap();
    let secrets: Api<KubeSecret> = Api::namespaced(client.clone(), &ns);
    let jwt = {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let sa = sas.get("avp").await.unwrap();
            if let Some(name) = sa
                .secrets
                .unwrap_or_default()
                .first()
                .and_then(|r| r.name.clone())
            {
                let s = secrets.get(&name).await.unwrap();
                break String::from_utf8(s.data.unwrap()["token"].0.clone()).unwrap();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no token Secret for the ServiceAccount"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let token_file = dir.path().join("sa-token");
    std::fs::write(&token_file, &jwt).unwrap();
    bao.call(
        "POST",
        "sys/auth/kubernetes",
        Some(json!({"type": "kubernetes"})),
    )
    .await
    .unwrap();
    bao.call(
        "POST",
        "auth/kubernetes/config",
        Some(json!({
            "kubernetes_host": env.cluster.server,
            "kubernetes_ca_cert": env.cluster.ca_pem,
            "token_reviewer_jwt": env.cluster.admin_token().expose(),
            "disable_local_ca_jwt": true,
        })),
    )
    .await
    .unwrap();
    bao.call(
        "POST",
        "auth/kubernetes/role/argocd",
        Some(json!({"bound_service_account_names": ["avp"], "bound_service_account_namespaces": [ns], "token_policies": ["avp"]})),
    )
    .await
    .unwrap();
    let k8s = vault(&[
        ("AVP_TYPE", "vault"),
        ("AVP_AUTH_TYPE", "k8s"),
        ("VAULT_ADDR", &addr),
        ("AVP_K8S_ROLE", "argocd"),
        ("AVP_K8S_TOKEN_PATH", &token_file.to_string_lossy()),
    ])
    .unwrap();
    check(&resolve_one(k8s, m.clone()).await.unwrap());

    // github, through the stand-in.
    let gh_token = bao
        .call(
            "POST",
            "auth/token/create",
            Some(json!({"policies": ["avp"]})),
        )
        .await
        .unwrap()["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    let stand_in = github_stand_in(addr.clone(), "gh-pat".into(), gh_token).await;
    let github = vault(&[
        ("AVP_TYPE", "vault"),
        ("AVP_AUTH_TYPE", "github"),
        ("VAULT_ADDR", &stand_in),
        ("AVP_GITHUB_TOKEN", "gh-pat"),
    ])
    .unwrap();
    check(&resolve_one(github, m.clone()).await.unwrap());

    // What a read answers, named: a missing path, KV v2 without /data/, a deleted version.
    for (placeholder, want) in [
        (
            "<path:kv/data/nope#k>",
            "Could not find secrets at path kv/data/nope",
        ),
        (
            "<path:kv/apps/web#password>",
            "did you forget to include /data/ in the Vault path for kv-v2",
        ),
        (
            "<path:kv/data/apps/web#password#9>",
            "Could not find secrets at path kv/data/apps/web with version 9",
        ),
    ] {
        let e = resolve_one(token_backend.clone(), cm(json!({"x": placeholder})))
            .await
            .unwrap_err();
        assert!(e.contains(want), "{placeholder}: {e}");
    }
    let e = resolve_one(
        token_backend.clone(),
        cm(json!({"x": "<path:kv/data/apps/web#nokey>"})),
    )
    .await
    .unwrap_err();
    assert!(
        e.contains("missing Vault value for placeholder path:kv/data/apps/web#nokey"),
        "{e}"
    );

    // Each (path, version) is read once per pass, however many placeholders name it.
    let r = Resolver::new(token_backend.clone(), Duration::from_secs(60));
    let many: Vec<Value> = (0..5).map(|_| m.clone()).collect();
    for out in r.resolve(&many, &Settings::default()).await.unwrap() {
        check(&out.unwrap());
    }
    assert_eq!(
        r.reads(),
        2,
        "kv/data/apps/web latest and version 1, once each"
    );
    r.resolve(&many, &Settings::default()).await.unwrap();
    assert_eq!(r.reads(), 2, "within the TTL nothing is read again");

    // A sealed server: every read says so.
    bao.call("PUT", "sys/seal", None).await.unwrap();
    let fresh = vault(&[
        ("AVP_TYPE", "vault"),
        ("AVP_AUTH_TYPE", "token"),
        ("VAULT_ADDR", &addr),
        ("VAULT_TOKEN", &root),
    ])
    .unwrap();
    let e = resolve_one(fresh, m.clone()).await.unwrap_err();
    assert!(e.contains("Code: 503") && e.contains("sealed"), "{e}");
}

#[tokio::test]
async fn kubernetes_secrets_and_sops_files() {
    let env = ferry_testenv::shared();
    let client = env.cluster.client().await.unwrap();
    let ns = format!("avp-ks-{}", std::process::id());
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();
    Api::<KubeSecret>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "db"}, "stringData": {"password": "k8s-pw"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let ks = ferry_secrets::backend_from_config(
        &config(&[("AVP_TYPE", "kubernetessecret")]),
        Some(client.clone()),
        ".".into(),
        "sops".into(),
    )
    .unwrap();
    let out = resolve_one(
        ks.clone(),
        cm(json!({"p": format!("<path:{ns}:db#password>")})),
    )
    .await
    .unwrap();
    assert_eq!(out["data"]["p"], "k8s-pw");
    let e = resolve_one(ks, cm(json!({"p": format!("<path:{ns}:nope#password>")})))
        .await
        .unwrap_err();
    assert!(e.contains("secrets \"nope\" not found"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let sops = ferry_testenv::sops::locate().unwrap();
    let key = ferry_testenv::sops::AgeKey::generate(dir.path()).unwrap();
    key.encrypt(
        &sops,
        dir.path(),
        "secrets.enc.yaml",
        "password: sops-pw\nnested:\n  user: app\nport: 5432\n",
    )
    .unwrap();
    let plain = std::fs::read_to_string(dir.path().join("secrets.enc.yaml")).unwrap();
    assert!(!plain.contains("sops-pw"), "the fixture is encrypted");
    let backend = ferry_secrets::backend_from_config(
        &config(&[
            ("AVP_TYPE", "sops"),
            ("SOPS_AGE_KEY_FILE", &key.file.to_string_lossy()),
        ]),
        None,
        dir.path().to_path_buf(),
        sops.clone(),
    )
    .unwrap();
    let out = resolve_one(
        backend.clone(),
        cm(json!({"p": "<path:secrets.enc.yaml#password>", "u": "<path:secrets.enc.yaml#nested | jsonPath {.user}>", "n": "<path:secrets.enc.yaml#port>"})),
    )
    .await
    .unwrap();
    assert_eq!(
        out["data"],
        json!({"p": "sops-pw", "u": "app", "n": "5432"})
    );
    // Without the key sops cannot decrypt, and the message says which file.
    let keyless = ferry_secrets::backend_from_config(
        &config(&[
            ("AVP_TYPE", "sops"),
            ("SOPS_AGE_KEY_FILE", "/nonexistent/key"),
        ]),
        None,
        dir.path().to_path_buf(),
        sops,
    )
    .unwrap();
    let e = resolve_one(
        keyless,
        cm(json!({"p": "<path:secrets.enc.yaml#password>"})),
    )
    .await
    .unwrap_err();
    assert!(e.contains("Could not find file secrets.enc.yaml"), "{e}");
}

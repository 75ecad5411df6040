//! avp placeholders served natively, against a real OpenBao server: each bad input is a
//! condition on its Application that names the store, the path and what it answered; nothing of
//! that app is applied or pruned, and the other apps keep syncing.

mod common;

use common::*;
use ferry_testenv::OpenBao;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use serde_json::json;

fn cm(name: &str, placeholder: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  value: \"{placeholder}\"\n"
    )
}

#[tokio::test]
async fn bad_inputs_are_conditions_and_nothing_is_applied_or_pruned() {
    let h = harness("avp-bad").await;
    let dir = tempfile::tempdir().unwrap();
    let bao = OpenBao::start(dir.path()).await.unwrap();
    bao.mount_kv("kv", 2).await.unwrap();
    bao.kv_put(
        "kv",
        2,
        "team/app",
        serde_json::json!({"greeting": "hello-from-bao"}),
    )
    .await
    .unwrap();
    let repo = new_repo(
        "avp-bad",
        &[
            (
                "good/cm.yaml",
                &cm("good", "<path:kv/data/team/app#greeting>"),
            ),
            (
                "missing-key/cm.yaml",
                &cm("missing-key", "<path:kv/data/team/app#nope>"),
            ),
            (
                "no-data/cm.yaml",
                &cm("no-data", "<path:kv/team/app#greeting>"),
            ),
            (
                "bad-modifier/cm.yaml",
                &cm("bad-modifier", "<path:kv/data/team/app#greeting | shout>"),
            ),
            (
                "bad-indent/cm.yaml",
                &cm("bad-indent", "<path:kv/data/team/app#greeting | indent x>"),
            ),
            (
                "no-path/cm.yaml",
                &cm("no-path", "<path:kv/data/team/absent#greeting>"),
            ),
        ],
    );
    let url = h.env.git.file_url(&repo);
    let root = bao.root_token().expose().to_string();
    let native = |name: &str, path: &str, env: serde_json::Value| {
        app(
            name,
            &url,
            path,
            &h.dest,
            json!({"spec": {"source": {"plugin": {"name": "argocd-vault-plugin", "env": env}},
                "syncPolicy": {"automated": {"prune": true, "selfHeal": true}}}}),
        )
    };
    let vault_env = |token: &str| {
        json!([
            {"name": "AVP_TYPE", "value": "vault"},
            {"name": "AVP_AUTH_TYPE", "value": "token"},
            {"name": "VAULT_ADDR", "value": bao.addr},
            {"name": "VAULT_TOKEN", "value": token},
        ])
    };
    h.apply_app(native("good", "good", vault_env(&root))).await;
    for (name, path) in [
        ("missing-key", "missing-key"),
        ("no-data", "no-data"),
        ("no-path", "no-path"),
        ("bad-modifier", "bad-modifier"),
        ("bad-indent", "bad-indent"),
    ] {
        h.apply_app(native(name, path, vault_env(&root))).await;
    }
    h.apply_app(native("bad-token", "good", vault_env("not-a-token")))
        .await;
    // Wrong credentials for the other login methods: a real role with a secret id it never
    // issued, a real user with the wrong password.
    bao.call(
        "PUT",
        "sys/policies/acl/team",
        Some(json!({"policy": "path \"kv/data/team/*\" { capabilities = [\"read\"] }"})),
    )
    .await
    .unwrap();
    let (role_id, _) = bao.approle("avp", &["team"]).await.unwrap();
    h.apply_app(native(
        "bad-approle",
        "good",
        json!([
            {"name": "AVP_TYPE", "value": "vault"},
            {"name": "AVP_AUTH_TYPE", "value": "approle"},
            {"name": "VAULT_ADDR", "value": bao.addr},
            {"name": "AVP_ROLE_ID", "value": role_id},
            {"name": "AVP_SECRET_ID", "value": "00000000-0000-0000-0000-000000000000"},
        ]),
    ))
    .await;
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
        Some(json!({"password": "right-password", "token_policies": ["team"]})),
    )
    .await
    .unwrap();
    h.apply_app(native(
        "bad-userpass",
        "good",
        json!([
            {"name": "AVP_TYPE", "value": "vault"},
            {"name": "AVP_AUTH_TYPE", "value": "userpass"},
            {"name": "VAULT_ADDR", "value": bao.addr},
            {"name": "AVP_USERNAME", "value": "avp"},
            {"name": "AVP_PASSWORD", "value": "wrong-password"},
        ]),
    ))
    .await;
    h.apply_app(native(
        "unserved",
        "good",
        json!([{"name": "AVP_TYPE", "value": "awssecretsmanager"}]),
    ))
    .await;
    let mut restricted = vault_env(&root);
    restricted
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "AVP_PATH_VALIDATION", "value": "^kv/data/other/"}));
    h.apply_app(native("refused-path", "good", restricted))
        .await;
    // A store that is down: nothing listens on the address.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down_addr = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    h.apply_app(native(
        "store-down",
        "good",
        json!([
            {"name": "AVP_TYPE", "value": "vault"},
            {"name": "AVP_AUTH_TYPE", "value": "token"},
            {"name": "VAULT_ADDR", "value": down_addr},
            {"name": "VAULT_TOKEN", "value": root},
        ]),
    ))
    .await;

    let good = h.wait_synced_healthy("good").await;
    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), &h.dest);
    let value = |c: ConfigMap| c.data.unwrap()["value"].clone();
    assert_eq!(value(cms.get("good").await.unwrap()), "hello-from-bao");
    assert!(
        !conditions(&good).contains("secrets:"),
        "{}",
        conditions(&good)
    );

    for (name, want) in [
        (
            "missing-key",
            "missing Vault value for placeholder path:kv/data/team/app#nope",
        ),
        (
            "no-data",
            "did you forget to include /data/ in the Vault path for kv-v2",
        ),
        (
            "no-path",
            "Could not find secrets at path kv/data/team/absent",
        ),
        ("bad-token", "Code: 403"),
        ("bad-modifier", "invalid modifier: shout for placeholder"),
        ("bad-indent", "invalid indentation level"),
        ("bad-approle", "auth/approle/login"),
        ("bad-userpass", "auth/userpass/login/avp"),
        (
            "unserved",
            "awssecretsmanager is an avp backend Ferry does not serve",
        ),
        (
            "refused-path",
            "is disallowed by AVP_PATH_VALIDATION restriction",
        ),
        ("store-down", "Connection refused"),
    ] {
        let a = h
            .wait_app(name, want, |a| conditions(a).contains(want))
            .await;
        let c = conditions(&a);
        assert!(c.contains("ComparisonError: secrets: "), "{name}: {c}");
        assert!(!c.contains(&root), "{name}: the token never shows");
        assert!(
            !c.contains("wrong-password") && !c.contains("00000000-0000"),
            "{name}: credentials never show: {c}"
        );
        assert!(
            Api::<ConfigMap>::namespaced(h.client.clone(), &h.dest)
                .get_opt(name)
                .await
                .unwrap()
                .is_none(),
            "{name}: nothing applied"
        );
    }
    // Views (diff, manifests) mask the store's value wherever it lands, not only in Secrets.
    let (ctl, _tasks) = ferry_controller::Controller::watch(
        h.client.clone(),
        ferry_controller::Config {
            namespace: h.ns.clone(),
            leader_election: false,
            install_crds: false,
            image_automation: false,
            oam: false,
            cache_dir: dir.path().join("inspect-cache"),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let app = h.apps().get("good").await.unwrap();
    let view = h
        .eventually("an inspection", || {
            let (ctl, app) = (ctl.clone(), app.clone());
            async move { ctl.inspect(&app, None, true).await.ok() }
        })
        .await;
    let shown = serde_json::to_string(&view.objects).unwrap();
    assert!(
        shown.contains("ConfigMap") && shown.contains("++++++++"),
        "{shown}"
    );
    assert!(!shown.contains("hello-from-bao"), "{shown}");

    // The store errors name its address.
    let a = h.apps().get("no-path").await.unwrap();
    assert!(conditions(&a).contains(&bao.addr), "{}", conditions(&a));
    let a = h.apps().get("store-down").await.unwrap();
    assert!(conditions(&a).contains(&down_addr), "{}", conditions(&a));

    // A sealed store: the good app says so and keeps what it applied (nothing pruned).
    bao.call("PUT", "sys/seal", None).await.unwrap();
    bao.call("PUT", "sys/seal", None).await.ok();
    let _ = h
        .apps()
        .patch(
            "good",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"metadata": {"annotations": {"argocd.argoproj.io/refresh": "hard"}}}),
            ),
        )
        .await
        .unwrap();
    let a = h
        .wait_app("good", "a sealed-store condition", |a| {
            conditions(a).contains("sealed")
        })
        .await;
    assert!(conditions(&a).contains("Code: 503"), "{}", conditions(&a));
    assert_eq!(
        value(cms.get("good").await.unwrap()),
        "hello-from-bao",
        "nothing pruned"
    );
}

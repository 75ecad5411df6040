//! `ferry avp generate`, and the same binary run as `argocd-vault-plugin`: avp's command line
//! against a real OpenBao server and SOPS files, its output form, and its errors.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use ferry_testenv::OpenBao;
use serde_json::json;

fn run(
    program: &Path,
    args: &[&str],
    dir: &Path,
    stdin: Option<&str>,
    env: &[(&str, &str)],
) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(dir);
    for k in [
        "VAULT_ADDR",
        "VAULT_TOKEN",
        "AVP_TYPE",
        "AVP_AUTH_TYPE",
        "SOPS_AGE_KEY_FILE",
    ] {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    common::run(cmd, stdin)
}

fn docs(out: &str) -> Vec<serde_json::Value> {
    out.split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_saphyr::from_str(d).unwrap())
        .collect()
}

#[tokio::test]
async fn generate_from_a_directory_or_stdin_as_avp_does() {
    let dir = tempfile::tempdir().unwrap();
    let bao = OpenBao::start(dir.path()).await.unwrap();
    bao.mount_kv("kv", 2).await.unwrap();
    bao.kv_put(
        "kv",
        2,
        "apps/web",
        json!({"password": "bao-pw", "replicas": 3}),
    )
    .await
    .unwrap();

    // A directory of manifests, read recursively in order; `-c` holds the settings.
    let app = dir.path().join("app");
    std::fs::create_dir_all(app.join("nested")).unwrap();
    std::fs::write(
        app.join("a-secret.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: web\n  annotations:\n    avp.kubernetes.io/path: kv/data/apps/web\nstringData:\n  password: <password>\n",
    )
    .unwrap();
    std::fs::write(
        app.join("nested/b-deploy.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: <path:kv/data/apps/web#replicas>\n",
    )
    .unwrap();
    std::fs::write(app.join("notes.txt"), "not a manifest <password>").unwrap();
    let config = dir.path().join("avp.yaml");
    std::fs::write(
        &config,
        format!(
            "AVP_TYPE: vault\nAVP_AUTH_TYPE: token\nVAULT_ADDR: {}\nVAULT_TOKEN: {}\n",
            bao.addr,
            bao.root_token().expose()
        ),
    )
    .unwrap();
    let ferry = Path::new(env!("CARGO_BIN_EXE_ferry"));
    let out = run(
        ferry,
        &["avp", "generate", "app", "-c", config.to_str().unwrap()],
        dir.path(),
        None,
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.ends_with("---\n"),
        "every document ends with ---: {stdout}"
    );
    let d = docs(&stdout);
    assert_eq!(d.len(), 2);
    assert_eq!(d[0]["stringData"]["password"], "bao-pw");
    assert_eq!(d[1]["spec"]["replicas"], 3);

    // The same binary under avp's name, reading stdin, with Argo CD's ARGOCD_ENV_ settings.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let avp = bin.join("argocd-vault-plugin");
    std::os::unix::fs::symlink(ferry, &avp).unwrap();
    let input = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  p: <path:kv/data/apps/web#password | base64encode>\n";
    let env = [
        ("ARGOCD_ENV_AVP_TYPE", "vault"),
        ("ARGOCD_ENV_AVP_AUTH_TYPE", "token"),
        ("ARGOCD_ENV_VAULT_ADDR", bao.addr.as_str()),
        ("ARGOCD_ENV_VAULT_TOKEN", bao.root_token().expose()),
    ];
    let out = run(&avp, &["generate", "-"], dir.path(), Some(input), &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = docs(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(d[0]["data"]["p"], "YmFvLXB3");

    // A missing value: avp's error on stderr, exit 1, and the manifests before it printed.
    let input2 = format!(
        "{input}---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: d\ndata:\n  p: <path:kv/data/apps/web#nope>\n"
    );
    let out = run(&avp, &["generate", "-"], dir.path(), Some(&input2), &env);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("Error: Replace: could not replace all placeholders in Template:\nreplaceString: missing Vault value for placeholder path:kv/data/apps/web#nope in string p"),
        "{err}"
    );
    assert_eq!(docs(&String::from_utf8(out.stdout).unwrap()).len(), 1);
    assert!(
        !err.contains(bao.root_token().expose()),
        "the token never shows"
    );

    // Settings avp refuses, refused alike.
    let out = run(
        &avp,
        &["generate", "-"],
        dir.path(),
        Some(input),
        &[
            ("ARGOCD_ENV_AVP_TYPE", "vault"),
            ("ARGOCD_ENV_AVP_AUTH_TYPE", "approle"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("AVP_ROLE_ID and AVP_SECRET_ID for approle authentication cannot be empty")
    );
    let out = run(
        &avp,
        &["generate", "-"],
        dir.path(),
        Some(input),
        &[("ARGOCD_ENV_AVP_TYPE", "awssecretsmanager")],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("awssecretsmanager is an avp backend Ferry does not serve")
    );
    let out = run(&avp, &["generate"], dir.path(), None, &[]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("<path> argument required to generate manifests")
    );
    let out = run(&avp, &["generate", "empty"], dir.path(), None, &env);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no YAML or JSON files were found in empty")
    );
}

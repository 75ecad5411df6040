//! `ferry notifications` offline: check lints the ConfigMap and names every problem (exit 1),
//! trigger run evaluates a catalog trigger against an Application file, template notify
//! renders one — and no Secret value reaches the terminal.

use std::process::Command;

fn ferry(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn notifications_check_trigger_run_and_template_notify_offline() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    std::fs::write(
        path("cm.yaml"),
        r#"apiVersion: v1
kind: ConfigMap
metadata: {name: argocd-notifications-cm}
data:
  service.webhook.hook: |
    url: https://hooks.example/$hook-path
    headers:
    - {name: Authorization, value: "Bearer $missing-token"}
  service.opsgenie: |
    apiUrl: x
  trigger.on-typo: |
    - when: app.status.sync.status = 'x'
      send: [app-sync-failed]
  template.mine: |
    message: '{{.app.metadata.name}} failed at {{.app.status.operationState.finishedAt}}, see {{.secrets.token}}'
  subscriptions: |
    - recipients: [hook, slack:ops]
"#,
    )
    .unwrap();
    std::fs::write(
        path("secret.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata: {name: argocd-notifications-secret}\ndata: {hook-path: dmVyeS1zZWNyZXQtcGF0aA==}\nstringData: {token: tok-abcdef}\n",
    )
    .unwrap();
    std::fs::write(
        path("app.yaml"),
        "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: guestbook}\nstatus:\n  operationState: {phase: Failed, finishedAt: '2026-12-07T11:00:00Z', syncResult: {revision: abc}}\n",
    )
    .unwrap();
    let files = [
        "--config-map",
        &path("cm.yaml"),
        "--secret",
        &path("secret.yaml"),
    ];

    let (ok, out, err) = ferry(&[&["notifications", "check"][..], &files[..]].concat());
    assert!(!ok, "{out}");
    for want in [
        "service.webhook.hook: references $missing-token",
        "service.opsgenie: service type 'opsgenie' is not supported by Ferry",
        "trigger.on-typo: [0].when: unexpected character '='",
        "subscriptions: [0]: service 'slack' is not configured",
    ] {
        assert!(out.contains(want), "{want} not in:\n{out}");
    }
    assert!(err.contains("4 problem(s)"), "{err}");
    assert!(!out.contains("very-secret-path") && !err.contains("very-secret-path"));

    let (ok, out, _) = ferry(
        &[
            &[
                "notifications",
                "trigger",
                "run",
                "on-sync-failed",
                &path("app.yaml"),
            ][..],
            &files[..],
        ]
        .concat(),
    );
    assert!(ok);
    assert!(
        out.lines().nth(1).is_some_and(|l| l.ends_with("true")),
        "{out}"
    );
    let (ok, out, _) = ferry(
        &[
            &[
                "notifications",
                "trigger",
                "run",
                "on-sync-succeeded",
                &path("app.yaml"),
            ][..],
            &files[..],
        ]
        .concat(),
    );
    assert!(
        ok && out.lines().nth(1).is_some_and(|l| l.ends_with("false")),
        "{out}"
    );

    let (ok, out, err) = ferry(
        &[
            &[
                "notifications",
                "template",
                "notify",
                "mine",
                &path("app.yaml"),
            ][..],
            &files[..],
        ]
        .concat(),
    );
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        "message: guestbook failed at 2026-12-07T11:00:00Z, see ******"
    );
    let (ok, _, err) = ferry(&[
        "notifications",
        "check",
        "--config-map",
        "/nonexistent.yaml",
        "--secret",
        ":empty",
    ]);
    assert!(!ok && err.contains("reading /nonexistent.yaml"), "{err}");
}

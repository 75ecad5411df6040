//! Notifications end to end on the test environment: Argo CD's catalog triggers
//! on-sync-succeeded, on-sync-failed (a PreSync hook whose pod exits 1) and on-health-degraded
//! (a Deployment past its progress deadline), delivered to a loopback webhook receiver and to a
//! real SMTP server (aiosmtpd). Both receivers are down when the triggers fire; the controller
//! is killed and a new one started; the receivers come up and each notification arrives exactly
//! once — and not again after one more restart.

mod common;

use common::*;
use ferry_model::Application;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request the receiver got: method, path, the Authorization header, body.
type Received = Arc<Mutex<Vec<(String, String, String, String)>>>;

/// A loopback webhook receiver answering `status` (503 while "down"), recording every request.
async fn receiver(status: Arc<AtomicU16>, received: Received) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let (status, received) = (status.clone(), received.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                // Headers, then as much body as Content-Length says.
                let (head, body) = loop {
                    let n = conn.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse().ok())?
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            break (head.to_string(), body.to_string());
                        }
                    }
                };
                let mut first = head.lines().next().unwrap_or_default().split_whitespace();
                let method = first.next().unwrap_or_default().to_string();
                let path = first.next().unwrap_or_default().to_string();
                let auth = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("authorization")
                            .then(|| v.trim().to_string())
                    })
                    .unwrap_or_default();
                let code = status.load(Ordering::SeqCst);
                if code == 200 {
                    received.lock().unwrap().push((method, path, auth, body));
                }
                let _ = conn
                    .write_all(
                        format!(
                            "HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

const GOOD: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: \"1\"\n";

const FAILING_HOOK: &str = r#"apiVersion: batch/v1
kind: Job
metadata:
  name: migrate
  annotations:
    argocd.argoproj.io/hook: PreSync
spec:
  backoffLimit: 0
  template:
    metadata:
      annotations:
        testenv.ferry.dev/exit-code: "1"
    spec:
      restartPolicy: Never
      containers:
      - name: migrate
        image: busybox
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: after-the-hook
data:
  a: "1"
"#;

const STUCK: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: stuck
spec:
  replicas: 1
  progressDeadlineSeconds: 2
  selector:
    matchLabels: {app: stuck}
  template:
    metadata:
      labels: {app: stuck}
      annotations:
        testenv.ferry.dev/not-ready: "true"
    spec:
      containers:
      - name: app
        image: nginx
"#;

fn annotation_of(a: &Application) -> Value {
    a.annotations()
        .get("notified.notifications.argoproj.io")
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn catalog_triggers_reach_a_webhook_and_smtp_exactly_once_across_restarts() {
    let mut h = harness("notify").await;
    let status = Arc::new(AtomicU16::new(503));
    let received: Received = Arc::default();
    let hook_url = receiver(status.clone(), received.clone()).await;
    // The SMTP server's port is known now; the server starts after the restart.
    let smtp_port = ferry_testenv::process::free_port().unwrap();
    let smtp_dir = tempfile::tempdir().unwrap();

    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "argocd-notifications-secret" },
        "stringData": { "hook-token": "s3cret-hook-t0ken" },
    }))
    .unwrap();
    Api::<Secret>::namespaced(h.client.clone(), &h.ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": "argocd-notifications-cm" },
        "data": {
            "service.webhook.hook": format!(
                "url: {hook_url}/notify\nheaders:\n- name: Authorization\n  value: Bearer $hook-token\nretryMax: 1\nretryWaitMin: 100ms\nretryWaitMax: 200ms\n"
            ),
            "service.email": format!("host: 127.0.0.1\nport: {smtp_port}\nfrom: ferry@example.com\n"),
            "context": "argocdUrl: https://ferry.example\n",
        }
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(h.client.clone(), &h.ns)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();

    let cases = [
        ("good", GOOD, "on-sync-succeeded"),
        ("failing", FAILING_HOOK, "on-sync-failed"),
        ("stuck", STUCK, "on-health-degraded"),
    ];
    for (name, manifest, trigger) in cases {
        let repo = new_repo(&format!("notify-{name}"), &[("app.yaml", manifest)]);
        h.apply_app(app(
            name,
            &h.env.git.file_url(&repo),
            ".",
            &h.dest,
            json!({
                "metadata": { "annotations": {
                    format!("notifications.argoproj.io/subscribe.{trigger}.hook"): "",
                    format!("notifications.argoproj.io/subscribe.{trigger}.email"): format!("{name}@example.com"),
                } },
                "spec": { "syncPolicy": { "automated": {} } }
            }),
        ))
        .await;
    }
    h.wait_app("good", "the sync to succeed", |a| {
        op_phase(a) == "Succeeded"
    })
    .await;
    h.wait_app("failing", "the PreSync hook to fail the sync", |a| {
        op_phase(a) == "Failed"
    })
    .await;
    h.wait_app("stuck", "the Deployment to be Degraded", |a| {
        health_status(a) == "Degraded"
    })
    .await;

    // Both receivers are down: each trigger fires, each delivery fails, nothing is recorded.
    for (_, _, trigger) in cases {
        for service in ["hook", "email"] {
            h.eventually(
                &format!("a failed {trigger} delivery to {service}"),
                || async {
                    (ferry_controller::notifications::deliveries(trigger, service, false) > 0)
                        .then_some(())
                },
            )
            .await;
        }
    }
    let events: Vec<Event> = Api::<Event>::namespaced(h.client.clone(), &h.ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let failed: Vec<&str> = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("NotificationFailed"))
        .filter_map(|e| e.message.as_deref())
        .collect();
    assert!(
        failed
            .iter()
            .any(|m| m.contains("on-sync-failed could not notify hook") && m.contains("503")),
        "{failed:#?}"
    );
    assert!(
        failed.iter().any(|m| m.contains("could not notify email:")),
        "{failed:#?}"
    );
    assert!(!failed.iter().any(|m| m.contains("s3cret-hook-t0ken")));
    for (name, _, _) in cases {
        let a = h.apps().get(name).await.unwrap();
        assert_eq!(
            annotation_of(&a),
            Value::Null,
            "{name}: nothing was delivered"
        );
    }

    // The controller dies between trigger and delivery; the receivers come back.
    h.restart().await;
    status.store(200, Ordering::SeqCst);
    let smtp = ferry_testenv::SmtpServer::start_on(smtp_dir.path(), smtp_port)
        .await
        .unwrap();

    h.eventually("three webhook calls and three mails", || async {
        (received.lock().unwrap().len() >= 3 && smtp.messages().len() >= 3).then_some(())
    })
    .await;
    for (name, _, trigger) in cases {
        h.eventually(&format!("{name}'s notified annotation"), || async {
            let a = h.apps().get(name).await.ok()?;
            let recorded = annotation_of(&a);
            let keys: Vec<String> = recorded.as_object()?.keys().cloned().collect();
            (keys.len() == 2 && keys.iter().all(|k| k.contains(trigger))).then_some(())
        })
        .await;
    }

    // One more restart, and time for several evaluations: nothing is sent again.
    h.restart().await;
    for (name, _, _) in cases {
        h.refresh(name).await;
    }
    h.idle(Duration::from_secs(8)).await;
    let calls = received.lock().unwrap().clone();
    assert_eq!(calls.len(), 3, "{calls:#?}");
    for (method, path, auth, _) in &calls {
        assert_eq!(
            (method.as_str(), path.as_str(), auth.as_str()),
            ("GET", "/notify", "Bearer s3cret-hook-t0ken")
        );
    }
    let bodies: Vec<&str> = calls.iter().map(|c| c.3.as_str()).collect();
    assert!(
        bodies.iter().any(
            |b| b.contains("Application good has been successfully synced at")
                && b.contains("https://ferry.example/applications/good?operation=true")
        ),
        "{bodies:#?}"
    );
    assert!(
        bodies
            .iter()
            .any(|b| b.contains("The sync operation of application failing has failed")),
        "{bodies:#?}"
    );
    assert!(
        bodies
            .iter()
            .any(|b| b.contains("Application stuck has degraded.")),
        "{bodies:#?}"
    );
    let mails = smtp.messages();
    assert_eq!(mails.len(), 3, "{:#?}", mails);
    let mut subjects: Vec<(String, String)> = mails
        .iter()
        .map(|m| {
            (
                m.header("To").unwrap_or_default(),
                m.header("Subject").unwrap_or_default(),
            )
        })
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        [
            (
                "failing@example.com".to_string(),
                "Failed to sync application failing.".to_string()
            ),
            (
                "good@example.com".to_string(),
                "Application good has been successfully synced.".to_string()
            ),
            (
                "stuck@example.com".to_string(),
                "Application stuck has degraded.".to_string()
            ),
        ]
    );
    assert!(
        mails
            .iter()
            .all(|m| m.header("From").as_deref() == Some("ferry@example.com"))
    );
    for (trigger, service) in [("on-sync-succeeded", "hook"), ("on-sync-failed", "email")] {
        assert_eq!(
            ferry_controller::notifications::deliveries(trigger, service, true),
            1,
            "{trigger} to {service}"
        );
    }
    h.task.abort();
}

#[tokio::test]
async fn a_broken_configuration_is_reported_and_the_rest_still_works() {
    let h = harness("notify-bad").await;
    let status = Arc::new(AtomicU16::new(200));
    let received: Received = Arc::default();
    let hook_url = receiver(status, received.clone()).await;
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": "argocd-notifications-cm" },
        "data": {
            "service.webhook.receiver": format!("url: {hook_url}\n"),
            "trigger.on-typo": "- when: app.status.sync.status = 'Synced'\n  send: [app-sync-succeeded]\n",
            "template.app-created": "message: '{{ .app.metadata.name '\n",
            "subscriptions": "- recipients: [receiver]\n  triggers: [on-sync-succeeded, on-typo, on-created]\n",
        }
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(h.client.clone(), &h.ns)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    let repo = new_repo("notify-bad", &[("cm.yaml", GOOD)]);
    h.apply_app(app(
        "plain",
        &h.env.git.file_url(&repo),
        ".",
        &h.dest,
        json!({ "spec": { "syncPolicy": { "automated": {} } } }),
    ))
    .await;
    h.wait_app("plain", "the sync to succeed", |a| {
        op_phase(a) == "Succeeded"
    })
    .await;
    // The good trigger is delivered through the global subscription ...
    h.eventually("the on-sync-succeeded webhook call", || async {
        (received.lock().unwrap().len() == 1).then_some(())
    })
    .await;
    // ... and the broken ones are reported on the ConfigMap and on the app, never skipped quietly.
    let reasons = |events: &[Event], reason: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .filter_map(|e| e.message.clone())
            .collect()
    };
    let events = h
        .eventually("the problems to be reported", || async {
            let events: Vec<Event> = Api::<Event>::namespaced(h.client.clone(), &h.ns)
                .list(&ListParams::default())
                .await
                .ok()?
                .items;
            let on_app = reasons(&events, "NotificationTriggerFailed");
            let failed = reasons(&events, "NotificationFailed");
            (!reasons(&events, "InvalidConfiguration").is_empty()
                && on_app.iter().any(|m| m.contains("on-typo"))
                && failed
                    .iter()
                    .any(|m| m.contains("template 'app-created' is invalid")))
            .then_some(events)
        })
        .await;
    let config_event = &reasons(&events, "InvalidConfiguration")[0];
    assert!(
        config_event.contains("trigger.on-typo: [0].when:"),
        "{config_event}"
    );
    assert!(
        config_event.contains("template.app-created: message: template:"),
        "{config_event}"
    );
    assert_eq!(received.lock().unwrap().len(), 1);
}

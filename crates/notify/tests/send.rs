//! The services against loopback stand-ins of the receivers' HTTP APIs (no Slack or GitHub
//! runs here; the SMTP service is tested against a real server in the controller's tests):
//! what each request carries, retries, and errors with secrets masked.

use ferry_notify::{Config, Destination, Due};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: String,
}

/// Serves `answer(request, n)` (status, JSON body) on loopback, recording each request.
async fn stand_in(
    answer: impl Fn(&Request, usize) -> (u16, Value) + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<Request>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Request>>> = Arc::default();
    let answer = Arc::new(answer);
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let (log, answer) = (log.clone(), answer.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let req = loop {
                    let n = conn.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some((head, body)) = text.split_once("\r\n\r\n") else {
                        continue;
                    };
                    let mut lines = head.lines();
                    let mut first = lines.next().unwrap_or_default().split_whitespace();
                    let headers: BTreeMap<String, String> = lines
                        .filter_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            Some((k.trim().to_lowercase(), v.trim().to_string()))
                        })
                        .collect();
                    let len: usize = headers
                        .get("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if body.len() >= len {
                        break Request {
                            method: first.next().unwrap_or_default().into(),
                            path: first.next().unwrap_or_default().into(),
                            headers,
                            body: body.to_string(),
                        };
                    }
                };
                let n = {
                    let mut log = log.lock().unwrap();
                    log.push(req.clone());
                    log.len()
                };
                let (status, body) = answer(&req, n);
                let body = body.to_string();
                let _ = conn
                    .write_all(
                        format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    (format!("http://{addr}"), seen)
}

fn config(pairs: &[(&str, String)], secret: &[(&str, &str)]) -> Config {
    let data = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let secret = secret
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let cfg = Config::parse(&data, &secret);
    assert!(cfg.problems.is_empty(), "{:?}", cfg.problems);
    cfg
}

fn app() -> Value {
    json!({
        "metadata": {"name": "guestbook"},
        "spec": {"source": {"repoURL": "https://github.com/acme/guestbook.git"}},
        "status": {"sync": {"status": "Synced"}, "health": {"status": "Healthy"},
                   "operationState": {"phase": "Succeeded", "finishedAt": "2026-12-07T11:00:00Z",
                                      "syncResult": {"revision": "0123456789abcdef"}}}
    })
}

async fn send(cfg: &Config, template: &str, service: &str, recipient: &str) -> Result<(), String> {
    let due = Due {
        trigger: "t".into(),
        templates: vec![template.into()],
        destination: Destination {
            service: service.into(),
            recipient: recipient.into(),
        },
        state_key: String::new(),
        once_per: None,
    };
    let n = ferry_notify::render(cfg, &app(), &due)?;
    ferry_notify::send::deliver(cfg, &n, &due.destination).await
}

#[tokio::test]
async fn webhook_sends_the_template_block_and_retries_server_errors_only() {
    let (url, seen) = stand_in(|_, n| {
        if n < 3 {
            (503, json!({}))
        } else {
            (200, json!({}))
        }
    })
    .await;
    let cfg = config(
        &[
            (
                "service.webhook.deploys",
                format!(
                    "url: {url}/base/\nheaders:\n- name: X-Token\n  value: $token\nbasicAuth:\n  username: u\n  password: $pw\nretryMax: 3\nretryWaitMin: 10ms\nretryWaitMax: 20ms\n"
                ),
            ),
            (
                "template.deployed",
                "message: plain\nwebhook:\n  deploys:\n    method: POST\n    path: /apps/{{.app.metadata.name}}\n    body: '{\"rev\": \"{{.app.status.operationState.syncResult.revision}}\"}'\n".into(),
            ),
        ],
        &[("token", "t0k3n-value"), ("pw", "pa55word")],
    );
    send(&cfg, "deployed", "deploys", "").await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "two 503s, then 200");
    let r = &seen[2];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/base/apps/guestbook")
    );
    assert_eq!(r.body, r#"{"rev": "0123456789abcdef"}"#);
    assert_eq!(r.headers["x-token"], "t0k3n-value");
    assert_eq!(r.headers["authorization"], "Basic dTpwYTU1d29yZA==");

    // A 4xx is not retried; the error names the status and masks the secrets in the URL.
    let (url, seen) = stand_in(|_, _| (400, json!({"error": "bad"}))).await;
    let cfg = config(
        &[(
            "service.webhook.hook",
            format!("url: {url}/$path-secret\nretryWaitMin: 10ms\n"),
        )],
        &[("path-secret", "s3cr3t-path")],
    );
    let e = send(&cfg, "app-sync-succeeded", "hook", "")
        .await
        .unwrap_err();
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert!(
        e.contains("400") && !e.contains("s3cr3t-path") && e.contains("******"),
        "{e}"
    );
    // Without a webhook block the message is the body, sent with GET.
    let r = seen.lock().unwrap()[0].clone();
    assert_eq!(r.method, "GET");
    assert!(
        r.body
            .contains("Application guestbook has been successfully synced"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn slack_posts_the_message_attachments_and_threads_with_the_bot_token() {
    let (url, seen) = stand_in(|req, n| {
        if req.headers.get("authorization").map(String::as_str) != Some("Bearer xoxb-secret") {
            return (200, json!({"ok": false, "error": "invalid_auth"}));
        }
        (
            200,
            json!({"ok": true, "ts": format!("17000000{n}.000100")}),
        )
    })
    .await;
    let cfg = config(
        &[
            ("service.slack", format!("token: $slack-token\napiURL: {url}/api/\nusername: ferry\nicon: \":rocket:\"\n")),
            (
                "template.threaded",
                "message: '{{.app.metadata.name}} synced'\nslack:\n  attachments: '[{\"title\": \"{{.app.metadata.name}}\", \"color\": \"#18be52\"}]'\n  groupingKey: '{{.app.metadata.name}}'\n".into(),
            ),
        ],
        &[("slack-token", "xoxb-secret")],
    );
    send(&cfg, "threaded", "slack", "deploys").await.unwrap();
    send(&cfg, "threaded", "slack", "deploys").await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].path, "/api/chat.postMessage");
    let first: Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(first["channel"], "deploys");
    assert_eq!(first["text"], "guestbook synced");
    assert_eq!(first["username"], "ferry");
    assert_eq!(first["icon_emoji"], ":rocket:");
    assert_eq!(first["attachments"][0]["title"], "guestbook");
    assert!(first.get("thread_ts").is_none());
    // The second message with the same groupingKey replies in the first one's thread.
    let second: Value = serde_json::from_str(&seen[1].body).unwrap();
    assert_eq!(second["thread_ts"], "170000001.000100");

    let cfg = config(
        &[(
            "service.slack",
            format!("token: wrong-token\napiURL: {url}/api/\n"),
        )],
        &[],
    );
    let e = send(&cfg, "app-sync-succeeded", "slack", "deploys")
        .await
        .unwrap_err();
    assert!(e.contains("invalid_auth"), "{e}");
}

fn rsa_key() -> String {
    let out = std::process::Command::new("openssl")
        .args(["genrsa", "2048"])
        .output()
        .expect("openssl");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn github_sets_a_commit_status_as_an_app_installation() {
    let (url, seen) = stand_in(|req, _| {
        if req.path == "/api/v3/app/installations/42/access_tokens" {
            // A JWT: three base64url parts, RS256, issued by the App.
            let jwt = req.headers["authorization"].trim_start_matches("Bearer ");
            let claims = jwt.split('.').nth(1).unwrap_or_default();
            use base64::Engine;
            let claims: Value = serde_json::from_slice(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(claims)
                    .unwrap_or_default(),
            )
            .unwrap_or_default();
            if claims["iss"] != "7" {
                return (401, json!({"message": "bad jwt"}));
            }
            return (201, json!({"token": "ghs_installation"}));
        }
        if req.headers.get("authorization").map(String::as_str) == Some("token ghs_installation") {
            (201, json!({}))
        } else {
            (401, json!({}))
        }
    })
    .await;
    let key = rsa_key();
    let cfg = config(
        &[
            (
                "service.github",
                format!("appID: 7\ninstallationID: \"42\"\nprivateKey: $github-privateKey\nenterpriseBaseURL: {url}\n"),
            ),
            (
                "template.status",
                "message: '{{.app.metadata.name}} is synced'\ngithub:\n  status:\n    state: success\n    label: continuous-delivery/{{.app.metadata.name}}\n    targetURL: https://cd.example/applications/{{.app.metadata.name}}\n".into(),
            ),
        ],
        &[("github-privateKey", &key)],
    );
    send(&cfg, "status", "github", "").await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    let status = &seen[1];
    assert_eq!(
        (status.method.as_str(), status.path.as_str()),
        (
            "POST",
            "/api/v3/repos/acme/guestbook/statuses/0123456789abcdef"
        )
    );
    let body: Value = serde_json::from_str(&status.body).unwrap();
    assert_eq!(
        body,
        json!({
            "state": "success",
            "description": "guestbook is synced",
            "context": "continuous-delivery/guestbook",
            "target_url": "https://cd.example/applications/guestbook",
        })
    );
    // A key that is not one is a configuration problem, found when the ConfigMap is read.
    let broken = Config::parse(
        &[(
            "service.github".to_string(),
            "appID: 7\ninstallationID: 1\nprivateKey: nope\n".to_string(),
        )]
        .into_iter()
        .collect(),
        &BTreeMap::new(),
    );
    assert!(
        broken
            .problems
            .iter()
            .any(|p| p.key == "service.github" && p.message.contains("privateKey")),
        "{:?}",
        broken.problems
    );
}

use super::*;
use crate::expr::{Env, Program, Val};
use serde_json::json;
use std::collections::BTreeMap;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-07T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn eval(src: &str, app: &Json) -> Result<String, String> {
    let p = Program::compile(src).map_err(|e| format!("compile: {e}"))?;
    let ctx = json!({"argocdUrl": "https://cd.example"});
    let secrets = json!({});
    let env = Env {
        app,
        context: &ctx,
        secrets: &secrets,
        now: now(),
    };
    p.eval(&env).map(|v| v.to_string()).map_err(|e| e.0)
}

fn synced_app(phase: &str, health: &str) -> Json {
    json!({
        "metadata": {"name": "guestbook", "labels": {"team": "a"}},
        "spec": {"source": {"repoURL": "https://github.com/acme/guestbook.git"}},
        "status": {
            "sync": {"status": "Synced", "revision": "abc123"},
            "health": {"status": health, "lastTransitionTime": "2026-12-07T11:00:05Z"},
            "operationState": {
                "phase": phase, "message": "one or more objects failed to apply",
                "startedAt": "2026-12-07T10:58:00Z", "finishedAt": "2026-12-07T11:00:00Z",
                "syncResult": {"revision": "abc123"}
            },
            "conditions": [{"type": "SyncError", "message": "boom"}]
        }
    })
}

#[test]
fn conditions_follow_expr_semantics() {
    let app = synced_app("Succeeded", "Healthy");
    let cases = [
        ("app.status.operationState.phase in ['Succeeded']", "true"),
        (
            "app.status.operationState.phase not in ['Error', 'Failed']",
            "true",
        ),
        (
            "app.status.health.status == 'Degraded' or 1 + 2 * 3 == 7",
            "true",
        ),
        ("not (app.status.sync.status == 'Synced')", "false"),
        ("!true && false", "false"),
        ("app.status.missing == nil", "true"),
        ("app.status.missing?.deeper?.still", "<nil>"),
        ("app.status.missing?.deeper ?? 'fallback'", "fallback"),
        ("app.status.conditions[0].type", "SyncError"),
        ("app.status.conditions[-1].message + '!'", "boom!"),
        ("len(app.status.conditions) > 0 ? 'has' : 'none'", "has"),
        ("'team' in app.metadata.labels", "true"),
        (
            "app.metadata.name startsWith 'guest' and app.metadata.name matches '^g.*k$'",
            "true",
        ),
        ("app.metadata.name contains 'book'", "true"),
        (
            "time.Now().Sub(time.Parse(app.status.operationState.startedAt)).Minutes() >= 5",
            "true",
        ),
        (
            "time.Now().Sub(time.Parse(app.status.operationState.startedAt)) > time.Minute * 61",
            "true",
        ),
        (
            "time.Now().Sub(time.Parse(app.status.operationState.startedAt)) > time.Hour",
            "true",
        ),
        (
            "time.Parse('2026-12-07T11:00:00Z').Equal(time.Parse(app.status.operationState.finishedAt))",
            "true",
        ),
        (
            "strings.ReplaceAll(app.metadata.name, 'guest', 'visitor')",
            "visitorbook",
        ),
        (
            "repo.FullNameByRepoURL(app.spec.source.repoURL)",
            "acme/guestbook",
        ),
        (
            "repo.RepoURLToHTTPS('git@github.com:acme/guestbook.git')",
            "https://github.com/acme/guestbook",
        ),
        ("upper(context.argocdUrl) endsWith 'EXAMPLE'", "true"),
        ("7 % 3 == 1 and 7 / 2 == 3.5 and -(2) < 0", "true"),
    ];
    for (src, want) in cases {
        assert_eq!(eval(src, &app).as_deref(), Ok(want), "{src}");
    }
}

#[test]
fn a_field_of_nil_is_an_error_and_names_are_checked_at_compile_time() {
    let app = json!({"status": {}});
    let e = eval("app.status.operationState.phase == 'Failed'", &app).unwrap_err();
    assert!(e.contains("cannot fetch phase from <nil>"), "{e}");
    // The catalog's guard short-circuits.
    assert_eq!(
        eval(
            "app.status.operationState != nil and app.status.operationState.phase in ['Failed']",
            &app
        )
        .as_deref(),
        Ok("false")
    );
    for (src, want) in [
        ("ap.status == nil", "unknown name \"ap\""),
        ("time.Prase('x')", "time.Prase is not known"),
        (
            "repo.GetCommitMetadata('abc').Author",
            "not supported by Ferry",
        ),
        ("foo(1)", "unknown function \"foo\""),
        ("app.status ==", "ends too early"),
        ("app.status == 'x' )", "unexpected \")\""),
        ("app.metadata.name matches '('", "bad pattern"),
        ("'open", "not closed"),
    ] {
        let e = Program::compile(src).unwrap_err().0;
        assert!(e.contains(want), "{src}: {e}");
    }
}

#[test]
fn condition_keys_match_argo_cds() {
    // The keys Argo CD records for its catalog's on-sync-succeeded and on-sync-failed.
    assert_eq!(
        config::condition_key(
            0,
            "app.status.operationState != nil and app.status.operationState.phase in ['Succeeded']"
        ),
        "[0].IwKhHw9Hu8IE3z5Y8CQE4vReLYs"
    );
    assert_eq!(
        config::condition_key(
            0,
            "app.status.operationState != nil and app.status.operationState.phase in ['Error', 'Failed']"
        ),
        "[0].QocUZC1QzO--b2WEwALX85YPE5o"
    );
    let cfg = Config::parse(&BTreeMap::new(), &BTreeMap::new());
    assert!(cfg.problems.is_empty(), "{:?}", cfg.problems);
    assert_eq!(
        cfg.triggers["on-health-degraded"][0].key,
        "[0].zoG5zUjYGjimkwCGgIQGjx1hO5s"
    );
    assert_eq!(cfg.triggers.len(), 8);
    assert_eq!(cfg.templates.len(), 8);
}

fn cm(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn services_get_secrets_and_every_broken_key_is_a_problem() {
    let data = cm(&[
        (
            "service.webhook.hook",
            "url: https://hooks.example/$hook-path\nheaders:\n- name: Authorization\n  value: Bearer $hook-token\n",
        ),
        (
            "service.email",
            "host: smtp.example\nport: 587\nfrom: cd@example\npassword: $missing\n",
        ),
        ("service.teams", "recipientUrls: {}\n"),
        ("service.webhook.bad", "url: https://x\nretries: 3\n"),
        (
            "trigger.on-typo",
            "- when: app.status.sync.status = 'x'\n  send: [app-sync-failed]\n",
        ),
        (
            "trigger.on-ghost",
            "- when: 'true'\n  send: [no-such-template]\n",
        ),
        ("template.broken", "message: '{{ .app.metadata.name '\n"),
        (
            "template.other",
            "message: hi\nteams:\n  title: x\nwebhok: {}\n",
        ),
        ("defaultTriggers", "[on-sync-succeeded, on-nothing]"),
        (
            "subscriptions",
            "- recipients: [hook, pager:me]\n  triggers: [on-sync-failed]\n",
        ),
        ("config.yaml", "triggers: []"),
        ("contxt", "argocdUrl: x"),
    ]);
    let secret = cm(&[("hook-path", "p4th-s3cret"), ("hook-token", "t0ken-s3cret")]);
    let cfg = Config::parse(&data, &secret);
    let crate::config::ServiceKind::Webhook(hook) = &cfg.services["hook"].kind else {
        panic!("webhook expected");
    };
    assert_eq!(hook.url, "https://hooks.example/p4th-s3cret");
    assert_eq!(hook.headers[0].value, "Bearer t0ken-s3cret");
    assert_eq!(
        cfg.redact("GET https://hooks.example/p4th-s3cret with t0ken-s3cret failed"),
        "GET https://hooks.example/****** with ****** failed"
    );
    let problems: Vec<String> = cfg
        .problems
        .iter()
        .map(|p| format!("{}: {}", p.key, p.message))
        .collect();
    let expect = [
        "service.email: references $missing",
        "service.teams: service type 'teams' is not supported by Ferry",
        "service.webhook.bad: unknown options retries",
        "trigger.on-typo: [0].when: unexpected",
        "trigger.on-ghost: sends template 'no-such-template', which is not configured",
        "template.broken: message: template:",
        "template.other: unknown fields webhok",
        "defaultTriggers: trigger 'on-nothing' is not configured",
        "subscriptions: [0]: service 'pager' is not configured",
        "config.yaml: the legacy config.yaml format",
        "contxt: unknown key",
    ];
    for want in expect {
        assert!(
            problems.iter().any(|p| p.starts_with(want)),
            "{want} not in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), expect.len(), "{problems:#?}");
    // Nothing secret in any problem.
    assert!(!problems.iter().any(|p| p.contains("s3cret")));
}

fn subscribed(cfg: &Config, annotations: &[(&str, &str)]) -> Destinations {
    let mut out = Destinations::new();
    let ann = cm(annotations);
    let problems = subscribe::from_annotations(&mut out, ann.iter(), cfg);
    assert!(problems.is_empty(), "{problems:?}");
    out
}

#[test]
fn subscriptions_from_annotations_defaults_and_the_global_list() {
    let data = cm(&[
        ("service.webhook.hook", "url: http://127.0.0.1:1/\n"),
        ("service.slack", "token: xoxb-1\n"),
        ("defaultTriggers", "[on-sync-failed]"),
        (
            "defaultTriggers.slack",
            "[on-sync-succeeded, on-health-degraded]",
        ),
        (
            "subscriptions",
            "- recipients: [slack:ops, hook]\n  triggers: [on-deployed]\n  selector: team=a,tier notin (db)\n- recipients: [slack:never]\n  selector: team=b\n",
        ),
    ]);
    let cfg = Config::parse(&data, &BTreeMap::new());
    assert!(cfg.problems.is_empty(), "{:?}", cfg.problems);
    let mut d = subscribed(
        &cfg,
        &[
            (
                "notifications.argoproj.io/subscribe.on-sync-failed.slack",
                "a; b ;",
            ),
            ("notifications.argoproj.io/subscribe.hook", ""),
            ("notifications.argoproj.io/subscribe.slack", "c"),
            ("other/annotation", "x"),
        ],
    );
    subscribe::global(&mut d, &cm(&[("team", "a")]), &cfg);
    let flat: Vec<String> = d
        .iter()
        .flat_map(|(t, ds)| {
            ds.iter()
                .map(move |x| format!("{t}>{}:{}", x.service, x.recipient))
        })
        .collect();
    assert_eq!(
        flat,
        [
            "on-deployed>slack:ops",
            "on-deployed>hook:",
            "on-health-degraded>slack:c",
            "on-sync-failed>hook:",
            "on-sync-failed>slack:a",
            "on-sync-failed>slack:b",
            "on-sync-succeeded>slack:c",
        ]
    );
}

#[test]
fn edge_triggered_without_once_per_and_once_per_value_with_it() {
    let data = cm(&[
        ("service.webhook.hook", "url: http://127.0.0.1:1/\n"),
        (
            "trigger.on-out-of-sync",
            "- when: app.status.sync.status == 'OutOfSync'\n  send: [app-sync-succeeded]\n",
        ),
    ]);
    let cfg = Config::parse(&data, &BTreeMap::new());
    let dests = subscribed(
        &cfg,
        &[
            (
                "notifications.argoproj.io/subscribe.on-out-of-sync.hook",
                "",
            ),
            (
                "notifications.argoproj.io/subscribe.on-sync-succeeded.hook",
                "",
            ),
        ],
    );
    let mut state = State::default();
    let mut app = synced_app("Succeeded", "Healthy");
    app["status"]["sync"]["status"] = json!("OutOfSync");
    let p = plan(&cfg, &app, &dests, &state, now());
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    let keys: Vec<&str> = p.due.iter().map(|d| d.state_key.as_str()).collect();
    let out_of_sync_key = format!(
        "on-out-of-sync:{}:hook:",
        config::condition_key(0, "app.status.sync.status == 'OutOfSync'")
    );
    assert_eq!(
        keys,
        [
            out_of_sync_key.as_str(),
            "abc123:on-sync-succeeded:[0].IwKhHw9Hu8IE3z5Y8CQE4vReLYs:hook:"
        ]
    );
    for d in &p.due {
        state.record(&d.state_key, 1);
    }
    // Nothing twice.
    assert!(plan(&cfg, &app, &dests, &state, now()).due.is_empty());
    // The condition goes false: the edge-triggered entry is forgotten, the oncePer one kept.
    app["status"]["sync"]["status"] = json!("Synced");
    app["status"]["operationState"]["phase"] = json!("Running");
    let p = plan(&cfg, &app, &dests, &state, now());
    assert_eq!(p.forget, std::slice::from_ref(&out_of_sync_key));
    state.forget(&p.forget[0]);
    // The same revision succeeding again sends nothing; a new revision sends once more.
    app["status"]["operationState"]["phase"] = json!("Succeeded");
    assert!(plan(&cfg, &app, &dests, &state, now()).due.is_empty());
    app["status"]["operationState"]["syncResult"]["revision"] = json!("def456");
    let p = plan(&cfg, &app, &dests, &state, now());
    assert_eq!(p.due.len(), 1);
    assert_eq!(p.due[0].once_per.as_deref(), Some("def456"));
    // An unconfigured trigger is an error, not a quiet nothing.
    let dests = subscribed(
        &cfg,
        &[("notifications.argoproj.io/subscribe.on-sync-faild.hook", "")],
    );
    let p = plan(&cfg, &app, &dests, &state, now());
    assert_eq!(
        p.errors,
        [(
            "on-sync-faild".to_string(),
            "trigger 'on-sync-faild' is not configured".to_string()
        )]
    );
}

#[test]
fn templates_apply_in_order_and_missing_keys_print_no_value() {
    let data = cm(&[
        ("service.webhook.hook", "url: http://127.0.0.1:1/\n"),
        (
            "template.first",
            "message: first {{.app.metadata.name}}\nemail:\n  subject: s1\nwebhook:\n  hook:\n    method: POST\n    path: /apps/{{.app.metadata.name}}\n    body: '{\"app\": \"{{.app.metadata.name}}\", \"to\": \"{{.serviceType}}\", \"x\": \"{{.app.nope}}\"}'\n",
        ),
        (
            "template.second",
            "message: '{{ if eq .recipient \"\" }}{{ end }}'\nemail:\n  subject: '{{ .context.argocdUrl | upper }}'\n",
        ),
        ("context", "argocdUrl: https://cd.example\n"),
    ]);
    let cfg = Config::parse(&data, &BTreeMap::new());
    assert!(cfg.problems.is_empty(), "{:?}", cfg.problems);
    let app = synced_app("Succeeded", "Healthy");
    let due = Due {
        trigger: "t".into(),
        templates: vec!["first".into(), "second".into()],
        destination: Destination {
            service: "hook".into(),
            recipient: String::new(),
        },
        state_key: "k".into(),
        once_per: None,
    };
    let n = render(&cfg, &app, &due).unwrap();
    // The second message renders empty, so the first stays.
    assert_eq!(n.message, "first guestbook");
    assert_eq!(n.email.as_ref().unwrap().subject, "HTTPS://CD.EXAMPLE");
    let hook = &n.webhook["hook"];
    assert_eq!(hook.path, "/apps/guestbook");
    assert_eq!(
        hook.body,
        r#"{"app": "guestbook", "to": "hook", "x": "<no value>"}"#
    );
    let catalog = Due {
        templates: vec!["app-sync-failed".into()],
        ..due
    };
    let n = render(&cfg, &app, &catalog).unwrap();
    assert!(
        n.message.contains("The sync operation of application guestbook has failed at 2026-12-07T11:00:00Z with the following error: one or more objects failed to apply"),
        "{}",
        n.message
    );
    assert!(
        n.message
            .contains("https://cd.example/applications/guestbook?operation=true")
    );
}

#[test]
fn state_annotation_round_trips_and_keeps_the_newest_hundred() {
    let mut s = State::from_annotation(Some(r#"{"a:[0].x:hook:": 5}"#));
    assert!(s.contains("a:[0].x:hook:"));
    for i in 0..120 {
        s.record(&format!("k{i:03}"), 100 + i);
    }
    assert_eq!(s.0.len(), state::MAX_ENTRIES);
    assert!(!s.contains("a:[0].x:hook:"));
    assert!(s.contains("k119") && !s.contains("k019") && s.contains("k020"));
    assert_eq!(State::from_annotation(Some("not json")), State::default());
    assert_eq!(State::default().to_annotation(), None);
}

#[test]
fn a_finished_operation_newer_than_the_status_waits() {
    let mut app = synced_app("Succeeded", "Healthy");
    app["status"]["reconciledAt"] = json!("2026-12-07T10:59:00Z");
    assert!(status_out_of_date(&app));
    app["status"]["reconciledAt"] = json!("2026-12-07T11:00:01Z");
    assert!(!status_out_of_date(&app));
    app["status"]["operationState"]["phase"] = json!("Running");
    app["status"]["reconciledAt"] = json!("2026-12-07T10:00:00Z");
    assert!(!status_out_of_date(&app));
}

#[test]
fn once_per_values_print_like_go() {
    let app = json!({"status": {"n": 3, "b": true}});
    for (src, want) in [
        ("app.status?.nope?.x", "<nil>"),
        ("app.status.n", "3"),
        ("app.status.b", "true"),
    ] {
        assert_eq!(eval(src, &app).as_deref(), Ok(want));
    }
    let v = Val::List(vec![Val::Int(1), Val::Str("a".into())]);
    assert_eq!(v.to_string(), "[1 a]");
}

#[test]
fn a_new_app_without_status_evaluates_like_argo_cds_empty_structs() {
    let cfg = Config::parse(&BTreeMap::new(), &BTreeMap::new());
    let mut app = json!({"metadata": {"name": "new"}});
    argo_shape(&mut app);
    let mut dests = Destinations::new();
    for t in [
        "on-sync-succeeded",
        "on-health-degraded",
        "on-sync-status-unknown",
        "on-deployed",
    ] {
        dests.entry(t.into()).or_default().push(Destination {
            service: "hook".into(),
            recipient: String::new(),
        });
    }
    let p = plan(&cfg, &app, &dests, &State::default(), now());
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert!(p.due.is_empty());
}

#[test]
fn a_service_subscription_without_default_triggers_is_a_problem() {
    let cfg = Config::parse(
        &cm(&[("service.webhook.hook", "url: http://127.0.0.1:1/\n")]),
        &BTreeMap::new(),
    );
    let mut out = Destinations::new();
    let ann = cm(&[("notifications.argoproj.io/subscribe.hook", "")]);
    let problems = subscribe::from_annotations(&mut out, ann.iter(), &cfg);
    assert!(out.is_empty());
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0].contains("subscribes to nothing"),
        "{problems:?}"
    );
}

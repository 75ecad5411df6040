//! Every parser answers arbitrary input with a value or an error, never a panic.

use proptest::prelude::*;
use serde_json::json;
use std::collections::BTreeMap;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: ferry_fuzz::cases(),
        // Input that fails is kept in tests/parsers.proptest-regressions.
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    }
}

/// Text made mostly of the characters a parser cares about, so inputs get past the first token.
fn syntaxy(chars: &'static str, max: usize) -> impl Strategy<Value = String> {
    let alphabet: Vec<char> = chars.chars().collect();
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(alphabet),
            1 => any::<char>(),
        ],
        0..max,
    )
    .prop_map(|v| v.into_iter().collect())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn trigger_conditions(src in syntaxy("app.status?[]()'\"`=!<>&|+-*/%?: 0123456789 and or not in nil true time.Parse Now strings repo", 80)) {
        if let Ok(program) = ferry_notify::expr::Program::compile(&src) {
            let app = json!({"status": {"sync": {"status": "Synced"}, "list": [1, "a", null]}, "metadata": {"name": "x"}});
            let empty = json!({});
            let env = ferry_notify::expr::Env { app: &app, context: &empty, secrets: &empty, now: Default::default() };
            let _ = program.eval(&env);
        }
    }

    #[test]
    fn go_templates(src in syntaxy("{{}}-. $x:=|()\"`'range if else end with define len index printf eq upper default toJson .a.b", 80)) {
        let data = ferry_gotemplate::Value::from(json!({"a": {"b": [1, 2]}, "s": "t"}));
        let opts = ferry_gotemplate::Options { funcs: ferry_gotemplate::sprig::FUNCS, missing_key_error: false };
        let _ = ferry_gotemplate::render_with(&src, &data, &opts);
    }

    #[test]
    fn notification_templates_and_triggers(src in syntaxy("message: email:\n subject body webhook: {}[]-'\"{{.app}}", 120)) {
        let data: BTreeMap<String, String> = [
            ("template.t".to_string(), src.clone()),
            ("trigger.t".to_string(), src.clone()),
            ("service.webhook.w".to_string(), src.clone()),
            ("subscriptions".to_string(), src),
        ].into_iter().collect();
        let _ = ferry_notify::Config::parse(&data, &BTreeMap::new());
    }

    #[test]
    fn label_selectors(src in syntaxy("a=b!,() in notin x", 40), key in "[a-z]{0,3}", value in "[a-z]{0,3}") {
        if let Ok(s) = ferry_notify::subscribe::Selector::parse(&src) {
            let labels: BTreeMap<String, String> = [(key, value)].into_iter().collect();
            let _ = s.matches(&labels);
        }
    }

    #[test]
    fn globs_and_regexes(pattern in syntaxy("*?[]{}!/\\.^$()+|ab", 30), text in syntaxy("ab/.-", 30)) {
        let _ = ferry_model::glob::glob_or_regex_match(&pattern, &text);
    }

    #[test]
    fn manifests(text in syntaxy("---\n- :{}[]&*!<> apiVersion kind metadata name v1 ConfigMap\"'|>", 200)) {
        let _ = ferry_render::parse_manifests(&text, "fuzz");
    }

    #[test]
    fn avp_placeholders(path in syntaxy("<>path:#|vault secret/data/x ", 40), value in syntaxy("<>path:#|base64encode jsonParse ", 60)) {
        let manifest = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "annotations": {"avp.kubernetes.io/path": path}},
            "stringData": {"k": value.clone(), value: "x"},
        });
        let _ = ferry_secrets::placeholder::needed(&manifest, &ferry_secrets::placeholder::Settings { path_validation: None });
    }

    #[test]
    fn webhook_bodies(body in prop::collection::vec(any::<u8>(), 0..400), json_body in syntaxy("{}[]\":,ref refs/heads/main repository project git_http_url commits added modified", 200)) {
        let headers: BTreeMap<String, String> = [
            ("x-gitlab-event".to_string(), "Push Hook".to_string()),
            ("x-gitlab-token".to_string(), "s3cret".to_string()),
        ].into_iter().collect();
        let secrets = ferry_server::webhook::WebhookSecrets { gitlab: Some("s3cret".into()), ..Default::default() };
        let _ = ferry_server::webhook::parse(&headers, &body, &secrets);
        let _ = ferry_server::webhook::parse(&headers, json_body.as_bytes(), &secrets);
    }
}

/// YAML aliases that expand exponentially (a "billion laughs"): refused or bounded, quickly.
#[test]
fn yaml_alias_bombs_are_bounded() {
    let mut doc = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h"]
        .iter()
        .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
    {
        doc.push_str(&format!("{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
    }
    let started = std::time::Instant::now();
    let result = ferry_render::parse_manifests(&doc, "bomb");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    if let Ok(values) = result {
        let size = serde_json::to_string(&values).map(|s| s.len()).unwrap_or(0);
        assert!(size < 100_000_000, "expanded to {size} bytes");
    }
}

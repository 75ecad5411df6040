//! avp's placeholder semantics, as table tests built from its documented examples and its own
//! test fixtures (pkg/kube/util_test.go, template_test.go, docs/howitworks.md).

use std::collections::BTreeMap;
use std::sync::Arc;

use ferry_secrets::placeholder::{self, Lookup, SecretRef, Settings};
use serde_json::{Map, Value, json};

/// Secrets by path, as a store would hold them; counts reads.
struct Store {
    secrets: BTreeMap<String, Value>,
    reads: Vec<SecretRef>,
}

impl Store {
    fn new(secrets: Value) -> Store {
        Store {
            secrets: secrets
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            reads: Vec::new(),
        }
    }
}

impl Lookup for Store {
    fn secret(&mut self, r: &SecretRef) -> Result<Arc<Map<String, Value>>, String> {
        self.reads.push(r.clone());
        let key = match &r.version {
            Some(v) => format!("{}#{v}", r.path),
            None => r.path.clone(),
        };
        self.secrets
            .get(&key)
            .and_then(Value::as_object)
            .cloned()
            .map(Arc::new)
            .ok_or_else(|| format!("Could not find secrets at path {}", r.path))
    }
}

fn with_path(kind: &str, data_key: &str, data: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": kind,
        "metadata": {"name": "x", "annotations": {"avp.kubernetes.io/path": "path/to/secret"}},
        data_key: data,
    })
}

fn resolve(manifest: &Value, store: &mut Store) -> Result<Value, String> {
    placeholder::replace(manifest, &Settings::default(), store).map_err(|e| e.0)
}

#[test]
fn generic_and_inline_placeholders_in_strings() {
    let mut store = Store::new(json!({
        "path/to/secret": {"name": "app", "tag": "latest", "namespace": "default", "port": 80, "replicas": 1},
        "secret/testing": {"secret-var-clear": "test-password"},
    }));
    let m = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "<name>", "annotations": {"avp.kubernetes.io/path": "path/to/secret"}},
        "spec": {
            "replicas": "<replicas>",
            "template": {"spec": {"containers": [{
                "image": "foo.io/<name>:<tag>",
                "args": ["--ns=<namespace>", "<path:secret/testing#secret-var-clear>"],
                "env": [{"name": "PORT", "value": "<port>"}],
            }]}},
        },
    });
    let out = resolve(&m, &mut store).unwrap();
    assert_eq!(out["metadata"]["name"], "app");
    assert_eq!(
        out["spec"]["replicas"], 1,
        "a number replaces the whole field, unquoted"
    );
    let c = &out["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "foo.io/app:latest");
    assert_eq!(c["args"], json!(["--ns=default", "test-password"]));
    assert_eq!(c["env"][0]["value"], 80);
}

#[test]
fn without_the_path_annotation_only_inline_placeholders_count() {
    let mut store = Store::new(json!({"secret/testing": {"k": "v"}}));
    let m = json!({"kind": "ConfigMap", "metadata": {"name": "x"},
        "data": {"doc": "use <angle> brackets", "v": "<path:secret/testing#k>"}});
    let out = resolve(&m, &mut store).unwrap();
    assert_eq!(out["data"]["doc"], "use <angle> brackets");
    assert_eq!(out["data"]["v"], "v");
}

#[test]
fn secrets_base64_values_are_replaced_inside_and_reencoded() {
    let mut store = Store::new(json!({"path/to/secret": {
        "namespace": "default", "access_key_id": "testkey", "secret_access_key_id": "testsecret",
        "username": "user", "password": "pass", "host": "host", "port": "9443", "database": "my-db",
        "secret-var-clear": "test-password",
    }}));
    for (input, want) in [
        ("PG5hbWVzcGFjZSB8IGJhc2U2NGVuY29kZT4=", "WkdWbVlYVnNkQT09"),
        (
            "W2RlZmF1bHRdCmF3c19hY2Nlc3Nfa2V5X2lkPTxhY2Nlc3Nfa2V5X2lkPgphd3Nfc2VjcmV0X2FjY2Vzc19rZXk9PHNlY3JldF9hY2Nlc3Nfa2V5X2lkPgo=",
            "W2RlZmF1bHRdCmF3c19hY2Nlc3Nfa2V5X2lkPXRlc3RrZXkKYXdzX3NlY3JldF9hY2Nlc3Nfa2V5PXRlc3RzZWNyZXQK",
        ),
        (
            "cG9zdGdyZXM6Ly88dXNlcm5hbWU+OjxwYXNzd29yZD5APGhvc3Q+Ojxwb3J0Pi88ZGF0YWJhc2U+P3NzbG1vZGU9cmVxdWlyZQ==",
            "cG9zdGdyZXM6Ly91c2VyOnBhc3NAaG9zdDo5NDQzL215LWRiP3NzbG1vZGU9cmVxdWlyZQ==",
        ),
        ("<namespace | base64encode>", "ZGVmYXVsdA=="),
        (
            "c29tZQ==<secret-var-clear | base64encode>dmFsdWU=",
            "c29tZQ==dGVzdC1wYXNzd29yZA==dmFsdWU=",
        ),
    ] {
        let out = resolve(
            &with_path("Secret", "data", json!({"v": input})),
            &mut store,
        )
        .unwrap();
        assert_eq!(out["data"]["v"], want, "{input}");
    }
    // A `data` value that is one whole placeholder must end up base64: a value that is not
    // base64 text already is encoded (avp 1.x inserts it as it is, which the API server refuses),
    // one that is stays as it is, as does text around a placeholder.
    let out = resolve(
        &with_path("Secret", "data", json!({"v": "<password>"})),
        &mut store,
    )
    .unwrap();
    assert_eq!(out["data"]["v"], "cGFzcw==");
    let mut store = Store::new(json!({"path/to/secret": {"b64": "dGVzdA==", "plain": "s3cret!"}}));
    let out = resolve(
        &with_path(
            "Secret",
            "data",
            json!({"a": "<b64>", "b": "<plain>", "c": "<plain | base64encode>"}),
        ),
        &mut store,
    )
    .unwrap();
    assert_eq!(
        out["data"],
        json!({"a": "dGVzdA==", "b": "czNjcmV0IQ==", "c": "czNjcmV0IQ=="})
    );
    let out = resolve(
        &with_path("Secret", "stringData", json!({"v": "<plain>"})),
        &mut store,
    )
    .unwrap();
    assert_eq!(out["stringData"]["v"], "s3cret!", "stringData takes text");
}

#[test]
fn inline_placeholders_in_a_base64_value_without_the_annotation() {
    let mut store = Store::new(json!({"secret/testing": {"secret-var-clear": "test-password"}}));
    let m = json!({"kind": "Secret", "metadata": {"name": "x"}, "data": {
        "v": "cGFzc3dvcmQxOiA8cGF0aDpzZWNyZXQvdGVzdGluZyNzZWNyZXQtdmFyLWNsZWFyPgpwYXNzd29yZDI6IDxwYXRoOnNlY3JldC90ZXN0aW5nI3NlY3JldC12YXItY2xlYXI+"
    }});
    let out = resolve(&m, &mut store).unwrap();
    assert_eq!(
        out["data"]["v"],
        "cGFzc3dvcmQxOiB0ZXN0LXBhc3N3b3JkCnBhc3N3b3JkMjogdGVzdC1wYXNzd29yZA=="
    );
}

#[test]
fn modifiers_chain_as_documented() {
    let mut store = Store::new(json!({
        "secret/json": {"data": {"deployment": {"replicas": 2, "image": {"name": "json-test", "tag": "latest"}}, "service": {"ports": [80, 8080]}}},
        "secret/jsonstring": {"secret": "{\"credentials\":{\"user\":\"test-user\",\"pass\":\"test-password\"}}"},
        "secret/yaml": {"secret": "key1: secret1\nkey2: secret2"},
        "secret/foo": {"secret": "bar"},
    }));
    let m = json!({"kind": "Deployment", "metadata": {"name": "x"}, "spec": {
        "replicas": "<path:secret/json#data | jsonPath {.deployment.replicas} | jsonParse>",
        "image": "foo.com/<path:secret/json#data | jsonPath {.deployment.image.name}>:<path:secret/json#data | jsonPath {.deployment.image.tag}>",
        "user": "<path:secret/jsonstring#secret | jsonParse | jsonPath {.credentials.user} | base64encode>",
        "key1": "<path:secret/yaml#secret | yamlParse | jsonPath {.key1} | base64encode>",
        "sum": "<path:secret/foo#secret | sha256sum | base64encode>",
    }});
    let out = resolve(&m, &mut store).unwrap();
    assert_eq!(out["spec"]["replicas"], 2);
    assert_eq!(out["spec"]["image"], "foo.com/json-test:latest");
    assert_eq!(out["spec"]["user"], "dGVzdC11c2Vy");
    assert_eq!(out["spec"]["key1"], "c2VjcmV0MQ==");
    assert_eq!(
        out["spec"]["sum"],
        "ZmNkZTJiMmVkYmE1NmJmNDA4NjAxZmI3MjFmZTliNWMzMzhkMTBlZTQyOWVhMDRmYWU1NTExYjY4ZmJmOGZiOQ=="
    );
}

#[test]
fn errors_name_the_placeholder_field_and_string_and_are_all_collected() {
    let mut store = Store::new(json!({"path/to/secret": {"data": {"a": 1}}}));
    let m = with_path(
        "Deployment",
        "spec",
        json!({"one": "<string>", "image": "<data | jsonPath {.missingPath}>", "two": "<data | undefinedModifier>"}),
    );
    let e = resolve(&m, &mut store).unwrap_err();
    assert!(
        e.starts_with("Replace: could not replace all placeholders in Template:\n"),
        "{e}"
    );
    for want in [
        "replaceString: missing Vault value for placeholder string in string one: <string>",
        "jsonPath: missingPath is not found for placeholder data in string image: <data | jsonPath {.missingPath}>",
        "invalid modifier: undefinedModifier for placeholder data in string two: <data | undefinedModifier>",
    ] {
        assert!(e.contains(want), "{want}\nin: {e}");
    }
    let m = json!({"kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"v": "<path:somewhere#string>"}});
    let e = resolve(&m, &mut Store::new(json!({"somewhere": {}}))).unwrap_err();
    assert!(e.contains("missing Vault value for placeholder path:somewhere#string in string v: <path:somewhere#string>"), "{e}");
}

#[test]
fn annotations_ignore_remove_missing_versions_and_path_validation() {
    let mut store = Store::new(json!({
        "path/to/secret": {"num": "NQ=="},
        "path/to/secret#2": {"num": "Ng=="},
        "secret/v": {"k": "latest"},
        "secret/v#1": {"k": "first"},
    }));
    // remove-missing drops the keys whose value is missing.
    let mut m = with_path(
        "Secret",
        "data",
        json!({"MY_SECRET_STRING": "<string>", "MY_SECRET_NUM": "<num>"}),
    );
    m["metadata"]["annotations"]["avp.kubernetes.io/remove-missing"] = json!("true");
    assert_eq!(
        resolve(&m, &mut store).unwrap()["data"],
        json!({"MY_SECRET_NUM": "NQ=="})
    );
    // ... only on Secrets and ConfigMaps.
    m["kind"] = json!("Deployment");
    assert_eq!(
        resolve(&m, &mut store).unwrap_err(),
        "avp.kubernetes.io/remove-missing annotation can only be used on Secret or ConfigMap resources"
    );
    // ignore leaves the manifest as it is.
    let mut m = with_path("ConfigMap", "data", json!({"v": "<missing>"}));
    m["metadata"]["annotations"]["avp.kubernetes.io/ignore"] = json!("True");
    assert_eq!(resolve(&m, &mut store).unwrap(), m);
    // secret-version picks the annotation path's version; inline placeholders carry their own.
    let mut m = with_path(
        "ConfigMap",
        "data",
        json!({"n": "<num>", "k": "<path:secret/v#k#1>", "l": "<path:secret/v#k>"}),
    );
    m["metadata"]["annotations"]["avp.kubernetes.io/secret-version"] = json!("2");
    let out = resolve(&m, &mut store).unwrap();
    assert_eq!(
        out["data"],
        json!({"n": "Ng==", "k": "first", "l": "latest"})
    );
    // kv-version travels with every read of the manifest.
    let mut m = with_path("ConfigMap", "data", json!({"k": "<path:secret/v#k>"}));
    m["metadata"]["annotations"]["avp.kubernetes.io/kv-version"] = json!("1");
    store.reads.clear();
    resolve(&m, &mut store).unwrap();
    assert!(
        store
            .reads
            .iter()
            .all(|r| r.kv_version.as_deref() == Some("1"))
    );
    // AVP_PATH_VALIDATION refuses a path before anything is read.
    let settings = Settings {
        path_validation: Some(regex::Regex::new(r"^secret/").unwrap()),
    };
    let m = json!({"kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"v": "<path:../blah/blah#k>"}});
    let e = placeholder::replace(&m, &settings, &mut store)
        .unwrap_err()
        .0;
    assert!(
        e.contains("the path ../blah/blah is disallowed by AVP_PATH_VALIDATION restriction"),
        "{e}"
    );
}

#[test]
fn needed_lists_each_secret_once_for_many_manifests() {
    let m1 = with_path(
        "ConfigMap",
        "data",
        json!({"a": "<a>", "b": "<path:x/y#k>"}),
    );
    let m2 = json!({"kind": "Secret", "metadata": {"name": "s"}, "data": {
        // base64 of "<path:x/y#k>"
        "c": "PHBhdGg6eC95I2s+", "d": "<path:x/y#k#3>"}});
    let wanted = placeholder::needed_by_all([&m1, &m2], &Settings::default());
    let paths: Vec<(String, Option<String>)> =
        wanted.into_iter().map(|r| (r.path, r.version)).collect();
    assert_eq!(
        paths,
        [
            ("path/to/secret".to_string(), None),
            ("x/y".to_string(), None),
            ("x/y".to_string(), Some("3".to_string())),
        ]
    );
}

#[test]
fn configmap_values_become_strings() {
    let mut store =
        Store::new(json!({"path/to/secret": {"port": 80, "on": true, "map": {"a": 1}}}));
    let out = resolve(
        &with_path("ConfigMap", "data", json!({"p": "<port>", "o": "<on>"})),
        &mut store,
    )
    .unwrap();
    assert_eq!(out["data"], json!({"p": "80", "o": "true"}));
    assert!(
        resolve(
            &with_path("ConfigMap", "data", json!({"m": "<map>"})),
            &mut store
        )
        .is_err()
    );
}

use serde_json::json;

use super::*;
use crate::parse_application;

fn policy(name: &str, type_name: &str, properties: Value) -> Policy {
    Policy {
        name: name.into(),
        type_name: type_name.into(),
        properties,
    }
}

fn cluster(name: &str, labels: &[(&str, &str)]) -> ClusterInfo {
    ClusterInfo {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        version: None,
    }
}

fn fleet() -> Vec<ClusterInfo> {
    vec![
        cluster("beijing", &[("region", "cn"), ("env", "prod")]),
        cluster("hangzhou", &[("region", "cn"), ("env", "test")]),
        cluster("frankfurt", &[("region", "eu"), ("env", "prod")]),
    ]
}

fn names(p: &[Placement]) -> Vec<&str> {
    p.iter().map(|p| p.cluster.as_str()).collect()
}

fn message(e: OamError) -> String {
    e.to_string()
}

// ---- topology

#[test]
fn topology_by_name_keeps_order_and_namespace_and_drops_duplicates() {
    let p = policy(
        "t",
        "topology",
        json!({"clusters": ["frankfurt", "local", "beijing", "frankfurt"], "namespace": "prod"}),
    );
    let got = placements(&p, &fleet()).unwrap();
    assert_eq!(names(&got), ["frankfurt", "local", "beijing"]);
    assert!(got.iter().all(|p| p.namespace.as_deref() == Some("prod")));
}

#[test]
fn topology_unknown_cluster_is_named() {
    let p = policy(
        "t",
        "topology",
        json!({"clusters": ["beijing", "shanghai"]}),
    );
    let e = message(placements(&p, &fleet()).unwrap_err());
    assert!(
        e.starts_with("policy `t`: unknown cluster `shanghai`"),
        "{e}"
    );
    assert!(e.contains("local, beijing, hangzhou, frankfurt"), "{e}");
}

#[test]
fn topology_by_label_selector_needs_every_label() {
    let p = policy(
        "t",
        "topology",
        json!({"clusterLabelSelector": {"region": "cn", "env": "prod"}}),
    );
    let got = placements(&p, &fleet()).unwrap();
    assert_eq!(names(&got), ["beijing"]);
    assert_eq!(got[0].namespace, None);
    // The deprecated alias works too.
    let p = policy(
        "t",
        "topology",
        json!({"clusterSelector": {"region": "cn"}}),
    );
    assert_eq!(
        names(&placements(&p, &fleet()).unwrap()),
        ["beijing", "hangzhou"]
    );
}

#[test]
fn topology_empty_selection_is_an_error_unless_allow_empty() {
    let p = policy(
        "t",
        "topology",
        json!({"clusterLabelSelector": {"region": "us"}}),
    );
    let e = message(placements(&p, &fleet()).unwrap_err());
    assert!(
        e.contains("no cluster matches clusterLabelSelector region=us"),
        "{e}"
    );
    let p = policy(
        "t",
        "topology",
        json!({"clusterLabelSelector": {"region": "us"}, "allowEmpty": true}),
    );
    assert!(placements(&p, &fleet()).unwrap().is_empty());
    let p = policy("t", "topology", json!({"clusters": []}));
    assert!(placements(&p, &fleet()).is_err());
}

#[test]
fn topology_without_clusters_is_the_hub() {
    let p = policy("t", "topology", json!({"namespace": "x"}));
    assert_eq!(
        placements(&p, &[]).unwrap(),
        [Placement {
            cluster: "local".into(),
            namespace: Some("x".into())
        }]
    );
}

#[test]
fn topology_rejects_bad_properties() {
    let both = policy(
        "t",
        "topology",
        json!({"clusters": ["local"], "clusterLabelSelector": {"a": "b"}}),
    );
    assert!(message(placements(&both, &fleet()).unwrap_err()).contains("exclusive"));
    let typo = policy("t", "topology", json!({"cluster": ["local"]}));
    assert!(message(placements(&typo, &fleet()).unwrap_err()).contains("unknown field `cluster`"));
    let wrong = policy("t", "override", json!({}));
    assert!(message(placements(&wrong, &fleet()).unwrap_err()).contains("expected a `topology`"));
}

// ---- override

fn components() -> Vec<Component> {
    let app = parse_application(
        r#"
apiVersion: core.oam.dev/v1beta1
kind: Application
metadata: {name: app}
spec:
  components:
    - name: web
      type: webservice
      properties: {image: nginx, cpu: "1", env: [{name: A, value: "1"}], labels: {a: "1", b: "2"}}
      traits:
        - {type: scaler, properties: {replicas: 1}}
        - {type: expose, properties: {port: [80]}}
    - name: web-canary
      type: webservice
      properties: {image: nginx}
    - name: db
      type: raw
      properties: {apiVersion: v1, kind: ConfigMap}
"#,
    )
    .unwrap();
    app.spec.components
}

fn find<'a>(cs: &'a [Component], name: &str) -> &'a Component {
    cs.iter().find(|c| c.name == name).unwrap()
}

#[test]
fn override_merges_properties_as_json_merge_patch() {
    let p = policy(
        "o",
        "override",
        json!({"components": [{"name": "web", "properties":
            {"image": "nginx:2", "cpu": null, "env": [{"name": "B"}], "labels": {"b": "3"}}}]}),
    );
    let out = apply_overrides(&components(), &[&p]).unwrap();
    assert_eq!(
        find(&out, "web").properties,
        json!({"image": "nginx:2", "env": [{"name": "B"}], "labels": {"a": "1", "b": "3"}})
    );
    // Traits untouched, other components untouched.
    assert_eq!(find(&out, "web").traits, components()[0].traits);
    assert_eq!(find(&out, "web-canary"), &components()[1]);
}

#[test]
fn override_merges_adds_and_disables_traits_by_type() {
    let p = policy(
        "o",
        "override",
        json!({"components": [{"name": "web", "traits": [
            {"type": "scaler", "properties": {"replicas": 3}},
            {"type": "expose", "disable": true},
            {"type": "labels", "properties": {"x": "y"}},
            {"type": "sidecar", "disable": true}
        ]}]}),
    );
    let out = apply_overrides(&components(), &[&p]).unwrap();
    let traits: Vec<(&str, &Value)> = find(&out, "web")
        .traits
        .iter()
        .map(|t| (t.type_name.as_str(), &t.properties))
        .collect();
    assert_eq!(
        traits,
        [
            ("scaler", &json!({"replicas": 3})),
            ("labels", &json!({"x": "y"}))
        ]
    );
}

#[test]
fn override_without_name_hits_every_component_of_the_type() {
    let p = policy(
        "o",
        "override",
        json!({"components": [{"type": "webservice", "properties": {"cpu": "2"}}]}),
    );
    let out = apply_overrides(&components(), &[&p]).unwrap();
    assert_eq!(find(&out, "web").properties["cpu"], "2");
    assert_eq!(find(&out, "web-canary").properties["cpu"], "2");
    assert_eq!(find(&out, "db").properties.get("cpu"), None);
    let all = policy(
        "o",
        "override",
        json!({"components": [{"properties": {"z": 1}}]}),
    );
    let out = apply_overrides(&components(), &[&all]).unwrap();
    assert!(out.iter().all(|c| c.properties["z"] == 1));
}

#[test]
fn override_name_is_an_anchored_glob() {
    let p = policy(
        "o",
        "override",
        json!({"components": [{"name": "web*", "properties": {"image": "x"}}]}),
    );
    let out = apply_overrides(&components(), &[&p]).unwrap();
    assert_eq!(find(&out, "web").properties["image"], "x");
    assert_eq!(find(&out, "web-canary").properties["image"], "x");
    // Anchored: `eb` does not hit `web` (KubeVela's unanchored regexp would).
    let p = policy(
        "o",
        "override",
        json!({"components": [{"name": "*eb", "properties": {"image": "y"}}]}),
    );
    let out = apply_overrides(&components(), &[&p]).unwrap();
    assert_eq!(find(&out, "web").properties["image"], "y");
    assert_eq!(find(&out, "web-canary").properties["image"], "nginx");
    assert!(glob_match("a*b*c", "aXbYc"));
    assert!(!glob_match("a*b*c", "aXcYb"));
    assert!(!glob_match("ab*ba", "aba"));
}

#[test]
fn override_with_another_type_replaces_the_component() {
    let p = policy(
        "o",
        "override",
        json!({"components": [{"name": "db", "type": "k8s-objects",
            "properties": {"objects": []}}]}),
    );
    let out = apply_overrides(&components(), &[&p]).unwrap();
    let db = find(&out, "db");
    assert_eq!(db.type_name, "k8s-objects");
    assert_eq!(db.properties, json!({"objects": []}));
}

#[test]
fn override_adds_a_new_named_component_with_a_type_only() {
    let p = policy(
        "o",
        "override",
        json!({"components": [{"name": "cache", "type": "worker", "properties": {"image": "redis"}}]}),
    );
    let out = apply_overrides(&components(), &[&p]).unwrap();
    assert_eq!(out.last().unwrap().name, "cache");
    assert_eq!(out.last().unwrap().type_name, "worker");
    let p = policy("o", "override", json!({"components": [{"name": "cache"}]}));
    let e = message(apply_overrides(&components(), &[&p]).unwrap_err());
    assert!(e.contains("no component `cache` to override"), "{e}");
    // A glob that matches nothing adds nothing.
    let p = policy(
        "o",
        "override",
        json!({"components": [{"name": "cache*", "type": "worker"}]}),
    );
    assert_eq!(apply_overrides(&components(), &[&p]).unwrap().len(), 3);
}

#[test]
fn override_selector_keeps_named_components_in_order() {
    let p = policy("o", "override", json!({"selector": ["db", "web"]}));
    let out = apply_overrides(&components(), &[&p]).unwrap();
    let got: Vec<&str> = out.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(got, ["web", "db"]);
    let none = policy("o", "override", json!({"selector": []}));
    assert!(apply_overrides(&components(), &[&none]).unwrap().is_empty());
    let typo = policy("o", "override", json!({"selector": ["wbe"]}));
    assert!(
        message(apply_overrides(&components(), &[&typo]).unwrap_err())
            .contains("no component `wbe`")
    );
}

#[test]
fn overrides_apply_in_order() {
    let a = policy(
        "a",
        "override",
        json!({"components": [{"name": "web", "properties": {"image": "a"}}]}),
    );
    let b = policy(
        "b",
        "override",
        json!({"components": [{"name": "web", "properties": {"image": "b"}}]}),
    );
    assert_eq!(
        find(&apply_overrides(&components(), &[&a, &b]).unwrap(), "web").properties["image"],
        "b"
    );
    assert_eq!(
        find(&apply_overrides(&components(), &[&b, &a]).unwrap(), "web").properties["image"],
        "a"
    );
}

#[test]
fn override_rejects_bad_properties() {
    let p = policy(
        "o",
        "override",
        json!({"components": [{"name": "web", "properties": [1]}]}),
    );
    assert!(
        message(apply_overrides(&components(), &[&p]).unwrap_err()).contains("expected an object")
    );
    let p = policy("o", "override", json!({"component": []}));
    assert!(message(apply_overrides(&components(), &[&p]).unwrap_err()).contains("unknown field"));
}

#[test]
fn deploy_targets_cross_topologies_with_overrides() {
    let app = parse_application(
        r#"
apiVersion: core.oam.dev/v1beta1
kind: Application
metadata: {name: app}
spec:
  components:
    - {name: web, type: webservice, properties: {image: nginx}}
  policies:
    - {name: cn, type: topology, properties: {clusterLabelSelector: {region: cn}}}
    - {name: eu, type: topology, properties: {clusters: [frankfurt, beijing], namespace: eu}}
    - {name: big, type: override, properties: {components: [{name: web, traits: [{type: scaler, properties: {replicas: 5}}]}]}}
    - {name: gc, type: garbage-collect, properties: {}}
"#,
    )
    .unwrap();
    let t = deploy_targets(&app, &["cn".into(), "eu".into(), "big".into()], &fleet()).unwrap();
    let got: Vec<(&str, Option<&str>)> = t
        .iter()
        .map(|t| {
            (
                t.placement.cluster.as_str(),
                t.placement.namespace.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("beijing", None),
            ("hangzhou", None),
            ("frankfurt", Some("eu")),
            ("beijing", Some("eu"))
        ]
    );
    assert!(
        t.iter()
            .all(|t| t.components[0].traits[0].properties == json!({"replicas": 5}))
    );
    let local = deploy_targets(&app, &["big".into()], &fleet()).unwrap();
    assert_eq!(local.len(), 1);
    assert_eq!(local[0].placement, Placement::local());
    assert!(
        message(deploy_targets(&app, &["nope".into()], &fleet()).unwrap_err())
            .contains("policy `nope`: not found")
    );
    assert!(
        message(deploy_targets(&app, &["gc".into()], &fleet()).unwrap_err())
            .contains("not `garbage-collect`")
    );
}

// ---- resource selectors, garbage-collect, apply-once, shared-resource

fn object(kind: &str, name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": name, "labels": labels}})
}

fn workload() -> Value {
    object(
        "Deployment",
        "web",
        json!({"app.oam.dev/name": "app", "app.oam.dev/component": "web", "workload.oam.dev/type": "webservice"}),
    )
}

fn trait_output() -> Value {
    object(
        "Service",
        "web-service",
        json!({"app.oam.dev/name": "app", "app.oam.dev/component": "web", "trait.oam.dev/type": "expose"}),
    )
}

#[test]
fn selector_ands_given_lists_and_needs_one() {
    let s: ResourceSelector =
        serde_json::from_value(json!({"componentNames": ["web"], "resourceTypes": ["Service"]}))
            .unwrap();
    assert!(s.matches(&trait_output()));
    assert!(!s.matches(&workload()));
    let s: ResourceSelector = serde_json::from_value(json!({"oamTypes": ["TRAIT"]})).unwrap();
    assert!(s.matches(&trait_output()));
    assert!(!s.matches(&workload()));
    let s: ResourceSelector =
        serde_json::from_value(json!({"componentTypes": ["webservice"]})).unwrap();
    assert!(s.matches(&workload()));
    assert!(
        !s.matches(&trait_output()),
        "no workload.oam.dev/type on trait outputs"
    );
    assert!(!ResourceSelector::default().matches(&workload()));
    // A missing label never matches, not even an empty string in the list.
    let s: ResourceSelector = serde_json::from_value(json!({"traitTypes": [""]})).unwrap();
    assert!(!s.matches(&workload()));
}

#[test]
fn gc_first_rule_wins_default_on_app_update() {
    let p = policy(
        "gc",
        "garbage-collect",
        json!({"rules": [
            {"selector": {"resourceTypes": ["Service"]}, "strategy": "never"},
            {"selector": {"componentNames": ["web"]}, "strategy": "onAppDelete"}
        ]}),
    );
    let g = GarbageCollect::from_policy(&p).unwrap();
    assert_eq!(gc_strategy(&g, &trait_output()), GcStrategy::Never);
    assert_eq!(gc_strategy(&g, &workload()), GcStrategy::OnAppDelete);
    assert_eq!(
        gc_strategy(&g, &object("ConfigMap", "x", json!({}))),
        GcStrategy::OnAppUpdate
    );
    let keep = GarbageCollect::from_policy(&policy(
        "gc",
        "garbage-collect",
        json!({"keepLegacyResource": true, "rules": [{"selector": {"resourceTypes": ["Service"]}, "strategy": "never"}]}),
    ))
    .unwrap();
    assert_eq!(gc_strategy(&keep, &workload()), GcStrategy::OnAppDelete);
    assert_eq!(gc_strategy(&keep, &trait_output()), GcStrategy::Never);
}

#[test]
fn gc_rejects_bad_rules() {
    let bad = |props: Value| {
        message(GarbageCollect::from_policy(&policy("gc", "garbage-collect", props)).unwrap_err())
    };
    assert!(
        bad(json!({"rules": [{"selector": {"resourceTypes": ["X"]}, "strategy": "sometimes"}]}))
            .contains("unknown variant `sometimes`")
    );
    assert!(
        bad(json!({"rules": [{"selector": {}, "strategy": "never"}]})).contains("selects nothing")
    );
    assert!(
        bad(json!({"rules": [{"selector": {"oamTypes": ["workload"]}, "strategy": "never"}]}))
            .contains("not WORKLOAD or TRAIT")
    );
    assert!(bad(json!({"order": "random"})).contains("unknown variant"));
}

#[test]
fn apply_once_paths_by_stage() {
    let a = ApplyOnce::from_policy(&policy(
        "ao",
        "apply-once",
        json!({"enable": true, "rules": [
            {"selector": {"resourceTypes": ["Deployment"]}, "strategy": {"path": ["spec.replicas"], "affect": "onStateKeep"}},
            {"selector": {"resourceTypes": ["Service"]}, "strategy": {"path": ["spec.ports", "*"]}}
        ]}),
    ))
    .unwrap();
    assert_eq!(
        apply_once_paths(&a, &workload(), ApplyStage::StateKeep),
        ["spec.replicas"]
    );
    assert!(apply_once_paths(&a, &workload(), ApplyStage::Update).is_empty());
    assert_eq!(
        apply_once_paths(&a, &trait_output(), ApplyStage::Update),
        ["*"]
    );
    assert!(
        apply_once_paths(
            &a,
            &object("ConfigMap", "c", json!({})),
            ApplyStage::StateKeep
        )
        .is_empty()
    );

    let off = ApplyOnce {
        enable: false,
        ..a.clone()
    };
    assert!(apply_once_paths(&off, &workload(), ApplyStage::StateKeep).is_empty());
    let all = ApplyOnce::from_policy(&policy("ao", "apply-once", json!({"enable": true}))).unwrap();
    assert_eq!(
        apply_once_paths(&all, &workload(), ApplyStage::StateKeep),
        ["*"]
    );
    assert!(apply_once_paths(&all, &workload(), ApplyStage::Update).is_empty());
    let bad = ApplyOnce::from_policy(&policy(
        "ao",
        "apply-once",
        json!({"enable": true, "rules": [{"selector": {"resourceTypes": ["X"]}, "strategy": {"path": []}}]}),
    ));
    assert!(message(bad.unwrap_err()).contains("strategy.path"));
}

#[test]
fn shared_resource_any_rule() {
    let s = SharedResource::from_policy(&policy(
        "s",
        "shared-resource",
        json!({"rules": [{"selector": {"resourceNames": ["shared-ns"]}}, {"selector": {"resourceTypes": ["Namespace"]}}]}),
    ))
    .unwrap();
    assert!(is_shared(&s, &object("ConfigMap", "shared-ns", json!({}))));
    assert!(is_shared(&s, &object("Namespace", "other", json!({}))));
    assert!(!is_shared(&s, &workload()));
    assert!(
        SharedResource::from_policy(&policy("s", "shared-resource", json!({}))).is_err(),
        "rules is required"
    );
}

#[test]
fn replication_copies_selected_components_per_key_after_the_others() {
    let cs = components();
    let names: Vec<&str> = cs.iter().map(|c| c.name.as_str()).collect();
    let r = policy(
        "rep",
        "replication",
        json!({"keys": ["beijing", "hangzhou"], "selector": [names[0]]}),
    );
    let out = replicate(cs.clone(), &[&r]).unwrap();
    let got: Vec<(&str, Option<&str>)> = out
        .iter()
        .map(|c| (c.name.as_str(), c.replica_key.as_deref()))
        .collect();
    let mut want: Vec<(&str, Option<&str>)> = names[1..].iter().map(|n| (*n, None)).collect();
    want.push((names[0], Some("beijing")));
    want.push((names[0], Some("hangzhou")));
    assert_eq!(got, want);

    // A copy renders with context.replicaKey and the label; a definition that does not name
    // its objects with the key renders the same object twice, which is refused.
    let mut app = parse_application(
        "metadata: {name: a}\nspec: {components: [{name: w, type: worker, properties: {image: x}}]}",
    )
    .unwrap();
    let r = policy(
        "rep",
        "replication",
        json!({"keys": ["a", "b"], "selector": ["w"]}),
    );
    app.spec.components = replicate(app.spec.components.clone(), &[&r]).unwrap();
    assert_eq!(
        crate::component_context(&app, &app.spec.components[1])["replicaKey"],
        "b"
    );
    let e = crate::render(&app, &crate::Definitions::builtin().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("Deployment w is rendered twice") && e.contains("context.replicaKey"),
        "{e}"
    );

    for (props, want) in [
        (
            json!({"keys": ["a"], "selector": ["nope"]}),
            "no component selected to replicate",
        ),
        (
            json!({"keys": ["a", "a"], "selector": ["w"]}),
            "empty or repeated",
        ),
        (
            json!({"keys": ["a"], "selecter": ["w"]}),
            "unknown field `selecter`",
        ),
        (Value::Null, "must not be empty"),
    ] {
        let p = policy("rep", "replication", props);
        let e = replicate(app.spec.components.clone(), &[&p])
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{want}: {e}");
    }
}

#[test]
fn read_only_and_resource_update_rules_merge_and_select() {
    let mut app = parse_application(
        "metadata: {name: a}\nspec: {components: [{name: w, type: worker, properties: {image: x}}]}",
    )
    .unwrap();
    app.spec.policies = vec![
        policy(
            "ro1",
            "read-only",
            json!({"rules": [{"selector": {"componentNames": ["db"]}}]}),
        ),
        policy(
            "ro2",
            "read-only",
            json!({"rules": [{"selector": {"resourceTypes": ["Secret"]}}]}),
        ),
        policy(
            "ru",
            "resource-update",
            json!({"rules": [
                {"selector": {"resourceTypes": ["Deployment"]}, "strategy": {"recreateFields": ["spec.selector"]}},
                {"selector": {"resourceTypes": ["Deployment", "Service"]}, "strategy": {"op": "replace"}}
            ]}),
        ),
    ];
    check_policies(&app).unwrap();
    let ro = ReadOnly::of(&app).unwrap().unwrap();
    assert_eq!(ro.rules.len(), 2, "rules of both policies");
    let secret = json!({"kind": "Secret", "metadata": {"name": "s"}});
    let svc = json!({"kind": "Service", "metadata": {"name": "s"}});
    assert!(ro.selects(&secret) && !ro.selects(&svc));
    let ru = ResourceUpdate::of(&app).unwrap().unwrap();
    let dep = json!({"kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"a": "1"}}}});
    let s = ru.strategy(&dep).unwrap();
    assert_eq!(s.op, UpdateOp::Patch, "the first matching rule wins");
    let live_same = dep.clone();
    let mut live_other = dep.clone();
    live_other["spec"]["selector"]["matchLabels"]["a"] = json!("2");
    assert!(!must_recreate(s, &dep, &live_same).unwrap());
    assert!(must_recreate(s, &dep, &live_other).unwrap());
    assert!(
        must_recreate(s, &dep, &json!({"kind": "Deployment"}))
            .unwrap_err()
            .contains("no spec.selector in the live object")
    );
    assert_eq!(ru.strategy(&svc).unwrap().op, UpdateOp::Replace);

    app.spec.policies = vec![policy(
        "ro",
        "read-only",
        json!({"rules": [{"selector": {}}]}),
    )];
    assert!(
        check_policies(&app)
            .unwrap_err()
            .to_string()
            .contains("selects nothing")
    );
    app.spec.policies = vec![policy(
        "ru",
        "resource-update",
        json!({"rules": [{"selector": {"resourceTypes": ["X"]}, "strategy": {"op": "merge"}}]}),
    )];
    assert!(
        check_policies(&app)
            .unwrap_err()
            .to_string()
            .contains("unknown variant `merge`")
    );
}

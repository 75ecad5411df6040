//! Generators and templates over in-memory inputs, against the parameters Argo CD documents.

use super::*;
use crate::generate::Cluster;
use crate::render::Mode;
use ferry_model::appset::ApplicationSet;
use serde_json::{Value, json};
use std::collections::BTreeMap;

struct Mem {
    clusters: Vec<Cluster>,
    files: BTreeMap<String, String>,
}

impl Tree for Mem {
    fn dirs(&self) -> Vec<String> {
        let mut d = std::collections::BTreeSet::new();
        for f in self.files.keys() {
            let mut parts: Vec<&str> = f.split('/').collect();
            parts.pop();
            for i in 1..=parts.len() {
                d.insert(parts[..i].join("/"));
            }
        }
        d.into_iter().collect()
    }
    fn files(&self) -> Vec<String> {
        self.files.keys().cloned().collect()
    }
    fn read(&self, path: &str) -> Result<Vec<u8>, String> {
        self.files
            .get(path)
            .map(|s| s.as_bytes().to_vec())
            .ok_or_else(|| "no such file".into())
    }
}

impl Inputs for Mem {
    fn clusters(&self) -> Vec<Cluster> {
        self.clusters.clone()
    }
    fn pull_requests(
        &self,
        _: &ferry_model::appset::PullRequestGenerator,
    ) -> Result<Vec<crate::generate::PullRequest>, Error> {
        Ok(vec![
            crate::generate::PullRequest {
                number: 7,
                title: "Add feature".into(),
                branch: "feature/New_Thing".into(),
                target_branch: "main".into(),
                head_sha: "0123456789abcdef".into(),
                labels: vec!["preview".into()],
                author: "ann".into(),
            },
            crate::generate::PullRequest {
                number: 8,
                branch: "wip".into(),
                target_branch: "main".into(),
                head_sha: "fedcba9876543210".into(),
                ..Default::default()
            },
        ])
    }
    fn repo(&self, url: &str, revision: &str) -> Result<&dyn Tree, Error> {
        if url == "https://git.example/repo.git" {
            Ok(self)
        } else {
            Err(Error::NeedRepo {
                url: url.into(),
                revision: revision.into(),
            })
        }
    }
}

fn inputs() -> Mem {
    let files = [
        ("apps/guestbook/app.yaml", "x: 1"),
        ("apps/helm-guestbook/app.yaml", "x: 1"),
        ("apps/excluded/app.yaml", "x: 1"),
        ("apps/.hidden/app.yaml", "x: 1"),
        (
            "clusters/dev/config.json",
            r#"{"cluster": {"name": "dev", "address": "https://1.2.3.4"}, "tags": ["a", "b"]}"#,
        ),
        (
            "clusters/prod/config.json",
            r#"{"cluster": {"name": "prod", "address": "https://5.6.7.8"}}"#,
        ),
    ];
    Mem {
        clusters: vec![Cluster {
            name: "Staging_EU".into(),
            server: "https://staging.example:6443".into(),
            project: String::new(),
            labels: BTreeMap::from([("env".into(), "staging".into())]),
            annotations: BTreeMap::new(),
        }],
        files: files
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn set(spec: Value) -> ApplicationSet {
    serde_json::from_value(json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "ApplicationSet",
        "metadata": { "name": "s", "namespace": "argocd" },
        "spec": spec,
    }))
    .unwrap()
}

fn run(spec: Value) -> Result<Vec<Value>, Error> {
    let s = set(spec);
    let mode = Mode::of(&s)?;
    let (generated, _) = generate(&s.spec.generators, &s.spec.template, &mode, &inputs())?;
    Ok(render_all(&s, &generated)?
        .into_iter()
        .map(|r| r.app)
        .collect())
}

fn template(name: &str, path: &str, server: &str) -> Value {
    json!({
        "metadata": { "name": name },
        "spec": { "project": "default", "source": { "repoURL": "https://git.example/repo.git", "path": path, "targetRevision": "HEAD" },
            "destination": { "server": server, "namespace": "ns" } },
    })
}

#[test]
fn list_elements_fill_the_template_and_unknown_params_stay() {
    let apps = run(json!({
        "generators": [{ "list": { "elements": [{ "cluster": "a", "url": "https://a" }, { "cluster": "b", "url": "https://b" }] } }],
        "template": template("guestbook-{{cluster}}", "{{ cluster }}/{{nope}}", "{{url}}"),
    }))
    .unwrap();
    assert_eq!(apps.len(), 2);
    assert_eq!(apps[0]["metadata"]["name"], "guestbook-a");
    assert_eq!(apps[0]["spec"]["source"]["path"], "a/{{nope}}");
    assert_eq!(apps[1]["spec"]["destination"]["server"], "https://b");
    assert_eq!(
        apps[0]["metadata"]["finalizers"],
        json!([RESOURCES_FINALIZER])
    );
    assert_eq!(apps[0]["metadata"]["namespace"], "argocd");
}

#[test]
fn clusters_include_the_local_one_unless_selecting() {
    let all = run(json!({
        "generators": [{ "clusters": {} }],
        "template": template("{{nameNormalized}}", "p", "{{server}}"),
    }))
    .unwrap();
    let names: Vec<&str> = all
        .iter()
        .map(|a| a["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["in-cluster", "staging-eu"]);
    let selected = run(json!({
        "generators": [{ "clusters": { "selector": { "matchLabels": { "env": "staging" } }, "values": { "tier": "{{name}}-x" } } }],
        "template": template("{{nameNormalized}}-{{metadata.labels.env}}", "{{values.tier}}", "{{server}}"),
    }))
    .unwrap();
    assert_eq!(selected.len(), 1, "a selector leaves the local cluster out");
    assert_eq!(selected[0]["metadata"]["name"], "staging-eu-staging");
    assert_eq!(selected[0]["spec"]["source"]["path"], "Staging_EU-x");
}

#[test]
fn git_directories_with_excludes_and_path_params() {
    let apps = run(json!({
        "generators": [{ "git": { "repoURL": "https://git.example/repo.git", "revision": "HEAD",
            "directories": [{ "path": "apps/*" }, { "path": "apps/excluded", "exclude": true }] } }],
        "template": template("{{path.basename}}", "{{path}}", "https://kubernetes.default.svc"),
    }))
    .unwrap();
    let names: Vec<&str> = apps
        .iter()
        .map(|a| a["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["guestbook", "helm-guestbook"]);
    assert_eq!(apps[1]["spec"]["source"]["path"], "apps/helm-guestbook");
}

#[test]
fn git_files_are_flattened_or_nested() {
    let flat = run(json!({
        "generators": [{ "git": { "repoURL": "https://git.example/repo.git", "revision": "HEAD", "files": [{ "path": "clusters/**/config.json" }] } }],
        "template": template("{{cluster.name}}-{{path.basename}}", "{{path[0]}}/{{path.filename}}/{{tags.1}}", "{{cluster.address}}"),
    }))
    .unwrap();
    assert_eq!(flat[0]["metadata"]["name"], "dev-dev");
    assert_eq!(flat[0]["spec"]["source"]["path"], "clusters/config.json/b");
    assert_eq!(
        flat[1]["spec"]["source"]["path"], "clusters/config.json/{{tags.1}}",
        "a file without the key leaves it"
    );
    assert_eq!(flat[1]["spec"]["destination"]["server"], "https://5.6.7.8");
    let go = run(json!({
        "goTemplate": true,
        "generators": [{ "git": { "repoURL": "https://git.example/repo.git", "revision": "HEAD", "files": [{ "path": "clusters/*/config.json" }] } }],
        "template": template("{{.cluster.name}}-{{index .path.segments 1}}", "{{.path.path}}", "{{.cluster.address}}"),
    }))
    .unwrap();
    assert_eq!(go[0]["metadata"]["name"], "dev-dev");
}

#[test]
fn matrix_of_git_directories_and_clusters() {
    let apps = run(json!({
        "generators": [{ "matrix": { "generators": [
            { "git": { "repoURL": "https://git.example/repo.git", "revision": "HEAD", "directories": [{ "path": "apps/*guestbook" }] } },
            { "clusters": {} },
        ] } }],
        "template": template("{{path.basename}}-{{nameNormalized}}", "{{path}}", "{{server}}"),
    }))
    .unwrap();
    let names: Vec<&str> = apps
        .iter()
        .map(|a| a["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "guestbook-in-cluster",
            "guestbook-staging-eu",
            "helm-guestbook-in-cluster",
            "helm-guestbook-staging-eu"
        ]
    );
}

#[test]
fn merge_overrides_by_key() {
    let apps = run(json!({
        "generators": [{ "merge": { "mergeKeys": ["name"], "generators": [
            { "list": { "elements": [{ "name": "a", "size": "1" }, { "name": "b", "size": "1" }] } },
            { "list": { "elements": [{ "name": "b", "size": "9" }, { "name": "c", "size": "9" }] } },
        ] } }],
        "template": template("{{name}}-{{size}}", "p", "https://kubernetes.default.svc"),
    }))
    .unwrap();
    let names: Vec<&str> = apps
        .iter()
        .map(|a| a["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a-1", "b-9"]);
}

#[test]
fn go_templates_with_missingkey_error_and_sprig() {
    let spec = |opts: Value| {
        json!({
            "goTemplate": true, "goTemplateOptions": opts,
            "generators": [{ "list": { "elements": [{ "cluster": "Prod_1", "n": 2 }] } }],
            "template": template("{{ .cluster | normalize }}-{{ add .n 1 }}", "{{ .missing }}", "https://kubernetes.default.svc"),
        })
    };
    let apps = run(spec(json!([]))).unwrap();
    assert_eq!(apps[0]["metadata"]["name"], "prod-1-3");
    assert_eq!(apps[0]["spec"]["source"]["path"], "<no value>");
    let e = run(spec(json!(["missingkey=error"])))
        .unwrap_err()
        .to_string();
    assert!(e.contains("map has no entry for key \"missing\""), "{e}");
}

#[test]
fn duplicate_names_and_bad_apps_are_refused() {
    let e = run(json!({
        "generators": [{ "list": { "elements": [{ "c": "a" }, { "c": "a" }] } }],
        "template": template("app-{{c}}", "p", "https://kubernetes.default.svc"),
    }))
    .unwrap_err()
    .to_string();
    assert!(e.contains("duplicate name: app-a"), "{e}");
    let e = run(json!({
        "generators": [{ "list": { "elements": [{ "c": "A B" }] } }],
        "template": template("{{c}}", "p", "https://kubernetes.default.svc"),
    }))
    .unwrap_err()
    .to_string();
    assert!(e.contains("metadata.name"), "{e}");
    let mut t = template("x-{{c}}", "p", "https://kubernetes.default.svc");
    t["spec"]["sourec"] = json!({});
    let e =
        run(json!({ "generators": [{ "list": { "elements": [{ "c": "a" }] } }], "template": t }))
            .unwrap_err()
            .to_string();
    assert!(e.contains("spec.sourec"), "{e}");
    let e = run(json!({ "generators": [{ "scmProvider": { "github": {} } }], "template": template("a", "p", "s") }))
        .unwrap_err()
        .to_string();
    assert!(e.contains("scmProvider"), "{e}");
}

#[test]
fn preserve_resources_leaves_no_finalizer_and_template_patch_applies() {
    let apps = run(json!({
        "goTemplate": true,
        "syncPolicy": { "preserveResourcesOnDeletion": true },
        "generators": [{ "list": { "elements": [{ "c": "a", "auto": true }] } }],
        "template": template("app-{{.c}}", "p", "https://kubernetes.default.svc"),
        "templatePatch": "{{ if .auto }}\nspec:\n  project: other\n  syncPolicy:\n    automated: {}\n{{ end }}\n",
    }))
    .unwrap();
    assert!(
        apps[0]["metadata"].get("finalizers").is_none(),
        "{}",
        apps[0]
    );
    assert_eq!(apps[0]["spec"]["syncPolicy"]["automated"], json!({}));
    assert_eq!(
        apps[0]["spec"]["project"], "default",
        "the patch cannot change the project"
    );
}

#[test]
fn a_repository_not_fetched_is_asked_for() {
    let e = run(json!({
        "generators": [{ "git": { "repoURL": "https://git.example/other.git", "revision": "main", "directories": [{ "path": "*" }] } }],
        "template": template("a", "p", "s"),
    }))
    .unwrap_err();
    assert_eq!(
        e,
        Error::NeedRepo {
            url: "https://git.example/other.git".into(),
            revision: "main".into()
        }
    );
}

#[test]
fn pull_requests_with_labels_filters_and_slugs() {
    let apps = run(json!({
        "generators": [{ "pullRequest": { "github": { "owner": "o", "repo": "r", "labels": ["preview"] },
            "filters": [{ "branchMatch": "^feature/" }] } }],
        "template": template("preview-{{number}}-{{branch_slug}}", "{{head_short_sha}}/{{head_short_sha_7}}", "https://kubernetes.default.svc"),
    }))
    .unwrap();
    assert_eq!(apps.len(), 1);
    assert_eq!(apps[0]["metadata"]["name"], "preview-7-feature-new-thing");
    assert_eq!(apps[0]["spec"]["source"]["path"], "01234567/0123456");
    let e = run(json!({
        "generators": [{ "pullRequest": { "gitlab": { "project": "x" } } }],
        "template": template("a", "p", "s"),
    }))
    .unwrap_err()
    .to_string();
    assert!(e.contains("gitlab"), "{e}");
}

#[test]
fn misspelt_fields_anywhere_in_the_set_are_named() {
    let s = set(json!({
        "generators": [
            {"list": {"elementz": [{"a": "1"}]}},
            {"matrix": {"generators": [
                {"git": {"repoURL": "https://git.example/r", "revision": "HEAD",
                         "directories": [{"path": "apps/*", "exlude": true}]}},
                {"clusters": {"selectr": {}}}
            ]}}
        ],
        "template": {"metadata": {"name": "x", "labelz": {}}, "spec": {}},
        "syncPolicy": {"preserveResourcesOnDeletion": true, "applicationSync": "create-only"}
    }));
    assert_eq!(
        crate::unknown_fields(&s.spec),
        vec![
            "spec.template.metadata.labelz",
            "spec.syncPolicy.applicationSync",
            "spec.generators[0].list.elementz",
            "spec.generators[1].matrix.generators[0].git.directories[0].exlude",
            "spec.generators[1].matrix.generators[1].clusters.selectr",
        ]
    );
    let clean = set(json!({
        "generators": [{"list": {"elements": []}}],
        "template": {"metadata": {"name": "x"}, "spec": {}}
    }));
    assert!(crate::unknown_fields(&clean.spec).is_empty());
}

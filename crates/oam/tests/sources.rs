//! Source components (`helm`, `kustomize`): seed 001's GitOps repository.

use std::time::Duration;

use ferry_model::{ApplicationSource, HelmSource, KustomizeSource};
use ferry_oam::sources::{FilterTags, ImageAutomation, ImagePolicyChoice, SortOrder};
use ferry_oam::{
    Definitions, OamError, SourceComponent, SourceSpec, parse_application, render,
    source_component, sources,
};
use serde_json::json;

/// Seed 001, `infrastructure/mysql.yaml` (values added to exercise the mapping).
const MYSQL: &str = r#"
apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: mysql
  namespace: default
spec:
  components:
    - name: mysql-controller
      type: helm
      properties:
        repoType: helm
        url: https://presslabs.github.io/charts
        chart: mysql-operator
        version: "0.4.0"
        values:
          replicaCount: 1
          orchestrator:
            persistence: { enabled: false }
    - name: mysql-cluster
      type: raw
      dependsOn:
        - mysql-controller
      properties:
        apiVersion: mysql.presslabs.org/v1alpha1
        kind: MysqlCluster
        metadata:
          name: mysql-cluster
        spec:
          replicas: 1
          secretName: mysql-secret
"#;

/// Seed 001, `clusters/apps.yaml` with image automation.
const APPS: &str = r#"
apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: apps
spec:
  components:
    - name: apps
      type: kustomize
      properties:
        repoType: git
        url: https://github.com/example/KubeVela-GitOps-App-Demo
        secretRef: git-secret
        pullInterval: 1m
        git:
          branch: main
        path: ./apps
        imageRepository:
          image: registry.example.com/demo/app
          secretRef: imagesecret
          filterTags:
            pattern: '^master-[a-f0-9]+-(?P<ts>[0-9]+)'
            extract: '$ts'
          policy:
            numerical:
              order: asc
          commitMessage: "Image: {{range .Updated.Images}}{{println .}}{{end}}"
"#;

fn component(yaml: &str, name: &str) -> ferry_oam::Component {
    let app = parse_application(yaml).unwrap();
    app.spec
        .components
        .into_iter()
        .find(|c| c.name == name)
        .unwrap()
}

fn helm_component(properties: serde_json::Value) -> ferry_oam::Component {
    serde_json::from_value(json!({"name": "h", "type": "helm", "properties": properties})).unwrap()
}

fn err(c: &ferry_oam::Component) -> String {
    source_component(c).unwrap().unwrap_err().to_string()
}

#[test]
fn seed_001_mysql_helm_component() {
    let spec = source_component(&component(MYSQL, "mysql-controller"))
        .unwrap()
        .unwrap();
    assert_eq!(
        spec,
        SourceSpec {
            component: "mysql-controller".into(),
            source: ApplicationSource {
                repo_url: "https://presslabs.github.io/charts".into(),
                chart: Some("mysql-operator".into()),
                target_revision: Some("0.4.0".into()),
                helm: Some(HelmSource {
                    values_object: Some(json!({
                        "replicaCount": 1,
                        "orchestrator": {"persistence": {"enabled": false}}
                    })),
                    release_name: Some("mysql-controller".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            destination_namespace: None,
            secret_ref: None,
            poll_interval: Duration::from_secs(300),
            fetch_timeout: None,
            kind: SourceComponent::Helm {
                reconcile_interval: Duration::from_secs(30),
                install_timeout: Duration::from_secs(600),
                retries: 3,
                upgrade_crds: false,
            },
        }
    );
    assert!(spec.source.is_helm_repo());
    // `raw` is not a source component.
    assert!(source_component(&component(MYSQL, "mysql-cluster")).is_none());
}

#[test]
fn seed_001_apps_kustomize_component_with_image_automation() {
    let spec = source_component(&component(APPS, "apps")).unwrap().unwrap();
    assert_eq!(
        spec,
        SourceSpec {
            component: "apps".into(),
            source: ApplicationSource {
                repo_url: "https://github.com/example/KubeVela-GitOps-App-Demo".into(),
                path: Some("./apps".into()),
                target_revision: Some("main".into()),
                kustomize: Some(KustomizeSource::default()),
                ..Default::default()
            },
            destination_namespace: None,
            secret_ref: Some("git-secret".into()),
            poll_interval: Duration::from_secs(60),
            fetch_timeout: None,
            kind: SourceComponent::Kustomize {
                prune: true,
                suspend: false,
                force: false,
                image_automation: Some(ImageAutomation {
                    image: "registry.example.com/demo/app".into(),
                    secret_ref: Some("imagesecret".into()),
                    filter_tags: Some(FilterTags {
                        pattern: Some("^master-[a-f0-9]+-(?P<ts>[0-9]+)".into()),
                        extract: Some("$ts".into()),
                    }),
                    policy: ImagePolicyChoice::Numerical {
                        order: SortOrder::Asc
                    },
                    commit_message: Some(
                        "Image: {{range .Updated.Images}}{{println .}}{{end}}".into()
                    ),
                    interval: Duration::from_secs(60),
                }),
            },
        }
    );
}

#[test]
fn render_skips_source_components_and_sources_collects_them() {
    let defs = Definitions::builtin().unwrap();
    let app = parse_application(MYSQL).unwrap();
    let objects = render(&app, &defs).unwrap();
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].component, "mysql-cluster");
    let specs = sources(&app, &defs).unwrap();
    assert_eq!(specs.len(), 1);
    assert_eq!(specs[0].component, "mysql-controller");

    let apps = parse_application(APPS).unwrap();
    assert!(render(&apps, &defs).unwrap().is_empty());
    assert_eq!(sources(&apps, &defs).unwrap().len(), 1);
}

#[test]
fn render_reports_schema_errors_of_source_components() {
    let defs = Definitions::builtin().unwrap();
    let app =
        parse_application(&MYSQL.replace("        url: https://presslabs.github.io/charts\n", ""))
            .unwrap();
    let e = render(&app, &defs).unwrap_err();
    assert!(matches!(e, OamError::Schema { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "component `mysql-controller`: properties: missing required field `url`"
    );
}

#[test]
fn schema_violations() {
    let e = err(&helm_component(json!({"chart": "c"})));
    assert!(e.contains("missing required field `url`"), "{e}");
    let e = err(&helm_component(
        json!({"url": "https://x", "chart": "c", "vesion": "1"}),
    ));
    assert!(e.contains("vesion"), "{e}");
    let e = err(&helm_component(
        json!({"url": "https://x", "chart": "c", "repoType": "svn"}),
    ));
    assert!(e.contains("properties.repoType"), "{e}");

    let k = |p: serde_json::Value| -> ferry_oam::Component {
        serde_json::from_value(json!({"name": "k", "type": "kustomize", "properties": p})).unwrap()
    };
    let e = err(&k(json!({"url": "https://x"})));
    assert!(e.contains("missing required field `path`"), "{e}");
    let e = err(&k(json!({"url": "https://x", "path": ".", "git": {}})));
    assert!(e.contains("properties.git"), "{e}");
    let e = err(&k(json!({"url": "https://x", "path": ".", "prune": "yes"})));
    assert!(e.contains("properties.prune"), "{e}");
    let e = err(&k(json!({"url": "https://x", "path": ".",
        "imageRepository": {"image": "i", "policy": {"numerical": {"order": "up"}}}})));
    assert!(
        e.contains("properties.imageRepository.policy.numerical.order"),
        "{e}"
    );
    let e = err(&k(json!({"url": "https://x", "path": ".",
        "imageRepository": {"image": "i", "policy": {}}})));
    assert_eq!(
        e,
        "component `k`: ComponentDefinition/kustomize: properties.imageRepository.policy: \
         needs exactly one of numerical, alphabetical, semver; has none"
    );
    let e = err(&k(
        json!({"url": "https://x", "path": ".", "pullInterval": "soon"}),
    ));
    assert!(
        e.contains("properties.pullInterval: invalid duration `soon`"),
        "{e}"
    );
}

#[test]
fn oci_helm_repositories_become_oci_chart_sources() {
    let spec = source_component(&helm_component(json!({
        "repoType": "oci", "url": "oci://ghcr.io/stefanprodan/charts", "chart": "podinfo",
        "version": "6.5.0"
    })))
    .unwrap()
    .unwrap();
    assert_eq!(spec.source.repo_url, "oci://ghcr.io/stefanprodan/charts");
    assert_eq!(spec.source.chart.as_deref(), Some("podinfo"));
    assert_eq!(spec.source.target_revision.as_deref(), Some("6.5.0"));
    assert!(spec.source.is_helm_repo());

    let e = err(&helm_component(
        json!({"repoType": "oci", "url": "https://ghcr.io/charts", "chart": "podinfo"}),
    ));
    assert!(e.contains("oci://host[:port]/path"), "{e}");
    let e = err(&helm_component(
        json!({"url": "oci://ghcr.io/charts", "chart": "podinfo"}),
    ));
    assert!(e.contains("needs repoType: oci"), "{e}");
    let e = err(&helm_component(
        json!({"repoType": "oss", "url": "https://oss", "chart": "c", "oss": {"bucketName": "b"}}),
    ));
    assert!(e.contains("`oss`"), "{e}");
}

#[test]
fn helm_from_git_uses_the_chart_path_and_git_ref() {
    let spec = source_component(&helm_component(json!({
        "repoType": "git",
        "url": "https://github.com/example/charts",
        "chart": "./charts/podinfo",
        "git": {"branch": "main", "tag": "v1.2.3"},
        "valuesFiles": ["values-prod.yaml"],
        "releaseName": "web",
        "targetNamespace": "prod",
        "secretRef": "git-creds",
        "pullInterval": "1h30m",
        "interval": "10s",
    })))
    .unwrap()
    .unwrap();
    assert_eq!(spec.source.path.as_deref(), Some("./charts/podinfo"));
    assert_eq!(spec.source.chart, None);
    assert_eq!(spec.source.target_revision.as_deref(), Some("v1.2.3")); // tag beats branch
    let helm = spec.source.helm.unwrap();
    assert_eq!(helm.value_files, ["values-prod.yaml"]);
    assert_eq!(helm.release_name.as_deref(), Some("web"));
    assert_eq!(spec.destination_namespace.as_deref(), Some("prod"));
    assert_eq!(spec.secret_ref.as_deref(), Some("git-creds"));
    assert_eq!(spec.poll_interval, Duration::from_secs(5400));
    assert!(matches!(
        spec.kind,
        SourceComponent::Helm { reconcile_interval, .. } if reconcile_interval == Duration::from_secs(10)
    ));
}

#[test]
fn kustomize_target_namespace_and_unsupported_fields() {
    let c: ferry_oam::Component = serde_json::from_value(json!({
        "name": "k", "type": "kustomize",
        "properties": {"url": "https://x", "path": "./infra", "targetNamespace": "infra", "prune": false}
    }))
    .unwrap();
    let spec = source_component(&c).unwrap().unwrap();
    assert_eq!(spec.source.target_revision, None);
    assert_eq!(
        spec.source.kustomize.unwrap().namespace.as_deref(),
        Some("infra")
    );
    assert_eq!(spec.destination_namespace.as_deref(), Some("infra"));
    assert!(matches!(
        spec.kind,
        SourceComponent::Kustomize { prune: false, .. }
    ));

    let e = err(&helm_component(json!({
        "url": "https://x", "chart": "c", "valuesFrom": [{"kind": "Secret", "name": "s"}]
    })));
    assert!(e.contains("properties.valuesFrom is not supported"), "{e}");
    let mut with_trait = component(APPS, "apps");
    with_trait.traits =
        vec![serde_json::from_value(json!({"type": "labels", "properties": {"a": "b"}})).unwrap()];
    let e = err(&with_trait);
    assert!(
        e.contains("traits on a source component are not supported"),
        "{e}"
    );
}

#[test]
fn seed_001_image_repository_becomes_flux_objects_named_after_the_component() {
    let spec = source_component(&component(APPS, "apps")).unwrap().unwrap();
    let objs = ferry_oam::image_automation_objects(&spec);
    let kinds: Vec<&str> = objs.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "GitRepository",
            "ImageRepository",
            "ImagePolicy",
            "ImageUpdateAutomation"
        ]
    );
    assert!(objs.iter().all(|o| o["metadata"]["name"] == "apps"));
    assert_eq!(
        objs[0]["spec"],
        json!({"url": "https://github.com/example/KubeVela-GitOps-App-Demo", "interval": "60s",
               "ref": {"branch": "main"}, "secretRef": {"name": "git-secret"}})
    );
    assert_eq!(
        objs[1]["spec"],
        json!({"image": "registry.example.com/demo/app", "interval": "60s", "secretRef": {"name": "imagesecret"}})
    );
    assert_eq!(
        objs[2]["spec"],
        json!({"imageRepositoryRef": {"name": "apps"}, "policy": {"numerical": {"order": "asc"}},
               "filterTags": {"pattern": "^master-[a-f0-9]+-(?P<ts>[0-9]+)", "extract": "$ts"}})
    );
    let u = &objs[3]["spec"];
    assert_eq!(
        u["sourceRef"],
        json!({"kind": "GitRepository", "name": "apps"})
    );
    assert_eq!(u["git"]["push"]["branch"], "main");
    assert_eq!(
        u["git"]["commit"]["messageTemplate"],
        "Update image automatically.\nImage: {{range .Updated.Images}}{{println .}}{{end}}"
    );
    assert_eq!(
        u["update"],
        json!({"path": "./apps", "strategy": "Setters"})
    );
    // Without imageRepository (or for helm) there is nothing to add.
    let mysql = source_component(&component(MYSQL, "mysql-controller"))
        .unwrap()
        .unwrap();
    assert!(ferry_oam::image_automation_objects(&mysql).is_empty());
}

fn helmchart_component(properties: serde_json::Value) -> ferry_oam::Component {
    serde_json::from_value(json!({"name": "web", "type": "helmchart", "properties": properties}))
        .unwrap()
}

#[test]
fn helmchart_from_an_oci_registry_or_a_repository() {
    let spec = source_component(&helmchart_component(json!({
        "chart": {"source": "oci://ghcr.io/stefanprodan/charts/podinfo", "version": "6.5.0"},
        "release": {"namespace": "web"},
        "values": {"replicaCount": 2}
    })))
    .unwrap()
    .unwrap();
    assert_eq!(spec.source.repo_url, "oci://ghcr.io/stefanprodan/charts");
    assert_eq!(spec.source.chart.as_deref(), Some("podinfo"));
    assert_eq!(spec.source.target_revision.as_deref(), Some("6.5.0"));
    assert_eq!(spec.destination_namespace.as_deref(), Some("web"));
    let helm = spec.source.helm.as_ref().unwrap();
    assert_eq!(
        helm.release_name.as_deref(),
        Some("web"),
        "the component's name"
    );
    assert_eq!(helm.values_object, Some(json!({"replicaCount": 2})));
    assert!(helm.skip_tests, "options.skipTests defaults to true");

    let spec = source_component(&helmchart_component(json!({
        "chart": {"source": "nginx", "repoURL": "https://charts.bitnami.com/bitnami"},
        "release": {"name": "edge"}
    })))
    .unwrap()
    .unwrap();
    assert_eq!(spec.source.repo_url, "https://charts.bitnami.com/bitnami");
    assert_eq!(spec.source.chart.as_deref(), Some("nginx"));
    assert_eq!(
        spec.source.target_revision, None,
        "`latest` is the newest version"
    );
    assert_eq!(
        spec.source.helm.unwrap().release_name.as_deref(),
        Some("edge")
    );

    for (props, want) in [
        (json!({"chart": {"source": "nginx"}}), "repoURL is required"),
        (
            json!({"chart": {"source": "https://x/charts/a-1.0.0.tgz"}}),
            "tarball URL is not supported",
        ),
        (
            json!({"chart": {"source": "oci://ghcr.io/podinfo"}, "options": {"atomic": true}}),
            "options.atomic: only the default",
        ),
        (
            json!({"chart": {"source": "oci://ghcr.io/x/podinfo"}, "valuesFrom": [{"kind": "Secret", "name": "v"}]}),
            "properties.valuesFrom is not supported",
        ),
        (
            json!({"chart": {"source": "oci://ghcr.io/x/podinfo"}, "healthStatus": []}),
            "properties.healthStatus is not supported",
        ),
        (
            json!({"chart": {"source": "oci://podinfo"}}),
            "is not oci://host/path/chart",
        ),
        (
            json!({"chart": {"source": "nginx", "repoURL": "https://x"}, "releaseName": "x"}),
            "releaseName",
        ),
    ] {
        let e = err(&helmchart_component(props));
        assert!(e.contains(want), "{want}: {e}");
    }
}

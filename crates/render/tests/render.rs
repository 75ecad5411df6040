//! End-to-end renders against the real `helm` and `kustomize` binaries that
//! `make setup` installs. Fixtures are written into temporary directories.

use ferry_model::{
    ApplicationSource, DirectorySource, EnvEntry, HelmParameter, HelmSource, JsonnetSource,
    JsonnetVar, KustomizeSource, PluginSource,
};
use ferry_render::{
    PluginConfig, RenderError, RenderInput, RenderTools, Rendered, SourceType, render,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

static TOOLS: LazyLock<RenderTools> =
    LazyLock::new(|| RenderTools::locate().expect("helm and kustomize (run `make setup`)"));

const REV: &str = "0123456789abcdef0123456789abcdef01234567";

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

struct Opts {
    refs: BTreeMap<String, PathBuf>,
    plugins: Vec<PluginConfig>,
    timeout: Duration,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            refs: BTreeMap::new(),
            plugins: Vec::new(),
            timeout: Duration::from_secs(60),
        }
    }
}

fn run(root: &Path, source: &ApplicationSource) -> Result<Rendered, RenderError> {
    run_with(root, source, &Opts::default())
}

fn run_with(root: &Path, source: &ApplicationSource, o: &Opts) -> Result<Rendered, RenderError> {
    let api_versions = vec!["v1".to_string(), "apps/v1".to_string()];
    render(&RenderInput {
        app_name: "guestbook",
        app_namespace: "team-a",
        source,
        repo_root: root,
        revision: REV,
        refs: &o.refs,
        kube_version: "1.20.2",
        api_versions: &api_versions,
        plugins: &o.plugins,
        tools: &TOOLS,
        timeout: o.timeout,
    })
}

fn src(path: &str) -> ApplicationSource {
    ApplicationSource {
        repo_url: "https://git.example.com/org/repo.git".into(),
        path: Some(path.into()),
        target_revision: Some("main".into()),
        ..Default::default()
    }
}

/// `Kind/name` of every object.
fn ids(r: &Rendered) -> Vec<String> {
    r.objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

fn find<'a>(r: &'a Rendered, kind: &str, name: &str) -> &'a Value {
    r.objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind}/{name} not in {:?}", ids(r)))
}

fn cm(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  k: v\n")
}

// ---------------------------------------------------------------- directory

fn directory_fixture() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    write(
        r,
        "app/a.yaml",
        &format!(
            "---\n{}---\n# nothing here\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: b\nspec:\n  ports:\n  - port: 80\n",
            cm("a")
        ),
    );
    write(
        r,
        "app/b.json",
        r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"version": "1.0"}}"#,
    );
    write(
        r,
        "app/list.yml",
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: d}\n- apiVersion: v1\n  kind: Secret\n  metadata: {name: e}\n",
    );
    write(r, "app/config.json", r#"{"not": "a kubernetes object"}"#);
    write(r, "app/README.md", "# docs\n");
    write(r, "app/sub/f.yaml", &cm("f"));
    write(r, "app/.hidden/g.yaml", &cm("g"));
    t
}

#[test]
fn directory_recurse_exclude_flattens_lists() {
    let t = directory_fixture();
    let mut s = src("app");
    s.directory = Some(DirectorySource {
        recurse: true,
        exclude: Some("config.json".into()),
        include: None,
        ..Default::default()
    });
    let r = run(t.path(), &s).unwrap();
    assert_eq!(r.source_type, SourceType::Directory);
    assert_eq!(
        ids(&r),
        [
            "ConfigMap/a",
            "Service/b",
            "ConfigMap/c",
            "ConfigMap/d",
            "Secret/e",
            "ConfigMap/f"
        ]
    );
    // JSON and YAML values keep their types.
    assert_eq!(find(&r, "ConfigMap", "c")["data"]["version"], "1.0");
    assert_eq!(find(&r, "Service", "b")["spec"]["ports"][0]["port"], 80);
}

#[test]
fn directory_include_alternatives_without_recurse() {
    let t = directory_fixture();
    let mut s = src("app");
    s.directory = Some(DirectorySource {
        recurse: false,
        include: Some("{*.yml,*.yaml}".into()),
        exclude: None,
        ..Default::default()
    });
    let r = run(t.path(), &s).unwrap();
    assert_eq!(
        ids(&r),
        ["ConfigMap/a", "Service/b", "ConfigMap/d", "Secret/e"]
    );

    // As in Argo CD, `*` in include also matches inside subdirectories.
    s.directory = Some(DirectorySource {
        recurse: true,
        include: Some("*.yaml".into()),
        exclude: Some("sub/*".into()),
        ..Default::default()
    });
    let r = run(t.path(), &s).unwrap();
    assert_eq!(ids(&r), ["ConfigMap/a", "Service/b"]);
}

// ---------------------------------------------------------------- jsonnet

fn jsonnet_var(name: &str, value: &str, code: bool) -> JsonnetVar {
    JsonnetVar {
        name: name.into(),
        value: value.into(),
        code,
        ..Default::default()
    }
}

fn jsonnet_fixture() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    // A library next to the file, one on a `libs` path, and one at the repository root.
    write(
        r,
        "apps/guestbook/params.libsonnet",
        "{ replicas: 2, image: 'nginx:1.25' }\n",
    );
    write(
        r,
        "vendor/k.libsonnet",
        "{ cm(name, data):: { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: name }, data: data } }\n",
    );
    write(
        r,
        "apps/guestbook/guestbook.jsonnet",
        r#"local params = import 'params.libsonnet';
local k = import 'k.libsonnet';
[
  {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: 'guestbook-ui' },
    spec: {
      replicas: params.replicas,
      selector: { matchLabels: { app: 'guestbook-ui' } },
      template: {
        metadata: { labels: { app: 'guestbook-ui' } },
        spec: { containers: [{ name: 'ui', image: params.image }] },
      },
    },
  },
  k.cm('settings', { env: std.extVar('env'), app: std.extVar('app'), size: std.toString(std.extVar('size') * 2) }),
  { apiVersion: 'v1', kind: 'List', items: [k.cm('listed', {})] },
]
"#,
    );
    write(
        r,
        "apps/tla/main.jsonnet",
        "function(name, replicas=1, enabled) { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: name }, data: { replicas: std.toString(replicas), enabled: std.toString(enabled) } }\n",
    );
    t
}

#[test]
fn jsonnet_directory_renders_with_ext_vars_libs_and_lists() {
    let t = jsonnet_fixture();
    let mut s = src("apps/guestbook");
    s.directory = Some(DirectorySource {
        jsonnet: Some(JsonnetSource {
            ext_vars: vec![
                jsonnet_var("env", "prod", false),
                jsonnet_var("app", "$ARGOCD_APP_NAME", false),
                jsonnet_var("size", "21", true),
            ],
            libs: vec!["vendor".into()],
            ..Default::default()
        }),
        ..Default::default()
    });
    let r = run(t.path(), &s).unwrap();
    assert_eq!(r.source_type, SourceType::Directory);
    assert_eq!(
        ids(&r),
        [
            "Deployment/guestbook-ui",
            "ConfigMap/settings",
            "ConfigMap/listed"
        ]
    );
    assert_eq!(
        find(&r, "Deployment", "guestbook-ui")["spec"]["replicas"],
        2
    );
    let settings = &find(&r, "ConfigMap", "settings")["data"];
    assert_eq!(settings["env"], "prod");
    assert_eq!(
        settings["app"], "guestbook",
        "extVar values are envsubst'ed"
    );
    assert_eq!(settings["size"], "42", "code: true evaluates the value");
    // `.libsonnet` files are libraries, never rendered on their own.
    assert!(
        r.skipped
            .contains(&"apps/guestbook/params.libsonnet".to_string())
    );
}

#[test]
fn jsonnet_top_level_arguments_as_strings_and_code() {
    let t = jsonnet_fixture();
    let mut s = src("apps/tla");
    s.directory = Some(DirectorySource {
        jsonnet: Some(JsonnetSource {
            tlas: vec![
                jsonnet_var("name", "from-tla", false),
                jsonnet_var("replicas", "1 + 2", true),
                jsonnet_var("enabled", "true", true),
            ],
            ..Default::default()
        }),
        ..Default::default()
    });
    let r = run(t.path(), &s).unwrap();
    assert_eq!(ids(&r), ["ConfigMap/from-tla"]);
    let data = &r.objects[0]["data"];
    assert_eq!(data["replicas"], "3");
    assert_eq!(data["enabled"], "true");
}

#[test]
fn jsonnet_errors_name_the_file_and_never_the_checkout_path() {
    let t = jsonnet_fixture();
    // A missing ext var, a syntax error and an import that leaves the repository.
    let mut s = src("apps/guestbook");
    s.directory = Some(DirectorySource {
        jsonnet: Some(JsonnetSource {
            libs: vec!["vendor".into()],
            ..Default::default()
        }),
        ..Default::default()
    });
    let err = run(t.path(), &s).unwrap_err().to_string();
    assert!(
        err.starts_with(
            "jsonnet apps/guestbook/guestbook.jsonnet: external variable is not defined"
        ) && err.contains("guestbook.jsonnet:17:"),
        "{err}"
    );
    let root = t.path().canonicalize().unwrap();
    assert!(!err.contains(&root.display().to_string()), "{err}");

    write(t.path(), "apps/broken/x.jsonnet", "{ a: }\n");
    let err = run(t.path(), &src("apps/broken")).unwrap_err().to_string();
    assert!(
        err.starts_with("jsonnet apps/broken/x.jsonnet: syntax error"),
        "{err}"
    );

    write(
        t.path(),
        "apps/escape/x.jsonnet",
        "{ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'x' }, data: { p: importstr '/etc/passwd' } }\n",
    );
    let err = run(t.path(), &src("apps/escape")).unwrap_err().to_string();
    assert!(err.contains("outside the repository"), "{err}");

    // Output that is not a Kubernetes object is refused like a bad YAML document.
    write(t.path(), "apps/scalar/x.jsonnet", "[{ a: 1 }]\n");
    let err = run(t.path(), &src("apps/scalar")).unwrap_err().to_string();
    assert!(
        err.contains("apps/scalar/x.jsonnet") && err.contains("missing apiVersion"),
        "{err}"
    );
}

#[test]
fn directory_non_manifest_file_is_an_error_naming_it() {
    let t = directory_fixture();
    let err = run(t.path(), &src("app")).unwrap_err().to_string();
    assert_eq!(
        err,
        "invalid manifest in app/config.json: document 1 is missing apiVersion, kind, metadata.name"
    );
}

#[test]
fn invalid_yaml_error_names_the_file_and_line() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "apps/web/ok.yaml", &cm("ok"));
    write(
        t.path(),
        "apps/web/broken.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n   labels: {a: b}\n",
    );
    let err = run(t.path(), &src("apps/web")).unwrap_err();
    assert!(
        matches!(err, RenderError::InvalidManifest { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with("invalid manifest in apps/web/broken.yaml: "),
        "{msg}"
    );
    assert!(msg.contains("line 5"), "{msg}");
}

#[test]
fn missing_or_escaping_paths_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("repo");
    write(&root, "app/cm.yaml", &cm("a"));
    write(t.path(), "outside/cm.yaml", &cm("secret"));

    let err = run(&root, &src("does/not/exist")).unwrap_err();
    assert_eq!(err.to_string(), "app path does not exist: does/not/exist");
    assert!(matches!(err, RenderError::PathNotFound { .. }));

    let err = run(&root, &src("../outside")).unwrap_err().to_string();
    assert!(err.contains("outside the repository root"), "{err}");
    let err = run(&root, &src("/etc")).unwrap_err().to_string();
    assert!(err.contains("absolute"), "{err}");

    // A symlink pointing out of the repository blocks rendering altogether.
    std::os::unix::fs::symlink(t.path().join("outside"), root.join("app/link")).unwrap();
    let err = run(&root, &src("app")).unwrap_err().to_string();
    assert!(err.contains("out-of-bounds symlink \"app/link\""), "{err}");
}

// ---------------------------------------------------------------- kustomize

fn kustomize_fixture() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    write(
        r,
        "base/kustomization.yaml",
        "resources:\n- deployment.yaml\n- service.yaml\n",
    );
    write(
        r,
        "base/deployment.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: nginx:1.0\n",
    );
    write(
        r,
        "base/service.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {app: web}\n  ports:\n  - port: 80\n",
    );
    write(
        r,
        "overlays/prod/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- ../../base\nnamePrefix: prod-\nreplicas:\n- name: web\n  count: 3\n",
    );
    t
}

#[test]
fn kustomize_overlay_with_base() {
    let t = kustomize_fixture();
    let r = run(t.path(), &src("overlays/prod")).unwrap();
    assert_eq!(r.source_type, SourceType::Kustomize);
    let mut got = ids(&r);
    got.sort();
    assert_eq!(got, ["Deployment/prod-web", "Service/prod-web"]);
    assert_eq!(find(&r, "Deployment", "prod-web")["spec"]["replicas"], 3);
}

#[test]
fn kustomize_options_edit_a_copy() {
    let t = kustomize_fixture();
    let kfile = t.path().join("overlays/prod/kustomization.yaml");
    let before = fs::read_to_string(&kfile).unwrap();
    let mut s = src("overlays/prod");
    s.kustomize = Some(KustomizeSource {
        images: vec!["nginx=mirror.example.com/nginx:${ARGOCD_APP_REVISION_SHORT}".into()],
        name_prefix: Some("staging-".into()),
        name_suffix: Some("-v2".into()),
        namespace: Some("web-team".into()),
        common_labels: [("tier".to_string(), "frontend".to_string())].into(),
        common_annotations: [("owner".to_string(), "ops".to_string())].into(),
        replicas: vec![serde_json::json!({"name": "web", "count": 5})],
        ..Default::default()
    });
    let r = run(t.path(), &s).unwrap();
    assert_eq!(r.source_type, SourceType::Kustomize);
    let d = find(&r, "Deployment", "staging-web-v2");
    assert_eq!(d["metadata"]["namespace"], "web-team");
    assert_eq!(d["metadata"]["labels"]["tier"], "frontend");
    assert_eq!(d["metadata"]["annotations"]["owner"], "ops");
    assert_eq!(d["spec"]["replicas"], 5);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "mirror.example.com/nginx:0123456"
    );
    assert_eq!(
        find(&r, "Service", "staging-web-v2")["metadata"]["namespace"],
        "web-team"
    );
    // The checkout itself is never written.
    assert_eq!(fs::read_to_string(&kfile).unwrap(), before);
}

#[test]
fn kustomize_failure_carries_kustomize_message() {
    let t = tempfile::tempdir().unwrap();
    write(
        t.path(),
        "app/kustomization.yaml",
        "resources:\n- missing.yaml\n",
    );
    let err = run(t.path(), &src("app")).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, RenderError::Tool { .. }), "{err:?}");
    assert!(msg.starts_with("`kustomize build app` failed: "), "{msg}");
    assert!(msg.contains("missing.yaml"), "{msg}");
}

// ---------------------------------------------------------------- helm

fn helm_fixture() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    write(
        r,
        "charts/web/Chart.yaml",
        "apiVersion: v2\nname: web\nversion: 0.1.0\n",
    );
    write(
        r,
        "charts/web/values.yaml",
        "env: dev\nreplicas: 1\nimage:\n  tag: latest\n",
    );
    write(
        r,
        "charts/web/values-staging.yaml",
        "env: staging\nreplicas: 2\n",
    );
    write(r, "charts/web/values-prod.yaml", "env: prod\nreplicas: 5\n");
    write(
        r,
        "charts/web/templates/config.yaml",
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-config
  namespace: {{ .Release.Namespace }}
data:
  env: {{ .Values.env | quote }}
  replicas: {{ .Values.replicas | quote }}
  tag: {{ .Values.image.tag | quote }}
  greeting: {{ .Values.greeting | default "none" | quote }}
  kube: {{ .Capabilities.KubeVersion.Version | quote }}
  list: {{ .Values.list | default list | join "+" | quote }}
"#,
    );
    write(
        r,
        "charts/web/crds/widget.yaml",
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.example.com\nspec:\n  group: example.com\n  names: {kind: Widget, plural: widgets}\n  scope: Namespaced\n  versions: []\n",
    );
    t
}

fn helm_src(h: HelmSource) -> ApplicationSource {
    let mut s = src("charts/web");
    s.helm = Some(h);
    s
}

fn config(r: &Rendered, release: &str) -> Value {
    find(r, "ConfigMap", &format!("{release}-config"))["data"].clone()
}

#[test]
fn helm_value_files_per_environment() {
    let t = helm_fixture();
    let staging = run(
        t.path(),
        &helm_src(HelmSource {
            value_files: vec!["values-staging.yaml".into()],
            ..Default::default()
        }),
    )
    .unwrap();
    let prod = run(
        t.path(),
        &helm_src(HelmSource {
            value_files: vec!["values-prod.yaml".into()],
            ..Default::default()
        }),
    )
    .unwrap();
    assert_eq!(staging.source_type, SourceType::Helm);
    let (s, p) = (config(&staging, "guestbook"), config(&prod, "guestbook"));
    assert_eq!(
        (s["env"].as_str(), s["replicas"].as_str()),
        (Some("staging"), Some("2"))
    );
    assert_eq!(
        (p["env"].as_str(), p["replicas"].as_str()),
        (Some("prod"), Some("5"))
    );
    assert_eq!(s["kube"], "v1.20.2");
    let cmap = find(&prod, "ConfigMap", "guestbook-config");
    assert_eq!(cmap["metadata"]["namespace"], "team-a");
    // CRDs are included unless skipCrds.
    assert!(ids(&prod).contains(&"CustomResourceDefinition/widgets.example.com".to_string()));
}

#[test]
fn helm_detected_without_helm_block_and_skip_crds() {
    let t = helm_fixture();
    let r = run(t.path(), &src("charts/web")).unwrap();
    assert_eq!(r.source_type, SourceType::Helm);
    assert_eq!(config(&r, "guestbook")["env"], "dev");
    let r = run(
        t.path(),
        &helm_src(HelmSource {
            skip_crds: true,
            ..Default::default()
        }),
    )
    .unwrap();
    assert_eq!(ids(&r), ["ConfigMap/guestbook-config"]);
}

#[test]
fn helm_values_parameters_and_release_name() {
    let t = helm_fixture();
    let r = run(
        t.path(),
        &helm_src(HelmSource {
            value_files: vec!["values-prod.yaml".into()],
            values: Some("greeting: hello\nreplicas: 9\n".into()),
            parameters: vec![
                HelmParameter {
                    name: "image.tag".into(),
                    value: "1.2.3".into(),
                    force_string: true,
                    ..Default::default()
                },
                HelmParameter {
                    name: "env".into(),
                    value: "rev-$ARGOCD_APP_REVISION_SHORT".into(),
                    force_string: false,
                    ..Default::default()
                },
                HelmParameter {
                    name: "list".into(),
                    value: "{a,b}".into(),
                    force_string: false,
                    ..Default::default()
                },
            ],
            release_name: Some("custom".into()),
            ..Default::default()
        }),
    )
    .unwrap();
    let d = config(&r, "custom");
    assert_eq!(d["greeting"], "hello");
    // The inline values override the value files; parameters override both.
    assert_eq!(d["replicas"], "9");
    assert_eq!(d["tag"], "1.2.3");
    assert_eq!(d["env"], "rev-0123456");
    assert_eq!(d["list"], "a+b");
}

#[test]
fn helm_values_object() {
    let t = helm_fixture();
    let r = run(
        t.path(),
        &helm_src(HelmSource {
            values_object: Some(
                serde_json::json!({"greeting": "from-object", "image": {"tag": "obj"}}),
            ),
            ..Default::default()
        }),
    )
    .unwrap();
    let d = config(&r, "guestbook");
    assert_eq!(
        (d["greeting"].as_str(), d["tag"].as_str()),
        (Some("from-object"), Some("obj"))
    );
}

#[test]
fn helm_ref_value_file_from_another_source() {
    let t = helm_fixture();
    let other = tempfile::tempdir().unwrap();
    write(other.path(), "env/prod/values.yaml", "env: from-ref\n");
    let o = Opts {
        refs: [("values".to_string(), other.path().to_path_buf())].into(),
        ..Default::default()
    };
    let s = helm_src(HelmSource {
        value_files: vec!["$values/env/prod/values.yaml".into()],
        ..Default::default()
    });
    let r = run_with(t.path(), &s, &o).unwrap();
    assert_eq!(config(&r, "guestbook")["env"], "from-ref");

    // The referenced source confines its paths as well.
    let s = helm_src(HelmSource {
        value_files: vec!["$values/../../etc/passwd".into()],
        ..Default::default()
    });
    let err = run_with(t.path(), &s, &o).unwrap_err().to_string();
    assert!(err.contains("outside the repository root"), "{err}");
}

#[test]
fn helm_value_file_rules() {
    let t = helm_fixture();
    write(
        t.path().parent().unwrap(),
        "secret-values.yaml",
        "env: stolen\n",
    );
    let vf = |files: &[&str], ignore: bool| {
        helm_src(HelmSource {
            value_files: files.iter().map(|f| f.to_string()).collect(),
            ignore_missing_value_files: ignore,
            ..Default::default()
        })
    };
    let err = run(t.path(), &vf(&["../../../secret-values.yaml"], false))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("helm value file \"../../../secret-values.yaml\""),
        "{err}"
    );
    assert!(err.contains("outside the repository root"), "{err}");

    let err = run(t.path(), &vf(&["values-qa.yaml"], false))
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"values-qa.yaml\": does not exist"), "{err}");
    let r = run(t.path(), &vf(&["values-qa.yaml", "values-prod.yaml"], true)).unwrap();
    assert_eq!(config(&r, "guestbook")["env"], "prod");

    let err = run(t.path(), &vf(&["https://example.com/values.yaml"], false))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no network access"), "{err}");

    // Absolute paths are relative to the repository root, as in Argo CD.
    let r = run(t.path(), &vf(&["/charts/web/values-staging.yaml"], false)).unwrap();
    assert_eq!(config(&r, "guestbook")["env"], "staging");
}

#[test]
fn helm_template_error_surfaces_helm_message() {
    let t = helm_fixture();
    write(
        t.path(),
        "charts/web/templates/broken.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Values.env | nosuchfunction }}\n",
    );
    let err = run(t.path(), &src("charts/web")).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, RenderError::Tool { .. }), "{err:?}");
    assert!(msg.starts_with("`helm template` failed: "), "{msg}");
    assert!(
        msg.contains("function \"nosuchfunction\" not defined"),
        "{msg}"
    );
}

#[test]
fn helm_chart_source_renders_the_unpacked_chart() {
    let t = helm_fixture();
    let chart_dir = t.path().join("charts/web");
    let s = ApplicationSource {
        repo_url: "https://charts.example.com".into(),
        chart: Some("web".into()),
        target_revision: Some("0.1.0".into()),
        helm: Some(HelmSource {
            value_files: vec!["values-prod.yaml".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    let r = run(&chart_dir, &s).unwrap();
    assert_eq!(r.source_type, SourceType::Helm);
    assert_eq!(config(&r, "guestbook")["env"], "prod");
}

#[test]
fn helm_local_dependency_is_built_in_a_copy() {
    let t = helm_fixture();
    write(
        t.path(),
        "charts/umbrella/Chart.yaml",
        "apiVersion: v2\nname: umbrella\nversion: 0.1.0\ndependencies:\n- name: web\n  version: 0.1.0\n  repository: file://../web\n",
    );
    write(
        t.path(),
        "charts/umbrella/values.yaml",
        "web:\n  env: from-umbrella\n",
    );
    let r = run(t.path(), &src("charts/umbrella")).unwrap();
    assert_eq!(config(&r, "guestbook")["env"], "from-umbrella");
    assert!(
        !t.path().join("charts/umbrella/charts").exists(),
        "checkout was written"
    );
}

// ---------------------------------------------------------------- plugins

const PLUGIN: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: ConfigManagementPlugin
metadata:
  name: echo-cm
spec:
  version: v1.0
  init:
    command: [sh, -c]
    args: ["echo initialised > init-ran.txt"]
  generate:
    command: [sh, -c]
    args:
      - |
        test -f init-ran.txt || { echo "init did not run here" >&2; exit 3; }
        cat <<EOF
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: $ARGOCD_APP_NAME-cm
          namespace: $ARGOCD_APP_NAMESPACE
        data:
          foo: "$ARGOCD_ENV_FOO"
          rev: "$ARGOCD_APP_REVISION_SHORT"
          path: "$ARGOCD_APP_SOURCE_PATH"
          kube: "$KUBE_VERSION"
          apis: "$KUBE_API_VERSIONS"
          param: "$PARAM_MODE"
          files: "$(ls | tr '\n' ' ')"
        EOF
  discover:
    fileName: "*.cmp"
"#;

const OTHER_PLUGIN: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: ConfigManagementPlugin
metadata:
  name: another
spec:
  generate:
    command: [sh, -c, 'echo "{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {\"name\": \"from-another\"}}"']
  discover:
    find:
      command: [sh, -c, 'ls | grep -x marker.another || true']
"#;

fn plugins() -> Vec<PluginConfig> {
    vec![
        PluginConfig::from_yaml(PLUGIN).unwrap(),
        PluginConfig::from_yaml(OTHER_PLUGIN).unwrap(),
    ]
}

fn plugin_fixture() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "apps/cmp/app.cmp", "anything\n");
    write(t.path(), "apps/other/marker.another", "x\n");
    write(t.path(), "apps/other/cm.yaml", &cm("plain"));
    t
}

fn with_plugin(path: &str, name: Option<&str>) -> ApplicationSource {
    let mut s = src(path);
    s.plugin = Some(PluginSource {
        name: name.map(Into::into),
        env: vec![EnvEntry {
            name: "FOO".into(),
            value: "bar-$ARGOCD_APP_NAME".into(),
            ..Default::default()
        }],
        parameters: vec![serde_json::json!({"name": "mode", "string": "fast"})],
        ..Default::default()
    });
    s
}

#[test]
fn plugin_chosen_by_name() {
    let t = plugin_fixture();
    let o = Opts {
        plugins: plugins(),
        ..Default::default()
    };
    let r = run_with(t.path(), &with_plugin("apps/cmp", Some("echo-cm-v1.0")), &o).unwrap();
    assert_eq!(r.source_type, SourceType::Plugin);
    let obj = find(&r, "ConfigMap", "guestbook-cm");
    assert_eq!(obj["metadata"]["namespace"], "team-a");
    let d = &obj["data"];
    assert_eq!(d["foo"], "bar-guestbook");
    assert_eq!(d["rev"], "0123456");
    assert_eq!(d["path"], "apps/cmp");
    assert_eq!(d["kube"], "1.20.2");
    assert_eq!(d["apis"], "v1,apps/v1");
    assert_eq!(d["param"], "fast");
    assert_eq!(d["files"], "app.cmp init-ran.txt ");
    // init wrote into a copy, not into the checkout.
    assert!(!t.path().join("apps/cmp/init-ran.txt").exists());

    // The plain name works too; a named plugin whose discovery rules do not
    // match the app is refused.
    assert!(run_with(t.path(), &with_plugin("apps/cmp", Some("echo-cm")), &o).is_ok());
    let err = run_with(t.path(), &with_plugin("apps/other", Some("echo-cm")), &o)
        .unwrap_err()
        .to_string();
    assert!(err.contains("discovery rules do not match"), "{err}");
    let err = run_with(t.path(), &with_plugin("apps/cmp", Some("nope")), &o)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"nope\"") && err.contains("another, echo-cm-v1.0"),
        "{err}"
    );
}

#[test]
fn plugin_chosen_by_discovery() {
    let t = plugin_fixture();
    let o = Opts {
        plugins: plugins(),
        ..Default::default()
    };
    // `plugin` without a name: discovery picks the plugin.
    let r = run_with(t.path(), &with_plugin("apps/cmp", None), &o).unwrap();
    assert_eq!(r.source_type, SourceType::Plugin);
    assert_eq!(
        find(&r, "ConfigMap", "guestbook-cm")["data"]["foo"],
        "bar-guestbook"
    );

    // No `plugin` block at all: Argo CD still tries discovery first...
    let r = run_with(t.path(), &src("apps/cmp"), &o).unwrap();
    assert_eq!(r.source_type, SourceType::Plugin);
    assert_eq!(find(&r, "ConfigMap", "guestbook-cm")["data"]["foo"], "");
    // ...through a find command too...
    let r = run_with(t.path(), &src("apps/other"), &o).unwrap();
    assert_eq!(
        (r.source_type, ids(&r)),
        (
            SourceType::Plugin,
            vec!["ConfigMap/from-another".to_string()]
        )
    );
    // ...and falls back to plain manifests when nothing matches.
    let r = run_with(t.path(), &src("apps/other"), &Opts::default()).unwrap();
    assert_eq!(
        (r.source_type, ids(&r)),
        (SourceType::Directory, vec!["ConfigMap/plain".to_string()])
    );

    let err = run_with(
        t.path(),
        &with_plugin("apps/other", None),
        &Opts {
            plugins: vec![plugins().remove(0)],
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, RenderError::NoMatchingPlugin), "{err:?}");
}

#[test]
fn plugin_failure_shows_stderr_but_not_env_values() {
    let t = plugin_fixture();
    let p = PluginConfig::from_yaml(
        "apiVersion: argoproj.io/v1alpha1\nkind: ConfigManagementPlugin\nmetadata: {name: leaky}\nspec:\n  generate:\n    command: [sh, -c, 'echo \"cannot use token $ARGOCD_ENV_TOKEN\" >&2; exit 4']\n",
    )
    .unwrap();
    let mut s = src("apps/cmp");
    s.plugin = Some(PluginSource {
        name: Some("leaky".into()),
        env: vec![EnvEntry {
            name: "TOKEN".into(),
            value: "s3cr3t-value".into(),
            ..Default::default()
        }],
        parameters: vec![],
        ..Default::default()
    });
    let err = run_with(
        t.path(),
        &s,
        &Opts {
            plugins: vec![p],
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert_eq!(err, "`plugin leaky generate` failed: cannot use token ***");
}

#[test]
fn hanging_plugin_is_killed_at_the_timeout() {
    let t = plugin_fixture();
    let pid_file = t.path().join("sleeper.pid");
    let p = PluginConfig::from_yaml(
        "apiVersion: argoproj.io/v1alpha1\nkind: ConfigManagementPlugin\nmetadata: {name: hang}\nspec:\n  generate:\n    command: [sh, -c, 'sleep 60 & echo $! > \"$ARGOCD_ENV_PIDFILE\"; wait']\n",
    )
    .unwrap();
    let mut s = src("apps/cmp");
    s.plugin = Some(PluginSource {
        name: Some("hang".into()),
        env: vec![EnvEntry {
            name: "PIDFILE".into(),
            value: pid_file.display().to_string(),
            ..Default::default()
        }],
        parameters: vec![],
        ..Default::default()
    });
    let o = Opts {
        plugins: vec![p],
        timeout: Duration::from_secs(3),
        ..Default::default()
    };
    let start = Instant::now();
    let err = run_with(t.path(), &s, &o).unwrap_err();
    let took = start.elapsed();
    assert!(
        matches!(err, RenderError::Timeout { secs: 3, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "`plugin hang generate` timed out after 3s and was killed"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");

    // The background `sleep` was in the plugin's process group and died too.
    let pid = fs::read_to_string(&pid_file).unwrap().trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let state = fs::read_to_string(format!("/proc/{pid}/stat")).ok();
        let alive = state.as_deref().is_some_and(|s| {
            let after = s
                .rsplit_once(')')
                .map(|(_, r)| r.trim_start())
                .unwrap_or("");
            !after.starts_with('Z') && !after.starts_with('X')
        });
        if !alive {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sleep {pid} still running: {state:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn conflicting_source_types_are_rejected() {
    let t = helm_fixture();
    let mut s = helm_src(HelmSource {
        release_name: Some("x".into()),
        ..Default::default()
    });
    s.directory = Some(DirectorySource {
        recurse: true,
        ..Default::default()
    });
    let err = run(t.path(), &s).unwrap_err().to_string();
    assert_eq!(
        err,
        "invalid application source: multiple application sources defined: Helm,Directory"
    );
    // Empty blocks do not count, as Argo CD normalises them away.
    let mut s = src("charts/web");
    s.directory = Some(DirectorySource::default());
    s.kustomize = Some(KustomizeSource::default());
    assert_eq!(run(t.path(), &s).unwrap().source_type, SourceType::Helm);
}

#[test]
fn concurrent_renders_do_not_interfere() {
    let t = kustomize_fixture();
    let root = t.path().to_path_buf();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let root = root.clone();
            std::thread::spawn(move || {
                let mut s = src("overlays/prod");
                s.kustomize = Some(KustomizeSource {
                    name_prefix: Some(format!("p{i}-")),
                    ..Default::default()
                });
                let r = run(&root, &s).unwrap();
                find(&r, "Deployment", &format!("p{i}-web"))["metadata"]["name"].clone()
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.join().unwrap(), format!("p{i}-web"));
    }
}

/// A plugin that writes forever is killed as soon as its output passes the limit — not at its
/// timeout — with a clear message, and its output is never held past the limit.
#[test]
fn a_plugin_that_writes_forever_is_stopped_at_the_output_limit() {
    let t = plugin_fixture();
    let p = PluginConfig::from_yaml(
        "apiVersion: argoproj.io/v1alpha1\nkind: ConfigManagementPlugin\nmetadata: {name: flood}\nspec:\n  generate:\n    command: [sh, -c, 'yes \"apiVersion: v1\"']\n",
    )
    .unwrap();
    let mut s = src("apps/cmp");
    s.plugin = Some(PluginSource {
        name: Some("flood".into()),
        ..Default::default()
    });
    let o = Opts {
        plugins: vec![p],
        timeout: Duration::from_secs(120),
        ..Default::default()
    };
    let start = Instant::now();
    let err = run_with(t.path(), &s, &o).unwrap_err();
    assert_eq!(
        err.to_string(),
        "`plugin flood generate` failed: output exceeds 64 MiB",
        "{err:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "took {:?}",
        start.elapsed()
    );
}

/// A directory whose manifests add up to 100 MB is refused before it is read.
#[test]
fn a_hundred_megabyte_directory_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let doc = cm("big");
    let chunk = doc.repeat((1024 * 1024) / doc.len() + 1);
    for i in 0..100 {
        write(
            t.path(),
            &format!("apps/big/part-{i:03}.yaml"),
            &format!("---\n{chunk}"),
        );
    }
    let err = run(t.path(), &src("apps/big")).unwrap_err().to_string();
    assert!(err.contains("manifests exceed 64 MiB"), "{err}");
}

//! `ferry render`: offline OAM rendering, run as the built binary. No test
//! environment: everything here is files in, YAML out.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ferry_in(
    dir: Option<&Path>,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.arg("render").args(args);
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    cmd.env_remove("ARGOCD_APP_NAMESPACE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    common::run(cmd, stdin)
}

fn ferry(args: &[&str]) -> Output {
    ferry_in(None, args, None, &[])
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "ferry render failed: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn my_app() -> String {
    root()
        .join("examples/oam/my-app.yaml")
        .display()
        .to_string()
}

/// Documents of a YAML stream, without comment lines.
fn docs(text: &str) -> Vec<serde_json::Value> {
    serde_saphyr::from_multiple::<serde_json::Value>(text)
        .unwrap()
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

const CONFIGMAP: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: plain
data:
  key: value
  mode: '0644'
";

/// Replaces the built-in `labels` trait: also labels the workload with `context.namespace`.
const NS_LABELS_TRAIT: &str = r#"apiVersion: core.oam.dev/v1beta1
kind: TraitDefinition
metadata:
  name: labels
spec:
  schematic:
    jsonnet:
      template: |
        function(parameter, context) {
          patch: { metadata+: { labels+: parameter + { ns: context.namespace } } },
        }
"#;

#[test]
fn my_app_matches_golden_byte_for_byte() {
    let got = ok(&ferry(&["-f", &my_app()]));
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/my-app.yaml");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &got).unwrap();
    }
    let want = std::fs::read_to_string(&golden).unwrap();
    assert!(
        got == want,
        "output differs from {}; got:\n{got}",
        golden.display()
    );

    // What the golden must show, checked directly too.
    assert!(
        got.starts_with(
            "---\n# Application(my-app only with override policies) -- Component(my-server)\napiVersion: apps/v1\n"
        ),
        "my-app's one deploy step has no topology: vela dry-run's label for it"
    );
    assert!(got.contains(
        "---\n# Application(my-app only with override policies) -- Component(my-server)\n## From the trait ingress\n"
    ));
    let d = docs(&got);
    let kinds: Vec<&str> = d.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Deployment", "Ingress", "Service"]);
    assert_eq!(d[0]["spec"]["replicas"], 2);
    assert_eq!(d[0]["metadata"]["labels"]["team"], "payments");
}

#[test]
fn output_is_deterministic_and_stdin_works() {
    let a = ok(&ferry(&["-f", &my_app()]));
    let b = ok(&ferry(&["-f", &my_app()]));
    assert_eq!(a, b);
    let text = std::fs::read_to_string(my_app()).unwrap();
    let c = ok(&ferry_in(None, &["-f", "-"], Some(&text), &[]));
    assert_eq!(a, c, "stdin renders the same as the file");
}

#[test]
fn plain_manifests_pass_through_and_directories_are_read_sorted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("b-app.yaml"),
        std::fs::read_to_string(my_app()).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.path().join("a-config.yml"), CONFIGMAP).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not yaml: [").unwrap();
    let got = ok(&ferry(&["-f", dir.path().to_str().unwrap()]));
    let d = docs(&got);
    let kinds: Vec<&str> = d.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ConfigMap", "Deployment", "Ingress", "Service"]);
    assert_eq!(
        d[0],
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "plain"},
                           "data": {"key": "value", "mode": "0644"}})
    );
    assert!(
        got.starts_with("---\napiVersion: v1\ndata:\n"),
        "no header on passthrough:\n{got}"
    );
}

#[test]
fn custom_trait_definition_from_a_file_changes_the_output() {
    let dir = tempfile::tempdir().unwrap();
    // Replaces the built-in scaler: replicas doubled, and an annotation.
    let def = dir.path().join("scaler.yaml");
    std::fs::write(
        &def,
        r#"apiVersion: core.oam.dev/v1beta1
kind: TraitDefinition
metadata:
  name: scaler
spec:
  schematic:
    jsonnet:
      parameterSchema:
        type: object
        properties:
          replicas: { type: integer, default: 1 }
      template: |
        function(parameter, context) {
          patch: { spec+: { replicas: parameter.replicas * 2 },
                   metadata+: { annotations+: { 'example.com/scaled-by': 'platform' } } },
        }
"#,
    )
    .unwrap();
    let def = def.to_str().unwrap();
    for args in [
        vec!["-f", def, "-f", &my_app()],
        vec![
            "-f",
            &my_app(),
            "--definitions",
            dir.path().to_str().unwrap(),
        ],
    ] {
        let d = docs(&ok(&ferry(&args)));
        assert_eq!(d.len(), 3, "the definition itself is not printed");
        assert_eq!(d[0]["spec"]["replicas"], 4, "{args:?}");
        assert_eq!(
            d[0]["metadata"]["annotations"]["example.com/scaled-by"],
            "platform"
        );
    }
    let builtin = docs(&ok(&ferry(&["-f", &my_app()])));
    assert_eq!(builtin[0]["spec"]["replicas"], 2);
}

#[test]
fn unknown_type_exits_1_naming_type_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("typo.yaml");
    let text = std::fs::read_to_string(my_app())
        .unwrap()
        .replace("type: webservice", "type: websrvice");
    std::fs::write(&f, text).unwrap();
    let o = ferry(&["-f", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("typo.yaml"), "{err}");
    assert!(err.contains("unknown component type `websrvice`"), "{err}");
    assert!(o.stdout.is_empty(), "nothing printed on error");

    let text = std::fs::read_to_string(my_app())
        .unwrap()
        .replace("type: scaler", "type: scaler2");
    std::fs::write(&f, text).unwrap();
    let o = ferry(&["-f", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("typo.yaml") && err.contains("unknown trait type `scaler2`"),
        "{err}"
    );
}

#[test]
fn plugin_mode_renders_the_current_directory_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let app = std::fs::read_to_string(my_app())
        .unwrap()
        .replace("  namespace: default\n", "");
    std::fs::create_dir_all(dir.path().join("apps/web")).unwrap();
    std::fs::create_dir_all(dir.path().join(".git")).unwrap();
    std::fs::write(dir.path().join("apps/web/app.yaml"), app).unwrap();
    std::fs::write(dir.path().join("config.yaml"), CONFIGMAP).unwrap();
    std::fs::write(dir.path().join(".git/junk.yaml"), "not: [valid").unwrap();
    // A definition in the repo, used by the app: the namespace shows up in context.
    std::fs::write(dir.path().join("apps/labels.yaml"), NS_LABELS_TRAIT).unwrap();
    let env = [
        ("ARGOCD_APP_NAMESPACE", "shop"),
        ("ARGOCD_APP_NAME", "web"),
        ("ARGOCD_ENV_FOO", "bar"),
    ];
    let got = ok(&ferry_in(Some(dir.path()), &["--plugin"], None, &env));
    assert!(!got.contains('#'), "no comments in plugin mode:\n{got}");
    let d = docs(&got);
    let kinds: Vec<&str> = d.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    // apps/ (labels.yaml, web/app.yaml) sorts before config.yaml.
    assert_eq!(kinds, ["Deployment", "Ingress", "Service", "ConfigMap"]);
    assert_eq!(d[0]["metadata"]["labels"]["ns"], "shop");
    assert_eq!(d[0]["metadata"]["labels"]["team"], "payments");

    // An explicit namespace in the Application wins over ARGOCD_APP_NAMESPACE.
    let app = std::fs::read_to_string(my_app()).unwrap();
    std::fs::write(dir.path().join("apps/web/app.yaml"), app).unwrap();
    let d = docs(&ok(&ferry_in(Some(dir.path()), &["--plugin"], None, &env)));
    assert_eq!(d[0]["metadata"]["labels"]["ns"], "default");
}

/// The example plugin, run by Ferry's own CMP support (as the controller does):
/// the generate command gets ARGOCD_APP_NAMESPACE from the destination.
#[test]
fn example_oam_plugin_runs_under_ferrys_cmp_support() {
    use ferry_model::{ApplicationSource, PluginSource};
    use ferry_render::{PluginConfig, RenderInput, RenderTools};

    let repo = tempfile::tempdir().unwrap();
    let app_dir = repo.path().join("apps/web");
    std::fs::create_dir_all(&app_dir).unwrap();
    let app = std::fs::read_to_string(my_app())
        .unwrap()
        .replace("  namespace: default\n", "");
    std::fs::write(app_dir.join("app.yaml"), app).unwrap();
    std::fs::write(app_dir.join("config.yaml"), CONFIGMAP).unwrap();
    std::fs::write(app_dir.join("labels-def.yaml"), NS_LABELS_TRAIT).unwrap();
    // Not under the app's path: not rendered.
    std::fs::write(
        repo.path().join("other.yaml"),
        CONFIGMAP.replace("plain", "other"),
    )
    .unwrap();

    let yaml = std::fs::read_to_string(root().join("examples/plugins/oam.yaml")).unwrap();
    let mut plugin = PluginConfig::from_yaml(&yaml).unwrap();
    assert_eq!(plugin.full_name(), "oam-v1.0");
    assert_eq!(plugin.generate.command, ["ferry", "render", "--plugin"]);
    plugin.generate.command[0] = env!("CARGO_BIN_EXE_ferry").into();
    let plugins = [plugin];
    let tools = RenderTools {
        helm: "helm".into(),
        kustomize: "kustomize".into(),
        ..Default::default()
    };
    let refs = Default::default();
    // By name, and by discovery (an empty `plugin: {}`).
    for name in [Some("oam-v1.0".to_string()), None] {
        let source = ApplicationSource {
            repo_url: "https://git.example.com/org/repo.git".into(),
            path: Some("apps/web".into()),
            target_revision: Some("main".into()),
            plugin: Some(PluginSource {
                name: name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let out = ferry_render::render(&RenderInput {
            app_name: "web",
            app_namespace: "shop",
            source: &source,
            repo_root: repo.path(),
            revision: "0123456789abcdef0123456789abcdef01234567",
            refs: &refs,
            kube_version: "1.34.0",
            api_versions: &[],
            plugins: &plugins,
            tools: &tools,
            timeout: std::time::Duration::from_secs(60),
        })
        .unwrap_or_else(|e| panic!("{name:?}: {e}"));
        let kinds: Vec<&str> = out
            .objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            ["Deployment", "Ingress", "Service", "ConfigMap"],
            "{name:?}"
        );
        // ARGOCD_APP_NAMESPACE (the destination) became context.namespace.
        assert_eq!(
            out.objects[0]["metadata"]["labels"]["ns"], "shop",
            "{name:?}"
        );
        assert_eq!(out.objects[3]["metadata"]["name"], "plain");
    }
}

fn git(dir: &Path, args: &[&str]) {
    let o = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn fetch_renders_helm_from_git_and_kustomize_components_like_the_controller() {
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    let write = |rel: &str, text: &str| {
        let p = repo.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write(
        "deploy/kustomization.yaml",
        "resources: [cm.yaml]\nnamePrefix: site-\ncommonLabels: {tier: web}\n",
    );
    write(
        "deploy/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {color: blue}\n",
    );
    write(
        "charts/demo/Chart.yaml",
        "apiVersion: v2\nname: demo\nversion: 0.1.0\n",
    );
    write("charts/demo/values.yaml", "replicas: 1\n");
    write(
        "charts/demo/templates/deploy.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}-demo\n  namespace: {{ .Release.Namespace }}\nspec:\n  replicas: {{ .Values.replicas }}\n  selector: {matchLabels: {app: demo}}\n  template:\n    metadata: {labels: {app: demo}}\n    spec: {containers: [{name: demo, image: registry.local/demo:1}]}\n",
    );
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "init"]);
    let url = format!("file://{}", repo.display());
    let app = work.path().join("app.yaml");
    std::fs::write(
        &app,
        format!(
            r#"apiVersion: core.oam.dev/v1beta1
kind: Application
metadata: {{name: sources, namespace: shop}}
spec:
  components:
    - name: site
      type: kustomize
      properties: {{url: "{url}", git: {{branch: main}}, path: ./deploy}}
    - name: chart
      type: helm
      properties:
        repoType: git
        url: "{url}"
        git: {{branch: main}}
        chart: ./charts/demo
        releaseName: shop
        values: {{replicas: 2}}
    - name: extra
      type: k8s-objects
      properties: {{objects: [{{apiVersion: v1, kind: ConfigMap, metadata: {{name: extra}}}}]}}
"#
        ),
    )
    .unwrap();
    let cache = work.path().join("cache");
    let cache = cache.to_str().unwrap();
    let app_path = app.to_str().unwrap();
    let fetched = ok(&ferry_in(
        None,
        &["-f", app_path, "--fetch"],
        None,
        &[("FERRY_RENDER_CACHE", cache)],
    ))
    .replace(&url, "<repo>");
    let golden = root().join("crates/cli/tests/golden/sources-fetched.yaml");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &fetched).unwrap();
    }
    assert_eq!(fetched, std::fs::read_to_string(&golden).unwrap());
    assert!(fetched.contains("name: site-settings"));
    assert!(fetched.contains("name: shop-demo"));
    assert!(fetched.contains("replicas: 2"));

    // Offline, the source components say what they would fetch; the rest still renders.
    let offline = ok(&ferry_in(
        None,
        &["-f", app_path],
        None,
        &[("FERRY_RENDER_CACHE", cache)],
    ));
    assert!(offline.contains("## ./deploy of"), "{offline}");
    assert!(offline.contains("fetched at deploy time"), "{offline}");
    assert!(offline.contains("name: extra"), "{offline}");
    assert!(!offline.contains("site-settings"), "{offline}");
}

#[test]
fn api_versions_follow_the_kubernetes_version_rendered_for() {
    let app = "apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata: {name: jobs}\nspec:\n  components:\n    - name: nightly\n      type: cron-task\n      properties: {image: busybox, schedule: '0 1 * * *'}\n";
    let cron_version = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["-f", "-"];
        all.extend_from_slice(args);
        let out = ok(&ferry_in(None, &all, Some(app), env));
        docs(&out)
            .into_iter()
            .find(|d| d["kind"] == "CronJob")
            .map(|d| d["apiVersion"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(
        cron_version(&[], &[]),
        "batch/v1",
        "a current Kubernetes by default"
    );
    assert_eq!(
        cron_version(&["--kube-version", "1.20.2"], &[]),
        "batch/v1beta1"
    );
    assert_eq!(cron_version(&["--kube-version", "v1.28"], &[]), "batch/v1");
    let bad = ferry_in(
        None,
        &["-f", "-", "--kube-version", "latest"],
        Some(app),
        &[],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--kube-version"));
}

#[test]
fn parse_errors_name_the_path_and_null_traits_are_empty() {
    let bad = "apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata: {name: a}\nspec:\n  components:\n    - {name: a, type: worker, properties: {image: x}, traits: null}\n    - name: b\n      type: worker\n      traits: [{properties: {}}]\n";
    let o = ferry_in(None, &["-f", "-"], Some(bad), &[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("spec.components[1].traits[0]") && err.contains("missing field `type`"),
        "{err}"
    );
    let good = bad.replace(
        "      traits: [{properties: {}}]\n",
        "      properties: {image: y}\n",
    );
    ok(&ferry_in(None, &["-f", "-"], Some(&good), &[]));
}

/// `vela dry-run` with policies: one block per deploy step and topology, each with the step's
/// overrides (image, trait changes, a selector leaving a component out, a component added).
#[test]
fn policies_render_one_block_per_deploy_target_with_its_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app.yaml");
    std::fs::write(
        &app,
        r#"apiVersion: core.oam.dev/v1beta1
kind: Application
metadata: {name: multi}
spec:
  components:
    - name: web
      type: webservice
      properties: {image: "nginx:1.25"}
      traits: [{type: scaler, properties: {replicas: 1}}]
    - name: worker
      type: worker
      properties: {image: busybox}
  policies:
    - {name: hub, type: topology, properties: {clusters: [local]}}
    - {name: edge, type: topology, properties: {clusters: [edge-1]}}
    - name: edge-tuning
      type: override
      properties:
        selector: [web, cache]
        components:
          - {name: web, properties: {image: "nginx:1.26"}, traits: [{type: scaler, properties: {replicas: 3}}]}
          - {name: cache, type: worker, properties: {image: "redis:7"}}
  workflow:
    steps:
      - {name: deploy-hub, type: deploy, properties: {policies: [hub]}}
      - {name: deploy-edge, type: deploy, properties: {policies: [edge, edge-tuning]}}
"#,
    )
    .unwrap();
    let got = ok(&ferry(&["-f", app.to_str().unwrap()]));
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/multi-target.yaml");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &got).unwrap();
    }
    assert!(
        got == std::fs::read_to_string(&golden).unwrap(),
        "output differs from {}; got:\n{got}",
        golden.display()
    );
    let headers: Vec<&str> = got
        .lines()
        .filter(|l| l.starts_with("# Application("))
        .collect();
    assert_eq!(
        headers,
        [
            "# Application(multi with topology hub) -- Component(web)",
            "# Application(multi with topology hub) -- Component(worker)",
            "# Application(multi with topology edge) -- Component(web)",
            "# Application(multi with topology edge) -- Component(cache)",
        ],
        "{got}"
    );
    let d = docs(&got);
    let image =
        |o: &serde_json::Value| o["spec"]["template"]["spec"]["containers"][0]["image"].clone();
    assert_eq!(
        (image(&d[0]), d[0]["spec"]["replicas"].clone()),
        ("nginx:1.25".into(), 1.into())
    );
    assert_eq!(
        (image(&d[2]), d[2]["spec"]["replicas"].clone()),
        ("nginx:1.26".into(), 3.into())
    );
    assert_eq!(image(&d[3]), "redis:7", "the component the override adds");

    // A policy type Ferry does not serve is refused here as the controller refuses it.
    std::fs::write(
        &app,
        "apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata: {name: a}\nspec:\n  components: [{name: w, type: worker, properties: {image: x}}]\n  policies: [{name: r, type: env-binding, properties: {envs: []}}]\n",
    )
    .unwrap();
    let out = ferry(&["-f", app.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("policy `r`: type `env-binding` is not supported"),
        "{err}"
    );

    // An unknown field is an error that names its path, not a silent drop.
    std::fs::write(
        &app,
        "apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata: {name: a}\nspec:\n  components: [{name: w, type: worker, properties: {image: x}, trait: []}]\n",
    )
    .unwrap();
    let out = ferry(&["-f", app.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.components[0].trait: unknown field `trait`"),
        "{err}"
    );
}

/// ref-objects read the hub at deploy time: offline, `ferry render` says so instead of printing
/// nothing for the component.
#[test]
fn ref_objects_render_as_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app.yaml");
    std::fs::write(
        &app,
        "apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata: {name: copier}\nspec:\n  components:\n    - {name: shop, type: ref-objects, properties: {objects: [{resource: deployment, group: apps}]}}\n    - {name: w, type: worker, properties: {image: x}}\n",
    )
    .unwrap();
    let got = ok(&ferry(&["-f", app.to_str().unwrap()]));
    assert!(
        got.starts_with("---\n# Application(copier) -- Component(shop)\n## ref-objects: the selected objects are read from the hub at deploy time\n"),
        "{got}"
    );
    assert!(
        got.contains("# Application(copier) -- Component(w)\n"),
        "{got}"
    );
}

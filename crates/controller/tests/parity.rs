//! Argo CD parity, end to end: Jsonnet directory sources, sync windows, Lua
//! health from argocd-cm, jq ignoreDifferences, hook validation before wave 0,
//! and an empty render that says so. Real Git server, real API server.

mod common;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use std::time::Duration;

async fn configmap(h: &Harness, name: &str) -> Option<ConfigMap> {
    Api::<ConfigMap>::namespaced(h.client.clone(), &h.dest)
        .get_opt(name)
        .await
        .unwrap()
}

async fn request_sync(h: &Harness, name: &str) {
    let patch = json!({ "operation": { "sync": { "revision": "main" }, "initiatedBy": { "username": "test" } } });
    h.apps()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// Lets the controller run a few passes (poll interval 3 s) before checking
/// that something did not happen.
async fn a_few_passes(h: &Harness) {
    h.idle(Duration::from_secs(8)).await;
}

const GUESTBOOK_JSONNET: &str = r#"local params = import 'params.libsonnet';
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
        spec: { containers: [{ name: 'ui', image: 'nginx:' + std.extVar('tag') }] },
      },
    },
  },
  k.cm('guestbook-settings', { env: std.extVar('env'), app: std.extVar('app') }),
]
"#;

#[tokio::test]
async fn jsonnet_directory_apps_with_ext_vars_and_tlas_are_applied_and_healthy() {
    let h = harness("jsonnet").await;
    let repo = new_repo(
        "jsonnet",
        &[
            ("guestbook/guestbook.jsonnet", GUESTBOOK_JSONNET),
            ("guestbook/params.libsonnet", "{ replicas: 2 }\n"),
            (
                "lib/k.libsonnet",
                "{ cm(name, data):: { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: name }, data: data } }\n",
            ),
            (
                "tla/main.jsonnet",
                "function(name, size) { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: name }, data: { size: std.toString(size) } }\n",
            ),
        ],
    );
    let url = h.env.git.file_url(&repo);
    let ext = json!({ "spec": {
        "source": { "directory": { "jsonnet": {
            "extVars": [
                { "name": "env", "value": "prod" },
                { "name": "app", "value": "$ARGOCD_APP_NAME" },
                { "name": "tag", "value": "'1.' + '25'", "code": true },
            ],
            "libs": ["lib"],
        } } },
        "syncPolicy": { "automated": { "prune": true } },
    } });
    h.apply_app(app("guestbook", &url, "guestbook", &h.dest, ext))
        .await;
    let tla = json!({ "spec": {
        "source": { "directory": { "jsonnet": { "tlas": [
            { "name": "name", "value": "from-tla" },
            { "name": "size", "value": "6 * 7", "code": true },
        ] } } },
        "syncPolicy": { "automated": {} },
    } });
    h.apply_app(app("tla", &url, "tla", &h.dest, tla)).await;

    let a = h.wait_synced_healthy("guestbook").await;
    let st = a.status.unwrap();
    assert_eq!(st.resources.len(), 2, "{:?}", st.resources);
    assert_eq!(st.source_type.as_deref(), Some("Directory"));
    let dep = Api::<Deployment>::namespaced(h.client.clone(), &h.dest)
        .get("guestbook-ui")
        .await
        .unwrap();
    assert_eq!(dep.spec.replicas, Some(2));
    assert_eq!(
        dep.spec.template.spec.unwrap().containers[0]
            .image
            .as_deref(),
        Some("nginx:1.25")
    );
    let data = configmap(&h, "guestbook-settings")
        .await
        .unwrap()
        .data
        .unwrap();
    assert_eq!(data["env"], "prod");
    assert_eq!(data["app"], "guestbook");

    h.wait_synced_healthy("tla").await;
    let data = configmap(&h, "from-tla").await.unwrap().data.unwrap();
    assert_eq!(data["size"], "42");
}

#[tokio::test]
async fn a_deny_window_holds_automated_syncs_and_manual_sync_passes_only_when_allowed() {
    let h = harness("window").await;
    let window = |manual: bool| {
        json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "AppProject",
            "metadata": { "name": "frozen", "namespace": h.ns },
            "spec": {
                "sourceRepos": ["*"],
                "destinations": [{ "server": "*", "namespace": "*" }],
                // Active all day, every day: a change freeze.
                "syncWindows": [{
                    "kind": "deny", "schedule": "0 0 * * *", "duration": "24h",
                    "applications": ["freeze-*"], "manualSync": manual,
                }],
            },
        })
    };
    h.apply(window(false)).await;
    let repo = new_repo(
        "window",
        &[(
            "cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: frozen-cm\ndata:\n  k: v\n",
        )],
    );
    let url = h.env.git.file_url(&repo);
    let extra = json!({ "spec": { "project": "frozen", "syncPolicy": { "automated": {} } } });
    h.apply_app(app("freeze-web", &url, ".", &h.dest, extra))
        .await;
    let a = h
        .wait_app("freeze-web", "a sync window condition", |a| {
            conditions(a).contains("SyncWindowWarning")
        })
        .await;
    assert!(
        conditions(&a).contains("automated sync blocked by a sync window of project frozen"),
        "{}",
        conditions(&a)
    );
    assert_eq!(sync_status(&a), "OutOfSync");
    a_few_passes(&h).await;
    assert!(configmap(&h, "frozen-cm").await.is_none());

    // A manual sync waits while the window does not allow manual syncs ...
    request_sync(&h, "freeze-web").await;
    let a = h
        .wait_app("freeze-web", "the operation held by the window", |a| {
            a.status
                .as_ref()
                .and_then(|s| s.operation_state.as_ref())
                .is_some_and(|o| {
                    o.phase == "Running" && o.message == "Sync operation blocked by sync window"
                })
        })
        .await;
    assert!(a.operation.is_some(), "the operation stays pending");
    a_few_passes(&h).await;
    assert!(configmap(&h, "frozen-cm").await.is_none());

    // ... and runs once the window has manualSync: true.
    h.apply(window(true)).await;
    h.wait_app("freeze-web", "the manual sync succeeded", |a| {
        op_phase(a) == "Succeeded"
    })
    .await;
    assert!(configmap(&h, "frozen-cm").await.is_some());
}

const WIDGET_HEALTH: &str = r#"hs = {}
if obj.status ~= nil then
  if obj.status.phase == "Ready" then
    hs.status = "Healthy"
    hs.message = "widget is ready"
    return hs
  end
  if obj.status.phase == "Failed" then
    hs.status = "Degraded"
    hs.message = "widget failed: " .. obj.status.reason
    return hs
  end
end
hs.status = "Progressing"
hs.message = "waiting for the widget"
return hs
"#;

#[tokio::test]
async fn a_lua_health_script_from_argocd_cm_turns_a_custom_resource_degraded_and_healthy() {
    let h = harness("lua").await;
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": { "name": "widgets.parity.ferry.dev" },
        "spec": {
            "group": "parity.ferry.dev", "scope": "Namespaced",
            "names": { "plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList" },
            "versions": [{ "name": "v1", "served": true, "storage": true,
                "schema": { "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } } }],
        },
    });
    h.apply(crd).await;
    h.eventually("the Widget kind is served", || async {
        let gvk = kube::api::GroupVersionKind::gvk("parity.ferry.dev", "v1", "Widget");
        kube::discovery::pinned_kind(&h.client, &gvk).await.ok()
    })
    .await;
    h.apply(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "argocd-cm", "namespace": h.ns },
        "data": { "resource.customizations.health.parity.ferry.dev_Widget": WIDGET_HEALTH },
    }))
    .await;
    let repo = new_repo(
        "lua",
        &[(
            "widget.yaml",
            "apiVersion: parity.ferry.dev/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  size: 3\n",
        )],
    );
    h.apply_app(app(
        "widget",
        &h.env.git.file_url(&repo),
        ".",
        &h.dest,
        automated(),
    ))
    .await;
    let a = h
        .wait_app("widget", "Progressing by the script", |a| {
            sync_status(a) == "Synced" && health_status(a) == "Progressing"
        })
        .await;
    assert_eq!(
        a.status.unwrap().health.unwrap().status,
        "Progressing",
        "without status the script says Progressing"
    );

    let ar = kube::api::ApiResource {
        group: "parity.ferry.dev".into(),
        version: "v1".into(),
        api_version: "parity.ferry.dev/v1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
    };
    let widgets: Api<DynamicObject> = Api::namespaced_with(h.client.clone(), &h.dest, &ar);
    let set_status = |status: Value| {
        let widgets = widgets.clone();
        async move {
            widgets
                .patch(
                    "w1",
                    &PatchParams::default(),
                    &Patch::Merge(&json!({ "status": status })),
                )
                .await
                .unwrap();
        }
    };
    set_status(json!({ "phase": "Failed", "reason": "disk full" })).await;
    let a = h
        .wait_app("widget", "Degraded by the script", |a| {
            health_status(a) == "Degraded"
        })
        .await;
    let res = &a.status.unwrap().resources[0];
    assert_eq!(
        res.health.as_ref().unwrap().message.as_deref(),
        Some("widget failed: disk full")
    );
    set_status(json!({ "phase": "Ready" })).await;
    h.wait_app("widget", "Healthy by the script", |a| {
        health_status(a) == "Healthy"
    })
    .await;
}

const TWO_CONTAINERS: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: meshed
spec:
  replicas: 1
  selector:
    matchLabels: {app: meshed}
  template:
    metadata:
      labels: {app: meshed}
    spec:
      containers:
      - name: app
        image: app:1
      - name: sidecar
        image: envoy:1
"#;

#[tokio::test]
async fn jq_expressions_beyond_the_old_subset_are_ignored_as_written_and_bad_ones_reported() {
    let h = harness("jq").await;
    let repo = new_repo("jq", &[("deploy.yaml", TWO_CONTAINERS)]);
    let url = h.env.git.file_url(&repo);
    // Not automated: the test watches what compare reports, with nothing syncing it away.
    let ignore = |expr: &str| {
        json!({ "spec": { "ignoreDifferences": [{
            "group": "apps", "kind": "Deployment",
            "jqPathExpressions": [expr],
        }] } })
    };
    h.apply_app(app(
        "meshed",
        &url,
        ".",
        &h.dest,
        ignore(r#".spec.template.spec.containers[] | select(.name == "sidecar") | .image"#),
    ))
    .await;
    h.wait_app("meshed", "compared", |a| sync_status(a) == "OutOfSync")
        .await;
    request_sync(&h, "meshed").await;
    h.wait_synced_healthy("meshed").await;

    // A mesh injector bumps the sidecar: ignored. A change to the app container: drift.
    let deployments = Api::<Deployment>::namespaced(h.client.clone(), &h.dest);
    let set_images = |app_image: &str, sidecar: &str| {
        json!({ "spec": { "template": { "spec": { "containers": [
            { "name": "app", "image": app_image }, { "name": "sidecar", "image": sidecar },
        ] } } } })
    };
    deployments
        .patch(
            "meshed",
            &PatchParams::apply("mesh-injector").force(),
            &Patch::Apply(&json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": { "name": "meshed" },
                "spec": { "template": { "spec": { "containers": [{ "name": "sidecar", "image": "envoy:2" }] } } },
            })),
        )
        .await
        .unwrap();
    h.refresh("meshed").await;
    a_few_passes(&h).await;
    let a = h.apps().get("meshed").await.unwrap();
    assert_eq!(sync_status(&a), "Synced", "{}", conditions(&a));
    let live = deployments.get("meshed").await.unwrap();
    let images: Vec<String> = live
        .spec
        .template
        .spec
        .unwrap()
        .containers
        .iter()
        .map(|c| c.image.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        images,
        ["app:1", "envoy:2"],
        "the ignored sidecar is left alone"
    );

    deployments
        .patch(
            "meshed",
            &PatchParams::default(),
            &Patch::Strategic(&set_images("app:2", "envoy:2")),
        )
        .await
        .unwrap();
    h.refresh("meshed").await;
    let a = h
        .wait_app("meshed", "the app container's drift", |a| {
            sync_status(a) == "OutOfSync"
        })
        .await;
    let drifted: Vec<String> = a
        .status
        .unwrap()
        .resources
        .iter()
        .filter(|r| r.status.as_deref() == Some("OutOfSync"))
        .map(|r| r.name.clone())
        .collect();
    assert_eq!(drifted, ["meshed"]);

    // An expression that does not compile is a condition naming it; nothing is applied.
    let repo2 = new_repo(
        "jq-bad",
        &[("deploy.yaml", &TWO_CONTAINERS.replace("meshed", "bad-jq"))],
    );
    h.apply_app(app(
        "bad-jq",
        &h.env.git.file_url(&repo2),
        ".",
        &h.dest,
        ignore(".spec.template | select(.name =="),
    ))
    .await;
    let a = h
        .wait_app("bad-jq", "a ComparisonError", |a| {
            conditions(a).contains("ComparisonError")
        })
        .await;
    let msg = conditions(&a);
    assert!(
        msg.contains("invalid jqPathExpression \".spec.template | select(.name ==\""),
        "{msg}"
    );
    assert!(deployments.get_opt("bad-jq").await.unwrap().is_none());
}

#[tokio::test]
async fn a_post_sync_hook_that_fails_dry_run_refuses_the_sync_before_wave_zero() {
    let h = harness("hookcheck").await;
    let repo = new_repo(
        "hookcheck",
        &[
            (
                "cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: wave-zero\ndata:\n  k: v\n",
            ),
            // No containers: the API server refuses this Job.
            (
                "hook.yaml",
                "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: smoke\n  annotations:\n    argocd.argoproj.io/hook: PostSync\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: []\n",
            ),
        ],
    );
    h.apply_app(app(
        "hookcheck",
        &h.env.git.file_url(&repo),
        ".",
        &h.dest,
        json!({}),
    ))
    .await;
    h.wait_app("hookcheck", "compared", |a| sync_status(a) == "OutOfSync")
        .await;
    request_sync(&h, "hookcheck").await;
    let a = h
        .wait_app("hookcheck", "the sync failed", |a| op_phase(a) == "Failed")
        .await;
    let os = a.status.unwrap().operation_state.unwrap();
    assert!(
        os.message
            .starts_with("one or more synchronization tasks are not valid: Job/batch ")
            && os.message.contains("Job.batch \"smoke\" is invalid")
            && os
                .message
                .contains("spec.template.spec.containers: Required value"),
        "{}",
        os.message
    );
    let results = os.sync_result.unwrap().resources;
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(
        (results[0].sync_phase.as_str(), results[0].status.as_str()),
        ("PostSync", "SyncFailed")
    );
    assert!(
        configmap(&h, "wave-zero").await.is_none(),
        "nothing was applied"
    );
}

#[tokio::test]
async fn a_source_that_renders_nothing_says_so_and_never_prunes() {
    let h = harness("empty").await;
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: kept\ndata:\n  k: v\n";
    let repo = new_repo("empty", &[("app/cm.yaml", cm)]);
    h.apply_app(app(
        "empty",
        &h.env.git.file_url(&repo),
        "app",
        &h.dest,
        automated(),
    ))
    .await;
    h.wait_synced_healthy("empty").await;

    // The manifests move to files Argo CD does not render either: nothing renders.
    commit(
        &repo,
        &[
            ("app/README.md", "# moved\n"),
            ("app/cm.yaml.tmpl", cm),
            ("app/lib.libsonnet", "{}\n"),
        ],
    );
    let a = h
        .wait_app("empty", "the empty-render condition", |a| {
            conditions(a).contains("EmptyManifestWarning")
        })
        .await;
    let msg = conditions(&a);
    assert!(
        msg.contains("the application's sources rendered no resources")
            && msg.contains("app/README.md, app/cm.yaml.tmpl, app/lib.libsonnet"),
        "{msg}"
    );
    let a = h
        .wait_app("empty", "auto-sync refused", |a| {
            conditions(a).contains("auto-sync will wipe out all resources")
        })
        .await;
    assert_eq!(sync_status(&a), "OutOfSync");
    a_few_passes(&h).await;
    assert!(configmap(&h, "kept").await.is_some(), "nothing was pruned");
}

#[tokio::test]
async fn oci_helm_charts_with_credentials_both_spellings() {
    let h = harness("oci").await;
    let chart = tempfile::tempdir().unwrap();
    std::fs::write(
        chart.path().join("Chart.yaml"),
        "apiVersion: v2\nname: ocidemo\nversion: 0.3.0\n",
    )
    .unwrap();
    std::fs::write(
        chart.path().join("values.yaml"),
        "message: from the chart\n",
    )
    .unwrap();
    std::fs::create_dir(chart.path().join("templates")).unwrap();
    std::fs::write(
        chart.path().join("templates/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata:\n  message: {{ .Values.message | quote }}\n",
    )
    .unwrap();
    let registry = &h.env.registry;
    let path = format!("charts-{}", std::process::id());
    registry
        .push_chart(&h.env.tools.helm, chart.path(), &path)
        .unwrap();

    // Argo CD's two ways to name an OCI chart repository: a Secret with
    // enableOCI for `host/path`, or the `oci://` scheme.
    let plain = format!("{}/{path}", registry.host);
    let scheme = format!("oci://{}/{path}", registry.host);
    for (name, url, oci_flag) in [("oci-flag", &plain, true), ("oci-scheme", &scheme, false)] {
        let mut data = json!({
            "type": "helm", "name": name, "url": url,
            "username": registry.user(), "password": registry.password().expose(),
        });
        if oci_flag {
            data["enableOCI"] = json!("true");
        }
        h.apply(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": name, "namespace": h.ns,
                "labels": { "argocd.argoproj.io/secret-type": "repository" } },
            "stringData": data,
        }))
        .await;
        h.apply_app(json!({
            "metadata": { "name": name },
            "spec": {
                "project": "default",
                "source": { "repoURL": url, "chart": "ocidemo", "targetRevision": "0.3.0",
                    "helm": { "values": format!("message: via {name}") } },
                "destination": { "server": "https://kubernetes.default.svc", "namespace": h.dest },
                "syncPolicy": { "automated": {} },
            }
        }))
        .await;
    }
    for name in ["oci-flag", "oci-scheme"] {
        let a = h.wait_synced_healthy(name).await;
        let st = a.status.unwrap();
        assert_eq!(st.source_type.as_deref(), Some("Helm"));
        assert_eq!(st.sync.unwrap().revision.as_deref(), Some("0.3.0"));
        let cm = configmap(&h, &format!("{name}-cm")).await.unwrap();
        assert_eq!(cm.data.unwrap()["message"], format!("via {name}"));
    }

    // Without credentials the registry refuses, and the password never shows.
    h.apply_app(json!({
        "metadata": { "name": "oci-anon" },
        "spec": {
            "project": "default",
            "source": { "repoURL": format!("oci://{}/{path}-x", registry.host), "chart": "ocidemo", "targetRevision": "0.3.0" },
            "destination": { "server": "https://kubernetes.default.svc", "namespace": h.dest },
        }
    }))
    .await;
    let a = h
        .wait_app("oci-anon", "a ComparisonError", |a| {
            conditions(a).contains("ComparisonError")
        })
        .await;
    let msg = conditions(&a);
    assert!(msg.contains("failed to fetch chart ocidemo"), "{msg}");
    assert!(!msg.contains(registry.password().expose()));
}

#[tokio::test]
async fn applications_in_other_namespaces_need_the_flag_and_the_projects_permission() {
    let env = ferry_testenv::shared();
    let client = env.cluster.client().await.unwrap();
    let team = env
        .cluster
        .create_namespace(&client, "team-apps")
        .await
        .unwrap();
    let elsewhere = env
        .cluster
        .create_namespace(&client, "not-served")
        .await
        .unwrap();
    let pattern = format!("/^{}$/", regex_escape(&team));
    let h = harness_with("anyns", |cfg| {
        cfg.application_namespaces = vec!["no-such-*".into(), pattern];
    })
    .await;
    for (name, source_namespaces) in [("open", json!([team])), ("closed", json!([]))] {
        h.apply(json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "AppProject",
            "metadata": { "name": name, "namespace": h.ns },
            "spec": {
                "sourceRepos": ["*"],
                "destinations": [{ "server": "*", "namespace": "*" }],
                "sourceNamespaces": source_namespaces,
            },
        }))
        .await;
    }
    let repo = new_repo(
        "anyns",
        &[(
            "cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: team-cm\ndata:\n  k: v\n",
        )],
    );
    let url = h.env.git.file_url(&repo);
    let team_app = |name: &str, project: &str| {
        let mut a = app(name, &url, ".", &h.dest, automated());
        a["spec"]["project"] = json!(project);
        a
    };
    h.apply_app_in(&team, team_app("allowed", "open")).await;
    h.apply_app_in(&team, team_app("refused", "closed")).await;
    h.apply_app_in(&elsewhere, team_app("ignored", "open"))
        .await;

    let team_apps: Api<ferry_model::Application> = Api::namespaced(h.client.clone(), &team);
    let get = |name: &'static str| {
        let api = team_apps.clone();
        async move { api.get(name).await.ok() }
    };
    let allowed = h
        .eventually("the team app Synced and Healthy", || async {
            get("allowed")
                .await
                .filter(|a| sync_status(a) == "Synced" && health_status(a) == "Healthy")
        })
        .await;
    assert_eq!(allowed.status.unwrap().resources.len(), 1);
    let cm = configmap(&h, "team-cm").await.unwrap();
    assert_eq!(
        cm.metadata.annotations.unwrap()["argocd.argoproj.io/tracking-id"],
        format!("{team}_allowed:/ConfigMap:{}/team-cm", h.dest),
        "Argo CD's instance name for apps outside the control plane namespace"
    );
    let refused = h
        .eventually("the refusal", || async {
            get("refused")
                .await
                .filter(|a| conditions(a).contains("InvalidSpecError"))
        })
        .await;
    assert!(
        conditions(&refused).contains(&format!(
            "application {team}/refused is not permitted to use project closed"
        )),
        "{}",
        conditions(&refused)
    );

    // A namespace the controller does not serve is left alone.
    a_few_passes(&h).await;
    let ignored = Api::<ferry_model::Application>::namespaced(h.client.clone(), &elsewhere)
        .get("ignored")
        .await
        .unwrap();
    assert!(ignored.status.is_none(), "{:?}", ignored.status);
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

#[tokio::test]
async fn a_manual_sync_with_retry_is_retried_with_backoff_until_the_limit() {
    let h = harness("retry").await;
    // A PreSync hook that always fails: every attempt fails the same way.
    let repo = new_repo(
        "retry",
        &[
            (
                "cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: after-hook\ndata:\n  k: v\n",
            ),
            (
                "hook.yaml",
                "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: migrate\n  annotations:\n    argocd.argoproj.io/hook: PreSync\n    argocd.argoproj.io/hook-delete-policy: BeforeHookCreation\nspec:\n  backoffLimit: 0\n  template:\n    metadata:\n      annotations:\n        testenv.ferry.dev/exit-code: \"1\"\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: m\n        image: busybox\n",
            ),
        ],
    );
    h.apply_app(app(
        "retry",
        &h.env.git.file_url(&repo),
        ".",
        &h.dest,
        json!({}),
    ))
    .await;
    h.wait_app("retry", "compared", |a| sync_status(a) == "OutOfSync")
        .await;
    // The pending-retry state lasts one backoff (a second): watch every state the app goes
    // through rather than poll for it, so a slow machine cannot step over it.
    let states = std::sync::Arc::new(std::sync::Mutex::new(Vec::<ferry_model::Application>::new()));
    let _watch = {
        use futures::StreamExt;
        let states = states.clone();
        let stream = kube::runtime::watcher(
            h.apps(),
            kube::runtime::watcher::Config::default().fields("metadata.name=retry"),
        );
        AbortOnDrop(tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                if let Ok(kube::runtime::watcher::Event::Apply(a)) = ev {
                    states.lock().unwrap().push(a);
                }
            }
        }))
    };
    let patch = json!({ "operation": {
        "sync": { "revision": "main" },
        "initiatedBy": { "username": "test" },
        "retry": { "limit": 2, "backoff": { "duration": "1s", "factor": 2, "maxDuration": "5s" } },
    } });
    h.apps()
        .patch("retry", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let retrying = h
        .eventually("a retry pending", || {
            let states = states.clone();
            async move {
                states
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|a| {
                        a.status
                            .as_ref()
                            .and_then(|s| s.operation_state.as_ref())
                            .is_some_and(|o| {
                                o.phase == "Running" && o.message.starts_with("Retrying attempt #1")
                            })
                    })
                    .cloned()
            }
        })
        .await;
    assert!(
        retrying.operation.is_some(),
        "the operation stays while retries remain"
    );
    let failed = h
        .wait_app("retry", "retries exhausted", |a| op_phase(a) == "Failed")
        .await;
    let os = failed.status.unwrap().operation_state.unwrap();
    assert_eq!(os.retry_count, 2, "{os:?}");
    assert!(os.message.contains("migrate"), "{}", os.message);
    assert!(failed.operation.is_none(), "the operation is done");
    assert!(configmap(&h, "after-hook").await.is_none());
}

#[tokio::test]
async fn prunes_go_in_reverse_wave_order_with_prune_last_last_and_ignore_extraneous_keeps_synced() {
    let h = harness("pruneorder").await;
    let cm = |name: &str, wave: i64, extra: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  annotations:\n    argocd.argoproj.io/sync-wave: \"{wave}\"{extra}\ndata:\n  k: v\n"
        )
    };
    let repo = new_repo(
        "pruneorder",
        &[
            ("keep.yaml", &cm("keep", 0, "")),
            ("w1.yaml", &cm("wave-one", 1, "")),
            ("w5.yaml", &cm("wave-five", 5, "")),
            (
                "last.yaml",
                &cm(
                    "last",
                    9,
                    "\n    argocd.argoproj.io/sync-options: PruneLast=true",
                ),
            ),
        ],
    );
    let url = h.env.git.file_url(&repo);
    h.apply_app(app("pruneorder", &url, ".", &h.dest, json!({})))
        .await;
    h.wait_app("pruneorder", "compared", |a| sync_status(a) == "OutOfSync")
        .await;
    request_sync(&h, "pruneorder").await;
    h.wait_synced_healthy("pruneorder").await;

    commit(&repo, &[("keep.yaml", &cm("keep", 0, ""))]);
    h.refresh("pruneorder").await;
    h.wait_app("pruneorder", "three to prune", |a| {
        a.status
            .as_ref()
            .is_some_and(|s| s.resources.iter().filter(|r| r.requires_pruning).count() == 3)
    })
    .await;
    let patch = json!({ "operation": { "sync": { "revision": "main", "prune": true }, "initiatedBy": { "username": "test" } } });
    h.apps()
        .patch("pruneorder", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    // The first sync's state says Succeeded too: wait for the pruning one.
    let a = h
        .wait_app("pruneorder", "the prune sync", |a| {
            op_phase(a) == "Succeeded"
                && a.status
                    .as_ref()
                    .and_then(|s| s.operation_state.as_ref())
                    .and_then(|o| o.operation.sync.as_ref())
                    .is_some_and(|s| s.prune)
        })
        .await;
    let pruned: Vec<String> = a
        .status
        .unwrap()
        .operation_state
        .unwrap()
        .sync_result
        .unwrap()
        .resources
        .iter()
        .filter(|r| r.status == "Pruned")
        .map(|r| r.name.clone())
        .collect();
    assert_eq!(pruned, ["wave-five", "wave-one", "last"]);

    // An extraneous object marked IgnoreExtraneous does not make the app OutOfSync.
    let mut extra = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "generated", "namespace": h.dest, "annotations": {
            "argocd.argoproj.io/tracking-id": format!("pruneorder:/ConfigMap:{}/generated", h.dest),
            "argocd.argoproj.io/compare-options": "IgnoreExtraneous",
        } },
        "data": { "k": "v" },
    });
    h.apply(extra.clone()).await;
    h.refresh("pruneorder").await;
    let a = h
        .wait_app("pruneorder", "the extraneous object listed", |a| {
            a.status.as_ref().is_some_and(|s| {
                s.resources
                    .iter()
                    .any(|r| r.name == "generated" && r.requires_pruning)
            })
        })
        .await;
    assert_eq!(sync_status(&a), "Synced");
    // Without the annotation it is drift again.
    extra["metadata"]["annotations"]["argocd.argoproj.io/compare-options"] = json!("");
    h.apply(extra).await;
    h.refresh("pruneorder").await;
    h.wait_app("pruneorder", "OutOfSync without IgnoreExtraneous", |a| {
        sync_status(a) == "OutOfSync"
    })
    .await;
}

#[tokio::test]
async fn fields_and_sync_options_ferry_does_not_implement_are_refused_by_name() {
    let h = harness("unsupported").await;
    let repo = new_repo(
        "unsupported",
        &[(
            "cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: never\ndata:\n  k: v\n",
        )],
    );
    let url = h.env.git.file_url(&repo);
    let mut field = app("field", &url, ".", &h.dest, automated());
    field["spec"]["source"]["helm"] = json!({ "valueFiles": [], "fancyNewOption": true });
    field["spec"]["sourceHydrator"] = json!({ "drySource": { "repoURL": url } });
    h.apply_app(field).await;
    let mut option = app("option", &url, ".", &h.dest, automated());
    option["spec"]["syncPolicy"]["syncOptions"] = json!(["RespectIgnoreDifferences=true"]);
    h.apply_app(option).await;

    let a = h
        .wait_app("field", "InvalidSpecError", |a| {
            conditions(a).contains("InvalidSpecError")
        })
        .await;
    let msg = conditions(&a);
    assert!(
        msg.contains("fields Ferry does not support: ")
            && msg.contains("spec.source.helm.fancyNewOption")
            && msg.contains("spec.sourceHydrator"),
        "{msg}"
    );
    let a = h
        .wait_app("option", "InvalidSpecError", |a| {
            conditions(a).contains("InvalidSpecError")
        })
        .await;
    assert!(
        conditions(&a)
            .contains("syncOptions Ferry does not support: RespectIgnoreDifferences=true"),
        "{}",
        conditions(&a)
    );
    a_few_passes(&h).await;
    assert!(configmap(&h, "never").await.is_none());
}

#[tokio::test]
async fn argocd_cm_exclusions_and_aggregated_roles() {
    let h = harness("exclude").await;
    h.apply(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "argocd-cm", "namespace": h.ns },
        "data": {
            "resource.exclusions": "- apiGroups: ['']\n  kinds: [Secret]\n",
            "resource.compareoptions": "ignoreAggregatedRoles: true\n",
            "timeout.reconciliation": "60s",
        },
    }))
    .await;
    let label = format!("aggregate-to-{}", h.dest);
    let roles = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: {dest}-aggregate\naggregationRule:\n  clusterRoleSelectors:\n  - matchLabels:\n      {label}: \"true\"\nrules: []\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: {dest}-part\n  labels:\n    {label}: \"true\"\nrules:\n- apiGroups: [\"\"]\n  resources: [configmaps]\n  verbs: [get]\n",
        dest = h.dest
    );
    let repo = new_repo(
        "exclude",
        &[
            (
                "cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: included\ndata:\n  k: v\n",
            ),
            (
                "secret.yaml",
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: excluded\nstringData:\n  k: v\n",
            ),
            ("roles.yaml", &roles),
        ],
    );
    h.apply_app(app(
        "exclude",
        &h.env.git.file_url(&repo),
        ".",
        &h.dest,
        automated(),
    ))
    .await;
    let a = h.wait_synced_healthy("exclude").await;
    let msg = conditions(&a);
    assert!(
        msg.contains("ExcludedResourceWarning: Secret/excluded is excluded by resource.exclusions"),
        "{msg}"
    );
    let names: Vec<String> = a
        .status
        .unwrap()
        .resources
        .iter()
        .map(|r| r.name.clone())
        .collect();
    assert!(!names.contains(&"excluded".to_string()), "{names:?}");
    assert!(
        msg.contains("UnsupportedSettingWarning: argocd-cm settings Ferry does not act on: timeout.reconciliation"),
        "{msg}"
    );
    assert!(configmap(&h, "included").await.is_some());
    let secret = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(h.client.clone(), &h.dest)
        .get_opt("excluded")
        .await
        .unwrap();
    assert!(secret.is_none(), "an excluded kind is never applied");

    // Kubernetes fills the aggregated role's rules; with ignoreAggregatedRoles
    // that is not drift.
    let aggregate = format!("{}-aggregate", h.dest);
    let roles_api = Api::<k8s_openapi::api::rbac::v1::ClusterRole>::all(h.client.clone());
    h.eventually("the aggregated rules filled in", || async {
        let r = roles_api.get(&aggregate).await.ok()?;
        (!r.rules.unwrap_or_default().is_empty()).then_some(())
    })
    .await;
    h.refresh("exclude").await;
    a_few_passes(&h).await;
    let a = h.apps().get("exclude").await.unwrap();
    assert_eq!(sync_status(&a), "Synced", "{}", conditions(&a));
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

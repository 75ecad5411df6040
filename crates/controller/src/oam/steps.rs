//! The workflow steps that act on single objects: `depends-on-app`, `apply-object` and
//! `read-object` (KubeVela `vela-templates/definitions/internal/workflowstep/`), and the data
//! they pass to each other through step `outputs`/`inputs`.
//!
//! Output values can hold what a step read (a Secret's data, say), so they live in this
//! process's memo and in a Secret owned by the Application — never in its status, events or
//! logs. A controller that restarts mid-workflow reads them back from that Secret.

use std::collections::BTreeMap;

use ferry_engine::sync;
use ferry_oam::workflow::{Step, StepKind};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::Scope;
use serde_json::{Value, json};

use super::{Oam, Progress, policy};

/// What running an object step once did.
pub(super) struct StepRun {
    pub progress: Progress,
    /// The step's `outputs`, evaluated, when it finished.
    pub outputs: BTreeMap<String, Value>,
}

impl StepRun {
    fn waiting(m: String) -> StepRun {
        StepRun {
            progress: Progress::Waiting(m),
            outputs: BTreeMap::new(),
        }
    }
    fn failed(m: String) -> StepRun {
        StepRun {
            progress: Progress::Failed(m),
            outputs: BTreeMap::new(),
        }
    }
}

/// The Secret holding an Application's step outputs.
pub(super) fn outputs_secret_name(app: &str) -> String {
    format!("ferry-workflow-{app}")
}

impl Oam {
    /// Runs (or checks again) one object step of `app` in namespace `ns`. `inputs` are the
    /// outputs of earlier steps by name.
    pub(super) async fn run_object_step(
        &self,
        app: &ferry_oam::Application,
        ns: &str,
        step: &Step,
        inputs: &BTreeMap<String, Value>,
    ) -> StepRun {
        let mut properties = step.properties.clone();
        for i in &step.inputs {
            let Some(v) = inputs.get(&i.from) else {
                return StepRun::failed(format!(
                    "input `{}`: no earlier step has an output of that name",
                    i.from
                ));
            };
            if properties.is_null() {
                properties = json!({});
            }
            ferry_oam::set_parameter(&mut properties, &i.parameter_key, v.clone());
        }
        let done = |output: Value| -> StepRun {
            let mut outputs = BTreeMap::new();
            for o in &step.outputs {
                match ferry_oam::value_from(&step.name, &o.value_from, &output, &json!({})) {
                    Ok(v) => {
                        outputs.insert(o.name.clone(), v);
                    }
                    Err(e) => {
                        return StepRun::failed(format!(
                            "output `{}` ({}): {e}",
                            o.name, o.value_from
                        ));
                    }
                }
            }
            StepRun {
                progress: Progress::Done,
                outputs,
            }
        };
        match &step.kind {
            StepKind::DependsOnApp { name, namespace } => StepRun {
                progress: self.depends_on_app(name, namespace).await,
                outputs: BTreeMap::new(),
            },
            StepKind::ApplyObject => match self.apply_object(app, ns, &properties).await {
                Ok(applied) => done(json!({ "value": applied })),
                Err(e) => StepRun::failed(e),
            },
            StepKind::ReadObject => match self.read_object(&properties).await {
                Ok(Ok(found)) => done(json!({ "value": found })),
                // Not an error upstream either: the step succeeds and says what it did not find.
                Ok(Err(missing)) => done(json!({ "err": missing })),
                Err(e) => StepRun::waiting(e),
            },
            other => StepRun::failed(format!(
                "step type `{}` is not an object step",
                other.type_name()
            )),
        }
    }

    async fn depends_on_app(&self, name: &str, namespace: &str) -> Progress {
        let api = super::applications(self.ctl.client.clone(), Some(namespace));
        match api.get_opt(name).await {
            Ok(Some(other)) => {
                let status = other
                    .data
                    .pointer("/status/status")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if status == "running" {
                    Progress::Done
                } else {
                    Progress::Waiting(format!(
                        "waiting for Application {namespace}/{name} to be running (now: {})",
                        if status.is_empty() {
                            "no status"
                        } else {
                            status
                        }
                    ))
                }
            }
            Ok(None) => match self.create_app_from_configmap(name, namespace).await {
                Ok(()) => Progress::Waiting(format!(
                    "created Application {namespace}/{name} from its ConfigMap; waiting for it to be running"
                )),
                Err(e) => Progress::Waiting(e),
            },
            Err(e) => Progress::Waiting(format!(
                "reading Application {namespace}/{name}: {}",
                sync::api_message(&e)
            )),
        }
    }

    /// Upstream's fallback: the ConfigMap `<namespace>/<name>` holds the Application's YAML
    /// under `application`.
    async fn create_app_from_configmap(&self, name: &str, namespace: &str) -> Result<(), String> {
        let cms: Api<ConfigMap> = Api::namespaced(self.ctl.client.clone(), namespace);
        let cm = cms
            .get_opt(name)
            .await
            .map_err(|e| format!("reading ConfigMap {namespace}/{name}: {}", sync::api_message(&e)))?
            .ok_or_else(|| {
                format!(
                    "Application {namespace}/{name} does not exist, and there is no ConfigMap {namespace}/{name} to create it from"
                )
            })?;
        let yaml = cm
            .data
            .as_ref()
            .and_then(|d| d.get("application"))
            .ok_or_else(|| {
                format!(
                    "Application {namespace}/{name} does not exist, and ConfigMap {namespace}/{name} has no `application` key to create it from"
                )
            })?;
        let parsed = ferry_oam::parse_application(yaml)
            .map_err(|e| format!("ConfigMap {namespace}/{name}: `application`: {e}"))?;
        let is_app =
            parsed.kind == "Application" && parsed.api_version.starts_with("core.oam.dev/");
        if !is_app || parsed.metadata.name != name {
            return Err(format!(
                "ConfigMap {namespace}/{name}: `application` must be a core.oam.dev Application named {name}"
            ));
        }
        let mut obj = serde_json::to_value(&parsed).map_err(|e| e.to_string())?;
        obj["metadata"]["namespace"] = json!(namespace);
        let api = super::applications(self.ctl.client.clone(), Some(namespace));
        api.patch(
            name,
            &PatchParams::apply(sync::FIELD_MANAGER),
            &Patch::Apply(&obj),
        )
        .await
        .map_err(|e| {
            format!(
                "creating Application {namespace}/{name}: {}",
                sync::api_message(&e)
            )
        })?;
        Ok(())
    }

    /// Server-side applies `properties.value` to `properties.cluster` (the hub when empty). A
    /// namespaced object without a namespace goes to `default`, as upstream's kube provider
    /// does. Returns the object as the API server answered.
    async fn apply_object(
        &self,
        app: &ferry_oam::Application,
        app_ns: &str,
        properties: &Value,
    ) -> Result<Value, String> {
        let mut obj = properties
            .get("value")
            .filter(|v| v.is_object())
            .cloned()
            .ok_or("properties.value: expected a Kubernetes object")?;
        let cluster = cluster_of(properties);
        let conn = self.conn(&cluster).await?;
        let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = obj["kind"].as_str().unwrap_or_default().to_string();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if api_version.is_empty() || kind.is_empty() || name.is_empty() {
            return Err("properties.value: needs apiVersion, kind and metadata.name".into());
        }
        let r = conn
            .resolve(&api_version, &kind)
            .await
            .map_err(|e| format!("{api_version} {kind}: {}", sync::api_message(&e)))?;
        let ns = if r.namespaced {
            let ns = obj["metadata"]["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or("default")
                .to_string();
            obj["metadata"]["namespace"] = json!(ns);
            ns
        } else {
            String::new()
        };
        // Which Application wrote it, as KubeVela labels what it dispatches.
        let labels = &mut obj["metadata"]["labels"];
        if !labels.is_object() {
            *labels = json!({});
        }
        labels[ferry_oam::LABEL_APP] = json!(app.metadata.name);
        labels["app.oam.dev/namespace"] = json!(app_ns);
        let applied = conn
            .api(&r, &ns)
            .patch(
                &name,
                &PatchParams::apply(sync::FIELD_MANAGER).force(),
                &Patch::Apply(&obj),
            )
            .await
            .map_err(|e| format!("applying {kind} {name}: {}", sync::api_message(&e)))?;
        Ok(to_json(&applied, &api_version, &kind))
    }

    /// `Ok(Ok(object))`, `Ok(Err(message))` when it does not exist, `Err` when the read failed
    /// (retried on the next pass).
    async fn read_object(&self, properties: &Value) -> Result<Result<Value, String>, String> {
        let get = |k: &str| properties.get(k).and_then(Value::as_str).unwrap_or("");
        let (api_version, kind) = match (get("apiVersion"), get("kind")) {
            ("", "") => ("core.oam.dev/v1beta1", "Application"),
            (a, k) => (a, k),
        };
        let name = get("name");
        let ns = match get("namespace") {
            "" => "default",
            n => n,
        };
        let cluster = cluster_of(properties);
        let conn = self.conn(&cluster).await?;
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = kube::core::GroupVersionKind::gvk(group, version, kind);
        let (ar, caps) = kube::discovery::pinned_kind(&conn.client, &gvk)
            .await
            .map_err(|e| format!("{api_version} {kind}: {}", sync::api_message(&e)))?;
        let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
            Api::namespaced_with(conn.client.clone(), ns, &ar)
        } else {
            Api::all_with(conn.client.clone(), &ar)
        };
        match api.get_opt(name).await {
            Ok(Some(o)) => Ok(Ok(to_json(&o, api_version, kind))),
            Ok(None) => Ok(Err(format!("{kind} {ns}/{name} not found"))),
            Err(e) => Err(format!(
                "reading {kind} {ns}/{name}: {}",
                sync::api_message(&e)
            )),
        }
    }

    /// Every step output of this generation: the memo's, else the Secret's (a restart).
    pub(super) async fn step_outputs(
        &self,
        key: &str,
        ns: &str,
        app: &str,
        generation: i64,
    ) -> BTreeMap<String, Value> {
        if let Some(o) = self
            .memo
            .lock()
            .ok()
            .and_then(|m| m.get(key).and_then(|e| e.step_outputs.clone()))
        {
            return o;
        }
        let api: Api<Secret> = Api::namespaced(self.ctl.client.clone(), ns);
        let stored = match api.get_opt(&outputs_secret_name(app)).await {
            Ok(Some(s)) => s.data.unwrap_or_default(),
            _ => Default::default(),
        };
        let same_generation = stored
            .get("generation")
            .is_some_and(|g| g.0 == generation.to_string().as_bytes());
        let outputs: BTreeMap<String, Value> = if same_generation {
            stored
                .get("outputs")
                .and_then(|b| serde_json::from_slice(&b.0).ok())
                .unwrap_or_default()
        } else {
            BTreeMap::new()
        };
        if let Ok(mut m) = self.memo.lock() {
            m.entry(key.to_string()).or_default().step_outputs = Some(outputs.clone());
        }
        outputs
    }

    /// Records new outputs in the memo and the Application's Secret (owned by it, so it goes
    /// when the Application does).
    pub(super) async fn save_step_outputs(
        &self,
        key: &str,
        ns: &str,
        app_obj: &DynamicObject,
        generation: i64,
        outputs: &BTreeMap<String, Value>,
    ) -> Result<(), String> {
        if let Ok(mut m) = self.memo.lock() {
            m.entry(key.to_string()).or_default().step_outputs = Some(outputs.clone());
        }
        let app = app_obj.metadata.name.clone().unwrap_or_default();
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {
                "name": outputs_secret_name(&app),
                "namespace": ns,
                "labels": { ferry_oam::LABEL_APP: app },
                "ownerReferences": [{
                    "apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
                    "name": app, "uid": app_obj.metadata.uid,
                }],
            },
            "type": "Opaque",
            "stringData": {
                "generation": generation.to_string(),
                "outputs": serde_json::to_string(outputs).unwrap_or_default(),
            },
        });
        let api: Api<Secret> = Api::namespaced(self.ctl.client.clone(), ns);
        api.patch(
            &outputs_secret_name(&app),
            &PatchParams::apply(sync::FIELD_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await
        .map(drop)
        .map_err(|e| format!("saving step outputs: {}", sync::api_message(&e)))
    }
}

fn cluster_of(properties: &Value) -> String {
    match properties.get("cluster").and_then(Value::as_str) {
        None | Some("") => policy::LOCAL_CLUSTER.to_string(),
        Some(c) => c.to_string(),
    }
}

fn to_json(o: &DynamicObject, api_version: &str, kind: &str) -> Value {
    let mut v = serde_json::to_value(o).unwrap_or(Value::Null);
    v["apiVersion"] = json!(api_version);
    v["kind"] = json!(kind);
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("managedFields");
    }
    v
}

//! The definition registry and the built-in definitions shipped as YAML data.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::{ComponentDefinition, OamError, TraitDefinition};

/// Built-in definitions, `(file, yaml)`; see `crates/oam/definitions/`.
const BUILTIN: &[(&str, &str)] = &[
    (
        "affinity.yaml",
        include_str!("../definitions/affinity.yaml"),
    ),
    (
        "annotations.yaml",
        include_str!("../definitions/annotations.yaml"),
    ),
    ("command.yaml", include_str!("../definitions/command.yaml")),
    (
        "configmap.yaml",
        include_str!("../definitions/configmap.yaml"),
    ),
    (
        "container-image.yaml",
        include_str!("../definitions/container-image.yaml"),
    ),
    (
        "cpuscaler.yaml",
        include_str!("../definitions/cpuscaler.yaml"),
    ),
    (
        "cron-task.yaml",
        include_str!("../definitions/cron-task.yaml"),
    ),
    ("daemon.yaml", include_str!("../definitions/daemon.yaml")),
    ("env.yaml", include_str!("../definitions/env.yaml")),
    ("expose.yaml", include_str!("../definitions/expose.yaml")),
    ("gateway.yaml", include_str!("../definitions/gateway.yaml")),
    ("helm.yaml", include_str!("../definitions/helm.yaml")),
    (
        "helmchart.yaml",
        include_str!("../definitions/helmchart.yaml"),
    ),
    (
        "hostalias.yaml",
        include_str!("../definitions/hostalias.yaml"),
    ),
    ("hpa.yaml", include_str!("../definitions/hpa.yaml")),
    (
        "ingress-1-20.yaml",
        include_str!("../definitions/ingress-1-20.yaml"),
    ),
    ("ingress.yaml", include_str!("../definitions/ingress.yaml")),
    (
        "init-container.yaml",
        include_str!("../definitions/init-container.yaml"),
    ),
    (
        "json-merge-patch.yaml",
        include_str!("../definitions/json-merge-patch.yaml"),
    ),
    (
        "json-patch.yaml",
        include_str!("../definitions/json-patch.yaml"),
    ),
    (
        "k8s-objects.yaml",
        include_str!("../definitions/k8s-objects.yaml"),
    ),
    (
        "k8s-update-strategy.yaml",
        include_str!("../definitions/k8s-update-strategy.yaml"),
    ),
    (
        "kustomize.yaml",
        include_str!("../definitions/kustomize.yaml"),
    ),
    ("labels.yaml", include_str!("../definitions/labels.yaml")),
    (
        "lifecycle.yaml",
        include_str!("../definitions/lifecycle.yaml"),
    ),
    ("pvc.yaml", include_str!("../definitions/pvc.yaml")),
    ("raw.yaml", include_str!("../definitions/raw.yaml")),
    (
        "ref-objects.yaml",
        include_str!("../definitions/ref-objects.yaml"),
    ),
    (
        "resource.yaml",
        include_str!("../definitions/resource.yaml"),
    ),
    ("scaler.yaml", include_str!("../definitions/scaler.yaml")),
    (
        "service-account.yaml",
        include_str!("../definitions/service-account.yaml"),
    ),
    (
        "service-binding.yaml",
        include_str!("../definitions/service-binding.yaml"),
    ),
    ("sidecar.yaml", include_str!("../definitions/sidecar.yaml")),
    (
        "startup-probe.yaml",
        include_str!("../definitions/startup-probe.yaml"),
    ),
    (
        "statefulset.yaml",
        include_str!("../definitions/statefulset.yaml"),
    ),
    ("storage.yaml", include_str!("../definitions/storage.yaml")),
    ("task.yaml", include_str!("../definitions/task.yaml")),
    (
        "topologyspreadconstraints.yaml",
        include_str!("../definitions/topologyspreadconstraints.yaml"),
    ),
    ("volumes.yaml", include_str!("../definitions/volumes.yaml")),
    (
        "webservice.yaml",
        include_str!("../definitions/webservice.yaml"),
    ),
    ("worker.yaml", include_str!("../definitions/worker.yaml")),
];

/// Component and trait definitions by type name.
#[derive(Debug, Clone, Default)]
pub struct Definitions {
    components: BTreeMap<String, ComponentDefinition>,
    traits: BTreeMap<String, TraitDefinition>,
}

impl Definitions {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The built-in definitions (webservice, worker, task, cron-task, daemon, k8s-objects, raw,
    /// helm and kustomize (source components);
    /// scaler, labels, annotations, env, ingress, gateway, sidecar, expose, storage, resource,
    /// affinity, hpa, command, init-container, json-patch, json-merge-patch).
    pub fn builtin() -> Result<Self, OamError> {
        let mut defs = Self::new();
        for (file, yaml) in BUILTIN {
            defs.add_yaml(file, yaml)?;
        }
        Ok(defs)
    }

    /// Adds one ComponentDefinition or TraitDefinition from YAML (or JSON); a later
    /// definition of the same name replaces the earlier one.
    pub fn add_yaml(&mut self, source: &str, yaml: &str) -> Result<(), OamError> {
        let bad = |reason: String| OamError::Definition {
            name: source.to_owned(),
            reason,
        };
        let v: Value = serde_saphyr::from_str_with_options(yaml, crate::yaml_options())
            .map_err(|e| bad(e.to_string()))?;
        self.add_value(v).map_err(|e| match e {
            OamError::Definition { reason, .. } => bad(reason),
            other => other,
        })
    }

    /// Adds one definition object.
    pub fn add_value(&mut self, v: Value) -> Result<(), OamError> {
        let kind = v.get("kind").and_then(Value::as_str).unwrap_or_default();
        let bad = |reason: String| OamError::Definition {
            name: v
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("<unnamed>")
                .to_owned(),
            reason,
        };
        match kind {
            "ComponentDefinition" => {
                let d: ComponentDefinition =
                    serde_json::from_value(v.clone()).map_err(|e| bad(e.to_string()))?;
                self.insert_component(d);
            }
            "TraitDefinition" => {
                let d: TraitDefinition =
                    serde_json::from_value(v.clone()).map_err(|e| bad(e.to_string()))?;
                self.insert_trait(d);
            }
            other => {
                return Err(bad(format!(
                    "kind `{other}` is not ComponentDefinition or TraitDefinition"
                )));
            }
        }
        Ok(())
    }

    pub fn insert_component(&mut self, d: ComponentDefinition) {
        self.components.insert(d.metadata.name.clone(), d);
    }

    pub fn insert_trait(&mut self, d: TraitDefinition) {
        self.traits.insert(d.metadata.name.clone(), d);
    }

    pub fn component(&self, type_name: &str) -> Option<&ComponentDefinition> {
        self.components.get(type_name)
    }

    pub fn trait_def(&self, type_name: &str) -> Option<&TraitDefinition> {
        self.traits.get(type_name)
    }

    /// Sorted component type names.
    pub fn component_names(&self) -> Vec<String> {
        self.components.keys().cloned().collect()
    }

    /// Sorted trait type names.
    pub fn trait_names(&self) -> Vec<String> {
        self.traits.keys().cloned().collect()
    }
}

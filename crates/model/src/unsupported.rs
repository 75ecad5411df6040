//! Fields a user set that Ferry does not act on. Every struct of the API keeps
//! unknown fields (`unknown`, a flattened map) instead of dropping them, and
//! these walks name each one by its path, so the controller can refuse the
//! app (or the operation) with the field named rather than deliver without it.

use crate::{AppProjectSpec, Application, ApplicationSource, Operation, RetryStrategy, SyncPolicy};
use serde_json::Value;
use std::collections::BTreeMap;

fn note(out: &mut Vec<String>, path: &str, unknown: &BTreeMap<String, Value>) {
    out.extend(unknown.keys().map(|k| format!("{path}.{k}")));
}

fn source(out: &mut Vec<String>, path: &str, s: &ApplicationSource) {
    note(out, path, &s.unknown);
    if let Some(d) = &s.directory {
        let p = format!("{path}.directory");
        note(out, &p, &d.unknown);
        if let Some(j) = &d.jsonnet {
            let p = format!("{p}.jsonnet");
            note(out, &p, &j.unknown);
            for (i, v) in j.ext_vars.iter().enumerate() {
                note(out, &format!("{p}.extVars[{i}]"), &v.unknown);
            }
            for (i, v) in j.tlas.iter().enumerate() {
                note(out, &format!("{p}.tlas[{i}]"), &v.unknown);
            }
        }
    }
    if let Some(h) = &s.helm {
        let p = format!("{path}.helm");
        note(out, &p, &h.unknown);
        for (i, v) in h.parameters.iter().enumerate() {
            note(out, &format!("{p}.parameters[{i}]"), &v.unknown);
        }
        for (i, v) in h.file_parameters.iter().enumerate() {
            note(out, &format!("{p}.fileParameters[{i}]"), &v.unknown);
        }
    }
    if let Some(k) = &s.kustomize {
        note(out, &format!("{path}.kustomize"), &k.unknown);
    }
    if let Some(pl) = &s.plugin {
        let p = format!("{path}.plugin");
        note(out, &p, &pl.unknown);
        for (i, v) in pl.env.iter().enumerate() {
            note(out, &format!("{p}.env[{i}]"), &v.unknown);
        }
    }
}

fn retry(out: &mut Vec<String>, path: &str, r: &RetryStrategy) {
    note(out, path, &r.unknown);
    if let Some(b) = &r.backoff {
        note(out, &format!("{path}.backoff"), &b.unknown);
    }
}

fn sync_policy(out: &mut Vec<String>, path: &str, p: &SyncPolicy) {
    note(out, path, &p.unknown);
    if let Some(a) = &p.automated {
        note(out, &format!("{path}.automated"), &a.unknown);
    }
    if let Some(r) = &p.retry {
        retry(out, &format!("{path}.retry"), r);
    }
    if let Some(m) = &p.managed_namespace_metadata {
        note(out, &format!("{path}.managedNamespaceMetadata"), &m.unknown);
    }
}

impl Application {
    /// `spec` fields Ferry does not act on, by path (`spec.sources[1].helm.x`).
    pub fn unsupported_fields(&self) -> Vec<String> {
        let mut out = Vec::new();
        let spec = &self.spec;
        note(&mut out, "spec", &spec.unknown);
        note(&mut out, "spec.destination", &spec.destination.unknown);
        if let Some(s) = &spec.source {
            source(&mut out, "spec.source", s);
        }
        for (i, s) in spec.sources.iter().flatten().enumerate() {
            source(&mut out, &format!("spec.sources[{i}]"), s);
        }
        if let Some(p) = &spec.sync_policy {
            sync_policy(&mut out, "spec.syncPolicy", p);
        }
        for (i, r) in spec.ignore_differences.iter().enumerate() {
            note(
                &mut out,
                &format!("spec.ignoreDifferences[{i}]"),
                &r.unknown,
            );
        }
        out
    }
}

impl Operation {
    /// Fields of a requested operation Ferry does not act on.
    pub fn unsupported_fields(&self) -> Vec<String> {
        let mut out = Vec::new();
        note(&mut out, "operation", &self.unknown);
        if let Some(s) = &self.sync {
            note(&mut out, "operation.sync", &s.unknown);
            if let Some(src) = &s.source {
                source(&mut out, "operation.sync.source", src);
            }
            for (i, src) in s.sources.iter().flatten().enumerate() {
                source(&mut out, &format!("operation.sync.sources[{i}]"), src);
            }
            for (i, r) in s.resources.iter().enumerate() {
                note(
                    &mut out,
                    &format!("operation.sync.resources[{i}]"),
                    &r.unknown,
                );
            }
            if let Some(st) = &s.sync_strategy {
                note(&mut out, "operation.sync.syncStrategy", &st.unknown);
                for (name, o) in [("apply", &st.apply), ("hook", &st.hook)] {
                    if let Some(o) = o {
                        note(
                            &mut out,
                            &format!("operation.sync.syncStrategy.{name}"),
                            &o.unknown,
                        );
                    }
                }
            }
        }
        if let Some(r) = &self.retry {
            retry(&mut out, "operation.retry", r);
        }
        out
    }
}

impl AppProjectSpec {
    /// AppProject `spec` fields Ferry does not act on.
    pub fn unsupported_fields(&self) -> Vec<String> {
        let mut out = Vec::new();
        note(&mut out, "spec", &self.unknown);
        for (i, d) in self.destinations.iter().enumerate() {
            note(&mut out, &format!("spec.destinations[{i}]"), &d.unknown);
        }
        for (field, list) in [
            ("clusterResourceWhitelist", &self.cluster_resource_whitelist),
            ("clusterResourceBlacklist", &self.cluster_resource_blacklist),
            (
                "namespaceResourceWhitelist",
                &self.namespace_resource_whitelist,
            ),
            (
                "namespaceResourceBlacklist",
                &self.namespace_resource_blacklist,
            ),
        ] {
            for (i, g) in list.iter().enumerate() {
                note(&mut out, &format!("spec.{field}[{i}]"), &g.unknown);
            }
        }
        for (i, r) in self.roles.iter().enumerate() {
            note(&mut out, &format!("spec.roles[{i}]"), &r.unknown);
        }
        for (i, w) in self.sync_windows.iter().enumerate() {
            note(&mut out, &format!("spec.syncWindows[{i}]"), &w.unknown);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_kept_and_named_by_path() {
        let app: Application = serde_json::from_value(json!({
            "metadata": { "name": "a" },
            "spec": {
                "sources": [
                    { "repoURL": "r", "helm": { "valueFiles": ["v.yaml"], "fancy": true } },
                    { "repoURL": "r", "kustomize": { "namePrefix": "p-" }, "newThing": 1 },
                ],
                "syncPolicy": { "automated": { "prune": true, "someday": true }, "retry": { "backoff": { "jitter": 1 } } },
                "hydrator": {},
                "destination": { "server": "https://kubernetes.default.svc", "namepsace": "typo" },
            },
        }))
        .unwrap();
        assert_eq!(
            app.unsupported_fields(),
            [
                "spec.hydrator",
                "spec.destination.namepsace",
                "spec.sources[0].helm.fancy",
                "spec.sources[1].newThing",
                "spec.syncPolicy.automated.someday",
                "spec.syncPolicy.retry.backoff.jitter",
            ]
        );
        // Kept through a round trip, so a status write never drops them.
        let back = serde_json::to_value(&app).unwrap();
        assert_eq!(back["spec"]["sources"][0]["helm"]["fancy"], true);
        let known: Application = serde_json::from_value(json!({
            "metadata": { "name": "a" },
            "spec": { "source": { "repoURL": "r", "directory": { "jsonnet": { "tlas": [{ "name": "x", "value": "1", "code": true }] } } } },
        }))
        .unwrap();
        assert!(known.unsupported_fields().is_empty());
    }
}

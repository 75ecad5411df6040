//! Orders sync work as Argo CD does: phase, then wave, then kind, then name.

use ferry_model::annotations;
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    PreSync,
    Sync,
    PostSync,
    SyncFail,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::PreSync => "PreSync",
            Phase::Sync => "Sync",
            Phase::PostSync => "PostSync",
            Phase::SyncFail => "SyncFail",
        }
    }
}

/// What the `argocd.argoproj.io/hook` annotation makes of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookKind {
    /// Not a hook: a normal resource synced in the Sync phase.
    None,
    /// A hook run in these phases.
    Hook(Vec<Phase>),
    /// `Skip`: never applied.
    Skip,
}

/// Helm's hook annotations, which Argo CD maps onto its own.
const HELM_HOOK: &str = "helm.sh/hook";
const HELM_HOOK_WEIGHT: &str = "helm.sh/hook-weight";
const HELM_HOOK_DELETE_POLICY: &str = "helm.sh/hook-delete-policy";

pub fn hook_kind(obj: &Value) -> HookKind {
    let Some(v) = annotation(obj, annotations::HOOK) else {
        return helm_hook_kind(obj);
    };
    let mut phases = Vec::new();
    for part in v.split(',').map(str::trim) {
        match part {
            "PreSync" => phases.push(Phase::PreSync),
            "Sync" => phases.push(Phase::Sync),
            "PostSync" => phases.push(Phase::PostSync),
            "SyncFail" => phases.push(Phase::SyncFail),
            "Skip" => return HookKind::Skip,
            _ => {}
        }
    }
    if phases.is_empty() {
        HookKind::None
    } else {
        HookKind::Hook(phases)
    }
}

/// Argo CD's mapping of `helm.sh/hook`: pre-install/pre-upgrade run as
/// PreSync, post-install/post-upgrade as PostSync, crd-install as a normal
/// resource; the hooks Argo CD does not support (delete, rollback, test) are
/// never applied.
fn helm_hook_kind(obj: &Value) -> HookKind {
    let Some(v) = annotation(obj, HELM_HOOK) else {
        return HookKind::None;
    };
    let mut phases = Vec::new();
    let mut normal = false;
    for part in v.split(',').map(str::trim) {
        match part {
            "pre-install" | "pre-upgrade" => phases.push(Phase::PreSync),
            "post-install" | "post-upgrade" => phases.push(Phase::PostSync),
            "crd-install" => normal = true,
            _ => {}
        }
    }
    phases.dedup();
    if !phases.is_empty() {
        HookKind::Hook(phases)
    } else if normal {
        HookKind::None
    } else {
        HookKind::Skip
    }
}

/// `hook-delete-policy` values; BeforeHookCreation is the default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeletePolicy {
    pub before_creation: bool,
    pub on_success: bool,
    pub on_failure: bool,
}

pub fn delete_policy(obj: &Value) -> DeletePolicy {
    let mut p = DeletePolicy::default();
    let value = annotation(obj, annotations::HOOK_DELETE_POLICY)
        .or_else(|| annotation(obj, HELM_HOOK_DELETE_POLICY));
    match value {
        None => p.before_creation = true,
        Some(v) => {
            for part in v.split(',').map(str::trim) {
                match part {
                    "BeforeHookCreation" | "before-hook-creation" => p.before_creation = true,
                    "HookSucceeded" | "hook-succeeded" => p.on_success = true,
                    "HookFailed" | "hook-failed" => p.on_failure = true,
                    _ => {}
                }
            }
        }
    }
    p
}

pub fn wave(obj: &Value) -> i64 {
    annotation(obj, annotations::SYNC_WAVE)
        .or_else(|| annotation(obj, HELM_HOOK_WEIGHT))
        .and_then(|w| w.trim().parse().ok())
        .unwrap_or(0)
}

pub fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/annotations")?.get(key)?.as_str()
}

/// Argo CD's kind order within a wave: what others depend on first.
const KIND_ORDER: [&str; 35] = [
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "SecretList",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleList",
    "ClusterRoleBinding",
    "ClusterRoleBindingList",
    "Role",
    "RoleList",
    "RoleBinding",
    "RoleBindingList",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
];

pub fn kind_rank(kind: &str) -> usize {
    KIND_ORDER
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(KIND_ORDER.len())
}

/// The sort key of one task; sorting by it gives the sync order.
pub fn order_key(phase: Phase, obj: &Value) -> (Phase, i64, usize, String, String) {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
    let ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    (
        phase,
        wave(obj),
        kind_rank(kind),
        ns.to_string(),
        name.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(kind: &str, name: &str, ann: Value) -> Value {
        json!({ "apiVersion": "v1", "kind": kind, "metadata": { "name": name, "annotations": ann } })
    }

    #[test]
    fn order_is_phase_wave_kind_name() {
        let items = [
            (Phase::Sync, obj("Deployment", "web", json!({}))),
            (Phase::Sync, obj("ConfigMap", "cfg", json!({}))),
            (Phase::Sync, obj("Namespace", "ns", json!({}))),
            (
                Phase::Sync,
                obj(
                    "ConfigMap",
                    "late",
                    json!({ "argocd.argoproj.io/sync-wave": "5" }),
                ),
            ),
            (
                Phase::Sync,
                obj(
                    "Service",
                    "early",
                    json!({ "argocd.argoproj.io/sync-wave": "-1" }),
                ),
            ),
            (Phase::PreSync, obj("Job", "migrate", json!({}))),
            (Phase::PostSync, obj("Job", "smoke", json!({}))),
        ];
        let mut sorted: Vec<_> = items.iter().map(|(p, o)| order_key(*p, o)).collect();
        sorted.sort();
        let names: Vec<&str> = sorted.iter().map(|k| k.4.as_str()).collect();
        assert_eq!(
            names,
            ["migrate", "early", "ns", "cfg", "web", "late", "smoke"]
        );
    }

    #[test]
    fn hooks_and_policies() {
        assert_eq!(hook_kind(&obj("Job", "j", json!({}))), HookKind::None);
        assert_eq!(
            hook_kind(&obj(
                "Job",
                "j",
                json!({ "argocd.argoproj.io/hook": "PreSync, PostSync" })
            )),
            HookKind::Hook(vec![Phase::PreSync, Phase::PostSync])
        );
        assert_eq!(
            hook_kind(&obj(
                "Job",
                "j",
                json!({ "argocd.argoproj.io/hook": "Skip" })
            )),
            HookKind::Skip
        );
        assert!(delete_policy(&obj("Job", "j", json!({}))).before_creation);
        let p = delete_policy(&obj(
            "Job",
            "j",
            json!({ "argocd.argoproj.io/hook-delete-policy": "HookSucceeded" }),
        ));
        assert!(p.on_success && !p.before_creation);
        assert_eq!(
            wave(&obj(
                "Job",
                "j",
                json!({ "argocd.argoproj.io/sync-wave": "bad" })
            )),
            0
        );
    }

    #[test]
    fn helm_hooks_map_like_argo_cd() {
        let helm = |hook: &str| {
            obj(
                "Job",
                "j",
                json!({ "helm.sh/hook": hook, "helm.sh/hook-weight": "-2",
                        "helm.sh/hook-delete-policy": "hook-succeeded" }),
            )
        };
        assert_eq!(
            hook_kind(&helm("pre-install,pre-upgrade")),
            HookKind::Hook(vec![Phase::PreSync])
        );
        assert_eq!(
            hook_kind(&helm("post-upgrade")),
            HookKind::Hook(vec![Phase::PostSync])
        );
        assert_eq!(hook_kind(&helm("test")), HookKind::Skip);
        assert_eq!(hook_kind(&helm("pre-delete")), HookKind::Skip);
        assert_eq!(hook_kind(&helm("crd-install")), HookKind::None);
        assert_eq!(wave(&helm("pre-install")), -2);
        let p = delete_policy(&helm("pre-install"));
        assert!(p.on_success && !p.before_creation);
        // Argo CD's own annotation wins.
        let both = obj(
            "Job",
            "j",
            json!({ "helm.sh/hook": "test", "argocd.argoproj.io/hook": "Sync" }),
        );
        assert_eq!(hook_kind(&both), HookKind::Hook(vec![Phase::Sync]));
    }
}

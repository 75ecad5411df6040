//! The plan of one sync (tasks in phase, wave and kind order, grouped by phase and wave) and
//! how far earlier steps of the operation got, read from the results they recorded. Pure:
//! the same resources and results always give the same plan and the same next task.

use super::Resource;
use crate::plan::{self, HookKind, Phase};
use ferry_model::ResourceResult;
use ferry_model::tracking::ObjectKey;

/// One object to apply or one hook to run, in one phase.
#[derive(Clone, Copy)]
pub(super) struct Task<'a> {
    pub phase: Phase,
    pub res: &'a Resource,
}

impl Task<'_> {
    pub fn is_hook(&self) -> bool {
        matches!(self.res.hook, HookKind::Hook(_))
    }
}

/// The tasks of the PreSync, Sync and PostSync phases in sync order (SyncFail hooks run only
/// once the sync failed).
pub(super) fn tasks(resources: &[Resource]) -> Vec<Task<'_>> {
    let mut tasks = Vec::new();
    for r in resources {
        match &r.hook {
            HookKind::Skip => {}
            HookKind::None => tasks.push(Task {
                phase: Phase::Sync,
                res: r,
            }),
            HookKind::Hook(phases) => {
                for p in phases {
                    if *p != Phase::SyncFail {
                        tasks.push(Task { phase: *p, res: r });
                    }
                }
            }
        }
    }
    tasks.sort_by_key(|t| plan::order_key(t.phase, &t.res.desired));
    tasks
}

/// Consecutive tasks of one phase and wave: a group starts only once the one before it is
/// done (hooks finished, objects healthy).
pub(super) fn groups<'t, 'a>(tasks: &'t [Task<'a>]) -> Vec<Vec<Task<'a>>> {
    let mut groups: Vec<Vec<Task<'a>>> = Vec::new();
    for t in tasks {
        let key = (t.phase, plan::wave(&t.res.desired));
        match groups.last_mut() {
            Some(g) if (g[0].phase, plan::wave(&g[0].res.desired)) == key => g.push(*t),
            _ => groups.push(vec![*t]),
        }
    }
    groups
}

/// The result an earlier step (or this one) recorded for `key` in `phase`.
pub(super) fn recorded(results: &[ResourceResult], key: &ObjectKey, phase: Phase) -> Option<usize> {
    results.iter().position(|r| {
        r.sync_phase == phase.as_str()
            && r.kind == key.kind
            && r.name == key.name
            && r.namespace == key.namespace
            && r.group == key.group
    })
}

/// A prune decided by an earlier step: `Pruned`, `PruneSkipped` or a failed delete.
pub(super) fn pruned(results: &[ResourceResult], key: &ObjectKey) -> Option<usize> {
    recorded(results, key, Phase::Sync)
        .filter(|i| matches!(results[*i].status.as_str(), "Pruned" | "PruneSkipped"))
}

/// A SyncFail hook was recorded: the sync failed in an earlier step and is cleaning up.
pub(super) fn failing(results: &[ResourceResult]) -> bool {
    results
        .iter()
        .any(|r| r.sync_phase == Phase::SyncFail.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_model::SyncOptions;
    use serde_json::json;

    fn res(kind: &str, name: &str, wave: i64, hook: HookKind) -> Resource {
        Resource {
            key: ObjectKey {
                group: String::new(),
                kind: kind.into(),
                namespace: "ns".into(),
                name: name.into(),
            },
            resolved: None,
            desired: json!({
                "apiVersion": "v1", "kind": kind,
                "metadata": { "name": name, "namespace": "ns",
                    "annotations": { "argocd.argoproj.io/sync-wave": wave.to_string() } }
            }),
            hook,
            options: SyncOptions::default(),
            out_of_sync: true,
        }
    }

    #[test]
    fn groups_follow_phase_then_wave_and_syncfail_waits() {
        let resources = vec![
            res("ConfigMap", "late", 2, HookKind::None),
            res("Job", "after", 0, HookKind::Hook(vec![Phase::PostSync])),
            res("ConfigMap", "early", -1, HookKind::None),
            res("Job", "before", 0, HookKind::Hook(vec![Phase::PreSync])),
            res("Job", "cleanup", 0, HookKind::Hook(vec![Phase::SyncFail])),
            res("ConfigMap", "skipped", 0, HookKind::Skip),
            res("ConfigMap", "also-late", 2, HookKind::None),
        ];
        let tasks = tasks(&resources);
        let names: Vec<Vec<&str>> = groups(&tasks)
            .iter()
            .map(|g| g.iter().map(|t| t.res.key.name.as_str()).collect())
            .collect();
        assert_eq!(
            names,
            vec![
                vec!["before"],
                vec!["early"],
                vec!["also-late", "late"],
                vec!["after"]
            ]
        );
    }

    #[test]
    fn results_are_found_by_object_and_phase() {
        let r = res("Job", "migrate", 0, HookKind::Hook(vec![Phase::PreSync]));
        let results = vec![
            ResourceResult {
                kind: "Job".into(),
                namespace: "ns".into(),
                name: "migrate".into(),
                status: "Synced".into(),
                sync_phase: "PreSync".into(),
                ..ResourceResult::default()
            },
            ResourceResult {
                kind: "ConfigMap".into(),
                namespace: "ns".into(),
                name: "gone".into(),
                status: "Pruned".into(),
                sync_phase: "Sync".into(),
                ..ResourceResult::default()
            },
        ];
        assert_eq!(recorded(&results, &r.key, Phase::PreSync), Some(0));
        assert_eq!(recorded(&results, &r.key, Phase::PostSync), None);
        let gone = res("ConfigMap", "gone", 0, HookKind::None).key;
        assert_eq!(pruned(&results, &gone), Some(1));
        assert!(!failing(&results));
    }
}

//! What `vela dry-run` prints for an Application with policies: one block per top-level
//! `deploy` step and topology, each with that step's `override` policies applied.
//!
//! Upstream (`pkg/appfile/dryrun`): a deploy step with topologies gives one block per topology,
//! labelled `<app> with topology <name>`; one without gives `<app> only with override
//! policies`; an app without deploy steps (the implicit workflow of `apply-component` steps)
//! gives one block labelled `<app>`. Overrides apply in the step's order; a `selector` leaves
//! components out of the block and a component an override adds is rendered at the end.
//! Placements (clusters, namespaces) are not applied: the block shows what the step renders,
//! not where. Unlike upstream, a `deploy` inside a `step-group` gets its blocks too, and a
//! step's `replication` policies are applied (upstream's dry-run ignores them), so the output
//! shows every copy the step deploys.

use crate::policy::{self, OverridePolicy};
use crate::workflow::{Plan, StepKind};
use crate::{Application, OamError, Policy};

/// One block of dry-run output: the label of its `# Application(<label>)` header and the
/// Application as that step renders it (overrides applied to its components).
#[derive(Debug, Clone, PartialEq)]
pub struct DryRunBlock {
    pub label: String,
    pub app: Application,
}

/// The blocks `vela dry-run` prints for `app`, in workflow order. Every policy is checked first
/// (an unserved type is refused as the controller refuses it), and so is the workflow.
pub fn dry_run_blocks(app: &Application) -> Result<Vec<DryRunBlock>, OamError> {
    policy::check_policies(app)?;
    let plan = Plan::from_application(app, &[])?;
    let name = &app.metadata.name;
    // Upstream looks at top-level steps only; a deploy inside a step-group is printed too, so
    // nothing a workflow deploys is left out of the output.
    let mut steps = Vec::new();
    for s in &plan.steps {
        match &s.kind {
            StepKind::StepGroup { sub_steps } => steps.extend(sub_steps.iter()),
            _ => steps.push(s),
        }
    }
    let mut blocks = Vec::new();
    for step in steps {
        let StepKind::Deploy { policies } = &step.kind else {
            continue;
        };
        let mut topologies: Vec<&Policy> = Vec::new();
        let mut overrides: Vec<&Policy> = Vec::new();
        let mut replications: Vec<&Policy> = Vec::new();
        for p in policies {
            let found = app
                .spec
                .policies
                .iter()
                .find(|x| &x.name == p)
                .ok_or_else(|| OamError::Policy {
                    policy: p.clone(),
                    reason: format!("step `{}` names it, but spec.policies has none", step.name),
                })?;
            match found.type_name.as_str() {
                "topology" => topologies.push(found),
                "override" => {
                    OverridePolicy::from_policy(found)?;
                    overrides.push(found)
                }
                "replication" => replications.push(found),
                other => {
                    return Err(OamError::Policy {
                        policy: found.name.clone(),
                        reason: format!(
                            "a deploy step takes topology, override and replication policies, not `{other}`"
                        ),
                    });
                }
            }
        }
        let mut patched = app.clone();
        patched.spec.components = policy::replicate(
            policy::apply_overrides(&app.spec.components, &overrides)?,
            &replications,
        )?;
        if topologies.is_empty() {
            blocks.push(DryRunBlock {
                label: format!("{name} only with override policies"),
                app: patched,
            });
        } else {
            for t in topologies {
                blocks.push(DryRunBlock {
                    label: format!("{name} with topology {}", t.name),
                    app: patched.clone(),
                });
            }
        }
    }
    if blocks.is_empty() {
        blocks.push(DryRunBlock {
            label: name.clone(),
            app: app.clone(),
        });
    }
    Ok(blocks)
}

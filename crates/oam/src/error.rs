//! Typed errors of OAM rendering.

use thiserror::Error;

/// Where in an Application a definition was being applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// Component name (`spec.components[].name`).
    pub component: String,
    /// Trait type when the error is in a trait, `None` for the component itself.
    pub trait_type: Option<String>,
}

impl std::fmt::Display for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "component `{}`", self.component)?;
        if let Some(t) = &self.trait_type {
            write!(f, ", trait `{t}`")?;
        }
        Ok(())
    }
}

#[derive(Debug, Error)]
pub enum OamError {
    #[error("component `{component}`: unknown component type `{type_name}`; known types: {}", known.join(", "))]
    UnknownComponentType {
        component: String,
        type_name: String,
        known: Vec<String>,
    },

    #[error("component `{component}`: unknown trait type `{type_name}`; known traits: {}", known.join(", "))]
    UnknownTraitType {
        component: String,
        type_name: String,
        known: Vec<String>,
    },

    /// Properties do not match the definition's parameter schema.
    #[error("{site}: properties{path}: {reason}")]
    Schema {
        site: Site,
        /// JSON-path-like suffix under `properties`, e.g. `.ports[0].port`; empty for the root.
        path: String,
        reason: String,
    },

    /// The Jsonnet template failed to parse, analyse or evaluate.
    #[error("{site}: {definition} template error at {}: {message}", location.as_deref().unwrap_or("<unknown location>"))]
    Template {
        site: Site,
        /// e.g. `ComponentDefinition/webservice`.
        definition: String,
        /// `file:line:col` of the innermost frame that has one.
        location: Option<String>,
        /// jrsonnet's message with its stack trace.
        message: String,
    },

    /// The template evaluated, but its result is not shaped as `{output, outputs}` / `{patch, outputs}`.
    #[error("{site}: {definition}: {reason}")]
    TemplateResult {
        site: Site,
        definition: String,
        reason: String,
    },

    /// A Rust-side trait (`spec.schematic.builtin`, e.g. `json-patch`) failed.
    #[error("{site}: {definition}: {reason}")]
    Builtin {
        site: Site,
        definition: String,
        reason: String,
    },

    /// A definition object could not be read.
    #[error("definition {name}: {reason}")]
    Definition { name: String, reason: String },

    /// An Application that does not parse.
    #[error("application: {0}")]
    Application(String),

    /// Two components share a name.
    #[error("application: component name `{0}` is used twice")]
    DuplicateComponent(String),

    /// A workflow that cannot run: bad properties, unknown step references, bad `if`.
    #[error("workflow: {0}")]
    Workflow(String),

    /// A workflow step type that is neither built in nor declared by the caller.
    #[error("workflow step `{step}`: unknown step type `{type_name}`; known types: {}", known.join(", "))]
    UnknownStepType {
        step: String,
        type_name: String,
        known: Vec<String>,
    },

    /// An application policy (`spec.policies[]`) that is invalid or cannot be satisfied.
    #[error("policy `{policy}`: {reason}")]
    Policy { policy: String, reason: String },

    /// `dependsOn` between components (or workflow steps) loops.
    #[error("{what} dependsOn cycle: {}", cycle.join(" -> "))]
    DependencyCycle { what: String, cycle: Vec<String> },
}

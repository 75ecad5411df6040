//! The jrsonnet glue: evaluates definition templates with `parameter` and `context` as
//! top-level arguments and turns jrsonnet errors into `file:line:col` messages.
//!
//! jrsonnet values are `!Send` (garbage-collected `Cc`), so an [`Engine`] lives on one thread for
//! one render; nothing jrsonnet-typed leaves this module.

use std::collections::HashMap;

use jrsonnet_evaluator::{
    IStr, Span, State, Val, apply_tla,
    error::{Error as JrError, ErrorKind},
    manifest::JsonFormat,
    tla::TlaArg,
    trace::{CompactFormat, PathResolver, TraceFormat},
};
use serde::Deserialize;
use serde_json::Value;

/// Normalises a component template result to `{output, outputs}`.
const COMPONENT_RESULT: &str = r"
function(result)
  assert std.isObject(result) : 'a component template must evaluate to an object with `output`, got ' + std.type(result);
  assert std.objectHasAll(result, 'output') : 'a component template must have an `output` field';
  assert std.isObject(result.output) : '`output` must be an object, got ' + std.type(result.output);
  local outputs = std.get(result, 'outputs', {}, inc_hidden=true);
  assert std.isObject(outputs) : '`outputs` must be an object, got ' + std.type(outputs);
  { output: result.output, outputs: outputs }
";

/// Merges a trait's `patch` into the workload with Jsonnet `+` (so `field+:` merges deeply)
/// and normalises the result to `{workload, outputs}`.
const TRAIT_RESULT: &str = r"
function(workload, result)
  assert std.isObject(result) : 'a trait template must evaluate to an object with `patch` and/or `outputs`, got ' + std.type(result);
  local patch = std.get(result, 'patch', {}, inc_hidden=true);
  local outputs = std.get(result, 'outputs', {}, inc_hidden=true);
  assert std.isObject(patch) : '`patch` must be an object, got ' + std.type(patch);
  assert std.isObject(outputs) : '`outputs` must be an object, got ' + std.type(outputs);
  { workload: workload + patch, outputs: outputs }
";

/// A jrsonnet failure, already formatted.
#[derive(Debug)]
pub struct EvalError {
    /// `file:line:col` of the innermost located frame.
    pub location: Option<String>,
    pub message: String,
}

pub struct Engine {
    state: State,
}

impl Engine {
    pub fn new() -> Self {
        let mut builder = State::builder();
        builder.context_initializer(jrsonnet_stdlib::ContextInitializer::new(
            PathResolver::FileName,
        ));
        Self {
            state: builder.build(),
        }
    }

    /// Evaluates `template` (a `function(parameter, context)`, or a plain object) and returns
    /// `(output, outputs)`.
    pub fn component(
        &self,
        file: &str,
        template: &str,
        parameter: &Value,
        context: &Value,
    ) -> Result<Value, EvalError> {
        let _guard = self.state.try_enter();
        let result = self.call_template(file, template, parameter, context)?;
        let norm = self.snippet("<ferry component result>", COMPONENT_RESULT)?;
        let out = call(norm, &[("result", result)]).map_err(|e| format_error(&e, file))?;
        manifest(&out, file)
    }

    /// Evaluates a trait `template` and merges its `patch` into `workload`; returns
    /// `{workload, outputs}`.
    pub fn trait_(
        &self,
        file: &str,
        template: &str,
        parameter: &Value,
        context: &Value,
        workload: &Value,
    ) -> Result<Value, EvalError> {
        let _guard = self.state.try_enter();
        let result = self.call_template(file, template, parameter, context)?;
        let merge = self.snippet("<ferry trait merge>", TRAIT_RESULT)?;
        let out = call(
            merge,
            &[("workload", to_val(workload)?), ("result", result)],
        )
        .map_err(|e| format_error(&e, file))?;
        manifest(&out, file)
    }

    /// Evaluates a status expression (`healthPolicy` / `customStatus`), manifested as JSON.
    pub fn status(
        &self,
        file: &str,
        code: &str,
        parameter: &Value,
        context: &Value,
    ) -> Result<Value, EvalError> {
        let _guard = self.state.try_enter();
        let result = self.call_template(file, code, parameter, context)?;
        manifest(&result, file)
    }

    fn snippet(&self, file: &str, code: &str) -> Result<Val, EvalError> {
        self.state
            .evaluate_snippet(file, code)
            .map_err(|e| format_error(&e, file))
    }

    fn call_template(
        &self,
        file: &str,
        template: &str,
        parameter: &Value,
        context: &Value,
    ) -> Result<Val, EvalError> {
        let template = self.snippet(file, template)?;
        call(
            template,
            &[
                ("parameter", to_val(parameter)?),
                ("context", to_val(context)?),
            ],
        )
        .map_err(|e| format_error(&e, file))
    }
}

/// Calls `f` with named arguments (jrsonnet's top-level-argument mechanism); a non-function
/// value is returned as it is.
// IStr hashes by its interned pointer, which the interner never changes; jrsonnet's own
// `apply_tla` takes this map type.
#[allow(clippy::mutable_key_type)]
fn call(f: Val, args: &[(&str, Val)]) -> Result<Val, JrError> {
    let args: HashMap<IStr, TlaArg> = args
        .iter()
        .map(|(k, v)| (IStr::from(*k), TlaArg::Val(v.clone())))
        .collect();
    apply_tla(&args, f)
}

fn to_val(v: &Value) -> Result<Val, EvalError> {
    Val::deserialize(v).map_err(|e| EvalError {
        location: None,
        message: format!("cannot pass value to jsonnet: {e}"),
    })
}

fn manifest(v: &Val, file: &str) -> Result<Value, EvalError> {
    let json = v
        .manifest(JsonFormat::minify())
        .map_err(|e| format_error(&e, file))?;
    serde_json::from_str(&json).map_err(|e| EvalError {
        location: None,
        message: format!("jsonnet produced invalid JSON: {e}"),
    })
}

/// `a.b.c` from the innermost-first `field <c> ...` trace frames.
fn field_path(e: &JrError) -> Option<String> {
    let mut fields: Vec<&str> = e
        .trace()
        .0
        .iter()
        .filter_map(|el| {
            el.desc
                .strip_prefix("field <")?
                .split_once('>')
                .map(|(f, _)| f)
        })
        .collect();
    if fields.is_empty() {
        return None;
    }
    fields.reverse();
    Some(fields.join("."))
}

fn span_location(span: &Span) -> String {
    let [loc] = span.0.map_source_locations(&[span.1]);
    let path = span.0.source_path().to_string();
    let path = path.strip_prefix("virtual:").unwrap_or(&path);
    format!("{path}:{}:{}", loc.line, loc.column)
}

/// Formats a jrsonnet error. `file` names the template, for errors whose frames carry no
/// span: jrsonnet 0.5.0-pre98 attaches spans to calls, field/element access, `error` and
/// `assert`, but not to operator type errors (`1 + {}`); for those the location is the
/// template file plus the field path being manifested (`output.spec.replicas`).
pub fn format_error(e: &JrError, file: &str) -> EvalError {
    let mut location = None;
    let message = match e.error() {
        ErrorKind::ImportSyntaxError { error, .. } => {
            location = Some(span_location(&error.location));
            format!("syntax error: {}", error.message)
        }
        ErrorKind::StaticAnalysisError(diags) => {
            let parts: Vec<String> = diags
                .iter()
                .map(|d| match &d.span {
                    Some(s) => {
                        let l = span_location(s);
                        location.get_or_insert_with(|| l.clone());
                        format!("{l}: {}", d.message)
                    }
                    None => d.message.clone(),
                })
                .collect();
            format!("static analysis: {}", parts.join("; "))
        }
        _ => {
            location = e
                .trace()
                .0
                .iter()
                .find_map(|el| el.location.as_ref().map(span_location))
                .or_else(|| field_path(e).map(|p| format!("{file} (field {p})")));
            let format = CompactFormat {
                resolver: PathResolver::FileName,
                max_trace: 20,
                padding: 2,
            };
            format
                .format(e)
                .unwrap_or_else(|_| e.error().to_string())
                .replace("virtual:", "")
        }
    };
    EvalError { location, message }
}

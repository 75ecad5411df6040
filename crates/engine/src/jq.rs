//! `ignoreDifferences.jqPathExpressions`, evaluated as Argo CD does (`del(<expr>)`
//! over the object), by a real jq implementation (jaq) instead of a subset.
//!
//! jaq offers no way to interrupt an evaluation, so time is bounded by what an
//! expression may contain: no user-defined functions (unbounded recursion would
//! overflow the stack) and no unbounded generators (`repeat`, `while`, `until`,
//! `range`, `recurse(f)`). Without them an expression over a finite object
//! terminates. Functions with effects outside the object (`debug`, `stderr`,
//! `input`, `env`, `halt`) are refused too: the objects include Secrets, and their
//! values must never reach a log.

use jaq_core::data::JustLut;
use jaq_core::load::{self, Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars};
use jaq_json::Val;
use serde_json::Value;
use std::sync::Arc;

type Data = JustLut<Val>;

/// A compiled `del(<expression>)`.
#[derive(Clone)]
pub struct JqDeletion {
    filter: Arc<jaq_core::Filter<Data>>,
}

/// Words an expression may not use, and why.
const REFUSED: [(&str, &str); 15] = [
    ("def", "defining functions"),
    ("repeat", "unbounded generators"),
    ("while", "unbounded generators"),
    ("until", "unbounded generators"),
    ("range", "unbounded generators"),
    ("recurse", "recursion (use `..`)"),
    ("debug", "output to the controller's log"),
    ("stderr", "output to the controller's log"),
    ("input", "reading input"),
    ("inputs", "reading input"),
    ("input_filename", "reading input"),
    ("env", "reading the environment"),
    ("$ENV", "reading the environment"),
    ("halt", "stopping the evaluator"),
    ("halt_error", "stopping the evaluator"),
];

impl JqDeletion {
    /// Compiles `del(expr)`. The error names the expression and what is wrong.
    pub fn compile(expr: &str) -> Result<Self, String> {
        let invalid = |why: String| format!("invalid jqPathExpression {expr:?}: {why}");
        if let Some((word, why)) = refused_word(expr) {
            return Err(invalid(format!("`{word}` is not allowed ({why})")));
        }
        // The expression must be one term, so it cannot close `del(` early.
        if load::parse(expr, |p| p.term()).is_none() {
            return Err(invalid("not a jq expression".into()));
        }
        let code = format!("del({expr})");
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let funs = jaq_core::funs::<Data>()
            .chain(jaq_std::funs::<Data>())
            .chain(jaq_json::funs::<Data>());
        let arena = Arena::default();
        let modules = Loader::new(defs)
            .load(
                &arena,
                File {
                    code: code.as_str(),
                    path: (),
                },
            )
            .map_err(|errs| {
                let mut parts = Vec::new();
                for (_, e) in errs {
                    match e {
                        load::Error::Io(x) => parts.extend(x.into_iter().map(|(_, m)| m)),
                        load::Error::Lex(x) => parts.extend(
                            x.into_iter()
                                .map(|(expected, _)| format!("expected {}", expected.as_str())),
                        ),
                        load::Error::Parse(x) => {
                            parts.extend(x.into_iter().map(|(expected, found)| {
                                format!("expected {} at {found:?}", expected.as_str())
                            }))
                        }
                    }
                }
                invalid(parts.join("; "))
            })?;
        let filter = Compiler::default()
            .with_funs(funs)
            .compile(modules)
            .map_err(|errs| {
                let names: Vec<String> = errs
                    .into_iter()
                    .flat_map(|(_, list)| list)
                    .map(|(name, undefined)| format!("undefined {} `{name}`", undefined.as_str()))
                    .collect();
                invalid(names.join("; "))
            })?;
        Ok(JqDeletion {
            filter: Arc::new(filter),
        })
    }

    /// Deletes what the expression selects. Like Argo CD, an evaluation error
    /// (a path the object does not have the shape for) leaves the object as it is.
    pub fn apply(&self, obj: &mut Value) -> Result<(), String> {
        let input: Val = serde::Deserialize::deserialize(&*obj).map_err(|e| e.to_string())?;
        let ctx = Ctx::<Data>::new(&self.filter.lut, Vars::new([]));
        let mut outputs = self.filter.id.run((ctx, input));
        let first = match outputs.next() {
            None => return Err("the expression produced no output".into()),
            Some(Err(e)) => {
                return Err(match e.get_err() {
                    Ok(e) => e.to_string(),
                    Err(_) => "evaluation stopped".into(),
                });
            }
            Some(Ok(v)) => v,
        };
        if outputs.next().is_some() {
            return Err("the expression produced more than one object".into());
        }
        *obj = to_json(&first);
        Ok(())
    }
}

fn refused_word(expr: &str) -> Option<(&'static str, &'static str)> {
    // Identifier-ish tokens outside string literals.
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut in_string = false;
    let mut escaped = false;
    for c in expr.chars() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        if c.is_alphanumeric() || c == '_' || c == '$' {
            current.push(c);
            continue;
        }
        if !current.is_empty() {
            tokens.push(std::mem::take(&mut current));
        }
        if c == '"' {
            in_string = true;
        }
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    REFUSED
        .iter()
        .find(|(word, _)| tokens.iter().any(|t| t == word))
        .copied()
}

fn to_json(v: &Val) -> Value {
    match v {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(n) => serde_json::from_str(&n.to_string()).unwrap_or(Value::Null),
        Val::TStr(s) | Val::BStr(s) => Value::String(String::from_utf8_lossy(s).into_owned()),
        Val::Arr(a) => Value::Array(a.iter().map(to_json).collect()),
        Val::Obj(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Val::TStr(s) | Val::BStr(s) => String::from_utf8_lossy(s).into_owned(),
                        other => other.to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn del(expr: &str, mut obj: Value) -> Value {
        JqDeletion::compile(expr).unwrap().apply(&mut obj).unwrap();
        obj
    }

    #[test]
    fn deletes_what_forms_beyond_the_old_subset_select() {
        let deploy = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "app:1"},
            {"name": "sidecar", "image": "envoy:1"},
            {"name": "sidecar-x", "image": "x:1"},
        ]}}}});
        let out = del(
            r#".spec.template.spec.containers[] | select(.name == "sidecar") | .image"#,
            deploy.clone(),
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "app", "image": "app:1"}, {"name": "sidecar"}, {"name": "sidecar-x", "image": "x:1"}])
        );
        let out = del(
            r#".spec.template.spec.containers[] | select(.name | startswith("sidecar"))"#,
            deploy.clone(),
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "app", "image": "app:1"}])
        );
        let out = del(
            r#".spec.template.spec.containers[] | select(.name == "app" or (.image | test("^x:"))) | .image"#,
            deploy,
        );
        let images: Vec<_> = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.get("image").cloned())
            .collect();
        assert_eq!(images, [None, Some(json!("envoy:1")), None]);
        // Integers stay integers.
        assert_eq!(del(".a", json!({"a": 1, "b": 2})), json!({"b": 2}));
    }

    #[test]
    fn invalid_and_unbounded_expressions_are_refused_naming_them() {
        let err = JqDeletion::compile(".spec | select(").err().unwrap();
        assert!(err.contains(r#"".spec | select(""#), "{err}");
        let err = JqDeletion::compile(".a | nosuchfn").err().unwrap();
        assert!(err.contains("nosuchfn"), "{err}");
        for e in [
            "def f: [f]; f",
            "repeat(.)",
            ".a | debug",
            "$ENV.HOME",
            "[range(1e18)]",
        ] {
            let err = JqDeletion::compile(e).err().unwrap();
            assert!(err.contains("is not allowed"), "{e}: {err}");
        }
        // Words inside string literals are data, not calls.
        assert!(JqDeletion::compile(r#".items[] | select(.name == "debug range")"#).is_ok());
        // `)` cannot close `del(` early.
        assert!(JqDeletion::compile(".a), (.b").is_err());
    }

    #[test]
    fn a_compiled_rule_is_shared_across_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<JqDeletion>();
    }
}

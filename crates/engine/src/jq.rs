//! `ignoreDifferences.jqPathExpressions`, evaluated as Argo CD does (`del(<expr>)`
//! over the object), by a real jq implementation (jaq) instead of a subset.
//!
//! jaq offers no way to interrupt an evaluation, so what an expression may use
//! is an allow-list of path steps, comparisons and pure functions over strings,
//! arrays and objects, with bounded length, nesting and generators. Anything
//! else (user-defined functions, unbounded generators such as `repeat` or
//! `range`, arithmetic that can build huge values, variables, and everything
//! that reaches outside the object: `env`, `input`, `debug`, `stderr`, `halt`)
//! is refused by name when the rule is compiled. Within those bounds an
//! expression over a finite object terminates quickly, and Secret values never
//! reach a log.

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

/// Functions and keywords an expression may use.
const ALLOWED: &[&str] = &[
    "select",
    "if",
    "then",
    "elif",
    "else",
    "end",
    "and",
    "or",
    "not",
    "empty",
    "error",
    "try",
    "catch",
    "true",
    "false",
    "null",
    "startswith",
    "endswith",
    "test",
    "match",
    "capture",
    "contains",
    "inside",
    "has",
    "in",
    "index",
    "rindex",
    "indices",
    "length",
    "utf8bytelength",
    "type",
    "keys",
    "keys_unsorted",
    "values",
    "map",
    "map_values",
    "any",
    "all",
    "first",
    "last",
    "ascii_downcase",
    "ascii_upcase",
    "ltrimstr",
    "rtrimstr",
    "trim",
    "ltrim",
    "rtrim",
    "tostring",
    "tonumber",
    "tojson",
    "fromjson",
    "split",
    "join",
    "to_entries",
    "from_entries",
    "with_entries",
    "objects",
    "arrays",
    "strings",
    "numbers",
    "booleans",
    "nulls",
    "iterables",
    "scalars",
    "paths",
    "leaf_paths",
    "getpath",
    "path",
    "sub",
    "gsub",
    "splits",
    "min",
    "max",
    "sort",
    "sort_by",
    "unique",
    "unique_by",
    "group_by",
    "min_by",
    "max_by",
    "add",
    "reverse",
    "flatten",
    "isempty",
    "ascii",
    "explode",
    "implode",
];

/// Longest expression, deepest nesting and most `,` generators accepted.
const MAX_LEN: usize = 1000;
const MAX_DEPTH: usize = 32;
const MAX_COMMAS: usize = 16;

impl JqDeletion {
    /// Compiles `del(expr)`. The error names the expression and what is wrong.
    pub fn compile(expr: &str) -> Result<Self, String> {
        let invalid = |why: String| format!("invalid jqPathExpression {expr:?}: {why}");
        check_expression(expr).map_err(invalid)?;
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

/// The allow-list check: identifiers outside field access and object keys
/// must be in [`ALLOWED`]; string interpolation `\\(...)` is code and checked too.
fn check_expression(expr: &str) -> Result<(), String> {
    if expr.len() > MAX_LEN {
        return Err(format!("longer than {MAX_LEN} characters"));
    }
    let chars: Vec<char> = expr.chars().collect();
    // Each entry: true while inside a string literal, false in code (an
    // interpolation inside a string pushes code).
    let mut modes: Vec<bool> = vec![false];
    let mut depth = 0usize;
    let mut parens_in_interp: Vec<usize> = Vec::new();
    let mut commas = 0usize;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let in_string = *modes.last().unwrap_or(&false);
        if in_string {
            match c {
                '\\' if chars.get(i + 1) == Some(&'(') => {
                    modes.push(false);
                    parens_in_interp.push(depth);
                    depth += 1;
                    i += 2;
                    continue;
                }
                '\\' => i += 2,
                '"' => {
                    modes.pop();
                    i += 1;
                }
                _ => i += 1,
            }
            continue;
        }
        match c {
            '"' => {
                modes.push(true);
                i += 1;
            }
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(format!("nested deeper than {MAX_DEPTH}"));
                }
                i += 1;
            }
            ')' | ']' | '}' => {
                depth = depth.saturating_sub(1);
                // The `)` closing an interpolation returns to its string.
                if c == ')' && parens_in_interp.last() == Some(&depth) {
                    parens_in_interp.pop();
                    modes.pop();
                }
                i += 1;
            }
            ',' => {
                commas += 1;
                if commas > MAX_COMMAS {
                    return Err(format!("more than {MAX_COMMAS} `,` alternatives"));
                }
                i += 1;
            }
            '*' | '/' | '%' => {
                // `//` is the alternative operator; `*`, `/` and `%` build values.
                if c == '/' && chars.get(i + 1) == Some(&'/') {
                    i += 2;
                    continue;
                }
                return Err(format!(
                    "`{c}` is not allowed (arithmetic can build unbounded values)"
                ));
            }
            '$' => return Err("variables (`$`) are not allowed".into()),
            '@' => return Err("format strings (`@`) are not allowed".into()),
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let field = start > 0 && chars[start - 1] == '.';
                let mut j = i;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                let key = chars.get(j) == Some(&':');
                if !field && !key && !ALLOWED.contains(&word.as_str()) {
                    return Err(format!(
                        "`{word}` is not allowed (ignoreDifferences expressions may use path steps, comparisons and pure functions such as select, test, startswith, contains, has, map)"
                    ));
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
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
            ".a | stderr_empty",
            "$ENV.HOME",
            "[range(1e18)]",
            r#"select("\(env)" == "x")"#,
            r#"select("\(def f: f; f)" == "x")"#,
            r#""x" * 1e15"#,
            "[.[] | combinations]",
            "# \"\n env",
        ] {
            let err = JqDeletion::compile(e).err().unwrap();
            assert!(err.contains("not allowed"), "{e}: {err}");
        }
        let deep = format!("{}.{}", "(".repeat(40), ")".repeat(40));
        assert!(
            JqDeletion::compile(&deep)
                .err()
                .unwrap()
                .contains("nested deeper")
        );
        let long = ".a".repeat(600);
        assert!(
            JqDeletion::compile(&long)
                .err()
                .unwrap()
                .contains("longer than")
        );
        let wide = vec!["(.,.)"; 40].join("|");
        assert!(
            JqDeletion::compile(&wide)
                .err()
                .unwrap()
                .contains("alternatives")
        );
        // Words inside string literals are data, not calls; keys and fields are names.
        assert!(JqDeletion::compile(r#".env.debug | select(.input == "x" // "y")"#).is_ok());
        assert!(JqDeletion::compile(r#".a[] | select({name: .n} | .name == "x")"#).is_ok());
        assert!(JqDeletion::compile(r#"select("a\(.name)b" == "axb")"#).is_ok());
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

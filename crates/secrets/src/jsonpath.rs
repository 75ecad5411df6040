//! Kubernetes JSONPath templates (kubectl's `-o jsonpath`, client-go `util/jsonpath`), as avp's
//! `jsonPath` modifier runs them: literal text outside `{}`, and inside fields (`.a.b`,
//! `['a b']`), indexes and slices (`[0]`, `[-1]`, `[1:3]`, `[0:-1:1]`), `[*]`, `..name`, filters
//! (`[?(@.kind=="x")]`, `[?(@.port>80)]`, `[?(@.name)]`), `{range ...}{end}`, quoted text
//! (`{'['}`) and `{@}`. A missing key is an error (`<key> is not found`), as avp sets
//! `AllowMissingKeys(false)`. Maps and lists print as compact JSON, several results with one
//! space between them.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Expr(Vec<Step>),
    Range(Vec<Step>, Vec<Node>),
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// `$`: the whole input.
    Root,
    /// `@`: the current value (in a `range`, the element).
    Current,
    Field(String),
    Fields(Vec<String>),
    Wildcard,
    Recursive,
    Indexes(Vec<i64>),
    Slice(Option<i64>, Option<i64>, Option<i64>),
    Filter(Filter),
}

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    left: Vec<Step>,
    /// `None`: the path exists.
    op: Option<(String, Literal)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Str(String),
    Num(f64),
    Bool(bool),
}

/// Runs `template` against `data` and prints the results.
pub fn execute(template: &str, data: &Value) -> Result<String, String> {
    let nodes = parse_template(template)?;
    let mut out = String::new();
    run(&nodes, data, data, &mut out)?;
    Ok(out)
}

fn run(nodes: &[Node], root: &Value, current: &Value, out: &mut String) -> Result<(), String> {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Expr(steps) => {
                let found = eval(steps, root, current)?;
                let printed: Vec<String> = found.iter().map(print).collect();
                out.push_str(&printed.join(" "));
            }
            Node::Range(steps, body) => {
                for v in eval(steps, root, current)? {
                    run(body, root, &v, out)?;
                }
            }
        }
    }
    Ok(())
}

fn print(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => crate::modifiers::number_text(n),
        Value::Bool(b) => b.to_string(),
        Value::Null => "<nil>".into(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

// ---- parsing ----------------------------------------------------------------------------------

fn parse_template(t: &str) -> Result<Vec<Node>, String> {
    // (nodes, the range steps that opened this level)
    let mut stack: Vec<(Vec<Node>, Option<Vec<Step>>)> = vec![(Vec::new(), None)];
    let chars: Vec<char> = t.chars().collect();
    let mut i = 0;
    let mut text = String::new();
    while i < chars.len() {
        if chars[i] != '{' {
            text.push(chars[i]);
            i += 1;
            continue;
        }
        if !text.is_empty() {
            stack
                .last_mut()
                .unwrap()
                .0
                .push(Node::Text(std::mem::take(&mut text)));
        }
        // The action runs to the matching `}`, skipping quoted text.
        let start = i + 1;
        let mut j = start;
        let mut quote: Option<char> = None;
        while j < chars.len() {
            match (quote, chars[j]) {
                (Some(q), c) if c == q => quote = None,
                (None, '\'' | '"') => quote = Some(chars[j]),
                (None, '}') => break,
                _ => {}
            }
            j += 1;
        }
        if j >= chars.len() {
            return Err(format!("unclosed action in {t}"));
        }
        let action: String = chars[start..j].iter().collect();
        let action = action.trim();
        i = j + 1;
        if action == "end" {
            let (body, opened) = stack.pop().unwrap();
            let Some(steps) = opened else {
                return Err("not in range, nothing to end".into());
            };
            let Some(parent) = stack.last_mut() else {
                return Err("not in range, nothing to end".into());
            };
            parent.0.push(Node::Range(steps, body));
        } else if let Some(rest) = action.strip_prefix("range ") {
            stack.push((Vec::new(), Some(parse_expr(rest.trim())?)));
        } else if let Some(lit) = quoted(action) {
            stack.last_mut().unwrap().0.push(Node::Text(lit));
        } else {
            stack
                .last_mut()
                .unwrap()
                .0
                .push(Node::Expr(parse_expr(action)?));
        }
    }
    if !text.is_empty() {
        stack.last_mut().unwrap().0.push(Node::Text(text));
    }
    if stack.len() != 1 {
        return Err("unclosed range".into());
    }
    Ok(stack.pop().unwrap().0)
}

fn quoted(s: &str) -> Option<String> {
    let first = s.chars().next()?;
    if (first == '\'' || first == '"') && s.len() >= 2 && s.ends_with(first) {
        Some(s[1..s.len() - 1].replace("\\n", "\n").replace("\\t", "\t"))
    } else {
        None
    }
}

fn parse_expr(s: &str) -> Result<Vec<Step>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut steps = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '$' => {
                steps.push(Step::Root);
                i += 1;
            }
            '@' => {
                steps.push(Step::Current);
                i += 1;
            }
            '.' if chars.get(i + 1) == Some(&'.') => {
                steps.push(Step::Recursive);
                i += 2;
                // `..[...]` or `..name`
                if chars.get(i) != Some(&'[') {
                    let (name, next) = name_at(&chars, i);
                    if name.is_empty() {
                        return Err(format!("unrecognized identifier in {s}"));
                    }
                    steps.push(field_step(name));
                    i = next;
                }
            }
            '.' => {
                let (name, next) = name_at(&chars, i + 1);
                if !name.is_empty() {
                    steps.push(field_step(name));
                }
                i = next;
            }
            '[' => {
                let mut depth = 0;
                let mut quote: Option<char> = None;
                let mut j = i;
                while j < chars.len() {
                    match (quote, chars[j]) {
                        (Some(q), c) if c == q => quote = None,
                        (None, '\'' | '"') => quote = Some(chars[j]),
                        (None, '[') => depth += 1,
                        (None, ']') => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                if j >= chars.len() {
                    return Err(format!("unterminated array in {s}"));
                }
                let inner: String = chars[i + 1..j].iter().collect();
                steps.push(parse_bracket(inner.trim())?);
                i = j + 1;
            }
            c if c.is_whitespace() => i += 1,
            c => {
                // A bare name (`{items}` in kubectl means `.items`).
                if c.is_alphanumeric() || c == '_' || c == '-' {
                    let (name, next) = name_at(&chars, i);
                    steps.push(field_step(name));
                    i = next;
                } else {
                    return Err(format!(
                        "unrecognized character in action: U+{:04X} '{c}'",
                        c as u32
                    ));
                }
            }
        }
    }
    Ok(steps)
}

fn field_step(name: String) -> Step {
    if name == "*" {
        Step::Wildcard
    } else {
        Step::Field(name)
    }
}

fn name_at(chars: &[char], mut i: usize) -> (String, usize) {
    let mut name = String::new();
    while i < chars.len() && chars[i] != '.' && chars[i] != '[' && !chars[i].is_whitespace() {
        name.push(chars[i]);
        i += 1;
    }
    (name, i)
}

fn parse_bracket(inner: &str) -> Result<Step, String> {
    if inner == "*" {
        return Ok(Step::Wildcard);
    }
    if let Some(f) = inner.strip_prefix('?') {
        let f = f.trim();
        let f = f
            .strip_prefix('(')
            .and_then(|f| f.strip_suffix(')'))
            .ok_or_else(|| format!("invalid filter: {inner}"))?;
        return parse_filter(f.trim()).map(Step::Filter);
    }
    if inner.starts_with('\'') || inner.starts_with('"') {
        let names = inner
            .split(',')
            .map(|p| quoted(p.trim()).ok_or_else(|| format!("invalid array index: {inner}")))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(if names.len() == 1 {
            Step::Field(names[0].clone())
        } else {
            Step::Fields(names)
        });
    }
    if inner.contains(':') {
        let parts: Vec<&str> = inner.split(':').collect();
        if parts.len() > 3 {
            return Err(format!("invalid array index: {inner}"));
        }
        let num = |p: Option<&&str>| -> Result<Option<i64>, String> {
            match p.map(|p| p.trim()) {
                None | Some("") => Ok(None),
                Some(p) => p
                    .parse()
                    .map(Some)
                    .map_err(|_| format!("invalid array index: {inner}")),
            }
        };
        return Ok(Step::Slice(
            num(parts.first())?,
            num(parts.get(1))?,
            num(parts.get(2))?,
        ));
    }
    let idx = inner
        .split(',')
        .map(|p| {
            p.trim()
                .parse::<i64>()
                .map_err(|_| format!("invalid array index: {inner}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Step::Indexes(idx))
}

fn parse_filter(f: &str) -> Result<Filter, String> {
    for op in ["==", "!=", "<=", ">=", "<", ">"] {
        if let Some(pos) = f.find(op) {
            let left = parse_expr(f[..pos].trim())?;
            let right = f[pos + op.len()..].trim();
            let lit = if let Some(s) = quoted(right) {
                Literal::Str(s)
            } else if let Ok(n) = right.parse::<f64>() {
                Literal::Num(n)
            } else if right == "true" || right == "false" {
                Literal::Bool(right == "true")
            } else {
                return Err(format!("invalid filter literal: {right}"));
            };
            return Ok(Filter {
                left,
                op: Some((op.to_string(), lit)),
            });
        }
    }
    Ok(Filter {
        left: parse_expr(f)?,
        op: None,
    })
}

// ---- evaluation -------------------------------------------------------------------------------

fn eval(steps: &[Step], root: &Value, current: &Value) -> Result<Vec<Value>, String> {
    let mut vals = vec![current.clone()];
    let mut after_recursive = false;
    for step in steps {
        let mut next = Vec::new();
        for v in &vals {
            match step {
                Step::Root => next.push(root.clone()),
                Step::Current => next.push(v.clone()),
                Step::Field(name) => match v.get(name) {
                    Some(x) if v.is_object() => next.push(x.clone()),
                    // `..name` keeps what has it, at any depth.
                    _ if after_recursive => {}
                    _ => return Err(format!("{name} is not found")),
                },
                Step::Fields(names) => {
                    for name in names {
                        match v.get(name) {
                            Some(x) => next.push(x.clone()),
                            None => return Err(format!("{name} is not found")),
                        }
                    }
                }
                Step::Wildcard => match v {
                    Value::Object(m) => next.extend(m.values().cloned()),
                    Value::Array(a) => next.extend(a.iter().cloned()),
                    _ => {}
                },
                Step::Recursive => descend(v, &mut next),
                Step::Indexes(idx) => {
                    let Value::Array(a) = v else {
                        return Err(format!("{} is not array or slice", kind(v)));
                    };
                    for i in idx {
                        let pos = if *i < 0 { a.len() as i64 + i } else { *i };
                        if pos < 0 || pos >= a.len() as i64 {
                            return Err(format!(
                                "array index out of bounds: index {i}, length {}",
                                a.len()
                            ));
                        }
                        next.push(a[pos as usize].clone());
                    }
                }
                Step::Slice(start, end, step) => {
                    let Value::Array(a) = v else {
                        return Err(format!("{} is not array or slice", kind(v)));
                    };
                    let len = a.len() as i64;
                    let clamp = |x: i64| if x < 0 { (len + x).max(0) } else { x.min(len) };
                    let s = start.map(clamp).unwrap_or(0);
                    let e = end.map(clamp).unwrap_or(len);
                    let st = step.unwrap_or(1).max(1);
                    let mut i = s;
                    while i < e {
                        next.push(a[i as usize].clone());
                        i += st;
                    }
                }
                Step::Filter(f) => {
                    let items: Vec<&Value> = match v {
                        Value::Array(a) => a.iter().collect(),
                        other => vec![other],
                    };
                    for item in items {
                        if filter_matches(f, root, item) {
                            next.push(item.clone());
                        }
                    }
                }
            }
        }
        after_recursive = matches!(step, Step::Recursive);
        vals = next;
    }
    Ok(vals)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Object(_) => "map",
        Value::Array(_) => "slice",
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "bool",
        Value::Null => "nil",
    }
}

fn descend(v: &Value, out: &mut Vec<Value>) {
    out.push(v.clone());
    match v {
        Value::Object(m) => m.values().for_each(|x| descend(x, out)),
        Value::Array(a) => a.iter().for_each(|x| descend(x, out)),
        _ => {}
    }
}

fn filter_matches(f: &Filter, root: &Value, item: &Value) -> bool {
    let Ok(found) = eval(&f.left, root, item) else {
        return false;
    };
    let Some((op, lit)) = &f.op else {
        return !found.is_empty();
    };
    found.iter().any(|v| {
        let ord = match (v, lit) {
            (Value::String(a), Literal::Str(b)) => Some(a.as_str().cmp(b.as_str())),
            (Value::Number(a), Literal::Num(b)) => a.as_f64().and_then(|a| a.partial_cmp(b)),
            (Value::Bool(a), Literal::Bool(b)) => Some(a.cmp(b)),
            _ => None,
        };
        let Some(ord) = ord else {
            return op == "!=";
        };
        match op.as_str() {
            "==" => ord.is_eq(),
            "!=" => ord.is_ne(),
            "<" => ord.is_lt(),
            "<=" => ord.is_le(),
            ">" => ord.is_gt(),
            ">=" => ord.is_ge(),
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kubectl_forms() {
        let d = json!({
            "kind": "List",
            "items": [
                {"metadata": {"name": "a"}, "spec": {"port": 80}, "status": {"ok": true}},
                {"metadata": {"name": "b"}, "spec": {"port": 8080}},
            ],
            "data": {"user": "app", "pass": "pw", "my key": "x"}
        });
        let run = |t: &str| execute(t, &d);
        assert_eq!(run("{.kind}").unwrap(), "List");
        assert_eq!(run("{.items[0].metadata.name}").unwrap(), "a");
        assert_eq!(run("{.items[-1].metadata.name}").unwrap(), "b");
        assert_eq!(run("{.items[*].metadata.name}").unwrap(), "a b");
        assert_eq!(run("{.items[0:1].spec.port}").unwrap(), "80");
        assert_eq!(run("{..name}").unwrap(), "a b");
        assert_eq!(
            run("{.items[?(@.spec.port>80)].metadata.name}").unwrap(),
            "b"
        );
        assert_eq!(
            run("{.items[?(@.metadata.name==\"a\")].spec.port}").unwrap(),
            "80"
        );
        assert_eq!(run("{.items[?(@.status)].metadata.name}").unwrap(), "a");
        assert_eq!(run("{.data.user}{':'}{.data.pass}").unwrap(), "app:pw");
        assert_eq!(run("{.data['my key']}").unwrap(), "x");
        assert_eq!(run("{.items[0].spec}").unwrap(), r#"{"port":80}"#);
        assert_eq!(
            run("{range .items[*]}[{.metadata.name}]{end}").unwrap(),
            "[a][b]"
        );
        assert_eq!(run("literal {.kind}").unwrap(), "literal List");
        assert_eq!(run("{.missing}").unwrap_err(), "missing is not found");
        assert!(run("{.items[5]}").unwrap_err().contains("out of bounds"));
        assert!(run("{.kind!}").is_err());
    }

    /// avp's documented `ports` example: a JSON list built with range and literals.
    #[test]
    fn avp_ports_example() {
        let d = json!({"service": {"ports": [80, 8080]}});
        let t = r#"{'['} {range .service.ports[0:-1:1]} {'{"protocol":"TCP",'} {'"port":'}{@} {',"targetPort":'}{@} {'},'} {end} {'{"protocol":"TCP",'} {'"port":'}{.service.ports[-1]} {',"targetPort":'}{.service.ports[-1]} {'}]'}"#;
        let out = execute(t, &d).unwrap();
        let parsed: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            parsed,
            json!([{"protocol": "TCP", "port": 80, "targetPort": 80},
                   {"protocol": "TCP", "port": 8080, "targetPort": 8080}])
        );
    }
}

//! A small JSON Schema validator for definition parameters.
//!
//! No JSON Schema crate is in the workspace lock, so this covers the subset KubeVela parameters
//! need: `type` (one or a list; `integer` is a number without fraction), `properties`, `required`,
//! `additionalProperties` (bool or schema), `items`, `minItems`, `enum` and `default`.
//! Defaults are filled in while validating, like CUE's `*default | type`. Other keywords
//! (`description`, `format`, ...) are ignored.

use serde_json::{Map, Value};

/// A violation: path under the validated value (`.a.b[0]`, empty for the root) and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub path: String,
    pub reason: String,
}

/// Validates `value` against `schema`, filling in defaults of missing object properties.
pub fn validate(schema: &Value, value: &mut Value) -> Result<(), Violation> {
    check(schema, value, &mut String::new())
}

fn fail(path: &str, reason: impl Into<String>) -> Result<(), Violation> {
    Err(Violation {
        path: path.to_owned(),
        reason: reason.into(),
    })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_type(v: &Value, t: &str) -> Option<bool> {
    Some(match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        "number" => v.is_number(),
        "integer" => match v {
            Value::Number(n) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        },
        _ => return None,
    })
}

fn check(schema: &Value, value: &mut Value, path: &mut String) -> Result<(), Violation> {
    let schema = match schema {
        Value::Bool(true) => return Ok(()),
        Value::Bool(false) => return fail(path, "no value is allowed here"),
        Value::Object(s) => s,
        _ => return fail(path, "invalid schema: expected an object or a boolean"),
    };

    if let Some(t) = schema.get("type") {
        let allowed: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => return fail(path, "invalid schema: `type` must be a string or a list"),
        };
        let mut ok = false;
        for t in &allowed {
            match is_type(value, t) {
                Some(true) => ok = true,
                Some(false) => {}
                None => return fail(path, format!("invalid schema: unknown type `{t}`")),
            }
        }
        if !ok {
            return fail(
                path,
                format!(
                    "expected {}, got {}",
                    allowed.join(" or "),
                    type_name(value)
                ),
            );
        }
    }

    if let Some(Value::Array(options)) = schema.get("enum")
        && !options.contains(value)
    {
        let list: Vec<String> = options.iter().map(Value::to_string).collect();
        return fail(path, format!("{value} is not one of {}", list.join(", ")));
    }

    match value {
        Value::Object(obj) => check_object(schema, obj, path),
        Value::Array(items) => {
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < min
            {
                return fail(
                    path,
                    format!("expected at least {min} items, got {}", items.len()),
                );
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    check(item_schema, item, path)?;
                    path.truncate(len);
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn check_object(
    schema: &Map<String, Value>,
    obj: &mut Map<String, Value>,
    path: &mut String,
) -> Result<(), Violation> {
    let empty = Map::new();
    let props = schema
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);

    for (name, prop_schema) in props {
        if !obj.contains_key(name)
            && let Some(default) = prop_schema.get("default")
        {
            obj.insert(name.clone(), default.clone());
        }
    }

    if let Some(Value::Array(required)) = schema.get("required") {
        for r in required.iter().filter_map(Value::as_str) {
            if !obj.contains_key(r) {
                return fail(path, format!("missing required field `{r}`"));
            }
        }
    }

    let additional = schema.get("additionalProperties");
    for (name, v) in obj.iter_mut() {
        let len = path.len();
        path.push('.');
        path.push_str(name);
        if let Some(prop_schema) = props.get(name) {
            check(prop_schema, v, path)?;
        } else {
            match additional {
                Some(Value::Bool(false)) => {
                    let mut known: Vec<&str> = props.keys().map(String::as_str).collect();
                    known.sort_unstable();
                    return fail(
                        path,
                        format!("unknown field `{name}`; allowed: {}", known.join(", ")),
                    );
                }
                Some(s @ Value::Object(_)) => check(s, v, path)?,
                _ => {}
            }
        }
        path.truncate(len);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(schema: Value, mut v: Value) -> Result<Value, Violation> {
        validate(&schema, &mut v).map(|()| v)
    }

    #[test]
    fn defaults_fill_nested_items() {
        let schema = json!({"type": "object", "properties": {"ports": {"type": "array",
            "items": {"type": "object", "properties": {"port": {"type": "integer"},
            "protocol": {"type": "string", "default": "TCP"}}}}}});
        let v = run(schema, json!({"ports": [{"port": 80}]})).unwrap();
        assert_eq!(v, json!({"ports": [{"port": 80, "protocol": "TCP"}]}));
    }

    #[test]
    fn reports_path_and_reason() {
        let schema = json!({"type": "object", "properties": {"ports": {"type": "array",
            "items": {"type": "object", "properties": {"port": {"type": "integer"}}}}}});
        let e = run(schema, json!({"ports": [{"port": 80}, {"port": "http"}]})).unwrap_err();
        assert_eq!(e.path, ".ports[1].port");
        assert_eq!(e.reason, "expected integer, got string");
    }

    #[test]
    fn required_enum_additional() {
        let schema = json!({"type": "object", "required": ["image"], "additionalProperties": false,
            "properties": {"image": {"type": "string"}, "pull": {"enum": ["Always", "Never"]}}});
        let e = run(schema.clone(), json!({})).unwrap_err();
        assert_eq!(e.reason, "missing required field `image`");
        let e = run(schema.clone(), json!({"image": "x", "pull": "Sometimes"})).unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.reason.as_str()),
            (".pull", "\"Sometimes\" is not one of \"Always\", \"Never\"")
        );
        let e = run(schema, json!({"image": "x", "imag": "y"})).unwrap_err();
        assert_eq!(e.reason, "unknown field `imag`; allowed: image, pull");
    }

    #[test]
    fn maps_and_type_lists() {
        let schema =
            json!({"type": "object", "additionalProperties": {"type": ["string", "null"]}});
        assert!(run(schema.clone(), json!({"a": "b", "c": null})).is_ok());
        let e = run(schema, json!({"a": 1})).unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.reason.as_str()),
            (".a", "expected string or null, got integer")
        );
        assert!(run(json!({"type": "integer"}), json!(3.0)).is_ok());
        assert!(run(json!({"type": "integer"}), json!(3.5)).is_err());
    }
}

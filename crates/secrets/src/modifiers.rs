//! avp's modifiers (`pkg/kube/modifiers.go`): `base64encode`, `base64decode`, `jsonPath`,
//! `jsonParse`, `yamlParse`, `indent N`, `sha256sum`, with its error texts.

use base64::Engine as _;
use serde_json::{Number, Value};
use sha2::{Digest, Sha256};

use crate::jsonpath;

pub enum Error {
    /// Not a modifier avp knows.
    Unknown,
    /// The modifier failed; the text avp gives.
    Failed(String),
}

fn failed(s: impl Into<String>) -> Error {
    Error::Failed(s.into())
}

/// Go's `%T` of a value, as avp's `invalid datatype` errors name it.
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Object(_) => "map[string]interface {}",
        Value::Array(_) => "[]interface {}",
        Value::Number(_) => "json.Number",
        Value::Bool(_) => "bool",
        Value::Null => "<nil>",
        Value::String(_) => "string",
    }
}

/// A number as Go prints it: integers without a fraction, others in shortest form.
pub fn number_text(n: &Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e21 => format!("{f:.0}"),
        Some(f) => f.to_string(),
        None => n.to_string(),
    }
}

fn text(v: &Value, expected: bool) -> Result<&str, Error> {
    v.as_str().ok_or_else(|| {
        failed(if expected {
            format!("invalid datatype {}, expected string", go_type(v))
        } else {
            format!("invalid datatype {}", go_type(v))
        })
    })
}

fn no_args(args: &[&str]) -> Result<(), Error> {
    if args.is_empty() {
        Ok(())
    } else {
        Err(failed("invalid parameters"))
    }
}

/// Applies modifier `name` with `args` (already split on whitespace) to `value`.
pub fn apply(name: &str, args: &[&str], value: Value) -> Result<Value, Error> {
    match name {
        "base64encode" => {
            no_args(args)?;
            let s = text(&value, false)?;
            Ok(Value::String(
                base64::engine::general_purpose::STANDARD.encode(s),
            ))
        }
        "base64decode" => {
            no_args(args)?;
            let s = text(&value, false)?;
            // avp ignores decode errors and keeps what decoded.
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s)
                .unwrap_or_default();
            Ok(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        }
        "jsonPath" => {
            if args.is_empty() {
                return Err(failed("invalid parameters"));
            }
            let data = match &value {
                Value::String(s) => {
                    serde_json::from_str(s).map_err(|e| failed(go_json_error(&e)))?
                }
                other => other.clone(),
            };
            let template = args.join(" ");
            jsonpath::execute(&template, &data)
                .map(Value::String)
                .map_err(failed)
        }
        "jsonParse" => {
            no_args(args)?;
            let s = text(&value, false)?;
            serde_json::from_str(s).map_err(|e| failed(go_json_error(&e)))
        }
        "yamlParse" => {
            no_args(args)?;
            let s = text(&value, false)?;
            // The parser's message can quote the input, which is the secret.
            serde_saphyr::from_str::<Value>(s).map_err(|_| failed("the value is not valid YAML"))
        }
        "indent" => {
            if args.len() != 1 {
                return Err(failed("invalid parameters"));
            }
            let n: usize = args[0]
                .parse()
                .map_err(|_| failed("invalid indentation level"))?;
            let s = text(&value, false)?;
            Ok(Value::String(indent(s, n)))
        }
        "sha256sum" => {
            no_args(args)?;
            let s = match &value {
                Value::Number(n) => number_text(n),
                other => text(other, true)?.to_owned(),
            };
            let digest = Sha256::digest(s.as_bytes());
            Ok(Value::String(
                digest.iter().map(|b| format!("{b:02x}")).collect(),
            ))
        }
        _ => Err(Error::Unknown),
    }
}

/// avp's `indent`: the first line trimmed, every later non-empty line trimmed and indented by
/// `n` spaces; empty lines are dropped.
fn indent(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.split('\n').collect();
    let mut out = String::from(lines[0].trim());
    if lines.len() > 1 {
        out.push('\n');
    }
    let pad = " ".repeat(n);
    for (i, line) in lines.iter().enumerate().skip(1) {
        if line.is_empty() {
            continue;
        }
        out.push_str(&pad);
        out.push_str(line.trim());
        if i < lines.len() - 1 {
            out.push('\n');
        }
    }
    out
}

/// Go's JSON syntax errors read like `invalid character 'h' looking for beginning of value`;
/// serde's say the same with a position.
fn go_json_error(e: &serde_json::Error) -> String {
    format!("invalid JSON: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(name: &str, args: &[&str], v: Value) -> Result<Value, String> {
        apply(name, args, v).map_err(|e| match e {
            Error::Unknown => "unknown".into(),
            Error::Failed(s) => s,
        })
    }

    #[test]
    fn avp_documented_vectors() {
        assert_eq!(
            run("base64encode", &[], json!("mysecret")).unwrap(),
            "bXlzZWNyZXQ="
        );
        assert_eq!(
            run("base64decode", &[], json!("bXlzZWNyZXQ=")).unwrap(),
            "mysecret"
        );
        assert_eq!(
            run(
                "jsonPath",
                &["{.data.subkey}"],
                json!({"data": {"subkey": "secret"}})
            )
            .unwrap(),
            "secret"
        );
        assert_eq!(
            run(
                "jsonPath",
                &["{.data.subkey}"],
                json!(r#"{"data": {"subkey": "secret"}}"#)
            )
            .unwrap(),
            "secret"
        );
        assert!(run("jsonPath", &["{.data.subkey}"], json!("hi, how are you")).is_err());
        assert_eq!(
            run("jsonParse", &[], json!(r#"{"data": {"subkey": "secret"}}"#)).unwrap(),
            json!({"data": {"subkey": "secret"}})
        );
        assert_eq!(
            run("yamlParse", &[], json!("data: secret")).unwrap(),
            json!({"data": "secret"})
        );
        let parsed = run(
            "yamlParse",
            &[],
            json!("---\nkey1: secret1\nkey2: secret2\nkey3: secret3"),
        )
        .unwrap();
        assert_eq!(run("jsonPath", &["{.key2}"], parsed).unwrap(), "secret2");
        assert_eq!(
            run("sha256sum", &[], json!("bar")).unwrap(),
            "fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9"
        );
        assert_eq!(
            run("indent", &["3"], json!("a\nmulti-line\nstring")).unwrap(),
            "a\n   multi-line\n   string"
        );
        assert_eq!(
            run("indent", &["10"], json!("a-string")).unwrap(),
            "a-string"
        );
        assert_eq!(run("indent", &["3"], json!("a\nb\n")).unwrap(), "a\n   b\n");
        assert_eq!(run("indent", &["3"], json!("a\n\nb")).unwrap(), "a\n   b");
        let image = json!({"image": {"repository": "docker.io/dummy", "tag": "latest"}});
        assert_eq!(
            run(
                "jsonParse",
                &[],
                run("jsonPath", &["{.image}"], image).unwrap()
            )
            .unwrap(),
            json!({"repository": "docker.io/dummy", "tag": "latest"})
        );
    }

    #[test]
    fn avp_error_texts() {
        assert_eq!(
            run("base64encode", &["x"], json!("a")).unwrap_err(),
            "invalid parameters"
        );
        assert_eq!(
            run("base64encode", &[], json!({"a": 1})).unwrap_err(),
            "invalid datatype map[string]interface {}"
        );
        assert_eq!(
            run("jsonPath", &[], json!("{}")).unwrap_err(),
            "invalid parameters"
        );
        assert_eq!(
            run("jsonPath", &["{.missingPath}"], json!({"a": 1})).unwrap_err(),
            "missingPath is not found"
        );
        assert_eq!(
            run("indent", &["x"], json!("a")).unwrap_err(),
            "invalid indentation level"
        );
        assert_eq!(
            run("indent", &[], json!("a")).unwrap_err(),
            "invalid parameters"
        );
        assert_eq!(
            run("sha256sum", &[], json!([1])).unwrap_err(),
            "invalid datatype []interface {}, expected string"
        );
        assert_eq!(run("nope", &[], json!("a")).unwrap_err(), "unknown");
    }
}

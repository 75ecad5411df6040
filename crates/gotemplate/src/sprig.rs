//! The Sprig functions Argo CD's ApplicationSet templates may call (its hermetic set: no `env`,
//! `expandenv` or `getHostByName`), plus Argo CD's own `normalize`, `slugify`, `toYaml`,
//! `fromYaml` and `fromYamlArray`. A function Ferry does not have fails at parse time
//! (`function "x" not defined`), never at run time with a wrong result.

use crate::{Function, Value};
use base64::Engine;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Argo CD's ApplicationSet functions.
pub const FUNCS: &[(&str, Function)] = &[
    ("default", default),
    ("empty", empty),
    ("coalesce", coalesce),
    ("ternary", ternary),
    ("quote", quote),
    ("squote", squote),
    ("cat", cat),
    ("title", title),
    ("trimAll", trim_all),
    ("repeat", repeat),
    ("substr", substr),
    ("trunc", trunc),
    ("indent", indent),
    ("nindent", nindent),
    ("nospace", nospace),
    ("splitList", split_list),
    ("join", join),
    ("list", list),
    ("dict", dict),
    ("get", get),
    ("hasKey", has_key),
    ("keys", keys),
    ("first", first),
    ("last", last),
    ("toString", to_string),
    ("toJson", to_json),
    ("toPrettyJson", to_pretty_json),
    ("fromJson", from_json),
    ("toYaml", to_yaml),
    ("fromYaml", from_yaml),
    ("fromYamlArray", from_yaml_array),
    ("b64enc", b64enc),
    ("b64dec", b64dec),
    ("sha256sum", sha256sum),
    ("regexMatch", regex_match),
    ("regexReplaceAll", regex_replace_all),
    ("regexFind", regex_find),
    ("add", add),
    ("sub", sub),
    ("mul", mul),
    ("div", div),
    ("mod", modulo),
    ("max", max),
    ("min", min),
    ("int", int),
    ("int64", int),
    ("atoi", atoi),
    ("normalize", normalize),
    ("slugify", slugify),
];

fn want(args: &[Value], n: usize, name: &str) -> Result<(), String> {
    if args.len() == n {
        Ok(())
    } else {
        Err(format!(
            "wrong number of args for {name}: want {n} got {}",
            args.len()
        ))
    }
}

/// Go's `%v` of a value.
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Str(s) => s.clone(),
        other => crate::sprint(std::slice::from_ref(other)),
    }
}

fn is_empty(v: &Value) -> bool {
    !crate::truth(v)
}

fn num(v: &Value) -> Result<i64, String> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::Float(f) => Ok(*f as i64),
        Value::Bool(b) => Ok(i64::from(*b)),
        Value::Str(s) => Ok(s.trim().parse::<i64>().unwrap_or(0)),
        Value::Null => Ok(0),
        other => Err(format!(
            "cannot convert {} to a number",
            crate::type_name(other)
        )),
    }
}

fn default(a: Vec<Value>) -> Result<Value, String> {
    match a.len() {
        1 => Ok(a[0].clone()),
        2 => Ok(if is_empty(&a[1]) {
            a[0].clone()
        } else {
            a[1].clone()
        }),
        n => Err(format!(
            "wrong number of args for default: want 1 or 2 got {n}"
        )),
    }
}

fn empty(a: Vec<Value>) -> Result<Value, String> {
    want(&a, 1, "empty")?;
    Ok(Value::Bool(is_empty(&a[0])))
}

fn coalesce(a: Vec<Value>) -> Result<Value, String> {
    Ok(a.into_iter().find(|v| !is_empty(v)).unwrap_or(Value::Null))
}

fn ternary(a: Vec<Value>) -> Result<Value, String> {
    want(&a, 3, "ternary")?;
    Ok(if crate::truth(&a[2]) {
        a[0].clone()
    } else {
        a[1].clone()
    })
}

fn quote(a: Vec<Value>) -> Result<Value, String> {
    Ok(Value::Str(
        a.iter()
            .filter(|v| !matches!(v, Value::Null))
            .map(|v| serde_json::to_string(&text(v)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join(" "),
    ))
}

fn squote(a: Vec<Value>) -> Result<Value, String> {
    Ok(Value::Str(
        a.iter()
            .filter(|v| !matches!(v, Value::Null))
            .map(|v| format!("'{}'", text(v)))
            .collect::<Vec<_>>()
            .join(" "),
    ))
}

fn cat(a: Vec<Value>) -> Result<Value, String> {
    Ok(Value::Str(
        a.iter()
            .filter(|v| !matches!(v, Value::Null))
            .map(text)
            .collect::<Vec<_>>()
            .join(" "),
    ))
}

fn title(a: Vec<Value>) -> Result<Value, String> {
    want(&a, 1, "title")?;
    let mut out = String::new();
    let mut start = true;
    for c in text(&a[0]).chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = c.is_whitespace();
    }
    Ok(Value::Str(out))
}

fn trim_all(a: Vec<Value>) -> Result<Value, String> {
    want(&a, 2, "trimAll")?;
    let cut: Vec<char> = text(&a[0]).chars().collect();
    Ok(Value::Str(
        text(&a[1]).trim_matches(|c| cut.contains(&c)).to_string(),
    ))
}

fn repeat(a: Vec<Value>) -> Result<Value, String> {
    want(&a, 2, "repeat")?;
    Ok(Value::Str(
        text(&a[1]).repeat(num(&a[0])?.clamp(0, 10_000) as usize),
    ))
}

fn substr(a: Vec<Value>) -> Result<Value, String> {
    want(&a, 3, "substr")?;
    let s: Vec<char> = text(&a[2]).chars().collect();
    let (start, end) = (num(&a[0])?, num(&a[1])?);
    let start = start.clamp(0, s.len() as i64) as usize;
    let end = if end < 0 {
        s.len()
    } else {
        (end as usize).min(s.len())
    };
    Ok(Value::Str(s[start.min(end)..end].iter().collect()))
}

fn trunc(a: Vec<Value>) -> Result<Value, String> {
    want(&a, 2, "trunc")?;
    let s: Vec<char> = text(&a[1]).chars().collect();
    let n = num(&a[0])?;
    let out: String = if n >= 0 {
        s.iter().take(n as usize).collect()
    } else {
        s.iter()
            .skip(s.len().saturating_sub(n.unsigned_abs() as usize))
            .collect()
    };
    Ok(Value::Str(out))
}

fn indent(a: Vec<Value>) -> Result<Value, String> {
    want(&a, 2, "indent")?;
    let pad = " ".repeat(num(&a[0])?.clamp(0, 1000) as usize);
    Ok(Value::Str(
        text(&a[1])
            .split('\n')
            .map(|l| format!("{pad}{l}"))
            .collect::<Vec<_>>()
            .join("\n"),
    ))
}

fn nindent(a: Vec<Value>) -> Result<Value, String> {
    let Value::Str(s) = indent(a)? else {
        return Ok(Value::Null);
    };
    Ok(Value::Str(format!("\n{s}")))
}

fn nospace(a: Vec<Value>) -> Result<Value, String> {
    want(&a, 1, "nospace")?;
    Ok(Value::Str(
        text(&a[0]).chars().filter(|c| !c.is_whitespace()).collect(),
    ))
}

fn split_list(a: Vec<Value>) -> Result<Value, String> {
    want(&a, 2, "splitList")?;
    let sep = text(&a[0]);
    Ok(Value::List(
        text(&a[1])
            .split(sep.as_str())
            .map(|p| Value::Str(p.to_string()))
            .collect(),
    ))
}

fn join(a: Vec<Value>) -> Result<Value, String> {
    want(&a, 2, "join")?;
    let items = match &a[1] {
        Value::List(items) => items.iter().map(text).collect::<Vec<_>>(),
        other => vec![text(other)],
    };
    Ok(Value::Str(items.join(&text(&a[0]))))
}

fn list(a: Vec<Value>) -> Result<Value, String> {
    Ok(Value::List(a))
}

fn dict(a: Vec<Value>) -> Result<Value, String> {
    let mut m = BTreeMap::new();
    for pair in a.chunks(2) {
        m.insert(
            text(&pair[0]),
            pair.get(1).cloned().unwrap_or(Value::Str(String::new())),
        );
    }
    Ok(Value::Map(m))
}

fn get(a: Vec<Value>) -> Result<Value, String> {
    want(&a, 2, "get")?;
    match &a[0] {
        Value::Map(m) => Ok(m
            .get(&text(&a[1]))
            .cloned()
            .unwrap_or(Value::Str(String::new()))),
        _ => Ok(Value::Str(String::new())),
    }
}

fn has_key(a: Vec<Value>) -> Result<Value, String> {
    want(&a, 2, "hasKey")?;
    Ok(Value::Bool(
        matches!(&a[0], Value::Map(m) if m.contains_key(&text(&a[1]))),
    ))
}

fn keys(a: Vec<Value>) -> Result<Value, String> {
    let mut out = Vec::new();
    for v in a {
        if let Value::Map(m) = v {
            out.extend(m.into_keys().map(Value::Str));
        }
    }
    Ok(Value::List(out))
}

fn first(a: Vec<Value>) -> Result<Value, String> {
    want(&a, 1, "first")?;
    Ok(match &a[0] {
        Value::List(l) => l.first().cloned().unwrap_or(Value::Null),
        _ => Value::Null,
    })
}

fn last(a: Vec<Value>) -> Result<Value, String> {
    want(&a, 1, "last")?;
    Ok(match &a[0] {
        Value::List(l) => l.last().cloned().unwrap_or(Value::Null),
        _ => Value::Null,
    })
}

fn to_string(a: Vec<Value>) -> Result<Value, String> {
    want(&a, 1, "toString")?;
    Ok(Value::Str(text(&a[0])))
}

/// A template value as JSON.
pub fn json_of(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => (*b).into(),
        Value::Int(i) => (*i).into(),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        Value::Str(s) => s.clone().into(),
        Value::List(l) => l.iter().map(json_of).collect(),
        Value::Map(m) => m.iter().map(|(k, v)| (k.clone(), json_of(v))).collect(),
        Value::Object { fields, .. } => fields
            .iter()
            .map(|(k, v)| (k.clone(), json_of(v)))
            .collect(),
        Value::Pairs(p) => p.iter().map(|(k, v)| (text(k), json_of(v))).collect(),
    }
}

fn to_json(a: Vec<Value>) -> Result<Value, String> {
    want(&a, 1, "toJson")?;
    Ok(Value::Str(json_of(&a[0]).to_string()))
}

fn to_pretty_json(a: Vec<Value>) -> Result<Value, String> {
    want(&a, 1, "toPrettyJson")?;
    Ok(Value::Str(
        serde_json::to_string_pretty(&json_of(&a[0])).unwrap_or_default(),
    ))
}

fn from_json(a: Vec<Value>) -> Result<Value, String> {
    want(&a, 1, "fromJson")?;
    Ok(serde_json::from_str::<serde_json::Value>(&text(&a[0]))
        .map(Value::from)
        .unwrap_or(Value::Map(BTreeMap::new())))
}

fn to_yaml(a: Vec<Value>) -> Result<Value, String> {
    want(&a, 1, "toYaml")?;
    let y = serde_saphyr::to_string(&json_of(&a[0])).map_err(|e| e.to_string())?;
    Ok(Value::Str(y.trim_end_matches('\n').to_string()))
}

fn from_yaml(a: Vec<Value>) -> Result<Value, String> {
    want(&a, 1, "fromYaml")?;
    let v: serde_json::Value = serde_saphyr::from_str(&text(&a[0])).map_err(|e| e.to_string())?;
    if !v.is_object() {
        return Err("fromYaml: not a map".into());
    }
    Ok(Value::from(v))
}

fn from_yaml_array(a: Vec<Value>) -> Result<Value, String> {
    want(&a, 1, "fromYamlArray")?;
    let v: serde_json::Value = serde_saphyr::from_str(&text(&a[0])).map_err(|e| e.to_string())?;
    if !v.is_array() {
        return Err("fromYamlArray: not a list".into());
    }
    Ok(Value::from(v))
}

fn b64enc(a: Vec<Value>) -> Result<Value, String> {
    want(&a, 1, "b64enc")?;
    Ok(Value::Str(
        base64::engine::general_purpose::STANDARD.encode(text(&a[0])),
    ))
}

fn b64dec(a: Vec<Value>) -> Result<Value, String> {
    want(&a, 1, "b64dec")?;
    Ok(Value::Str(
        base64::engine::general_purpose::STANDARD
            .decode(text(&a[0]))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| e.to_string()),
    ))
}

fn sha256sum(a: Vec<Value>) -> Result<Value, String> {
    want(&a, 1, "sha256sum")?;
    Ok(Value::Str(
        Sha256::digest(text(&a[0]).as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    ))
}

fn re(pattern: &Value) -> Result<regex::Regex, String> {
    regex::Regex::new(&text(pattern)).map_err(|e| e.to_string())
}

fn regex_match(a: Vec<Value>) -> Result<Value, String> {
    want(&a, 2, "regexMatch")?;
    Ok(Value::Bool(re(&a[0])?.is_match(&text(&a[1]))))
}

fn regex_replace_all(a: Vec<Value>) -> Result<Value, String> {
    want(&a, 3, "regexReplaceAll")?;
    Ok(Value::Str(
        re(&a[0])?
            .replace_all(&text(&a[2]), text(&a[1]).as_str())
            .into_owned(),
    ))
}

fn regex_find(a: Vec<Value>) -> Result<Value, String> {
    want(&a, 2, "regexFind")?;
    Ok(Value::Str(
        re(&a[0])?
            .find(&text(&a[1]))
            .map(|m| m.as_str().to_string())
            .unwrap_or_default(),
    ))
}

fn arith(a: &[Value], name: &str, f: fn(i64, i64) -> Option<i64>) -> Result<Value, String> {
    want(a, 2, name)?;
    f(num(&a[0])?, num(&a[1])?)
        .map(Value::Int)
        .ok_or_else(|| format!("{name}: overflow or division by zero"))
}

fn add(a: Vec<Value>) -> Result<Value, String> {
    let mut sum = 0i64;
    for v in &a {
        sum = sum.checked_add(num(v)?).ok_or("add: overflow")?;
    }
    Ok(Value::Int(sum))
}

fn sub(a: Vec<Value>) -> Result<Value, String> {
    arith(&a, "sub", i64::checked_sub)
}

fn mul(a: Vec<Value>) -> Result<Value, String> {
    let mut p = 1i64;
    for v in &a {
        p = p.checked_mul(num(v)?).ok_or("mul: overflow")?;
    }
    Ok(Value::Int(p))
}

fn div(a: Vec<Value>) -> Result<Value, String> {
    arith(&a, "div", i64::checked_div)
}

fn modulo(a: Vec<Value>) -> Result<Value, String> {
    arith(&a, "mod", i64::checked_rem)
}

fn max(a: Vec<Value>) -> Result<Value, String> {
    let mut it = a.iter().map(num);
    let mut m = it.next().transpose()?.unwrap_or(0);
    for v in it {
        m = m.max(v?);
    }
    Ok(Value::Int(m))
}

fn min(a: Vec<Value>) -> Result<Value, String> {
    let mut it = a.iter().map(num);
    let mut m = it.next().transpose()?.unwrap_or(0);
    for v in it {
        m = m.min(v?);
    }
    Ok(Value::Int(m))
}

fn int(a: Vec<Value>) -> Result<Value, String> {
    want(&a, 1, "int")?;
    Ok(Value::Int(num(&a[0])?))
}

fn atoi(a: Vec<Value>) -> Result<Value, String> {
    want(&a, 1, "atoi")?;
    Ok(Value::Int(text(&a[0]).trim().parse().unwrap_or(0)))
}

/// Argo CD's `SanitizeName`: lower case, every character outside `[-a-z0-9.]` becomes `-`,
/// at most 253 bytes, `-` and `.` trimmed from both ends.
pub fn sanitize_name(s: &str) -> String {
    let mapped: String = s
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cut = &mapped[..mapped.len().min(253)];
    cut.trim_matches(|c| c == '-' || c == '.').to_string()
}

fn normalize(a: Vec<Value>) -> Result<Value, String> {
    want(&a, 1, "normalize")?;
    Ok(Value::Str(sanitize_name(&text(&a[0]))))
}

/// gosimple/slug's `Make` on an already sanitized name: `.`/`_` runs become `-`, `-` runs
/// collapse, the ends are trimmed, then cut to `max` (at the last `-` before it when `smart`).
pub fn slug(name: &str, max: usize, smart: bool) -> String {
    let mut s = String::new();
    for c in name.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '-'
        };
        if c == '-' && s.ends_with('-') {
            continue;
        }
        s.push(c);
    }
    let mut s = s.trim_matches(|c| c == '-' || c == '_').to_string();
    if max > 0 && s.len() > max {
        s = if smart {
            match s[..=max.min(s.len() - 1)].rfind('-') {
                Some(i) if i > 0 => s[..i].to_string(),
                _ => s[..max].to_string(),
            }
        } else {
            s[..max].to_string()
        };
    }
    s
}

/// `slugify [maxSize] [smartTruncate] name` (defaults 50 and true).
fn slugify(a: Vec<Value>) -> Result<Value, String> {
    let Some((name, rest)) = a.split_last() else {
        return Err("slugify needs a name".into());
    };
    let max = match rest.first() {
        Some(v) => usize::try_from(num(v)?).map_err(|_| "slugify: negative size")?,
        None => 50,
    };
    let smart = rest.get(1).map(crate::truth).unwrap_or(true);
    Ok(Value::Str(slug(&sanitize_name(&text(name)), max, smart)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Options, render_with};

    fn r(t: &str, data: serde_json::Value) -> Result<String, String> {
        render_with(
            t,
            &Value::from(data),
            &Options {
                funcs: FUNCS,
                missing_key_error: false,
            },
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn argo_cds_name_helpers() {
        assert_eq!(sanitize_name("My_Cluster."), "my-cluster");
        assert_eq!(sanitize_name("."), "");
        assert_eq!(slug("feature.new-thing", 50, true), "feature-new-thing");
        assert_eq!(slug("a-very-long-branch-name", 12, true), "a-very-long");
        assert_eq!(slug("abcdefghij", 4, true), "abcd");
        let data = serde_json::json!({"branch": "Feature/JIRA_123 Add.Thing"});
        assert_eq!(
            r("{{ .branch | normalize }}", data.clone()).unwrap(),
            "feature-jira-123-add.thing"
        );
        assert_eq!(
            r("{{ .branch | slugify }}", data.clone()).unwrap(),
            "feature-jira-123-add-thing"
        );
        assert_eq!(r("{{ slugify 11 .branch }}", data).unwrap(), "feature");
    }

    #[test]
    fn sprig_basics_as_applicationsets_use_them() {
        let data = serde_json::json!({"a": "", "b": "x", "n": 3, "m": {"k": "v"}, "l": ["p", "q"]});
        assert_eq!(
            r(r#"{{ .a | default "dflt" }}"#, data.clone()).unwrap(),
            "dflt"
        );
        assert_eq!(
            r(r#"{{ .b | default "dflt" }}"#, data.clone()).unwrap(),
            "x"
        );
        assert_eq!(r(r#"{{ .b | quote }}"#, data.clone()).unwrap(), "\"x\"");
        assert_eq!(r(r#"{{ join "," .l }}"#, data.clone()).unwrap(), "p,q");
        assert_eq!(
            r(r#"{{ .m | toJson }}"#, data.clone()).unwrap(),
            r#"{"k":"v"}"#
        );
        assert_eq!(r(r#"{{ .m | toYaml }}"#, data.clone()).unwrap(), "k: v");
        assert_eq!(r(r#"{{ add .n 2 }}"#, data.clone()).unwrap(), "5");
        assert_eq!(
            r(r#"{{ ternary "on" "off" true }}"#, data.clone()).unwrap(),
            "on"
        );
        assert_eq!(
            r(r#"{{ (fromYaml "a: 1").a }}"#, data.clone()).unwrap(),
            "1"
        );
        let e = r("{{ env \"HOME\" }}", data).unwrap_err();
        assert!(e.contains("function \"env\" not defined"), "{e}");
    }

    #[test]
    fn missing_keys_are_errors_when_asked() {
        let data = Value::from(serde_json::json!({"a": "1"}));
        let strict = Options {
            funcs: FUNCS,
            missing_key_error: true,
        };
        let e = render_with("{{ .doesnotexist }}", &data, &strict)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("map has no entry for key \"doesnotexist\""),
            "{e}"
        );
        assert_eq!(
            render_with("{{ .doesnotexist }}", &data, &Options::default()).unwrap(),
            "<no value>"
        );
    }
}

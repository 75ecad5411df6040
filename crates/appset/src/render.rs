//! Templates: Argo CD's fasttemplate form (`{{param}}`, unknown ones left as written) and Go
//! templates (`goTemplate: true`, Sprig, `missingkey=error`), applied to every string and map
//! key of the Application template; then `templatePatch`, the finalizer rule and the checks
//! that make a generated Application one the controller can run.

use crate::generate::Generated;
use crate::{Error, Params, RESOURCES_FINALIZER};
use ferry_model::appset::ApplicationSet;
use serde_json::{Value, json};

/// How strings are templated.
#[derive(Clone, Debug, Default)]
pub struct Mode {
    pub go: bool,
    pub missing_key_error: bool,
}

impl Mode {
    pub fn of(set: &ApplicationSet) -> Result<Mode, Error> {
        let mut mode = Mode {
            go: set.spec.go_template,
            missing_key_error: false,
        };
        for o in &set.spec.go_template_options {
            match o.as_str() {
                "missingkey=error" => mode.missing_key_error = true,
                "missingkey=default" | "missingkey=invalid" | "missingkey=zero" => {}
                other => {
                    return Err(Error::Render(format!(
                        "goTemplateOptions: unknown option {other:?} (missingkey=error, missingkey=default, missingkey=zero)"
                    )));
                }
            }
        }
        Ok(mode)
    }
}

/// fasttemplate: `{{ key }}` with a string value is replaced; anything else stays as written.
fn fast(s: &str, params: &Params) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            break;
        };
        out.push_str(&rest[..start]);
        let tag = &rest[start + 2..start + 2 + len];
        match params.get(tag.trim()).and_then(Value::as_str) {
            Some(v) if !tag.trim().is_empty() => out.push_str(v),
            _ => {
                out.push_str("{{");
                out.push_str(tag);
                out.push_str("}}");
            }
        }
        rest = &rest[start + 2 + len + 2..];
    }
    out.push_str(rest);
    out
}

/// One string templated with `params`.
pub fn replace(s: &str, params: &Params, mode: &Mode) -> Result<String, String> {
    if !mode.go {
        return Ok(fast(s, params));
    }
    if !s.contains("{{") {
        return Ok(s.to_string());
    }
    let data = ferry_gotemplate::Value::from(Value::Object(params.clone()));
    let opts = ferry_gotemplate::Options {
        funcs: ferry_gotemplate::sprig::FUNCS,
        missing_key_error: mode.missing_key_error,
    };
    ferry_gotemplate::render_with(s, &data, &opts)
        .map_err(|e| format!("failed to execute go template {s}: {e}"))
}

/// Every string and map key of `v` templated.
pub fn render_value(v: &Value, params: &Params, mode: &Mode) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => Value::String(replace(s, params, mode)?),
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| render_value(x, params, mode))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => {
            let mut out = serde_json::Map::new();
            for (k, x) in m {
                out.insert(replace(k, params, mode)?, render_value(x, params, mode)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

/// A generated Application, or why it cannot be one.
#[derive(Clone, Debug)]
pub struct Rendered {
    pub name: String,
    pub app: Value,
}

/// Whether `name` is one the API server takes for an object.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

/// The Applications of `generated`, in order. Any failure fails the whole set (nothing is
/// then created, changed or deleted): a template error, an invalid Application, a field Ferry
/// does not act on, or two parameter sets producing one name.
pub fn render_all(set: &ApplicationSet, generated: &[Generated]) -> Result<Vec<Rendered>, Error> {
    let mode = Mode::of(set)?;
    let ns = set.metadata.namespace.clone().unwrap_or_default();
    let preserve = set
        .spec
        .sync_policy
        .as_ref()
        .is_some_and(|p| p.preserve_resources_on_deletion);
    let mut out: Vec<Rendered> = Vec::new();
    for g in generated {
        let t = serde_json::to_value(&g.template).unwrap_or_default();
        let t = render_value(&t, &g.params, &mode).map_err(Error::Render)?;
        let meta = &t["metadata"];
        let mut app = json!({
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {
                "name": meta["name"],
                "namespace": ns,
            },
            "spec": t["spec"],
        });
        for k in ["labels", "annotations", "finalizers"] {
            if let Some(v) = meta.get(k).filter(|v| !v.is_null()) {
                app["metadata"][k] = v.clone();
            }
        }
        let has_finalizers = app["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if !preserve && !has_finalizers && meta.get("finalizers").is_none_or(Value::is_null) {
            app["metadata"]["finalizers"] = json!([RESOURCES_FINALIZER]);
        }
        if let Some(patch) = set.spec.template_patch.as_deref() {
            let text = replace(patch, &g.params, &mode).map_err(|e| {
                Error::Render(format!("error replacing values in templatePatch: {e}"))
            })?;
            let patch: Value = serde_saphyr::from_str(&text)
                .map_err(|e| Error::Render(format!("invalid templatePatch: {e}")))?;
            if !patch.is_object() {
                return Err(Error::Render("invalid templatePatch: not a map".into()));
            }
            let project = app["spec"]["project"].clone();
            json_patch::merge(&mut app, &patch);
            // The patch cannot move an app to another project, as in Argo CD.
            app["spec"]["project"] = project;
            app["metadata"]["namespace"] = json!(ns);
        }
        let name = app["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if !valid_name(&name) {
            return Err(Error::Render(format!(
                "the template makes an Application named {name:?} (metadata.name): lower-case letters, digits, '-' and '.'"
            )));
        }
        if app["spec"]["project"].as_str().is_none_or(str::is_empty) {
            app["spec"]["project"] = json!("default");
        }
        let parsed: ferry_model::Application =
            serde_json::from_value(app.clone()).map_err(|e| {
                Error::Render(format!(
                    "the template makes an invalid Application {name}: {e}"
                ))
            })?;
        let unsupported = parsed.unsupported_fields();
        if !unsupported.is_empty() {
            return Err(Error::Render(format!(
                "the template makes Application {name} with fields Ferry does not act on: {}",
                unsupported.join(", ")
            )));
        }
        if out.iter().any(|r| r.name == name) {
            return Err(Error::Render(format!(
                "ApplicationSet {} contains applications with duplicate name: {name}",
                set.metadata.name.clone().unwrap_or_default()
            )));
        }
        out.push(Rendered { name, app });
    }
    Ok(out)
}

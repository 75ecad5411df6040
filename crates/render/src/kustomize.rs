//! `kustomize build`, after applying the Application's `kustomize:` options
//! to a copy of the kustomization the way `kustomize edit` would.

use crate::envsubst::envsubst;
use crate::exec::{self, Cmd};
use crate::{Ctx, RenderError, fsutil, manifest};
use ferry_model::KustomizeSource;
use serde_json::{Map, Value};
use std::fs;
use std::path::{Path, PathBuf};

const KUSTOMIZATION_NAMES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

pub(crate) fn kustomization_file(dir: &Path) -> Option<PathBuf> {
    KUSTOMIZATION_NAMES
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

pub(crate) fn render(ctx: &Ctx) -> Result<Vec<Value>, RenderError> {
    let tmp = tempfile::Builder::new()
        .prefix("ferry-kustomize-")
        .tempdir()
        .map_err(|e| RenderError::io("creating a temporary directory", e))?;
    let home = tmp.path().join("home");
    fs::create_dir(&home).map_err(|e| RenderError::io_path("creating", &home, e))?;

    let opts = ctx
        .source()
        .kustomize
        .as_ref()
        .filter(|k| !crate::kustomize_is_zero(k));
    if let Some(wanted) = opts
        .and_then(|o| o.version.as_deref())
        .filter(|v| !v.trim().is_empty())
    {
        check_version(ctx, wanted)?;
    }
    let build_dir = match opts {
        None => ctx.app.clone(),
        Some(opts) => {
            let copy = tmp.path().join("repo");
            fsutil::copy_tree(&ctx.root, &copy, true)?;
            let dir = copy.join(&ctx.app_rel);
            edit(&dir, opts, &ctx.build_env, &ctx.app_display())?;
            dir
        }
    };

    let mut cmd = Cmd::new("kustomize build", &ctx.input.tools.kustomize, &build_dir);
    cmd.arg("build").arg(&build_dir);
    cmd.env("PATH", exec::search_path())
        .env("HOME", &home)
        .env("KUBECONFIG", home.join("kubeconfig"));
    for (k, v) in &ctx.build_env {
        cmd.env(k, v);
    }
    let out =
        exec::run_checked(&cmd, ctx.input.timeout).map_err(|e| in_app(e, &ctx.app_display()))?;
    let text = String::from_utf8_lossy(&out);
    manifest::parse_manifests(
        &text,
        &format!("output of `kustomize build {}`", ctx.app_display()),
    )
}

/// Names the app path in a tool failure, since kustomize's own messages
/// mention only paths inside the temporary copy.
fn in_app(e: RenderError, app: &str) -> RenderError {
    match e {
        RenderError::Tool { tool, message } => RenderError::Tool {
            tool: format!("{tool} {app}"),
            message,
        },
        RenderError::Timeout { tool, secs } => RenderError::Timeout {
            tool: format!("{tool} {app}"),
            secs,
        },
        e => e,
    }
}

/// Applies the options to the kustomization file in `dir` (a copy).
fn edit(
    dir: &Path,
    opts: &KustomizeSource,
    env: &[(String, String)],
    app: &str,
) -> Result<(), RenderError> {
    let bad = |message: String| RenderError::Kustomization {
        path: app.to_string(),
        message,
    };
    let Some(file) = kustomization_file(dir) else {
        return Err(bad(
            "no kustomization.yaml, kustomization.yml or Kustomization to apply the kustomize options to".into(),
        ));
    };
    let text = fs::read_to_string(&file)
        .map_err(|e| RenderError::io(format!("reading the kustomization in {app}"), e))?;
    let doc = manifest::parse_single(&text).map_err(bad)?;
    let mut k = match doc {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        _ => return Err(bad("the kustomization is not a mapping".into())),
    };
    apply(&mut k, opts, env, dir).map_err(bad)?;
    let json = serde_json::to_string_pretty(&Value::Object(k))
        .map_err(|e| bad(format!("cannot serialise the edited kustomization: {e}")))?;
    // JSON is YAML, so kustomize reads this back as it is.
    fs::write(&file, json).map_err(|e| RenderError::io_path("writing", &file, e))?;
    Ok(())
}

/// The `kustomize edit` equivalents Argo CD runs, in Argo CD's order.
fn apply(
    k: &mut Map<String, Value>,
    opts: &KustomizeSource,
    env: &[(String, String)],
    dir: &Path,
) -> Result<(), String> {
    if let Some(p) = opts.name_prefix.as_deref().filter(|s| !s.is_empty()) {
        k.insert("namePrefix".into(), p.into());
    }
    if let Some(s) = opts.name_suffix.as_deref().filter(|s| !s.is_empty()) {
        k.insert("nameSuffix".into(), s.into());
    }
    if !opts.images.is_empty() {
        let images = list_field(k, "images")?;
        for raw in &opts.images {
            // Argo CD substitutes build variables so `...:${ARGOCD_APP_REVISION}` works.
            set_image(images, &parse_image(&envsubst(raw, env))?);
        }
        images.sort_by(|a, b| {
            let n = |v: &Value| {
                v.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            n(a).cmp(&n(b))
        });
    }
    if !opts.replicas.is_empty() {
        let list = list_field(k, "replicas")?;
        for r in &opts.replicas {
            let (name, count) = parse_replica(r)?;
            match list
                .iter_mut()
                .find(|e| e.get("name").and_then(Value::as_str) == Some(name.as_str()))
            {
                Some(e) => e["count"] = count.into(),
                None => list.push(serde_json::json!({"name": name, "count": count})),
            }
        }
    }
    // `kustomize edit add label|annotation [--force] [--without-selector]`:
    // a key the kustomization already sets is an error unless forced.
    if !opts.common_labels.is_empty() {
        if opts.label_without_selector {
            let mut pairs = Map::new();
            for (key, value) in &opts.common_labels {
                pairs.insert(key.clone(), value.clone().into());
            }
            let mut entry = Map::new();
            entry.insert("pairs".into(), Value::Object(pairs));
            entry.insert("includeSelectors".into(), false.into());
            if opts.label_include_templates {
                entry.insert("includeTemplates".into(), true.into());
            }
            list_field(k, "labels")?.push(Value::Object(entry));
        } else {
            add_pairs(
                map_field(k, "commonLabels")?,
                "label",
                opts.common_labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone())),
                opts.force_common_labels,
            )?;
        }
    }
    if !opts.common_annotations.is_empty() {
        let values = opts.common_annotations.iter().map(|(key, v)| {
            let v = if opts.common_annotations_envsubst {
                envsubst(v, env)
            } else {
                v.clone()
            };
            (key.clone(), v)
        });
        add_pairs(
            map_field(k, "commonAnnotations")?,
            "annotation",
            values,
            opts.force_common_annotations,
        )?;
    }
    if let Some(ns) = opts.namespace.as_deref().filter(|s| !s.is_empty()) {
        k.insert("namespace".into(), ns.into());
    }
    if !opts.patches.is_empty() {
        list_field(k, "patches")?.extend(opts.patches.iter().cloned());
    }
    if !opts.components.is_empty() {
        let list = list_field(k, "components")?;
        for c in &opts.components {
            let local = !c.contains("://") && !c.starts_with("git@");
            if opts.ignore_missing_components && local && !dir.join(c).exists() {
                continue;
            }
            if !list.iter().any(|e| e.as_str() == Some(c.as_str())) {
                list.push(c.clone().into());
            }
        }
    }
    Ok(())
}

fn add_pairs(
    m: &mut Map<String, Value>,
    kind: &str,
    pairs: impl Iterator<Item = (String, String)>,
    force: bool,
) -> Result<(), String> {
    for (key, value) in pairs {
        if !force && m.contains_key(&key) {
            return Err(format!(
                "{kind} {key} already in kustomization file (set forceCommon{}s to overwrite it)",
                if kind == "label" {
                    "Label"
                } else {
                    "Annotation"
                }
            ));
        }
        m.insert(key, value.into());
    }
    Ok(())
}

/// `kustomize.version` must name the kustomize Ferry runs.
fn check_version(ctx: &Ctx, wanted: &str) -> Result<(), RenderError> {
    let mut cmd = Cmd::new("kustomize version", &ctx.input.tools.kustomize, &ctx.app);
    cmd.arg("version");
    cmd.env("PATH", exec::search_path());
    let out = exec::run_checked(&cmd, ctx.input.timeout)?;
    let text = String::from_utf8_lossy(&out);
    let have = text
        .split(|c: char| c.is_whitespace() || c == ':')
        .find(|w| {
            w.strip_prefix('v').is_some_and(|rest| {
                rest.split('.').count() == 3 && rest.starts_with(|c: char| c.is_ascii_digit())
            })
        })
        .unwrap_or("unknown")
        .to_string();
    let norm = |v: &str| v.trim().trim_start_matches('v').to_string();
    if norm(wanted) == norm(&have) {
        Ok(())
    } else {
        Err(RenderError::InvalidSource(format!(
            "kustomize.version {wanted:?} is not available: Ferry builds with kustomize {have}"
        )))
    }
}

fn list_field<'m>(
    k: &'m mut Map<String, Value>,
    field: &str,
) -> Result<&'m mut Vec<Value>, String> {
    let v = k.entry(field).or_insert_with(|| Value::Array(Vec::new()));
    if v.is_null() {
        *v = Value::Array(Vec::new());
    }
    v.as_array_mut()
        .ok_or_else(|| format!("`{field}` is not a list"))
}

fn map_field<'m>(
    k: &'m mut Map<String, Value>,
    field: &str,
) -> Result<&'m mut Map<String, Value>, String> {
    let v = k.entry(field).or_insert_with(|| Value::Object(Map::new()));
    if v.is_null() {
        *v = Value::Object(Map::new());
    }
    v.as_object_mut()
        .ok_or_else(|| format!("`{field}` is not a mapping"))
}

#[derive(Debug, Default, PartialEq)]
struct Image {
    name: String,
    new_name: Option<String>,
    new_tag: Option<String>,
    digest: Option<String>,
}

/// Argo CD / `kustomize edit set image` syntax: `name=newname:tag`,
/// `name=newname@digest`, `name:tag`, `name@digest`, `name=newname`.
fn parse_image(arg: &str) -> Result<Image, String> {
    let invalid = || format!("invalid image override {arg:?}");
    let (name, target, renamed) = match arg.split_once('=') {
        Some((n, t)) => (n.to_string(), t, true),
        None => (String::new(), arg, false),
    };
    let (target_name, tag, digest) = split_reference(target);
    if target_name.is_empty() {
        return Err(invalid());
    }
    let img = if renamed {
        if name.is_empty() {
            return Err(invalid());
        }
        Image {
            name,
            new_name: Some(target_name),
            new_tag: tag,
            digest,
        }
    } else {
        Image {
            name: target_name,
            new_name: None,
            new_tag: tag,
            digest,
        }
    };
    Ok(img)
}

/// Splits `repo[:tag][@digest]`. A `:` only starts a tag when what follows
/// looks like one, so `registry:5000/app` keeps its port.
fn split_reference(s: &str) -> (String, Option<String>, Option<String>) {
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d.to_string())),
        None => (s, None),
    };
    if let Some((n, t)) = rest.rsplit_once(':') {
        let tag_like = t == "*"
            || t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if tag_like && !n.is_empty() {
            return (n.to_string(), Some(t.to_string()), digest);
        }
    }
    (rest.to_string(), None, digest)
}

fn set_image(images: &mut Vec<Value>, img: &Image) {
    let idx = match images.iter().position(|e| {
        e.is_object() && e.get("name").and_then(Value::as_str) == Some(img.name.as_str())
    }) {
        Some(i) => i,
        None => {
            images.push(serde_json::json!({"name": img.name}));
            images.len() - 1
        }
    };
    let Some(m) = images[idx].as_object_mut() else {
        return;
    };
    if let Some(n) = &img.new_name {
        m.insert("newName".into(), n.clone().into());
    }
    // `*` keeps whatever tag the kustomization already sets.
    match (img.new_tag.as_deref().filter(|t| *t != "*"), &img.digest) {
        (Some(t), Some(d)) => {
            m.insert("newTag".into(), t.into());
            m.insert("digest".into(), d.clone().into());
        }
        (Some(t), None) => {
            m.insert("newTag".into(), t.into());
            m.remove("digest");
        }
        (None, Some(d)) => {
            m.insert("digest".into(), d.clone().into());
            m.remove("newTag");
        }
        (None, None) => {}
    }
}

fn parse_replica(r: &Value) -> Result<(String, i64), String> {
    let name = r
        .get("name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("replicas entry {r} has no name"))?;
    let count = match r.get("count") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
    .filter(|c| *c >= 0)
    .ok_or_else(|| format!("replicas entry for {name:?} needs a non-negative integer count"))?;
    Ok((name.to_string(), count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn img(name: &str, new_name: Option<&str>, tag: Option<&str>, digest: Option<&str>) -> Image {
        Image {
            name: name.into(),
            new_name: new_name.map(Into::into),
            new_tag: tag.map(Into::into),
            digest: digest.map(Into::into),
        }
    }

    #[test]
    fn image_syntax() {
        assert_eq!(
            parse_image("nginx=my/nginx:1.2").unwrap(),
            img("nginx", Some("my/nginx"), Some("1.2"), None)
        );
        assert_eq!(
            parse_image("nginx:1.2").unwrap(),
            img("nginx", None, Some("1.2"), None)
        );
        assert_eq!(
            parse_image("nginx@sha256:abc").unwrap(),
            img("nginx", None, None, Some("sha256:abc"))
        );
        assert_eq!(
            parse_image("nginx=my/nginx").unwrap(),
            img("nginx", Some("my/nginx"), None, None)
        );
        assert_eq!(
            parse_image("app=registry:5000/team/app").unwrap(),
            img("app", Some("registry:5000/team/app"), None, None)
        );
        assert_eq!(
            parse_image("registry:5000/app:v1").unwrap(),
            img("registry:5000/app", None, Some("v1"), None)
        );
        assert!(parse_image("=x").is_err());
        assert!(parse_image("").is_err());
    }

    #[test]
    fn set_image_updates_existing_entries() {
        let mut images = vec![json!({"name": "nginx", "newTag": "1.0", "digest": "sha256:old"})];
        set_image(
            &mut images,
            &img("nginx", Some("mirror/nginx"), Some("2.0"), None),
        );
        set_image(&mut images, &img("redis", None, None, Some("sha256:r")));
        assert_eq!(
            images,
            vec![
                json!({"name": "nginx", "newName": "mirror/nginx", "newTag": "2.0"}),
                json!({"name": "redis", "digest": "sha256:r"})
            ]
        );
    }

    #[test]
    fn apply_edits_like_kustomize_edit() {
        let mut k = json!({"resources": ["../base"], "commonLabels": {"a": "1"}, "replicas": [{"name": "web", "count": 1}]})
            .as_object()
            .cloned()
            .unwrap();
        let opts = KustomizeSource {
            images: vec!["nginx:${ARGOCD_APP_REVISION}".into()],
            name_prefix: Some("p-".into()),
            namespace: Some("ns".into()),
            common_labels: [
                ("a".to_string(), "2".to_string()),
                ("b".to_string(), "3".to_string()),
            ]
            .into(),
            replicas: vec![
                json!({"name": "web", "count": "3"}),
                json!({"name": "api", "count": 2}),
            ],
            components: vec!["../comp".into()],
            patches: vec![
                json!({"patch": "- op: remove\n  path: /x", "target": {"kind": "Deployment"}}),
            ],
            force_common_labels: true,
            ..Default::default()
        };
        let env = [("ARGOCD_APP_REVISION".to_string(), "abc".to_string())];
        let dir = Path::new("/nonexistent");
        // Without forceCommonLabels a label the kustomization sets is an error, as in Argo CD.
        let unforced = KustomizeSource {
            force_common_labels: false,
            ..opts.clone()
        };
        let err = apply(&mut k.clone(), &unforced, &env, dir).unwrap_err();
        assert!(
            err.starts_with("label a already in kustomization file"),
            "{err}"
        );
        apply(&mut k, &opts, &env, dir).unwrap();
        let k = Value::Object(k);
        assert_eq!(k["namePrefix"], "p-");
        assert_eq!(k["namespace"], "ns");
        assert_eq!(k["images"], json!([{"name": "nginx", "newTag": "abc"}]));
        assert_eq!(k["commonLabels"], json!({"a": "2", "b": "3"}));
        assert_eq!(
            k["replicas"],
            json!([{"name": "web", "count": 3}, {"name": "api", "count": 2}])
        );
        assert_eq!(k["components"], json!(["../comp"]));
        assert_eq!(k["patches"][0]["target"]["kind"], "Deployment");
        assert_eq!(k["resources"], json!(["../base"]));
    }

    #[test]
    fn labels_without_selector_annotation_envsubst_and_missing_components() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("present")).unwrap();
        let mut k = Map::new();
        let opts = KustomizeSource {
            common_labels: [("team".to_string(), "a".to_string())].into(),
            label_without_selector: true,
            label_include_templates: true,
            common_annotations: [("rev".to_string(), "$ARGOCD_APP_REVISION".to_string())].into(),
            common_annotations_envsubst: true,
            components: vec!["present".into(), "missing".into()],
            ignore_missing_components: true,
            ..Default::default()
        };
        let env = [("ARGOCD_APP_REVISION".to_string(), "abc".to_string())];
        apply(&mut k, &opts, &env, t.path()).unwrap();
        let k = Value::Object(k);
        assert_eq!(
            k["labels"],
            json!([{"pairs": {"team": "a"}, "includeSelectors": false, "includeTemplates": true}])
        );
        assert!(k.get("commonLabels").is_none());
        assert_eq!(k["commonAnnotations"], json!({"rev": "abc"}));
        assert_eq!(k["components"], json!(["present"]));
    }
}

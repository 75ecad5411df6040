//! Generators: list, clusters, git directories and files, matrix and merge, each with its
//! post-selector. Parameter names and shapes are Argo CD's, in both template modes.

use crate::render::{Mode, replace};
use crate::{Error, Params};
use ferry_gotemplate::sprig::sanitize_name;
use ferry_model::appset::{
    AppTemplate, ClusterGenerator, CombineGenerator, Generator, GitGenerator, ListGenerator,
    PullRequestGenerator,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

pub const IN_CLUSTER_NAME: &str = "in-cluster";
pub const IN_CLUSTER_SERVER: &str = "https://kubernetes.default.svc";
/// Argo CD's default requeue for git generators.
pub const GIT_REQUEUE: Duration = Duration::from_secs(180);
/// ... and for pull request generators.
pub const PULL_REQUEST_REQUEUE: Duration = Duration::from_secs(1800);

/// An open pull request, as the forge reports it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PullRequest {
    pub number: u64,
    pub title: String,
    pub branch: String,
    pub target_branch: String,
    pub head_sha: String,
    pub labels: Vec<String>,
    pub author: String,
}

/// A cluster Secret (`argocd.argoproj.io/secret-type: cluster`).
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    pub name: String,
    pub server: String,
    pub project: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// A repository at one revision: its directories and files, relative, `/`-separated.
pub trait Tree {
    fn dirs(&self) -> Vec<String>;
    fn files(&self) -> Vec<String>;
    fn read(&self, path: &str) -> Result<Vec<u8>, String>;
}

/// What generators read, fetched by the caller.
pub trait Inputs {
    /// Cluster Secrets (the local cluster is added by the generator).
    fn clusters(&self) -> Vec<Cluster>;
    /// `Err(NeedRepo)` when not fetched yet.
    fn repo(&self, url: &str, revision: &str) -> Result<&dyn Tree, Error>;
    /// The open pull requests of a generator's repository; `Err(NeedPullRequests)` when not
    /// fetched yet.
    fn pull_requests(&self, g: &PullRequestGenerator) -> Result<Vec<PullRequest>, Error> {
        Err(Error::NeedPullRequests(Box::new(g.clone())))
    }
}

/// One parameter set, with the template it renders (the generator's own merged over the set's).
#[derive(Clone, Debug)]
pub struct Generated {
    pub params: Params,
    pub template: AppTemplate,
}

/// Every parameter set of the set's generators, in order, and when to look again (the
/// shortest requeue any generator asks for).
pub fn generate(
    generators: &[Generator],
    set_template: &AppTemplate,
    mode: &Mode,
    inputs: &dyn Inputs,
) -> Result<(Vec<Generated>, Option<Duration>), Error> {
    let mut out = Vec::new();
    let mut requeue: Option<Duration> = None;
    for g in generators {
        let own = own_template(g);
        let template = match own {
            Some(t) => merge_templates(t, set_template),
            None => set_template.clone(),
        };
        let (sets, again) = params_of(g, mode, inputs, 0)?;
        requeue = min_requeue(requeue, again);
        out.extend(sets.into_iter().map(|params| Generated {
            params,
            template: template.clone(),
        }));
    }
    Ok((out, requeue))
}

fn min_requeue(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn own_template(g: &Generator) -> Option<&AppTemplate> {
    g.list
        .as_ref()
        .and_then(|x| x.template.as_ref())
        .or(g.clusters.as_ref().and_then(|x| x.template.as_ref()))
        .or(g.git.as_ref().and_then(|x| x.template.as_ref()))
        .or(g.matrix.as_ref().and_then(|x| x.template.as_ref()))
        .or(g.merge.as_ref().and_then(|x| x.template.as_ref()))
        .or(g.pull_request.as_ref().and_then(|x| x.template.as_ref()))
}

/// The generator's template wins where it sets something; the set's fills the rest.
fn merge_templates(own: &AppTemplate, set: &AppTemplate) -> AppTemplate {
    let mut base = serde_json::to_value(set).unwrap_or_default();
    let mut over = serde_json::to_value(own).unwrap_or_default();
    strip_empty(&mut over);
    json_patch::merge(&mut base, &over);
    serde_json::from_value(base).unwrap_or_else(|_| set.clone())
}

fn strip_empty(v: &mut Value) {
    if let Value::Object(m) = v {
        m.retain(|_, x| {
            strip_empty(x);
            !(x.is_null() || x.as_str() == Some("") || x.as_object().is_some_and(|o| o.is_empty()))
        });
    }
}

/// Which generator an entry holds: exactly one.
fn kind_of(g: &Generator) -> Result<&'static str, Error> {
    let mut kinds = Vec::new();
    for (name, present) in [
        ("list", g.list.is_some()),
        ("clusters", g.clusters.is_some()),
        ("git", g.git.is_some()),
        ("matrix", g.matrix.is_some()),
        ("merge", g.merge.is_some()),
        ("pullRequest", g.pull_request.is_some()),
    ] {
        if present {
            kinds.push(name);
        }
    }
    if !g.unknown.is_empty() {
        let names: Vec<&String> = g.unknown.keys().collect();
        return Err(Error::Generator(format!(
            "generators Ferry does not run: {} (it runs list, clusters, git, matrix, merge and pullRequest)",
            names
                .iter()
                .map(|n| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    match kinds.as_slice() {
        [one] => Ok(one),
        [] => Err(Error::Generator(
            "ApplicationSet is empty: a generator entry names no generator".into(),
        )),
        many => Err(Error::Generator(format!(
            "one generator per entry, found {}",
            many.join(" and ")
        ))),
    }
}

fn params_of(
    g: &Generator,
    mode: &Mode,
    inputs: &dyn Inputs,
    depth: usize,
) -> Result<(Vec<Params>, Option<Duration>), Error> {
    let (sets, requeue) = match kind_of(g)? {
        "list" => (
            list(g.list.as_ref().unwrap_or(&Default::default()), mode)?,
            None,
        ),
        "clusters" => (
            clusters(
                g.clusters.as_ref().unwrap_or(&Default::default()),
                mode,
                inputs,
            )?,
            None,
        ),
        "git" => {
            let git = g.git.as_ref().cloned().unwrap_or_default();
            let again = match git.requeue_after_seconds {
                Some(0) => None,
                Some(s) => Some(Duration::from_secs(s)),
                None => Some(GIT_REQUEUE),
            };
            (git_params(&git, mode, inputs)?, again)
        }
        "matrix" => matrix(
            g.matrix.as_deref().unwrap_or(&Default::default()),
            mode,
            inputs,
            depth,
        )?,
        "pullRequest" => {
            let pr = g.pull_request.clone().unwrap_or_default();
            let again = match pr.requeue_after_seconds {
                Some(0) => None,
                Some(s) => Some(Duration::from_secs(s)),
                None => Some(PULL_REQUEST_REQUEUE),
            };
            (pull_requests(&pr, mode, inputs)?, again)
        }
        _ => merge(
            g.merge.as_deref().unwrap_or(&Default::default()),
            mode,
            inputs,
            depth,
        )?,
    };
    let sets = match &g.selector {
        Some(sel) => {
            let mut kept = Vec::new();
            for p in sets {
                if selector_matches(sel, &flatten_strings(&p))? {
                    kept.push(p);
                }
            }
            kept
        }
        None => sets,
    };
    Ok((sets, requeue))
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

fn list(l: &ListGenerator, mode: &Mode) -> Result<Vec<Params>, Error> {
    let mut elements = l.elements.clone();
    if let Some(y) = l.elements_yaml.as_deref().filter(|y| !y.trim().is_empty()) {
        let more: Vec<Value> = serde_saphyr::from_str(y).map_err(|e| {
            Error::Generator(format!(
                "list generator: elementsYaml is not a YAML list of maps: {e}"
            ))
        })?;
        elements.extend(more);
    }
    let mut out = Vec::new();
    for (i, e) in elements.into_iter().enumerate() {
        let Value::Object(m) = e else {
            return Err(Error::Generator(format!(
                "list generator: element {i} is not a map"
            )));
        };
        if mode.go {
            out.push(m);
            continue;
        }
        let mut p = Params::new();
        for (k, v) in m {
            if k == "values" {
                let Value::Object(values) = v else {
                    return Err(Error::Generator(format!(
                        "list generator: element {i}: values must be a map"
                    )));
                };
                for (vk, vv) in values {
                    let text = scalar_text(&vv).ok_or_else(|| {
                        Error::Generator(format!("list generator: element {i}: values.{vk}: nested objects and arrays need goTemplate: true"))
                    })?;
                    p.insert(format!("values.{vk}"), Value::String(text));
                }
                continue;
            }
            let text = scalar_text(&v).ok_or_else(|| {
                Error::Generator(format!(
                    "list generator: element {i}: {k}: nested objects and arrays are not supported without goTemplate: true"
                ))
            })?;
            p.insert(k, Value::String(text));
        }
        out.push(p);
    }
    Ok(out)
}

fn clusters(c: &ClusterGenerator, mode: &Mode, inputs: &dyn Inputs) -> Result<Vec<Params>, Error> {
    let selecting = c
        .selector
        .match_labels
        .as_ref()
        .is_some_and(|m| !m.is_empty())
        || c.selector
            .match_expressions
            .as_ref()
            .is_some_and(|m| !m.is_empty());
    let secrets = inputs.clusters();
    let mut out = Vec::new();
    // The local cluster takes part unless a selector is given or a Secret names it.
    if !selecting
        && !secrets
            .iter()
            .any(|s| s.server.trim_end_matches('/') == IN_CLUSTER_SERVER)
    {
        let mut p = Params::new();
        p.insert("name".into(), json!(IN_CLUSTER_NAME));
        p.insert("nameNormalized".into(), json!(IN_CLUSTER_NAME));
        p.insert("server".into(), json!(IN_CLUSTER_SERVER));
        p.insert("project".into(), json!(""));
        out.push(with_values(p, &c.values, mode)?);
    }
    for s in secrets {
        let mut labels = s.labels.clone();
        labels.insert("argocd.argoproj.io/secret-type".into(), "cluster".into());
        if selecting && !selector_matches(&c.selector, &labels)? {
            continue;
        }
        let mut p = Params::new();
        p.insert("name".into(), json!(s.name));
        p.insert("nameNormalized".into(), json!(sanitize_name(&s.name)));
        p.insert("server".into(), json!(s.server));
        p.insert("project".into(), json!(s.project));
        if mode.go {
            let mut meta = serde_json::Map::new();
            if !labels.is_empty() {
                meta.insert("labels".into(), json!(labels));
            }
            if !s.annotations.is_empty() {
                meta.insert("annotations".into(), json!(s.annotations));
            }
            p.insert("metadata".into(), Value::Object(meta));
        } else {
            for (k, v) in &labels {
                p.insert(format!("metadata.labels.{k}"), json!(v));
            }
            for (k, v) in &s.annotations {
                p.insert(format!("metadata.annotations.{k}"), json!(v));
            }
        }
        out.push(with_values(p, &c.values, mode)?);
    }
    Ok(out)
}

/// `values`, each rendered against the parameters so far.
fn with_values(
    mut p: Params,
    values: &BTreeMap<String, String>,
    mode: &Mode,
) -> Result<Params, Error> {
    if values.is_empty() {
        return Ok(p);
    }
    let mut rendered = serde_json::Map::new();
    for (k, v) in values {
        let text =
            replace(v, &p, mode).map_err(|e| Error::Generator(format!("values.{k}: {e}")))?;
        rendered.insert(k.clone(), Value::String(text));
    }
    if mode.go {
        p.insert("values".into(), Value::Object(rendered));
    } else {
        for (k, v) in rendered {
            p.insert(format!("values.{k}"), v);
        }
    }
    Ok(p)
}

fn globs(
    items: &[(String, bool)],
    cross_separators: bool,
) -> Result<(globset::GlobSet, globset::GlobSet), Error> {
    let mut include = globset::GlobSetBuilder::new();
    let mut exclude = globset::GlobSetBuilder::new();
    for (pattern, excluded) in items {
        let glob = globset::GlobBuilder::new(pattern)
            .literal_separator(!cross_separators)
            .build()
            .map_err(|e| Error::Generator(format!("git generator: path {pattern:?}: {e}")))?;
        if *excluded {
            exclude.add(glob);
        } else {
            include.add(glob);
        }
    }
    let build = |b: globset::GlobSetBuilder| b.build().map_err(|e| Error::Generator(e.to_string()));
    Ok((build(include)?, build(exclude)?))
}

fn path_params(p: &mut Params, prefix: &str, dir: &str, file: Option<&str>, mode: &Mode) {
    let key = if prefix.is_empty() {
        "path".to_string()
    } else {
        format!("{prefix}.path")
    };
    let basename = dir.rsplit('/').next().unwrap_or(dir).to_string();
    let segments: Vec<&str> = dir
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    if mode.go {
        let mut m = serde_json::Map::new();
        m.insert("path".into(), json!(dir));
        m.insert("basename".into(), json!(basename));
        m.insert("basenameNormalized".into(), json!(sanitize_name(&basename)));
        m.insert("segments".into(), json!(segments));
        if let Some(f) = file {
            m.insert("filename".into(), json!(f));
            m.insert("filenameNormalized".into(), json!(sanitize_name(f)));
        }
        if prefix.is_empty() {
            p.insert("path".into(), Value::Object(m));
        } else {
            let mut outer = serde_json::Map::new();
            outer.insert("path".into(), Value::Object(m));
            p.insert(prefix.into(), Value::Object(outer));
        }
        return;
    }
    p.insert(key.clone(), json!(dir));
    p.insert(format!("{key}.basename"), json!(basename));
    p.insert(
        format!("{key}.basenameNormalized"),
        json!(sanitize_name(&basename)),
    );
    if let Some(f) = file {
        p.insert(format!("{key}.filename"), json!(f));
        p.insert(format!("{key}.filenameNormalized"), json!(sanitize_name(f)));
    }
    for (i, s) in segments.iter().enumerate() {
        p.insert(format!("{key}[{i}]"), json!(s));
    }
}

/// Nested keys joined by `.`, list items by index: the flat mode's view of a file.
fn flatten_into(prefix: &str, v: &Value, out: &mut Params) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_into(&key, x, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                flatten_into(&format!("{prefix}.{i}"), x, out);
            }
        }
        other => {
            out.insert(
                prefix.to_string(),
                json!(scalar_text(other).unwrap_or_default()),
            );
        }
    }
}

fn git_params(g: &GitGenerator, mode: &Mode, inputs: &dyn Inputs) -> Result<Vec<Params>, Error> {
    if g.repo_url.is_empty() {
        return Err(Error::Generator(
            "git generator: repoURL is required".into(),
        ));
    }
    let revision = if g.revision.is_empty() {
        "HEAD"
    } else {
        g.revision.as_str()
    };
    let tree = inputs.repo(&g.repo_url, revision)?;
    let mut out = Vec::new();
    if !g.directories.is_empty() {
        let items: Vec<(String, bool)> = g
            .directories
            .iter()
            .map(|d| (d.path.clone(), d.exclude))
            .collect();
        let (include, exclude) = globs(&items, false)?;
        let mut dirs = tree.dirs();
        dirs.sort();
        for dir in dirs {
            if dir.split('/').any(|s| s.starts_with('.')) {
                continue;
            }
            if include.is_match(&dir) && !exclude.is_match(&dir) {
                let mut p = Params::new();
                path_params(&mut p, &g.path_param_prefix, &dir, None, mode);
                out.push(with_values(p, &g.values, mode)?);
            }
        }
        return Ok(out);
    }
    if g.files.is_empty() {
        return Err(Error::Generator(
            "ApplicationSet is empty: the git generator has neither directories nor files".into(),
        ));
    }
    let items: Vec<(String, bool)> = g
        .files
        .iter()
        .map(|d| (d.path.clone(), d.exclude))
        .collect();
    let (include, exclude) = globs(&items, true)?;
    let mut files = tree.files();
    files.sort();
    files.dedup();
    for file in files {
        if !include.is_match(&file) || exclude.is_match(&file) {
            continue;
        }
        let bytes = tree
            .read(&file)
            .map_err(|e| Error::Generator(format!("git generator: {file}: {e}")))?;
        let text = String::from_utf8_lossy(&bytes);
        let parsed: Value = if text.trim().is_empty() {
            json!({})
        } else {
            serde_saphyr::from_str(&text).map_err(|e| {
                Error::Generator(format!(
                    "unable to process file '{file}': unable to parse file: {e}"
                ))
            })?
        };
        let objects = match parsed {
            Value::Array(items) if items.iter().all(Value::is_object) => items,
            Value::Object(_) => vec![parsed],
            _ => {
                return Err(Error::Generator(format!(
                    "unable to process file '{file}': unable to parse file: not a map or a list of maps"
                )));
            }
        };
        let (dir, name) = match file.rsplit_once('/') {
            Some((d, n)) => (d.to_string(), n.to_string()),
            None => (".".to_string(), file.clone()),
        };
        for o in objects {
            let mut p = Params::new();
            if mode.go {
                if let Value::Object(m) = o {
                    p = m;
                }
            } else {
                flatten_into("", &o, &mut p);
            }
            path_params(&mut p, &g.path_param_prefix, &dir, Some(&name), mode);
            out.push(with_values(p, &g.values, mode)?);
        }
    }
    Ok(out)
}

fn nesting(what: &str, depth: usize) -> Result<(), Error> {
    if depth >= 2 {
        return Err(Error::Generator(format!(
            "{what} generators nest at most two levels deep"
        )));
    }
    Ok(())
}

fn matrix(
    c: &CombineGenerator,
    mode: &Mode,
    inputs: &dyn Inputs,
    depth: usize,
) -> Result<(Vec<Params>, Option<Duration>), Error> {
    nesting("matrix", depth)?;
    match c.generators.len() {
        2 => {}
        n if n < 2 => {
            return Err(Error::Generator(
                "found less than two generators, Matrix support only two".into(),
            ));
        }
        _ => {
            return Err(Error::Generator(
                "found more than two generators, Matrix support only two".into(),
            ));
        }
    }
    let (first, mut requeue) = params_of(&c.generators[0], mode, inputs, depth + 1)
        .map_err(|e| wrap(e, "first generator in matrix"))?;
    let mut out = Vec::new();
    for a in first {
        // The second generator may use the first's parameters anywhere in its spec.
        let spec = serde_json::to_value(&c.generators[1]).unwrap_or_default();
        let spec = crate::render::render_value(&spec, &a, mode).map_err(|e| {
            Error::Generator(format!("matrix: templating the second generator: {e}"))
        })?;
        let second: Generator = serde_json::from_value(spec)
            .map_err(|e| Error::Generator(format!("matrix: the second generator: {e}")))?;
        let (bs, again) = params_of(&second, mode, inputs, depth + 1)
            .map_err(|e| wrap(e, "second generator in the matrix"))?;
        requeue = min_requeue(requeue, again);
        for b in bs {
            out.push(combine(&a, b, mode)?);
        }
    }
    Ok((out, requeue))
}

fn wrap(e: Error, which: &str) -> Error {
    match e {
        Error::Generator(m) => Error::Generator(format!("failed to get params for {which}: {m}")),
        other => other,
    }
}

fn combine(a: &Params, b: Params, mode: &Mode) -> Result<Params, Error> {
    if mode.go {
        // A deep merge where the first generator's values win.
        let mut merged = Value::Object(b);
        json_patch::merge(&mut merged, &Value::Object(a.clone()));
        return Ok(match merged {
            Value::Object(m) => m,
            _ => Params::new(),
        });
    }
    let mut out = a.clone();
    for (k, v) in b {
        if let Some(existing) = out.get(&k)
            && existing != &v
        {
            return Err(Error::Generator(format!(
                "found duplicate key {k} with different value, a: {} ,b: {}",
                scalar_text(existing).unwrap_or_default(),
                scalar_text(&v).unwrap_or_default()
            )));
        }
        out.insert(k, v);
    }
    Ok(out)
}

fn merge(
    c: &CombineGenerator,
    mode: &Mode,
    inputs: &dyn Inputs,
    depth: usize,
) -> Result<(Vec<Params>, Option<Duration>), Error> {
    nesting("merge", depth)?;
    if c.generators.len() < 2 {
        return Err(Error::Generator(
            "found less than two generators, Merge requires two or more".into(),
        ));
    }
    if c.merge_keys.is_empty() {
        return Err(Error::Generator(
            "no merge keys were specified, Merge requires at least one".into(),
        ));
    }
    let mut keys = c.merge_keys.clone();
    keys.dedup();
    let key_of = |p: &Params| -> String {
        let m: serde_json::Map<String, Value> = keys
            .iter()
            .map(|k| (k.clone(), p.get(k).cloned().unwrap_or(Value::Null)))
            .collect();
        Value::Object(m).to_string()
    };
    let mut requeue = None;
    let mut all = Vec::new();
    for g in &c.generators {
        let (sets, again) = params_of(g, mode, inputs, depth + 1)?;
        requeue = min_requeue(requeue, again);
        let mut seen = std::collections::HashSet::new();
        for s in &sets {
            let k = key_of(s);
            if !seen.insert(k.clone()) {
                return Err(Error::Generator(format!(
                    "the parameters from a generator were not unique by the given mergeKeys, Merge requires all param sets to be unique. Duplicate key was {k}"
                )));
            }
        }
        all.push(sets);
    }
    let mut base = all.remove(0);
    for later in all {
        let by_key: BTreeMap<String, Params> = later.into_iter().map(|p| (key_of(&p), p)).collect();
        for b in base.iter_mut() {
            if let Some(over) = by_key.get(&key_of(b)) {
                if mode.go {
                    let mut merged = Value::Object(std::mem::take(b));
                    json_patch::merge(&mut merged, &Value::Object(over.clone()));
                    if let Value::Object(m) = merged {
                        *b = m;
                    }
                } else {
                    for (k, v) in over {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
    }
    Ok((base, requeue))
}

/// Parameters as strings with dotted keys, for selectors.
pub fn flatten_strings(p: &Params) -> BTreeMap<String, String> {
    let mut flat = Params::new();
    flatten_into("", &Value::Object(p.clone()), &mut flat);
    flat.into_iter()
        .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
        .collect()
}

/// A label selector (matchLabels, matchExpressions with In, NotIn, Exists, DoesNotExist)
/// over a string map; values are not checked as label values, as Argo CD.
pub fn selector_matches(
    sel: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Result<bool, Error> {
    for (k, v) in sel.match_labels.iter().flatten() {
        if labels.get(k) != Some(v) {
            return Ok(false);
        }
    }
    for e in sel.match_expressions.iter().flatten() {
        let have = labels.get(&e.key);
        let values = e.values.clone().unwrap_or_default();
        let ok = match e.operator.as_str() {
            "In" => have.is_some_and(|h| values.contains(h)),
            "NotIn" => have.is_none_or(|h| !values.contains(h)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            other => {
                return Err(Error::Generator(format!(
                    "selector: unknown operator {other:?}"
                )));
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// gosimple/slug as Argo CD's pull request generator sets it up: `_` becomes `-`, at most 50
/// characters, cut at a word boundary.
pub fn branch_slug(branch: &str) -> String {
    ferry_gotemplate::sprig::slug(&branch.trim().to_lowercase().replace('_', "-"), 50, true)
}

fn pull_requests(
    g: &PullRequestGenerator,
    mode: &Mode,
    inputs: &dyn Inputs,
) -> Result<Vec<Params>, Error> {
    let mut unknown: Vec<String> = g
        .unknown
        .keys()
        .map(|k| format!("pullRequest.{k}"))
        .collect();
    let forge = match (&g.github, &g.gitea) {
        (Some(f), None) | (None, Some(f)) => f,
        (None, None) if !unknown.is_empty() => {
            return Err(Error::Generator(format!(
                "pull request generator: Ferry speaks GitHub and Gitea, not {}",
                unknown.join(", ")
            )));
        }
        _ => {
            return Err(Error::Generator(
                "pull request generator: name one of github and gitea".into(),
            ));
        }
    };
    unknown.extend(
        forge
            .unknown
            .keys()
            .map(|k| format!("pullRequest.<forge>.{k}")),
    );
    if forge.owner.is_empty() || forge.repo.is_empty() {
        return Err(Error::Generator(
            "pull request generator: owner and repo are required".into(),
        ));
    }
    for f in &g.filters {
        unknown.extend(
            f.unknown
                .keys()
                .map(|k| format!("pullRequest.filters[].{k}")),
        );
    }
    if !unknown.is_empty() {
        return Err(Error::Generator(format!(
            "pull request generator: fields Ferry does not act on: {}",
            unknown.join(", ")
        )));
    }
    let compile = |re: &Option<String>| -> Result<Option<regex::Regex>, Error> {
        re.as_deref()
            .map(|r| {
                regex::Regex::new(r).map_err(|e| {
                    Error::Generator(format!("error compiling BranchMatch regexp {r:?}: {e}"))
                })
            })
            .transpose()
    };
    let mut filters = Vec::new();
    for f in &g.filters {
        filters.push((compile(&f.branch_match)?, compile(&f.target_branch_match)?));
    }
    let mut out = Vec::new();
    for pr in inputs.pull_requests(g)? {
        if !forge.labels.iter().all(|l| pr.labels.contains(l)) {
            continue;
        }
        let pass = filters.is_empty()
            || filters.iter().any(|(b, t)| {
                b.as_ref().is_none_or(|re| re.is_match(&pr.branch))
                    && t.as_ref().is_none_or(|re| re.is_match(&pr.target_branch))
            });
        if !pass {
            continue;
        }
        let short = |n: usize| pr.head_sha.chars().take(n).collect::<String>();
        let mut p = Params::new();
        p.insert("number".into(), json!(pr.number.to_string()));
        p.insert("title".into(), json!(pr.title));
        p.insert("branch".into(), json!(pr.branch));
        p.insert("branch_slug".into(), json!(branch_slug(&pr.branch)));
        p.insert("target_branch".into(), json!(pr.target_branch));
        p.insert(
            "target_branch_slug".into(),
            json!(branch_slug(&pr.target_branch)),
        );
        p.insert("head_sha".into(), json!(pr.head_sha));
        p.insert("head_short_sha".into(), json!(short(8)));
        p.insert("head_short_sha_7".into(), json!(short(7)));
        p.insert("author".into(), json!(pr.author));
        if mode.go {
            p.insert("labels".into(), json!(pr.labels));
        }
        out.push(p);
    }
    Ok(out)
}

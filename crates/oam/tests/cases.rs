//! Data-driven tests of the built-in definitions: every `tests/builtins/<case>.yaml` is an
//! Application (plus, optionally, the definitions it uses), rendered and checked against
//! `<case>.expect.yaml` — expectations taken from upstream KubeVela's CUE definitions, each with
//! the rule it encodes in `why` — and compared byte for byte with `<case>.golden.json`
//! (`UPDATE_GOLDEN=1` rewrites the snapshot; the expectations are never generated).
//!
//! Expectation file:
//! ```yaml
//! kubeVersion: "1.20"        # the cluster to render for (default: a current one)
//! error: "substring"         # the render must fail with this in its message
//! expect:
//!   - object: Deployment/web # kind/name of a rendered object
//!     path: /spec/replicas   # JSON pointer
//!     equals: 3              # or `length: N`, or `absent: true` (without `path`: no such object;
//!                            # with it: no such field)
//!     why: "upstream scaler.cue: ..."
//! ```

use std::path::{Path, PathBuf};

use ferry_oam::{ClusterVersion, Definitions, Rendered};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Expectations {
    #[serde(default)]
    kube_version: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    expect: Vec<Check>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Check {
    object: String,
    #[serde(default)]
    path: Option<String>,
    /// `equals: null` is a check for null, not a missing check.
    #[serde(default, deserialize_with = "present")]
    equals: Option<Value>,
    #[serde(default)]
    length: Option<usize>,
    #[serde(default)]
    absent: bool,
    why: String,
}

/// YAML 1.2 booleans, as Kubernetes and `ferry render` read them (`y` is a string).
fn yaml12() -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    options
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

fn cases_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/builtins")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The case's Application and any definitions that travel with it (documents of kind
/// ComponentDefinition/TraitDefinition, as a platform team ships them).
fn load(yaml: &str) -> (Value, Definitions) {
    let mut defs = Definitions::builtin().expect("built-in definitions load");
    let mut app = None;
    for doc in yaml.split("\n---") {
        let doc = doc.trim_start_matches("---");
        if doc.trim().is_empty() {
            continue;
        }
        let v: Value =
            serde_saphyr::from_str_with_options(doc, yaml12()).expect("case document parses");
        match v["kind"].as_str() {
            Some("ComponentDefinition" | "TraitDefinition") => {
                defs.add_value(v).expect("case definition loads")
            }
            _ => {
                assert!(app.is_none(), "one Application per case");
                app = Some(v);
            }
        }
    }
    (app.expect("the case has an Application"), defs)
}

fn object_name(o: &Value) -> String {
    format!(
        "{}/{}",
        o["kind"].as_str().unwrap_or_default(),
        o["metadata"]["name"].as_str().unwrap_or_default()
    )
}

fn snapshot(rendered: &[Rendered]) -> String {
    let got: Vec<Value> = rendered
        .iter()
        .map(|r| json!({"component": r.component, "trait": r.trait_type, "output": r.output, "object": r.object}))
        .collect();
    serde_json::to_string_pretty(&got).unwrap() + "\n"
}

/// Every failed check of one case, as messages.
fn run_case(case: &Path) -> Vec<String> {
    let name = case.file_stem().unwrap().to_string_lossy().to_string();
    let expect_path = case.with_extension("expect.yaml");
    let exp: Expectations = serde_saphyr::from_str_with_options(&read(&expect_path), yaml12())
        .unwrap_or_else(|e| panic!("{}: {e}", expect_path.display()));
    let (app_value, defs) = load(&read(case));
    let version = exp
        .kube_version
        .as_deref()
        .map(|v| ClusterVersion::parse(v).unwrap())
        .unwrap_or_default();
    let result = ferry_oam::application_from_value(app_value)
        .and_then(|app| ferry_oam::render_for(&app, &defs, version));
    let mut failures = Vec::new();
    let rendered = match (result, &exp.error) {
        (Err(e), Some(want)) => {
            if !e.to_string().contains(want.as_str()) {
                failures.push(format!("{name}: error {e:?} does not contain {want:?}"));
            }
            return failures;
        }
        (Ok(_), Some(want)) => {
            return vec![format!("{name}: rendered, but should fail with {want:?}")];
        }
        (Err(e), None) => return vec![format!("{name}: render failed: {e}")],
        (Ok(r), None) => r,
    };
    assert!(
        !exp.expect.is_empty(),
        "{name}: a case without expectations tests nothing"
    );
    for c in &exp.expect {
        let found = rendered.iter().find(|r| object_name(&r.object) == c.object);
        let fail = |what: String| {
            format!(
                "{name}: {} {}: {what} ({})",
                c.object,
                c.path.as_deref().unwrap_or(""),
                c.why
            )
        };
        let Some(obj) = found else {
            if !(c.absent && c.path.is_none()) {
                let names: Vec<String> = rendered.iter().map(|r| object_name(&r.object)).collect();
                failures.push(fail(format!(
                    "not rendered (rendered: {})",
                    names.join(", ")
                )));
            }
            continue;
        };
        let Some(path) = &c.path else {
            if c.absent {
                failures.push(fail("rendered, but should not be".into()));
            }
            continue;
        };
        let at = obj.object.pointer(path);
        if c.absent {
            if let Some(v) = at {
                failures.push(fail(format!("should be absent, is {v}")));
            }
            continue;
        }
        let Some(v) = at else {
            failures.push(fail("missing".into()));
            continue;
        };
        if let Some(want) = &c.equals
            && v != want
        {
            failures.push(fail(format!("is {v}, want {want}")));
        }
        if let Some(n) = c.length {
            let len = v
                .as_array()
                .map(Vec::len)
                .or(v.as_object().map(|o| o.len()));
            if len != Some(n) {
                failures.push(fail(format!("length {len:?}, want {n}")));
            }
        }
        if c.equals.is_none() && c.length.is_none() {
            failures.push(fail("a check needs equals, length or absent".into()));
        }
    }
    let golden = case.with_extension("golden.json");
    let text = snapshot(&rendered);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &text).unwrap();
    }
    match std::fs::read_to_string(&golden) {
        Ok(want) if want == text => {}
        Ok(_) => failures.push(format!(
            "{name}: output differs from {} (UPDATE_GOLDEN=1 rewrites it); got:\n{text}",
            golden.display()
        )),
        Err(e) => failures.push(format!("{}: {e}", golden.display())),
    }
    failures
}

#[test]
fn every_builtin_case_matches_its_expectations_and_golden() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.ends_with(".yaml") && !n.ends_with(".expect.yaml")
        })
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "the cases directory is populated");
    let failures: Vec<String> = cases.iter().flat_map(|c| run_case(c)).collect();
    assert!(
        failures.is_empty(),
        "{} failed checks:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every built-in definition is exercised by at least one case, so a new built-in cannot land
/// untested.
#[test]
fn every_builtin_definition_has_a_case() {
    let defs = Definitions::builtin().unwrap();
    let mut text = String::new();
    for e in std::fs::read_dir(cases_dir()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml")
            && !p.to_string_lossy().ends_with(".expect.yaml")
        {
            text.push_str(&read(&p));
        }
    }
    let used = |name: &str| {
        text.contains(&format!("type: {name}\n"))
            || text.contains(&format!("type: {name},"))
            || text.contains(&format!("type: {name}}}"))
            || text.contains(&format!("type: \"{name}\""))
    };
    // Source components (helm, kustomize) fetch at deploy time: tests/sources.rs covers them.
    let source = |n: &String| {
        defs.component(n)
            .is_some_and(|d| d.spec.schematic.builtin.as_deref() == Some("source"))
    };
    let missing: Vec<String> = defs
        .component_names()
        .into_iter()
        .chain(defs.trait_names())
        .filter(|n| !source(n) && !used(n))
        .collect();
    assert!(
        missing.is_empty(),
        "built-ins without a case in tests/builtins: {missing:?}"
    );
}

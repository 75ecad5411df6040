//! docs/compatibility.md against the model, so the page cannot drift:
//! - every field of Argo CD's Application, AppProject and argocd-cm (the
//!   upstream inventory in docs/compatibility-fields.txt) has a row, or sits
//!   under a row marked "not supported";
//! - an Application/AppProject row marked "supported" or "differs" is a field
//!   the model reads, and one marked "not supported" is a field Ferry refuses
//!   by name (`unsupported_fields`), never one it drops silently.
//!
//! `FERRY_WRITE_COMPAT=1 cargo test -p ferry-model --test compatibility`
//! rewrites the tables: it keeps each row's notes and "differs", adds missing
//! rows and corrects statuses; review the diff before committing.

use ferry_model::{AppProjectSpec, Application};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;

const SECTIONS: [&str; 3] = ["Application", "AppProject", "argocd-cm"];

/// `<source>` stands for every place an ApplicationSource appears.
const SOURCE_PREFIXES: [&str; 4] = [
    "spec.source.",
    "spec.sources[].",
    "operation.sync.source.",
    "operation.sync.sources[].",
];

fn docs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

#[derive(Clone, Debug, PartialEq)]
struct Row {
    path: String,
    status: String,
    notes: String,
}

/// Upstream paths per section, with source fields folded into `<source>`.
fn upstream() -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(docs().join("compatibility-fields.txt")).unwrap();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(s) = line.strip_prefix("# ") {
            section = s.to_string();
            continue;
        }
        let mut path = line.strip_prefix("argocd-cm ").unwrap_or(line).to_string();
        for p in SOURCE_PREFIXES {
            if let Some(rest) = path.strip_prefix(p) {
                path = format!("<source>.{rest}");
            }
        }
        let list = out.entry(section.clone()).or_default();
        if !list.contains(&path) {
            list.push(path);
        }
    }
    out
}

fn parse_doc(text: &str) -> BTreeMap<String, Vec<Row>> {
    let mut out: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    let mut section = None;
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            section = SECTIONS
                .iter()
                .find(|s| h.trim() == **s)
                .map(|s| s.to_string());
            continue;
        }
        let Some(section) = &section else { continue };
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 5 || !cells[1].starts_with('`') {
            continue;
        }
        out.entry(section.clone()).or_default().push(Row {
            path: cells[1].trim_matches('`').to_string(),
            status: cells[2].to_string(),
            notes: cells[3..cells.len() - 1].join("|").trim().to_string(),
        });
    }
    out
}

/// Sets `path` (dots, `[]` for a one-element list) to `leaf` inside `root`;
/// list elements get a `name` when `named` (some element types require one).
fn set_path(root: &mut Map<String, Value>, path: &str, leaf: Value, named: bool) {
    let mut segments: Vec<&str> = path.split('.').collect();
    let last = segments.pop().unwrap();
    let mut cur = root;
    for seg in segments {
        let (key, list) = match seg.strip_suffix("[]") {
            Some(k) => (k, true),
            None => (seg, false),
        };
        let slot = cur.entry(key).or_insert_with(|| match (list, named) {
            (true, true) => json!([{"name": "x"}]),
            (true, false) => json!([{}]),
            _ => json!({}),
        });
        let obj = if list {
            &mut slot.as_array_mut().unwrap()[0]
        } else {
            slot
        };
        cur = obj.as_object_mut().unwrap();
    }
    match last.strip_suffix("[]") {
        Some(k) => cur.insert(k.to_string(), json!([leaf])),
        None => cur.insert(last.to_string(), leaf),
    };
}

/// Whether the model reads `path` (Some(true)), refuses it by name
/// (Some(false)), or no sample value fits it (None).
fn model_reads(section: &str, path: &str) -> Option<bool> {
    let candidates = [
        json!("x"),
        json!(true),
        json!(3),
        json!(["x"]),
        json!({}),
        json!({"k": "v"}),
        json!([{}]),
        // List elements with a required `name`.
        json!([{"name": "x"}]),
    ];
    let paths: Vec<String> = match path.strip_prefix("<source>.") {
        Some(rest) => vec![
            format!("spec.source.{rest}"),
            format!("operation.sync.source.{rest}"),
        ],
        None => vec![path.to_string()],
    };
    let mut verdicts = Vec::new();
    for path in paths {
        let mut verdict = None;
        let attempts = candidates.iter().flat_map(|c| [(c, false), (c, true)]);
        for (c, named) in attempts {
            let mut root = Map::new();
            set_path(&mut root, &path, c.clone(), named);
            let reported = match section {
                "Application" => {
                    root.insert("metadata".into(), json!({"name": "a"}));
                    let Ok(app) = serde_json::from_value::<Application>(Value::Object(root)) else {
                        continue;
                    };
                    let mut fields = app.unsupported_fields();
                    if let Some(op) = &app.operation {
                        fields.extend(op.unsupported_fields());
                    }
                    fields
                }
                "AppProject" => {
                    let spec = root.remove("spec").unwrap_or(json!({}));
                    let Ok(spec) = serde_json::from_value::<AppProjectSpec>(spec) else {
                        continue;
                    };
                    spec.unsupported_fields()
                }
                _ => return None,
            };
            if reported.is_empty() {
                verdict = Some(true);
                break;
            }
            verdict = Some(false);
        }
        verdicts.push(verdict?);
    }
    Some(verdicts.iter().all(|v| *v))
}

fn covered_by_unsupported_ancestor(rows: &[Row], path: &str) -> bool {
    rows.iter().any(|r| {
        r.status == "not supported"
            && (path.starts_with(&format!("{}.", r.path))
                || path.starts_with(&format!("{}[].", r.path)))
    })
}

#[test]
fn compatibility_page_matches_the_model_and_covers_argo_cd() {
    let doc_path = docs().join("compatibility.md");
    let text = std::fs::read_to_string(&doc_path).unwrap_or_default();
    let mut doc = parse_doc(&text);
    let upstream = upstream();
    let write = std::env::var("FERRY_WRITE_COMPAT").is_ok();
    let mut problems = Vec::new();

    for section in SECTIONS {
        let rows = doc.entry(section.to_string()).or_default();
        for path in upstream.get(section).into_iter().flatten() {
            if rows.iter().any(|r| &r.path == path) || covered_by_unsupported_ancestor(rows, path) {
                continue;
            }
            problems.push(format!("{section}: no row for `{path}`"));
            let status = match model_reads(section, path) {
                Some(true) => "supported",
                _ => "not supported",
            };
            rows.push(Row {
                path: path.clone(),
                status: status.into(),
                notes: String::new(),
            });
        }
        for row in rows.iter_mut() {
            if !["supported", "not supported", "differs"].contains(&row.status.as_str()) {
                problems.push(format!(
                    "{section}: `{}` has status {:?}",
                    row.path, row.status
                ));
                continue;
            }
            let Some(reads) = model_reads(section, &row.path) else {
                continue;
            };
            let doc_says = row.status != "not supported";
            if reads != doc_says {
                problems.push(format!(
                    "{section}: `{}` is {:?} in the doc but the model {}",
                    row.path,
                    row.status,
                    if reads { "reads it" } else { "refuses it" }
                ));
                row.status = if reads { "supported" } else { "not supported" }.into();
            }
        }
    }

    if write {
        std::fs::write(&doc_path, render(&text, &doc)).unwrap();
        return;
    }
    assert!(
        problems.is_empty(),
        "docs/compatibility.md is out of date (FERRY_WRITE_COMPAT=1 rewrites it):\n{}",
        problems.join("\n")
    );
}

/// The page with its tables replaced; everything outside them is kept.
fn render(old: &str, doc: &BTreeMap<String, Vec<Row>>) -> String {
    let mut out = String::new();
    let mut skipping = false;
    let mut seen = Vec::new();
    for line in old.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            skipping = false;
            if let Some(section) = SECTIONS.iter().find(|s| h.trim() == **s) {
                out.push_str(line);
                out.push('\n');
                out.push_str(&table(&doc[*section]));
                seen.push(*section);
                skipping = true;
                continue;
            }
        }
        if skipping && (line.starts_with('|') || line.trim().is_empty()) {
            continue;
        }
        skipping = false;
        out.push_str(line);
        out.push('\n');
    }
    for section in SECTIONS.iter().filter(|s| !seen.contains(s)) {
        out.push_str(&format!("\n## {section}\n"));
        out.push_str(&table(&doc[*section]));
    }
    out
}

fn table(rows: &[Row]) -> String {
    let mut s = String::from("\n| Field | Ferry | Notes |\n|---|---|---|\n");
    for r in rows {
        s.push_str(&format!("| `{}` | {} | {} |\n", r.path, r.status, r.notes));
    }
    s.push('\n');
    s
}

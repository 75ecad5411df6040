//! Printing: argocd-style tables, JSON and YAML, and a progress spinner
//! that only appears when a person is watching stderr.

use anyhow::{Result, bail};
use comfy_table::{Table, presets::NOTHING};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use std::io::IsTerminal;
use std::time::Duration;

pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

/// Columns separated by two spaces, no borders and no trailing blanks, as
/// argocd's tabwriter prints them, so scripts that `awk` its output work.
pub fn table<S: AsRef<str>>(headers: &[&str], rows: &[Vec<S>]) -> String {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(headers.to_vec());
    for r in rows {
        t.add_row(r.iter().map(|c| c.as_ref()).collect::<Vec<_>>());
    }
    let n = headers.len();
    for (i, col) in t.column_iter_mut().enumerate() {
        col.set_padding((0, if i + 1 == n { 0 } else { 2 }));
    }
    let mut out = String::new();
    for line in t.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `Label:` padded to argocd's 20 columns, then the value.
pub fn field(label: &str, value: &str) -> String {
    format!("{:<20}{}\n", format!("{label}:"), value)
}

pub fn to_json(v: &Value) -> Result<String> {
    let mut s = serde_json::to_string_pretty(v)?;
    s.push('\n');
    Ok(s)
}

pub fn to_yaml(v: &Value) -> Result<String> {
    let mut s = serde_saphyr::to_string(v)?;
    if !s.ends_with('\n') {
        s.push('\n');
    }
    Ok(s)
}

/// json or yaml of `v`; anything else is the caller's own format.
pub fn structured(v: &Value, format: &str) -> Result<String> {
    match format {
        "json" => to_json(v),
        "yaml" => to_yaml(v),
        other => bail!("unknown output format '{other}': use json or yaml"),
    }
}

/// A spinner on stderr when it is a terminal; silent otherwise, so piped
/// and CI output stays clean.
pub struct Progress(Option<ProgressBar>);

impl Progress {
    pub fn new(msg: impl Into<String>) -> Progress {
        if !stderr_is_terminal() {
            return Progress(None);
        }
        let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        pb.set_style(style);
        pb.set_message(msg.into());
        pb.enable_steady_tick(Duration::from_millis(120));
        Progress(Some(pb))
    }

    pub fn set(&self, msg: impl Into<String>) {
        if let Some(pb) = &self.0 {
            pb.set_message(msg.into());
        }
    }

    pub fn finish(&self) {
        if let Some(pb) = &self.0 {
            pb.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_is_tab_like() {
        let t = table(
            &["NAME", "STATUS"],
            &[vec!["a", "Synced"], vec!["longer-name", ""]],
        );
        assert_eq!(t, "NAME         STATUS\na            Synced\nlonger-name\n");
    }

    #[test]
    fn yaml_quotes_what_would_change_type() {
        let y = to_yaml(&json!({"a": "true", "b": 1, "c": ["x"], "d": "010"})).unwrap();
        let back: Value = serde_saphyr::from_str(&y).unwrap();
        assert_eq!(back, json!({"a": "true", "b": 1, "c": ["x"], "d": "010"}));
    }
}

//! Fields of an ApplicationSet that Ferry does not know, by path: a misspelt or unsupported
//! field is reported on the set instead of being dropped by deserialisation.

use ferry_model::appset::{AppTemplate, ApplicationSetSpec, Generator};

/// Every unknown field of `spec`, as a path from `spec` (`spec.generators[0].git.directoriez`).
pub fn unknown_fields(spec: &ApplicationSetSpec) -> Vec<String> {
    let mut found = Vec::new();
    keys(&mut found, "spec", spec.unknown.keys());
    template(&mut found, "spec.template", &spec.template);
    if let Some(p) = &spec.sync_policy {
        keys(&mut found, "spec.syncPolicy", p.unknown.keys());
    }
    if let Some(p) = &spec.preserved_fields {
        keys(&mut found, "spec.preservedFields", p.unknown.keys());
    }
    for (i, r) in spec.ignore_application_differences.iter().enumerate() {
        keys(
            &mut found,
            &format!("spec.ignoreApplicationDifferences[{i}]"),
            r.unknown.keys(),
        );
    }
    for (i, g) in spec.generators.iter().enumerate() {
        generator(&mut found, &format!("spec.generators[{i}]"), g);
    }
    found
}

fn keys<'a>(found: &mut Vec<String>, at: &str, names: impl Iterator<Item = &'a String>) {
    found.extend(names.map(|k| format!("{at}.{k}")));
}

fn template(found: &mut Vec<String>, at: &str, t: &AppTemplate) {
    keys(found, at, t.unknown.keys());
    keys(found, &format!("{at}.metadata"), t.metadata.unknown.keys());
}

fn own_template(found: &mut Vec<String>, at: &str, t: &Option<AppTemplate>) {
    if let Some(t) = t {
        template(found, &format!("{at}.template"), t);
    }
}

/// The generator kinds themselves (`scmProvider`, `plugin`, a misspelt kind) are reported by
/// generation, which names the kinds Ferry runs; this walks inside the known ones.
fn generator(found: &mut Vec<String>, at: &str, g: &Generator) {
    if let Some(l) = &g.list {
        keys(found, &format!("{at}.list"), l.unknown.keys());
        own_template(found, &format!("{at}.list"), &l.template);
    }
    if let Some(c) = &g.clusters {
        keys(found, &format!("{at}.clusters"), c.unknown.keys());
        own_template(found, &format!("{at}.clusters"), &c.template);
    }
    if let Some(git) = &g.git {
        let at = format!("{at}.git");
        keys(found, &at, git.unknown.keys());
        for (i, d) in git.directories.iter().enumerate() {
            keys(found, &format!("{at}.directories[{i}]"), d.unknown.keys());
        }
        for (i, f) in git.files.iter().enumerate() {
            keys(found, &format!("{at}.files[{i}]"), f.unknown.keys());
        }
        own_template(found, &at, &git.template);
    }
    for (kind, combine) in [("matrix", &g.matrix), ("merge", &g.merge)] {
        if let Some(c) = combine {
            let at = format!("{at}.{kind}");
            keys(found, &at, c.unknown.keys());
            own_template(found, &at, &c.template);
            for (i, child) in c.generators.iter().enumerate() {
                generator(found, &format!("{at}.generators[{i}]"), child);
            }
        }
    }
    if let Some(p) = &g.pull_request {
        own_template(found, &format!("{at}.pullRequest"), &p.template);
    }
}

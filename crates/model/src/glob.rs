//! Glob matching in one place, on globset: Argo CD's patterns (gobwas/glob)
//! for project rules, sync windows, RBAC, directory include/exclude and plugin
//! discovery. `*`, `?`, `[a-z]`, `[!a-z]`, `{a,b}` and `\` escapes everywhere;
//! [`Glob::matches`] lets `*` cross `/` (gobwas without separators, as Argo CD
//! matches), [`Glob::matches_path`] stops `*` and `?` at `/` and lets only `**`
//! cross (plugin discovery).

use globset::{GlobBuilder, GlobMatcher};
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

#[derive(Debug, Clone)]
pub struct Glob {
    anywhere: GlobMatcher,
    path: GlobMatcher,
}

impl Glob {
    pub fn new(pattern: &str) -> Result<Glob, String> {
        let build = |literal_separator: bool| {
            GlobBuilder::new(pattern)
                .literal_separator(literal_separator)
                .backslash_escape(true)
                .empty_alternates(true)
                .build()
                .map(|g| g.compile_matcher())
                .map_err(|e| format!("invalid glob {pattern:?}: {}", why(e.kind())))
        };
        Ok(Glob {
            anywhere: build(false)?,
            path: build(true)?,
        })
    }

    /// `*` matches any run of characters, `/` included.
    pub fn matches(&self, text: &str) -> bool {
        self.anywhere.is_match(text)
    }

    /// `*` and `?` stay within one path segment; `**/` spans directories (or none).
    pub fn matches_path(&self, text: &str) -> bool {
        self.path.is_match(text)
    }
}

fn why(kind: &globset::ErrorKind) -> String {
    use globset::ErrorKind as K;
    match kind {
        K::UnclosedClass => "unclosed `[`".into(),
        K::UnopenedAlternates | K::UnclosedAlternates => "unclosed `{`".into(),
        K::InvalidRange(..) => "character range is out of order".into(),
        K::DanglingEscape => "ends with an unfinished `\\` escape".into(),
        other => other.to_string(),
    }
}

/// [`Glob::matches`] for a pattern compiled once per process; a pattern that
/// is not a valid glob matches only itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    static CACHE: LazyLock<Mutex<HashMap<String, Option<Glob>>>> = LazyLock::new(Default::default);
    // A literal match first: an IPv6 server URL (`https://[fd00::1]:6443`)
    // reads as a character class but must still match itself.
    if pattern == text {
        return true;
    }
    if !pattern.contains(['*', '?', '[', '{', '\\']) {
        return false;
    }
    let cached = CACHE.lock().ok().and_then(|c| c.get(pattern).cloned());
    let glob = match cached {
        Some(g) => g,
        None => {
            let g = Glob::new(pattern).ok();
            if let Ok(mut c) = CACHE.lock()
                && c.len() < 10_000
            {
                c.insert(pattern.to_string(), g.clone());
            }
            g
        }
    };
    match glob {
        Some(g) => g.matches(text),
        None => pattern == text,
    }
}

/// Argo CD's namespace patterns (`--application-namespaces`,
/// `sourceNamespaces`): `/regex/` (anchored) or a glob; each compiled once
/// per process, since they are checked for every app event.
pub fn glob_or_regex_match(pattern: &str, text: &str) -> bool {
    let Some(re) = pattern.strip_prefix('/').and_then(|r| r.strip_suffix('/')) else {
        return glob_match(pattern, text);
    };
    static CACHE: LazyLock<Mutex<HashMap<String, Option<regex::Regex>>>> =
        LazyLock::new(Default::default);
    let cached = CACHE.lock().ok().and_then(|c| c.get(re).cloned());
    let compiled = match cached {
        Some(c) => c,
        None => {
            let c = regex::Regex::new(&format!("^(?:{re})$")).ok();
            if let Ok(mut cache) = CACHE.lock()
                && cache.len() < 10_000
            {
                cache.insert(re.to_string(), c.clone());
            }
            c
        }
    };
    compiled.is_some_and(|r| r.is_match(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str, aware: bool) -> bool {
        let g = Glob::new(p).unwrap();
        if aware {
            g.matches_path(t)
        } else {
            g.matches(t)
        }
    }

    // The conformance suite the hand-written matchers had.
    #[test]
    fn star_crosses_slash_only_when_not_path_aware() {
        assert!(m("*.yaml", "a.yaml", true));
        assert!(!m("*.yaml", "sub/a.yaml", true));
        assert!(m("*.yaml", "sub/a.yaml", false));
        assert!(!m("*.yaml", "a.yml", false));
    }

    #[test]
    fn double_star_and_dirs() {
        assert!(m("**/Chart.yaml", "Chart.yaml", true));
        assert!(m("**/Chart.yaml", "a/b/Chart.yaml", true));
        assert!(!m("**/Chart.yaml", "a/b/MyChart.yaml", true));
        assert!(m("a/**", "a/b/c", true));
        assert!(m("a/**/c", "a/c", true));
        assert!(m("a/**/c", "a/x/y/c", true));
        assert!(!m("a/**/c", "b/x/c", true));
    }

    #[test]
    fn alternatives_classes_and_escapes() {
        assert!(m("{*.yml,*.yaml}", "x.yaml", false));
        assert!(m("{*.yml,*.yaml}", "x.yml", false));
        assert!(!m("{*.yml,*.yaml}", "x.json", false));
        assert!(m("config.json", "config.json", false));
        assert!(!m("config.json", "sub/config.json", false));
        assert!(m("file-[0-9].yaml", "file-3.yaml", true));
        assert!(!m("file-[!0-9].yaml", "file-3.yaml", true));
        assert!(m("a?c", "abc", true));
        assert!(!m("a?c", "a/c", true));
        assert!(m("\\*.yaml", "*.yaml", true));
        assert!(!m("\\*.yaml", "x.yaml", true));
        assert!(m("{a,b{c,d}}.yaml", "bd.yaml", true));
        assert!(Glob::new("{a,b").is_err());
    }

    #[test]
    fn namespace_patterns_are_globs_or_anchored_regexes() {
        assert!(glob_or_regex_match("team-*", "team-a"));
        assert!(glob_or_regex_match("/^ops$/", "ops"));
        assert!(!glob_or_regex_match("/ops/", "devops"), "anchored");
        assert!(
            !glob_or_regex_match("/(/", "("),
            "an invalid regex matches nothing"
        );
    }

    #[test]
    fn project_and_rbac_forms() {
        assert!(glob_match("*", "https://x/y.git"));
        assert!(glob_match(
            "https://github.com/org/*",
            "https://github.com/org/a/b.git"
        ));
        assert!(!glob_match(
            "https://github.com/org/*",
            "https://github.com/other/a.git"
        ));
        assert!(glob_match("prod-?", "prod-1"));
        assert!(!glob_match("prod-?", "prod-12"));
        assert!(glob_match("team-*/web-?", "team-a/b/web-1"));
        assert!(glob_match("ops/{api,worker}-[0-9]", "ops/worker-3"));
        assert!(!glob_match("[!x]*", "xyz"));
        // Not a valid glob: only itself.
        assert!(glob_match("[oops", "[oops"));
        assert!(!glob_match("[oops", "o"));
    }
}

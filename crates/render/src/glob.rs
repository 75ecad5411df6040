//! Glob patterns as Argo CD uses them: `*`, `**`, `?`, `[a-z]`, `[!a-z]`,
//! `{a,b}` alternatives and `\` escapes.
//!
//! Argo CD matches directory `include`/`exclude` with gobwas/glob and no
//! separators, so there `*` also crosses `/`; plugin discovery uses
//! path-aware globs where only `**` does. `Glob::matches` takes that choice.
//! In both modes `**/` may also match nothing, so `**/x.yaml` matches a
//! top-level `x.yaml`.

/// Pattern expansion is capped so `{a,b}{c,d}...` cannot explode.
const MAX_ALTERNATIVES: usize = 256;

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Literal(char),
    /// `?`
    One,
    /// `*`
    Star,
    /// `**`
    Super,
    /// `**/`: any number of whole directories, including none.
    SuperDir,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Glob {
    alternatives: Vec<Vec<Token>>,
}

impl Glob {
    pub fn new(pattern: &str) -> Result<Glob, String> {
        let expanded = expand_braces(pattern)?;
        let alternatives = expanded
            .iter()
            .map(|p| tokenize(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Glob { alternatives })
    }

    /// `path_aware`: `*` and `?` stop at `/` (discovery); otherwise they
    /// match anything (directory include/exclude).
    pub fn matches(&self, text: &str, path_aware: bool) -> bool {
        let text: Vec<char> = text.chars().collect();
        self.alternatives
            .iter()
            .any(|toks| match_tokens(toks, &text, path_aware))
    }
}

fn expand_braces(pattern: &str) -> Result<Vec<String>, String> {
    let chars: Vec<char> = pattern.chars().collect();
    // Find the first top-level `{` that has a matching `}`.
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '[' => {
                // Braces inside a character class are literal.
                i = class_end(&chars, i).map(|e| e + 1).unwrap_or(i + 1);
            }
            '{' => {
                let mut depth = 0;
                let mut parts = Vec::new();
                let mut start = i + 1;
                let mut j = i;
                let mut close = None;
                while j < chars.len() {
                    match chars[j] {
                        '\\' => {
                            j += 2;
                            continue;
                        }
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                parts.push(chars[start..j].iter().collect::<String>());
                                close = Some(j);
                                break;
                            }
                        }
                        ',' if depth == 1 => {
                            parts.push(chars[start..j].iter().collect::<String>());
                            start = j + 1;
                        }
                        _ => {}
                    }
                    j += 1;
                }
                let Some(close) = close else {
                    return Err(format!("unclosed '{{' in pattern {pattern:?}"));
                };
                let prefix: String = chars[..i].iter().collect();
                let suffix: String = chars[close + 1..].iter().collect();
                let mut out = Vec::new();
                for part in parts {
                    for tail in expand_braces(&format!("{part}{suffix}"))? {
                        out.push(format!("{prefix}{tail}"));
                        if out.len() > MAX_ALTERNATIVES {
                            return Err(format!("pattern {pattern:?} has too many alternatives"));
                        }
                    }
                }
                return Ok(out);
            }
            _ => i += 1,
        }
    }
    Ok(vec![pattern.to_string()])
}

fn class_end(chars: &[char], open: usize) -> Option<usize> {
    let mut j = open + 1;
    if j < chars.len() && (chars[j] == '!' || chars[j] == '^') {
        j += 1;
    }
    // A `]` right after the opening bracket is a literal member.
    if j < chars.len() && chars[j] == ']' {
        j += 1;
    }
    while j < chars.len() {
        if chars[j] == ']' {
            return Some(j);
        }
        j += 1;
    }
    None
}

fn tokenize(pattern: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                let Some(&c) = chars.get(i + 1) else {
                    return Err(format!("pattern {pattern:?} ends with an escape"));
                };
                out.push(Token::Literal(c));
                i += 2;
            }
            '?' => {
                out.push(Token::One);
                i += 1;
            }
            '*' => {
                let mut j = i;
                while j < chars.len() && chars[j] == '*' {
                    j += 1;
                }
                if j - i >= 2 {
                    if chars.get(j) == Some(&'/') {
                        out.push(Token::SuperDir);
                        j += 1;
                    } else {
                        out.push(Token::Super);
                    }
                } else {
                    out.push(Token::Star);
                }
                i = j;
            }
            '[' => {
                let Some(end) = class_end(&chars, i) else {
                    return Err(format!("unclosed '[' in pattern {pattern:?}"));
                };
                let mut j = i + 1;
                let negated = matches!(chars[j], '!' | '^');
                if negated {
                    j += 1;
                }
                let mut ranges = Vec::new();
                while j < end {
                    let lo = chars[j];
                    if j + 2 < end && chars[j + 1] == '-' {
                        ranges.push((lo, chars[j + 2]));
                        j += 3;
                    } else {
                        ranges.push((lo, lo));
                        j += 1;
                    }
                }
                out.push(Token::Class { negated, ranges });
                i = end + 1;
            }
            c => {
                out.push(Token::Literal(c));
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Dynamic programming over (token, char) so no pattern can make matching
/// exponential.
fn match_tokens(toks: &[Token], text: &[char], path_aware: bool) -> bool {
    let n = text.len();
    // can[j]: the tokens consumed so far can match text[..j].
    let mut can = vec![false; n + 1];
    can[0] = true;
    for tok in toks {
        let mut next = vec![false; n + 1];
        match tok {
            Token::Literal(c) => {
                for j in 0..n {
                    if can[j] && text[j] == *c {
                        next[j + 1] = true;
                    }
                }
            }
            Token::One => {
                for j in 0..n {
                    if can[j] && !(path_aware && text[j] == '/') {
                        next[j + 1] = true;
                    }
                }
            }
            Token::Class { negated, ranges } => {
                for j in 0..n {
                    if !can[j] || (path_aware && text[j] == '/') {
                        continue;
                    }
                    let inside = ranges
                        .iter()
                        .any(|(lo, hi)| *lo <= text[j] && text[j] <= *hi);
                    if inside != *negated {
                        next[j + 1] = true;
                    }
                }
            }
            Token::Star | Token::Super => {
                let crosses = !path_aware || *tok == Token::Super;
                let mut running = false;
                for j in 0..=n {
                    if can[j] {
                        running = true;
                    }
                    next[j] = running;
                    if j < n && !crosses && text[j] == '/' {
                        running = false;
                    }
                }
            }
            Token::SuperDir => {
                // Nothing, or anything ending in `/`.
                let mut seen = false;
                for j in 0..=n {
                    if can[j] {
                        next[j] = true;
                    }
                    if seen && j > 0 && text[j - 1] == '/' {
                        next[j] = true;
                    }
                    if can[j] {
                        seen = true;
                    }
                }
            }
        }
        can = next;
        if !can.iter().any(|b| *b) {
            return false;
        }
    }
    can[n]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str, aware: bool) -> bool {
        Glob::new(p).unwrap().matches(t, aware)
    }

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
}

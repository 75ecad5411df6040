//! `$VAR` / `${VAR}` substitution with Go's `os.Expand` rules, which is what
//! Argo CD applies to Helm parameters, value file paths, Kustomize images
//! and plugin env values. Unknown variables become empty; `$$` is `$`.

pub(crate) fn envsubst(s: &str, env: &[(String, String)]) -> String {
    let lookup = |name: &str| -> String {
        if name == "$" {
            return "$".into();
        }
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut last = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            out.push_str(&s[last..i]);
            let (name, width) = shell_name(&s[i + 1..]);
            match (name, width) {
                // Bad syntax such as `${}`: the characters are dropped.
                (None, w) if w > 0 => {}
                // `$` not followed by a name stays as it is.
                (None, _) => out.push('$'),
                (Some(n), _) => out.push_str(&lookup(n)),
            }
            i += 1 + width;
            last = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&s[last..]);
    out
}

fn is_special(c: u8) -> bool {
    matches!(c, b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-') || c.is_ascii_digit()
}

fn is_alnum(c: u8) -> bool {
    c == b'_' || c.is_ascii_alphanumeric()
}

/// The variable name after a `$` and how many bytes it spans.
fn shell_name(s: &str) -> (Option<&str>, usize) {
    let b = s.as_bytes();
    if b[0] == b'{' {
        if b.len() > 2 && is_special(b[1]) && b[2] == b'}' {
            return (Some(&s[1..2]), 3);
        }
        return match s[1..].find('}') {
            Some(0) => (None, 2),
            Some(end) => (Some(&s[1..1 + end]), end + 2),
            None => (None, 1),
        };
    }
    if is_special(b[0]) {
        return (Some(&s[0..1]), 1);
    }
    let n = b.iter().take_while(|c| is_alnum(**c)).count();
    if n == 0 {
        (None, 0)
    } else {
        (Some(&s[..n]), n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_like_go_os_expand() {
        let env = vec![
            ("A".to_string(), "x".to_string()),
            ("B_1".to_string(), "y".to_string()),
        ];
        assert_eq!(envsubst("$A-${B_1}/$C.", &env), "x-y/.");
        assert_eq!(envsubst("cost $$5 and $", &env), "cost $5 and $");
        assert_eq!(envsubst("a ${} b", &env), "a  b");
        assert_eq!(envsubst("no vars", &env), "no vars");
        assert_eq!(envsubst("ü$A€", &env), "üx€");
    }
}

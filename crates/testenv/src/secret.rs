//! A string that never shows up in Debug or Display output.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// 32 hex characters from the kernel's random source.
    pub fn random() -> Self {
        let mut buf = [0u8; 16];
        // SAFETY: getrandom(2) writes at most buf.len() bytes into buf.
        let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
        assert_eq!(n, buf.len() as isize, "getrandom failed");
        Secret(buf.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The value itself; call only where it must be used, never to print.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_value() {
        let s = Secret::random();
        assert_eq!(s.expose().len(), 32);
        assert!(!format!("{s:?}").contains(s.expose()));
        assert_ne!(Secret::random(), s);
    }
}

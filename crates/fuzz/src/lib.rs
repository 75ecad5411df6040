//! fuzz: property tests that feed Ferry's parsers arbitrary and hostile input — trigger conditions, Go templates, label selectors, globs, manifests, avp placeholders, webhook bodies — and require an answer (a value or an error), never a panic or a hang.
//!
//! The tests live in `tests/parsers.rs`. `make test` runs each with `FERRY_FUZZ_CASES`
//! (default 256) inputs; `make chaos` runs 20,000. proptest keeps every failing input in
//! `tests/parsers.proptest-regressions`, which is committed and replayed first on every run.

/// Inputs per property: `$FERRY_FUZZ_CASES`, else 256.
pub fn cases() -> u32 {
    std::env::var("FERRY_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

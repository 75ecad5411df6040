//! ImagePolicy tag selection: which of a repository's tags a Flux `image.toolkit.fluxcd.io/v1` ImagePolicy (semver, alphabetical or numerical, with optional `filterTags`) reports as the latest.
//!
//! Behaviour follows Flux's image-reflector-controller and its documentation
//! (`docs/spec/v1/imagepolicies.md`):
//!
//! * `filterTags.pattern` is an unanchored regular expression; tags it does
//!   not match are dropped. `filterTags.extract` (e.g. `$ts`, `${ts}`, `$1`)
//!   is expanded against the match and the policy orders the expanded values,
//!   but the *original* tag is returned.
//! * `alphabetical`: byte-wise string order; `asc` (default) picks the last
//!   value, i.e. the greatest, `desc` the smallest.
//! * `numerical`: values are parsed as floating-point numbers; `asc` picks the
//!   largest, `desc` the smallest. A value that does not parse fails the whole
//!   policy, as in Flux, rather than being skipped.
//! * `semver`: Masterminds/semver v3 constraint syntax (see [`Choice::Semver`]),
//!   highest matching version wins; tags that are not versions are skipped.
//!
//! Where Flux leaves the winner to Go map iteration order (several tags with
//! the same extracted value, or equal versions such as `v1.2.3` / `1.2.3`),
//! Ferry breaks the tie by the original tag: the one that sorts last
//! byte-wise wins, so the result never depends on registry listing order.

use std::borrow::Cow;
use std::cmp::Ordering;

use node_semver::{Identifier, Version};
use regex::Regex;

/// Sort order of the alphabetical and numerical policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Ascending: the last (greatest) value is the latest.
    #[default]
    Asc,
    /// Descending: the last value in descending order, i.e. the smallest, is the latest.
    Desc,
}

impl Order {
    /// Parses `spec.policy.{alphabetical,numerical}.order`. Flux upper-cases the
    /// value before checking it, so any case is accepted; empty means `asc`.
    pub fn parse(s: &str) -> Result<Order, PolicyError> {
        if s.is_empty() || s.eq_ignore_ascii_case("asc") {
            Ok(Order::Asc)
        } else if s.eq_ignore_ascii_case("desc") {
            Ok(Order::Desc)
        } else {
            Err(PolicyError::InvalidOrder(s.to_string()))
        }
    }
}

/// `spec.policy`: exactly one of Flux's three policy kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// `semver.range`, written in Masterminds/semver v3 constraint syntax:
    ///
    /// * comparisons `=` (or none), `!=`, `>`, `<`, `>=`, `<=` (also `=>`, `=<`);
    /// * AND by whitespace or comma (`>=1.0.0 <2.0.0`, `>=1.0.0, <2.0.0`), OR by `||`;
    /// * hyphen ranges `1.2 - 1.4.5` (= `>=1.2, <=1.4.5`);
    /// * wildcards `1.x`, `1.2.X`, `*`, and partial versions `1`, `1.2`;
    /// * `~1.2.3` (= `>=1.2.3 <1.3.0`), `~1.2` (= `>=1.2.0 <1.3.0`), `~1` (= `>=1.0.0 <2.0.0`);
    /// * `^1.2.3` (= `>=1.2.3 <2.0.0`), `^0.2.3` (= `>=0.2.3 <0.3.0`), `^0.0.3` (= `0.0.3`).
    ///
    /// Prerelease tags only match an OR-group that itself names a prerelease
    /// (e.g. `>=1.0.0-0 <2.0.0`, or Flux's documented `^1.x-0`); within such a
    /// group prereleases are ordered normally (Masterminds v3.4 rule).
    ///
    /// `~>` means exactly what `~` means, as in Masterminds (Flux's library),
    /// so a policy moved from Flux picks the same tag: `~> 1.1` = `>=1.1.0 <1.2.0`.
    Semver { range: String },
    /// `alphabetical.order`.
    Alphabetical { order: Order },
    /// `numerical.order`.
    Numerical { order: Order },
}

/// `spec.filterTags`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagFilter {
    /// Regular expression a tag must match (anywhere, unless anchored) to be considered.
    pub pattern: Option<String>,
    /// Replacement template (`$name`, `${name}`, `$1`) expanded against the
    /// match; the policy orders these values instead of the tags.
    pub extract: Option<String>,
}

/// Why a policy could not be built or applied.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("invalid order {0:?}: must be \"asc\" or \"desc\"")]
    InvalidOrder(String),
    #[error("invalid filterTags.pattern {pattern:?}: {error}")]
    InvalidPattern {
        pattern: String,
        error: regex::Error,
    },
    #[error("invalid filterTags.extract {extract:?}: {reason}")]
    InvalidExtract { extract: String, reason: String },
    #[error("invalid semver range {range:?}: {reason}")]
    InvalidRange { range: String, reason: String },
    #[error("tag {tag:?}{} is not a number (numerical policy)", extracted_note(.tag, .value))]
    NotANumber { tag: String, value: String },
}

fn extracted_note(tag: &str, value: &str) -> String {
    if tag == value {
        String::new()
    } else {
        format!(" (extracted value {value:?})")
    }
}

/// A compiled ImagePolicy: regex and semver range are parsed once, so a bad
/// spec is reported before any tags are looked at.
#[derive(Debug, Clone)]
pub struct Policy {
    rule: Rule,
    filter: Option<Filter>,
    lenient_versions: bool,
}

#[derive(Debug, Clone)]
enum Rule {
    Semver(SemverRange),
    Alphabetical(Order),
    Numerical(Order),
}

#[derive(Debug, Clone)]
struct Filter {
    regex: Regex,
    extract: Option<String>,
}

impl Policy {
    /// Compiles `spec.policy` and `spec.filterTags`, so a bad range, pattern
    /// or extract template is reported before any tags are looked at.
    pub fn new(choice: Choice, filter: TagFilter) -> Result<Policy, PolicyError> {
        let rule = match choice {
            Choice::Semver { range } => Rule::Semver(SemverRange::parse(&range)?),
            Choice::Alphabetical { order } => Rule::Alphabetical(order),
            Choice::Numerical { order } => Rule::Numerical(order),
        };
        Ok(Policy {
            rule,
            filter: Filter::new(filter)?,
            lenient_versions: false,
        })
    }

    /// Also accept partial semver tags (`1.2`, `v3`) and leading zeros, as
    /// Masterminds' `NewVersion` would. Off by default because Flux parses tags
    /// strictly (`fluxcd/pkg/version.ParseVersion`: `StrictNewVersion` after
    /// trimming one `v`), so `1.2` is not a candidate there; turning this on
    /// can make Ferry pick a different tag than Flux for the same policy.
    pub fn lenient_versions(mut self, lenient: bool) -> Policy {
        self.lenient_versions = lenient;
        self
    }

    /// The tag the policy picks (the ORIGINAL tag, not the extracted value), or None when no tag qualifies.
    pub fn select(&self, tags: &[String]) -> Result<Option<String>, PolicyError> {
        let candidates = tags
            .iter()
            .filter_map(|tag| self.value_of(tag).map(|value| (tag.as_str(), value)));
        let best = match &self.rule {
            Rule::Alphabetical(order) => {
                pick(candidates, *order, |a, b| a.as_bytes().cmp(b.as_bytes()))
            }
            Rule::Numerical(order) => {
                let mut keyed = Vec::new();
                for (tag, value) in candidates {
                    let number = parse_number(&value).ok_or_else(|| PolicyError::NotANumber {
                        tag: tag.to_string(),
                        value: value.to_string(),
                    })?;
                    keyed.push((tag, number));
                }
                // NaN is rejected by parse_number, so partial_cmp is total here.
                pick(keyed.into_iter(), *order, |a, b| {
                    a.partial_cmp(b).unwrap_or(Ordering::Equal)
                })
            }
            Rule::Semver(range) => {
                let keyed = candidates.filter_map(|(tag, value)| {
                    let version = parse_tag_version(&value, self.lenient_versions)?;
                    range.matches(&version).then_some((tag, version))
                });
                pick(keyed, Order::Asc, Version::cmp)
            }
        };
        Ok(best.map(str::to_string))
    }

    /// The value the policy orders for `tag`, or None if the filter drops it.
    fn value_of<'t>(&self, tag: &'t str) -> Option<Cow<'t, str>> {
        let Some(filter) = &self.filter else {
            return Some(Cow::Borrowed(tag));
        };
        let captures = filter.regex.captures(tag)?;
        match &filter.extract {
            None => Some(Cow::Borrowed(tag)),
            Some(template) => {
                let mut value = String::new();
                captures.expand(template, &mut value);
                Some(Cow::Owned(value))
            }
        }
    }
}

/// The winner among `(tag, key)` pairs: greatest key for `Asc`, smallest for
/// `Desc`; equal keys fall back to the greatest tag so the answer does not
/// depend on input order.
fn pick<'t, K>(
    items: impl Iterator<Item = (&'t str, K)>,
    order: Order,
    cmp: impl Fn(&K, &K) -> Ordering,
) -> Option<&'t str> {
    let mut best: Option<(&'t str, K)> = None;
    for (tag, key) in items {
        let better = match &best {
            None => true,
            Some((best_tag, best_key)) => {
                let by_key = match order {
                    Order::Asc => cmp(&key, best_key),
                    Order::Desc => cmp(best_key, &key),
                };
                by_key.then_with(|| tag.as_bytes().cmp(best_tag.as_bytes())) == Ordering::Greater
            }
        };
        if better {
            best = Some((tag, key));
        }
    }
    best.map(|(tag, _)| tag)
}

/// Flux uses Go's `strconv.ParseFloat`; Rust's parser accepts the same
/// decimal and exponent forms (not Go's hex floats). NaN is refused because
/// it has no place in an order and Go would let it win arbitrarily.
fn parse_number(value: &str) -> Option<f64> {
    value.parse::<f64>().ok().filter(|n| !n.is_nan())
}

impl Filter {
    fn new(spec: TagFilter) -> Result<Option<Filter>, PolicyError> {
        // Flux treats an empty extract as "use the tag itself".
        let extract = spec.extract.filter(|e| !e.is_empty());
        let pattern = match spec.pattern.filter(|p| !p.is_empty()) {
            Some(pattern) => pattern,
            None => {
                return match extract {
                    // Without a pattern every expansion is empty, which would
                    // silently collapse all tags into one; refuse instead.
                    Some(extract) => Err(PolicyError::InvalidExtract {
                        extract,
                        reason: "filterTags.pattern is empty, so there is nothing to extract from"
                            .to_string(),
                    }),
                    None => Ok(None),
                };
            }
        };
        let regex = Regex::new(&pattern).map_err(|error| PolicyError::InvalidPattern {
            pattern: pattern.clone(),
            error,
        })?;
        if let Some(extract) = &extract {
            check_extract(&regex, extract)?;
        }
        Ok(Some(Filter { regex, extract }))
    }
}

/// Rejects references to capture groups the pattern does not have. Go (and
/// the regex crate) would expand them to "", which turns a typo such as
/// `$timestmp` into every tag having the same value.
fn check_extract(regex: &Regex, extract: &str) -> Result<(), PolicyError> {
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut rest = extract;
    while let Some(dollar) = rest.find('$') {
        rest = &rest[dollar + 1..];
        let name = if let Some(braced) = rest.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => {
                    let name = &braced[..end];
                    rest = &braced[end + 1..];
                    name
                }
                // An unterminated brace is copied literally.
                None => continue,
            }
        } else if let Some(after) = rest.strip_prefix('$') {
            rest = after;
            continue;
        } else {
            let end = rest.find(|c| !is_name_char(c)).unwrap_or(rest.len());
            let name = &rest[..end];
            rest = &rest[end..];
            name
        };
        if name.is_empty() {
            continue;
        }
        let known = match name.parse::<usize>() {
            Ok(index) => index < regex.captures_len(),
            Err(_) => regex.capture_names().flatten().any(|n| n == name),
        };
        if !known {
            return Err(PolicyError::InvalidExtract {
                extract: extract.to_string(),
                reason: format!("pattern {:?} has no capture group {name:?}", regex.as_str()),
            });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Versions

/// Masterminds' `MaxVersionLen`; longer tags are not versions.
const MAX_VERSION_LEN: usize = 256;

/// Parses a tag the way Flux does: one leading `v` is dropped, then the rest
/// must be a full semver 2 version (`StrictNewVersion`). With `lenient`,
/// Masterminds' coercing `NewVersion` grammar is used instead (one to three
/// numeric components, leading zeros allowed).
fn parse_tag_version(tag: &str, lenient: bool) -> Option<Version> {
    if tag.len() > MAX_VERSION_LEN {
        return None;
    }
    let body = tag.strip_prefix('v').unwrap_or(tag);
    let (rest, build) = match body.split_once('+') {
        Some((rest, build)) => (rest, Some(build)),
        None => (body, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (rest, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    let numbers_ok = if lenient {
        (1..=3).contains(&parts.len()) && parts.iter().all(|p| is_digits(p))
    } else {
        parts.len() == 3 && parts.iter().all(|p| is_digits(p) && !has_leading_zero(p))
    };
    if !numbers_ok {
        return None;
    }
    let pre = match pre {
        Some(pre) => Some(prerelease_identifiers(pre)?),
        None => None,
    };
    let build = match build {
        Some(build) => Some(build_identifiers(build)?),
        None => None,
    };
    let mut numbers = [0u64; 3];
    for (slot, part) in numbers.iter_mut().zip(&parts) {
        *slot = part.parse().ok()?;
    }
    Some(Version {
        major: numbers[0],
        minor: numbers[1],
        patch: numbers[2],
        pre_release: pre.unwrap_or_default(),
        build: build.unwrap_or_default(),
    })
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn has_leading_zero(s: &str) -> bool {
    s.len() > 1 && s.starts_with('0')
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Semver prerelease: dot-separated, non-empty `[0-9A-Za-z-]` identifiers,
/// numeric ones without leading zeros. Numeric identifiers compare as
/// numbers, which node-semver's `Identifier` ordering already does.
fn prerelease_identifiers(pre: &str) -> Option<Vec<Identifier>> {
    pre.split('.')
        .map(|part| {
            if !is_identifier(part) || (is_digits(part) && has_leading_zero(part)) {
                return None;
            }
            Some(identifier(part))
        })
        .collect()
}

fn build_identifiers(build: &str) -> Option<Vec<Identifier>> {
    build
        .split('.')
        .map(|part| is_identifier(part).then(|| identifier(part)))
        .collect()
}

fn identifier(part: &str) -> Identifier {
    match part.parse::<u64>() {
        Ok(n) if is_digits(part) => Identifier::Numeric(n),
        _ => Identifier::AlphaNumeric(part.to_string()),
    }
}

// ---------------------------------------------------------------------------
// Ranges
//
// node-semver's own `Range` speaks npm's dialect, which differs from what Flux
// users write in ways a textual rewrite cannot fix: it silently drops tokens it
// does not understand, has no `!=`, admits a prerelease only when a comparator
// has the same major.minor.patch (Masterminds admits any prerelease once the
// group names one, which Flux's own `^1.x-0` example relies on), and turns an
// AND-group with an empty intersection into an OR. So the constraint grammar
// and its evaluation live here, on top of node-semver's `Version` ordering.

/// Masterminds' `MaxConstraintLen`.
const MAX_RANGE_LEN: usize = 512;

/// A parsed `semver.range`: OR of AND-groups.
#[derive(Debug, Clone)]
struct SemverRange {
    groups: Vec<Group>,
}

#[derive(Debug, Clone)]
struct Group {
    comparators: Vec<Comparator>,
    /// Some comparator names a prerelease, which opts the whole group into
    /// matching prerelease versions.
    admits_prerelease: bool,
}

#[derive(Debug, Clone)]
struct Comparator {
    op: Op,
    version: Version,
    wildcard: Wildcard,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Tilde,
    Caret,
}

/// Which component of a constraint version was a wildcard or left out; the
/// components after it are zero in `Comparator::version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wildcard {
    /// `1.2.3`
    None,
    /// `1.2`, `1.2.x`
    Patch,
    /// `1`, `1.x`
    Minor,
    /// `*`, `x`
    Major,
}

impl SemverRange {
    fn parse(range: &str) -> Result<SemverRange, PolicyError> {
        let invalid = |reason: String| PolicyError::InvalidRange {
            range: range.to_string(),
            reason,
        };
        if range.len() > MAX_RANGE_LEN {
            return Err(invalid(format!("longer than {MAX_RANGE_LEN} bytes")));
        }
        let groups = range
            .split("||")
            .map(|group| parse_group(group).map_err(&invalid))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SemverRange { groups })
    }

    fn matches(&self, version: &Version) -> bool {
        self.groups.iter().any(|group| {
            (!version.is_prerelease() || group.admits_prerelease)
                && group.comparators.iter().all(|c| c.matches(version))
        })
    }
}

fn parse_group(text: &str) -> Result<Group, String> {
    let mut scanner = Scanner { rest: text };
    scanner.skip_space();
    if scanner.rest.is_empty() {
        return Err(format!("empty constraint in {:?}", text.trim()));
    }
    let mut comparators = Vec::new();
    loop {
        let start = scanner.rest;
        let op = scanner.op();
        scanner.skip_space();
        let (version, wildcard) = scanner.version()?;
        // `A - B` is only a range when A has no operator, as in Masterminds.
        if op.is_none() && scanner.hyphen() {
            let (upper, upper_wildcard) = scanner.version()?;
            comparators.push(Comparator {
                op: Op::Ge,
                version,
                wildcard,
            });
            comparators.push(Comparator {
                op: Op::Le,
                version: upper,
                wildcard: upper_wildcard,
            });
        } else {
            comparators.push(Comparator {
                op: op.unwrap_or(Op::Eq),
                version,
                wildcard,
            });
        }
        let before_space = scanner.rest.len();
        scanner.skip_space();
        if scanner.rest.is_empty() {
            break;
        }
        if let Some(after) = scanner.rest.strip_prefix(',') {
            scanner.rest = after;
            scanner.skip_space();
            if scanner.rest.is_empty() {
                return Err("trailing comma".to_string());
            }
        } else if scanner.rest.len() == before_space {
            let consumed = &start[..start.len() - scanner.rest.len()];
            return Err(format!(
                "unexpected {:?} after {:?}",
                scanner.rest.trim(),
                consumed.trim()
            ));
        }
    }
    let admits_prerelease = comparators.iter().any(|c| c.version.is_prerelease());
    Ok(Group {
        comparators,
        admits_prerelease,
    })
}

struct Scanner<'a> {
    rest: &'a str,
}

impl<'a> Scanner<'a> {
    fn skip_space(&mut self) {
        self.rest = self
            .rest
            .trim_start_matches([' ', '\t', '\n', '\r', '\x0c']);
    }

    fn op(&mut self) -> Option<Op> {
        // Two-character operators first so `>=` is not read as `>`.
        const OPS: [(&str, Op); 11] = [
            ("!=", Op::Ne),
            (">=", Op::Ge),
            ("=>", Op::Ge),
            ("<=", Op::Le),
            ("=<", Op::Le),
            // Masterminds reads `~>` as `~` (not Ruby's pessimistic operator).
            ("~>", Op::Tilde),
            ("=", Op::Eq),
            (">", Op::Gt),
            ("<", Op::Lt),
            ("~", Op::Tilde),
            ("^", Op::Caret),
        ];
        for (text, op) in OPS {
            if let Some(after) = self.rest.strip_prefix(text) {
                self.rest = after;
                return Some(op);
            }
        }
        None
    }

    /// Consumes ` - ` (whitespace on both sides) if it comes next.
    fn hyphen(&mut self) -> bool {
        let trimmed = self.rest.trim_start();
        if trimmed.len() == self.rest.len() {
            return false;
        }
        match trimmed.strip_prefix('-') {
            Some(after) if after.starts_with(char::is_whitespace) => {
                self.rest = after.trim_start();
                true
            }
            _ => false,
        }
    }

    /// `v? seg(.seg){0,2} (-pre)? (+build)?` where a segment is digits or one
    /// of `x`, `X`, `*`.
    fn version(&mut self) -> Result<(Version, Wildcard), String> {
        let start = self.rest;
        let mut s = self.rest.strip_prefix('v').unwrap_or(self.rest);
        let mut segments: Vec<&str> = Vec::with_capacity(3);
        loop {
            let end = s
                .find(|c: char| !(c.is_ascii_digit() || matches!(c, 'x' | 'X' | '*')))
                .unwrap_or(s.len());
            if end == 0 {
                let found = start.split_whitespace().next().unwrap_or("");
                return Err(if found.is_empty() {
                    "missing version".to_string()
                } else {
                    format!("{found:?} is not a version constraint")
                });
            }
            segments.push(&s[..end]);
            s = &s[end..];
            let next_is_segment = s
                .strip_prefix('.')
                .and_then(|after| after.chars().next())
                .is_some_and(|c| c.is_ascii_digit() || matches!(c, 'x' | 'X' | '*'));
            if segments.len() == 3 || !next_is_segment {
                break;
            }
            s = &s[1..];
        }
        // A `-` or `+` not followed by an identifier is left for the caller
        // to reject, so `1.2.3-` is an error rather than `1.2.3`.
        let mut pre = "";
        if let Some(after) = s.strip_prefix('-') {
            let end = identifiers_end(after);
            if end > 0 {
                pre = &after[..end];
                s = &after[end..];
            }
        }
        if let Some(after) = s.strip_prefix('+') {
            // Build metadata never affects matching.
            let end = identifiers_end(after);
            if end > 0 {
                s = &after[end..];
            }
        }
        let text = &start[..start.len() - s.len()];
        self.rest = s;

        let is_x = |seg: &str| matches!(seg, "x" | "X" | "*");
        let number = |seg: &str| -> Result<u64, String> {
            if !is_digits(seg) {
                return Err(format!("{text:?}: {seg:?} is not a number or wildcard"));
            }
            seg.parse()
                .map_err(|_| format!("{text:?}: {seg:?} is too large"))
        };
        let (wildcard, numbers) = if is_x(segments[0]) {
            (Wildcard::Major, [0, 0, 0])
        } else if segments.len() < 2 || is_x(segments[1]) {
            (Wildcard::Minor, [number(segments[0])?, 0, 0])
        } else if segments.len() < 3 || is_x(segments[2]) {
            (
                Wildcard::Patch,
                [number(segments[0])?, number(segments[1])?, 0],
            )
        } else {
            (
                Wildcard::None,
                [
                    number(segments[0])?,
                    number(segments[1])?,
                    number(segments[2])?,
                ],
            )
        };
        let pre_release = if pre.is_empty() {
            Vec::new()
        } else {
            prerelease_identifiers(pre)
                .ok_or_else(|| format!("{text:?}: invalid prerelease {pre:?}"))?
        };
        let version = Version {
            major: numbers[0],
            minor: numbers[1],
            patch: numbers[2],
            pre_release,
            build: Vec::new(),
        };
        Ok((version, wildcard))
    }
}

/// Length of the dot-separated `[0-9A-Za-z-]+` identifiers at the start of `s`.
fn identifiers_end(s: &str) -> usize {
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'-';
    let bytes = s.as_bytes();
    let mut end = 0;
    loop {
        let start = end;
        while end < bytes.len() && is_ident(bytes[end]) {
            end += 1;
        }
        if end == start {
            return start;
        }
        if end + 1 < bytes.len() && bytes[end] == b'.' && is_ident(bytes[end + 1]) {
            end += 1;
            continue;
        }
        return end;
    }
}

impl Comparator {
    /// Mirrors Masterminds v3 comparator semantics, including how a wildcard
    /// widens each operator (`>1.2` means `>=1.3.0`, `<=1.2` means `<1.3.0`).
    fn matches(&self, v: &Version) -> bool {
        let c = &self.version;
        let ord = v.cmp(c);
        let dirty = self.wildcard != Wildcard::None;
        let minor_dirty = self.wildcard == Wildcard::Minor;
        match self.op {
            Op::Eq if dirty => self.tilde(v),
            Op::Eq => ord == Ordering::Equal,
            Op::Ne => match self.wildcard {
                Wildcard::None | Wildcard::Major => ord != Ordering::Equal,
                Wildcard::Minor => v.major != c.major,
                Wildcard::Patch => {
                    v.major != c.major || v.minor != c.minor || v.pre_release != c.pre_release
                }
            },
            Op::Gt => {
                if !dirty || self.wildcard == Wildcard::Major {
                    ord == Ordering::Greater
                } else if v.major != c.major {
                    v.major > c.major
                } else if minor_dirty {
                    false
                } else {
                    v.minor > c.minor
                }
            }
            Op::Lt => ord == Ordering::Less,
            Op::Ge => ord != Ordering::Less,
            Op::Le => {
                if !dirty {
                    ord != Ordering::Greater
                } else if self.wildcard == Wildcard::Major {
                    // `<=*`: documented as "any"; Masterminds' code would
                    // restrict it to 0.x.
                    true
                } else if v.major != c.major {
                    v.major < c.major
                } else {
                    minor_dirty || v.minor <= c.minor
                }
            }
            Op::Tilde => self.tilde(v),
            Op::Caret => self.caret(v),
        }
    }

    /// `~1.2.3` / `~1.2` → same major.minor; `~1` → same major; `~*` → any.
    fn tilde(&self, v: &Version) -> bool {
        let c = &self.version;
        if v < c {
            return false;
        }
        match self.wildcard {
            Wildcard::Major => true,
            Wildcard::Minor => v.major == c.major,
            Wildcard::Patch => v.major == c.major && v.minor == c.minor,
            // Masterminds: `~0.0.0` accepts everything.
            Wildcard::None if c.major == 0 && c.minor == 0 && c.patch == 0 => true,
            Wildcard::None => v.major == c.major && v.minor == c.minor,
        }
    }

    /// `^` keeps the left-most non-zero component fixed.
    fn caret(&self, v: &Version) -> bool {
        let c = &self.version;
        if self.wildcard == Wildcard::Major {
            // `^*` is documented as "any".
            return true;
        }
        if v < c {
            return false;
        }
        if c.major > 0 || self.wildcard == Wildcard::Minor {
            return v.major == c.major;
        }
        if v.major > 0 {
            return false;
        }
        if c.minor > 0 || self.wildcard == Wildcard::Patch {
            return v.minor == c.minor;
        }
        v.minor == 0 && v.patch == c.patch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn semver(range: &str) -> Policy {
        Policy::new(
            Choice::Semver {
                range: range.to_string(),
            },
            TagFilter::default(),
        )
        .unwrap()
    }

    fn pick_semver(range: &str, list: &[&str]) -> Option<String> {
        semver(range).select(&tags(list)).unwrap()
    }

    fn matches(range: &str, version: &str) -> bool {
        let range = SemverRange::parse(range).unwrap();
        let version = parse_tag_version(version, true).unwrap();
        range.matches(&version)
    }

    #[test]
    fn order_parse() {
        assert_eq!(Order::parse("").unwrap(), Order::Asc);
        assert_eq!(Order::parse("asc").unwrap(), Order::Asc);
        assert_eq!(Order::parse("ASC").unwrap(), Order::Asc);
        assert_eq!(Order::parse("Desc").unwrap(), Order::Desc);
        let err = Order::parse("up").unwrap_err().to_string();
        assert_eq!(err, "invalid order \"up\": must be \"asc\" or \"desc\"");
    }

    #[test]
    fn seed_filter_extract_numerical() {
        let policy = Policy::new(
            Choice::Numerical { order: Order::Asc },
            TagFilter {
                pattern: Some("^master-[a-f0-9]+-(?P<ts>[0-9]+)".to_string()),
                extract: Some("$ts".to_string()),
            },
        )
        .unwrap();
        let list = tags(&[
            "master-abc1234-1700000000",
            "master-abc1234-1700000001",
            "master-def5678-1699999999",
            "feature-x-1800000000",
        ]);
        assert_eq!(
            policy.select(&list).unwrap().as_deref(),
            Some("master-abc1234-1700000001")
        );
    }

    #[test]
    fn extract_syntaxes() {
        let list = tags(&["build-10-a", "build-9-b", "other-99"]);
        for extract in ["$n", "${n}", "$1"] {
            let policy = Policy::new(
                Choice::Numerical { order: Order::Asc },
                TagFilter {
                    pattern: Some(r"^build-(?P<n>\d+)-".to_string()),
                    extract: Some(extract.to_string()),
                },
            )
            .unwrap();
            assert_eq!(
                policy.select(&list).unwrap().as_deref(),
                Some("build-10-a"),
                "{extract}"
            );
        }
    }

    #[test]
    fn filter_without_extract_compares_tags() {
        let policy = Policy::new(
            Choice::Alphabetical { order: Order::Asc },
            TagFilter {
                pattern: Some("^main-".to_string()),
                extract: None,
            },
        )
        .unwrap();
        let list = tags(&["main-a", "main-c", "main-b", "zzz"]);
        assert_eq!(policy.select(&list).unwrap().as_deref(), Some("main-c"));
    }

    #[test]
    fn pattern_is_unanchored_like_go() {
        let policy = Policy::new(
            Choice::Alphabetical { order: Order::Asc },
            TagFilter {
                pattern: Some("rc".to_string()),
                extract: None,
            },
        )
        .unwrap();
        let list = tags(&["1.0.0-rc.1", "1.0.0", "2.0.0-rc.1"]);
        assert_eq!(policy.select(&list).unwrap().as_deref(), Some("2.0.0-rc.1"));
    }

    #[test]
    fn flux_doc_minio_alphabetical_extract() {
        // docs/spec/v1/imagepolicies.md: RELEASE.<RFC3339-TIMESTAMP>, alphabetical asc.
        let policy = Policy::new(
            Choice::Alphabetical { order: Order::Asc },
            TagFilter {
                pattern: Some(r"^RELEASE\.(?P<timestamp>.*)Z$".to_string()),
                extract: Some("$timestamp".to_string()),
            },
        )
        .unwrap();
        let list = tags(&[
            "RELEASE.2023-01-31T02-24-19Z",
            "RELEASE.2023-02-10T18-48-39Z",
            "RELEASE.2022-12-12T19-27-27Z",
            "latest",
        ]);
        assert_eq!(
            policy.select(&list).unwrap().as_deref(),
            Some("RELEASE.2023-02-10T18-48-39Z")
        );
    }

    #[test]
    fn alphabetical_orders() {
        // Flux docs: "Given the letters of the alphabet as tags, ascending
        // order would select Z, and descending order would select A."
        let letters = tags(&["B", "Z", "A", "M"]);
        let asc = Policy::new(
            Choice::Alphabetical { order: Order::Asc },
            TagFilter::default(),
        )
        .unwrap();
        let desc = Policy::new(
            Choice::Alphabetical { order: Order::Desc },
            TagFilter::default(),
        )
        .unwrap();
        assert_eq!(asc.select(&letters).unwrap().as_deref(), Some("Z"));
        assert_eq!(desc.select(&letters).unwrap().as_deref(), Some("A"));
        // Byte order, as Go's sort.Strings: upper case sorts before lower case.
        let mixed = tags(&["a", "B"]);
        assert_eq!(asc.select(&mixed).unwrap().as_deref(), Some("a"));
    }

    #[test]
    fn numerical_orders() {
        let list = tags(&["1", "10", "9", "2.5", "-3", "1e1"]);
        let asc = Policy::new(
            Choice::Numerical { order: Order::Asc },
            TagFilter::default(),
        )
        .unwrap();
        let desc = Policy::new(
            Choice::Numerical { order: Order::Desc },
            TagFilter::default(),
        )
        .unwrap();
        // 10 and 1e1 tie; the byte-wise greater tag wins.
        assert_eq!(asc.select(&list).unwrap().as_deref(), Some("1e1"));
        assert_eq!(desc.select(&list).unwrap().as_deref(), Some("-3"));
        let list = tags(&["0.1", "0.25", "0.125"]);
        assert_eq!(asc.select(&list).unwrap().as_deref(), Some("0.25"));
    }

    #[test]
    fn numerical_error_names_tag() {
        let policy = Policy::new(
            Choice::Numerical { order: Order::Asc },
            TagFilter::default(),
        )
        .unwrap();
        let err = policy.select(&tags(&["1", "abc", "2"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tag \"abc\" is not a number (numerical policy)"
        );
        let err = policy.select(&tags(&["NaN"])).unwrap_err();
        assert!(matches!(err, PolicyError::NotANumber { .. }));

        let policy = Policy::new(
            Choice::Numerical { order: Order::Asc },
            TagFilter {
                pattern: Some("^v(.*)$".to_string()),
                extract: Some("$1".to_string()),
            },
        )
        .unwrap();
        let err = policy.select(&tags(&["v12", "vx"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tag \"vx\" (extracted value \"x\") is not a number (numerical policy)"
        );
        // Tags removed by the filter are never parsed.
        assert_eq!(
            policy.select(&tags(&["v12", "nope"])).unwrap().as_deref(),
            Some("v12")
        );
    }

    #[test]
    fn ties_on_extracted_value_are_deterministic() {
        let policy = Policy::new(
            Choice::Numerical { order: Order::Asc },
            TagFilter {
                pattern: Some(r"-(\d+)$".to_string()),
                extract: Some("$1".to_string()),
            },
        )
        .unwrap();
        let a = tags(&["main-aaa-5", "main-bbb-5", "main-ccc-4"]);
        let b = tags(&["main-bbb-5", "main-aaa-5", "main-ccc-4"]);
        assert_eq!(policy.select(&a).unwrap().as_deref(), Some("main-bbb-5"));
        assert_eq!(policy.select(&b).unwrap().as_deref(), Some("main-bbb-5"));
    }

    #[test]
    fn empty_and_fully_filtered_lists() {
        for choice in [
            Choice::Semver {
                range: ">=1.0.0".to_string(),
            },
            Choice::Alphabetical { order: Order::Asc },
            Choice::Numerical { order: Order::Desc },
        ] {
            let plain = Policy::new(choice.clone(), TagFilter::default()).unwrap();
            assert_eq!(plain.select(&[]).unwrap(), None);
            let filtered = Policy::new(
                choice,
                TagFilter {
                    pattern: Some("^nothing-matches$".to_string()),
                    extract: None,
                },
            )
            .unwrap();
            assert_eq!(filtered.select(&tags(&["1", "2.0.0"])).unwrap(), None);
        }
        assert_eq!(pick_semver(">=5.0.0", &["1.0.0", "latest"]), None);
    }

    #[test]
    fn malformed_pattern_and_extract() {
        let err = Policy::new(
            Choice::Alphabetical { order: Order::Asc },
            TagFilter {
                pattern: Some("(".to_string()),
                extract: None,
            },
        )
        .unwrap_err();
        assert!(matches!(err, PolicyError::InvalidPattern { .. }));
        assert!(
            err.to_string()
                .starts_with("invalid filterTags.pattern \"(\": "),
            "{err}"
        );

        let err = Policy::new(
            Choice::Alphabetical { order: Order::Asc },
            TagFilter {
                pattern: Some("^(?P<ts>[0-9]+)$".to_string()),
                extract: Some("$timestmp".to_string()),
            },
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid filterTags.extract \"$timestmp\": pattern \"^(?P<ts>[0-9]+)$\" has no capture group \"timestmp\""
        );
        let err = Policy::new(
            Choice::Alphabetical { order: Order::Asc },
            TagFilter {
                pattern: Some("^([0-9]+)$".to_string()),
                extract: Some("${2}".to_string()),
            },
        )
        .unwrap_err();
        assert!(matches!(err, PolicyError::InvalidExtract { .. }));
        let err = Policy::new(
            Choice::Alphabetical { order: Order::Asc },
            TagFilter {
                pattern: None,
                extract: Some("$1".to_string()),
            },
        )
        .unwrap_err();
        assert!(matches!(err, PolicyError::InvalidExtract { .. }));
        // `$$` is a literal dollar, and literal text is fine.
        assert!(
            Policy::new(
                Choice::Alphabetical { order: Order::Asc },
                TagFilter {
                    pattern: Some("^(.*)$".to_string()),
                    extract: Some("$$x-$1-${1}".to_string()),
                },
            )
            .is_ok()
        );
    }

    #[test]
    fn malformed_ranges() {
        for range in [
            "",
            "   ",
            "foo",
            ">=1.0.0 foo",
            ">= 1.0.0 ||",
            ">=1.0.0,",
            "1.2.",
            ">>1.0.0",
            "==1.0.0",
            "1.2.3-01",
            "1.2.3-",
            ">=1.2.3+",
            ">=a.b.c",
            "1..2",
            "1.x2",
            "99999999999999999999999",
        ] {
            let err = Policy::new(
                Choice::Semver {
                    range: range.to_string(),
                },
                TagFilter::default(),
            )
            .err()
            .unwrap_or_else(|| panic!("{range:?} should be rejected"));
            assert!(
                err.to_string()
                    .starts_with(&format!("invalid semver range {range:?}: ")),
                "{err}"
            );
        }
    }

    #[test]
    fn flux_doc_semver_examples() {
        // Example spec: range 5.1.x resolves to 5.1.4 over podinfo's tags.
        let podinfo = [
            "5.0.0", "5.0.3", "5.1.0", "5.1.1", "5.1.2", "5.1.3", "5.1.4", "5.2.0", "6.0.0",
        ];
        assert_eq!(pick_semver("5.1.x", &podinfo).as_deref(), Some("5.1.4"));
        // ">=1.0.0 ... will select the latest stable version tag."
        assert_eq!(
            pick_semver(">=1.0.0", &["1.0.0", "2.0.0-rc.1", "1.5.0", "latest"]).as_deref(),
            Some("1.5.0")
        );
        // Release candidates: filterTags .*-rc.* with range ^1.x-0.
        let policy = Policy::new(
            Choice::Semver {
                range: "^1.x-0".to_string(),
            },
            TagFilter {
                pattern: Some(".*-rc.*".to_string()),
                extract: None,
            },
        )
        .unwrap();
        let list = tags(&[
            "1.0.0-rc.1",
            "1.1.0-rc.1",
            "1.1.0-rc.2",
            "1.1.0",
            "2.0.0-rc.1",
        ]);
        assert_eq!(policy.select(&list).unwrap().as_deref(), Some("1.1.0-rc.2"));
    }

    #[test]
    fn masterminds_range_table() {
        let cases: &[(&str, &str, bool)] = &[
            // AND by space or comma, OR by ||
            (">=1.0.0 <2.0.0", "1.5.0", true),
            (">=1.0.0 <2.0.0", "2.0.0", false),
            (">=1.0.0, <2.0.0", "1.9.9", true),
            (">= 1.2, < 3.0.0 || >= 4.2.3", "3.1.0", false),
            (">= 1.2, < 3.0.0 || >= 4.2.3", "4.2.3", true),
            (">= 1.2, < 3.0.0 || >= 4.2.3", "1.2.0", true),
            ("<1.0.0 || >=3", "2.0.0", false),
            // wildcards and partials
            ("1.x", "1.9.0", true),
            ("1.x", "2.0.0", false),
            ("1.2.x", "1.2.9", true),
            ("1.2.x", "1.3.0", false),
            ("1.2", "1.2.7", true),
            ("*", "0.0.1", true),
            ("*", "99.0.0", true),
            (">= 1.2.x", "1.2.0", true),
            ("<= 2.x", "2.9.9", true),
            ("<= 2.x", "3.0.0", false),
            ("<=1.2", "1.2.9", true),
            ("<=1.2", "1.3.0", false),
            (">1.2", "1.2.9", false),
            (">1.2", "1.3.0", true),
            (">1", "1.9.0", false),
            (">1", "2.0.0", true),
            // exact
            ("=1.2.3", "1.2.3", true),
            ("=1.2.3", "1.2.4", false),
            ("1.2.3", "1.2.3+build.5", true),
            ("v1.2.3", "1.2.3", true),
            // not equal
            ("!=1.2.3", "1.2.4", true),
            ("!=1.2.3", "1.2.3", false),
            ("!=1.2.x", "1.2.5", false),
            ("!=1.2.x", "1.3.0", true),
            ("!=1.x", "1.5.0", false),
            (">=1.0.0 !=1.5.0", "1.5.0", false),
            // tilde
            ("~1.2.3", "1.2.9", true),
            ("~1.2.3", "1.3.0", false),
            ("~1.2.3", "1.2.2", false),
            ("~1.2", "1.2.0", true),
            ("~1.2", "1.3.0", false),
            ("~1", "1.9.0", true),
            ("~1", "2.0.0", false),
            ("~1.x", "1.4.0", true),
            // caret
            ("^1.2.3", "1.9.0", true),
            ("^1.2.3", "2.0.0", false),
            ("^1.2.3", "1.2.2", false),
            ("^1", "1.0.0", true),
            ("^1.2.x", "1.9.9", true),
            ("^2.x", "3.0.0", false),
            ("^0.2.3", "0.2.9", true),
            ("^0.2.3", "0.3.0", false),
            ("^0.2", "0.2.0", true),
            ("^0.0.3", "0.0.3", true),
            ("^0.0.3", "0.0.4", false),
            ("^0.0", "0.0.9", true),
            ("^0.0", "0.1.0", false),
            ("^0", "0.9.0", true),
            ("^0", "1.0.0", false),
            ("^*", "7.0.0", true),
            // hyphen ranges
            ("1.2 - 1.4.5", "1.2.0", true),
            ("1.2 - 1.4.5", "1.4.5", true),
            ("1.2 - 1.4.5", "1.4.6", false),
            ("2.3.4 - 4.5", "4.5.9", true),
            ("2.3.4 - 4.5", "4.6.0", false),
            // whitespace after operators
            (">= 1.0.0", "1.0.0", true),
            ("^ 1.2.0", "1.3.0", true),
        ];
        for (range, version, want) in cases {
            assert_eq!(matches(range, version), *want, "{range} vs {version}");
        }
    }

    #[test]
    fn tilde_arrow_is_tilde_as_in_flux() {
        let cases: &[(&str, &str, bool)] = &[
            ("~> 1.1", "1.1.0", true),
            ("~> 1.1", "1.1.9", true),
            ("~> 1.1", "1.9.3", false),
            ("~> 1.1", "2.0.0", false),
            ("~> 1.1", "1.0.9", false),
            ("~> 1.1.3", "1.1.3", true),
            ("~> 1.1.3", "1.1.9", true),
            ("~> 1.1.3", "1.2.0", false),
            ("~> 1.1.3", "1.1.2", false),
            ("~> 1", "1.0.0", true),
            ("~> 1", "1.99.0", true),
            ("~> 1", "2.0.0", false),
            ("~>1.1", "1.5.0", false),
            ("~>1.1", "1.1.5", true),
            ("~> 1.1.3-rc.1", "1.1.3-rc.2", true),
            ("~> 1.1.3-rc.1", "1.2.0-rc.1", false),
        ];
        for (range, version, want) in cases {
            assert_eq!(matches(range, version), *want, "{range} vs {version}");
        }
        assert_eq!(
            pick_semver("~> 1.1", &["1.0.0", "1.1.0", "1.1.4", "1.7.2", "2.0.0"]).as_deref(),
            Some("1.1.4")
        );
    }

    #[test]
    fn prerelease_handling() {
        let cases: &[(&str, &str, bool)] = &[
            // No prerelease in the range: prereleases never match.
            (">=1.0.0", "1.5.0-beta", false),
            ("^1.0.0", "1.5.0-beta", false),
            ("*", "1.0.0-rc.1", false),
            // A prerelease comparator opts the whole AND-group in (Masterminds v3.4).
            (">=1.0.0-0", "1.5.0-beta", true),
            (">=1.0.0-0 <2.0.0", "1.5.0-beta", true),
            (">=1.0.0-0 <2.0.0", "2.0.0-rc.1", true),
            (">=1.2.3-alpha", "1.2.3-beta", true),
            (">=1.2.3-beta", "1.2.3-alpha", false),
            ("^1.x-0", "1.3.0-rc.1", true),
            ("^1.x-0", "2.0.0-rc.1", false),
            // ... but not across `||`.
            (">=1.0.0-0 <2.0.0 || >=3.0.0", "3.1.0-rc.1", false),
            (">=1.0.0-0 <2.0.0 || >=3.0.0", "1.1.0-rc.1", true),
            // Precedence within prereleases: numeric < alphanumeric, numeric by value.
            (">1.0.0-rc.2", "1.0.0-rc.10", true),
            (">1.0.0-rc.2", "1.0.0-rc.1", false),
            (">1.0.0-2", "1.0.0-alpha", true),
        ];
        for (range, version, want) in cases {
            assert_eq!(matches(range, version), *want, "{range} vs {version}");
        }
        let list = ["1.0.0", "1.1.0-rc.1", "1.1.0-rc.10", "1.1.0-rc.9"];
        assert_eq!(pick_semver(">=1.0.0", &list).as_deref(), Some("1.0.0"));
        assert_eq!(
            pick_semver(">=1.0.0-0", &list).as_deref(),
            Some("1.1.0-rc.10")
        );
        // The release outranks its own prereleases.
        assert_eq!(
            pick_semver(">=1.0.0-0", &["1.1.0-rc.1", "1.1.0"]).as_deref(),
            Some("1.1.0")
        );
    }

    #[test]
    fn v_prefix_and_strictness() {
        // One leading `v` is accepted (Flux's ParseVersion); the original tag is returned.
        assert_eq!(
            pick_semver(">=1.0.0", &["v1.2.3", "v1.10.0", "1.9.0"]).as_deref(),
            Some("v1.10.0")
        );
        // Not versions for Flux: partials, leading zeros, `V`, `vv`, junk.
        let junk = [
            "1.2",
            "v3",
            "01.2.3",
            "1.02.3",
            "V1.2.3",
            "vv1.2.3",
            "1.2.3.4",
            "latest",
            "1.2.3-",
            "1.2.3+",
            "1.2.3-a..b",
            "1.2.3-01",
            "",
        ];
        for tag in junk {
            assert_eq!(parse_tag_version(tag, false), None, "{tag:?}");
        }
        assert_eq!(pick_semver(">=1.0.0", &junk), None);
        // Date-like tags are only versions when they are full x.y.z.
        assert_eq!(
            pick_semver(">=1.0.0", &["20240101", "2024.01.02", "2022.4.0"]).as_deref(),
            Some("2022.4.0")
        );
    }

    #[test]
    fn lenient_versions_opt_in() {
        let policy = semver("^1.1").lenient_versions(true);
        let list = tags(&["1.0", "1.1", "1.2", "v1.3", "2.0", "01.4.0"]);
        assert_eq!(policy.select(&list).unwrap().as_deref(), Some("01.4.0"));
        let list = tags(&["1.1", "1.2", "v1.3", "2"]);
        assert_eq!(policy.select(&list).unwrap().as_deref(), Some("v1.3"));
        assert_eq!(semver("^1.1").select(&list).unwrap(), None);
        assert_eq!(
            parse_tag_version("v1.2-rc.1", true),
            parse_tag_version("1.2.0-rc.1", false)
        );
    }

    #[test]
    fn equal_versions_tie_break_on_tag() {
        let list = ["1.2.3", "v1.2.3", "1.2.3+b", "1.2.3+a"];
        assert_eq!(pick_semver("1.2.3", &list).as_deref(), Some("v1.2.3"));
        let mut reversed = list;
        reversed.reverse();
        assert_eq!(pick_semver("1.2.3", &reversed).as_deref(), Some("v1.2.3"));
    }

    #[test]
    fn large_numbers_are_versions() {
        // Beyond node-semver's MAX_SAFE_INTEGER, still a valid semver (Masterminds uses u64).
        assert_eq!(
            pick_semver(">=1.0.0", &["1700000000000000.0.0", "2.0.0"]).as_deref(),
            Some("1700000000000000.0.0")
        );
    }
}

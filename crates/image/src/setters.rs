//! Flux-style image setters: rewrite the YAML fields that carry an
//! `$imagepolicy` marker comment with the image their policy currently
//! points at, leaving every other byte of the file alone.
//!
//! The behaviour follows Flux's image-automation-controller
//! (`update.strategy: Setters`, guide "Configure image update for custom
//! resources", and the v2.6 digest-pinning notes):
//!
//! * A marker is a line comment holding a JSON object whose `$imagepolicy`
//!   member is `<namespace>:<name>` (whole reference), or that followed by
//!   `:tag`, `:name` or `:digest`. Like Flux, the comment text is stripped of
//!   its leading `#`s and parsed as JSON, so any JSON spacing works
//!   (`#{"$imagepolicy":"ns:app"}`, `# { "$imagepolicy" : "ns:app" }`).
//! * The whole-reference form writes `<name>:<tag>`, or
//!   `<name>:<tag>@<digest>` when the policy reports a digest (Flux v2.6,
//!   `digestReflectionPolicy`). A `:digest` marker whose policy reports no
//!   digest is left alone (Flux's setter would write an empty digest).
//! * Only the field value on the marker's line is rewritten: a mapping value
//!   or a sequence item that is a single-line plain, single- or
//!   double-quoted scalar. Markers elsewhere (after a key with a nested
//!   collection, a block scalar header, an alias, a comment on a line of its
//!   own) are ignored with a warning, as Flux's kyaml filter only visits
//!   scalar values.
//! * Files are screened for the text `$imagepolicy` before being parsed, as
//!   Flux's reader does, so Helm templates and other non-YAML files that
//!   merely end in `.yaml` are never reported as unparseable.
//!
//! Choices where Flux is silent or where Ferry deliberately differs:
//!
//! * Single-quoted markers (`# {'$imagepolicy':'default:apps'}`, as written
//!   in the KubeVela write-up Ferry follows) are accepted when the comment
//!   holds no double quote at all. Flux ignores them: its reader screens for
//!   the double-quoted token and its parser is strict JSON.
//! * A marker after a key with no value (`image: # {...}`, or `- # {...}`)
//!   gets the value filled in, which is what the marker's author asked for.
//!   Flux most likely leaves such a field empty: go-yaml attaches that
//!   comment to the key, and Flux's filter only reads comments on values.
//! * A malformed marker (`"app"`, `"ns:app:version"`, a non-string value) is
//!   an error for its file ([`SetterError::MalformedMarker`]), so the file is
//!   reported and left untouched instead of half-updated. Flux ignores it.
//! * A marker whose policy the lookup does not know is reported as
//!   [`Unresolved`] and its field is left alone.
//! * yaml-edit accepts some input that YAML parsers reject (two top-level
//!   nodes in a document, `a: b: c`, entries of one collection at different
//!   indentations, tab indentation), so those are checked here too and
//!   reported as parse errors: a file Kubernetes could not read must not be
//!   rewritten as if it were understood.
//! * A new value keeps the old scalar's quoting style. A plain scalar becomes
//!   double-quoted only when the new value would not read back as the same
//!   string under YAML 1.1 (what Kubernetes and Helm use), e.g. a tag `1.10`;
//!   Flux does the same (`FormatNonStringStyle`).

use std::collections::HashMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;
use yaml_edit::{AsYaml, Document, Mapping, SyntaxKind, YamlFile, YamlNode};

/// The text every marker contains; files without it are not parsed at all.
const MARKER_KEY: &str = "$imagepolicy";

/// Which part of the policy's latest image a marker asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// `<namespace>:<name>`: the whole reference, `<image>:<tag>[@<digest>]`.
    Image,
    /// `<namespace>:<name>:tag`.
    Tag,
    /// `<namespace>:<name>:name`: the image name without tag or digest.
    Name,
    /// `<namespace>:<name>:digest`.
    Digest,
}

/// The ImagePolicy a marker names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyRef {
    pub namespace: String,
    pub name: String,
}

/// What a policy currently points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatestImage {
    /// The image name, e.g. `127.0.0.1:5000/app`.
    pub name: String,
    pub tag: String,
    pub digest: Option<String>,
}

impl LatestImage {
    /// The whole reference a `<namespace>:<name>` marker is set to:
    /// `<name>:<tag>`, with `@<digest>` appended when there is a digest.
    pub fn reference(&self) -> String {
        let mut out = self.name.clone();
        if !self.tag.is_empty() {
            out.push(':');
            out.push_str(&self.tag);
        }
        if let Some(digest) = self.digest.as_deref().filter(|d| !d.is_empty()) {
            out.push('@');
            out.push_str(digest);
        }
        out
    }

    fn value_for(&self, field: Field) -> Option<String> {
        match field {
            Field::Image => Some(self.reference()),
            Field::Tag => Some(self.tag.clone()),
            Field::Name => Some(self.name.clone()),
            Field::Digest => self.digest.clone().filter(|d| !d.is_empty()),
        }
    }
}

/// The Kubernetes object a change was made in, for `.Changed.ObjectChanges`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectId {
    pub api_version: String,
    pub kind: String,
    /// Empty when the object has no `metadata.namespace`.
    pub namespace: String,
    pub name: String,
}

/// One field rewritten by a setter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The path relative to the walk root, `/`-separated.
    pub file: String,
    /// 1-based line of the marker.
    pub line: usize,
    pub old_value: String,
    pub new_value: String,
    /// The marker text, e.g. `flux-system:app:tag`.
    pub setter: String,
    pub policy: PolicyRef,
    pub field: Field,
    /// The enclosing document's apiVersion/kind/namespace/name, when the
    /// document is a Kubernetes object (has `apiVersion` and `kind`).
    pub object: Option<ObjectId>,
}

/// A marker whose policy the lookup did not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    pub file: String,
    pub line: usize,
    pub policy: PolicyRef,
}

#[derive(Debug, thiserror::Error)]
pub enum SetterError {
    #[error("{file}: cannot parse YAML: {message}")]
    Parse { file: String, message: String },

    #[error("{file}:{line}: malformed $imagepolicy marker {setter:?}: {reason}")]
    MalformedMarker {
        file: String,
        line: usize,
        setter: String,
        reason: &'static str,
    },

    #[error("{file}: not valid UTF-8")]
    NotUtf8 { file: String },

    #[error("invalid update path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },

    #[error("update path {path:?} resolves outside the repository root")]
    PathEscapesRoot { path: String },

    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl SetterError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        SetterError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// The reason recorded in [`DirUpdate::skipped`], without the file name
    /// the skipped entry already carries.
    fn skip_reason(&self) -> String {
        match self {
            SetterError::Parse { message, .. } => format!("cannot parse YAML: {message}"),
            SetterError::MalformedMarker {
                line,
                setter,
                reason,
                ..
            } => format!("line {line}: malformed $imagepolicy marker {setter:?}: {reason}"),
            SetterError::NotUtf8 { .. } => "not valid UTF-8".to_string(),
            other => other.to_string(),
        }
    }
}

/// Rewrites one file's text. `file` is only used in the returned records.
///
/// Returns the new text (identical to `text` when nothing changed), the
/// changes made and the markers whose policy `lookup` did not know.
pub fn update_text(
    file: &str,
    text: &str,
    lookup: &dyn Fn(&PolicyRef) -> Option<LatestImage>,
) -> Result<(String, Vec<Change>, Vec<Unresolved>), SetterError> {
    if !text.contains(MARKER_KEY) {
        return Ok((text.to_string(), Vec::new(), Vec::new()));
    }
    let parse_error = |message: String| SetterError::Parse {
        file: file.to_string(),
        message,
    };

    let parsed = YamlFile::parse(text);
    if let Some(first) = parsed.errors().into_iter().next() {
        return Err(parse_error(first));
    }
    let yaml = parsed.tree();
    let lines = LineIndex::new(text);
    let tree = Tree::build(&yaml, text).map_err(parse_error)?;
    tree.validate(text, &lines).map_err(parse_error)?;
    let objects = document_objects(&yaml);

    let mut edits: Vec<Edit> = Vec::new();
    let mut changes = Vec::new();
    let mut unresolved = Vec::new();
    for (position, &comment) in tree.tokens.iter().enumerate() {
        let elem = &tree.elems[comment];
        if elem.kind != SyntaxKind::COMMENT {
            continue;
        }
        let line = lines.line(elem.start);
        let setter = match parse_marker(&text[elem.start..elem.end]) {
            MarkerText::Absent => continue,
            MarkerText::Unparsed => {
                tracing::warn!(
                    file,
                    line,
                    "comment mentions $imagepolicy but is not a JSON marker; ignored"
                );
                continue;
            }
            MarkerText::Setter(setter) => setter,
        };
        let (policy, field) =
            parse_setter(&setter).map_err(|reason| SetterError::MalformedMarker {
                file: file.to_string(),
                line,
                setter: setter.clone(),
                reason,
            })?;
        let target = match tree.marker_target(position, text) {
            Ok(target) => target,
            Err(why) => {
                tracing::warn!(file, line, setter, "$imagepolicy marker ignored: {why}");
                continue;
            }
        };
        let Some(latest) = lookup(&policy) else {
            unresolved.push(Unresolved {
                file: file.to_string(),
                line,
                policy,
            });
            continue;
        };
        let Some(new_value) = latest.value_for(field) else {
            tracing::warn!(
                file,
                line,
                setter,
                "policy reports no digest; digest marker left unchanged"
            );
            continue;
        };
        let (old_value, edit) = match target {
            Target::Scalar(index) => {
                let scalar = &tree.elems[index];
                let old = scalar.scalar_value.clone().unwrap_or_default();
                let style = Style::of(&text[scalar.start..scalar.end]);
                let edit = Edit {
                    start: scalar.start,
                    end: scalar.end,
                    replacement: style.encode(&new_value),
                };
                (old, edit)
            }
            Target::Empty { insert_at } => {
                // The comment stays where it was, so the value needs its own
                // separating space before the `#`.
                let edit = Edit {
                    start: insert_at,
                    end: insert_at,
                    replacement: format!("{} ", Style::Plain.encode(&new_value)),
                };
                (String::new(), edit)
            }
        };
        if old_value == new_value {
            continue;
        }
        changes.push(Change {
            file: file.to_string(),
            line,
            old_value,
            new_value,
            setter,
            policy,
            field,
            object: tree.object_of(comment, &objects),
        });
        edits.push(edit);
    }

    Ok((splice(text, edits), changes, unresolved))
}

/// The outcome of [`update_dir`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirUpdate {
    /// Every change, in file then line order.
    pub changes: Vec<Change>,
    pub unresolved: Vec<Unresolved>,
    /// Files that could not be parsed, with the reason; they are left untouched.
    pub skipped: Vec<(String, String)>,
    /// Files rewritten on disk, relative to the root, `/`-separated.
    pub files_changed: Vec<String>,
}

/// Walks `root/path` (path relative, must not escape root — refuse `..` and
/// absolute/symlink escapes), rewrites `*.yaml`/`*.yml` files (and, like
/// Flux, files named `Kustomization`) in place, only writing files whose
/// bytes change, in sorted deterministic order; skips `.git`.
///
/// File names in the result are relative to `root` (the repository), so they
/// can be staged as they are. Symbolic links inside the walk are not
/// followed, so nothing outside the repository is read or written.
pub fn update_dir(
    root: &Path,
    path: &str,
    lookup: &dyn Fn(&PolicyRef) -> Option<LatestImage>,
) -> Result<DirUpdate, SetterError> {
    let relative = checked_relative(path)?;
    let canonical_root = std::fs::canonicalize(root).map_err(|e| SetterError::io(root, e))?;
    let joined = canonical_root.join(&relative);
    let start = std::fs::canonicalize(&joined).map_err(|e| SetterError::io(&joined, e))?;
    if !start.starts_with(&canonical_root) {
        return Err(SetterError::PathEscapesRoot {
            path: path.to_string(),
        });
    }

    let mut files = Vec::new();
    let meta = std::fs::metadata(&start).map_err(|e| SetterError::io(&start, e))?;
    if meta.is_dir() {
        collect_files(&start, &mut files)?;
    } else if is_candidate(&start) {
        files.push(start.clone());
    }
    let mut files: Vec<(String, PathBuf)> = files
        .into_iter()
        .map(|p| (relative_name(&canonical_root, &p), p))
        .collect();
    files.sort();

    let mut out = DirUpdate::default();
    for (name, full) in files {
        let bytes = std::fs::read(&full).map_err(|e| SetterError::io(&full, e))?;
        if !contains(&bytes, MARKER_KEY.as_bytes()) {
            continue;
        }
        let Ok(text) = std::str::from_utf8(&bytes) else {
            let err = SetterError::NotUtf8 { file: name.clone() };
            out.skipped.push((name, err.skip_reason()));
            continue;
        };
        match update_text(&name, text, lookup) {
            Ok((new_text, changes, unresolved)) => {
                if new_text != text {
                    std::fs::write(&full, new_text.as_bytes())
                        .map_err(|e| SetterError::io(&full, e))?;
                    out.files_changed.push(name);
                }
                out.changes.extend(changes);
                out.unresolved.extend(unresolved);
            }
            Err(err @ (SetterError::Parse { .. } | SetterError::MalformedMarker { .. })) => {
                tracing::warn!(file = name, "skipping file: {err}");
                out.skipped.push((name, err.skip_reason()));
            }
            Err(other) => return Err(other),
        }
    }
    Ok(out)
}

/// Lexically refuses anything but a plain relative path; symlink escapes are
/// caught after canonicalisation.
fn checked_relative(path: &str) -> Result<PathBuf, SetterError> {
    let invalid = |reason| SetterError::InvalidPath {
        path: path.to_string(),
        reason,
    };
    let mut out = PathBuf::new();
    for component in Path::new(path).components() {
        match component {
            Component::CurDir => {}
            Component::Normal(part) => out.push(part),
            Component::ParentDir => return Err(invalid("must not contain '..'")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(invalid("must be relative to the repository root"));
            }
        }
    }
    Ok(out)
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), SetterError> {
    let entries = std::fs::read_dir(dir).map_err(|e| SetterError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| SetterError::io(dir, e))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(|e| SetterError::io(&path, e))?;
        if file_type.is_symlink() {
            tracing::debug!(path = %path.display(), "not following symbolic link");
        } else if file_type.is_dir() {
            if entry.file_name() != ".git" {
                collect_files(&path, out)?;
            }
        } else if file_type.is_file() && is_candidate(&path) {
            out.push(path);
        }
    }
    Ok(())
}

fn is_candidate(path: &Path) -> bool {
    let ext = path.extension().and_then(|e| e.to_str());
    matches!(ext, Some("yaml" | "yml"))
        || path.file_name().and_then(|n| n.to_str()) == Some("Kustomization")
}

fn relative_name(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

enum MarkerText {
    /// Not about image policies at all.
    Absent,
    /// Mentions `$imagepolicy` but is no JSON object carrying it.
    Unparsed,
    /// The `$imagepolicy` member, as written (a non-string is rendered as
    /// JSON so the malformed-marker error can quote it).
    Setter(String),
}

fn parse_marker(comment: &str) -> MarkerText {
    let body = comment.trim_start_matches('#').trim();
    if !body.contains(MARKER_KEY) {
        return MarkerText::Absent;
    }
    type Object = serde_json::Map<String, serde_json::Value>;
    let object = serde_json::from_str::<Object>(body).ok().or_else(|| {
        // Only a comment with no double quote at all is read as the
        // single-quoted variant; anything else would need real unquoting.
        (!body.contains('"'))
            .then(|| serde_json::from_str::<Object>(&body.replace('\'', "\"")).ok())
            .flatten()
    });
    match object.as_ref().and_then(|o| o.get(MARKER_KEY)) {
        None => MarkerText::Unparsed,
        Some(serde_json::Value::String(s)) => MarkerText::Setter(s.clone()),
        Some(other) => MarkerText::Setter(other.to_string()),
    }
}

fn parse_setter(setter: &str) -> Result<(PolicyRef, Field), &'static str> {
    let parts: Vec<&str> = setter.split(':').collect();
    let field = match parts.as_slice() {
        [_, _] => Field::Image,
        [_, _, "tag"] => Field::Tag,
        [_, _, "name"] => Field::Name,
        [_, _, "digest"] => Field::Digest,
        [_, _, _] => return Err("the part after the policy must be tag, name or digest"),
        _ => return Err("expected <namespace>:<name>[:tag|:name|:digest]"),
    };
    if parts[..2].iter().any(|p| p.is_empty()) {
        return Err("namespace and policy name must not be empty");
    }
    if parts.iter().any(|p| p.chars().any(char::is_whitespace)) {
        return Err("must not contain white space");
    }
    Ok((
        PolicyRef {
            namespace: parts[0].to_string(),
            name: parts[1].to_string(),
        },
        field,
    ))
}

/// Where a marker's value goes.
enum Target {
    /// Replace this SCALAR element.
    Scalar(usize),
    /// The field has no value: insert one at this offset (the comment's).
    Empty { insert_at: usize },
}

struct Edit {
    start: usize,
    end: usize,
    replacement: String,
}

fn splice(text: &str, mut edits: Vec<Edit>) -> String {
    edits.sort_by_key(|e| (e.start, e.end));
    let mut out = String::with_capacity(text.len() + 64);
    let mut at = 0;
    for edit in edits {
        // Each scalar has at most one comment after it on its line, so edits
        // never overlap; skipping is only a guard against a tree surprise.
        if edit.start < at {
            continue;
        }
        out.push_str(&text[at..edit.start]);
        out.push_str(&edit.replacement);
        at = edit.end;
    }
    out.push_str(&text[at..]);
    out
}

/// The quoting style of an existing scalar, kept for its new value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Plain,
    Single,
    Double,
}

impl Style {
    fn of(raw: &str) -> Style {
        if raw.starts_with('\'') {
            Style::Single
        } else if raw.starts_with('"') {
            Style::Double
        } else {
            Style::Plain
        }
    }

    fn encode(self, value: &str) -> String {
        match self {
            Style::Plain if plain_is_safe(value) => value.to_string(),
            Style::Single if !value.chars().any(needs_escape) => {
                format!("'{}'", value.replace('\'', "''"))
            }
            _ => double_quoted(value),
        }
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{feff}' | '\u{2028}' | '\u{2029}')
}

fn double_quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if needs_escape(c) && (c as u32) <= 0xFFFF => {
                out.push_str(&format!("\\u{:04X}", c as u32));
            }
            c if needs_escape(c) => out.push_str(&format!("\\U{:08X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Plain scalars Kubernetes (go-yaml, YAML 1.1) or a YAML 1.2 reader would
/// resolve to something other than a string.
static NON_STRING: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?x)^(?:
            ~ | null | Null | NULL
          | y | Y | yes | Yes | YES | n | N | no | No | NO
          | true | True | TRUE | false | False | FALSE
          | on | On | ON | off | Off | OFF
          | [-+]? 0b [01_]+
          | [-+]? 0o? [0-7_]+
          | [-+]? 0x [0-9a-fA-F_]+
          | [-+]? (?: 0 | [1-9][0-9_]* )
          | [-+]? [1-9][0-9_]* (?: : [0-5]?[0-9] )+ (?: \. [0-9_]* )?
          | [-+]? (?: [0-9][0-9_]* )? \. [0-9_]* (?: [eE] [-+]? [0-9]+ )?
          | [-+]? [0-9][0-9_]* (?: \. [0-9_]* )? [eE] [-+]? [0-9]+
          | [-+]? \. (?: inf | Inf | INF )
          | \. (?: nan | NaN | NAN )
          | [0-9]{4} - [0-9]{1,2} - [0-9]{1,2} .*
          | << | =
        )$",
    )
    .expect("the non-string pattern is a valid regex")
});

/// Whether `value` can be written as a plain scalar and read back as the
/// same string, in block or flow context.
fn plain_is_safe(value: &str) -> bool {
    let Some(first) = value.chars().next() else {
        return false;
    };
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) || value.starts_with("...") {
        return false;
    }
    if value.starts_with(' ') || value.ends_with(' ') || value.ends_with(':') {
        return false;
    }
    if value.contains(": ") || value.contains(" #") {
        return false;
    }
    if value
        .chars()
        .any(|c| needs_escape(c) || matches!(c, ',' | '[' | ']' | '{' | '}'))
    {
        return false;
    }
    !NON_STRING.is_match(value)
}

/// 1-based line numbers and columns for byte offsets, counting `\n`, `\r\n`
/// and a lone `\r` as line ends like YAML does.
struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(text: &'a str) -> Self {
        let bytes = text.as_bytes();
        let mut starts = vec![0];
        for (i, &b) in bytes.iter().enumerate() {
            let ends_line = b == b'\n' || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n'));
            if ends_line {
                starts.push(i + 1);
            }
        }
        LineIndex { text, starts }
    }

    fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset)
    }

    /// 1-based column in characters; a byte order mark takes none.
    fn column(&self, offset: usize) -> usize {
        let start = self.starts[self.line(offset) - 1];
        let prefix = self.text.get(start..offset).unwrap_or_default();
        prefix.chars().filter(|&c| c != '\u{feff}').count() + 1
    }
}

/// yaml-edit's syntax tree copied into plain data. yaml-edit does not
/// re-export rowan's node types, so they cannot be named in signatures here;
/// copying kinds, ranges and parent links once keeps the rest ordinary code.
struct Tree {
    elems: Vec<Elem>,
    /// Indices of the token elements, in text order.
    tokens: Vec<usize>,
}

struct Elem {
    kind: SyntaxKind,
    start: usize,
    end: usize,
    parent: Option<usize>,
    /// Child elements (nodes and tokens) in text order.
    children: Vec<usize>,
    is_token: bool,
    /// The decoded value, for SCALAR nodes.
    scalar_value: Option<String>,
}

impl Tree {
    fn build(yaml: &YamlFile, text: &str) -> Result<Tree, String> {
        let mut tree = Tree {
            elems: Vec::new(),
            tokens: Vec::new(),
        };
        let Some(document) = yaml.documents().next() else {
            return Ok(tree);
        };
        let Some(root) = document.as_node().and_then(|n| n.ancestors().last()) else {
            return Ok(tree);
        };
        // Every edit splices offsets from this tree into `text`; they are
        // only valid if the tree is exactly the text.
        if root.to_string() != text {
            return Err("the parsed tree does not reproduce the file".to_string());
        }
        let mut index = HashMap::new();
        for element in root.descendants_with_tokens() {
            let range = element.text_range();
            let at = tree.elems.len();
            let parent = element.parent().and_then(|p| index.get(&p).copied());
            let mut scalar_value = None;
            match element.as_node() {
                Some(node) => {
                    if node.kind() == SyntaxKind::SCALAR {
                        scalar_value = YamlNode::from_syntax(node.clone())
                            .and_then(|n| n.as_scalar().map(|s| s.as_string()));
                    }
                    index.insert(node.clone(), at);
                }
                None => tree.tokens.push(at),
            }
            if let Some(p) = parent {
                tree.elems[p].children.push(at);
            }
            tree.elems.push(Elem {
                kind: element.kind(),
                start: usize::from(range.start()),
                end: usize::from(range.end()),
                parent,
                children: Vec::new(),
                is_token: element.as_node().is_none(),
                scalar_value,
            });
        }
        Ok(tree)
    }

    /// Rejects what yaml-edit accepts but YAML readers refuse.
    fn validate(&self, text: &str, lines: &LineIndex) -> Result<(), String> {
        let at = |offset: usize| format!("{}:{}", lines.line(offset), lines.column(offset));
        for elem in &self.elems {
            let fail = |what: &str| Err(format!("{}: {what}", at(elem.start)));
            match elem.kind {
                SyntaxKind::ERROR => return fail("content could not be parsed"),
                SyntaxKind::UNTERMINATED_STRING => return fail("unterminated quoted string"),
                SyntaxKind::INDENT if text[elem.start..elem.end].contains('\t') => {
                    return fail("tab used for indentation");
                }
                SyntaxKind::DOCUMENT => {
                    let content = elem
                        .children
                        .iter()
                        .filter(|&&c| {
                            matches!(
                                self.elems[c].kind,
                                SyntaxKind::MAPPING
                                    | SyntaxKind::SEQUENCE
                                    | SyntaxKind::SCALAR
                                    | SyntaxKind::TAGGED_NODE
                                    | SyntaxKind::ALIAS
                            )
                        })
                        .count();
                    if content > 1 {
                        return fail("more than one top-level node in a document");
                    }
                }
                SyntaxKind::SCALAR => {
                    let tokens: Vec<&Elem> = elem
                        .children
                        .iter()
                        .map(|&c| &self.elems[c])
                        .filter(|e| e.is_token)
                        .collect();
                    if tokens.iter().any(|t| t.kind == SyntaxKind::COLON) {
                        return fail("mapping values are not allowed here");
                    }
                    let quoted = tokens
                        .first()
                        .is_some_and(|t| text[t.start..t.end].starts_with(['"', '\'']));
                    if quoted && tokens.len() > 1 {
                        return fail("unexpected text after a quoted scalar");
                    }
                }
                SyntaxKind::MAPPING | SyntaxKind::SEQUENCE => {
                    let entry_kind = if elem.kind == SyntaxKind::MAPPING {
                        SyntaxKind::MAPPING_ENTRY
                    } else {
                        SyntaxKind::SEQUENCE_ENTRY
                    };
                    let flow = elem.children.first().is_some_and(|&c| {
                        matches!(
                            self.elems[c].kind,
                            SyntaxKind::LEFT_BRACE | SyntaxKind::LEFT_BRACKET
                        )
                    });
                    if flow {
                        continue;
                    }
                    let mut columns = elem
                        .children
                        .iter()
                        .map(|&c| &self.elems[c])
                        .filter(|e| e.kind == entry_kind)
                        .map(|e| (e.start, lines.column(e.start)));
                    if let Some((_, first)) = columns.next()
                        && let Some((offset, _)) = columns.find(|&(_, col)| col != first)
                    {
                        return Err(format!("{}: inconsistent indentation", at(offset)));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn kind_of(&self, index: Option<usize>) -> Option<SyntaxKind> {
        index.map(|i| self.elems[i].kind)
    }

    /// Finds the field the marker comment at `position` in `tokens` belongs
    /// to: the scalar that ends just before it on its line, or the empty
    /// value after a `key:` or `-`.
    fn marker_target(&self, position: usize, text: &str) -> Result<Target, &'static str> {
        let comment = self.tokens[position];
        let previous = self.tokens[..position]
            .iter()
            .rev()
            .copied()
            .find(|&t| self.elems[t].kind != SyntaxKind::WHITESPACE)
            .ok_or("it is not on the line of a field")?;
        let prev = &self.elems[previous];
        let comment_parent = self.elems[comment].parent;
        match (prev.kind, self.kind_of(prev.parent)) {
            (SyntaxKind::COLON, Some(SyntaxKind::MAPPING_ENTRY)) => {
                // The comment sits in the entry's VALUE, ahead of an empty
                // scalar, when the key has no value.
                let value = comment_parent.ok_or("it is not on the line of a field")?;
                if self.elems[value].kind != SyntaxKind::VALUE
                    || self.elems[value].parent != prev.parent
                {
                    return Err("it does not follow a field value");
                }
                self.empty_value_in(value, comment)
            }
            (SyntaxKind::DASH, Some(SyntaxKind::SEQUENCE_ENTRY)) => {
                let entry = prev.parent.ok_or("it is not on the line of a field")?;
                if comment_parent != Some(entry) {
                    return Err("it does not follow a sequence item");
                }
                self.empty_value_in(entry, comment)
            }
            (_, Some(SyntaxKind::SCALAR)) => {
                let index = prev.parent.ok_or("it is not on the line of a field")?;
                let scalar = &self.elems[index];
                if scalar.end != prev.end {
                    return Err("it is on the header of a block scalar");
                }
                let raw = &text[scalar.start..scalar.end];
                if raw.contains(['\n', '\r']) {
                    return Err("the value spans several lines");
                }
                let mut holder = scalar.parent;
                if self.kind_of(holder) == Some(SyntaxKind::TAGGED_NODE) {
                    holder = holder.and_then(|h| self.elems[h].parent);
                }
                match self.kind_of(holder) {
                    Some(SyntaxKind::VALUE | SyntaxKind::SEQUENCE_ENTRY | SyntaxKind::DOCUMENT) => {
                        Ok(Target::Scalar(index))
                    }
                    _ => Err("it follows a key, not a value"),
                }
            }
            _ => Err("it does not follow a scalar value"),
        }
    }

    /// `holder` (a VALUE or SEQUENCE_ENTRY) must hold nothing but an empty
    /// scalar, or the comment is on a key whose value is on later lines.
    fn empty_value_in(&self, holder: usize, comment: usize) -> Result<Target, &'static str> {
        let nodes: Vec<&Elem> = self.elems[holder]
            .children
            .iter()
            .map(|&c| &self.elems[c])
            .filter(|e| !e.is_token)
            .collect();
        match nodes.as_slice() {
            [only] if only.kind == SyntaxKind::SCALAR && only.start == only.end => {
                Ok(Target::Empty {
                    insert_at: self.elems[comment].start,
                })
            }
            _ => Err("its field holds a nested value, not a scalar"),
        }
    }

    /// The object of the document holding `elem`.
    fn object_of(&self, elem: usize, objects: &[(usize, Option<ObjectId>)]) -> Option<ObjectId> {
        let mut at = Some(elem);
        while let Some(i) = at {
            if self.elems[i].kind == SyntaxKind::DOCUMENT {
                let start = self.elems[i].start;
                return objects
                    .iter()
                    .find(|(s, _)| *s == start)
                    .and_then(|(_, o)| o.clone());
            }
            at = self.elems[i].parent;
        }
        None
    }
}

/// Each document's start offset and object identity.
fn document_objects(yaml: &YamlFile) -> Vec<(usize, Option<ObjectId>)> {
    yaml.documents()
        .map(|doc| (doc.byte_range().start as usize, object_id(&doc)))
        .collect()
}

fn object_id(doc: &Document) -> Option<ObjectId> {
    fn string(mapping: &Mapping, key: &str) -> Option<String> {
        mapping.get(key)?.as_scalar().map(|s| s.as_string())
    }
    let top = doc.as_mapping()?;
    let metadata = top.get_mapping("metadata");
    let meta = |key| metadata.as_ref().and_then(|m| string(m, key));
    Some(ObjectId {
        api_version: string(&top, "apiVersion")?,
        kind: string(&top, "kind")?,
        namespace: meta("namespace").unwrap_or_default(),
        name: meta("name").unwrap_or_default(),
    })
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Image => "image",
            Field::Tag => "tag",
            Field::Name => "name",
            Field::Digest => "digest",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:4f4cd9e0b1b8b2f5c8a1e3d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7";

    fn policy(namespace: &str, name: &str) -> PolicyRef {
        PolicyRef {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    fn latest(p: &PolicyRef) -> Option<LatestImage> {
        let image = |name: &str, tag: &str, digest: Option<&str>| LatestImage {
            name: name.to_string(),
            tag: tag.to_string(),
            digest: digest.map(str::to_string),
        };
        match (p.namespace.as_str(), p.name.as_str()) {
            ("flux-system", "app") => Some(image("ghcr.io/org/app", "1.2.3", None)),
            ("flux-system", "pinned") => Some(image("127.0.0.1:5000/app", "2.0.0", Some(DIGEST))),
            ("flux-system", "float") => Some(image("ghcr.io/org/app", "2.10", None)),
            ("default", "apps") => Some(image(
                "ghcr.io/org/my-server",
                "master-1a2b3c4-1700000000",
                None,
            )),
            _ => None,
        }
    }

    fn run(text: &str) -> (String, Vec<Change>, Vec<Unresolved>) {
        match update_text("apps/x.yaml", text, &latest) {
            Ok(out) => out,
            Err(e) => panic!("update_text failed: {e}"),
        }
    }

    fn changed_values(changes: &[Change]) -> Vec<(usize, &str, &str)> {
        changes
            .iter()
            .map(|c| (c.line, c.old_value.as_str(), c.new_value.as_str()))
            .collect()
    }

    #[test]
    fn plain_image_marker_in_a_deployment() {
        let before = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: podinfo
  namespace: default
spec:
  template:
    spec:
      containers:
        - name: podinfod
          image: ghcr.io/org/app:1.0.0 # {\"$imagepolicy\": \"flux-system:app\"}
          imagePullPolicy: IfNotPresent
";
        let after = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: podinfo
  namespace: default
spec:
  template:
    spec:
      containers:
        - name: podinfod
          image: ghcr.io/org/app:1.2.3 # {\"$imagepolicy\": \"flux-system:app\"}
          imagePullPolicy: IfNotPresent
";
        let (text, changes, unresolved) = run(before);
        assert_eq!(text, after);
        assert!(unresolved.is_empty());
        assert_eq!(
            changes,
            vec![Change {
                file: "apps/x.yaml".to_string(),
                line: 11,
                old_value: "ghcr.io/org/app:1.0.0".to_string(),
                new_value: "ghcr.io/org/app:1.2.3".to_string(),
                setter: "flux-system:app".to_string(),
                policy: policy("flux-system", "app"),
                field: Field::Image,
                object: Some(ObjectId {
                    api_version: "apps/v1".to_string(),
                    kind: "Deployment".to_string(),
                    namespace: "default".to_string(),
                    name: "podinfo".to_string(),
                }),
            }]
        );
    }

    #[test]
    fn quoted_scalars_keep_their_quotes() {
        let before = "\
single: 'ghcr.io/org/app:1.0.0' # {\"$imagepolicy\": \"flux-system:app\"}
double: \"ghcr.io/org/app:1.0.0\"   # {\"$imagepolicy\": \"flux-system:app\"}
tag: \"1.0.0\" # {\"$imagepolicy\": \"flux-system:app:tag\"}
flow: {image: ghcr.io/org/app:1.0.0}
";
        let after = "\
single: 'ghcr.io/org/app:1.2.3' # {\"$imagepolicy\": \"flux-system:app\"}
double: \"ghcr.io/org/app:1.2.3\"   # {\"$imagepolicy\": \"flux-system:app\"}
tag: \"1.2.3\" # {\"$imagepolicy\": \"flux-system:app:tag\"}
flow: {image: ghcr.io/org/app:1.0.0}
";
        let (text, changes, _) = run(before);
        assert_eq!(text, after);
        assert_eq!(
            changed_values(&changes),
            vec![
                (1, "ghcr.io/org/app:1.0.0", "ghcr.io/org/app:1.2.3"),
                (2, "ghcr.io/org/app:1.0.0", "ghcr.io/org/app:1.2.3"),
                (3, "1.0.0", "1.2.3"),
            ]
        );
        // Helm values are not Kubernetes objects.
        assert!(changes.iter().all(|c| c.object.is_none()));
    }

    #[test]
    fn plain_value_is_quoted_only_when_it_would_change_type() {
        let before = "\
plain: 1.0.0 # {\"$imagepolicy\": \"flux-system:float:tag\"}
single: '1.0.0' # {\"$imagepolicy\": \"flux-system:float:tag\"}
name: old/app # {\"$imagepolicy\": \"flux-system:float:name\"}
";
        let after = "\
plain: \"2.10\" # {\"$imagepolicy\": \"flux-system:float:tag\"}
single: '2.10' # {\"$imagepolicy\": \"flux-system:float:tag\"}
name: ghcr.io/org/app # {\"$imagepolicy\": \"flux-system:float:name\"}
";
        assert_eq!(run(before).0, after);
    }

    #[test]
    fn sequence_items_anchors_and_tags() {
        let before = "\
images:
- ghcr.io/org/app:1.0.0 # {\"$imagepolicy\": \"flux-system:app\"}
- other/image:1
args:
  -   'ghcr.io/org/app:0.9'    # {\"$imagepolicy\": \"flux-system:app\"}
anchored: &img ghcr.io/org/app:1.0.0 # {\"$imagepolicy\": \"flux-system:app\"}
tagged: !!str 1.0.0 # {\"$imagepolicy\": \"flux-system:app:tag\"}
";
        let after = "\
images:
- ghcr.io/org/app:1.2.3 # {\"$imagepolicy\": \"flux-system:app\"}
- other/image:1
args:
  -   'ghcr.io/org/app:1.2.3'    # {\"$imagepolicy\": \"flux-system:app\"}
anchored: &img ghcr.io/org/app:1.2.3 # {\"$imagepolicy\": \"flux-system:app\"}
tagged: !!str 1.2.3 # {\"$imagepolicy\": \"flux-system:app:tag\"}
";
        let (text, changes, _) = run(before);
        assert_eq!(text, after);
        assert_eq!(
            changes.iter().map(|c| c.line).collect::<Vec<_>>(),
            vec![2, 5, 6, 7]
        );
    }

    #[test]
    fn multi_document_files_name_each_object() {
        let before = "\
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    spec:
      containers:
      - image: ghcr.io/org/app:1.0.0 # {\"$imagepolicy\": \"flux-system:app\"}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: untouched
data:
  image: ghcr.io/org/app:1.0.0
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly
  namespace: jobs
spec:
  image: ghcr.io/org/app:1.0.0 # {\"$imagepolicy\": \"flux-system:app\"}
...
";
        let (text, changes, _) = run(before);
        assert_eq!(text, before.replace("app:1.0.0 #", "app:1.2.3 #"));
        assert!(text.contains("data:\n  image: ghcr.io/org/app:1.0.0\n"));
        let objects: Vec<_> = changes
            .iter()
            .map(|c| c.object.clone().map(|o| (o.kind, o.namespace, o.name)))
            .collect();
        assert_eq!(
            objects,
            vec![
                Some(("Deployment".into(), String::new(), "web".into())),
                Some(("CronJob".into(), "jobs".into(), "nightly".into())),
            ]
        );
        assert_eq!(changes[1].line, 25);
    }

    #[test]
    fn crlf_line_endings_survive() {
        let before = "apiVersion: v1\r\nkind: Pod\r\nmetadata:\r\n  name: p\r\nspec:\r\n  containers:\r\n  - name: c\r\n    image: ghcr.io/org/app:1.0.0 # {\"$imagepolicy\": \"flux-system:app\"}\r\n    tag: 1.0.0 # {\"$imagepolicy\": \"flux-system:app:tag\"}\r\n";
        let after = "apiVersion: v1\r\nkind: Pod\r\nmetadata:\r\n  name: p\r\nspec:\r\n  containers:\r\n  - name: c\r\n    image: ghcr.io/org/app:1.2.3 # {\"$imagepolicy\": \"flux-system:app\"}\r\n    tag: 1.2.3 # {\"$imagepolicy\": \"flux-system:app:tag\"}\r\n";
        let (text, changes, _) = run(before);
        assert_eq!(text, after);
        assert_eq!(
            changes.iter().map(|c| c.line).collect::<Vec<_>>(),
            vec![8, 9]
        );
    }

    #[test]
    fn byte_order_mark_and_a_document_that_is_one_scalar() {
        let before = "\u{feff}kind: Pod\nimage: x:1 # {\"$imagepolicy\": \"flux-system:app\"}\n";
        let (text, changes, _) = run(before);
        assert_eq!(text, before.replace("x:1", "ghcr.io/org/app:1.2.3"));
        assert_eq!(changes[0].line, 2);
        let scalar = "--- ghcr.io/org/app:1.0.0 # {\"$imagepolicy\": \"flux-system:app\"}\n";
        assert_eq!(run(scalar).0, scalar.replace("1.0.0", "1.2.3"));
    }

    #[test]
    fn comments_blank_lines_and_trailing_space_are_kept() {
        let before = "\
# Managed by hand, except for the image.
apiVersion: apps/v1   
kind: Deployment

metadata:
  # the name
  name: web # trailing comment
  labels: {app: web,   tier: front}


spec:
  zeta: 1
  alpha: 2
  template:
    spec:
      containers:
        -   name: web    # keep spacing
            image:    ghcr.io/org/app:1.0.0      #   {\"$imagepolicy\": \"flux-system:app\"}   
            # image: ghcr.io/org/app:0.1.0 # {\"$imagepolicy\": \"flux-system:app\"}

# end
";
        let after = before.replace(
            "image:    ghcr.io/org/app:1.0.0      #",
            "image:    ghcr.io/org/app:1.2.3      #",
        );
        let (text, changes, _) = run(before);
        assert_eq!(text, after);
        assert_eq!(changes.len(), 1, "the commented-out line is not a field");
    }

    #[test]
    fn the_four_marker_forms() {
        let before = "\
image: 127.0.0.1:5000/app:1.0.0 # {\"$imagepolicy\": \"flux-system:pinned\"}
tag: 1.0.0 # {\"$imagepolicy\": \"flux-system:pinned:tag\"}
name: 127.0.0.1:5000/old # {\"$imagepolicy\": \"flux-system:pinned:name\"}
digest: sha256:0000 # {\"$imagepolicy\": \"flux-system:pinned:digest\"}
";
        let after = format!(
            "\
image: 127.0.0.1:5000/app:2.0.0@{DIGEST} # {{\"$imagepolicy\": \"flux-system:pinned\"}}
tag: 2.0.0 # {{\"$imagepolicy\": \"flux-system:pinned:tag\"}}
name: 127.0.0.1:5000/app # {{\"$imagepolicy\": \"flux-system:pinned:name\"}}
digest: {DIGEST} # {{\"$imagepolicy\": \"flux-system:pinned:digest\"}}
"
        );
        let (text, changes, _) = run(before);
        assert_eq!(text, after);
        assert_eq!(
            changes.iter().map(|c| c.field).collect::<Vec<_>>(),
            vec![Field::Image, Field::Tag, Field::Name, Field::Digest]
        );
        assert_eq!(changes[3].setter, "flux-system:pinned:digest");
        assert!(
            changes
                .iter()
                .all(|c| c.policy == policy("flux-system", "pinned"))
        );
    }

    #[test]
    fn digest_marker_without_a_digest_is_left_alone() {
        let before = "digest: sha256:0000 # {\"$imagepolicy\": \"flux-system:app:digest\"}\n";
        let (text, changes, unresolved) = run(before);
        assert_eq!(text, before);
        assert!(changes.is_empty() && unresolved.is_empty());
    }

    #[test]
    fn helm_values_tag_next_to_name() {
        let before = "\
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: podinfo
  namespace: default
spec:
  values:
    image:
      repository: ghcr.io/stefanprodan/podinfo # {\"$imagepolicy\": \"flux-system:app:name\"}
      tag: 5.0.0  # {\"$imagepolicy\": \"flux-system:app:tag\"}
      pullPolicy: IfNotPresent
";
        let after = "\
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: podinfo
  namespace: default
spec:
  values:
    image:
      repository: ghcr.io/org/app # {\"$imagepolicy\": \"flux-system:app:name\"}
      tag: 1.2.3  # {\"$imagepolicy\": \"flux-system:app:tag\"}
      pullPolicy: IfNotPresent
";
        let (text, changes, _) = run(before);
        assert_eq!(text, after);
        assert_eq!(
            changed_values(&changes),
            vec![
                (9, "ghcr.io/stefanprodan/podinfo", "ghcr.io/org/app"),
                (10, "5.0.0", "1.2.3"),
            ]
        );
        assert_eq!(
            changes[0].object.as_ref().map(|o| o.kind.as_str()),
            Some("HelmRelease")
        );
    }

    #[test]
    fn empty_values_are_filled_in() {
        // The shape of the KubeVela seed document's application file.
        let before = "\
apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: my-app
  namespace: default
spec:
  components:
    - name: my-server
      type: webservice
      properties:
        image: # {\"$imagepolicy\": \"default:apps\"}
        port: 8088
    - name: sidecars
      properties:
        images:
          - # {\"$imagepolicy\": \"default:apps\"}
";
        let after = "\
apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: my-app
  namespace: default
spec:
  components:
    - name: my-server
      type: webservice
      properties:
        image: ghcr.io/org/my-server:master-1a2b3c4-1700000000 # {\"$imagepolicy\": \"default:apps\"}
        port: 8088
    - name: sidecars
      properties:
        images:
          - ghcr.io/org/my-server:master-1a2b3c4-1700000000 # {\"$imagepolicy\": \"default:apps\"}
";
        let (text, changes, _) = run(before);
        assert_eq!(text, after);
        assert_eq!(
            changed_values(&changes),
            vec![
                (11, "", "ghcr.io/org/my-server:master-1a2b3c4-1700000000"),
                (16, "", "ghcr.io/org/my-server:master-1a2b3c4-1700000000"),
            ]
        );
        // The new text reads back with the values in place.
        let (again, changes, _) = run(&text);
        assert_eq!(again, text);
        assert!(changes.is_empty());
    }

    #[test]
    fn marker_on_a_key_with_a_nested_value_is_ignored() {
        let before = "\
image: # {\"$imagepolicy\": \"flux-system:app\"}
  repository: ghcr.io/org/app
block: | # {\"$imagepolicy\": \"flux-system:app\"}
  ghcr.io/org/app:1.0.0
alias: *x # {\"$imagepolicy\": \"flux-system:app\"}
# {\"$imagepolicy\": \"flux-system:app\"}
standalone: ghcr.io/org/app:1.0.0
";
        let anchored = format!("base: &x ghcr.io/org/app:1.0.0\n{before}");
        let (text, changes, unresolved) = run(&anchored);
        assert_eq!(text, anchored);
        assert!(changes.is_empty() && unresolved.is_empty());
    }

    #[test]
    fn file_without_trailing_newline() {
        let before =
            "kind: Pod\nimage: ghcr.io/org/app:1.0.0 # {\"$imagepolicy\": \"flux-system:app\"}";
        let after =
            "kind: Pod\nimage: ghcr.io/org/app:1.2.3 # {\"$imagepolicy\": \"flux-system:app\"}";
        assert_eq!(run(before).0, after);
        let empty = "image: # {\"$imagepolicy\": \"flux-system:app:tag\"}";
        assert_eq!(
            run(empty).0,
            "image: 1.2.3 # {\"$imagepolicy\": \"flux-system:app:tag\"}"
        );
    }

    #[test]
    fn two_markers_naming_the_same_policy() {
        let before = "\
containers:
- name: app
  image: ghcr.io/org/app:1.0.0 # {\"$imagepolicy\": \"flux-system:app\"}
initContainers:
- name: migrate
  image: ghcr.io/org/app:0.9.0 # {\"$imagepolicy\": \"flux-system:app\"}
";
        let (text, changes, _) = run(before);
        assert_eq!(
            text,
            before
                .replace("app:1.0.0", "app:1.2.3")
                .replace("app:0.9.0", "app:1.2.3")
        );
        assert_eq!(
            changed_values(&changes),
            vec![
                (3, "ghcr.io/org/app:1.0.0", "ghcr.io/org/app:1.2.3"),
                (6, "ghcr.io/org/app:0.9.0", "ghcr.io/org/app:1.2.3"),
            ]
        );
    }

    #[test]
    fn unknown_policy_is_unresolved_and_left_alone() {
        let before = "\
image: ghcr.io/org/app:1.0.0 # {\"$imagepolicy\": \"flux-system:missing\"}
tag: 1.0.0 # {\"$imagepolicy\": \"flux-system:app:tag\"}
";
        let (text, changes, unresolved) = run(before);
        assert_eq!(
            text,
            "\
image: ghcr.io/org/app:1.0.0 # {\"$imagepolicy\": \"flux-system:missing\"}
tag: 1.2.3 # {\"$imagepolicy\": \"flux-system:app:tag\"}
"
        );
        assert_eq!(changes.len(), 1);
        assert_eq!(
            unresolved,
            vec![Unresolved {
                file: "apps/x.yaml".to_string(),
                line: 1,
                policy: policy("flux-system", "missing"),
            }]
        );
    }

    #[test]
    fn already_up_to_date_is_no_change() {
        let before = "\
image: ghcr.io/org/app:1.2.3 # {\"$imagepolicy\": \"flux-system:app\"}
tag: \"1.2.3\" # {\"$imagepolicy\": \"flux-system:app:tag\"}
name: 'ghcr.io/org/app' # {\"$imagepolicy\": \"flux-system:app:name\"}
";
        let (text, changes, unresolved) = run(before);
        assert_eq!(text, before);
        assert!(changes.is_empty() && unresolved.is_empty());
    }

    #[test]
    fn marker_spelling_variants() {
        let before = "\
a: x:1 #{\"$imagepolicy\":\"flux-system:app\"}
b: x:1 # { \"$imagepolicy\" : \"flux-system:app\" }
c: x:1 # {'$imagepolicy':'flux-system:app'}
d: x:1 ## {\"$imagepolicy\": \"flux-system:app\", \"note\": \"extra members are fine\"}
e: x:1 # {\"$openapi\": \"flux-system:app\"}
f: x:1 # bump $imagepolicy by hand
g: x:1 # {\"$imagepolicy\": \"flux-system:app\"} trailing prose
";
        let (text, changes, _) = run(before);
        assert_eq!(
            changes.iter().map(|c| c.line).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert_eq!(
            text.lines()
                .map(|l| &l[..2])
                .zip(text.lines().map(|l| l.contains("1.2.3")))
                .collect::<Vec<_>>(),
            vec![
                ("a:", true),
                ("b:", true),
                ("c:", true),
                ("d:", true),
                ("e:", false),
                ("f:", false),
                ("g:", false)
            ]
        );
    }

    #[test]
    fn malformed_marker_is_an_error_for_the_file() {
        for (setter, line) in [
            ("\"app\"", 2),
            ("\"flux-system:app:version\"", 2),
            ("\":app\"", 2),
            ("42", 2),
        ] {
            let text = format!(
                "ok: x:1 # {{\"$imagepolicy\": \"flux-system:app\"}}\nbad: x:1 # {{\"$imagepolicy\": {setter}}}\n"
            );
            match update_text("apps/x.yaml", &text, &latest) {
                Err(SetterError::MalformedMarker { file, line: l, .. }) => {
                    assert_eq!((file.as_str(), l), ("apps/x.yaml", line));
                }
                other => panic!("{setter}: expected a malformed marker error, got {other:?}"),
            }
        }
    }

    #[test]
    fn unparseable_yaml_is_an_error() {
        for bad in [
            "a: 'unterminated # {\"$imagepolicy\": \"flux-system:app\"}\n",
            "a: [1, 2 # {\"$imagepolicy\": \"flux-system:app\"}\n",
            "a: b: c # {\"$imagepolicy\": \"flux-system:app\"}\n",
            "a:\n  b: c # {\"$imagepolicy\": \"flux-system:app\"}\n d: e\n",
            "- a # {\"$imagepolicy\": \"flux-system:app\"}\nb: c\n",
            "a:\n\tb: c # {\"$imagepolicy\": \"flux-system:app\"}\n",
            "a: \"x\" y # {\"$imagepolicy\": \"flux-system:app\"}\n",
        ] {
            match update_text("apps/x.yaml", bad, &latest) {
                Err(e @ SetterError::Parse { .. }) => {
                    assert!(
                        e.to_string()
                            .starts_with("apps/x.yaml: cannot parse YAML: "),
                        "{e}"
                    );
                }
                other => panic!("{bad:?}: expected a parse error, got {other:?}"),
            }
        }
        // Without a marker the file is not even parsed, like Flux's screening.
        let template = "{{- if .Values.x }}\na: b\n{{- end }}\n";
        assert_eq!(run(template).0, template);
    }

    #[test]
    fn plain_safety() {
        for safe in [
            "ghcr.io/org/app:1.2.3",
            "127.0.0.1:5000/app",
            "1.2.3",
            "v2",
            "master-1a2b3c4-1700000000",
            "sha256:abc",
            "a#b",
        ] {
            assert!(plain_is_safe(safe), "{safe}");
        }
        for unsafe_ in [
            "",
            "2.10",
            "10",
            "0x1F",
            "1e3",
            "yes",
            "off",
            "~",
            "null",
            "true",
            "-x",
            "a: b",
            "a #b",
            "b:",
            " a",
            "a,b",
            "'q",
            "2024-01-02",
            ".inf",
            "1_000",
            "0777",
            "12:30",
        ] {
            assert!(!plain_is_safe(unsafe_), "{unsafe_}");
        }
        assert_eq!(Style::Plain.encode("2.10"), "\"2.10\"");
        assert_eq!(Style::Single.encode("it's"), "'it''s'");
        assert_eq!(Style::Single.encode("a\nb"), "\"a\\nb\"");
        assert_eq!(Style::Double.encode("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }

    fn write(root: &Path, name: &str, text: &str) {
        let path = root.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create dirs");
        }
        std::fs::write(path, text).expect("write fixture");
    }

    fn read(root: &Path, name: &str) -> String {
        std::fs::read_to_string(root.join(name)).expect("read fixture")
    }

    const MARKED: &str = "image: ghcr.io/org/app:1.0.0 # {\"$imagepolicy\": \"flux-system:app\"}\n";
    const UPDATED: &str =
        "image: ghcr.io/org/app:1.2.3 # {\"$imagepolicy\": \"flux-system:app\"}\n";

    #[test]
    fn update_dir_skips_unparseable_files_and_updates_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let broken = "image: 'ghcr.io/org/app:1.0.0 # {\"$imagepolicy\": \"flux-system:app\"}\n";
        let template = "{{ if .Values.x }}\nimage: {{ .Values.image }}\n{{ end }}\n";
        let current = UPDATED;
        write(root, "clusters/prod/b-broken.yaml", broken);
        write(root, "clusters/prod/a.yaml", MARKED);
        write(root, "clusters/prod/nested/c.yml", MARKED);
        write(root, "clusters/prod/nested/Kustomization", MARKED);
        write(root, "clusters/prod/current.yaml", current);
        write(root, "clusters/prod/templates/deploy.yaml", template);
        write(root, "clusters/prod/notes.txt", MARKED);
        write(root, "clusters/prod/.git/config.yaml", MARKED);
        write(root, "clusters/staging/d.yaml", MARKED);

        let out = match update_dir(root, "./clusters/prod/", &latest) {
            Ok(out) => out,
            Err(e) => panic!("update_dir: {e}"),
        };

        assert_eq!(
            out.files_changed,
            vec![
                "clusters/prod/a.yaml",
                "clusters/prod/nested/Kustomization",
                "clusters/prod/nested/c.yml",
            ]
        );
        assert_eq!(
            out.changes
                .iter()
                .map(|c| c.file.as_str())
                .collect::<Vec<_>>(),
            out.files_changed
        );
        assert_eq!(out.skipped.len(), 1);
        assert_eq!(out.skipped[0].0, "clusters/prod/b-broken.yaml");
        assert!(
            out.skipped[0].1.starts_with("cannot parse YAML: "),
            "{:?}",
            out.skipped
        );
        assert!(out.unresolved.is_empty());

        assert_eq!(read(root, "clusters/prod/a.yaml"), UPDATED);
        assert_eq!(read(root, "clusters/prod/nested/c.yml"), UPDATED);
        assert_eq!(read(root, "clusters/prod/b-broken.yaml"), broken);
        assert_eq!(read(root, "clusters/prod/templates/deploy.yaml"), template);
        assert_eq!(read(root, "clusters/prod/notes.txt"), MARKED);
        assert_eq!(read(root, "clusters/prod/.git/config.yaml"), MARKED);
        assert_eq!(read(root, "clusters/staging/d.yaml"), MARKED);
    }

    #[test]
    fn update_dir_reports_unresolved_and_malformed_markers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        write(
            root,
            "a.yaml",
            "image: x:1 # {\"$imagepolicy\": \"flux-system:missing\"}\n",
        );
        write(root, "b.yaml", "image: x:1 # {\"$imagepolicy\": \"app\"}\n");
        let out = match update_dir(root, "", &latest) {
            Ok(out) => out,
            Err(e) => panic!("update_dir: {e}"),
        };
        assert!(out.files_changed.is_empty() && out.changes.is_empty());
        assert_eq!(
            out.unresolved,
            vec![Unresolved {
                file: "a.yaml".to_string(),
                line: 1,
                policy: policy("flux-system", "missing"),
            }]
        );
        assert_eq!(
            out.skipped,
            vec![(
                "b.yaml".to_string(),
                "line 1: malformed $imagepolicy marker \"app\": expected <namespace>:<name>[:tag|:name|:digest]".to_string()
            )]
        );
    }

    #[test]
    fn update_dir_refuses_paths_outside_the_root() {
        let outside = tempfile::tempdir().expect("tempdir");
        write(outside.path(), "victim.yaml", MARKED);
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        write(root, "apps/a.yaml", MARKED);

        for path in ["..", "apps/../../x", "/etc"] {
            match update_dir(root, path, &latest) {
                Err(SetterError::InvalidPath { .. }) => {}
                other => panic!("{path}: expected InvalidPath, got {other:?}"),
            }
        }
        let absolute = outside.path().display().to_string();
        assert!(matches!(
            update_dir(root, &absolute, &latest),
            Err(SetterError::InvalidPath { .. })
        ));

        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(outside.path(), root.join("escape")).expect("symlink");
            std::os::unix::fs::symlink(outside.path(), root.join("apps/linked")).expect("symlink");
            std::os::unix::fs::symlink(
                outside.path().join("victim.yaml"),
                root.join("apps/victim.yaml"),
            )
            .expect("symlink");
            match update_dir(root, "escape", &latest) {
                Err(SetterError::PathEscapesRoot { path }) => assert_eq!(path, "escape"),
                other => panic!("expected PathEscapesRoot, got {other:?}"),
            }
            // Links inside the walk are not followed either.
            let out = match update_dir(root, "apps", &latest) {
                Ok(out) => out,
                Err(e) => panic!("update_dir: {e}"),
            };
            assert_eq!(out.files_changed, vec!["apps/a.yaml"]);
            assert_eq!(read(outside.path(), "victim.yaml"), MARKED);
        }

        assert!(matches!(
            update_dir(root, "does-not-exist", &latest),
            Err(SetterError::Io { .. })
        ));
    }
}

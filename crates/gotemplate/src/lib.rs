//! gotemplate: Go's `text/template` (the subset below), rendered against a [`Value`] tree, with the Sprig functions Argo CD's ApplicationSets and Flux's commit messages use.
//!
//! [`render`] is what Flux's ImageUpdateAutomation `spec.git.commit.messageTemplate` gets;
//! [`render_with`] adds functions ([`sprig`]) and `missingkey=error`, for ApplicationSets.
//!
//! Supported, with Go's semantics:
//!
//! * text, actions `{{ pipeline }}`, trim markers `{{- ` / ` -}}`, comments
//!   `{{/* … */}}`;
//! * `.`, `.A.B`, `$`, `$x.A`, `(pipeline).A`, string/raw-string/char/number/
//!   `true`/`false`/`nil` constants;
//! * pipelines `arg | func a b` (the piped value becomes the last argument);
//! * `if` / `else if` / `else`, `with` / `else with` / `else`,
//!   `range` (lists, maps in sorted key order, [`Value::Pairs`] in the given
//!   order; `range $i, $v :=`; `else` when empty), `break`, `continue`;
//! * variables `$x := …` and `$x = …`, scoped like Go (to the enclosing
//!   control structure), checked at parse time;
//! * Go builtins `and`, `or` (short-circuit), `not`, `len`, `index`, `print`,
//!   `println`, `printf`, `eq`, `ne`, `lt`, `le`, `gt`, `ge`;
//! * the Sprig string helpers Flux's own documentation examples use: `lower`,
//!   `upper`, `contains`, `hasPrefix`, `hasSuffix`, `trim`, `trimPrefix`,
//!   `trimSuffix`, `replace` (argument order as in Sprig: subject last).
//!
//! Not supported (parse error): `define`, `template`, `block`, `call`, other
//! Sprig functions.
//!
//! Flux's data model (`image-automation-controller` v1,
//! `docs/spec/v1/imageupdateautomations.md`) maps onto [`Value`] as follows:
//!
//! * `.AutomationObject` (a `types.NamespacedName`): an [`Value::Object`] with
//!   fields `Name`, `Namespace` and display `namespace/name`.
//! * `.Changed` (`update.Result`): an `Object` with `FileChanges`, plus the
//!   results of its methods stored as fields, since templates call them like
//!   fields: `Changes` (a `List` of `Object{OldValue, NewValue, Setter}`) and
//!   `Objects`.
//! * `.Changed.FileChanges` is a `Map` from file name to that file's object
//!   changes; `ObjectChanges` maps an `ObjectIdentifier` struct to a list of
//!   changes, and because its keys are structs it is a [`Value::Pairs`] whose
//!   keys are `Object{Name, Namespace, APIVersion, Kind}`. Go ranges over such
//!   a map in key order (struct fields compared in declaration order), so the
//!   caller should supply the pairs sorted that way.
//! * `.Values`: a `Map` of strings.

pub mod sprig;

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

/// Data a template is rendered against, shaped like the Go values Flux passes.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Go `nil`; also what a missing map key evaluates to.
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    Map(BTreeMap<String, Value>),
    /// A Go struct with a String() method: fields reachable with .Field, printed as `display`.
    Object {
        fields: BTreeMap<String, Value>,
        display: String,
    },
    /// A Go map whose keys are not strings (e.g. Flux's `ObjectChanges`,
    /// keyed by the `ObjectIdentifier` struct). `range $k, $v := …` binds each
    /// key as given, so `$k.Kind` works when the key is an `Object`; pairs are
    /// visited in the order supplied. A `Map` cannot do this because its keys
    /// are strings, and a `List` binds the first range variable to an index.
    Pairs(Vec<(Value, Value)>),
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Int(n)
    }
}

impl From<f64> for Value {
    fn from(n: f64) -> Value {
        Value::Float(n)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

impl From<Vec<Value>> for Value {
    fn from(items: Vec<Value>) -> Value {
        Value::List(items)
    }
}

impl From<serde_json::Value> for Value {
    fn from(json: serde_json::Value) -> Value {
        match json {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => Value::Str(s),
            serde_json::Value::Array(items) => {
                Value::List(items.into_iter().map(Value::from).collect())
            }
            serde_json::Value::Object(map) => {
                Value::Map(map.into_iter().map(|(k, v)| (k, Value::from(v))).collect())
            }
        }
    }
}

/// A 1-based line and column (in characters) in the template source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// A template that does not parse, or fails while rendering.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The template text is malformed; nothing was rendered.
    #[error("template: {pos}: {message}")]
    Parse { pos: Pos, message: String },
    /// Rendering failed at `context` (the source text of the failing
    /// operand or command).
    #[error("template: {pos}: executing <{context}>: {message}")]
    Exec {
        pos: Pos,
        context: String,
        message: String,
    },
}

/// Renders `template` against `data` (which is `.` and `$` at the top level).
pub fn render(template: &str, data: &Value) -> Result<String, TemplateError> {
    render_with(template, data, &Options::default())
}

/// A function a template may call: its arguments, the piped value last.
pub type Function = fn(Vec<Value>) -> Result<Value, String>;

/// How to render: functions beyond Go's builtins, and Go's `missingkey=error`.
#[derive(Default, Clone, Copy)]
pub struct Options<'f> {
    pub funcs: &'f [(&'static str, Function)],
    /// A map key that does not exist is an error instead of `<no value>`.
    pub missing_key_error: bool,
}

/// [`render`] with `opts`.
pub fn render_with(template: &str, data: &Value, opts: &Options) -> Result<String, TemplateError> {
    let mut parser = Parser::new(template);
    parser.funcs = opts.funcs;
    let nodes = parser.parse()?;
    let mut exec = Exec {
        src: template,
        out: String::new(),
        vars: vec![("$".to_string(), data.clone())],
        funcs: opts.funcs,
        strict: opts.missing_key_error,
    };
    exec.walk(data, &nodes)?;
    Ok(exec.out)
}

fn pos_at(src: &str, offset: usize) -> Pos {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Pos {
        line,
        col: before[line_start..].chars().count() + 1,
    }
}

// ---------------------------------------------------------------------------
// Syntax tree

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
}

#[derive(Debug)]
enum Node {
    Text(String),
    /// `{{ pipeline }}`; prints unless the pipeline declares or assigns.
    Action(Pipeline),
    Control {
        kind: Control,
        pipe: Pipeline,
        list: Vec<Node>,
        else_list: Option<Vec<Node>>,
    },
    Break,
    Continue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    If,
    With,
    Range,
}

impl Control {
    fn name(self) -> &'static str {
        match self {
            Control::If => "if",
            Control::With => "with",
            Control::Range => "range",
        }
    }
}

#[derive(Debug)]
struct Pipeline {
    decl: Vec<String>,
    is_assign: bool,
    cmds: Vec<Command>,
}

#[derive(Debug)]
struct Command {
    span: Span,
    args: Vec<Arg>,
}

#[derive(Debug)]
struct Arg {
    span: Span,
    kind: ArgKind,
}

#[derive(Debug)]
enum ArgKind {
    Dot,
    Nil,
    Const(Value),
    Func(Builtin),
    /// `.A.B`
    Field(Vec<String>),
    /// `$x.A.B`
    Var(String, Vec<String>),
    /// `(pipeline).A.B`
    Paren(Box<Pipeline>, Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Builtin {
    And,
    Or,
    Not,
    Len,
    Index,
    Print,
    Printf,
    Println,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Lower,
    Upper,
    Contains,
    HasPrefix,
    HasSuffix,
    Trim,
    TrimPrefix,
    TrimSuffix,
    Replace,
    /// One of [`Options::funcs`], by index.
    Ext(usize),
}

const BUILTINS: [(&str, Builtin); 23] = [
    ("and", Builtin::And),
    ("or", Builtin::Or),
    ("not", Builtin::Not),
    ("len", Builtin::Len),
    ("index", Builtin::Index),
    ("print", Builtin::Print),
    ("printf", Builtin::Printf),
    ("println", Builtin::Println),
    ("eq", Builtin::Eq),
    ("ne", Builtin::Ne),
    ("lt", Builtin::Lt),
    ("le", Builtin::Le),
    ("gt", Builtin::Gt),
    ("ge", Builtin::Ge),
    ("lower", Builtin::Lower),
    ("upper", Builtin::Upper),
    ("contains", Builtin::Contains),
    ("hasPrefix", Builtin::HasPrefix),
    ("hasSuffix", Builtin::HasSuffix),
    ("trim", Builtin::Trim),
    ("trimPrefix", Builtin::TrimPrefix),
    ("trimSuffix", Builtin::TrimSuffix),
    ("replace", Builtin::Replace),
];

impl Builtin {
    fn lookup(name: &str) -> Option<Builtin> {
        BUILTINS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
    }

    fn name(self) -> &'static str {
        if let Builtin::Ext(_) = self {
            return "function";
        }
        BUILTINS
            .iter()
            .find(|(_, b)| *b == self)
            .map_or("?", |(n, _)| n)
    }
}

const KEYWORDS: [&str; 10] = [
    "if", "else", "end", "range", "with", "break", "continue", "define", "template", "block",
];

// ---------------------------------------------------------------------------
// Lexing

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Field(String),
    Var(String),
    Dot,
    Str(String),
    Char(char),
    Number(String),
    Bool(bool),
    Nil,
    Pipe,
    LParen,
    RParen,
    Declare,
    Assign,
    Comma,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    span: Span,
    space_before: bool,
}

/// Go's `isSpace` for trim markers and text trimming.
const SPACE: [char; 4] = [' ', '\t', '\r', '\n'];

fn is_space(c: char) -> bool {
    SPACE.contains(&c)
}

fn is_alnum(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

enum Item {
    Eof,
    Text(String),
    Comment,
    Action { start: usize, tokens: Vec<Token> },
}

/// How a list of nodes ended.
enum Terminator {
    Eof,
    End { start: usize },
    Else { start: usize, rest: Vec<Token> },
}

/// Deep nesting would otherwise recurse without bound on hostile input.
const MAX_DEPTH: usize = 200;

struct Parser<'s> {
    src: &'s str,
    pos: usize,
    /// The previous action ended with ` -}}`.
    trim_next: bool,
    /// Variables in scope, innermost last (Go checks them at parse time).
    vars: Vec<String>,
    range_depth: usize,
    depth: usize,
    funcs: &'s [(&'static str, Function)],
}

impl<'s> Parser<'s> {
    fn new(src: &'s str) -> Parser<'s> {
        Parser {
            src,
            pos: 0,
            trim_next: false,
            vars: vec!["$".to_string()],
            range_depth: 0,
            depth: 0,
            funcs: &[],
        }
    }

    fn error(&self, at: usize, message: impl Into<String>) -> TemplateError {
        TemplateError::Parse {
            pos: pos_at(self.src, at),
            message: message.into(),
        }
    }

    fn text_of(&self, span: Span) -> &'s str {
        &self.src[span.start..span.end]
    }

    fn parse(mut self) -> Result<Vec<Node>, TemplateError> {
        let (nodes, end) = self.parse_list()?;
        match end {
            Terminator::Eof => Ok(nodes),
            Terminator::End { start } => Err(self.error(start, "unexpected {{end}}")),
            Terminator::Else { start, .. } => Err(self.error(start, "unexpected {{else}}")),
        }
    }

    fn next_item(&mut self) -> Result<Item, TemplateError> {
        if self.pos >= self.src.len() {
            return Ok(Item::Eof);
        }
        let rest = &self.src[self.pos..];
        let text_end = rest.find("{{").map_or(self.src.len(), |i| self.pos + i);
        if text_end > self.pos {
            let mut text = &self.src[self.pos..text_end];
            if std::mem::take(&mut self.trim_next) {
                text = text.trim_start_matches(SPACE);
            }
            if self.left_trim_at(text_end) {
                text = text.trim_end_matches(SPACE);
            }
            self.pos = text_end;
            return Ok(Item::Text(text.to_string()));
        }
        self.trim_next = false;
        self.lex_action()
    }

    /// `{{- ` at `at`: the dash must be followed by a space, otherwise
    /// `{{-3}}` would be a trim marker instead of the number -3.
    fn left_trim_at(&self, at: usize) -> bool {
        let mut after = self.src[at..].strip_prefix("{{").unwrap_or("").chars();
        after.next() == Some('-') && after.next().is_some_and(is_space)
    }

    fn lex_action(&mut self) -> Result<Item, TemplateError> {
        let start = self.pos;
        let mut i = start + 2;
        if self.left_trim_at(start) {
            // The dash and the one space after it.
            i += 2;
        }
        if self.src[i..].starts_with("/*") {
            let close = self.src[i + 2..]
                .find("*/")
                .ok_or_else(|| self.error(start, "unclosed comment"))?;
            let after = i + 2 + close + 2;
            let tail = &self.src[after..];
            if tail.starts_with("}}") {
                self.pos = after + 2;
            } else if tail.starts_with(is_space) && tail[1..].starts_with("-}}") {
                self.pos = after + 4;
                self.trim_next = true;
            } else {
                return Err(self.error(start, "comment ends before closing delimiter"));
            }
            return Ok(Item::Comment);
        }
        let tokens = self.lex_tokens(start, i)?;
        Ok(Item::Action { start, tokens })
    }

    fn lex_tokens(&mut self, start: usize, mut i: usize) -> Result<Vec<Token>, TemplateError> {
        let src = self.src;
        let mut tokens = Vec::new();
        let mut space_before = true;
        loop {
            let rest = &src[i..];
            let Some(c) = rest.chars().next() else {
                return Err(self.error(start, "unclosed action"));
            };
            if rest.starts_with("}}") {
                self.pos = i + 2;
                return Ok(tokens);
            }
            if is_space(c) {
                if rest[1..].starts_with("-}}") {
                    self.pos = i + 4;
                    self.trim_next = true;
                    return Ok(tokens);
                }
                i += 1;
                space_before = true;
                continue;
            }
            let tok_start = i;
            let next = rest[c.len_utf8()..].chars().next();
            let tok = match c {
                '|' => {
                    i += 1;
                    Tok::Pipe
                }
                '(' => {
                    i += 1;
                    Tok::LParen
                }
                ')' => {
                    i += 1;
                    Tok::RParen
                }
                ',' => {
                    i += 1;
                    Tok::Comma
                }
                '=' => {
                    i += 1;
                    Tok::Assign
                }
                ':' if next == Some('=') => {
                    i += 2;
                    Tok::Declare
                }
                '"' => {
                    let (value, len) =
                        lex_quoted(rest).map_err(|message| self.error(tok_start, message))?;
                    i += len;
                    Tok::Str(value)
                }
                '`' => {
                    let close = rest[1..]
                        .find('`')
                        .ok_or_else(|| self.error(tok_start, "unterminated raw quoted string"))?;
                    i += close + 2;
                    Tok::Str(rest[1..1 + close].to_string())
                }
                '\'' => {
                    let (value, len) =
                        lex_char(rest).map_err(|message| self.error(tok_start, message))?;
                    i += len;
                    Tok::Char(value)
                }
                '$' => {
                    let len = 1 + rest[1..]
                        .find(|c: char| !is_alnum(c))
                        .unwrap_or(rest.len() - 1);
                    i += len;
                    Tok::Var(rest[..len].to_string())
                }
                '.' if next.is_some_and(|c| c.is_ascii_digit()) => {
                    let len = number_len(rest);
                    i += len;
                    Tok::Number(rest[..len].to_string())
                }
                '.' if next.is_some_and(is_alnum) => {
                    let len = 1 + rest[1..]
                        .find(|c: char| !is_alnum(c))
                        .unwrap_or(rest.len() - 1);
                    i += len;
                    Tok::Field(rest[1..len].to_string())
                }
                '.' => {
                    i += 1;
                    Tok::Dot
                }
                '0'..='9' => {
                    let len = number_len(rest);
                    i += len;
                    Tok::Number(rest[..len].to_string())
                }
                '+' | '-' if next.is_some_and(|c| c.is_ascii_digit() || c == '.') => {
                    let len = 1 + number_len(&rest[1..]);
                    i += len;
                    Tok::Number(rest[..len].to_string())
                }
                c if is_alnum(c) => {
                    let len = rest.find(|c: char| !is_alnum(c)).unwrap_or(rest.len());
                    i += len;
                    match &rest[..len] {
                        "true" => Tok::Bool(true),
                        "false" => Tok::Bool(false),
                        "nil" => Tok::Nil,
                        word => Tok::Ident(word.to_string()),
                    }
                }
                c => return Err(self.error(tok_start, format!("bad character {c:?} in action"))),
            };
            tokens.push(Token {
                tok,
                span: Span {
                    start: tok_start,
                    end: i,
                },
                space_before,
            });
            space_before = false;
        }
    }

    fn parse_list(&mut self) -> Result<(Vec<Node>, Terminator), TemplateError> {
        let mut nodes = Vec::new();
        loop {
            let (start, tokens) = match self.next_item()? {
                Item::Eof => return Ok((nodes, Terminator::Eof)),
                Item::Text(text) => {
                    if !text.is_empty() {
                        nodes.push(Node::Text(text));
                    }
                    continue;
                }
                Item::Comment => continue,
                Item::Action { start, tokens } => (start, tokens),
            };
            let keyword = match tokens.first().map(|t| &t.tok) {
                Some(Tok::Ident(word)) if KEYWORDS.contains(&word.as_str()) => word.clone(),
                _ => {
                    let mut cursor = Cursor::new(&tokens, start);
                    let pipe = self.pipeline(&mut cursor, "command", true)?;
                    self.expect_end(&cursor, "command")?;
                    nodes.push(Node::Action(pipe));
                    continue;
                }
            };
            let rest = &tokens[1..];
            match keyword.as_str() {
                "end" => {
                    self.expect_no_more(rest, "end")?;
                    return Ok((nodes, Terminator::End { start }));
                }
                "else" => {
                    return Ok((
                        nodes,
                        Terminator::Else {
                            start,
                            rest: rest.to_vec(),
                        },
                    ));
                }
                "if" => nodes.push(self.parse_control(Control::If, rest, start)?),
                "with" => nodes.push(self.parse_control(Control::With, rest, start)?),
                "range" => nodes.push(self.parse_control(Control::Range, rest, start)?),
                "break" | "continue" => {
                    self.expect_no_more(rest, &keyword)?;
                    if self.range_depth == 0 {
                        return Err(
                            self.error(start, format!("{{{{{keyword}}}}} outside {{{{range}}}}"))
                        );
                    }
                    nodes.push(if keyword == "break" {
                        Node::Break
                    } else {
                        Node::Continue
                    });
                }
                other => {
                    return Err(self.error(start, format!("{{{{{other}}}}} is not supported")));
                }
            }
        }
    }

    fn expect_no_more(&self, rest: &[Token], what: &str) -> Result<(), TemplateError> {
        match rest.first() {
            None => Ok(()),
            Some(t) => Err(self.error(
                t.span.start,
                format!("unexpected {:?} in {{{{{what}}}}}", self.text_of(t.span)),
            )),
        }
    }

    fn parse_control(
        &mut self,
        kind: Control,
        tokens: &[Token],
        start: usize,
    ) -> Result<Node, TemplateError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(start, "template nested too deeply"));
        }
        let mark = self.vars.len();
        let mut cursor = Cursor::new(tokens, start);
        let pipe = self.pipeline(&mut cursor, kind.name(), true)?;
        self.expect_end(&cursor, kind.name())?;
        if kind == Control::Range {
            self.range_depth += 1;
        }
        let (list, end) = self.parse_list()?;
        if kind == Control::Range {
            self.range_depth -= 1;
        }
        let else_list = match end {
            Terminator::End { .. } => None,
            Terminator::Eof => {
                return Err(self.error(
                    start,
                    format!(
                        "unexpected EOF: {{{{{}}}}} is never closed with {{{{end}}}}",
                        kind.name()
                    ),
                ));
            }
            Terminator::Else {
                start: else_start,
                rest,
            } => {
                let chained = match rest.first().map(|t| &t.tok) {
                    None => None,
                    Some(Tok::Ident(word))
                        if (kind == Control::If && word == "if")
                            || (kind == Control::With && word == "with") =>
                    {
                        Some(kind)
                    }
                    Some(_) => {
                        return Err(self.error(
                            rest[0].span.start,
                            format!(
                                "unexpected {:?} in {{{{else}}}}",
                                self.text_of(rest[0].span)
                            ),
                        ));
                    }
                };
                match chained {
                    // `{{else if …}}` is `{{else}}{{if …}}…{{end}}{{end}}`
                    // sharing the outer `{{end}}`.
                    Some(kind) => Some(vec![self.parse_control(kind, &rest[1..], else_start)?]),
                    None => {
                        let (else_list, end) = self.parse_list()?;
                        match end {
                            Terminator::End { .. } => Some(else_list),
                            Terminator::Eof => {
                                return Err(self.error(
                                    start,
                                    format!(
                                        "unexpected EOF: {{{{{}}}}} is never closed with {{{{end}}}}",
                                        kind.name()
                                    ),
                                ));
                            }
                            Terminator::Else { start, .. } => {
                                return Err(
                                    self.error(start, "expected {{end}}, found a second {{else}}")
                                );
                            }
                        }
                    }
                }
            }
        };
        self.vars.truncate(mark);
        self.depth -= 1;
        Ok(Node::Control {
            kind,
            pipe,
            list,
            else_list,
        })
    }

    fn expect_end(&self, cursor: &Cursor, context: &str) -> Result<(), TemplateError> {
        match cursor.peek() {
            None => Ok(()),
            Some(t) => Err(self.error(
                t.span.start,
                format!("unexpected {:?} in {context}", self.text_of(t.span)),
            )),
        }
    }

    /// `[decl] command ('|' command)*`, stopping before `)` or the end.
    fn pipeline(
        &mut self,
        cursor: &mut Cursor,
        context: &str,
        allow_decl: bool,
    ) -> Result<Pipeline, TemplateError> {
        let mut decl = Vec::new();
        let mut is_assign = false;
        if allow_decl && let Some((names, assign)) = self.declaration(cursor, context)? {
            decl = names;
            is_assign = assign;
        }
        let mut cmds = Vec::new();
        loop {
            let cmd = self.command(cursor, context)?;
            if !cmds.is_empty()
                && let Some(first) = cmd.args.first()
                && matches!(first.kind, ArgKind::Dot | ArgKind::Nil | ArgKind::Const(_))
            {
                return Err(self.error(
                    first.span.start,
                    format!(
                        "non executable command in pipeline stage {}",
                        cmds.len() + 1
                    ),
                ));
            }
            cmds.push(cmd);
            match cursor.peek().map(|t| &t.tok) {
                Some(Tok::Pipe) => {
                    cursor.next();
                }
                _ => break,
            }
        }
        if !is_assign {
            self.vars.extend(decl.iter().cloned());
        }
        Ok(Pipeline {
            decl,
            is_assign,
            cmds,
        })
    }

    /// `$x :=`, `$x =`, and for range `$i, $x :=`.
    fn declaration(
        &mut self,
        cursor: &mut Cursor,
        context: &str,
    ) -> Result<Option<(Vec<String>, bool)>, TemplateError> {
        let all: &[Token] = cursor.toks;
        let toks = &all[cursor.i..];
        let var = |i: usize| match toks.get(i).map(|t| &t.tok) {
            Some(Tok::Var(name)) => Some(name.clone()),
            _ => None,
        };
        let op = |i: usize| match toks.get(i).map(|t| &t.tok) {
            Some(Tok::Declare) => Some(false),
            Some(Tok::Assign) => Some(true),
            _ => None,
        };
        let Some(first) = var(0) else {
            return Ok(None);
        };
        let (names, assign, used) = if let Some(assign) = op(1) {
            (vec![first], assign, 2)
        } else if matches!(toks.get(1).map(|t| &t.tok), Some(Tok::Comma)) {
            let (Some(second), Some(assign)) = (var(2), op(3)) else {
                return Ok(None);
            };
            if context != "range" {
                return Err(self.error(
                    toks[1].span.start,
                    format!("too many declarations in {context}"),
                ));
            }
            (vec![first, second], assign, 4)
        } else {
            return Ok(None);
        };
        if assign {
            for (name, token) in names.iter().zip(toks) {
                if !self.vars.contains(name) {
                    return Err(
                        self.error(token.span.start, format!("undefined variable {name:?}"))
                    );
                }
            }
        }
        cursor.i += used;
        Ok(Some((names, assign)))
    }

    fn command(&mut self, cursor: &mut Cursor, context: &str) -> Result<Command, TemplateError> {
        let start = cursor.peek().map_or(cursor.end, |t| t.span.start);
        let mut args = Vec::new();
        while let Some(token) = cursor.peek() {
            if matches!(token.tok, Tok::Pipe | Tok::RParen) {
                break;
            }
            if !args.is_empty() && !token.space_before {
                return Err(self.error(
                    token.span.start,
                    format!("missing space before {:?}", self.text_of(token.span)),
                ));
            }
            args.push(self.operand(cursor)?);
        }
        let Some(last) = args.last() else {
            let at = cursor.peek().map_or(cursor.end, |t| t.span.start);
            return Err(self.error(at, format!("missing value for {context}")));
        };
        let span = Span {
            start,
            end: last.span.end,
        };
        Ok(Command { span, args })
    }

    fn operand(&mut self, cursor: &mut Cursor) -> Result<Arg, TemplateError> {
        let mut arg = self.term(cursor)?;
        let mut chain = Vec::new();
        while let Some(token) = cursor.peek() {
            match &token.tok {
                Tok::Field(name) if !token.space_before => {
                    chain.push(name.clone());
                    arg.span.end = token.span.end;
                    cursor.next();
                }
                _ => break,
            }
        }
        if !chain.is_empty() {
            match &mut arg.kind {
                ArgKind::Field(names) | ArgKind::Var(_, names) | ArgKind::Paren(_, names) => {
                    names.extend(chain)
                }
                _ => {
                    return Err(self.error(
                        arg.span.start,
                        format!("unexpected . after term {:?}", self.text_of(arg.span)),
                    ));
                }
            }
        }
        Ok(arg)
    }

    fn term(&mut self, cursor: &mut Cursor) -> Result<Arg, TemplateError> {
        let Some(token) = cursor.next() else {
            return Err(self.error(cursor.end, "missing operand"));
        };
        let span = token.span;
        let kind =
            match &token.tok {
                Tok::Ident(name) => {
                    if KEYWORDS.contains(&name.as_str()) {
                        return Err(
                            self.error(span.start, format!("unexpected {{{{{name}}}}} in operand"))
                        );
                    }
                    ArgKind::Func(
                        Builtin::lookup(name)
                            .or_else(|| {
                                self.funcs
                                    .iter()
                                    .position(|(n, _)| n == name)
                                    .map(Builtin::Ext)
                            })
                            .ok_or_else(|| {
                                self.error(span.start, format!("function {name:?} not defined"))
                            })?,
                    )
                }
                Tok::Dot => ArgKind::Dot,
                Tok::Nil => ArgKind::Nil,
                Tok::Var(name) => {
                    if !self.vars.contains(name) {
                        return Err(self.error(span.start, format!("undefined variable {name:?}")));
                    }
                    ArgKind::Var(name.clone(), Vec::new())
                }
                Tok::Field(name) => ArgKind::Field(vec![name.clone()]),
                Tok::Bool(b) => ArgKind::Const(Value::Bool(*b)),
                Tok::Str(s) => ArgKind::Const(Value::Str(s.clone())),
                Tok::Char(c) => ArgKind::Const(Value::Int(i64::from(u32::from(*c)))),
                Tok::Number(text) => ArgKind::Const(parse_number(text).ok_or_else(|| {
                    self.error(span.start, format!("bad number syntax: {text:?}"))
                })?),
                Tok::LParen => {
                    self.depth += 1;
                    if self.depth > MAX_DEPTH {
                        return Err(self.error(span.start, "template nested too deeply"));
                    }
                    let pipe = self.pipeline(cursor, "parenthesized pipeline", false)?;
                    let close = match cursor.next() {
                        Some(t) if t.tok == Tok::RParen => t.span.end,
                        _ => return Err(self.error(span.start, "unclosed left paren")),
                    };
                    self.depth -= 1;
                    return Ok(Arg {
                        span: Span {
                            start: span.start,
                            end: close,
                        },
                        kind: ArgKind::Paren(Box::new(pipe), Vec::new()),
                    });
                }
                Tok::Pipe | Tok::RParen | Tok::Declare | Tok::Assign | Tok::Comma => {
                    return Err(self.error(
                        span.start,
                        format!("unexpected {:?} in operand", self.text_of(span)),
                    ));
                }
            };
        Ok(Arg { span, kind })
    }
}

struct Cursor<'t> {
    toks: &'t [Token],
    i: usize,
    /// Where errors about a missing token point: the end of the last token,
    /// or the action's start when it has none.
    end: usize,
}

impl<'t> Cursor<'t> {
    fn new(toks: &'t [Token], action_start: usize) -> Cursor<'t> {
        let end = toks.last().map_or(action_start, |t| t.span.end);
        Cursor { toks, i: 0, end }
    }

    fn peek(&self) -> Option<&'t Token> {
        self.toks.get(self.i)
    }

    fn next(&mut self) -> Option<&'t Token> {
        let token = self.toks.get(self.i)?;
        self.i += 1;
        Some(token)
    }
}

/// Length of the number literal at the start of `s` (validated later):
/// digits, letters (hex digits, base prefixes, exponents), `_`, `.`, and a
/// sign right after an exponent marker.
fn number_len(s: &str) -> usize {
    let bytes = s.as_bytes();
    let hex = s.starts_with("0x") || s.starts_with("0X");
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let exponent_sign = (b == b'+' || b == b'-')
            && i > 0
            && (if hex {
                matches!(bytes[i - 1], b'p' | b'P')
            } else {
                matches!(bytes[i - 1], b'e' | b'E')
            });
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || exponent_sign {
            i += 1;
        } else {
            break;
        }
    }
    i
}

/// Go number constants: integers (decimal, `0x`, `0o`, `0b`, `_` separators)
/// become `Int`, anything else that parses as a float becomes `Float`.
fn parse_number(text: &str) -> Option<Value> {
    let (negative, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let clean = body.replace('_', "");
    let lower = clean.to_ascii_lowercase();
    let int = if let Some(hex) = lower.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()
    } else if let Some(oct) = lower.strip_prefix("0o") {
        i64::from_str_radix(oct, 8).ok()
    } else if let Some(bin) = lower.strip_prefix("0b") {
        i64::from_str_radix(bin, 2).ok()
    } else if lower.len() > 1 && lower.starts_with('0') && lower.bytes().all(|b| b.is_ascii_digit())
    {
        i64::from_str_radix(&lower[1..], 8).ok()
    } else if lower.bytes().all(|b| b.is_ascii_digit()) {
        lower.parse::<i64>().ok()
    } else {
        None
    };
    if let Some(n) = int {
        return Some(Value::Int(if negative { -n } else { n }));
    }
    let is_float_syntax = lower
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'+' | b'-'))
        && lower.bytes().any(|b| b.is_ascii_digit());
    if !is_float_syntax {
        return None;
    }
    let f: f64 = lower.parse().ok()?;
    Some(Value::Float(if negative { -f } else { f }))
}

/// A `"…"` literal at the start of `s`: its value and length in bytes.
fn lex_quoted(s: &str) -> Result<(String, usize), String> {
    let mut value = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, i + 1)),
            '\n' => break,
            '\\' => {
                let (_, e) = chars.next().ok_or("unterminated quoted string")?;
                value.push(unescape(e, &mut chars, '"')?);
            }
            c => value.push(c),
        }
    }
    Err("unterminated quoted string".to_string())
}

/// A `'…'` character constant at the start of `s`.
fn lex_char(s: &str) -> Result<(char, usize), String> {
    let mut chars = s.char_indices().skip(1);
    let value = match chars.next() {
        Some((_, '\\')) => {
            let (_, e) = chars.next().ok_or("unterminated character constant")?;
            unescape(e, &mut chars, '\'')?
        }
        Some((_, '\'')) | Some((_, '\n')) | None => {
            return Err("malformed character constant".to_string());
        }
        Some((_, c)) => c,
    };
    match chars.next() {
        Some((i, '\'')) => Ok((value, i + 1)),
        _ => Err("malformed character constant".to_string()),
    }
}

/// The character a Go escape sequence (after the backslash) stands for.
fn unescape(
    e: char,
    chars: &mut impl Iterator<Item = (usize, char)>,
    quote: char,
) -> Result<char, String> {
    let mut hex = |n: usize, radix: u32| -> Result<char, String> {
        let mut code = 0u32;
        for _ in 0..n {
            let (_, d) = chars.next().ok_or("invalid escape sequence")?;
            code = code * radix + d.to_digit(radix).ok_or("invalid escape sequence")?;
        }
        char::from_u32(code).ok_or_else(|| "invalid escape sequence".to_string())
    };
    Ok(match e {
        'a' => '\x07',
        'b' => '\x08',
        'f' => '\x0c',
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        'v' => '\x0b',
        '\\' => '\\',
        'x' => hex(2, 16)?,
        'u' => hex(4, 16)?,
        'U' => hex(8, 16)?,
        '0'..='7' => {
            let rest = hex(2, 8)?;
            let code = e.to_digit(8).unwrap_or(0) * 64 + u32::from(rest);
            char::from_u32(code).ok_or("invalid escape sequence")?
        }
        c if c == quote => c,
        c => return Err(format!("unknown escape sequence \\{c}")),
    })
}

// ---------------------------------------------------------------------------
// Execution

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Normal,
    Break,
    Continue,
}

struct Exec<'s> {
    src: &'s str,
    out: String,
    vars: Vec<(String, Value)>,
    funcs: &'s [(&'static str, Function)],
    /// `missingkey=error`.
    strict: bool,
}

impl Exec<'_> {
    fn error(&self, span: Span, message: impl Into<String>) -> TemplateError {
        TemplateError::Exec {
            pos: pos_at(self.src, span.start),
            context: self.src[span.start..span.end].to_string(),
            message: message.into(),
        }
    }

    fn walk(&mut self, dot: &Value, nodes: &[Node]) -> Result<Flow, TemplateError> {
        for node in nodes {
            let flow = match node {
                Node::Text(text) => {
                    self.out.push_str(text);
                    Flow::Normal
                }
                Node::Action(pipe) => {
                    let value = self.eval_pipeline(dot, pipe)?;
                    if pipe.decl.is_empty() {
                        match value {
                            // What Go prints for a missing map key or nil.
                            Value::Null => self.out.push_str("<no value>"),
                            value => write_value(&mut self.out, &value),
                        }
                    }
                    Flow::Normal
                }
                Node::Control {
                    kind: Control::Range,
                    pipe,
                    list,
                    else_list,
                } => self.walk_range(dot, pipe, list, else_list.as_deref())?,
                Node::Control {
                    kind,
                    pipe,
                    list,
                    else_list,
                } => {
                    let mark = self.vars.len();
                    let value = self.eval_pipeline(dot, pipe)?;
                    let flow = if truth(&value) {
                        let inner = if *kind == Control::With { &value } else { dot };
                        self.walk(inner, list)?
                    } else if let Some(else_list) = else_list {
                        self.walk(dot, else_list)?
                    } else {
                        Flow::Normal
                    };
                    self.vars.truncate(mark);
                    flow
                }
                Node::Break => Flow::Break,
                Node::Continue => Flow::Continue,
            };
            if flow != Flow::Normal {
                return Ok(flow);
            }
        }
        Ok(Flow::Normal)
    }

    fn walk_range(
        &mut self,
        dot: &Value,
        pipe: &Pipeline,
        list: &[Node],
        else_list: Option<&[Node]>,
    ) -> Result<Flow, TemplateError> {
        let mark = self.vars.len();
        let value = self.eval_pipeline(dot, pipe)?;
        let items: Vec<(Value, Value)> = match value {
            Value::List(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (Value::Int(i64::try_from(i).unwrap_or(i64::MAX)), v))
                .collect(),
            Value::Map(map) => map.into_iter().map(|(k, v)| (Value::Str(k), v)).collect(),
            Value::Pairs(pairs) => pairs,
            // Go treats a nil collection as empty rather than an error.
            Value::Null => Vec::new(),
            other => {
                let span = pipe
                    .cmds
                    .first()
                    .map_or(Span { start: 0, end: 0 }, |c| c.span);
                let mut shown = String::new();
                write_value(&mut shown, &other);
                return Err(self.error(span, format!("range can't iterate over {shown}")));
            }
        };
        if items.is_empty() {
            if let Some(else_list) = else_list {
                self.walk(dot, else_list)?;
            }
            self.vars.truncate(mark);
            return Ok(Flow::Normal);
        }
        let base = self.vars.len();
        for (key, elem) in items {
            if !pipe.is_assign {
                match pipe.decl.len() {
                    1 => self.vars[base - 1].1 = elem.clone(),
                    2 => {
                        self.vars[base - 2].1 = key;
                        self.vars[base - 1].1 = elem.clone();
                    }
                    _ => {}
                }
            } else {
                let names: Vec<String> = pipe.decl.clone();
                let values = if names.len() == 2 {
                    vec![key, elem.clone()]
                } else {
                    vec![elem.clone()]
                };
                for (name, value) in names.iter().zip(values) {
                    self.set_var(name, value);
                }
            }
            let flow = self.walk(&elem, list)?;
            self.vars.truncate(base);
            if flow == Flow::Break {
                break;
            }
        }
        self.vars.truncate(mark);
        Ok(Flow::Normal)
    }

    fn set_var(&mut self, name: &str, value: Value) -> bool {
        match self.vars.iter_mut().rev().find(|(n, _)| n == name) {
            Some(slot) => {
                slot.1 = value;
                true
            }
            None => false,
        }
    }

    fn eval_pipeline(&mut self, dot: &Value, pipe: &Pipeline) -> Result<Value, TemplateError> {
        let mut value = None;
        for cmd in &pipe.cmds {
            value = Some(self.eval_command(dot, cmd, value)?);
        }
        let value = value.unwrap_or(Value::Null);
        for name in &pipe.decl {
            if pipe.is_assign {
                if !self.set_var(name, value.clone()) {
                    let span = pipe
                        .cmds
                        .first()
                        .map_or(Span { start: 0, end: 0 }, |c| c.span);
                    return Err(self.error(span, format!("undefined variable: {name}")));
                }
            } else {
                self.vars.push((name.clone(), value.clone()));
            }
        }
        Ok(value)
    }

    fn eval_command(
        &mut self,
        dot: &Value,
        cmd: &Command,
        piped: Option<Value>,
    ) -> Result<Value, TemplateError> {
        let first = &cmd.args[0];
        match &first.kind {
            ArgKind::Func(f) => self.call(dot, *f, &cmd.args[1..], piped, cmd.span),
            ArgKind::Nil => Err(self.error(first.span, "nil is not a command")),
            _ => {
                if cmd.args.len() > 1 || piped.is_some() {
                    let text = &self.src[first.span.start..first.span.end];
                    return Err(self.error(
                        cmd.span,
                        format!("can't give argument to non-function {text}"),
                    ));
                }
                self.eval_arg(dot, first)
            }
        }
    }

    fn eval_arg(&mut self, dot: &Value, arg: &Arg) -> Result<Value, TemplateError> {
        let walked = match &arg.kind {
            ArgKind::Dot => return Ok(dot.clone()),
            ArgKind::Nil => return Ok(Value::Null),
            ArgKind::Const(value) => return Ok(value.clone()),
            ArgKind::Func(f) => return self.call(dot, *f, &[], None, arg.span),
            ArgKind::Field(chain) => field_chain(dot, chain, self.strict),
            ArgKind::Var(name, chain) => match self.vars.iter().rev().find(|(n, _)| n == name) {
                Some((_, value)) => field_chain(value, chain, self.strict),
                None => Err(format!("undefined variable: {name}")),
            },
            ArgKind::Paren(pipe, chain) => {
                let value = self.eval_pipeline(dot, pipe)?;
                field_chain(&value, chain, self.strict)
            }
        };
        walked.map_err(|message| self.error(arg.span, message))
    }

    fn call(
        &mut self,
        dot: &Value,
        f: Builtin,
        args: &[Arg],
        piped: Option<Value>,
        span: Span,
    ) -> Result<Value, TemplateError> {
        if matches!(f, Builtin::And | Builtin::Or) {
            // Go 1.18+: evaluation stops at the first operand that decides.
            let count = args.len() + usize::from(piped.is_some());
            if count == 0 {
                return Err(self.error(
                    span,
                    format!(
                        "wrong number of args for {}: want at least 1 got 0",
                        f.name()
                    ),
                ));
            }
            let decides = |v: &Value| truth(v) == (f == Builtin::Or);
            let mut last = Value::Null;
            for arg in args {
                last = self.eval_arg(dot, arg)?;
                if decides(&last) {
                    return Ok(last);
                }
            }
            if let Some(piped) = piped {
                last = piped;
            }
            return Ok(last);
        }
        let mut values = Vec::with_capacity(args.len() + 1);
        for arg in args {
            values.push(self.eval_arg(dot, arg)?);
        }
        values.extend(piped);
        let (name, result) = match f {
            Builtin::Ext(i) => {
                let (name, func) = self.funcs[i];
                (name, func(values))
            }
            _ => (f.name(), call_builtin(f, values)),
        };
        result.map_err(|message| self.error(span, format!("error calling {name}: {message}")))
    }
}

/// `.A.B…` starting at `base`; only the final value is cloned, so `$.X` does
/// not copy the whole data tree.
fn field_chain(base: &Value, chain: &[String], strict: bool) -> Result<Value, String> {
    let mut current = base;
    for name in chain {
        current = match current {
            Value::Map(map) => match map.get(name) {
                Some(value) => value,
                None if strict => return Err(format!("map has no entry for key {name:?}")),
                // A missing key is Go's "no value"; fields of it are too.
                None => return Ok(Value::Null),
            },
            Value::Object { fields, .. } => fields.get(name).ok_or_else(|| {
                format!("can't evaluate field {name} in type {}", type_name(current))
            })?,
            Value::Null => return Ok(Value::Null),
            other => {
                return Err(format!(
                    "can't evaluate field {name} in type {}",
                    type_name(other)
                ));
            }
        };
    }
    Ok(current.clone())
}

/// Go's `truth`: zero values, nil and empty collections are false; structs are true.
fn truth(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Int(n) => *n != 0,
        Value::Float(f) => *f != 0.0,
        Value::Str(s) => !s.is_empty(),
        Value::List(items) => !items.is_empty(),
        Value::Map(map) => !map.is_empty(),
        Value::Pairs(pairs) => !pairs.is_empty(),
        Value::Object { .. } => true,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "nil",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Float(_) => "float64",
        Value::Str(_) => "string",
        Value::List(_) => "[]interface {}",
        Value::Map(_) => "map[string]interface {}",
        Value::Object { .. } => "struct",
        Value::Pairs(_) => "map",
    }
}

fn arity(f: Builtin, args: &[Value], want: usize) -> Result<(), String> {
    if args.len() == want {
        Ok(())
    } else {
        Err(format!(
            "wrong number of args for {}: want {want} got {}",
            f.name(),
            args.len()
        ))
    }
}

fn arity_at_least(f: Builtin, args: &[Value], want: usize) -> Result<(), String> {
    if args.len() >= want {
        Ok(())
    } else {
        Err(format!(
            "wrong number of args for {}: want at least {want} got {}",
            f.name(),
            args.len()
        ))
    }
}

fn string_arg(v: &Value) -> Result<&str, String> {
    match v {
        Value::Str(s) => Ok(s),
        other => Err(format!(
            "wrong type for value; expected string; got {}",
            type_name(other)
        )),
    }
}

fn call_builtin(f: Builtin, args: Vec<Value>) -> Result<Value, String> {
    use Builtin::*;
    match f {
        // Handled lazily in `Exec::call`.
        And | Or => Ok(args.into_iter().last().unwrap_or(Value::Null)),
        Not => {
            arity(f, &args, 1)?;
            Ok(Value::Bool(!truth(&args[0])))
        }
        Len => {
            arity(f, &args, 1)?;
            let n = match &args[0] {
                Value::Str(s) => s.len(),
                Value::List(items) => items.len(),
                Value::Map(map) => map.len(),
                Value::Pairs(pairs) => pairs.len(),
                other => return Err(format!("len of type {}", type_name(other))),
            };
            Ok(Value::Int(i64::try_from(n).unwrap_or(i64::MAX)))
        }
        Index => {
            arity_at_least(f, &args, 1)?;
            let mut args = args.into_iter();
            let mut item = args.next().unwrap_or(Value::Null);
            for key in args {
                item = index(&item, &key)?;
            }
            Ok(item)
        }
        Print => Ok(Value::Str(sprint(&args))),
        Println => Ok(Value::Str(sprintln(&args))),
        Printf => {
            arity_at_least(f, &args, 1)?;
            let format = string_arg(&args[0])?;
            Ok(Value::Str(sprintf(format, &args[1..])))
        }
        Eq => {
            arity_at_least(f, &args, 1)?;
            if args.len() < 2 {
                return Err("missing argument for comparison".to_string());
            }
            for other in &args[1..] {
                if equal(&args[0], other)? {
                    return Ok(Value::Bool(true));
                }
            }
            Ok(Value::Bool(false))
        }
        Ne => {
            arity(f, &args, 2)?;
            Ok(Value::Bool(!equal(&args[0], &args[1])?))
        }
        Lt | Le | Gt | Ge => {
            arity(f, &args, 2)?;
            let ord = compare(&args[0], &args[1])?;
            Ok(Value::Bool(match f {
                Lt => ord.is_lt(),
                Le => ord.is_le(),
                Gt => ord.is_gt(),
                _ => ord.is_ge(),
            }))
        }
        Lower | Upper | Trim => {
            arity(f, &args, 1)?;
            let s = string_arg(&args[0])?;
            Ok(Value::Str(match f {
                Lower => s.to_lowercase(),
                Upper => s.to_uppercase(),
                _ => s.trim().to_string(),
            }))
        }
        Contains | HasPrefix | HasSuffix | TrimPrefix | TrimSuffix => {
            arity(f, &args, 2)?;
            let needle = string_arg(&args[0])?;
            let s = string_arg(&args[1])?;
            Ok(match f {
                Contains => Value::Bool(s.contains(needle)),
                HasPrefix => Value::Bool(s.starts_with(needle)),
                HasSuffix => Value::Bool(s.ends_with(needle)),
                TrimPrefix => Value::Str(s.strip_prefix(needle).unwrap_or(s).to_string()),
                _ => Value::Str(s.strip_suffix(needle).unwrap_or(s).to_string()),
            })
        }
        Ext(_) => Err("an extension function called as a builtin".into()),
        Replace => {
            arity(f, &args, 3)?;
            let old = string_arg(&args[0])?;
            let new = string_arg(&args[1])?;
            let s = string_arg(&args[2])?;
            Ok(Value::Str(s.replace(old, new)))
        }
    }
}

fn index(item: &Value, key: &Value) -> Result<Value, String> {
    match (item, key) {
        (Value::List(items), Value::Int(i)) => usize::try_from(*i)
            .ok()
            .and_then(|i| items.get(i))
            .cloned()
            .ok_or_else(|| format!("index out of range: {i}")),
        (Value::Str(s), Value::Int(i)) => usize::try_from(*i)
            .ok()
            .and_then(|i| s.as_bytes().get(i))
            .map(|b| Value::Int(i64::from(*b)))
            .ok_or_else(|| format!("index out of range: {i}")),
        (Value::List(_) | Value::Str(_), other) => Err(format!(
            "cannot index slice/array with type {}",
            type_name(other)
        )),
        (Value::Map(map), Value::Str(k)) => Ok(map.get(k).cloned().unwrap_or(Value::Null)),
        (Value::Map(_), other) => Err(format!(
            "value has type {}; should be string",
            type_name(other)
        )),
        (Value::Pairs(pairs), key) => Ok(pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or(Value::Null)),
        (Value::Null, _) => Err("index of untyped nil".to_string()),
        (other, _) => Err(format!("can't index item of type {}", type_name(other))),
    }
}

/// Go's `eq` for one pair: basic kinds compare by value, structs by all
/// fields, anything else, or two different kinds, is an error; nil only
/// equals nil.
fn equal(a: &Value, b: &Value) -> Result<bool, String> {
    Ok(match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Null, _) | (_, Value::Null) => false,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::Float(x), Value::Float(y)) => x == y,
        (Value::Str(x), Value::Str(y)) => x == y,
        (Value::Object { .. }, Value::Object { .. }) => a == b,
        (Value::List(_) | Value::Map(_) | Value::Pairs(_), _)
        | (_, Value::List(_) | Value::Map(_) | Value::Pairs(_)) => {
            return Err(format!(
                "non-comparable types {}, {}",
                type_name(a),
                type_name(b)
            ));
        }
        _ => return Err("incompatible types for comparison".to_string()),
    })
}

fn compare(a: &Value, b: &Value) -> Result<std::cmp::Ordering, String> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Ok(x.cmp(y)),
        (Value::Float(x), Value::Float(y)) => x
            .partial_cmp(y)
            .ok_or_else(|| "invalid type for comparison".to_string()),
        (Value::Str(x), Value::Str(y)) => Ok(x.cmp(y)),
        (
            Value::Int(_) | Value::Float(_) | Value::Str(_),
            Value::Int(_) | Value::Float(_) | Value::Str(_),
        ) => Err("incompatible types for comparison".to_string()),
        _ => Err("invalid type for comparison".to_string()),
    }
}

// ---------------------------------------------------------------------------
// Go's fmt, for the subset templates use

/// `%v`.
fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("<nil>"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Float(f) => out.push_str(&go_float(*f)),
        Value::Str(s) => out.push_str(s),
        Value::Object { display, .. } => out.push_str(display),
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Map(map) => {
            out.push_str("map[");
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push(':');
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Pairs(pairs) => {
            out.push_str("map[");
            for (i, (k, item)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                write_value(out, k);
                out.push(':');
                write_value(out, item);
            }
            out.push(']');
        }
    }
}

fn value_string(v: &Value) -> String {
    let mut s = String::new();
    write_value(&mut s, v);
    s
}

/// `fmt.Sprint`: a space between operands when neither side is a string.
fn sprint(args: &[Value]) -> String {
    let mut out = String::new();
    let mut prev_string = false;
    for (i, arg) in args.iter().enumerate() {
        let is_string = matches!(arg, Value::Str(_));
        if i > 0 && !is_string && !prev_string {
            out.push(' ');
        }
        write_value(&mut out, arg);
        prev_string = is_string;
    }
    out
}

/// `fmt.Sprintln`: always spaces between operands, newline at the end.
fn sprintln(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        write_value(&mut out, arg);
    }
    out.push('\n');
    out
}

#[derive(Default)]
struct Spec {
    minus: bool,
    plus: bool,
    zero: bool,
    width: Option<usize>,
    precision: Option<usize>,
}

/// `fmt.Sprintf` for the verbs `%v %s %d %q %t %x %X %c %f %g %e %T %%`, with
/// flags `-+0`, width and precision; mistakes render inline as Go does
/// (`%!d(string=x)`, `%!s(MISSING)`, `%!(EXTRA …)`).
fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut next_arg = 0;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&flag) = chars.peek() {
            match flag {
                '-' => spec.minus = true,
                '+' => spec.plus = true,
                '0' => spec.zero = true,
                ' ' | '#' => {}
                _ => break,
            }
            chars.next();
        }
        spec.width = take_digits(&mut chars);
        if chars.peek() == Some(&'.') {
            chars.next();
            spec.precision = Some(take_digits(&mut chars).unwrap_or(0));
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next_arg) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        next_arg += 1;
        let body = format_verb(verb, arg, &spec);
        out.push_str(&pad(body, arg, &spec));
    }
    if next_arg < args.len() {
        out.push_str("%!(EXTRA ");
        for (i, arg) in args[next_arg..].iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            match arg {
                Value::Null => out.push_str("<nil>"),
                arg => {
                    let _ = write!(out, "{}={}", type_name(arg), value_string(arg));
                }
            }
        }
        out.push(')');
    }
    out
}

fn take_digits(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<usize> {
    let mut n: Option<usize> = None;
    while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
        chars.next();
        n = Some(n.unwrap_or(0).saturating_mul(10).saturating_add(d as usize));
    }
    n
}

fn bad_verb(verb: char, arg: &Value) -> String {
    match arg {
        Value::Null => format!("%!{verb}(<nil>)"),
        arg => format!("%!{verb}({}={})", type_name(arg), value_string(arg)),
    }
}

fn format_verb(verb: char, arg: &Value, spec: &Spec) -> String {
    // Like Go, collections apply the verb element-wise.
    let each = |open: &str| -> Option<String> {
        let mut out = String::from(open);
        match arg {
            Value::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push_str(&format_verb(verb, item, spec));
                }
            }
            Value::Map(map) => {
                for (i, (k, item)) in map.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push_str(&format_verb(verb, &Value::Str(k.clone()), spec));
                    out.push(':');
                    out.push_str(&format_verb(verb, item, spec));
                }
            }
            _ => return None,
        }
        out.push(']');
        Some(out)
    };
    match (verb, arg) {
        ('T', arg) => type_name(arg).to_string(),
        ('v', Value::Int(n)) if spec.plus && *n >= 0 => format!("+{n}"),
        ('v', _) => value_string(arg),
        (_, Value::List(_)) => each("[").unwrap_or_default(),
        (_, Value::Map(_)) => each("map[").unwrap_or_default(),
        ('s', Value::Str(s)) => truncate(s, spec.precision),
        ('s', Value::Object { display, .. }) => truncate(display, spec.precision),
        ('q', Value::Str(s)) => go_quote(s, '"'),
        ('q', Value::Object { display, .. }) => go_quote(display, '"'),
        ('q', Value::Int(n)) => match u32::try_from(*n).ok().and_then(char::from_u32) {
            Some(c) => go_quote(&c.to_string(), '\''),
            None => bad_verb(verb, arg),
        },
        ('d', Value::Int(n)) if spec.plus && *n >= 0 => format!("+{n}"),
        ('d', Value::Int(n)) => n.to_string(),
        ('c', Value::Int(n)) => u32::try_from(*n)
            .ok()
            .and_then(char::from_u32)
            .unwrap_or('\u{fffd}')
            .to_string(),
        ('x', Value::Int(n)) => signed_radix(*n, |u| format!("{u:x}")),
        ('X', Value::Int(n)) => signed_radix(*n, |u| format!("{u:X}")),
        ('x', Value::Str(s)) => s.bytes().map(|b| format!("{b:02x}")).collect(),
        ('X', Value::Str(s)) => s.bytes().map(|b| format!("{b:02X}")).collect(),
        ('t', Value::Bool(b)) => b.to_string(),
        ('f' | 'F', Value::Float(f)) => {
            with_plus(format!("{:.*}", spec.precision.unwrap_or(6), f), spec)
        }
        ('e', Value::Float(f)) => with_plus(go_exp(*f, spec.precision.unwrap_or(6)), spec),
        ('g', Value::Float(f)) if spec.precision.is_none() => with_plus(go_float(*f), spec),
        _ => bad_verb(verb, arg),
    }
}

fn with_plus(s: String, spec: &Spec) -> String {
    if spec.plus && !s.starts_with('-') {
        format!("+{s}")
    } else {
        s
    }
}

fn signed_radix(n: i64, digits: impl Fn(u64) -> String) -> String {
    if n < 0 {
        format!("-{}", digits(n.unsigned_abs()))
    } else {
        digits(n.unsigned_abs())
    }
}

fn truncate(s: &str, precision: Option<usize>) -> String {
    match precision {
        Some(p) => s.chars().take(p).collect(),
        None => s.to_string(),
    }
}

/// Width padding; `0` pads numbers after their sign (and, as in Go, strings too).
fn pad(body: String, arg: &Value, spec: &Spec) -> String {
    let Some(width) = spec.width else {
        return body;
    };
    let len = body.chars().count();
    if len >= width {
        return body;
    }
    let fill = width - len;
    if spec.minus {
        return format!("{body}{}", " ".repeat(fill));
    }
    if spec.zero {
        let numeric = matches!(arg, Value::Int(_) | Value::Float(_));
        if numeric && (body.starts_with('-') || body.starts_with('+')) {
            let (sign, digits) = body.split_at(1);
            return format!("{sign}{}{digits}", "0".repeat(fill));
        }
        return format!("{}{body}", "0".repeat(fill));
    }
    format!("{}{body}", " ".repeat(fill))
}

/// `strconv.Quote` / `QuoteRune`: Go escapes, printable Unicode kept.
fn go_quote(s: &str, quote: char) -> String {
    let mut out = String::new();
    out.push(quote);
    for c in s.chars() {
        match c {
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            '\\' => out.push_str("\\\\"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() || (c.is_whitespace() && c != ' ') => {
                let code = u32::from(c);
                let _ = if code < 0x80 {
                    write!(out, "\\x{code:02x}")
                } else if code < 0x10000 {
                    write!(out, "\\u{code:04x}")
                } else {
                    write!(out, "\\U{code:08x}")
                };
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Go's `%v` for float64, i.e. `strconv.FormatFloat(f, 'g', -1, 64)`:
/// shortest round-trip digits, in `%e` form when the decimal exponent is
/// below -4 or at least 6 (Go uses 6 as the cut-off for shortest precision).
fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if negative { "-" } else { "" };
    if !(-4..6).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { "" } else { "." };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        return format!(
            "{sign}{first}{dot}{rest}e{exp_sign}{:02}",
            exp.unsigned_abs()
        );
    }
    let point = exp + 1;
    let body = if point <= 0 {
        format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
    } else {
        let point = point as usize;
        if point >= digits.len() {
            format!("{digits}{}", "0".repeat(point - digits.len()))
        } else {
            format!("{}.{}", &digits[..point], &digits[point..])
        }
    };
    format!("{sign}{body}")
}

/// Go's `%e` with a precision: `1.500000e+00`.
fn go_exp(f: f64, precision: usize) -> String {
    if !f.is_finite() {
        return go_float(f);
    }
    let sci = format!("{f:.precision$e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let exp_sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{exp_sign}{:02}", exp.unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::Str(v.to_string())
    }

    fn map(entries: &[(&str, Value)]) -> Value {
        Value::Map(
            entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    fn object(display: &str, entries: &[(&str, Value)]) -> Value {
        Value::Object {
            fields: entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            display: display.to_string(),
        }
    }

    fn ok(template: &str, data: &Value) -> String {
        render(template, data).unwrap_or_else(|e| panic!("{template:?}: {e}"))
    }

    fn err(template: &str, data: &Value) -> String {
        match render(template, data) {
            Ok(out) => panic!("{template:?} should fail, rendered {out:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn change(old: &str, new: &str, setter: &str) -> Value {
        object(
            &format!("{{{old} {new} {setter}}}"),
            &[
                ("OldValue", s(old)),
                ("NewValue", s(new)),
                ("Setter", s(setter)),
            ],
        )
    }

    fn object_id(name: &str, namespace: &str, api_version: &str, kind: &str) -> Value {
        object(
            &format!("{{{name} {namespace} {api_version} {kind}}}"),
            &[
                ("Name", s(name)),
                ("Namespace", s(namespace)),
                ("APIVersion", s(api_version)),
                ("Kind", s(kind)),
            ],
        )
    }

    /// Flux v1 template data for one Deployment whose image changed.
    fn flux_data() -> Value {
        let changes = vec![change(
            "ghcr.io/stefanprodan/podinfo:5.0.0",
            "ghcr.io/stefanprodan/podinfo:5.0.3",
            "flux-system:podinfo-policy",
        )];
        let objects = Value::Pairs(vec![(
            object_id("podinfo", "default", "apps/v1", "Deployment"),
            Value::List(changes.clone()),
        )]);
        map(&[
            (
                "AutomationObject",
                object(
                    "flux-system/podinfo-update",
                    &[
                        ("Name", s("podinfo-update")),
                        ("Namespace", s("flux-system")),
                    ],
                ),
            ),
            (
                "Changed",
                object(
                    "",
                    &[
                        (
                            "FileChanges",
                            map(&[("deploy/podinfo.yaml", objects.clone())]),
                        ),
                        ("Objects", objects),
                        ("Changes", Value::List(changes)),
                    ],
                ),
            ),
            ("Values", map(&[("cluster", s("prod"))])),
        ])
    }

    #[test]
    fn seed_form_updated_images() {
        let template = "Image: {{range .Updated.Images}}{{println .}}{{end}}";
        let images = map(&[(
            "Updated",
            map(&[(
                "Images",
                Value::List(vec![object(
                    "registry/app:tag",
                    &[("Name", s("registry/app")), ("Tag", s("tag"))],
                )]),
            )]),
        )]);
        assert_eq!(ok(template, &images), "Image: registry/app:tag\n");
        let strings = map(&[(
            "Updated",
            map(&[("Images", Value::List(vec![s("registry/app:tag")]))]),
        )]);
        assert_eq!(ok(template, &strings), "Image: registry/app:tag\n");
        let two = map(&[(
            "Updated",
            map(&[("Images", Value::List(vec![s("a:1"), s("b:2")]))]),
        )]);
        assert_eq!(ok(template, &two), "Image: a:1\nb:2\n");
    }

    #[test]
    fn flux_v1_docs_template() {
        // docs/spec/v1/imageupdateautomations.md, "Example of using the methods in a template".
        let template = r#"Automated image update

Automation name: {{ .AutomationObject }}

Files:
{{ range $filename, $_ := .Changed.FileChanges -}}
- {{ $filename }}
{{ end -}}

Objects:
{{ range $resource, $changes := .Changed.Objects -}}
- {{ $resource.Kind }} {{ $resource.Name }}
  Changes:
{{- range $_, $change := $changes }}
    - {{ $change.OldValue }} -> {{ $change.NewValue }}
{{ end -}}
{{ end -}}
"#;
        assert_eq!(
            ok(template, &flux_data()),
            "Automated image update\n\
             \n\
             Automation name: flux-system/podinfo-update\n\
             \n\
             Files:\n\
             - deploy/podinfo.yaml\n\
             Objects:\n\
             - Deployment podinfo\n\
             \x20 Changes:\n\
             \x20   - ghcr.io/stefanprodan/podinfo:5.0.0 -> ghcr.io/stefanprodan/podinfo:5.0.3\n"
        );
    }

    #[test]
    fn flux_v1_docs_template_with_functions() {
        let template = r#"Objects:
{{ range $resource, $changes := .Changed.Objects -}}
- {{ $resource.Kind | lower }} {{ $resource.Name | lower }}
  Changes:
{{- range $_, $change := $changes }}
  {{ if contains "5.0.3" $change.NewValue -}}
    - {{ $change.OldValue }} -> {{ $change.NewValue }}
  {{ else -}}
    [skip ci] wrong image
  {{ end -}}
{{ end -}}
{{ end -}}
"#;
        assert_eq!(
            ok(template, &flux_data()),
            "Objects:\n- deployment podinfo\n  Changes:\n  - ghcr.io/stefanprodan/podinfo:5.0.0 -> ghcr.io/stefanprodan/podinfo:5.0.3\n  "
        );
    }

    #[test]
    fn flux_docs_values_and_changes() {
        let data = flux_data();
        assert_eq!(
            ok(
                "Automated image update by Flux for cluster {{ .Values.cluster }}.",
                &data
            ),
            "Automated image update by Flux for cluster prod."
        );
        assert_eq!(
            ok(
                "{{ range .Changed.Changes }}{{ .Setter }}: {{ .NewValue }}{{ end }}",
                &data
            ),
            "flux-system:podinfo-policy: ghcr.io/stefanprodan/podinfo:5.0.3"
        );
        assert_eq!(
            ok(
                "{{ .AutomationObject.Namespace }}/{{ .AutomationObject.Name }}",
                &data
            ),
            "flux-system/podinfo-update"
        );
    }

    #[test]
    fn fields_dot_and_missing_keys() {
        let data = map(&[
            ("A", map(&[("B", s("deep"))])),
            ("N", Value::Int(3)),
            ("Nil", Value::Null),
        ]);
        assert_eq!(ok("{{ .A.B }}", &data), "deep");
        assert_eq!(ok("{{ .Missing }}", &data), "<no value>");
        assert_eq!(ok("{{ .Missing.Deeper }}", &data), "<no value>");
        assert_eq!(ok("{{ .Nil }}", &data), "<no value>");
        assert_eq!(ok("{{ .A }}", &data), "map[B:deep]");
        assert_eq!(ok("{{ . }}", &s("plain")), "plain");
        assert_eq!(ok("{{ .A.B }}{{ $.N }}", &data), "deep3");
        assert_eq!(ok("{{ (.A).B }}", &data), "deep");
        assert_eq!(ok("{{ print .Missing }}", &data), "<nil>");
    }

    #[test]
    fn trimming_and_comments() {
        let data = s("x");
        assert_eq!(ok("a  {{- . -}}  b", &data), "axb");
        assert_eq!(ok("a \n {{- . }} b", &data), "ax b");
        assert_eq!(ok("a {{ . -}} \n\t b", &data), "a xb");
        assert_eq!(ok("a{{/* note */}}b", &data), "ab");
        assert_eq!(ok("a {{- /* note */ -}} b", &data), "ab");
        assert_eq!(ok("a{{/* multi\nline */}}b", &data), "ab");
        // `{{-3}}` is the number -3, not a trim marker.
        assert_eq!(ok("a {{-3}} b", &data), "a -3 b");
        assert_eq!(ok("a {{ -3 }}", &data), "a -3");
        assert_eq!(ok("{{ \"}}\" }}", &data), "}}");
        assert_eq!(ok("no actions at all", &data), "no actions at all");
    }

    #[test]
    fn range_lists_maps_and_else() {
        let data = map(&[
            ("L", Value::List(vec![s("a"), s("b"), s("c")])),
            ("M", map(&[("z", Value::Int(1)), ("a", Value::Int(2))])),
            ("E", Value::List(vec![])),
        ]);
        assert_eq!(ok("{{ range .L }}[{{ . }}]{{ end }}", &data), "[a][b][c]");
        assert_eq!(
            ok("{{ range $i, $v := .L }}{{ $i }}={{ $v }} {{ end }}", &data),
            "0=a 1=b 2=c "
        );
        assert_eq!(ok("{{ range $v := .L }}{{ $v }}{{ end }}", &data), "abc");
        // Maps iterate in sorted key order.
        assert_eq!(
            ok("{{ range $k, $v := .M }}{{ $k }}{{ $v }}{{ end }}", &data),
            "a2z1"
        );
        assert_eq!(ok("{{ range .M }}{{ . }}{{ end }}", &data), "21");
        assert_eq!(
            ok("{{ range .E }}x{{ else }}empty{{ end }}", &data),
            "empty"
        );
        assert_eq!(
            ok("{{ range .Missing }}x{{ else }}none{{ end }}", &data),
            "none"
        );
        assert_eq!(ok("{{ range .E }}x{{ end }}", &data), "");
        // `$` stays the root inside range.
        assert_eq!(ok("{{ range .L }}{{ len $.L }}{{ end }}", &data), "333");
        assert_eq!(
            ok(
                "{{ range .L }}{{ if eq . \"b\" }}{{ continue }}{{ end }}{{ . }}{{ end }}",
                &data
            ),
            "ac"
        );
        assert_eq!(
            ok(
                "{{ range .L }}{{ if eq . \"b\" }}{{ break }}{{ end }}{{ . }}{{ end }}",
                &data
            ),
            "a"
        );
        // Pairs bind the key as given, so struct keys keep their fields.
        let pairs = Value::Pairs(vec![
            (object("k1", &[("Kind", s("Deployment"))]), Value::Int(1)),
            (object("k2", &[("Kind", s("Service"))]), Value::Int(2)),
        ]);
        assert_eq!(
            ok(
                "{{ range $k, $v := . }}{{ $k.Kind }}:{{ $v }} {{ end }}",
                &pairs
            ),
            "Deployment:1 Service:2 "
        );
        assert_eq!(ok("{{ . }}", &pairs), "map[k1:1 k2:2]");
    }

    #[test]
    fn conditionals_and_with() {
        let data = map(&[
            ("N", Value::Int(2)),
            ("S", s("")),
            ("O", object("obj", &[])),
        ]);
        let t = "{{ if eq .N 1 }}one{{ else if eq .N 2 }}two{{ else }}many{{ end }}";
        assert_eq!(ok(t, &data), "two");
        assert_eq!(ok("{{ if .S }}y{{ else }}n{{ end }}", &data), "n");
        assert_eq!(ok("{{ if .O }}y{{ end }}", &data), "y");
        assert_eq!(ok("{{ with .N }}[{{ . }}]{{ end }}", &data), "[2]");
        assert_eq!(
            ok("{{ with .S }}[{{ . }}]{{ else }}empty{{ end }}", &data),
            "empty"
        );
        assert_eq!(
            ok("{{ with .S }}a{{ else with .N }}{{ . }}{{ end }}", &data),
            "2"
        );
        assert_eq!(ok("{{ if $x := .N }}{{ $x }}{{ end }}", &data), "2");
        // Go truthiness.
        let cases = [
            (Value::Null, false),
            (Value::Bool(false), false),
            (Value::Int(0), false),
            (Value::Float(0.0), false),
            (s(""), false),
            (Value::List(vec![]), false),
            (map(&[]), false),
            (Value::Pairs(vec![]), false),
            (Value::Bool(true), true),
            (Value::Int(-1), true),
            (Value::Float(0.5), true),
            (s("0"), true),
            (Value::List(vec![Value::Null]), true),
            (object("", &[]), true),
        ];
        for (value, want) in cases {
            let got = ok("{{ if . }}t{{ else }}f{{ end }}", &value);
            assert_eq!(got, if want { "t" } else { "f" }, "{value:?}");
        }
    }

    #[test]
    fn variables() {
        let data = map(&[("L", Value::List(vec![s("a"), s("b")]))]);
        assert_eq!(ok("{{ $x := \"v\" }}{{ $x }}{{ $x }}", &data), "vv");
        assert_eq!(
            ok(
                "{{ $n := 0 }}{{ range .L }}{{ $n = len . }}{{ end }}{{ $n }}",
                &data
            ),
            "1"
        );
        assert_eq!(
            ok(
                "{{ $x := 1 }}{{ if true }}{{ $x := 2 }}{{ $x }}{{ end }}{{ $x }}",
                &data
            ),
            "21"
        );
        assert_eq!(
            err("{{ if true }}{{ $y := 1 }}{{ end }}{{ $y }}", &data),
            "template: 1:39: undefined variable \"$y\""
        );
        assert_eq!(
            err("{{ $z = 1 }}", &data),
            "template: 1:4: undefined variable \"$z\""
        );
    }

    #[test]
    fn pipelines_and_print_functions() {
        let data = map(&[
            ("X", s("val")),
            ("N", Value::Int(7)),
            ("O", object("ns/name", &[])),
        ]);
        assert_eq!(ok("{{ .X | printf \"%s!\" }}", &data), "val!");
        assert_eq!(ok("{{ .X | printf \"%s-%s\" \"a\" }}", &data), "a-val");
        assert_eq!(ok("{{ .N | print }}", &data), "7");
        // print: spaces only between operands when neither is a string.
        assert_eq!(ok("{{ print 1 2 }}", &data), "1 2");
        assert_eq!(ok("{{ print \"a\" \"b\" }}", &data), "ab");
        assert_eq!(ok("{{ print \"a\" 1 \"b\" }}", &data), "a1b");
        assert_eq!(ok("{{ print .O .O }}", &data), "ns/name ns/name");
        assert_eq!(ok("{{ println \"a\" 1 \"b\" }}", &data), "a 1 b\n");
        assert_eq!(ok("{{ println }}", &data), "\n");
        assert_eq!(ok("{{ printf \"%d%%\" 50 }}", &data), "50%");
        assert_eq!(
            ok("{{ printf \"%v %v %v\" .O .N true }}", &data),
            "ns/name 7 true"
        );
        assert_eq!(
            ok("{{ printf \"%q\" \"a\\\"b\\n\" }}", &data),
            "\"a\\\"b\\n\""
        );
        assert_eq!(ok("{{ printf \"%q\" .O }}", &data), "\"ns/name\"");
        assert_eq!(ok("{{ printf \"%q\" 'x' }}", &data), "'x'");
        assert_eq!(
            ok(
                "{{ printf \"[%5s|%-5s|%05d|%.2s]\" \"ab\" \"cd\" -42 \"xyz\" }}",
                &data
            ),
            "[   ab|cd   |-0042|xy]"
        );
        assert_eq!(
            ok("{{ printf \"%x %X %t %c\" 255 255 false 65 }}", &data),
            "ff FF false A"
        );
        assert_eq!(
            ok("{{ printf \"%.2f %v %T\" 3.14159 2.5 .X }}", &data),
            "3.14 2.5 string"
        );
        assert_eq!(ok("{{ printf \"%s\" (index .) }}", &s("x")), "x");
        // Go's inline mistakes.
        assert_eq!(ok("{{ printf \"%d\" \"x\" }}", &data), "%!d(string=x)");
        assert_eq!(ok("{{ printf \"%s %s\" \"x\" }}", &data), "x %!s(MISSING)");
        assert_eq!(
            ok("{{ printf \"%s\" \"x\" 1 \"y\" }}", &data),
            "x%!(EXTRA int=1, string=y)"
        );
        assert_eq!(ok("{{ printf \"%s\" nil }}", &data), "%!s(<nil>)");
        assert_eq!(ok("{{ printf \"%z\" 1 }}", &data), "%!z(int=1)");
        assert_eq!(
            ok(
                "{{ printf \"%s\" .List }}",
                &map(&[("List", Value::List(vec![s("a"), Value::Int(1)]))])
            ),
            "[a %!s(int=1)]"
        );
    }

    #[test]
    fn len_index_and_comparisons() {
        let data = map(&[
            ("L", Value::List(vec![s("a"), s("b")])),
            ("M", map(&[("k", s("v"))])),
            ("S", s("héllo")),
            ("N", Value::Int(5)),
        ]);
        assert_eq!(ok("{{ len .L }} {{ len .M }} {{ len .S }}", &data), "2 1 6");
        assert_eq!(
            ok(
                "{{ index .L 1 }} {{ index .M \"k\" }} {{ index .M \"nope\" }}",
                &data
            ),
            "b v <no value>"
        );
        assert_eq!(ok("{{ index . \"L\" 0 }}", &data), "a");
        assert_eq!(ok("{{ index .S 0 }}", &data), "104");
        let cmp =
            "{{ eq .N 5 }} {{ ne .N 5 }} {{ lt .N 6 }} {{ le .N 5 }} {{ gt .N 5 }} {{ ge .N 5 }}";
        assert_eq!(ok(cmp, &data), "true false true true false true");
        assert_eq!(
            ok(
                "{{ eq .N 1 2 5 }} {{ eq \"a\" \"b\" }} {{ lt \"a\" \"b\" }}",
                &data
            ),
            "true false true"
        );
        assert_eq!(
            ok("{{ eq .Missing .Missing }} {{ eq .Missing \"x\" }}", &data),
            "true false"
        );
        assert_eq!(
            ok(
                "{{ and 1 0 2 }} {{ and 1 2 }} {{ or 0 \"\" 3 }} {{ or 0 \"\" }} {{ not .L }}",
                &data
            ),
            "0 2 3  false"
        );
        // Short-circuit: the failing operand is never evaluated.
        assert_eq!(ok("{{ or .N (index .L 9) }}", &data), "5");
        assert_eq!(ok("{{ and .Missing (index .L 9) }}", &data), "<no value>");
        assert_eq!(
            ok("{{ if and .L (gt (len .L) 1) }}many{{ end }}", &data),
            "many"
        );
    }

    #[test]
    fn sprig_string_helpers() {
        let data = s("  Hello World  ");
        assert_eq!(ok("{{ . | trim | lower }}", &data), "hello world");
        assert_eq!(ok("{{ . | trim | upper }}", &data), "HELLO WORLD");
        assert_eq!(
            ok(
                "{{ contains \"World\" . }} {{ hasPrefix \"  H\" . }} {{ hasSuffix \"x\" . }}",
                &data
            ),
            "true true false"
        );
        assert_eq!(
            ok(
                "{{ \"v1.2.3\" | trimPrefix \"v\" }} {{ \"a.yaml\" | trimSuffix \".yaml\" }}",
                &data
            ),
            "1.2.3 a"
        );
        assert_eq!(ok("{{ replace \"o\" \"0\" \"foo\" }}", &data), "f00");
        assert_eq!(
            err("{{ lower 1 }}", &data),
            "template: 1:4: executing <lower 1>: error calling lower: wrong type for value; expected string; got int"
        );
    }

    #[test]
    fn floats_print_like_go() {
        let cases = [
            (1.5, "1.5"),
            (3.0, "3"),
            (123456.0, "123456"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.25, "-2.25"),
            (1e21, "1e+21"),
            (f64::INFINITY, "+Inf"),
        ];
        for (f, want) in cases {
            assert_eq!(ok("{{ . }}", &Value::Float(f)), want, "{f}");
        }
        assert_eq!(
            ok("{{ 2.50 }} {{ 0x1F }} {{ 1_000 }} {{ 1e3 }}", &Value::Null),
            "2.5 31 1000 1000"
        );
        assert_eq!(
            ok("{{ printf \"%e\" 1234.5 }}", &Value::Null),
            "1.234500e+03"
        );
    }

    #[test]
    fn parse_errors() {
        let d = Value::Null;
        assert_eq!(
            err("Images: {{ foo }}", &d),
            "template: 1:12: function \"foo\" not defined"
        );
        assert_eq!(err("a {{ .X", &d), "template: 1:3: unclosed action");
        assert_eq!(err("a {{ end }}", &d), "template: 1:3: unexpected {{end}}");
        assert_eq!(err("{{ else }}", &d), "template: 1:1: unexpected {{else}}");
        assert_eq!(
            err("x\n  {{ if .A }}y", &d),
            "template: 2:3: unexpected EOF: {{if}} is never closed with {{end}}"
        );
        assert_eq!(
            err("{{ range .A }}{{ else }}{{ else }}{{ end }}", &d),
            "template: 1:25: expected {{end}}, found a second {{else}}"
        );
        assert_eq!(
            err("{{ break }}", &d),
            "template: 1:1: {{break}} outside {{range}}"
        );
        assert_eq!(err("{{ }}", &d), "template: 1:1: missing value for command");
        assert_eq!(
            err("{{ .X | }}", &d),
            "template: 1:8: missing value for command"
        );
        assert_eq!(
            err("{{ .X | \"s\" }}", &d),
            "template: 1:9: non executable command in pipeline stage 2"
        );
        assert_eq!(
            err("{{ \"abc }}", &d),
            "template: 1:4: unterminated quoted string"
        );
        assert_eq!(
            err("{{ 1x }}", &d),
            "template: 1:4: bad number syntax: \"1x\""
        );
        assert_eq!(
            err("{{ .X\"y\" }}", &d),
            "template: 1:6: missing space before \"\\\"y\\\"\""
        );
        assert_eq!(
            err("{{/* c */ }}", &d),
            "template: 1:1: comment ends before closing delimiter"
        );
        assert_eq!(
            err("{{ template \"x\" }}", &d),
            "template: 1:1: {{template}} is not supported"
        );
        assert_eq!(err("{{ (.X }}", &d), "template: 1:4: unclosed left paren");
        assert_eq!(
            err("{{ .X ) }}", &d),
            "template: 1:7: unexpected \")\" in command"
        );
        assert_eq!(
            err("{{ if $a, $b := .X }}{{ end }}", &d),
            "template: 1:9: too many declarations in if"
        );
        assert_eq!(
            err("{{ end 1 }}", &d),
            "template: 1:8: unexpected \"1\" in {{end}}"
        );
        assert_eq!(
            err("{{ print # }}", &d),
            "template: 1:10: bad character '#' in action"
        );
        // Errors are found even in branches that would not run.
        assert_eq!(
            err("{{ if false }}{{ nope }}{{ end }}", &d),
            "template: 1:18: function \"nope\" not defined"
        );
        let deep = "{{ if true }}".repeat(MAX_DEPTH + 1);
        assert!(err(&deep, &d).contains("nested too deeply"));
    }

    #[test]
    fn exec_errors() {
        let data = map(&[
            ("S", s("str")),
            ("L", Value::List(vec![s("a")])),
            ("O", object("o", &[("F", s("f"))])),
        ]);
        assert_eq!(
            err("line\n{{ .S.Field }}", &data),
            "template: 2:4: executing <.S.Field>: can't evaluate field Field in type string"
        );
        assert_eq!(
            err("{{ .O.Nope }}", &data),
            "template: 1:4: executing <.O.Nope>: can't evaluate field Nope in type struct"
        );
        assert_eq!(
            err("{{ index .L 3 }}", &data),
            "template: 1:4: executing <index .L 3>: error calling index: index out of range: 3"
        );
        assert_eq!(
            err("{{ len .S .S }}", &data),
            "template: 1:4: executing <len .S .S>: error calling len: wrong number of args for len: want 1 got 2"
        );
        assert_eq!(
            err("{{ eq .S 1 }}", &data),
            "template: 1:4: executing <eq .S 1>: error calling eq: incompatible types for comparison"
        );
        assert_eq!(
            err("{{ range .S }}{{ end }}", &data),
            "template: 1:10: executing <.S>: range can't iterate over str"
        );
        assert_eq!(
            err("{{ .S 1 }}", &data),
            "template: 1:4: executing <.S 1>: can't give argument to non-function .S"
        );
        assert_eq!(
            err("{{ .L | .S }}", &data),
            "template: 1:9: executing <.S>: can't give argument to non-function .S"
        );
        assert_eq!(
            err("{{ nil }}", &data),
            "template: 1:4: executing <nil>: nil is not a command"
        );
    }

    #[test]
    fn json_values_convert() {
        let json = serde_json::json!({"a": [1, 2.5, "x", null, true], "b": {"c": "d"}});
        let data = Value::from(json);
        assert_eq!(ok("{{ .a }} {{ .b.c }}", &data), "[1 2.5 x <nil> true] d");
    }
}

//! Trigger conditions: the part of the expr language (github.com/expr-lang/expr) that Argo CD's
//! notification catalog and documentation use, evaluated over the Application as JSON.
//!
//! Written here rather than taken from a crate: Argo CD's conditions call Go methods on values
//! (`time.Parse(x).Before(y)`, `d.Minutes()`) and treat a field of a missing object as an error
//! but `?.` as nil; no Rust expr implementation models those Go values. Names are checked when
//! a condition is compiled, so a misspelt helper is a configuration error, not a quiet `false`.
//!
//! Supported: literals (strings in `'…'`, `"…"` or backticks, integers, floats, `true`, `false`,
//! `nil`, arrays `[…]`); `a.b`, `a?.b`, `a[i]`, `a?.[i]`; `==`, `!=`, `<`, `<=`, `>`, `>=`,
//! `in`, `not in`, `contains`, `startsWith`, `endsWith`, `matches`; `and`/`&&`, `or`/`||`,
//! `not`/`!`; `+ - * / %`; `??`; `c ? a : b`; the builtins `len`, `lower`, `upper`, `trim`,
//! `string`, `int`, `float`; and Argo CD's helpers `time.Now()`, `time.Parse(s)` (RFC 3339)
//! with the methods `Before`, `After`, `Equal`, `Sub`, `Add`, `Unix` and durations
//! (`time.Second` … `time.Hour`, `Seconds()`, `Minutes()`, `Hours()`), `strings.ReplaceAll`,
//! `strings.ToUpper`, `strings.ToLower`, `repo.RepoURLToHTTPS`, `repo.FullNameByRepoURL`,
//! `repo.QueryEscape`.

use chrono::{DateTime, FixedOffset, Utc};
use serde_json::Value as Json;
use std::borrow::Cow;
use std::fmt;

/// A condition that does not parse or names something unknown.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct CompileError(pub String);

/// A condition that failed while evaluating (a field of nil, a type mismatch).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

/// What a condition can read: Argo CD's `app`, `context` and `secrets`, and the clock.
pub struct Env<'a> {
    pub app: &'a Json,
    pub context: &'a Json,
    pub secrets: &'a Json,
    pub now: DateTime<Utc>,
}

/// A compiled condition.
#[derive(Debug, Clone)]
pub struct Program {
    source: String,
    root: Expr,
}

impl Program {
    pub fn compile(source: &str) -> Result<Program, CompileError> {
        let tokens = lex(source)?;
        let mut p = Parser { tokens, at: 0 };
        let root = p.expr(0)?;
        if let Some(t) = p.peek() {
            return Err(CompileError(format!("unexpected {t} after the expression")));
        }
        check(&root)?;
        Ok(Program {
            source: source.to_string(),
            root,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn eval<'a>(&self, env: &'a Env<'a>) -> Result<Val<'a>, EvalError> {
        eval(&self.root, env)
    }
}

/// A value while evaluating: JSON from the Application is borrowed, never copied.
#[derive(Debug, Clone)]
pub enum Val<'a> {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Cow<'a, str>),
    List(Vec<Val<'a>>),
    /// A JSON object or array of the environment.
    Json(&'a Json),
    Time(DateTime<FixedOffset>),
    /// Go's `time.Duration`: nanoseconds.
    Duration(i64),
    Namespace(Namespace),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Namespace {
    Time,
    Strings,
    Repo,
}

impl fmt::Display for Val<'_> {
    /// Go's `%v`, which Argo CD uses for `oncePer` values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Val::Nil => f.write_str("<nil>"),
            Val::Bool(b) => write!(f, "{b}"),
            Val::Int(i) => write!(f, "{i}"),
            Val::Float(x) => write!(f, "{x}"),
            Val::Str(s) => f.write_str(s),
            Val::List(items) => {
                f.write_str("[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Val::Json(j) => write!(f, "{j}"),
            Val::Time(t) => write!(f, "{}", t.to_rfc3339()),
            Val::Duration(d) => write!(f, "{}s", *d as f64 / 1e9),
            Val::Namespace(n) => write!(f, "{n:?}"),
        }
    }
}

impl<'a> Val<'a> {
    fn of_json(j: &'a Json) -> Val<'a> {
        match j {
            Json::Null => Val::Nil,
            Json::Bool(b) => Val::Bool(*b),
            Json::Number(n) => n
                .as_i64()
                .map(Val::Int)
                .unwrap_or_else(|| Val::Float(n.as_f64().unwrap_or(f64::NAN))),
            Json::String(s) => Val::Str(Cow::Borrowed(s)),
            _ => Val::Json(j),
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Val::Nil => "nil",
            Val::Bool(_) => "bool",
            Val::Int(_) => "int",
            Val::Float(_) => "float",
            Val::Str(_) => "string",
            Val::List(_) => "array",
            Val::Json(Json::Array(_)) => "array",
            Val::Json(_) => "map",
            Val::Time(_) => "time.Time",
            Val::Duration(_) => "time.Duration",
            Val::Namespace(_) => "namespace",
        }
    }

    fn items(&self) -> Option<Vec<Val<'a>>> {
        match self {
            Val::List(v) => Some(v.clone()),
            Val::Json(Json::Array(a)) => Some(a.iter().map(Val::of_json).collect()),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Int(i64),
    Float(f64),
    Str(String),
    Op(&'static str),
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "{s:?}"),
            Tok::Int(i) => write!(f, "{i}"),
            Tok::Float(x) => write!(f, "{x}"),
            Tok::Str(s) => write!(f, "string {s:?}"),
            Tok::Op(o) => write!(f, "{o:?}"),
        }
    }
}

const OPS: &[&str] = &[
    "?.", "??", "==", "!=", "<=", ">=", "&&", "||", "(", ")", "[", "]", ",", ".", "<", ">", "+",
    "-", "*", "/", "%", "!", "?", ":",
];

fn lex(src: &str) -> Result<Vec<Tok>, CompileError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' || c == '$' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            if i == start {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '_') {
                i += 1;
            }
            let float = i + 1 < chars.len() && chars[i] == '.' && chars[i + 1].is_ascii_digit();
            if float {
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let text: String = chars[start..i].iter().filter(|c| **c != '_').collect();
            out.push(if float {
                Tok::Float(text.parse().map_err(|_| bad_number(&text))?)
            } else {
                Tok::Int(text.parse().map_err(|_| bad_number(&text))?)
            });
        } else if c == '\'' || c == '"' || c == '`' {
            let quote = c;
            i += 1;
            let mut s = String::new();
            loop {
                let Some(&ch) = chars.get(i) else {
                    return Err(CompileError("a string is not closed".into()));
                };
                i += 1;
                if ch == quote {
                    break;
                }
                if ch == '\\' && quote != '`' {
                    let Some(&esc) = chars.get(i) else {
                        return Err(CompileError("a string is not closed".into()));
                    };
                    i += 1;
                    s.push(match esc {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        other => other,
                    });
                } else {
                    s.push(ch);
                }
            }
            out.push(Tok::Str(s));
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let Some(op) = OPS.iter().find(|op| rest.starts_with(**op)) else {
                return Err(CompileError(format!("unexpected character {c:?}")));
            };
            // `a ?.b` is optional chaining, `c ? .5 : 1` would not be: expr has no `.5` literals.
            out.push(Tok::Op(op));
            i += op.chars().count();
        }
    }
    Ok(out)
}

fn bad_number(text: &str) -> CompileError {
    CompileError(format!("bad number {text:?}"))
}

// ---------------------------------------------------------------------------
// Parser: precedence climbing with expr's precedences.

#[derive(Debug, Clone)]
enum Expr {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Array(Vec<Expr>),
    Ident(String),
    Member {
        obj: Box<Expr>,
        name: String,
        optional: bool,
    },
    Index {
        obj: Box<Expr>,
        index: Box<Expr>,
        optional: bool,
    },
    Call {
        callee: Box<Expr>,
        args: Vec<Expr>,
    },
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Binary {
        op: &'static str,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    Ternary(Box<Expr>, Box<Expr>, Box<Expr>),
}

struct Parser {
    tokens: Vec<Tok>,
    at: usize,
}

/// Binary operators and their precedence (expr's `parser/operator`), all left-associative.
fn binary(tok: &Tok, next: Option<&Tok>) -> Option<(&'static str, u8, usize)> {
    let word = |w: &str| matches!(tok, Tok::Ident(s) if s == w);
    let op = |o: &str| matches!(tok, Tok::Op(s) if *s == o);
    Some(if word("or") || op("||") {
        ("or", 10, 1)
    } else if word("and") || op("&&") {
        ("and", 15, 1)
    } else if op("==") {
        ("==", 20, 1)
    } else if op("!=") {
        ("!=", 20, 1)
    } else if op("<") {
        ("<", 20, 1)
    } else if op(">") {
        (">", 20, 1)
    } else if op("<=") {
        ("<=", 20, 1)
    } else if op(">=") {
        (">=", 20, 1)
    } else if word("in") {
        ("in", 20, 1)
    } else if word("not") && matches!(next, Some(Tok::Ident(s)) if s == "in") {
        ("not in", 20, 2)
    } else if word("matches") {
        ("matches", 20, 1)
    } else if word("contains") {
        ("contains", 20, 1)
    } else if word("startsWith") {
        ("startsWith", 20, 1)
    } else if word("endsWith") {
        ("endsWith", 20, 1)
    } else if op("+") {
        ("+", 30, 1)
    } else if op("-") {
        ("-", 30, 1)
    } else if op("*") {
        ("*", 60, 1)
    } else if op("/") {
        ("/", 60, 1)
    } else if op("%") {
        ("%", 60, 1)
    } else if op("??") {
        ("??", 200, 1)
    } else {
        return None;
    })
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.at)
    }

    fn is_op(&self, o: &str) -> bool {
        matches!(self.peek(), Some(Tok::Op(s)) if *s == o)
    }

    fn expect(&mut self, o: &str) -> Result<(), CompileError> {
        if self.is_op(o) {
            self.at += 1;
            Ok(())
        } else {
            Err(CompileError(match self.peek() {
                Some(t) => format!("expected {o:?}, found {t}"),
                None => format!("expected {o:?} at the end"),
            }))
        }
    }

    fn expr(&mut self, min: u8) -> Result<Expr, CompileError> {
        let mut left = self.unary()?;
        while let Some(tok) = self.peek() {
            if min == 0 && self.is_op("?") {
                self.at += 1;
                let then = self.expr(0)?;
                self.expect(":")?;
                let otherwise = self.expr(0)?;
                left = Expr::Ternary(Box::new(left), Box::new(then), Box::new(otherwise));
                continue;
            }
            let Some((op, prec, width)) = binary(tok, self.tokens.get(self.at + 1)) else {
                break;
            };
            if prec < min.max(1) {
                break;
            }
            self.at += width;
            let right = self.expr(prec + 1)?;
            left = Expr::Binary {
                op,
                left: Box::new(left),
                right: Box::new(right),
            };
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, CompileError> {
        match self.peek() {
            Some(Tok::Ident(w)) if w == "not" => {
                self.at += 1;
                // expr gives `not` precedence 50, tighter than `==` (20): `not a == b`
                // negates `a` alone, as expr does.
                Ok(Expr::Not(Box::new(self.expr(50)?)))
            }
            Some(Tok::Op("!")) => {
                self.at += 1;
                Ok(Expr::Not(Box::new(self.expr(50)?)))
            }
            Some(Tok::Op("-")) => {
                self.at += 1;
                Ok(Expr::Neg(Box::new(self.expr(90)?)))
            }
            Some(Tok::Op("+")) => {
                self.at += 1;
                self.expr(90)
            }
            _ => self.postfix(),
        }
    }

    fn postfix(&mut self) -> Result<Expr, CompileError> {
        let mut e = self.primary()?;
        loop {
            if self.is_op(".") || self.is_op("?.") {
                let optional = self.is_op("?.");
                self.at += 1;
                if optional && self.is_op("[") {
                    self.at += 1;
                    let index = self.expr(0)?;
                    self.expect("]")?;
                    e = Expr::Index {
                        obj: Box::new(e),
                        index: Box::new(index),
                        optional,
                    };
                    continue;
                }
                match self.peek().cloned() {
                    Some(Tok::Ident(name)) => {
                        self.at += 1;
                        e = Expr::Member {
                            obj: Box::new(e),
                            name,
                            optional,
                        };
                    }
                    other => {
                        return Err(CompileError(format!(
                            "expected a field name after \".\", found {}",
                            other.map_or("the end".into(), |t| t.to_string())
                        )));
                    }
                }
            } else if self.is_op("[") {
                self.at += 1;
                let index = self.expr(0)?;
                self.expect("]")?;
                e = Expr::Index {
                    obj: Box::new(e),
                    index: Box::new(index),
                    optional: false,
                };
            } else if self.is_op("(") {
                self.at += 1;
                let args = self.list(")")?;
                e = Expr::Call {
                    callee: Box::new(e),
                    args,
                };
            } else {
                return Ok(e);
            }
        }
    }

    fn list(&mut self, close: &str) -> Result<Vec<Expr>, CompileError> {
        let mut items = Vec::new();
        if self.is_op(close) {
            self.at += 1;
            return Ok(items);
        }
        loop {
            items.push(self.expr(0)?);
            if self.is_op(",") {
                self.at += 1;
                if self.is_op(close) {
                    self.at += 1;
                    return Ok(items);
                }
                continue;
            }
            self.expect(close)?;
            return Ok(items);
        }
    }

    fn primary(&mut self) -> Result<Expr, CompileError> {
        let Some(tok) = self.peek().cloned() else {
            return Err(CompileError("the expression ends too early".into()));
        };
        self.at += 1;
        Ok(match tok {
            Tok::Int(i) => Expr::Int(i),
            Tok::Float(x) => Expr::Float(x),
            Tok::Str(s) => Expr::Str(s),
            Tok::Ident(w) => match w.as_str() {
                "nil" => Expr::Nil,
                "true" => Expr::Bool(true),
                "false" => Expr::Bool(false),
                _ => Expr::Ident(w),
            },
            Tok::Op("(") => {
                let e = self.expr(0)?;
                self.expect(")")?;
                e
            }
            Tok::Op("[") => Expr::Array(self.list("]")?),
            other => return Err(CompileError(format!("unexpected {other}"))),
        })
    }
}

// ---------------------------------------------------------------------------
// Names, checked at compile time.

const VARIABLES: &[&str] = &["app", "context", "secrets"];
const BUILTINS: &[&str] = &["len", "lower", "upper", "trim", "string", "int", "float"];
const TIME_FUNCS: &[&str] = &["Now", "Parse"];
const TIME_CONSTS: &[(&str, i64)] = &[
    ("Nanosecond", 1),
    ("Microsecond", 1_000),
    ("Millisecond", 1_000_000),
    ("Second", 1_000_000_000),
    ("Minute", 60_000_000_000),
    ("Hour", 3_600_000_000_000),
];
const TIME_LAYOUTS: &[(&str, &str)] = &[
    ("RFC3339", "2006-01-02T15:04:05Z07:00"),
    ("RFC3339Nano", "2006-01-02T15:04:05.999999999Z07:00"),
];
const STRINGS_FUNCS: &[&str] = &["ReplaceAll", "ToUpper", "ToLower"];
const REPO_FUNCS: &[&str] = &["RepoURLToHTTPS", "FullNameByRepoURL", "QueryEscape"];

fn check(e: &Expr) -> Result<(), CompileError> {
    match e {
        Expr::Ident(name) => {
            if VARIABLES.contains(&name.as_str()) || namespace(name).is_some() {
                Ok(())
            } else if BUILTINS.contains(&name.as_str()) {
                Err(CompileError(format!("{name} is a function: call it")))
            } else {
                Err(CompileError(format!(
                    "unknown name {name:?} (conditions read app, context, secrets, time, strings and repo)"
                )))
            }
        }
        Expr::Member { obj, name, .. } => {
            if let Expr::Ident(ns) = &**obj
                && let Some(ns) = namespace(ns)
            {
                return check_namespace_member(ns, name, false);
            }
            check(obj)
        }
        Expr::Call { callee, args } => {
            for a in args {
                check(a)?;
            }
            match &**callee {
                Expr::Ident(f) if BUILTINS.contains(&f.as_str()) => Ok(()),
                Expr::Ident(f) => Err(CompileError(format!("unknown function {f:?}"))),
                Expr::Member { obj, name, .. } => {
                    if let Expr::Ident(ns) = &**obj
                        && let Some(ns) = namespace(ns)
                    {
                        return check_namespace_member(ns, name, true);
                    }
                    check(obj)
                }
                other => check(other),
            }
        }
        Expr::Index { obj, index, .. } => {
            check(obj)?;
            check(index)
        }
        Expr::Not(x) | Expr::Neg(x) => check(x),
        Expr::Binary {
            op, left, right, ..
        } => {
            if *op == "matches"
                && let Expr::Str(pattern) = &**right
            {
                regex::Regex::new(pattern)
                    .map_err(|e| CompileError(format!("matches: bad pattern: {e}")))?;
            }
            check(left)?;
            check(right)
        }
        Expr::Ternary(c, a, b) => {
            check(c)?;
            check(a)?;
            check(b)
        }
        Expr::Array(items) => items.iter().try_for_each(check),
        Expr::Nil | Expr::Bool(_) | Expr::Int(_) | Expr::Float(_) | Expr::Str(_) => Ok(()),
    }
}

fn namespace(name: &str) -> Option<Namespace> {
    match name {
        "time" => Some(Namespace::Time),
        "strings" => Some(Namespace::Strings),
        "repo" => Some(Namespace::Repo),
        _ => None,
    }
}

fn check_namespace_member(ns: Namespace, name: &str, called: bool) -> Result<(), CompileError> {
    let (funcs, consts): (&[&str], Vec<&str>) = match ns {
        Namespace::Time => (
            TIME_FUNCS,
            TIME_CONSTS
                .iter()
                .map(|c| c.0)
                .chain(TIME_LAYOUTS.iter().map(|c| c.0))
                .collect(),
        ),
        Namespace::Strings => (STRINGS_FUNCS, vec![]),
        Namespace::Repo => (REPO_FUNCS, vec![]),
    };
    let prefix = format!("{ns:?}").to_lowercase();
    if funcs.contains(&name) {
        if called {
            Ok(())
        } else {
            Err(CompileError(format!(
                "{prefix}.{name} is a function: call it"
            )))
        }
    } else if consts.contains(&name) && !called {
        Ok(())
    } else if ns == Namespace::Repo && matches!(name, "GetCommitMetadata" | "GetAppDetails") {
        Err(CompileError(format!(
            "repo.{name} is not supported by Ferry (it reads the repository server)"
        )))
    } else {
        Err(CompileError(format!(
            "{prefix}.{name} is not known (there are {})",
            funcs
                .iter()
                .chain(consts.iter())
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

// ---------------------------------------------------------------------------
// Evaluation

fn err<T>(msg: impl Into<String>) -> Result<T, EvalError> {
    Err(EvalError(msg.into()))
}

fn eval<'a>(e: &Expr, env: &'a Env<'a>) -> Result<Val<'a>, EvalError> {
    Ok(match e {
        Expr::Nil => Val::Nil,
        Expr::Bool(b) => Val::Bool(*b),
        Expr::Int(i) => Val::Int(*i),
        Expr::Float(x) => Val::Float(*x),
        Expr::Str(s) => Val::Str(Cow::Owned(s.clone())),
        Expr::Array(items) => Val::List(
            items
                .iter()
                .map(|i| eval(i, env))
                .collect::<Result<_, _>>()?,
        ),
        Expr::Ident(name) => match name.as_str() {
            "app" => Val::of_json(env.app),
            "context" => Val::of_json(env.context),
            "secrets" => Val::of_json(env.secrets),
            other => match namespace(other) {
                Some(ns) => Val::Namespace(ns),
                None => return err(format!("unknown name {other:?}")),
            },
        },
        Expr::Member {
            obj,
            name,
            optional,
        } => {
            let target = eval(obj, env)?;
            member(target, name, *optional)?
        }
        Expr::Index {
            obj,
            index,
            optional,
        } => {
            let target = eval(obj, env)?;
            let index = eval(index, env)?;
            match (&target, &index) {
                (Val::Nil, _) if *optional => Val::Nil,
                (Val::Json(Json::Object(m)), Val::Str(k)) => {
                    m.get(k.as_ref()).map(Val::of_json).unwrap_or(Val::Nil)
                }
                (Val::Json(Json::Array(a)), Val::Int(i)) => {
                    let at = if *i < 0 { a.len() as i64 + i } else { *i };
                    match a.get(at as usize) {
                        Some(v) if at >= 0 => Val::of_json(v),
                        _ => return err(format!("index out of range: {i} (array of {})", a.len())),
                    }
                }
                (Val::List(a), Val::Int(i)) => {
                    let at = if *i < 0 { a.len() as i64 + i } else { *i };
                    match a.get(at as usize) {
                        Some(v) if at >= 0 => v.clone(),
                        _ => return err(format!("index out of range: {i} (array of {})", a.len())),
                    }
                }
                _ => {
                    return err(format!(
                        "cannot index {} with {}",
                        target.type_name(),
                        index.type_name()
                    ));
                }
            }
        }
        Expr::Call { callee, args } => {
            let args: Vec<Val> = args
                .iter()
                .map(|a| eval(a, env))
                .collect::<Result<_, _>>()?;
            match &**callee {
                Expr::Ident(f) => builtin(f, args)?,
                Expr::Member { obj, name, .. } => {
                    let target = eval(obj, env)?;
                    method(target, name, args, env)?
                }
                _ => return err("only functions and methods can be called"),
            }
        }
        Expr::Not(x) => match eval(x, env)? {
            Val::Bool(b) => Val::Bool(!b),
            other => return err(format!("invalid operation: not {}", other.type_name())),
        },
        Expr::Neg(x) => match eval(x, env)? {
            Val::Int(i) => Val::Int(-i),
            Val::Float(f) => Val::Float(-f),
            Val::Duration(d) => Val::Duration(-d),
            other => return err(format!("invalid operation: -{}", other.type_name())),
        },
        Expr::Ternary(c, a, b) => match eval(c, env)? {
            Val::Bool(true) => eval(a, env)?,
            Val::Bool(false) => eval(b, env)?,
            other => {
                return err(format!(
                    "a ? b : c needs a bool condition, got {}",
                    other.type_name()
                ));
            }
        },
        Expr::Binary { op, left, right } => {
            let l = eval(left, env)?;
            match (*op, &l) {
                ("and", Val::Bool(false)) => return Ok(Val::Bool(false)),
                ("or", Val::Bool(true)) => return Ok(Val::Bool(true)),
                ("??", Val::Nil) => return eval(right, env),
                ("??", _) => return Ok(l),
                ("and" | "or", Val::Bool(_)) => {
                    return match eval(right, env)? {
                        Val::Bool(b) => Ok(Val::Bool(b)),
                        other => err(format!(
                            "invalid operation: bool {op} {}",
                            other.type_name()
                        )),
                    };
                }
                ("and" | "or", other) => {
                    return err(format!("invalid operation: {} {op} …", other.type_name()));
                }
                _ => {}
            }
            let r = eval(right, env)?;
            binary_op(op, l, r)?
        }
    })
}

fn member<'a>(target: Val<'a>, name: &str, optional: bool) -> Result<Val<'a>, EvalError> {
    Ok(match target {
        Val::Nil if optional => Val::Nil,
        Val::Json(Json::Object(m)) => m.get(name).map(Val::of_json).unwrap_or(Val::Nil),
        Val::Namespace(Namespace::Time) => {
            if let Some((_, d)) = TIME_CONSTS.iter().find(|c| c.0 == name) {
                Val::Duration(*d)
            } else if let Some((_, layout)) = TIME_LAYOUTS.iter().find(|c| c.0 == name) {
                Val::Str(Cow::Borrowed(layout))
            } else {
                return err(format!("time.{name} is not known"));
            }
        }
        other => {
            return err(format!(
                "cannot fetch {name} from {}",
                match other {
                    Val::Nil => "<nil>".to_string(),
                    o => o.type_name().to_string(),
                }
            ));
        }
    })
}

fn string_arg<'v>(f: &str, args: &'v [Val], i: usize) -> Result<&'v str, EvalError> {
    match args.get(i) {
        Some(Val::Str(s)) => Ok(s),
        Some(other) => err(format!(
            "{f}: argument {} must be a string, got {}",
            i + 1,
            other.type_name()
        )),
        None => err(format!("{f}: missing argument {}", i + 1)),
    }
}

fn arity(f: &str, args: &[Val], n: usize) -> Result<(), EvalError> {
    if args.len() != n {
        return err(format!("{f}: takes {n} arguments, got {}", args.len()));
    }
    Ok(())
}

fn builtin<'a>(f: &str, args: Vec<Val<'a>>) -> Result<Val<'a>, EvalError> {
    arity(f, &args, 1)?;
    Ok(match f {
        "len" => Val::Int(match &args[0] {
            Val::Str(s) => s.chars().count() as i64,
            Val::List(l) => l.len() as i64,
            Val::Json(Json::Array(a)) => a.len() as i64,
            Val::Json(Json::Object(m)) => m.len() as i64,
            other => return err(format!("len: invalid argument {}", other.type_name())),
        }),
        "lower" => Val::Str(Cow::Owned(string_arg(f, &args, 0)?.to_lowercase())),
        "upper" => Val::Str(Cow::Owned(string_arg(f, &args, 0)?.to_uppercase())),
        "trim" => Val::Str(Cow::Owned(string_arg(f, &args, 0)?.trim().to_string())),
        "string" => Val::Str(Cow::Owned(args[0].to_string())),
        "int" => match &args[0] {
            Val::Int(i) => Val::Int(*i),
            Val::Float(x) => Val::Int(*x as i64),
            Val::Str(s) => Val::Int(
                s.trim()
                    .parse()
                    .map_err(|_| EvalError(format!("int: cannot parse {s:?}")))?,
            ),
            other => return err(format!("int: invalid argument {}", other.type_name())),
        },
        "float" => match &args[0] {
            Val::Int(i) => Val::Float(*i as f64),
            Val::Float(x) => Val::Float(*x),
            Val::Str(s) => Val::Float(
                s.trim()
                    .parse()
                    .map_err(|_| EvalError(format!("float: cannot parse {s:?}")))?,
            ),
            other => return err(format!("float: invalid argument {}", other.type_name())),
        },
        other => return err(format!("unknown function {other:?}")),
    })
}

fn method<'a>(
    target: Val<'a>,
    name: &str,
    args: Vec<Val<'a>>,
    env: &Env,
) -> Result<Val<'a>, EvalError> {
    Ok(match (&target, name) {
        (Val::Namespace(Namespace::Time), "Now") => {
            arity("time.Now", &args, 0)?;
            Val::Time(env.now.fixed_offset())
        }
        (Val::Namespace(Namespace::Time), "Parse") => {
            arity("time.Parse", &args, 1)?;
            let s = string_arg("time.Parse", &args, 0)?;
            Val::Time(
                DateTime::parse_from_rfc3339(s)
                    .map_err(|e| EvalError(format!("time.Parse({s:?}): {e}")))?,
            )
        }
        (Val::Namespace(Namespace::Strings), "ReplaceAll") => {
            arity("strings.ReplaceAll", &args, 3)?;
            let s = string_arg(name, &args, 0)?;
            let old = string_arg(name, &args, 1)?;
            let new = string_arg(name, &args, 2)?;
            Val::Str(Cow::Owned(s.replace(old, new)))
        }
        (Val::Namespace(Namespace::Strings), "ToUpper") => {
            arity("strings.ToUpper", &args, 1)?;
            Val::Str(Cow::Owned(string_arg(name, &args, 0)?.to_uppercase()))
        }
        (Val::Namespace(Namespace::Strings), "ToLower") => {
            arity("strings.ToLower", &args, 1)?;
            Val::Str(Cow::Owned(string_arg(name, &args, 0)?.to_lowercase()))
        }
        (Val::Namespace(Namespace::Repo), "RepoURLToHTTPS") => {
            arity("repo.RepoURLToHTTPS", &args, 1)?;
            Val::Str(Cow::Owned(crate::repo_url_to_https(string_arg(
                name, &args, 0,
            )?)))
        }
        (Val::Namespace(Namespace::Repo), "FullNameByRepoURL") => {
            arity("repo.FullNameByRepoURL", &args, 1)?;
            Val::Str(Cow::Owned(crate::full_name_by_repo_url(string_arg(
                name, &args, 0,
            )?)))
        }
        (Val::Namespace(Namespace::Repo), "QueryEscape") => {
            arity("repo.QueryEscape", &args, 1)?;
            Val::Str(Cow::Owned(crate::query_escape(string_arg(name, &args, 0)?)))
        }
        (Val::Time(t), "Before" | "After" | "Equal") => {
            arity(name, &args, 1)?;
            let Val::Time(other) = &args[0] else {
                return err(format!(
                    "{name}: needs a time.Time, got {}",
                    args[0].type_name()
                ));
            };
            Val::Bool(match name {
                "Before" => t < other,
                "After" => t > other,
                _ => t == other,
            })
        }
        (Val::Time(t), "Sub") => {
            arity(name, &args, 1)?;
            let Val::Time(other) = &args[0] else {
                return err(format!(
                    "Sub: needs a time.Time, got {}",
                    args[0].type_name()
                ));
            };
            Val::Duration((*t - *other).num_nanoseconds().unwrap_or(i64::MAX))
        }
        (Val::Time(t), "Add") => {
            arity(name, &args, 1)?;
            let (Val::Duration(d) | Val::Int(d)) = &args[0] else {
                return err(format!(
                    "Add: needs a time.Duration, got {}",
                    args[0].type_name()
                ));
            };
            Val::Time(*t + chrono::Duration::nanoseconds(*d))
        }
        (Val::Time(t), "Unix") => {
            arity(name, &args, 0)?;
            Val::Int(t.timestamp())
        }
        (Val::Duration(d), "Seconds" | "Minutes" | "Hours") => {
            arity(name, &args, 0)?;
            let unit = match name {
                "Seconds" => 1e9,
                "Minutes" => 60e9,
                _ => 3600e9,
            };
            Val::Float(*d as f64 / unit)
        }
        (Val::Nil, _) => return err(format!("cannot call {name} on <nil>")),
        (other, _) => {
            return err(format!("{} has no method {name}", other.type_name()));
        }
    })
}

fn equal(l: &Val, r: &Val) -> bool {
    match (l, r) {
        (Val::Nil, Val::Nil) => true,
        (Val::Bool(a), Val::Bool(b)) => a == b,
        (Val::Int(a), Val::Int(b)) => a == b,
        (Val::Int(a), Val::Float(b)) | (Val::Float(b), Val::Int(a)) => *a as f64 == *b,
        (Val::Float(a), Val::Float(b)) => a == b,
        (Val::Str(a), Val::Str(b)) => a == b,
        (Val::Time(a), Val::Time(b)) => a == b,
        (Val::Duration(a), Val::Duration(b)) => a == b,
        (Val::Json(a), Val::Json(b)) => a == b,
        (a, b) => match (a.items(), b.items()) {
            (Some(x), Some(y)) => {
                x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| equal(p, q))
            }
            _ => false,
        },
    }
}

fn number(v: &Val) -> Option<f64> {
    match v {
        Val::Int(i) => Some(*i as f64),
        Val::Float(x) => Some(*x),
        Val::Duration(d) => Some(*d as f64),
        _ => None,
    }
}

fn binary_op<'a>(op: &str, l: Val<'a>, r: Val<'a>) -> Result<Val<'a>, EvalError> {
    let mismatch = || {
        err(format!(
            "invalid operation: {} {op} {}",
            l.type_name(),
            r.type_name()
        ))
    };
    Ok(match op {
        "==" => Val::Bool(equal(&l, &r)),
        "!=" => Val::Bool(!equal(&l, &r)),
        "<" | "<=" | ">" | ">=" => {
            let ord = match (&l, &r) {
                (Val::Str(a), Val::Str(b)) => a.cmp(b),
                (Val::Time(a), Val::Time(b)) => a.cmp(b),
                _ => match (number(&l), number(&r)) {
                    (Some(a), Some(b)) => match a.partial_cmp(&b) {
                        Some(o) => o,
                        None => return Ok(Val::Bool(false)),
                    },
                    _ => return mismatch(),
                },
            };
            Val::Bool(match op {
                "<" => ord.is_lt(),
                "<=" => ord.is_le(),
                ">" => ord.is_gt(),
                _ => ord.is_ge(),
            })
        }
        "in" | "not in" => {
            let found = match &r {
                Val::Json(Json::Object(m)) => match &l {
                    Val::Str(k) => m.contains_key(k.as_ref()),
                    _ => false,
                },
                Val::Nil => false,
                _ => match r.items() {
                    Some(items) => items.iter().any(|i| equal(&l, i)),
                    None => return mismatch(),
                },
            };
            Val::Bool(found == (op == "in"))
        }
        "contains" | "startsWith" | "endsWith" | "matches" => {
            let (Val::Str(a), Val::Str(b)) = (&l, &r) else {
                return mismatch();
            };
            Val::Bool(match op {
                "contains" => a.contains(b.as_ref()),
                "startsWith" => a.starts_with(b.as_ref()),
                "endsWith" => a.ends_with(b.as_ref()),
                _ => regex::Regex::new(b)
                    .map_err(|e| EvalError(format!("matches: bad pattern: {e}")))?
                    .is_match(a),
            })
        }
        "+" => match (&l, &r) {
            (Val::Str(a), Val::Str(b)) => Val::Str(Cow::Owned(format!("{a}{b}"))),
            (Val::Int(a), Val::Int(b)) => Val::Int(a.wrapping_add(*b)),
            (Val::Duration(a), Val::Duration(b)) => Val::Duration(a.wrapping_add(*b)),
            (Val::Time(t), Val::Duration(d)) | (Val::Duration(d), Val::Time(t)) => {
                Val::Time(*t + chrono::Duration::nanoseconds(*d))
            }
            _ => match (number(&l), number(&r)) {
                (Some(a), Some(b)) => Val::Float(a + b),
                _ => return mismatch(),
            },
        },
        "-" => match (&l, &r) {
            (Val::Int(a), Val::Int(b)) => Val::Int(a.wrapping_sub(*b)),
            (Val::Duration(a), Val::Duration(b)) => Val::Duration(a.wrapping_sub(*b)),
            (Val::Time(a), Val::Time(b)) => {
                Val::Duration((*a - *b).num_nanoseconds().unwrap_or(i64::MAX))
            }
            _ => match (number(&l), number(&r)) {
                (Some(a), Some(b)) => Val::Float(a - b),
                _ => return mismatch(),
            },
        },
        "*" => match (&l, &r) {
            (Val::Int(a), Val::Int(b)) => Val::Int(a.wrapping_mul(*b)),
            (Val::Duration(a), Val::Int(b)) | (Val::Int(b), Val::Duration(a)) => {
                Val::Duration(a.wrapping_mul(*b))
            }
            _ => match (number(&l), number(&r)) {
                (Some(a), Some(b)) => Val::Float(a * b),
                _ => return mismatch(),
            },
        },
        "/" => match (number(&l), number(&r)) {
            (Some(a), Some(b)) => Val::Float(a / b),
            _ => return mismatch(),
        },
        "%" => match (&l, &r) {
            (Val::Int(_), Val::Int(0)) => return err("integer divide by zero"),
            (Val::Int(a), Val::Int(b)) => Val::Int(a % b),
            _ => return mismatch(),
        },
        _ => return mismatch(),
    })
}

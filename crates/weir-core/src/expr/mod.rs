//! The two expression languages of Argo files, in one evaluator with two modes:
//! - [`Mode::Govaluate`]: `when:` conditions after `{{…}}` substitution. Bare words are strings
//!   (`heads == heads`), `=~`/`!~` are regex matches, `in (a, b)` tests membership.
//! - [`Mode::Expr`]: `{{=…}}`, `expression:` fields. Identifiers are variables (`inputs.parameters.x`,
//!   `steps['flip-coin'].outputs.result`), with expr's operators and the functions the examples use
//!   (`asInt`, `asFloat`, `jsonpath`, `toJson`, `filter`, sprig's string functions…).
//!
//! Evaluation never panics: every failure is an [`Error`] with a message for the user.

mod builtins;
mod depends;
mod eval;
mod jsonpath;
mod lexer;
mod parser;

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value as Json;

use builtins::*;
pub use builtins::{go_time_format, parse_rfc3339};
pub use depends::{DEPENDS_RESULTS, Depends};
use eval::*;
pub use jsonpath::jsonpath;
use lexer::*;
use parser::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Govaluate,
    Expr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

type R<T> = Result<T, Error>;

fn err<T>(msg: impl Into<String>) -> R<T> {
    Err(Error(msg.into()))
}

/// A runtime value.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Val>),
    Map(BTreeMap<String, Val>),
    /// A dotted name that is not (yet) a variable: `inputs` on the way to `inputs.parameters.x`.
    Partial(String),
}

impl Val {
    pub fn from_json(j: &Json) -> Val {
        match j {
            Json::Null => Val::Null,
            Json::Bool(b) => Val::Bool(*b),
            Json::Number(n) => match n.as_i64() {
                Some(i) => Val::Int(i),
                None => Val::Float(n.as_f64().unwrap_or(0.0)),
            },
            Json::String(s) => Val::Str(s.clone()),
            Json::Array(a) => Val::List(a.iter().map(Val::from_json).collect()),
            Json::Object(o) => Val::Map(
                o.iter()
                    .map(|(k, v)| (k.clone(), Val::from_json(v)))
                    .collect(),
            ),
        }
    }
    pub fn to_json(&self) -> Json {
        match self {
            Val::Null | Val::Partial(_) => Json::Null,
            Val::Bool(b) => Json::Bool(*b),
            Val::Int(i) => Json::from(*i),
            Val::Float(f) => serde_json::Number::from_f64(*f)
                .map(Json::Number)
                .unwrap_or(Json::Null),
            Val::Str(s) => Json::String(s.clone()),
            Val::List(l) => Json::Array(l.iter().map(Val::to_json).collect()),
            Val::Map(m) => Json::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
        }
    }
    /// The text Argo substitutes for a value: strings as they are, everything else as JSON.
    pub fn to_text(&self) -> String {
        match self {
            Val::Str(s) => s.clone(),
            Val::Null | Val::Partial(_) => String::new(),
            Val::Float(f) => format_float(*f),
            other => other.to_json().to_string(),
        }
    }
    pub fn truthy(&self) -> R<bool> {
        match self {
            Val::Bool(b) => Ok(*b),
            Val::Str(s) if s == "true" => Ok(true),
            Val::Str(s) if s == "false" => Ok(false),
            other => err(format!("expected a boolean, got {}", other.to_text())),
        }
    }
    fn num(&self) -> Option<f64> {
        match self {
            Val::Int(i) => Some(*i as f64),
            Val::Float(f) => Some(*f),
            Val::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

fn format_float(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

/// Variables visible to an expression.
pub trait Env {
    /// Looks up a dotted variable name (`inputs.parameters.x`, `item`).
    fn var(&self, name: &str) -> Option<Val>;
}

impl Env for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<Val> {
        self.get(name).map(|s| Val::Str(s.clone()))
    }
}

/// Parses and evaluates `src`.
pub fn eval(src: &str, mode: Mode, env: &dyn Env) -> R<Val> {
    let ast = parse(src, mode)?;
    let v = Evaluator {
        env,
        mode,
        hash: None,
    }
    .eval(&ast)?;
    match v {
        Val::Partial(p) if mode == Mode::Expr => err(format!("unknown variable `{p}`")),
        Val::Partial(p) => Ok(Val::Str(p)),
        v => Ok(v),
    }
}

/// Evaluates a condition; the result must be a boolean.
pub fn eval_bool(src: &str, mode: Mode, env: &dyn Env) -> R<bool> {
    eval(src, mode, env)?
        .truthy()
        .map_err(|e| Error(format!("`{src}`: {e}")))
}

/// Checks syntax only.
pub fn check(src: &str, mode: Mode) -> R<()> {
    parse(src, mode).map(|_| ())
}

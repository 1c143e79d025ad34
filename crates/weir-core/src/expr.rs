//! The two expression languages of Argo files, in one evaluator with two modes:
//! - [`Mode::Govaluate`]: `when:` conditions after `{{…}}` substitution. Bare words are strings
//!   (`heads == heads`), `=~`/`!~` are regex matches, `in (a, b)` tests membership.
//! - [`Mode::Expr`]: `{{=…}}`, `expression:` fields. Identifiers are variables (`inputs.parameters.x`,
//!   `steps['flip-coin'].outputs.result`), with expr's operators and the functions the examples use
//!   (`asInt`, `asFloat`, `jsonpath`, `toJson`, `filter`, sprig's string functions…).
//!
//! Evaluation never panics: every failure is an [`Error`] with a message for the user.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value as Json;

use crate::limits;

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

// ---------------------------------------------------------------- lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64, bool),
    Str(String),
    Ident(String),
    Op(&'static str),
}

const OPS: &[&str] = &[
    "===", "!==", "==", "!=", "<=", ">=", "=~", "!~", "&&", "||", "??", "?.", "**", "..", "<", ">",
    "+", "-", "*", "/", "%", "!", "(", ")", "[", "]", "{", "}", ",", ":", "?", ".", "#",
];

fn lex(src: &str, mode: Mode) -> R<Vec<Tok>> {
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() {
            let start = i;
            let mut float = false;
            while i < chars.len()
                && (chars[i].is_ascii_digit()
                    || (chars[i] == '.'
                        && !float
                        && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
                    || ((chars[i] == 'e' || chars[i] == 'E') && i > start))
            {
                if chars[i] == '.' || chars[i] == 'e' || chars[i] == 'E' {
                    float = true;
                    if (chars[i] == 'e' || chars[i] == 'E')
                        && matches!(chars.get(i + 1), Some('-' | '+'))
                    {
                        i += 1;
                    }
                }
                i += 1;
            }
            // govaluate: a word like `1abc` or `2024-01` is a string
            if mode == Mode::Govaluate
                && i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_')
            {
                while i < chars.len() && is_word(chars[i]) {
                    i += 1;
                }
                out.push(Tok::Str(chars[start..i].iter().collect()));
                continue;
            }
            let text: String = chars[start..i].iter().collect();
            match text.parse::<f64>() {
                Ok(n) => out.push(Tok::Num(n, float)),
                Err(_) => return err(format!("bad number `{text}`")),
            }
            continue;
        }
        if c == '\'' || c == '"' || c == '`' {
            let q = c;
            i += 1;
            let mut s = String::new();
            loop {
                let Some(&ch) = chars.get(i) else {
                    return err("unterminated string");
                };
                i += 1;
                if ch == q {
                    break;
                }
                if ch == '\\' && q != '`' {
                    let Some(&e) = chars.get(i) else {
                        return err("unterminated string");
                    };
                    i += 1;
                    s.push(match e {
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
            continue;
        }
        if c.is_alphabetic() || c == '_' || c == '$' || c == '@' {
            let start = i;
            i += 1;
            while i < chars.len()
                && (chars[i].is_alphanumeric()
                    || chars[i] == '_'
                    || (mode == Mode::Govaluate
                        && chars[i] == '-'
                        && chars.get(i + 1).is_some_and(|c| c.is_alphanumeric())))
            {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
            continue;
        }
        let rest: String = chars[i..chars.len().min(i + 3)].iter().collect();
        match OPS.iter().find(|op| rest.starts_with(**op)) {
            Some(op) => {
                out.push(Tok::Op(op));
                i += op.chars().count();
            }
            None => return err(format!("unexpected character `{c}`")),
        }
    }
    Ok(out)
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-' || c == '.'
}

// ---------------------------------------------------------------- parser

#[derive(Debug, Clone, PartialEq)]
enum Ast {
    Lit(Val),
    Var(String),
    /// `#` inside a closure.
    Hash,
    Member(Box<Ast>, String, bool),
    Index(Box<Ast>, Box<Ast>),
    Slice(Box<Ast>, Option<Box<Ast>>, Option<Box<Ast>>),
    Call(String, Vec<Ast>),
    Closure(Box<Ast>),
    Unary(&'static str, Box<Ast>),
    Binary(&'static str, Box<Ast>, Box<Ast>),
    Cond(Box<Ast>, Box<Ast>, Box<Ast>),
    List(Vec<Ast>),
    MapLit(Vec<(Ast, Ast)>),
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    mode: Mode,
    depth: usize,
}

fn parse(src: &str, mode: Mode) -> R<Ast> {
    let toks = lex(src, mode)?;
    if toks.is_empty() {
        return err("empty expression");
    }
    let mut p = Parser {
        toks,
        pos: 0,
        mode,
        depth: 0,
    };
    let ast = p.expr(0)?;
    if p.pos < p.toks.len() {
        return err(format!("unexpected `{}`", show(&p.toks[p.pos])));
    }
    Ok(ast)
}

fn show(t: &Tok) -> String {
    match t {
        Tok::Num(n, _) => format_float(*n),
        Tok::Str(s) => format!("'{s}'"),
        Tok::Ident(s) => s.clone(),
        Tok::Op(o) => o.to_string(),
    }
}

/// Binary operators by precedence, low to high.
fn binary_prec(op: &str) -> Option<u8> {
    Some(match op {
        "??" => 1,
        "||" | "or" => 2,
        "&&" | "and" => 3,
        "==" | "!=" | "===" | "!==" | "<" | ">" | "<=" | ">=" | "=~" | "!~" | "in" | "matches"
        | "contains" | "startsWith" | "endsWith" | "not in" => 4,
        ".." => 5,
        "+" | "-" => 6,
        "*" | "/" | "%" => 7,
        "**" => 8,
        _ => return None,
    })
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn eat_op(&mut self, op: &str) -> bool {
        if let Some(Tok::Op(o)) = self.peek()
            && *o == op
        {
            self.pos += 1;
            return true;
        }
        false
    }
    fn expect(&mut self, op: &str) -> R<()> {
        if self.eat_op(op) {
            Ok(())
        } else {
            match self.peek() {
                Some(t) => err(format!("expected `{op}`, found `{}`", show(t))),
                None => err(format!("expected `{op}` at end of expression")),
            }
        }
    }
    fn peek_binary(&self) -> Option<&'static str> {
        match self.peek()? {
            Tok::Op(o) => binary_prec(o).map(|_| *o),
            Tok::Ident(w) => match w.as_str() {
                "or" => Some("||"),
                "and" => Some("&&"),
                "in" => Some("in"),
                "matches" => Some("matches"),
                "contains" => Some("contains"),
                "startsWith" => Some("startsWith"),
                "endsWith" => Some("endsWith"),
                "not" if matches!(self.toks.get(self.pos + 1), Some(Tok::Ident(w)) if w == "in") => {
                    Some("not in")
                }
                _ => None,
            },
            _ => None,
        }
    }

    fn expr(&mut self, min: u8) -> R<Ast> {
        self.depth += 1;
        if self.depth > 200 {
            return err("expression nested too deeply");
        }
        let mut lhs = self.unary()?;
        loop {
            if min == 0 && self.eat_op("?") {
                let then = self.expr(0)?;
                self.expect(":")?;
                let other = self.expr(0)?;
                lhs = Ast::Cond(Box::new(lhs), Box::new(then), Box::new(other));
                continue;
            }
            let Some(op) = self.peek_binary() else { break };
            let prec = binary_prec(op).unwrap_or(0);
            if prec <= min && !(prec == 0 && min == 0) {
                break;
            }
            self.pos += if op == "not in" { 2 } else { 1 };
            let rhs = if op == "**" {
                self.expr(prec - 1)?
            } else {
                self.expr(prec)?
            };
            lhs = Ast::Binary(op, Box::new(lhs), Box::new(rhs));
        }
        self.depth -= 1;
        Ok(lhs)
    }

    fn unary(&mut self) -> R<Ast> {
        if self.eat_op("!") {
            return Ok(Ast::Unary("!", Box::new(self.unary()?)));
        }
        if matches!(self.peek(), Some(Tok::Ident(w)) if w == "not") {
            self.pos += 1;
            return Ok(Ast::Unary("!", Box::new(self.unary()?)));
        }
        if self.eat_op("-") {
            return Ok(Ast::Unary("-", Box::new(self.unary()?)));
        }
        if self.eat_op("+") {
            return self.unary();
        }
        let prim = self.primary()?;
        self.postfix(prim)
    }

    fn primary(&mut self) -> R<Ast> {
        let Some(tok) = self.peek().cloned() else {
            return err("unexpected end of expression");
        };
        self.pos += 1;
        Ok(match tok {
            Tok::Num(n, float) => Ast::Lit(if float || n.fract() != 0.0 || n.abs() > 9e15 {
                Val::Float(n)
            } else {
                Val::Int(n as i64)
            }),
            Tok::Str(s) => Ast::Lit(Val::Str(s)),
            Tok::Ident(w) => match w.as_str() {
                "true" => Ast::Lit(Val::Bool(true)),
                "false" => Ast::Lit(Val::Bool(false)),
                "nil" | "null" => Ast::Lit(Val::Null),
                _ if self.mode == Mode::Govaluate => Ast::Lit(Val::Str(w)),
                _ if matches!(self.peek(), Some(Tok::Op("("))) => {
                    self.pos += 1;
                    Ast::Call(w, self.args(")")?)
                }
                "sprig" if matches!(self.peek(), Some(Tok::Op("."))) => {
                    self.pos += 1;
                    let Some(Tok::Ident(f)) = self.peek().cloned() else {
                        return err("expected a sprig function name");
                    };
                    self.pos += 1;
                    self.expect("(")?;
                    Ast::Call(f, self.args(")")?)
                }
                _ => Ast::Var(w),
            },
            Tok::Op("#") => Ast::Hash,
            Tok::Op("(") => {
                // govaluate array literal: (a, b, c)
                let first = self.expr(0)?;
                if self.eat_op(",") {
                    let mut items = vec![first];
                    items.extend(self.args(")")?);
                    Ast::List(items)
                } else {
                    self.expect(")")?;
                    first
                }
            }
            Tok::Op("[") => Ast::List(self.args("]")?),
            Tok::Op("{") => {
                if self.eat_op("}") {
                    return Ok(Ast::MapLit(Vec::new()));
                }
                let first = self.expr(0)?;
                if self.eat_op(":") {
                    let mut entries = vec![(first, self.expr(0)?)];
                    while self.eat_op(",") {
                        if matches!(self.peek(), Some(Tok::Op("}"))) {
                            break;
                        }
                        let k = match self.peek().cloned() {
                            Some(Tok::Ident(w)) => {
                                self.pos += 1;
                                Ast::Lit(Val::Str(w))
                            }
                            _ => self.expr(0)?,
                        };
                        self.expect(":")?;
                        entries.push((k, self.expr(0)?));
                    }
                    self.expect("}")?;
                    let entries = entries
                        .into_iter()
                        .map(|(k, v)| match k {
                            Ast::Var(name) => (Ast::Lit(Val::Str(name)), v),
                            k => (k, v),
                        })
                        .collect();
                    Ast::MapLit(entries)
                } else {
                    self.expect("}")?;
                    Ast::Closure(Box::new(first))
                }
            }
            Tok::Op(o) => return err(format!("unexpected `{o}`")),
        })
    }

    fn args(&mut self, close: &str) -> R<Vec<Ast>> {
        let mut out = Vec::new();
        if self.eat_op(close) {
            return Ok(out);
        }
        loop {
            out.push(self.expr(0)?);
            if self.eat_op(close) {
                return Ok(out);
            }
            self.expect(",")?;
            if self.eat_op(close) {
                return Ok(out);
            }
        }
    }

    fn postfix(&mut self, mut ast: Ast) -> R<Ast> {
        loop {
            if self.eat_op(".") || self.eat_op("?.") {
                let optional = matches!(self.toks.get(self.pos - 1), Some(Tok::Op("?.")));
                match self.peek().cloned() {
                    Some(Tok::Ident(name)) => {
                        self.pos += 1;
                        if self.eat_op("(") {
                            let mut args = vec![ast];
                            args.extend(self.args(")")?);
                            ast = Ast::Call(format!(".{name}"), args);
                        } else {
                            ast = Ast::Member(Box::new(ast), name, optional);
                        }
                    }
                    Some(Tok::Num(n, false)) => {
                        self.pos += 1;
                        ast = Ast::Member(Box::new(ast), format_float(n), optional);
                    }
                    _ => return err("expected a name after `.`"),
                }
            } else if self.eat_op("[") {
                if self.eat_op(":") {
                    let hi = if self.eat_op("]") {
                        None
                    } else {
                        Some(Box::new(self.expr(0)?))
                    };
                    if hi.is_some() {
                        self.expect("]")?;
                    }
                    ast = Ast::Slice(Box::new(ast), None, hi);
                    continue;
                }
                let idx = self.expr(0)?;
                if self.eat_op(":") {
                    let hi = if self.eat_op("]") {
                        None
                    } else {
                        Some(Box::new(self.expr(0)?))
                    };
                    if hi.is_some() {
                        self.expect("]")?;
                    }
                    ast = Ast::Slice(Box::new(ast), Some(Box::new(idx)), hi);
                } else {
                    self.expect("]")?;
                    ast = Ast::Index(Box::new(ast), Box::new(idx));
                }
            } else {
                return Ok(ast);
            }
        }
    }
}

// ---------------------------------------------------------------- evaluator

struct Evaluator<'a> {
    env: &'a dyn Env,
    mode: Mode,
    hash: Option<Val>,
}

fn lookup(env: &dyn Env, name: String) -> Val {
    env.var(&name).unwrap_or(Val::Partial(name))
}

impl Evaluator<'_> {
    /// Evaluates `ast`; a value larger than [`limits::MAX_TEXT`] bytes or
    /// [`limits::MAX_LIST`] items is an error, so no expression grows without bound.
    fn eval(&self, ast: &Ast) -> R<Val> {
        let v = self.eval_unbounded(ast)?;
        match &v {
            Val::Str(s) if s.len() > limits::MAX_TEXT => err(limits::exceeded(
                "expression value (bytes)",
                s.len(),
                limits::MAX_TEXT,
            )),
            Val::List(l) if l.len() > limits::MAX_LIST => err(limits::exceeded(
                "expression value (items)",
                l.len(),
                limits::MAX_LIST,
            )),
            // a list of big strings (`[x, x, x…]`) counts their bytes too
            Val::List(l) => {
                let bytes: usize = l
                    .iter()
                    .map(|x| match x {
                        Val::Str(s) => s.len(),
                        _ => 0,
                    })
                    .sum();
                if bytes > limits::MAX_TEXT {
                    err(limits::exceeded(
                        "expression value (bytes)",
                        bytes,
                        limits::MAX_TEXT,
                    ))
                } else {
                    Ok(v)
                }
            }
            _ => Ok(v),
        }
    }

    fn eval_unbounded(&self, ast: &Ast) -> R<Val> {
        match ast {
            Ast::Lit(v) => Ok(v.clone()),
            Ast::Var(name) => Ok(lookup(self.env, name.clone())),
            Ast::Hash => self
                .hash
                .clone()
                .ok_or_else(|| Error("`#` outside a predicate".into())),
            Ast::Member(base, name, optional) => {
                let b = self.eval(base)?;
                match b {
                    Val::Partial(p) => Ok(lookup(self.env, format!("{p}.{name}"))),
                    Val::Null if *optional => Ok(Val::Null),
                    other => member(&other, &Val::Str(name.clone())),
                }
            }
            Ast::Index(base, idx) => {
                let b = self.eval(base)?;
                let i = self.eval(idx)?;
                match b {
                    Val::Partial(p) => Ok(lookup(self.env, format!("{p}.{}", i.to_text()))),
                    other => member(&other, &i),
                }
            }
            Ast::Slice(base, lo, hi) => {
                let b = self.eval(base)?;
                let lo = lo.as_ref().map(|x| self.eval(x)).transpose()?;
                let hi = hi.as_ref().map(|x| self.eval(x)).transpose()?;
                slice(&b, lo, hi)
            }
            Ast::Call(name, args) => self.call(name, args),
            Ast::Closure(_) => {
                err("a predicate `{…}` can only be an argument of filter/map/all/any")
            }
            Ast::Unary(op, x) => {
                let v = self.eval(x)?;
                match *op {
                    "!" => Ok(Val::Bool(!self.bool(&v)?)),
                    _ => match v {
                        Val::Int(i) => Ok(Val::Int(i.wrapping_neg())),
                        other => other
                            .num()
                            .map(|f| Val::Float(-f))
                            .ok_or_else(|| Error("cannot negate".into())),
                    },
                }
            }
            Ast::Cond(c, a, b) => {
                let c = self.eval(c)?;
                if self.bool(&c)? {
                    self.eval(a)
                } else {
                    self.eval(b)
                }
            }
            Ast::List(items) => Ok(Val::List(
                items.iter().map(|i| self.eval(i)).collect::<R<_>>()?,
            )),
            Ast::MapLit(entries) => {
                let mut m = BTreeMap::new();
                for (k, v) in entries {
                    m.insert(self.eval(k)?.to_text(), self.eval(v)?);
                }
                Ok(Val::Map(m))
            }
            Ast::Binary(op, a, b) => self.binary(op, a, b),
        }
    }

    fn bool(&self, v: &Val) -> R<bool> {
        match v {
            Val::Partial(p) => err(format!("unknown variable `{p}`")),
            v => v.truthy(),
        }
    }

    fn value(&self, ast: &Ast) -> R<Val> {
        match self.eval(ast)? {
            Val::Partial(p) if self.mode == Mode::Expr => err(format!("unknown variable `{p}`")),
            Val::Partial(p) => Ok(Val::Str(p)),
            v => Ok(v),
        }
    }

    fn binary(&self, op: &str, a: &Ast, b: &Ast) -> R<Val> {
        match op {
            "&&" => {
                let l = self.value(a)?;
                if !self.bool(&l)? {
                    return Ok(Val::Bool(false));
                }
                let r = self.value(b)?;
                return Ok(Val::Bool(self.bool(&r)?));
            }
            "||" => {
                let l = self.value(a)?;
                if self.bool(&l)? {
                    return Ok(Val::Bool(true));
                }
                let r = self.value(b)?;
                return Ok(Val::Bool(self.bool(&r)?));
            }
            "??" => {
                return match self.eval(a)? {
                    Val::Null | Val::Partial(_) => self.value(b),
                    v => Ok(v),
                };
            }
            _ => {}
        }
        let l = self.value(a)?;
        let r = self.value(b)?;
        Ok(match op {
            "==" | "===" => Val::Bool(equal(&l, &r)),
            "!=" | "!==" => Val::Bool(!equal(&l, &r)),
            "<" | ">" | "<=" | ">=" => {
                let ord = compare(&l, &r)?;
                Val::Bool(match op {
                    "<" => ord.is_lt(),
                    ">" => ord.is_gt(),
                    "<=" => ord.is_le(),
                    _ => ord.is_ge(),
                })
            }
            "=~" | "matches" => Val::Bool(regex_match(&l.to_text(), &r.to_text())?),
            "!~" => Val::Bool(!regex_match(&l.to_text(), &r.to_text())?),
            "in" => Val::Bool(contains(&r, &l)),
            "not in" => Val::Bool(!contains(&r, &l)),
            "contains" => Val::Bool(l.to_text().contains(&r.to_text())),
            "startsWith" => Val::Bool(l.to_text().starts_with(&r.to_text())),
            "endsWith" => Val::Bool(l.to_text().ends_with(&r.to_text())),
            ".." => match (l.num(), r.num()) {
                (Some(x), Some(y)) => {
                    let (x, y) = (x as i64, y as i64);
                    let n = (y as i128 - x as i128 + 1).max(0);
                    if n > limits::MAX_LIST as i128 {
                        return err(limits::exceeded(
                            "`..` range (items)",
                            n as usize,
                            limits::MAX_LIST,
                        ));
                    }
                    Val::List((x..=y).map(Val::Int).collect())
                }
                _ => return err("`..` needs integers"),
            },
            "+" => match (&l, &r) {
                (Val::Int(x), Val::Int(y)) => Val::Int(x.wrapping_add(*y)),
                (Val::Str(_), _) | (_, Val::Str(_))
                    if self.mode == Mode::Expr || l.num().is_none() || r.num().is_none() =>
                {
                    Val::Str(l.to_text() + &r.to_text())
                }
                (Val::List(x), Val::List(y)) => Val::List(x.iter().chain(y).cloned().collect()),
                _ => arith(op, &l, &r)?,
            },
            _ => arith(op, &l, &r)?,
        })
    }

    fn call(&self, name: &str, args: &[Ast]) -> R<Val> {
        // predicate functions take a closure
        if let ("filter" | "map" | "all" | "any" | "none" | "count" | "find", [list, pred]) =
            (name, args)
        {
            let items = match self.value(list)? {
                Val::List(l) => l,
                other => return err(format!("{name}: expected a list, got {}", other.to_text())),
            };
            let body = match pred {
                Ast::Closure(b) => b.as_ref(),
                other => other,
            };
            let mut out = Vec::new();
            let mut n = 0i64;
            for it in items {
                let ev = Evaluator {
                    env: self.env,
                    mode: self.mode,
                    hash: Some(it.clone()),
                };
                let v = ev.value(body)?;
                match name {
                    "map" => out.push(v),
                    _ => {
                        if ev.bool(&v)? {
                            n += 1;
                            if name == "find" {
                                return Ok(it);
                            }
                            out.push(it);
                        }
                    }
                }
            }
            let total = out.len() as i64;
            return Ok(match name {
                "filter" | "map" => Val::List(out),
                "count" => Val::Int(n),
                "find" => Val::Null,
                "all" => Val::Bool(n == total && self.len_of(list)? == n),
                "any" => Val::Bool(n > 0),
                _ => Val::Bool(n == 0),
            });
        }
        let vals: Vec<Val> = args.iter().map(|a| self.value(a)).collect::<R<_>>()?;
        call(name.trim_start_matches('.'), &vals)
    }

    fn len_of(&self, list: &Ast) -> R<i64> {
        Ok(match self.value(list)? {
            Val::List(l) => l.len() as i64,
            _ => 0,
        })
    }
}

fn member(base: &Val, key: &Val) -> R<Val> {
    match (base, key) {
        (Val::Map(m), k) => Ok(m.get(&k.to_text()).cloned().unwrap_or(Val::Null)),
        (Val::List(l), k) => {
            let i = k.num().ok_or_else(|| {
                Error(format!(
                    "list index must be a number, got `{}`",
                    k.to_text()
                ))
            })? as i64;
            let i = if i < 0 { l.len() as i64 + i } else { i };
            l.get(i as usize)
                .cloned()
                .ok_or_else(|| Error(format!("index {i} out of range")))
        }
        (Val::Str(s), k) if k.num().is_some() => {
            let i = k.num().unwrap_or(0.0) as usize;
            s.chars()
                .nth(i)
                .map(|c| Val::Str(c.to_string()))
                .ok_or_else(|| Error("index out of range".into()))
        }
        (Val::Str(s), k) => match serde_json::from_str::<Json>(s) {
            Ok(j @ Json::Object(_)) => member(&Val::from_json(&j), k),
            _ => err(format!("cannot read `{}` of a string", k.to_text())),
        },
        (Val::Null, k) => err(format!("cannot read `{}` of nil", k.to_text())),
        (other, k) => err(format!(
            "cannot read `{}` of {}",
            k.to_text(),
            other.to_text()
        )),
    }
}

fn slice(base: &Val, lo: Option<Val>, hi: Option<Val>) -> R<Val> {
    let idx = |v: Option<Val>, len: usize, def: usize| -> usize {
        match v.and_then(|v| v.num()) {
            Some(n) if n < 0.0 => (len as i64 + n as i64).max(0) as usize,
            Some(n) => (n as usize).min(len),
            None => def,
        }
    };
    match base {
        Val::List(l) => {
            let (a, b) = (idx(lo, l.len(), 0), idx(hi, l.len(), l.len()));
            Ok(Val::List(if a < b { l[a..b].to_vec() } else { Vec::new() }))
        }
        Val::Str(s) => {
            let cs: Vec<char> = s.chars().collect();
            let (a, b) = (idx(lo, cs.len(), 0), idx(hi, cs.len(), cs.len()));
            Ok(Val::Str(if a < b {
                cs[a..b].iter().collect()
            } else {
                String::new()
            }))
        }
        _ => err("only lists and strings can be sliced"),
    }
}

fn equal(a: &Val, b: &Val) -> bool {
    match (a, b) {
        (Val::Str(x), Val::Str(y)) => x == y,
        (Val::Bool(x), Val::Str(y)) | (Val::Str(y), Val::Bool(x)) => {
            y == if *x { "true" } else { "false" }
        }
        _ => match (a.num(), b.num()) {
            (Some(x), Some(y)) if !matches!(a, Val::Str(_)) || !matches!(b, Val::Str(_)) => x == y,
            _ => a == b,
        },
    }
}

fn compare(a: &Val, b: &Val) -> R<std::cmp::Ordering> {
    let both_str = matches!((a, b), (Val::Str(_), Val::Str(_)));
    if let (Some(x), Some(y)) = (a.num(), b.num())
        && (!both_str || (a.num().is_some() && b.num().is_some()))
    {
        return x
            .partial_cmp(&y)
            .ok_or_else(|| Error("cannot compare NaN".into()));
    }
    match (a, b) {
        (Val::Str(x), Val::Str(y)) => Ok(x.cmp(y)),
        _ => err(format!(
            "cannot compare `{}` and `{}`",
            a.to_text(),
            b.to_text()
        )),
    }
}

fn contains(hay: &Val, needle: &Val) -> bool {
    match hay {
        Val::List(l) => l.iter().any(|x| equal(x, needle)),
        Val::Map(m) => m.contains_key(&needle.to_text()),
        Val::Str(s) => s.contains(&needle.to_text()),
        _ => false,
    }
}

fn regex_match(text: &str, pattern: &str) -> R<bool> {
    let re =
        regex::Regex::new(pattern).map_err(|e| Error(format!("bad regex `{pattern}`: {e}")))?;
    Ok(re.is_match(text))
}

fn arith(op: &str, l: &Val, r: &Val) -> R<Val> {
    if let (Val::Int(x), Val::Int(y)) = (l, r) {
        return Ok(match op {
            "-" => Val::Int(x.wrapping_sub(*y)),
            "*" => Val::Int(x.wrapping_mul(*y)),
            "/" if *y == 0 => return err("division by zero"),
            "/" => Val::Float(*x as f64 / *y as f64),
            "%" if *y == 0 => return err("division by zero"),
            "%" => Val::Int(x.wrapping_rem(*y)),
            "**" => Val::Float((*x as f64).powf(*y as f64)),
            _ => Val::Int(x.wrapping_add(*y)),
        });
    }
    let (Some(x), Some(y)) = (l.num(), r.num()) else {
        return err(format!(
            "`{op}` needs numbers, got `{}` and `{}`",
            l.to_text(),
            r.to_text()
        ));
    };
    Ok(Val::Float(match op {
        "-" => x - y,
        "*" => x * y,
        "/" => x / y,
        "%" => x % y,
        "**" => x.powf(y),
        _ => x + y,
    }))
}

fn arity(name: &str, args: &[Val], n: usize) -> R<()> {
    if args.len() != n {
        err(format!(
            "{name}() takes {n} argument(s), got {}",
            args.len()
        ))
    } else {
        Ok(())
    }
}

fn text(args: &[Val], i: usize) -> String {
    args.get(i).map(Val::to_text).unwrap_or_default()
}

/// Built-in functions: expr's, Argo's additions and the sprig string functions the examples use.
fn call(name: &str, args: &[Val]) -> R<Val> {
    Ok(match name {
        "asInt" | "int" | "atoi" => {
            arity(name, args, 1)?;
            match &args[0] {
                Val::Int(i) => Val::Int(*i),
                Val::Float(f) => Val::Int(*f as i64),
                v => {
                    let t = v.to_text();
                    match t.trim().parse::<i64>() {
                        Ok(i) => Val::Int(i),
                        Err(_) if name == "int" => match t.trim().parse::<f64>() {
                            Ok(f) => Val::Int(f as i64),
                            Err(_) => return err(format!("{name}: `{t}` is not an integer")),
                        },
                        Err(_) => return err(format!("{name}: `{t}` is not an integer")),
                    }
                }
            }
        }
        "asFloat" | "float" | "float64" => {
            arity(name, args, 1)?;
            Val::Float(
                args[0].num().ok_or_else(|| {
                    Error(format!("{name}: `{}` is not a number", args[0].to_text()))
                })?,
            )
        }
        "string" | "toString" => {
            arity(name, args, 1)?;
            Val::Str(args[0].to_text())
        }
        "toJson" | "toRawJson" | "toJSON" => {
            arity(name, args, 1)?;
            Val::Str(args[0].to_json().to_string())
        }
        "toPrettyJson" => {
            arity(name, args, 1)?;
            Val::Str(serde_json::to_string_pretty(&args[0].to_json()).unwrap_or_default())
        }
        "fromJson" | "fromJSON" => {
            arity(name, args, 1)?;
            let t = args[0].to_text();
            Val::from_json(&serde_json::from_str(&t).map_err(|e| Error(format!("fromJson: {e}")))?)
        }
        "jsonpath" => {
            arity(name, args, 2)?;
            let doc = match &args[0] {
                Val::Str(s) => Val::from_json(
                    &serde_json::from_str(s).map_err(|e| Error(format!("jsonpath: {e}")))?,
                ),
                v => v.clone(),
            };
            jsonpath(&doc, &args[1].to_text())?
        }
        "len" => {
            arity(name, args, 1)?;
            Val::Int(match &args[0] {
                Val::List(l) => l.len(),
                Val::Map(m) => m.len(),
                v => v.to_text().chars().count(),
            } as i64)
        }
        "lower" | "toLower" => Val::Str(text(args, 0).to_lowercase()),
        "upper" | "toUpper" => Val::Str(text(args, 0).to_uppercase()),
        "trim" => Val::Str(text(args, 0).trim().to_string()),
        "trimAll" => Val::Str(
            text(args, 1)
                .trim_matches(|c| text(args, 0).contains(c))
                .to_string(),
        ),
        "trimPrefix" => Val::Str(
            text(args, 1)
                .strip_prefix(&text(args, 0))
                .map(str::to_string)
                .unwrap_or(text(args, 1)),
        ),
        "trimSuffix" => Val::Str(
            text(args, 1)
                .strip_suffix(&text(args, 0))
                .map(str::to_string)
                .unwrap_or(text(args, 1)),
        ),
        "hasPrefix" => Val::Bool(text(args, 1).starts_with(&text(args, 0))),
        "hasSuffix" => Val::Bool(text(args, 1).ends_with(&text(args, 0))),
        "repeat" => {
            let (t, n) = (
                text(args, 1),
                args.first()
                    .and_then(Val::num)
                    .unwrap_or(0.0)
                    .clamp(0.0, 1e9) as usize,
            );
            if t.len().saturating_mul(n) > limits::MAX_TEXT {
                return err(limits::exceeded(
                    "repeat (bytes)",
                    t.len().saturating_mul(n),
                    limits::MAX_TEXT,
                ));
            }
            Val::Str(t.repeat(n))
        }
        "replace" if args.len() == 3 => {
            let (t, from, to) = (text(args, 0), text(args, 1), text(args, 2));
            let n = if from.is_empty() {
                t.chars().count() + 1
            } else {
                t.matches(from.as_str()).count()
            };
            let size = t.len().saturating_add(n.saturating_mul(to.len()));
            if size > limits::MAX_TEXT {
                return err(limits::exceeded("replace (bytes)", size, limits::MAX_TEXT));
            }
            Val::Str(t.replace(&from, &to))
        }
        "split" => Val::List(
            text(args, 0)
                .split(&text(args, 1))
                .map(|s| Val::Str(s.to_string()))
                .collect(),
        ),
        "splitList" => Val::List(
            text(args, 1)
                .split(&text(args, 0))
                .map(|s| Val::Str(s.to_string()))
                .collect(),
        ),
        "join" => match (args.first(), args.get(1)) {
            (Some(Val::List(l)), sep) => Val::Str(
                l.iter()
                    .map(Val::to_text)
                    .collect::<Vec<_>>()
                    .join(&sep.map(Val::to_text).unwrap_or_default()),
            ),
            (Some(sep), Some(Val::List(l))) => Val::Str(
                l.iter()
                    .map(Val::to_text)
                    .collect::<Vec<_>>()
                    .join(&sep.to_text()),
            ),
            _ => return err("join(list, separator)"),
        },
        "quote" => Val::Str(format!("\"{}\"", text(args, 0))),
        "squote" => Val::Str(format!("'{}'", text(args, 0))),
        "contains" => Val::Bool(text(args, 1).contains(&text(args, 0))),
        "abs" => Val::Float(args.first().and_then(Val::num).unwrap_or(0.0).abs()),
        "max" | "min" => {
            let nums: Vec<f64> = args.iter().filter_map(Val::num).collect();
            if nums.is_empty() {
                return err(format!("{name}() needs numbers"));
            }
            let f = if name == "max" {
                nums.iter().cloned().fold(f64::MIN, f64::max)
            } else {
                nums.iter().cloned().fold(f64::MAX, f64::min)
            };
            if args.iter().all(|a| matches!(a, Val::Int(_))) {
                Val::Int(f as i64)
            } else {
                Val::Float(f)
            }
        }
        "add" => args
            .iter()
            .try_fold(Val::Int(0), |acc, x| arith("+", &acc, x))?,
        "add1" => arith("+", args.first().unwrap_or(&Val::Int(0)), &Val::Int(1))?,
        "div" => arith(
            "/",
            args.first().unwrap_or(&Val::Int(0)),
            args.get(1).unwrap_or(&Val::Int(1)),
        )?,
        "mod" => arith(
            "%",
            args.first().unwrap_or(&Val::Int(0)),
            args.get(1).unwrap_or(&Val::Int(1)),
        )?,
        "sub" => arith(
            "-",
            args.first().unwrap_or(&Val::Int(0)),
            args.get(1).unwrap_or(&Val::Int(0)),
        )?,
        "mul" => arith(
            "*",
            args.first().unwrap_or(&Val::Int(0)),
            args.get(1).unwrap_or(&Val::Int(0)),
        )?,
        "first" => match args.first() {
            Some(Val::List(l)) => l.first().cloned().unwrap_or(Val::Null),
            _ => Val::Null,
        },
        "last" => match args.first() {
            Some(Val::List(l)) => l.last().cloned().unwrap_or(Val::Null),
            _ => Val::Null,
        },
        "keys" => match args.first() {
            Some(Val::Map(m)) => Val::List(m.keys().map(|k| Val::Str(k.clone())).collect()),
            _ => return err("keys() needs a map"),
        },
        "list" => Val::List(args.to_vec()),
        "default" => match args.get(1) {
            Some(Val::Null) | None => args.first().cloned().unwrap_or(Val::Null),
            Some(Val::Str(s)) if s.is_empty() => args.first().cloned().unwrap_or(Val::Null),
            Some(v) => v.clone(),
        },
        "empty" => Val::Bool(
            matches!(args.first(), None | Some(Val::Null))
                || args.first().is_some_and(|v| v.to_text().is_empty()),
        ),
        "b64enc" => Val::Str(base64_encode(text(args, 0).as_bytes())),
        "b64dec" => Val::Str(
            crate::load::base64_decode(&text(args, 0))
                .ok_or_else(|| Error("b64dec: invalid base64".into()))?,
        ),
        "regexMatch" => Val::Bool(regex_match(&text(args, 1), &text(args, 0))?),
        "regexFind" => {
            let re = regex::Regex::new(&text(args, 0)).map_err(|e| Error(e.to_string()))?;
            Val::Str(
                re.find(&text(args, 1))
                    .map(|m| m.as_str().to_string())
                    .unwrap_or_default(),
            )
        }
        "regexReplaceAll" => {
            let re = regex::Regex::new(&text(args, 0)).map_err(|e| Error(e.to_string()))?;
            Val::Str(
                re.replace_all(&text(args, 1), text(args, 2).as_str())
                    .into_owned(),
            )
        }
        "ternary" => {
            if args.get(2).map(Val::truthy).transpose()?.unwrap_or(false) {
                args[0].clone()
            } else {
                args.get(1).cloned().unwrap_or(Val::Null)
            }
        }
        "date" | "dateInZone" => {
            let t = args
                .get(1)
                .ok_or_else(|| Error("date(layout, time)".into()))?;
            let secs = match t {
                Val::Int(i) => *i,
                Val::Float(f) => *f as i64,
                other => parse_rfc3339(&other.to_text()).ok_or_else(|| {
                    Error(format!(
                        "date: `{}` is not an RFC 3339 time",
                        other.to_text()
                    ))
                })?,
            };
            Val::Str(go_time_format(&text(args, 0), secs))
        }
        "sha256sum" | "now" | "randAlphaNum" | "uuidv4" => {
            return err(format!(
                "function `{name}` is not supported by weir (it needs the clock, randomness or a hash that the expression language does not provide here)"
            ));
        }
        _ => return err(format!("unknown function `{name}`")),
    })
}

/// Seconds since the epoch of `2006-01-02T15:04:05Z` (UTC or with an offset).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        rest = frac.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o[1..3].parse::<i64>().ok()? * 3600 + o[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    let (yy, mm) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * mm + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se - offset)
}

/// Go's time layout (`2006-01-02 15:04:05`, `Jan`, `Monday`…) applied to a UTC instant.
pub fn go_time_format(layout: &str, secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (hour, min, sec) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let weekday = (days + 4).rem_euclid(7) as usize;
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
    ];
    let tokens: [(&str, String); 20] = [
        ("2006", format!("{year:04}")),
        ("January", MONTHS[(month - 1) as usize].to_string()),
        ("Monday", DAYS[weekday].to_string()),
        ("Jan", MONTHS[(month - 1) as usize][..3].to_string()),
        ("Mon", DAYS[weekday][..3].to_string()),
        ("MST", "UTC".to_string()),
        ("Z07:00", "Z".to_string()),
        ("-07:00", "+00:00".to_string()),
        ("-0700", "+0000".to_string()),
        ("06", format!("{:02}", year % 100)),
        ("01", format!("{month:02}")),
        ("02", format!("{day:02}")),
        ("15", format!("{hour:02}")),
        (
            "03",
            format!("{:02}", if hour % 12 == 0 { 12 } else { hour % 12 }),
        ),
        ("04", format!("{min:02}")),
        ("05", format!("{sec:02}")),
        ("PM", if hour >= 12 { "PM" } else { "AM" }.to_string()),
        ("_2", format!("{day:>2}")),
        ("1", month.to_string()),
        ("2", day.to_string()),
    ];
    let mut out = String::new();
    let mut rest = layout;
    'outer: while !rest.is_empty() {
        for (tok, val) in &tokens {
            if let Some(r) = rest.strip_prefix(tok) {
                out.push_str(val);
                rest = r;
                continue 'outer;
            }
        }
        let c = rest.chars().next().unwrap_or(' ');
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn base64_encode(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &x)| acc | (x as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------- jsonpath

/// A JSONPath subset: `$`, `.key`, `['key']`, `[n]`, `[*]`, `[a:b]`, `..key`, `[?(@.x > 1)]`.
/// One match gives the value itself, several give a list (as Argo's `jsonpath` does).
pub fn jsonpath(doc: &Val, path: &str) -> R<Val> {
    let chars: Vec<char> = path.trim().chars().collect();
    let mut i = 0;
    if chars.first() == Some(&'$') {
        i = 1;
    }
    let mut cur = vec![doc.clone()];
    let mut multi = false;
    while i < chars.len() {
        match chars[i] {
            '.' if chars.get(i + 1) == Some(&'.') => {
                i += 2;
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '-')
                {
                    i += 1;
                }
                let key: String = chars[start..i].iter().collect();
                let mut found = Vec::new();
                for v in &cur {
                    descend(v, &key, &mut found);
                }
                cur = found;
                multi = true;
            }
            '.' => {
                i += 1;
                let start = i;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    i += 1;
                }
                let key: String = chars[start..i].iter().collect();
                if key == "*" {
                    cur = cur.iter().flat_map(children).collect();
                    multi = true;
                } else {
                    cur = cur.iter().filter_map(|v| field(v, &key)).collect();
                }
            }
            '[' => {
                let mut depth = 0;
                let start = i + 1;
                while i < chars.len() {
                    match chars[i] {
                        '[' => depth += 1,
                        ']' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                if i >= chars.len() {
                    return err(format!("jsonpath `{path}`: missing `]`"));
                }
                let inner: String = chars[start..i].iter().collect();
                i += 1;
                let inner = inner.trim();
                if inner == "*" {
                    cur = cur.iter().flat_map(children).collect();
                    multi = true;
                } else if let Some(filter) = inner.strip_prefix('?') {
                    let filter = filter.trim().trim_start_matches('(').trim_end_matches(')');
                    let ast = parse(filter, Mode::Expr)?;
                    let mut out = Vec::new();
                    for v in cur.iter().flat_map(children) {
                        let env = AtEnv(v.clone());
                        let r = Evaluator {
                            env: &env,
                            mode: Mode::Expr,
                            hash: None,
                        }
                        .value(&ast);
                        if matches!(r, Ok(Val::Bool(true))) {
                            out.push(v);
                        }
                    }
                    cur = out;
                    multi = true;
                } else if inner.starts_with(['\'', '"']) {
                    let key = inner.trim_matches(['\'', '"']);
                    cur = cur.iter().filter_map(|v| field(v, key)).collect();
                } else if let Some((a, b)) = inner.split_once(':') {
                    let lo = if a.trim().is_empty() {
                        None
                    } else {
                        Some(Val::Int(a.trim().parse().map_err(|_| {
                            Error(format!("jsonpath `{path}`: bad slice"))
                        })?))
                    };
                    let hi = if b.trim().is_empty() {
                        None
                    } else {
                        Some(Val::Int(b.trim().parse().map_err(|_| {
                            Error(format!("jsonpath `{path}`: bad slice"))
                        })?))
                    };
                    let mut out = Vec::new();
                    for v in &cur {
                        if let Val::List(l) = slice(v, lo.clone(), hi.clone())? {
                            out.extend(l);
                        }
                    }
                    cur = out;
                    multi = true;
                } else {
                    let n: i64 = inner
                        .parse()
                        .map_err(|_| Error(format!("jsonpath `{path}`: bad index `{inner}`")))?;
                    cur = cur
                        .iter()
                        .filter_map(|v| member(v, &Val::Int(n)).ok())
                        .collect();
                }
            }
            c => return err(format!("jsonpath `{path}`: unexpected `{c}`")),
        }
    }
    Ok(if multi {
        Val::List(cur)
    } else {
        cur.into_iter().next().unwrap_or(Val::Null)
    })
}

struct AtEnv(Val);

impl Env for AtEnv {
    fn var(&self, name: &str) -> Option<Val> {
        let mut parts = name.split('.');
        if parts.next()? != "@" {
            return None;
        }
        let mut v = self.0.clone();
        for p in parts {
            v = field(&v, p)?;
        }
        Some(v)
    }
}

fn field(v: &Val, key: &str) -> Option<Val> {
    match v {
        Val::Map(m) => m.get(key).cloned(),
        _ => None,
    }
}

fn children(v: &Val) -> Vec<Val> {
    match v {
        Val::List(l) => l.clone(),
        Val::Map(m) => m.values().cloned().collect(),
        _ => Vec::new(),
    }
}

fn descend(v: &Val, key: &str, out: &mut Vec<Val>) {
    if let Some(x) = field(v, key) {
        out.push(x);
    }
    for c in children(v) {
        descend(&c, key, out);
    }
}

// ---------------------------------------------------------------- DAG `depends`

/// A parsed `depends:` expression: `a && (b.Failed || !c.Succeeded)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Depends {
    Task(String, String),
    Not(Box<Depends>),
    And(Box<Depends>, Box<Depends>),
    Or(Box<Depends>, Box<Depends>),
}

impl Depends {
    pub fn parse(src: &str) -> R<Depends> {
        let toks = depends_tokens(src)?;
        let mut pos = 0;
        let d = depends_or(&toks, &mut pos)?;
        if pos != toks.len() {
            return err(format!("depends `{src}`: unexpected `{}`", toks[pos]));
        }
        Ok(d)
    }
    /// Task names this expression refers to.
    pub fn tasks(&self, out: &mut Vec<String>) {
        match self {
            Depends::Task(t, _) => {
                if !out.contains(t) {
                    out.push(t.clone())
                }
            }
            Depends::Not(x) => x.tasks(out),
            Depends::And(a, b) | Depends::Or(a, b) => {
                a.tasks(out);
                b.tasks(out);
            }
        }
    }
    /// Evaluates with `check(task, result)` answering `task.Result`.
    pub fn eval(&self, check: &dyn Fn(&str, &str) -> bool) -> bool {
        match self {
            Depends::Task(t, r) => check(t, r),
            Depends::Not(x) => !x.eval(check),
            Depends::And(a, b) => a.eval(check) && b.eval(check),
            Depends::Or(a, b) => a.eval(check) || b.eval(check),
        }
    }
}

pub const DEPENDS_RESULTS: &[&str] = &[
    "Succeeded",
    "Failed",
    "Errored",
    "Skipped",
    "Omitted",
    "Completed",
    "AnySucceeded",
    "AllFailed",
    "Daemoned",
];

fn depends_tokens(src: &str) -> R<Vec<String>> {
    let mut out = Vec::new();
    let cs: Vec<char> = src.chars().collect();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '(' || c == ')' || c == '!' {
            out.push(c.to_string());
            i += 1;
        } else if (c == '&' || c == '|') && cs.get(i + 1) == Some(&c) {
            out.push(format!("{c}{c}"));
            i += 2;
        } else if c.is_alphanumeric() || c == '_' || c == '-' || c == '.' {
            let s = i;
            while i < cs.len()
                && (cs[i].is_alphanumeric() || cs[i] == '_' || cs[i] == '-' || cs[i] == '.')
            {
                i += 1;
            }
            out.push(cs[s..i].iter().collect());
        } else {
            return err(format!("depends `{src}`: unexpected character `{c}`"));
        }
    }
    Ok(out)
}

fn depends_or(t: &[String], pos: &mut usize) -> R<Depends> {
    let mut l = depends_and(t, pos)?;
    while t.get(*pos).is_some_and(|x| x == "||") {
        *pos += 1;
        l = Depends::Or(Box::new(l), Box::new(depends_and(t, pos)?));
    }
    Ok(l)
}

fn depends_and(t: &[String], pos: &mut usize) -> R<Depends> {
    let mut l = depends_atom(t, pos)?;
    while t.get(*pos).is_some_and(|x| x == "&&") {
        *pos += 1;
        l = Depends::And(Box::new(l), Box::new(depends_atom(t, pos)?));
    }
    Ok(l)
}

fn depends_atom(t: &[String], pos: &mut usize) -> R<Depends> {
    let Some(tok) = t.get(*pos) else {
        return err("depends: unexpected end");
    };
    *pos += 1;
    match tok.as_str() {
        "!" => Ok(Depends::Not(Box::new(depends_atom(t, pos)?))),
        "(" => {
            let d = depends_or(t, pos)?;
            if t.get(*pos).map(String::as_str) != Some(")") {
                return err("depends: missing `)`");
            }
            *pos += 1;
            Ok(d)
        }
        "&&" | "||" | ")" => err(format!("depends: unexpected `{tok}`")),
        word => {
            if let Some((task, res)) = word.rsplit_once('.')
                && DEPENDS_RESULTS.contains(&res)
            {
                return Ok(Depends::Task(task.to_string(), res.to_string()));
            }
            Ok(Depends::Task(word.to_string(), String::new()))
        }
    }
}

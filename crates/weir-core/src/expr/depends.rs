//! DAG `depends` expressions.

use super::*;

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

pub(super) fn depends_tokens(src: &str) -> R<Vec<String>> {
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

pub(super) fn depends_or(t: &[String], pos: &mut usize) -> R<Depends> {
    let mut l = depends_and(t, pos)?;
    while t.get(*pos).is_some_and(|x| x == "||") {
        *pos += 1;
        l = Depends::Or(Box::new(l), Box::new(depends_and(t, pos)?));
    }
    Ok(l)
}

pub(super) fn depends_and(t: &[String], pos: &mut usize) -> R<Depends> {
    let mut l = depends_atom(t, pos)?;
    while t.get(*pos).is_some_and(|x| x == "&&") {
        *pos += 1;
        l = Depends::And(Box::new(l), Box::new(depends_atom(t, pos)?));
    }
    Ok(l)
}

pub(super) fn depends_atom(t: &[String], pos: &mut usize) -> R<Depends> {
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

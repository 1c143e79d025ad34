//! The evaluator: operators, member access, slices, comparisons.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use crate::limits;

use super::*;

pub(super) struct Evaluator<'a> {
    pub(super) env: &'a dyn Env,
    pub(super) mode: Mode,
    pub(super) hash: Option<Val>,
}

pub(super) fn lookup(env: &dyn Env, name: String) -> Val {
    env.var(&name).unwrap_or(Val::Partial(name))
}

impl Evaluator<'_> {
    /// Evaluates `ast`; a value larger than [`limits::MAX_TEXT`] bytes or
    /// [`limits::MAX_LIST`] items is an error, so no expression grows without bound.
    pub(super) fn eval(&self, ast: &Ast) -> R<Val> {
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

    pub(super) fn eval_unbounded(&self, ast: &Ast) -> R<Val> {
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
                match op {
                    UnOp::Not => Ok(Val::Bool(!self.bool(&v)?)),
                    UnOp::Neg => match v {
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
            Ast::Binary(op, a, b) => self.binary(*op, a, b),
        }
    }

    pub(super) fn bool(&self, v: &Val) -> R<bool> {
        match v {
            Val::Partial(p) => err(format!("unknown variable `{p}`")),
            v => v.truthy(),
        }
    }

    pub(super) fn value(&self, ast: &Ast) -> R<Val> {
        match self.eval(ast)? {
            Val::Partial(p) if self.mode == Mode::Expr => err(format!("unknown variable `{p}`")),
            Val::Partial(p) => Ok(Val::Str(p)),
            v => Ok(v),
        }
    }

    pub(super) fn binary(&self, op: BinOp, a: &Ast, b: &Ast) -> R<Val> {
        match op {
            BinOp::And => {
                let l = self.value(a)?;
                if !self.bool(&l)? {
                    return Ok(Val::Bool(false));
                }
                let r = self.value(b)?;
                return Ok(Val::Bool(self.bool(&r)?));
            }
            BinOp::Or => {
                let l = self.value(a)?;
                if self.bool(&l)? {
                    return Ok(Val::Bool(true));
                }
                let r = self.value(b)?;
                return Ok(Val::Bool(self.bool(&r)?));
            }
            BinOp::Coalesce => {
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
            BinOp::Eq => Val::Bool(equal(&l, &r)),
            BinOp::Ne => Val::Bool(!equal(&l, &r)),
            BinOp::Lt => Val::Bool(compare(&l, &r)?.is_lt()),
            BinOp::Gt => Val::Bool(compare(&l, &r)?.is_gt()),
            BinOp::Le => Val::Bool(compare(&l, &r)?.is_le()),
            BinOp::Ge => Val::Bool(compare(&l, &r)?.is_ge()),
            BinOp::Matches => Val::Bool(regex_match(&l.to_text(), &r.to_text())?),
            BinOp::NotMatches => Val::Bool(!regex_match(&l.to_text(), &r.to_text())?),
            BinOp::In => Val::Bool(contains(&r, &l)),
            BinOp::NotIn => Val::Bool(!contains(&r, &l)),
            BinOp::Contains => Val::Bool(l.to_text().contains(&r.to_text())),
            BinOp::StartsWith => Val::Bool(l.to_text().starts_with(&r.to_text())),
            BinOp::EndsWith => Val::Bool(l.to_text().ends_with(&r.to_text())),
            BinOp::Range => match (l.num(), r.num()) {
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
            BinOp::Add => match (&l, &r) {
                (Val::Int(x), Val::Int(y)) => Val::Int(x.wrapping_add(*y)),
                (Val::Str(_), _) | (_, Val::Str(_))
                    if self.mode == Mode::Expr || l.num().is_none() || r.num().is_none() =>
                {
                    Val::Str(l.to_text() + &r.to_text())
                }
                (Val::List(x), Val::List(y)) => Val::List(x.iter().chain(y).cloned().collect()),
                _ => arith(op, &l, &r)?,
            },
            BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem | BinOp::Pow => arith(op, &l, &r)?,
            // evaluated above, before their operands
            BinOp::And | BinOp::Or | BinOp::Coalesce => unreachable!("short-circuit operator"),
        })
    }

    pub(super) fn call(&self, name: &str, args: &[Ast]) -> R<Val> {
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

    pub(super) fn len_of(&self, list: &Ast) -> R<i64> {
        Ok(match self.value(list)? {
            Val::List(l) => l.len() as i64,
            _ => 0,
        })
    }
}

pub(super) fn member(base: &Val, key: &Val) -> R<Val> {
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

pub(super) fn slice(base: &Val, lo: Option<Val>, hi: Option<Val>) -> R<Val> {
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

pub(super) fn equal(a: &Val, b: &Val) -> bool {
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

pub(super) fn compare(a: &Val, b: &Val) -> R<std::cmp::Ordering> {
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

pub(super) fn contains(hay: &Val, needle: &Val) -> bool {
    match hay {
        Val::List(l) => l.iter().any(|x| equal(x, needle)),
        Val::Map(m) => m.contains_key(&needle.to_text()),
        Val::Str(s) => s.contains(&needle.to_text()),
        _ => false,
    }
}

pub(super) fn regex_match(text: &str, pattern: &str) -> R<bool> {
    let re =
        regex::Regex::new(pattern).map_err(|e| Error(format!("bad regex `{pattern}`: {e}")))?;
    Ok(re.is_match(text))
}

/// `+ - * / % **` on numbers (`op` is one of those).
pub(super) fn arith(op: BinOp, l: &Val, r: &Val) -> R<Val> {
    if let (Val::Int(x), Val::Int(y)) = (l, r) {
        return Ok(match op {
            BinOp::Sub => Val::Int(x.wrapping_sub(*y)),
            BinOp::Mul => Val::Int(x.wrapping_mul(*y)),
            BinOp::Div | BinOp::Rem if *y == 0 => return err("division by zero"),
            BinOp::Div => Val::Float(*x as f64 / *y as f64),
            BinOp::Rem => Val::Int(x.wrapping_rem(*y)),
            BinOp::Pow => Val::Float((*x as f64).powf(*y as f64)),
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
        BinOp::Sub => x - y,
        BinOp::Mul => x * y,
        BinOp::Div => x / y,
        BinOp::Rem => x % y,
        BinOp::Pow => x.powf(y),
        _ => x + y,
    }))
}

pub(super) fn arity(name: &str, args: &[Val], n: usize) -> R<()> {
    if args.len() != n {
        err(format!(
            "{name}() takes {n} argument(s), got {}",
            args.len()
        ))
    } else {
        Ok(())
    }
}

pub(super) fn text(args: &[Val], i: usize) -> String {
    args.get(i).map(Val::to_text).unwrap_or_default()
}

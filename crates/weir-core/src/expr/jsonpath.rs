//! The JSONPath subset `jsonpath(doc, path)` takes.

use super::*;

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

pub(super) struct AtEnv(Val);

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

pub(super) fn field(v: &Val, key: &str) -> Option<Val> {
    match v {
        Val::Map(m) => m.get(key).cloned(),
        _ => None,
    }
}

pub(super) fn children(v: &Val) -> Vec<Val> {
    match v {
        Val::List(l) => l.clone(),
        Val::Map(m) => m.values().cloned().collect(),
        _ => Vec::new(),
    }
}

pub(super) fn descend(v: &Val, key: &str, out: &mut Vec<Val>) {
    if let Some(x) = field(v, key) {
        out.push(x);
    }
    for c in children(v) {
        descend(&c, key, out);
    }
}

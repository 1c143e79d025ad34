//! `{{…}}` substitution: `{{inputs.parameters.x}}` is an exact-key lookup (names may contain
//! dashes, as in `steps.flip-coin.outputs.result`); `{{=expr}}` is evaluated in expr mode.
//! A simple tag whose variable is unknown is left as written, as Argo does for tags it cannot
//! resolve yet; an expression that fails is an error.

use crate::expr::{self, Env, Mode};

/// Replaces every tag in `s`.
pub fn substitute(s: &str, env: &dyn Env) -> Result<String, expr::Error> {
    if !s.contains("{{") {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = find_close(after) else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let inner = &after[..end];
        let trimmed = inner.trim();
        if let Some(e) = trimmed.strip_prefix('=') {
            let v = expr::eval(e, Mode::Expr, env)
                .map_err(|err| expr::Error(format!("in `{{{{{inner}}}}}`: {err}")))?;
            out.push_str(&v.to_text());
        } else {
            match env.var(trimmed) {
                Some(v) => out.push_str(&v.to_text()),
                None => {
                    out.push_str("{{");
                    out.push_str(inner);
                    out.push_str("}}");
                }
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Finds the `}}` that closes a tag, skipping quoted strings inside expressions.
fn find_close(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    let is_expr = s.trim_start().starts_with('=');
    while i < b.len() {
        match (quote, b[i]) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), b'\\') => i += 1,
            (Some(_), _) => {}
            (None, b'\'' | b'"' | b'`') if is_expr => quote = Some(b[i]),
            (None, b'}') if b.get(i + 1) == Some(&b'}') => return Some(i),
            (None, b'\n') if !is_expr => return None,
            _ => {}
        }
        i += 1;
    }
    None
}

/// The simple (non-expression) tags in `s`, for validation.
pub fn tags(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = find_close(after) else { break };
        out.push(after[..end].trim().to_string());
        rest = &after[end + 2..];
    }
    out
}

//! Tokens of both expression languages.

use super::*;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Num(f64, bool),
    Str(String),
    Ident(String),
    Op(&'static str),
}

pub(super) const OPS: &[&str] = &[
    "===", "!==", "==", "!=", "<=", ">=", "=~", "!~", "&&", "||", "??", "?.", "**", "..", "<", ">",
    "+", "-", "*", "/", "%", "!", "(", ")", "[", "]", "{", "}", ",", ":", "?", ".", "#",
];

pub(super) fn lex(src: &str, mode: Mode) -> R<Vec<Tok>> {
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

pub(super) fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-' || c == '.'
}

//! A YAML tree that remembers where each node came from, so every diagnostic can name
//! file:line:column. Built from saphyr-parser's event stream; scalars keep their source text so a
//! string field gets exactly what was written (`value: 010` stays "010", as Argo's AnyString does).

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use crate::diag::Pos;

#[derive(Debug, Clone, PartialEq)]
pub enum Yaml {
    Null,
    /// Source text and whether it was a plain (unquoted) scalar.
    Scalar(String, bool),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Yaml,
}

impl Node {
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Yaml::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
    /// The number of nodes in this tree, itself included.
    pub fn size(&self) -> usize {
        1 + match &self.value {
            Yaml::Seq(items) => items.iter().map(Node::size).sum(),
            Yaml::Map(entries) => entries.iter().map(|(k, v)| k.size() + v.size()).sum(),
            _ => 0,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Yaml::Scalar(s, _) => Some(s),
            _ => None,
        }
    }
}

/// A YAML syntax error with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

fn pos(span: &Span) -> Pos {
    Pos {
        line: span.start.line() as u32,
        col: span.start.col() as u32 + 1,
    }
}

enum Frame {
    Seq(Pos, usize, Vec<Node>),
    Map(Pos, usize, Vec<(Node, Node)>, Option<Node>),
}

/// Parses every document of a YAML (or JSON) stream.
///
/// go-yaml (which Argo uses) accepts a multi-line double-quoted scalar whose closing line is
/// indented no deeper than its key (`args: ["\n  echo hi\n"]`); YAML 1.2 does not. Leading
/// whitespace of such continuation lines is folded away, so indenting them changes nothing:
/// where the parser objects, the line is indented like the one before and parsing retried.
pub fn parse_documents(src: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut text = std::borrow::Cow::Borrowed(src);
    for _ in 0..64 {
        match parse_strict(&text) {
            Err(e)
                if e.message.contains("invalid indentation in quoted scalar")
                    && e.pos.line >= 1 =>
            {
                // The error points at the opening quote: indent the scalar's continuation lines
                // (up to the one with the closing quote) deeper than the line that opens it.
                let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
                let open = e.pos.line as usize - 1;
                let Some(first) = lines.get(open) else {
                    return Err(e);
                };
                let base = first.len() - first.trim_start().len();
                // the error points at the opening quote: `"` or `'`
                let quote = first
                    .chars()
                    .nth(e.pos.col.saturating_sub(1) as usize)
                    .filter(|c| *c == '\'')
                    .unwrap_or('"');
                let mut changed = false;
                for line in lines.iter_mut().skip(open + 1) {
                    let have = line.len() - line.trim_start().len();
                    if have <= base && !line.trim().is_empty() {
                        *line = format!("{}{line}", " ".repeat(base + 2 - have));
                        changed = true;
                    }
                    let closes = line
                        .char_indices()
                        .any(|(k, c)| c == quote && (quote == '\'' || !line[..k].ends_with('\\')));
                    if closes {
                        break;
                    }
                }
                if !changed {
                    return Err(e);
                }
                text = std::borrow::Cow::Owned(lines.join("\n"));
            }
            other => return other,
        }
    }
    parse_strict(&text)
}

fn parse_strict(src: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut parser = Parser::new_from_str(src);
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    // anchored nodes with their sizes; aliases may add at most `MAX_ALIAS_NODES` nodes in all
    // (a few lines of nested aliases otherwise expand to billions: the "billion laughs")
    let mut anchors: HashMap<usize, (Node, usize)> = HashMap::new();
    let mut aliased = 0usize;
    let mut finished: Option<Node> = None;
    let mut depth_guard = 0usize;
    while let Some(ev) = parser.next_event() {
        let (ev, span) = ev.map_err(|e| SyntaxError {
            pos: Pos {
                line: e.marker().line() as u32,
                col: e.marker().col() as u32 + 1,
            },
            message: e.info().to_string(),
        })?;
        let p = pos(&span);
        let complete: Option<(Node, usize)> = match ev {
            Event::StreamStart | Event::StreamEnd | Event::Nothing => None,
            Event::DocumentStart(_) => {
                finished = None;
                None
            }
            Event::DocumentEnd => {
                docs.push(finished.take().unwrap_or(Node {
                    pos: p,
                    value: Yaml::Null,
                }));
                None
            }
            Event::Alias(id) => match anchors.get(&id) {
                Some((n, size)) => {
                    aliased = aliased.saturating_add(*size);
                    if aliased > crate::limits::MAX_ALIAS_NODES {
                        return Err(SyntaxError {
                            pos: p,
                            message: crate::limits::exceeded(
                                "nodes added by aliases",
                                aliased,
                                crate::limits::MAX_ALIAS_NODES,
                            ),
                        });
                    }
                    Some((
                        Node {
                            pos: p,
                            value: n.value.clone(),
                        },
                        0,
                    ))
                }
                None => {
                    return Err(SyntaxError {
                        pos: p,
                        message: "unknown alias".into(),
                    });
                }
            },
            Event::Scalar(text, style, anchor, _tag) => {
                let plain = matches!(style, ScalarStyle::Plain);
                let value = if plain && matches!(text.as_ref(), "" | "~" | "null" | "Null" | "NULL")
                {
                    Yaml::Null
                } else {
                    Yaml::Scalar(text.into_owned(), plain)
                };
                Some((Node { pos: p, value }, anchor))
            }
            Event::SequenceStart(anchor, _) => {
                depth_guard += 1;
                if depth_guard > 256 {
                    return Err(SyntaxError {
                        pos: p,
                        message: "nesting deeper than 256 levels".into(),
                    });
                }
                stack.push(Frame::Seq(p, anchor, Vec::new()));
                None
            }
            Event::MappingStart(anchor, _) => {
                depth_guard += 1;
                if depth_guard > 256 {
                    return Err(SyntaxError {
                        pos: p,
                        message: "nesting deeper than 256 levels".into(),
                    });
                }
                stack.push(Frame::Map(p, anchor, Vec::new(), None));
                None
            }
            Event::SequenceEnd => {
                depth_guard -= 1;
                match stack.pop() {
                    Some(Frame::Seq(p, anchor, items)) => Some((
                        Node {
                            pos: p,
                            value: Yaml::Seq(items),
                        },
                        anchor,
                    )),
                    _ => {
                        return Err(SyntaxError {
                            pos: p,
                            message: "unbalanced sequence".into(),
                        });
                    }
                }
            }
            Event::MappingEnd => {
                depth_guard -= 1;
                match stack.pop() {
                    Some(Frame::Map(p, anchor, entries, _)) => Some((
                        Node {
                            pos: p,
                            value: Yaml::Map(merge_keys(entries)),
                        },
                        anchor,
                    )),
                    _ => {
                        return Err(SyntaxError {
                            pos: p,
                            message: "unbalanced mapping".into(),
                        });
                    }
                }
            }
        };
        if let Some((node, anchor)) = complete {
            if anchor != 0 {
                let size = node.size();
                anchors.insert(anchor, (node.clone(), size));
            }
            match stack.last_mut() {
                None => finished = Some(node),
                Some(Frame::Seq(_, _, items)) => items.push(node),
                Some(Frame::Map(_, _, entries, key)) => match key.take() {
                    None => *key = Some(node),
                    Some(k) => entries.push((k, node)),
                },
            }
        }
    }
    Ok(docs.into_iter().filter(|d| d.value != Yaml::Null).collect())
}

/// Applies YAML merge keys (`<<: *anchor`), which Argo files use for shared template parts.
fn merge_keys(entries: Vec<(Node, Node)>) -> Vec<(Node, Node)> {
    if !entries.iter().any(|(k, _)| k.as_str() == Some("<<")) {
        return entries;
    }
    let mut own = Vec::new();
    let mut merged: Vec<(Node, Node)> = Vec::new();
    for (k, v) in entries {
        if k.as_str() == Some("<<") {
            let sources = match v.value {
                Yaml::Seq(items) => items,
                other => vec![Node {
                    pos: v.pos,
                    value: other,
                }],
            };
            for s in sources {
                if let Yaml::Map(es) = s.value {
                    for (mk, mv) in es {
                        if !merged.iter().any(|(k2, _)| k2.as_str() == mk.as_str()) {
                            merged.push((mk, mv));
                        }
                    }
                }
            }
        } else {
            own.push((k, v));
        }
    }
    for (mk, mv) in merged {
        if !own.iter().any(|(k, _)| k.as_str() == mk.as_str()) {
            own.push((mk, mv));
        }
    }
    own
}

/// Resolves an untyped plain scalar the way go-yaml v2 (YAML 1.1, which Argo uses) does.
pub fn resolve_plain(text: &str) -> serde_json::Value {
    use serde_json::Value;
    match text {
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => {
            return Value::Bool(true);
        }
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => {
            return Value::Bool(false);
        }
        _ => {}
    }
    if let Some(i) = parse_int(text) {
        return Value::from(i);
    }
    let lower = text.to_ascii_lowercase();
    match lower.as_str() {
        ".inf" | "+.inf" | "-.inf" | ".nan" => return Value::String(text.to_string()),
        _ => {}
    }
    if looks_numeric(text)
        && let Ok(f) = text.replace('_', "").parse::<f64>()
        && let Some(n) = serde_json::Number::from_f64(f)
    {
        return Value::Number(n);
    }
    Value::String(text.to_string())
}

fn looks_numeric(t: &str) -> bool {
    let t = t.strip_prefix(['-', '+']).unwrap_or(t);
    t.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && t.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+' | '_'))
        && t.chars().any(|c| c.is_ascii_digit())
}

/// Integers in YAML 1.1 notation: decimal, `0x` hex, `0o` and leading-zero octal.
pub fn parse_int(text: &str) -> Option<i64> {
    let (neg, t) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if t.is_empty() {
        return None;
    }
    let t = t.replace('_', "");
    let v = if let Some(h) = t.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()?
    } else if let Some(o) = t.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()?
    } else if t.len() > 1 && t.starts_with('0') && t.bytes().all(|b| b.is_ascii_digit()) {
        i64::from_str_radix(&t[1..], 8).ok()?
    } else if t.bytes().all(|b| b.is_ascii_digit()) {
        t.parse::<i64>().ok()?
    } else {
        return None;
    };
    Some(if neg { -v } else { v })
}

/// Converts a node with no schema (`withItems` entries, ConfigMap data) to JSON.
pub fn to_json_untyped(node: &Node) -> serde_json::Value {
    use serde_json::Value;
    match &node.value {
        Yaml::Null => Value::Null,
        Yaml::Scalar(s, true) => resolve_plain(s),
        Yaml::Scalar(s, false) => Value::String(s.clone()),
        Yaml::Seq(items) => Value::Array(items.iter().map(to_json_untyped).collect()),
        Yaml::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| key_text(k)),
                        to_json_untyped(v),
                    )
                })
                .collect(),
        ),
    }
}

fn key_text(k: &Node) -> String {
    match &k.value {
        Yaml::Null => "null".into(),
        Yaml::Scalar(s, _) => s.clone(),
        _ => to_json_untyped(k).to_string(),
    }
}

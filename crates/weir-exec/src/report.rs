//! Metrics a task reports (experiment tracking): JSON lines appended to the file `$WEIR_METRICS`
//! names (`{"name":"loss","value":0.31,"step":10}`), or lines it prints,
//! `::weir-metric loss=0.31 step=10`.

use weir_core::run::MetricPoint;

/// At most this many points per task: a runaway loop is cut off with an error, not kept.
pub const LIMIT: usize = 100_000;

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 200
        || !name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':'))
    {
        return Err(format!(
            "metric name `{name}` must be 1 to 200 letters, digits, `_`, `-`, `.`, `/` or `:`"
        ));
    }
    Ok(())
}

fn check_value(v: f64, what: &str) -> Result<f64, String> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{what} is not a finite number"))
    }
}

/// One line of `$WEIR_METRICS`.
pub fn json_line(line: &str) -> Result<MetricPoint, String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let o = v
        .as_object()
        .ok_or("a line must be an object like {\"name\":\"loss\",\"value\":0.31,\"step\":10}")?;
    let name = o
        .get("name")
        .and_then(|n| n.as_str())
        .ok_or("`name` must be a string")?;
    check_name(name)?;
    let value = o
        .get("value")
        .and_then(|n| n.as_f64())
        .ok_or("`value` must be a number")?;
    let step = match o.get("step") {
        None | Some(serde_json::Value::Null) => None,
        Some(s) => Some(s.as_i64().ok_or("`step` must be an integer")?),
    };
    if let Some(k) = o
        .keys()
        .find(|k| !matches!(k.as_str(), "name" | "value" | "step"))
    {
        return Err(format!("unknown field `{k}` (name, value, step)"));
    }
    Ok(MetricPoint {
        name: name.to_string(),
        value: check_value(value, "`value`")?,
        step,
    })
}

/// The rest of a `::weir-metric NAME=VALUE [step=N]` line.
pub fn marker_line(rest: &str) -> Result<MetricPoint, String> {
    let mut parts = rest.split_whitespace();
    let first = parts
        .next()
        .ok_or("expected `::weir-metric NAME=VALUE [step=N]`")?;
    let (name, value) = first
        .split_once('=')
        .ok_or_else(|| format!("`{first}` is not NAME=VALUE"))?;
    check_name(name)?;
    let value: f64 = value
        .parse()
        .map_err(|_| format!("`{value}` is not a number"))?;
    let mut step = None;
    for p in parts {
        match p.split_once('=') {
            Some(("step", n)) => {
                step = Some(
                    n.parse()
                        .map_err(|_| format!("step `{n}` is not an integer"))?,
                )
            }
            _ => return Err(format!("unexpected `{p}` (only step=N may follow)")),
        }
    }
    Ok(MetricPoint {
        name: name.to_string(),
        value: check_value(value, &format!("`{name}`'s value"))?,
        step,
    })
}

/// Reads a `$WEIR_METRICS` file (absent: nothing reported). Errors name the line.
pub fn read_file(path: &std::path::Path, out: &mut Vec<MetricPoint>) -> Result<(), String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("$WEIR_METRICS: {e}")),
    };
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if out.len() >= LIMIT {
            return Err(format!("$WEIR_METRICS: more than {LIMIT} points"));
        }
        out.push(json_line(line).map_err(|e| format!("$WEIR_METRICS line {}: {e}", i + 1))?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_parse_and_malformed_lines_say_what_is_wrong() {
        let p = json_line(r#"{"name":"loss","value":0.31,"step":10}"#).unwrap();
        assert_eq!((p.name.as_str(), p.value, p.step), ("loss", 0.31, Some(10)));
        let p = marker_line("accuracy=0.9 step=3").unwrap();
        assert_eq!(
            (p.name.as_str(), p.value, p.step),
            ("accuracy", 0.9, Some(3))
        );
        assert_eq!(marker_line("f1=1e-3").unwrap().step, None);
        for (bad, why) in [
            (r#"{"name":"loss"}"#, "`value` must be a number"),
            (r#"{"name":"loss","value":"x"}"#, "`value` must be a number"),
            (r#"{"name":"","value":1}"#, "metric name"),
            (
                r#"{"name":"a","value":1,"step":1.5}"#,
                "`step` must be an integer",
            ),
            (
                r#"{"name":"a","value":1,"extra":1}"#,
                "unknown field `extra`",
            ),
            ("loss=0.3", "not JSON"),
        ] {
            let e = json_line(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        for (bad, why) in [
            ("", "expected"),
            ("loss", "is not NAME=VALUE"),
            ("loss=abc", "is not a number"),
            ("loss=NaN", "not a finite number"),
            ("loss=1 epoch=2", "unexpected `epoch=2`"),
            ("bad name!=1", "is not NAME=VALUE"),
        ] {
            let e = marker_line(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn a_file_is_read_line_by_line_and_its_first_bad_line_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m");
        let mut out = Vec::new();
        read_file(&p, &mut out).unwrap();
        assert!(out.is_empty(), "no file: nothing reported");
        std::fs::write(&p, "{\"name\":\"loss\",\"value\":1}\n\n{\"name\":\"loss\",\"value\":0.5,\"step\":2}\nnope\n").unwrap();
        let e = read_file(&p, &mut out).unwrap_err();
        assert!(e.starts_with("$WEIR_METRICS line 4: not JSON"), "{e}");
        assert_eq!(out.len(), 2);
    }
}

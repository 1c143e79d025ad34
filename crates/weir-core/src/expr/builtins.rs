//! Built-in functions: expr's, Argo's additions and the sprig string functions, with the time
//! and encoding helpers they need.

use crate::limits;

use super::*;

/// Built-in functions: expr's, Argo's additions and the sprig string functions the examples use.
pub(super) fn call(name: &str, args: &[Val]) -> R<Val> {
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
            .try_fold(Val::Int(0), |acc, x| arith(BinOp::Add, &acc, x))?,
        "add1" => arith(
            BinOp::Add,
            args.first().unwrap_or(&Val::Int(0)),
            &Val::Int(1),
        )?,
        "div" => arith(
            BinOp::Div,
            args.first().unwrap_or(&Val::Int(0)),
            args.get(1).unwrap_or(&Val::Int(1)),
        )?,
        "mod" => arith(
            BinOp::Rem,
            args.first().unwrap_or(&Val::Int(0)),
            args.get(1).unwrap_or(&Val::Int(1)),
        )?,
        "sub" => arith(
            BinOp::Sub,
            args.first().unwrap_or(&Val::Int(0)),
            args.get(1).unwrap_or(&Val::Int(0)),
        )?,
        "mul" => arith(
            BinOp::Mul,
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
        "b64enc" => Val::Str(crate::base64::encode(
            text(args, 0).as_bytes(),
            crate::base64::STD,
            true,
        )),
        "b64dec" => Val::Str(
            crate::base64::decode(&text(args, 0))
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

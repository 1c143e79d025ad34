//! Variable environments for `{{…}}` and expressions: a node's frame (inputs, earlier steps'
//! outputs), the loop item, and the workflow globals.

use std::collections::BTreeMap;

use crate::expr::{Env, Val};

pub(crate) struct Vars<'a> {
    pub layers: Vec<&'a BTreeMap<String, String>>,
}

impl Env for Vars<'_> {
    fn var(&self, name: &str) -> Option<Val> {
        for l in &self.layers {
            if let Some(v) = l.get(name) {
                return Some(Val::Str(v.clone()));
            }
        }
        None
    }
}

/// Formats epoch milliseconds as RFC 3339 (UTC, seconds precision), as Kubernetes does.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Milliseconds of the duration text `s` (`30`, `1h30m`, `500ms`): `Ok(None)` when it is not a
/// duration (each field says what it does then), `Err` when it is too long
/// ([`crate::limits::MAX_DURATION_MS`]).
pub fn duration_ms(s: &str) -> Result<Option<i64>, String> {
    parse_duration(s)
        .map(|ms| {
            crate::limits::check_duration_ms(ms).map_err(|e| format!("`{}` is {e}", s.trim()))
        })
        .transpose()
}

/// Parses Argo/Go durations: `30`, `30s`, `2m`, `1h30m`, `500ms`. Returns milliseconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(n) = s.parse::<f64>() {
        return Some((n * 1000.0) as i64);
    }
    let mut total = 0f64;
    let mut num = String::new();
    let cs: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            i += 1;
            continue;
        }
        let mut unit = String::new();
        while i < cs.len() && cs[i].is_alphabetic() {
            unit.push(cs[i]);
            i += 1;
        }
        let n: f64 = num.parse().ok()?;
        num.clear();
        total += n * match unit.as_str() {
            "ns" => 1e-6,
            "us" | "µs" => 1e-3,
            "ms" => 1.0,
            "s" => 1000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            "d" => 86_400_000.0,
            _ => return None,
        };
    }
    if !num.is_empty() {
        return None;
    }
    Some(total as i64)
}

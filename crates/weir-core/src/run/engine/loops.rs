//! Loops: the items of `withItems`, `withParam` and `withSequence`, and the aggregated outputs of a loop.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::*;
use crate::limits;
use crate::run::vars::Vars;
use crate::run::*;
use crate::spec::Step;
use crate::subst::substitute;

pub(super) fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        s.to_string()
    } else {
        format!("{}…", &s[..s.floor_char_boundary(n)])
    }
}

/// The label Argo puts in a loop child's name: `(0:value)`; map items as `key:value` pairs in
/// key order, as Go's JSON encoding of a map gives them.
pub(super) fn item_label(item: &Json) -> String {
    match item {
        Json::String(s) => s.clone(),
        Json::Object(m) => {
            let sorted: std::collections::BTreeMap<&String, &Json> = m.iter().collect();
            let parts: Vec<String> = sorted
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{k}:{}",
                        match v {
                            Json::String(s) => s.clone(),
                            other => other.to_string(),
                        }
                    )
                })
                .collect();
            parts.join(",")
        }
        other => other.to_string(),
    }
}
impl Run {
    pub(super) fn loop_items(
        &self,
        step: &Step,
        vars: &BTreeMap<String, String>,
    ) -> Result<Option<Vec<Json>>, String> {
        let env = Vars {
            layers: vec![vars, &self.globals],
        };
        let max = self.limits.max_loop_items;
        let too_many = |n: usize| Err(limits::exceeded("loop items", n, max));
        if let Some(items) = &step.with_items {
            if items.len() > max {
                return too_many(items.len());
            }
            let mut out = Vec::new();
            for it in items {
                out.push(subst_json(it, &env)?);
            }
            return Ok(Some(out));
        }
        if let Some(p) = &step.with_param {
            let text = substitute(p, &env).map_err(|e| format!("withParam: {e}"))?;
            return match serde_json::from_str::<Json>(&text) {
                Ok(Json::Array(a)) if a.len() > max => too_many(a.len()),
                Ok(Json::Array(a)) => Ok(Some(a)),
                _ => Err(format!(
                    "withParam value could not be parsed as a JSON list: {}",
                    truncate(&text, 200)
                )),
            };
        }
        if let Some(seq) = &step.with_sequence {
            let get = |f: &Option<String>| -> Result<Option<i64>, String> {
                match f {
                    None => Ok(None),
                    Some(x) => {
                        let t = substitute(x, &env).map_err(|e| e.to_string())?;
                        t.trim()
                            .parse::<i64>()
                            .map(Some)
                            .map_err(|_| format!("withSequence: `{t}` is not an integer"))
                    }
                }
            };
            let start = get(&seq.start)?.unwrap_or(0);
            let (lo, hi) = match (get(&seq.count)?, get(&seq.end)?) {
                (Some(c), None) if c <= 0 => return Ok(Some(Vec::new())),
                (Some(c), None) => (start, start.saturating_add(c - 1)),
                (None, Some(e)) => (start, e),
                (Some(_), Some(_)) => {
                    return Err("withSequence: count and end are mutually exclusive".into());
                }
                (None, None) => return Err("withSequence: one of count or end is required".into()),
            };
            let n = (hi as i128 - lo as i128).unsigned_abs() + 1;
            if n > max as u128 {
                return too_many(n.min(usize::MAX as u128) as usize);
            }
            let fmt = seq.format.clone();
            let range: Vec<i64> = if lo <= hi {
                (lo..=hi).collect()
            } else {
                (hi..=lo).rev().collect()
            };
            return Ok(Some(
                range
                    .into_iter()
                    .map(|n| {
                        Json::String(match &fmt {
                            Some(f) => go_sprintf(f, n),
                            None => n.to_string(),
                        })
                    })
                    .collect(),
            ));
        }
        Ok(None)
    }

    /// Aggregated outputs of a loop, as Argo does: JSON lists.
    pub(super) fn publish_loop(&self, vars: &mut BTreeMap<String, String>, key: &str, tg: usize) {
        let n = &self.nodes[tg];
        vars.insert(format!("{key}.status"), n.phase.as_str().into());
        vars.insert(format!("{key}.id"), n.id.clone());
        let mut results = Vec::new();
        let mut maps = Vec::new();
        let mut lists: BTreeMap<String, Vec<Json>> = BTreeMap::new();
        for &c in &n.children {
            let c = &self.nodes[c];
            if c.phase != Phase::Succeeded {
                continue;
            }
            if !c.outputs.parameters.is_empty() {
                let mut m = serde_json::Map::new();
                for (k, v) in &c.outputs.parameters {
                    m.insert(k.clone(), Json::String(v.clone()));
                    // per parameter, a value that is JSON is embedded as JSON (Argo's
                    // `aggregatedJsonValueList`); the list of maps keeps strings
                    lists
                        .entry(k.clone())
                        .or_default()
                        .push(serde_json::from_str(v).unwrap_or_else(|_| Json::String(v.clone())));
                }
                maps.push(Json::Object(m));
            }
            if let Some(r) = &c.outputs.result {
                results.push(
                    serde_json::from_str::<Json>(r).unwrap_or_else(|_| Json::String(r.clone())),
                );
            }
        }
        vars.insert(
            format!("{key}.outputs.result"),
            Json::Array(results).to_string(),
        );
        vars.insert(
            format!("{key}.outputs.parameters"),
            Json::Array(maps).to_string(),
        );
        for (k, l) in lists {
            vars.insert(
                format!("{key}.outputs.parameters.{k}"),
                Json::Array(l).to_string(),
            );
        }
    }
}

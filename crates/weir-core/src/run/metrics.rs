//! `metrics.prometheus` of templates and of the workflow: evaluated when the node (or the run)
//! finishes, and handed to the driver as `Action::Metric` to be recorded in the store. A
//! `realtime` gauge is recorded with its final value.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::vars::Vars;
use crate::expr::{self, Mode};
use crate::subst::substitute;

/// One sample of a metric, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    pub help: String,
    /// `gauge`, `counter` or `histogram`.
    pub kind: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// Histogram bucket bounds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<f64>,
    /// The node it was measured on; `None` for a workflow-level metric.
    pub node: Option<String>,
}

/// The samples `metrics` (a `metrics` object) gives with these variables; a metric whose `when`
/// is false, or whose value is not a number, gives none.
pub(crate) fn evaluate(
    metrics: &Json,
    vars: &BTreeMap<String, String>,
    globals: &BTreeMap<String, String>,
    node: Option<&str>,
) -> Vec<Metric> {
    let env = Vars {
        layers: vec![vars, globals],
    };
    let text = |s: &str| substitute(s, &env).unwrap_or_else(|_| s.to_string());
    let mut out = Vec::new();
    for m in metrics
        .get("prometheus")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(when) = m.get("when").and_then(Json::as_str)
            && !expr::eval_bool(&text(when), Mode::Govaluate, &env).unwrap_or(false)
        {
            continue;
        }
        let Some((kind, spec)) = ["gauge", "counter", "histogram"]
            .iter()
            .find_map(|k| m.get(*k).map(|s| (*k, s)))
        else {
            continue;
        };
        let value = spec
            .get("value")
            .and_then(Json::as_str)
            .map(text)
            .and_then(|v| v.trim().parse::<f64>().ok());
        let Some(value) = value else { continue };
        out.push(Metric {
            name: m
                .get("name")
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_string(),
            help: m
                .get("help")
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_string(),
            kind: kind.to_string(),
            labels: m
                .get("labels")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
                .filter_map(|l| {
                    let k = l.get("key")?.as_str()?;
                    Some((k.to_string(), text(l.get("value")?.as_str()?)))
                })
                .collect(),
            value,
            buckets: spec
                .get("buckets")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
                .filter_map(|b| b.as_f64().or_else(|| b.as_str()?.parse().ok()))
                .collect(),
            node: node.map(str::to_string),
        });
    }
    out
}

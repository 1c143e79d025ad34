//! A template's outputs: parameters and artifacts from its children, expressions over them.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::*;
use crate::expr::{self, Mode, Val};
use crate::run::vars::{Vars, rfc3339};
use crate::run::*;
use crate::subst::substitute;

/// Publishes a single node's results under `key`.
pub(super) fn publish(vars: &mut BTreeMap<String, String>, key: &str, n: &Node) {
    vars.insert(format!("{key}.status"), n.phase.as_str().into());
    vars.insert(format!("{key}.id"), n.id.clone());
    vars.insert(format!("{key}.ip"), "127.0.0.1".into());
    vars.insert(format!("{key}.hostNodeName"), "localhost".into());
    if let Some(s) = n.started_at {
        vars.insert(format!("{key}.startedAt"), rfc3339(s));
    }
    if let Some(f) = n.finished_at {
        vars.insert(format!("{key}.finishedAt"), rfc3339(f));
    }
    if let Some(c) = n.outputs.exit_code {
        vars.insert(format!("{key}.exitCode"), c.to_string());
    }
    if let Some(r) = &n.outputs.result {
        vars.insert(format!("{key}.outputs.result"), r.clone());
    }
    let mut m = serde_json::Map::new();
    for (k, v) in &n.outputs.parameters {
        vars.insert(format!("{key}.outputs.parameters.{k}"), v.clone());
        m.insert(k.clone(), Json::String(v.clone()));
    }
    vars.insert(
        format!("{key}.outputs.parameters"),
        Json::Object(m).to_string(),
    );
}

pub(super) struct ArtEnv<'a> {
    pub(super) vars: &'a Vars<'a>,
    pub(super) arts: &'a BTreeMap<String, ArtifactRef>,
}

impl expr::Env for ArtEnv<'_> {
    fn var(&self, name: &str) -> Option<Val> {
        if self.arts.contains_key(name) {
            return Some(Val::Str(name.to_string()));
        }
        self.vars.var(name)
    }
}
impl Run {
    /// Outputs of a steps/DAG template: `valueFrom.parameter`/`expression`, artifacts `from`.
    pub(super) fn template_outputs(&mut self, s: usize) -> Result<(), String> {
        let (tmpl, vars, arts) = match &self.rt[s] {
            Rt::Steps(st) => (
                st.frame.tmpl.clone(),
                st.frame.vars.clone(),
                st.frame.arts.clone(),
            ),
            Rt::Dag(d) => (
                d.frame.tmpl.clone(),
                d.frame.vars.clone(),
                d.frame.arts.clone(),
            ),
            _ => return Ok(()),
        };
        let env = Vars {
            layers: vec![&vars, &self.globals],
        };
        let mut params = Vec::new();
        for p in &tmpl.outputs.parameters {
            let vf = p.value_from.as_ref();
            let v = if let Some(src) = vf.and_then(|v| v.parameter.as_ref()) {
                let v = substitute(src, &env)
                    .map_err(|e| format!("outputs.parameters.{}: {e}", p.name))?;
                if v.contains("{{") {
                    vf.and_then(|v| v.default.clone())
                } else {
                    Some(v)
                }
            } else if let Some(e) = vf.and_then(|v| v.expression.as_ref()) {
                match expr::eval(e, Mode::Expr, &env) {
                    Ok(v) => Some(v.to_text()),
                    Err(err) => match vf.and_then(|v| v.default.clone()) {
                        Some(d) => Some(d),
                        None => return Err(format!("outputs.parameters.{}: {err}", p.name)),
                    },
                }
            } else if let Some(v) = &p.value {
                Some(
                    substitute(v, &env)
                        .map_err(|e| format!("outputs.parameters.{}: {e}", p.name))?,
                )
            } else {
                vf.and_then(|v| v.default.clone())
            };
            if let Some(v) = v {
                params.push((p.name.clone(), v));
            }
        }
        let mut out_arts = Vec::new();
        for a in &tmpl.outputs.artifacts {
            if let Some(from) = &a.from {
                let key = from
                    .trim()
                    .trim_start_matches("{{")
                    .trim_end_matches("}}")
                    .trim()
                    .to_string();
                match arts.get(&key) {
                    Some(r) => {
                        let mut r = r.clone();
                        r.name = a.name.clone();
                        out_arts.push(r);
                    }
                    None if a.optional == Some(true) => {}
                    None => {
                        return Err(format!(
                            "outputs.artifacts.{}: `{from}` is not available",
                            a.name
                        ));
                    }
                }
            }
        }
        if let Some(task) = &tmpl.result_from {
            self.nodes[s].outputs.result =
                vars.get(&format!("tasks.{task}.outputs.result")).cloned();
        }
        self.nodes[s].outputs.parameters = params;
        self.nodes[s].outputs.artifacts = out_arts;
        Ok(())
    }
}

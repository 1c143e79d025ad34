//! Steps templates: groups run in order, each step's `when`, call and outputs.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::Value as Json;

use super::*;
use crate::expr::{self, Mode};
use crate::run::vars::Vars;
use crate::run::*;
use crate::spec::{Arguments, Step};
use crate::subst::substitute;

/// The template a step names, for display on nodes that never ran it.
pub(super) fn step_template_name(step: &Step) -> String {
    step.template
        .clone()
        .or_else(|| step.template_ref.as_ref().map(|r| r.template.clone()))
        .unwrap_or_default()
}
impl Run {
    pub(super) fn start_group(&mut self, s: usize) {
        let Rt::Steps(st) = &self.rt[s] else { return };
        let groups = st.frame.tmpl.steps.clone().unwrap_or_default();
        let g = st.group;
        if g >= groups.len() || self.stopping.is_some() {
            self.steps_done(s);
            return;
        }
        let scope = st.frame.scope.clone();
        let limit = st.frame.tmpl.parallelism.map(|p| p.max(1) as usize);
        let name = format!("{}[{g}]", self.nodes[s].name);
        let call = Call {
            name,
            display: format!("[{g}]"),
            parent: Some(s),
            tmpl: st.frame.tmpl.clone(),
            scope: scope.clone(),
            params: Vec::new(),
            artifacts: Vec::new(),
            link: Link::default(),
            attempt: None,
        };
        let grp = self.new_node(&call, NodeType::StepGroup);
        self.nodes[grp].phase = Phase::Running;
        self.nodes[grp].template.clear();
        self.rt[grp] = Rt::Group(Box::new(GroupRt {
            pending: 0,
            active: 0,
            limit,
            deferred: VecDeque::new(),
            failed: Vec::new(),
        }));
        let steps = groups[g].clone();
        if let Rt::Group(gr) = &mut self.rt[grp] {
            gr.pending = steps.len();
        }
        if steps.is_empty() {
            self.group_done(grp);
            return;
        }
        for step in steps {
            let base = format!("{}.{}", self.nodes[grp].name, step.name);
            self.start_step(s, grp, step, base, "steps");
        }
    }

    /// Starts one step or DAG task (expanding loops) under `parent`, with variables of `owner`.
    pub(super) fn start_step(
        &mut self,
        owner: usize,
        parent: usize,
        step: Step,
        name: String,
        kind: &str,
    ) {
        let (frame_vars, scope) = match &self.rt[owner] {
            Rt::Steps(s) => (s.frame.vars.clone(), s.frame.scope.clone()),
            Rt::Dag(d) => (d.frame.vars.clone(), d.frame.scope.clone()),
            _ => return,
        };
        let display = step.name.clone();
        let key = format!("{kind}.{}", step.name);
        let slot = if matches!(self.rt[parent], Rt::Group(_) | Rt::Dag(_)) {
            Some(parent)
        } else {
            None
        };
        let task_idx = match &self.rt[owner] {
            Rt::Dag(d) => d.index.get(&step.name).copied(),
            _ => None,
        };
        let link = Link {
            key: Some(key.clone()),
            continue_on: step.continue_on.clone().unwrap_or_default(),
            on_exit: None,
            slot_of: slot,
            task: task_idx,
            hooks: Vec::new(),
        };
        let items = match self.loop_items(&step, &frame_vars) {
            Ok(items) => items,
            Err(e) => {
                let call = self.skeleton(&name, &display, parent, owner, link);
                let i = self.new_node(&call, NodeType::Pod);
                self.finish_node(i, Phase::Error, e);
                return;
            }
        };
        let Some(items) = items else {
            let call = self.step_call(
                &step,
                &scope,
                &frame_vars,
                None,
                name.clone(),
                display,
                parent,
                link.clone(),
            );
            match call {
                Ok(Some(call)) => {
                    self.launch(call);
                }
                Ok(None) => {
                    let call = self.skeleton(&name, &step.name, parent, owner, link);
                    let i = self.new_node(&call, NodeType::Skipped);
                    self.nodes[i].template = step_template_name(&step);
                    let when = step.when.clone().unwrap_or_default();
                    self.finish_node(
                        i,
                        Phase::Skipped,
                        format!(
                            "when '{}' evaluated false",
                            self.render_when(&when, &frame_vars)
                        ),
                    );
                }
                Err(e) => {
                    let call = self.skeleton(&name, &step.name, parent, owner, link);
                    let i = self.new_node(&call, NodeType::Pod);
                    self.finish_node(i, Phase::Error, e);
                }
            }
            return;
        };
        // a loop: a TaskGroup node whose children are the expanded items
        let limit = match &self.rt[owner] {
            Rt::Steps(s) => s.frame.tmpl.parallelism,
            Rt::Dag(d) => d.frame.tmpl.parallelism,
            _ => None,
        }
        .map(|p| p.max(1) as usize);
        let call = self.skeleton(&name, &display, parent, owner, link);
        let tg = self.new_node(&call, NodeType::TaskGroup);
        self.nodes[tg].phase = Phase::Running;
        self.nodes[tg].template.clear();
        self.rt[tg] = Rt::Group(Box::new(GroupRt {
            pending: items.len(),
            active: 0,
            limit,
            deferred: VecDeque::new(),
            failed: Vec::new(),
        }));
        if items.is_empty() {
            self.group_done(tg);
            return;
        }
        for (n, item) in items.into_iter().enumerate() {
            let label = item_label(&item);
            let child_name = format!("{name}({n}:{label})");
            let child_display = format!("{display}({n}:{label})");
            let child_link = Link {
                key: None,
                continue_on: step.continue_on.clone().unwrap_or_default(),
                on_exit: None,
                slot_of: Some(tg),
                task: None,
                hooks: Vec::new(),
            };
            match self.step_call(
                &step,
                &scope,
                &frame_vars,
                Some(&item),
                child_name.clone(),
                child_display.clone(),
                tg,
                child_link.clone(),
            ) {
                Ok(Some(call)) => {
                    self.launch(call);
                }
                Ok(None) => {
                    let mut l = child_link;
                    l.slot_of = None;
                    if let Rt::Group(g) = &mut self.rt[tg] {
                        g.active += 1;
                    }
                    let call = self.skeleton(&child_name, &child_display, tg, owner, l);
                    let i = self.new_node(&call, NodeType::Skipped);
                    self.nodes[i].template = step_template_name(&step);
                    self.meta[i].link.slot_of = Some(tg);
                    self.finish_node(i, Phase::Skipped, "when evaluated false".into());
                }
                Err(e) => {
                    if let Rt::Group(g) = &mut self.rt[tg] {
                        g.active += 1;
                    }
                    let call = self.skeleton(&child_name, &child_display, tg, owner, child_link);
                    let i = self.new_node(&call, NodeType::Pod);
                    self.finish_node(i, Phase::Error, e);
                }
            }
        }
    }

    pub(super) fn render_when(&self, when: &str, vars: &BTreeMap<String, String>) -> String {
        substitute(
            when,
            &Vars {
                layers: vec![vars, &self.globals],
            },
        )
        .unwrap_or_else(|_| when.to_string())
    }

    /// What a task's logs and errors must not show: the secrets it was given (`secrets`) and
    /// every value of the run's Secrets, which a task may receive through a parameter, with
    /// their lines and encodings.
    pub(super) fn mask_forms(&self, secrets: &[String]) -> Vec<String> {
        let run = &self.templates.mask;
        // a task's secrets come from the run's Secrets: their forms are made already
        if secrets.iter().all(|s| s.len() < 3 || run.contains(s)) {
            return run.clone();
        }
        crate::mask::forms(secrets.iter().chain(run).map(String::as_str))
    }

    /// Builds the call for a step: `when`, arguments and template resolution. `Ok(None)`: skipped.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn step_call(
        &self,
        step: &Step,
        scope: &TemplateScope,
        frame_vars: &BTreeMap<String, String>,
        item: Option<&Json>,
        name: String,
        display: String,
        parent: usize,
        mut link: Link,
    ) -> Result<Option<Call>, String> {
        let mut item_vars = BTreeMap::new();
        if let Some(it) = item {
            item_vars.insert(
                "item".to_string(),
                match it {
                    Json::String(s) => s.clone(),
                    other => other.to_string(),
                },
            );
            if let Json::Object(m) = it {
                for (k, v) in m {
                    item_vars.insert(
                        format!("item.{k}"),
                        match v {
                            Json::String(s) => s.clone(),
                            other => other.to_string(),
                        },
                    );
                }
            }
        }
        // `{{steps.name}}` / `{{tasks.name}}`: the name of the step being called
        if let Some(kind) = link.key.as_deref().and_then(|k| k.split('.').next()) {
            item_vars.insert(format!("{kind}.name"), step.name.clone());
        }
        let env = Vars {
            layers: vec![&item_vars, frame_vars, &self.globals],
        };
        if let Some(when) = &step.when {
            let text = substitute(when, &env).map_err(|e| format!("when: {e}"))?;
            let ok = expr::eval_bool(&text, Mode::Govaluate, &env)
                .map_err(|e| format!("when '{text}': {e}"))?;
            if !ok {
                return Ok(None);
            }
        }
        let (tmpl, tscope) = self.templates.resolve(step, scope)?;
        let mut params = Vec::new();
        for p in &step.arguments.parameters {
            let raw = match (
                &p.value,
                p.value_from
                    .as_ref()
                    .and_then(|v| v.config_map_key_ref.as_ref()),
            ) {
                (Some(v), _) => v.clone(),
                (None, Some(r)) => self
                    .templates
                    .config_maps
                    .get(&r.name)
                    .and_then(|m| m.get(&r.key))
                    .cloned()
                    .ok_or_else(|| {
                        format!(
                            "arguments.parameters.{}: ConfigMap `{}` key `{}` not found",
                            p.name, r.name, r.key
                        )
                    })?,
                (None, None) => match &p.default {
                    Some(d) => d.clone(),
                    None => continue,
                },
            };
            let v = substitute(&raw, &env)
                .map_err(|e| format!("arguments.parameters.{}: {e}", p.name))?;
            params.push((p.name.clone(), v));
        }
        let frame_arts = self.frame_artifacts(parent);
        let artifacts = self.argument_artifacts(&step.arguments.artifacts, &env, &frame_arts)?;
        let exit = step
            .on_exit
            .clone()
            .map(|t| (Some(t), None, Arguments::default()))
            .or_else(|| {
                step.hooks.get("exit").map(|h| {
                    (
                        h.template.clone(),
                        h.template_ref.clone(),
                        h.arguments.clone(),
                    )
                })
            });
        if let Some((t, tr, args)) = exit {
            let hstep = Step {
                template: t,
                template_ref: tr,
                ..Step::default()
            };
            let (ht, hs) = self.templates.resolve(&hstep, scope)?;
            link.on_exit = Some(Box::new(ExitHook {
                tmpl: ht,
                scope: hs,
                args,
            }));
        }
        for (key, h) in step.hooks.iter().filter(|(k, _)| *k != "exit") {
            link.hooks.push(self.lifecycle(key, h, scope)?);
        }
        Ok(Some(Call {
            name,
            display,
            parent: Some(parent),
            tmpl,
            scope: tscope,
            params,
            artifacts,
            link,
            attempt: None,
        }))
    }

    pub(super) fn group_child_done(&mut self, g: usize, child: usize) {
        let c = &self.nodes[child];
        let cont = &self.meta[child].link.continue_on;
        let tolerated = c.phase.is_ok()
            || (c.phase == Phase::Failed && cont.failed)
            || (c.phase == Phase::Error && cont.error);
        let failure =
            (!tolerated).then(|| format!("child '{}' {}", c.id, c.phase.as_str().to_lowercase()));
        // publish a plain step's outputs into the steps frame
        if self.nodes[g].node_type == NodeType::StepGroup
            && let Some(key) = self.meta[child].link.key.clone()
            && let Some(steps) = self.nodes[g].parent
        {
            let mut vars = std::mem::take(&mut self.frame_mut(steps).vars);
            let mut arts = std::mem::take(&mut self.frame_mut(steps).arts);
            self.publish_node(
                Arc::make_mut(&mut vars),
                Arc::make_mut(&mut arts),
                &key,
                child,
            );
            let f = self.frame_mut(steps);
            f.vars = vars;
            f.arts = arts;
        }
        let Rt::Group(gr) = &mut self.rt[g] else {
            return;
        };
        gr.pending = gr.pending.saturating_sub(1);
        if let Some(f) = failure {
            gr.failed.push(f);
        }
        if gr.pending == 0 {
            self.group_done(g);
        }
    }
    /// The artifacts a call's `arguments.artifacts` give: `from` the frame's published outputs
    /// (or the workflow's), raw, http, s3, git, key-only, or `fromExpression`.
    pub(super) fn argument_artifacts(
        &self,
        args: &[crate::spec::Artifact],
        env: &Vars,
        frame_arts: &BTreeMap<String, ArtifactRef>,
    ) -> Result<Vec<ArtifactRef>, String> {
        let mut artifacts = Vec::new();
        for a in args {
            if let Some(from) = &a.from {
                let key = from
                    .trim()
                    .trim_start_matches("{{")
                    .trim_end_matches("}}")
                    .trim();
                let key = substitute(key, env)
                    .map_err(|e| format!("arguments.artifacts.{}.from: {e}", a.name))?;
                match frame_arts
                    .get(key.as_str())
                    .or_else(|| self.global_arts.get(key.as_str()))
                {
                    Some(r) => {
                        let mut r = r.clone();
                        r.name = a.name.clone();
                        r.sub_path = a.sub_path.clone();
                        artifacts.push(r);
                    }
                    None if a.optional == Some(true) => {}
                    None => {
                        return Err(format!(
                            "arguments.artifacts.{}: `{from}` is not available",
                            a.name
                        ));
                    }
                }
            } else if let Some(raw) = &a.raw {
                artifacts.push(raw_artifact(
                    &a.name,
                    &substitute(&raw.data, env).map_err(|e| e.to_string())?,
                ));
            } else if let Some((url, src)) = http_location(a) {
                self.http_access(&src)
                    .map_err(|e| format!("arguments.artifacts.{}: {e}", a.name))?;
                artifacts.push(ArtifactRef {
                    http: Some(src),
                    ..http_artifact(&a.name, &substitute(&url, env).map_err(|e| e.to_string())?)
                });
            } else if let Some(s3) = a.s3.as_ref().filter(|_| a.key_only().is_none()) {
                let u = self
                    .s3_url(s3, env)
                    .map_err(|e| format!("arguments.artifacts.{}: {e}", a.name))?;
                artifacts.push(http_artifact(&a.name, &u));
            } else if let Some(g) = &a.git {
                let u =
                    git_url(g, env).map_err(|e| format!("arguments.artifacts.{}: {e}", a.name))?;
                artifacts.push(http_artifact(&a.name, &u));
            } else if let Some(key) = a.key_only() {
                artifacts.push(keyed_artifact(
                    &a.name,
                    &substitute(key, env).map_err(|e| e.to_string())?,
                ));
            } else if let Some(fe) = &a.from_expression {
                let v = expr::eval(
                    fe,
                    Mode::Expr,
                    &ArtEnv {
                        vars: env,
                        arts: frame_arts,
                    },
                )
                .map_err(|e| format!("fromExpression: {e}"))?;
                let key = v.to_text();
                match frame_arts.get(key.as_str()) {
                    Some(r) => {
                        let mut r = r.clone();
                        r.name = a.name.clone();
                        artifacts.push(r);
                    }
                    None => {
                        return Err(format!(
                            "arguments.artifacts.{}: fromExpression gave `{key}`, which is not available",
                            a.name
                        ));
                    }
                }
            }
        }
        Ok(artifacts)
    }

    /// Publishes node `i`'s results under `key` (`steps.X` / `tasks.X`).
    pub(super) fn publish_node(
        &self,
        vars: &mut BTreeMap<String, String>,
        arts: &mut BTreeMap<String, ArtifactRef>,
        key: &str,
        i: usize,
    ) {
        let n = &self.nodes[i];
        if n.node_type == NodeType::TaskGroup {
            self.publish_loop(vars, key, i);
        } else {
            publish(vars, key, n);
        }
        for a in &n.outputs.artifacts {
            arts.insert(format!("{key}.outputs.artifacts.{}", a.name), a.clone());
        }
    }

    pub(in crate::run) fn group_done(&mut self, g: usize) {
        if self.nodes[g].phase.is_done() {
            return;
        }
        let Rt::Group(gr) = &self.rt[g] else { return };
        let failed = gr.failed.clone();
        let (phase, msg) = if failed.is_empty() {
            (Phase::Succeeded, String::new())
        } else {
            (Phase::Failed, failed.join(", "))
        };
        let phase = if self.stopping.is_some()
            && phase == Phase::Succeeded
            && self.nodes[g].node_type == NodeType::StepGroup
            && gr.pending > 0
        {
            Phase::Failed
        } else {
            phase
        };
        if self.nodes[g].node_type == NodeType::TaskGroup {
            self.finish_node(g, phase, msg);
            return;
        }
        // a steps group: the steps node moves on
        self.nodes[g].phase = phase;
        self.nodes[g].message = msg.clone();
        self.nodes[g].finished_at = Some(self.now);
        let Some(s) = self.nodes[g].parent else {
            return;
        };
        if phase != Phase::Succeeded || self.stopping.is_some() {
            let m = if msg.is_empty() {
                self.message.clone()
            } else {
                msg
            };
            self.finish_steps(s, Phase::Failed, m);
            return;
        }
        if let Rt::Steps(st) = &mut self.rt[s] {
            st.group += 1;
        }
        self.start_group(s);
    }

    pub(super) fn steps_done(&mut self, s: usize) {
        self.finish_steps(s, Phase::Succeeded, String::new());
    }

    pub(super) fn finish_steps(&mut self, s: usize, phase: Phase, msg: String) {
        if phase == Phase::Succeeded
            && let Err(e) = self.template_outputs(s)
        {
            self.finish_node(s, Phase::Error, e);
            return;
        }
        self.finish_node(s, phase, msg);
    }
}

//! Finishing nodes: completion propagates to the owner, slots are released, the root and the workflow end.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::*;
use crate::run::vars::{Vars, rfc3339};
use crate::run::*;
use crate::spec::Arguments;

impl Run {
    /// Marks a node finished and queues its parent's notification.
    pub(in crate::run) fn finish_node(&mut self, i: usize, phase: Phase, message: String) {
        let n = &mut self.nodes[i];
        if n.phase.is_done() {
            return;
        }
        n.phase = phase;
        if !message.is_empty() || n.message.is_empty() {
            n.message = message;
        }
        n.finished_at = Some(self.now);
        if !self.daemons.is_empty() && self.daemons.iter().any(|&(s, _)| s == Some(i)) {
            self.stop_daemons(Some(i));
        }
        if self.meta[i].sync {
            self.meta[i].sync = false;
            self.actions.push(Action::Release {
                holder: self.nodes[i].id.clone(),
            });
        }
        self.finished_order.push(i);
        // A held pod that finishes (a timeout) stays in `waiting`: `pump` skips finished nodes.
        self.done.push_back(i);
    }

    /// Delivers completions to parents until nothing is left to do.
    pub(in crate::run) fn drain(&mut self) {
        while let Some(i) = self.done.pop_front() {
            self.completed(i);
        }
        self.pump();
        while let Some(i) = self.done.pop_front() {
            self.completed(i);
        }
    }

    /// A finished node's `metrics`, with `status`, `duration`, `exitCode`, its inputs and
    /// outputs as variables.
    pub(super) fn node_metrics(&mut self, i: usize) {
        let Some(t) = self.template_of(i) else { return };
        let Some(m) = &t.metrics else { return };
        let n = &self.nodes[i];
        let mut vars = BTreeMap::new();
        vars.insert("status".to_string(), n.phase.as_str().to_string());
        let secs = match (n.started_at, n.finished_at) {
            (Some(s), Some(f)) => (f - s) as f64 / 1000.0,
            _ => 0.0,
        };
        vars.insert("duration".into(), format!("{secs}"));
        if let Some(c) = n.outputs.exit_code {
            vars.insert("exitCode".into(), c.to_string());
        }
        for (k, v) in &n.inputs {
            vars.insert(format!("inputs.parameters.{k}"), v.clone());
        }
        for (k, v) in &n.outputs.parameters {
            vars.insert(format!("outputs.parameters.{k}"), v.clone());
        }
        if let Some(r) = &n.outputs.result {
            vars.insert("outputs.result".into(), r.clone());
        }
        let samples = crate::run::metrics::evaluate(m, &vars, &self.globals, Some(&n.id));
        self.actions
            .extend(samples.into_iter().map(|s| Action::Metric(Box::new(s))));
    }

    pub(super) fn completed(&mut self, i: usize) {
        if self.node_tmpl[i].metrics.is_some() {
            self.node_metrics(i);
        }
        if self.meta[i].lifecycle {
            // a hook's end changes no step; the run may have been waiting for it to finish
            self.hooks_active = self.hooks_active.saturating_sub(1);
            if self.hooks_active == 0 && std::mem::take(&mut self.finish_waiting) {
                self.workflow_done();
            }
            return;
        }
        if self.nodes[i].phase == Phase::Succeeded {
            self.publish_globals(i);
            if let Some((cache, key)) = self.meta[i].memo.take() {
                self.actions.push(Action::Memoize {
                    cache,
                    key,
                    outputs: self.nodes[i].outputs.clone(),
                });
            }
        }
        // exit handler of a step: run it before the parent hears about the step
        if let Some(hook) = self.meta[i].link.on_exit.clone()
            && !self.meta[i].exit_started
            && self.stopping != Some(StopReason::Terminated)
        {
            self.meta[i].exit_started = true;
            self.start_hook(i, &hook);
            return;
        }
        if let Some(owner) = self.nodes[i].hook_for {
            if Some(i) == self.exit_node {
                self.workflow_done();
                return;
            }
            self.notify(owner);
            return;
        }
        self.notify(i);
    }

    /// Outputs with `globalName` become `workflow.outputs.*`.
    pub(super) fn publish_globals(&mut self, i: usize) {
        let Some(t) = self.template_of(i) else { return };
        for p in &t.outputs.parameters {
            if let Some(g) = &p.global_name
                && let Some((_, v)) = self.nodes[i]
                    .outputs
                    .parameters
                    .iter()
                    .find(|(k, _)| *k == p.name)
            {
                self.globals
                    .insert(format!("workflow.outputs.parameters.{g}"), v.clone());
            }
        }
        for a in &t.outputs.artifacts {
            if let Some(g) = &a.global_name
                && let Some(r) = self.nodes[i]
                    .outputs
                    .artifacts
                    .iter()
                    .find(|x| x.name == a.name)
            {
                self.global_arts
                    .insert(format!("workflow.outputs.artifacts.{g}"), r.clone());
            }
        }
    }

    pub(super) fn notify(&mut self, i: usize) {
        if let Some(slot) = self.meta[i].link.slot_of {
            self.release_slot(slot);
        }
        let Some(p) = self.nodes[i].parent else {
            if Some(i) == self.root {
                self.root_done();
            }
            return;
        };
        match self.rt[p] {
            Rt::Retry(_) => self.retry_child_done(p, i),
            Rt::Group(_) => self.group_child_done(p, i),
            Rt::Dag(_) => self.dag_child_done(p, i),
            _ => {}
        }
    }

    pub(super) fn release_slot(&mut self, slot: usize) {
        let next = match &mut self.rt[slot] {
            Rt::Group(g) => {
                g.active = g.active.saturating_sub(1);
                g.deferred.pop_front()
            }
            Rt::Dag(d) => {
                d.active = d.active.saturating_sub(1);
                d.deferred.pop_front()
            }
            _ => None,
        };
        if let Some(call) = next {
            self.launch(call);
        }
    }

    pub(super) fn root_done(&mut self) {
        let Some(root) = self.root else { return };
        let phase = self.nodes[root].phase;
        self.globals
            .insert("workflow.status".into(), phase.as_str().into());
        // hooks waiting for the workflow's outcome (`workflow.status == "Succeeded"`)
        self.fire_hooks();
        let failures: Vec<Json> = self
            .nodes
            .iter()
            .filter(|n| matches!(n.phase, Phase::Failed | Phase::Error) && n.node_type == NodeType::Pod)
            .map(|n| {
                serde_json::json!({"displayName": n.display_name, "message": n.message, "templateName": n.template,
                    "phase": n.phase.as_str(), "podName": n.id, "finishedAt": n.finished_at.map(rfc3339)})
            })
            .collect();
        self.globals.insert(
            "workflow.failures".into(),
            Json::Array(failures).to_string(),
        );
        self.globals.insert(
            "workflow.duration".into(),
            format!("{:.6}", (self.now - self.started_at) as f64 / 1000.0),
        );
        let exit = self
            .templates
            .spec
            .on_exit
            .clone()
            .map(|t| (t, Arguments::default()))
            .or_else(|| {
                self.templates
                    .spec
                    .hooks
                    .get("exit")
                    .and_then(|h| h.template.clone().map(|t| (t, h.arguments.clone())))
            });
        if let Some((name, args)) = exit
            && self.stopping != Some(StopReason::Terminated)
            && let Some(tmpl) = self.templates.get(&TemplateScope::Workflow, &name)
        {
            let env = Vars {
                layers: vec![&self.globals],
            };
            let (params, problems) = super::hooks::hook_arguments(&args.parameters, &env);
            let was_stopping = self.stopping.take();
            let call = Call {
                name: format!("{}.onExit", self.sub.name),
                display: format!("{}.onExit", self.sub.name),
                parent: None,
                tmpl,
                scope: TemplateScope::Workflow,
                params,
                artifacts: Vec::new(),
                link: Link::default(),
                attempt: None,
            };
            let h = self.execute_or_error(call, problems);
            self.stopping = was_stopping.filter(|r| *r == StopReason::Terminated);
            self.nodes[h].hook_for = Some(root);
            self.exit_node = Some(h);
            return;
        }
        self.workflow_done();
    }

    pub(super) fn workflow_done(&mut self) {
        let Some(root) = self.root else { return };
        if self.hooks_active > 0 {
            self.finish_waiting = true;
            return;
        }
        let mut phase = match self.nodes[root].phase {
            Phase::Succeeded | Phase::Skipped | Phase::Omitted => Phase::Succeeded,
            Phase::Error => Phase::Error,
            _ => Phase::Failed,
        };
        if let Some(e) = self.exit_node
            && !self.nodes[e].phase.is_ok()
            && phase == Phase::Succeeded
        {
            phase = Phase::Failed;
            self.message = format!("exit handler failed: {}", self.nodes[e].message);
        }
        if self.message.is_empty() && phase != Phase::Succeeded {
            self.message = self.nodes[root].message.clone();
        }
        self.phase = phase;
        self.finished_at = Some(self.now);
        self.timers.clear();
        self.stop_daemons(None);
        self.globals
            .insert("workflow.status".into(), phase.as_str().into());
        if let Some(m) = &self.templates.spec.metrics {
            self.globals.insert(
                "workflow.duration".into(),
                format!("{:.6}", (self.now - self.started_at) as f64 / 1000.0),
            );
            let samples = crate::run::metrics::evaluate(m, &BTreeMap::new(), &self.globals, None);
            self.actions
                .extend(samples.into_iter().map(|s| Action::Metric(Box::new(s))));
        }
        self.actions.push(Action::Finished { phase });
    }
}

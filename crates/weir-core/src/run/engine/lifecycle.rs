//! The workflow level: starting a run, applying events, stopping, suspending and resuming, timers.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value as Json;

use super::*;
use crate::expr::{self, Mode};
use crate::run::sync;
use crate::run::vars::{Vars, rfc3339};
use crate::run::*;
use crate::subst::substitute;

impl Run {
    pub(in crate::run) fn begin(&mut self) {
        let lib = self.templates.clone();
        let spec = &lib.spec;
        let sub = self.sub.clone();
        let g = &mut self.globals;
        g.insert("workflow.name".into(), sub.name.clone());
        g.insert("workflow.namespace".into(), sub.namespace.clone());
        g.insert("workflow.uid".into(), sub.uid.clone());
        g.insert("workflow.serviceAccountName".into(), "default".into());
        g.insert("workflow.creationTimestamp".into(), rfc3339(sub.created_at));
        g.insert(
            "workflow.creationTimestamp.RFC3339".into(),
            rfc3339(sub.created_at),
        );
        // `{{workflow.creationTimestamp.<strftime letter>}}`, as Argo offers them
        for (letter, layout) in [
            ("Y", "2006"),
            ("y", "06"),
            ("m", "01"),
            ("d", "02"),
            ("e", "_2"),
            ("H", "15"),
            ("I", "03"),
            ("M", "04"),
            ("S", "05"),
            ("p", "PM"),
            ("b", "Jan"),
            ("B", "January"),
            ("a", "Mon"),
            ("A", "Monday"),
        ] {
            g.insert(
                format!("workflow.creationTimestamp.{letter}"),
                expr::go_time_format(layout, sub.created_at / 1000),
            );
        }
        g.insert(
            "workflow.creationTimestamp.s".into(),
            (sub.created_at / 1000).to_string(),
        );
        g.insert("workflow.status".into(), "Running".into());
        g.insert(
            "workflow.mainEntrypoint".into(),
            spec.entrypoint.clone().unwrap_or_default(),
        );
        g.insert(
            "workflow.priority".into(),
            spec.priority.unwrap_or(0).to_string(),
        );

        // a CronWorkflow's run carries the time it was scheduled for
        if let Some(t) = sub
            .workflow
            .metadata
            .annotations
            .get("workflows.argoproj.io/scheduled-time")
        {
            g.insert("workflow.scheduledTime".into(), t.clone());
        }
        self.labels = sub.workflow.metadata.labels.clone();
        self.annotations = sub.workflow.metadata.annotations.clone();
        self.publish_metadata();
        let mut all = serde_json::Map::new();
        for p in &spec.arguments.parameters {
            let over = sub
                .parameters
                .iter()
                .rev()
                .find(|(k, _)| *k == p.name)
                .map(|(_, v)| v.clone());
            let value = over.or_else(|| self.param_from(p)).unwrap_or_default();
            let value = substitute(
                &value,
                &Vars {
                    layers: vec![&self.globals],
                },
            )
            .unwrap_or(value);
            self.globals
                .insert(format!("workflow.parameters.{}", p.name), value.clone());
            all.insert(p.name.clone(), Json::String(value));
        }
        let all = Json::Object(all).to_string();
        self.globals
            .insert("workflow.parameters.json".into(), all.clone());
        self.globals.insert("workflow.parameters".into(), all);
        if let Some(secs) = spec.active_deadline_seconds {
            self.arm(
                Timer::Deadline,
                self.now.saturating_add(secs.saturating_mul(1000)),
            );
        }
        if spec.suspend == Some(true) {
            self.suspended = true;
        }
        let entry = spec.entrypoint.clone().unwrap_or_default();
        let Some(tmpl) = self.templates.get(&TemplateScope::Workflow, &entry) else {
            self.phase = Phase::Error;
            self.message = format!("entrypoint template `{entry}` not found");
            self.finished_at = Some(self.now);
            self.actions.push(Action::Finished {
                phase: Phase::Error,
            });
            return;
        };
        // the workflow's artifact arguments, wherever they are (raw, http, s3, git, a key)
        let env = Vars {
            layers: vec![&self.globals],
        };
        let artifacts = match self.argument_artifacts(
            &spec.arguments.artifacts,
            &env,
            &std::collections::BTreeMap::new(),
        ) {
            Ok(a) => a,
            Err(e) => {
                self.message = format!("spec.{e}");
                self.end_without_root(Phase::Error);
                return;
            }
        };
        // the entrypoint's inputs come from the workflow's arguments, by name
        let params = spec
            .arguments
            .parameters
            .iter()
            .filter_map(|p| {
                self.globals
                    .get(&format!("workflow.parameters.{}", p.name))
                    .map(|v| (p.name.clone(), v.clone()))
            })
            .collect();
        let call = Call {
            name: sub.name.clone(),
            display: sub.name.clone(),
            parent: None,
            tmpl,
            scope: TemplateScope::Workflow,
            params,
            artifacts,
            link: Link::default(),
            attempt: None,
        };
        if let Err(e) = self.workflow_metadata() {
            self.message = format!("spec.workflowMetadata: {e}");
            self.end_without_root(Phase::Error);
            return;
        }
        for (key, h) in spec.hooks.iter().filter(|(k, _)| *k != "exit") {
            match self.lifecycle(key, h, &TemplateScope::Workflow) {
                Ok(l) => self.pending_hooks.push((None, l)),
                Err(e) => {
                    self.message = format!("spec.hooks.{key}: {e}");
                    self.end_without_root(Phase::Error);
                    return;
                }
            }
        }
        if let Some(sync) = &spec.synchronization {
            let env = Vars {
                layers: vec![&self.globals],
            };
            match sync::locks(sync, &sub.namespace, &env, &self.templates.config_maps) {
                Err(e) => {
                    self.message = e;
                    self.end_without_root(Phase::Error);
                    return;
                }
                Ok(locks) if !locks.is_empty() => {
                    self.message = sync::waiting_message(&locks);
                    let l = LockRt {
                        call,
                        locks,
                        priority: spec.priority.unwrap_or(0),
                    };
                    self.actions.push(l.acquire(&sub.name));
                    self.wf_lock = Some(Box::new(l));
                    return;
                }
                Ok(_) => {}
            }
        }
        let root = self.launch(call);
        self.root = Some(root);
        self.drain();
        self.fire_hooks();
        self.drain();
    }

    /// The run's labels and annotations: the submission's, then `workflowMetadata.labels` and
    /// `annotations` (with `{{…}}` resolved), then `labelsFrom` (each an expression). They
    /// become `workflow.labels.*` / `workflow.annotations.*` too.
    /// `workflow.labels.*` and `workflow.annotations.*`, each also as one JSON object (`.json`,
    /// and the older bare name), from the run's labels and annotations.
    pub(super) fn publish_metadata(&mut self) {
        for (kind, map) in [("labels", &self.labels), ("annotations", &self.annotations)] {
            for (k, v) in map {
                self.globals
                    .insert(format!("workflow.{kind}.{k}"), v.clone());
            }
            let all = serde_json::to_string(map).unwrap_or_default();
            self.globals
                .insert(format!("workflow.{kind}.json"), all.clone());
            self.globals.insert(format!("workflow.{kind}"), all);
        }
    }

    pub(super) fn workflow_metadata(&mut self) -> Result<(), String> {
        let Some(wm) = self.templates.spec.workflow_metadata.clone() else {
            return Ok(());
        };
        let env = Vars {
            layers: vec![&self.globals],
        };
        let mut labels = Vec::new();
        let mut annotations = Vec::new();
        for (field, out) in [("labels", &mut labels), ("annotations", &mut annotations)] {
            for (k, v) in wm
                .get(field)
                .and_then(Json::as_object)
                .into_iter()
                .flatten()
            {
                let v = v.as_str().unwrap_or_default();
                let v = substitute(v, &env).map_err(|e| format!("{field}.{k}: {e}"))?;
                out.push((k.clone(), v));
            }
        }
        for (k, v) in wm
            .get("labelsFrom")
            .and_then(Json::as_object)
            .into_iter()
            .flatten()
        {
            let e = v
                .get("expression")
                .and_then(Json::as_str)
                .unwrap_or_default();
            let val = expr::eval(e, Mode::Expr, &env)
                .map_err(|err| format!("labelsFrom.{k}: `{e}`: {}", err.0))?;
            labels.push((k.clone(), val.to_text()));
        }
        self.labels.extend(labels);
        self.annotations.extend(annotations);
        self.publish_metadata();
        Ok(())
    }

    /// A parameter's value from `value`, `default` or `valueFrom.configMapKeyRef`.
    pub(super) fn param_from(&self, p: &crate::spec::Parameter) -> Option<String> {
        if let Some(v) = &p.value {
            return Some(v.clone());
        }
        if let Some(r) = p
            .value_from
            .as_ref()
            .and_then(|v| v.config_map_key_ref.as_ref())
            && let Some(v) = self
                .templates
                .config_maps
                .get(&r.name)
                .and_then(|m| m.get(&r.key))
        {
            return Some(v.clone());
        }
        p.default
            .clone()
            .or_else(|| p.value_from.as_ref().and_then(|v| v.default.clone()))
    }

    pub(in crate::run) fn apply(&mut self, event: Event) {
        if self.phase.is_done() && !matches!(event, Event::Retry) {
            return;
        }
        match event {
            Event::Started { node, pid } => {
                if let Some(&i) = self.by_id.get(&id_key(&node))
                    && self.nodes[i].phase == Phase::Pending
                {
                    self.nodes[i].phase = Phase::Running;
                    self.nodes[i].pid = Some(pid);
                    self.nodes[i].started_at = Some(self.now);
                }
            }
            Event::Finished { node, result } => {
                if let Some(&i) = self.by_id.get(&id_key(&node)) {
                    self.prefetch(i);
                    self.pod_finished(i, result);
                }
            }
            Event::Lost { node } => {
                if let Some(&i) = self.by_id.get(&id_key(&node)) {
                    self.lost(i);
                }
            }
            Event::TimerFired { timer } => {
                if self.timers.remove(&timer).is_some() {
                    self.timer_fired(timer);
                }
            }
            Event::Stop => self.stop(StopReason::Stopped),
            Event::Terminate => self.stop(StopReason::Terminated),
            Event::Suspend => self.suspended = true,
            Event::Resume {
                parameters,
                selector,
            } => self.resume(parameters, selector.as_deref()),
            Event::Retry => self.retry_from_failure(),
            Event::Acquired { holder, error } => self.acquired(&holder, error),
            Event::Fetched { node, results } => {
                if let Some(&i) = self.by_id.get(&id_key(&node))
                    && std::mem::take(&mut self.meta[i].fetch_wait)
                {
                    self.fetched(i, results);
                }
            }
            Event::Ready { node } => {
                if let Some(&i) = self.by_id.get(&id_key(&node)) {
                    self.daemon_ready(i);
                }
            }
            Event::Cached {
                node,
                outputs,
                from,
            } => {
                let Some(&i) = self.by_id.get(&id_key(&node)) else {
                    return;
                };
                if std::mem::take(&mut self.meta[i].cache_wait) {
                    self.step_cache_answer(i, outputs, from);
                    return;
                }
                let Rt::Memo(m) = std::mem::replace(&mut self.rt[i], Rt::None) else {
                    return;
                };
                match outputs {
                    Some(o) => {
                        self.meta[i].memo = None;
                        self.nodes[i].outputs = o;
                        self.finish_node(
                            i,
                            Phase::Succeeded,
                            format!("cached: memoized under key `{}` in `{}`", m.key, m.cache),
                        );
                    }
                    None => {
                        self.slot = Some(i);
                        self.execute(m.call);
                        self.slot = None;
                    }
                }
            }
        }
    }

    /// Locks granted (or refused) to a waiting node or to the workflow.
    pub(super) fn acquired(&mut self, holder: &str, error: Option<String>) {
        if holder == self.sub.name {
            let Some(l) = self.wf_lock.take() else { return };
            match error {
                Some(e) => {
                    self.message = e;
                    self.end_without_root(Phase::Error);
                }
                None => {
                    self.message.clear();
                    let root = self.launch(l.call);
                    self.root = Some(root);
                }
            }
            return;
        }
        let Some(&i) = self.by_id.get(&id_key(holder)) else {
            return;
        };
        if !matches!(self.rt[i], Rt::Lock(_)) || self.nodes[i].phase.is_done() {
            return;
        }
        let Rt::Lock(l) = std::mem::replace(&mut self.rt[i], Rt::None) else {
            return;
        };
        match error {
            Some(e) => self.finish_node(i, Phase::Error, e),
            None => {
                self.nodes[i].message.clear();
                self.slot = Some(i);
                self.lock_granted = true;
                self.execute(l.call);
                self.slot = None;
                self.lock_granted = false;
            }
        }
    }

    /// A daemon is ready: the scope goes on while it runs, and stops it when the scope ends.
    pub(super) fn daemon_ready(&mut self, i: usize) {
        if self.nodes[i].phase.is_done() || !matches!(self.rt[i], Rt::Pod { .. }) {
            return;
        }
        // the nearest steps or DAG template above it is the scope that owns it
        let mut scope = self.nodes[i].parent;
        while let Some(p) = scope
            && !matches!(self.nodes[p].node_type, NodeType::Steps | NodeType::DAG)
        {
            scope = self.nodes[p].parent;
        }
        self.release_pod(i);
        self.daemons.push((scope, i));
        let owner = scope
            .map(|p| format!("`{}`", self.nodes[p].display_name))
            .unwrap_or_else(|| "the workflow".into());
        self.finish_node(
            i,
            Phase::Succeeded,
            format!("daemoned: runs until {owner} ends"),
        );
        self.pump();
    }

    /// Stops the daemons of a scope that ended (`None`: the run).
    pub(super) fn stop_daemons(&mut self, scope: Option<usize>) {
        let (ending, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.daemons)
            .into_iter()
            .partition(|&(s, _)| s == scope || scope.is_none());
        self.daemons = rest;
        for (_, d) in ending {
            self.actions.push(Action::Stop {
                node: self.nodes[d].id.clone(),
                reason: StopReason::Stopped,
            });
        }
    }

    /// Ends a run whose entrypoint never started (its workflow-level locks were refused, or it
    /// was stopped while waiting for them).
    pub(super) fn end_without_root(&mut self, phase: Phase) {
        self.phase = phase;
        self.finished_at = Some(self.now);
        self.timers.clear();
        self.globals
            .insert("workflow.status".into(), phase.as_str().into());
        self.actions.push(Action::Release {
            holder: self.sub.name.clone(),
        });
        self.actions.push(Action::Finished { phase });
    }

    /// Asks the CPU for the node's records at once: on a large run each is a cache miss, and
    /// the step would otherwise wait for them one after another.
    pub(super) fn prefetch(&self, i: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            fn lines<T>(x: &T) {
                let p = x as *const T as *const i8;
                let mut off = 0;
                while off < std::mem::size_of::<T>() {
                    // SAFETY: a prefetch is a hint; the address lies inside `x`.
                    unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off)) };
                    off += 64;
                }
            }
            lines(&self.nodes[i]);
            lines(&self.meta[i]);
            lines(&self.rt[i]);
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = i;
    }

    pub(super) fn stop(&mut self, reason: StopReason) {
        if self.stopping.is_some() {
            return;
        }
        self.stopping = Some(reason.clone());
        let msg = match reason {
            StopReason::Terminated => "Stopped with strategy 'Terminate'",
            StopReason::Deadline => "Step exceeded its deadline",
            _ => "Stopped with strategy 'Stop'",
        };
        if self.message.is_empty() {
            self.message = msg.to_string();
        }
        self.suspended = false;
        if self.wf_lock.take().is_some() {
            self.message = format!("{msg} while waiting for its locks");
            self.end_without_root(Phase::Failed);
            return;
        }
        // Held pods never start, nor do nodes waiting for locks.
        while let Some(i) = self.waiting.pop_front() {
            self.finish_node(i, Phase::Failed, msg.to_string());
        }
        let locked: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| matches!(self.rt[i], Rt::Lock(_)) && !self.nodes[i].phase.is_done())
            .collect();
        for i in locked {
            self.rt[i] = Rt::None;
            self.finish_node(i, Phase::Failed, msg.to_string());
        }
        // Stop spares exit handlers already running; terminate does not.
        let spare = reason != StopReason::Terminated;
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                !self.nodes[i].phase.is_done()
                    && matches!(self.nodes[i].node_type, NodeType::Pod | NodeType::Suspend)
                    && !(spare && self.in_exit_handler(i))
            })
            .collect();
        for i in live {
            self.release_pod(i);
            if self.nodes[i].node_type == NodeType::Pod {
                self.actions.push(Action::Stop {
                    node: self.nodes[i].id.clone(),
                    reason: reason.clone(),
                });
            }
            self.finish_node(i, Phase::Failed, msg.to_string());
        }
        // Deferred work in groups is dropped.
        for rt in &mut self.rt {
            match rt {
                Rt::Group(g) => {
                    g.pending -= g.deferred.len();
                    g.deferred.clear();
                }
                Rt::Dag(d) => {
                    d.deferred.clear();
                    d.halted = true;
                }
                _ => {}
            }
        }
        let pending_groups: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                matches!(self.rt[i], Rt::Group(ref g) if g.pending == 0)
                    && !self.nodes[i].phase.is_done()
            })
            .collect();
        for i in pending_groups {
            self.group_done(i);
        }
        let idle_dags: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                matches!(self.rt[i], Rt::Dag(ref d) if d.active == 0)
                    && !self.nodes[i].phase.is_done()
            })
            .collect();
        for i in idle_dags {
            self.dag_maybe_done(i);
        }
        let retries: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| matches!(self.rt[i], Rt::Retry(_)) && !self.nodes[i].phase.is_done())
            .filter(|&i| {
                self.nodes[i]
                    .children
                    .iter()
                    .all(|&c| self.nodes[c].phase.is_done())
            })
            .collect();
        for i in retries {
            self.finish_node(i, Phase::Failed, msg.to_string());
        }
    }

    /// Whether node `i` is (inside) an exit handler.
    pub(super) fn in_exit_handler(&self, i: usize) -> bool {
        let mut p = Some(i);
        while let Some(x) = p {
            if self.nodes[x].hook_for.is_some() || Some(x) == self.exit_node {
                return true;
            }
            p = self.nodes[x].parent;
        }
        false
    }

    pub(super) fn resume(&mut self, parameters: Vec<(String, String)>, selector: Option<&str>) {
        if selector.is_none() {
            self.suspended = false;
        }
        let suspended: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i].node_type == NodeType::Suspend
                    && self.nodes[i].phase == Phase::Running
                    && selector.is_none_or(|s| self.node_matches(i, s))
            })
            .collect();
        for i in suspended {
            self.timers.remove(&Timer::Resume(self.nodes[i].id.clone()));
            self.suspend_done(i, &parameters);
        }
        self.pump();
    }

    /// Whether node `i` matches an Argo node field selector: comma-separated `FIELD=VALUE` or
    /// `FIELD!=VALUE`, FIELD one of `displayName`, `name`, `templateName`, `phase`, `id`,
    /// `inputs.parameters.NAME.value`.
    pub fn node_matches(&self, i: usize, selector: &str) -> bool {
        let n = &self.nodes[i];
        selector
            .split(',')
            .filter(|t| !t.trim().is_empty())
            .all(|term| {
                let (field, want, equal) = match term.split_once("!=") {
                    Some((f, v)) => (f, v, false),
                    None => match term.split_once('=') {
                        Some((f, v)) => (f, v.trim_start_matches('='), true),
                        None => return false,
                    },
                };
                let field = field.trim();
                let got = match field {
                    "displayName" => Some(n.display_name.clone()),
                    "name" => Some(n.name.clone()),
                    "templateName" => Some(n.template.clone()),
                    "phase" => Some(n.phase.as_str().to_string()),
                    "id" => Some(n.id.clone()),
                    f => f
                        .strip_prefix("inputs.parameters.")
                        .and_then(|r| r.strip_suffix(".value"))
                        .and_then(|p| n.inputs.iter().find(|(k, _)| k == p))
                        .map(|(_, v)| v.clone()),
                };
                (got.as_deref() == Some(want.trim())) == equal
            })
    }

    /// Supplied values for the outputs of waiting suspend nodes (those `selector` picks) that
    /// their `enum` refuses.
    pub fn supplied_problems(
        &self,
        supplied: &[(String, String)],
        selector: Option<&str>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.node_type != NodeType::Suspend
                || n.phase != Phase::Running
                || selector.is_some_and(|s| !self.node_matches(i, s))
            {
                continue;
            }
            let Some(t) = self.template_of(i) else {
                continue;
            };
            for p in &t.outputs.parameters {
                if let Some((_, v)) = supplied.iter().rev().find(|(k, _)| *k == p.name)
                    && !p.enum_.is_empty()
                    && !p.enum_.contains(v)
                {
                    out.push(format!(
                        "-p {}: `{v}` is not one of {} (node `{}`)",
                        p.name,
                        p.enum_.join(", "),
                        n.display_name
                    ));
                }
            }
        }
        out
    }

    pub(super) fn suspend_done(&mut self, i: usize, supplied: &[(String, String)]) {
        let tmpl = self.template_of(i);
        let mut params = Vec::new();
        let mut missing = None;
        if let Some(t) = tmpl {
            for p in &t.outputs.parameters {
                let v = supplied
                    .iter()
                    .rev()
                    .find(|(k, _)| *k == p.name)
                    .map(|(_, v)| v.clone())
                    .or_else(|| p.value_from.as_ref().and_then(|vf| vf.default.clone()))
                    .or_else(|| p.value.clone());
                match v {
                    // a value outside the enum (a control request not checked by the CLI)
                    Some(v) if !p.enum_.is_empty() && !p.enum_.contains(&v) => {
                        missing = Some(format!(
                            "{}` (`{v}` is not one of {})",
                            p.name,
                            p.enum_.join(", ")
                        ));
                    }
                    Some(v) => params.push((p.name.clone(), v)),
                    None => missing = Some(format!("{}`", p.name)),
                }
            }
        }
        self.nodes[i].outputs.parameters = params;
        match missing {
            Some(m) => self.finish_node(
                i,
                Phase::Failed,
                format!("output parameter `{m} was not supplied on resume"),
            ),
            None => self.finish_node(i, Phase::Succeeded, String::new()),
        }
    }

    pub(super) fn template_of(&self, i: usize) -> Option<Arc<Template>> {
        self.node_tmpl.get(i).cloned()
    }

    pub(super) fn timer_fired(&mut self, timer: Timer) {
        match timer {
            Timer::Deadline => {
                self.message = "Max duration limit exceeded".into();
                self.stop(StopReason::Deadline);
            }
            Timer::PodTimeout(id) => {
                if let Some(&i) = self.by_id.get(&id_key(&id))
                    && !self.nodes[i].phase.is_done()
                {
                    self.actions.push(Action::Stop {
                        node: id,
                        reason: StopReason::Timeout,
                    });
                    self.release_pod(i);
                    self.finish_node(
                        i,
                        Phase::Failed,
                        "Pod was active on the node longer than the specified deadline".into(),
                    );
                }
            }
            Timer::Backoff(id) => {
                if let Some(&i) = self.by_id.get(&id_key(&id)) {
                    self.next_attempt(i);
                }
            }
            Timer::Resume(id) => {
                if let Some(&i) = self.by_id.get(&id_key(&id))
                    && self.nodes[i].phase == Phase::Running
                {
                    self.suspend_done(i, &[]);
                }
            }
        }
    }

    pub(super) fn arm(&mut self, timer: Timer, at: Millis) {
        self.timers.insert(timer.clone(), at);
        self.actions.push(Action::Arm { timer, at });
    }

    /// Retry from failure: a fresh state in which every succeeded pod of this attempt is reused.
    pub(super) fn retry_from_failure(&mut self) {
        if !matches!(self.phase, Phase::Failed | Phase::Error) {
            return;
        }
        let reuse: HashMap<String, Node> = self
            .nodes
            .iter()
            .filter(|n| {
                n.phase == Phase::Succeeded
                    && matches!(n.node_type, NodeType::Pod | NodeType::Suspend)
            })
            .map(|n| (n.name.clone(), n.clone()))
            .collect();
        let mut fresh = Run::empty(self.sub.clone(), self.templates.clone(), reuse);
        fresh.now = self.now;
        fresh.started_at = self.now;
        fresh.begin();
        let actions = std::mem::take(&mut fresh.actions);
        *self = fresh;
        self.actions = actions;
    }
}

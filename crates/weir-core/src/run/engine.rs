//! How templates run: node creation, steps groups, DAG readiness, loops, retries, exit handlers,
//! outputs. Each function touches only the scope an event concerns.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::Value as Json;

use super::sync;
use super::vars::{Vars, parse_duration, rfc3339};
use super::*;
use crate::expr::{self, Depends, Mode, Val};
use crate::limits;
use crate::spec::{Arguments, ContinueOn, Kind, Step, WorkflowSpec};
use crate::subst::substitute;

/// Where a template is looked up: the workflow's own templates or a (Cluster)WorkflowTemplate's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TemplateScope {
    Workflow,
    Namespaced(String),
    Cluster(String),
}

/// The templates a run can reach, with `templateDefaults` applied.
pub(crate) struct Library {
    pub spec: WorkflowSpec,
    templates: HashMap<(TemplateScope, String), Arc<Template>>,
    pub config_maps: HashMap<String, BTreeMap<String, String>>,
    pub secrets: HashMap<String, BTreeMap<String, String>>,
    /// What to mask wherever the run's output is shown: every Secret value with its lines and
    /// encodings (`mask::forms`), made once per run, not once per task.
    pub mask: Vec<String>,
}

impl Library {
    pub fn build(sub: &Submission) -> Result<Library, Vec<Problem>> {
        let mut spec = sub.workflow.spec.clone();
        if let Some(r) = &spec.workflow_template_ref {
            let kind = if r.cluster_scope {
                Kind::ClusterWorkflowTemplate
            } else {
                Kind::WorkflowTemplate
            };
            let Some(wft) = sub
                .library
                .iter()
                .find(|d| d.kind == kind && d.metadata.name.as_deref() == Some(&r.name))
            else {
                return Err(vec![Problem {
                    path: "spec.workflowTemplateRef.name".into(),
                    message: format!(
                        "{} `{}` not found (load it with --with FILE)",
                        kind.as_str(),
                        r.name
                    ),
                }]);
            };
            spec = merge_spec(&wft.spec, &spec);
        }
        let mut templates = HashMap::new();
        let defaults = spec.template_defaults.clone();
        let add = |templates: &mut HashMap<_, _>,
                   scope: TemplateScope,
                   list: &[Template],
                   defaults: Option<&Template>| {
            for t in list {
                let t = match defaults {
                    Some(d) => t.with_defaults(d),
                    None => t.clone(),
                };
                // a containerSet runs as a DAG of its containers
                for t in super::container_set::expand(&t) {
                    templates.insert((scope.clone(), t.name.clone()), Arc::new(t));
                }
            }
        };
        add(
            &mut templates,
            TemplateScope::Workflow,
            &spec.templates,
            defaults.as_deref(),
        );
        for d in &sub.library {
            let name = d.metadata.name.clone().unwrap_or_default();
            let scope = match d.kind {
                Kind::WorkflowTemplate => TemplateScope::Namespaced(name),
                Kind::ClusterWorkflowTemplate => TemplateScope::Cluster(name),
                _ => continue,
            };
            add(
                &mut templates,
                scope,
                &d.spec.templates,
                defaults.as_deref().or(d.spec.template_defaults.as_deref()),
            );
        }
        let maps = |v: &[DataMap]| v.iter().map(|m| (m.name.clone(), m.data.clone())).collect();
        Ok(Library {
            spec,
            templates,
            config_maps: maps(&sub.config_maps),
            secrets: maps(&sub.secrets),
            mask: crate::mask::forms(
                sub.secrets
                    .iter()
                    .flat_map(|s| s.data.values().map(String::as_str)),
            ),
        })
    }

    pub fn get(&self, scope: &TemplateScope, name: &str) -> Option<Arc<Template>> {
        self.templates
            .get(&(scope.clone(), name.to_string()))
            .cloned()
    }

    /// Resolves what a step runs: `template`, `templateRef` or `inline`.
    pub fn resolve(
        &self,
        step: &Step,
        scope: &TemplateScope,
    ) -> Result<(Arc<Template>, TemplateScope), String> {
        if let Some(t) = &step.inline {
            return Ok((Arc::new((**t).clone()), scope.clone()));
        }
        if let Some(r) = &step.template_ref {
            let s = if r.cluster_scope == Some(true) {
                TemplateScope::Cluster(r.name.clone())
            } else {
                TemplateScope::Namespaced(r.name.clone())
            };
            return match self.get(&s, &r.template) {
                Some(t) => Ok((t, s)),
                None => Err(format!(
                    "template `{}` not found in {} `{}`",
                    r.template,
                    if r.cluster_scope == Some(true) {
                        "ClusterWorkflowTemplate"
                    } else {
                        "WorkflowTemplate"
                    },
                    r.name
                )),
            };
        }
        let name = step.template.as_deref().unwrap_or_default();
        match self.get(scope, name) {
            Some(t) => Ok((t, scope.clone())),
            None => Err(format!("template `{name}` not found")),
        }
    }
}

/// A Workflow that references a WorkflowTemplate: the template's spec, overridden by what the
/// workflow sets itself (arguments merge by name).
fn merge_spec(base: &WorkflowSpec, over: &WorkflowSpec) -> WorkflowSpec {
    let mut s = base.clone();
    s.workflow_template_ref = None;
    if over.entrypoint.is_some() {
        s.entrypoint = over.entrypoint.clone();
    }
    for p in &over.arguments.parameters {
        match s.arguments.parameters.iter_mut().find(|x| x.name == p.name) {
            Some(x) => *x = p.clone(),
            None => s.arguments.parameters.push(p.clone()),
        }
    }
    for a in &over.arguments.artifacts {
        s.arguments.artifacts.retain(|x| x.name != a.name);
        s.arguments.artifacts.push(a.clone());
    }
    s.templates.extend(over.templates.iter().cloned());
    macro_rules! take {
        ($($f:ident),*) => {$( if over.$f.is_some() { s.$f = over.$f.clone(); } )*};
    }
    take!(
        on_exit,
        parallelism,
        active_deadline_seconds,
        template_defaults,
        retry_strategy,
        suspend,
        shutdown,
        synchronization,
        priority,
        ttl_strategy,
        pod_gc,
        artifact_gc,
        metrics
    );
    s.hooks.extend(over.hooks.clone());
    s
}

/// A request to run a template as a node.
#[derive(Clone)]
pub(crate) struct Call {
    pub name: String,
    pub display: String,
    pub parent: Option<usize>,
    pub tmpl: Arc<Template>,
    pub scope: TemplateScope,
    pub params: Vec<(String, String)>,
    pub artifacts: Vec<ArtifactRef>,
    pub link: Link,
    pub attempt: Option<u32>,
}

/// How a node relates to the scope that started it.
#[derive(Clone, Default)]
pub(crate) struct Link {
    /// Key under which outputs are published in the parent frame (`steps.X` / `tasks.X`).
    pub key: Option<String>,
    pub continue_on: ContinueOn,
    /// An exit handler to run when this node finishes, before the parent hears of it.
    pub on_exit: Option<Box<ExitHook>>,
    /// The group/DAG whose parallelism this node counts against.
    pub slot_of: Option<usize>,
    /// DAG task index, for DAG children.
    pub task: Option<usize>,
    /// Lifecycle hooks (other than `exit`) of the step that made this node.
    pub hooks: Vec<LifecycleRt>,
}

/// A lifecycle hook waiting for its expression to hold.
#[derive(Clone)]
pub(crate) struct LifecycleRt {
    /// The hook's key (`running`, `success`…).
    pub name: String,
    pub expression: String,
    pub hook: ExitHook,
}

#[derive(Clone)]
pub(crate) struct ExitHook {
    pub tmpl: Arc<Template>,
    pub scope: TemplateScope,
    pub args: Arguments,
}

/// The variables of a steps or DAG invocation.
/// Variables are shared (`Arc`): starting a task borrows them without copying, and publishing a
/// finished task's outputs copies only if something still holds the old map.
pub(crate) struct Frame {
    pub tmpl: Arc<Template>,
    pub scope: TemplateScope,
    pub vars: Arc<BTreeMap<String, String>>,
    pub arts: Arc<BTreeMap<String, ArtifactRef>>,
}

pub(crate) struct StepsRt {
    pub frame: Frame,
    pub group: usize,
}

pub(crate) struct GroupRt {
    pub pending: usize,
    pub active: usize,
    pub limit: Option<usize>,
    pub deferred: VecDeque<Call>,
    /// Why children failed (not tolerated by `continueOn`).
    pub failed: Vec<String>,
}

pub(crate) struct TaskRt {
    pub step: Step,
    pub depends: Depends,
    /// Names referenced with an explicit result (`A.Failed`): their failures are handled.
    pub handles: Vec<String>,
    pub deps: Vec<usize>,
    pub dependents: Vec<usize>,
    pub waiting_on: usize,
    pub node: Option<usize>,
    pub done: bool,
    pub wanted: bool,
}

pub(crate) struct DagRt {
    pub frame: Frame,
    pub tasks: Vec<TaskRt>,
    pub index: HashMap<String, usize>,
    pub active: usize,
    pub limit: Option<usize>,
    pub deferred: VecDeque<Call>,
    pub halted: bool,
    /// Tasks started (or omitted) and not yet finished: the DAG is done when this is zero.
    pub running: usize,
    /// Tasks some `depends` names with an explicit result: their failures are handled.
    pub handled: std::collections::HashSet<String>,
}

pub(crate) struct RetryRt {
    pub call: Call,
    pub limit: Option<u32>,
    pub policy: String,
    pub expression: Option<String>,
    pub backoff: Option<(i64, f64, Option<i64>, Option<i64>)>,
    pub attempts: u32,
}

pub(crate) enum Rt {
    None,
    Pod {
        spec: Box<TaskSpec>,
        dispatched: bool,
    },
    Steps(Box<StepsRt>),
    Group(Box<GroupRt>),
    Dag(Box<DagRt>),
    Retry(Box<RetryRt>),
    Suspend,
    Memo(Box<MemoRt>),
    /// Waiting for its `synchronization` locks.
    Lock(Box<LockRt>),
}

/// Per-node bookkeeping the public `Node` does not show.
pub(crate) struct Meta {
    pub link: Link,
    /// A lifecycle hook's node: its end tells nobody but the run.
    pub lifecycle: bool,
    /// The node asked for locks: they are released when it finishes.
    pub sync: bool,
    pub exit_started: bool,
    /// (cache, key) of a memoized node whose outputs are to be remembered on success.
    pub memo: Option<(String, String)>,
    /// A pod waiting for the answer of its step-cache lookup before it is admitted.
    pub cache_wait: bool,
    /// A pod waiting for its remote inputs to be fetched.
    pub fetch_wait: bool,
}

/// A memoized call waiting for its cache lookup.
pub(crate) struct MemoRt {
    pub call: Call,
    pub cache: String,
    pub key: String,
    pub max_age_ms: Option<i64>,
}

/// A call waiting for its locks.
pub(crate) struct LockRt {
    pub call: Call,
    pub locks: Vec<Lock>,
    pub priority: i64,
}

impl LockRt {
    pub fn acquire(&self, holder: &str) -> Action {
        Action::Acquire {
            holder: holder.to_string(),
            locks: self.locks.clone(),
            priority: self.priority,
        }
    }
}

impl MemoRt {
    pub fn lookup(&self, node: &str) -> Action {
        Action::Lookup {
            node: node.to_string(),
            cache: self.cache.clone(),
            key: self.key.clone(),
            max_age_ms: self.max_age_ms,
        }
    }
}

impl Run {
    // ------------------------------------------------------------ workflow level

    pub(super) fn begin(&mut self) {
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
        let mut artifacts = Vec::new();
        for a in &spec.arguments.artifacts {
            if let Some(raw) = &a.raw {
                artifacts.push(raw_artifact(&a.name, &raw.data));
            }
        }
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
    fn publish_metadata(&mut self) {
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

    fn workflow_metadata(&mut self) -> Result<(), String> {
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
    fn param_from(&self, p: &crate::spec::Parameter) -> Option<String> {
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

    pub(super) fn apply(&mut self, event: Event) {
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
                    let result = TaskResult {
                        error: Some("the task's process was lost when weir stopped; it did not report a result".into()),
                        ..TaskResult::default()
                    };
                    self.pod_finished(i, result);
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
    fn acquired(&mut self, holder: &str, error: Option<String>) {
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
    fn daemon_ready(&mut self, i: usize) {
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
    fn stop_daemons(&mut self, scope: Option<usize>) {
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
    fn end_without_root(&mut self, phase: Phase) {
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
    fn prefetch(&self, i: usize) {
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

    fn stop(&mut self, reason: StopReason) {
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
    fn in_exit_handler(&self, i: usize) -> bool {
        let mut p = Some(i);
        while let Some(x) = p {
            if self.nodes[x].hook_for.is_some() || Some(x) == self.exit_node {
                return true;
            }
            p = self.nodes[x].parent;
        }
        false
    }

    fn resume(&mut self, parameters: Vec<(String, String)>, selector: Option<&str>) {
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

    fn suspend_done(&mut self, i: usize, supplied: &[(String, String)]) {
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

    fn template_of(&self, i: usize) -> Option<Arc<Template>> {
        self.node_tmpl.get(i).cloned()
    }

    fn timer_fired(&mut self, timer: Timer) {
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

    fn arm(&mut self, timer: Timer, at: Millis) {
        self.timers.insert(timer.clone(), at);
        self.actions.push(Action::Arm { timer, at });
    }

    /// Retry from failure: a fresh state in which every succeeded pod of this attempt is reused.
    fn retry_from_failure(&mut self) {
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

    // ------------------------------------------------------------ node creation

    fn new_node(&mut self, call: &Call, node_type: NodeType) -> usize {
        if let Some(i) = self.slot.take() {
            // a memoized node that missed its cache becomes the node that runs
            self.nodes[i].node_type = node_type;
            self.nodes[i].inputs = call.params.clone();
            self.nodes[i].input_artifacts = call.artifacts.clone();
            return i;
        }
        let i = self.nodes.len();
        let mut id = node_id(&self.sub.name, &call.name);
        // A hash collision must not merge two nodes: derive another id, deterministically.
        let mut n = 1;
        while self.by_id.contains_key(&id_key(&id)) {
            id = format!("{}-{n}", node_id(&self.sub.name, &call.name));
            n += 1;
        }
        self.nodes.push(Node {
            id: id.clone(),
            name: call.name.clone(),
            display_name: call.display.clone(),
            node_type,
            template: call.tmpl.name.clone(),
            phase: Phase::Pending,
            message: String::new(),
            started_at: Some(self.now),
            finished_at: None,
            parent: call.parent,
            children: Vec::new(),
            inputs: call.params.clone(),
            input_artifacts: call.artifacts.clone(),
            outputs: NodeOutputs::default(),
            pid: None,
            attempt: call.attempt.unwrap_or(0),
            hook_for: None,
            cache_key: None,
            cached_from: None,
        });
        self.rt.push(Rt::None);
        self.meta.push(Meta {
            link: call.link.clone(),
            lifecycle: false,
            sync: false,
            exit_started: false,
            memo: None,
            cache_wait: false,
            fetch_wait: false,
        });
        self.node_tmpl.push(call.tmpl.clone());
        self.by_id.insert(id_key(&id), i);
        for h in &call.link.hooks {
            self.pending_hooks.push((Some(i), h.clone()));
        }
        // Room for every node to finish, reserved as nodes are made: growing this list inside a
        // completion would copy it all, in the middle of a step.
        if self.finished_order.capacity() < self.nodes.len() {
            let extra = self.nodes.len() - self.finished_order.len();
            self.finished_order.reserve(extra);
        }
        if let Some(p) = call.parent {
            self.nodes[p].children.push(i);
        }
        i
    }

    /// Starts a call, or defers it while the scope's parallelism is used up.
    pub(super) fn launch(&mut self, call: Call) -> usize {
        if let Some(slot) = call.link.slot_of {
            let (active, limit) = match &self.rt[slot] {
                Rt::Group(g) => (g.active, g.limit),
                Rt::Dag(d) => (d.active, d.limit),
                _ => (0, None),
            };
            if limit.is_some_and(|l| active >= l) {
                match &mut self.rt[slot] {
                    Rt::Group(g) => g.deferred.push_back(call),
                    Rt::Dag(d) => d.deferred.push_back(call),
                    _ => {}
                }
                return usize::MAX;
            }
            match &mut self.rt[slot] {
                Rt::Group(g) => g.active += 1,
                Rt::Dag(d) => d.active += 1,
                _ => {}
            }
        }
        self.execute(call)
    }

    /// Runs `call`'s template, bounded: templates nested `max_depth` deep within one step of
    /// the machine, or a run past `max_nodes` nodes (`Run::limits`), get an errored node
    /// instead (and a run that starts that way is refused, see `Run::start`).
    fn execute(&mut self, call: Call) -> usize {
        let max = self.limits;
        let over = if self.depth >= max.max_depth {
            Some(format!(
                "Maximum recursion depth exceeded at template `{}`: {}",
                call.tmpl.name,
                limits::exceeded(
                    "templates nested without a task in between",
                    self.depth + 1,
                    max.max_depth
                )
            ))
        } else if self.nodes.len() >= max.max_nodes {
            Some(limits::exceeded(
                "nodes of this run",
                self.nodes.len() + 1,
                max.max_nodes,
            ))
        } else {
            None
        };
        if let Some(msg) = over {
            let i = self.new_node(&call, NodeType::Pod);
            self.finish_node(i, Phase::Error, msg);
            return i;
        }
        self.depth += 1;
        // a nested call uses tens of KiB of stack in a debug build: grow it rather than depend
        // on the thread it runs on (a 2 MiB worker thread holds about 60 levels)
        let i = stacker::maybe_grow(256 << 10, 4 << 20, || self.execute_bounded(call));
        self.depth -= 1;
        i
    }

    fn execute_bounded(&mut self, call: Call) -> usize {
        if let Some(old) = self.reuse.get(&call.name).cloned() {
            let i = self.new_node(&call, old.node_type);
            let n = &mut self.nodes[i];
            n.outputs = old.outputs;
            n.started_at = old.started_at;
            n.message = old.message;
            n.pid = old.pid;
            n.phase = Phase::Succeeded;
            n.finished_at = old.finished_at;
            self.finished_order.push(i);
            self.done.push_back(i);
            return i;
        }
        let tmpl = call.tmpl.clone();
        // inputs
        let mut params = Vec::new();
        let mut problems = Vec::new();
        let globals = self.globals.clone();
        for p in &tmpl.inputs.parameters {
            let v = call
                .params
                .iter()
                .find(|(k, _)| *k == p.name)
                .map(|(_, v)| v.clone())
                .or_else(|| self.param_from(p));
            match v {
                Some(v) => {
                    let v = substitute(
                        &v,
                        &Vars {
                            layers: vec![&globals],
                        },
                    )
                    .unwrap_or(v);
                    if !p.enum_.is_empty() && !p.enum_.contains(&v) {
                        problems.push(format!(
                            "inputs.parameters.{}: `{v}` is not one of {:?}",
                            p.name, p.enum_
                        ));
                    }
                    params.push((p.name.clone(), v));
                }
                None => problems.push(format!("inputs.parameters.{} was not supplied", p.name)),
            }
        }
        let mut artifacts = Vec::new();
        for a in &tmpl.inputs.artifacts {
            if let Some(given) = call.artifacts.iter().find(|x| x.name == a.name) {
                artifacts.push(given.clone());
            } else if let Some(raw) = &a.raw {
                let data = substitute(
                    &raw.data,
                    &Vars {
                        layers: vec![&globals],
                    },
                )
                .unwrap_or(raw.data.clone());
                artifacts.push(raw_artifact(&a.name, &data));
            } else if let Some(url) = a
                .http
                .as_ref()
                .and_then(|h| h.get("url"))
                .and_then(Json::as_str)
            {
                let vars = self.local_vars(&call);
                let env = Vars {
                    layers: vec![&vars, &globals],
                };
                artifacts.push(http_artifact(
                    &a.name,
                    &substitute(url, &env).unwrap_or(url.to_string()),
                ));
            } else if let Some(s3) = a.s3.as_ref().filter(|_| a.key_only().is_none()) {
                let vars = self.local_vars(&call);
                let env = Vars {
                    layers: vec![&vars, &globals],
                };
                match self.s3_url(s3, &env) {
                    Ok(u) => artifacts.push(http_artifact(&a.name, &u)),
                    Err(e) => problems.push(format!("inputs.artifacts.{}: {e}", a.name)),
                }
            } else if let Some(g) = &a.git {
                let vars = self.local_vars(&call);
                let env = Vars {
                    layers: vec![&vars, &globals],
                };
                match git_url(g, &env) {
                    Ok(u) => artifacts.push(http_artifact(&a.name, &u)),
                    Err(e) => problems.push(format!("inputs.artifacts.{}: {e}", a.name)),
                }
            } else if let Some(key) = a.key_only() {
                let vars = self.local_vars(&call);
                let env = Vars {
                    layers: vec![&vars, &globals],
                };
                artifacts.push(keyed_artifact(
                    &a.name,
                    &substitute(key, &env).unwrap_or(key.to_string()),
                ));
            } else if a.optional != Some(true) {
                problems.push(format!("inputs.artifacts.{} was not supplied", a.name));
            }
        }
        let mut call = call;
        call.params = params;
        call.artifacts = artifacts;
        if !problems.is_empty() {
            let i = self.new_node(&call, NodeType::Pod);
            self.finish_node(i, Phase::Error, problems.join("; "));
            return i;
        }
        if let Some(m) = tmpl
            .memoize
            .as_ref()
            .filter(|_| self.slot.is_none() && call.attempt.is_none())
        {
            let vars = self.local_vars(&call);
            let env = Vars {
                layers: vec![&vars, &globals],
            };
            let key = m.get("key").and_then(Json::as_str).unwrap_or_default();
            let key = substitute(key, &env).unwrap_or_else(|_| key.to_string());
            let cache = m
                .pointer("/cache/configMap/name")
                .and_then(Json::as_str)
                .unwrap_or("default")
                .to_string();
            let max_age_ms = m
                .get("maxAge")
                .and_then(Json::as_str)
                .and_then(parse_duration)
                .map(|ms| ms.min(limits::MAX_DURATION_MS));
            let node_type = if tmpl.steps.is_some() {
                NodeType::Steps
            } else if tmpl.dag.is_some() {
                NodeType::DAG
            } else {
                NodeType::Pod
            };
            let i = self.new_node(&call, node_type);
            self.meta[i].memo = Some((cache.clone(), key.clone()));
            let memo = MemoRt {
                call,
                cache,
                key,
                max_age_ms,
            };
            self.actions.push(memo.lookup(&self.nodes[i].id));
            self.rt[i] = Rt::Memo(Box::new(memo));
            return i;
        }
        let granted = std::mem::take(&mut self.lock_granted);
        if !granted
            && call.attempt.is_none()
            && let Some(sync) = &tmpl.synchronization
        {
            let vars = self.local_vars(&call);
            let env = Vars {
                layers: vec![&vars, &globals],
            };
            let locks = sync::locks(sync, &self.sub.namespace, &env, &self.templates.config_maps);
            let node_type = if tmpl.steps.is_some() {
                NodeType::Steps
            } else if tmpl.dag.is_some() {
                NodeType::DAG
            } else if tmpl.suspend.is_some() {
                NodeType::Suspend
            } else {
                NodeType::Pod
            };
            match locks {
                Err(e) => {
                    let i = self.new_node(&call, node_type);
                    self.finish_node(i, Phase::Error, e);
                    return i;
                }
                Ok(locks) if !locks.is_empty() => {
                    let i = self.new_node(&call, node_type);
                    self.nodes[i].message = sync::waiting_message(&locks);
                    self.meta[i].sync = true;
                    let l = LockRt {
                        call,
                        locks,
                        priority: self.templates.spec.priority.unwrap_or(0),
                    };
                    self.actions.push(l.acquire(&self.nodes[i].id));
                    self.rt[i] = Rt::Lock(Box::new(l));
                    return i;
                }
                Ok(_) => {}
            }
        }
        if call.attempt.is_none()
            && let Some(rs) = &tmpl
                .retry_strategy
                .clone()
                .or_else(|| self.templates.spec.retry_strategy.clone())
            && (tmpl.container.is_some() || tmpl.script.is_some() || tmpl.retry_strategy.is_some())
        {
            let i = self.new_node(&call, NodeType::Retry);
            self.nodes[i].phase = Phase::Running;
            let vars = self.local_vars(&call);
            let sub = |s: &Option<String>| {
                s.as_ref().map(|x| {
                    substitute(
                        x,
                        &Vars {
                            layers: vec![&vars, &globals],
                        },
                    )
                    .unwrap_or(x.clone())
                })
            };
            let limit = sub(&rs.limit).and_then(|l| l.trim().parse::<u32>().ok());
            let backoff = rs.backoff.as_ref().map(|b| {
                (
                    // literals were checked before the run started; what a `{{…}}` gave is
                    // capped, so the delay stays within the engine's clock
                    sub(&b.duration)
                        .and_then(|d| parse_duration(&d))
                        .unwrap_or(1000)
                        .min(limits::MAX_DURATION_MS),
                    sub(&b.factor)
                        .and_then(|f| f.trim().parse::<f64>().ok())
                        .filter(|f| f.is_finite())
                        .unwrap_or(2.0)
                        .min(limits::MAX_BACKOFF_FACTOR),
                    sub(&b.max_duration)
                        .and_then(|d| parse_duration(&d))
                        .map(|d| d.min(limits::MAX_DURATION_MS)),
                    sub(&b.cap)
                        .and_then(|d| parse_duration(&d))
                        .map(|d| d.min(limits::MAX_DURATION_MS)),
                )
            });
            self.rt[i] = Rt::Retry(Box::new(RetryRt {
                call: call.clone(),
                limit,
                policy: rs
                    .retry_policy
                    .clone()
                    .unwrap_or_else(|| "OnFailure".into()),
                expression: rs.expression.clone(),
                backoff,
                attempts: 0,
            }));
            self.next_attempt(i);
            return i;
        }
        // http and data templates run in the executor without a process
        let no_process = (tmpl.http.is_some() || tmpl.data.is_some() || tmpl.resource.is_some())
            .then(crate::spec::Container::default);
        if let Some(c) = tmpl
            .container
            .as_ref()
            .or(tmpl.script.as_ref())
            .or(no_process.as_ref())
        {
            let i = self.new_node(&call, NodeType::Pod);
            let spec = match (&tmpl.http, &tmpl.data, &tmpl.resource) {
                (Some(h), _, _) => self.http_spec(i, &call, h),
                (_, Some(d), _) => self.data_spec(i, &call, d),
                (_, _, Some(r)) => self.child_spec(i, &call, r),
                _ => self.task_spec(i, &call, c),
            };
            match spec {
                Ok(spec) => {
                    let timeout = tmpl
                        .timeout
                        .clone()
                        .or_else(|| tmpl.active_deadline_seconds.clone());
                    self.rt[i] = Rt::Pod {
                        spec: Box::new(spec),
                        dispatched: false,
                    };
                    if let Some(t) = timeout {
                        let vars = self.local_vars(&call);
                        let t = substitute(
                            &t,
                            &Vars {
                                layers: vec![&vars, &globals],
                            },
                        )
                        .unwrap_or(t);
                        match limits::duration_ms(&t) {
                            Ok(Some(ms)) => self.arm(
                                Timer::PodTimeout(self.nodes[i].id.clone()),
                                self.now.saturating_add(ms),
                            ),
                            Ok(None) => {}
                            Err(e) => {
                                self.finish_node(i, Phase::Error, format!("timeout: {e}"));
                                return i;
                            }
                        }
                    }
                    self.pod_ready(i);
                }
                Err(e) => self.finish_node(i, Phase::Error, e),
            }
            return i;
        }
        if tmpl.steps.is_some() {
            let i = self.new_node(&call, NodeType::Steps);
            self.nodes[i].phase = Phase::Running;
            let frame = self.frame(&call);
            self.rt[i] = Rt::Steps(Box::new(StepsRt { frame, group: 0 }));
            self.start_group(i);
            return i;
        }
        if tmpl.dag.is_some() {
            let i = self.new_node(&call, NodeType::DAG);
            self.nodes[i].phase = Phase::Running;
            self.start_dag(i, &call);
            return i;
        }
        if let Some(s) = &tmpl.suspend {
            let i = self.new_node(&call, NodeType::Suspend);
            self.nodes[i].phase = Phase::Running;
            self.rt[i] = Rt::Suspend;
            if let Some(d) = &s.duration {
                let vars = self.local_vars(&call);
                let d = substitute(
                    d,
                    &Vars {
                        layers: vec![&vars, &globals],
                    },
                )
                .unwrap_or(d.clone());
                match limits::duration_ms(&d) {
                    Ok(Some(ms)) => self.arm(
                        Timer::Resume(self.nodes[i].id.clone()),
                        self.now.saturating_add(ms),
                    ),
                    Err(e) => self.finish_node(i, Phase::Error, format!("suspend.duration: {e}")),
                    Ok(None) => self.finish_node(
                        i,
                        Phase::Error,
                        format!("suspend.duration `{d}` is not a duration"),
                    ),
                }
            }
            return i;
        }
        let i = self.new_node(&call, NodeType::Pod);
        self.finish_node(
            i,
            Phase::Error,
            format!(
                "template `{}` has no container, script, steps, dag or suspend",
                tmpl.name
            ),
        );
        i
    }

    /// Variables of a call: its inputs plus the pod-level names.
    fn local_vars(&self, call: &Call) -> BTreeMap<String, String> {
        let mut v = BTreeMap::new();
        let mut all = serde_json::Map::new();
        for (k, val) in &call.params {
            v.insert(format!("inputs.parameters.{k}"), val.clone());
            all.insert(k.clone(), Json::String(val.clone()));
        }
        v.insert("inputs.parameters".into(), Json::Object(all).to_string());
        for a in &call.tmpl.inputs.artifacts {
            if let Some(p) = &a.path {
                v.insert(format!("inputs.artifacts.{}.path", a.name), p.clone());
            }
        }
        for a in &call.tmpl.outputs.artifacts {
            if let Some(p) = &a.path {
                v.insert(format!("outputs.artifacts.{}.path", a.name), p.clone());
            }
        }
        for p in &call.tmpl.outputs.parameters {
            if let Some(path) = p.value_from.as_ref().and_then(|x| x.path.clone()) {
                v.insert(format!("outputs.parameters.{}.path", p.name), path);
            }
        }
        v.insert("node.name".into(), call.name.clone());
        v.insert("pod.name".into(), node_id(&self.sub.name, &call.name));
        v.insert("retries".into(), call.attempt.unwrap_or(0).to_string());
        v
    }

    fn frame(&self, call: &Call) -> Frame {
        let vars = self.local_vars(call);
        let mut arts = BTreeMap::new();
        for a in &call.artifacts {
            arts.insert(format!("inputs.artifacts.{}", a.name), a.clone());
        }
        Frame {
            tmpl: call.tmpl.clone(),
            scope: call.scope.clone(),
            vars: Arc::new(vars),
            arts: Arc::new(arts),
        }
    }

    /// Resolves a container or script template into what the executor runs.
    /// A container's environment (`env`, `envFrom`) and the secret values it holds.
    fn container_env(
        &self,
        i: usize,
        c: &crate::spec::Container,
        env: &Vars,
    ) -> Result<(EnvVars, Vec<String>), String> {
        let s = |x: &str| substitute(x, env).map_err(|e| e.to_string());
        let mut envs = Vec::new();
        let mut secrets = Vec::new();
        for e in &c.env {
            let value = if let Some(v) = &e.value {
                s(v)?
            } else if let Some(from) = &e.value_from {
                if let Some(r) = &from.config_map_key_ref {
                    match self
                        .templates
                        .config_maps
                        .get(&r.name)
                        .and_then(|m| m.get(&r.key))
                    {
                        Some(v) => v.clone(),
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(format!(
                                "env {}: ConfigMap `{}` key `{}` not found (load it with --with)",
                                e.name, r.name, r.key
                            ));
                        }
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    match self
                        .templates
                        .secrets
                        .get(&r.name)
                        .and_then(|m| m.get(&r.key))
                    {
                        Some(v) => {
                            secrets.push(v.clone());
                            v.clone()
                        }
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(format!(
                                "env {}: Secret `{}` key `{}` not found (load it with --with)",
                                e.name, r.name, r.key
                            ));
                        }
                    }
                } else if let Some(f) = &from.field_ref {
                    match f.get("fieldPath").and_then(Json::as_str) {
                        Some("metadata.name") => self.nodes[i].id.clone(),
                        Some("metadata.namespace") => self.sub.namespace.clone(),
                        Some("status.podIP") | Some("status.hostIP") => "127.0.0.1".into(),
                        Some("spec.nodeName") => "localhost".into(),
                        other => {
                            return Err(format!(
                                "env {}: fieldRef `{}` has no meaning on one host",
                                e.name,
                                other.unwrap_or("")
                            ));
                        }
                    }
                } else {
                    String::new()
                }
            } else {
                String::new()
            };
            envs.push((e.name.clone(), value));
        }
        for ef in &c.env_from {
            let prefix = ef.prefix.clone().unwrap_or_default();
            let (map, secret, r) = match (&ef.config_map_ref, &ef.secret_ref) {
                (Some(r), _) => (self.templates.config_maps.get(&r.name), false, r),
                (_, Some(r)) => (self.templates.secrets.get(&r.name), true, r),
                _ => continue,
            };
            match map {
                Some(m) => {
                    for (k, v) in m {
                        if secret {
                            secrets.push(v.clone());
                        }
                        envs.push((format!("{prefix}{k}"), v.clone()));
                    }
                }
                None if r.optional == Some(true) => {}
                None => {
                    return Err(format!(
                        "envFrom: `{}` not found (load it with --with)",
                        r.name
                    ));
                }
            }
        }
        Ok((envs, secrets))
    }

    /// A `resource` template that creates a `Workflow`: the child run's document and the
    /// parent's library for it.
    fn child_spec(&self, i: usize, call: &Call, r: &Json) -> Result<TaskSpec, String> {
        let vars = self.local_vars(call);
        let env = Vars {
            layers: vec![&vars, &self.globals],
        };
        let manifest = r.get("manifest").and_then(Json::as_str).unwrap_or_default();
        let manifest = substitute(manifest, &env).map_err(|e| format!("resource: {e}"))?;
        let mut docs: Vec<Json> = self
            .sub
            .library
            .iter()
            .filter_map(|d| serde_json::to_value(d).ok())
            .map(|mut d| {
                if let Some(o) = d.as_object_mut() {
                    o.remove("file");
                    o.insert("apiVersion".into(), "argoproj.io/v1alpha1".into());
                }
                d
            })
            .collect();
        for m in &self.sub.config_maps {
            docs.push(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": m.name}, "data": m.data}));
        }
        for m in &self.sub.secrets {
            docs.push(serde_json::json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": m.name}, "stringData": m.data}));
        }
        let library = docs
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n---\n");
        Ok(TaskSpec {
            run: self.sub.key().to_string(),
            node_id: self.nodes[i].id.clone(),
            node_name: self.nodes[i].name.clone(),
            secrets: self.secret_values(),
            child: Some(ChildRun { manifest, library }),
            ..TaskSpec::default()
        })
    }

    /// A `data` template as a task: the key prefix its `artifactPaths` names, and its
    /// transformations.
    fn data_spec(&self, i: usize, call: &Call, d: &Json) -> Result<TaskSpec, String> {
        let vars = self.local_vars(call);
        let env = Vars {
            layers: vec![&vars, &self.globals],
        };
        let source: crate::spec::Artifact = d
            .pointer("/source/artifactPaths")
            .and_then(|a| serde_json::from_value(a.clone()).ok())
            .ok_or("data: `source.artifactPaths` is required")?;
        let key = source.key_only().ok_or(
            "data: artifactPaths must be a key-only `s3: {key}` of the local artifact repository",
        )?;
        let prefix = substitute(key, &env).map_err(|e| format!("data: {e}"))?;
        let transformations = d
            .get("transformation")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| t.get("expression").and_then(Json::as_str))
            .map(str::to_string)
            .collect();
        Ok(TaskSpec {
            run: self.sub.key().to_string(),
            node_id: self.nodes[i].id.clone(),
            node_name: self.nodes[i].name.clone(),
            data: Some(DataTask {
                prefix: prefix.trim_end_matches('/').to_string(),
                transformations,
            }),
            ..TaskSpec::default()
        })
    }

    /// An `http` template as a task: the request, with `{{…}}` resolved and secret headers
    /// kept from logs.
    fn http_spec(&self, i: usize, call: &Call, h: &Json) -> Result<TaskSpec, String> {
        let vars = self.local_vars(call);
        let env = Vars {
            layers: vec![&vars, &self.globals],
        };
        let s = |x: &str| substitute(x, &env).map_err(|e| e.to_string());
        let text = |k: &str| h.get(k).and_then(Json::as_str).map(&s).transpose();
        let mut headers = Vec::new();
        let mut secrets = Vec::new();
        for hd in h
            .get("headers")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            let name = hd.get("name").and_then(Json::as_str).unwrap_or_default();
            let value = if let Some(r) = hd.pointer("/valueFrom/secretKeyRef") {
                let (sn, key) = (
                    r.get("name").and_then(Json::as_str).unwrap_or_default(),
                    r.get("key").and_then(Json::as_str).unwrap_or_default(),
                );
                let v = self
                    .templates
                    .secrets
                    .get(sn)
                    .and_then(|m| m.get(key))
                    .ok_or_else(|| {
                        format!("http header {name}: Secret `{sn}` key `{key}` not found (load it with --with)")
                    })?
                    .clone();
                secrets.push(v.clone());
                v
            } else {
                s(hd.get("value").and_then(Json::as_str).unwrap_or_default())?
            };
            headers.push((name.to_string(), value));
        }
        let body = match text("body")? {
            Some(b) => b,
            None => h
                .pointer("/bodyFrom/bytes")
                .and_then(Json::as_str)
                .map(|b| {
                    crate::load::base64_decode(b.trim())
                        .ok_or_else(|| "http bodyFrom.bytes: not base64 text".to_string())
                })
                .transpose()?
                .unwrap_or_default(),
        };
        Ok(TaskSpec {
            run: self.sub.key().to_string(),
            node_id: self.nodes[i].id.clone(),
            node_name: self.nodes[i].name.clone(),
            secrets: self.mask_forms(&secrets),
            http: Some(HttpRequest {
                method: text("method")?
                    .unwrap_or_else(|| "GET".into())
                    .to_uppercase(),
                url: text("url")?.unwrap_or_default(),
                headers,
                body,
                timeout_ms: h
                    .get("timeoutSeconds")
                    .and_then(Json::as_u64)
                    .unwrap_or(30)
                    .saturating_mul(1000)
                    .min(limits::MAX_DURATION_MS as u64),
                insecure: h.get("insecureSkipVerify").and_then(Json::as_bool) == Some(true),
            }),
            ..TaskSpec::default()
        })
    }

    fn task_spec(
        &self,
        i: usize,
        call: &Call,
        c: &crate::spec::Container,
    ) -> Result<TaskSpec, String> {
        let vars = self.local_vars(call);
        let env = Vars {
            layers: vec![&vars, &self.globals],
        };
        let s = |x: &str| substitute(x, &env).map_err(|e| e.to_string());
        let (envs, mut secrets) = self.container_env(i, c, &env)?;
        let mut sidecars = Vec::new();
        let mut init_containers = Vec::new();
        for (list, out) in [
            (&call.tmpl.sidecars, &mut sidecars),
            (&call.tmpl.init_containers, &mut init_containers),
        ] {
            for sc in list {
                let (sc_env, sc_secrets) = self.container_env(i, sc, &env)?;
                secrets.extend(sc_secrets);
                out.push(Sidecar {
                    name: sc.name.clone().unwrap_or_else(|| "container".into()),
                    command: sc.command.iter().map(|x| s(x)).collect::<Result<_, _>>()?,
                    args: sc.args.iter().map(|x| s(x)).collect::<Result<_, _>>()?,
                    env: sc_env,
                });
            }
        }
        let daemon = if call.tmpl.daemon == Some(true) {
            Some(Daemon {
                probe: c.readiness_probe.as_ref().map(probe).transpose()?,
            })
        } else {
            None
        };
        let mut inputs = Vec::new();
        for a in &call.tmpl.inputs.artifacts {
            let Some(src) = call.artifacts.iter().find(|x| x.name == a.name) else {
                continue;
            };
            let Some(path) = &a.path else {
                return Err(format!("inputs.artifacts.{}: no path", a.name));
            };
            let path = s(path)?;
            no_escape("inputs.artifacts", &a.name, &path)?;
            inputs.push(InputArtifact {
                name: a.name.clone(),
                path,
                source: src.clone(),
                mode: a.mode.map(|m| m as u32),
            });
        }
        let mut output_parameters = Vec::new();
        for p in &call.tmpl.outputs.parameters {
            if let Some(path) = p.value_from.as_ref().and_then(|v| v.path.as_ref()) {
                let path = s(path)?;
                no_escape("outputs.parameters", &p.name, &path)?;
                output_parameters.push(OutputParam {
                    name: p.name.clone(),
                    path,
                });
            }
        }
        let mut output_artifacts = Vec::new();
        for a in &call.tmpl.outputs.artifacts {
            if let Some(path) = &a.path {
                let s3 = match a.s3.as_ref().filter(|_| a.key_only().is_none()) {
                    Some(loc) => {
                        let url = self.s3_url(loc, &env)?;
                        let (bucket, rest) = url
                            .trim_start_matches("s3://")
                            .split_once('/')
                            .ok_or("s3: bucket and key are required")?;
                        let key = rest.split_once('?').map(|(k, _)| k).unwrap_or(rest);
                        let access = self.s3_access_of_url(&url)?;
                        secrets.extend(access.secret_key.iter().cloned());
                        secrets.extend(access.access_key.iter().cloned());
                        Some(S3Target {
                            bucket: bucket.to_string(),
                            key: key.to_string(),
                            access,
                            query: url
                                .split_once('?')
                                .map(|(_, q)| q.to_string())
                                .unwrap_or_default(),
                        })
                    }
                    // no location of its own: the run's default repository, when it has one
                    None => match self.default_repository()? {
                        Some(repo) => {
                            let (bucket, rest) = repo
                                .trim_start_matches("s3://")
                                .split_once('/')
                                .unwrap_or((repo.trim_start_matches("s3://"), ""));
                            let prefix = rest.split_once('?').map(|(k, _)| k).unwrap_or(rest);
                            let prefix = prefix.trim_matches('/');
                            let file = if a.archive_none() {
                                a.name.clone()
                            } else {
                                format!("{}.tgz", a.name)
                            };
                            // a key-only artifact keeps its key under the prefix; the others get
                            // their run's and node's place
                            let key = match a.key_only() {
                                Some(k) => {
                                    let k = s(k)?;
                                    let k = k.trim_matches('/');
                                    let k = if a.archive_none() {
                                        k.to_string()
                                    } else {
                                        format!("{k}.tgz")
                                    };
                                    [prefix, k.as_str()]
                                        .iter()
                                        .filter(|p| !p.is_empty())
                                        .cloned()
                                        .collect::<Vec<_>>()
                                        .join("/")
                                }
                                None => [prefix, self.sub.key(), &self.nodes[i].id, &file]
                                    .iter()
                                    .filter(|p| !p.is_empty())
                                    .cloned()
                                    .collect::<Vec<_>>()
                                    .join("/"),
                            };
                            let access = self.s3_access_of_url(&repo)?;
                            secrets.extend(access.secret_key.iter().cloned());
                            secrets.extend(access.access_key.iter().cloned());
                            Some(S3Target {
                                bucket: bucket.split('?').next().unwrap_or(bucket).to_string(),
                                key,
                                access,
                                query: repo
                                    .split_once('?')
                                    .map(|(_, q)| q.to_string())
                                    .unwrap_or_default(),
                            })
                        }
                        None => None,
                    },
                };
                let path = s(path)?;
                no_escape("outputs.artifacts", &a.name, &path)?;
                output_artifacts.push(OutputArtifact {
                    name: a.name.clone(),
                    path,
                    optional: a.optional == Some(true),
                    archive: !a.archive_none(),
                    key: a.key_only().map(&s).transpose()?,
                    s3,
                    compression: a.archive_codec(),
                });
            }
        }
        let requests = c
            .resources
            .as_ref()
            .map(|r| requests(&r.requests, &r.limits))
            .unwrap_or_default();
        Ok(TaskSpec {
            run: self.sub.key().to_string(),
            node_id: self.nodes[i].id.clone(),
            node_name: self.nodes[i].name.clone(),
            image: c.image.clone(),
            command: c.command.iter().map(|x| s(x)).collect::<Result<_, _>>()?,
            args: c.args.iter().map(|x| s(x)).collect::<Result<_, _>>()?,
            source: c.source.as_ref().map(|x| s(x)).transpose()?,
            env: envs,
            secrets: self.mask_forms(&secrets),
            working_dir: c.working_dir.as_ref().map(|x| s(x)).transpose()?,
            inputs,
            output_parameters,
            output_artifacts,
            requests,
            mounts: self.mounts(i, &call.tmpl, c)?,
            daemon,
            sidecars,
            init_containers,
            http: None,
            data: None,
            child: None,
            // the template's nodeSelector: labels a worker must have
            node_selector: call
                .tmpl
                .node_selector
                .as_ref()
                .and_then(Json::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| {
                            let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                            (k.clone(), v)
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// Resolves a container's `volumeMounts` against the template's, the workflow's and the
    /// claim templates' volumes.
    fn mounts(
        &self,
        i: usize,
        tmpl: &Template,
        c: &crate::spec::Container,
    ) -> Result<Vec<Mount>, String> {
        let spec = &self.templates.spec;
        let mut out = Vec::new();
        for m in &c.volume_mounts {
            let name = m.get("name").and_then(Json::as_str).unwrap_or_default();
            let path = m
                .get("mountPath")
                .and_then(Json::as_str)
                .unwrap_or_default();
            if path.is_empty() {
                return Err(format!("volumeMount `{name}` has no mountPath"));
            }
            let named = |v: &&Json| v.get("name").and_then(Json::as_str) == Some(name);
            let source = if let Some(v) = tmpl.volumes.iter().chain(&spec.volumes).find(named) {
                match self.volume_source(name, v)? {
                    // the containers of a set share its emptyDir: one per set instance
                    VolumeSource::Empty if tmpl.set_member => {
                        let set = self.nodes[i].parent.unwrap_or(i);
                        VolumeSource::Run(format!("{}-{name}", self.nodes[set].id))
                    }
                    other => other,
                }
            } else if spec
                .volume_claim_templates
                .iter()
                .any(|v| v.pointer("/metadata/name").and_then(Json::as_str) == Some(name))
            {
                VolumeSource::Run(name.to_string())
            } else {
                return Err(format!(
                    "volumeMount `{name}`: no volume or volumeClaimTemplate of that name"
                ));
            };
            out.push(Mount {
                name: name.to_string(),
                source,
                path: path.to_string(),
                sub_path: m.get("subPath").and_then(Json::as_str).map(str::to_string),
                read_only: m.get("readOnly").and_then(Json::as_bool).unwrap_or(false),
            });
        }
        Ok(out)
    }

    fn volume_source(&self, name: &str, v: &Json) -> Result<VolumeSource, String> {
        if v.get("emptyDir").is_some() {
            return Ok(VolumeSource::Empty);
        }
        if let Some(claim) = v
            .pointer("/persistentVolumeClaim/claimName")
            .and_then(Json::as_str)
        {
            return Ok(VolumeSource::Claim(claim.to_string()));
        }
        if let Some(p) = v.pointer("/hostPath/path").and_then(Json::as_str) {
            return Ok(VolumeSource::Host(p.to_string()));
        }
        for (field, maps, key) in [
            ("configMap", &self.templates.config_maps, "name"),
            ("secret", &self.templates.secrets, "secretName"),
        ] {
            if let Some(src) = v.get(field) {
                let obj = src.get(key).and_then(Json::as_str).unwrap_or_default();
                let Some(data) = maps.get(obj) else {
                    return Err(format!(
                        "volume `{name}`: {field} `{obj}` not found (load it with --with)"
                    ));
                };
                let files = match src.get("items").and_then(Json::as_array) {
                    Some(items) => items
                        .iter()
                        .filter_map(|i| {
                            let k = i.get("key")?.as_str()?;
                            Some((
                                i.get("path")
                                    .and_then(Json::as_str)
                                    .unwrap_or(k)
                                    .to_string(),
                                data.get(k)?.clone(),
                            ))
                        })
                        .collect(),
                    None => data.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                };
                return Ok(VolumeSource::Files(files));
            }
        }
        Err(format!(
            "volume `{name}`: only emptyDir, persistentVolumeClaim, volumeClaimTemplates, hostPath, configMap and secret volumes have a meaning on one host"
        ))
    }

    /// Whether a template's tasks use step caching: its `weir.dev/cache` annotation, else the
    /// workflow's.
    fn step_caching(&self, tmpl: &crate::spec::Template) -> bool {
        let own = tmpl
            .metadata
            .as_ref()
            .and_then(|m| m.get("annotations"))
            .and_then(|a| a.get(super::STEP_CACHE))
            .and_then(|v| v.as_str())
            .map(|v| v == "true");
        own.or_else(|| {
            self.sub
                .workflow
                .metadata
                .annotations
                .get(super::STEP_CACHE)
                .map(|v| v == "true")
        })
        .unwrap_or(false)
    }

    /// False when the run was submitted with `--no-cache`: outputs are recorded, not reused.
    fn cache_reads(&self) -> bool {
        self.sub
            .workflow
            .metadata
            .annotations
            .get("weir.dev/no-cache")
            .is_none_or(|v| v != "true")
    }

    /// A pod whose spec is built: fetch its remote inputs, then ask the step cache (when the
    /// template uses it), then admit it.
    fn pod_ready(&mut self, i: usize) {
        let Rt::Pod { spec, .. } = &self.rt[i] else {
            return;
        };
        if spec
            .inputs
            .iter()
            .any(|a| a.source.url.is_some() && a.source.hash.is_empty())
        {
            let action = self.fetch_action(i, spec);
            self.meta[i].fetch_wait = true;
            self.actions.push(action);
            return;
        }
        let tmpl = self.node_tmpl[i].clone();
        if self.step_caching(&tmpl)
            && let Rt::Pod { spec, .. } = &self.rt[i]
            && let Some(key) = super::step_cache_key(spec, &self.nodes[i].inputs)
        {
            // look for outputs of the same work first; run it only on a miss
            self.nodes[i].cache_key = Some(key.clone());
            self.meta[i].memo = Some((super::STEP_CACHE.into(), key.clone()));
            if self.cache_reads() {
                self.meta[i].cache_wait = true;
                self.actions.push(Action::Lookup {
                    node: self.nodes[i].id.clone(),
                    cache: super::STEP_CACHE.into(),
                    key,
                    max_age_ms: None,
                });
                return;
            }
        }
        self.admit(i);
    }

    /// The `Fetch` of a pod's remote inputs, each with how to reach it.
    pub(super) fn fetch_action(&self, i: usize, spec: &TaskSpec) -> Action {
        let sources: Vec<ArtifactRef> = spec
            .inputs
            .iter()
            .filter(|a| a.source.url.is_some() && a.source.hash.is_empty())
            .map(|a| a.source.clone())
            .collect();
        let access = sources
            .iter()
            .map(|s| {
                s.url
                    .as_deref()
                    .filter(|u| u.starts_with("s3://"))
                    .map(|u| self.s3_access_of_url(u).unwrap_or_default())
            })
            .collect();
        Action::Fetch {
            node: self.nodes[i].id.clone(),
            sources,
            access,
        }
    }

    /// An `s3` artifact's location as a URL that names its bucket, key and endpoint, and the
    /// Secrets (by name, never values) holding its credentials.
    fn s3_url(&self, s3: &Json, env: &Vars) -> Result<String, String> {
        let field = |k: &str| -> Result<Option<String>, String> {
            s3.get(k)
                .and_then(Json::as_str)
                .map(|v| substitute(v, env).map_err(|e| e.to_string()))
                .transpose()
        };
        let bucket = field("bucket")?.ok_or("s3: bucket is required")?;
        let key = field("key")?.ok_or("s3: key is required")?;
        let mut q = Vec::new();
        if let Some(e) = field("endpoint")? {
            q.push(format!("endpoint={e}"));
        }
        if let Some(r) = field("region")? {
            q.push(format!("region={r}"));
        }
        if s3.get("insecure").and_then(Json::as_bool) == Some(true) {
            q.push("insecure=true".into());
        }
        for (name, param) in [("accessKeySecret", "access"), ("secretKeySecret", "secret")] {
            if let Some(r) = s3.get(name) {
                let n = r.get("name").and_then(Json::as_str).unwrap_or_default();
                let k = r.get("key").and_then(Json::as_str).unwrap_or_default();
                q.push(format!("{param}={n}/{k}"));
            }
        }
        let key = key.trim_start_matches('/');
        Ok(if q.is_empty() {
            format!("s3://{bucket}/{key}")
        } else {
            format!("s3://{bucket}/{key}?{}", q.join("&"))
        })
    }

    /// The run's default artifact repository, as an `s3://BUCKET/PREFIX?…` URL: the
    /// `weir.dev/artifact-repository` annotation (`--artifact-repository`), else the ConfigMap
    /// entry `spec.artifactRepositoryRef` names. `None`: the local repository only.
    pub(super) fn default_repository(&self) -> Result<Option<String>, String> {
        if let Some(u) = self
            .sub
            .workflow
            .metadata
            .annotations
            .get("weir.dev/artifact-repository")
        {
            return Ok(Some(u.clone()));
        }
        let Some(r) = &self.templates.spec.artifact_repository_ref else {
            return Ok(None);
        };
        let cm = r
            .get("configMap")
            .and_then(Json::as_str)
            .unwrap_or("artifact-repositories");
        let data = self.templates.config_maps.get(cm).ok_or_else(|| {
            format!("artifactRepositoryRef: ConfigMap `{cm}` not found (load it with --with)")
        })?;
        let key = match r.get("key").and_then(Json::as_str) {
            Some(k) => k.to_string(),
            None => data
                .keys()
                .next()
                .cloned()
                .ok_or_else(|| format!("artifactRepositoryRef: ConfigMap `{cm}` is empty"))?,
        };
        let text = data
            .get(&key)
            .ok_or_else(|| format!("artifactRepositoryRef: ConfigMap `{cm}` has no key `{key}`"))?;
        let doc = crate::yaml::parse_documents(text)
            .map_err(|e| format!("artifactRepositoryRef: `{cm}`/{key}: {e:?}"))?;
        let v = doc
            .first()
            .map(crate::yaml::to_json_untyped)
            .unwrap_or(Json::Null);
        let s3 = v.get("s3").ok_or_else(|| {
            format!("artifactRepositoryRef: `{cm}`/{key}: only `s3` repositories are supported on one host")
        })?;
        let mut loc = s3.clone();
        // the key is the prefix under which each artifact gets its own place
        let prefix = s3
            .get("keyPrefix")
            .or_else(|| s3.get("keyFormat"))
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_string();
        loc["key"] = Json::String(prefix);
        let env = Vars {
            layers: vec![&self.globals],
        };
        self.s3_url(&loc, &env).map(Some)
    }

    /// How to reach the store an `s3://…?endpoint=…&access=SECRET/KEY` URL names, with the
    /// credentials read from the run's Secrets.
    pub(super) fn s3_access_of_url(&self, url: &str) -> Result<S3Access, String> {
        let mut a = S3Access::default();
        let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
        for kv in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            match k {
                "endpoint" => a.endpoint = Some(v.to_string()),
                "region" => a.region = Some(v.to_string()),
                "insecure" => a.insecure = v == "true",
                "access" | "secret" => {
                    let (n, key) = v.split_once('/').unwrap_or((v, ""));
                    let value = self
                        .templates
                        .secrets
                        .get(n)
                        .and_then(|m| m.get(key))
                        .cloned()
                        .ok_or_else(|| {
                            format!("s3: Secret `{n}` key `{key}` not found (load it with --with)")
                        })?;
                    if k == "access" {
                        a.access_key = Some(value);
                    } else {
                        a.secret_key = Some(value);
                    }
                }
                _ => {}
            }
        }
        Ok(a)
    }

    /// A pod's remote inputs arrived (or could not be fetched).
    fn fetched(&mut self, i: usize, results: Vec<Result<ArtifactRef, String>>) {
        if self.nodes[i].phase.is_done() {
            return;
        }
        let mut errors = Vec::new();
        let mut got = results.into_iter();
        // `weir rerun`: inputs must be what they were
        let expected: BTreeMap<String, String> = self
            .sub
            .workflow
            .metadata
            .annotations
            .get("weir.dev/expected-inputs")
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default();
        if let Rt::Pod { spec, .. } = &mut self.rt[i] {
            for a in spec
                .inputs
                .iter_mut()
                .filter(|a| a.source.url.is_some() && a.source.hash.is_empty())
            {
                match got.next() {
                    Some(Ok(r))
                        if expected
                            .get(r.url.as_deref().unwrap_or_default())
                            .is_some_and(|d| *d != r.hash) =>
                    {
                        errors.push(format!(
                            "input artifact `{}`: {} changed since the run being rerun: its blake3 was {}, now {}",
                            a.name,
                            r.url.as_deref().unwrap_or_default(),
                            expected[r.url.as_deref().unwrap_or_default()],
                            r.hash
                        ));
                    }
                    Some(Ok(mut r)) => {
                        r.name = a.source.name.clone();
                        r.sub_path = a.source.sub_path.clone();
                        a.source = r;
                    }
                    Some(Err(e)) => errors.push(format!("input artifact `{}`: {e}", a.name)),
                    None => errors.push(format!("input artifact `{}` was not fetched", a.name)),
                }
            }
            self.nodes[i].input_artifacts = spec.inputs.iter().map(|a| a.source.clone()).collect();
        }
        if !errors.is_empty() {
            if !self.timers.is_empty() {
                self.timers
                    .remove(&Timer::PodTimeout(self.nodes[i].id.clone()));
            }
            self.rt[i] = Rt::None;
            self.finish_node(i, Phase::Error, errors.join("; "));
            return;
        }
        self.pod_ready(i);
    }

    /// The step cache answered a pod's lookup: reuse the outputs, or run it.
    fn step_cache_answer(&mut self, i: usize, outputs: Option<NodeOutputs>, from: Option<String>) {
        if self.nodes[i].phase.is_done() {
            return;
        }
        match outputs {
            Some(o) => {
                if !self.timers.is_empty() {
                    self.timers
                        .remove(&Timer::PodTimeout(self.nodes[i].id.clone()));
                }
                self.rt[i] = Rt::None;
                self.meta[i].memo = None;
                self.nodes[i].outputs = o;
                let from = from.unwrap_or_default();
                let msg = format!("cached: outputs of run {from}");
                self.nodes[i].cached_from = Some(from);
                self.finish_node(i, Phase::Succeeded, msg);
            }
            None => self.admit(i),
        }
    }

    /// Dispatches a pod, or holds it while the run is suspended or at its parallelism.
    fn admit(&mut self, i: usize) {
        let limit = self.templates.spec.parallelism.map(|p| p.max(1) as usize);
        if self.suspended || limit.is_some_and(|l| self.active_pods >= l) {
            self.waiting.push_back(i);
            return;
        }
        self.dispatch(i);
    }

    fn dispatch(&mut self, i: usize) {
        if let Rt::Pod { spec, dispatched } = &mut self.rt[i] {
            *dispatched = true;
            self.active_pods += 1;
            self.actions.push(Action::Start(spec.clone()));
        }
    }

    /// Starts held pods while there is room.
    pub(super) fn pump(&mut self) {
        let limit = self.templates.spec.parallelism.map(|p| p.max(1) as usize);
        while !self.suspended && limit.is_none_or(|l| self.active_pods < l) {
            let Some(i) = self.waiting.pop_front() else {
                break;
            };
            if self.nodes[i].phase == Phase::Pending {
                self.dispatch(i);
            }
        }
    }

    fn release_pod(&mut self, i: usize) {
        if let Rt::Pod {
            dispatched: true, ..
        } = self.rt[i]
        {
            self.active_pods = self.active_pods.saturating_sub(1);
            if let Rt::Pod { dispatched, .. } = &mut self.rt[i] {
                *dispatched = false;
            }
        }
    }

    fn pod_finished(&mut self, i: usize, result: TaskResult) {
        if self.nodes[i].phase.is_done() {
            return;
        }
        self.release_pod(i);
        if !self.timers.is_empty() {
            self.timers
                .remove(&Timer::PodTimeout(self.nodes[i].id.clone()));
        }
        let n = &mut self.nodes[i];
        n.outputs.exit_code = result.exit_code;
        n.outputs.artifacts = result.artifacts.clone();
        n.outputs.metrics = result.metrics.clone();
        if result.error.is_none() {
            n.outputs.result = Some(result.stdout.clone());
        }
        let tmpl = self.template_of(i);
        let mut missing = Vec::new();
        let mut params = Vec::new();
        // a child workflow's outputs come from its final document, by jsonPath
        let child_doc = tmpl
            .as_ref()
            .filter(|t| t.resource.is_some())
            .and_then(|_| serde_json::from_str::<Json>(&result.stdout).ok())
            .map(|j| expr::Val::from_json(&j));
        if let Some(t) = &tmpl {
            for p in &t.outputs.parameters {
                let from_path = p
                    .value_from
                    .as_ref()
                    .and_then(|v| v.json_path.as_deref())
                    .zip(child_doc.as_ref())
                    .and_then(|(path, doc)| {
                        let path = path.trim().trim_start_matches('{').trim_end_matches('}');
                        expr::jsonpath(doc, path).ok().map(|v| v.to_text())
                    });
                let from_file = result
                    .parameters
                    .iter()
                    .find(|(k, _)| *k == p.name)
                    .and_then(|(_, v)| v.clone())
                    .or(from_path);
                let vf = p.value_from.as_ref();
                let value = match from_file {
                    Some(v) => Some(v),
                    None if vf.and_then(|v| v.expression.as_ref()).is_some() => None,
                    None => vf
                        .and_then(|v| v.default.clone())
                        .or_else(|| p.value.clone()),
                };
                match value {
                    Some(v) => params.push((p.name.clone(), v)),
                    None if vf.and_then(|v| v.expression.as_ref()).is_some() => {}
                    None => missing.push(p.name.clone()),
                }
            }
        }
        self.nodes[i].outputs.parameters = params;
        let http_failure = match (&result.http, tmpl.as_ref().and_then(|t| t.http.as_ref())) {
            (Some(r), Some(h)) => http_outcome(h, r, &result.stdout).err(),
            _ => None,
        };
        let (phase, msg) = if let Some(e) = result.error {
            (Phase::Error, e)
        } else if let Some(f) = http_failure {
            (Phase::Failed, f)
        } else if result.exit_code != Some(0) {
            (
                Phase::Failed,
                format!("Error (exit code {})", result.exit_code.unwrap_or(-1)),
            )
        } else if !missing.is_empty() {
            (
                Phase::Error,
                format!(
                    "could not read output parameter(s) {}: file not found and no default",
                    missing.join(", ")
                ),
            )
        } else if !result.missing_artifacts.is_empty() {
            (
                Phase::Error,
                format!(
                    "output artifact(s) {} not found",
                    result.missing_artifacts.join(", ")
                ),
            )
        } else {
            (Phase::Succeeded, String::new())
        };
        self.finish_node(i, phase, msg);
        self.pump();
    }

    /// Marks a node finished and queues its parent's notification.
    pub(super) fn finish_node(&mut self, i: usize, phase: Phase, message: String) {
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

    // ------------------------------------------------------------ completion

    /// Delivers completions to parents until nothing is left to do.
    pub(super) fn drain(&mut self) {
        while let Some(i) = self.done.pop_front() {
            self.completed(i);
        }
        self.pump();
        while let Some(i) = self.done.pop_front() {
            self.completed(i);
        }
    }

    /// A lifecycle hook as it waits to run.
    fn lifecycle(
        &self,
        key: &str,
        h: &crate::spec::LifecycleHook,
        scope: &TemplateScope,
    ) -> Result<LifecycleRt, String> {
        let hstep = Step {
            template: h.template.clone(),
            template_ref: h.template_ref.clone(),
            ..Step::default()
        };
        let (tmpl, hscope) = self.templates.resolve(&hstep, scope)?;
        Ok(LifecycleRt {
            name: key.to_string(),
            expression: h.expression.clone().unwrap_or_default(),
            hook: ExitHook {
                tmpl,
                scope: hscope,
                args: h.arguments.clone(),
            },
        })
    }

    /// Starts the lifecycle hooks whose expression now holds (each runs once). A step's hooks
    /// see `steps.NAME.status` / `tasks.NAME.status`; all see the workflow's variables.
    pub(super) fn fire_hooks(&mut self) {
        if self.pending_hooks.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending_hooks);
        let mut keep = Vec::new();
        for (owner, h) in pending {
            let mut vars = BTreeMap::new();
            if let Some(o) = owner
                && let Some(k) = &self.meta[o].link.key
            {
                vars.insert(
                    format!("{k}.status"),
                    self.nodes[o].phase.as_str().to_string(),
                );
            }
            let env = Vars {
                layers: vec![&vars, &self.globals],
            };
            let holds = expr::eval(&h.expression, Mode::Expr, &env)
                .and_then(|v| v.truthy())
                .unwrap_or(false);
            if holds {
                self.start_lifecycle(owner, &h);
            } else if !self.phase.is_done() && owner.is_none_or(|o| !self.nodes[o].phase.is_done())
            {
                keep.push((owner, h));
            }
        }
        keep.append(&mut self.pending_hooks);
        self.pending_hooks = keep;
    }

    fn start_lifecycle(&mut self, owner: Option<usize>, h: &LifecycleRt) {
        let (base, display) = match owner {
            Some(o) => (
                self.nodes[o].name.clone(),
                self.nodes[o].display_name.clone(),
            ),
            None => (self.sub.name.clone(), self.sub.name.clone()),
        };
        let vars = owner.map(|o| self.scope_vars(o)).unwrap_or_default();
        let env = Vars {
            layers: vec![&vars, &self.globals],
        };
        let params = h
            .hook
            .args
            .parameters
            .iter()
            .map(|p| {
                let v = p.value.as_deref().unwrap_or_default();
                (p.name.clone(), substitute(v, &env).unwrap_or_default())
            })
            .collect();
        let call = Call {
            name: format!("{base}.hooks.{}", h.name),
            display: format!("{display}.hooks.{}", h.name),
            parent: None,
            tmpl: h.hook.tmpl.clone(),
            scope: h.hook.scope.clone(),
            params,
            artifacts: Vec::new(),
            link: Link::default(),
            attempt: None,
        };
        self.hooks_active += 1;
        let n = self.execute(call);
        self.meta[n].lifecycle = true;
    }

    /// A finished node's `metrics`, with `status`, `duration`, `exitCode`, its inputs and
    /// outputs as variables.
    fn node_metrics(&mut self, i: usize) {
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
        let samples = super::metrics::evaluate(m, &vars, &self.globals, Some(&n.id));
        self.actions
            .extend(samples.into_iter().map(|s| Action::Metric(Box::new(s))));
    }

    fn completed(&mut self, i: usize) {
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
    fn publish_globals(&mut self, i: usize) {
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

    fn notify(&mut self, i: usize) {
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

    fn release_slot(&mut self, slot: usize) {
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

    fn start_hook(&mut self, owner: usize, hook: &ExitHook) {
        let name = format!("{}.onExit", self.nodes[owner].name);
        let mut vars = self.scope_vars(owner);
        let n = &self.nodes[owner];
        vars.insert("status".into(), n.phase.as_str().into());
        let key_prefix = self.meta[owner].link.key.clone();
        if let Some(k) = key_prefix {
            publish(&mut vars, &k, n);
        }
        let env = Vars {
            layers: vec![&vars, &self.globals],
        };
        let params = hook
            .args
            .parameters
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    substitute(p.value.as_deref().unwrap_or_default(), &env).unwrap_or_default(),
                )
            })
            .collect();
        let call = Call {
            name: name.clone(),
            display: format!("{}.onExit", self.nodes[owner].display_name),
            parent: self.nodes[owner].parent,
            tmpl: hook.tmpl.clone(),
            scope: hook.scope.clone(),
            params,
            artifacts: Vec::new(),
            link: Link::default(),
            attempt: None,
        };
        let h = self.execute(call);
        self.nodes[h].hook_for = Some(owner);
    }

    /// The variables visible where node `i` was started (its parent frame).
    fn scope_vars(&self, i: usize) -> BTreeMap<String, String> {
        let mut p = self.nodes[i].parent;
        while let Some(x) = p {
            match &self.rt[x] {
                Rt::Steps(s) => return (*s.frame.vars).clone(),
                Rt::Dag(d) => return (*d.frame.vars).clone(),
                _ => p = self.nodes[x].parent,
            }
        }
        BTreeMap::new()
    }

    fn root_done(&mut self) {
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
            let params = args
                .parameters
                .iter()
                .map(|p| {
                    (
                        p.name.clone(),
                        substitute(p.value.as_deref().unwrap_or_default(), &env)
                            .unwrap_or_default(),
                    )
                })
                .collect();
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
            let h = self.execute(call);
            self.stopping = was_stopping.filter(|r| *r == StopReason::Terminated);
            self.nodes[h].hook_for = Some(root);
            self.exit_node = Some(h);
            return;
        }
        self.workflow_done();
    }

    fn workflow_done(&mut self) {
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
            let samples = super::metrics::evaluate(m, &BTreeMap::new(), &self.globals, None);
            self.actions
                .extend(samples.into_iter().map(|s| Action::Metric(Box::new(s))));
        }
        self.actions.push(Action::Finished { phase });
    }

    // ------------------------------------------------------------ retries

    fn next_attempt(&mut self, r: usize) {
        if self.stopping.is_some() {
            return;
        }
        let Rt::Retry(rt) = &mut self.rt[r] else {
            return;
        };
        let attempt = rt.attempts;
        rt.attempts += 1;
        let mut call = rt.call.clone();
        call.name = format!("{}({attempt})", call.name);
        call.display = format!("{}({attempt})", call.display);
        call.parent = Some(r);
        call.attempt = Some(attempt);
        call.link = Link::default();
        self.execute(call);
    }

    fn retry_child_done(&mut self, r: usize, child: usize) {
        let c = self.nodes[child].clone();
        let Rt::Retry(rt) = &self.rt[r] else { return };
        let succeeded = c.phase.is_ok();
        let policy_ok = match rt.policy.as_str() {
            "Always" => true,
            "OnError" => c.phase == Phase::Error,
            "OnTransientError" => c.phase == Phase::Error && is_transient(&c.message),
            _ => c.phase == Phase::Failed,
        };
        let within_limit = rt.limit.is_none_or(|l| rt.attempts <= l);
        let started = self.nodes[r].started_at.unwrap_or(self.now);
        let mut delay = 0i64;
        let mut over_max = false;
        if let Some((dur, factor, max, cap)) = rt.backoff {
            // saturating (a float cast), then within the engine's clock
            let d = ((dur as f64 * factor.powi(rt.attempts.saturating_sub(1) as i32)) as i64)
                .min(limits::MAX_DURATION_MS);
            delay = cap.map_or(d, |c| d.min(c));
            over_max =
                max.is_some_and(|m| self.now.saturating_add(delay).saturating_sub(started) > m);
        }
        let expr_ok = match &rt.expression {
            None => true,
            Some(e) => {
                let mut vars = BTreeMap::new();
                vars.insert(
                    "lastRetry.exitCode".to_string(),
                    c.outputs
                        .exit_code
                        .map(|x| x.to_string())
                        .unwrap_or_else(|| "-1".into()),
                );
                vars.insert("lastRetry.status".to_string(), c.phase.as_str().to_string());
                vars.insert(
                    "lastRetry.duration".to_string(),
                    ((c.finished_at.unwrap_or(self.now) - c.started_at.unwrap_or(self.now)) / 1000)
                        .to_string(),
                );
                vars.insert("lastRetry.message".to_string(), c.message.clone());
                // `{{inputs.parameters.x}}` tags in the expression are the call's values
                let local = self.local_vars(&rt.call);
                let e = &substitute(
                    e,
                    &Vars {
                        layers: vec![&local, &self.globals],
                    },
                )
                .unwrap_or_else(|_| e.clone());
                expr::eval_bool(
                    e,
                    Mode::Expr,
                    &Vars {
                        layers: vec![&vars, &self.globals],
                    },
                )
                .unwrap_or(false)
            }
        };
        if succeeded
            || !policy_ok
            || !within_limit
            || over_max
            || !expr_ok
            || self.stopping.is_some()
        {
            let n = &mut self.nodes[r];
            n.outputs = c.outputs.clone();
            let msg = if !succeeded && !within_limit {
                format!("{} (no more retries left)", c.message)
            } else {
                c.message.clone()
            };
            self.finish_node(r, c.phase, if succeeded { String::new() } else { msg });
            return;
        }
        if delay > 0 {
            self.nodes[r].message = format!("Backoff for {}s", delay / 1000);
            self.arm(
                Timer::Backoff(self.nodes[r].id.clone()),
                self.now.saturating_add(delay),
            );
        } else {
            self.next_attempt(r);
        }
    }

    // ------------------------------------------------------------ steps

    fn start_group(&mut self, s: usize) {
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
    fn start_step(&mut self, owner: usize, parent: usize, step: Step, name: String, kind: &str) {
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

    fn render_when(&self, when: &str, vars: &BTreeMap<String, String>) -> String {
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
    fn mask_forms(&self, secrets: &[String]) -> Vec<String> {
        let run = &self.templates.mask;
        // a task's secrets come from the run's Secrets: their forms are made already
        if secrets.iter().all(|s| s.len() < 3 || run.contains(s)) {
            return run.clone();
        }
        crate::mask::forms(secrets.iter().chain(run).map(String::as_str))
    }

    /// A call used only to create a node (skipped, errored, or a loop's group).
    fn skeleton(&self, name: &str, display: &str, parent: usize, owner: usize, link: Link) -> Call {
        let (tmpl, scope) = match &self.rt[owner] {
            Rt::Steps(s) => (s.frame.tmpl.clone(), s.frame.scope.clone()),
            Rt::Dag(d) => (d.frame.tmpl.clone(), d.frame.scope.clone()),
            _ => (Arc::new(Template::default()), TemplateScope::Workflow),
        };
        Call {
            name: name.into(),
            display: display.into(),
            parent: Some(parent),
            tmpl,
            scope,
            params: Vec::new(),
            artifacts: Vec::new(),
            link,
            attempt: None,
        }
    }

    fn loop_items(
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

    /// Builds the call for a step: `when`, arguments and template resolution. `Ok(None)`: skipped.
    #[allow(clippy::too_many_arguments)]
    fn step_call(
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
        let mut artifacts = Vec::new();
        let frame_arts = self.frame_artifacts(parent);
        for a in &step.arguments.artifacts {
            if let Some(from) = &a.from {
                let key = from
                    .trim()
                    .trim_start_matches("{{")
                    .trim_end_matches("}}")
                    .trim();
                let key = substitute(key, &env).unwrap_or(key.to_string());
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
                    &substitute(&raw.data, &env).map_err(|e| e.to_string())?,
                ));
            } else if let Some(url) = a
                .http
                .as_ref()
                .and_then(|h| h.get("url"))
                .and_then(Json::as_str)
            {
                artifacts.push(http_artifact(
                    &a.name,
                    &substitute(url, &env).map_err(|e| e.to_string())?,
                ));
            } else if let Some(s3) = a.s3.as_ref().filter(|_| a.key_only().is_none()) {
                let u = self
                    .s3_url(s3, &env)
                    .map_err(|e| format!("arguments.artifacts.{}: {e}", a.name))?;
                artifacts.push(http_artifact(&a.name, &u));
            } else if let Some(g) = &a.git {
                let u =
                    git_url(g, &env).map_err(|e| format!("arguments.artifacts.{}: {e}", a.name))?;
                artifacts.push(http_artifact(&a.name, &u));
            } else if let Some(key) = a.key_only() {
                artifacts.push(keyed_artifact(
                    &a.name,
                    &substitute(key, &env).map_err(|e| e.to_string())?,
                ));
            } else if let Some(fe) = &a.from_expression {
                let v = expr::eval(
                    fe,
                    Mode::Expr,
                    &ArtEnv {
                        vars: &env,
                        arts: &frame_arts,
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

    fn frame_artifacts(&self, node: usize) -> Arc<BTreeMap<String, ArtifactRef>> {
        let mut p = Some(node);
        while let Some(x) = p {
            match &self.rt[x] {
                Rt::Steps(s) => return s.frame.arts.clone(),
                Rt::Dag(d) => return d.frame.arts.clone(),
                _ => p = self.nodes[x].parent,
            }
        }
        Arc::default()
    }

    fn group_child_done(&mut self, g: usize, child: usize) {
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

    fn frame_mut(&mut self, i: usize) -> &mut Frame {
        match &mut self.rt[i] {
            Rt::Steps(s) => &mut s.frame,
            Rt::Dag(d) => &mut d.frame,
            _ => unreachable!("frame_mut on a node without a frame"),
        }
    }

    /// Publishes node `i`'s results under `key` (`steps.X` / `tasks.X`).
    fn publish_node(
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

    /// Aggregated outputs of a loop, as Argo does: JSON lists.
    fn publish_loop(&self, vars: &mut BTreeMap<String, String>, key: &str, tg: usize) {
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
                    lists
                        .entry(k.clone())
                        .or_default()
                        .push(Json::String(v.clone()));
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

    pub(super) fn group_done(&mut self, g: usize) {
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

    fn steps_done(&mut self, s: usize) {
        self.finish_steps(s, Phase::Succeeded, String::new());
    }

    fn finish_steps(&mut self, s: usize, phase: Phase, msg: String) {
        if phase == Phase::Succeeded
            && let Err(e) = self.template_outputs(s)
        {
            self.finish_node(s, Phase::Error, e);
            return;
        }
        self.finish_node(s, phase, msg);
    }

    /// Outputs of a steps/DAG template: `valueFrom.parameter`/`expression`, artifacts `from`.
    fn template_outputs(&mut self, s: usize) -> Result<(), String> {
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
            } else {
                p.value
                    .as_ref()
                    .map(|v| substitute(v, &env).unwrap_or(v.clone()))
                    .or_else(|| vf.and_then(|v| v.default.clone()))
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

    // ------------------------------------------------------------ DAG

    fn start_dag(&mut self, d: usize, call: &Call) {
        let dag = call.tmpl.dag.clone().unwrap_or_default();
        let frame = self.frame(call);
        let env_vars = frame.vars.clone();
        let mut tasks: Vec<TaskRt> = Vec::new();
        let mut index = HashMap::new();
        for (i, t) in dag.tasks.iter().enumerate() {
            index.insert(t.name.clone(), i);
        }
        for t in &dag.tasks {
            let (depends, handles) = match &t.depends {
                Some(src) => {
                    let d =
                        Depends::parse(src).unwrap_or(Depends::Task(String::new(), String::new()));
                    let mut h = Vec::new();
                    collect_handles(&d, &mut h);
                    (d, h)
                }
                None => {
                    let mut it = t.dependencies.iter();
                    let d = it.next().map(|first| {
                        it.fold(Depends::Task(first.clone(), "Legacy".into()), |acc, n| {
                            Depends::And(
                                Box::new(acc),
                                Box::new(Depends::Task(n.clone(), "Legacy".into())),
                            )
                        })
                    });
                    (
                        d.unwrap_or(Depends::Task(String::new(), "None".into())),
                        Vec::new(),
                    )
                }
            };
            let mut names = Vec::new();
            depends.tasks(&mut names);
            let deps: Vec<usize> = names.iter().filter_map(|n| index.get(n).copied()).collect();
            tasks.push(TaskRt {
                step: t.clone(),
                depends,
                handles,
                deps,
                dependents: Vec::new(),
                waiting_on: 0,
                node: None,
                done: false,
                wanted: true,
            });
        }
        for i in 0..tasks.len() {
            for dep in tasks[i].deps.clone() {
                tasks[dep].dependents.push(i);
            }
            tasks[i].waiting_on = tasks[i].deps.len();
        }
        if let Some(target) = &dag.target {
            let target = substitute(
                target,
                &Vars {
                    layers: vec![&env_vars, &self.globals],
                },
            )
            .unwrap_or(target.clone());
            for t in tasks.iter_mut() {
                t.wanted = false;
            }
            let mut stack: Vec<usize> = target
                .split([' ', ','])
                .filter(|s| !s.is_empty())
                .filter_map(|n| index.get(n).copied())
                .collect();
            while let Some(t) = stack.pop() {
                if !tasks[t].wanted {
                    tasks[t].wanted = true;
                    stack.extend(tasks[t].deps.iter().copied());
                }
            }
        }
        let limit = call.tmpl.parallelism.map(|p| p.max(1) as usize);
        let handled = tasks
            .iter()
            .flat_map(|t| t.handles.iter().cloned())
            .collect();
        self.rt[d] = Rt::Dag(Box::new(DagRt {
            frame,
            tasks,
            index,
            active: 0,
            limit,
            deferred: VecDeque::new(),
            halted: false,
            running: 0,
            handled,
        }));
        let roots: Vec<usize> = match &self.rt[d] {
            Rt::Dag(dr) => (0..dr.tasks.len())
                .filter(|&i| dr.tasks[i].waiting_on == 0 && dr.tasks[i].wanted)
                .collect(),
            _ => Vec::new(),
        };
        if roots.is_empty() {
            self.dag_maybe_done(d);
            return;
        }
        for t in roots {
            self.dag_consider(d, t);
        }
        self.dag_maybe_done(d);
    }

    /// A task whose dependencies are all finished: run it, or omit it.
    fn dag_consider(&mut self, d: usize, t: usize) {
        let Rt::Dag(dr) = &self.rt[d] else { return };
        if dr.tasks[t].node.is_some() || dr.tasks[t].done || !dr.tasks[t].wanted {
            return;
        }
        let step = dr.tasks[t].step.clone();
        let depends = dr.tasks[t].depends.clone();
        let halted = dr.halted;
        let ok = depends.eval(&|name, result| self.dag_check(d, name, result));
        let name = format!("{}.{}", self.nodes[d].name, step.name);
        if halted || self.stopping.is_some() {
            return;
        }
        if !ok {
            let legacy = matches!(&depends, Depends::Task(_, r) if r == "Legacy")
                || matches!(&depends, Depends::And(..)) && step.depends.is_none();
            if legacy {
                // plain `dependencies`: a failed dependency means the task never runs
                return;
            }
            let link = Link {
                key: Some(format!("tasks.{}", step.name)),
                task: Some(t),
                ..Link::default()
            };
            let call = self.skeleton(&name, &step.name, d, d, link);
            let i = self.new_node(&call, NodeType::Skipped);
            self.nodes[i].template = step_template_name(&step);
            if let Rt::Dag(dr) = &mut self.rt[d] {
                dr.tasks[t].node = Some(i);
                dr.running += 1;
            }
            self.finish_node(
                i,
                Phase::Omitted,
                "omitted: depends condition not met".into(),
            );
            return;
        }
        if let Rt::Dag(dr) = &mut self.rt[d] {
            dr.tasks[t].node = Some(usize::MAX);
            dr.running += 1;
        }
        self.start_step(d, d, step, name, "tasks");
    }

    fn dag_check(&self, d: usize, name: &str, result: &str) -> bool {
        let Rt::Dag(dr) = &self.rt[d] else {
            return false;
        };
        if name.is_empty() {
            return result == "None";
        }
        let Some(&t) = dr.index.get(name) else {
            return false;
        };
        let task = &dr.tasks[t];
        let Some(i) = task.node.filter(|&i| i != usize::MAX) else {
            return false;
        };
        let n = &self.nodes[i];
        let cont = &self.meta[i].link.continue_on;
        let children_phases = || {
            n.children
                .iter()
                .map(|&c| self.nodes[c].phase)
                .collect::<Vec<_>>()
        };
        match result {
            "Succeeded" => n.phase == Phase::Succeeded,
            "Failed" => n.phase == Phase::Failed,
            "Errored" => n.phase == Phase::Error,
            "Skipped" => matches!(n.phase, Phase::Skipped | Phase::Omitted),
            "Omitted" => n.phase == Phase::Omitted,
            "Completed" => matches!(n.phase, Phase::Succeeded | Phase::Failed),
            "Daemoned" => false,
            "AnySucceeded" => children_phases().contains(&Phase::Succeeded),
            "AllFailed" => {
                let c = children_phases();
                !c.is_empty() && c.iter().all(|p| matches!(p, Phase::Failed | Phase::Error))
            }
            _ => {
                matches!(n.phase, Phase::Succeeded | Phase::Skipped | Phase::Omitted)
                    || (n.phase == Phase::Failed && cont.failed)
                    || (n.phase == Phase::Error && cont.error)
            }
        }
    }

    fn dag_child_done(&mut self, d: usize, child: usize) {
        let Some(t) = self.meta[child].link.task else {
            return;
        };
        if let Some(key) = self.meta[child].link.key.clone() {
            let mut vars = std::mem::take(&mut self.frame_mut(d).vars);
            let mut arts = std::mem::take(&mut self.frame_mut(d).arts);
            self.publish_node(
                Arc::make_mut(&mut vars),
                Arc::make_mut(&mut arts),
                &key,
                child,
            );
            let f = self.frame_mut(d);
            f.vars = vars;
            f.arts = arts;
        }
        let phase = self.nodes[child].phase;
        let cont = self.meta[child].link.continue_on.clone();
        let Rt::Dag(dr) = &mut self.rt[d] else { return };
        if !dr.tasks[t].done {
            dr.running = dr.running.saturating_sub(1);
        }
        dr.tasks[t].done = true;
        dr.tasks[t].node = Some(child);
        let failed_hard = matches!(phase, Phase::Failed | Phase::Error)
            && !(phase == Phase::Failed && cont.failed)
            && !(phase == Phase::Error && cont.error);
        let name = dr.tasks[t].step.name.clone();
        let handled = dr.handled.contains(&name);
        let fail_fast = dr
            .frame
            .tmpl
            .dag
            .as_ref()
            .and_then(|x| x.fail_fast)
            .unwrap_or(true);
        if failed_hard && !handled && fail_fast {
            dr.halted = true;
            dr.deferred.clear();
        }
        let dependents = dr.tasks[t].dependents.clone();
        for dep in dependents {
            let ready = {
                let Rt::Dag(dr) = &mut self.rt[d] else { return };
                dr.tasks[dep].waiting_on = dr.tasks[dep].waiting_on.saturating_sub(1);
                dr.tasks[dep].waiting_on == 0
            };
            if ready {
                self.dag_consider(d, dep);
            }
        }
        self.dag_maybe_done(d);
    }

    pub(super) fn dag_maybe_done(&mut self, d: usize) {
        if self.nodes[d].phase.is_done() {
            return;
        }
        let Rt::Dag(dr) = &self.rt[d] else { return };
        let running = dr.running > 0 || !dr.deferred.is_empty();
        if running {
            return;
        }
        // phase: a failed task fails the DAG unless continued or handled by a dependent's depends
        let mut failure = None;
        for t in &dr.tasks {
            let Some(i) = t.node.filter(|&i| i != usize::MAX) else {
                continue;
            };
            let n = &self.nodes[i];
            let cont = &self.meta[i].link.continue_on;
            let hard = matches!(n.phase, Phase::Failed | Phase::Error)
                && !(n.phase == Phase::Failed && cont.failed)
                && !(n.phase == Phase::Error && cont.error);
            let handled = dr.handled.contains(&t.step.name);
            if hard && !handled && failure.is_none() {
                failure = Some(format!(
                    "task '{}' {}",
                    n.name,
                    n.phase.as_str().to_lowercase()
                ));
            }
        }
        match failure {
            Some(m) => self.finish_node(d, Phase::Failed, m),
            None if self.stopping.is_some() => {
                let m = self.message.clone();
                self.finish_node(d, Phase::Failed, m)
            }
            None => self.finish_steps(d, Phase::Succeeded, String::new()),
        }
    }
}

/// The template a step names, for display on nodes that never ran it.
fn step_template_name(step: &Step) -> String {
    step.template
        .clone()
        .or_else(|| step.template_ref.as_ref().map(|r| r.template.clone()))
        .unwrap_or_default()
}

fn collect_handles(d: &Depends, out: &mut Vec<String>) {
    match d {
        Depends::Task(t, r) if !r.is_empty() && r != "Succeeded" => out.push(t.clone()),
        Depends::Task(..) => {}
        Depends::Not(x) => collect_handles(x, out),
        Depends::And(a, b) | Depends::Or(a, b) => {
            collect_handles(a, out);
            collect_handles(b, out);
        }
    }
}

/// Publishes a single node's results under `key`.
fn publish(vars: &mut BTreeMap<String, String>, key: &str, n: &Node) {
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

/// Whether an `http` task succeeded: its `successCondition` (an expr expression over
/// `response.statusCode`, `response.body` and `response.headers`), or a 2xx status without one.
fn http_outcome(h: &Json, r: &HttpResponse, body: &str) -> Result<(), String> {
    struct Response<'a>(&'a HttpResponse, &'a str);
    impl expr::Env for Response<'_> {
        fn var(&self, name: &str) -> Option<expr::Val> {
            use expr::Val;
            match name {
                "response.statusCode" => Some(Val::Int(i64::from(self.0.status))),
                "response.body" => Some(Val::Str(self.1.to_string())),
                "response.headers" => {
                    let mut m: BTreeMap<String, Vec<Val>> = BTreeMap::new();
                    for (k, v) in &self.0.headers {
                        m.entry(k.clone()).or_default().push(Val::Str(v.clone()));
                    }
                    Some(Val::Map(
                        m.into_iter().map(|(k, l)| (k, Val::List(l))).collect(),
                    ))
                }
                _ => None,
            }
        }
    }
    match h.get("successCondition").and_then(Json::as_str) {
        Some(cond) => {
            match expr::eval(cond, Mode::Expr, &Response(r, body)).and_then(|v| v.truthy()) {
                Ok(true) => Ok(()),
                Ok(false) => Err(format!(
                    "successCondition `{cond}` is false (status {})",
                    r.status
                )),
                Err(e) => Err(format!("successCondition `{cond}`: {}", e.0)),
            }
        }
        None if (200..300).contains(&r.status) => Ok(()),
        None => Err(format!("HTTP status {}", r.status)),
    }
}

/// Environment variables, in order.
type EnvVars = Vec<(String, String)>;

/// A `readinessProbe` as this host runs it: network probes go to 127.0.0.1.
fn probe(p: &Json) -> Result<Probe, String> {
    let ms = |k: &str, default: u64| {
        p.get(k)
            .and_then(Json::as_u64)
            .map(|s| s.saturating_mul(1000).min(limits::MAX_DURATION_MS as u64))
            .unwrap_or(default)
    };
    let port = |v: Option<&Json>| -> Result<u16, String> {
        v.and_then(|x| {
            x.as_u64()
                .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
        })
        .and_then(|n| u16::try_from(n).ok())
        .ok_or_else(|| {
            "readinessProbe: the port must be a number (named ports need Kubernetes)".to_string()
        })
    };
    let check = if let Some(e) = p.get("exec") {
        let cmd: Vec<String> = e
            .get("command")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect();
        if cmd.is_empty() {
            return Err("readinessProbe.exec needs a command".into());
        }
        ProbeCheck::Exec(cmd)
    } else if let Some(h) = p.get("httpGet") {
        ProbeCheck::Http {
            port: port(h.get("port"))?,
            path: h
                .get("path")
                .and_then(Json::as_str)
                .unwrap_or("/")
                .to_string(),
        }
    } else if let Some(t) = p.get("tcpSocket") {
        ProbeCheck::Tcp {
            port: port(t.get("port"))?,
        }
    } else {
        return Err("readinessProbe needs exec, httpGet or tcpSocket".into());
    };
    // Kubernetes probes every 10 s by default; one host answers sooner, so 1 s unless set
    Ok(Probe {
        check,
        initial_delay_ms: ms("initialDelaySeconds", 0),
        period_ms: ms("periodSeconds", 1000),
    })
}

fn is_transient(msg: &str) -> bool {
    let m = msg.to_lowercase();
    [
        "lost",
        "connection reset",
        "timeout",
        "temporarily",
        "resource temporarily unavailable",
    ]
    .iter()
    .any(|p| m.contains(p))
}

/// A path a task exchanges files through may not climb out of where it is declared (`..`):
/// it could reach other runs' files on the host.
fn no_escape(what: &str, name: &str, path: &str) -> Result<(), String> {
    if std::path::Path::new(path)
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(format!(
            "{what}.{name}: path `{path}` climbs out of its directory with `..`; give the path itself"
        ));
    }
    Ok(())
}

/// A `git` input as `git+REPO#REVISION[?depth=N]`: cloned (by the system's git) before its task
/// starts. Credentials are not supported yet and are refused by name.
fn git_url(g: &Json, env: &Vars) -> Result<String, String> {
    for field in ["usernameSecret", "passwordSecret", "sshPrivateKeySecret"] {
        if g.get(field).is_some() {
            return Err(format!(
                "git.{field}: git credentials are not supported yet (public or local repositories only)"
            ));
        }
    }
    let field = |k: &str| -> Result<Option<String>, String> {
        g.get(k)
            .and_then(Json::as_str)
            .map(|v| substitute(v, env).map_err(|e| e.to_string()))
            .transpose()
    };
    let repo = field("repo")?.ok_or("git.repo is required")?;
    let rev = field("revision")?
        .or(field("branch")?)
        .unwrap_or_else(|| "HEAD".into());
    let mut url = format!("git+{repo}#{rev}");
    if let Some(d) = g.get("depth").and_then(Json::as_u64) {
        url += &format!("?depth={d}");
    }
    Ok(url)
}

/// An `http` input: fetched into the repository before its task starts.
fn http_artifact(name: &str, url: &str) -> ArtifactRef {
    ArtifactRef {
        name: name.into(),
        key: String::new(),
        hash: String::new(),
        size: 0,
        archived: false,
        raw: None,
        sub_path: None,
        url: Some(url.into()),
    }
}

fn raw_artifact(name: &str, data: &str) -> ArtifactRef {
    ArtifactRef {
        name: name.into(),
        key: String::new(),
        hash: String::new(),
        size: data.len() as u64,
        archived: false,
        raw: Some(data.into()),
        sub_path: None,
        url: None,
    }
}

/// A key-only artifact: whatever the default repository holds under `key` (a file, or the
/// files under it), found when the task starts.
fn keyed_artifact(name: &str, key: &str) -> ArtifactRef {
    ArtifactRef {
        name: name.into(),
        key: key.trim_end_matches('/').into(),
        hash: String::new(),
        size: 0,
        archived: false,
        raw: None,
        sub_path: None,
        url: None,
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        s.to_string()
    } else {
        format!("{}…", &s[..s.floor_char_boundary(n)])
    }
}

/// The label Argo puts in a loop child's name: `(0:value)`; map items as `key:value` pairs in
/// key order, as Go's JSON encoding of a map gives them.
fn item_label(item: &Json) -> String {
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

/// Substitutes `{{…}}` inside the strings of a JSON value (withItems entries).
fn subst_json(v: &Json, env: &Vars) -> Result<Json, String> {
    Ok(match v {
        Json::String(s) => Json::String(substitute(s, env).map_err(|e| e.to_string())?),
        Json::Array(a) => Json::Array(
            a.iter()
                .map(|x| subst_json(x, env))
                .collect::<Result<_, _>>()?,
        ),
        Json::Object(o) => Json::Object(
            o.iter()
                .map(|(k, x)| Ok((k.clone(), subst_json(x, env)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// Go's `fmt.Sprintf` for one integer, as withSequence's `format` uses it (`%02d`, `%d`, `%x`).
pub fn go_sprintf(fmt: &str, n: i64) -> String {
    let mut out = String::new();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut flags = String::new();
        while let Some(&f) = chars.peek() {
            if f.is_ascii_digit() || f == '-' || f == '+' || f == ' ' {
                flags.push(f);
                chars.next();
            } else {
                break;
            }
        }
        let zero = flags.starts_with('0');
        let left = flags.starts_with('-');
        let width: usize = flags
            .trim_start_matches(['0', '-', '+', ' '])
            .parse()
            .unwrap_or(0);
        let body = match chars.next() {
            Some('d') | Some('v') => n.to_string(),
            Some('x') => format!("{n:x}"),
            Some('X') => format!("{n:X}"),
            Some('o') => format!("{n:o}"),
            Some('%') => "%".into(),
            Some(other) => format!("%!{other}(int={n})"),
            None => "%!(NOVERB)".into(),
        };
        let padded = if body.len() >= width {
            body
        } else if left {
            format!("{body:<width$}")
        } else if zero {
            let (sign, digits) = body
                .strip_prefix('-')
                .map(|d| ("-", d))
                .unwrap_or(("", &body));
            format!("{sign}{:0>w$}", digits, w = width - sign.len())
        } else {
            format!("{body:>width$}")
        };
        out.push_str(&padded);
    }
    out
}

/// Parses resource quantities (`500m`, `2`, `1Gi`, `512Mi`) into requests.
fn requests(req: &BTreeMap<String, Json>, lim: &BTreeMap<String, Json>) -> Requests {
    let get = |k: &str| {
        req.get(k).or_else(|| lim.get(k)).map(|v| match v {
            Json::String(s) => s.clone(),
            other => other.to_string(),
        })
    };
    let cpu = get("cpu").map(|s| match s.strip_suffix('m') {
        Some(m) => m.parse::<f64>().unwrap_or(0.0) as u64,
        None => (s.parse::<f64>().unwrap_or(0.0) * 1000.0) as u64,
    });
    let mem = get("memory").map(|s| quantity(&s));
    let gpus = get("nvidia.com/gpu")
        .or_else(|| get("gpu"))
        .and_then(|s| s.parse::<u32>().ok());
    Requests {
        cpu_millis: cpu.unwrap_or(0),
        memory_bytes: mem.unwrap_or(0),
        gpus: gpus.unwrap_or(0),
    }
}

/// A Kubernetes quantity (`512Mi`, `1G`, `3`) as a number.
pub fn quantity(s: &str) -> u64 {
    let units = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (u, m) in units {
        if let Some(n) = s.strip_suffix(u) {
            return (n.parse::<f64>().unwrap_or(0.0) * m as f64) as u64;
        }
    }
    s.parse::<f64>().unwrap_or(0.0) as u64
}

struct ArtEnv<'a> {
    vars: &'a Vars<'a>,
    arts: &'a BTreeMap<String, ArtifactRef>,
}

impl expr::Env for ArtEnv<'_> {
    fn var(&self, name: &str) -> Option<Val> {
        if self.arts.contains_key(name) {
            return Some(Val::Str(name.to_string()));
        }
        self.vars.var(name)
    }
}

//! Node creation: a call becomes a node, and a template decides what kind (pod, steps, DAG, suspend, retry, memoized, locked).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value as Json;

use super::*;
use crate::limits;
use crate::run::sync;
use crate::run::vars::{Vars, parse_duration};
use crate::run::*;
use crate::subst::substitute;

impl Run {
    pub(super) fn new_node(&mut self, call: &Call, node_type: NodeType) -> usize {
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
            restarted: false,
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
    pub(in crate::run) fn launch(&mut self, call: Call) -> usize {
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
    pub(super) fn execute(&mut self, call: Call) -> usize {
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

    pub(super) fn execute_bounded(&mut self, call: Call) -> usize {
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
                    let env = Vars {
                        layers: vec![&globals],
                    };
                    let v = match substitute(&v, &env) {
                        Ok(v) => v,
                        Err(e) => {
                            problems.push(format!("inputs.parameters.{}: {e}", p.name));
                            v
                        }
                    };
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
                let env = Vars {
                    layers: vec![&globals],
                };
                match substitute(&raw.data, &env) {
                    Ok(data) => artifacts.push(raw_artifact(&a.name, &data)),
                    Err(e) => problems.push(format!("inputs.artifacts.{}.raw: {e}", a.name)),
                }
            } else if let Some((url, src)) = http_location(a) {
                let vars = self.local_vars(&call);
                let env = Vars {
                    layers: vec![&vars, &globals],
                };
                match (substitute(&url, &env), self.http_access(&src)) {
                    (Ok(u), Ok(_)) => artifacts.push(ArtifactRef {
                        http: Some(src),
                        ..http_artifact(&a.name, &u)
                    }),
                    (Err(e), _) => {
                        problems.push(format!("inputs.artifacts.{}.http.url: {e}", a.name))
                    }
                    (_, Err(e)) => problems.push(format!("inputs.artifacts.{}: {e}", a.name)),
                }
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
                match substitute(key, &env) {
                    Ok(k) => artifacts.push(keyed_artifact(&a.name, &k)),
                    Err(e) => problems.push(format!("inputs.artifacts.{}: key: {e}", a.name)),
                }
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
            let key = match substitute(key, &env) {
                Ok(key) => key,
                Err(e) => {
                    let i = self.new_node(&call, NodeType::Pod);
                    self.finish_node(i, Phase::Error, format!("memoize.key: {e}"));
                    return i;
                }
            };
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
                        match crate::run::duration_ms(&t) {
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
                match crate::run::duration_ms(&d) {
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
    pub(super) fn local_vars(&self, call: &Call) -> BTreeMap<String, String> {
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

    pub(super) fn frame(&self, call: &Call) -> Frame {
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

    /// The variables visible where node `i` was started (its parent frame).
    pub(super) fn scope_vars(&self, i: usize) -> BTreeMap<String, String> {
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

    /// A call used only to create a node (skipped, errored, or a loop's group).
    pub(super) fn skeleton(
        &self,
        name: &str,
        display: &str,
        parent: usize,
        owner: usize,
        link: Link,
    ) -> Call {
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

    pub(super) fn frame_artifacts(&self, node: usize) -> Arc<BTreeMap<String, ArtifactRef>> {
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

    pub(super) fn frame_mut(&mut self, i: usize) -> &mut Frame {
        match &mut self.rt[i] {
            Rt::Steps(s) => &mut s.frame,
            Rt::Dag(d) => &mut d.frame,
            _ => unreachable!("frame_mut on a node without a frame"),
        }
    }
}

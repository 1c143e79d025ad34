//! DAG templates: readiness by `dependencies`/`depends`, fail-fast, completion.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::*;
use crate::expr::Depends;
use crate::run::vars::Vars;
use crate::run::*;
use crate::subst::substitute;

/// The tasks a written `depends` names: their failures are its to weigh (`a && (b || c)` runs
/// after b failed if c succeeded), so they do not stop the DAG from starting more tasks.
pub(super) fn collect_handles(d: &Depends, out: &mut Vec<String>) {
    match d {
        Depends::Task(t, _) if !t.is_empty() => out.push(t.clone()),
        Depends::Task(..) => {}
        Depends::Not(x) => collect_handles(x, out),
        Depends::And(a, b) | Depends::Or(a, b) => {
            collect_handles(a, out);
            collect_handles(b, out);
        }
    }
}
impl Run {
    pub(super) fn start_dag(&mut self, d: usize, call: &Call) {
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
            let env = Vars {
                layers: vec![&env_vars, &self.globals],
            };
            let target = match substitute(target, &env) {
                Ok(t) => t,
                Err(e) => return self.finish_node(d, Phase::Error, format!("dag.target: {e}")),
            };
            for t in tasks.iter_mut() {
                t.wanted = false;
            }
            let names: Vec<&str> = target.split([' ', ',']).filter(|s| !s.is_empty()).collect();
            // a target that names no task would run nothing and succeed
            if let Some(unknown) = names.iter().find(|n| !index.contains_key(**n)) {
                return self.finish_node(
                    d,
                    Phase::Error,
                    format!("dag.target: `{unknown}` is not a task of this DAG"),
                );
            }
            let mut stack: Vec<usize> = names.iter().map(|n| index[*n]).collect();
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
    pub(super) fn dag_consider(&mut self, d: usize, t: usize) {
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

    pub(super) fn dag_check(&self, d: usize, name: &str, result: &str) -> bool {
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

    pub(super) fn dag_child_done(&mut self, d: usize, child: usize) {
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

    pub(in crate::run) fn dag_maybe_done(&mut self, d: usize) {
        if self.nodes[d].phase.is_done() {
            return;
        }
        let Rt::Dag(dr) = &self.rt[d] else { return };
        let running = dr.running > 0 || !dr.deferred.is_empty();
        if running {
            return;
        }
        // phase, as Argo assesses it (`assessDAGPhase`): each target task (`dag.target`'s, else
        // those no wanted task depends on) takes its branch's phase: its own if it completed,
        // else (omitted, or never started) its dependencies' branch phases, a failure first. A
        // target whose branch failed fails the DAG, unless it continues on that phase.
        let tasks = &dr.tasks;
        let mut branch: Vec<Option<(Phase, usize)>> = vec![None; tasks.len()];
        let mut waiting: Vec<usize> = tasks.iter().map(|t| t.deps.len()).collect();
        let mut ready: Vec<usize> = (0..tasks.len()).filter(|&t| waiting[t] == 0).collect();
        while let Some(t) = ready.pop() {
            let own = tasks[t]
                .node
                .filter(|&i| i != usize::MAX)
                .filter(|&i| {
                    matches!(
                        self.nodes[i].phase,
                        Phase::Succeeded | Phase::Failed | Phase::Error | Phase::Skipped
                    )
                })
                .map(|i| (self.nodes[i].phase, i));
            branch[t] = own.or_else(|| {
                let inherited = tasks[t].deps.iter().filter_map(|&p| branch[p]);
                let mut first = None;
                for (phase, origin) in inherited {
                    if matches!(phase, Phase::Failed | Phase::Error) {
                        return Some((phase, origin));
                    }
                    first = first.or(Some((phase, origin)));
                }
                first
            });
            for &next in &tasks[t].dependents {
                waiting[next] -= 1;
                if waiting[next] == 0 {
                    ready.push(next);
                }
            }
        }
        let target =
            |t: usize| tasks[t].wanted && !tasks[t].dependents.iter().any(|&x| tasks[x].wanted);
        let mut failure = None;
        for t in (0..tasks.len()).filter(|&t| target(t)) {
            let Some((phase, origin)) = branch[t] else {
                continue;
            };
            let cont = tasks[t].step.continue_on.clone().unwrap_or_default();
            let hard = match phase {
                Phase::Failed => !cont.failed,
                Phase::Error => !cont.error,
                _ => false,
            };
            if hard {
                let n = &self.nodes[origin];
                failure = Some(format!(
                    "task '{}' {}",
                    n.name,
                    n.phase.as_str().to_lowercase()
                ));
                break;
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

//! Two executors behind one: each task goes to the one that runs its kind. A run whose tasks
//! run in containers still runs on the host what runs no image of its own — `http`, `data`
//! and `resource` templates, which Argo too runs outside the workflow's containers (in its
//! agent, its executor, the controller) — and a template may ask for the other executor by its
//! `weir.dev/executor` annotation.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::mpsc::Sender;

use weir_core::run::{Access, ArtifactRef, ExecutorKind, TaskResult, TaskSpec};

use crate::shared::lock;
use crate::{Executor, Update};

pub struct Routed {
    /// Runs a task in a container of its image.
    containers: Box<dyn Executor>,
    /// Runs a task as a host process (and fetches remote inputs).
    host: Box<dyn Executor>,
    /// Where a task that asks for neither goes.
    default: ExecutorKind,
    /// Whether a template may ask for host processes (a server that runs containers keeps its
    /// tasks in them).
    host_allowed: bool,
    /// The executor each running task went to (true: containers).
    placed: Mutex<HashMap<String, bool>>,
    /// Where a task refused here is reported.
    tx: Mutex<Sender<Update>>,
}

impl Routed {
    pub fn new(
        containers: Box<dyn Executor>,
        host: Box<dyn Executor>,
        default: ExecutorKind,
        host_allowed: bool,
        tx: Sender<Update>,
    ) -> Routed {
        Routed {
            containers,
            host,
            default,
            host_allowed,
            placed: Mutex::default(),
            tx: Mutex::new(tx),
        }
    }

    /// Whether `task` runs in a container: never a task with no image of its own; else as its
    /// template asks, else the run's default.
    fn in_container(&self, task: &TaskSpec) -> Result<bool, String> {
        if task.http.is_some() || task.data.is_some() || task.child.is_some() {
            return Ok(false);
        }
        self.asked(task.executor)
    }

    /// Whether a task whose template asks for `executor` runs in a container.
    fn asked(&self, executor: Option<ExecutorKind>) -> Result<bool, String> {
        match executor.unwrap_or(self.default) {
            ExecutorKind::Docker => Ok(true),
            ExecutorKind::Local if self.default == ExecutorKind::Docker && !self.host_allowed => {
                Err(
                    "weir.dev/executor: local: this server runs every task in a container \
                     (--executor docker); it does not run tasks as host processes"
                        .into(),
                )
            }
            ExecutorKind::Local => Ok(false),
        }
    }

    fn of(&self, node: &str) -> &dyn Executor {
        match lock(&self.placed).get(node) {
            Some(false) => self.host.as_ref(),
            _ => self.containers.as_ref(),
        }
    }
}

impl Executor for Routed {
    fn start(&self, task: TaskSpec) {
        match self.in_container(&task) {
            Ok(c) => {
                lock(&self.placed).insert(task.node_id.clone(), c);
                if c {
                    self.containers.start(task);
                } else {
                    self.host.start(task);
                }
            }
            Err(e) => {
                let _ = lock(&self.tx).send(Update::Finished {
                    node: task.node_id,
                    result: TaskResult {
                        error: Some(e),
                        ..TaskResult::default()
                    },
                });
            }
        }
    }

    fn fetch(&self, node: &str, sources: Vec<ArtifactRef>, access: Vec<Option<Access>>) {
        self.host.fetch(node, sources, access);
    }

    fn stop(&self, node: &str) {
        self.of(node).stop(node);
    }

    fn shutdown(&self) {
        self.containers.shutdown();
        self.host.shutdown();
    }

    fn adopt(&self, run: &str, node: &str) -> bool {
        for (c, e) in [(true, &self.containers), (false, &self.host)] {
            if e.adopt(run, node) {
                lock(&self.placed).insert(node.to_string(), c);
                return true;
            }
        }
        false
    }

    fn image_id(&self, ask: &weir_core::run::ImageAsk) -> Option<Option<String>> {
        match self.asked(ask.executor) {
            Ok(true) => self.containers.image_id(ask),
            _ => None,
        }
    }

    fn recorded(&self, finished: &[String]) {
        {
            let mut placed = lock(&self.placed);
            for n in finished {
                placed.remove(n);
            }
        }
        self.containers.recorded(finished);
        self.host.recorded(finished);
    }
}

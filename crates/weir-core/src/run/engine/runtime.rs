//! What the engine keeps for each node while it runs: calls, frames, the runtime state of steps, DAGs, retries, locks and memoized calls.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use super::*;
use crate::expr::Depends;
use crate::run::*;
use crate::spec::{Arguments, ContinueOn, Step};

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
    /// The tasks its written `depends` names: their failures do not stop the DAG.
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
    /// Tasks some written `depends` names: their failures are its to weigh, so they do not
    /// stop the DAG from starting more tasks (fail-fast).
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
    /// A pod started again once already because weir lost its process.
    pub restarted: bool,
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
            image: None,
        }
    }
}

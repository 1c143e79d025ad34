//! How templates run: node creation, steps groups, DAG readiness, loops, retries, exit handlers,
//! outputs. Each function touches only the scope an event concerns; each file holds one
//! concern's `impl Run` block.

mod completion;
mod dag;
mod hooks;
mod library;
mod lifecycle;
mod loops;
mod nodes;
mod outputs;
mod pods;
mod retry;
mod runtime;
mod steps;
mod task_spec;

pub(crate) use library::Library;
pub use library::TemplateScope;
use loops::item_label;
use outputs::{ArtEnv, publish};
use pods::{http_artifact, http_location, keyed_artifact, raw_artifact};
pub(crate) use runtime::*;
use steps::step_template_name;
use task_spec::{git_url, http_outcome, subst_json};
pub use task_spec::{go_sprintf, quantity};

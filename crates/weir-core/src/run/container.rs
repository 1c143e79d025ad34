//! Where a task runs, and what it ran in: the executor a run or template asks for, and the
//! container an executor of containers reports for a finished task.

use serde::{Deserialize, Serialize};

/// Which executor runs a task: host processes, or containers of its image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    Local,
    Docker,
}

impl ExecutorKind {
    /// The value of a `weir.dev/executor` annotation: `docker`, or `local` (also
    /// `local-process`, as a run's record names it).
    pub fn of(annotation: &str) -> Option<ExecutorKind> {
        match annotation {
            "docker" => Some(ExecutorKind::Docker),
            "local" | "local-process" => Some(ExecutorKind::Local),
            _ => None,
        }
    }

    /// Its name in a run's record (and a worker's label): `local-process` or `docker`.
    pub fn name(self) -> &'static str {
        match self {
            ExecutorKind::Local => "local-process",
            ExecutorKind::Docker => "docker",
        }
    }
}

/// The annotation naming where a run's (or a template's) tasks run.
pub const EXECUTOR_ANNOTATION: &str = "weir.dev/executor";

/// The container a task ran in: what makes its result reproducible (the exact image, whatever
/// its tag names later) and what to look for on the Docker host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRun {
    /// The image as the template named it.
    pub image: String,
    /// The image's content id (`sha256:…`, the digest of its configuration).
    pub image_id: String,
    /// Its registry digests (`NAME@sha256:…`), where it was pulled from a registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repo_digests: Vec<String>,
    /// The container's id.
    pub id: String,
}

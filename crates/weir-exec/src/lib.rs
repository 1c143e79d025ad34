//! Weir's executors: where a task's process runs.
//!
//! Architecture invariant: an executor reports every outcome as an [`Update`] on its channel;
//! a task that cannot start, or whose executor thread panics, becomes a failed result, never an
//! error that unwinds the engine.

mod admission;
mod adopt;
mod artifacts;
mod data;
#[cfg(feature = "docker")]
mod docker;
mod git;
mod http;
mod isolation;
mod outputs;
mod paths;
mod probe;
mod process;
mod reaper;
mod repo;
mod report;
mod root;
mod routed;
mod s3;
mod sandbox;
mod shared;
mod spawn;
mod stand_in;
mod supervisor;
mod volumes;

pub use admission::Capacity;
#[cfg(feature = "docker")]
pub use docker::{DockerConfig, DockerExecutor};
pub use isolation::Isolation;
pub use paths::{InvalidPath, within};
pub use process::{ProcessConfig, ProcessExecutor};
pub use repo::{LocalRepo, RepoError};
pub use routed::Routed;
pub use sandbox::Sandbox;

/// Deletes an artifact's object from an S3-compatible store (`artifactGC`).
pub fn delete_s3(url: &str, access: &weir_core::run::S3Access) -> Result<(), String> {
    s3::delete(url, access)
}

use weir_core::run::{Access, ArtifactRef, TaskResult, TaskSpec};

/// What an executor tells the driver.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    Started {
        node: String,
        pid: u32,
    },
    /// A daemon task is ready (its readiness probe passed, or it has none and started).
    Ready {
        node: String,
    },
    /// A line of the task's output (already masked), for live display.
    Log {
        node: String,
        line: String,
    },
    Finished {
        node: String,
        result: TaskResult,
    },
    /// A node's remote inputs, fetched into the repository (answer to [`Executor::fetch`]).
    Fetched {
        node: String,
        results: Vec<Result<ArtifactRef, String>>,
    },
}

/// Runs tasks. `start` returns at once; progress arrives as [`Update`]s.
pub trait Executor: Send + Sync {
    fn start(&self, task: TaskSpec);
    /// Fetches remote inputs (`http` URLs) into the repository, content-addressed; answers with
    /// [`Update::Fetched`].
    /// `access` gives, for each source on an S3-compatible store, how to reach it.
    fn fetch(&self, node: &str, sources: Vec<ArtifactRef>, access: Vec<Option<Access>>);
    /// Kills the task's process group if it is running.
    fn stop(&self, node: &str);
    /// Waits for every task thread to end (after their processes were stopped).
    fn shutdown(&self);
    /// Watches again node `node` of run `run`, which an earlier engine started and did not see
    /// end (the engine was killed): its result arrives as for a task this executor started.
    /// False when it cannot be (its process is gone without a status, or was never
    /// recorded): the caller runs it again.
    fn adopt(&self, _run: &str, _node: &str) -> bool {
        false
    }
    /// The driver recorded these nodes' results: an executor that keeps them elsewhere (the
    /// task queue) may let them go.
    fn recorded(&self, _finished: &[String]) {}
    /// The content id of the image a task would run in, for its step-cache key: None when
    /// this executor would not run it in that image (host processes); `Some(None)` when the
    /// image is not here (yet), so no cached result can be known to match it.
    fn image_id(&self, _ask: &weir_core::run::ImageAsk) -> Option<Option<String>> {
        None
    }
}

/// Replaces each secret value in `line` by `***`.
pub fn mask(line: &str, secrets: &[String]) -> String {
    let mut out = line.to_string();
    for s in secrets {
        if !s.is_empty() && out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "***");
        }
    }
    out
}

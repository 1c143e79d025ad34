//! Step caching's key: what a task's outputs depend on, bound (for a task run in a container)
//! to the content of its image.

use serde::{Deserialize, Serialize};

use super::{ExecutorKind, TaskSpec};

/// The cache of step caching in the store's `memo` table.
pub const STEP_CACHE: &str = "weir.dev/cache";

/// A task's content key for step caching: its resolved program, environment, parameters and
/// the digests of its input artifacts, and the outputs it declares. `None` for tasks whose
/// result depends on more than that (volumes, daemons, sidecars, http, data and child runs).
pub fn step_cache_key(spec: &TaskSpec, parameters: &[(String, String)]) -> Option<String> {
    if !spec.mounts.is_empty()
        || spec.daemon.is_some()
        || !spec.sidecars.is_empty()
        || !spec.init_containers.is_empty()
        || spec.http.is_some()
        || spec.data.is_some()
        || spec.child.is_some()
        // a key-only input's content is only seen when the task starts
        || spec
            .inputs
            .iter()
            .any(|a| a.source.hash.is_empty() && a.source.raw.is_none())
    {
        return None;
    }
    let mut env = spec.env.clone();
    env.sort();
    let mut params = parameters.to_vec();
    params.sort();
    let material = serde_json::json!({
        "v": 1,
        "image": spec.image,
        "command": spec.command,
        "args": spec.args,
        "source": spec.source,
        "env": env,
        "workingDir": spec.working_dir,
        "parameters": params,
        "inputs": spec.inputs.iter().map(|a| serde_json::json!([
            a.name, a.path, a.source.hash, a.source.raw, a.source.sub_path, a.source.archived, a.mode
        ])).collect::<Vec<_>>(),
        "outputParameters": spec.output_parameters.iter().map(|o| [&o.name, &o.path]).collect::<Vec<_>>(),
        "outputArtifacts": serde_json::to_value(&spec.output_artifacts).unwrap_or_default(),
    });
    Some(
        blake3::hash(material.to_string().as_bytes())
            .to_hex()
            .to_string(),
    )
}

/// The image a step-cache lookup depends on: an executor of containers keys the step cache by
/// the image's content id too (see [`pinned_cache_key`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageAsk {
    pub image: String,
    /// The executor the task's template asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<ExecutorKind>,
}

impl ImageAsk {
    /// The image a task would run in: none for a task that runs no image of its own (`http`,
    /// `data`, `resource`) or asks for host processes.
    pub fn of(spec: &TaskSpec) -> Option<ImageAsk> {
        if spec.http.is_some()
            || spec.data.is_some()
            || spec.child.is_some()
            || spec.executor == Some(ExecutorKind::Local)
        {
            return None;
        }
        Some(ImageAsk {
            image: spec.image.clone()?,
            executor: spec.executor,
        })
    }
}

/// A step-cache key bound to the content id of the image the task runs in.
pub fn pinned_cache_key(key: &str, image_id: &str) -> String {
    blake3::hash(format!("{key}\n{image_id}").as_bytes())
        .to_hex()
        .to_string()
}

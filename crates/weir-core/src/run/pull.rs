//! How a task's image is pulled: `imagePullPolicy` and the registry credentials of
//! `imagePullSecrets`. Only an executor that pulls images (Docker) reads them.

use serde::{Deserialize, Serialize};

/// `imagePullPolicy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// The policy a container names; `IfNotPresent` where it names none, whatever the tag
    /// (as `docker run` does: on one Docker host its images are its user's to manage, and an
    /// untagged `busybox` runs offline). Kubernetes would pull `:latest` images every time.
    pub fn of(named: Option<&str>) -> Result<PullPolicy, String> {
        match named {
            None | Some("IfNotPresent") => Ok(PullPolicy::IfNotPresent),
            Some("Always") => Ok(PullPolicy::Always),
            Some("Never") => Ok(PullPolicy::Never),
            Some(other) => Err(format!(
                "imagePullPolicy `{other}`: must be Always, IfNotPresent or Never"
            )),
        }
    }
}

/// Credentials for one registry, from a `kubernetes.io/dockerconfigjson` Secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryAuth {
    /// The registry's host (and port), as the config's `auths` key names it.
    pub server: String,
    pub username: String,
    pub password: String,
}

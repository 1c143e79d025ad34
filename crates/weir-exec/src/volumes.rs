//! Where a task's volumes live on the host: the directory behind each `volumeMount`, made ready
//! before the task starts. The local executor binds it into the task's view of the filesystem,
//! the Docker executor into its container; both agree on the places, so a run's volumes and a
//! claim's files are the same whichever runs a task.

use std::fs;
use std::path::{Path, PathBuf};

use weir_core::run::{Mount, VolumeSource};

use crate::paths::within;

/// Where the volumes of one task are made.
pub(crate) struct Places<'a> {
    /// The run's directory (`volumeClaimTemplates` volumes are under its `volumes/`).
    pub run_dir: &'a Path,
    /// The task's work directory (`emptyDir`, `configMap` and `secret` volumes).
    pub work: &'a Path,
    /// Weir's data directory (existing claims are under its `volumes/`).
    pub data_dir: &'a Path,
    /// Whether a `hostPath` may be used; the error names what to configure when not.
    pub host_path: &'a dyn Fn(&Path) -> Result<(), String>,
    /// The user and group a volume of weir's (a run's or a claim's) is handed to.
    pub owner: Option<(u32, u32)>,
}

/// Makes `m`'s host directory ready (created, its files written, handed to the task's user)
/// and returns it, `subPath` included.
pub(crate) fn host_dir(m: &Mount, at: &Places) -> Result<PathBuf, String> {
    let mut host = match &m.source {
        VolumeSource::Empty | VolumeSource::Files(_) => {
            at.work.join(format!(".weir-vol-{}", m.name))
        }
        VolumeSource::Run(name) => within(&at.run_dir.join("volumes"), name)?,
        VolumeSource::Claim(claim) => within(&at.data_dir.join("volumes"), claim)?,
        VolumeSource::Host(p) => {
            (at.host_path)(Path::new(p)).map_err(|e| format!("volume `{}`: {e}", m.name))?;
            PathBuf::from(p)
        }
    };
    fs::create_dir_all(&host)
        .map_err(|e| format!("volume `{}` at {}: {e}", m.name, host.display()))?;
    if let Some((uid, gid)) = at.owner
        && matches!(m.source, VolumeSource::Run(_) | VolumeSource::Claim(_))
    {
        std::os::unix::fs::lchown(&host, Some(uid), Some(gid))
            .map_err(|e| format!("volume `{}`: {e}", m.name))?;
    }
    if let VolumeSource::Files(files) = &m.source {
        for (name, content) in files {
            fs::write(within(&host, name)?, content)
                .map_err(|e| format!("volume `{}`: {name}: {e}", m.name))?;
        }
    }
    if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
        host = within(&host, sub.trim_start_matches('/'))?;
        fs::create_dir_all(&host).map_err(|e| format!("volume `{}` subPath {sub}: {e}", m.name))?;
    }
    Ok(host)
}

/// Whether `p` lies in one of `allowed` (both resolved: no symlink out).
pub(crate) fn allowed(p: &Path, allowed: &[PathBuf]) -> bool {
    let Ok(real) = fs::canonicalize(p) else {
        return false;
    };
    allowed
        .iter()
        .any(|h| fs::canonicalize(h).is_ok_and(|h| real.starts_with(h)))
}

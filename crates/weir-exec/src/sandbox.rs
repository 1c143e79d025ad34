//! Each task's filesystem view. With Linux mount namespaces (the default where permitted) a task
//! gets a root of its own (see [`crate::root`]), a private `/tmp` and its declared paths outside
//! `/tmp` bound to per-task directories, so concurrent tasks never collide, Argo files run
//! unmodified and nothing is made on the host's `/`. Without them, declared paths are rewritten
//! into the task's work directory (said once as a warning).

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sandbox {
    Namespaces,
    Rewrite,
}

impl Sandbox {
    /// Namespaces if this process may create them and enter a root of its own (one probe
    /// task).
    pub fn detect() -> Sandbox {
        let probe = crate::spawn::Spec {
            argv: vec!["/bin/true".into()],
            env: Vec::new(),
            cwd: PathBuf::from("/"),
            binds: Vec::new(),
            namespaces: true,
            // a root of its own: the way most tasks start
            tmpfs_tmp: false,
            hide: Vec::new(),
            user: None,
            io: None,
            tied: false,
        };
        match crate::spawn::spawn(&probe, None).and_then(|mut p| p.wait()) {
            Ok(0) => Sandbox::Namespaces,
            _ => Sandbox::Rewrite,
        }
    }
}

/// Where a task path lives on the host, and the bind mounts that make it appear at its path.
pub(crate) struct View {
    pub tmp: PathBuf,
    pub binds: Vec<(PathBuf, PathBuf)>,
    pub mode: Sandbox,
    /// Top-level directories replaced by private ones (see `host`).
    private_tops: Vec<PathBuf>,
    /// Host paths of the empty files and directories made to be bound onto a task path: the
    /// task's output there is missing unless it wrote to them (see [`View::mark_untouched`]).
    placeholders: Vec<PathBuf>,
}

impl View {
    pub fn new(work: &Path, mode: Sandbox) -> View {
        View {
            tmp: work.to_path_buf(),
            binds: Vec::new(),
            mode,
            private_tops: Vec::new(),
            placeholders: Vec::new(),
        }
    }

    /// The host path for a path the task sees. Paths outside `/tmp` get their parent directory
    /// bound to a per-task directory.
    pub fn host(&mut self, task_path: &str, work: &Path) -> Result<PathBuf, String> {
        self.host_of(task_path, work, None)
    }

    /// [`host`](Self::host) for a path known to be a file (`Some(true)`: an output parameter's)
    /// or a directory; `None` guesses, where the path must be bound on its own, from whether
    /// its name has an extension.
    pub fn host_of(
        &mut self,
        task_path: &str,
        work: &Path,
        file: Option<bool>,
    ) -> Result<PathBuf, String> {
        let p = Path::new(task_path);
        if !p.is_absolute() {
            return Ok(self.tmp.join(p));
        }
        if let Ok(rest) = p.strip_prefix("/tmp") {
            return Ok(self.tmp.join(rest));
        }
        let parent = p.parent().unwrap_or(Path::new("/"));
        let name = p.file_name().map(PathBuf::from).unwrap_or_default();
        // inside a directory already bound (a volume, a declared directory): the deepest one
        if let Some((t, host)) = self
            .binds
            .iter()
            .filter(|(t, _)| p.starts_with(t))
            .max_by_key(|(t, _)| t.components().count())
        {
            let rest = p.strip_prefix(t).unwrap_or(Path::new(""));
            return Ok(if rest.as_os_str().is_empty() {
                host.clone()
            } else {
                host.join(rest)
            });
        }
        if self.mode == Sandbox::Namespaces && (parent == Path::new("/") || is_system_dir(parent)) {
            // A path directly in a system directory: bind a per-task file (or directory, for a
            // name without an extension) onto that exact path.
            let empty_dir = p.is_dir()
                && std::fs::read_dir(p)
                    .map(|mut d| d.next().is_none())
                    .unwrap_or(false);
            let empty_file =
                p.is_file() && std::fs::metadata(p).map(|m| m.len() == 0).unwrap_or(false);
            if p.exists() && !empty_dir && !empty_file {
                return Err(format!(
                    "path `{task_path}` already exists on this host; weir will not cover it"
                ));
            }
            // its mount point is made in the task's own root, of the kind bound onto it
            let as_file = match file {
                Some(f) => f,
                None if p.exists() => p.is_file(),
                None => name.to_string_lossy().contains('.'),
            };
            let host = work.join(format!(".weir-mnt-{}", self.binds.len()));
            let made = if as_file {
                std::fs::create_dir_all(work).and_then(|_| std::fs::write(&host, b""))
            } else {
                std::fs::create_dir_all(&host)
            };
            made.map_err(|e| format!("preparing {task_path}: {e}"))?;
            self.binds.push((p.to_path_buf(), host.clone()));
            self.placeholders.push(host.clone());
            return Ok(host);
        }
        // A top-level directory holding nothing but empty directories (often only mount points
        // weir made earlier) is replaced by a private one: the task starts with nothing under
        // it, as in a fresh container, so it can create `/mnt/out` itself.
        if self.mode == Sandbox::Namespaces
            && let Some(top) = p.ancestors().filter(|a| a.parent().is_some()).last()
            && top != p
            && !is_system_dir(top)
            && top != Path::new("/tmp")
            && only_empty_dirs(top)
        {
            let host = work.join(format!(".weir-mnt-{}", self.binds.len()));
            std::fs::create_dir_all(&host)
                .map_err(|e| format!("preparing {}: {e}", top.display()))?;
            self.binds.push((top.to_path_buf(), host.clone()));
            self.private_tops.push(top.to_path_buf());
            return Ok(host.join(p.strip_prefix(top).unwrap_or(p)));
        }
        let host = work.join(format!(".weir-mnt-{}", self.binds.len()));
        std::fs::create_dir_all(&host).map_err(|e| format!("{}: {e}", host.display()))?;
        self.binds.push((parent.to_path_buf(), host.clone()));
        Ok(host.join(name))
    }

    /// Like `host`, for a path the task's outputs are read from: an existing system path that
    /// weir will not cover (an artifact of `/etc`) is read where it is, since the task sees the
    /// host's own there.
    pub fn host_output(
        &mut self,
        task_path: &str,
        work: &Path,
        file: Option<bool>,
    ) -> Result<PathBuf, String> {
        match self.host_of(task_path, work, file) {
            Err(_) if Path::new(task_path).exists() => Ok(PathBuf::from(task_path)),
            other => other,
        }
    }

    /// Whether `host` (a path `host()` returned) lies in a private top-level directory, where
    /// nothing exists before the task makes it.
    pub fn in_private_top(&self, host: &Path) -> bool {
        self.binds
            .iter()
            .any(|(t, h)| self.private_tops.contains(t) && host.starts_with(h))
    }

    /// Marks the placeholders among `outputs` that are still empty (nothing was loaded into
    /// them) with a modification time of 0, and returns them: one still so marked when the task
    /// ends was not written, and its output is missing, as in Argo, rather than empty.
    pub fn mark_untouched<'a>(&self, outputs: impl Iterator<Item = &'a PathBuf>) -> Vec<PathBuf> {
        outputs
            .filter(|p| self.placeholders.contains(p) && is_empty(p))
            .filter(|p| {
                std::fs::File::open(p)
                    .and_then(|f| f.set_modified(std::time::UNIX_EPOCH))
                    .is_ok()
            })
            .cloned()
            .collect()
    }

    /// Rewrite mode: replaces the task paths in a string by their host paths.
    pub fn rewrite(&self, s: &str) -> String {
        if self.mode == Sandbox::Namespaces {
            return s.to_string();
        }
        let mut out = s.replace("/tmp/", &format!("{}/", self.tmp.display()));
        for (t, h) in &self.binds {
            out = out.replace(&format!("{}/", t.display()), &format!("{}/", h.display()));
        }
        out
    }
}

/// Whether a path that [`View::mark_untouched`] marked is as it was left: the task did not write
/// it (a write, even one that leaves it empty, sets its modification time).
pub(crate) fn untouched(p: &Path) -> bool {
    is_empty(p)
        && std::fs::metadata(p)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t == std::time::UNIX_EPOCH)
}

fn is_empty(p: &Path) -> bool {
    match std::fs::metadata(p) {
        Ok(m) if m.is_dir() => std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_none()),
        Ok(m) => m.len() == 0,
        Err(_) => false,
    }
}

/// Whether `dir` is missing, or holds only directories that are themselves empty of files.
fn only_empty_dirs(dir: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return !dir.exists();
    };
    rd.flatten()
        .all(|e| e.file_type().is_ok_and(|t| t.is_dir()) && only_empty_dirs(&e.path()))
}

fn is_system_dir(p: &Path) -> bool {
    [
        "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/root", "/run", "/sbin",
        "/sys", "/usr", "/var", "/home",
    ]
    .iter()
    .any(|s| p == Path::new(s))
}

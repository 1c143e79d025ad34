//! Keeping tasks away from weir and from the host (`weir server`, `weir worker`): a task runs as
//! an unprivileged user with no way to regain privileges (`spawn.rs` switches to it), weir's
//! data directory is hidden in its mount namespace and closed to that user on the host, and it
//! reaches the host's files only through allowed host paths (`hostPath` volumes, outputs read
//! where they are).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Whom tasks run as, and which host paths they may use.
#[derive(Clone, Debug)]
pub struct Isolation {
    pub uid: u32,
    pub gid: u32,
    pub host_paths: Vec<PathBuf>,
}

impl Isolation {
    /// Whom tasks run as. `serves`: the caller is `weir server` or `weir worker`, which run code
    /// that editors submit: started as root, they run it as `task_user` (default `nobody`),
    /// never as root unless `allow_root`. Otherwise (`weir run`, its user's own files) tasks run
    /// as weir's user unless `task_user` says otherwise. `None`: no switch. `Err`: why not.
    pub fn for_tasks(
        task_user: Option<&str>,
        allow_root: bool,
        host_paths: &[PathBuf],
        serves: bool,
    ) -> Result<Option<Isolation>, String> {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        let wanted = match task_user {
            Some(u) => u,
            None if serves && euid == 0 && !allow_root => "nobody",
            None => return Ok(None),
        };
        let (uid, gid) = user(wanted)?;
        if uid == 0 && !allow_root {
            return Err(format!(
                "--task-user {wanted} is root: tasks would reach everything weir can (its \
                 database and tokens); give an unprivileged user, or --allow-root-tasks"
            ));
        }
        if uid == euid {
            return Ok(None);
        }
        if euid != 0 {
            return Err(format!(
                "--task-user {wanted}: only root can run tasks as another user"
            ));
        }
        Ok(Some(Isolation {
            uid,
            gid,
            host_paths: host_paths.to_vec(),
        }))
    }

    /// Closes `data_dir` to all but weir's own user (an exec readiness probe runs as the task
    /// user in the host's view) and returns the directories to hide in every task's mount
    /// namespace: the data directory, and the database's if it is elsewhere.
    pub(crate) fn prepare(&self, data_dir: &Path, db: Option<&Path>) -> io::Result<Vec<PathBuf>> {
        use std::os::unix::fs::PermissionsExt;
        fs::create_dir_all(data_dir)?;
        fs::set_permissions(data_dir, fs::Permissions::from_mode(0o700))?;
        let mut hide = vec![data_dir.to_path_buf()];
        if let Some(db_dir) = db
            .filter(|d| !d.to_string_lossy().contains("://"))
            .and_then(Path::parent)
            .filter(|d| !d.as_os_str().is_empty() && *d != data_dir)
        {
            hide.push(db_dir.to_path_buf());
        }
        Ok(hide)
    }

    /// Gives a task's work directory (inputs, scripts and mount points included) to the task
    /// user. A task that exchanges no files has none (a tmpfs is its /tmp).
    pub(crate) fn hand_over(&self, work: &Path) -> Result<(), String> {
        if !work.exists() {
            return Ok(());
        }
        chown_tree(work, self.uid, self.gid)
            .map_err(|e| format!("handing {} to the task user: {e}", work.display()))
    }

    /// Whether `p` lies in one of the allowed host paths (both resolved: no symlink out).
    pub(crate) fn allows(&self, p: &Path) -> bool {
        crate::volumes::allowed(p, &self.host_paths)
    }

    /// Paths weir reads for a task after it ran (its outputs) must be the task's own files: in
    /// `roots` once symlinks are resolved, or in an allowed host path. Missing ones pass (the
    /// caller reports them as missing).
    pub(crate) fn check_outputs<'a>(
        &self,
        paths: impl IntoIterator<Item = &'a PathBuf>,
        roots: &[PathBuf],
    ) -> Result<(), String> {
        let roots: Vec<PathBuf> = roots
            .iter()
            .filter_map(|r| fs::canonicalize(r).ok())
            .collect();
        for path in paths {
            let Ok(real) = fs::canonicalize(path) else {
                continue;
            };
            if !roots.iter().any(|r| real.starts_with(r)) && !self.allows(&real) {
                return Err(format!(
                    "output {} resolves to {}, outside the task's files: not read (a symlink, \
                     or a host path not allowed on this server with --allow-host-path)",
                    path.display(),
                    real.display()
                ));
            }
        }
        Ok(())
    }

    /// The environment a child run (`weir run`, see `launch_child`) takes its isolation from.
    pub(crate) fn child_env(&self) -> Vec<(String, String)> {
        let mut env = vec![(
            "WEIR_TASK_USER".to_string(),
            format!("{}:{}", self.uid, self.gid),
        )];
        if !self.host_paths.is_empty() {
            let paths: Vec<String> = self
                .host_paths
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            env.push(("WEIR_ALLOW_HOST_PATHS".to_string(), paths.join(":")));
        }
        env
    }
}

/// A user by name (from the password database) or as `UID[:GID]`.
fn user(u: &str) -> Result<(u32, u32), String> {
    if let Some((uid, gid)) = u.split_once(':')
        && let (Ok(uid), Ok(gid)) = (uid.parse(), gid.parse())
    {
        return Ok((uid, gid));
    }
    if let Ok(uid) = u.parse::<u32>() {
        return Ok((uid, uid));
    }
    let name = std::ffi::CString::new(u).map_err(|_| format!("user `{u}` has a NUL"))?;
    // SAFETY: getpwnam returns a pointer into static storage, read at once, on this thread.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(format!("--task-user: no user `{u}` on this host"));
    }
    // SAFETY: non-null: a valid passwd entry.
    Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

/// Gives `dir` and everything below it to `uid`:`gid` (symlinks themselves, never their
/// targets).
fn chown_tree(dir: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
    if fs::symlink_metadata(dir)?.is_dir() {
        for e in fs::read_dir(dir)? {
            chown_tree(&e?.path(), uid, gid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_by_number_and_name() {
        assert_eq!(user("1234:99"), Ok((1234, 99)));
        assert_eq!(user("1234"), Ok((1234, 1234)));
        assert_eq!(user("root"), Ok((0, 0)));
        assert!(user("no-such-user-here").is_err());
        // root is never the task user by default, and only with the flag when asked for
        let refused = Isolation::for_tasks(Some("0"), false, &[], true);
        assert!(refused.is_err_and(|e| e.contains("--allow-root-tasks")));
    }
}

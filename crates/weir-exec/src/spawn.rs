//! Starting a task's process without copying the engine's memory: `clone(CLONE_VM|CLONE_VFORK)`,
//! as `posix_spawn` does, with the child-side setup a task needs (own process group, private
//! mount namespace with its own root, working directory) done between clone and exec. The root
//! is planned in [`crate::root`]; the child only carries the steps out.
//!
//! A plain `fork` copies the page tables of the whole engine for every task, which made spawning
//! cost grow with the size of the run; here the child borrows the parent's memory until it
//! execs, so the cost is that of the exec alone.

use std::ffi::{CString, c_void};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

pub(crate) struct Spec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Entered after the mounts (so it may be a path inside the private view).
    pub cwd: PathBuf,
    /// (host, target) bind mounts, in order; only with `namespaces`.
    pub binds: Vec<(PathBuf, PathBuf)>,
    /// A private mount namespace whose root is the task's own (see [`crate::root`]).
    pub namespaces: bool,
    /// With `namespaces`: a fresh tmpfs as /tmp, for a task that exchanges no files with weir.
    /// Such a task sees the host's root, with /tmp its working directory: building a root of
    /// its own (some thirty mounts) would triple the cost of starting it, and it has no paths
    /// to place there.
    pub tmpfs_tmp: bool,
    /// With `namespaces`: directories covered by an empty read-only tmpfs before the binds
    /// (weir's data directory: the task must not see the database or other runs' files).
    pub hide: Vec<PathBuf>,
    /// Run as this (uid, gid), with no supplementary groups and no way to gain privileges
    /// again (`PR_SET_NO_NEW_PRIVS`), once the mounts are made.
    pub user: Option<(u32, u32)>,
}

pub(crate) struct Proc {
    pub pid: i32,
    /// Readable once the process has exited (`CLONE_PIDFD`).
    pub pidfd: OwnedFd,
    pub stdout: File,
    pub stderr: File,
}

/// A step of [`crate::root::Op`] in the form the child can carry out without allocating.
enum Step {
    Dir(CString),
    File(CString),
    Link(CString, CString),
    Mirror(CString, CString),
    Bind(usize, CString),
    Hide(CString),
    Tmpfs(CString),
}

impl Step {
    fn of(op: &crate::root::Op) -> io::Result<Step> {
        use crate::root::Op;
        let c = |p: &Path| cstr(p.as_os_str().as_bytes());
        Ok(match op {
            Op::Dir(p) => Step::Dir(c(p)?),
            Op::File(p) => Step::File(c(p)?),
            Op::Link { target, at } => Step::Link(c(target)?, c(at)?),
            Op::Mirror { host, at } => Step::Mirror(c(host)?, c(at)?),
            Op::Bind { k, at } => Step::Bind(*k, c(at)?),
            Op::Hide(p) => Step::Hide(c(p)?),
            Op::Tmpfs(p) => Step::Tmpfs(c(p)?),
        })
    }
}

/// Everything the child reads, prepared before the clone: it must not allocate.
struct Child {
    /// The program, or each `PATH` candidate for it, tried in order as `execvp` does: the search
    /// runs in the child, inside the task's own filesystem view, at the child's cost.
    progs: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    cwd: CString,
    /// The bind sources, opened before the first mount.
    binds: Vec<CString>,
    steps: Vec<Step>,
    root: CString,
    none: CString,
    tmpfs: CString,
    /// Where the new root is mounted ([`crate::root::AT`]), and its tmpfs options.
    at: CString,
    root_opts: CString,
    dot: CString,
    tmpfs_opts: CString,
    hide_opts: CString,
    user: Option<(u32, u32)>,
    namespaces: bool,
    own_root: bool,
    stdin: i32,
    stdout: i32,
    stderr: i32,
    /// Set by the child when it fails before exec: the step and the errno. The parent reads
    /// them after the clone returns (CLONE_VFORK: the memory is shared and the parent waited).
    failed_step: AtomicI32,
    failed_errno: AtomicI32,
    /// `binds.len()` slots the child fills with the descriptors of the bind sources.
    src_fds: *mut i32,
}

/// `/proc/self/fd/N` as a NUL-terminated string, without allocating (the child runs it).
fn fd_path(fd: i32) -> [u8; 32] {
    let mut out = [0u8; 32];
    let prefix = b"/proc/self/fd/";
    out[..prefix.len()].copy_from_slice(prefix);
    let mut digits = [0u8; 12];
    let mut n = fd.max(0) as u32;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for k in 0..len {
        out[prefix.len() + k] = digits[len - 1 - k];
    }
    out
}

fn cstr(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "NUL byte in a command, argument or path",
        )
    })
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the array with two new descriptors we then own.
    // Both ends non-blocking: the read end for the reaper's epoll; the child makes its own copy
    // of the write end blocking again.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The paths to try for `prog`: itself when it names a path, else each `PATH` entry.
fn candidates(prog: &str, env: &[(String, String)]) -> Vec<PathBuf> {
    if prog.contains('/') {
        return vec![PathBuf::from(prog)];
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or("/usr/local/bin:/usr/bin:/bin");
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(prog))
        .collect()
}

extern "C" fn child_main(arg: *mut c_void) -> libc::c_int {
    // SAFETY: `arg` points at the `Child` the parent keeps alive until this process execs or
    // exits (CLONE_VFORK suspends the parent until then). Only async-signal-safe calls follow.
    unsafe {
        let c = &*(arg as *const Child);
        let fail = |step: i32| -> ! {
            c.failed_errno
                .store(*libc::__errno_location(), Ordering::Relaxed);
            c.failed_step.store(step, Ordering::Relaxed);
            libc::_exit(127)
        };
        if libc::dup2(c.stdin, 0) < 0 || libc::dup2(c.stdout, 1) < 0 || libc::dup2(c.stderr, 2) < 0
        {
            fail(1);
        }
        // the pipes were made non-blocking for the reader; the task writes blocking
        for fd in [1, 2] {
            let fl = libc::fcntl(fd, libc::F_GETFL);
            if fl < 0 || libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK) < 0 {
                fail(1);
            }
        }
        if libc::setpgid(0, 0) != 0 {
            fail(2);
        }
        if c.namespaces {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                fail(3);
            }
            if libc::mount(
                c.none.as_ptr(),
                c.root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                fail(4);
            }
            // Every source is opened before the first mount and named through /proc/self/fd:
            // a mount made earlier (the new root on /tmp, a volume) may hide its path.
            for (k, host) in c.binds.iter().enumerate() {
                let fd = libc::open(host.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
                if fd < 0 {
                    fail(5);
                }
                *c.src_fds.add(k) = fd;
            }
            let tmpfs = |at: &CString, flags: libc::c_ulong, opts: &CString| {
                libc::mount(
                    c.tmpfs.as_ptr(),
                    at.as_ptr(),
                    c.tmpfs.as_ptr(),
                    flags | libc::MS_NOSUID | libc::MS_NODEV,
                    opts.as_ptr() as *const c_void,
                ) == 0
            };
            let bind = |src: *const libc::c_char, at: &CString| {
                libc::mount(
                    src,
                    at.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ) == 0
            };
            let errno = || *libc::__errno_location();
            if c.own_root && !tmpfs(&c.at, 0, &c.root_opts) {
                fail(11);
            }
            for step in &c.steps {
                let ok = match step {
                    Step::Dir(p) => libc::mkdir(p.as_ptr(), 0o755) == 0 || errno() == libc::EEXIST,
                    Step::File(p) => {
                        let fd = libc::open(
                            p.as_ptr(),
                            libc::O_RDONLY
                                | libc::O_CREAT
                                | libc::O_NONBLOCK
                                | libc::O_NOCTTY
                                | libc::O_CLOEXEC,
                            0o644,
                        );
                        fd >= 0 && libc::close(fd) == 0
                    }
                    Step::Link(target, at) => {
                        libc::symlink(target.as_ptr(), at.as_ptr()) == 0 || errno() == libc::EEXIST
                    }
                    Step::Mirror(host, at) => bind(host.as_ptr(), at),
                    Step::Bind(k, at) => {
                        let name = fd_path(*c.src_fds.add(*k));
                        if !bind(name.as_ptr() as *const libc::c_char, at) {
                            fail(5);
                        }
                        true
                    }
                    // a path this view does not have is hidden already
                    Step::Hide(p) => {
                        tmpfs(p, libc::MS_RDONLY | libc::MS_NOEXEC, &c.hide_opts)
                            || errno() == libc::ENOENT
                    }
                    Step::Tmpfs(p) => tmpfs(p, 0, &c.tmpfs_opts),
                };
                if !ok {
                    fail(11);
                }
            }
            // the new root takes the old one's place, which is then let go of
            if c.own_root
                && (libc::chdir(c.at.as_ptr()) != 0
                    || libc::syscall(libc::SYS_pivot_root, c.dot.as_ptr(), c.dot.as_ptr()) != 0
                    || libc::umount2(c.dot.as_ptr(), libc::MNT_DETACH) != 0)
            {
                fail(12);
            }
        }
        if libc::chdir(c.cwd.as_ptr()) != 0 {
            fail(6);
        }
        // Raw system calls: glibc's setuid/setgid would apply the change to every thread of
        // the process, and this child shares the engine's memory (CLONE_VM), thread list
        // included. The kernel's calls change this process alone.
        if let Some((uid, gid)) = c.user
            && (libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) != 0
                || libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0
                || libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0
                || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        {
            fail(10);
        }
        // execvp's rules: go on past a candidate that is missing or not permitted, report
        // EACCES if one was seen, else the last error
        let mut denied = false;
        for prog in &c.progs {
            libc::execve(prog.as_ptr(), c.argv.as_ptr(), c.envp.as_ptr());
            match *libc::__errno_location() {
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                libc::EACCES => denied = true,
                _ => fail(7),
            }
        }
        if denied {
            *libc::__errno_location() = libc::EACCES;
        }
        fail(7)
    }
}

thread_local! {
    static STACK: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 256 * 1024]);
}

/// `/dev/null`, opened once: every task's stdin.
fn devnull() -> io::Result<i32> {
    static NULL: std::sync::OnceLock<File> = std::sync::OnceLock::new();
    if let Some(f) = NULL.get() {
        return Ok(f.as_raw_fd());
    }
    let f = File::open("/dev/null")?;
    Ok(NULL.get_or_init(|| f).as_raw_fd())
}

/// Starts the process; its stdout and stderr come back as pipes.
pub(crate) fn spawn(spec: &Spec) -> io::Result<Proc> {
    let Some(first) = spec.argv.first() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no `command` or `args`: an image's own entrypoint cannot run on this host",
        ));
    };
    let progs = candidates(first, &spec.env)
        .iter()
        .map(|p| cstr(p.as_os_str().as_bytes()))
        .collect::<io::Result<Vec<_>>>()?;
    let argv: Vec<CString> = spec
        .argv
        .iter()
        .map(|a| cstr(a.as_bytes()))
        .collect::<io::Result<_>>()?;
    let envs: Vec<CString> = spec
        .env
        .iter()
        .map(|(k, v)| cstr(format!("{k}={v}").as_bytes()))
        .collect::<io::Result<_>>()?;
    let binds = spec
        .binds
        .iter()
        .map(|(h, _)| cstr(h.as_os_str().as_bytes()))
        .collect::<io::Result<Vec<_>>>()?;
    let steps = if spec.namespaces {
        crate::root::plan(&spec.binds, &spec.hide, spec.tmpfs_tmp)
            .iter()
            .map(Step::of)
            .collect::<io::Result<Vec<_>>>()?
    } else {
        Vec::new()
    };
    // the task's root is its user's to write, as a container's is
    let root_opts = match spec.user {
        Some((uid, gid)) => format!("mode=0755,uid={uid},gid={gid}"),
        None => "mode=0755".to_string(),
    };
    // where the child keeps the descriptors of the bind sources (it must not allocate)
    let mut src_fds = vec![-1i32; binds.len()];
    let devnull = devnull()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = envs.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let child = Child {
        progs,
        argv: argv_p,
        envp,
        cwd: cstr(spec.cwd.as_os_str().as_bytes())?,
        binds,
        steps,
        root: cstr(b"/")?,
        none: cstr(b"none")?,
        tmpfs: cstr(b"tmpfs")?,
        at: cstr(crate::root::AT.as_bytes())?,
        root_opts: cstr(root_opts.as_bytes())?,
        dot: cstr(b".")?,
        tmpfs_opts: cstr(b"mode=1777")?,
        hide_opts: cstr(b"size=4k,mode=0555")?,
        user: spec.user,
        namespaces: spec.namespaces,
        own_root: !spec.tmpfs_tmp,
        stdin: devnull,
        stdout: out_w.as_raw_fd(),
        stderr: err_w.as_raw_fd(),
        failed_step: AtomicI32::new(0),
        failed_errno: AtomicI32::new(0),
        src_fds: src_fds.as_mut_ptr(),
    };
    let mut pidfd: libc::c_int = -1;
    // The child's stack: one per thread, reused (the thread is suspended while the child runs
    // on it, CLONE_VFORK), so no mapping is made and torn down per task.
    let pid = STACK.with_borrow_mut(|stack| {
        // SAFETY: the stack grows down from its end (16-byte aligned); the child only reads
        // `child`, which outlives it (CLONE_VFORK), and never returns into Rust code. With
        // CLONE_PIDFD the kernel writes the new pidfd through the parent_tid argument.
        unsafe {
            let top = stack.as_mut_ptr().add(stack.len()) as usize & !15;
            libc::clone(
                child_main,
                top as *mut c_void,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
                &child as *const Child as *mut c_void,
                &mut pidfd as *mut libc::c_int,
            )
        }
    });
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nobody else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    drop((out_w, err_w));
    let step = child.failed_step.load(Ordering::Relaxed);
    if step != 0 {
        let errno = child.failed_errno.load(Ordering::Relaxed);
        let _ = wait(pid);
        let e = io::Error::from_raw_os_error(errno);
        if step == 7 && !first.contains('/') && e.kind() == io::ErrorKind::NotFound {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("`{first}` not found in PATH"),
            ));
        }
        let step = [
            "",
            "redirecting stdio",
            "setpgid",
            "unshare",
            "making mounts private",
            "bind mount",
            "chdir",
            "exec",
            "mounting a tmpfs on /tmp",
            "hiding weir's data directory",
            "switching to the task user",
            "preparing the task's root",
            "entering the task's root",
        ][step.clamp(0, 12) as usize];
        return Err(io::Error::new(e.kind(), format!("{step}: {e}")));
    }
    drop(child);
    Ok(Proc {
        pid,
        pidfd,
        stdout: File::from(out_r),
        stderr: File::from(err_r),
    })
}

/// Waits for the process; its exit code, or 128 + the signal that killed it.
pub(crate) fn wait(pid: i32) -> io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    })
}

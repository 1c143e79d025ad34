//! Starting a task's process without copying the engine's memory: `clone(CLONE_VM|CLONE_VFORK)`,
//! as `posix_spawn` does, with the child-side setup a task needs (own process group, private
//! mount namespace with its own root, working directory) done between clone and exec. The root
//! is planned in [`crate::root`]; the child only carries the steps out.
//!
//! A plain `fork` copies the page tables of the whole engine for every task, which made spawning
//! cost grow with the size of the run; here the child borrows the parent's memory until it
//! execs, so the cost is that of the exec alone.
//!
//! The task is the child of a [`crate::supervisor`], which records its exit status, and writes
//! its output to files (not pipes, whose reader would die with the engine): so a task outlives
//! the engine that started it.

use std::ffi::{CString, c_void};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

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
    /// Where the output goes: `IO.stdout` and `IO.stderr`, and the exit status to `IO.exit`
    /// ([`Io`]); none: nowhere (`/dev/null`).
    pub io: Option<PathBuf>,
    /// The task is killed when the engine dies (`PR_SET_PDEATHSIG` on the supervisor and on
    /// the task), rather than outliving it.
    pub tied: bool,
}

/// The files of a task's output and exit status, next to each other.
#[derive(Debug, Clone)]
pub(crate) struct Io(pub PathBuf);

impl Io {
    fn with(&self, ext: &str) -> PathBuf {
        let mut p = self.0.clone().into_os_string();
        p.push(".");
        p.push(ext);
        PathBuf::from(p)
    }
    pub fn stdout(&self) -> PathBuf {
        self.with("stdout")
    }
    pub fn stderr(&self) -> PathBuf {
        self.with("stderr")
    }
    pub fn exit(&self) -> PathBuf {
        self.with("exit")
    }
    /// Removes the files, once what they hold has been read and reported.
    pub fn remove(&self) {
        for p in [self.stdout(), self.stderr(), self.exit()] {
            let _ = std::fs::remove_file(p);
        }
    }
}

pub(crate) struct Proc {
    /// The task's process (its process group's id).
    pub pid: i32,
    /// Its supervisor: the engine's child, which exits with the task's status; 0 for one
    /// started by an earlier engine (not ours to reap: its status is in the `exit` file).
    pub sup: i32,
    /// The supervisor's: readable once it has exited. None: it had already ended.
    pub pidfd: Option<OwnedFd>,
    /// The read ends of the output files.
    pub stdout: Option<File>,
    pub stderr: Option<File>,
    pub io: Option<Io>,
    pub keep: Option<crate::supervisor::Keep>,
}

impl Proc {
    /// How a later engine finds this task's supervisor again (see [`crate::adopt`]).
    pub fn handle(&self) -> Option<crate::adopt::Handle> {
        use std::os::unix::fs::MetadataExt;
        let (out, err) = (self.stdout.as_ref()?, self.stderr.as_ref()?);
        Some(crate::adopt::Handle {
            sup: self.sup,
            fds: [out.as_raw_fd(), err.as_raw_fd()],
            ino: out.metadata().ok()?.ino(),
        })
    }

    /// Waits for the task (and its supervisor); the exit code, or 128 + the signal.
    pub fn wait(&mut self) -> io::Result<i32> {
        if self.sup > 0 {
            let code = wait(self.sup);
            if let Some(k) = &mut self.keep {
                k.reaped();
            }
            self.sup = 0;
            return code;
        }
        Ok(self
            .io
            .as_ref()
            .and_then(|io| crate::supervisor::read_status(&io.exit()))
            .unwrap_or(128 + libc::SIGKILL))
    }
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
    tied: bool,
    namespaces: bool,
    own_root: bool,
    stdin: i32,
    stdout: i32,
    stderr: i32,
    /// Set by the child when it fails before exec: the step and the errno. The parent reads
    /// them after the clone returns (CLONE_VFORK: the memory is shared and the parent waited).
    failed_step: AtomicI32,
    failed_errno: AtomicI32,
    /// The read end of the gate (-1: none): the child, ready to exec, publishes its pid
    /// (`sup.task_pid`, `sup.ready` = [`crate::supervisor::AT_GATE`]) and waits for a byte
    /// here. End of file instead (the engine died before it recorded the task) and it exits
    /// without running the program, marking `sup.abandoned`.
    gate: i32,
    sup: *const crate::supervisor::Sup,
    /// `binds.len()` slots the child fills with the descriptors of the bind sources.
    src_fds: *mut i32,
}

/// `/proc/self/fd/N` as a NUL-terminated string, without allocating (the child runs it).
fn fd_path(fd: i32) -> [u8; 32] {
    let mut out = [0u8; 32];
    let prefix = b"/proc/self/fd/";
    out[..prefix.len()].copy_from_slice(prefix);
    crate::supervisor::decimal(fd.max(0) as u32, &mut out[prefix.len()..]);
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

/// An output stream of a task: an unnamed file the task writes to and the engine reads (`pread`,
/// at its own offset), freeing what it has read but the last [`RETAIN`] bytes (holes punched:
/// see the reaper). In `/dev/shm` where it can be (`O_TMPFILE` on tmpfs: no disk inode to
/// allocate and free for each task; a memfd would do but for inotify, which ignores memfds),
/// else created at `path` and unlinked at once. No pipe, whose reader would die with the
/// engine: its supervisor keeps it open, and writes it to `path` if the engine is gone when the
/// task ends.
fn output(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    static SHM: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
    if SHM.load(Ordering::Relaxed) {
        let tmp = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .mode(0o600)
            .open("/dev/shm");
        match tmp {
            Ok(f) => return Ok(f),
            Err(_) => SHM.store(false, Ordering::Relaxed),
        }
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    std::fs::remove_file(path)?;
    Ok(f)
}

/// What the engine keeps of a stream it has read: enough for a restarted engine to rebuild the
/// task's `result` (the end of its stdout) and the lines around the restart.
pub(crate) const RETAIN: u64 = 1024 * 1024;

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
        // the engine ignores SIGPIPE (Rust's runtime does); a task gets the default, as a
        // container's process does (an ignored signal stays ignored across exec)
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
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
        // dies with its supervisor, which dies with the engine (its parent is suspended here:
        // it cannot have died yet)
        if c.tied && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            fail(13);
        }
        if c.gate >= 0 {
            let s = &*c.sup;
            s.task_pid.store(libc::getpid(), Ordering::Release);
            s.ready.store(crate::supervisor::AT_GATE, Ordering::Release);
            crate::supervisor::futex_wake(&s.ready);
            let mut byte = 0u8;
            let n = loop {
                let n = libc::read(c.gate, &mut byte as *mut u8 as *mut c_void, 1);
                if n >= 0 || *libc::__errno_location() != libc::EINTR {
                    break n;
                }
            };
            if n != 1 {
                s.abandoned.store(1, Ordering::Release);
                libc::_exit(127);
            }
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

/// `/dev/null`, opened once: every task's stdin.
fn devnull() -> io::Result<i32> {
    static NULL: std::sync::OnceLock<File> = std::sync::OnceLock::new();
    if let Some(f) = NULL.get() {
        return Ok(f.as_raw_fd());
    }
    let f = File::open("/dev/null")?;
    Ok(NULL.get_or_init(|| f).as_raw_fd())
}

/// Starts the process under its supervisor; its stdout and stderr go to `spec.io`'s files.
///
/// With `at_gate`, the task waits, cloned and ready to exec, until `at_gate` has run (the
/// engine records it there, so that a restarted engine finds it): should the engine die
/// before that, the task exits without running, and a restarted engine runs it once.
pub(crate) fn spawn(spec: &Spec, at_gate: Option<&mut dyn FnMut(&Proc)>) -> io::Result<Proc> {
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
    let io = spec.io.clone().map(Io);
    let (out, err) = match &io {
        Some(io) => (Some(output(&io.stdout())?), Some(output(&io.stderr())?)),
        None => (None, None),
    };
    let fd = |o: &Option<File>| o.as_ref().map(|f| f.as_raw_fd()).unwrap_or(devnull);
    // where the supervisor writes them if the engine is gone when the task ends
    let path_of = |path: fn(&Io) -> PathBuf| -> io::Result<CString> {
        match &io {
            Some(io) => cstr(path(io).as_os_str().as_bytes()),
            None => Ok(CString::default()),
        }
    };
    // the gate's two ends, closed on exec and in the supervisor before it clones the task
    let gate = match at_gate {
        Some(_) => {
            let mut fds = [-1; 2];
            // SAFETY: pipe2 writes two descriptors into the array.
            if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: both are new descriptors nobody else owns.
            unsafe { Some((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))) }
        }
        None => None,
    };
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = envs.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let mut child = Child {
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
        tied: spec.tied,
        namespaces: spec.namespaces,
        own_root: !spec.tmpfs_tmp,
        stdin: devnull,
        stdout: fd(&out),
        stderr: fd(&err),
        failed_step: AtomicI32::new(0),
        failed_errno: AtomicI32::new(0),
        src_fds: src_fds.as_mut_ptr(),
        gate: gate.as_ref().map_or(-1, |(r, _)| r.as_raw_fd()),
        sup: std::ptr::null(),
    };
    let region = crate::supervisor::Region::take()?;
    let sup = Box::new(crate::supervisor::Sup {
        child_main,
        child: &child as *const Child as *const c_void,
        child_top: region.child_top(),
        exit_path: match &io {
            Some(io) => cstr(io.exit().as_os_str().as_bytes())?,
            None => CString::default(),
        },
        streams: [&out, &err].map(|o| o.as_ref().map_or(-1, |f| f.as_raw_fd())),
        stream_paths: [path_of(Io::stdout)?, path_of(Io::stderr)?],
        // SAFETY: getpid cannot fail
        engine: unsafe { libc::getpid() },
        null: devnull,
        task_pid: AtomicI32::new(0),
        ready: AtomicU32::new(0),
        abandoned: AtomicU32::new(0),
        gate: gate
            .as_ref()
            .map_or([-1, -1], |(r, w)| [r.as_raw_fd(), w.as_raw_fd()]),
        tied: spec.tied,
    });
    child.sup = &*sup;
    let mut pidfd: libc::c_int = -1;
    // SAFETY: the supervisor runs on its own stack in the region, which is kept (with `sup`)
    // until it is reaped; it reads `child` only until the task has exec'd, which is before it
    // sets `ready`, which this thread waits for before going on. With CLONE_PIDFD the kernel
    // writes the new pidfd through the parent_tid argument.
    let sup_pid = unsafe {
        libc::clone(
            crate::supervisor::supervise,
            region.sup_top(),
            libc::CLONE_VM | libc::CLONE_PIDFD | libc::SIGCHLD,
            &*sup as *const crate::supervisor::Sup as *mut c_void,
            &mut pidfd as *mut libc::c_int,
        )
    };
    if sup_pid < 0 {
        let e = io::Error::last_os_error();
        region.give_back();
        return Err(e);
    }
    crate::supervisor::wait_while(&sup.ready, 0);
    // SAFETY: the kernel returned a new descriptor that nobody else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let mut proc = Proc {
        pid: sup.task_pid.load(Ordering::Acquire),
        sup: sup_pid,
        pidfd: Some(pidfd),
        stdout: out,
        stderr: err,
        io,
        keep: None,
    };
    if let (Some(at_gate), Some((_, w))) = (at_gate, gate)
        && sup.ready.load(Ordering::Acquire) == crate::supervisor::AT_GATE
    {
        at_gate(&proc);
        // SAFETY: one byte from a valid buffer to our own pipe, which has room for it.
        unsafe { libc::write(w.as_raw_fd(), b"g".as_ptr() as *const c_void, 1) };
        drop(w);
        crate::supervisor::wait_while(&sup.ready, crate::supervisor::AT_GATE);
        proc.pid = sup.task_pid.load(Ordering::Acquire);
    }
    proc.keep = Some(crate::supervisor::Keep::new(region, sup));
    if proc.pid < 0 {
        let e = io::Error::from_raw_os_error(-proc.pid);
        let _ = proc.wait();
        return Err(e);
    }
    let step = child.failed_step.load(Ordering::Relaxed);
    if step != 0 {
        let errno = child.failed_errno.load(Ordering::Relaxed);
        let _ = proc.wait();
        if let Some(io) = &proc.io {
            io.remove();
        }
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
            "tying the task to weir",
        ][step.clamp(0, 13) as usize];
        return Err(io::Error::new(e.kind(), format!("{step}: {e}")));
    }
    drop(child);
    Ok(proc)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The engine of [`an_engine_that_dies_at_the_gate_leaves_the_task_unrun`]: run alone in a
    /// process of its own (this test binary again), it starts a task that would write a mark
    /// and dies (`_exit`) while the task waits at its gate, after saying where the task's
    /// supervisor is.
    #[test]
    #[ignore = "run by an_engine_that_dies_at_the_gate_leaves_the_task_unrun in a process of its own"]
    fn engine_that_dies_at_the_gate() {
        let dir = PathBuf::from(std::env::var_os("WEIR_GATE_DIR").expect("WEIR_GATE_DIR"));
        let die = std::env::var("WEIR_GATE_DIE").as_deref() == Ok("1");
        let spec = Spec {
            argv: vec!["/bin/sh".into(), "-c".into(), "echo ran > mark".into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: dir.clone(),
            binds: Vec::new(),
            namespaces: false,
            tmpfs_tmp: false,
            hide: Vec::new(),
            user: None,
            io: Some(dir.join("task")),
            tied: false,
        };
        let mut at_gate = |p: &Proc| {
            std::fs::write(dir.join("sup"), p.sup.to_string()).unwrap();
            if die {
                // SAFETY: ends this process at once, as a SIGKILL would
                unsafe { libc::_exit(0) };
            }
        };
        let mut p = spawn(&spec, Some(&mut at_gate)).unwrap();
        assert_eq!(p.wait().unwrap(), 0);
    }

    /// An engine killed after the task was cloned but before it recorded it: the task does not
    /// run (a restarted engine, which cannot find it, runs it once), and its supervisor leaves
    /// no exit status behind. An engine that lives lets it run.
    #[test]
    fn an_engine_that_dies_at_the_gate_leaves_the_task_unrun() {
        for die in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "spawn::tests::engine_that_dies_at_the_gate",
                    "--ignored",
                    "--nocapture",
                ])
                .env("WEIR_GATE_DIR", dir.path())
                .env("WEIR_GATE_DIE", if die { "1" } else { "0" })
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            let sup: i32 = std::fs::read_to_string(dir.path().join("sup"))
                .unwrap()
                .parse()
                .unwrap();
            // the supervisor (orphaned when the engine died) ends: await it through a pidfd
            // SAFETY: pidfd_open of a pid; a negative result means it has already gone
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, sup, 0) } as i32;
            if fd >= 0 {
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd; then our own descriptor closed
                unsafe {
                    assert_eq!(libc::poll(&mut pfd, 1, 60_000), 1);
                    libc::close(fd);
                }
            }
            let io = Io(dir.path().join("task"));
            if die {
                assert!(!dir.path().join("mark").exists(), "the task ran");
                assert!(
                    !io.exit().exists(),
                    "a status was left for a task that did not run"
                );
            } else {
                assert_eq!(
                    std::fs::read_to_string(dir.path().join("mark")).unwrap(),
                    "ran\n"
                );
            }
        }
    }
}

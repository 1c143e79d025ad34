//! A task outlives the engine that started it: between the engine and each task stands a small
//! supervisor, a process that shares the engine's memory (`CLONE_VM`, so starting it copies no
//! page tables) and does three things: starts the task (as `spawn.rs` describes), waits for
//! it, and writes its exit status to a file before exiting with the same status. When the
//! engine is killed the supervisor goes on, so a restarted engine finds either the status file
//! (the task ended meanwhile) or a live supervisor to watch (checked against its start time,
//! so a reused pid is not mistaken for it).
//!
//! The supervisor runs in the engine's address space and with the TLS of the engine thread that
//! started it, so once that thread goes on it makes raw system calls only: libc's wrappers
//! write `errno`, which is that thread's. Until the task has exec'd, the engine thread waits on
//! a futex (itself a raw call) and touches nothing the supervisor uses.

use std::ffi::{CString, c_void};
use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

/// A system call without libc's wrapper: the result, or `-errno`; `errno` is not written.
///
/// # Safety
/// The call's arguments must be valid for it, as for the system call itself.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn raw(n: libc::c_long, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the Linux x86-64 system call convention; rcx and r11 are clobbered by `syscall`.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") a[0], in("rsi") a[1], in("rdx") a[2],
            in("r10") a[3], in("r8") a[4], in("r9") a[5],
            lateout("rcx") _, lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// A system call without libc's wrapper: the result, or `-errno`; `errno` is not written.
///
/// # Safety
/// The call's arguments must be valid for it, as for the system call itself.
#[cfg(target_arch = "aarch64")]
pub(crate) unsafe fn raw(n: libc::c_long, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the Linux AArch64 system call convention.
    unsafe {
        std::arch::asm!(
            "svc 0",
            in("x8") n,
            inlateout("x0") a[0] as isize => ret,
            in("x1") a[1], in("x2") a[2], in("x3") a[3], in("x4") a[4], in("x5") a[5],
            options(nostack),
        );
    }
    ret
}

/// Stacks: the task's child below, the supervisor's own above.
const CHILD_STACK: usize = 256 * 1024;
const SUP_STACK: usize = 64 * 1024;
const REGION: usize = CHILD_STACK + SUP_STACK;

/// A mapping holding the two stacks. Mappings are kept for reuse: a task is started and ended
/// thousands of times in a run.
pub(crate) struct Region(usize);

static FREE: Mutex<Vec<usize>> = Mutex::new(Vec::new());

impl Region {
    pub fn take() -> io::Result<Region> {
        if let Some(at) = crate::shared::lock(&FREE).pop() {
            return Ok(Region(at));
        }
        // SAFETY: a new private anonymous mapping, owned by the returned Region.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                REGION,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Region(p as usize))
    }

    /// The top (highest address, 16-byte aligned) of the task's child stack.
    pub fn child_top(&self) -> *mut c_void {
        ((self.0 + CHILD_STACK) & !15) as *mut c_void
    }

    /// The top of the supervisor's stack.
    pub fn sup_top(&self) -> *mut c_void {
        ((self.0 + REGION) & !15) as *mut c_void
    }

    /// Back to the pool: only once the supervisor running on it has been reaped.
    pub fn give_back(self) {
        crate::shared::lock(&FREE).push(self.0);
    }
}

/// What the supervisor reads: made by the engine before the clone, and kept until the
/// supervisor has been reaped (see [`Keep`]).
pub(crate) struct Sup {
    /// The task's child: its entry point and argument (valid until the task execs).
    pub child_main: extern "C" fn(*mut c_void) -> libc::c_int,
    pub child: *const c_void,
    pub child_top: *mut c_void,
    /// Where the exit status is written if the engine is gone when the task ends (empty:
    /// nowhere).
    pub exit_path: CString,
    /// The task's output files (-1: none), which the supervisor keeps open at these numbers:
    /// a new engine reads them through `/proc/SUP/fd/N` while the task runs.
    pub streams: [libc::c_int; 2],
    /// Where an output file is written if the engine is gone when the task ends.
    pub stream_paths: [CString; 2],
    /// The engine's pid: the supervisor's parent while the engine lives.
    pub engine: libc::pid_t,
    /// `/dev/null`, open.
    pub null: libc::c_int,
    /// The supervisor (and so the task) dies with the engine (`PR_SET_PDEATHSIG`).
    pub tied: bool,
    /// The task's pid, or `-errno` when it could not be cloned; valid once `ready` is 1.
    pub task_pid: AtomicI32,
    /// 0 until the task has exec'd (or failed before), then 1; [`AT_GATE`] meanwhile while the
    /// task waits at its gate: the futex the engine waits on.
    pub ready: AtomicU32,
    /// Set by a task that found its gate closed without a byte (the engine died before it
    /// recorded the task): it did not run, and no status is written for it.
    pub abandoned: AtomicU32,
    /// The gate's read and write ends (-1: no gate): the supervisor closes both (its copies)
    /// before it clones the task, so that the task's read sees end of file once the engine's
    /// write end is gone.
    pub gate: [libc::c_int; 2],
}

/// `Sup::ready` while the task, cloned and its pid published, waits at its gate.
pub(crate) const AT_GATE: u32 = 2;

// SAFETY: the raw pointers are the task child's, read by the supervisor only until it sets
// `ready`; after that a `Sup` is memory kept alive for the supervisor, moved between threads
// with the process it belongs to.
unsafe impl Send for Sup {}

/// The memory a supervisor uses, freed only once it has been reaped. Dropped otherwise (a
/// supervisor still running, or one whose engine died), it is leaked rather than freed under it.
pub(crate) struct Keep {
    region: Option<Region>,
    sup: Option<Box<Sup>>,
    reaped: bool,
}

impl Keep {
    pub fn new(region: Region, sup: Box<Sup>) -> Keep {
        Keep {
            region: Some(region),
            sup: Some(sup),
            reaped: false,
        }
    }

    /// The supervisor has been reaped: its memory may go.
    pub fn reaped(&mut self) {
        self.reaped = true;
    }
}

impl Drop for Keep {
    fn drop(&mut self) {
        if self.reaped {
            if let Some(r) = self.region.take() {
                r.give_back();
            }
        } else {
            std::mem::forget(self.sup.take());
        }
    }
}

pub(crate) fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE on a word of our own memory, shared with the engine (CLONE_VM).
    unsafe {
        raw(
            libc::SYS_futex,
            [
                word as *const AtomicU32 as usize,
                (libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG) as usize,
                1,
                0,
                0,
                0,
            ],
        );
    }
}

/// Waits (in the engine) while `ready` is `value`.
pub(crate) fn wait_while(word: &AtomicU32, value: u32) {
    while word.load(Ordering::Acquire) == value {
        // SAFETY: FUTEX_WAIT on our own word while it is 0; a raw call, so the child, which
        // writes this thread's errno before it execs, is not raced.
        unsafe {
            raw(
                libc::SYS_futex,
                [
                    word as *const AtomicU32 as usize,
                    (libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG) as usize,
                    value as usize,
                    0,
                    0,
                    0,
                ],
            );
        }
    }
}

/// The supervisor's body (the entry point of its clone).
pub(crate) extern "C" fn supervise(arg: *mut c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Sup` the engine keeps until this process is reaped. Until `ready`
    // is set the engine thread is parked; after it, only raw system calls are made.
    unsafe {
        let s = &*(arg as *const Sup);
        // tied: dies with the engine, and so (its own death signal) does the task; an engine
        // already gone is not waited for
        if s.tied
            && (libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0
                || libc::getppid() != s.engine)
        {
            s.task_pid.store(-libc::ESRCH, Ordering::Release);
            s.ready.store(1, Ordering::Release);
            futex_wake(&s.ready);
            raw(libc::SYS_exit_group, [127, 0, 0, 0, 0, 0]);
        }
        // The engine's descriptors (its database, the run's lock, other tasks' gates) are not
        // the task's, nor kept alive by this process: all are closed but the task's output
        // files, /dev/null and the read end of its gate.
        close_all_but([s.streams[0], s.streams[1], s.null, s.gate[0]]);
        // The task is cloned with the engine's signal dispositions (exec resets the handled
        // ones); this process then ignores those a terminal or a group kill sends, so that it
        // lives as long as its task.
        let pid = libc::clone(
            s.child_main,
            s.child_top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            s.child as *mut c_void,
        );
        let pid = if pid < 0 {
            -*libc::__errno_location()
        } else {
            pid
        };
        // (CLONE_VFORK: the task has exec'd or exited by now)
        let abandoned = s.abandoned.load(Ordering::Acquire) != 0;
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
            libc::signal(sig, libc::SIG_IGN);
        }
        // nor does it keep the engine's stdin, stdout and stderr (a pipe to a reader that
        // waits for the engine's end) open: /dev/null, the task's stdin, takes their place
        for fd in 0..3 {
            libc::dup2(s.null, fd);
        }
        // /dev/null and the gate go too now that the task has its own
        close_all_but([s.streams[0], s.streams[1], -1, -1]);
        let engine = s.engine;
        let exit_path = s.exit_path.as_ptr() as usize;
        let write_status = !s.exit_path.as_bytes().is_empty();
        let mut copies = [(0usize, -1); 2];
        for (k, copy) in copies.iter_mut().enumerate() {
            if s.streams[k] >= 0 && !s.stream_paths[k].as_bytes().is_empty() {
                *copy = (s.stream_paths[k].as_ptr() as usize, s.streams[k]);
            }
        }
        s.task_pid.store(pid, Ordering::Release);
        s.ready.store(1, Ordering::Release);
        futex_wake(&s.ready);
        // From here on `s` is read for nothing but the paths copied above.
        if pid < 0 {
            raw(libc::SYS_exit_group, [127, 0, 0, 0, 0, 0]);
        }
        // the task's end, left a zombie so that its pid (its group's id) is not reused while
        // what it left running in its group is killed
        let mut info: libc::siginfo_t = std::mem::zeroed();
        loop {
            let r = raw(
                libc::SYS_waitid,
                [
                    libc::P_PID as usize,
                    pid as usize,
                    &mut info as *mut libc::siginfo_t as usize,
                    (libc::WEXITED | libc::WNOWAIT) as usize,
                    0,
                    0,
                ],
            );
            if r != -(libc::EINTR as isize) {
                break;
            }
        }
        raw(
            libc::SYS_kill,
            [(-pid) as usize, libc::SIGKILL as usize, 0, 0, 0, 0],
        );
        let mut status: libc::c_int = 0;
        loop {
            let r = raw(
                libc::SYS_wait4,
                [
                    pid as usize,
                    &mut status as *mut libc::c_int as usize,
                    0,
                    0,
                    0,
                    0,
                ],
            );
            if r != -(libc::EINTR as isize) {
                break;
            }
        }
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        };
        // The engine, alive, reaps this process and reads the output it holds. Gone, it left
        // the task to a later engine: the output (what the engine had not freed) is written to
        // files, then the status.
        if raw(libc::SYS_getppid, [0; 6]) != engine as isize && write_status && !abandoned {
            for (path, fd) in copies {
                if path != 0 {
                    save(fd, path);
                }
            }
            let fd = create(exit_path);
            if fd >= 0 {
                let mut text = [0u8; 12];
                let n = decimal(code as u32, &mut text);
                text[n] = b'\n';
                raw(
                    libc::SYS_write,
                    [fd as usize, text.as_ptr() as usize, n + 1, 0, 0, 0],
                );
                raw(libc::SYS_close, [fd as usize, 0, 0, 0, 0, 0]);
            }
        }
        raw(libc::SYS_exit_group, [code as usize, 0, 0, 0, 0, 0]);
        code
    }
}

/// Closes every descriptor from 3 up but those in `keep` (-1: no one), with raw system calls.
///
/// # Safety
/// Run in the supervisor, whose descriptors are its own copies.
unsafe fn close_all_but(mut keep: [libc::c_int; 4]) {
    keep.sort_unstable();
    let mut from = 3u32;
    for fd in keep.into_iter().filter(|&fd| fd >= 3) {
        if fd as u32 > from {
            // SAFETY: closing a range of this process's own descriptors
            unsafe {
                raw(
                    libc::SYS_close_range,
                    [from as usize, fd as usize - 1, 0, 0, 0, 0],
                )
            };
        }
        from = from.max(fd as u32 + 1);
    }
    // SAFETY: as above
    unsafe {
        raw(
            libc::SYS_close_range,
            [from as usize, u32::MAX as usize, 0, 0, 0, 0],
        )
    };
}

/// Creates (or truncates) the file at `path` for writing: its descriptor, or `-errno`.
///
/// # Safety
/// `path` points at a NUL-terminated path.
unsafe fn create(path: usize) -> isize {
    // SAFETY: openat with the caller's path.
    unsafe {
        raw(
            libc::SYS_openat,
            [
                libc::AT_FDCWD as usize,
                path,
                (libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC) as usize,
                0o600,
                0,
                0,
            ],
        )
    }
}

/// Copies what memory file `fd` holds (from its first byte not punched out) to a new file at
/// `path`, with raw system calls only (see the module's notes).
///
/// # Safety
/// `path` points at a NUL-terminated path.
unsafe fn save(fd: libc::c_int, path: usize) {
    // SAFETY: plain system calls on our descriptors and the caller's path.
    unsafe {
        let out = create(path);
        if out < 0 {
            return;
        }
        let mut at: libc::off_t = raw(
            libc::SYS_lseek,
            [fd as usize, 0, libc::SEEK_DATA as usize, 0, 0, 0],
        ) as libc::off_t;
        while at >= 0 {
            let n = raw(
                libc::SYS_sendfile,
                [
                    out as usize,
                    fd as usize,
                    &mut at as *mut libc::off_t as usize,
                    1 << 20,
                    0,
                    0,
                ],
            );
            if n <= 0 {
                break;
            }
        }
        raw(libc::SYS_close, [out as usize, 0, 0, 0, 0, 0]);
    }
}

/// A supervisor an earlier engine started, if process `pid` is still that one: its pidfd
/// (readable once it exits) and its task's output files, opened through `/proc/PID/fd/N` (the
/// numbers it kept them at) and checked to be those files (`ino`, the stdout file's inode),
/// so a reused pid is not mistaken for it.
pub(crate) fn reopen(
    pid: i32,
    fds: [i32; 2],
    ino: u64,
) -> Option<(std::os::fd::OwnedFd, std::fs::File, std::fs::File)> {
    use std::os::fd::FromRawFd;
    use std::os::unix::fs::MetadataExt;
    // SAFETY: pidfd_open returns a new descriptor we then own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: as above.
    let pidfd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    // opened after the pidfd: if they are the task's files, the pidfd names its supervisor
    let open = |n: i32| std::fs::File::open(format!("/proc/{pid}/fd/{n}")).ok();
    let (out, err) = (open(fds[0])?, open(fds[1])?);
    (out.metadata().ok()?.ino() == ino).then_some((pidfd, out, err))
}

/// The exit status a supervisor wrote, if it did.
pub(crate) fn read_status(path: &std::path::Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Writes `n` in decimal at the start of `out` without allocating (a child about to exec, or a
/// supervisor, runs it); returns how many bytes.
pub(crate) fn decimal(mut n: u32, out: &mut [u8]) -> usize {
    let mut digits = [0u8; 10];
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
        out[k] = digits[len - 1 - k];
    }
    len
}

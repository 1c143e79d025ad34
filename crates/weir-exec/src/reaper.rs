//! One thread watches every running task, with epoll: its exit (a pidfd) and its output (two
//! pipes). A thread per task cost more of the engine's own CPU than everything else per task.
//!
//! Descriptors are removed from the epoll set before they are closed: a task being spawned holds
//! copies of every descriptor until it execs, which would keep a closed one registered.
//! Tokens carry a generation, so an event already fetched for a slot since reused is ignored.
//!
//! A task ends when its main process exits, as a container does: what it wrote before exiting is
//! drained from the pipes, and whatever it left running in its process group is killed.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::spawn::Proc;

/// A line longer than this is passed on in pieces.
const MAX_LINE: usize = 256 * 1024;
const WAKE: u64 = u64::MAX;

/// What the reaper reports about one process.
pub(crate) trait Watch: Send {
    /// One line of output, without its newline.
    fn line(&mut self, line: &[u8], stdout: bool);
    /// The process exited with this code (or 128 + the signal that killed it); all its output
    /// has been passed to `line`.
    fn exited(self: Box<Self>, code: i32);
}

struct Shared {
    epoll: OwnedFd,
    wake: OwnedFd,
    new: Mutex<VecDeque<(Proc, Box<dyn Watch>)>>,
    stop: AtomicBool,
}

pub(crate) struct Reaper {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl Reaper {
    pub fn new() -> io::Result<Reaper> {
        // SAFETY: plain descriptor-creating syscalls; each result is owned right away.
        let (epoll, wake) = unsafe {
            let ep = OwnedFd::from_raw_fd(check(libc::epoll_create1(libc::EPOLL_CLOEXEC))?);
            let ev = OwnedFd::from_raw_fd(check(libc::eventfd(
                0,
                libc::EFD_CLOEXEC | libc::EFD_NONBLOCK,
            ))?);
            (ep, ev)
        };
        add(epoll.as_raw_fd(), wake.as_raw_fd(), WAKE)?;
        let shared = Arc::new(Shared {
            epoll,
            wake,
            new: Mutex::new(VecDeque::new()),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("weir-reaper".into())
            .spawn(move || run(&s))?;
        Ok(Reaper {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Watches a started process until it exits (its pipes are non-blocking).
    pub fn watch(&self, proc: Proc, watch: Box<dyn Watch>) {
        crate::shared::lock(&self.shared.new).push_back((proc, watch));
        self.shared.wake();
    }

    /// Returns once every watched process has exited (the caller has killed them).
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake();
        if let Some(t) = crate::shared::lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

impl Shared {
    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: an 8-byte write to our eventfd.
        unsafe {
            libc::write(
                self.wake.as_raw_fd(),
                &one as *const u64 as *const libc::c_void,
                8,
            );
        }
    }
}

fn add(epoll: RawFd, fd: RawFd, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: token,
    };
    // SAFETY: registers a descriptor we own with our epoll instance.
    check(unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut ev) }).map(|_| ())
}

fn del(epoll: RawFd, fd: RawFd) {
    // SAFETY: removes a registered descriptor; the event argument is ignored.
    unsafe {
        libc::epoll_ctl(epoll, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut());
    }
}

/// token: generation (high 32 bits) | slot index | kind (low 2 bits: pidfd, stdout, stderr)
fn make_token(generation: u32, i: usize, kind: u64) -> u64 {
    (u64::from(generation) << 32) | ((i as u64) << 2) | kind
}

/// One stream of a process: the pipe until it is closed, and the unfinished last line.
struct Stream {
    file: Option<File>,
    partial: Vec<u8>,
}

struct Slot {
    generation: u32,
    pid: i32,
    pidfd: Option<OwnedFd>,
    streams: [Stream; 2],
    code: Option<i32>,
    watch: Box<dyn Watch>,
}

impl Slot {
    /// Reads what is available: until EAGAIN, EOF, or (unless `all`) one buffer.
    fn read(&mut self, epoll: RawFd, i: usize, buf: &mut [u8], all: bool) {
        let stdout = i == 0;
        let Slot { streams, watch, .. } = self;
        let s = &mut streams[i];
        loop {
            let Some(f) = &mut s.file else { return };
            match f.read(buf) {
                Ok(0) => {
                    del(epoll, f.as_raw_fd());
                    s.file = None;
                    if !s.partial.is_empty() {
                        watch.line(&s.partial, stdout);
                        s.partial.clear();
                    }
                    return;
                }
                Ok(n) => {
                    let mut data = &buf[..n];
                    while let Some(nl) = data.iter().position(|&b| b == b'\n') {
                        if s.partial.is_empty() {
                            watch.line(&data[..nl], stdout);
                        } else {
                            s.partial.extend_from_slice(&data[..nl]);
                            watch.line(&s.partial, stdout);
                            s.partial.clear();
                        }
                        data = &data[nl + 1..];
                    }
                    s.partial.extend_from_slice(data);
                    if s.partial.len() > MAX_LINE {
                        watch.line(&s.partial, stdout);
                        s.partial.clear();
                    }
                    if !all {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    del(epoll, f.as_raw_fd());
                    s.file = None;
                    return;
                }
            }
        }
    }

    /// The process has exited: kill what it left in its group, reap it, drain its output.
    fn exit(&mut self, epoll: RawFd, buf: &mut [u8]) {
        if let Some(fd) = self.pidfd.take() {
            del(epoll, fd.as_raw_fd());
        }
        // SAFETY: the group leader is a zombie until reaped below, so its pid (the group's id)
        // cannot have been reused: this signals only what the task itself started.
        unsafe {
            libc::kill(-self.pid, libc::SIGKILL);
        }
        self.code = Some(crate::spawn::wait(self.pid).unwrap_or(128 + libc::SIGKILL));
        for i in 0..2 {
            self.read(epoll, i, buf, true);
            if let Some(f) = self.streams[i].file.take() {
                del(epoll, f.as_raw_fd());
            }
            if !self.streams[i].partial.is_empty() {
                let rest = std::mem::take(&mut self.streams[i].partial);
                self.watch.line(&rest, i == 0);
            }
        }
    }
}

fn run(sh: &Shared) {
    let epoll = sh.epoll.as_raw_fd();
    let mut slots: Vec<Option<Slot>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut live = 0usize;
    let mut generation = 0u32;
    let mut buf = vec![0u8; 64 * 1024];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    loop {
        // SAFETY: waits on our epoll instance with a buffer of `events.len()` entries.
        let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), events.len() as i32, -1) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // epoll itself failed: nothing more can be watched
            return;
        }
        for ev in &events[..n as usize] {
            let token = ev.u64;
            if token == WAKE {
                let mut v = 0u64;
                // SAFETY: an 8-byte read from our eventfd resets its counter.
                unsafe {
                    libc::read(
                        sh.wake.as_raw_fd(),
                        &mut v as *mut u64 as *mut libc::c_void,
                        8,
                    );
                }
                let new: Vec<_> = crate::shared::lock(&sh.new).drain(..).collect();
                for (proc, watch) in new {
                    let i = free.pop().unwrap_or_else(|| {
                        slots.push(None);
                        slots.len() - 1
                    });
                    generation = generation.wrapping_add(1);
                    let ok = add(epoll, proc.pidfd.as_raw_fd(), make_token(generation, i, 0))
                        .is_ok()
                        && add(epoll, proc.stdout.as_raw_fd(), make_token(generation, i, 1))
                            .is_ok()
                        && add(epoll, proc.stderr.as_raw_fd(), make_token(generation, i, 2))
                            .is_ok();
                    let mut slot = Slot {
                        generation,
                        pid: proc.pid,
                        pidfd: Some(proc.pidfd),
                        streams: [
                            Stream {
                                file: Some(proc.stdout),
                                partial: Vec::new(),
                            },
                            Stream {
                                file: Some(proc.stderr),
                                partial: Vec::new(),
                            },
                        ],
                        code: None,
                        watch,
                    };
                    if !ok {
                        // cannot watch it: end it now rather than lose it
                        slot.exit(epoll, &mut buf);
                    }
                    slots[i] = Some(slot);
                    live += 1;
                    finish(&mut slots, &mut free, &mut live, i);
                }
                continue;
            }
            let i = ((token & 0xffff_ffff) >> 2) as usize;
            let Some(slot) = slots
                .get_mut(i)
                .and_then(|s| s.as_mut())
                .filter(|s| u64::from(s.generation) == token >> 32)
            else {
                continue;
            };
            match token & 3 {
                0 => slot.exit(epoll, &mut buf),
                k => slot.read(epoll, k as usize - 1, &mut buf, false),
            }
            finish(&mut slots, &mut free, &mut live, i);
        }
        if live == 0 && sh.stop.load(Ordering::SeqCst) && crate::shared::lock(&sh.new).is_empty() {
            return;
        }
    }
}

/// Reports a slot whose process has exited.
fn finish(slots: &mut [Option<Slot>], free: &mut Vec<usize>, live: &mut usize, i: usize) {
    if slots[i].as_ref().is_some_and(|s| s.code.is_some())
        && let Some(slot) = slots[i].take()
    {
        free.push(i);
        *live -= 1;
        if let Some(code) = slot.code {
            slot.watch.exited(code);
        }
    }
}

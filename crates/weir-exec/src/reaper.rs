//! One thread watches every running task, with epoll: its exit (its supervisor's pidfd) and its
//! output (two files, followed with inotify). A thread per task cost more of the engine's own
//! CPU than everything else per task.
//!
//! Descriptors are removed from the epoll set before they are closed: a task being spawned holds
//! copies of every descriptor until it execs, which would keep a closed one registered.
//! Tokens and watch descriptors carry a generation, so an event already fetched for a slot since
//! reused is ignored.
//!
//! A task ends when its main process exits, as a container does: its supervisor kills whatever
//! it left running in its process group, and what it wrote is read to the end of its files.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::spawn::{Proc, RETAIN};

/// A line longer than this is passed on in pieces.
const MAX_LINE: usize = 256 * 1024;
const WAKE: u64 = u64::MAX;
const INOTIFY: u64 = u64::MAX - 1;
/// What of a stream is freed at once, at least.
const PUNCH_STEP: u64 = 256 * 1024;

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
    inotify: OwnedFd,
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
        let (epoll, wake, inotify) = unsafe {
            let ep = OwnedFd::from_raw_fd(check(libc::epoll_create1(libc::EPOLL_CLOEXEC))?);
            let ev = OwnedFd::from_raw_fd(check(libc::eventfd(
                0,
                libc::EFD_CLOEXEC | libc::EFD_NONBLOCK,
            ))?);
            let ino = OwnedFd::from_raw_fd(check(libc::inotify_init1(
                libc::IN_CLOEXEC | libc::IN_NONBLOCK,
            ))?);
            (ep, ev, ino)
        };
        add(epoll.as_raw_fd(), wake.as_raw_fd(), WAKE)?;
        add(epoll.as_raw_fd(), inotify.as_raw_fd(), INOTIFY)?;
        let shared = Arc::new(Shared {
            epoll,
            wake,
            inotify,
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

    /// Watches a started process until it exits.
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

/// token: generation (high 32 bits) | slot index (low 32 bits): a supervisor's pidfd
fn make_token(generation: u32, i: usize) -> u64 {
    (u64::from(generation) << 32) | i as u64
}

/// One stream of a process: its file until it is read to the end, the inotify watch on it,
/// and the unfinished last line.
struct Stream {
    file: Option<File>,
    /// Where the next read starts: the task writes through the same open file, which moves
    /// its offset, so reads are positioned (`pread`).
    offset: u64,
    /// Up to where the file's memory was freed (read, and older than the last `RETAIN` bytes).
    punched: u64,
    wd: Option<i32>,
    partial: Vec<u8>,
}

struct Slot {
    generation: u32,
    proc: Proc,
    streams: [Stream; 2],
    code: Option<i32>,
    watch: Box<dyn Watch>,
}

/// Which slot's stream an inotify watch descriptor follows.
type Watches = HashMap<i32, (usize, usize, u32)>;

impl Slot {
    /// Reads what the file holds now, to its current end.
    fn read(&mut self, i: usize, buf: &mut [u8]) {
        let stdout = i == 0;
        let Slot { streams, watch, .. } = self;
        let s = &mut streams[i];
        loop {
            let Some(f) = &s.file else { return };
            match f.read_at(buf, s.offset) {
                Ok(0) => {
                    // what has been read is freed but for the last RETAIN bytes, in steps
                    let keep_from = s.offset.saturating_sub(RETAIN) & !0xffff;
                    if keep_from >= s.punched + PUNCH_STEP {
                        // SAFETY: frees a range of our own file (a memfd, or a file found
                        // again after a restart); its size is kept.
                        unsafe {
                            libc::fallocate(
                                f.as_raw_fd(),
                                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                                s.punched as libc::off_t,
                                (keep_from - s.punched) as libc::off_t,
                            );
                        }
                        s.punched = keep_from;
                    }
                    return;
                }
                Ok(n) => {
                    s.offset += n as u64;
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
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// The process has exited (its supervisor reports it): reap the supervisor, read the
    /// output to its end.
    fn exit(&mut self, epoll: RawFd, inotify: RawFd, watches: &mut Watches, buf: &mut [u8]) {
        if let Some(fd) = self.proc.pidfd.take() {
            del(epoll, fd.as_raw_fd());
        }
        self.code = Some(self.proc.wait().unwrap_or(128 + libc::SIGKILL));
        for i in 0..2 {
            self.read(i, buf);
            if let Some(wd) = self.streams[i].wd.take() {
                watches.remove(&wd);
                // SAFETY: removes a watch of our own inotify instance.
                unsafe {
                    libc::inotify_rm_watch(inotify, wd);
                }
            }
            self.streams[i].file = None;
            if !self.streams[i].partial.is_empty() {
                let rest = std::mem::take(&mut self.streams[i].partial);
                self.watch.line(&rest, i == 0);
            }
        }
    }
}

/// Where reading the stream of a task found again after a restart starts (a file of its own
/// opening): its first byte of data (the previous engine freed what it had read). A file with no data yet (`ENXIO`) is read from
/// its start: nothing was freed in it, since some of what is read is always kept.
fn first_data(f: &File) -> u64 {
    // SAFETY: lseek on our own descriptor; a positioned read follows, whatever the offset.
    let at = unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_DATA) };
    at.max(0) as u64
}

/// Follows a stream's file: an inotify watch for its modifications. Without one (the
/// per-user limit reached) the output is still read, at the end.
fn follow(inotify: RawFd, f: &File) -> Option<i32> {
    let mut path = format!("/proc/self/fd/{}", f.as_raw_fd()).into_bytes();
    path.push(0);
    // SAFETY: a NUL-terminated path; the watch belongs to our inotify instance.
    let wd = unsafe {
        libc::inotify_add_watch(
            inotify,
            path.as_ptr() as *const libc::c_char,
            libc::IN_MODIFY,
        )
    };
    (wd >= 0).then_some(wd)
}

fn run(sh: &Shared) {
    let epoll = sh.epoll.as_raw_fd();
    let inotify = sh.inotify.as_raw_fd();
    let mut slots: Vec<Option<Slot>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut watches: Watches = HashMap::new();
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
                for (mut proc, watch) in new {
                    let i = free.pop().unwrap_or_else(|| {
                        slots.push(None);
                        slots.len() - 1
                    });
                    generation = generation.wrapping_add(1);
                    let mut streams = [proc.stdout.take(), proc.stderr.take()].map(|file| {
                        let wd = file.as_ref().and_then(|f| follow(inotify, f));
                        // a task started here is read from its start (its file is shared
                        // with the task: seeking it would move where the task writes)
                        let offset = match (&file, proc.sup) {
                            (Some(f), 0) => first_data(f),
                            _ => 0,
                        };
                        Stream {
                            file,
                            offset,
                            punched: offset,
                            wd,
                            partial: Vec::new(),
                        }
                    });
                    for (k, s) in streams.iter_mut().enumerate() {
                        if let Some(wd) = s.wd {
                            watches.insert(wd, (i, k, generation));
                        }
                    }
                    // a supervisor gone before it was watched (an earlier engine's) has ended
                    let ok = proc.pidfd.as_ref().is_some_and(|fd| {
                        add(epoll, fd.as_raw_fd(), make_token(generation, i)).is_ok()
                    });
                    let mut slot = Slot {
                        generation,
                        proc,
                        streams,
                        code: None,
                        watch,
                    };
                    // what it wrote before it was watched
                    for k in 0..2 {
                        slot.read(k, &mut buf);
                    }
                    if !ok {
                        slot.exit(epoll, inotify, &mut watches, &mut buf);
                    }
                    slots[i] = Some(slot);
                    live += 1;
                    finish(&mut slots, &mut free, &mut live, i);
                }
                continue;
            }
            if token == INOTIFY {
                for (i, k) in modified(inotify, &watches, &slots, &mut buf) {
                    if let Some(slot) = slots[i].as_mut() {
                        slot.read(k, &mut buf);
                    }
                }
                continue;
            }
            let i = (token & 0xffff_ffff) as usize;
            let Some(slot) = slots
                .get_mut(i)
                .and_then(|s| s.as_mut())
                .filter(|s| u64::from(s.generation) == token >> 32)
            else {
                continue;
            };
            slot.exit(epoll, inotify, &mut watches, &mut buf);
            finish(&mut slots, &mut free, &mut live, i);
        }
        if live == 0 && sh.stop.load(Ordering::SeqCst) && crate::shared::lock(&sh.new).is_empty() {
            return;
        }
    }
}

/// The streams whose files were written to, from the inotify events pending (each once); on
/// an overflow of the event queue, every stream.
fn modified(
    inotify: RawFd,
    watches: &Watches,
    slots: &[Option<Slot>],
    buf: &mut [u8],
) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    let header = std::mem::size_of::<libc::inotify_event>();
    loop {
        // SAFETY: reads whole events into our buffer.
        let n = unsafe { libc::read(inotify, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
        if n <= 0 {
            break;
        }
        let mut at = 0usize;
        while at + header <= n as usize {
            // SAFETY: the kernel wrote a whole event header at `at` (read_unaligned: the
            // buffer's alignment is a byte's).
            let ev: libc::inotify_event =
                unsafe { std::ptr::read_unaligned(buf.as_ptr().add(at) as *const _) };
            at += header + ev.len as usize;
            if ev.mask & libc::IN_Q_OVERFLOW != 0 {
                for (i, s) in slots.iter().enumerate() {
                    if s.is_some() {
                        out.extend([(i, 0), (i, 1)]);
                    }
                }
            } else if let Some(&(i, k, g)) = watches.get(&ev.wd)
                && slots[i].as_ref().is_some_and(|s| s.generation == g)
            {
                out.push((i, k));
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
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

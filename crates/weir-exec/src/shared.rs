//! Small things several parts of the executor use: a mutex lock that survives a panicked
//! holder, and a task's lazily created log file.

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A task's log file, created when the first line arrives: most tasks of a large fan-out print
/// nothing, and creating files is what costs most per task on some filesystems.
pub(crate) struct LazyLog {
    pub(crate) path: PathBuf,
    pub(crate) file: Option<fs::File>,
}

impl LazyLog {
    pub(crate) fn line(&mut self, text: &str) {
        if self.file.is_none() {
            self.file = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .ok();
        }
        if let Some(f) = &mut self.file {
            let _ = writeln!(f, "{text}");
        }
    }
}

/// The most of a task's stdout kept as its `outputs.result`: its last 256 KiB.
pub(crate) const RESULT_LIMIT: usize = 256 * 1024;

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

/// What a task's stdout makes of its result, whichever executor ran it: its last
/// [`RESULT_LIMIT`] bytes (`outputs.result`) and the metrics of its `::weir-metric` lines.
#[derive(Default)]
pub(crate) struct Stdout {
    tail: Vec<u8>,
    /// The points reported, and the first malformed line (which stops the reading).
    pub metrics: Vec<weir_core::run::MetricPoint>,
    pub metric_error: Option<String>,
}

impl Stdout {
    /// One line of stdout, without its newline.
    pub fn line(&mut self, line: &[u8]) {
        if let Some(rest) = line.strip_prefix(b"::weir-metric ")
            && self.metric_error.is_none()
        {
            let r = std::str::from_utf8(rest)
                .map_err(|_| "not UTF-8".to_string())
                .and_then(crate::report::marker_line);
            match r {
                Ok(_) if self.metrics.len() >= crate::report::LIMIT => {
                    self.metric_error =
                        Some(format!("more than {} metric points", crate::report::LIMIT))
                }
                Ok(p) => self.metrics.push(p),
                Err(e) => self.metric_error = Some(format!("::weir-metric line: {e}")),
            }
        }
        self.tail.extend_from_slice(line);
        self.tail.push(b'\n');
        if self.tail.len() > RESULT_LIMIT * 2 {
            let cut = self.tail.len() - RESULT_LIMIT;
            self.tail.drain(..cut);
        }
    }

    /// `outputs.result`: the last [`RESULT_LIMIT`] bytes, without the trailing newline.
    pub fn result(&self) -> String {
        let tail = &self.tail[self.tail.len().saturating_sub(RESULT_LIMIT)..];
        let mut s = String::from_utf8_lossy(tail).into_owned();
        if s.ends_with('\n') {
            s.pop();
        }
        s
    }
}

/// One output line, masked, to the task's log and (when streaming) to the driver.
pub(crate) fn emit(
    line: &[u8],
    prefix: &str,
    secrets: &[String],
    log: &Mutex<LazyLog>,
    stream: &Option<std::sync::mpsc::Sender<crate::Update>>,
    node: &str,
) {
    let text = String::from_utf8_lossy(line);
    let masked = format!(
        "{prefix}{}",
        crate::mask(text.trim_end_matches('\r'), secrets)
    );
    lock(log).line(&masked);
    if let Some(tx) = stream {
        let _ = tx.send(crate::Update::Log {
            node: node.to_string(),
            line: masked,
        });
    }
}

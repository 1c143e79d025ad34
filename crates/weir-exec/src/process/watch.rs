//! Watching a task's processes: their output to the task's log (masked) and the driver, their
//! exit to the collection of outputs; and watching again a task an earlier engine started.

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use weir_core::run::{MetricPoint, Requests, TaskResult, TaskSpec};

use super::{Collect, Inner, Job, ProcessExecutor, RESULT_LIMIT, io_base, kill_group, within};
use crate::adopt;
use crate::reaper::Watch;
use crate::shared::{LazyLog, lock};
use crate::{Update, mask, report, spawn};

/// Passes a task's output to its log (masked) and the driver, and its exit to `done`.
pub(super) struct TaskWatch {
    pub(super) me: Arc<Inner>,
    pub(super) node: String,
    /// Its output files in the io directory, for a task found again after a restart (whose
    /// supervisor wrote them): removed once its result is recorded.
    pub(super) io: Option<spawn::Io>,
    pub(super) requests: Requests,
    pub(super) gpus: Vec<String>,
    pub(super) log: Arc<Mutex<LazyLog>>,
    pub(super) secrets: Vec<String>,
    pub(super) stream: Option<Sender<Update>>,
    pub(super) tail: Vec<u8>,
    pub(super) collect: Option<Box<Collect>>,
    /// Process groups of the task's sidecars: killed when the task exits.
    pub(super) sidecars: Vec<i32>,
    /// Set when the task exits (a daemon's readiness probe stops then).
    pub(super) exited: Arc<AtomicBool>,
    /// `::weir-metric` lines seen so far, and the first malformed one.
    pub(super) reported: (Vec<MetricPoint>, Option<String>),
}

/// Passes a sidecar's (or init container's) output to its task's log, each line marked with
/// the container's name; an init container's exit code goes to `exited`.
pub(super) struct SidecarWatch {
    pub(super) name: String,
    pub(super) node: String,
    pub(super) log: Arc<Mutex<LazyLog>>,
    pub(super) secrets: Vec<String>,
    pub(super) stream: Option<Sender<Update>>,
    pub(super) exited: Option<Sender<i32>>,
}

/// One output line, masked, to the task's log and (when streaming) to the driver.
fn emit(
    line: &[u8],
    prefix: &str,
    secrets: &[String],
    log: &Mutex<LazyLog>,
    stream: &Option<Sender<Update>>,
    node: &str,
) {
    let text = String::from_utf8_lossy(line);
    let masked = format!("{prefix}{}", mask(text.trim_end_matches('\r'), secrets));
    lock(log).line(&masked);
    if let Some(tx) = stream {
        let _ = tx.send(Update::Log {
            node: node.to_string(),
            line: masked,
        });
    }
}

impl Watch for SidecarWatch {
    fn line(&mut self, line: &[u8], _stdout: bool) {
        let prefix = format!("[{}] ", self.name);
        emit(
            line,
            &prefix,
            &self.secrets,
            &self.log,
            &self.stream,
            &self.node,
        );
    }

    fn exited(self: Box<Self>, code: i32) {
        if let Some(tx) = self.exited {
            let _ = tx.send(code);
        }
    }
}

impl TaskWatch {
    /// Watches `task` with its log; sidecars, a readiness flag and output collection are
    /// added by the caller when the task has them.
    pub(super) fn new(
        me: Arc<Inner>,
        task: &TaskSpec,
        gpus: Vec<String>,
        log: Arc<Mutex<LazyLog>>,
    ) -> TaskWatch {
        let stream = me.cfg.stream_logs.then(|| lock(&me.tx).clone());
        TaskWatch {
            node: task.node_id.clone(),
            io: None,
            requests: task.requests.clone(),
            gpus,
            log,
            secrets: task.secrets.clone(),
            stream,
            sidecars: Vec::new(),
            exited: Arc::new(AtomicBool::new(false)),
            tail: Vec::new(),
            collect: None,
            reported: (Vec::new(), None),
            me,
        }
    }
}

impl Watch for TaskWatch {
    fn line(&mut self, line: &[u8], stdout: bool) {
        if stdout
            && let Some(rest) = line.strip_prefix(b"::weir-metric ")
            && self.reported.1.is_none()
        {
            let r = std::str::from_utf8(rest)
                .map_err(|_| "not UTF-8".to_string())
                .and_then(report::marker_line);
            match r {
                Ok(_) if self.reported.0.len() >= report::LIMIT => {
                    self.reported.1 = Some(format!("more than {} metric points", report::LIMIT))
                }
                Ok(p) => self.reported.0.push(p),
                Err(e) => self.reported.1 = Some(format!("::weir-metric line: {e}")),
            }
        }
        if stdout {
            self.tail.extend_from_slice(line);
            self.tail.push(b'\n');
            if self.tail.len() > RESULT_LIMIT * 2 {
                let cut = self.tail.len() - RESULT_LIMIT;
                self.tail.drain(..cut);
            }
        }
        emit(line, "", &self.secrets, &self.log, &self.stream, &self.node);
    }

    fn exited(self: Box<Self>, code: i32) {
        let TaskWatch {
            me,
            node,
            requests,
            gpus,
            mut tail,
            collect,
            sidecars,
            exited,
            reported,
            io,
            ..
        } = *self;
        exited.store(true, Ordering::SeqCst);
        if let Some(io) = io {
            lock(&me.state).ended.insert(node.clone(), io);
        }
        for pgid in sidecars {
            kill_group(pgid);
        }
        if tail.len() > RESULT_LIMIT {
            let cut = tail.len() - RESULT_LIMIT;
            tail.drain(..cut);
        }
        let mut stdout = String::from_utf8_lossy(&tail).into_owned();
        if stdout.ends_with('\n') {
            stdout.pop();
        }
        match collect {
            Some(mut c) => {
                c.reported = reported;
                me.queue(Job::Collect(c, code, stdout))
            }
            None => me.done(
                node,
                &requests,
                &gpus,
                TaskResult {
                    exit_code: Some(code),
                    stdout,
                    error: reported.1,
                    metrics: reported.0,
                    ..TaskResult::default()
                },
            ),
        }
    }
}

impl Inner {
    /// Watches again a task an earlier engine started (see [`adopt`]): one whose supervisor
    /// still runs, or whose exit status it wrote. None: it cannot be, and must run again.
    pub(super) fn adopt(self: Arc<Self>, run: &str, node: &str) -> Option<()> {
        let run_dir = within(&self.cfg.work_root, run).ok()?;
        let found = adopt::find(&run_dir.join("pids"), node)?;
        let io = spawn::Io(io_base(&run_dir, node, None));
        // its supervisor still runs: its output files are read through it; it ended meanwhile
        // (the task too): its status and output files were written and named
        let (pidfd, stdout, stderr) =
            match crate::supervisor::reopen(found.handle.sup, found.handle.fds, found.handle.ino) {
                Some((pidfd, out, err)) => (Some(pidfd), out, err),
                None => {
                    crate::supervisor::read_status(&io.exit())?;
                    (
                        None,
                        fs::File::open(io.stdout()).ok()?,
                        fs::File::open(io.stderr()).ok()?,
                    )
                }
            };
        let adopt::Record {
            task,
            gpus,
            outputs,
        } = found.record;
        {
            let mut st = lock(&self.state);
            st.ledger.hold(&task.requests, &gpus);
            st.running.insert(node.to_string(), found.pid);
            st.log_dirs.insert(task.run.clone());
        }
        // its output is read again from what the earlier engine had not freed: the last MiB
        // of each stream it had read, and all it had not
        let path = ProcessExecutor::log_path(&self.cfg.work_root, &task.run, node);
        let mut log = LazyLog { path, file: None };
        log.line(&format!(
            "weir: weir restarted while this task ran; its output follows again from up to {} KiB before the restart (lines may repeat)",
            spawn::RETAIN / 1024
        ));
        let mut watch =
            TaskWatch::new(self.clone(), &task, gpus.clone(), Arc::new(Mutex::new(log)));
        watch.collect = outputs.map(|out| Collect::new(task, gpus, out));
        watch.io = Some(io.clone());
        let proc = spawn::Proc {
            pid: found.pid,
            sup: 0,
            pidfd,
            stdout: Some(stdout),
            stderr: Some(stderr),
            io: Some(io),
            keep: None,
        };
        self.reaper.watch(proc, Box::new(watch));
        Some(())
    }
}

//! Watching a task's processes: their output to the task's log (masked) and the driver, their
//! exit to the collection of outputs; and watching again a task an earlier engine started.

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use weir_core::run::{Requests, TaskResult, TaskSpec};

use super::{Collect, Inner, Job, ProcessExecutor, io_base, kill_group, within};
use crate::adopt;
use crate::reaper::Watch;
use crate::shared::{LazyLog, Stdout, emit, lock};
use crate::{Update, spawn};

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
    /// What its stdout makes of its result.
    pub(super) stdout: Stdout,
    pub(super) collect: Option<Box<Collect>>,
    /// Process groups of the task's sidecars: killed when the task exits.
    pub(super) sidecars: Vec<i32>,
    /// Set when the task exits (a daemon's readiness probe stops then).
    pub(super) exited: Arc<AtomicBool>,
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
            stdout: Stdout::default(),
            collect: None,
            me,
        }
    }
}

impl Watch for TaskWatch {
    fn line(&mut self, line: &[u8], stdout: bool) {
        if stdout {
            self.stdout.line(line);
        }
        emit(line, "", &self.secrets, &self.log, &self.stream, &self.node);
    }

    fn exited(self: Box<Self>, code: i32) {
        let TaskWatch {
            me,
            node,
            requests,
            gpus,
            stdout: out,
            collect,
            sidecars,
            exited,
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
        let stdout = out.result();
        match collect {
            Some(mut c) => {
                c.reported = (out.metrics, out.metric_error);
                me.queue(Job::Collect(c, code, stdout))
            }
            None => me.done(
                node,
                &requests,
                &gpus,
                TaskResult {
                    exit_code: Some(code),
                    stdout,
                    error: out.metric_error,
                    metrics: out.metrics,
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

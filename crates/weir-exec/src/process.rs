//! The local process executor (the embedded default): each task is a process group on this
//! host, in its own work directory and filesystem view, with its output captured to a log file.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::adopt::{self, Outputs};
use crate::repo::LocalRepo;
use watch::{SidecarWatch, TaskWatch};
use weir_core::run::{Access, ArtifactRef, MetricPoint, Requests, TaskResult, TaskSpec};

use crate::admission::{Capacity, Ledger};
use crate::isolation::Isolation;
use crate::paths::task_dirs;
use crate::reaper::Reaper;
use crate::report;
use crate::sandbox::{Sandbox, View};
use crate::shared::{LazyLog, lock};
use crate::spawn;
use crate::{Executor, Update, artifacts, mask, outputs};

mod watch;

#[derive(Clone)]
pub struct ProcessConfig {
    /// Per-run work directories and logs live under `work_root/<run>/`.
    pub work_root: PathBuf,
    pub repo: LocalRepo,
    pub sandbox: Sandbox,
    pub capacity: Capacity,
    /// Send each output line as [`Update::Log`].
    pub stream_logs: bool,
    /// The database child runs (`resource` templates creating a Workflow) are recorded in.
    pub db: Option<PathBuf>,
    /// Tasks run as an unprivileged user, away from weir's files (`weir server`, `weir worker`).
    pub isolation: Option<Isolation>,
    /// Tasks end with this process (a worker: the queue gives a lost worker's tasks to another
    /// once), instead of outliving it to be watched again by the next driver of their run.
    pub tied: bool,
}

struct Inner {
    cfg: ProcessConfig,
    /// With isolation: what every task's mount namespace hides (`Isolation::prepare`).
    hidden: Vec<PathBuf>,
    tx: Mutex<Sender<Update>>,
    state: Mutex<State>,
    python3_for_python: bool,
    jobs: Mutex<VecDeque<Job>>,
    jobs_ready: Condvar,
    shutting_down: AtomicBool,
    reaper: Reaper,
}

#[derive(Default)]
struct State {
    queue: VecDeque<TaskSpec>,
    ledger: Ledger,
    /// node → process group id
    running: HashMap<String, i32>,
    stopped: HashSet<String>,
    told_python: HashSet<String>,
    /// run → its append-only pids file
    pids: HashMap<String, fs::File>,
    /// runs whose log directory exists
    log_dirs: HashSet<String>,
    /// node → the output files of a task that has ended: removed once its result is recorded
    /// (until then a restart reads them again)
    ended: HashMap<String, spawn::Io>,
    /// nodes that are child runs: stopped with SIGTERM, so the child weir stops its own tasks
    children: HashSet<String>,
}

/// Work for the pool threads: preparing and starting a task, or collecting its outputs.
enum Job {
    Launch(Box<TaskSpec>, Vec<String>),
    Collect(Box<Collect>, i32, String),
    Fetch(String, Vec<ArtifactRef>, Vec<Option<Access>>),
}

/// What a task that exchanges files needs after its process exits.
struct Collect {
    task: TaskSpec,
    gpus: Vec<String>,
    /// What the task printed as `::weir-metric` lines, and the first malformed one.
    reported: (Vec<MetricPoint>, Option<String>),
    out: Outputs,
}

impl Collect {
    fn new(task: TaskSpec, gpus: Vec<String>, out: Outputs) -> Box<Collect> {
        Box::new(Collect {
            task,
            gpus,
            reported: (Vec::new(), None),
            out,
        })
    }
}

pub struct ProcessExecutor {
    inner: Arc<Inner>,
    pool: Mutex<Vec<JoinHandle<()>>>,
}

impl ProcessExecutor {
    /// Fails only if the kernel refuses what watching tasks needs (epoll, eventfd, a thread).
    pub fn new(cfg: ProcessConfig, tx: Sender<Update>) -> std::io::Result<ProcessExecutor> {
        let hidden = match &cfg.isolation {
            None => Vec::new(),
            Some(_) if cfg.sandbox != Sandbox::Namespaces => {
                return Err(std::io::Error::other(
                    "tasks run as another user need a private mount namespace, which this host \
                     refuses (start weir as root, or with --allow-root-tasks to run them as \
                     weir's own user)",
                ));
            }
            Some(iso) => iso.prepare(
                cfg.work_root.parent().unwrap_or(&cfg.work_root),
                cfg.db.as_deref(),
            )?,
        };
        let python3_for_python = which("python").is_none() && which("python3").is_some();
        let reaper = Reaper::new()?;
        let inner = Arc::new(Inner {
            cfg,
            hidden,
            tx: Mutex::new(tx),
            state: Mutex::new(State::default()),
            python3_for_python,
            jobs: Mutex::new(VecDeque::new()),
            jobs_ready: Condvar::new(),
            shutting_down: AtomicBool::new(false),
            reaper,
        });
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .max(4);
        let pool = (0..threads)
            .filter_map(|_| {
                let me = inner.clone();
                std::thread::Builder::new()
                    .name("weir-exec".into())
                    .spawn(move || me.work())
                    .ok()
            })
            .collect();
        Ok(ProcessExecutor {
            inner,
            pool: Mutex::new(pool),
        })
    }

    /// The log file of a node.
    pub fn log_path(work_root: &Path, run: &str, node: &str) -> PathBuf {
        work_root.join(run).join("logs").join(format!("{node}.log"))
    }
}

/// Where a process of a task writes its output and its supervisor the exit status
/// ([`spawn::Io`]): `RUN/io/NODE` for the task's main process, `RUN/io/NODE.NAME` for one of its
/// other containers. Raw (unmasked) output, removed once read.
fn io_base(run_dir: &Path, node: &str, container: Option<&str>) -> PathBuf {
    let name = match container {
        Some(c) => format!("{node}.{c}"),
        None => node.to_string(),
    };
    run_dir.join("io").join(name)
}

/// `root/rel`, refused (as a task's error) if `rel` would leave `root`.
fn within(root: &Path, rel: &str) -> Result<PathBuf, String> {
    crate::paths::within(root, rel).map_err(|e| e.to_string())
}

fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

impl Executor for ProcessExecutor {
    fn start(&self, task: TaskSpec) {
        if let Err(e) = Ledger::possible(&self.inner.cfg.capacity, &task.requests) {
            self.inner.send(Update::Finished {
                node: task.node_id.clone(),
                result: failed(format!("cannot be admitted: {e}")),
            });
            return;
        }
        lock(&self.inner.state).queue.push_back(task);
        self.inner.admit();
    }

    fn fetch(&self, node: &str, sources: Vec<ArtifactRef>, access: Vec<Option<Access>>) {
        self.inner
            .queue(Job::Fetch(node.to_string(), sources, access));
    }

    fn stop(&self, node: &str) {
        let mut st = lock(&self.inner.state);
        st.stopped.insert(node.to_string());
        if let Some(pos) = st.queue.iter().position(|t| t.node_id == node) {
            st.queue.remove(pos);
        }
        if let Some(&pgid) = st.running.get(node) {
            if st.children.contains(node) {
                // SAFETY: signals the child weir's own process group.
                unsafe {
                    libc::kill(-pgid, libc::SIGTERM);
                }
            } else {
                kill_group(pgid);
            }
        }
    }

    fn adopt(&self, run: &str, node: &str) -> bool {
        self.inner.clone().adopt(run, node).is_some()
    }

    fn recorded(&self, finished: &[String]) {
        let mut st = lock(&self.inner.state);
        for node in finished {
            if let Some(io) = st.ended.remove(node) {
                io.remove();
            }
        }
    }

    fn shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        {
            let mut st = lock(&self.inner.state);
            st.queue.clear();
            for &pgid in st.running.values() {
                kill_group(pgid);
            }
        }
        {
            let _jobs = lock(&self.inner.jobs);
            self.inner.jobs_ready.notify_all();
        }
        for t in std::mem::take(&mut *lock(&self.pool)) {
            let _ = t.join();
        }
        self.inner.reaper.shutdown();
    }
}

fn kill_group(pgid: i32) {
    // SAFETY: kill(2) with a negative pid signals the task's own process group.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

fn failed(msg: String) -> TaskResult {
    TaskResult {
        error: Some(msg),
        ..TaskResult::default()
    }
}

/// The task's environment with a container's own variables over it.
fn with_env(
    base: &[(String, String)],
    own: &[(String, String)],
    view: &View,
) -> Vec<(String, String)> {
    let mut env = base.to_vec();
    for (k, v) in own {
        env.retain(|(x, _)| x != k);
        env.push((k.clone(), view.rewrite(v)));
    }
    env
}

impl Inner {
    fn send(&self, u: Update) {
        let _ = lock(&self.tx).send(u);
    }

    fn queue(&self, job: Job) {
        lock(&self.jobs).push_back(job);
        self.jobs_ready.notify_one();
    }

    /// A pool thread: runs jobs until the executor shuts down.
    fn work(self: Arc<Self>) {
        loop {
            let job = {
                let mut jobs = lock(&self.jobs);
                loop {
                    if self.shutting_down.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Some(j) = jobs.pop_front() {
                        break j;
                    }
                    jobs = self
                        .jobs_ready
                        .wait(jobs)
                        .unwrap_or_else(|p| p.into_inner());
                }
            };
            let (node, requests, gpus) = match &job {
                Job::Fetch(node, sources, access) => {
                    let results = outputs::fetch(&self.cfg.repo, sources, access);
                    self.send(Update::Fetched {
                        node: node.clone(),
                        results,
                    });
                    continue;
                }
                Job::Launch(t, g) => (t.node_id.clone(), t.requests.clone(), g.clone()),
                Job::Collect(c, ..) => (
                    c.task.node_id.clone(),
                    c.task.requests.clone(),
                    c.gpus.clone(),
                ),
            };
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match job {
                Job::Launch(task, gpus) => self.clone().launch(*task, gpus),
                Job::Collect(c, code, stdout) => {
                    let result = self.collect(&c, code, stdout).unwrap_or_else(failed);
                    self.done(c.task.node_id.clone(), &c.task.requests, &c.gpus, result);
                }
                Job::Fetch(..) => {}
            }));
            if outcome.is_err() {
                let msg = "the executor panicked while running this task".to_string();
                self.done(node, &requests, &gpus, failed(msg));
            }
        }
    }

    /// Starts queued tasks while they fit.
    fn admit(&self) {
        let mut st = lock(&self.state);
        while let Some(task) = st.queue.front() {
            if !st.ledger.fits(&self.cfg.capacity, &task.requests) {
                break;
            }
            let Some(task) = st.queue.pop_front() else {
                break;
            };
            let gpus = st.ledger.take(&self.cfg.capacity, &task.requests);
            self.queue(Job::Launch(Box::new(task), gpus));
        }
    }

    /// A task has ended: frees its resources, reports it, starts what now fits.
    fn done(&self, node: String, requests: &Requests, gpus: &[String], result: TaskResult) {
        {
            let mut st = lock(&self.state);
            st.running.remove(&node);
            st.stopped.remove(&node);
            st.children.remove(&node);
            st.ledger.give(requests, gpus);
        }
        self.send(Update::Finished { node, result });
        self.admit();
    }

    /// The data directory: the work root's parent (`runs/` is in it).
    fn data_dir(&self) -> PathBuf {
        self.cfg
            .work_root
            .parent()
            .unwrap_or(&self.cfg.work_root)
            .to_path_buf()
    }

    /// With isolation: the task's work directory becomes the task user's, who runs it.
    fn task_user(&self, work: &Path) -> Result<Option<(u32, u32)>, String> {
        let Some(iso) = &self.cfg.isolation else {
            return Ok(None);
        };
        iso.hand_over(work)?;
        Ok(Some((iso.uid, iso.gid)))
    }

    /// Prepares each volume's host directory and how it appears at its mount path. Returns the
    /// bind mounts that must come after the private /tmp (mount paths inside /tmp).
    fn volumes(
        &self,
        task: &TaskSpec,
        run_dir: &Path,
        work: &Path,
        view: &mut View,
    ) -> Result<Vec<(PathBuf, PathBuf)>, String> {
        let mut late = Vec::new();
        let data_dir = self.data_dir();
        let host_path = |p: &Path| match &self.cfg.isolation {
            Some(iso) if !iso.allows(p) => Err(format!(
                "hostPath {} is not one of the host paths this server lets tasks use \
                 (--allow-host-path)",
                p.display()
            )),
            _ => Ok(()),
        };
        let places = crate::volumes::Places {
            run_dir,
            work,
            data_dir: &data_dir,
            host_path: &host_path,
            owner: self.cfg.isolation.as_ref().map(|iso| (iso.uid, iso.gid)),
        };
        for m in &task.mounts {
            let host = crate::volumes::host_dir(m, &places)?;
            let target = PathBuf::from(&m.path);
            match target.strip_prefix("/tmp") {
                Ok(rest) if self.cfg.sandbox == Sandbox::Namespaces => {
                    let _ = fs::create_dir_all(view.tmp.join(rest));
                    late.push((host, target));
                }
                Ok(rest) => {
                    let link = view.tmp.join(rest);
                    if let Some(parent) = link.parent() {
                        let _ = fs::create_dir_all(parent);
                    }
                    std::os::unix::fs::symlink(&host, &link)
                        .map_err(|e| format!("volume `{}`: {e}", m.name))?;
                }
                // its mount point is made in the task's own root
                Err(_) => view.binds.push((target, host)),
            }
        }
        Ok(late)
    }

    /// Prepares a task's files and starts its process; the reaper takes it from there.
    fn launch(self: Arc<Self>, task: TaskSpec, gpus: Vec<String>) {
        let node = task.node_id.clone();
        let requests = task.requests.clone();
        if let Err(e) = self.clone().try_launch(task, gpus.clone()) {
            self.done(node, &requests, &gpus, failed(e));
        }
    }

    fn try_launch(self: Arc<Self>, task: TaskSpec, gpus: Vec<String>) -> Result<(), String> {
        if let Some(child) = &task.child {
            return self.launch_child(&task, child, gpus);
        }
        if task.data.is_some() || task.http.is_some() {
            // data and http templates run here, in this pool thread, with no process
            self.send(Update::Started {
                node: task.node_id.clone(),
                pid: 0,
            });
            let outcome = match (&task.data, &task.http) {
                (Some(d), _) => crate::data::run(&self.cfg.repo, d).map(|out| (out, None)),
                (_, Some(req)) => crate::http::send(req).map(|(resp, body)| (body, Some(resp))),
                _ => Err("nothing to run".into()),
            };
            let result = match outcome {
                Ok((out, http)) => TaskResult {
                    exit_code: Some(0),
                    stdout: mask(&out, &task.secrets),
                    http,
                    ..TaskResult::default()
                },
                Err(e) => failed(mask(&e, &task.secrets)),
            };
            self.done(task.node_id.clone(), &task.requests, &gpus, result);
            return Ok(());
        }
        let (run_dir, work) = task_dirs(&self.cfg.work_root, &task)?;
        let log_path = ProcessExecutor::log_path(&self.cfg.work_root, &task.run, &task.node_id);
        // A task that exchanges no files with weir gets a tmpfs as its private /tmp, made inside
        // its own mount namespace: nothing to create on the host, nothing to read back.
        let light = self.cfg.sandbox == Sandbox::Namespaces
            && task.source.is_none()
            && task.inputs.is_empty()
            && task.output_parameters.is_empty()
            && task.output_artifacts.is_empty()
            && task.mounts.is_empty()
            && task.working_dir.is_none();
        if !light {
            let _ = fs::remove_dir_all(&work);
        }
        if !light {
            fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
        }
        if !lock(&self.state).log_dirs.contains(&task.run) {
            for d in [run_dir.join("logs"), run_dir.join("io")] {
                fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
            }
            lock(&self.state).log_dirs.insert(task.run.clone());
        }
        let mut log = LazyLog {
            path: log_path,
            file: None,
        };
        let mut view = View::new(&work, self.cfg.sandbox);
        // volumes first: declared paths inside a volume's mount path are files of the volume
        let late_binds = self.volumes(&task, &run_dir, &work, &mut view)?;
        // inputs
        for a in &task.inputs {
            let dest = view.host(&a.path, &work)?;
            artifacts::load(&self.cfg.repo, &a.source, &dest, a.mode)?;
        }
        let param_paths: Vec<(String, PathBuf)> = task
            .output_parameters
            .iter()
            .map(|p| {
                Ok((
                    p.name.clone(),
                    view.host_output(&p.path, &work, Some(true))?,
                ))
            })
            .collect::<Result<_, String>>()?;
        let art_paths: Vec<PathBuf> = task
            .output_artifacts
            .iter()
            .map(|a| view.host_output(&a.path, &work, None))
            .collect::<Result<_, String>>()?;
        for p in param_paths.iter().map(|(_, p)| p).chain(&art_paths) {
            // in a private top-level directory the task makes its own directories, as in a
            // fresh container (`os.mkdir("/mnt/out")` must not find it there already)
            if let Some(parent) = p.parent()
                && !view.in_private_top(p)
            {
                let _ = fs::create_dir_all(parent);
            }
        }
        // command line; with namespaces the script lives in the private /tmp, so it stays
        // visible whatever the host path of the work dir, and the working directory is the
        // task's own root, as Argo's is a container's (`/` where the image sets none)
        let ns = self.cfg.sandbox == Sandbox::Namespaces;
        // The work directory is the task's private /tmp; weir's own files in it are dotfiles.
        let (script_task, cwd_task) = if ns {
            let cwd = if light { "/tmp" } else { "/" };
            ("/tmp/.weir-script".to_string(), PathBuf::from(cwd))
        } else {
            (
                work.join(".weir-script").display().to_string(),
                work.clone(),
            )
        };
        let mut argv: Vec<String> = match crate::stand_in::argosay(&task) {
            Some(argv) => argv.iter().map(|s| view.rewrite(s)).collect(),
            None => task
                .command
                .iter()
                .chain(&task.args)
                .map(|s| view.rewrite(s))
                .collect(),
        };
        if let Some(src) = &task.source {
            let script = work.join(".weir-script");
            fs::write(&script, view.rewrite(src))
                .map_err(|e| format!("{}: {e}", script.display()))?;
            // `command: [sh, -c]` runs the script file as a program
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(&script, fs::Permissions::from_mode(0o755));
            // Argo appends the script's path to the container's args (`executeScript`:
            // `mainCtr.Args = append(mainCtr.Args, common.ExecutorScriptSourcePath)`): it
            // runs `command + args + [script]`
            argv = task
                .command
                .iter()
                .chain(&task.args)
                .map(|s| view.rewrite(s))
                .collect();
            argv.push(script_task);
        }
        if argv.is_empty() {
            return Err(format!(
                "the template names no `command` or `args`: the image's own entrypoint{} cannot run on this host",
                task.image
                    .as_deref()
                    .map(|i| format!(" (`{i}`)"))
                    .unwrap_or_default()
            ));
        }
        if argv[0] == "python" && self.python3_for_python {
            argv[0] = "python3".into();
            let first = lock(&self.state).told_python.insert(task.run.clone());
            if first {
                log.line("weir: `python` is not on this host; running `python3` instead");
            }
        }
        let mut env: Vec<(String, String)> = Vec::new();
        for k in [
            "PATH", "LANG", "LC_ALL", "TZ", "TERM", "USER", "LOGNAME", "SHELL",
        ] {
            if let Ok(v) = std::env::var(k) {
                env.push((k.to_string(), v));
            }
        }
        let home = if ns { Path::new("/tmp") } else { &work };
        env.push(("HOME".into(), home.display().to_string()));
        if !light {
            // experiment tracking: JSON lines appended here are the task's metrics
            let at = if ns {
                "/tmp/.weir-metrics".to_string()
            } else {
                work.join(".weir-metrics").display().to_string()
            };
            env.push(("WEIR_METRICS".into(), at));
        }
        if self.cfg.sandbox == Sandbox::Rewrite {
            env.push(("TMPDIR".into(), view.tmp.display().to_string()));
        }
        if !gpus.is_empty() {
            env.push(("CUDA_VISIBLE_DEVICES".into(), gpus.join(",")));
        } else if task.requests.gpus == 0 && !self.cfg.capacity.gpus.is_empty() {
            env.push(("CUDA_VISIBLE_DEVICES".into(), String::new()));
        }
        for (k, v) in &task.env {
            env.retain(|(x, _)| x != k);
            env.push((k.clone(), view.rewrite(v)));
        }
        let cwd = match &task.working_dir {
            Some(d) if Path::new(d).is_dir() => PathBuf::from(d),
            Some(d) if !ns => view.host(d, &work).inspect(|p| {
                let _ = fs::create_dir_all(p);
            })?,
            Some(d) => {
                let host = view.host(d, &work)?;
                let _ = fs::create_dir_all(&host);
                PathBuf::from(d)
            }
            None => cwd_task.clone(),
        };
        // Other binds first: their sources may lie under /tmp, which the last bind covers.
        let mut binds: Vec<(PathBuf, PathBuf)> = view
            .binds
            .iter()
            .map(|(t, h)| (h.clone(), t.clone()))
            .collect();
        if !light {
            binds.push((view.tmp.clone(), PathBuf::from("/tmp")));
        }
        // volumes mounted inside /tmp go on top of the private /tmp
        binds.extend(late_binds);
        let untouched = view.mark_untouched(param_paths.iter().map(|(_, p)| p).chain(&art_paths));
        if lock(&self.state).stopped.contains(&task.node_id) {
            return Err("stopped before it started".into());
        }
        let log = Arc::new(Mutex::new(log));
        let stream = self.cfg.stream_logs.then(|| lock(&self.tx).clone());
        // init containers and sidecars share the task's view of the files and its environment
        let (hide, user) = (self.hidden.clone(), self.task_user(&work)?);
        let beside = |c: &weir_core::run::Sidecar| spawn::Spec {
            argv: c
                .command
                .iter()
                .chain(&c.args)
                .map(|a| view.rewrite(a))
                .collect(),
            env: with_env(&env, &c.env, &view),
            cwd: cwd.clone(),
            binds: binds.clone(),
            hide: hide.clone(),
            user,
            namespaces: ns,
            tmpfs_tmp: light,
            io: Some(io_base(&run_dir, &task.node_id, Some(&c.name))),
            tied: self.cfg.tied,
        };
        let watch = |name: &str, exited: Option<Sender<i32>>| {
            Box::new(SidecarWatch {
                name: name.to_string(),
                node: task.node_id.clone(),
                log: log.clone(),
                secrets: task.secrets.clone(),
                stream: stream.clone(),
                exited,
            })
        };
        // init containers, one after another, each to its end
        for ic in &task.init_containers {
            let p = spawn::spawn(&beside(ic), None)
                .map_err(|e| format!("init container `{}` cannot start: {e}", ic.name))?;
            {
                // while it runs, stopping the task stops it
                let mut st = lock(&self.state);
                st.running.insert(task.node_id.clone(), p.pid);
                if st.stopped.contains(&task.node_id) || self.shutting_down.load(Ordering::SeqCst) {
                    kill_group(p.pid);
                }
            }
            let (tx, rx) = std::sync::mpsc::channel();
            self.reaper.watch(p, watch(&ic.name, Some(tx)));
            let code = rx.recv().unwrap_or(128 + libc::SIGKILL);
            if code != 0 {
                let msg = format!("init container `{}` failed with exit code {code}", ic.name);
                lock(&log).line(&format!("weir: {msg}"));
                self.ended_before_start(&task, &gpus, code);
                return Ok(());
            }
        }
        // sidecars next, each its own process group, sharing the task's view of the files
        let mut sidecars = Vec::new();
        for sc in &task.sidecars {
            match spawn::spawn(&beside(sc), None) {
                Ok(p) => {
                    sidecars.push(p.pid);
                    self.reaper.watch(p, watch(&sc.name, None));
                }
                Err(e) => {
                    for &pgid in &sidecars {
                        kill_group(pgid);
                    }
                    return Err(format!("sidecar `{}` cannot start: {e}", sc.name));
                }
            }
        }
        let outputs = (!light).then(|| Outputs {
            metrics_file: work.join(".weir-metrics"),
            param_paths,
            art_paths,
            untouched,
            work: work.clone(),
            run_dir: run_dir.clone(),
        });
        // a task with sidecars or a readiness probe is not watched again after a restart (its
        // sidecars are not): it runs again
        let record = (task.sidecars.is_empty() && task.daemon.is_none() && !self.cfg.tied)
            .then(|| adopt::record(&task, &gpus, outputs.as_ref()));
        let spec = spawn::Spec {
            argv: argv.clone(),
            env,
            cwd,
            binds,
            hide,
            user,
            namespaces: ns,
            tmpfs_tmp: light,
            io: Some(io_base(&run_dir, &task.node_id, None)),
            tied: self.cfg.tied,
        };
        let mut at_gate =
            |proc: &spawn::Proc| self.record(&task, &run_dir, proc, record.as_deref());
        let proc = match spawn::spawn(&spec, Some(&mut at_gate)) {
            Ok(p) => p,
            Err(e) => {
                for &pgid in &sidecars {
                    kill_group(pgid);
                }
                lock(&log).line(&format!("weir: cannot start `{}`: {e}", argv[0]));
                let code = if e.kind() == std::io::ErrorKind::NotFound {
                    127
                } else {
                    126
                };
                self.ended_before_start(&task, &gpus, code);
                return Ok(());
            }
        };
        self.started(&task, &proc);
        let exited = Arc::new(AtomicBool::new(false));
        if let Some(d) = &task.daemon {
            match d.probe.clone() {
                None => self.send(Update::Ready {
                    node: task.node_id.clone(),
                }),
                Some(p) => {
                    let me = self.clone();
                    let node = task.node_id.clone();
                    let exited = exited.clone();
                    let plog = log.clone();
                    let spawned =
                        std::thread::Builder::new()
                            .name("weir-probe".into())
                            .spawn(move || {
                                if crate::probe::wait_ready(&p, user, &exited, &plog) {
                                    me.send(Update::Ready { node });
                                }
                            });
                    if let Err(e) = spawned {
                        lock(&log).line(&format!("weir: cannot start the readiness probe: {e}"));
                    }
                }
            }
        }
        let mut watch = TaskWatch::new(self.clone(), &task, gpus.clone(), log);
        watch.sidecars = sidecars;
        watch.exited = exited;
        watch.collect = outputs.map(|out| Collect::new(task, gpus, out));
        self.reaper.watch(proc, Box::new(watch));
        Ok(())
    }

    /// A child run: this weir binary runs the Workflow document as a run of its own on the
    /// same database; its exit code and final document (`-o json`) are the task's result.
    fn launch_child(
        self: Arc<Self>,
        task: &TaskSpec,
        child: &weir_core::run::ChildRun,
        gpus: Vec<String>,
    ) -> Result<(), String> {
        let (run_dir, work) = task_dirs(&self.cfg.work_root, task)?;
        let (logs, io) = (run_dir.join("logs"), run_dir.join("io"));
        for d in [&work, &logs, &io] {
            fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let manifest = work.join("child-workflow.yaml");
        let library = work.join("child-library.yaml");
        fs::write(&manifest, &child.manifest)
            .and_then(|_| fs::write(&library, &child.library))
            .map_err(|e| format!("{}: {e}", work.display()))?;
        let exe = std::env::current_exe().map_err(|e| format!("finding weir itself: {e}"))?;
        let mut argv: Vec<String> = vec![
            exe.display().to_string(),
            "run".into(),
            manifest.display().to_string(),
            "--no-logs".into(),
            "-o".into(),
            "json".into(),
        ];
        if !child.library.is_empty() {
            argv.push("--with".into());
            argv.push(library.display().to_string());
        }
        let mut env: Vec<(String, String)> = ["PATH", "LANG", "LC_ALL", "TZ", "HOME", "USER"]
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
            .collect();
        if let Some(db) = &self.cfg.db {
            env.push(("WEIR_DB".into(), db.display().to_string()));
        }
        if let Some(iso) = &self.cfg.isolation {
            env.extend(iso.child_env());
        }
        let spec = spawn::Spec {
            argv,
            env,
            cwd: work.clone(),
            binds: Vec::new(),
            hide: Vec::new(),
            user: None,
            namespaces: false,
            tmpfs_tmp: false,
            io: Some(io_base(&run_dir, &task.node_id, None)),
            tied: self.cfg.tied,
        };
        let mut at_gate = |proc: &spawn::Proc| self.record(task, &run_dir, proc, None);
        let proc = spawn::spawn(&spec, Some(&mut at_gate))
            .map_err(|e| format!("starting the child run: {e}"))?;
        lock(&self.state).children.insert(task.node_id.clone());
        self.started(task, &proc);
        let log = Arc::new(Mutex::new(LazyLog {
            path: ProcessExecutor::log_path(&self.cfg.work_root, &task.run, &task.node_id),
            file: None,
        }));
        let watch = TaskWatch::new(self.clone(), task, gpus, log);
        self.reaper.watch(proc, Box::new(watch));
        Ok(())
    }

    /// Writes a task's line in the run's append-only pids file (so a restart can watch it
    /// again, or kill what it cannot: see [`adopt`]). Called while the task waits at its gate,
    /// before it runs: a task that ran is always found by a restarted engine.
    fn record(&self, task: &TaskSpec, run_dir: &Path, proc: &spawn::Proc, record: Option<&str>) {
        let adoptable = record.and_then(|json| Some((proc.handle()?, json)));
        let line = adopt::line(&task.node_id, proc.pid, adoptable);
        let mut st = lock(&self.state);
        if !st.pids.contains_key(&task.run)
            && let Ok(f) = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(run_dir.join("pids"))
        {
            st.pids.insert(task.run.clone(), f);
        }
        if let Some(f) = st.pids.get_mut(&task.run) {
            let _ = f.write_all(line.as_bytes());
        }
    }

    /// Records a task's process as started: its group (for `stop`; a child run is stopped
    /// with SIGTERM), the `Started` update; kills it at once if it was stopped (or the
    /// executor shut down) while it was being started.
    fn started(&self, task: &TaskSpec, proc: &spawn::Proc) {
        let pid = proc.pid;
        {
            let mut st = lock(&self.state);
            st.running.insert(task.node_id.clone(), pid);
            if st.stopped.contains(&task.node_id) || self.shutting_down.load(Ordering::SeqCst) {
                kill_group(pid);
            }
        }
        self.send(Update::Started {
            node: task.node_id.clone(),
            pid: pid as u32,
        });
    }

    /// Reports a task that ended before its own program ran (an init container failed, or
    /// the program could not start) with that exit code.
    fn ended_before_start(&self, task: &TaskSpec, gpus: &[String], code: i32) {
        let result = TaskResult {
            exit_code: Some(code),
            ..TaskResult::default()
        };
        self.done(task.node_id.clone(), &task.requests, gpus, result);
    }

    /// Reads a finished task's output parameters and saves its output artifacts.
    fn collect(&self, c: &Collect, code: i32, stdout: String) -> Result<TaskResult, String> {
        let task = &c.task;
        let mut result = TaskResult {
            exit_code: Some(code),
            stdout,
            metrics: c.reported.0.clone(),
            error: c.reported.1.clone(),
            ..TaskResult::default()
        };
        if let Err(e) = report::read_file(&c.out.metrics_file, &mut result.metrics) {
            result.error.get_or_insert(e);
        }
        if let Some(iso) = &self.cfg.isolation {
            let roots = [
                c.out.work.clone(),
                c.out.run_dir.join("volumes"),
                self.data_dir().join("volumes"),
            ];
            iso.check_outputs(
                c.out
                    .param_paths
                    .iter()
                    .map(|(_, p)| p)
                    .chain(&c.out.art_paths),
                &roots,
            )?;
        }
        let written = |p: &PathBuf| !(c.out.untouched.contains(p) && crate::sandbox::untouched(p));
        for (name, path) in &c.out.param_paths {
            let v = Some(path)
                .filter(|p| written(p))
                .and_then(|p| fs::read_to_string(p).ok())
                .map(|s| s.strip_suffix('\n').map(str::to_string).unwrap_or(s));
            result.parameters.push((name.clone(), v));
        }
        for (a, path) in task.output_artifacts.iter().zip(&c.out.art_paths) {
            if !path.exists() || !written(path) {
                if !a.optional {
                    result.missing_artifacts.push(a.name.clone());
                }
                continue;
            }
            let saved = outputs::save_artifact(&self.cfg.repo, a, path, &mut result.error)?;
            result.artifacts.push(saved);
        }
        Ok(result)
    }
}

//! Scale-out on PostgreSQL: many `weir server` and `weir worker` processes share one database.
//!
//! - A run is driven by one process at a time, the owner of its lease (`runs.owner`); every
//!   process renews the leases of the runs it drives, and a server takes over the runs whose
//!   owner stopped renewing. The driver's appends name its ownership epoch, so a process that
//!   lost a run cannot write to it any more.
//! - A server's drivers dispatch tasks to the `tasks` queue ([`QueueExecutor`]) instead of
//!   starting processes; workers ([`work`]) claim them in batches, run them with the same
//!   [`ProcessExecutor`] as `weir run`, renew their leases with heartbeats, and write results
//!   back fenced by the claim's epoch.
//! - The lease reaper (one server at a time, under an advisory lock) settles the tasks of a
//!   worker that stopped heartbeating as lost, which the run retries per its retryStrategy.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use weir_core::run::{Access, ArtifactRef, TaskResult, TaskSpec};
use weir_exec::{Capacity, Executor, ProcessConfig, ProcessExecutor, Update};
use weir_store::{Channel, Durability, NewTask, Offer, Since, Store, TaskUpdate};

use crate::env::Env;

/// This process in the cluster: its owner id and the lease every claim takes.
pub struct Cluster {
    pub owner: String,
    pub lease_ms: i64,
    db: std::path::PathBuf,
    dispatcher: OnceLock<Sender<Cmd>>,
    /// run → the epoch of this process's ownership
    fences: Mutex<HashMap<String, i64>>,
}

/// A process id unique across hosts and restarts.
fn process_id(role: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let nonce = crate::ambient::now_ms() % 1_000_000;
    format!("{role}-{host}-{}-{nonce}", std::process::id())
}

/// Hands a task's change to its run's driver; a finished task's log first goes where this
/// process's readers look (under `logs`), so a reader of a finished node finds it.
fn deliver(s: &Store, run: &str, tx: &Sender<Update>, logs: &Path, u: TaskUpdate) {
    let _ = tx.send(match u {
        TaskUpdate::Started { node, pid } => Update::Started {
            node,
            pid: pid.unwrap_or(0),
        },
        TaskUpdate::Done {
            node,
            result,
            logged,
        } => {
            if logged && let Err(e) = materialize_log(logs, s, run, &node) {
                eprintln!("weir: the log of {run}/{node}: {e:#}");
            }
            let result = serde_json::from_str(&result).unwrap_or_else(|e| TaskResult {
                error: Some(format!("the task's result is unreadable: {e}")),
                ..Default::default()
            });
            Update::Finished { node, result }
        }
    });
}

/// How long a task runs before its worker reports that it started (see [`work`]).
const START_REPORT_DELAY: Duration = Duration::from_millis(50);

static CLUSTER: OnceLock<Arc<Cluster>> = OnceLock::new();

impl Cluster {
    /// This process's membership (created at first use, with the thread renewing the leases
    /// of the runs it drives).
    pub fn get(db: &Path) -> Arc<Cluster> {
        CLUSTER
            .get_or_init(|| {
                let c = Arc::new(Cluster {
                    owner: process_id("weir"),
                    lease_ms: crate::env::lease_ms(),
                    db: db.to_path_buf(),
                    dispatcher: OnceLock::new(),
                    fences: Mutex::default(),
                });
                let r = c.clone();
                let _ = std::thread::Builder::new()
                    .name("run leases".into())
                    .spawn(move || r.renew_loop());
                c
            })
            .clone()
    }

    fn renew_loop(&self) {
        let mut store: Option<Store> = None;
        loop {
            std::thread::sleep(Duration::from_millis((self.lease_ms / 4) as u64));
            let r = (|| -> Result<()> {
                if store.is_none() {
                    store = Some(Store::connect_with(
                        self.db.to_str().unwrap_or_default(),
                        Duration::from_millis(self.lease_ms as u64 / 2),
                    )?);
                }
                if let Some(s) = &store {
                    // only runs a live driver holds: one whose driver stopped goes to another
                    let held: Vec<String> = self
                        .fences
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .keys()
                        .cloned()
                        .collect();
                    let held: Vec<&str> = held.iter().map(String::as_str).collect();
                    s.renew_held(&self.owner, &held, self.lease_ms)?;
                }
                Ok(())
            })();
            if let Err(e) = r {
                eprintln!("weir: renewing run leases: {e:#}");
                store = None;
            }
        }
    }

    /// Claims a run for this process; its epoch, or `None` if another live process holds it.
    pub fn claim(&self, store: &Store, run: &str) -> Result<Option<i64>> {
        // a run a driver of this process holds is not claimed again (as a file lock is not)
        if self.fence(run).is_some() {
            return Ok(None);
        }
        let epoch = store.claim_run(run, &self.owner, self.lease_ms)?;
        if let Some(e) = epoch {
            self.fenced(run, e);
        }
        Ok(epoch)
    }

    /// Records the epoch this process owns `run` at.
    pub fn fenced(&self, run: &str, epoch: i64) {
        self.fences
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(run.to_string(), epoch);
    }

    /// This process's driver of `run` (at `epoch`) stopped: its lease is no longer renewed.
    pub fn unfence(&self, run: &str, epoch: i64) {
        let mut f = self.fences.lock().unwrap_or_else(|e| e.into_inner());
        if f.get(run) == Some(&epoch) {
            f.remove(run);
        }
    }

    /// The process's membership, if it has one.
    pub fn current() -> Option<Arc<Cluster>> {
        CLUSTER.get().cloned()
    }

    /// The epoch this process owns `run` at, if it claimed it.
    pub fn fence(&self, run: &str) -> Option<i64> {
        self.fences
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(run)
            .copied()
    }

    fn dispatcher(self: &Arc<Self>) -> Sender<Cmd> {
        self.dispatcher
            .get_or_init(|| {
                let (tx, rx) = mpsc::channel();
                let me = self.clone();
                let _ = std::thread::Builder::new()
                    .name("task dispatch".into())
                    .spawn(move || me.dispatch_loop(rx));
                tx
            })
            .clone()
    }

    /// Queues tasks, routes their updates to the drivers of their runs, removes the results
    /// the drivers recorded.
    fn dispatch_loop(&self, rx: Receiver<Cmd>) {
        // run → (its driver, where its logs are read from)
        let mut routes: HashMap<String, (Sender<Update>, std::path::PathBuf)> = HashMap::new();
        let mut polled = Instant::now();
        let mut pending: Vec<Cmd> = Vec::new();
        let mut store: Option<Store> = None;
        // where the reading of task changes stands
        let mut since = Since::default();
        loop {
            let wait = if routes.is_empty() && pending.is_empty() {
                Duration::from_millis(200)
            } else {
                Duration::ZERO
            };
            match rx.recv_timeout(wait) {
                Ok(c) => pending.push(c),
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            pending.extend(rx.try_iter());
            let r = (|| -> Result<()> {
                if store.is_none() {
                    let s = Store::connect(self.db.to_str().unwrap_or_default())?;
                    s.listen(Channel::Done)?;
                    // after a reconnection, what was read may have been lost on the way: the
                    // changes not yet recorded come again (the drivers skip what they have)
                    since = Since::default();
                    store = Some(s);
                }
                let Some(s) = &store else { return Ok(()) };
                let mut enqueue = Vec::new();
                let mut acks: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for c in &pending {
                    match c {
                        Cmd::Register(run, tx, logs) => {
                            // what an earlier owner was handed and did not record comes again
                            for u in s.run_updates(run, &self.owner)? {
                                deliver(s, run, tx, logs, u);
                            }
                            routes.insert(run.clone(), (tx.clone(), logs.clone()));
                        }
                        Cmd::Unregister(run) => {
                            routes.remove(run);
                        }
                        Cmd::Enqueue(t) => enqueue.push(t.clone()),
                        Cmd::Cancel { .. } => {}
                        Cmd::Recorded { run, nodes } => acks
                            .entry(run.clone())
                            .or_default()
                            .extend(nodes.iter().cloned()),
                    }
                }
                // results recorded go before new tasks are queued: a retried node may reuse a
                // recorded node's row
                for (run, nodes) in &acks {
                    let n: Vec<&str> = nodes.iter().map(String::as_str).collect();
                    s.ack_task_updates(run, &n)?;
                }
                s.enqueue(&enqueue)?;
                for c in &pending {
                    if let Cmd::Cancel { run, node } = c {
                        let stopped = TaskResult {
                            error: Some("stopped before it started".into()),
                            ..Default::default()
                        };
                        s.cancel_task(run, node, &serde_json::to_string(&stopped)?)?;
                    }
                }
                pending.clear();
                if routes.is_empty() {
                    return Ok(());
                }
                let runs: Vec<&str> = routes.keys().map(String::as_str).collect();
                let (updates, upto) = s.task_updates(&runs, &self.owner, since)?;
                since = upto;
                let mut fresh = 0;
                for (run, u) in updates {
                    if let Some((tx, logs)) = routes.get(&run) {
                        deliver(s, &run, tx, logs, u);
                        fresh += 1;
                    }
                }
                if fresh == 0 {
                    s.wait_tasks(Duration::from_millis(20))?;
                }
                // at most one read every 2 ms: a busy queue notifies far more often
                std::thread::sleep(Duration::from_millis(2).saturating_sub(polled.elapsed()));
                polled = Instant::now();
                Ok(())
            })();
            if let Err(e) = r {
                eprintln!("weir: task dispatch: {e:#}");
                store = None;
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// Deals with expired task leases (when this process holds the reaper's lock): queued
    /// again once, settled as lost the second time; returns how many of each.
    pub fn reap(&self, store: &Store) -> Result<(usize, usize)> {
        let lost = |worker: &str| {
            serde_json::to_string(&TaskResult {
                error: Some(format!(
                    "worker {worker} lost: its lease expired without a heartbeat"
                )),
                ..Default::default()
            })
            .unwrap_or_default()
        };
        let reaped = store.reap_expired(&lost)?;
        let requeued = reaped
            .iter()
            .filter(|(_, _, r)| *r == weir_store::Reaped::Requeued)
            .count();
        Ok((requeued, reaped.len() - requeued))
    }
}

enum Cmd {
    /// A run's route, and where its logs are read from.
    Register(String, Sender<Update>, std::path::PathBuf),
    Unregister(String),
    Enqueue(NewTask),
    Cancel {
        run: String,
        node: String,
    },
    /// The driver recorded these nodes' results: their rows go.
    Recorded {
        run: String,
        nodes: Vec<String>,
    },
}

/// A run's executor on a server: tasks go to the queue, their updates come back from it.
pub struct QueueExecutor {
    run: String,
    namespace: String,
    priority: i64,
    /// Where the run's tasks run (`weir.dev/executor`): only a worker of that executor (its
    /// label of that name) claims them.
    executor: String,
    tx: Sender<Cmd>,
    updates: Sender<Update>,
    /// Remote inputs are fetched here, as `weir run` does.
    local: OnceLock<ProcessExecutor>,
    local_cfg: ProcessConfig,
}

impl QueueExecutor {
    pub fn new(
        cluster: &Arc<Cluster>,
        run: &weir_core::run::Run,
        cfg: ProcessConfig,
        updates: Sender<Update>,
    ) -> QueueExecutor {
        let sub = run.submission();
        let tx = cluster.dispatcher();
        let _ = tx.send(Cmd::Register(
            sub.key().to_string(),
            updates.clone(),
            cfg.work_root.clone(),
        ));
        QueueExecutor {
            run: sub.key().to_string(),
            namespace: sub.namespace.clone(),
            priority: sub.workflow.spec.priority.unwrap_or(0),
            executor: sub
                .workflow
                .metadata
                .annotations
                .get(crate::record::EXECUTOR)
                .cloned()
                .unwrap_or_else(|| crate::env::TaskExecutor::Local.name().into()),
            tx,
            updates,
            local: OnceLock::new(),
            local_cfg: cfg,
        }
    }
}

impl Drop for QueueExecutor {
    /// A driver that ends early (an error, or its run was taken over) takes its route along.
    fn drop(&mut self) {
        let _ = self.tx.send(Cmd::Unregister(self.run.clone()));
    }
}

impl Executor for QueueExecutor {
    fn start(&self, task: TaskSpec) {
        let spec = match serde_json::to_string(&task) {
            Ok(s) => s,
            Err(e) => {
                let _ = self.updates.send(Update::Finished {
                    node: task.node_id.clone(),
                    result: TaskResult {
                        error: Some(format!("cannot queue the task: {e}")),
                        ..Default::default()
                    },
                });
                return;
            }
        };
        // a worker of the executor its template asks for, else of the run's
        let mut selector = task.node_selector.clone();
        let executor = task
            .executor
            .map_or_else(|| self.executor.clone(), |k| k.name().to_string());
        selector.insert(crate::record::EXECUTOR.into(), executor);
        let selector = serde_json::to_string(&selector).unwrap_or_else(|_| "{}".into());
        let _ = self.tx.send(Cmd::Enqueue(NewTask {
            run: self.run.clone(),
            node: task.node_id.clone(),
            namespace: self.namespace.clone(),
            priority: self.priority,
            spec,
            selector,
            cpu_milli: task.requests.cpu_millis as i64,
            memory: task.requests.memory_bytes as i64,
            gpu: i64::from(task.requests.gpus),
        }));
    }

    fn fetch(&self, node: &str, sources: Vec<ArtifactRef>, access: Vec<Option<Access>>) {
        let local = self.local.get_or_init(|| {
            ProcessExecutor::new(self.local_cfg.clone(), self.updates.clone())
                .expect("starting the fetch executor")
        });
        local.fetch(node, sources, access);
    }

    fn stop(&self, node: &str) {
        let _ = self.tx.send(Cmd::Cancel {
            run: self.run.clone(),
            node: node.to_string(),
        });
    }

    fn recorded(&self, finished: &[String]) {
        if !finished.is_empty() {
            let _ = self.tx.send(Cmd::Recorded {
                run: self.run.clone(),
                nodes: finished.to_vec(),
            });
        }
    }

    /// (Its route goes when it is dropped.)
    fn shutdown(&self) {
        if let Some(l) = self.local.get() {
            l.shutdown();
        }
    }
}

/// What `weir worker` offers: labels its tasks' node selectors must match, and slots.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub labels: BTreeMap<String, String>,
    pub cpu_milli: i64,
    pub memory: i64,
    pub gpu: i64,
    /// Most tasks at once.
    pub max_tasks: usize,
    /// Most tasks claimed in one transaction.
    pub batch: usize,
}

/// Parses `k=v,k=v`.
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .with_context(|| format!("`{p}`: a label is KEY=VALUE"))?;
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

/// Parses `cpu=8,memory=32Gi,gpu=2,tasks=64` (Kubernetes quantities) over `base`.
pub fn parse_slots(s: &str, base: &mut WorkerOptions) -> Result<()> {
    for (k, v) in parse_labels(s)? {
        match k.as_str() {
            "cpu" => {
                base.cpu_milli = match v.strip_suffix('m') {
                    Some(m) => m.parse::<i64>().ok(),
                    None => v.parse::<f64>().ok().map(|c| (c * 1000.0) as i64),
                }
                .with_context(|| format!("cpu={v}: not a CPU quantity (8, 500m)"))?
            }
            "memory" => {
                base.memory = weir_core::run::quantity(&v) as i64;
                if base.memory == 0 {
                    anyhow::bail!("memory={v}: not a memory quantity (32Gi, 512Mi)");
                }
            }
            "gpu" => {
                base.gpu = v
                    .parse()
                    .with_context(|| format!("gpu={v}: not a number"))?
            }
            "tasks" => {
                base.max_tasks = v
                    .parse()
                    .with_context(|| format!("tasks={v}: not a number"))?
            }
            other => {
                anyhow::bail!("--slots {other}: unknown slot (cpu, memory, gpu and tasks are)")
            }
        }
    }
    Ok(())
}

impl WorkerOptions {
    pub fn detect() -> WorkerOptions {
        let c = crate::env::capacity();
        WorkerOptions {
            labels: BTreeMap::new(),
            cpu_milli: c.cpu_millis as i64,
            memory: c.memory_bytes as i64,
            gpu: c.gpus.len() as i64,
            max_tasks: c.max_tasks,
            batch: 64,
        }
    }
}

/// A task this worker holds: its claim and what it takes of the slots.
struct Held {
    id: i64,
    epoch: i64,
    run: String,
    /// When this worker learnt of its claim (after the claim committed).
    since: Instant,
    cpu: i64,
    memory: i64,
    gpu: i64,
}

/// Runs `weir worker` until the process is killed: claims tasks that fit, runs them, reports
/// them.
pub fn work(
    env: &Env,
    mut opts: WorkerOptions,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<()> {
    let url = env.db.to_str().unwrap_or_default().to_string();
    let id = process_id("worker");
    let lease = crate::env::lease_ms();
    let (tx, rx) = mpsc::channel();
    let capacity = Capacity {
        cpu_millis: opts.cpu_milli.max(0) as u64,
        memory_bytes: opts.memory.max(0) as u64,
        gpus: (0..opts.gpu).map(|g| g.to_string()).collect(),
        max_tasks: opts.max_tasks,
    };
    let cfg = ProcessConfig {
        work_root: env.work_root(),
        repo: env.repo(),
        sandbox: crate::env::sandbox(),
        capacity,
        stream_logs: false,
        db: Some(env.db.clone()),
        isolation: env.isolation.clone(),
        tied: true,
    };
    // the tasks of runs of this worker's executor only
    opts.labels
        .insert(crate::record::EXECUTOR.into(), env.executor.name().into());
    let exec: Arc<dyn Executor> = env.executor(env.executor.into(), false, cfg, tx)?.into();
    let held: Arc<Mutex<HashMap<String, Held>>> = Arc::default();
    let labels_json = serde_json::to_string(&opts.labels)?;
    let slots_json = serde_json::json!({"cpu_milli": opts.cpu_milli, "memory": opts.memory,
        "gpu": opts.gpu, "tasks": opts.max_tasks})
    .to_string();
    // a closed stdout (a server whose starter stopped reading) must not end the worker
    let _ = writeln!(
        std::io::stdout().lock(),
        "weir worker {id}: claiming tasks from {}",
        weir_store::redact_url(&url)
    );
    {
        // heartbeats on their own connection: a long batch of work never delays them
        let (exec, held, url, id) = (exec.clone(), held.clone(), url.clone(), id.clone());
        let (labels_json, slots_json) = (labels_json.clone(), slots_json.clone());
        std::thread::Builder::new()
            .name("heartbeat".into())
            .spawn(move || {
                let mut store: Option<Store> = None;
                let mut last_ok = Instant::now();
                loop {
                    let r = (|| -> Result<()> {
                        if store.is_none() {
                            store = Some(Store::connect_with(
                                &url,
                                Duration::from_millis(lease as u64 / 3),
                            )?);
                        }
                        let Some(s) = &store else { return Ok(()) };
                        // claims this worker learns of from now on are newer than what the
                        // heartbeat sees: they are not judged by it
                        let asked = Instant::now();
                        let mine = s.heartbeat(&id, &labels_json, &slots_json, lease)?;
                        last_ok = Instant::now();
                        let live: HashMap<i64, (i64, bool)> =
                            mine.into_iter().map(|(i, e, c)| (i, (e, c))).collect();
                        let h = held.lock().unwrap_or_else(|e| e.into_inner());
                        for (node, t) in h.iter().filter(|(_, t)| t.since < asked) {
                            match live.get(&t.id) {
                                // cancelled by its run
                                Some((e, true)) if *e == t.epoch => exec.stop(node),
                                Some((e, _)) if *e == t.epoch => {}
                                // no longer ours: the lease expired and the task was settled
                                _ => exec.stop(node),
                            }
                        }
                        Ok(())
                    })();
                    if let Err(e) = r {
                        eprintln!("weir worker: heartbeat: {e:#}");
                        store = None;
                        // cut off for longer than a lease: the tasks are being re-run elsewhere
                        if last_ok.elapsed() > Duration::from_millis(lease as u64) {
                            let h = held.lock().unwrap_or_else(|e| e.into_inner());
                            for node in h.keys() {
                                exec.stop(node);
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(lease as u64 / 4));
                }
            })
            .context("starting the heartbeat thread")?;
    }
    let mut store: Option<Store> = None;
    // (id, epoch, pid, when it started)
    let mut started: Vec<(i64, i64, Option<u32>, Instant)> = Vec::new();
    // (node, id, epoch, result, (run, log))
    #[allow(clippy::type_complexity)]
    let mut done: Vec<(String, i64, i64, String, Option<(String, String)>)> = Vec::new();
    let mut busy = false;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        // collect what the executor reported
        // while tasks run, their updates are gathered for a few milliseconds: one report
        // (one transaction) carries many
        let mut updates: Vec<Update> = Vec::new();
        if busy {
            let until = Instant::now() + Duration::from_millis(5);
            while updates.len() < 256 {
                match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                    Ok(u) => updates.push(u),
                    Err(_) => break,
                }
            }
        }
        updates.extend(rx.try_iter());
        {
            let h = held.lock().unwrap_or_else(|e| e.into_inner());
            for u in updates {
                match u {
                    Update::Started { node, pid } => {
                        if let Some(t) = h.get(&node) {
                            started.push((t.id, t.epoch, Some(pid), Instant::now()));
                        }
                    }
                    Update::Finished { node, result } => {
                        if let Some(t) = h.get(&node) {
                            // the log goes back through the store: the run's servers may not
                            // share this worker's files
                            let log = read_tail(&ProcessExecutor::log_path(
                                &env.work_root(),
                                &t.run,
                                &node,
                            ))
                            .map(|text| (t.run.clone(), text));
                            done.push((node, t.id, t.epoch, serde_json::to_string(&result)?, log));
                        }
                    }
                    Update::Ready { .. } | Update::Fetched { .. } | Update::Log { .. } => {}
                }
            }
        }
        let r = (|| -> Result<bool> {
            if store.is_none() {
                let s = Store::connect_with(&url, Duration::from_millis(lease as u64 / 3))?;
                s.listen(Channel::Queued)?;
                store = Some(s);
            }
            let Some(s) = &store else { return Ok(false) };
            // A start is reported once the task has run for a moment: most short tasks finish
            // before, and are written once, finished (with their pid).
            let finishing: std::collections::HashSet<i64> =
                done.iter().map(|(_, id, ..)| *id).collect();
            let report: Vec<(i64, i64, Option<u32>)> = started
                .iter()
                .filter(|s| finishing.contains(&s.0) || s.3.elapsed() >= START_REPORT_DELAY)
                .map(|&(i, e, p, _)| (i, e, p))
                .collect();
            if !report.is_empty() || !done.is_empty() {
                let batch: Vec<(i64, i64, String)> = done
                    .iter()
                    .map(|(_, i, e, r, _)| (*i, *e, r.clone()))
                    .collect();
                let logs: Vec<Option<(&str, &str, &str)>> = done
                    .iter()
                    .map(|(node, .., log)| {
                        log.as_ref()
                            .map(|(run, text)| (run.as_str(), node.as_str(), text.as_str()))
                    })
                    .collect();
                let accepted = s.report(&report, &batch, &logs)?;
                let reported: std::collections::HashSet<i64> = report.iter().map(|r| r.0).collect();
                started.retain(|s| !reported.contains(&s.0));
                let mut h = held.lock().unwrap_or_else(|e| e.into_inner());
                for ((node, ..), ok) in done.iter().zip(accepted) {
                    if !ok {
                        eprintln!(
                            "weir worker: the result of {node} was refused: its lease had expired and the task was settled without this worker"
                        );
                    }
                    h.remove(node);
                }
                done.clear();
            }
            // claim what fits in the free slots
            let (free, count) = {
                let h = held.lock().unwrap_or_else(|e| e.into_inner());
                let used = h
                    .values()
                    .fold((0, 0, 0), |a, t| (a.0 + t.cpu, a.1 + t.memory, a.2 + t.gpu));
                (
                    (
                        opts.cpu_milli - used.0,
                        opts.memory - used.1,
                        opts.gpu - used.2,
                    ),
                    h.len(),
                )
            };
            let room = opts.max_tasks.saturating_sub(count).min(opts.batch);
            // claims come in batches: when a quarter of the slots is free, or all of them
            let quarter = (opts.max_tasks.min(opts.batch) / 4).max(1);
            let claimed = if room >= quarter || count == 0 {
                s.claim(
                    &id,
                    &Offer {
                        labels: opts.labels.clone(),
                        cpu_milli: free.0,
                        memory: free.1,
                        gpu: free.2,
                        max: room,
                    },
                    lease,
                )?
            } else {
                Vec::new()
            };
            let got = !claimed.is_empty();
            for c in claimed {
                let spec: TaskSpec = match serde_json::from_str(&c.spec) {
                    Ok(t) => t,
                    Err(e) => {
                        let bad = TaskResult {
                            error: Some(format!("the queued task is unreadable: {e}")),
                            ..Default::default()
                        };
                        s.complete(&[(c.id, c.epoch, serde_json::to_string(&bad)?)])?;
                        continue;
                    }
                };
                held.lock().unwrap_or_else(|e| e.into_inner()).insert(
                    c.node.clone(),
                    Held {
                        id: c.id,
                        epoch: c.epoch,
                        run: c.run.clone(),
                        since: Instant::now(),
                        cpu: c.cpu_milli,
                        memory: c.memory,
                        gpu: c.gpu,
                    },
                );
                exec.start(spec);
            }
            let busy = !held.lock().unwrap_or_else(|e| e.into_inner()).is_empty();
            if !got && !busy {
                // nothing to do: sleep until a task is queued
                s.wait_tasks(Duration::from_millis(500))?;
            }
            Ok(got || busy)
        })();
        match r {
            Ok(b) => busy = b,
            Err(e) => {
                eprintln!("weir worker: {e:#}");
                store = None;
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    exec.shutdown();
    Ok(())
}

/// The last MiB of a log file, if the task printed anything.
fn read_tail(path: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    const MAX: u64 = 1 << 20;
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(MAX))).ok()?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Writes a finished task's log, as its worker reported it, where this process's logs are
/// read from (under `work_root`), unless this process has it already (it shares the worker's
/// data directory).
pub fn materialize_log(work_root: &Path, store: &Store, run: &str, node: &str) -> Result<()> {
    let path = ProcessExecutor::log_path(work_root, run, node);
    if path.exists() {
        return Ok(());
    }
    if let Some(text) = store.task_log(run, node)? {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// A store on `db` (SQLite path or PostgreSQL URL).
pub fn open(db: &Path) -> Result<Store> {
    Ok(Store::open(db, Durability::Process)?)
}

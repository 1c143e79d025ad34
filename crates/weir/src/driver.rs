//! The run driver: feeds executor updates, timers and control requests to the state machine,
//! persists each batch of events before performing the actions they produced (write-ahead), and
//! recovers a run after a crash by replaying its events.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use weir_core::run::{Action, Event, Lock, Millis, Phase, PodGc, Run, Submission, Timer};
use weir_exec::{Executor, ProcessConfig, Update};
use weir_store::{Acquire, Store};

use crate::ambient::now_ms;
use crate::env::Env;
use crate::env::sandbox;
use crate::files;
use crate::usage::{Conflict, Invalid};

/// Opening the store is the driver's: the run's owner on PostgreSQL, and the runs whose time to
/// live is up deleted first.
impl Env {
    /// Opens the database, first deleting the runs whose time to live (`ttlStrategy`) is up.
    pub fn store(&self) -> Result<Store> {
        let mut store = Store::open(&self.db, self.durability)?;
        if self.is_postgres() {
            let c = crate::cluster::Cluster::get(&self.db);
            store.set_owner(&c.owner, c.lease_ms);
        }
        for name in store.expired(now_ms())? {
            delete_run(self, &mut store, &name)?;
        }
        Ok(store)
    }
}

/// Where the memoized outputs of `cache` (a `memoize.cache.configMap.name`) of `namespace`
/// are kept: `NAMESPACE/CACHE`.
pub fn memo_cache(namespace: &str, cache: &str) -> String {
    format!("{namespace}/{cache}")
}

/// What the driver tells whoever watches a run: the terminal (`watch.rs`), the server's hub, or
/// nobody.
pub trait Watch {
    fn wants_logs(&self) -> bool;
    fn log(&mut self, run: &Run, node: &str, line: &str);
    fn update(&mut self, run: &Run);
    fn tick(&mut self, run: &Run);
    fn note(&mut self, msg: &str);
    fn finish(&mut self, run: &Run);
}

/// A run started from its submission, checked before anything is stored: its problems located
/// in the files they came from.
pub fn start(sub: Submission) -> Result<(Run, Vec<weir_core::run::Action>)> {
    let wf = sub.workflow.clone();
    let lib = sub.library.clone();
    Run::start(sub).map_err(|problems| Invalid(files::locate(&problems, &wf, &lib)).into())
}

/// A stored run's state, rebuilt by replaying its events.
pub fn load_run(store: &Store, name: &str) -> Result<Run> {
    let name = store.resolve(name)?;
    let rec = store.load(&name)?;
    Run::replay(rec.submission, &rec.events)
        .map_err(|p| anyhow::anyhow!("run {name} cannot be replayed: {p:?}"))
}

/// Where a control request (stop, terminate, suspend, resume, set) went.
pub enum Delivered {
    /// To the process that drives the run: it applies the request at its next poll.
    Sent,
    /// Nowhere: the run had already finished.
    Finished(Phase),
    /// No process drove the run: this one took it over (its lock held), recovered it, and the
    /// request waits first among its pending events. The caller drives it, or records them.
    Adopted {
        run: Box<Run>,
        actions: Vec<Action>,
        pending: Vec<Event>,
        lock: RunLock,
    },
}

/// The one way a control request reaches a run, for the CLI and the API: through the
/// `controls` table to the process that drives it, or by taking the run over when none does.
pub fn deliver(env: &Env, store: &mut Store, key: &str, requests: Vec<Event>) -> Result<Delivered> {
    let Some(lock) = try_lock(env, key)? else {
        for ev in &requests {
            store.push_control(key, ev)?;
        }
        return Ok(Delivered::Sent);
    };
    let (run, actions, mut pending) = recover(env, store, key)?;
    if run.phase().is_done() {
        // a driver that died after the last event may have left its locks
        store.release_run(key)?;
        return Ok(Delivered::Finished(run.phase()));
    }
    pending.extend(requests);
    Ok(Delivered::Adopted {
        run: Box::new(run),
        actions,
        pending,
        lock,
    })
}

/// A finished run taken up again from its failed nodes (`weir retry`, `PUT …/retry`): locked,
/// replayed, and checked to be Failed or Error; [`drive`] it with [`Event::Retry`] pending.
pub fn retry(env: &Env, store: &Store, key: &str) -> Result<(Run, RunLock)> {
    let Some(lock) = try_lock(env, key)? else {
        return Err(Conflict(format!("run {key} is being driven by another weir process")).into());
    };
    // a finished run has nothing in flight: replaying it is all recovery would do
    let run = load_run(store, key)?;
    if !matches!(run.phase(), Phase::Failed | Phase::Error) {
        return Err(Conflict(format!(
            "run {} is {}; only Failed or Errored runs can be retried",
            run.submission().name,
            run.phase()
        ))
        .into());
    }
    Ok((run, lock))
}

/// A new run, recorded and locked: what [`drive`] takes.
pub struct Admitted {
    pub run: Run,
    pub actions: Vec<Action>,
    pub lock: RunLock,
}

/// The one way a new run enters the store, for the CLI (run, rerun, resubmit) and the API. It is
/// checked by starting it before anything is stored; a generated name that another submission
/// took meanwhile is drawn again; it is started again where the store keeps it apart from its
/// name (another namespace has a run of that name); its first summary is written under its lock.
pub fn admit(env: &Env, store: &mut Store, mut sub: Submission) -> Result<Admitted> {
    let (mut run, mut actions) = start(sub.clone())?;
    let generated = sub
        .workflow
        .metadata
        .generate_name
        .clone()
        .filter(|g| sub.workflow.metadata.name.is_none() && sub.name.starts_with(g.as_str()));
    let mut attempts = 0;
    loop {
        match store.create_run(&mut sub) {
            Err(weir_store::Error::RunExists(_)) if generated.is_some() && attempts < 8 => {
                attempts += 1;
                let prefix = generated.as_deref().unwrap_or_default();
                sub.name = format!("{prefix}{}", crate::ambient::random_suffix());
            }
            Err(e) => return Err(e.into()),
            Ok(()) => break,
        }
    }
    if attempts > 0 || sub.key.is_some() {
        (run, actions) = start(sub.clone())?;
    }
    let lock =
        try_lock(env, sub.key())?.with_context(|| format!("run {} is already driven", sub.name))?;
    store.append(
        sub.key(),
        &[],
        run.phase(),
        run.message(),
        run.finished_at(),
    )?;
    Ok(Admitted { run, actions, lock })
}

/// Deletes a run with its files (work directories, logs, artifacts); false if a process is
/// driving it.
pub fn delete_run(env: &Env, store: &mut Store, name: &str) -> Result<bool> {
    let Some(_lock) = try_lock(env, name)? else {
        return Ok(false);
    };
    // content-addressed artifacts are shared: only those no other run refers to go
    let objects = store.run_object_keys(name)?;
    let unshared: Vec<String> = objects
        .into_iter()
        .filter(|k| !store.object_referenced(k, name).unwrap_or(true))
        .collect();
    store.delete(name)?;
    // a name stored before names were checked may not be a directory of ours: its row goes,
    // and no file is touched
    if weir_core::names::check_key(name).is_ok() {
        remove_dir(&env.run_dir(name)?)?;
        env.repo().delete_prefix(name)?;
    }
    for k in unshared {
        env.repo().delete_prefix(&k)?;
    }
    let _ = std::fs::remove_file(env.lock_path(name)?);
    Ok(true)
}

fn remove_dir(p: &std::path::Path) -> Result<()> {
    match std::fs::remove_dir_all(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", p.display()))
        }
        _ => Ok(()),
    }
}

/// Held by the one process that drives a run: a file lock the kernel releases if that process
/// dies (SQLite), or a lease on the run's row this process renews (PostgreSQL).
pub enum RunLock {
    File(#[allow(dead_code)] File),
    Lease { run: String, epoch: i64 },
}

impl Drop for RunLock {
    fn drop(&mut self) {
        if let RunLock::Lease { run, epoch } = self
            && let Some(c) = crate::cluster::Cluster::current()
        {
            c.unfence(run, *epoch);
        }
    }
}

pub fn try_lock(env: &Env, run: &str) -> Result<Option<RunLock>> {
    if env.is_postgres() {
        let store = Store::open(&env.db, env.durability)?;
        let cluster = crate::cluster::Cluster::get(&env.db);
        return Ok(cluster.claim(&store, run)?.map(|epoch| RunLock::Lease {
            run: run.to_string(),
            epoch,
        }));
    }
    let path = env.lock_path(run)?;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let f = File::create(&path).with_context(|| format!("opening {}", path.display()))?;
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor we own.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    Ok(if r == 0 { Some(RunLock::File(f)) } else { None })
}

static INTERRUPTS: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTS.fetch_add(1, Ordering::SeqCst);
}

/// Ctrl-C once stops the run (exit handlers still run); twice terminates it.
pub fn install_interrupt_handler() {
    // SAFETY: the handler only touches an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_sigint as *const () as libc::sighandler_t);
    }
}

/// Kills a process group left over from an earlier driver.
fn kill_group(pid: u32) {
    // a pid from the store that is no process group of ours (0, 1, or past i32, which would
    // turn negative and name every process) is left alone
    if pid > 1 && pid <= i32::MAX as u32 {
        // SAFETY: signals the task's own process group (its pgid is its pid).
        unsafe {
            libc::kill(-(pid as i32), libc::SIGKILL);
        }
    }
}

/// Rebuilds a run from the store and prepares what was in flight.
pub fn recover(env: &Env, store: &Store, name: &str) -> Result<(Run, Vec<Action>, Vec<Event>)> {
    let rec = store.load(name)?;
    let run = Run::replay(rec.submission, &rec.events).map_err(|p| {
        anyhow::anyhow!(
            "run {name} cannot be replayed: {}",
            p.iter()
                .map(|x| x.message.clone())
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    let actions = if run.phase().is_done() {
        Vec::new()
    } else {
        run.recovery_actions()
    };
    // pids recorded by the executor: kill what was dispatched but not yet known as started
    let pids: std::collections::HashMap<String, u32> =
        std::fs::read_to_string(env.run_dir(name)?.join("pids"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut parts = l.split(' ');
                Some((
                    parts.next()?.to_string(),
                    parts.next()?.trim().parse().ok()?,
                ))
            })
            .collect();
    let mut lost = Vec::new();
    if env.queue && env.is_postgres() {
        // tasks run on workers and go on while their run changes hands: only a running task
        // the queue no longer knows is lost (a queued one is queued again, idempotently)
        if !run.phase().is_done() {
            for (node, _) in run.running_pods() {
                if !store.task_exists(name, &node)? {
                    lost.push(Event::Lost { node });
                }
            }
        }
        return Ok((run, actions, lost));
    }
    for a in &actions {
        if let Action::Start(spec) = a
            && let Some(&pid) = pids.get(&spec.node_id)
        {
            kill_group(pid);
        }
    }
    // tasks that were running: the executor watches them again where it can (`drive_with`);
    // the rest are lost
    if !run.phase().is_done() {
        for (node, _) in run.running_pods() {
            lost.push(Event::Lost { node });
        }
    }
    Ok((run, actions, lost))
}

/// Drives `run` until it finishes. `pending` events are applied first (recovery, control verbs).
pub fn drive(
    env: &Env,
    store: Store,
    run: Run,
    initial: Vec<Action>,
    pending: Vec<Event>,
    watch: &mut dyn Watch,
) -> Result<Phase> {
    let (tx, rx) = mpsc::channel();
    let cfg = ProcessConfig {
        work_root: env.work_root(),
        repo: env.repo(),
        sandbox: sandbox(),
        capacity: crate::env::capacity(),
        stream_logs: watch.wants_logs(),
        db: Some(if env.is_postgres() {
            env.db.clone()
        } else {
            std::path::absolute(&env.db).unwrap_or_else(|_| env.db.clone())
        }),
        isolation: env.isolation.clone(),
        tied: false,
    };
    let queued = env.queue && env.is_postgres();
    let exec: Box<dyn Executor> = if queued {
        let cluster = crate::cluster::Cluster::get(&env.db);
        Box::new(crate::cluster::QueueExecutor::new(&cluster, &run, cfg, tx))
    } else {
        // the run's record says where its tasks run (`weir run --executor docker`): a resumed
        // run goes on where it began
        let sub = run.submission();
        let kind = sub
            .workflow
            .metadata
            .annotations
            .get(crate::record::EXECUTOR)
            .and_then(|e| weir_core::run::ExecutorKind::of(e))
            .unwrap_or(weir_core::run::ExecutorKind::Local);
        env.executor(kind, crate::record::asks_for_containers(sub), cfg, tx)?
    };
    drive_with(env, store, run, initial, pending, watch, exec, rx)
}

/// [`drive`] with the executor given, and the channel its updates arrive on: what tests drive
/// in-process with an executor of their own.
#[allow(clippy::too_many_arguments)]
pub fn drive_with(
    env: &Env,
    mut store: Store,
    mut run: Run,
    initial: Vec<Action>,
    pending: Vec<Event>,
    watch: &mut dyn Watch,
    exec: Box<dyn Executor>,
    rx: Receiver<Update>,
) -> Result<Phase> {
    // the run's key: names are unique only per namespace
    let name = run.submission().key().to_string();
    // memoized outputs are the namespace's own: one namespace's cache is invisible to another
    let namespace = run.submission().namespace.clone();
    // lock holders (the run's name and its node ids) of a run kept apart from its name
    let holders = Holders::of(run.submission());
    let queued = env.queue && env.is_postgres();
    if env.is_postgres() {
        // appends name the epoch of this process's ownership: refused once another took over
        store.set_fence(crate::cluster::Cluster::get(&env.db).fence(&name));
    }
    let mut timers: BTreeSet<(Millis, Timer)> = BTreeSet::new();
    // Lock requests still queued in the store: holder → (locks, priority).
    let mut locks: Locks = BTreeMap::new();
    // Performs actions; cache lookups and granted locks are answered at once, as events for the
    // next batch.
    let perform = |actions: Vec<Action>,
                   timers: &mut BTreeSet<(Millis, Timer)>,
                   locks: &mut Locks,
                   store: &mut Store|
     -> Result<Vec<Event>> {
        let mut answers = Vec::new();
        for a in actions {
            match a {
                Action::Acquire {
                    holder,
                    locks: wanted,
                    priority,
                } => {
                    locks.insert(holder, (wanted, priority));
                    answers.extend(try_locks(store, &name, &holders, locks)?);
                }
                Action::Metric(m) => store.record_metric(&name, &m, now_ms())?,
                Action::Release { holder } => {
                    locks.remove(&holder);
                    store.release(&holders.stored(&holder))?;
                }
                Action::Start(spec) => exec.start(*spec),
                Action::Fetch {
                    node,
                    sources,
                    access,
                } => exec.fetch(&node, sources, access),
                Action::Stop { node, .. } => exec.stop(&node),
                Action::Arm { timer, at } => {
                    timers.insert((at, timer));
                }
                Action::Lookup {
                    node,
                    cache,
                    key,
                    max_age_ms,
                    image,
                } => {
                    let cache = memo_cache(&namespace, &cache);
                    // a task run in a container: its outputs are those of the image it
                    // runs, by content; one not here yet has none cached that can be known
                    // to match
                    let key = match image.and_then(|ask| exec.image_id(&ask)) {
                        None => Some(key),
                        Some(None) => None,
                        Some(Some(id)) => Some(weir_core::run::pinned_cache_key(&key, &id)),
                    };
                    let hit = match key {
                        Some(key) => store.memo_entry(&cache, &key, max_age_ms, now_ms())?,
                        None => None,
                    };
                    let mut from = None;
                    let outputs = hit.and_then(|(o, run)| {
                        from = Some(run);
                        serde_json::from_str::<weir_core::run::NodeOutputs>(&o).ok()
                    });
                    // reused outputs must still be there: a deleted run took its artifacts along
                    let outputs = outputs.filter(|o| {
                        o.artifacts.iter().all(|a| {
                            a.key.is_empty() || env.repo().path(&a.key).is_ok_and(|p| p.exists())
                        })
                    });
                    if outputs.is_none() {
                        from = None;
                    }
                    answers.push(Event::Cached {
                        node,
                        outputs,
                        from,
                    });
                }
                Action::Memoize {
                    cache,
                    key,
                    outputs,
                } => {
                    // step caching binds what ran in a container to its image's content id
                    let key = match &outputs.container {
                        Some(c) if cache == weir_core::run::STEP_CACHE => {
                            weir_core::run::pinned_cache_key(&key, &c.image_id)
                        }
                        _ => key,
                    };
                    store.memo_put(
                        &memo_cache(&namespace, &cache),
                        &key,
                        &serde_json::to_string(&outputs)?,
                        now_ms(),
                        &name,
                    )?;
                }
                Action::Finished { .. } => {}
            }
        }
        Ok(answers)
    };
    let pod_gc = run.cleanup().pod_gc;
    let mut batch: Vec<(Millis, Event)> = Vec::new();
    for ev in perform(initial, &mut timers, &mut locks, &mut store)? {
        batch.push((now_ms(), ev));
    }
    // a task an earlier driver saw start and not end: watched again by the executor where it
    // can be (it went on while no driver ran), else killed if it is still there, and lost
    let pids: HashMap<String, Option<u32>> = run.running_pods().into_iter().collect();
    for ev in pending {
        if let Event::Lost { node } = &ev
            && !queued
        {
            if exec.adopt(&name, node) {
                continue;
            }
            if let Some(Some(pid)) = pids.get(node) {
                kill_group(*pid);
            }
        }
        batch.push((now_ms(), ev));
    }
    let mut last_poll = Instant::now();
    let mut seen_interrupts = 0;
    watch.update(&run);
    loop {
        if !batch.is_empty() {
            let mut actions = Vec::new();
            for (at, ev) in &batch {
                actions.extend(run.step(ev.clone(), *at));
            }
            store.append(&name, &batch, run.phase(), run.message(), run.finished_at())?;
            let recorded: Vec<String> = batch
                .iter()
                .filter_map(|(_, ev)| match ev {
                    Event::Finished { node, .. } => Some(node.clone()),
                    _ => None,
                })
                .collect();
            exec.recorded(&recorded);
            let mut edges = Vec::new();
            for (_, ev) in &batch {
                if let Event::Finished { node, .. } | Event::Cached { node, .. } = ev {
                    edges.extend(lineage_edges(&run, node));
                }
            }
            if !edges.is_empty() {
                store.record_lineage(&edges)?;
            }
            if matches!(pod_gc, PodGc::OnPodCompletion | PodGc::OnPodSuccess) {
                for (_, ev) in &batch {
                    if let Event::Finished { node, .. } = ev
                        && (pod_gc == PodGc::OnPodCompletion
                            || run
                                .node_by_id(node)
                                .is_some_and(|n| n.phase == Phase::Succeeded))
                    {
                        remove_dir(&weir_exec::within(&env.run_dir(&name)?.join("work"), node)?)?;
                    }
                }
            }
            batch.clear();
            let now = now_ms();
            for ev in perform(actions, &mut timers, &mut locks, &mut store)? {
                batch.push((now, ev));
            }
            watch.update(&run);
        }
        if run.phase().is_done() {
            break;
        }
        if !batch.is_empty() {
            continue;
        }
        let now = now_ms();
        let next_timer = timers
            .first()
            .map(|(at, _)| (*at - now).max(0) as u64)
            .unwrap_or(u64::MAX);
        // while locks are awaited, other runs' releases are looked for more often
        let poll = if locks.is_empty() { 100 } else { 25 };
        let wait = Duration::from_millis(next_timer.min(poll));
        let mut updates = Vec::new();
        match rx.recv_timeout(wait) {
            Ok(u) => updates.push(u),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        while updates.len() < 4096 {
            match rx.try_recv() {
                Ok(u) => updates.push(u),
                Err(_) => break,
            }
        }
        let now = now_ms();
        // queued mode: nodes whose start this batch already carries
        let mut started_now: std::collections::HashSet<String> = Default::default();
        for u in updates {
            // the queue may hand an update over twice (after a reconnection or a takeover)
            if queued {
                let phase = |n: &str| run.node_by_id(n).map(|n| n.phase);
                match &u {
                    Update::Started { node, .. }
                        if phase(node).is_some_and(|p| p != Phase::Pending) =>
                    {
                        continue;
                    }
                    Update::Finished { node, .. } if phase(node).is_some_and(|p| p.is_done()) => {
                        // settled already (stopped, timed out): its row goes all the same
                        exec.recorded(std::slice::from_ref(node));
                        continue;
                    }
                    _ => {}
                }
            }
            match u {
                Update::Started { node, pid } => {
                    if queued {
                        started_now.insert(node.clone());
                    }
                    batch.push((now, Event::Started { node, pid }))
                }
                Update::Ready { node } => batch.push((now, Event::Ready { node })),
                Update::Fetched { node, results } => {
                    batch.push((now, Event::Fetched { node, results }))
                }
                Update::Finished { node, result } => {
                    // a queued task that started and finished between two reads of the queue
                    // is reported finished only: it started first
                    if queued
                        && result.error.is_none()
                        && run
                            .node_by_id(&node)
                            .is_some_and(|n| n.phase == Phase::Pending)
                        && !started_now.contains(&node)
                    {
                        batch.push((
                            now,
                            Event::Started {
                                node: node.clone(),
                                pid: 0,
                            },
                        ));
                    }
                    if !node.is_empty() {
                        batch.push((now, Event::Finished { node, result }))
                    }
                }
                Update::Log { node, line } => watch.log(&run, &node, &line),
            }
        }
        while let Some((at, _)) = timers.first()
            && *at <= now
        {
            if let Some((_, timer)) = timers.pop_first() {
                batch.push((now, Event::TimerFired { timer }));
            }
        }
        let interrupts = INTERRUPTS.load(Ordering::SeqCst);
        if interrupts > seen_interrupts {
            seen_interrupts = interrupts;
            batch.push((
                now,
                if interrupts == 1 {
                    Event::Stop
                } else {
                    Event::Terminate
                },
            ));
            watch.note(if interrupts == 1 {
                "interrupted: stopping the run (again to terminate)"
            } else {
                "terminating the run"
            });
        }
        if !locks.is_empty() {
            for ev in try_locks(&mut store, &name, &holders, &mut locks)? {
                batch.push((now, ev));
            }
        }
        if last_poll.elapsed() >= Duration::from_millis(100) {
            last_poll = Instant::now();
            if store.has_controls(&name)? {
                for ev in store.take_controls(&name)? {
                    batch.push((now, ev));
                }
            }
            if batch.is_empty() {
                watch.tick(&run);
            }
        }
    }
    exec.shutdown();
    if queued && run.phase().is_done() {
        // what is left of its tasks (stopped ones still being killed): their late reports are
        // refused, and a retry of the run starts from clean rows
        store.drop_tasks(&name)?;
    }
    // whatever the run still holds or waits for goes back with it
    store.release_run(&name)?;
    if run.phase().is_done() {
        let c = run.cleanup();
        let ok = run.phase() == Phase::Succeeded;
        if c.pod_gc == PodGc::OnWorkflowCompletion || (c.pod_gc == PodGc::OnWorkflowSuccess && ok) {
            remove_dir(&env.run_dir(&name)?.join("work"))?;
        }
        for key in &c.artifacts_at_completion {
            // the copy in an S3-compatible store goes too
            let urls: Vec<String> = run
                .nodes()
                .iter()
                .flat_map(|n| n.outputs.artifacts.iter())
                .filter(|a| a.key == *key)
                .filter_map(|a| a.url.clone())
                .filter(|u| u.starts_with("s3://"))
                .collect();
            for u in urls {
                let r = run
                    .s3_access(&u)
                    .and_then(|access| weir_exec::delete_s3(&u, &access));
                if let Err(e) = r {
                    watch.note(&format!("artifactGC: {e}"));
                }
            }
            // a content-addressed artifact another run also has stays
            if key.starts_with("objects/") && store.object_referenced(key, &name)? {
                continue;
            }
            env.repo().delete_prefix(key)?;
        }
        if let Some(ttl) = c.ttl_ms {
            store.set_expiry(&name, run.finished_at().unwrap_or_else(now_ms) + ttl)?;
        }
    }
    watch.finish(&run);
    Ok(run.phase())
}

/// A finished task node's lineage: the artifacts it consumed and produced, with its parameters.
fn lineage_edges(run: &Run, node: &str) -> Vec<weir_store::LineageEdge> {
    let Some(n) = run.node_by_id(node) else {
        return Vec::new();
    };
    if !n.phase.is_done() {
        return Vec::new();
    }
    let params = serde_json::to_string(&n.inputs).unwrap_or_default();
    let edge = |direction: &str, a: &weir_core::run::ArtifactRef| weir_store::LineageEdge {
        run: run.submission().key().to_string(),
        node: n.id.clone(),
        node_name: n.display_name.clone(),
        template: n.template.clone(),
        params: params.clone(),
        direction: direction.to_string(),
        artifact: a.name.clone(),
        digest: a.hash.clone(),
        key: a.key.clone(),
        url: a.url.clone(),
        at: n.finished_at.unwrap_or_else(now_ms),
    };
    let ins = n
        .input_artifacts
        .iter()
        .filter(|a| !a.hash.is_empty())
        .map(|a| edge("in", a));
    let outs = n
        .outputs
        .artifacts
        .iter()
        .filter(|a| !a.hash.is_empty())
        .map(|a| edge("out", a));
    ins.chain(outs).collect()
}

/// Lock requests of this run still queued in the store: holder → (locks, priority).
type Locks = BTreeMap<String, (Vec<Lock>, i64)>;

/// How a run's lock holders are named in the store. The engine names them by the run's name and
/// its node ids, both derived from the name; a run whose key is not its name (another namespace
/// has a run of that name) prefixes them with its namespace, so the two never share a holder.
struct Holders(Option<String>);

impl Holders {
    fn of(sub: &weir_core::run::Submission) -> Holders {
        Holders((sub.key() != sub.name).then(|| format!("{}~", sub.namespace)))
    }

    fn stored(&self, holder: &str) -> String {
        match &self.0 {
            Some(prefix) => format!("{prefix}{holder}"),
            None => holder.to_string(),
        }
    }
}

/// Asks the store again for every awaited lock; the granted and refused ones become events.
fn try_locks(
    store: &mut Store,
    run: &str,
    holders: &Holders,
    locks: &mut Locks,
) -> Result<Vec<Event>> {
    let mut answers = Vec::new();
    let mut settled = Vec::new();
    for (holder, (wanted, priority)) in locks.iter() {
        let stored = holders.stored(holder);
        let error = match store.try_acquire(run, &stored, wanted, *priority)? {
            Acquire::Acquired => None,
            Acquire::Refused(why) => Some(why),
            Acquire::Waiting(_) => continue,
        };
        settled.push(holder.clone());
        answers.push(Event::Acquired {
            holder: holder.clone(),
            error,
        });
    }
    for h in settled {
        locks.remove(&h);
    }
    Ok(answers)
}

#[cfg(test)]
mod tests;

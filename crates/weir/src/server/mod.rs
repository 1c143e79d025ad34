//! `weir server`: the REST API, live updates (SSE), the web UI and access control, in front of
//! the same store and driver as the CLI.
//!
//! Requests are served by a small tokio runtime; everything that touches SQLite runs on its
//! blocking pool with a connection from [`App::db`]. Each accepted run is driven by its own
//! thread running [`driver::drive`] (the same loop as `weir run`), which publishes its changes to
//! the [`hub::Hub`] that SSE watchers read. A restarted server takes over every unfinished run
//! that no other process drives.

mod access;
mod api;
mod argo;
mod artifacts;
mod auth;
pub mod config;
mod error;
mod guard;
mod hub;
mod inspect;
mod layout;
mod metrics;
mod request;
mod serve;
mod streams;
mod templates;
mod trace;
mod ui;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
pub use auth::{Role, new_token, parse_duration};
use weir_core::run::{Action, Event, Run};
use weir_store::Store;

use crate::ambient::now_ms;
use crate::driver::{self, RunLock};
use crate::env::Env;
use crate::server::error::ApiError;
use crate::server::error::ApiResult;
use crate::server::request::workflow_json;

pub struct Options {
    pub listen: SocketAddr,
    /// No tokens: every caller is an admin. Only on a loopback address.
    pub insecure_local: bool,
    /// The largest request body accepted (bytes).
    pub body_limit: usize,
    /// Log lines as JSON objects instead of text.
    pub json_logs: bool,
    /// Where to export traces (OTLP/HTTP), with the headers to send.
    pub otlp: Option<(String, std::collections::BTreeMap<String, String>)>,
    /// The default artifact repository of runs submitted here.
    pub artifact_repository: Option<String>,
    /// With PostgreSQL: also claim and run queued tasks in this process.
    pub worker: bool,
}

impl From<config::Effective> for Options {
    fn from(e: config::Effective) -> Options {
        Options {
            listen: e.listen.0,
            insecure_local: e.insecure_local.0,
            body_limit: e.max_body.0,
            json_logs: e.json_logs.0,
            otlp: e.otlp_endpoint.0.map(|u| (u, e.otlp_headers.0)),
            artifact_repository: e.artifact_repository.0,
            worker: false,
        }
    }
}

/// The server's own log (stderr): one line per request and per problem, text or JSON. Query
/// strings are never logged (they may carry `access_token`).
#[derive(Clone)]
pub struct Log {
    json: bool,
}

impl Log {
    fn line(&self, level: &str, msg: &str, fields: serde_json::Value) {
        let ts = weir_core::run::rfc3339_pub(now_ms());
        if self.json {
            let mut v = serde_json::json!({"ts": ts, "level": level, "msg": msg});
            if let (Some(o), serde_json::Value::Object(f)) = (v.as_object_mut(), fields) {
                o.extend(f);
            }
            eprintln!("{v}");
        } else {
            let mut s = format!("{ts} {level} {msg}");
            if let serde_json::Value::Object(f) = fields {
                for (k, v) in f {
                    match v {
                        serde_json::Value::String(x) => s += &format!(" {k}={x}"),
                        other => s += &format!(" {k}={other}"),
                    }
                }
            }
            eprintln!("{s}");
        }
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        status: u16,
        took: std::time::Duration,
        actor: &str,
    ) {
        self.line(
            "info",
            "request",
            serde_json::json!({"method": method, "path": path, "status": status,
                "ms": (took.as_secs_f64() * 1e6).round() / 1e3, "actor": actor}),
        );
    }

    pub fn error(&self, msg: &str) {
        self.line("error", msg, serde_json::Value::Null);
    }

    pub fn info(&self, msg: &str) {
        self.line("info", msg, serde_json::Value::Null);
    }
}

pub struct App {
    env: Env,
    opts: Options,
    hub: Arc<hub::Hub>,
    metrics: Arc<metrics::Metrics>,
    log: Log,
    verified: auth::Verified,
    pool: Mutex<Vec<Store>>,
    /// Runs this process is driving now.
    driving: AtomicUsize,
    /// Their names, and when a run this process drove to its end ended (PostgreSQL: the others'
    /// changes come from the database, see `follow`, which leaves these alone).
    local: Mutex<HashMap<String, Option<std::time::Instant>>>,
}

/// Stores a new run and starts driving it.
pub(super) fn accept(
    app: &Arc<App>,
    store: &mut Store,
    sub: weir_core::run::Submission,
) -> ApiResult<serde_json::Value> {
    // backpressure: a namespace at its quota of unfinished runs takes no more for now
    if store.is_postgres()
        && let Some(max) = store.quota(&sub.namespace)?.and_then(|q| q.max_runs)
    {
        let running = store.running_runs(&sub.namespace)?;
        if running >= max {
            return Err(ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "quota_exceeded",
                format!(
                    "namespace {} has {running} unfinished runs, its quota (max_runs {max}); submit again when one finishes",
                    sub.namespace
                ),
            ));
        }
    }
    let driver::Admitted { run, actions, lock } = driver::admit(&app.env, store, sub)?;
    let v = workflow_json(&run);
    app.spawn_driver(run, actions, Vec::new(), lock);
    Ok(v)
}

impl App {
    fn take_store(&self) -> Result<Store> {
        if let Some(s) = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(s);
        }
        let mut s = Store::open(&self.env.db, self.env.durability)?;
        if self.env.is_postgres() {
            let c = crate::cluster::Cluster::get(&self.env.db);
            s.set_owner(&c.owner, c.lease_ms);
        }
        Ok(s)
    }

    fn give_store(&self, s: Store) {
        if s.is_broken() {
            // the database closed it: the next request connects anew
            return;
        }
        let mut p = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if p.len() < 8 {
            p.push(s);
        }
    }

    /// Runs `f` with a store connection on the blocking pool.
    async fn db<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Arc<App>, &mut Store) -> Result<T, error::ApiError> + Send + 'static,
    ) -> Result<T, error::ApiError> {
        let app = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = app
                .take_store()
                .map_err(|e| error::ApiError::unavailable(format!("{e:#}")))?;
            let r = f(&app, &mut store);
            app.give_store(store);
            r
        })
        .await
        .map_err(|e| error::ApiError::internal(format!("request task failed: {e}")))?
    }

    /// Drives `run` on its own thread until it finishes; `lock` is held until then.
    fn spawn_driver(
        self: &Arc<Self>,
        run: Run,
        actions: Vec<Action>,
        pending: Vec<Event>,
        lock: RunLock,
    ) {
        let app = self.clone();
        let name = run.submission().key().to_string();
        app.driving.fetch_add(1, Ordering::SeqCst);
        app.local
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone(), None);
        let spawned = std::thread::Builder::new()
            .name(format!("run {name}"))
            .spawn(move || {
                let r = (|| -> Result<bool> {
                    let store = Store::open(&app.env.db, app.env.durability)?;
                    let mut w = hub::HubWatch::new(app.hub.clone(), app.metrics.clone());
                    let phase = driver::drive(&app.env, store, run, actions, pending, &mut w)?;
                    if let Some((endpoint, headers)) = &app.opts.otlp
                        && phase.is_done()
                    {
                        let store = Store::open(&app.env.db, app.env.durability)?;
                        let run = crate::driver::load_run(&store, &name)?;
                        if let Err(e) = trace::send(endpoint, headers, &trace::export(&run)) {
                            app.log
                                .error(&format!("exporting the trace of {name}: {e}"));
                        }
                    }
                    Ok(phase.is_done())
                })();
                let ended = r.as_ref().is_ok_and(|done| *done);
                if let Err(e) = r {
                    app.log.error(&format!("run {name}: {e:#}"));
                }
                drop(lock);
                let mut local = app.local.lock().unwrap_or_else(|e| e.into_inner());
                if ended {
                    // its watchers saw it end here: the follower need not load it again
                    local.insert(name.clone(), Some(std::time::Instant::now()));
                } else {
                    // stopped early (taken over, an error): whoever drives it now is followed
                    local.remove(&name);
                }
                drop(local);
                app.driving.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            eprintln!("weir: cannot start a thread for a run: {e}");
            self.driving.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Sends control requests to a run ([`driver::deliver`]); one that no process drives is
    /// taken over and driven here, with the requests pending (after a restart, with none).
    fn deliver(
        self: &Arc<Self>,
        store: &mut Store,
        key: &str,
        requests: Vec<Event>,
    ) -> Result<Delivery> {
        Ok(match driver::deliver(&self.env, store, key, requests)? {
            driver::Delivered::Adopted {
                run,
                actions,
                pending,
                lock,
            } => {
                self.spawn_driver(*run, actions, pending, lock);
                Delivery::DrivenHere
            }
            driver::Delivered::Sent => Delivery::Sent,
            driver::Delivered::Finished(phase) => Delivery::Finished(phase),
        })
    }
}

/// Where [`App::deliver`] took a run's control requests.
enum Delivery {
    /// To the process that drives the run.
    Sent,
    /// This server drives the run now.
    DrivenHere,
    /// The run had already finished.
    Finished(weir_core::run::Phase),
}

impl App {
    /// PostgreSQL scale-out: this process's worker (unless `--no-worker`), and a thread that
    /// settles expired task leases (one server at a time) and takes over the runs whose owner
    /// stopped renewing their leases.
    fn start_cluster_duties(self: &Arc<Self>) -> Result<()> {
        let cluster = crate::cluster::Cluster::get(&self.env.db);
        if self.opts.worker {
            let env = self.env.clone();
            let log = self.log.clone();
            std::thread::Builder::new()
                .name("worker".into())
                .spawn(move || {
                    let stop = std::sync::atomic::AtomicBool::new(false);
                    let opts = crate::cluster::WorkerOptions::detect();
                    if let Err(e) = crate::cluster::work(&env, opts, &stop) {
                        log.error(&format!("worker: {e:#}"));
                    }
                })
                .context("starting the worker thread")?;
        }
        let app = self.clone();
        std::thread::Builder::new()
            .name("follower".into())
            .spawn(move || app.follow())
            .context("starting the follower thread")?;
        let app = self.clone();
        std::thread::Builder::new()
            .name("cluster duties".into())
            .spawn(move || {
                let mut store: Option<Store> = None;
                loop {
                    let r = (|| -> Result<()> {
                        if store.is_none() {
                            store = Some(Store::open(&app.env.db, app.env.durability)?);
                        }
                        let Some(s) = store.as_mut() else {
                            return Ok(());
                        };
                        let (requeued, settled) = cluster.reap(s)?;
                        if requeued > 0 {
                            app.log.info(&format!(
                                "{requeued} task(s) of lost workers queued again after their leases expired"
                            ));
                        }
                        if settled > 0 {
                            app.log.info(&format!(
                                "{settled} task(s) lost with a second worker settled as errors"
                            ));
                        }
                        for (name, epoch) in s.claim_orphans(&cluster.owner, cluster.lease_ms, 16)? {
                            cluster.fenced(&name, epoch);
                            match driver::recover(&app.env, s, &name) {
                                Ok((run, actions, pending)) if !run.phase().is_done() => {
                                    app.log.info(&format!("took over run {name} (epoch {epoch})"));
                                    app.spawn_driver(
                                        run,
                                        actions,
                                        pending,
                                        RunLock::Lease { run: name.clone(), epoch },
                                    );
                                }
                                // nothing to drive: the lease is not kept
                                Ok(_) => cluster.unfence(&name, epoch),
                                Err(e) => {
                                    cluster.unfence(&name, epoch);
                                    app.log.error(&format!("cannot go on with run {name}: {e:#}"))
                                }
                            }
                        }
                        Ok(())
                    })();
                    if let Err(e) = r {
                        app.log.error(&format!("cluster duties: {e:#}"));
                        store = None;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(
                        (cluster.lease_ms / 4) as u64,
                    ));
                }
            })
            .context("starting the cluster thread")?;
        Ok(())
    }
}

impl App {
    /// PostgreSQL: publishes the changes of the runs other processes drive into this server's
    /// hub, so its event streams follow every run (a load balancer may send a watcher to any
    /// server). Each such run is replayed once, then stepped through the events appended to it.
    fn follow(self: &Arc<Self>) {
        use crate::driver::Watch;
        struct Followed {
            run: Run,
            next: i64,
            watch: hub::HubWatch,
        }
        // runs unfinished or finished this long ago
        const RECENT_MS: i64 = 60_000;
        // the other processes' runs do not count in this server's metrics
        let metrics = Arc::new(metrics::Metrics::default());
        let mut followed: HashMap<String, Followed> = HashMap::new();
        let mut store: Option<Store> = None;
        loop {
            let r = (|| -> Result<()> {
                if store.is_none() {
                    store = Some(Store::open(&self.env.db, self.env.durability)?);
                }
                let Some(s) = &store else { return Ok(()) };
                let active = s.recent_runs(now_ms() - RECENT_MS)?;
                let local = {
                    let mut l = self.local.lock().unwrap_or_else(|e| e.into_inner());
                    l.retain(|_, ended| {
                        ended.is_none_or(|t| t.elapsed().as_millis() < 2 * RECENT_MS as u128)
                    });
                    l.clone()
                };
                followed.retain(|name, _| {
                    active.iter().any(|(n, _)| n == name) && !local.contains_key(name)
                });
                for (name, next) in active {
                    if local.contains_key(&name) {
                        continue;
                    }
                    match followed.get_mut(&name) {
                        Some(f) if next > f.next => {
                            for (seq, at, ev) in s.events_since(&name, f.next)? {
                                if let Event::Finished { node, .. } = &ev {
                                    // its log, for this server's readers
                                    let _ = crate::cluster::materialize_log(
                                        &self.env.work_root(),
                                        s,
                                        &name,
                                        node,
                                    );
                                }
                                f.run.step(ev, at);
                                f.next = seq + 1;
                            }
                            f.watch.update(&f.run);
                        }
                        Some(_) => {}
                        None => {
                            let rec = s.load(&name)?;
                            let next = rec.events.len() as i64;
                            let Ok(run) = Run::replay(rec.submission, &rec.events) else {
                                continue;
                            };
                            let mut watch = hub::HubWatch::new(self.hub.clone(), metrics.clone());
                            watch.update(&run);
                            followed.insert(name, Followed { run, next, watch });
                        }
                    }
                }
                Ok(())
            })();
            if let Err(e) = r {
                self.log.error(&format!("following runs: {e:#}"));
                store = None;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

/// Runs the server until SIGINT or SIGTERM.
pub fn serve(env: Env, opts: Options) -> Result<ExitCode> {
    if opts.insecure_local && !opts.listen.ip().is_loopback() {
        bail!(
            "--insecure-local serves without tokens and so only listens on a loopback address, not {}",
            opts.listen
        );
    }
    let mut store = env.store()?;
    let app = Arc::new(App {
        hub: Arc::new(hub::Hub::new(now_ms())),
        metrics: Arc::new(metrics::Metrics::default()),
        log: Log {
            json: opts.json_logs,
        },
        verified: auth::Verified::default(),

        pool: Mutex::new(Vec::new()),
        driving: AtomicUsize::new(0),
        local: Mutex::default(),
        env,
        opts,
    });
    let mut adopted = 0;
    if app.env.is_postgres() {
        app.start_cluster_duties()?;
    }
    let unfinished = if app.env.is_postgres() {
        // runs change hands through their leases (start_cluster_duties)
        Vec::new()
    } else {
        store.unfinished()?
    };
    for name in unfinished {
        match app.deliver(&mut store, &name, Vec::new()) {
            Ok(Delivery::DrivenHere) => adopted += 1,
            Ok(Delivery::Sent | Delivery::Finished(_)) => {}
            Err(e) => {
                // a run that cannot be loaded (stored before a limit existed, or corrupt) is
                // marked Error with its reason, so it is not retried at every start
                app.log
                    .error(&format!("cannot go on with run {name}: {e:#}"));
                let message = format!("cannot be loaded: {e:#}");
                if let Err(e) = store.append(
                    &name,
                    &[],
                    weir_core::run::Phase::Error,
                    &message,
                    Some(crate::ambient::now_ms()),
                ) {
                    app.log
                        .error(&format!("cannot mark run {name} as Error: {e:#}"));
                }
            }
        }
    }
    app.give_store(store);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the server's runtime")?;
    let served = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(app.opts.listen)
            .await
            .with_context(|| format!("listening on {}", app.opts.listen))?;
        let addr = listener.local_addr()?;
        println!(
            "weir server listening on http://{addr}{}",
            if app.opts.insecure_local {
                " (insecure-local: no tokens)"
            } else {
                ""
            },
        );
        if adopted > 0 {
            app.log
                .info(&format!("went on with {adopted} unfinished run(s)"));
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let router = api::router(app.clone());
        tokio::spawn(sweep_expired(app.clone()));
        // not a graceful shutdown: watch streams never end by themselves
        tokio::select! {
            () = serve::serve(listener, router, serve::max_connections()) => {}
            _ = shutdown() => app.log.info("shutting down; unfinished runs go on when a server starts again on this database"),
        }
        anyhow::Ok(())
    });
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    served?;
    // runs still in flight go on when a server starts again on this database
    Ok(ExitCode::SUCCESS)
}

/// Deletes the runs whose time to live (`ttlStrategy`) is up, every [`SWEEP_EVERY`], as long
/// as the server runs (a CLI command or a server start also does it once).
async fn sweep_expired(app: Arc<App>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let r = app
            .db(|app, store| {
                for name in store.expired(now_ms())? {
                    driver::delete_run(&app.env, store, &name)?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = r {
            app.log
                .error(&format!("deleting expired runs: {}", e.message));
        }
    }
}

const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

//! Command-line verbs, following Argo's CLI where it has one.

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use weir_core::run::{Event, Phase, Run, Submission};
use weir_store::{Durability, Store};

use crate::driver::{self, Env, now_ms};
use crate::files;
use crate::show;
use crate::watch::{Silent, Terminal, Watch};

/// A usage or validation error: exit code 2.
#[derive(Debug)]
pub struct Usage(pub String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Run Argo Workflows YAML locally, durably, from one binary"
)]
struct Cli {
    /// The database: a SQLite file (default: $XDG_DATA_HOME/weir/weir.db) or a PostgreSQL URL
    /// (postgres://USER:PASSWORD@HOST:PORT/DB) shared by several servers and workers.
    #[arg(long, env = "WEIR_DB", global = true, hide_env_values = true)]
    db: Option<PathBuf>,
    /// Work directories, logs and local artifacts (default: beside a SQLite database; with
    /// PostgreSQL, $XDG_DATA_HOME/weir, shared by every server and worker).
    #[arg(long, env = "WEIR_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Work against this `weir server` instead of a local database.
    #[arg(long, env = "WEIR_SERVER", global = true)]
    server: Option<String>,
    /// The bearer token for --server.
    #[arg(long, env = "WEIR_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// The namespace (with --server; and for `weir token create`).
    #[arg(short = 'n', long, env = "WEIR_NAMESPACE", global = true)]
    namespace: Option<String>,
    /// Run tasks as this user (a name, or UID[:GID]), in a mount namespace that hides weir's
    /// data directory. `weir server` and `weir worker` started as root use `nobody` unless told.
    #[arg(long, env = "WEIR_TASK_USER", global = true)]
    task_user: Option<String>,
    /// Let `weir server` and `weir worker` started as root run tasks as root, with access to
    /// everything weir can reach (its database and tokens included).
    #[arg(long, env = "WEIR_ALLOW_ROOT_TASKS", global = true)]
    allow_root_tasks: bool,
    /// A host directory tasks run as another user may mount (`hostPath`) or leave outputs in
    /// (repeatable; in the environment, separated by `:`).
    #[arg(
        long = "allow-host-path",
        env = "WEIR_ALLOW_HOST_PATHS",
        value_delimiter = ':',
        global = true
    )]
    allow_host_paths: Vec<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum DbCmd {
    /// Writes every run (its submission and events), template, token, audit entry, memoized
    /// output, lineage edge and metric sample as JSON lines (`-` for stdout).
    Export { file: PathBuf },
    /// Loads an export into this database in one transaction (refused if a run already exists).
    Import { file: PathBuf },
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Json,
    Yaml,
    Wide,
    Name,
}

#[derive(clap::Args)]
struct Submit {
    /// Workflow file (YAML or JSON; `-` for stdin).
    file: PathBuf,
    /// Workflow parameter NAME=VALUE (repeatable).
    #[arg(short = 'p', long = "parameter")]
    parameters: Vec<String>,
    /// A YAML/JSON file of parameters.
    #[arg(short = 'f', long)]
    parameter_file: Option<PathBuf>,
    /// Load WorkflowTemplates, ClusterWorkflowTemplates, ConfigMaps and Secrets from these files or directories first.
    #[arg(long = "with")]
    with: Vec<PathBuf>,
    /// Override metadata.name.
    #[arg(long)]
    name: Option<String>,
    /// Override spec.entrypoint.
    #[arg(long)]
    entrypoint: Option<String>,
    /// Step caching: run every task even where cached outputs exist (and record the new ones).
    #[arg(long)]
    no_cache: bool,
    /// Also keep every artifact without a location of its own in this S3-compatible store:
    /// s3://BUCKET/PREFIX?endpoint=HOST:PORT&insecure=true&access=SECRET/KEY&secret=SECRET/KEY
    /// (credentials by Secret name and key, from --with files).
    #[arg(long, env = "WEIR_ARTIFACT_REPOSITORY")]
    artifact_repository: Option<String>,
}

#[derive(Subcommand)]
enum CacheCmd {
    /// List memoized entries.
    List,
    /// Delete the entries of a cache, or one key. CACHE is NAMESPACE/NAME as `weir cache list`
    /// shows it, or the ConfigMap name of `memoize.cache` for the `default` namespace.
    Delete { cache: String, key: Option<String> },
}

#[derive(Subcommand)]
enum SyncCmd {
    /// Locks (`synchronization`) with their limit, holders and waiters.
    List,
    /// Set the limit of a database semaphore (`semaphore.database.key`); without LIMIT, remove it.
    Limit {
        /// The semaphore's key as `weir sync list` shows it (NAMESPACE/Database/KEY), or KEY for
        /// the `default` namespace.
        key: String,
        limit: Option<u32>,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create a token for the namespace of `-n` (`*` for every namespace); it is printed once.
    Create {
        /// viewer (read), editor (also submit and control runs), admin (also tokens and audit).
        #[arg(long, value_parser = ["viewer", "editor", "admin"])]
        role: String,
        /// How long it is valid (`30d`, `12h`, `15m`); no expiry without it.
        #[arg(long)]
        expires: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum RunsCmd {
    /// Parameters and final metrics of runs side by side.
    Compare {
        #[arg(required = true)]
        runs: Vec<String>,
        #[arg(short, long)]
        output: Option<Output>,
    },
}

#[derive(Subcommand)]
enum Cmd {
    /// Submit a workflow and watch it to the end (exit 0 if it succeeded, 1 if not).
    Run {
        #[command(flatten)]
        submit: Submit,
        /// Print the final workflow as json or yaml instead of watching.
        #[arg(short, long)]
        output: Option<Output>,
        /// Don't print task logs while watching.
        #[arg(long)]
        no_logs: bool,
        /// Continue an interrupted run instead of submitting (same as `weir resume RUN`).
        #[arg(long, value_name = "RUN")]
        resume: Option<String>,
    },
    /// Serve the REST API, live updates and the web UI. Settings come from defaults, then
    /// weir.toml (or --config), then WEIR_… variables, then flags.
    Server {
        /// Address to listen on [default: 127.0.0.1:2746].
        #[arg(long, env = "WEIR_LISTEN")]
        listen: Option<String>,
        /// Serve without tokens, every caller an admin; only on a loopback address.
        #[arg(long, env = "WEIR_INSECURE_LOCAL")]
        insecure_local: bool,
        /// The largest request body accepted, in bytes [default: 8 MiB].
        #[arg(long, env = "WEIR_MAX_BODY")]
        max_body: Option<usize>,
        /// Log lines as text or json (one object per line) [default: text].
        #[arg(long, env = "WEIR_LOG_FORMAT", value_parser = ["text", "json"])]
        log_format: Option<String>,
        /// Export each run as a trace (each node a span) to this OTLP/HTTP endpoint.
        #[arg(long, env = "WEIR_OTLP_ENDPOINT")]
        otlp_endpoint: Option<String>,
        /// The default artifact repository of runs submitted here (s3://BUCKET/PREFIX?…).
        #[arg(long, env = "WEIR_ARTIFACT_REPOSITORY")]
        artifact_repository: Option<String>,
        /// The configuration file [default: ./weir.toml if present].
        #[arg(long, env = "WEIR_CONFIG")]
        config: Option<PathBuf>,
        /// Print the effective configuration (secrets masked) and exit.
        #[arg(long)]
        print_config: bool,
        /// With PostgreSQL: run no tasks in this process, only dispatch them to `weir worker`s.
        #[arg(long, env = "WEIR_NO_WORKER")]
        no_worker: bool,
    },
    /// Claims and runs tasks from the PostgreSQL task queue (scale-out).
    Worker {
        /// Labels tasks' nodeSelector must match: KEY=VALUE,… (e.g. gpu=true,zone=a).
        #[arg(long, default_value = "")]
        labels: String,
        /// What this worker offers, over what it detects: cpu=8,memory=32Gi,gpu=2,tasks=64.
        #[arg(long, default_value = "")]
        slots: String,
        /// Most tasks claimed in one transaction.
        #[arg(long, default_value_t = 64)]
        batch: usize,
    },
    /// Brings the database's schema up to date (every weir command also does when it opens it).
    Migrate,
    /// A namespace's quota on PostgreSQL: most unfinished runs (further submissions get 429),
    /// most running tasks and GPUs (workers claim no more). No limit given: shows it.
    Quota {
        namespace: String,
        #[arg(long)]
        max_runs: Option<i64>,
        #[arg(long)]
        max_tasks: Option<i64>,
        #[arg(long)]
        max_gpu: Option<i64>,
        /// Removes the quota.
        #[arg(long, conflicts_with_all = ["max_runs", "max_tasks", "max_gpu"])]
        clear: bool,
    },
    /// Moves a database's history: `weir db export FILE` then `weir --db postgres://… db import FILE`.
    Db {
        #[command(subcommand)]
        cmd: DbCmd,
    },
    /// Where an artifact came from (upstream) or where it went (downstream), across runs.
    Lineage {
        /// A blake3 digest (8+ hex digits), or RUN/NODE, or RUN/NODE/ARTIFACT.
        target: String,
        /// What produced it, and from what (the default).
        #[arg(long, conflicts_with = "downstream")]
        upstream: bool,
        /// What used it, and what that produced.
        #[arg(long)]
        downstream: bool,
        #[arg(short, long)]
        output: Option<Output>,
    },
    /// Runs as experiments: compare their parameters and metrics.
    Runs {
        #[command(subcommand)]
        cmd: RunsCmd,
    },
    /// API tokens for `weir server`.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Check workflow files without running them.
    Lint {
        files: Vec<PathBuf>,
        #[arg(long = "with")]
        with: Vec<PathBuf>,
    },
    /// List runs, newest first.
    List {
        /// Only runs in these phases (comma-separated: Running,Succeeded,Failed,Error).
        #[arg(long)]
        status: Option<String>,
        #[arg(short, long)]
        output: Option<Output>,
        #[arg(long, default_value_t = 500)]
        limit: usize,
    },
    /// Show a run and its node tree.
    Get {
        run: String,
        #[arg(short, long)]
        output: Option<Output>,
    },
    /// Print the logs of a run's tasks (or of one node).
    Logs {
        run: String,
        node: Option<String>,
        /// Keep printing until the run finishes.
        #[arg(long)]
        follow: bool,
    },
    /// Re-run failed nodes and their dependents, reusing every node that succeeded.
    Retry {
        run: String,
        #[arg(long)]
        no_logs: bool,
    },
    /// Run a run again exactly: the same spec and parameters, every task executed (no step
    /// cache), and each input fetched from a URL required to have the digest it had then.
    Rerun {
        run: String,
        #[arg(long)]
        no_logs: bool,
    },
    /// Submit a new run with the same spec and parameters.
    Resubmit {
        run: String,
        #[arg(short = 'p', long = "parameter")]
        parameters: Vec<String>,
        #[arg(long)]
        no_logs: bool,
    },
    /// Stop a run: running tasks are killed, exit handlers run.
    Stop { run: String },
    /// Terminate a run: running tasks are killed, no exit handlers.
    Terminate { run: String },
    /// Suspend a run: no new task starts until it is resumed.
    Suspend { run: String },
    /// Resume a suspended run (or continue one whose weir process died).
    Resume {
        run: String,
        /// Values for suspend nodes' `supplied` outputs, NAME=VALUE.
        #[arg(short = 'p', long = "parameter")]
        parameters: Vec<String>,
        /// Resume only the suspend nodes this selects, as Argo's: `displayName=approve`,
        /// `inputs.parameters.NAME.value=X`, `templateName=T` (comma-separated, `!=` too).
        #[arg(long)]
        node_field_selector: Option<String>,
        #[arg(long)]
        no_logs: bool,
    },
    /// Memoization caches (`memoize` in templates).
    Cache {
        #[command(subcommand)]
        cmd: CacheCmd,
    },
    /// Metrics recorded by runs (`metrics.prometheus`), in Prometheus text format: gauges at
    /// their latest value, counters summed, histograms bucketed.
    Metrics {
        /// Only this run's samples.
        #[arg(long)]
        run: Option<String>,
    },
    /// Mutexes and semaphores shared by the runs of this database (`synchronization`).
    Sync {
        #[command(subcommand)]
        cmd: SyncCmd,
    },
    /// Delete runs with their logs and artifacts.
    Delete {
        runs: Vec<String>,
        #[arg(long)]
        all: bool,
    },
}

fn default_db() -> PathBuf {
    default_data_dir().join("weir.db")
}

pub fn default_data_dir() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("weir")
}

fn durability() -> Durability {
    match std::env::var("WEIR_DURABILITY").as_deref() {
        Ok("power") | Ok("full") => Durability::Power,
        Ok("relaxed") | Ok("off") => Durability::Relaxed,
        _ => Durability::Process,
    }
}

pub fn main() -> Result<ExitCode> {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return Ok(ExitCode::from(code));
        }
    };
    if let Some(server) = &cli.server
        && !matches!(cli.cmd, Cmd::Lint { .. })
    {
        let ns = cli.namespace.clone().unwrap_or_else(|| "default".into());
        let remote = crate::remote::Remote::new(server, cli.token.clone(), ns);
        return remote_main(&remote, cli.cmd);
    }
    let db_given = cli.db.clone();
    let serves = matches!(cli.cmd, Cmd::Server { .. } | Cmd::Worker { .. });
    let isolation = weir_exec::Isolation::for_tasks(
        cli.task_user.as_deref(),
        cli.allow_root_tasks,
        &cli.allow_host_paths,
        serves,
    )
    .map_err(Usage)?;
    let env = Env {
        db: cli.db.unwrap_or_else(default_db),
        durability: durability(),
        data: cli.data_dir.clone(),
        queue: false,
        isolation,
    };
    match cli.cmd {
        Cmd::Run {
            submit,
            output,
            no_logs,
            resume,
        } => match resume {
            Some(r) => resume_run(&env, &r, Vec::new(), None, no_logs),
            None => run(&env, submit, output, no_logs),
        },
        Cmd::Lint { files, with } => lint(&files, &with),
        Cmd::Server {
            listen,
            insecure_local,
            max_body,
            log_format,
            otlp_endpoint,
            artifact_repository,
            config,
            print_config,
            no_worker,
        } => {
            let (file, _) = crate::server::config::read(config.as_deref())?;
            let given = crate::server::config::Given {
                db: db_given,
                listen,
                insecure_local,
                max_body,
                log_format,
                otlp_endpoint,
                artifact_repository,
            };
            let eff = crate::server::config::merge(file, given, default_db())?;
            if print_config {
                print!("{}", crate::server::config::render(&eff));
                return Ok(ExitCode::SUCCESS);
            }
            let mut env = Env {
                db: eff.db.0.clone(),
                ..env
            };
            // with PostgreSQL, tasks go through the queue: to this process's own worker, and to
            // every `weir worker`
            env.queue = env.is_postgres();
            let mut opts = crate::server::Options::from(eff);
            opts.worker = env.queue && !no_worker;
            crate::server::serve(env, opts)
        }
        Cmd::Worker {
            labels,
            slots,
            batch,
        } => {
            if !env.is_postgres() {
                return Err(Usage(
                    "weir worker claims tasks from a PostgreSQL database: give --db postgres://… (with SQLite, `weir server` runs every task itself)".into(),
                )
                .into());
            }
            let mut opts = crate::cluster::WorkerOptions::detect();
            opts.labels = crate::cluster::parse_labels(&labels)?;
            crate::cluster::parse_slots(&slots, &mut opts)?;
            opts.batch = batch.max(1);
            crate::cluster::open(&env.db)?;
            let stop = std::sync::atomic::AtomicBool::new(false);
            crate::cluster::work(&env, opts, &stop)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Quota {
            namespace,
            max_runs,
            max_tasks,
            max_gpu,
            clear,
        } => {
            let store = crate::cluster::open(&env.db)?;
            if clear || max_runs.is_some() || max_tasks.is_some() || max_gpu.is_some() {
                store.set_quota(&weir_store::Quota {
                    namespace: namespace.clone(),
                    max_runs,
                    max_tasks,
                    max_gpu,
                })?;
            }
            let show = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
            match store.quota(&namespace)? {
                Some(q) => println!(
                    "{namespace}: max_runs {}, max_tasks {}, max_gpu {}",
                    show(q.max_runs),
                    show(q.max_tasks),
                    show(q.max_gpu)
                ),
                None => println!("{namespace}: no quota"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Migrate => {
            let store = crate::cluster::open(&env.db)?;
            println!(
                "{}: schema version {}",
                store.path().display(),
                store.schema_version()?
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Db { cmd } => {
            let mut store = crate::cluster::open(&env.db)?;
            match cmd {
                DbCmd::Export { file } => {
                    let n = if file.as_os_str() == "-" {
                        store.export(&mut std::io::stdout().lock())?
                    } else {
                        let f = std::fs::File::create(&file)
                            .with_context(|| format!("creating {}", file.display()))?;
                        let mut w = std::io::BufWriter::new(f);
                        let n = store.export(&mut w)?;
                        std::io::Write::flush(&mut w)?;
                        n
                    };
                    eprintln!("exported {n} rows from {}", store.path().display());
                }
                DbCmd::Import { file } => {
                    let f = std::fs::File::open(&file)
                        .with_context(|| format!("opening {}", file.display()))?;
                    let n = store.import(&mut std::io::BufReader::new(f))?;
                    eprintln!("imported {n} rows into {}", store.path().display());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Token { cmd } => token(&env, cli.namespace, cmd),
        Cmd::Lineage {
            target,
            downstream,
            output,
            ..
        } => {
            let store = env.store()?;
            let v =
                crate::lineage::query(&store, &crate::lineage::parse(&target)?, !downstream, None)?;
            print_lineage(&v, output)
        }
        Cmd::Runs {
            cmd: RunsCmd::Compare { runs, output },
        } => {
            let store = env.store()?;
            let mut rows = Vec::new();
            for r in &runs {
                let run = load_run(&store, r)?;
                let (_, last) = show::run_metrics(&run);
                rows.push(serde_json::json!({
                    "name": run.submission().name,
                    "phase": run.phase().as_str(),
                    "parameters": show::run_parameters(&run),
                    "final": last,
                }));
            }
            print_compare(&rows, output)
        }
        Cmd::List {
            status,
            output,
            limit,
        } => list(&env, status, output, limit),
        Cmd::Get { run, output } => get(&env, &run, output),
        Cmd::Logs { run, node, follow } => logs(&env, &run, node.as_deref(), follow),
        Cmd::Retry { run, no_logs } => retry(&env, &run, no_logs),
        Cmd::Rerun { run, no_logs } => rerun(&env, &run, no_logs),
        Cmd::Resubmit {
            run,
            parameters,
            no_logs,
        } => resubmit(&env, &run, &parameters, no_logs),
        Cmd::Stop { run } => control(&env, &run, Event::Stop, true),
        Cmd::Terminate { run } => control(&env, &run, Event::Terminate, false),
        Cmd::Suspend { run } => control(&env, &run, Event::Suspend, false),
        Cmd::Resume {
            run,
            parameters,
            node_field_selector,
            no_logs,
        } => {
            let params = files::parameters(&parameters, None)?;
            resume_run(&env, &run, params, node_field_selector, no_logs)
        }
        Cmd::Delete { runs, all } => delete(&env, runs, all),
        Cmd::Cache { cmd } => cache(&env, cmd),
        Cmd::Sync { cmd } => sync(&env, cmd),
        Cmd::Metrics { run } => {
            let store = env.store()?;
            let run = run.map(|r| store.resolve(&r)).transpose()?;
            let samples: Vec<_> = store
                .metrics()?
                .into_iter()
                .filter(|(r, _, _)| run.as_ref().is_none_or(|x| x == r))
                .map(|(_, _, m)| m)
                .collect();
            print!("{}", show::prometheus_text(&samples));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn exit_for(phase: Phase) -> ExitCode {
    if phase == Phase::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn print_warnings(w: &[weir_core::diag::Diagnostic]) {
    for d in w {
        eprintln!("{d}");
    }
}

/// Loads files and validates: a submission ready to store, or a usage error.
fn prepare(submit: &Submit, store: &Store) -> Result<Submission> {
    let bundle = files::load_bundle(&submit.file, &submit.with)?;
    print_warnings(&bundle.warnings);
    let mut wf = files::pick_workflow(&bundle.main, &submit.file)?;
    for w in files::ignored_field_warnings(&wf) {
        eprintln!("{w}");
    }
    if let Some(e) = &submit.entrypoint {
        wf.spec.entrypoint = Some(e.clone());
    }
    if submit.no_cache {
        wf.metadata
            .annotations
            .insert("weir.dev/no-cache".into(), "true".into());
    }
    if let Some(repo) = &submit.artifact_repository {
        if !repo.starts_with("s3://") {
            return Err(Usage(format!(
                "--artifact-repository `{repo}`: expected s3://BUCKET[/PREFIX][?endpoint=…]"
            ))
            .into());
        }
        wf.metadata
            .annotations
            .insert("weir.dev/artifact-repository".into(), repo.clone());
    }
    let params = files::parameters(&submit.parameters, submit.parameter_file.as_deref())?;
    let mut sub = files::submission(
        store,
        wf,
        &bundle.main,
        &bundle.library,
        params,
        submit.name.clone(),
    )?;
    let file = (submit.file != std::path::Path::new("-")).then_some(submit.file.as_path());
    crate::record::annotate(&mut sub, file);
    Ok(sub)
}

pub fn start(sub: Submission) -> Result<(Run, Vec<weir_core::run::Action>)> {
    let wf = sub.workflow.clone();
    let lib = sub.library.clone();
    Run::start(sub).map_err(|problems| Usage(files::locate(&problems, &wf, &lib)).into())
}

fn watcher(output: Option<Output>, no_logs: bool) -> Box<dyn Watch> {
    match output {
        Some(Output::Json | Output::Yaml | Output::Name) => Box::new(Silent),
        _ => Box::new(Terminal::new(!no_logs)),
    }
}

fn run(env: &Env, submit: Submit, output: Option<Output>, no_logs: bool) -> Result<ExitCode> {
    let mut store = env.store()?;
    let sub = prepare(&submit, &store)?;
    let driver::Admitted { run, actions, lock } = driver::admit(env, &mut store, sub)?;
    let key = run.submission().key().to_string();
    driver::install_interrupt_handler();
    let mut watch = watcher(output, no_logs);
    let phase = driver::drive(env, store, run, actions, Vec::new(), watch.as_mut())?;
    drop(lock);
    print_final(env, &key, output)?;
    report_rusage();
    Ok(exit_for(phase))
}

/// For `bench/run`: with `WEIR_RUSAGE_FILE` set, writes this process's own CPU time (user and
/// system seconds, all engine threads, not the tasks) and peak RSS (KiB) to that file.
fn report_rusage() {
    let Some(path) = std::env::var_os("WEIR_RUSAGE_FILE") else {
        return;
    };
    // SAFETY: getrusage fills the struct we pass.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut r) } != 0 {
        return;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let _ = std::fs::write(
        path,
        format!(
            "{:.6} {:.6} {}\n",
            secs(r.ru_utime),
            secs(r.ru_stime),
            r.ru_maxrss
        ),
    );
}

fn print_final(env: &Env, name: &str, output: Option<Output>) -> Result<()> {
    match output {
        Some(Output::Json) | Some(Output::Yaml) => {
            let run = load_run(&env.store()?, name)?;
            let v = show::run_json(&run);
            let text = if output == Some(Output::Json) {
                serde_json::to_string_pretty(&v)? + "\n"
            } else {
                show::to_yaml(&v)
            };
            print!("{}", weir_exec::mask(&text, &run.secret_values()));
        }
        Some(Output::Name) => println!("{name}"),
        _ => {}
    }
    Ok(())
}

fn lint(paths: &[PathBuf], with: &[PathBuf]) -> Result<ExitCode> {
    if paths.is_empty() {
        return Err(Usage("lint: give at least one file".into()).into());
    }
    let mut problems = Vec::new();
    let mut lib_bundle = files::Bundle::default();
    if !with.is_empty() {
        let dummy = paths[0].clone();
        lib_bundle = files::load_bundle(&dummy, with).unwrap_or_default();
    }
    for p in paths {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let loaded = files::load_file(p, &mut errors, &mut warnings)?;
        print_warnings(&warnings);
        problems.extend(errors.iter().map(|e| e.to_string()));
        for def in &loaded.definitions {
            let mut wf = def.clone();
            wf.kind = weir_core::spec::Kind::Workflow;
            let mut library = lib_bundle.library.definitions.clone();
            library.extend(
                loaded
                    .definitions
                    .iter()
                    .filter(|d| d.kind != weir_core::spec::Kind::Workflow)
                    .cloned(),
            );
            let params = wf
                .spec
                .arguments
                .parameters
                .iter()
                .filter(|x| x.value.is_none() && x.default.is_none())
                .map(|x| (x.name.clone(), "x".to_string()));
            let sub = Submission {
                key: None,
                name: "lint".into(),
                uid: String::new(),
                namespace: "default".into(),
                created_at: 0,
                parameters: if def.kind == weir_core::spec::Kind::Workflow {
                    Vec::new()
                } else {
                    params.collect()
                },
                workflow: wf.clone(),
                library: library.clone(),
                config_maps: lib_bundle
                    .library
                    .config_maps
                    .iter()
                    .chain(&loaded.config_maps)
                    .cloned()
                    .collect(),
                secrets: lib_bundle
                    .library
                    .secrets
                    .iter()
                    .chain(&loaded.secrets)
                    .cloned()
                    .collect(),
            };
            if let Err(ps) = Run::start(sub) {
                problems.push(files::locate(&ps, &wf, &library));
            }
        }
        if errors.is_empty() && problems.is_empty() {
            println!("✔ {}", p.display());
        }
    }
    if problems.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(Usage(problems.join("\n")).into())
    }
}

fn list(
    env: &Env,
    status: Option<String>,
    output: Option<Output>,
    limit: usize,
) -> Result<ExitCode> {
    let store = env.store()?;
    let phases: Vec<String> = status
        .map(|s| s.split(',').map(|x| x.trim().to_string()).collect())
        .unwrap_or_default();
    let runs = store.list(&phases, limit)?;
    match output {
        Some(Output::Name) => runs.iter().for_each(|r| println!("{}", r.name)),
        Some(Output::Json | Output::Yaml) => {
            let v: Vec<serde_json::Value> = runs
                .iter()
                .map(|r| serde_json::json!({"name": r.name, "namespace": r.namespace, "phase": r.phase,
                    "createdAt": weir_core::run::rfc3339_pub(r.created_at),
                    "finishedAt": r.finished_at.map(weir_core::run::rfc3339_pub), "message": r.message}))
                .collect();
            let v = serde_json::Value::Array(v);
            if output == Some(Output::Json) {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", show::to_yaml(&v));
            }
        }
        _ => print!(
            "{}",
            show::list_text(&runs, output == Some(Output::Wide), now_ms())
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// A stored run's state, rebuilt by replaying its events.
pub fn load_run(store: &Store, name: &str) -> Result<Run> {
    let name = store.resolve(name)?;
    let rec = store.load(&name)?;
    Run::replay(rec.submission, &rec.events)
        .map_err(|p| anyhow::anyhow!("run {name} cannot be replayed: {p:?}"))
}

fn get(env: &Env, name: &str, output: Option<Output>) -> Result<ExitCode> {
    let store = env.store()?;
    let run = load_run(&store, name)?;
    let secrets = run.secret_values();
    match output {
        Some(Output::Json) => println!(
            "{}",
            weir_exec::mask(
                &serde_json::to_string_pretty(&show::run_json(&run))?,
                &secrets
            )
        ),
        Some(Output::Yaml) => print!(
            "{}",
            weir_exec::mask(&show::to_yaml(&show::run_json(&run)), &secrets)
        ),
        Some(Output::Name) => println!("{}", run.submission().name),
        _ => print!(
            "{}",
            show::get_text(&run, output == Some(Output::Wide), now_ms())
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn logs(env: &Env, name: &str, node: Option<&str>, follow: bool) -> Result<ExitCode> {
    let store = env.store()?;
    let name = store.resolve(name)?;
    let mut offsets: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    loop {
        let run = load_run(&store, &name)?;
        let pods = show::log_nodes(&run, node);
        if node.is_some()
            && pods.is_empty()
            && run.nodes().iter().all(|n| Some(n.id.as_str()) != node)
        {
            bail!("run {name} has no task node `{}`", node.unwrap_or_default());
        }
        let mut out = std::io::stdout().lock();
        for line in show::new_log_lines(&env.work_root(), &run, node, &mut offsets) {
            let _ = writeln!(out, "{line}");
        }
        drop(out);
        if !follow || run.phase().is_done() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(ExitCode::SUCCESS)
}

fn retry(env: &Env, name: &str, no_logs: bool) -> Result<ExitCode> {
    let store = env.store()?;
    let name = store.resolve(name)?;
    let Some(lock) = driver::try_lock(env, &name)? else {
        bail!("run {name} is being driven by another weir process");
    };
    // a finished run has nothing in flight: replaying it is all recovery would do
    let run = load_run(&store, &name)?;
    if !matches!(run.phase(), Phase::Failed | Phase::Error) {
        return Err(Usage(format!(
            "run {name} is {}; only Failed or Errored runs can be retried",
            run.phase()
        ))
        .into());
    }
    driver::install_interrupt_handler();
    let mut w = watcher(None, no_logs);
    let phase = driver::drive(env, store, run, Vec::new(), vec![Event::Retry], w.as_mut())?;
    drop(lock);
    Ok(exit_for(phase))
}

fn rerun(env: &Env, name: &str, no_logs: bool) -> Result<ExitCode> {
    let mut store = env.store()?;
    let name = store.resolve(name)?;
    let original = load_run(&store, &name)?;
    // what came from outside the run, and what it was then
    let mut expected = std::collections::BTreeMap::new();
    for n in original.nodes() {
        for a in &n.input_artifacts {
            if let Some(u) = &a.url {
                expected.insert(u.clone(), a.hash.clone());
            }
        }
    }
    let mut sub = files::resubmission(original.submission().clone(), Vec::new());
    let ann = &mut sub.workflow.metadata.annotations;
    ann.insert(crate::record::RERUN_OF.into(), name.clone());
    ann.insert("weir.dev/no-cache".into(), "true".into());
    if !expected.is_empty() {
        ann.insert(
            crate::record::EXPECTED_INPUTS.into(),
            serde_json::to_string(&expected)?,
        );
    }
    let driver::Admitted { run, actions, lock } = driver::admit(env, &mut store, sub)?;
    let key = run.submission().key().to_string();
    println!("rerunning {name} as {}", run.submission().name);
    driver::install_interrupt_handler();
    let mut w = watcher(None, no_logs);
    let phase = driver::drive(env, store, run, actions, Vec::new(), w.as_mut())?;
    drop(lock);
    let after = load_run(&env.store()?, &key)?;
    // outputs by their node's path below the run (the run's own name differs)
    let digests = |r: &weir_core::run::Run| -> std::collections::BTreeMap<String, String> {
        let run = r.submission().name.clone();
        r.nodes()
            .iter()
            .flat_map(|n| {
                let path = n
                    .name
                    .strip_prefix(run.as_str())
                    .unwrap_or(&n.name)
                    .to_string();
                n.outputs
                    .artifacts
                    .iter()
                    .map(move |a| (format!("{path}/{}", a.name), a.hash.clone()))
            })
            .collect()
    };
    let (was, now) = (digests(&original), digests(&after));
    let same = now.iter().filter(|(k, v)| was.get(*k) == Some(v)).count();
    println!(
        "{} of {} output artifacts are identical to {name}'s",
        same,
        now.len()
    );
    Ok(exit_for(phase))
}

fn resubmit(env: &Env, name: &str, params: &[String], no_logs: bool) -> Result<ExitCode> {
    let mut store = env.store()?;
    let name = store.resolve(name)?;
    let rec = store.load(&name)?;
    let sub = files::resubmission(rec.submission, files::parameters(params, None)?);
    let driver::Admitted { run, actions, lock } = driver::admit(env, &mut store, sub)?;
    println!("resubmitted {name} as {}", run.submission().name);
    driver::install_interrupt_handler();
    let mut w = watcher(None, no_logs);
    let phase = driver::drive(env, store, run, actions, Vec::new(), w.as_mut())?;
    drop(lock);
    Ok(exit_for(phase))
}

/// Resume: un-suspend a live run, or take over a run whose driver died and finish it.
fn resume_run(
    env: &Env,
    name: &str,
    params: Vec<(String, String)>,
    selector: Option<String>,
    no_logs: bool,
) -> Result<ExitCode> {
    let mut store = env.store()?;
    let name = store.resolve(name)?;
    // values for `supplied` outputs must be among their `enum`: refused before anything is kept
    let problems = load_run(&store, &name)?.supplied_problems(&params, selector.as_deref());
    if !problems.is_empty() {
        return Err(Usage(problems.join("\n")).into());
    }
    let Some(lock) = driver::try_lock(env, &name)? else {
        store.push_control(
            &name,
            &Event::Resume {
                parameters: params,
                selector,
            },
        )?;
        println!("run {name} resumed");
        return Ok(ExitCode::SUCCESS);
    };
    let (run, actions, mut pending) = driver::recover(env, &store, &name)?;
    if run.phase().is_done() {
        // a driver that died after the last event may have left its locks
        store.release_run(&name)?;
        println!("run {name} already finished: {}", run.phase());
        return Ok(exit_for(run.phase()));
    }
    pending.push(Event::Resume {
        parameters: params,
        selector,
    });
    driver::install_interrupt_handler();
    let mut w = watcher(None, no_logs);
    let phase = driver::drive(env, store, run, actions, pending, w.as_mut())?;
    drop(lock);
    Ok(exit_for(phase))
}

/// stop / terminate / suspend: sent to the live driver, or applied here if there is none.
fn control(env: &Env, name: &str, ev: Event, drive_after: bool) -> Result<ExitCode> {
    let mut store = env.store()?;
    let name = store.resolve(name)?;
    let verb = match ev {
        Event::Stop => "stopped",
        Event::Terminate => "terminated",
        _ => "suspended",
    };
    let Some(lock) = driver::try_lock(env, &name)? else {
        store.push_control(&name, &ev)?;
        println!("run {name} {verb}");
        return Ok(ExitCode::SUCCESS);
    };
    let (run, actions, mut pending) = driver::recover(env, &store, &name)?;
    if run.phase().is_done() {
        store.release_run(&name)?;
        println!("run {name} already finished: {}", run.phase());
        return Ok(ExitCode::SUCCESS);
    }
    pending.push(ev.clone());
    if drive_after || matches!(ev, Event::Terminate) {
        let mut w = Silent;
        driver::drive(env, store, run, actions, pending, &mut w)?;
    } else {
        // suspend with no live driver: record it; `weir resume` continues the run
        let mut run = run;
        let now = now_ms();
        let batch: Vec<_> = pending.into_iter().map(|e| (now, e)).collect();
        for (at, e) in &batch {
            run.step(e.clone(), *at);
        }
        store.append(&name, &batch, run.phase(), run.message(), run.finished_at())?;
    }
    drop(lock);
    println!("run {name} {verb}");
    Ok(ExitCode::SUCCESS)
}

fn token(env: &Env, namespace: Option<String>, cmd: TokenCmd) -> Result<ExitCode> {
    let mut store = env.store()?;
    match cmd {
        TokenCmd::Create {
            role,
            expires,
            description,
        } => {
            let namespace = namespace.ok_or_else(|| {
                Usage("token create: name the namespace with -n NAMESPACE (`*` for all)".into())
            })?;
            let role = crate::server::Role::parse(&role)
                .ok_or_else(|| Usage(format!("role `{role}` is not viewer, editor or admin")))?;
            let now = now_ms();
            let expires_at = match expires {
                Some(e) => Some(
                    now + crate::server::parse_duration(&e).ok_or_else(|| {
                        Usage(format!(
                            "--expires `{e}` is not a duration like 30d, 12h or 15m"
                        ))
                    })?,
                ),
                None => None,
            };
            let (rec, token) =
                crate::server::new_token(&namespace, role, &description, now, expires_at)?;
            store.create_token(&rec)?;
            eprintln!(
                "token {} ({} of {}); it is not shown again:",
                rec.id, rec.role, rec.namespace
            );
            println!("{token}");
        }
        TokenCmd::List => {
            println!(
                "{:<14}{:<20}{:<8}{:<22}{:<22}DESCRIPTION",
                "ID", "NAMESPACE", "ROLE", "EXPIRES", "REVOKED"
            );
            let t = |x: Option<i64>| x.map(weir_core::run::rfc3339_pub).unwrap_or("-".into());
            for r in store.tokens(None)? {
                println!(
                    "{:<14}{:<20}{:<8}{:<22}{:<22}{}",
                    r.id,
                    r.namespace,
                    r.role,
                    t(r.expires_at),
                    t(r.revoked_at),
                    r.description
                );
            }
        }
        TokenCmd::Revoke { id } => {
            if !store.revoke_token(&id, now_ms())? {
                bail!("no unrevoked token `{id}`");
            }
            println!("revoked {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The verbs against a `weir server`.
fn remote_main(r: &crate::remote::Remote, cmd: Cmd) -> Result<ExitCode> {
    use crate::remote;
    let print_json = |v: &serde_json::Value, output: Option<Output>| -> Result<()> {
        match output {
            Some(Output::Yaml) => print!("{}", show::to_yaml(v)),
            _ => println!("{}", serde_json::to_string_pretty(v)?),
        }
        Ok(())
    };
    match cmd {
        Cmd::Run {
            submit,
            output,
            no_logs,
            resume: None,
        } => {
            if submit.entrypoint.is_some() {
                return Err(Usage(
                    "--entrypoint is not supported with --server; set spec.entrypoint in the file"
                        .into(),
                )
                .into());
            }
            let mut text = files::read(&submit.file)?;
            for w in &submit.with {
                let mut paths = Vec::new();
                files::yaml_files_of(w, &mut paths)?;
                for p in paths {
                    text += "\n---\n";
                    text += &files::read(&p)?;
                }
            }
            let mut params = submit.parameters.clone();
            if let Some(f) = &submit.parameter_file {
                params.extend(
                    files::parameters(&[], Some(f))?
                        .into_iter()
                        .map(|(k, v)| format!("{k}={v}")),
                );
            }
            let name = r.submit(text, &params, submit.name.as_deref())?;
            let quiet = matches!(output, Some(Output::Json | Output::Yaml | Output::Name));
            if !quiet {
                eprintln!("submitted {name} to {}", r.namespace);
            }
            let phase = r.watch(&name, !quiet && !no_logs)?;
            match output {
                Some(Output::Json | Output::Yaml) => print_json(&r.get(&name)?, output)?,
                Some(Output::Name) => println!("{name}"),
                _ => eprintln!("{name}: {phase}"),
            }
            Ok(remote::exit(&phase))
        }
        Cmd::Run {
            resume: Some(run),
            no_logs,
            ..
        } => {
            r.action(&run, "resume", remote::resume_body(&[], None))?;
            Ok(remote::exit(&r.watch(&run, !no_logs)?))
        }
        Cmd::List {
            status,
            output,
            limit,
        } => {
            let v = r.list(status.as_deref(), limit)?;
            match output {
                Some(Output::Json | Output::Yaml) => print_json(&v["items"], output)?,
                Some(Output::Name) => {
                    for i in v["items"].as_array().into_iter().flatten() {
                        println!("{}", i["name"].as_str().unwrap_or(""));
                    }
                }
                _ => print!("{}", remote::list_text(&v)),
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Get { run, output } => {
            let v = r.get(&run)?;
            match output {
                Some(Output::Json | Output::Yaml) => print_json(&v, output)?,
                Some(Output::Name) => println!("{}", v["metadata"]["name"].as_str().unwrap_or("")),
                _ => print!("{}", remote::get_text(&v)),
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Logs { run, node, follow } => {
            r.logs(&run, node.as_deref(), follow)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Retry { run, no_logs } => {
            r.action(&run, "retry", serde_json::json!({}))?;
            Ok(remote::exit(&r.watch(&run, !no_logs)?))
        }
        Cmd::Resubmit {
            run,
            parameters,
            no_logs,
        } => {
            let v = r.action(
                &run,
                "resubmit",
                serde_json::json!({"parameters": parameters}),
            )?;
            let name = v["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            println!("resubmitted {run} as {name}");
            Ok(remote::exit(&r.watch(&name, !no_logs)?))
        }
        Cmd::Stop { run } => control_remote(r, &run, "stop", "stopped"),
        Cmd::Terminate { run } => control_remote(r, &run, "terminate", "terminated"),
        Cmd::Suspend { run } => control_remote(r, &run, "suspend", "suspended"),
        Cmd::Resume {
            run,
            parameters,
            node_field_selector,
            ..
        } => {
            r.action(
                &run,
                "resume",
                remote::resume_body(&parameters, node_field_selector),
            )?;
            println!("run {run} resumed");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Runs {
            cmd: RunsCmd::Compare { runs, output },
        } => {
            let mut rows = Vec::new();
            for run in &runs {
                let m = r.metrics(run)?;
                rows.push(serde_json::json!({"name": run, "phase": m["phase"],
                    "parameters": m["parameters"], "final": m["final"]}));
            }
            print_compare(&rows, output)
        }
        Cmd::Lineage {
            target,
            downstream,
            output,
            ..
        } => print_lineage(&r.lineage(&target, downstream)?, output),
        Cmd::Delete { runs, all } => {
            if all {
                return Err(Usage(
                    "delete --all is not supported with --server; name the runs".into(),
                )
                .into());
            }
            for run in runs {
                r.delete(&run)?;
                println!("deleted {run}");
            }
            Ok(ExitCode::SUCCESS)
        }
        other => Err(Usage(format!(
            "`weir {}` works on a local database only; unset WEIR_SERVER (or drop --server)",
            verb_name(&other)
        ))
        .into()),
    }
}

fn print_lineage(v: &serde_json::Value, output: Option<Output>) -> Result<ExitCode> {
    match output {
        Some(Output::Json) => println!("{}", serde_json::to_string_pretty(v)?),
        Some(Output::Yaml) => print!("{}", show::to_yaml(v)),
        _ => print!("{}", crate::lineage::text(v)),
    }
    Ok(ExitCode::SUCCESS)
}

/// `weir runs compare`: one column per run, a row per parameter and per metric.
fn print_compare(rows: &[serde_json::Value], output: Option<Output>) -> Result<ExitCode> {
    if matches!(output, Some(Output::Json | Output::Yaml)) {
        let v = serde_json::Value::Array(rows.to_vec());
        match output {
            Some(Output::Yaml) => print!("{}", show::to_yaml(&v)),
            _ => println!("{}", serde_json::to_string_pretty(&v)?),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let keys = |field: &str| {
        let mut k: Vec<String> = rows
            .iter()
            .flat_map(|r| {
                r[field]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, _)| k.clone())
            })
            .collect();
        k.sort();
        k.dedup();
        k
    };
    let cell = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut table: Vec<Vec<String>> = vec![
        std::iter::once("".to_string())
            .chain(rows.iter().map(|r| cell(&r["name"])))
            .collect(),
        std::iter::once("phase".to_string())
            .chain(rows.iter().map(|r| cell(&r["phase"])))
            .collect(),
    ];
    for k in keys("parameters") {
        table.push(
            std::iter::once(format!("param {k}"))
                .chain(rows.iter().map(|r| cell(&r["parameters"][&k])))
                .collect(),
        );
    }
    for k in keys("final") {
        table.push(
            std::iter::once(format!("metric {k}"))
                .chain(rows.iter().map(|r| cell(&r["final"][&k])))
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..table[0].len())
        .map(|c| table.iter().map(|row| row[c].len()).max().unwrap_or(0) + 2)
        .collect();
    for row in &table {
        let line: String = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.trim_end());
    }
    Ok(ExitCode::SUCCESS)
}

fn control_remote(
    r: &crate::remote::Remote,
    run: &str,
    verb: &str,
    done: &str,
) -> Result<ExitCode> {
    r.action(run, verb, serde_json::json!({}))?;
    println!("run {run} {done}");
    Ok(ExitCode::SUCCESS)
}

fn verb_name(c: &Cmd) -> &'static str {
    match c {
        Cmd::Server { .. } => "server",
        Cmd::Token { .. } => "token",
        Cmd::Cache { .. } => "cache",
        Cmd::Sync { .. } => "sync",
        Cmd::Metrics { .. } => "metrics",
        Cmd::Lint { .. } => "lint",
        _ => "this verb",
    }
}

fn cache(env: &Env, cmd: CacheCmd) -> Result<ExitCode> {
    let mut store = env.store()?;
    match cmd {
        CacheCmd::List => {
            let rows = store.memo_list()?;
            let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(5).max(5) + 2;
            println!("{:<w$}{:<30}{:<22}RUN", "CACHE", "KEY", "CREATED");
            for (c, k, at, run) in rows {
                println!("{c:<w$}{k:<30}{:<22}{run}", weir_core::run::rfc3339_pub(at));
            }
        }
        CacheCmd::Delete { cache, key } => {
            let cache = if cache.contains('/') {
                cache
            } else {
                crate::driver::memo_cache("default", &cache)
            };
            let n = store.memo_delete(&cache, key.as_deref())?;
            println!(
                "deleted {n} entr{} from {cache}",
                if n == 1 { "y" } else { "ies" }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn sync(env: &Env, cmd: SyncCmd) -> Result<ExitCode> {
    let mut store = env.store()?;
    match cmd {
        SyncCmd::List => {
            let rows = store.sync_list()?;
            let w = rows.iter().map(|r| r.key.len()).max().unwrap_or(4).max(4) + 2;
            println!("{:<w$}{:<7}{:<40}WAITING", "LOCK", "LIMIT", "HOLDERS");
            for r in rows {
                println!(
                    "{:<w$}{:<7}{:<40}{}",
                    r.key,
                    r.limit,
                    r.holders.join(","),
                    r.waiting.join(",")
                );
            }
        }
        SyncCmd::Limit { key, limit } => {
            let key = if key.contains('/') {
                key
            } else {
                format!("default/Database/{key}")
            };
            store.set_sync_limit(&key, limit)?;
            match limit {
                Some(n) => println!("{key}: limit {n}"),
                None => println!("{key}: limit removed"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn delete(env: &Env, runs: Vec<String>, all: bool) -> Result<ExitCode> {
    let mut store = env.store()?;
    let names: Vec<String> = if all {
        store
            .list(&[], usize::MAX)?
            .into_iter()
            .map(|r| r.key)
            .collect()
    } else {
        runs.iter()
            .map(|r| store.resolve(r))
            .collect::<Result<_, _>>()?
    };
    if names.is_empty() {
        return Err(Usage("delete: name runs, or --all".into()).into());
    }
    for n in names {
        if !driver::delete_run(env, &mut store, &n)? {
            bail!("run {n} is running; stop it first");
        }
        println!("deleted {n}");
    }
    Ok(ExitCode::SUCCESS)
}

//! Command-line verbs, following Argo's CLI where it has one.

mod local;
mod remote;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use local::*;
use remote::*;
use weir_core::run::Event;

use crate::driver::load_run;
use crate::env::Env;
use crate::env::default_db;
use crate::env::durability;
use crate::files;
use crate::show;
use crate::usage::Usage;

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Run Argo Workflows YAML locally, durably, from one binary"
)]
pub(super) struct Cli {
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
    /// Where tasks run: `local` host processes (the default), or `docker` containers of their
    /// images (the Docker daemon of DOCKER_HOST, else the local socket).
    #[arg(long, env = "WEIR_EXECUTOR", value_enum, global = true)]
    executor: Option<crate::env::TaskExecutor>,
    /// Let `weir server` and `weir worker` run containers whose `securityContext` asks for
    /// `privileged` (root on the host); refused otherwise.
    #[arg(long, env = "WEIR_ALLOW_PRIVILEGED", global = true)]
    allow_privileged: bool,
    /// The Docker network task containers join (`docker network create` it first); by
    /// default they have none (`--network none`), loopback only.
    #[arg(long, env = "WEIR_DOCKER_NETWORK", global = true)]
    docker_network: Option<String>,
    /// Leave task containers in place after they end, for `docker inspect` and `docker logs`
    /// (remove them with `docker rm`; they carry the labels `weir.run` and `weir.node`).
    #[arg(long, env = "WEIR_KEEP_CONTAINERS", global = true)]
    keep_containers: bool,
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
pub(super) struct Submit {
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

pub fn main() -> Result<ExitCode> {
    // `weir argosay …`: the built-in stand-in for Argo's test image, run by the local executor
    // in place of that image's program; its arguments are its own, never weir's flags
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("argosay") {
        return Ok(crate::argosay::main(&args[1..]));
    }
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
        let remote = crate::remote::Remote::new(server, cli.token.clone(), ns)?;
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
        executor: cli.executor.unwrap_or_default(),
        containers: if serves {
            crate::env::ContainerPolicy {
                network: cli.docker_network.clone(),
                keep: cli.keep_containers,
                host_paths: Some(cli.allow_host_paths.clone()),
                privileged: cli.allow_privileged,
                // (a server's once its configuration is read)
                host_processes: cli.executor.unwrap_or_default() == crate::env::TaskExecutor::Local,
            }
        } else {
            crate::env::ContainerPolicy {
                network: cli.docker_network.clone(),
                keep: cli.keep_containers,
                ..Default::default()
            }
        },
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
                executor: cli.executor,
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
                executor: eff.executor.0,
                ..env
            };
            env.containers.host_processes = env.executor == crate::env::TaskExecutor::Local;
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

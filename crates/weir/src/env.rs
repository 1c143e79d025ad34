//! Where things live and how the host runs tasks: the database, the data directory and what
//! lies in it, the durability of commits, task isolation and the mount sandbox. Read from flags
//! and `WEIR_*`/XDG variables by the front ends; everything below them takes an `Env`.

use std::path::PathBuf;
use std::sync::OnceLock;

use weir_exec::{Capacity, LocalRepo, Sandbox};
use weir_store::Durability;

/// Where things live, from `--db` / `WEIR_DB` and `--data-dir` / `WEIR_DATA_DIR`.
#[derive(Debug, Clone)]
pub struct Env {
    /// A SQLite file, or a PostgreSQL URL (`postgres://…`).
    pub db: PathBuf,
    pub durability: Durability,
    /// Work directories, logs and the local artifact repository: beside a SQLite database by
    /// default; to be given (shared by every process) with PostgreSQL.
    pub data: Option<PathBuf>,
    /// Tasks go to the PostgreSQL task queue for workers, rather than run in this process.
    pub queue: bool,
    /// Tasks run as another user, away from weir's files (`weir_exec::Isolation::for_tasks`).
    pub isolation: Option<weir_exec::Isolation>,
    /// Where tasks run: host processes, or containers of their images.
    pub executor: TaskExecutor,
    /// What containers may ask of the host.
    pub containers: ContainerPolicy,
}

/// What a task's container may ask of its host: `hostPath` volumes and `privileged`. A user's
/// own `weir run` may ask anything (whoever can reach the Docker daemon can anyway); `weir
/// server` and `weir worker`, which run what editors submit, only what their flags grant.
#[derive(Debug, Clone)]
pub struct ContainerPolicy {
    /// The host directories `hostPath` volumes may name; None: any.
    pub host_paths: Option<Vec<PathBuf>>,
    /// Whether a container's `securityContext.privileged` is honoured (else refused).
    pub privileged: bool,
    /// Whether a template may ask for host processes (`weir.dev/executor: local`) in a run
    /// whose tasks run in containers: not on a server that runs containers.
    pub host_processes: bool,
    /// The Docker network containers join (`--docker-network`); none: no network.
    pub network: Option<String>,
    /// Containers are left in place after they end (`--keep-containers`).
    pub keep: bool,
}

impl Default for ContainerPolicy {
    /// `weir run`'s: anything.
    fn default() -> Self {
        ContainerPolicy {
            host_paths: None,
            privileged: true,
            host_processes: true,
            network: None,
            keep: false,
        }
    }
}

/// Where a run's tasks run (`--executor`, `WEIR_EXECUTOR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskExecutor {
    /// Host processes, each in a private filesystem view (the default).
    #[default]
    Local,
    /// Docker containers, each of its task's image (the Docker daemon of `DOCKER_HOST` or the
    /// local socket).
    Docker,
}

impl From<TaskExecutor> for weir_core::run::ExecutorKind {
    fn from(e: TaskExecutor) -> Self {
        match e {
            TaskExecutor::Local => weir_core::run::ExecutorKind::Local,
            TaskExecutor::Docker => weir_core::run::ExecutorKind::Docker,
        }
    }
}

impl TaskExecutor {
    /// Its name in a run's `weir.dev/executor` annotation and a worker's label of that name.
    pub fn name(self) -> &'static str {
        weir_core::run::ExecutorKind::from(self).name()
    }
}

impl Env {
    /// The executor of a run whose tasks run as `kind` says (and, where `mixed`, some of its
    /// templates ask for containers): host processes; or containers, but what runs no image of
    /// its own (`http`, `data`, `resource` templates) and the templates that ask for host
    /// processes (where this process may run them) on the host.
    pub fn executor(
        &self,
        kind: weir_core::run::ExecutorKind,
        mixed: bool,
        cfg: weir_exec::ProcessConfig,
        tx: std::sync::mpsc::Sender<weir_exec::Update>,
    ) -> anyhow::Result<Box<dyn weir_exec::Executor>> {
        use anyhow::Context;
        let host = |tx| {
            weir_exec::ProcessExecutor::new(cfg.clone(), tx)
                .context("starting the task executor (epoll, eventfd)")
        };
        if kind == weir_core::run::ExecutorKind::Local && !mixed {
            return Ok(Box::new(host(tx)?));
        }
        let docker = weir_exec::DockerExecutor::new(self.docker_config(&cfg), tx.clone())
            .map_err(|e| anyhow::anyhow!(e))?;
        Ok(Box::new(weir_exec::Routed::new(
            Box::new(docker),
            Box::new(host(tx.clone())?),
            kind,
            self.containers.host_processes,
            tx,
        )))
    }

    /// The Docker executor's configuration beside the local executor's `cfg`.
    pub fn docker_config(&self, cfg: &weir_exec::ProcessConfig) -> weir_exec::DockerConfig {
        weir_exec::DockerConfig {
            work_root: cfg.work_root.clone(),
            repo: cfg.repo.clone(),
            capacity: cfg.capacity.clone(),
            stream_logs: cfg.stream_logs,
            network: self.containers.network.clone(),
            keep_containers: self.containers.keep,
            host_paths: self.containers.host_paths.clone(),
            privileged: self.containers.privileged,
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.db.to_str().is_some_and(weir_store::is_postgres_url)
    }

    pub fn data_dir(&self) -> PathBuf {
        if let Some(d) = &self.data {
            return d.clone();
        }
        if self.is_postgres() {
            return default_data_dir();
        }
        self.db
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_else(|| PathBuf::from("."))
    }

    pub fn work_root(&self) -> PathBuf {
        self.data_dir().join("runs")
    }

    pub fn repo(&self) -> LocalRepo {
        LocalRepo::new(self.data_dir().join("artifacts"))
    }

    /// A run's directory of work directories and logs (`runs/KEY`), never outside `runs/`.
    pub fn run_dir(&self, run: &str) -> Result<PathBuf, weir_exec::InvalidPath> {
        weir_exec::within(&self.work_root(), run)
    }

    /// The file whose lock says a process drives the run (SQLite; PostgreSQL leases runs).
    pub fn lock_path(&self, run: &str) -> Result<PathBuf, weir_exec::InvalidPath> {
        weir_exec::within(&self.data_dir().join("locks"), &format!("{run}.lock"))
    }
}

pub fn default_data_dir() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("weir")
}

pub fn default_db() -> PathBuf {
    default_data_dir().join("weir.db")
}

/// The settings only the environment gives (no flag): read once, here and nowhere else, so the
/// library crates below take values, never variables.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `WEIR_DURABILITY`: `power` (fsync every commit), `relaxed` (no sync), else `process`.
    pub durability: Durability,
    /// `WEIR_SANDBOX=rewrite`: no mount namespaces even where they are permitted.
    pub rewrite_paths: bool,
    /// `WEIR_GPUS`: the GPU ids tasks may be given (comma-separated); unset, `nvidia-smi -L`.
    pub gpus: Option<Vec<String>>,
    /// `WEIR_LEASE_MS`: the lease of runs and tasks on PostgreSQL, 10 s by default, at least
    /// 100 ms.
    pub lease_ms: i64,
    /// `WEIR_RUSAGE_FILE`: where `weir run` writes its own CPU time and peak RSS (`bench/run`).
    pub rusage_file: Option<PathBuf>,
}

impl Settings {
    /// This process's settings, read from its environment at first use.
    pub fn get() -> &'static Settings {
        static S: OnceLock<Settings> = OnceLock::new();
        S.get_or_init(|| Settings::from_vars(|k| std::env::var(k).ok()))
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Settings {
        Settings {
            durability: match var("WEIR_DURABILITY").as_deref() {
                Some("power") | Some("full") => Durability::Power,
                Some("relaxed") | Some("off") => Durability::Relaxed,
                _ => Durability::Process,
            },
            rewrite_paths: var("WEIR_SANDBOX").as_deref() == Some("rewrite"),
            gpus: var("WEIR_GPUS").map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            }),
            lease_ms: var("WEIR_LEASE_MS")
                .and_then(|v| v.parse().ok())
                .filter(|v| *v >= 100)
                .unwrap_or(10_000),
            rusage_file: var("WEIR_RUSAGE_FILE").map(PathBuf::from),
        }
    }
}

pub fn durability() -> Durability {
    Settings::get().durability
}

/// The lease of runs and tasks (`WEIR_LEASE_MS`).
pub fn lease_ms() -> i64 {
    Settings::get().lease_ms
}

/// What this machine offers to tasks (its GPUs as `WEIR_GPUS` says).
pub fn capacity() -> Capacity {
    Capacity::detect(Settings::get().gpus.clone())
}

/// How tasks see their paths: mount namespaces where permitted, unless `WEIR_SANDBOX=rewrite`.
pub fn sandbox() -> Sandbox {
    static S: OnceLock<Sandbox> = OnceLock::new();
    *S.get_or_init(|| {
        if Settings::get().rewrite_paths {
            return Sandbox::Rewrite;
        }
        let s = Sandbox::detect();
        if s == Sandbox::Rewrite {
            eprintln!("weir: warning: Linux mount namespaces are not available; task paths under /tmp are rewritten into each task's work directory instead");
        }
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_read_from_their_variables_with_defaults() {
        let none = Settings::from_vars(|_| None);
        assert_eq!(none.durability, Durability::Process);
        assert!(!none.rewrite_paths);
        assert_eq!(none.gpus, None);
        assert_eq!(none.lease_ms, 10_000);
        assert_eq!(none.rusage_file, None);
        let vars = [
            ("WEIR_DURABILITY", "power"),
            ("WEIR_SANDBOX", "rewrite"),
            ("WEIR_GPUS", " g0, ,g1"),
            ("WEIR_LEASE_MS", "250"),
            ("WEIR_RUSAGE_FILE", "/tmp/r"),
        ];
        let set = Settings::from_vars(|k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        });
        assert_eq!(set.durability, Durability::Power);
        assert!(set.rewrite_paths);
        assert_eq!(set.gpus, Some(vec!["g0".to_string(), "g1".to_string()]));
        assert_eq!(set.lease_ms, 250);
        assert_eq!(set.rusage_file, Some(PathBuf::from("/tmp/r")));
        // a lease under 100 ms, or not a number, is the default
        for bad in ["50", "soon"] {
            let s = Settings::from_vars(|k| (k == "WEIR_LEASE_MS").then(|| bad.to_string()));
            assert_eq!(s.lease_ms, 10_000, "{bad}");
        }
        let relaxed = Settings::from_vars(|k| (k == "WEIR_DURABILITY").then(|| "off".to_string()));
        assert_eq!(relaxed.durability, Durability::Relaxed);
    }
}

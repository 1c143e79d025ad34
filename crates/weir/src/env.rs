//! Where things live and how the host runs tasks: the database, the data directory and what
//! lies in it, the durability of commits, task isolation and the mount sandbox. Read from flags
//! and `WEIR_*`/XDG variables by the front ends; everything below them takes an `Env`.

use std::path::PathBuf;

use weir_exec::LocalRepo;
use weir_exec::Sandbox;
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
}

impl Env {
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

pub fn durability() -> Durability {
    match std::env::var("WEIR_DURABILITY").as_deref() {
        Ok("power") | Ok("full") => Durability::Power,
        Ok("relaxed") | Ok("off") => Durability::Relaxed,
        _ => Durability::Process,
    }
}

pub fn sandbox() -> Sandbox {
    use std::sync::OnceLock;
    static S: OnceLock<Sandbox> = OnceLock::new();
    *S.get_or_init(|| {
        let s = Sandbox::detect();
        if s == Sandbox::Rewrite {
            eprintln!("weir: warning: Linux mount namespaces are not available; task paths under /tmp are rewritten into each task's work directory instead");
        }
        s
    })
}

//! The metadata store: SQLite (embedded default: WAL mode, one writer, short transactions) or
//! PostgreSQL (scale-out), with the same queries on both.

use std::path::{Path, PathBuf};

use weir_core::run::{Event, Metric, Millis, Phase, Submission};

use crate::db::{Conn, P, Row, p};
use crate::{Error, Result};

const SCHEMA_VERSION: i64 = 12;

/// SQLite's schema, one step per version.
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE runs (
    name        TEXT PRIMARY KEY,
    namespace   TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    finished_at INTEGER,
    phase       TEXT NOT NULL,
    message     TEXT NOT NULL DEFAULT '',
    submission  TEXT NOT NULL,
    next_seq    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX runs_created ON runs(created_at);
CREATE TABLE events (
    run   TEXT NOT NULL REFERENCES runs(name) ON DELETE CASCADE,
    seq   INTEGER NOT NULL,
    at    INTEGER NOT NULL,
    body  TEXT NOT NULL,
    PRIMARY KEY (run, seq)
) WITHOUT ROWID;
CREATE TABLE controls (
    id    INTEGER PRIMARY KEY AUTOINCREMENT,
    run   TEXT NOT NULL REFERENCES runs(name) ON DELETE CASCADE,
    body  TEXT NOT NULL
);
",
    "
CREATE TABLE memo (
    cache      TEXT NOT NULL,
    key        TEXT NOT NULL,
    outputs    TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    run        TEXT NOT NULL,
    PRIMARY KEY (cache, key)
) WITHOUT ROWID;
",
    "
CREATE TABLE sync_requests (
    key      TEXT NOT NULL,
    holder   TEXT NOT NULL,
    run      TEXT NOT NULL,
    priority INTEGER NOT NULL,
    lim      INTEGER NOT NULL,
    held     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key, holder)
);
CREATE INDEX sync_requests_holder ON sync_requests(holder);
CREATE INDEX sync_requests_run ON sync_requests(run);
CREATE TABLE sync_limits (
    key TEXT PRIMARY KEY,
    lim INTEGER NOT NULL
) WITHOUT ROWID;
",
    "
ALTER TABLE runs ADD COLUMN expires_at INTEGER;
CREATE INDEX runs_expires ON runs(expires_at) WHERE expires_at IS NOT NULL;
",
    "
CREATE TABLE metrics (
    run    TEXT NOT NULL REFERENCES runs(name) ON DELETE CASCADE,
    at     INTEGER NOT NULL,
    sample TEXT NOT NULL
);
CREATE INDEX metrics_run ON metrics(run);
",
    "
ALTER TABLE runs ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
CREATE INDEX runs_namespace ON runs(namespace, created_at);
CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    namespace   TEXT NOT NULL,
    role        TEXT NOT NULL,
    hash        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER
) WITHOUT ROWID;
CREATE TABLE audit (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at        INTEGER NOT NULL,
    actor     TEXT NOT NULL,
    namespace TEXT NOT NULL,
    action    TEXT NOT NULL,
    target    TEXT NOT NULL,
    status    INTEGER NOT NULL
);
CREATE INDEX audit_namespace ON audit(namespace, id);
",
    "
CREATE TABLE templates (
    kind       TEXT NOT NULL,
    namespace  TEXT NOT NULL,
    name       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    body       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    deleted    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, namespace, name, version)
) WITHOUT ROWID;
",
    "
CREATE TABLE lineage (
    run       TEXT NOT NULL REFERENCES runs(name) ON DELETE CASCADE,
    node      TEXT NOT NULL,
    node_name TEXT NOT NULL,
    template  TEXT NOT NULL,
    params    TEXT NOT NULL,
    direction TEXT NOT NULL,
    artifact  TEXT NOT NULL,
    digest    TEXT NOT NULL,
    key       TEXT NOT NULL,
    url       TEXT,
    at        INTEGER NOT NULL,
    PRIMARY KEY (run, node, direction, artifact)
) WITHOUT ROWID;
CREATE INDEX lineage_digest ON lineage(digest, direction);
",
    "
ALTER TABLE runs ADD COLUMN owner TEXT;
ALTER TABLE runs ADD COLUMN owner_epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN owner_until INTEGER;
ALTER TABLE runs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
",
    // 10: PostgreSQL's task queue only (how drivers read task changes)
    "",
    // 11: names are unique per namespace; `name` stays the run's key (see `Submission::key`)
    "
ALTER TABLE runs ADD COLUMN local_name TEXT NOT NULL DEFAULT '';
UPDATE runs SET local_name = name;
CREATE UNIQUE INDEX runs_local_name ON runs(namespace, local_name);
",
    // 12: PostgreSQL's task queue gains `requeued`; SQLite has no queue (one version for both)
    "SELECT 1;",
];

/// PostgreSQL's schema: the same tables, integers as BIGINT, and explicit `rowid` columns where
/// SQLite's implicit one orders rows.
const PG_MIGRATIONS: &[&str] = &["
CREATE TABLE runs (
    rowid       BIGSERIAL UNIQUE,
    name        TEXT PRIMARY KEY,
    namespace   TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    finished_at BIGINT,
    phase       TEXT NOT NULL,
    message     TEXT NOT NULL DEFAULT '',
    submission  TEXT NOT NULL,
    next_seq    BIGINT NOT NULL DEFAULT 0,
    expires_at  BIGINT,
    labels      TEXT NOT NULL DEFAULT '{}',
    owner       TEXT,
    owner_epoch BIGINT NOT NULL DEFAULT 0,
    owner_until BIGINT,
    priority    BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX runs_created ON runs(created_at);
CREATE INDEX runs_expires ON runs(expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX runs_namespace ON runs(namespace, created_at);
CREATE INDEX runs_unfinished ON runs(owner_until) WHERE finished_at IS NULL;
CREATE TABLE events (
    run   TEXT NOT NULL REFERENCES runs(name) ON DELETE CASCADE,
    seq   BIGINT NOT NULL,
    at    BIGINT NOT NULL,
    body  TEXT NOT NULL,
    PRIMARY KEY (run, seq)
);
CREATE TABLE controls (
    id    BIGSERIAL PRIMARY KEY,
    run   TEXT NOT NULL REFERENCES runs(name) ON DELETE CASCADE,
    body  TEXT NOT NULL
);
CREATE INDEX controls_run ON controls(run);
CREATE TABLE memo (
    cache      TEXT NOT NULL,
    key        TEXT NOT NULL,
    outputs    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    run        TEXT NOT NULL,
    PRIMARY KEY (cache, key)
);
CREATE TABLE sync_requests (
    rowid    BIGSERIAL,
    key      TEXT NOT NULL,
    holder   TEXT NOT NULL,
    run      TEXT NOT NULL,
    priority BIGINT NOT NULL,
    lim      BIGINT NOT NULL,
    held     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (key, holder)
);
CREATE INDEX sync_requests_holder ON sync_requests(holder);
CREATE INDEX sync_requests_run ON sync_requests(run);
CREATE TABLE sync_limits (
    key TEXT PRIMARY KEY,
    lim BIGINT NOT NULL
);
CREATE TABLE metrics (
    rowid  BIGSERIAL,
    run    TEXT NOT NULL REFERENCES runs(name) ON DELETE CASCADE,
    at     BIGINT NOT NULL,
    sample TEXT NOT NULL
);
CREATE INDEX metrics_run ON metrics(run);
CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    namespace   TEXT NOT NULL,
    role        TEXT NOT NULL,
    hash        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    revoked_at  BIGINT
);
CREATE TABLE audit (
    id        BIGSERIAL PRIMARY KEY,
    at        BIGINT NOT NULL,
    actor     TEXT NOT NULL,
    namespace TEXT NOT NULL,
    action    TEXT NOT NULL,
    target    TEXT NOT NULL,
    status    BIGINT NOT NULL
);
CREATE INDEX audit_namespace ON audit(namespace, id);
CREATE TABLE templates (
    kind       TEXT NOT NULL,
    namespace  TEXT NOT NULL,
    name       TEXT NOT NULL,
    version    BIGINT NOT NULL,
    body       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    deleted    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, namespace, name, version)
);
CREATE TABLE lineage (
    run       TEXT NOT NULL REFERENCES runs(name) ON DELETE CASCADE,
    node      TEXT NOT NULL,
    node_name TEXT NOT NULL,
    template  TEXT NOT NULL,
    params    TEXT NOT NULL,
    direction TEXT NOT NULL,
    artifact  TEXT NOT NULL,
    digest    TEXT NOT NULL,
    key       TEXT NOT NULL,
    url       TEXT,
    at        BIGINT NOT NULL,
    PRIMARY KEY (run, node, direction, artifact)
);
CREATE INDEX lineage_digest ON lineage(digest, direction);
CREATE TABLE tasks (
    id          BIGSERIAL PRIMARY KEY,
    run         TEXT NOT NULL,
    node        TEXT NOT NULL,
    namespace   TEXT NOT NULL,
    priority    BIGINT NOT NULL DEFAULT 0,
    spec        TEXT NOT NULL,
    selector    TEXT NOT NULL DEFAULT '{}',
    cpu_milli   BIGINT NOT NULL DEFAULT 0,
    memory      BIGINT NOT NULL DEFAULT 0,
    gpu         BIGINT NOT NULL DEFAULT 0,
    state       TEXT NOT NULL DEFAULT 'queued',
    worker      TEXT,
    epoch       BIGINT NOT NULL DEFAULT 0,
    lease_until TIMESTAMPTZ,
    pid         BIGINT,
    cancel      BIGINT NOT NULL DEFAULT 0,
    result      TEXT,
    reported    BIGINT NOT NULL DEFAULT 0,
    UNIQUE (run, node)
);
-- few indexes: every change of a task's state writes each index whose predicate it enters
CREATE INDEX tasks_queued ON tasks(priority DESC, id) WHERE state = 'queued';
CREATE INDEX tasks_unreported ON tasks(run, id)
    WHERE (state = 'running' AND pid IS NOT NULL AND reported = 0) OR (state = 'done' AND reported < 2);
CREATE TABLE task_logs (
    run  TEXT NOT NULL REFERENCES runs(name) ON DELETE CASCADE,
    node TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (run, node)
);
CREATE TABLE workers (
    id        TEXT PRIMARY KEY,
    labels    TEXT NOT NULL,
    slots     TEXT NOT NULL,
    seen      TIMESTAMPTZ NOT NULL
);
CREATE TABLE quotas (
    namespace TEXT PRIMARY KEY,
    max_runs  BIGINT,
    max_tasks BIGINT,
    max_gpu   BIGINT
);
",
    // 10: drivers read task changes by the transaction that made them, writing nothing; the
    // starts and results a driver had not recorded yet are read again
    "
ALTER TABLE tasks ADD COLUMN changed xid8;
UPDATE tasks SET changed = pg_current_xact_id() WHERE state = 'done' OR (state = 'running' AND pid IS NOT NULL);
DROP INDEX tasks_unreported;
ALTER TABLE tasks DROP COLUMN reported;
CREATE INDEX tasks_changed ON tasks(changed) WHERE changed IS NOT NULL;
",
    // 11: names are unique per namespace; `name` stays the run's key (see `Submission::key`)
    "
ALTER TABLE runs ADD COLUMN local_name TEXT NOT NULL DEFAULT '';
UPDATE runs SET local_name = name;
CREATE UNIQUE INDEX runs_local_name ON runs(namespace, local_name);
",
    // 12: a lost worker's task is queued again once, as the same attempt
    "
ALTER TABLE tasks ADD COLUMN requeued BOOLEAN NOT NULL DEFAULT false;
",
];

/// How hard each commit works to survive a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// WAL with `synchronous=NORMAL`: committed data survives the process being killed at any
    /// moment (the default); the last commits can be lost on power failure.
    Process,
    /// WAL with `synchronous=FULL`: also survives power failure (an fsync per commit).
    Power,
    /// `synchronous=OFF`: for benchmarks that measure what safety costs.
    Relaxed,
}

pub struct Store {
    pub(crate) conn: Conn,
    path: PathBuf,
    /// The ownership epoch [`Store::append`] names (PostgreSQL scale-out).
    fence: Option<i64>,
    /// This process's owner id and lease: a run it creates is its own from the start.
    owner: Option<(String, i64)>,
}

#[derive(Debug, Clone)]
pub struct RunSummary {
    /// What the store and the CLI know the run by ([`Submission::key`]).
    pub key: String,
    /// Its name in its namespace.
    pub name: String,
    pub namespace: String,
    pub created_at: Millis,
    pub finished_at: Option<Millis>,
    pub phase: String,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct RunRecord {
    pub summary: RunSummary,
    pub submission: Submission,
    pub events: Vec<(Millis, Event)>,
}

/// `postgres://…` or `postgresql://…`: a PostgreSQL database rather than a SQLite file.
pub fn is_postgres_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// A database URL with its password replaced, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl Store {
    /// Opens the database `location` names: a PostgreSQL URL, or (creating it if needed) a
    /// SQLite file.
    pub fn open(location: &Path, durability: Durability) -> Result<Store> {
        match location.to_str() {
            Some(url) if is_postgres_url(url) => Store::connect(url),
            _ => Store::open_sqlite(location, durability),
        }
    }

    fn open_sqlite(path: &Path, durability: Durability) -> Result<Store> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let conn = rusqlite::Connection::open(path)?;
        let not_db = |source| Error::NotADatabase {
            path: path.to_path_buf(),
            source,
        };
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(not_db)?;
        let sync = match durability {
            Durability::Process => "NORMAL",
            Durability::Power => "FULL",
            Durability::Relaxed => "OFF",
        };
        // Switching to WAL takes an exclusive lock and does not wait on the busy handler:
        // another process creating the same database at this moment makes it fail, so retry.
        let mut attempts = 0;
        loop {
            match conn.execute_batch(&format!(
                "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA foreign_keys=ON;"
            )) {
                Ok(()) => break,
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy && attempts < 200 =>
                {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => return Err(not_db(e)),
            }
        }
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(not_db)?;
        if version > SCHEMA_VERSION {
            return Err(Error::TooNew {
                path: path.to_path_buf(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        let store = Store {
            conn: Conn::Lite(conn),
            path: path.to_path_buf(),
            fence: None,
            owner: None,
        };
        if version < SCHEMA_VERSION {
            store.migrate()?;
        }
        Ok(store)
    }

    /// Connects to a PostgreSQL database and brings its schema up to date.
    pub fn connect(url: &str) -> Result<Store> {
        Store::connect_with(url, std::time::Duration::from_secs(10))
    }

    /// Connects with a timeout for establishing the connection.
    pub fn connect_with(url: &str, timeout: std::time::Duration) -> Result<Store> {
        let mut cfg: postgres::Config = url.parse().map_err(|e| Error::Connect {
            url: redact_url(url),
            message: format!("{e}"),
        })?;
        cfg.connect_timeout(timeout);
        // a cut network fails the connection's calls instead of leaving them hanging
        cfg.keepalives(true);
        cfg.keepalives_idle(timeout.max(std::time::Duration::from_secs(1)));
        cfg.tcp_user_timeout(timeout.max(std::time::Duration::from_secs(1)) * 2);
        let client = cfg.connect(postgres::NoTls).map_err(|e| Error::Connect {
            url: redact_url(url),
            message: format!("{e}"),
        })?;
        let store = Store {
            conn: Conn::pg(client),
            path: PathBuf::from(redact_url(url)),
            fence: None,
            owner: None,
        };
        store.migrate()?;
        Ok(store)
    }

    /// Where the database is: a SQLite file, or the PostgreSQL URL without its password.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the database connection is gone: see [`crate::db`]'s `is_broken`.
    pub fn is_broken(&self) -> bool {
        self.conn.is_broken()
    }

    /// Whether a failure is the database being out of reach (a refused or lost connection),
    /// which a caller may retry, rather than a fault of the request or the data.
    pub fn is_unavailable(e: &Error) -> bool {
        match e {
            Error::Connect { .. } => true,
            Error::Pg(p) => {
                p.is_closed()
                    || p.as_db_error().is_none()
                    || p.code().is_some_and(|c| {
                        // too many connections, the server shutting down or starting, cannot connect now
                        let c = c.code();
                        c.starts_with("08") || c == "53300" || c.starts_with("57P")
                    })
            }
            _ => false,
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.conn.is_pg()
    }

    /// The schema version of the database.
    pub fn schema_version(&self) -> Result<i64> {
        if self.conn.is_pg() {
            Ok(self
                .conn
                .row("SELECT max(version) FROM weir_schema", p![])?
                .map(|r| r.oi(0))
                .transpose()?
                .flatten()
                .unwrap_or(0))
        } else {
            self.conn
                .row("PRAGMA user_version", p![])?
                .map_or(Ok(0), |r| r.i(0))
        }
    }

    /// Applies missing migrations in one write transaction, so two processes opening a new
    /// database at once cannot both migrate it. Returns the versions applied.
    pub fn migrate(&self) -> Result<Vec<i64>> {
        if self.conn.is_pg() {
            return self.migrate_pg();
        }
        self.conn.tx(|c| {
            let from = c
                .row("PRAGMA user_version", p![])?
                .map_or(Ok(0), |r| r.i(0))?;
            if from == 0 {
                let tables = c
                    .row(
                        "SELECT count(*) FROM sqlite_master WHERE type='table'",
                        p![],
                    )?
                    .map_or(Ok(0), |r| r.i(0))?;
                if tables > 0 {
                    return Err(Error::Corrupt(format!(
                        "{} holds tables but no weir schema version; it is not a weir database",
                        self.path.display()
                    )));
                }
            }
            let mut applied = Vec::new();
            for (i, m) in MIGRATIONS.iter().enumerate().skip(from as usize) {
                c.batch(m)?;
                c.batch(&format!("PRAGMA user_version = {}", i + 1))?;
                applied.push(i as i64 + 1);
            }
            Ok(applied)
        })
    }

    /// PostgreSQL: the version lives in `weir_schema`; an advisory lock serializes migrators.
    fn migrate_pg(&self) -> Result<Vec<i64>> {
        let c = &self.conn;
        let current = |c: &Conn| -> Result<i64> {
            Ok(c.row("SELECT max(version) FROM weir_schema", p![])?
                .map(|r| r.oi(0))
                .transpose()?
                .flatten()
                .unwrap_or(0))
        };
        let exists = c
            .row("SELECT to_regclass('weir_schema')::text", p![])?
            .map(|r| r.os(0))
            .transpose()?
            .flatten()
            .is_some();
        if exists {
            let v = current(c)?;
            if v > SCHEMA_VERSION {
                return Err(Error::TooNew {
                    path: self.path.clone(),
                    found: v,
                    supported: SCHEMA_VERSION,
                });
            }
            if v == SCHEMA_VERSION {
                return Ok(Vec::new());
            }
        }
        c.tx(|c| {
            c.exec("SELECT pg_advisory_xact_lock(?1)", p![LOCK_MIGRATE])?;
            c.batch("CREATE TABLE IF NOT EXISTS weir_schema (version BIGINT PRIMARY KEY, at TIMESTAMPTZ NOT NULL DEFAULT now())")?;
            let from = current(c)?;
            if from == 0 {
                let tables = c
                    .row("SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name <> 'weir_schema'", p![])?
                    .map_or(Ok(0), |r| r.i(0))?;
                if tables > 0 {
                    return Err(Error::Corrupt(format!(
                        "{} holds tables but no weir schema version; it is not a weir database",
                        self.path.display()
                    )));
                }
            }
            let mut applied = Vec::new();
            for (i, m) in PG_MIGRATIONS.iter().enumerate() {
                let v = PG_BASE + i as i64 + 1;
                if v <= from {
                    continue;
                }
                c.batch(m)?;
                c.exec("INSERT INTO weir_schema (version) VALUES (?1)", p![v])?;
                applied.push(v);
            }
            Ok(applied)
        })
    }

    /// Records a new run. Fails if its namespace has a run of that name. Sets the run's key
    /// ([`Submission::key`]): its name, or `NAMESPACE~NAME` where another namespace has a run of
    /// that name.
    pub fn create_run(&mut self, sub: &mut Submission) -> Result<()> {
        // the name becomes file names under the data directory: checked at the last door too
        weir_core::names::check_name(&sub.name)
            .and_then(|()| weir_core::names::check_namespace(&sub.namespace))
            .map_err(Error::InvalidName)?;
        sub.key = None;
        let labels = serde_json::to_string(&sub.workflow.metadata.labels)
            .map_err(|e| Error::Corrupt(e.to_string()))?;
        let priority = sub.workflow.spec.priority.unwrap_or(0);
        loop {
            let body = serde_json::to_string(sub).map_err(|e| Error::Corrupt(e.to_string()))?;
            let key = sub.key();
            let n = match &self.owner {
                // owned from the start: no other server takes it over before its driver starts
                Some((owner, lease)) if self.conn.is_pg() => self.conn.exec(
                    "INSERT INTO runs (name, local_name, namespace, created_at, phase, submission, labels, priority, owner, owner_epoch, owner_until)
                     VALUES (?1, ?2, ?3, ?4, 'Running', ?5, ?6, ?7, ?8, 1, CAST(extract(epoch FROM clock_timestamp()) * 1000 AS BIGINT) + ?9)
                     ON CONFLICT DO NOTHING",
                    p![key, &sub.name, &sub.namespace, sub.created_at, &body, &labels, priority, owner.as_str(), *lease],
                )?,
                _ => self.conn.exec(
                    "INSERT INTO runs (name, local_name, namespace, created_at, phase, submission, labels, priority) VALUES (?1, ?2, ?3, ?4, 'Running', ?5, ?6, ?7)
                     ON CONFLICT DO NOTHING",
                    p![key, &sub.name, &sub.namespace, sub.created_at, &body, &labels, priority],
                )?,
            };
            if n == 1 {
                return Ok(());
            }
            // a name taken in this namespace, or (once) a key taken by another namespace's run;
            // no name holds `~`, so `NAMESPACE~NAME` is only ever this namespace's
            if sub.key.is_some() || self.name_taken(&sub.namespace, &sub.name)? {
                return Err(Error::RunExists(sub.name.clone()));
            }
            sub.key = Some(format!("{}~{}", sub.namespace, sub.name));
        }
    }

    /// The key of run `name` of `namespace` ([`Submission::key`]), if there is one.
    pub fn run_key(&self, namespace: &str, name: &str) -> Result<Option<String>> {
        self.conn
            .row(
                "SELECT name FROM runs WHERE namespace = ?1 AND local_name = ?2",
                p![namespace, name],
            )?
            .map(|r| r.s(0))
            .transpose()
    }

    /// Whether `namespace` has a run named `name`.
    pub fn name_taken(&self, namespace: &str, name: &str) -> Result<bool> {
        Ok(self.run_key(namespace, name)?.is_some())
    }

    fn key_exists(&self, key: &str) -> Result<bool> {
        Ok(self
            .conn
            .row("SELECT 1 FROM runs WHERE name = ?1", p![key])?
            .is_some())
    }

    /// Appends events (write-ahead: before the driver acts on them) and the run's new summary,
    /// in one transaction.
    pub fn append(
        &mut self,
        run: &str,
        events: &[(Millis, Event)],
        phase: Phase,
        message: &str,
        finished_at: Option<Millis>,
    ) -> Result<()> {
        self.append_fenced(run, self.fence, events, phase, message, finished_at)
    }

    /// Runs created through this connection belong to `owner` (PostgreSQL), for `lease_ms`.
    pub fn set_owner(&mut self, owner: &str, lease_ms: i64) {
        self.owner = Some((owner.to_string(), lease_ms));
    }

    /// From now on, [`Store::append`] names this ownership epoch (see [`Store::append_fenced`]).
    pub fn set_fence(&mut self, epoch: Option<i64>) {
        self.fence = epoch;
    }

    /// [`Store::append`] by the holder of a run's ownership `epoch` (from [`Store::claim_run`]):
    /// refused with [`Error::Fenced`] once another process has taken the run over.
    pub fn append_fenced(
        &mut self,
        run: &str,
        epoch: Option<i64>,
        events: &[(Millis, Event)],
        phase: Phase,
        message: &str,
        finished_at: Option<Millis>,
    ) -> Result<()> {
        let bodies = events
            .iter()
            .map(|(at, ev)| {
                Ok((
                    *at,
                    serde_json::to_string(ev).map_err(|e| Error::Corrupt(e.to_string()))?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        self.conn.tx(|c| {
            let row = c
                .row(
                    if c.is_pg() {
                        "SELECT next_seq, owner_epoch FROM runs WHERE name = ?1 FOR UPDATE"
                    } else {
                        // BEGIN IMMEDIATE already holds SQLite's one write lock
                        "SELECT next_seq, owner_epoch FROM runs WHERE name = ?1"
                    },
                    p![run],
                )?
                .ok_or_else(|| Error::RunNotFound(run.to_string()))?;
            let seq = row.i(0)?;
            if let Some(e) = epoch
                && row.i(1)? != e
            {
                return Err(Error::Fenced(run.to_string()));
            }
            if c.is_pg() {
                // one statement for the whole batch: a round trip per event is what a batch saves
                let seqs: Vec<i64> = (0..bodies.len() as i64).map(|i| seq + i).collect();
                let ats: Vec<i64> = bodies.iter().map(|(at, _)| *at).collect();
                let texts: Vec<&str> = bodies.iter().map(|(_, b)| b.as_str()).collect();
                c.exec(
                    "INSERT INTO events (run, seq, at, body) SELECT ?1, s, a, b FROM unnest(?2::bigint[], ?3::bigint[], ?4::text[]) AS t(s, a, b)",
                    &[run.into(), P::IA(&seqs), P::IA(&ats), P::TA(&texts)],
                )?;
            } else {
                for (i, (at, body)) in bodies.iter().enumerate() {
                    c.exec(
                        "INSERT INTO events (run, seq, at, body) VALUES (?1, ?2, ?3, ?4)",
                        p![run, seq + i as i64, *at, body.as_str()],
                    )?;
                }
            }
            c.exec(
                "UPDATE runs SET next_seq = ?2, phase = ?3, message = ?4, finished_at = ?5 WHERE name = ?1",
                p![run, seq + bodies.len() as i64, phase.as_str(), message, finished_at],
            )?;
            Ok(())
        })
    }

    /// Finds a run's key by its key, `NAMESPACE/NAME`, name, unique name prefix, or `@latest`
    /// (the CLI's argument; the API names runs by namespace and name, see [`Store::run_key`]).
    pub fn resolve(&self, name: &str) -> Result<String> {
        if name == "@latest" {
            return self
                .conn
                .row(
                    "SELECT name FROM runs ORDER BY created_at DESC, rowid DESC LIMIT 1",
                    p![],
                )?
                .map(|r| r.s(0))
                .transpose()?
                .ok_or_else(|| Error::RunNotFound(name.to_string()));
        }
        if let Some((ns, n)) = name.split_once('/') {
            return self
                .run_key(ns, n)?
                .ok_or_else(|| Error::RunNotFound(name.to_string()));
        }
        if self.key_exists(name)? {
            return Ok(name.to_string());
        }
        let found = |sql: &str| -> Result<Vec<(String, String, String)>> {
            self.conn
                .rows(sql, p![name])?
                .iter()
                .map(|r| Ok((r.s(0)?, r.s(1)?, r.s(2)?)))
                .collect()
        };
        let mut runs =
            found("SELECT name, namespace, local_name FROM runs WHERE local_name = ?1 LIMIT 5")?;
        if runs.is_empty() {
            runs = found(
                "SELECT name, namespace, local_name FROM runs WHERE substr(local_name, 1, length(CAST(?1 AS TEXT))) = ?1 LIMIT 5",
            )?;
        }
        match runs.len() {
            0 => Err(Error::RunNotFound(name.to_string())),
            1 => Ok(runs.swap_remove(0).0),
            _ => Err(Error::Ambiguous(
                name.to_string(),
                runs.iter()
                    .map(|(_, ns, n)| format!("{ns}/{n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            )),
        }
    }

    pub fn load(&self, name: &str) -> Result<RunRecord> {
        let row = self
            .conn
            .row(
                "SELECT name, namespace, created_at, finished_at, phase, message, local_name, submission FROM runs WHERE name = ?1",
                p![name],
            )?
            .ok_or_else(|| Error::RunNotFound(name.to_string()))?;
        let summary = summary_row(&row)?;
        let submission: Submission = serde_json::from_str(&row.s(7)?)
            .map_err(|e| Error::Corrupt(format!("run {name}: submission: {e}")))?;
        let mut events = Vec::new();
        for r in self.conn.rows(
            "SELECT at, body FROM events WHERE run = ?1 ORDER BY seq",
            p![name],
        )? {
            let ev: Event = serde_json::from_str(&r.s(1)?)
                .map_err(|e| Error::Corrupt(format!("run {name}: event: {e}")))?;
            events.push((r.i(0)?, ev));
        }
        Ok(RunRecord {
            summary,
            submission,
            events,
        })
    }

    /// Events of a run from sequence number `from` on: (seq, at, event).
    pub fn events_since(&self, run: &str, from: i64) -> Result<Vec<(i64, Millis, Event)>> {
        self.conn
            .rows(
                "SELECT seq, at, body FROM events WHERE run = ?1 AND seq >= ?2 ORDER BY seq",
                p![run, from],
            )?
            .iter()
            .map(|r| {
                let ev: Event = serde_json::from_str(&r.s(2)?)
                    .map_err(|e| Error::Corrupt(format!("run {run}: event: {e}")))?;
                Ok((r.i(0)?, r.i(1)?, ev))
            })
            .collect()
    }

    /// Runs, newest first, optionally filtered by phase.
    pub fn list(&self, phases: &[String], limit: usize) -> Result<Vec<RunSummary>> {
        let mut out = Vec::new();
        for r in self.conn.rows(
            "SELECT name, namespace, created_at, finished_at, phase, message, local_name FROM runs ORDER BY created_at DESC, rowid DESC",
            p![],
        )? {
            let r = summary_row(&r)?;
            if phases.is_empty() || phases.iter().any(|p| p.eq_ignore_ascii_case(&r.phase)) {
                out.push(r);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Deletes a run, its events, and its place in every lock queue.
    pub fn delete(&mut self, name: &str) -> Result<()> {
        self.conn.tx(|c| {
            if c.is_pg() {
                // tables without a foreign key to runs
                c.exec("DELETE FROM tasks WHERE run = ?1", p![name])?;
            }
            let n = c.exec("DELETE FROM runs WHERE name = ?1", p![name])?;
            if n == 0 {
                return Err(Error::RunNotFound(name.to_string()));
            }
            c.exec("DELETE FROM sync_requests WHERE run = ?1", p![name])?;
            Ok(())
        })
    }

    /// Queues a request for the process that drives `run`.
    pub fn push_control(&mut self, run: &str, ev: &Event) -> Result<()> {
        let body = serde_json::to_string(ev).map_err(|e| Error::Corrupt(e.to_string()))?;
        self.conn.exec(
            "INSERT INTO controls (run, body) VALUES (?1, ?2)",
            p![run, &body],
        )?;
        Ok(())
    }

    /// Takes the queued requests for `run`.
    pub fn take_controls(&mut self, run: &str) -> Result<Vec<Event>> {
        self.conn.tx(|c| {
            let mut out = Vec::new();
            for r in c.rows(
                "SELECT id, body FROM controls WHERE run = ?1 ORDER BY id",
                p![run],
            )? {
                c.exec("DELETE FROM controls WHERE id = ?1", p![r.i(0)?])?;
                if let Ok(ev) = serde_json::from_str(&r.s(1)?) {
                    out.push(ev);
                }
            }
            Ok(out)
        })
    }

    /// Records a metric sample of a run.
    pub fn record_metric(&mut self, run: &str, m: &Metric, at: Millis) -> Result<()> {
        let sample = serde_json::to_string(m).map_err(|e| Error::Corrupt(e.to_string()))?;
        self.conn.exec(
            "INSERT INTO metrics (run, at, sample) VALUES (?1, ?2, ?3)",
            p![run, at, &sample],
        )?;
        Ok(())
    }

    /// Every recorded sample, oldest first: (run, time, sample).
    pub fn metrics(&self) -> Result<Vec<(String, Millis, Metric)>> {
        self.samples(None)
    }

    /// The samples of the runs of `namespace`, oldest first.
    pub fn metrics_in(&self, namespace: &str) -> Result<Vec<(String, Millis, Metric)>> {
        self.samples(Some(namespace))
    }

    fn samples(&self, namespace: Option<&str>) -> Result<Vec<(String, Millis, Metric)>> {
        self.conn
            .rows(
                "SELECT m.run, m.at, m.sample FROM metrics m JOIN runs r ON r.name = m.run
                 WHERE CAST(?1 AS TEXT) IS NULL OR r.namespace = ?1 ORDER BY m.at, m.rowid",
                p![namespace],
            )?
            .iter()
            .map(|r| {
                let m =
                    serde_json::from_str(&r.s(2)?).map_err(|e| Error::Corrupt(e.to_string()))?;
                Ok((r.s(0)?, r.i(1)?, m))
            })
            .collect()
    }

    /// Marks a finished run for deletion at `at` (`ttlStrategy`).
    pub fn set_expiry(&mut self, run: &str, at: Millis) -> Result<()> {
        self.conn.exec(
            "UPDATE runs SET expires_at = ?2 WHERE name = ?1",
            p![run, at],
        )?;
        Ok(())
    }

    /// Runs whose time to live has passed.
    pub fn expired(&self, now: Millis) -> Result<Vec<String>> {
        self.conn
            .rows(
                "SELECT name FROM runs WHERE expires_at IS NOT NULL AND expires_at <= ?1",
                p![now],
            )?
            .iter()
            .map(|r| r.s(0))
            .collect()
    }

    pub fn has_controls(&self, run: &str) -> Result<bool> {
        Ok(self
            .conn
            .row("SELECT 1 FROM controls WHERE run = ?1 LIMIT 1", p![run])?
            .is_some())
    }
}

/// Advisory-lock keys (PostgreSQL): one per database-wide duty.
pub(crate) const LOCK_MIGRATE: i64 = 0x7765_6972_0001;
pub(crate) const LOCK_SYNC: i64 = 0x7765_6972_0002;

/// PostgreSQL's first migration creates schema version 9 at once.
const PG_BASE: i64 = 8;

pub(crate) fn summary_row(r: &Row) -> Result<RunSummary> {
    Ok(RunSummary {
        key: r.s(0)?,
        name: r.s(6)?,
        namespace: r.s(1)?,
        created_at: r.i(2)?,
        finished_at: r.oi(3)?,
        phase: r.s(4)?,
        message: r.s(5)?,
    })
}

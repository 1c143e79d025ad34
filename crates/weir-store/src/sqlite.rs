//! The SQLite metadata store (embedded default): WAL mode, one writer, short transactions.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use weir_core::run::{Event, Lock, Metric, Millis, Phase, Submission};

use crate::{Error, Result};

const SCHEMA_VERSION: i64 = 8;

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
];

/// What [`Store::try_acquire`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    /// The holder now holds every lock it asked for.
    Acquired,
    /// Still queued: why, for display (`Waiting for K lock. Lock status: 1/1`).
    Waiting(String),
    /// The request cannot be served (a database semaphore without a limit).
    Refused(String),
}

/// One lock's state, for `weir sync list`.
#[derive(Debug, Clone)]
pub struct LockState {
    pub key: String,
    pub limit: i64,
    pub holders: Vec<String>,
    pub waiting: Vec<String>,
}

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
    pub(crate) conn: Connection,
    path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct RunSummary {
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

impl Store {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path, durability: Durability) -> Result<Store> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(path)?;
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
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
        };
        if version < SCHEMA_VERSION {
            store.migrate()?;
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies missing migrations in one write transaction, so two processes opening a new
    /// database at once cannot both migrate it.
    fn migrate(&mut self) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let from: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if from == 0 {
            let tables: i64 = tx.query_row(
                "SELECT count(*) FROM sqlite_master WHERE type='table'",
                [],
                |r| r.get(0),
            )?;
            if tables > 0 {
                return Err(Error::Corrupt(format!(
                    "{} holds tables but no weir schema version; it is not a weir database",
                    self.path.display()
                )));
            }
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(from as usize) {
            tx.execute_batch(m)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records a new run. Fails if the name is taken.
    pub fn create_run(&mut self, sub: &Submission) -> Result<()> {
        let body = serde_json::to_string(sub).map_err(|e| Error::Corrupt(e.to_string()))?;
        let labels = serde_json::to_string(&sub.workflow.metadata.labels)
            .map_err(|e| Error::Corrupt(e.to_string()))?;
        let n = self.conn.execute(
            "INSERT INTO runs (name, namespace, created_at, phase, submission, labels) VALUES (?1, ?2, ?3, 'Running', ?4, ?5)
             ON CONFLICT(name) DO NOTHING",
            params![sub.name, sub.namespace, sub.created_at, body, labels],
        )?;
        if n == 0 {
            return Err(Error::RunExists(sub.name.clone()));
        }
        Ok(())
    }

    pub fn name_taken(&self, name: &str) -> Result<bool> {
        Ok(self
            .conn
            .query_row("SELECT 1 FROM runs WHERE name = ?1", [name], |_| Ok(()))
            .optional()?
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
        // Cached statements throughout, BEGIN and COMMIT included: this runs for every batch of
        // events, and parsing SQL was a visible part of the engine's own CPU per task.
        let c = &self.conn;
        c.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        let r = (|| -> Result<()> {
            let seq: i64 = c
                .prepare_cached("SELECT next_seq FROM runs WHERE name = ?1")?
                .query_row([run], |r| r.get(0))
                .optional()?
                .ok_or_else(|| Error::RunNotFound(run.to_string()))?;
            let mut stmt = c.prepare_cached(
                "INSERT INTO events (run, seq, at, body) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (i, (at, ev)) in events.iter().enumerate() {
                let body = serde_json::to_string(ev).map_err(|e| Error::Corrupt(e.to_string()))?;
                stmt.execute(params![run, seq + i as i64, at, body])?;
            }
            c.prepare_cached(
                "UPDATE runs SET next_seq = ?2, phase = ?3, message = ?4, finished_at = ?5 WHERE name = ?1",
            )?
            .execute(params![run, seq + events.len() as i64, phase.as_str(), message, finished_at])?;
            c.prepare_cached("COMMIT")?.execute([])?;
            Ok(())
        })();
        if r.is_err() && !c.is_autocommit() {
            let _ = c.execute_batch("ROLLBACK");
        }
        r
    }

    /// Finds a run by exact name, unique prefix, or `@latest`.
    pub fn resolve(&self, name: &str) -> Result<String> {
        if name == "@latest" {
            return self
                .conn
                .query_row(
                    "SELECT name FROM runs ORDER BY created_at DESC, rowid DESC LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()?
                .ok_or_else(|| Error::RunNotFound(name.to_string()));
        }
        if self.name_taken(name)? {
            return Ok(name.to_string());
        }
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM runs WHERE substr(name, 1, length(?1)) = ?1 LIMIT 5")?;
        let names: Vec<String> = stmt
            .query_map([name], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        match names.len() {
            0 => Err(Error::RunNotFound(name.to_string())),
            1 => Ok(names.into_iter().next().unwrap_or_default()),
            _ => Err(Error::Ambiguous(name.to_string(), names.join(", "))),
        }
    }

    pub fn load(&self, name: &str) -> Result<RunRecord> {
        let (summary, body): (RunSummary, String) = self
            .conn
            .query_row(
                "SELECT name, namespace, created_at, finished_at, phase, message, submission FROM runs WHERE name = ?1",
                [name],
                |r| Ok((summary_row(r)?, r.get(6)?)),
            )
            .optional()?
            .ok_or_else(|| Error::RunNotFound(name.to_string()))?;
        let submission: Submission = serde_json::from_str(&body)
            .map_err(|e| Error::Corrupt(format!("run {name}: submission: {e}")))?;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT at, body FROM events WHERE run = ?1 ORDER BY seq")?;
        let rows = stmt.query_map([name], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut events = Vec::new();
        for row in rows {
            let (at, body) = row?;
            let ev: Event = serde_json::from_str(&body)
                .map_err(|e| Error::Corrupt(format!("run {name}: event: {e}")))?;
            events.push((at, ev));
        }
        Ok(RunRecord {
            summary,
            submission,
            events,
        })
    }

    /// Runs, newest first, optionally filtered by phase.
    pub fn list(&self, phases: &[String], limit: usize) -> Result<Vec<RunSummary>> {
        let mut stmt = self.conn.prepare(
            "SELECT name, namespace, created_at, finished_at, phase, message FROM runs ORDER BY created_at DESC, rowid DESC",
        )?;
        let rows = stmt.query_map([], summary_row)?;
        let mut out = Vec::new();
        for r in rows {
            let r = r?;
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
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let n = tx.execute("DELETE FROM runs WHERE name = ?1", [name])?;
        if n == 0 {
            return Err(Error::RunNotFound(name.to_string()));
        }
        tx.execute("DELETE FROM sync_requests WHERE run = ?1", [name])?;
        tx.commit()?;
        Ok(())
    }

    /// Queues a request for the process that drives `run`.
    pub fn push_control(&mut self, run: &str, ev: &Event) -> Result<()> {
        let body = serde_json::to_string(ev).map_err(|e| Error::Corrupt(e.to_string()))?;
        self.conn.execute(
            "INSERT INTO controls (run, body) VALUES (?1, ?2)",
            params![run, body],
        )?;
        Ok(())
    }

    /// Takes the queued requests for `run`.
    pub fn take_controls(&mut self, run: &str) -> Result<Vec<Event>> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut out = Vec::new();
        {
            let mut stmt =
                tx.prepare_cached("SELECT id, body FROM controls WHERE run = ?1 ORDER BY id")?;
            let rows: Vec<(i64, String)> = stmt
                .query_map([run], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            for (id, body) in rows {
                tx.execute("DELETE FROM controls WHERE id = ?1", [id])?;
                if let Ok(ev) = serde_json::from_str(&body) {
                    out.push(ev);
                }
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// A memoized entry younger than `max_age_ms` (any age if `None`).
    /// A memoized entry's outputs and the run that stored them, if fresh enough.
    pub fn memo_entry(
        &self,
        cache: &str,
        key: &str,
        max_age_ms: Option<i64>,
        now: Millis,
    ) -> Result<Option<(String, String)>> {
        let row: Option<(String, i64, String)> = self
            .conn
            .query_row(
                "SELECT outputs, created_at, run FROM memo WHERE cache = ?1 AND key = ?2",
                params![cache, key],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        Ok(row
            .filter(|(_, at, _)| max_age_ms.is_none_or(|m| now - at <= m))
            .map(|(o, _, run)| (o, run)))
    }

    pub fn memo_put(
        &mut self,
        cache: &str,
        key: &str,
        outputs: &str,
        now: Millis,
        run: &str,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO memo (cache, key, outputs, created_at, run) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(cache, key) DO UPDATE SET outputs = excluded.outputs, created_at = excluded.created_at, run = excluded.run",
            params![cache, key, outputs, now, run],
        )?;
        Ok(())
    }

    /// Memoized entries: (cache, key, created_at, run).
    pub fn memo_list(&self) -> Result<Vec<(String, String, Millis, String)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT cache, key, created_at, run FROM memo ORDER BY cache, key")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Deletes entries of `cache` (all of them, or one key). Returns how many.
    pub fn memo_delete(&mut self, cache: &str, key: Option<&str>) -> Result<usize> {
        Ok(match key {
            Some(k) => self.conn.execute(
                "DELETE FROM memo WHERE cache = ?1 AND key = ?2",
                params![cache, k],
            )?,
            None => self
                .conn
                .execute("DELETE FROM memo WHERE cache = ?1", params![cache])?,
        })
    }

    /// Asks for every lock in `locks` at once for `holder` (a node id, or a run name for a
    /// workflow-level lock), queueing the request if it is new. Granted only when the holder is
    /// within the free places of every lock's queue (priority first, then arrival), so a holder
    /// never keeps part of what it needs, and a later request cannot pass an earlier one.
    pub fn try_acquire(
        &mut self,
        run: &str,
        holder: &str,
        locks: &[Lock],
        priority: i64,
    ) -> Result<Acquire> {
        let c = &self.conn;
        c.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        let r = (|| -> Result<Acquire> {
            let mut waiting = Vec::new();
            for lock in locks {
                let limit: i64 = match lock.limit {
                    Some(l) => i64::from(l),
                    None => match c
                        .prepare_cached("SELECT lim FROM sync_limits WHERE key = ?1")?
                        .query_row([&lock.key], |r| r.get(0))
                        .optional()?
                    {
                        Some(l) => l,
                        None => {
                            return Ok(Acquire::Refused(format!(
                                "database semaphore `{}` has no limit; set one with `weir sync limit {} N`",
                                lock.key, lock.key
                            )));
                        }
                    },
                };
                c.prepare_cached(
                    "INSERT INTO sync_requests (key, holder, run, priority, lim) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(key, holder) DO UPDATE SET lim = excluded.lim",
                )?
                .execute(params![lock.key, holder, run, priority, limit])?;
                let (held, mine): (i64, i64) = c
                    .prepare_cached(
                        "SELECT coalesce(sum(held), 0), max(held) FILTER (WHERE holder = ?2) FROM sync_requests WHERE key = ?1",
                    )?
                    .query_row(params![lock.key, holder], |r| {
                        Ok((r.get(0)?, r.get::<_, Option<i64>>(1)?.unwrap_or(0)))
                    })?;
                if mine == 1 {
                    continue;
                }
                // waiting requests ahead of this one
                let ahead: i64 = c
                    .prepare_cached(
                        "SELECT count(*) FROM sync_requests o, sync_requests me
                         WHERE o.key = ?1 AND me.key = ?1 AND me.holder = ?2 AND o.held = 0
                           AND (o.priority > me.priority OR (o.priority = me.priority AND o.rowid < me.rowid))",
                    )?
                    .query_row(params![lock.key, holder], |r| r.get(0))?;
                if held + ahead >= limit {
                    waiting.push(format!(
                        "Waiting for {} lock. Lock status: {held}/{limit}",
                        lock.key
                    ));
                }
            }
            if !waiting.is_empty() {
                return Ok(Acquire::Waiting(waiting.join("; ")));
            }
            c.prepare_cached("UPDATE sync_requests SET held = 1 WHERE holder = ?1")?
                .execute([holder])?;
            Ok(Acquire::Acquired)
        })();
        match &r {
            Ok(_) => {
                c.prepare_cached("COMMIT")?.execute([])?;
            }
            Err(_) => {
                if !c.is_autocommit() {
                    let _ = c.execute_batch("ROLLBACK");
                }
            }
        }
        r
    }

    /// Records a metric sample of a run.
    pub fn record_metric(&mut self, run: &str, m: &Metric, at: Millis) -> Result<()> {
        let sample = serde_json::to_string(m).map_err(|e| Error::Corrupt(e.to_string()))?;
        self.conn
            .prepare_cached("INSERT INTO metrics (run, at, sample) VALUES (?1, ?2, ?3)")?
            .execute(params![run, at, sample])?;
        Ok(())
    }

    /// Every recorded sample, oldest first: (run, time, sample).
    pub fn metrics(&self) -> Result<Vec<(String, Millis, Metric)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT run, at, sample FROM metrics ORDER BY at, rowid")?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Millis>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(run, at, s)| {
                let m = serde_json::from_str(&s).map_err(|e| Error::Corrupt(e.to_string()))?;
                Ok((run, at, m))
            })
            .collect()
    }

    /// Marks a finished run for deletion at `at` (`ttlStrategy`).
    pub fn set_expiry(&mut self, run: &str, at: Millis) -> Result<()> {
        self.conn.execute(
            "UPDATE runs SET expires_at = ?2 WHERE name = ?1",
            params![run, at],
        )?;
        Ok(())
    }

    /// Runs whose time to live has passed.
    pub fn expired(&self, now: Millis) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT name FROM runs WHERE expires_at IS NOT NULL AND expires_at <= ?1",
        )?;
        let names = stmt
            .query_map([now], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(names)
    }

    /// Gives back what `holder` holds and withdraws what it waits for.
    pub fn release(&mut self, holder: &str) -> Result<()> {
        self.conn
            .prepare_cached("DELETE FROM sync_requests WHERE holder = ?1")?
            .execute([holder])?;
        Ok(())
    }

    /// Gives back every lock of a run (it finished, or is deleted).
    pub fn release_run(&mut self, run: &str) -> Result<()> {
        self.conn
            .prepare_cached("DELETE FROM sync_requests WHERE run = ?1")?
            .execute([run])?;
        Ok(())
    }

    /// Sets (or with `None` removes) the limit of a database semaphore.
    pub fn set_sync_limit(&mut self, key: &str, limit: Option<u32>) -> Result<()> {
        match limit {
            Some(l) => self.conn.execute(
                "INSERT INTO sync_limits (key, lim) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET lim = excluded.lim",
                params![key, l],
            )?,
            None => self
                .conn
                .execute("DELETE FROM sync_limits WHERE key = ?1", [key])?,
        };
        Ok(())
    }

    /// Every lock with a holder, a waiter or a database limit.
    pub fn sync_list(&self) -> Result<Vec<LockState>> {
        let mut out: std::collections::BTreeMap<String, LockState> = Default::default();
        let mut stmt = self.conn.prepare("SELECT key, lim FROM sync_limits")?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (key, limit) = row?;
            out.insert(
                key.clone(),
                LockState {
                    key,
                    limit,
                    holders: Vec::new(),
                    waiting: Vec::new(),
                },
            );
        }
        let mut stmt = self.conn.prepare(
            "SELECT key, holder, lim, held FROM sync_requests ORDER BY key, priority DESC, rowid",
        )?;
        for row in stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })? {
            let (key, holder, limit, held) = row?;
            let e = out.entry(key.clone()).or_insert(LockState {
                key,
                limit,
                holders: Vec::new(),
                waiting: Vec::new(),
            });
            if held == 1 {
                e.holders.push(holder);
            } else {
                e.waiting.push(holder);
            }
        }
        Ok(out.into_values().collect())
    }

    pub fn has_controls(&self, run: &str) -> Result<bool> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM controls WHERE run = ?1 LIMIT 1",
                [run],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }
}

pub(crate) fn summary_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunSummary> {
    Ok(RunSummary {
        name: r.get(0)?,
        namespace: r.get(1)?,
        created_at: r.get(2)?,
        finished_at: r.get(3)?,
        phase: r.get(4)?,
        message: r.get(5)?,
    })
}

//! The queues and limits of `synchronization` locks (mutexes and semaphores), shared by every
//! run of the database.

use weir_core::run::Lock;

use crate::db::p;
use crate::store::{LOCK_SYNC, Store};
use crate::{Error, Result};

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

impl Store {
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
        self.conn.tx(|c| {
            if c.is_pg() {
                // one lock-queue decision at a time across the database, as SQLite's single writer gives
                c.exec("SELECT pg_advisory_xact_lock(?1)", p![LOCK_SYNC])?;
            }
            let mut waiting = Vec::new();
            for lock in locks {
                let limit: i64 = match lock.limit {
                    Some(l) => i64::from(l),
                    None => match c.row(
                        "SELECT lim FROM sync_limits WHERE key = ?1",
                        p![&lock.key],
                    )? {
                        Some(r) => r.i(0)?,
                        None => {
                            return Ok(Acquire::Refused(format!(
                                "database semaphore `{}` has no limit; set one with `weir sync limit {} N`",
                                lock.key, lock.key
                            )));
                        }
                    },
                };
                c.exec(
                    "INSERT INTO sync_requests (key, holder, run, priority, lim) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(key, holder) DO UPDATE SET lim = excluded.lim",
                    p![&lock.key, holder, run, priority, limit],
                )?;
                let r = c
                    .row(
                        "SELECT CAST(coalesce(sum(held), 0) AS BIGINT), max(held) FILTER (WHERE holder = ?2) FROM sync_requests WHERE key = ?1",
                        p![&lock.key, holder],
                    )?
                    .ok_or_else(|| Error::Corrupt("no aggregate row".into()))?;
                let (held, mine) = (r.i(0)?, r.oi(1)?.unwrap_or(0));
                if mine == 1 {
                    continue;
                }
                // waiting requests ahead of this one
                let ahead = c
                    .row(
                        "SELECT count(*) FROM sync_requests o, sync_requests me
                         WHERE o.key = ?1 AND me.key = ?1 AND me.holder = ?2 AND o.held = 0
                           AND (o.priority > me.priority OR (o.priority = me.priority AND o.rowid < me.rowid))",
                        p![&lock.key, holder],
                    )?
                    .map_or(Ok(0), |r| r.i(0))?;
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
            c.exec(
                "UPDATE sync_requests SET held = 1 WHERE holder = ?1",
                p![holder],
            )?;
            Ok(Acquire::Acquired)
        })
    }

    /// Gives back what `holder` holds and withdraws what it waits for.
    pub fn release(&mut self, holder: &str) -> Result<()> {
        self.conn
            .exec("DELETE FROM sync_requests WHERE holder = ?1", p![holder])?;
        Ok(())
    }

    /// Gives back every lock of a run (it finished, or is deleted).
    pub fn release_run(&mut self, run: &str) -> Result<()> {
        self.conn
            .exec("DELETE FROM sync_requests WHERE run = ?1", p![run])?;
        Ok(())
    }

    /// Sets (or with `None` removes) the limit of a database semaphore.
    pub fn set_sync_limit(&mut self, key: &str, limit: Option<u32>) -> Result<()> {
        match limit {
            Some(l) => self.conn.exec(
                "INSERT INTO sync_limits (key, lim) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET lim = excluded.lim",
                p![key, l],
            )?,
            None => self
                .conn
                .exec("DELETE FROM sync_limits WHERE key = ?1", p![key])?,
        };
        Ok(())
    }

    /// Every lock with a holder, a waiter or a database limit.
    pub fn sync_list(&self) -> Result<Vec<LockState>> {
        let mut out: std::collections::BTreeMap<String, LockState> = Default::default();
        for r in self.conn.rows("SELECT key, lim FROM sync_limits", p![])? {
            let key = r.s(0)?;
            out.insert(
                key.clone(),
                LockState {
                    key,
                    limit: r.i(1)?,
                    holders: Vec::new(),
                    waiting: Vec::new(),
                },
            );
        }
        for r in self.conn.rows(
            "SELECT key, holder, lim, held FROM sync_requests ORDER BY key, priority DESC, rowid",
            p![],
        )? {
            let key = r.s(0)?;
            let e = out.entry(key.clone()).or_insert(LockState {
                key,
                limit: r.i(2)?,
                holders: Vec::new(),
                waiting: Vec::new(),
            });
            if r.i(3)? == 1 {
                e.holders.push(r.s(1)?);
            } else {
                e.waiting.push(r.s(1)?);
            }
        }
        Ok(out.into_values().collect())
    }
}

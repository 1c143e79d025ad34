//! Scale-out on PostgreSQL: run ownership (which process drives a run) and the task queue
//! (which worker runs a task), both held by leases on the database's clock.
//!
//! A queued task is a row of `tasks`. Workers claim rows in batches with `FOR UPDATE SKIP
//! LOCKED`; each claim increments the row's `epoch`, and every later write of the worker names
//! that epoch, so once a lease has expired and the reaper has settled the task, the old
//! worker's result is refused (fencing). Runs are owned the same way: `runs.owner_epoch` fences
//! the appends of a driver whose run another process took over.

use weir_core::run::Millis;

use crate::db::{Conn, P, Row, V, p};
use crate::{Error, Result, Store};

/// The database's clock in milliseconds (one clock for every process, whatever their hosts').
const NOW_MS: &str = "CAST(extract(epoch FROM clock_timestamp()) * 1000 AS BIGINT)";

/// A task to queue.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub run: String,
    pub node: String,
    pub namespace: String,
    pub priority: i64,
    /// The serialized task spec.
    pub spec: String,
    /// `nodeSelector` as a JSON object: the labels a worker must have.
    pub selector: String,
    pub cpu_milli: i64,
    pub memory: i64,
    pub gpu: i64,
}

/// A task a worker holds.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub epoch: i64,
    pub run: String,
    pub node: String,
    pub spec: String,
    pub cpu_milli: i64,
    pub memory: i64,
    pub gpu: i64,
}

/// What a worker offers when it claims: its labels and its free resources.
#[derive(Debug, Clone, Default)]
pub struct Offer {
    pub labels: std::collections::BTreeMap<String, String>,
    pub cpu_milli: i64,
    pub memory: i64,
    pub gpu: i64,
    pub max: usize,
}

/// A change of a run's task for the process driving the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskUpdate {
    Started {
        node: String,
        pid: Option<u32>,
    },
    /// The serialized result.
    Done {
        node: String,
        result: String,
        /// Its worker kept its log in the store ([`Store::task_log`]).
        logged: bool,
    },
}

/// Where a reader of task changes is ([`Store::task_updates`]): the changes of transactions
/// before it were read. The default reads everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Since(i64);

/// A row of (node, state, pid, result, logged) from column `at` on.
fn task_update(r: &Row, at: usize) -> Result<TaskUpdate> {
    let node = r.s(at)?;
    Ok(if r.s(at + 1)? == "done" {
        TaskUpdate::Done {
            node,
            result: r.os(at + 3)?.unwrap_or_default(),
            logged: r.i(at + 4)? != 0,
        }
    } else {
        let pid = r
            .oi(at + 2)?
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0);
        TaskUpdate::Started { node, pid }
    })
}

/// What a connection listens for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Queued,
    Done,
}

/// What became of a task whose worker was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaped {
    /// Queued again, as the same attempt (the first time).
    Requeued,
    /// Settled with the lost-worker error (lost twice).
    Settled,
}

/// Per-namespace limits honoured when workers claim (`None`: no limit).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quota {
    pub namespace: String,
    pub max_runs: Option<i64>,
    pub max_tasks: Option<i64>,
    pub max_gpu: Option<i64>,
}

impl Store {
    fn need_pg(&self, what: &str) -> Result<&Conn> {
        if self.conn.is_pg() {
            Ok(&self.conn)
        } else {
            Err(Error::Unsupported(format!(
                "{what} needs PostgreSQL (--db postgres://…); with SQLite one process runs everything"
            )))
        }
    }

    /// Takes ownership of a run nobody holds (or whose owner's lease expired);
    /// returns the new epoch.
    pub fn claim_run(&self, run: &str, owner: &str, lease_ms: i64) -> Result<Option<i64>> {
        let c = self.need_pg("run ownership")?;
        c.row(
            &format!(
                "UPDATE runs SET owner = ?2, owner_epoch = owner_epoch + 1, owner_until = {NOW_MS} + ?3
                 WHERE name = ?1 AND (owner IS NULL OR owner = ?2 OR owner_until < {NOW_MS})
                 RETURNING owner_epoch"
            ),
            p![run, owner, lease_ms],
        )?
        .map(|r| r.i(0))
        .transpose()
    }

    /// Unfinished runs whose owner's lease expired (or that have none), oldest first, claimed
    /// for `owner`: what a server takes over when another one died.
    pub fn claim_orphans(
        &self,
        owner: &str,
        lease_ms: i64,
        max: i64,
    ) -> Result<Vec<(String, i64)>> {
        let c = self.need_pg("run ownership")?;
        c.rows(
            &format!(
                "UPDATE runs SET owner = ?1, owner_epoch = owner_epoch + 1, owner_until = {NOW_MS} + ?2
                 WHERE name IN (SELECT name FROM runs WHERE finished_at IS NULL
                                  AND (owner IS NULL OR owner_until < {NOW_MS})
                                ORDER BY priority DESC, created_at LIMIT ?3 FOR UPDATE SKIP LOCKED)
                 RETURNING name, owner_epoch"
            ),
            p![owner, lease_ms, max],
        )?
        .iter()
        .map(|r| Ok((r.s(0)?, r.i(1)?)))
        .collect()
    }

    /// Renews the leases of these runs only (those a live driver of `owner` holds); returns how
    /// many it still holds.
    pub fn renew_held(&self, owner: &str, runs: &[&str], lease_ms: i64) -> Result<usize> {
        let c = self.need_pg("run ownership")?;
        if runs.is_empty() {
            return Ok(0);
        }
        c.exec(
            &format!(
                "UPDATE runs SET owner_until = {NOW_MS} + ?2 WHERE owner = ?1 AND name = ANY(?3) AND finished_at IS NULL"
            ),
            &[owner.into(), lease_ms.into(), P::TA(runs)],
        )
    }

    /// Removes what is left of a finished run's tasks (results no one will record, tasks being
    /// stopped): a worker's later report about them is refused.
    pub fn drop_tasks(&self, run: &str) -> Result<usize> {
        let c = self.need_pg("the task queue")?;
        c.exec("DELETE FROM tasks WHERE run = ?1", p![run])
    }

    /// The owner and epoch of a run, if a process holds it and its lease has not expired.
    pub fn run_owner(&self, run: &str) -> Result<Option<(String, i64)>> {
        let c = self.need_pg("run ownership")?;
        let Some(r) = c.row(
            &format!(
                "SELECT owner, owner_epoch FROM runs WHERE name = ?1 AND owner IS NOT NULL AND owner_until >= {NOW_MS}"
            ),
            p![run],
        )?
        else {
            return Ok(None);
        };
        Ok(Some((r.s(0)?, r.i(1)?)))
    }

    /// Queues tasks (again after a restart: a task already queued for the node stays as it is).
    pub fn enqueue(&self, tasks: &[NewTask]) -> Result<()> {
        let c = self.need_pg("the task queue")?;
        if tasks.is_empty() {
            return Ok(());
        }
        let col = |f: fn(&NewTask) -> &str| tasks.iter().map(f).collect::<Vec<&str>>();
        let int = |f: fn(&NewTask) -> i64| tasks.iter().map(f).collect::<Vec<i64>>();
        let (runs, nodes, nss, specs, sels) = (
            col(|t| &t.run),
            col(|t| &t.node),
            col(|t| &t.namespace),
            col(|t| &t.spec),
            col(|t| &t.selector),
        );
        let (prio, cpu, mem, gpu) = (
            int(|t| t.priority),
            int(|t| t.cpu_milli),
            int(|t| t.memory),
            int(|t| t.gpu),
        );
        c.tx(|c| {
            c.exec(
                "INSERT INTO tasks (run, node, namespace, spec, selector, priority, cpu_milli, memory, gpu)
                 SELECT * FROM unnest(?1::text[], ?2::text[], ?3::text[], ?4::text[], ?5::text[],
                                      ?6::bigint[], ?7::bigint[], ?8::bigint[], ?9::bigint[])
                 ON CONFLICT (run, node) DO NOTHING",
                &[
                    P::TA(&runs),
                    P::TA(&nodes),
                    P::TA(&nss),
                    P::TA(&specs),
                    P::TA(&sels),
                    P::IA(&prio),
                    P::IA(&cpu),
                    P::IA(&mem),
                    P::IA(&gpu),
                ],
            )?;
            c.exec("SELECT pg_notify('weir_queued', '')", p![])?;
            Ok(())
        })
    }

    /// Claims up to `offer.max` queued tasks that fit the worker (its labels cover the task's
    /// node selector, its free resources its requests, its namespace's quotas allow), highest
    /// priority first, then oldest; each for `lease_ms`.
    pub fn claim(&self, worker: &str, offer: &Offer, lease_ms: i64) -> Result<Vec<Claimed>> {
        let c = self.need_pg("the task queue")?;
        if offer.max == 0 {
            return Ok(Vec::new());
        }
        c.tx(|c| {
            // what cannot fit this worker is left for others in the query itself, so only the
            // rows it may take are locked
            let labels = serde_json::to_string(&offer.labels).unwrap_or_else(|_| "{}".into());
            let quotas_exist = c.row("SELECT 1 FROM quotas LIMIT 1", p![])?.is_some();
            let candidates = if quotas_exist {
                // claims that count against quotas are taken one at a time, and a namespace at
                // its task quota does not hold up the others
                c.exec("SELECT pg_advisory_xact_lock(?1)", p![LOCK_QUOTA])?;
                c.rows(
                    "SELECT id, namespace, selector, cpu_milli, memory, gpu FROM tasks t
                     WHERE state = 'queued' AND cpu_milli <= ?2 AND memory <= ?3 AND gpu <= ?4
                       AND (selector = '{}' OR CAST(selector AS jsonb) <@ CAST(CAST(?5 AS TEXT) AS jsonb))
                       AND NOT EXISTS (SELECT 1 FROM quotas q WHERE q.namespace = t.namespace AND q.max_tasks IS NOT NULL
                                         AND q.max_tasks <= (SELECT count(*) FROM tasks r WHERE r.namespace = q.namespace AND r.state = 'running'))
                     ORDER BY priority DESC, id LIMIT ?1 FOR UPDATE SKIP LOCKED",
                    p![offer.max as i64, offer.cpu_milli, offer.memory, offer.gpu, labels.as_str()],
                )?
            } else {
                c.rows(
                    "SELECT id, namespace, selector, cpu_milli, memory, gpu FROM tasks
                     WHERE state = 'queued' AND cpu_milli <= ?2 AND memory <= ?3 AND gpu <= ?4
                       AND (selector = '{}' OR CAST(selector AS jsonb) <@ CAST(CAST(?5 AS TEXT) AS jsonb))
                     ORDER BY priority DESC, id LIMIT ?1 FOR UPDATE SKIP LOCKED",
                    p![offer.max as i64, offer.cpu_milli, offer.memory, offer.gpu, labels.as_str()],
                )?
            };
            if candidates.is_empty() {
                return Ok(Vec::new());
            }
            // namespaces' quotas against what their tasks hold now
            let mut quotas: std::collections::HashMap<String, (Quota, i64, i64)> =
                Default::default();
            for r in c.rows(
                "SELECT q.namespace, q.max_runs, q.max_tasks, q.max_gpu,
                        (SELECT count(*) FROM tasks t WHERE t.namespace = q.namespace AND t.state = 'running'),
                        (SELECT CAST(coalesce(sum(gpu), 0) AS BIGINT) FROM tasks t WHERE t.namespace = q.namespace AND t.state = 'running')
                 FROM quotas q",
                p![],
            )? {
                let q = Quota {
                    namespace: r.s(0)?,
                    max_runs: r.oi(1)?,
                    max_tasks: r.oi(2)?,
                    max_gpu: r.oi(3)?,
                };
                quotas.insert(q.namespace.clone(), (q, r.i(4)?, r.i(5)?));
            }
            let (mut cpu, mut mem, mut gpu) = (offer.cpu_milli, offer.memory, offer.gpu);
            let mut take = Vec::new();
            for r in &candidates {
                if take.len() >= offer.max {
                    break;
                }
                let (id, ns, sel) = (r.i(0)?, r.s(1)?, r.s(2)?);
                let (tc, tm, tg) = (r.i(3)?, r.i(4)?, r.i(5)?);
                let selector: std::collections::BTreeMap<String, String> =
                    serde_json::from_str(&sel).unwrap_or_default();
                if !selector
                    .iter()
                    .all(|(k, v)| offer.labels.get(k) == Some(v))
                {
                    continue;
                }
                if tc > cpu || tm > mem || tg > gpu {
                    continue;
                }
                if let Some((q, tasks, gpus)) = quotas.get_mut(&ns) {
                    if q.max_tasks.is_some_and(|m| *tasks >= m)
                        || q.max_gpu.is_some_and(|m| *gpus + tg > m)
                    {
                        continue;
                    }
                    *tasks += 1;
                    *gpus += tg;
                }
                cpu -= tc;
                mem -= tm;
                gpu -= tg;
                take.push(id);
            }
            if take.is_empty() {
                return Ok(Vec::new());
            }
            let mut claimed = c.rows(
                "UPDATE tasks SET state = 'running', worker = ?2, epoch = epoch + 1, pid = NULL, changed = NULL,
                        lease_until = clock_timestamp() + CAST(?3 AS BIGINT) * interval '1 millisecond'
                 WHERE id = ANY(?1)
                 RETURNING id, epoch, run, node, spec, cpu_milli, memory, gpu",
                &[P::IA(&take), worker.into(), lease_ms.into()],
            )?
            .iter()
            .map(|r| {
                Ok(Claimed {
                    id: r.i(0)?,
                    epoch: r.i(1)?,
                    run: r.s(2)?,
                    node: r.s(3)?,
                    spec: r.s(4)?,
                    cpu_milli: r.i(5)?,
                    memory: r.i(6)?,
                    gpu: r.i(7)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
            // in the order chosen: priority, then age
            claimed.sort_by_key(|t| take.iter().position(|id| *id == t.id));
            Ok(claimed)
        })
    }

    /// [`Store::mark_started`] and [`Store::complete`] in one transaction: what a worker
    /// reports each time round its loop.
    ///
    /// `logs` (beside `done`, when given) are the finished tasks' logs, kept for the runs'
    /// servers when the worker's files are not theirs ([`Store::task_log`]); only those of
    /// accepted results are kept.
    pub fn report(
        &self,
        started: &[(i64, i64, Option<u32>)],
        done: &[(i64, i64, String)],
        logs: &[Option<(&str, &str, &str)>],
    ) -> Result<Vec<bool>> {
        self.need_pg("the task queue")?;
        if started.is_empty() && done.is_empty() {
            return Ok(Vec::new());
        }
        // a task in both lists is written once, finished
        let pid_of: std::collections::HashMap<i64, i64> = started
            .iter()
            .map(|s| (s.0, s.2.map_or(0, i64::from)))
            .collect();
        let finishing: std::collections::HashSet<i64> = done.iter().map(|d| d.0).collect();
        let only_started: Vec<(i64, i64, Option<u32>)> = started
            .iter()
            .filter(|s| !finishing.contains(&s.0))
            .copied()
            .collect();
        let pids: Vec<i64> = done
            .iter()
            .map(|d| pid_of.get(&d.0).copied().unwrap_or(0))
            .collect();
        self.conn.tx(|c| {
            self.mark_started_in(&only_started)?;
            let accepted = self.complete_in(done, &pids)?;
            for (log, ok) in logs.iter().zip(&accepted) {
                if let (Some((run, node, body)), true) = (log, ok) {
                    c.exec(
                        "INSERT INTO task_logs (run, node, body) VALUES (?1, ?2, ?3)
                         ON CONFLICT (run, node) DO UPDATE SET body = excluded.body",
                        p![*run, *node, *body],
                    )?;
                }
            }
            c.exec("SELECT pg_notify('weir_done', '')", p![])?;
            Ok(accepted)
        })
    }

    /// Records that claimed tasks started (id, epoch, pid); a stale epoch changes nothing.
    pub fn mark_started(&self, started: &[(i64, i64, Option<u32>)]) -> Result<()> {
        self.report(started, &[], &[]).map(drop)
    }

    /// Completes claimed tasks (id, epoch, serialized result) in one transaction; returns, for
    /// each, whether it was accepted. A result is refused when the task is no longer this
    /// claim's: its lease expired and the task was settled, or claimed again (fencing).
    pub fn complete(&self, done: &[(i64, i64, String)]) -> Result<Vec<bool>> {
        self.report(&[], done, &[])
    }

    /// A finished task's log as its worker reported it.
    pub fn task_log(&self, run: &str, node: &str) -> Result<Option<String>> {
        let c = self.need_pg("task logs")?;
        c.row(
            "SELECT body FROM task_logs WHERE run = ?1 AND node = ?2",
            p![run, node],
        )?
        .map(|r| r.s(0))
        .transpose()
    }

    fn mark_started_in(&self, started: &[(i64, i64, Option<u32>)]) -> Result<()> {
        if started.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = started.iter().map(|s| s.0).collect();
        let epochs: Vec<i64> = started.iter().map(|s| s.1).collect();
        let pids: Vec<i64> = started.iter().map(|s| s.2.map_or(0, i64::from)).collect();
        self.conn.exec(
            "UPDATE tasks SET pid = u.pid, changed = pg_current_xact_id()
             FROM unnest(?1::bigint[], ?2::bigint[], ?3::bigint[]) AS u(id, epoch, pid)
             WHERE tasks.id = u.id AND tasks.epoch = u.epoch AND tasks.state = 'running'",
            &[P::IA(&ids), P::IA(&epochs), P::IA(&pids)],
        )?;
        Ok(())
    }

    /// A task that started and finished since the last report is written once: its pid comes
    /// with its result.
    fn complete_in(&self, done: &[(i64, i64, String)], pids: &[i64]) -> Result<Vec<bool>> {
        if done.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = done.iter().map(|d| d.0).collect();
        let epochs: Vec<i64> = done.iter().map(|d| d.1).collect();
        let results: Vec<&str> = done.iter().map(|d| d.2.as_str()).collect();
        let accepted: std::collections::HashSet<i64> = self
            .conn
            .rows(
                "UPDATE tasks SET state = 'done', result = u.result, lease_until = NULL,
                        pid = coalesce(nullif(u.pid, 0), tasks.pid), changed = pg_current_xact_id()
                 FROM unnest(?1::bigint[], ?2::bigint[], ?3::text[], ?4::bigint[]) AS u(id, epoch, result, pid)
                 WHERE tasks.id = u.id AND tasks.epoch = u.epoch AND tasks.state = 'running'
                 RETURNING tasks.id",
                &[P::IA(&ids), P::IA(&epochs), P::TA(&results), P::IA(pids)],
            )?
            .iter()
            .map(|r| r.i(0))
            .collect::<Result<_>>()?;
        Ok(ids.iter().map(|i| accepted.contains(i)).collect())
    }

    /// Renews the leases of `worker`'s tasks and its own `seen` time; returns the tasks it
    /// still holds (id, epoch, cancel requested). A task missing from the answer is no longer
    /// the worker's (its lease expired): the worker stops it.
    pub fn heartbeat(
        &self,
        worker: &str,
        labels: &str,
        slots: &str,
        lease_ms: i64,
    ) -> Result<Vec<(i64, i64, bool)>> {
        let c = self.need_pg("the task queue")?;
        c.tx(|c| {
            c.exec(
                "INSERT INTO workers (id, labels, slots, seen) VALUES (?1, ?2, ?3, clock_timestamp())
                 ON CONFLICT (id) DO UPDATE SET labels = excluded.labels, slots = excluded.slots, seen = excluded.seen",
                p![worker, labels, slots],
            )?;
            // Every multi-row write but the worker's own reports skips locked rows (claims,
            // the reaper, the drivers' reads, this renewal), so no two of them ever wait for
            // each other in a cycle. A row skipped here is being reported by its worker now.
            c.exec(
                "UPDATE tasks SET lease_until = clock_timestamp() + CAST(?2 AS BIGINT) * interval '1 millisecond'
                 WHERE id IN (SELECT id FROM tasks WHERE worker = ?1 AND state = 'running'
                              ORDER BY id FOR UPDATE SKIP LOCKED)",
                p![worker, lease_ms],
            )?;
            c.rows(
                "SELECT id, epoch, cancel FROM tasks WHERE worker = ?1",
                p![worker],
            )?
            .iter()
            .map(|r| Ok((r.i(0)?, r.i(1)?, r.i(2)? != 0)))
            .collect()
        })
    }

    /// Deals with the running tasks whose lease expired (their worker was lost), bumping their
    /// epoch so the old worker's late result is refused: each is queued again once, as the same
    /// attempt; lost a second time, it is settled with `result(worker)` (a lost-worker error).
    /// Only one process does this at a time (an advisory lock); returns (run, node, what was
    /// done) of each task.
    pub fn reap_expired(
        &self,
        result: &dyn Fn(&str) -> String,
    ) -> Result<Vec<(String, String, Reaped)>> {
        let c = self.need_pg("the task queue")?;
        c.tx(|c| {
            let got = c
                .row("SELECT pg_try_advisory_xact_lock(?1)", p![LOCK_REAPER])?
                .map_or(Ok(0), |r| r.i(0))?;
            if got == 0 {
                return Ok(Vec::new());
            }
            let expired = c.rows(
                "SELECT id, run, node, coalesce(worker, ''), CAST(CASE WHEN requeued THEN 1 ELSE 0 END AS BIGINT) FROM tasks
                 WHERE state = 'running' AND lease_until < clock_timestamp() ORDER BY id FOR UPDATE SKIP LOCKED",
                p![],
            )?;
            let mut out = Vec::new();
            let (mut settled, mut queued) = (false, false);
            for r in &expired {
                if r.i(4)? == 0 {
                    // the same attempt, on another worker: its process died with the worker
                    // (a worker's tasks are tied to it), and a worker's death is not the task's
                    // failure
                    c.exec(
                        "UPDATE tasks SET state = 'queued', worker = NULL, requeued = true, epoch = epoch + 1,
                                lease_until = NULL, pid = NULL
                         WHERE id = ?1",
                        p![r.i(0)?],
                    )?;
                    out.push((r.s(1)?, r.s(2)?, Reaped::Requeued));
                    queued = true;
                    continue;
                }
                let res = result(&r.s(3)?);
                c.exec(
                    "UPDATE tasks SET state = 'done', result = ?2, epoch = epoch + 1, lease_until = NULL,
                            changed = pg_current_xact_id()
                     WHERE id = ?1",
                    p![r.i(0)?, &res],
                )?;
                out.push((r.s(1)?, r.s(2)?, Reaped::Settled));
                settled = true;
            }
            if settled {
                c.exec("SELECT pg_notify('weir_done', '')", p![])?;
            }
            if queued {
                c.exec("SELECT pg_notify('weir_queued', '')", p![])?;
            }
            Ok(out)
        })
    }

    /// What changed for these runs' tasks since `since`: tasks that started, and tasks that
    /// finished, each as it is now; and where the next call goes on from.
    ///
    /// Nothing is written: every report stamps its rows with its transaction's id (`changed`),
    /// and this reads the rows stamped by transactions from `since` up to the oldest one still
    /// in progress — all of those have ended, so none of their rows can appear later. A change
    /// may come twice (after [`Store::run_updates`], or when a reader starts over from
    /// [`Since::default`]): its driver skips what it recorded already.
    pub fn task_updates(
        &self,
        runs: &[&str],
        owner: &str,
        since: Since,
    ) -> Result<(Vec<(String, TaskUpdate)>, Since)> {
        let c = self.need_pg("the task queue")?;
        // only runs `owner` still holds: a process that lost a run takes nothing of it
        let rows = c.rows(
            // the changed rows first, by their index (a plan prepared once must not go through
            // every task of the runs instead)
            "WITH s AS MATERIALIZED (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS upto),
                  c AS MATERIALIZED (
                      SELECT id, run, node, state, pid, result FROM tasks
                      WHERE changed >= CAST(CAST(CAST(?3 AS BIGINT) AS TEXT) AS xid8)
                        AND changed < (SELECT upto FROM s))
             SELECT CAST(CAST(s.upto AS TEXT) AS BIGINT), c.run, c.node, c.state, c.pid, c.result,
                    c.state = 'done' AND EXISTS (SELECT 1 FROM task_logs l
                                                 WHERE l.run = c.run AND l.node = c.node)
             FROM s LEFT JOIN c
               ON c.run = ANY(?1) AND c.run IN (SELECT name FROM runs WHERE name = ANY(?1) AND owner = ?2)
             ORDER BY c.id",
            &[P::TA(runs), owner.into(), since.0.into()],
        )?;
        let upto = match rows.first() {
            Some(r) => Since(r.i(0)?),
            None => since,
        };
        let updates = rows
            .iter()
            .filter(|r| !matches!(r.get(1), None | Some(V::Null)))
            .map(|r| Ok((r.s(1)?, task_update(r, 2)?)))
            .collect::<Result<_>>()?;
        Ok((updates, upto))
    }

    /// Every start and result of a run's tasks not yet recorded in its log (for its new owner,
    /// which may have been handed none of them; or a driver that starts over).
    pub fn run_updates(&self, run: &str, owner: &str) -> Result<Vec<TaskUpdate>> {
        let c = self.need_pg("the task queue")?;
        c.rows(
            "SELECT t.node, t.state, t.pid, t.result,
                    t.state = 'done' AND EXISTS (SELECT 1 FROM task_logs l
                                                 WHERE l.run = t.run AND l.node = t.node)
             FROM tasks t
             WHERE t.run = ?1 AND t.changed IS NOT NULL
               AND t.run IN (SELECT name FROM runs WHERE name = ?1 AND owner = ?2)
             ORDER BY t.id",
            p![run, owner],
        )?
        .iter()
        .map(|r| task_update(r, 0))
        .collect()
    }

    /// The driver recorded these finished tasks in its run's log: their rows go.
    pub fn ack_task_updates(&self, run: &str, done: &[&str]) -> Result<()> {
        let c = self.need_pg("the task queue")?;
        if !done.is_empty() {
            c.exec(
                "DELETE FROM tasks WHERE run = ?1 AND node = ANY(?2) AND state = 'done'",
                &[run.into(), P::TA(done)],
            )?;
        }
        Ok(())
    }

    /// Whether a task row exists for the node (queued, running or done but not yet recorded).
    pub fn task_exists(&self, run: &str, node: &str) -> Result<bool> {
        let c = self.need_pg("the task queue")?;
        Ok(c.row(
            "SELECT 1 FROM tasks WHERE run = ?1 AND node = ?2",
            p![run, node],
        )?
        .is_some())
    }

    /// Asks for a task to be stopped: a queued one is withdrawn and settled with `result`, a
    /// running one is flagged for its worker (which sees it at its next heartbeat).
    pub fn cancel_task(&self, run: &str, node: &str, result: &str) -> Result<()> {
        let c = self.need_pg("the task queue")?;
        c.tx(|c| {
            c.exec(
                "UPDATE tasks SET state = 'done', result = ?3, epoch = epoch + 1, changed = pg_current_xact_id()
                 WHERE run = ?1 AND node = ?2 AND state = 'queued'",
                p![run, node, result],
            )?;
            c.exec(
                "UPDATE tasks SET cancel = 1 WHERE run = ?1 AND node = ?2 AND state = 'running'",
                p![run, node],
            )?;
            c.exec("SELECT pg_notify('weir_done', '')", p![])?;
            Ok(())
        })
    }

    /// Tasks by state (queued, running, done): the queue's depth, for metrics and backpressure.
    pub fn queue_depth(&self) -> Result<Vec<(String, i64)>> {
        let c = self.need_pg("the task queue")?;
        c.rows(
            "SELECT state, count(*) FROM tasks GROUP BY state ORDER BY state",
            p![],
        )?
        .iter()
        .map(|r| Ok((r.s(0)?, r.i(1)?)))
        .collect()
    }

    /// Sets a namespace's quota (all limits `None` removes it).
    pub fn set_quota(&self, q: &Quota) -> Result<()> {
        let c = self.need_pg("quotas")?;
        if q.max_runs.is_none() && q.max_tasks.is_none() && q.max_gpu.is_none() {
            c.exec("DELETE FROM quotas WHERE namespace = ?1", p![&q.namespace])?;
        } else {
            c.exec(
                "INSERT INTO quotas (namespace, max_runs, max_tasks, max_gpu) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (namespace) DO UPDATE SET max_runs = excluded.max_runs, max_tasks = excluded.max_tasks, max_gpu = excluded.max_gpu",
                p![&q.namespace, q.max_runs, q.max_tasks, q.max_gpu],
            )?;
        }
        Ok(())
    }

    pub fn quota(&self, namespace: &str) -> Result<Option<Quota>> {
        let c = self.need_pg("quotas")?;
        c.row(
            "SELECT namespace, max_runs, max_tasks, max_gpu FROM quotas WHERE namespace = ?1",
            p![namespace],
        )?
        .map(|r| {
            Ok(Quota {
                namespace: r.s(0)?,
                max_runs: r.oi(1)?,
                max_tasks: r.oi(2)?,
                max_gpu: r.oi(3)?,
            })
        })
        .transpose()
    }

    /// Runs unfinished or finished since `since`, with the sequence number their next event
    /// will have: what changed is what a follower has not seen.
    pub fn recent_runs(&self, since: Millis) -> Result<Vec<(String, i64)>> {
        self.conn
            .rows(
                "SELECT name, next_seq FROM runs WHERE finished_at IS NULL OR finished_at >= ?1",
                p![since],
            )?
            .iter()
            .map(|r| Ok((r.s(0)?, r.i(1)?)))
            .collect()
    }

    /// Unfinished runs of a namespace (for its `max_runs` quota).
    pub fn running_runs(&self, namespace: &str) -> Result<i64> {
        self.conn
            .row(
                "SELECT count(*) FROM runs WHERE namespace = ?1 AND finished_at IS NULL",
                p![namespace],
            )?
            .map_or(Ok(0), |r| r.i(0))
    }

    /// Waits up to `timeout` for a notification on a channel this connection listens to (see
    /// [`Store::listen`]). Returns whether one came.
    pub fn wait_tasks(&self, timeout: std::time::Duration) -> Result<bool> {
        match &self.conn {
            Conn::Pg(c) => {
                use postgres::fallible_iterator::FallibleIterator;
                let mut c = c.borrow_mut();
                let mut n = c.client_mut().notifications();
                let got = n.timeout_iter(timeout).next()?.is_some();
                // several notifications at once are one wake-up
                while n.iter().next()?.is_some() {}
                Ok(got)
            }
            Conn::Lite(_) => {
                std::thread::sleep(timeout);
                Ok(false)
            }
        }
    }

    /// Subscribes this connection to the queue's notifications: [`Channel::Queued`] (new
    /// tasks, for workers) or [`Channel::Done`] (tasks started or finished, for drivers).
    pub fn listen(&self, channel: Channel) -> Result<()> {
        self.need_pg("the task queue")?.batch(match channel {
            Channel::Queued => "LISTEN weir_queued",
            Channel::Done => "LISTEN weir_done",
        })
    }
}

/// Advisory-lock key of the lease reaper.
const LOCK_REAPER: i64 = 0x7765_6972_0003;
/// Advisory-lock key of claims under quotas.
const LOCK_QUOTA: i64 = 0x7765_6972_0004;

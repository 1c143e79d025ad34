//! What the server keeps besides runs: API tokens (hashed by the caller), the audit log, and
//! filtered, paginated run listings.

use rusqlite::{OptionalExtension, params, types::Value};
use weir_core::run::Millis;

use crate::sqlite::summary_row;
use crate::{Result, RunSummary, Store};

/// An API token as stored: never the secret, only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    /// The namespace it grants access to; `*` for every namespace.
    pub namespace: String,
    pub role: String,
    pub hash: String,
    pub description: String,
    pub created_at: Millis,
    pub expires_at: Option<Millis>,
    pub revoked_at: Option<Millis>,
}

/// One mutating API call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    pub at: Millis,
    /// `token:ID`, or `local` on a server started with `--insecure-local`.
    pub actor: String,
    pub namespace: String,
    pub action: String,
    pub target: String,
    pub status: u16,
}

/// A requirement of a label selector (`k=v`, `k!=v`, `k`, `!k`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    Exists(String),
    Absent(String),
}

/// Which runs a listing returns.
#[derive(Debug, Clone, Default)]
pub struct RunQuery {
    pub namespace: Option<String>,
    /// Any of these phases (case-insensitive); empty for all.
    pub phases: Vec<String>,
    pub labels: Vec<LabelReq>,
    pub created_after: Option<Millis>,
    pub created_before: Option<Millis>,
    pub name_prefix: Option<String>,
    pub limit: usize,
    pub offset: usize,
}

impl Store {
    pub fn create_token(&mut self, t: &TokenRecord) -> Result<()> {
        self.conn.execute(
            "INSERT INTO tokens (id, namespace, role, hash, description, created_at, expires_at, revoked_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                t.id,
                t.namespace,
                t.role,
                t.hash,
                t.description,
                t.created_at,
                t.expires_at,
                t.revoked_at
            ],
        )?;
        Ok(())
    }

    pub fn token(&self, id: &str) -> Result<Option<TokenRecord>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT id, namespace, role, hash, description, created_at, expires_at, revoked_at FROM tokens WHERE id = ?1",
            )?
            .query_row([id], token_row)
            .optional()?)
    }

    /// Tokens of a namespace (every token for `None`), oldest first.
    pub fn tokens(&self, namespace: Option<&str>) -> Result<Vec<TokenRecord>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, namespace, role, hash, description, created_at, expires_at, revoked_at FROM tokens
             WHERE ?1 IS NULL OR namespace = ?1 ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map([namespace], token_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Marks a token revoked; false if there is no such token or it was already revoked.
    pub fn revoke_token(&mut self, id: &str, at: Millis) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, at],
        )? == 1)
    }

    pub fn record_audit(&mut self, e: &AuditEntry) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO audit (at, actor, namespace, action, target, status) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                e.at, e.actor, e.namespace, e.action, e.target, e.status
            ])?;
        Ok(())
    }

    /// Audit entries, newest first, of one namespace or all; `before` pages backwards by id.
    pub fn audit(
        &self,
        namespace: Option<&str>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, at, actor, namespace, action, target, status FROM audit
             WHERE (?1 IS NULL OR namespace = ?1) AND (?2 IS NULL OR id < ?2)
             ORDER BY id DESC LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![namespace, before, limit as i64], |r| {
            Ok(AuditEntry {
                id: r.get(0)?,
                at: r.get(1)?,
                actor: r.get(2)?,
                namespace: r.get(3)?,
                action: r.get(4)?,
                target: r.get(5)?,
                status: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Runs matching `q`, newest first, and whether more follow.
    pub fn query_runs(&self, q: &RunQuery) -> Result<(Vec<RunSummary>, bool)> {
        let mut sql = String::from(
            "SELECT name, namespace, created_at, finished_at, phase, message FROM runs WHERE 1=1",
        );
        let mut args: Vec<Value> = Vec::new();
        // binds a value and returns its placeholder
        let mut bind = |v: Value| {
            args.push(v);
            format!("?{}", args.len())
        };
        if let Some(ns) = &q.namespace {
            sql += &format!(" AND namespace = {}", bind(Value::Text(ns.clone())));
        }
        if let Some(p) = &q.name_prefix {
            let p = bind(Value::Text(p.clone()));
            sql += &format!(" AND substr(name, 1, length({p})) = {p}");
        }
        if !q.phases.is_empty() {
            let list: Vec<String> = q
                .phases
                .iter()
                .map(|p| bind(Value::Text(p.to_ascii_lowercase())))
                .collect();
            sql += &format!(" AND lower(phase) IN ({})", list.join(","));
        }
        if let Some(t) = q.created_after {
            sql += &format!(" AND created_at >= {}", bind(Value::Integer(t)));
        }
        if let Some(t) = q.created_before {
            sql += &format!(" AND created_at < {}", bind(Value::Integer(t)));
        }
        for l in &q.labels {
            let mut path = |k: &str| bind(Value::Text(format!("$.\"{}\"", k.replace('"', ""))));
            sql += &match l {
                LabelReq::Eq(k, v) => {
                    let k = path(k);
                    format!(
                        " AND json_extract(labels, {k}) = {}",
                        bind(Value::Text(v.clone()))
                    )
                }
                LabelReq::NotEq(k, v) => {
                    let k = path(k);
                    format!(
                        " AND coalesce(json_extract(labels, {k}), '') != {}",
                        bind(Value::Text(v.clone()))
                    )
                }
                LabelReq::Exists(k) => format!(" AND json_type(labels, {}) IS NOT NULL", path(k)),
                LabelReq::Absent(k) => format!(" AND json_type(labels, {}) IS NULL", path(k)),
            };
        }
        let limit = bind(Value::Integer(q.limit as i64 + 1));
        let offset = bind(Value::Integer(q.offset as i64));
        sql += &format!(" ORDER BY created_at DESC, rowid DESC LIMIT {limit} OFFSET {offset}");
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), summary_row)?;
        let mut out: Vec<RunSummary> = rows.collect::<rusqlite::Result<_>>()?;
        let more = out.len() > q.limit;
        out.truncate(q.limit);
        Ok((out, more))
    }

    /// Runs not finished, oldest first: what a restarted server goes on with.
    pub fn unfinished(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM runs WHERE finished_at IS NULL ORDER BY created_at")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        id: r.get(0)?,
        namespace: r.get(1)?,
        role: r.get(2)?,
        hash: r.get(3)?,
        description: r.get(4)?,
        created_at: r.get(5)?,
        expires_at: r.get(6)?,
        revoked_at: r.get(7)?,
    })
}

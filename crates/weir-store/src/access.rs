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

/// One version of a stored WorkflowTemplate, ClusterWorkflowTemplate or CronWorkflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRecord {
    pub kind: String,
    /// Empty for cluster-scoped kinds.
    pub namespace: String,
    pub name: String,
    /// 1, 2, …: every update adds one; old versions stay.
    pub version: i64,
    /// The document as it was submitted (YAML or JSON); empty for a deletion.
    pub body: String,
    pub created_at: Millis,
    pub deleted: bool,
}

/// One edge of the lineage graph: a node consumed (`in`) or produced (`out`) an artifact.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LineageEdge {
    pub run: String,
    pub node: String,
    pub node_name: String,
    pub template: String,
    /// The node's input parameters, as JSON `[[name, value], …]`.
    pub params: String,
    pub direction: String,
    pub artifact: String,
    /// blake3 of the artifact's stored bytes.
    pub digest: String,
    pub key: String,
    /// Where a fetched input came from.
    pub url: Option<String>,
    pub at: Millis,
}

impl Store {
    /// Records a finished node's lineage edges (again on replay: the same rows).
    pub fn record_lineage(&mut self, edges: &[LineageEdge]) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO lineage (run, node, node_name, template, params, direction, artifact, digest, key, url, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            for e in edges {
                stmt.execute(params![
                    e.run,
                    e.node,
                    e.node_name,
                    e.template,
                    e.params,
                    e.direction,
                    e.artifact,
                    e.digest,
                    e.key,
                    e.url,
                    e.at
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Edges with this digest (a prefix of at least 8 hex digits) in this direction, of runs in
    /// `namespace` when given.
    pub fn lineage_by_digest(
        &self,
        digest: &str,
        direction: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<LineageEdge>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT l.run, l.node, l.node_name, l.template, l.params, l.direction, l.artifact, l.digest, l.key, l.url, l.at
             FROM lineage l JOIN runs r ON r.name = l.run
             WHERE substr(l.digest, 1, length(?1)) = ?1 AND l.direction = ?2 AND (?3 IS NULL OR r.namespace = ?3)
             ORDER BY l.at, l.run, l.node",
        )?;
        let rows = stmt.query_map(params![digest, direction, namespace], lineage_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The content-addressed artifact keys (`objects/…`, `fetched/…`) a run's nodes consumed or
    /// produced.
    pub fn run_object_keys(&self, run: &str) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare(
            "SELECT DISTINCT key FROM lineage WHERE run = ?1 AND substr(key, 1, 8) IN ('objects/', 'fetched/')",
        )?;
        let rows = stmt.query_map([run], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Whether any run but `except` still refers to an artifact key.
    pub fn object_referenced(&self, key: &str, except: &str) -> Result<bool> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM lineage WHERE key = ?1 AND run != ?2 LIMIT 1",
                params![key, except],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// A node's edges in one direction.
    pub fn lineage_of_node(
        &self,
        run: &str,
        node: &str,
        direction: &str,
    ) -> Result<Vec<LineageEdge>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT run, node, node_name, template, params, direction, artifact, digest, key, url, at FROM lineage
             WHERE run = ?1 AND node = ?2 AND direction = ?3 ORDER BY artifact",
        )?;
        let rows = stmt.query_map(params![run, node, direction], lineage_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Stores a new version of a template; returns its version number.
    pub fn put_template(
        &mut self,
        kind: &str,
        namespace: &str,
        name: &str,
        body: &str,
        at: Millis,
    ) -> Result<i64> {
        self.add_template_version(kind, namespace, name, body, at, false)
    }

    /// Deletes a template by adding a deleted version (its history stays); false if there is
    /// no such template.
    pub fn delete_template(
        &mut self,
        kind: &str,
        namespace: &str,
        name: &str,
        at: Millis,
    ) -> Result<bool> {
        if self.template(kind, namespace, name, None)?.is_none() {
            return Ok(false);
        }
        self.add_template_version(kind, namespace, name, "", at, true)?;
        Ok(true)
    }

    fn add_template_version(
        &mut self,
        kind: &str,
        namespace: &str,
        name: &str,
        body: &str,
        at: Millis,
        deleted: bool,
    ) -> Result<i64> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let version: i64 = tx.query_row(
            "SELECT coalesce(max(version), 0) + 1 FROM templates WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
            params![kind, namespace, name],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO templates (kind, namespace, name, version, body, created_at, deleted) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![kind, namespace, name, version, body, at, deleted],
        )?;
        tx.commit()?;
        Ok(version)
    }

    /// A template's latest version (None if it is deleted or never existed), or the given one.
    pub fn template(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        version: Option<i64>,
    ) -> Result<Option<TemplateRecord>> {
        let rec = self
            .conn
            .query_row(
                "SELECT kind, namespace, name, version, body, created_at, deleted FROM templates
                 WHERE kind = ?1 AND namespace = ?2 AND name = ?3 AND (?4 IS NULL OR version = ?4)
                 ORDER BY version DESC LIMIT 1",
                params![kind, namespace, name, version],
                template_row,
            )
            .optional()?;
        Ok(rec.filter(|r| !r.deleted))
    }

    /// The latest version of every live template of a kind in a namespace, by name.
    pub fn templates(&self, kind: &str, namespace: &str) -> Result<Vec<TemplateRecord>> {
        let mut stmt = self.conn.prepare(
            "SELECT t.kind, t.namespace, t.name, t.version, t.body, t.created_at, t.deleted FROM templates t
             WHERE t.kind = ?1 AND t.namespace = ?2 AND t.version =
               (SELECT max(version) FROM templates u WHERE u.kind = t.kind AND u.namespace = t.namespace AND u.name = t.name)
               AND t.deleted = 0
             ORDER BY t.name",
        )?;
        let rows = stmt.query_map(params![kind, namespace], template_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every version of a template, newest first (deletions included).
    pub fn template_versions(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Vec<TemplateRecord>> {
        let mut stmt = self.conn.prepare(
            "SELECT kind, namespace, name, version, body, created_at, deleted FROM templates
             WHERE kind = ?1 AND namespace = ?2 AND name = ?3 ORDER BY version DESC",
        )?;
        let rows = stmt.query_map(params![kind, namespace, name], template_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

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

    /// How many runs are in each phase.
    pub fn count_by_phase(&self) -> Result<Vec<(String, i64)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT phase, count(*) FROM runs GROUP BY phase ORDER BY phase")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
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

fn lineage_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LineageEdge> {
    Ok(LineageEdge {
        run: r.get(0)?,
        node: r.get(1)?,
        node_name: r.get(2)?,
        template: r.get(3)?,
        params: r.get(4)?,
        direction: r.get(5)?,
        artifact: r.get(6)?,
        digest: r.get(7)?,
        key: r.get(8)?,
        url: r.get(9)?,
        at: r.get(10)?,
    })
}

fn template_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TemplateRecord> {
    Ok(TemplateRecord {
        kind: r.get(0)?,
        namespace: r.get(1)?,
        name: r.get(2)?,
        version: r.get(3)?,
        body: r.get(4)?,
        created_at: r.get(5)?,
        deleted: r.get(6)?,
    })
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

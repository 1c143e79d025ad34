//! What the server keeps besides runs: API tokens (hashed by the caller), the audit log, and
//! filtered, paginated run listings.

use weir_core::run::Millis;

use crate::db::{P, Row, p};
use crate::store::summary_row;
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
        self.conn.tx(|c| {
            for e in edges {
                c.exec(
                    "INSERT INTO lineage (run, node, node_name, template, params, direction, artifact, digest, key, url, at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                     ON CONFLICT (run, node, direction, artifact) DO UPDATE SET node_name = excluded.node_name,
                       template = excluded.template, params = excluded.params, digest = excluded.digest,
                       key = excluded.key, url = excluded.url, at = excluded.at",
                    p![
                        &e.run,
                        &e.node,
                        &e.node_name,
                        &e.template,
                        &e.params,
                        &e.direction,
                        &e.artifact,
                        &e.digest,
                        &e.key,
                        &e.url,
                        e.at
                    ],
                )?;
            }
            Ok(())
        })
    }

    /// Edges with this digest (a prefix of at least 8 hex digits) in this direction, of runs in
    /// `namespace` when given.
    pub fn lineage_by_digest(
        &self,
        digest: &str,
        direction: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<LineageEdge>> {
        self.conn
            .rows(
                "SELECT l.run, l.node, l.node_name, l.template, l.params, l.direction, l.artifact, l.digest, l.key, l.url, l.at
                 FROM lineage l JOIN runs r ON r.name = l.run
                 WHERE substr(l.digest, 1, length(CAST(?1 AS TEXT))) = ?1 AND l.direction = ?2
                   AND (CAST(?3 AS TEXT) IS NULL OR r.namespace = ?3)
                 ORDER BY l.at, l.run, l.node",
                p![digest, direction, namespace],
            )?
            .iter()
            .map(lineage_row)
            .collect()
    }

    /// The content-addressed artifact keys (`objects/…`, `fetched/…`) a run's nodes consumed or
    /// produced.
    pub fn run_object_keys(&self, run: &str) -> Result<Vec<String>> {
        self.conn
            .rows(
                "SELECT DISTINCT key FROM lineage WHERE run = ?1 AND substr(key, 1, 8) IN ('objects/', 'fetched/')",
                p![run],
            )?
            .iter()
            .map(|r| r.s(0))
            .collect()
    }

    /// Whether any run but `except` still refers to an artifact key.
    pub fn object_referenced(&self, key: &str, except: &str) -> Result<bool> {
        Ok(self
            .conn
            .row(
                "SELECT 1 FROM lineage WHERE key = ?1 AND run != ?2 LIMIT 1",
                p![key, except],
            )?
            .is_some())
    }

    /// A node's edges in one direction.
    pub fn lineage_of_node(
        &self,
        run: &str,
        node: &str,
        direction: &str,
    ) -> Result<Vec<LineageEdge>> {
        self.conn
            .rows(
                "SELECT run, node, node_name, template, params, direction, artifact, digest, key, url, at FROM lineage
                 WHERE run = ?1 AND node = ?2 AND direction = ?3 ORDER BY artifact",
                p![run, node, direction],
            )?
            .iter()
            .map(lineage_row)
            .collect()
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
        self.conn.tx(|c| {
            if c.is_pg() {
                // two updates of one template at once must not both draw the same version
                c.exec(
                    "SELECT pg_advisory_xact_lock(hashtext(?1 || '/' || ?2 || '/' || ?3))",
                    p![kind, namespace, name],
                )?;
            }
            let version = c
                .row(
                    "SELECT coalesce(max(version), 0) + 1 FROM templates WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
                    p![kind, namespace, name],
                )?
                .map_or(Ok(1), |r| r.i(0))?;
            c.exec(
                "INSERT INTO templates (kind, namespace, name, version, body, created_at, deleted) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                p![kind, namespace, name, version, body, at, deleted],
            )?;
            Ok(version)
        })
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
            .row(
                "SELECT kind, namespace, name, version, body, created_at, deleted FROM templates
                 WHERE kind = ?1 AND namespace = ?2 AND name = ?3 AND (CAST(?4 AS BIGINT) IS NULL OR version = ?4)
                 ORDER BY version DESC LIMIT 1",
                p![kind, namespace, name, version],
            )?
            .map(|r| template_row(&r))
            .transpose()?;
        Ok(rec.filter(|r| !r.deleted))
    }

    /// The latest version of every live template of a kind in a namespace, by name.
    pub fn templates(&self, kind: &str, namespace: &str) -> Result<Vec<TemplateRecord>> {
        self.conn
            .rows(
                "SELECT t.kind, t.namespace, t.name, t.version, t.body, t.created_at, t.deleted FROM templates t
                 WHERE t.kind = ?1 AND t.namespace = ?2 AND t.version =
                   (SELECT max(version) FROM templates u WHERE u.kind = t.kind AND u.namespace = t.namespace AND u.name = t.name)
                   AND t.deleted = 0
                 ORDER BY t.name",
                p![kind, namespace],
            )?
            .iter()
            .map(template_row)
            .collect()
    }

    /// Every version of a template, newest first (deletions included).
    pub fn template_versions(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Vec<TemplateRecord>> {
        self.conn
            .rows(
                "SELECT kind, namespace, name, version, body, created_at, deleted FROM templates
                 WHERE kind = ?1 AND namespace = ?2 AND name = ?3 ORDER BY version DESC",
                p![kind, namespace, name],
            )?
            .iter()
            .map(template_row)
            .collect()
    }

    pub fn create_token(&mut self, t: &TokenRecord) -> Result<()> {
        self.conn.exec(
            "INSERT INTO tokens (id, namespace, role, hash, description, created_at, expires_at, revoked_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            p![
                &t.id,
                &t.namespace,
                &t.role,
                &t.hash,
                &t.description,
                t.created_at,
                t.expires_at,
                t.revoked_at
            ],
        )?;
        Ok(())
    }

    pub fn token(&self, id: &str) -> Result<Option<TokenRecord>> {
        self.conn
            .row(
                "SELECT id, namespace, role, hash, description, created_at, expires_at, revoked_at FROM tokens WHERE id = ?1",
                p![id],
            )?
            .map(|r| token_row(&r))
            .transpose()
    }

    /// Tokens of a namespace (every token for `None`), oldest first.
    pub fn tokens(&self, namespace: Option<&str>) -> Result<Vec<TokenRecord>> {
        self.conn
            .rows(
                "SELECT id, namespace, role, hash, description, created_at, expires_at, revoked_at FROM tokens
                 WHERE CAST(?1 AS TEXT) IS NULL OR namespace = ?1 ORDER BY created_at, id",
                p![namespace],
            )?
            .iter()
            .map(token_row)
            .collect()
    }

    /// Marks a token revoked; false if there is no such token or it was already revoked.
    pub fn revoke_token(&mut self, id: &str, at: Millis) -> Result<bool> {
        Ok(self.conn.exec(
            "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            p![id, at],
        )? == 1)
    }

    pub fn record_audit(&mut self, e: &AuditEntry) -> Result<()> {
        self.conn.exec(
            "INSERT INTO audit (at, actor, namespace, action, target, status) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            p![e.at, &e.actor, &e.namespace, &e.action, &e.target, e.status],
        )?;
        Ok(())
    }

    /// Audit entries, newest first, of one namespace or all; `before` pages backwards by id.
    pub fn audit(
        &self,
        namespace: Option<&str>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>> {
        self.conn
            .rows(
                "SELECT id, at, actor, namespace, action, target, status FROM audit
                 WHERE (CAST(?1 AS TEXT) IS NULL OR namespace = ?1) AND (CAST(?2 AS BIGINT) IS NULL OR id < ?2)
                 ORDER BY id DESC LIMIT ?3",
                p![namespace, before, limit as i64],
            )?
            .iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.i(0)?,
                    at: r.i(1)?,
                    actor: r.s(2)?,
                    namespace: r.s(3)?,
                    action: r.s(4)?,
                    target: r.s(5)?,
                    status: r.i(6)? as u16,
                })
            })
            .collect()
    }

    /// Runs matching `q`, newest first, and whether more follow.
    pub fn query_runs(&self, q: &RunQuery) -> Result<(Vec<RunSummary>, bool)> {
        let pg = self.conn.is_pg();
        let mut sql = String::from(
            "SELECT name, namespace, created_at, finished_at, phase, message, local_name FROM runs WHERE 1=1",
        );
        let mut args: Vec<String> = Vec::new();
        let mut ints: Vec<(usize, i64)> = Vec::new();
        // binds a value and returns its placeholder
        let mut bind = |v: String| {
            args.push(v);
            format!("?{}", args.len())
        };
        if let Some(ns) = &q.namespace {
            sql += &format!(" AND namespace = {}", bind(ns.clone()));
        }
        if let Some(p) = &q.name_prefix {
            let p = bind(p.clone());
            sql += &format!(" AND substr(local_name, 1, length(CAST({p} AS TEXT))) = {p}");
        }
        if !q.phases.is_empty() {
            let list: Vec<String> = q
                .phases
                .iter()
                .map(|p| bind(p.to_ascii_lowercase()))
                .collect();
            sql += &format!(" AND lower(phase) IN ({})", list.join(","));
        }
        let mut bind_int = |args: &mut Vec<String>, v: i64| {
            args.push(String::new());
            ints.push((args.len() - 1, v));
            format!("?{}", args.len())
        };
        if let Some(t) = q.created_after {
            sql += &format!(" AND created_at >= {}", bind_int(&mut args, t));
        }
        if let Some(t) = q.created_before {
            sql += &format!(" AND created_at < {}", bind_int(&mut args, t));
        }
        for l in &q.labels {
            let (k, v) = match l {
                LabelReq::Eq(k, v) | LabelReq::NotEq(k, v) => (k, Some(v)),
                LabelReq::Exists(k) | LabelReq::Absent(k) => (k, None),
            };
            let key = if pg {
                k.clone()
            } else {
                format!("$.\"{}\"", k.replace('"', ""))
            };
            args.push(key);
            let kp = format!("?{}", args.len());
            // the label's value (NULL when absent)
            let val = if pg {
                format!("(CAST(labels AS jsonb) ->> CAST({kp} AS TEXT))")
            } else {
                format!("json_extract(labels, {kp})")
            };
            let has = if pg {
                format!("jsonb_exists(CAST(labels AS jsonb), CAST({kp} AS TEXT))")
            } else {
                format!("(json_type(labels, {kp}) IS NOT NULL)")
            };
            let mut vp = || {
                args.push(v.cloned().unwrap_or_default());
                format!("?{}", args.len())
            };
            sql += &match l {
                LabelReq::Eq(..) => format!(" AND {val} = {}", vp()),
                LabelReq::NotEq(..) => format!(" AND coalesce({val}, '') != {}", vp()),
                LabelReq::Exists(_) => format!(" AND {has}"),
                LabelReq::Absent(_) => format!(" AND NOT {has}"),
            };
        }
        let limit = bind_int(&mut args, q.limit as i64 + 1);
        let offset = bind_int(&mut args, q.offset as i64);
        sql += &format!(" ORDER BY created_at DESC, rowid DESC LIMIT {limit} OFFSET {offset}");
        let params: Vec<P<'_>> = args
            .iter()
            .enumerate()
            .map(|(i, a)| match ints.iter().find(|(j, _)| *j == i) {
                Some((_, v)) => P::I(*v),
                None => P::T(a),
            })
            .collect();
        let mut out: Vec<RunSummary> = self
            .conn
            .rows_uncached(&sql, &params)?
            .iter()
            .map(summary_row)
            .collect::<Result<_>>()?;
        let more = out.len() > q.limit;
        out.truncate(q.limit);
        Ok((out, more))
    }

    /// How many runs are in each phase.
    pub fn count_by_phase(&self) -> Result<Vec<(String, i64)>> {
        self.conn
            .rows(
                "SELECT phase, count(*) FROM runs GROUP BY phase ORDER BY phase",
                p![],
            )?
            .iter()
            .map(|r| Ok((r.s(0)?, r.i(1)?)))
            .collect()
    }

    /// Runs not finished, oldest first: what a restarted server goes on with.
    pub fn unfinished(&self) -> Result<Vec<String>> {
        self.conn
            .rows(
                "SELECT name FROM runs WHERE finished_at IS NULL ORDER BY created_at",
                p![],
            )?
            .iter()
            .map(|r| r.s(0))
            .collect()
    }
}

fn lineage_row(r: &Row) -> Result<LineageEdge> {
    Ok(LineageEdge {
        run: r.s(0)?,
        node: r.s(1)?,
        node_name: r.s(2)?,
        template: r.s(3)?,
        params: r.s(4)?,
        direction: r.s(5)?,
        artifact: r.s(6)?,
        digest: r.s(7)?,
        key: r.s(8)?,
        url: r.os(9)?,
        at: r.i(10)?,
    })
}

fn template_row(r: &Row) -> Result<TemplateRecord> {
    Ok(TemplateRecord {
        kind: r.s(0)?,
        namespace: r.s(1)?,
        name: r.s(2)?,
        version: r.i(3)?,
        body: r.s(4)?,
        created_at: r.i(5)?,
        deleted: r.i(6)? != 0,
    })
}

fn token_row(r: &Row) -> Result<TokenRecord> {
    Ok(TokenRecord {
        id: r.s(0)?,
        namespace: r.s(1)?,
        role: r.s(2)?,
        hash: r.s(3)?,
        description: r.s(4)?,
        created_at: r.i(5)?,
        expires_at: r.oi(6)?,
        revoked_at: r.oi(7)?,
    })
}

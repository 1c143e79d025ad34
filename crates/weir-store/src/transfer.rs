//! `weir db export` / `weir db import`: a database's history as JSON lines, to move from
//! SQLite to PostgreSQL (or back) without losing it.

use std::io::{BufRead, Write};

use crate::db::{P, V};
use crate::{Error, Result, Store};

/// Each kept table with the columns that move (generated ids and transient tables do not:
/// lock queues, pending control requests and the task queue belong to live processes).
const TABLES: &[(&str, &[&str], &str)] = &[
    (
        "runs",
        &[
            "name",
            "namespace",
            "created_at",
            "finished_at",
            "phase",
            "message",
            "submission",
            "next_seq",
            "expires_at",
            "labels",
            "priority",
        ],
        "created_at, name",
    ),
    ("events", &["run", "seq", "at", "body"], "run, seq"),
    (
        "memo",
        &["cache", "key", "outputs", "created_at", "run"],
        "cache, key",
    ),
    ("sync_limits", &["key", "lim"], "key"),
    ("metrics", &["run", "at", "sample"], "at, rowid"),
    (
        "tokens",
        &[
            "id",
            "namespace",
            "role",
            "hash",
            "description",
            "created_at",
            "expires_at",
            "revoked_at",
        ],
        "id",
    ),
    (
        "audit",
        &["at", "actor", "namespace", "action", "target", "status"],
        "id",
    ),
    (
        "templates",
        &[
            "kind",
            "namespace",
            "name",
            "version",
            "body",
            "created_at",
            "deleted",
        ],
        "kind, namespace, name, version",
    ),
    (
        "lineage",
        &[
            "run",
            "node",
            "node_name",
            "template",
            "params",
            "direction",
            "artifact",
            "digest",
            "key",
            "url",
            "at",
        ],
        "run, node, direction, artifact",
    ),
];

impl Store {
    /// Writes the header line, then one line per row: `{"table": T, "row": [values…]}`.
    /// Returns how many rows.
    pub fn export(&self, out: &mut dyn Write) -> Result<usize> {
        let io = |source| Error::Io {
            path: "export".into(),
            source,
        };
        let header = serde_json::json!({"weir-export": 1, "schema": self.schema_version()?});
        writeln!(out, "{header}").map_err(io)?;
        let mut n = 0;
        for (table, cols, order) in TABLES {
            let sql = format!("SELECT {} FROM {table} ORDER BY {order}", cols.join(", "));
            for row in self.conn.rows_uncached(&sql, &[])? {
                let values: Vec<serde_json::Value> = (0..cols.len())
                    .map(|i| match row.get(i) {
                        Some(V::I(x)) => serde_json::Value::from(*x),
                        Some(V::T(s)) => serde_json::Value::from(s.as_str()),
                        _ => serde_json::Value::Null,
                    })
                    .collect();
                let line = serde_json::json!({"table": table, "row": values});
                writeln!(out, "{line}").map_err(io)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Loads an export in one transaction: all of it, or (on any error, such as a run that
    /// already exists) nothing. Returns how many rows.
    pub fn import(&mut self, input: &mut dyn BufRead) -> Result<usize> {
        let mut lines = input.lines();
        let bad = |m: String| Error::Corrupt(format!("import: {m}"));
        let header: serde_json::Value = match lines.next() {
            Some(l) => serde_json::from_str(&l.map_err(|e| bad(e.to_string()))?)
                .map_err(|e| bad(format!("line 1: {e}")))?,
            None => return Err(bad("the file is empty".into())),
        };
        if header.get("weir-export").and_then(|v| v.as_i64()) != Some(1) {
            return Err(bad("line 1 is not a weir export header".into()));
        }
        let schema = header.get("schema").and_then(|v| v.as_i64()).unwrap_or(0);
        if schema > self.schema_version()? {
            return Err(bad(format!(
                "the export is of schema version {schema}, newer than this database's; upgrade weir"
            )));
        }
        self.conn.tx(|c| {
            let mut n = 0;
            for (i, line) in lines.enumerate() {
                let line = line.map_err(|e| bad(e.to_string()))?;
                if line.trim().is_empty() {
                    continue;
                }
                let v: serde_json::Value =
                    serde_json::from_str(&line).map_err(|e| bad(format!("line {}: {e}", i + 2)))?;
                let table = v.get("table").and_then(|t| t.as_str()).unwrap_or_default();
                let Some((table, cols, _)) = TABLES.iter().find(|(t, ..)| *t == table) else {
                    return Err(bad(format!("line {}: unknown table `{table}`", i + 2)));
                };
                let row = v
                    .get("row")
                    .and_then(|r| r.as_array())
                    .filter(|r| r.len() == cols.len())
                    .ok_or_else(|| {
                        bad(format!(
                            "line {}: `row` must have {} values",
                            i + 2,
                            cols.len()
                        ))
                    })?;
                let mut params: Vec<P<'_>> = row
                    .iter()
                    .map(|x| match x {
                        serde_json::Value::Number(n) => P::I(n.as_i64().unwrap_or(0)),
                        serde_json::Value::String(s) => P::T(s.as_str()),
                        _ => P::Null,
                    })
                    .collect();
                let mut cols = cols.to_vec();
                if *table == "runs" {
                    // a run's name in its namespace follows from its key (`NAMESPACE~NAME` or
                    // the name): not exported, so exports of every schema import alike
                    let key = row[0].as_str().unwrap_or_default();
                    cols.push("local_name");
                    params.push(P::T(key.split_once('~').map_or(key, |(_, n)| n)));
                }
                let placeholders: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
                let sql = format!(
                    "INSERT INTO {table} ({}) VALUES ({})",
                    cols.join(", "),
                    placeholders.join(", ")
                );
                c.exec(&sql, &params).map_err(|e| match e {
                    Error::Sql(_) | Error::Pg(_) if *table == "runs" => bad(format!(
                        "line {}: run {} cannot be imported (it already exists?): {e}",
                        i + 2,
                        row[0]
                    )),
                    e => e,
                })?;
                n += 1;
            }
            Ok(n)
        })
    }
}

//! Weir's data plane: the metadata store and the artifact repository.
//!
//! Architecture invariant: this is the only crate with SQL. The run state itself is not stored
//! as rows to update: a run is its submission plus an append-only event log, and the state
//! machine rebuilds the state by replaying it. A summary row per run serves listings.

mod access;
mod artifacts;
mod sqlite;

pub use access::{AuditEntry, LabelReq, LineageEdge, RunQuery, TemplateRecord, TokenRecord};
pub use artifacts::LocalRepo;
pub use sqlite::{Acquire, Durability, LockState, RunRecord, RunSummary, Store};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("run `{0}` not found")]
    RunNotFound(String),
    #[error("run name `{0}` is ambiguous: {1}")]
    Ambiguous(String, String),
    #[error("a run named `{0}` already exists")]
    RunExists(String),
    #[error("{path}: not a weir database ({source})")]
    NotADatabase {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "{path}: database schema version {found} is newer than this weir understands ({supported}); upgrade weir"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

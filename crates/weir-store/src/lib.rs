//! Weir's data plane: the metadata store and the artifact repository.
//!
//! Architecture invariant: this is the only crate with SQL. The run state itself is not stored
//! as rows to update: a run is its submission plus an append-only event log, and the state
//! machine rebuilds the state by replaying it. A summary row per run serves listings.

mod access;
mod db;
mod memo;
mod queue;
mod store;
mod sync;
mod transfer;

pub use access::{AuditEntry, LabelReq, LineageEdge, RunQuery, TemplateRecord, TokenRecord};
pub use queue::{Channel, Claimed, NewTask, Offer, Quota, Reaped, Since, TaskUpdate};
pub use store::{Durability, RunRecord, RunSummary, Store, is_postgres_url, redact_url};
pub use sync::{Acquire, LockState};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("run `{0}` not found")]
    RunNotFound(String),
    #[error("run name `{0}` is ambiguous: {1}")]
    Ambiguous(String, String),
    #[error("a run named `{0}` already exists")]
    RunExists(String),
    /// A name or key that would not stay a name: a path outside its root, a bad run name.
    #[error("{0}")]
    InvalidName(String),
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
    #[error("PostgreSQL: {}", pg_message(.0))]
    Pg(#[from] postgres::Error),
    #[error("cannot connect to {url}: {message}")]
    Connect { url: String, message: String },
    #[error("run `{0}` was taken over by another process")]
    Fenced(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// PostgreSQL's own message (`ERROR: …`) where it sent one, not only "db error".
fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{}: {}", d.severity(), d.message()),
        None => e.to_string(),
    }
}

impl Error {
    /// The connection to PostgreSQL is gone (server down, network cut): reconnect and retry.
    pub fn is_disconnect(&self) -> bool {
        match self {
            Error::Pg(e) => e.is_closed() || e.as_db_error().is_none(),
            Error::Connect { .. } => true,
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

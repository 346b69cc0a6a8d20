//! `index.sqlite`: the index of the spool, its schema and every query on it.
//!
//! The queue manager writes it through [`Index`]; the queue tool reads it
//! through [`Reader`]. Both take the schema, the states and the mapping of
//! a recipient row ([`RecipientRow`]) from here, so they cannot drift
//! apart. Times are milliseconds since the Unix epoch.
//!
//! The queue files are the truth; the index is a cache of them plus
//! delivery progress: which recipients are done, which wait until when, and
//! why.
//!
//! # Must never
//! Be written by any process but the queue manager (a [`Reader`] opens the
//! file read-only), or be trusted over the queue files: rows whose file is
//! gone are dropped at start, files the index does not know are imported.
//!
//! # Errors
//! SQLite errors are returned; the queue manager treats them as fatal (it
//! exits and the master restarts it), because a half-written index is
//! rebuilt from the files.

mod reader;
mod writer;

use std::path::{Path, PathBuf};

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::ToSql;

pub use reader::{Filter, Listed, ListedRecipient, MessageRow, OpenError, QueueName, Reader};
pub use writer::{Due, Index, NewMessage, NewRecipient, Update};

/// The schema; `user_version` says which one a file has.
pub const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS message (
    id           TEXT PRIMARY KEY,
    arrival      INTEGER NOT NULL,
    sender       TEXT NOT NULL,
    size         INTEGER NOT NULL,
    hold         INTEGER NOT NULL DEFAULT 0,
    delay_warned INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS recipient (
    message_id   TEXT NOT NULL REFERENCES message(id) ON DELETE CASCADE,
    idx          INTEGER NOT NULL,
    address      TEXT NOT NULL,
    domain       TEXT NOT NULL,
    transport    TEXT NOT NULL,
    next_hop     TEXT NOT NULL,
    state        TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL,
    last_error   TEXT,
    PRIMARY KEY (message_id, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS recipient_due ON recipient(state, next_attempt);
CREATE INDEX IF NOT EXISTS recipient_schedule ON recipient(transport, state, next_attempt);
CREATE INDEX IF NOT EXISTS recipient_domain ON recipient(domain);
CREATE INDEX IF NOT EXISTS message_arrival ON message(arrival);
";

/// Recipient states still waiting for delivery or in it, as SQL.
const PENDING: &str = "('queued', 'active', 'deferred')";

/// The index file in a spool.
pub fn path(spool_dir: &Path) -> PathBuf {
    spool_dir.join("index.sqlite")
}

/// A recipient's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Imported, never tried.
    Queued,
    /// Handed to a delivery agent.
    Active,
    /// Tried, to be tried again at its next attempt.
    Deferred,
    /// Done: delivered.
    Delivered,
    /// Done: bounced (the notice is already queued).
    Bounced,
}

impl State {
    /// The name stored in the index (and shown by the queue tool).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Active => "active",
            State::Deferred => "deferred",
            State::Delivered => "delivered",
            State::Bounced => "bounced",
        }
    }

    /// Whether the recipient still waits for an attempt.
    pub fn is_waiting(self) -> bool {
        matches!(self, State::Queued | State::Deferred)
    }

    fn parse(s: &str) -> Option<State> {
        [
            State::Queued,
            State::Active,
            State::Deferred,
            State::Delivered,
            State::Bounced,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ToSql for State {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Text(
            self.as_str().as_bytes(),
        )))
    }
}

impl FromSql for State {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<State> {
        let text = value.as_str()?;
        State::parse(text)
            .ok_or_else(|| FromSqlError::Other(format!("unknown state {text:?}").into()))
    }
}

/// One recipient row: the one mapping from the `recipient` table, used by
/// the queue manager's scheduling and the queue tool's `show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientRow {
    /// Position in the queue file's envelope.
    pub index: u32,
    /// The address.
    pub address: String,
    /// `smtp` or `local`.
    pub transport: String,
    /// Where the transport delivers it.
    pub next_hop: String,
    /// Its state.
    pub state: State,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When it is tried next (meaningful while waiting).
    pub next_attempt_ms: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

impl RecipientRow {
    /// The columns [`RecipientRow::from_row`] reads, in order, of the
    /// `recipient` table aliased `r`.
    const COLUMNS: &'static str =
        "r.idx, r.address, r.transport, r.next_hop, r.state, r.attempts, r.next_attempt, r.last_error";

    /// Maps [`RecipientRow::COLUMNS`], starting at column `at`.
    fn from_row(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<RecipientRow> {
        Ok(RecipientRow {
            index: row.get(at)?,
            address: row.get(at + 1)?,
            transport: row.get(at + 2)?,
            next_hop: row.get(at + 3)?,
            state: row.get(at + 4)?,
            attempts: row.get(at + 5)?,
            next_attempt_ms: row.get(at + 6)?,
            last_error: row.get(at + 7)?,
        })
    }
}

//! The queue tool's side: the index opened read-only, the listing query
//! with its filters, and one message's rows.
//!
//! Messages are listed oldest first (arrival, then queue ID). SQLite walks
//! the `message_arrival` index and looks each message's recipients up by
//! primary key, so the whole queue is never sorted, and each message is
//! handed out as soon as its last recipient row is read: 100,000 queued
//! messages cost neither a big sort nor the whole listing in memory. The
//! join order is pinned (`CROSS JOIN`, and `+r.state` keeps the state
//! index out of it) because without statistics SQLite would rather scan
//! recipients and sort. Filters are SQL conditions; the domain filter goes
//! through the `recipient_domain` index.
//!
//! # Must never
//! Write to the index, or list a recipient that is already delivered or
//! bounced.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension as _};

use crate::{RecipientRow, State, PENDING};

/// Why the index could not be opened for reading.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// SQLite or the file system refused.
    #[error("{}: {source}", path.display())]
    Sqlite {
        /// The index file.
        path: PathBuf,
        /// What failed.
        source: rusqlite::Error,
    },
    /// The file could not be looked at.
    #[error("{}: {source}", path.display())]
    Io {
        /// The index file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file was written by another version of the queue manager.
    #[error("{}: index schema version {found}; this sluice-queue reads version {}", path.display(), crate::SCHEMA_VERSION)]
    Version {
        /// The index file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
    },
}

/// Which queue a message is in, as Postfix names them. A message is `hold`
/// when held; else `active` when a recipient is being delivered; else
/// `deferred` when a recipient was tried and waits; else `incoming`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueName {
    /// Being delivered (`*` in mailq).
    Active,
    /// Tried, waiting for the next attempt.
    Deferred,
    /// Held by the operator (`!` in mailq).
    Hold,
    /// Not tried yet.
    Incoming,
}

impl QueueName {
    /// The name as `postqueue -j` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueName::Active => "active",
            QueueName::Deferred => "deferred",
            QueueName::Hold => "hold",
            QueueName::Incoming => "incoming",
        }
    }

    /// The queue of a message from its hold flag and its recipients'
    /// states; `None` when no recipient is waiting any more. The same rule
    /// as [`QueueName::condition`] in SQL.
    pub fn of(hold: bool, states: impl IntoIterator<Item = State>) -> Option<QueueName> {
        let (mut pending, mut active, mut deferred) = (false, false, false);
        for state in states {
            match state {
                State::Active => active = true,
                State::Deferred => deferred = true,
                State::Queued => {}
                State::Delivered | State::Bounced => continue,
            }
            pending = true;
        }
        if !pending {
            return None;
        }
        Some(if hold {
            QueueName::Hold
        } else if active {
            QueueName::Active
        } else if deferred {
            QueueName::Deferred
        } else {
            QueueName::Incoming
        })
    }

    /// The SQL condition on `message m` selecting this queue.
    fn condition(self) -> String {
        let with = |state: State| {
            format!(
                "m.id IN (SELECT message_id FROM recipient WHERE state = '{}')",
                state.as_str()
            )
        };
        match self {
            QueueName::Hold => "m.hold = 1".to_owned(),
            QueueName::Active => format!("m.hold = 0 AND {}", with(State::Active)),
            QueueName::Deferred => format!(
                "m.hold = 0 AND {} AND NOT {}",
                with(State::Deferred),
                with(State::Active)
            ),
            QueueName::Incoming => format!(
                "m.hold = 0 AND NOT {} AND NOT {}",
                with(State::Deferred),
                with(State::Active)
            ),
        }
    }
}

/// What to list. Every filter must hold; each keeps or drops whole
/// messages (a kept message shows all its waiting recipients).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Messages with a waiting recipient in this domain (exact, any case).
    pub domain: Option<String>,
    /// Messages whose sender contains this text (any case); `<>` or
    /// `MAILER-DAEMON` select the null sender only.
    pub sender: Option<String>,
    /// Messages with a waiting recipient whose address contains this text
    /// (any case).
    pub recipient: Option<String>,
    /// Messages in this queue.
    pub state: Option<QueueName>,
}

impl Filter {
    /// Whether nothing is filtered.
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    /// The listing query and its parameters.
    fn query(&self) -> (String, Vec<String>) {
        let mut sql = format!(
            "SELECT m.id, m.arrival, m.size, m.sender, m.hold, r.address, r.state, r.last_error
             FROM message m CROSS JOIN recipient r ON r.message_id = m.id
             WHERE +r.state IN {PENDING}"
        );
        let mut params = Vec::new();
        if let Some(domain) = &self.domain {
            params.push(domain.trim_end_matches('.').to_lowercase());
            let _ = write!(
                sql,
                " AND m.id IN (SELECT message_id FROM recipient WHERE domain = ?{} AND state IN {PENDING})",
                params.len()
            );
        }
        if let Some(sender) = &self.sender {
            if sender == "<>" || sender.eq_ignore_ascii_case("MAILER-DAEMON") {
                sql.push_str(" AND m.sender = ''");
            } else {
                params.push(sender.to_lowercase());
                let _ = write!(sql, " AND instr(lower(m.sender), ?{}) > 0", params.len());
            }
        }
        if let Some(recipient) = &self.recipient {
            params.push(recipient.to_lowercase());
            let _ = write!(
                sql,
                " AND m.id IN (SELECT message_id FROM recipient WHERE instr(lower(address), ?{}) > 0 AND state IN {PENDING})",
                params.len()
            );
        }
        if let Some(state) = self.state {
            let _ = write!(sql, " AND {}", state.condition());
        }
        sql.push_str(" ORDER BY m.arrival, m.id, r.idx");
        (sql, params)
    }
}

/// One waiting recipient of a listed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedRecipient {
    /// The address.
    pub address: String,
    /// Queued, active or deferred.
    pub state: State,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// One listed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The queue ID.
    pub id: String,
    /// Arrival.
    pub arrival_ms: i64,
    /// Content size in bytes.
    pub size: i64,
    /// The envelope sender (empty for `<>`).
    pub sender: String,
    /// Held by the operator.
    pub hold: bool,
    /// Its waiting recipients, in envelope order.
    pub recipients: Vec<ListedRecipient>,
}

impl Listed {
    /// The queue it is in.
    pub fn queue_name(&self) -> QueueName {
        QueueName::of(self.hold, self.recipients.iter().map(|r| r.state))
            .unwrap_or(QueueName::Incoming)
    }
}

/// One message with all its recipients, done or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRow {
    /// Arrival.
    pub arrival_ms: i64,
    /// The envelope sender (empty for `<>`).
    pub sender: String,
    /// Content size in bytes.
    pub size: i64,
    /// Held by the operator.
    pub hold: bool,
    /// Every recipient, in envelope order.
    pub recipients: Vec<RecipientRow>,
}

/// The index, open read-only.
pub struct Reader {
    conn: Connection,
}

impl Reader {
    /// Opens the index of `spool_dir` read-only, or `None` when there is
    /// none yet (no mail has been queued since the spool was made).
    pub fn open(spool_dir: &Path) -> Result<Option<Reader>, OpenError> {
        let path = crate::path(spool_dir);
        let failed = |source| OpenError::Sqlite {
            path: path.clone(),
            source,
        };
        match std::fs::metadata(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(OpenError::Io { path, source }),
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(failed)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(failed)?;
        let found: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(failed)?;
        // 0: the queue manager has created the file but not the schema yet.
        if found != 0 && found != crate::SCHEMA_VERSION {
            return Err(OpenError::Version { path, found });
        }
        Ok(Some(Reader { conn }))
    }

    /// Hands each message the filter keeps to `each`, oldest first, as its
    /// rows are read.
    pub fn list<E: From<rusqlite::Error>>(
        &self,
        filter: &Filter,
        mut each: impl FnMut(&Listed) -> Result<(), E>,
    ) -> Result<(), E> {
        let (sql, params) = filter.query();
        let mut stmt = self.conn.prepare(&sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
        let mut current: Option<Listed> = None;
        while let Some(row) = rows.next()? {
            let id: String = row.get(0)?;
            let recipient = ListedRecipient {
                address: row.get(5)?,
                state: row.get(6)?,
                last_error: row.get(7)?,
            };
            match &mut current {
                Some(entry) if entry.id == id => entry.recipients.push(recipient),
                _ => {
                    if let Some(done) = current.take() {
                        each(&done)?;
                    }
                    current = Some(Listed {
                        id,
                        arrival_ms: row.get(1)?,
                        size: row.get(2)?,
                        sender: row.get(3)?,
                        hold: row.get(4)?,
                        recipients: vec![recipient],
                    });
                }
            }
        }
        if let Some(done) = current.take() {
            each(&done)?;
        }
        Ok(())
    }

    /// One message and every recipient of it.
    pub fn message(&self, id: &str) -> rusqlite::Result<Option<MessageRow>> {
        let Some(mut message) = self
            .conn
            .query_row(
                "SELECT arrival, sender, size, hold FROM message WHERE id = ?1",
                [id],
                |r| {
                    Ok(MessageRow {
                        arrival_ms: r.get(0)?,
                        sender: r.get(1)?,
                        size: r.get(2)?,
                        hold: r.get(3)?,
                        recipients: Vec::new(),
                    })
                },
            )
            .optional()?
        else {
            return Ok(None);
        };
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {} FROM recipient r WHERE r.message_id = ?1 ORDER BY r.idx",
            RecipientRow::COLUMNS
        ))?;
        message.recipients = stmt
            .query_map([id], |r| RecipientRow::from_row(r, 0))?
            .collect::<Result<_, _>>()?;
        Ok(Some(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Index, NewMessage, NewRecipient, Update};

    fn fill(spool: &Path, count: u32) {
        let mut index = Index::open(&crate::path(spool)).expect("open");
        let messages: Vec<NewMessage> = (0..count)
            .map(|i| {
                let domain = format!("d{}.test", i % 100);
                NewMessage {
                    id: format!("M{i:09}"),
                    arrival_ms: i64::from(i),
                    sender: format!("sender{i}@example.org"),
                    size: 1024,
                    hold: false,
                    recipients: vec![NewRecipient {
                        index: 0,
                        address: format!("user{i}@{domain}"),
                        domain: domain.clone(),
                        transport: "smtp".into(),
                        next_hop: domain,
                    }],
                }
            })
            .collect();
        index.insert(&messages, 0).expect("insert");
    }

    fn query_plan(reader: &Reader, filter: &Filter) -> String {
        let (sql, params) = filter.query();
        let mut stmt = reader
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("explain");
        let rows = stmt
            .query_map(rusqlite::params_from_iter(params.iter()), |r| {
                r.get::<_, String>(3)
            })
            .expect("plan")
            .collect::<Result<Vec<_>, _>>()
            .expect("plan rows");
        rows.iter().map(|l| format!("{l}\n")).collect()
    }

    #[test]
    fn the_listing_walks_indexes_and_never_sorts_the_queue() {
        let dir = tempfile::tempdir().expect("tempdir");
        fill(dir.path(), 2_000);
        let reader = Reader::open(dir.path()).expect("open").expect("index");
        let filter = Filter {
            domain: Some("D7.test.".into()),
            ..Filter::default()
        };
        let mut seen = 0;
        reader
            .list::<rusqlite::Error>(&filter, |m| {
                assert!(m.recipients[0].address.ends_with("@d7.test"));
                seen += 1;
                Ok(())
            })
            .expect("list");
        assert_eq!(seen, 20);
        let plan = query_plan(&reader, &filter);
        assert!(plan.contains("recipient_domain"), "{plan}");
        assert!(!plan.contains("SCAN r\n"), "{plan}");
        assert!(!plan.contains("SCAN recipient\n"), "{plan}");
        // The unfiltered listing walks messages in arrival order through
        // an index: no sort of the whole queue (at most of one message's
        // recipients), so rows stream out as they are read.
        let plan = query_plan(&reader, &Filter::default());
        assert!(!plan.contains("TEMP B-TREE FOR ORDER BY"), "{plan}");
        assert!(!plan.contains("SCAN r"), "{plan}");
    }

    #[test]
    fn queue_name_in_rust_agrees_with_its_sql() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut index = Index::open(&crate::path(dir.path())).expect("open");
        // Recipient states per message: incoming, active, deferred,
        // deferred+active, all done.
        let cases: [&[State]; 5] = [
            &[State::Queued],
            &[State::Queued, State::Active],
            &[State::Deferred, State::Delivered],
            &[State::Deferred, State::Active],
            &[State::Delivered, State::Bounced],
        ];
        for (m, states) in cases.iter().enumerate() {
            let id = format!("M{m}");
            let recipients = (0..states.len() as u32)
                .map(|i| NewRecipient {
                    index: i,
                    address: format!("r{i}@x.test"),
                    domain: "x.test".into(),
                    transport: "smtp".into(),
                    next_hop: "x.test".into(),
                })
                .collect();
            let message = NewMessage {
                id: id.clone(),
                arrival_ms: m as i64,
                sender: String::new(),
                size: 1,
                hold: false,
                recipients,
            };
            index.insert(&[message], 0).expect("insert");
            for (i, state) in states.iter().enumerate() {
                match state {
                    State::Queued => {}
                    State::Active => index.set_active(&id, &[i as u32]).expect("active"),
                    done => index
                        .record(
                            &id,
                            &[Update {
                                index: i as u32,
                                state: *done,
                                next_attempt_ms: 0,
                                error: None,
                            }],
                            true,
                        )
                        .expect("record"),
                }
            }
        }
        index.set_hold(&["M4".into()], true).expect("hold");
        let reader = Reader::open(dir.path()).expect("open").expect("index");
        for name in [
            QueueName::Active,
            QueueName::Deferred,
            QueueName::Hold,
            QueueName::Incoming,
        ] {
            let filter = Filter {
                state: Some(name),
                ..Filter::default()
            };
            reader
                .list::<rusqlite::Error>(&filter, |m| {
                    assert_eq!(m.queue_name(), name, "{m:?}");
                    Ok(())
                })
                .expect("list");
        }
        let mut names = Vec::new();
        reader
            .list::<rusqlite::Error>(&Filter::default(), |m| {
                names.push((m.id.clone(), m.queue_name()));
                Ok(())
            })
            .expect("list");
        assert_eq!(
            names,
            [
                ("M0".to_owned(), QueueName::Incoming),
                ("M1".to_owned(), QueueName::Active),
                ("M2".to_owned(), QueueName::Deferred),
                ("M3".to_owned(), QueueName::Active),
            ]
        );
        let done = reader.message("M4").expect("read").expect("row");
        assert!(done.hold);
        assert_eq!(
            QueueName::of(done.hold, done.recipients.iter().map(|r| r.state)),
            None
        );
    }

    #[test]
    fn missing_index_and_other_schema_versions() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(Reader::open(dir.path()).expect("open").is_none());
        drop(Index::open(&crate::path(dir.path())).expect("create"));
        assert!(Reader::open(dir.path()).expect("open").is_some());
        Connection::open(crate::path(dir.path()))
            .expect("open")
            .pragma_update(None, "user_version", 2)
            .expect("user_version");
        let e = Reader::open(dir.path()).err().expect("newer schema");
        assert!(e.to_string().contains("schema version 2"), "{e}");
    }
}

//! The queue manager's side: every write to the index, and the queries
//! that scheduling and the operator's changes need.
//!
//! # Must never
//! Be opened by any process but the queue manager.

use std::collections::HashSet;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension as _};

use crate::{RecipientRow, State};

/// The states of recipients that wait for an attempt.
const WAITING: [State; 2] = [State::Queued, State::Deferred];

/// A message as imported from its queue file.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The queue ID.
    pub id: String,
    /// Arrival, from the queue file.
    pub arrival_ms: i64,
    /// The envelope sender (empty for `<>`).
    pub sender: String,
    /// Content size in bytes.
    pub size: u64,
    /// Held by the operator (the spool's `hold/` marker says so).
    pub hold: bool,
    /// Its recipients.
    pub recipients: Vec<NewRecipient>,
}

/// One recipient and where it goes.
#[derive(Debug, Clone)]
pub struct NewRecipient {
    /// Position in the queue file's envelope.
    pub index: u32,
    /// The address.
    pub address: String,
    /// Its domain, lower case, for ETRN and the operator's domain targets.
    pub domain: String,
    /// `smtp` or `local`.
    pub transport: String,
    /// Where the transport delivers it.
    pub next_hop: String,
}

/// A recipient whose next attempt is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// Its message.
    pub message_id: String,
    /// The message's arrival.
    pub arrival_ms: i64,
    /// The recipient.
    pub recipient: RecipientRow,
}

/// A recipient's new state after an attempt.
#[derive(Debug, Clone)]
pub struct Update<'a> {
    /// Position in the queue file's envelope.
    pub index: u32,
    /// `Deferred`, `Delivered` or `Bounced` (`Queued` and `Active` are
    /// written by [`Index::insert`] and [`Index::set_active`] themselves).
    pub state: State,
    /// When to try again (for `Deferred`).
    pub next_attempt_ms: i64,
    /// The reason to record; `None` keeps the last one.
    pub error: Option<&'a str>,
}

/// The open index.
pub struct Index {
    conn: Connection,
}

impl Index {
    /// Opens (creating if needed) the index at `path`.
    pub fn open(path: &Path) -> rusqlite::Result<Index> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // The files are the truth: losing the last index transactions in a
        // power cut costs a repeated attempt, never mail.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version != 0 && version != crate::SCHEMA_VERSION {
            return Err(rusqlite::Error::InvalidParameterName(format!(
                "index schema version {version}, expected {}: delete the index while Sluice is stopped to rebuild it",
                crate::SCHEMA_VERSION
            )));
        }
        conn.execute_batch(crate::SCHEMA)?;
        conn.pragma_update(None, "user_version", crate::SCHEMA_VERSION)?;
        Ok(Index { conn })
    }

    /// Queue IDs the index knows.
    pub fn ids(&self) -> rusqlite::Result<HashSet<String>> {
        let mut stmt = self.conn.prepare("SELECT id FROM message")?;
        let ids = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<_, _>>()?;
        Ok(ids)
    }

    /// Whether the index knows this message.
    pub fn contains(&self, id: &str) -> rusqlite::Result<bool> {
        self.conn
            .query_row("SELECT 1 FROM message WHERE id = ?1", [id], |_| Ok(()))
            .optional()
            .map(|r| r.is_some())
    }

    /// Inserts messages (idempotent: known IDs are skipped), in one
    /// transaction. Returns how many were new.
    pub fn insert(&mut self, messages: &[NewMessage], now_ms: i64) -> rusqlite::Result<usize> {
        let tx = self.conn.transaction()?;
        let mut added = 0;
        {
            let mut msg = tx.prepare_cached(
                "INSERT OR IGNORE INTO message (id, arrival, sender, size, hold) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut rcpt = tx.prepare_cached(
                "INSERT OR IGNORE INTO recipient (message_id, idx, address, domain, transport, next_hop, state, next_attempt)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', ?7)",
            )?;
            for m in messages {
                if msg.execute(params![m.id, m.arrival_ms, m.sender, m.size as i64, m.hold])? == 0 {
                    continue;
                }
                added += 1;
                for r in &m.recipients {
                    rcpt.execute(params![
                        m.id,
                        r.index,
                        r.address,
                        r.domain,
                        r.transport,
                        r.next_hop,
                        now_ms
                    ])?;
                }
            }
        }
        tx.commit()?;
        Ok(added)
    }

    /// Drops a message and its recipients.
    pub fn forget(&mut self, id: &str) -> rusqlite::Result<()> {
        self.conn
            .execute("DELETE FROM message WHERE id = ?1", [id])?;
        Ok(())
    }

    /// After a restart nothing is active any more: what was handed out is
    /// due again (delivery is at least once).
    pub fn reset_active(&mut self, now_ms: i64) -> rusqlite::Result<usize> {
        self.conn.execute(
            "UPDATE recipient SET state = 'deferred', next_attempt = ?1 WHERE state = 'active'",
            [now_ms],
        )
    }

    /// Recipients of `transport` due at `now_ms`, oldest first, at most
    /// `limit`. Each waiting state is read in `recipient_schedule` index
    /// order and stops at `limit`, so the cost follows `limit`, not the
    /// size of the queue (a 100,000-message backlog drains at full speed).
    pub fn due(&self, transport: &str, now_ms: i64, limit: usize) -> rusqlite::Result<Vec<Due>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT r.message_id, m.arrival, {}
             FROM recipient r INDEXED BY recipient_schedule JOIN message m ON m.id = r.message_id
             WHERE r.transport = ?1 AND r.state = ?2 AND r.next_attempt <= ?3 AND m.hold = 0
             ORDER BY r.next_attempt
             LIMIT ?4",
            RecipientRow::COLUMNS
        ))?;
        let mut rows = Vec::new();
        for state in WAITING {
            let found = stmt.query_map(params![transport, state, now_ms, limit as i64], |r| {
                Ok(Due {
                    message_id: r.get(0)?,
                    arrival_ms: r.get(1)?,
                    recipient: RecipientRow::from_row(r, 2)?,
                })
            })?;
            for row in found {
                rows.push(row?);
            }
        }
        rows.sort_by(|a, b| {
            (
                a.recipient.next_attempt_ms,
                &a.message_id,
                a.recipient.index,
            )
                .cmp(&(
                    b.recipient.next_attempt_ms,
                    &b.message_id,
                    b.recipient.index,
                ))
        });
        rows.truncate(limit);
        Ok(rows)
    }

    /// The earliest next attempt of a waiting recipient of `transport` not
    /// on hold (index order, first match: cheap at any queue size).
    pub fn next_due(&self, transport: &str) -> rusqlite::Result<Option<i64>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT r.next_attempt FROM recipient r INDEXED BY recipient_schedule
             JOIN message m ON m.id = r.message_id
             WHERE r.transport = ?1 AND r.state = ?2 AND m.hold = 0
             ORDER BY r.next_attempt LIMIT 1",
        )?;
        let mut earliest: Option<i64> = None;
        for state in WAITING {
            let at: Option<i64> = stmt
                .query_row(params![transport, state], |r| r.get(0))
                .optional()?;
            earliest = match (earliest, at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(earliest)
    }

    /// Marks recipients as handed to an agent.
    pub fn set_active(&mut self, message_id: &str, indexes: &[u32]) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE recipient SET state = 'active' WHERE message_id = ?1 AND idx = ?2",
            )?;
            for i in indexes {
                stmt.execute(params![message_id, i])?;
            }
        }
        tx.commit()
    }

    /// Records new states for some recipients of a message. With
    /// `count_attempt`, deferred ones count a failed attempt.
    pub fn record(
        &mut self,
        message_id: &str,
        updates: &[Update<'_>],
        count_attempt: bool,
    ) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE recipient SET state = ?3, next_attempt = ?4,
                    last_error = COALESCE(?5, last_error),
                    attempts = attempts + (CASE WHEN ?3 = 'deferred' AND ?6 THEN 1 ELSE 0 END)
                 WHERE message_id = ?1 AND idx = ?2",
            )?;
            for u in updates {
                stmt.execute(params![
                    message_id,
                    u.index,
                    u.state,
                    u.next_attempt_ms,
                    u.error,
                    count_attempt
                ])?;
            }
        }
        tx.commit()
    }

    /// How many recipients of a message still wait or are being tried.
    pub fn unfinished(&self, message_id: &str) -> rusqlite::Result<u32> {
        self.conn.query_row(
            "SELECT COUNT(*) FROM recipient WHERE message_id = ?1 AND state IN ('queued', 'active', 'deferred')",
            [message_id],
            |r| r.get(0),
        )
    }

    /// Whether a delay notice was already sent for a message, and marks it.
    pub fn take_delay_warning(&mut self, message_id: &str) -> rusqlite::Result<bool> {
        let changed = self.conn.execute(
            "UPDATE message SET delay_warned = 1 WHERE id = ?1 AND delay_warned = 0",
            [message_id],
        )?;
        Ok(changed == 1)
    }

    /// Waiting recipients of messages that arrived before `cutoff_ms`: those
    /// past the queue lifetime, as `(message, index, arrival)`.
    pub fn expired(&self, cutoff_ms: i64) -> rusqlite::Result<Vec<(String, u32, i64)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT r.message_id, r.idx, m.arrival FROM recipient r JOIN message m ON m.id = r.message_id
             WHERE r.state IN ('queued', 'deferred') AND m.arrival < ?1",
        )?;
        let rows = stmt
            .query_map([cutoff_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// A message's envelope sender (empty for `<>`), if the index knows
    /// the message.
    pub fn sender(&self, message_id: &str) -> rusqlite::Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT sender FROM message WHERE id = ?1",
                [message_id],
                |r| r.get(0),
            )
            .optional()
    }

    /// One recipient of a message.
    pub fn recipient(
        &self,
        message_id: &str,
        index: u32,
    ) -> rusqlite::Result<Option<RecipientRow>> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {} FROM recipient r WHERE r.message_id = ?1 AND r.idx = ?2",
                    RecipientRow::COLUMNS
                ),
                params![message_id, index],
                |r| RecipientRow::from_row(r, 0),
            )
            .optional()
    }

    /// Messages with a recipient in `domain` (lower case, no final dot).
    pub fn in_domain(&self, domain: &str) -> rusqlite::Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT DISTINCT message_id FROM recipient WHERE domain = ?1")?;
        let rows = stmt
            .query_map([domain], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Sets or clears hold on messages.
    pub fn set_hold(&mut self, ids: &[String], hold: bool) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached("UPDATE message SET hold = ?2 WHERE id = ?1")?;
            for id in ids {
                stmt.execute(params![id, hold])?;
            }
        }
        tx.commit()
    }

    /// Makes waiting recipients of messages due now (flush); with
    /// `domain`, only those in it.
    pub fn make_due(
        &mut self,
        ids: &[String],
        domain: Option<&str>,
        now_ms: i64,
    ) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE recipient SET next_attempt = ?2
                 WHERE message_id = ?1 AND state IN ('queued', 'deferred') AND (?3 IS NULL OR domain = ?3)",
            )?;
            for id in ids {
                stmt.execute(params![id, now_ms, domain])?;
            }
        }
        tx.commit()
    }

    /// Re-routes a waiting recipient (requeue).
    pub fn reroute(
        &mut self,
        message_id: &str,
        index: u32,
        transport: &str,
        next_hop: &str,
    ) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE recipient SET transport = ?3, next_hop = ?4 WHERE message_id = ?1 AND idx = ?2",
            params![message_id, index, transport, next_hop],
        )?;
        Ok(())
    }

    /// Waiting recipients of a message, for requeue: `(index, address)`.
    pub fn waiting(&self, message_id: &str) -> rusqlite::Result<Vec<(u32, String)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT idx, address FROM recipient WHERE message_id = ?1 AND state IN ('queued', 'deferred')",
        )?;
        let rows = stmt
            .query_map([message_id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, arrival: i64, rcpts: &[&str]) -> NewMessage {
        NewMessage {
            id: id.into(),
            arrival_ms: arrival,
            sender: "s@x.test".into(),
            size: 10,
            hold: false,
            recipients: rcpts
                .iter()
                .enumerate()
                .map(|(i, a)| NewRecipient {
                    index: i as u32,
                    address: (*a).into(),
                    domain: a.rsplit('@').next().unwrap_or("").into(),
                    transport: "smtp".into(),
                    next_hop: "[127.0.0.1]:25".into(),
                })
                .collect(),
        }
    }

    #[test]
    fn insert_is_idempotent_and_due_follows_time_and_hold() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = Index::open(&dir.path().join("index.sqlite")).unwrap();
        let m = message("A", 1, &["a@r.test", "b@r.test"]);
        assert_eq!(index.insert(std::slice::from_ref(&m), 100).unwrap(), 1);
        assert_eq!(index.insert(&[m], 100).unwrap(), 0);
        assert_eq!(index.due("smtp", 99, 10).unwrap().len(), 0);
        assert_eq!(index.due("smtp", 100, 10).unwrap().len(), 2);
        assert!(index.due("local", 100, 10).unwrap().is_empty());
        index.set_hold(&["A".into()], true).unwrap();
        assert!(index.due("smtp", 100, 10).unwrap().is_empty());
        assert_eq!(index.next_due("smtp").unwrap(), None);
        index.set_hold(&["A".into()], false).unwrap();
        assert_eq!(index.next_due("smtp").unwrap(), Some(100));
    }

    #[test]
    fn outcomes_finish_a_message() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = Index::open(&dir.path().join("index.sqlite")).unwrap();
        index
            .insert(&[message("A", 1, &["a@r.test", "b@r.test"])], 0)
            .unwrap();
        index.set_active("A", &[0, 1]).unwrap();
        assert!(
            index.due("smtp", 0, 10).unwrap().is_empty(),
            "active is not due"
        );
        index
            .record(
                "A",
                &[
                    Update {
                        index: 0,
                        state: State::Delivered,
                        next_attempt_ms: 0,
                        error: None,
                    },
                    Update {
                        index: 1,
                        state: State::Deferred,
                        next_attempt_ms: 500,
                        error: Some("451 later"),
                    },
                ],
                true,
            )
            .unwrap();
        assert_eq!(index.unfinished("A").unwrap(), 1);
        let due = index.due("smtp", 500, 10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].recipient.attempts, 1);
        let row = index.recipient("A", 1).unwrap().unwrap();
        assert_eq!(row.last_error.as_deref(), Some("451 later"));
        assert_eq!((row.state, row.attempts), (State::Deferred, 1));
        index
            .record(
                "A",
                &[Update {
                    index: 1,
                    state: State::Bounced,
                    next_attempt_ms: 0,
                    error: Some("550 no"),
                }],
                true,
            )
            .unwrap();
        assert_eq!(index.unfinished("A").unwrap(), 0);
        assert_eq!(index.sender("A").unwrap().as_deref(), Some("s@x.test"));
        index.forget("A").unwrap();
        assert_eq!(index.sender("A").unwrap(), None);
        assert!(index.ids().unwrap().is_empty());
    }

    #[test]
    fn scheduling_queries_walk_the_schedule_index_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = Index::open(&dir.path().join("index.sqlite")).unwrap();
        let many: Vec<NewMessage> = (0..2000)
            .map(|i| message(&format!("M{i:05}"), i, &["a@r.test"]))
            .collect();
        index.insert(&many, 1_000).unwrap();
        index
            .record(
                "M00007",
                &[Update {
                    index: 0,
                    state: State::Deferred,
                    next_attempt_ms: 10,
                    error: None,
                }],
                true,
            )
            .unwrap();
        // The deferred one (due at 10) comes before the queued ones (1000).
        let due = index.due("smtp", 5_000, 1).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].message_id, "M00007");
        assert_eq!(index.next_due("smtp").unwrap(), Some(10));
        let plan: Vec<String> = index
            .conn
            .prepare(
                "EXPLAIN QUERY PLAN SELECT r.next_attempt FROM recipient r INDEXED BY recipient_schedule
                 JOIN message m ON m.id = r.message_id
                 WHERE r.transport = 'smtp' AND r.state = 'queued' AND m.hold = 0
                 ORDER BY r.next_attempt LIMIT 1",
            )
            .unwrap()
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let text = plan.join(" | ");
        assert!(text.contains("recipient_schedule"), "{text}");
        assert!(
            !text.contains("TEMP B-TREE"),
            "no sort of the whole queue: {text}"
        );
    }

    #[test]
    fn restart_makes_active_recipients_due_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        {
            let mut index = Index::open(&path).unwrap();
            index.insert(&[message("A", 1, &["a@r.test"])], 0).unwrap();
            index.set_active("A", &[0]).unwrap();
        }
        let mut index = Index::open(&path).unwrap();
        assert_eq!(index.reset_active(7).unwrap(), 1);
        assert_eq!(index.due("smtp", 7, 10).unwrap().len(), 1);
    }
}

//! The queue listing: one SQL query over `index.sqlite`, streamed out as
//! mailq text or as one JSON object per message (`postqueue -j` shape).
//!
//! Messages come oldest first (arrival, then queue ID). SQLite walks the
//! `message_arrival` index and looks each message's recipients up by
//! primary key, so the whole queue is never sorted, and each message is
//! printed as soon as its last recipient row is read: 100,000 queued
//! messages cost neither a big sort nor the whole listing in memory. The
//! join order is pinned (`CROSS JOIN`, and `+r.state` keeps the state
//! index out of it) because without statistics SQLite would rather scan
//! recipients and sort. Filters are SQL conditions; the domain filter goes
//! through the `recipient_domain` index.
//!
//! # Must never
//! Write to the index, read a queue file or scan a directory (a listing
//! must stay fast on a large queue), or list a recipient that is already
//! delivered or bounced.
//!
//! # Security
//! Addresses and error texts come from remote peers: control characters are
//! replaced before they reach the operator's terminal.
//!
//! # Errors
//! SQLite errors end the listing (exit 1); a closed stdout (`mailq | head`)
//! ends it quietly.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use crate::localtime::LocalTime;

/// The index schema this tool reads (the queue manager's `user_version`).
const SCHEMA_VERSION: i64 = 1;

/// Recipient states still waiting for delivery, as SQL.
const PENDING: &str = "('queued', 'active', 'deferred')";

/// The column header of the mailq format.
const HEADER: &str = "-Queue ID-            --Size-- ----Arrival Time---- -Sender/Recipient-------";
/// Where recipients start in the mailq format.
const RECIPIENT_COLUMN: usize = 51;
/// Where a recipient's last error starts in the mailq format.
const REASON_COLUMN: usize = 34;

/// Which queue a message is in, as Postfix names them. A message is `hold`
/// when held; else `active` when a recipient is being delivered; else
/// `deferred` when a recipient was tried and waits; else `incoming`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum QueueName {
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
    /// The name as `postqueue -j` and `--state` spell it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            QueueName::Active => "active",
            QueueName::Deferred => "deferred",
            QueueName::Hold => "hold",
            QueueName::Incoming => "incoming",
        }
    }

    /// The SQL condition on `message m` selecting this queue.
    fn condition(self) -> String {
        let with = |state: &str| {
            format!("m.id IN (SELECT message_id FROM recipient WHERE state = '{state}')")
        };
        match self {
            QueueName::Hold => "m.hold = 1".to_owned(),
            QueueName::Active => format!("m.hold = 0 AND {}", with("active")),
            QueueName::Deferred => format!(
                "m.hold = 0 AND {} AND NOT {}",
                with("deferred"),
                with("active")
            ),
            QueueName::Incoming => format!(
                "m.hold = 0 AND NOT {} AND NOT {}",
                with("deferred"),
                with("active")
            ),
        }
    }
}

/// What to list. Every filter must hold; each keeps or drops whole
/// messages (a kept message shows all its waiting recipients).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Filter {
    /// Messages with a waiting recipient in this domain (exact, any case).
    pub(crate) domain: Option<String>,
    /// Messages whose sender contains this text (any case); `<>` or
    /// `MAILER-DAEMON` select the null sender only.
    pub(crate) sender: Option<String>,
    /// Messages with a waiting recipient whose address contains this text
    /// (any case).
    pub(crate) recipient: Option<String>,
    /// Messages in this queue.
    pub(crate) state: Option<QueueName>,
}

impl Filter {
    fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    /// The listing query and its parameters.
    pub(crate) fn query(&self) -> (String, Vec<String>) {
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

/// How to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// The mailq text operators know.
    Mailq,
    /// One JSON object per line (`postqueue -j`).
    Json,
}

/// The index file in a spool.
pub(crate) fn index_path(spool_dir: &Path) -> PathBuf {
    spool_dir.join("index.sqlite")
}

/// Opens the index read-only, or `None` when there is none yet (no mail
/// has been queued since the spool was made).
pub(crate) fn open_index(spool_dir: &Path) -> anyhow::Result<Option<Connection>> {
    let path = index_path(spool_dir);
    match std::fs::metadata(&path) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow::anyhow!("{}: {e}", path.display())),
    }
    let open = || -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        Ok(conn)
    };
    let conn = open().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    // 0: the queue manager has created the file but not the schema yet.
    if version != 0 && version != SCHEMA_VERSION {
        anyhow::bail!(
            "{}: index schema version {version}; this sluice-queue reads version {SCHEMA_VERSION}",
            path.display()
        );
    }
    Ok(Some(conn))
}

/// One waiting recipient of a listed message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Recipient {
    address: String,
    state: String,
    last_error: Option<String>,
}

/// One listed message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    id: String,
    arrival_ms: i64,
    size: i64,
    sender: String,
    hold: bool,
    recipients: Vec<Recipient>,
}

impl Entry {
    fn queue_name(&self) -> QueueName {
        queue_name_of(self.hold, self.recipients.iter().map(|r| r.state.as_str()))
            .unwrap_or(QueueName::Incoming)
    }
}

/// The queue of a message from its hold flag and its recipients' states;
/// `None` when no recipient is waiting any more. The same rule as
/// [`QueueName::condition`].
pub(crate) fn queue_name_of<'a>(
    hold: bool,
    states: impl Iterator<Item = &'a str>,
) -> Option<QueueName> {
    let (mut pending, mut active, mut deferred) = (false, false, false);
    for state in states {
        match state {
            "active" => active = true,
            "deferred" => deferred = true,
            "queued" => {}
            _ => continue,
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

/// The JSON form of one message, field names as `postqueue -j`.
#[derive(Serialize)]
struct JsonEntry<'a> {
    queue_name: &'static str,
    queue_id: &'a str,
    arrival_time: i64,
    message_size: i64,
    sender: &'a str,
    recipients: Vec<JsonRecipient<'a>>,
}

#[derive(Serialize)]
struct JsonRecipient<'a> {
    address: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    delay_reason: Option<&'a str>,
}

/// Writes the listing as it is read. Returns the number of messages.
pub(crate) fn write_listing(
    conn: Option<&Connection>,
    filter: &Filter,
    format: Format,
    clock: &mut LocalTime,
    out: &mut dyn Write,
) -> anyhow::Result<u64> {
    let mut printer = Printer {
        format,
        clock,
        out,
        messages: 0,
        bytes: 0,
    };
    if let Some(conn) = conn {
        let (sql, params) = filter.query();
        let mut stmt = conn.prepare(&sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
        let mut current: Option<Entry> = None;
        while let Some(row) = rows.next()? {
            let id: String = row.get(0)?;
            let recipient = Recipient {
                address: row.get(5)?,
                state: row.get(6)?,
                last_error: row.get(7)?,
            };
            match &mut current {
                Some(entry) if entry.id == id => entry.recipients.push(recipient),
                _ => {
                    if let Some(done) = current.take() {
                        printer.entry(&done)?;
                    }
                    current = Some(Entry {
                        id,
                        arrival_ms: row.get(1)?,
                        size: row.get(2)?,
                        sender: row.get(3)?,
                        hold: row.get::<_, i64>(4)? != 0,
                        recipients: vec![recipient],
                    });
                }
            }
        }
        if let Some(done) = current.take() {
            printer.entry(&done)?;
        }
    }
    printer.finish(filter)?;
    Ok(printer.messages)
}

struct Printer<'a> {
    format: Format,
    clock: &'a mut LocalTime,
    out: &'a mut dyn Write,
    messages: u64,
    bytes: u64,
}

impl Printer<'_> {
    fn entry(&mut self, entry: &Entry) -> io::Result<()> {
        if self.messages == 0 && self.format == Format::Mailq {
            writeln!(self.out, "{HEADER}")?;
        }
        self.messages += 1;
        self.bytes += u64::try_from(entry.size).unwrap_or(0);
        match self.format {
            Format::Mailq => self.mailq(entry),
            Format::Json => self.json(entry),
        }
    }

    fn mailq(&mut self, entry: &Entry) -> io::Result<()> {
        let mark = match entry.queue_name() {
            QueueName::Hold => '!',
            QueueName::Active => '*',
            QueueName::Deferred | QueueName::Incoming => ' ',
        };
        let sender = if entry.sender.is_empty() {
            std::borrow::Cow::Borrowed("MAILER-DAEMON")
        } else {
            printable(&entry.sender)
        };
        writeln!(
            self.out,
            "{:<20}{mark}{:>8} {:<20} {sender}",
            printable(&entry.id),
            entry.size,
            self.clock.short(entry.arrival_ms),
        )?;
        for r in &entry.recipients {
            writeln!(
                self.out,
                "{:RECIPIENT_COLUMN$}{}",
                "",
                printable(&r.address)
            )?;
            if let Some(reason) = &r.last_error {
                writeln!(self.out, "{:REASON_COLUMN$}({})", "", printable(reason))?;
            }
        }
        writeln!(self.out)
    }

    fn json(&mut self, entry: &Entry) -> io::Result<()> {
        let record = JsonEntry {
            queue_name: entry.queue_name().as_str(),
            queue_id: &entry.id,
            arrival_time: entry.arrival_ms.div_euclid(1000),
            message_size: entry.size,
            sender: &entry.sender,
            recipients: entry
                .recipients
                .iter()
                .map(|r| JsonRecipient {
                    address: &r.address,
                    delay_reason: r.last_error.as_deref(),
                })
                .collect(),
        };
        serde_json::to_writer(&mut *self.out, &record)?;
        writeln!(self.out)
    }

    fn finish(&mut self, filter: &Filter) -> io::Result<()> {
        if self.format == Format::Json {
            return self.out.flush();
        }
        if self.messages == 0 && filter.is_empty() {
            writeln!(self.out, "Mail queue is empty")?;
        } else {
            let kbytes = self.bytes.div_ceil(1024);
            let plural = if self.messages == 1 { "" } else { "s" };
            writeln!(
                self.out,
                "-- {kbytes} Kbytes in {} Request{plural}.",
                self.messages
            )?;
        }
        self.out.flush()
    }
}

/// Text from peers made safe for a terminal: control characters become `?`.
/// Borrowed when there is nothing to replace (nearly always: the listing
/// of 100,000 messages spends its time here otherwise).
pub(crate) fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    std::borrow::Cow::Owned(
        s.chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdb::{self, Fixture};
    use time::UtcOffset;

    fn list(conn: Option<&Connection>, filter: &Filter, format: Format) -> String {
        let mut out = Vec::new();
        let mut clock = LocalTime::fixed(UtcOffset::UTC);
        write_listing(conn, filter, format, &mut clock, &mut out).expect("listing");
        String::from_utf8(out).expect("utf-8")
    }

    fn ids(json: &str) -> Vec<String> {
        json.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json line");
                v["queue_id"].as_str().expect("queue_id").to_owned()
            })
            .collect()
    }

    #[test]
    fn mailq_text_matches_the_postfix_layout() {
        let f = Fixture::standard();
        let text = list(Some(&f.reader()), &Filter::default(), Format::Mailq);
        let expected = format!(
            "\
-Queue ID-            --Size-- ----Arrival Time---- -Sender/Recipient-------
{a}      180 Sat Nov 28 23:01:36  me@client.test
                                                   you@relay.test
                                                   other@relay.test
                                  (451 4.3.0 try again later)

{b}*    2048 Sat Nov 28 23:02:00  alice@example.org
                                                   bob@remote.test

{c}!     500 Sat Nov 28 23:03:00  MAILER-DAEMON
                                                   carol@relay.test

{d}      100 Sat Nov 28 23:04:00  x@example.org
                                                   dave@remote.test
                                  (connect to remote.test: timed out?[31m)

-- 3 Kbytes in 4 Requests.
",
            a = testdb::ID_PARTLY_DEFERRED,
            b = testdb::ID_ACTIVE,
            c = testdb::ID_HELD,
            d = testdb::ID_DEFERRED,
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn json_has_the_postqueue_fields() {
        let f = Fixture::standard();
        let text = list(Some(&f.reader()), &Filter::default(), Format::Json);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[0],
            serde_json::json!({
                "queue_name": "deferred",
                "queue_id": testdb::ID_PARTLY_DEFERRED,
                "arrival_time": 1_606_604_496,
                "message_size": 180,
                "sender": "me@client.test",
                "recipients": [
                    {"address": "you@relay.test"},
                    {"address": "other@relay.test", "delay_reason": "451 4.3.0 try again later"},
                ],
            })
        );
        assert_eq!(lines[1]["queue_name"], "active");
        assert_eq!(lines[2]["queue_name"], "hold");
        assert_eq!(lines[2]["sender"], "");
        assert_eq!(lines[3]["queue_name"], "deferred");
        assert_eq!(
            lines[3]["recipients"][0]["delay_reason"],
            "connect to remote.test: timed out\u{1b}[31m"
        );
    }

    #[test]
    fn delivered_and_bounced_recipients_and_finished_messages_are_not_listed() {
        let f = Fixture::standard();
        let text = list(Some(&f.reader()), &Filter::default(), Format::Mailq);
        assert!(!text.contains("delivered@relay.test"), "{text}");
        assert!(!text.contains("bounced@relay.test"), "{text}");
        assert!(!text.contains(testdb::ID_FINISHED), "{text}");
    }

    #[test]
    fn incoming_state_is_a_message_never_tried() {
        let f = Fixture::standard();
        f.writer()
            .execute(
                "UPDATE recipient SET state = 'queued', last_error = NULL WHERE message_id = ?1",
                [testdb::ID_PARTLY_DEFERRED],
            )
            .expect("update");
        let filter = Filter {
            state: Some(QueueName::Incoming),
            ..Filter::default()
        };
        let json = list(Some(&f.reader()), &filter, Format::Json);
        assert_eq!(ids(&json), [testdb::ID_PARTLY_DEFERRED]);
        assert!(json.contains(r#""queue_name":"incoming""#), "{json}");
    }

    #[test]
    fn every_filter_selects_in_sql() {
        let f = Fixture::standard();
        let conn = f.reader();
        let cases = [
            (
                Filter {
                    domain: Some("Remote.Test.".into()),
                    ..Filter::default()
                },
                vec![testdb::ID_ACTIVE, testdb::ID_DEFERRED],
            ),
            (
                // bounced@relay.test is done, so its domain does not count.
                Filter {
                    domain: Some("gone.test".into()),
                    ..Filter::default()
                },
                vec![],
            ),
            (
                Filter {
                    sender: Some("EXAMPLE.org".into()),
                    ..Filter::default()
                },
                vec![testdb::ID_ACTIVE, testdb::ID_DEFERRED],
            ),
            (
                Filter {
                    sender: Some("<>".into()),
                    ..Filter::default()
                },
                vec![testdb::ID_HELD],
            ),
            (
                Filter {
                    sender: Some("mailer-daemon".into()),
                    ..Filter::default()
                },
                vec![testdb::ID_HELD],
            ),
            (
                Filter {
                    recipient: Some("carol".into()),
                    ..Filter::default()
                },
                vec![testdb::ID_HELD],
            ),
            (
                Filter {
                    recipient: Some("delivered@".into()),
                    ..Filter::default()
                },
                vec![],
            ),
            (
                Filter {
                    state: Some(QueueName::Active),
                    ..Filter::default()
                },
                vec![testdb::ID_ACTIVE],
            ),
            (
                Filter {
                    state: Some(QueueName::Hold),
                    ..Filter::default()
                },
                vec![testdb::ID_HELD],
            ),
            (
                Filter {
                    state: Some(QueueName::Deferred),
                    ..Filter::default()
                },
                vec![testdb::ID_PARTLY_DEFERRED, testdb::ID_DEFERRED],
            ),
            (
                Filter {
                    state: Some(QueueName::Incoming),
                    ..Filter::default()
                },
                vec![],
            ),
            (
                Filter {
                    domain: Some("relay.test".into()),
                    state: Some(QueueName::Hold),
                    ..Filter::default()
                },
                vec![testdb::ID_HELD],
            ),
        ];
        for (filter, expected) in cases {
            let json = list(Some(&conn), &filter, Format::Json);
            assert_eq!(ids(&json), expected, "{filter:?}");
        }
    }

    #[test]
    fn a_filtered_listing_with_no_match_does_not_claim_the_queue_is_empty() {
        let f = Fixture::standard();
        let filter = Filter {
            domain: Some("nowhere.test".into()),
            ..Filter::default()
        };
        let text = list(Some(&f.reader()), &filter, Format::Mailq);
        assert_eq!(text, "-- 0 Kbytes in 0 Requests.\n");
    }

    #[test]
    fn empty_and_missing_index() {
        let f = Fixture::empty();
        assert_eq!(
            list(Some(&f.reader()), &Filter::default(), Format::Mailq),
            "Mail queue is empty\n"
        );
        assert_eq!(
            list(Some(&f.reader()), &Filter::default(), Format::Json),
            ""
        );
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(open_index(dir.path()).expect("open").is_none());
        assert!(open_index(f.spool()).expect("open").is_some());
        f.writer()
            .pragma_update(None, "user_version", 2)
            .expect("user_version");
        let e = open_index(f.spool()).expect_err("newer schema");
        assert!(e.to_string().contains("schema version 2"), "{e}");
        assert_eq!(
            list(None, &Filter::default(), Format::Mailq),
            "Mail queue is empty\n"
        );
    }

    #[test]
    fn a_hundred_thousand_messages_list_and_the_domain_filter_uses_its_index() {
        let f = Fixture::empty();
        f.fill_bulk(100_000);
        let conn = f.reader();
        let text = list(Some(&conn), &Filter::default(), Format::Mailq);
        assert!(
            text.ends_with("-- 100000 Kbytes in 100000 Requests.\n"),
            "{}",
            &text[text.len().saturating_sub(200)..]
        );
        let json = list(Some(&conn), &Filter::default(), Format::Json);
        assert_eq!(json.lines().count(), 100_000);

        let filter = Filter {
            domain: Some("d7.test".into()),
            ..Filter::default()
        };
        let json = list(Some(&conn), &filter, Format::Json);
        assert_eq!(json.lines().count(), 1_000);

        let (sql, params) = filter.query();
        let plan = query_plan(&conn, &sql, &params);
        assert!(plan.contains("recipient_domain"), "{plan}");
        assert!(!plan.contains("SCAN r\n"), "{plan}");
        assert!(!plan.contains("SCAN recipient\n"), "{plan}");
        // The unfiltered listing walks messages in arrival order through
        // an index: no sort of the whole queue (at most of one message's
        // recipients), so rows stream out as they are read.
        let (sql, params) = Filter::default().query();
        let plan = query_plan(&conn, &sql, &params);
        assert!(!plan.contains("TEMP B-TREE FOR ORDER BY"), "{plan}");
        assert!(!plan.contains("SCAN r"), "{plan}");
    }

    fn query_plan(conn: &Connection, sql: &str, params: &[String]) -> String {
        let mut stmt = conn
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
}

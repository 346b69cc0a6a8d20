//! Test data: a real `index.sqlite` made with the queue manager's own
//! schema, read from `crates/qmgr/src/index.rs` at compile time, so these
//! tests break when the schema changes and the tool no longer agrees.
//! Shared by the unit tests and (through `#[path]`) the binary's tests.
//!
//! # Must never
//! Be compiled outside tests, or carry its own copy of the schema.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OpenFlags};

/// The queue manager's index module, as source text.
const QMGR_INDEX_RS: &str = include_str!("../../qmgr/src/index.rs");

/// Deferred: one recipient waits untried, one deferred with an error, one
/// delivered. Arrived Sat Nov 28 23:01:36 2020 UTC, 180 bytes.
pub(crate) const ID_PARTLY_DEFERRED: &str = "0HOLG8L24XA000010001";
/// Active: one recipient being delivered, one bounced.
pub(crate) const ID_ACTIVE: &str = "0HOLG8L24XB000010002";
/// Held, from `<>`; its recipient is deferred without an error.
pub(crate) const ID_HELD: &str = "0HOLG8L24XC000010003";
/// Deferred, with an error text carrying an escape sequence.
pub(crate) const ID_DEFERRED: &str = "0HOLG8L24XD000010004";
/// Every recipient done: not listed.
pub(crate) const ID_FINISHED: &str = "0HOLG8L24XE000010005";

/// Arrival of [`ID_PARTLY_DEFERRED`] in milliseconds.
pub(crate) const FIRST_ARRIVAL_MS: i64 = 1_606_604_496_000;

/// The `SCHEMA` constant's SQL in the queue manager's source.
pub(crate) fn qmgr_schema() -> &'static str {
    let start_marker = "const SCHEMA: &str = \"";
    let start = QMGR_INDEX_RS
        .find(start_marker)
        .expect("qmgr/src/index.rs defines const SCHEMA")
        + start_marker.len();
    let len = QMGR_INDEX_RS[start..]
        .find("\";")
        .expect("SCHEMA ends with \";");
    &QMGR_INDEX_RS[start..start + len]
}

/// The `SCHEMA_VERSION` constant in the queue manager's source.
pub(crate) fn qmgr_schema_version() -> i64 {
    let marker = "const SCHEMA_VERSION: i64 = ";
    let start = QMGR_INDEX_RS
        .find(marker)
        .expect("qmgr/src/index.rs defines SCHEMA_VERSION")
        + marker.len();
    let len = QMGR_INDEX_RS[start..].find(';').expect("SCHEMA_VERSION ;");
    QMGR_INDEX_RS[start..start + len]
        .trim()
        .parse()
        .expect("SCHEMA_VERSION is a number")
}

/// A spool directory with an index in it.
pub(crate) struct Fixture {
    pub(crate) dir: tempfile::TempDir,
}

impl Fixture {
    /// An index with the schema and no messages.
    pub(crate) fn empty() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = Fixture { dir };
        let conn = f.writer();
        conn.pragma_update(None, "journal_mode", "WAL")
            .expect("wal");
        conn.execute_batch(qmgr_schema()).expect("qmgr schema");
        conn.pragma_update(None, "user_version", qmgr_schema_version())
            .expect("user_version");
        f
    }

    /// The messages described by the `ID_` constants.
    pub(crate) fn standard() -> Fixture {
        let f = Fixture::empty();
        let conn = f.writer();
        let t = FIRST_ARRIVAL_MS;
        add_message(&conn, ID_PARTLY_DEFERRED, t, "me@client.test", 180, false);
        add_recipient(
            &conn,
            ID_PARTLY_DEFERRED,
            0,
            "you@relay.test",
            "queued",
            0,
            None,
        );
        add_recipient(
            &conn,
            ID_PARTLY_DEFERRED,
            1,
            "other@relay.test",
            "deferred",
            2,
            Some("451 4.3.0 try again later"),
        );
        add_recipient(
            &conn,
            ID_PARTLY_DEFERRED,
            2,
            "delivered@relay.test",
            "delivered",
            0,
            None,
        );
        add_message(
            &conn,
            ID_ACTIVE,
            t + 24_000,
            "alice@example.org",
            2048,
            false,
        );
        add_recipient(&conn, ID_ACTIVE, 0, "bob@remote.test", "active", 0, None);
        add_recipient(
            &conn,
            ID_ACTIVE,
            1,
            "bounced@gone.test",
            "bounced",
            1,
            Some("550 5.1.1 no such user"),
        );
        add_message(&conn, ID_HELD, t + 84_000, "", 500, true);
        add_recipient(&conn, ID_HELD, 0, "carol@relay.test", "deferred", 0, None);
        add_message(&conn, ID_DEFERRED, t + 144_000, "x@example.org", 100, false);
        add_recipient(
            &conn,
            ID_DEFERRED,
            0,
            "dave@remote.test",
            "deferred",
            5,
            Some("connect to remote.test: timed out\u{1b}[31m"),
        );
        add_message(&conn, ID_FINISHED, t + 204_000, "y@example.org", 100, false);
        add_recipient(
            &conn,
            ID_FINISHED,
            0,
            "done@relay.test",
            "delivered",
            0,
            None,
        );
        f
    }

    /// Adds `count` messages of 1024 bytes, one recipient each, in 100
    /// domains `d0.test` .. `d99.test`, half of them deferred.
    pub(crate) fn fill_bulk(&self, count: u32) {
        let mut conn = self.writer();
        let tx = conn.transaction().expect("tx");
        {
            let mut msg = tx
                .prepare(
                    "INSERT INTO message (id, arrival, sender, size) VALUES (?1, ?2, ?3, 1024)",
                )
                .expect("prepare");
            let mut rcpt = tx
                .prepare(
                    "INSERT INTO recipient (message_id, idx, address, domain, transport, next_hop, state, next_attempt, last_error)
                     VALUES (?1, 0, ?2, ?3, 'smtp', ?3, ?4, 0, ?5)",
                )
                .expect("prepare");
            for i in 0..count {
                let id = format!("0HOLG8L24XZ{i:09}");
                let domain = format!("d{}.test", i % 100);
                let deferred = i % 2 == 1;
                msg.execute(params![
                    id,
                    FIRST_ARRIVAL_MS + i64::from(i),
                    format!("sender{i}@example.org")
                ])
                .expect("message");
                rcpt.execute(params![
                    id,
                    format!("user{i}@{domain}"),
                    domain,
                    if deferred { "deferred" } else { "queued" },
                    deferred.then_some("451 later"),
                ])
                .expect("recipient");
            }
        }
        tx.commit().expect("commit");
    }

    /// The spool directory.
    pub(crate) fn spool(&self) -> &Path {
        self.dir.path()
    }

    /// The index file.
    pub(crate) fn index(&self) -> PathBuf {
        self.dir.path().join("index.sqlite")
    }

    /// A read-write connection, as the queue manager has.
    pub(crate) fn writer(&self) -> Connection {
        Connection::open(self.index()).expect("open index")
    }

    /// A read-only connection, as the tool opens it.
    pub(crate) fn reader(&self) -> Connection {
        Connection::open_with_flags(self.index(), OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open index read-only")
    }
}

/// Inserts a message row.
pub(crate) fn add_message(
    conn: &Connection,
    id: &str,
    arrival_ms: i64,
    sender: &str,
    size: i64,
    hold: bool,
) {
    conn.execute(
        "INSERT INTO message (id, arrival, sender, size, hold) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, arrival_ms, sender, size, hold],
    )
    .expect("insert message");
}

/// Inserts a recipient row; the domain is the address's, next attempt an
/// hour after [`FIRST_ARRIVAL_MS`].
pub(crate) fn add_recipient(
    conn: &Connection,
    id: &str,
    idx: u32,
    address: &str,
    state: &str,
    attempts: u32,
    last_error: Option<&str>,
) {
    let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
    conn.execute(
        "INSERT INTO recipient (message_id, idx, address, domain, transport, next_hop, state, attempts, next_attempt, last_error)
         VALUES (?1, ?2, ?3, ?4, 'smtp', ?4, ?5, ?6, ?7, ?8)",
        params![
            id,
            idx,
            address,
            domain,
            state,
            attempts,
            FIRST_ARRIVAL_MS + 3_600_000,
            last_error
        ],
    )
    .expect("insert recipient");
}

#[test]
fn the_schema_is_the_queue_managers() {
    let schema = qmgr_schema();
    assert!(schema.contains("CREATE TABLE IF NOT EXISTS message"));
    assert!(schema.contains("CREATE TABLE IF NOT EXISTS recipient"));
    assert!(schema.contains("recipient_domain ON recipient(domain)"));
    assert!(schema.contains("message_arrival ON message(arrival)"));
    assert_eq!(qmgr_schema_version(), 1);
    // The tool's listing query prepares against it.
    let f = Fixture::empty();
    let names: Vec<String> = f
        .reader()
        .prepare("SELECT name FROM sqlite_master ORDER BY name")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    for needed in [
        "message",
        "recipient",
        "recipient_domain",
        "message_arrival",
    ] {
        assert!(names.iter().any(|n| n == needed), "{needed} in {names:?}");
    }
}

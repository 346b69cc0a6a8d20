//! Test data: a real `index.sqlite` written through the queue manager's own
//! index API (`sluice_index::Index`), so these tests see exactly what the
//! queue manager writes. Shared by the unit tests and (through `#[path]`)
//! the binary's tests.
//!
//! # Must never
//! Be compiled outside tests, or write the index with SQL of its own.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use sluice_index::{Index, NewMessage, NewRecipient, Reader, State, Update};

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
/// Every recipient's next attempt: an hour after [`FIRST_ARRIVAL_MS`].
const NEXT_ATTEMPT_MS: i64 = FIRST_ARRIVAL_MS + 3_600_000;

/// What becomes of one recipient of a fixture message.
pub(crate) enum Then<'a> {
    /// Left as imported.
    Queued,
    /// Handed to an agent.
    Active,
    /// Failed `attempts` times, waiting, with this last error.
    Deferred(u32, Option<&'a str>),
    /// Delivered.
    Delivered,
    /// Failed once, then bounced with this error.
    Bounced(&'a str),
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
        drop(f.writer());
        f
    }

    /// The messages described by the `ID_` constants.
    pub(crate) fn standard() -> Fixture {
        let f = Fixture::empty();
        let t = FIRST_ARRIVAL_MS;
        f.add(
            ID_PARTLY_DEFERRED,
            t,
            "me@client.test",
            180,
            &[
                ("you@relay.test", Then::Queued),
                (
                    "other@relay.test",
                    Then::Deferred(2, Some("451 4.3.0 try again later")),
                ),
                ("delivered@relay.test", Then::Delivered),
            ],
        );
        f.add(
            ID_ACTIVE,
            t + 24_000,
            "alice@example.org",
            2048,
            &[
                ("bob@remote.test", Then::Active),
                ("bounced@gone.test", Then::Bounced("550 5.1.1 no such user")),
            ],
        );
        f.add(
            ID_HELD,
            t + 84_000,
            "",
            500,
            &[("carol@relay.test", Then::Deferred(0, None))],
        );
        f.writer()
            .set_hold(&[ID_HELD.to_owned()], true)
            .expect("hold");
        f.add(
            ID_DEFERRED,
            t + 144_000,
            "x@example.org",
            100,
            &[(
                "dave@remote.test",
                Then::Deferred(5, Some("connect to remote.test: timed out\u{1b}[31m")),
            )],
        );
        f.add(
            ID_FINISHED,
            t + 204_000,
            "y@example.org",
            100,
            &[("done@relay.test", Then::Delivered)],
        );
        f
    }

    /// Adds a message whose recipients (routed by SMTP to their domain)
    /// end up as `recipients` say.
    pub(crate) fn add(
        &self,
        id: &str,
        arrival_ms: i64,
        sender: &str,
        size: u64,
        recipients: &[(&str, Then<'_>)],
    ) {
        let mut index = self.writer();
        let message = NewMessage {
            id: id.to_owned(),
            arrival_ms,
            sender: sender.to_owned(),
            size,
            hold: false,
            recipients: recipients
                .iter()
                .enumerate()
                .map(|(i, (address, _))| new_recipient(i as u32, address))
                .collect(),
        };
        index
            .insert(&[message], NEXT_ATTEMPT_MS)
            .expect("insert message");
        for (i, (_, then)) in recipients.iter().enumerate() {
            let i = i as u32;
            let update = |state, error| Update {
                index: i,
                state,
                next_attempt_ms: NEXT_ATTEMPT_MS,
                error,
            };
            match then {
                Then::Queued => {}
                Then::Active => index.set_active(id, &[i]).expect("active"),
                Then::Deferred(attempts, error) => {
                    index
                        .record(id, &[update(State::Deferred, *error)], false)
                        .expect("deferred");
                    for _ in 0..*attempts {
                        index
                            .record(id, &[update(State::Deferred, None)], true)
                            .expect("attempt");
                    }
                }
                Then::Delivered => index
                    .record(id, &[update(State::Delivered, None)], true)
                    .expect("delivered"),
                Then::Bounced(error) => {
                    index
                        .record(id, &[update(State::Deferred, None)], true)
                        .expect("attempt");
                    index
                        .record(id, &[update(State::Bounced, Some(error))], true)
                        .expect("bounced");
                }
            }
        }
    }

    /// Adds `count` messages of 1024 bytes, one recipient each, in 100
    /// domains `d0.test` .. `d99.test`, half of them deferred.
    pub(crate) fn fill_bulk(&self, count: u32) {
        let mut index = self.writer();
        let messages: Vec<NewMessage> = (0..count)
            .map(|i| NewMessage {
                id: format!("0HOLG8L24XZ{i:09}"),
                arrival_ms: FIRST_ARRIVAL_MS + i64::from(i),
                sender: format!("sender{i}@example.org"),
                size: 1024,
                hold: false,
                recipients: vec![new_recipient(0, &format!("user{i}@d{}.test", i % 100))],
            })
            .collect();
        index.insert(&messages, NEXT_ATTEMPT_MS).expect("insert");
        for m in messages.iter().skip(1).step_by(2) {
            let update = Update {
                index: 0,
                state: State::Deferred,
                next_attempt_ms: NEXT_ATTEMPT_MS,
                error: Some("451 later"),
            };
            index.record(&m.id, &[update], true).expect("deferred");
        }
    }

    /// The spool directory.
    pub(crate) fn spool(&self) -> &Path {
        self.dir.path()
    }

    /// The index file.
    pub(crate) fn index(&self) -> PathBuf {
        sluice_index::path(self.dir.path())
    }

    /// The index opened as the queue manager opens it.
    pub(crate) fn writer(&self) -> Index {
        Index::open(&self.index()).expect("open index")
    }

    /// The index opened read-only, as the tool opens it.
    pub(crate) fn reader(&self) -> Option<Reader> {
        Reader::open(self.spool()).expect("open index read-only")
    }
}

fn new_recipient(index: u32, address: &str) -> NewRecipient {
    let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
    NewRecipient {
        index,
        address: address.to_owned(),
        domain: domain.to_owned(),
        transport: "smtp".to_owned(),
        next_hop: domain.to_owned(),
    }
}

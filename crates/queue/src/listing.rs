//! The queue listing: the index's listing query
//! ([`sluice_index::Reader::list`]), streamed out as mailq text or as one
//! JSON object per message (`postqueue -j` shape), each message printed as
//! soon as it is read.
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

use std::io::{self, Write};

use serde::Serialize;
use sluice_index::{Filter, Listed, QueueName, Reader};

use crate::localtime::LocalTime;

/// The column header of the mailq format.
const HEADER: &str = "-Queue ID-            --Size-- ----Arrival Time---- -Sender/Recipient-------";
/// Where recipients start in the mailq format.
const RECIPIENT_COLUMN: usize = 51;
/// Where a recipient's last error starts in the mailq format.
const REASON_COLUMN: usize = 34;

/// How to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// The mailq text operators know.
    Mailq,
    /// One JSON object per line (`postqueue -j`).
    Json,
}

/// Opens the index read-only, or `None` when there is none yet (no mail
/// has been queued since the spool was made).
pub(crate) fn open_index(spool_dir: &std::path::Path) -> anyhow::Result<Option<Reader>> {
    Ok(Reader::open(spool_dir)?)
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
    index: Option<&Reader>,
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
    if let Some(index) = index {
        index.list::<anyhow::Error>(filter, |entry| Ok(printer.entry(entry)?))?;
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
    fn entry(&mut self, entry: &Listed) -> io::Result<()> {
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

    fn mailq(&mut self, entry: &Listed) -> io::Result<()> {
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

    fn json(&mut self, entry: &Listed) -> io::Result<()> {
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

    fn list(index: Option<&Reader>, filter: &Filter, format: Format) -> String {
        let mut out = Vec::new();
        let mut clock = LocalTime::fixed(UtcOffset::UTC);
        write_listing(index, filter, format, &mut clock, &mut out).expect("listing");
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
        let text = list(f.reader().as_ref(), &Filter::default(), Format::Mailq);
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
        let text = list(f.reader().as_ref(), &Filter::default(), Format::Json);
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
        let text = list(f.reader().as_ref(), &Filter::default(), Format::Mailq);
        assert!(!text.contains("delivered@relay.test"), "{text}");
        assert!(!text.contains("bounced@relay.test"), "{text}");
        assert!(!text.contains(testdb::ID_FINISHED), "{text}");
    }

    #[test]
    fn incoming_state_is_a_message_never_tried() {
        let f = Fixture::standard();
        f.add(
            "0HOLG8L24XF000010006",
            testdb::FIRST_ARRIVAL_MS + 300_000,
            "new@example.org",
            10,
            &[("new@relay.test", testdb::Then::Queued)],
        );
        let filter = Filter {
            state: Some(QueueName::Incoming),
            ..Filter::default()
        };
        let json = list(f.reader().as_ref(), &filter, Format::Json);
        assert_eq!(ids(&json), ["0HOLG8L24XF000010006"]);
        assert!(json.contains(r#""queue_name":"incoming""#), "{json}");
    }

    #[test]
    fn every_filter_selects_in_sql() {
        let f = Fixture::standard();
        let index = f.reader();
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
            let json = list(index.as_ref(), &filter, Format::Json);
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
        let text = list(f.reader().as_ref(), &filter, Format::Mailq);
        assert_eq!(text, "-- 0 Kbytes in 0 Requests.\n");
    }

    #[test]
    fn empty_and_missing_index() {
        let f = Fixture::empty();
        assert_eq!(
            list(f.reader().as_ref(), &Filter::default(), Format::Mailq),
            "Mail queue is empty\n"
        );
        assert_eq!(
            list(f.reader().as_ref(), &Filter::default(), Format::Json),
            ""
        );
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(open_index(dir.path()).expect("open").is_none());
        assert_eq!(
            list(None, &Filter::default(), Format::Mailq),
            "Mail queue is empty\n"
        );
    }

    #[test]
    fn a_hundred_thousand_messages_list() {
        let f = Fixture::empty();
        f.fill_bulk(100_000);
        let index = f.reader();
        let text = list(index.as_ref(), &Filter::default(), Format::Mailq);
        assert!(
            text.ends_with("-- 100000 Kbytes in 100000 Requests.\n"),
            "{}",
            &text[text.len().saturating_sub(200)..]
        );
        let json = list(index.as_ref(), &Filter::default(), Format::Json);
        assert_eq!(json.lines().count(), 100_000);
        let filter = Filter {
            domain: Some("d7.test".into()),
            ..Filter::default()
        };
        let json = list(index.as_ref(), &filter, Format::Json);
        assert_eq!(json.lines().count(), 1_000);
    }
}

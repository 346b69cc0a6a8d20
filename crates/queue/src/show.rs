//! `show ID`: one message in full. The envelope (sender, recipients with
//! NOTIFY and ORCPT, body type, client) and the header section come from
//! its queue file; state, attempts, next attempt and last error per
//! recipient come from the index.
//!
//! # Must never
//! Change anything: the queue file is read as bytes and decoded here, not
//! through `Spool::read`, which would move a file it cannot parse to
//! `corrupt/`; that decision belongs to the queue manager.
//!
//! # Security
//! Headers, addresses and error texts are hostile: control characters are
//! replaced before they reach the terminal. The queue file is usually
//! readable only by the queue's owner; without it, what the index says is
//! still shown.
//!
//! # Errors
//! A message known to neither the index nor the queue directory is an error
//! (exit 1). An unreadable or unparsable queue file is reported in the
//! output, not fatal.

use std::io::{self, Write};
use std::path::Path;

use anyhow::bail;
use sluice_index::{QueueName, Reader};
use sluice_proto::envelope::{BodyType, Recipient, Ret};
use sluice_spool::{Area, QueueFile, QueueId, Source, Spool};

use crate::listing::printable;
use crate::localtime::LocalTime;

/// What became of reading the queue file.
enum File {
    Read(Box<QueueFile>),
    Missing,
    Unreadable(String),
}

fn read_file(spool_dir: &Path, id: QueueId) -> File {
    let path = Spool::new(spool_dir).path(Area::Queue, id);
    match std::fs::read(&path) {
        Ok(bytes) => match sluice_spool::decode(&bytes) {
            Ok(file) if file.id == id => File::Read(Box::new(file)),
            Ok(file) => {
                File::Unreadable(format!("{}: its id line says {}", path.display(), file.id))
            }
            Err(e) => File::Unreadable(format!("{}: {e}", path.display())),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => File::Missing,
        Err(e) => File::Unreadable(format!("{}: {e}", path.display())),
    }
}

/// Writes everything known about message `id`.
pub(crate) fn write_show(
    spool_dir: &Path,
    index: Option<&Reader>,
    id: QueueId,
    clock: &mut LocalTime,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let key = id.to_string();
    let indexed = match index {
        Some(index) => index.message(&key)?,
        None => None,
    };
    let file = read_file(spool_dir, id);
    if indexed.is_none() && matches!(file, File::Missing) {
        bail!("no message {key} in the queue");
    }
    let queue_file = match &file {
        File::Read(f) => Some(f.as_ref()),
        _ => None,
    };

    writeln!(out, "Queue ID:    {key}")?;
    let queue = match &indexed {
        Some(m) => match QueueName::of(m.hold, m.recipients.iter().map(|r| r.state)) {
            Some(name) => name.as_str().to_owned(),
            None => "none (every recipient is done; the message is being removed)".to_owned(),
        },
        None => "not in the index yet (the queue manager has not imported it)".to_owned(),
    };
    writeln!(out, "Queue:       {queue}")?;
    let arrival_ms = match (&indexed, queue_file) {
        (Some(m), _) => Some(m.arrival_ms),
        (None, Some(f)) => f
            .arrival
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_millis()).ok()),
        (None, None) => None,
    };
    if let Some(ms) = arrival_ms {
        writeln!(out, "Arrival:     {}", clock.long(ms))?;
    }
    let size = match (&indexed, queue_file) {
        (Some(m), _) => Some(m.size),
        (None, Some(f)) => i64::try_from(f.content.len()).ok(),
        (None, None) => None,
    };
    if let Some(size) = size {
        writeln!(out, "Size:        {size} bytes")?;
    }
    let sender = match (&indexed, queue_file) {
        (Some(m), _) => m.sender.as_str(),
        (None, Some(f)) => f.envelope.sender.as_str(),
        (None, None) => "",
    };
    writeln!(out, "Sender:      <{}>", printable(sender))?;
    if let Some(f) = queue_file {
        writeln!(out, "Body:        {}", body_line(f))?;
        writeln!(out, "Client:      {}", client_line(&f.source))?;
    }
    match &file {
        File::Read(_) => {}
        File::Missing => writeln!(out, "Queue file:  missing")?,
        File::Unreadable(why) => writeln!(out, "Queue file:  unreadable: {}", printable(why))?,
    }

    writeln!(out)?;
    writeln!(out, "Recipients:")?;
    let file_recipients: &[Recipient] = queue_file.map_or(&[], |f| &f.envelope.recipients);
    let indexed_recipients = indexed.as_ref().map_or(&[][..], |m| &m.recipients[..]);
    let count = file_recipients.len().max(
        indexed_recipients
            .iter()
            .map(|r| r.index as usize + 1)
            .max()
            .unwrap_or(0),
    );
    for idx in 0..count {
        let from_file = file_recipients.get(idx);
        let from_index = indexed_recipients.iter().find(|r| r.index as usize == idx);
        let address = match (from_index, from_file) {
            (Some(r), _) => r.address.as_str(),
            (None, Some(r)) => r.address.as_str(),
            (None, None) => continue,
        };
        let mut line = format!("  <{}>", printable(address));
        if let Some(r) = from_file {
            if let Some(notify) = r.notify {
                line.push_str(&format!(" NOTIFY={}", notify));
            }
            if let Some(orcpt) = &r.orcpt {
                line.push_str(&format!(" ORCPT={}", printable(orcpt)));
            }
        }
        writeln!(out, "{line}")?;
        match from_index {
            Some(r) => {
                let plural = if r.attempts == 1 { "" } else { "s" };
                let mut status = format!("{}, {} attempt{plural}", r.state, r.attempts);
                if r.state.is_waiting() {
                    status.push_str(&format!(", next attempt {}", clock.long(r.next_attempt_ms)));
                }
                status.push_str(&format!(
                    ", via {} to {}",
                    printable(&r.transport),
                    printable(&r.next_hop)
                ));
                writeln!(out, "      {status}")?;
                if let Some(e) = &r.last_error {
                    writeln!(out, "      last error: {}", printable(e))?;
                }
            }
            None => writeln!(out, "      not in the index")?,
        }
    }

    if let Some(f) = queue_file {
        writeln!(out)?;
        writeln!(out, "Headers:")?;
        write_headers(&f.content, out)?;
    }
    out.flush()?;
    Ok(())
}

fn body_line(f: &QueueFile) -> String {
    let e = &f.envelope;
    let mut line = match e.body {
        BodyType::SevenBit => "7BIT",
        BodyType::EightBitMime => "8BITMIME",
        BodyType::BinaryMime => "BINARYMIME",
    }
    .to_owned();
    if e.smtputf8 {
        line.push_str(" SMTPUTF8");
    }
    match e.ret {
        Some(Ret::Full) => line.push_str(" RET=FULL"),
        Some(Ret::Hdrs) => line.push_str(" RET=HDRS"),
        None => {}
    }
    if let Some(envid) = &e.envid {
        line.push_str(&format!(" ENVID={}", printable(envid)));
    }
    if let Some(size) = e.declared_size {
        line.push_str(&format!(" SIZE={size}"));
    }
    line
}

fn client_line(source: &Source) -> String {
    match source {
        Source::Smtp(c) => format!(
            "{}[{}]:{}, helo={}, {}",
            printable(c.hostname.as_deref().unwrap_or("unknown")),
            c.addr,
            c.port,
            printable(&c.helo),
            c.protocol.keyword()
        ),
        Source::Local { uid, user } => {
            format!("local submission by {} (uid {uid})", printable(user))
        }
        Source::Forward { recipient } => format!("forwarded for <{}>", printable(recipient)),
        Source::Notice => "delivery status notification".to_owned(),
    }
}

/// The header section: every line up to the first empty one, CR dropped,
/// control characters other than tab replaced.
fn write_headers(content: &[u8], out: &mut dyn Write) -> io::Result<()> {
    for line in content.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let text: String = String::from_utf8_lossy(line)
            .chars()
            .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
            .collect();
        writeln!(out, "{text}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdb::{self, Fixture};
    use sluice_proto::envelope::{Client, Envelope, Notify, Protocol};
    use std::time::{Duration, UNIX_EPOCH};
    use time::UtcOffset;

    fn show(f: &Fixture, id: &str) -> anyhow::Result<String> {
        let mut out = Vec::new();
        let mut clock = LocalTime::fixed(UtcOffset::UTC);
        let index = f.reader();
        write_show(
            f.spool(),
            index.as_ref(),
            id.parse().expect("queue id"),
            &mut clock,
            &mut out,
        )?;
        Ok(String::from_utf8(out).expect("utf-8"))
    }

    fn write_queue_file(f: &Fixture, id: &str) {
        let id: QueueId = id.parse().expect("id");
        let envelope = Envelope {
            sender: "me@client.test".into(),
            recipients: vec![
                Recipient {
                    address: "you@relay.test".into(),
                    notify: Some(Notify {
                        success: false,
                        failure: true,
                        delay: true,
                    }),
                    orcpt: Some("rfc822;you@relay.test".into()),
                },
                Recipient {
                    address: "other@relay.test".into(),
                    notify: None,
                    orcpt: None,
                },
                Recipient {
                    address: "delivered@relay.test".into(),
                    notify: None,
                    orcpt: None,
                },
            ],
            body: BodyType::EightBitMime,
            ret: Some(Ret::Hdrs),
            envid: Some("abc123".into()),
            ..Envelope::default()
        };
        let source = Source::Smtp(Client {
            addr: "192.0.2.7".parse().expect("ip"),
            port: 40123,
            hostname: Some("mail.client.test".into()),
            helo: "client.test".into(),
            protocol: Protocol::Esmtp,
        });
        let content: &[u8] =
            b"Subject: hello\x1b[2J\r\nFrom: me@client.test\r\n\tcontinued\r\n\r\nbody line\r\n";
        let spool = Spool::new(f.spool());
        spool.create_layout(None).expect("layout");
        spool
            .commit(&sluice_spool::Message {
                id,
                arrival: UNIX_EPOCH + Duration::from_millis(testdb::FIRST_ARRIVAL_MS as u64),
                source: &source,
                envelope: &envelope,
                content: &[content],
            })
            .expect("commit");
    }

    #[test]
    fn envelope_state_and_headers() {
        let f = Fixture::standard();
        write_queue_file(&f, testdb::ID_PARTLY_DEFERRED);
        let text = show(&f, testdb::ID_PARTLY_DEFERRED).expect("show");
        let expected = format!(
            "\
Queue ID:    {id}
Queue:       deferred
Arrival:     Sat Nov 28 23:01:36 2020
Size:        180 bytes
Sender:      <me@client.test>
Body:        8BITMIME RET=HDRS ENVID=abc123
Client:      mail.client.test[192.0.2.7]:40123, helo=client.test, ESMTP

Recipients:
  <you@relay.test> NOTIFY=FAILURE,DELAY ORCPT=rfc822;you@relay.test
      queued, 0 attempts, next attempt Sun Nov 29 00:01:36 2020, via smtp to relay.test
  <other@relay.test>
      deferred, 2 attempts, next attempt Sun Nov 29 00:01:36 2020, via smtp to relay.test
      last error: 451 4.3.0 try again later
  <delivered@relay.test>
      delivered, 0 attempts, via smtp to relay.test

Headers:
Subject: hello?[2J
From: me@client.test
\tcontinued
",
            id = testdb::ID_PARTLY_DEFERRED
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn without_the_file_the_index_is_shown_and_nothing_moves() {
        let f = Fixture::standard();
        let text = show(&f, testdb::ID_HELD).expect("show");
        assert!(text.contains("Queue:       hold\n"), "{text}");
        assert!(text.contains("Sender:      <>\n"), "{text}");
        assert!(text.contains("Queue file:  missing\n"), "{text}");
        assert!(!text.contains("Headers:"), "{text}");

        // A corrupt file is reported and left where it is.
        let spool = Spool::new(f.spool());
        spool.create_layout(None).expect("layout");
        let id: QueueId = testdb::ID_ACTIVE.parse().expect("id");
        let path = spool.path(Area::Queue, id);
        std::fs::write(&path, b"garbage\n").expect("write");
        let text = show(&f, testdb::ID_ACTIVE).expect("show");
        assert!(text.contains("Queue file:  unreadable:"), "{text}");
        assert!(text.contains("Queue:       active\n"), "{text}");
        assert!(text.contains("bounced, 1 attempt, via smtp"), "{text}");
        assert!(path.exists());
    }

    #[test]
    fn unknown_message_is_an_error() {
        let f = Fixture::standard();
        let e = show(&f, "0HOLG8L24XY000010009").expect_err("unknown");
        assert_eq!(
            e.to_string(),
            "no message 0HOLG8L24XY000010009 in the queue"
        );
    }

    #[test]
    fn a_file_the_index_does_not_know_yet() {
        let f = Fixture::empty();
        write_queue_file(&f, testdb::ID_PARTLY_DEFERRED);
        let text = show(&f, testdb::ID_PARTLY_DEFERRED).expect("show");
        assert!(text.contains("not in the index yet"), "{text}");
        assert!(text.contains("Size:        "), "{text}");
        assert!(
            text.contains("  <you@relay.test> NOTIFY=FAILURE,DELAY"),
            "{text}"
        );
        assert!(text.contains("      not in the index\n"), "{text}");
    }
}

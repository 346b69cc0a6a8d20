//! What is written into a mailbox (pure code): the queued content with
//! `Return-Path:` and `Delivered-To:` prepended and CRLF turned into LF
//! (mailboxes are Unix text files), the mbox envelope (`From ` line,
//! `>From ` quoting, a blank line after), and the `Delivered-To:` loop test.
//!
//! # Must never
//! Write an address that fails the path grammar, or change the content other than by the line-ending conversion and, in an
//! mbox, the mboxrd quoting of `>*From ` lines (which readers undo).
//!
//! # Security
//! The content is hostile: it is only scanned, never interpreted beyond
//! finding header lines.
//!
//! # Errors
//! An address that does not pass the path grammar is refused
//! ([`AddressError`]), never written.

use sluice_proto::address::{check_stored, AddressError};

/// `Return-Path: <sender>` and `Delivered-To: address`, then the content
/// with CRLF as LF. Both addresses must pass the path grammar
/// (`check_stored`): a queue file is input, and a line end in an address
/// would forge header lines, or a whole message in an mbox.
pub(crate) fn prepare(
    content: &[u8],
    sender: &str,
    delivered_to: &str,
) -> Result<Vec<u8>, AddressError> {
    check_stored(sender)?;
    check_stored(delivered_to)?;
    let mut out = Vec::with_capacity(content.len() + 128);
    out.extend_from_slice(
        format!("Return-Path: <{sender}>\nDelivered-To: {delivered_to}\n").as_bytes(),
    );
    let mut rest = content;
    while let Some(pos) = rest.windows(2).position(|w| w == b"\r\n") {
        out.extend_from_slice(&rest[..pos]);
        out.push(b'\n');
        rest = &rest[pos + 2..];
    }
    out.extend_from_slice(rest);
    Ok(out)
}

/// An mbox entry: `From sender date`, the prepared message with `>*From `
/// lines quoted (mboxrd), ending with a newline and one blank line.
pub(crate) fn mbox_entry(
    prepared: &[u8],
    sender: &str,
    date: &str,
) -> Result<Vec<u8>, AddressError> {
    check_stored(sender)?;
    let from = if sender.is_empty() {
        "MAILER-DAEMON"
    } else {
        sender
    };
    let mut out = Vec::with_capacity(prepared.len() + 128);
    out.extend_from_slice(format!("From {from} {date}\n").as_bytes());
    for line in prepared.split_inclusive(|b| *b == b'\n') {
        let unquoted = line.iter().position(|b| *b != b'>').unwrap_or(line.len());
        if line[unquoted..].starts_with(b"From ") {
            out.push(b'>');
        }
        out.extend_from_slice(line);
    }
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.push(b'\n');
    Ok(out)
}

/// The date of a `From ` line: asctime(3) form in UTC,
/// `Thu Nov 28 22:00:34 2024`.
pub(crate) fn from_line_date(now: time::OffsetDateTime) -> String {
    let now = now.to_offset(time::UtcOffset::UTC);
    let weekday = &now.weekday().to_string()[..3];
    let month = &now.month().to_string()[..3];
    format!(
        "{weekday} {month} {:>2} {:02}:{:02}:{:02} {}",
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.year()
    )
}

/// Does the header section of `content` carry `Delivered-To: address`
/// (compared without regard to case)?
pub(crate) fn has_delivered_to(content: &[u8], address: &str) -> bool {
    for line in content.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_at_checked(13) else {
            continue;
        };
        if name.eq_ignore_ascii_case(b"Delivered-To:") {
            let value = String::from_utf8_lossy(value);
            let value = value.trim().trim_start_matches('<').trim_end_matches('>');
            if value.eq_ignore_ascii_case(address) {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_prepended_and_lines_end_in_lf() {
        let got = prepare(
            b"Subject: x\r\n\r\nbody\r\nlast",
            "a@b.test",
            "u@local.test",
        );
        assert_eq!(
            got.unwrap(),
            b"Return-Path: <a@b.test>\nDelivered-To: u@local.test\nSubject: x\n\nbody\nlast"
        );
        assert!(prepare(b"", "", "u")
            .unwrap()
            .starts_with(b"Return-Path: <>\n"));
    }

    #[test]
    fn mbox_entries_quote_from_lines_and_end_with_a_blank_line() {
        let got = mbox_entry(
            b"Subject: x\n\nFrom here\n>From there\nFrom\nnot From x",
            "",
            "Thu Nov 28 22:00:34 2024",
        );
        assert_eq!(
            String::from_utf8(got.unwrap()).unwrap(),
            "From MAILER-DAEMON Thu Nov 28 22:00:34 2024\nSubject: x\n\n>From here\n>>From there\nFrom\nnot From x\n\n"
        );
    }

    /// Issue 9 defect 1: an address with a line end (from a hand-written
    /// or old queue file) is never written into a mailbox.
    #[test]
    fn addresses_with_control_characters_are_refused() {
        for (sender, to) in [
            (
                "a@b.test\nFrom forged@x Thu Nov 28 22:00:34 2024",
                "u@local.test",
            ),
            ("a@b.test", "u@local.test\r\nX-Forged: 1"),
            ("a@b.test\0", "u@local.test"),
        ] {
            assert!(prepare(b"x\r\n", sender, to).is_err(), "{sender:?} {to:?}");
        }
        assert!(mbox_entry(b"x\n", "a@b\nFrom x", "date").is_err());
    }

    fn hostile() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            Just("a@b.test".to_owned()),
            Just("\r\n".to_owned()),
            Just("\n".to_owned()),
            Just("\r".to_owned()),
            Just("\0".to_owned()),
            Just(" ".to_owned()),
            Just("From ".to_owned()),
            any::<char>().prop_map(String::from),
        ];
        proptest::collection::vec(piece, 0..6).prop_map(|v| v.concat())
    }

    proptest::proptest! {
        /// Issue 9 defect 1, as a property: whatever a queue file says the
        /// sender and recipient are, the lines written into a mailbox
        /// around them hold no control character but the LF ending them.
        #[test]
        fn mailbox_lines_never_hold_control_characters(sender in hostile(), to in hostile()) {
            let source = sluice_spool::Source::Notice;
            let envelope = sluice_proto::envelope::Envelope {
                sender,
                recipients: vec![sluice_proto::envelope::Recipient {
                    address: to,
                    notify: None,
                    orcpt: None,
                }],
                ..Default::default()
            };
            let bytes = sluice_spool::encode(&sluice_spool::Message {
                id: sluice_spool::QueueId::generate(),
                arrival: std::time::SystemTime::UNIX_EPOCH,
                source: &source,
                envelope: &envelope,
                content: &[b"Subject: s\r\n\r\nx\r\n"],
            });
            let file = sluice_spool::decode(&bytes).unwrap();
            let (sender, to) = (&file.envelope.sender, &file.envelope.recipients[0].address);
            if let Ok(prepared) = prepare(&file.content, sender, to) {
                let entry = mbox_entry(&prepared, sender, "Thu Nov 28 22:00:34 2024").unwrap();
                // From_, Return-Path:, Delivered-To:, then the content.
                let text = String::from_utf8(entry).unwrap();
                for line in text.split('\n').take(3) {
                    proptest::prop_assert!(!line.chars().any(char::is_control), "{:?}", line);
                }
                proptest::prop_assert!(text.contains("\nSubject: s\n"));
            }
        }
    }

    #[test]
    fn the_date_is_asctime() {
        let t = time::OffsetDateTime::from_unix_timestamp(1_732_831_234).unwrap();
        assert_eq!(from_line_date(t), "Thu Nov 28 22:00:34 2024");
        let t = time::OffsetDateTime::from_unix_timestamp(1_704_067_200).unwrap();
        assert_eq!(from_line_date(t), "Mon Jan  1 00:00:00 2024");
    }

    #[test]
    fn delivered_to_is_found_in_the_header_only() {
        let content = b"Received: x\r\ndelivered-to: <Bob@Local.Test>\r\n\r\nDelivered-To: carol@local.test\r\n";
        assert!(has_delivered_to(content, "bob@local.test"));
        assert!(!has_delivered_to(content, "carol@local.test"));
        assert!(!has_delivered_to(b"", "x"));
    }
}

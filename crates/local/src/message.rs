//! What is written into a mailbox (pure code): the queued content with
//! `Return-Path:` and `Delivered-To:` prepended and CRLF turned into LF
//! (mailboxes are Unix text files), the mbox envelope (`From ` line,
//! `>From ` quoting, a blank line after), and the `Delivered-To:` loop test.
//!
//! # Must never
//! Change the content other than by the line-ending conversion and, in an
//! mbox, the mboxrd quoting of `>*From ` lines (which readers undo).
//!
//! # Security
//! The content is hostile: it is only scanned, never interpreted beyond
//! finding header lines.
//!
//! # Errors
//! None: every input gives an output.

/// `Return-Path: <sender>` and `Delivered-To: address`, then the content
/// with CRLF as LF.
pub(crate) fn prepare(content: &[u8], sender: &str, delivered_to: &str) -> Vec<u8> {
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
    out
}

/// An mbox entry: `From sender date`, the prepared message with `>*From `
/// lines quoted (mboxrd), ending with a newline and one blank line.
pub(crate) fn mbox_entry(prepared: &[u8], sender: &str, date: &str) -> Vec<u8> {
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
    out
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
            got,
            b"Return-Path: <a@b.test>\nDelivered-To: u@local.test\nSubject: x\n\nbody\nlast"
        );
        assert!(prepare(b"", "", "u").starts_with(b"Return-Path: <>\n"));
    }

    #[test]
    fn mbox_entries_quote_from_lines_and_end_with_a_blank_line() {
        let got = mbox_entry(
            b"Subject: x\n\nFrom here\n>From there\nFrom\nnot From x",
            "",
            "Thu Nov 28 22:00:34 2024",
        );
        assert_eq!(
            String::from_utf8(got).unwrap(),
            "From MAILER-DAEMON Thu Nov 28 22:00:34 2024\nSubject: x\n\n>From here\n>>From there\nFrom\nnot From x\n\n"
        );
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

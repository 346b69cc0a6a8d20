//! The header fixes of a local submission (`sendmail`, or a file written
//! into `maildrop/` by hand): the `From:`, `Date:` and `Message-ID:` a
//! local program often leaves out, `Bcc:` removed, and the
//! `X-Authentication-Warning:` of a sender chosen by an untrusted user.
//!
//! # Must never
//! Let text from the user (a full name, a sender) fold into a header of its
//! own, or add a field twice when run again on its own output (sendmail
//! runs it at submission, pickup again on the file).

use std::time::SystemTime;

use crate::header::{header_safe, Header};
use crate::{date, Entry, Settings, Submitter};

/// `From:`, `Date:`, `Message-ID:` when missing.
pub(crate) fn add_missing(
    settings: &Settings,
    entry: &Entry<'_>,
    who: &Submitter<'_>,
    header: &mut Header,
) {
    if !header.has("From") {
        let address = if entry.envelope.sender.is_empty() {
            format!("MAILER-DAEMON@{}", settings.hostname)
        } else {
            entry.envelope.sender.clone()
        };
        header.append("From", &from_value(who.full_name, &address));
    }
    if !header.has("Date") {
        header.append("Date", &date::rfc5322(entry.arrival));
    }
    if !header.has("Message-ID") {
        header.append("Message-ID", &message_id(settings, entry));
    }
}

/// `<YYYYMMDDhhmmss.QUEUEID@hostname>`.
fn message_id(settings: &Settings, entry: &Entry<'_>) -> String {
    let stamp = time::OffsetDateTime::from(entry.arrival.max(SystemTime::UNIX_EPOCH));
    format!(
        "<{:04}{:02}{:02}{:02}{:02}{:02}.{}@{}>",
        stamp.year(),
        u8::from(stamp.month()),
        stamp.day(),
        stamp.hour(),
        stamp.minute(),
        stamp.second(),
        entry.id,
        settings.hostname
    )
}

/// `Bcc:` and `Resent-Bcc:` removed.
pub(crate) fn remove_bcc(header: &mut Header) {
    header.remove("Bcc");
    header.remove("Resent-Bcc");
}

/// `X-Authentication-Warning: HOST: USER set sender to ADDR using -f` first,
/// when an untrusted user chose a sender other than their own address, and
/// the very same field is not there yet.
pub(crate) fn warn_chosen_sender(
    settings: &Settings,
    entry: &Entry<'_>,
    user: &str,
    who: &Submitter<'_>,
    header: &mut Header,
) {
    if who.trusted || !chose_sender(settings, user, &entry.envelope.sender) {
        return;
    }
    let sender = &entry.envelope.sender;
    let shown = if sender.is_empty() { "<>" } else { sender };
    let value = format!(
        "{}: {} set sender to {} using -f",
        settings.hostname,
        header_safe(user),
        header_safe(shown)
    );
    let line = format!("X-Authentication-Warning: {value}\r\n");
    if !header.has_line(line.as_bytes()) {
        header.prepend("X-Authentication-Warning", &value);
    }
}

/// Did `user` choose a sender other than their own `user@hostname`?
pub fn chose_sender(settings: &Settings, user: &str, sender: &str) -> bool {
    !sender.eq_ignore_ascii_case(&format!("{user}@{}", settings.hostname))
}

/// `Full Name <addr>` for a `From:` header: the name as an atom phrase
/// when it can be, else as a quoted string, else (non-ASCII) as an RFC
/// 2047 encoded word; no name gives just `addr`.
pub(crate) fn from_value(full_name: Option<&str>, address: &str) -> String {
    let address = header_safe(address);
    let Some(name) = full_name.map(str::trim).filter(|n| !n.is_empty()) else {
        return address;
    };
    let is_atom_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~ ".contains(c);
    let phrase = if name.chars().all(is_atom_char) && !name.contains("  ") {
        name.to_owned()
    } else if name.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
        let escaped: String = name
            .chars()
            .flat_map(|c| match c {
                '"' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        format!("\"{escaped}\"")
    } else {
        let clean: String = name.chars().filter(|c| !c.is_control()).collect();
        format!("=?UTF-8?B?{}?=", base64(clean.as_bytes()))
    };
    format!("{phrase} <{address}>")
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_values() {
        assert_eq!(from_value(None, "joe@x.test"), "joe@x.test");
        assert_eq!(
            from_value(Some("Joe Bloggs"), "joe@x.test"),
            "Joe Bloggs <joe@x.test>"
        );
        assert_eq!(
            from_value(Some("Bloggs, \"Joe\""), "joe@x.test"),
            "\"Bloggs, \\\"Joe\\\"\" <joe@x.test>"
        );
        assert_eq!(
            from_value(Some("Jörg"), "j@x.test"),
            "=?UTF-8?B?SsO2cmc=?= <j@x.test>"
        );
        assert_eq!(
            from_value(Some("A\r\nBcc: x"), "j@x.test"),
            "=?UTF-8?B?QUJjYzogeA==?= <j@x.test>"
        );
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(base64(b"ab"), "YWI=");
    }
}

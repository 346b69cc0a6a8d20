//! The message as submitted: reading it from stdin ([`read_input`]) and
//! fixing its header section ([`Header`]): the `From:`, `Date:` and
//! `Message-ID:` a local program often leaves out, `Bcc:` removed, and the
//! `X-Authentication-Warning:` of an untrusted `-f`.
//!
//! Stored content has CRLF line ends, as smtpd stores what it receives
//! (FORMAT.md): a bare LF from stdin becomes CRLF.
//!
//! # Must never
//! Let a `Bcc:` line reach the stored message, or let text from the user
//! (a full name, a sender) fold into a header of its own.
//!
//! # Security
//! Input from any local user; sizes are capped by the caller's limit.
//!
//! # Errors
//! [`InputError`] for a message over the size limit or unreadable stdin.

use std::io::Read;

/// Why the message could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InputError {
    /// More than the size limit.
    #[error("message is larger than the limit of {0} bytes")]
    TooLarge(u64),
    /// Reading stdin failed.
    #[error("reading the message: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads the message from `input` until EOF, or until a line with a single
/// `.` unless `ignore_dots` (`-i`); converts line ends to CRLF; adds a
/// final CRLF if the last line lacks one.
pub(crate) fn read_input(
    input: impl Read,
    ignore_dots: bool,
    limit: u64,
) -> Result<Vec<u8>, InputError> {
    let mut raw = Vec::new();
    input.take(limit.saturating_add(1)).read_to_end(&mut raw)?;
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32);
    for line in raw.split_inclusive(|&b| b == b'\n') {
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if !ignore_dots && text == b"." {
            break;
        }
        out.extend_from_slice(text);
        out.extend_from_slice(b"\r\n");
    }
    if raw.len() as u64 > limit || out.len() as u64 > limit {
        return Err(InputError::TooLarge(limit));
    }
    Ok(out)
}

/// One header field: its name and its raw lines (with CRLFs).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    name: String,
    raw: Vec<u8>,
}

impl Field {
    /// The value, unfolded (CRLFs removed), without the leading space.
    fn value(&self) -> String {
        let text = String::from_utf8_lossy(&self.raw);
        let value = text.split_once(':').map_or("", |(_, v)| v);
        value.replace("\r\n", "").trim().to_owned()
    }

    fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

/// A message split into its header fields and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    fields: Vec<Field>,
    /// Everything after the header section, the empty line included when
    /// there was one; an empty line is put back on output when not.
    body: Vec<u8>,
    had_separator: bool,
}

/// A header field name: printable ASCII except `:` (RFC 5322 2.2).
fn field_name(line: &[u8]) -> Option<&str> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    let ok = !name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b));
    ok.then(|| std::str::from_utf8(name).ok()).flatten()
}

impl Header {
    /// Splits CRLF content: header fields until the first empty line, or
    /// until the first line that is neither a field nor a continuation
    /// (that line starts the body; an empty line is inserted before it).
    pub(crate) fn parse(content: &[u8]) -> Header {
        let mut fields: Vec<Field> = Vec::new();
        let mut at = 0;
        while at < content.len() {
            let end = content[at..]
                .windows(2)
                .position(|w| w == b"\r\n")
                .map_or(content.len(), |p| at + p + 2);
            let line = &content[at..end];
            if line == b"\r\n" {
                return Header {
                    fields,
                    body: content[at..].to_vec(),
                    had_separator: true,
                };
            }
            if matches!(line.first(), Some(b' ' | b'\t')) && !fields.is_empty() {
                if let Some(last) = fields.last_mut() {
                    last.raw.extend_from_slice(line);
                }
            } else if let Some(name) = field_name(line) {
                fields.push(Field {
                    name: name.to_owned(),
                    raw: line.to_vec(),
                });
            } else {
                break;
            }
            at = end;
        }
        Header {
            fields,
            body: content[at..].to_vec(),
            had_separator: false,
        }
    }

    /// Is there a field of this name (any case)?
    pub(crate) fn has(&self, name: &str) -> bool {
        self.fields.iter().any(|f| f.is(name))
    }

    /// The unfolded values of every field with one of `names`.
    pub(crate) fn values(&self, names: &[&str]) -> Vec<String> {
        self.fields
            .iter()
            .filter(|f| names.iter().any(|n| f.is(n)))
            .map(Field::value)
            .collect()
    }

    /// Removes every field of this name.
    pub(crate) fn remove(&mut self, name: &str) {
        self.fields.retain(|f| !f.is(name));
    }

    /// Appends `Name: value` at the end of the header section.
    pub(crate) fn append(&mut self, name: &str, value: &str) {
        self.fields.push(Field {
            name: name.to_owned(),
            raw: format!("{name}: {value}\r\n").into_bytes(),
        });
    }

    /// Puts `Name: value` first.
    pub(crate) fn prepend(&mut self, name: &str, value: &str) {
        self.fields.insert(
            0,
            Field {
                name: name.to_owned(),
                raw: format!("{name}: {value}\r\n").into_bytes(),
            },
        );
    }

    /// The message again, CRLF line ends.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for f in &self.fields {
            out.extend_from_slice(&f.raw);
        }
        if !self.had_separator {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(&self.body);
        out
    }
}

/// Text from the user for a header: printable ASCII only, so it can
/// neither fold nor end the header; anything else becomes `?`.
pub(crate) fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

/// `Full Name <addr>` for a `From:` header: the name as an atom phrase
/// when it can be, else as a quoted string, else (non-ASCII) as an RFC
/// 2047 encoded word; no name gives just `addr`.
pub(crate) fn from_value(full_name: Option<&str>, address: &str) -> String {
    let address = printable(address);
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

    fn read(input: &str, ignore_dots: bool) -> String {
        String::from_utf8(read_input(input.as_bytes(), ignore_dots, 1000).expect("read"))
            .expect("utf8")
    }

    #[test]
    fn stdin_lines_become_crlf_and_a_dot_line_ends_unless_i() {
        assert_eq!(read("a\nb\r\nc", false), "a\r\nb\r\nc\r\n");
        assert_eq!(read("a\n.\nafter\n", false), "a\r\n");
        assert_eq!(read("a\n.\nafter\n", true), "a\r\n.\r\nafter\r\n");
        assert_eq!(read("a\n..\n.x\n", false), "a\r\n..\r\n.x\r\n");
        assert_eq!(read("a\r\n.\r\n", false), "a\r\n");
        assert_eq!(read("", false), "");
        assert!(matches!(
            read_input(&[b'x'; 20][..], false, 10),
            Err(InputError::TooLarge(10))
        ));
        // LF to CRLF growth counts too.
        assert!(read_input(&b"\n\n\n\n\n\n"[..], false, 10).is_err());
    }

    #[test]
    fn header_fields_folding_and_removal() {
        let mut h = Header::parse(
            b"To: a@x.test,\r\n  b@x.test\r\nBcc: secret@x.test\r\nbcc: more@x.test\r\nSubject: s\r\n\r\nbody\r\nBcc: not a header\r\n",
        );
        assert_eq!(h.values(&["to"]), ["a@x.test,  b@x.test"]);
        assert_eq!(h.values(&["Bcc"]), ["secret@x.test", "more@x.test"]);
        h.remove("Bcc");
        assert!(!h.has("bcc"));
        h.append("Date", "Mon, 1 Jan 2024 00:00:00 +0000");
        h.prepend("X-First", "1");
        assert_eq!(
            String::from_utf8(h.to_bytes()).expect("utf8"),
            "X-First: 1\r\nTo: a@x.test,\r\n  b@x.test\r\nSubject: s\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nbody\r\nBcc: not a header\r\n"
        );
    }

    #[test]
    fn a_body_without_header_gets_a_separator() {
        let mut h = Header::parse(b"just text\r\nmore\r\n");
        assert!(!h.has("From"));
        h.append("From", "me@x.test");
        assert_eq!(
            h.to_bytes(),
            b"From: me@x.test\r\n\r\njust text\r\nmore\r\n".to_vec()
        );
        let h = Header::parse(b"Subject: x\r\nnot a header line\r\n");
        assert_eq!(
            h.to_bytes(),
            b"Subject: x\r\n\r\nnot a header line\r\n".to_vec()
        );
        let h = Header::parse(b"");
        assert_eq!(h.to_bytes(), b"\r\n".to_vec());
    }

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

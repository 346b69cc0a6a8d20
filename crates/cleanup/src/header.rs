//! The header section of a message as a list of fields, and the edits
//! cleanup makes on it: the one vocabulary (remove, append, prepend) that
//! the header fixes use, and that header checks and milter edits will use.
//!
//! # Must never
//! Lose or reorder a byte it was not asked to change: fields keep their raw
//! lines (folding included), the body is kept as it is.
//!
//! # Security
//! The content is hostile; parsing is linear and never fails (a line that is
//! not a field ends the header section).

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
pub struct Header {
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
    pub fn parse(content: &[u8]) -> Header {
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
    pub fn has(&self, name: &str) -> bool {
        self.fields.iter().any(|f| f.is(name))
    }

    /// The unfolded values of every field with one of `names`.
    pub fn values(&self, names: &[&str]) -> Vec<String> {
        self.fields
            .iter()
            .filter(|f| names.iter().any(|n| f.is(n)))
            .map(Field::value)
            .collect()
    }

    /// Is this exact field (name, value and CRLF, as raw bytes) present?
    pub fn has_line(&self, raw: &[u8]) -> bool {
        self.fields.iter().any(|f| f.raw == raw)
    }

    /// Removes every field of this name.
    pub fn remove(&mut self, name: &str) {
        self.fields.retain(|f| !f.is(name));
    }

    /// Appends `Name: value` at the end of the header section.
    pub fn append(&mut self, name: &str, value: &str) {
        self.fields.push(Field {
            name: name.to_owned(),
            raw: format!("{name}: {value}\r\n").into_bytes(),
        });
    }

    /// Puts `Name: value` first.
    pub fn prepend(&mut self, name: &str, value: &str) {
        self.fields.insert(
            0,
            Field {
                name: name.to_owned(),
                raw: format!("{name}: {value}\r\n").into_bytes(),
            },
        );
    }

    /// The message again, CRLF line ends.
    pub fn to_bytes(&self) -> Vec<u8> {
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

/// How many fields named `name` (any case) the header section of CRLF
/// `content` has, without copying it (a message may be large).
pub(crate) fn count_fields(content: &[u8], name: &str) -> usize {
    let mut count = 0;
    for line in content.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            continue;
        }
        match field_name(line) {
            Some(n) if n.eq_ignore_ascii_case(name) => count += 1,
            Some(_) => {}
            None => break,
        }
    }
    count
}

/// Text for a header field: printable ASCII only, so it can neither fold
/// nor end the header; anything else becomes `?`.
pub fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn fields_are_counted_in_the_header_only() {
        let m = b"Received: a\r\n\tb\r\nreceived: c\r\nX-Received: d\r\n\r\nReceived: body\r\n";
        assert_eq!(count_fields(m, "Received"), 2);
        assert_eq!(
            count_fields(b"Received: a\r\nnot a field\r\nReceived: b\r\n", "Received"),
            1
        );
        assert_eq!(count_fields(b"", "Received"), 0);
    }

    #[test]
    fn header_safe_text_cannot_fold() {
        assert_eq!(header_safe("a b\r\nX: y\u{e9}"), "a?b??X:?y?");
    }

    #[test]
    fn exact_fields_are_found() {
        let h = Header::parse(b"X-A: 1\r\nSubject: s\r\n\r\n");
        assert!(h.has_line(b"X-A: 1\r\n"));
        assert!(!h.has_line(b"X-A: 2\r\n"));
    }
}

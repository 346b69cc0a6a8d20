//! Dot-stuffing (RFC 5321 4.5.2, "transparency"): pure helpers shared by the
//! server session and the outbound client.
//!
//! A line starts at the beginning of the content and after every LF. A line
//! that starts with `.` gets one more `.` in front when stuffed, and loses
//! its first `.` when unstuffed, so `dot_unstuff(&dot_stuff(x)) == x` for
//! every `x`. Treating a bare LF as a line start when stuffing is the safe
//! side: a receiver that (wrongly) ends lines at LF still never sees a lone
//! `.` line inside stuffed content.
//!
//! The streaming receiver that finds the end of DATA lives in the server
//! session; the free functions are for whole buffers, and [`Stuffer`]
//! stuffs an outgoing message in chunks (the client session).
//!
//! Sluice accepts text lines longer than RFC 5321's 1000 octets (up to
//! `smtpd.max_line_length`, as Postfix accepts them), but never sends one:
//! [`Stuffer`] breaks a line longer than [`MAX_WIRE_LINE`] octets by
//! inserting CRLF and a space, as Postfix's `smtp_line_length_limit` does
//! (in a header that is a folded continuation line; the space keeps a piece
//! of a body line from reading as a MIME boundary or a stuffed dot).
//!
//! # Must never
//! Produce stuffed content in which a `.` that starts a line is followed by
//! anything but another `.`, or, from [`Stuffer`], a line of more than
//! [`MAX_WIRE_LINE`] octets before its CRLF (the stuffing dot included).
//!
//! # Errors
//! None.

/// Doubles the leading `.` of every line (line starts: offset 0 and after
/// each LF).
pub fn dot_stuff(content: &[u8]) -> Vec<u8> {
    let extra = content
        .windows(2)
        .filter(|w| w[0] == b'\n' && w[1] == b'.')
        .count()
        + usize::from(content.first() == Some(&b'.'));
    let mut out = Vec::with_capacity(content.len() + extra);
    let mut at_line_start = true;
    for &b in content {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    out
}

/// Removes the leading `.` of every line that has one (the inverse of
/// [`dot_stuff`]).
pub fn dot_unstuff(stuffed: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(stuffed.len());
    let mut at_line_start = true;
    for &b in stuffed {
        if !(at_line_start && b == b'.') {
            out.push(b);
        }
        at_line_start = b == b'\n';
    }
    out
}

/// What to send after stuffed content to end DATA: `.\r\n` when the
/// content is empty or ends with CRLF, else `\r\n.\r\n` (the content's last
/// line is then completed, as RFC 5321 4.1.1.4 requires).
pub fn data_terminator(content: &[u8]) -> &'static [u8] {
    if content.is_empty() || content.ends_with(b"\r\n") {
        b".\r\n"
    } else {
        b"\r\n.\r\n"
    }
}

/// The longest line [`Stuffer`] puts on the wire, CRLF excluded (RFC 5321
/// 4.5.3.1.6: 1000 octets with the CRLF).
pub const MAX_WIRE_LINE: usize = 998;

/// Dot-stuffs a message piece by piece, so that a large message is never
/// copied whole: each call to [`Stuffer::next_chunk`] appends the stuffed
/// form of the next part of the content, and at the end the DATA
/// terminator ([`data_terminator`]). A line longer than [`MAX_WIRE_LINE`]
/// is broken with CRLF SPACE. For content without such lines the
/// concatenation of all chunks is `dot_stuff(content) +
/// data_terminator(content)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuffer {
    offset: usize,
    at_line_start: bool,
    /// Octets of the current wire line so far (stuffing dot included).
    line_len: usize,
    finished: bool,
}

impl Default for Stuffer {
    fn default() -> Self {
        Stuffer::new()
    }
}

impl Stuffer {
    /// A stuffer at the start of a message.
    pub fn new() -> Self {
        Stuffer {
            offset: 0,
            at_line_start: true,
            line_len: 0,
            finished: false,
        }
    }

    /// Appends to `out` the stuffed form of up to `max` more bytes of
    /// `content` (at least one byte, or the terminator). `content` must be
    /// the same slice on every call. Returns true once the terminator has
    /// been appended: the message is complete.
    pub fn next_chunk(&mut self, content: &[u8], max: usize, out: &mut Vec<u8>) -> bool {
        if self.finished {
            return true;
        }
        let start = self.offset.min(content.len());
        let end = start.saturating_add(max.max(1)).min(content.len());
        let piece = &content[start..end];
        out.reserve(piece.len() + piece.len() / 64 + 8);
        for (i, &b) in piece.iter().enumerate() {
            let line_end = b == b'\n' || (b == b'\r' && content.get(start + i + 1) == Some(&b'\n'));
            if line_end {
                out.push(b);
                if b == b'\n' {
                    self.line_len = 0;
                    self.at_line_start = true;
                }
                continue;
            }
            if self.line_len >= MAX_WIRE_LINE {
                out.extend_from_slice(b"\r\n ");
                self.line_len = 1;
                self.at_line_start = false;
            }
            if self.at_line_start && b == b'.' {
                out.push(b'.');
                self.line_len += 1;
            }
            out.push(b);
            self.line_len += 1;
            self.at_line_start = false;
        }
        self.offset = end;
        if end == content.len() {
            out.extend_from_slice(data_terminator(content));
            self.finished = true;
        }
        self.finished
    }

    /// Content bytes consumed so far.
    pub fn offset(&self) -> usize {
        self.offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuffs_every_line_start() {
        assert_eq!(dot_stuff(b".a\r\nb\r\n.\r\n..c"), b"..a\r\nb\r\n..\r\n...c");
        assert_eq!(dot_stuff(b"x\n.y"), b"x\n..y");
        assert_eq!(dot_stuff(b"a.b"), b"a.b");
    }

    #[test]
    fn unstuffs_exactly_one_dot() {
        assert_eq!(dot_unstuff(b"..a\r\n...b\r\nc.d"), b".a\r\n..b\r\nc.d");
    }

    #[test]
    fn terminator() {
        assert_eq!(data_terminator(b""), b".\r\n");
        assert_eq!(data_terminator(b"a\r\n"), b".\r\n");
        assert_eq!(data_terminator(b"a"), b"\r\n.\r\n");
    }

    #[test]
    fn stuffer_in_chunks_equals_whole_stuffing() {
        let content = b".a\r\n..b\r\nc.\r\n.\r\nend";
        for max in 1..=content.len() + 1 {
            let mut s = Stuffer::new();
            let mut out = Vec::new();
            let mut calls = 0;
            while !s.next_chunk(content, max, &mut out) {
                calls += 1;
                assert!(calls <= content.len());
            }
            let mut want = dot_stuff(content);
            want.extend_from_slice(data_terminator(content));
            assert_eq!(out, want, "max {max}");
        }
        let mut out = Vec::new();
        assert!(Stuffer::new().next_chunk(b"", 10, &mut out));
        assert_eq!(out, b".\r\n");
    }

    fn stuffed_in_chunks(content: &[u8], max: usize) -> Vec<u8> {
        let mut s = Stuffer::new();
        let mut out = Vec::new();
        while !s.next_chunk(content, max, &mut out) {}
        out
    }

    #[test]
    fn long_lines_are_broken_with_crlf_space_at_998_octets() {
        let long = "x".repeat(2500);
        let content = format!("Subject: {long}\r\n\r\n.{long}\r\nshort\r\n");
        for max in [1, 7, 998, 999, 64 * 1024] {
            let out = stuffed_in_chunks(content.as_bytes(), max);
            let text = String::from_utf8(out).expect("ascii");
            let lines: Vec<&str> = text.split("\r\n").collect();
            assert!(lines.iter().all(|l| l.len() <= MAX_WIRE_LINE), "max {max}");
            assert_eq!(lines[0].len(), 998);
            assert!(lines[1].starts_with(' ') && lines[1].len() == 998);
            assert!(lines[2].starts_with(' '));
            // Unfolding gives the header back.
            let header: String = lines[..3]
                .iter()
                .map(|l| l.strip_prefix(' ').unwrap_or(l))
                .collect();
            assert_eq!(header, format!("Subject: {long}"));
            // The body line keeps its stuffing dot, counted in its length.
            let body = lines
                .iter()
                .position(|l| l.starts_with(".."))
                .expect("stuffed");
            assert_eq!(lines[body].len(), 998);
            assert!(lines[body + 1].starts_with(" x"));
            assert_eq!(*lines.last().expect("end"), "");
            assert!(text.ends_with("\r\nshort\r\n.\r\n"));
        }
    }

    #[test]
    fn a_line_of_exactly_998_octets_is_left_alone() {
        let content = format!("{}\r\n{}", "a".repeat(998), "b".repeat(999));
        let out = stuffed_in_chunks(content.as_bytes(), 100);
        let want = format!("{}\r\n{}\r\n b\r\n.\r\n", "a".repeat(998), "b".repeat(998));
        assert_eq!(String::from_utf8(out).expect("ascii"), want);
    }
}

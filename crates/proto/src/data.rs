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
//! # Must never
//! Produce stuffed content in which a `.` that starts a line is followed by
//! anything but another `.`.
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

/// Dot-stuffs a message piece by piece, so that a large message is never
/// copied whole: each call to [`Stuffer::next_chunk`] appends the stuffed
/// form of the next part of the content, and at the end the DATA
/// terminator ([`data_terminator`]). The concatenation of all chunks is
/// `dot_stuff(content) + data_terminator(content)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuffer {
    offset: usize,
    at_line_start: bool,
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
        for &b in piece {
            if self.at_line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            self.at_line_start = b == b'\n';
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
}

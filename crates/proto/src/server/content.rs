//! The message content receiver: reads DATA (dot-unstuffing, finding the
//! only end there is, CRLF.CRLF) or BDAT chunks (raw octets), checks bare CR
//! and LF, the text line length and the message size as the octets stream
//! by, and keeps the content while it is still acceptable.
//!
//! # Must never
//! End DATA on anything but `<CRLF>.<CRLF>` (the CRLF before the dot being
//! a real line end), in any split of the input: a bare LF or bare CR is
//! never a line end for that purpose, whatever [`BareNewline`] says. Keep
//! more than `max_message_size` octets, or keep anything once the message
//! is known to be rejected.
//!
//! # Security
//! The input is hostile and may be endless; memory stays bounded by the
//! size limit and time by the session's timers.
//!
//! # Errors
//! None here: the flags are read by the session at the end of the message.

use super::BareNewline;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// DATA: dot-stuffed, ended by CRLF.CRLF.
    Dot,
    /// BDAT: raw octets, sizes given by the commands.
    Chunked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// After a real CRLF, or at the start: a `.` here is a stuffing dot and
    /// `.<CRLF>` here is the end of DATA.
    LineStart,
    /// Saw `.` at a real line start.
    Dot,
    /// Saw `.<CR>` at a real line start.
    DotCr,
    /// Inside a line.
    Mid,
    /// Saw a CR inside a line.
    Cr,
    /// After a bare CR or LF: a `.` here is dropped like a stuffing dot, but
    /// nothing here can end DATA.
    SoftLineStart,
}

/// The receiver of one message's content.
#[derive(Debug)]
pub(crate) struct Content {
    framing: Framing,
    normalize: bool,
    max_size: u64,
    max_line: usize,
    kept: Vec<u8>,
    size: u64,
    line_len: usize,
    state: State,
    pub(crate) bare_newline: bool,
    pub(crate) too_big: bool,
    pub(crate) line_too_long: bool,
}

impl Content {
    pub(crate) fn new(framing: Framing, bare: BareNewline, max_size: u64, max_line: usize) -> Self {
        Content {
            framing,
            normalize: bare == BareNewline::Normalize,
            max_size,
            max_line,
            kept: Vec::new(),
            size: 0,
            line_len: 0,
            state: State::LineStart,
            bare_newline: false,
            too_big: false,
            line_too_long: false,
        }
    }

    /// True once the message is known to be rejected.
    pub(crate) fn is_failed(&self) -> bool {
        (self.bare_newline && !self.normalize) || self.too_big || self.line_too_long
    }

    /// Feeds input. With [`Framing::Dot`], returns `Some(n)` when the end
    /// of DATA was found after `n` octets of `input` (the terminator
    /// included); the rest of `input` is not content. Otherwise every octet
    /// was consumed and `None` is returned.
    pub(crate) fn feed(&mut self, input: &[u8]) -> Option<usize> {
        for (i, &b) in input.iter().enumerate() {
            if self.step(b) {
                return Some(i + 1);
            }
        }
        None
    }

    /// Ends the last BDAT chunk: a CR left pending at the very end is bare.
    pub(crate) fn finish_chunked(&mut self) {
        if self.state == State::Cr {
            self.bare();
            self.state = State::SoftLineStart;
        }
    }

    /// Octets held in memory (for the memory-bound tests).
    #[cfg(test)]
    pub(crate) fn kept_capacity(&self) -> usize {
        self.kept.capacity()
    }

    /// The content, once the message is complete and not failed.
    pub(crate) fn into_content(self) -> Vec<u8> {
        self.kept
    }

    fn emit(&mut self, b: u8) {
        match b {
            b'\n' => self.line_len = 0,
            b'\r' => {}
            _ => {
                self.line_len += 1;
                if self.line_len > self.max_line {
                    self.line_too_long = true;
                }
            }
        }
        self.size += 1;
        if self.size > self.max_size {
            self.too_big = true;
        }
        if self.is_failed() {
            if !self.kept.is_empty() {
                self.kept = Vec::new();
            }
        } else {
            self.kept.push(b);
        }
    }

    /// A bare CR or LF: flagged; under Normalize it becomes CRLF.
    fn bare(&mut self) {
        self.bare_newline = true;
        if self.normalize {
            self.emit(b'\r');
            self.emit(b'\n');
        } else {
            self.line_len = 0;
        }
    }

    /// One octet; true at the end of DATA.
    fn step(&mut self, b: u8) -> bool {
        let chunked = self.framing == Framing::Chunked;
        let mut state = self.state;
        loop {
            state = match (state, b) {
                (State::LineStart, b'.') if !chunked => State::Dot,
                (State::SoftLineStart, b'.') if !chunked => State::Mid,
                (State::LineStart | State::SoftLineStart, _) => {
                    state = State::Mid;
                    continue;
                }
                (State::Dot, b'\r') => State::DotCr,
                (State::Dot, b'\n') => {
                    self.bare();
                    State::SoftLineStart
                }
                (State::Dot, _) => {
                    // The stuffing dot is dropped; the octet is ordinary.
                    state = State::Mid;
                    continue;
                }
                (State::DotCr, b'\n') => {
                    self.state = State::LineStart;
                    return true;
                }
                (State::DotCr, _) => {
                    self.bare();
                    state = State::SoftLineStart;
                    continue;
                }
                (State::Mid, b'\r') => State::Cr,
                (State::Mid, b'\n') => {
                    self.bare();
                    State::SoftLineStart
                }
                (State::Mid, _) => {
                    self.emit(b);
                    State::Mid
                }
                (State::Cr, b'\n') => {
                    self.emit(b'\r');
                    self.emit(b'\n');
                    State::LineStart
                }
                (State::Cr, _) => {
                    self.bare();
                    state = State::SoftLineStart;
                    continue;
                }
            };
            break;
        }
        self.state = state;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(input: &[u8], bare: BareNewline) -> (Content, Option<usize>) {
        let mut c = Content::new(Framing::Dot, bare, 1 << 20, 1000);
        let end = c.feed(input);
        (c, end)
    }

    #[test]
    fn ends_only_at_crlf_dot_crlf_and_unstuffs() {
        let (c, end) = data(b"a\r\n..b\r\n.\r\nQUIT\r\n", BareNewline::Reject);
        assert_eq!(end, Some(11));
        assert_eq!(c.into_content(), b"a\r\n.b\r\n");
        let (c, end) = data(b".\r\n", BareNewline::Reject);
        assert_eq!(end, Some(3));
        assert!(c.into_content().is_empty());
    }

    #[test]
    fn smuggling_variants_never_end_data() {
        for v in [
            &b"\n.\n"[..],
            b"\n.\r\n",
            b"\r.\r\n",
            b"\r\n.\r",
            b"\r\n.\n",
        ] {
            for bare in [BareNewline::Reject, BareNewline::Normalize] {
                let mut input = b"x".to_vec();
                input.extend_from_slice(v);
                input.extend_from_slice(b"MAIL FROM:<a@b>\r\n");
                let (c, end) = data(&input, bare);
                assert_eq!(end, None, "{v:?}");
                assert!(c.bare_newline, "{v:?}");
            }
        }
    }

    #[test]
    fn normalize_makes_crlf_and_unstuffs_after_bare_lf() {
        let (c, end) = data(b"a\nb\r..c\r\n.\r\n", BareNewline::Normalize);
        assert!(end.is_some());
        assert!(!c.is_failed());
        assert_eq!(c.into_content(), b"a\r\nb\r\n.c\r\n");
    }

    #[test]
    fn size_and_line_limits() {
        let mut c = Content::new(Framing::Dot, BareNewline::Reject, 5, 1000);
        assert_eq!(c.feed(b"abc\r\nd\r\n.\r\n"), Some(11));
        assert!(c.too_big);
        assert!(c.into_content().is_empty());
        let mut c = Content::new(Framing::Dot, BareNewline::Reject, 100, 3);
        c.feed(b"abcd\r\n.\r\n");
        assert!(c.line_too_long);
    }

    #[test]
    fn chunked_is_raw_and_checks_crlf_across_chunks() {
        let mut c = Content::new(Framing::Chunked, BareNewline::Reject, 100, 100);
        assert_eq!(c.feed(b".\r\n.\r"), None);
        assert_eq!(c.feed(b"\n"), None);
        c.finish_chunked();
        assert!(!c.is_failed());
        assert_eq!(c.into_content(), b".\r\n.\r\n");
        let mut c = Content::new(Framing::Chunked, BareNewline::Reject, 100, 100);
        c.feed(b"a\r");
        c.finish_chunked();
        assert!(c.bare_newline);
    }
}

//! Server replies as the client reads them: lines from any split of the
//! input, bounded in memory, gathered into one [`Reply`] with its enhanced
//! status code.
//!
//! # Security
//! Replies are hostile: a line is cut at [`MAX_REPLY_LINE`] bytes and a
//! reply at [`MAX_REPLY_LINES`] kept lines.

use crate::reply::{Enhanced, Reply};

/// Longest reply line kept, in bytes; the rest of a longer line is skipped.
pub const MAX_REPLY_LINE: usize = 4096;
/// Most lines kept of one multi-line reply; later lines are read and dropped.
pub const MAX_REPLY_LINES: usize = 100;

/// Reads reply lines from any split of the input, bounded in memory.
#[derive(Debug, Default)]
pub(super) struct LineReader {
    pub(super) line: Vec<u8>,
    /// The current line is over [`MAX_REPLY_LINE`]: its rest is dropped.
    overlong: bool,
}

impl LineReader {
    /// Feeds bytes; calls `f` with each complete line (CRLF or LF removed).
    /// Stops early when `f` returns false and returns the unread rest's
    /// offset.
    pub(super) fn feed(&mut self, bytes: &[u8], mut f: impl FnMut(&[u8]) -> bool) -> usize {
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'\n' {
                if self.line.last() == Some(&b'\r') {
                    self.line.pop();
                }
                let go_on = f(&self.line);
                self.line.clear();
                self.overlong = false;
                if !go_on {
                    return i + 1;
                }
            } else if self.line.len() < MAX_REPLY_LINE {
                self.line.push(b);
            } else {
                self.overlong = true;
            }
        }
        bytes.len()
    }
}

/// A reply being collected from its lines.
#[derive(Debug, Default)]
pub(super) struct Partial {
    pub(super) code: Option<u16>,
    pub(super) lines: Vec<String>,
}

/// One reply line: `(code, is_last, text)`, or `None` if malformed.
pub(super) fn parse_line(line: &[u8]) -> Option<(u16, bool, String)> {
    let digits = line.get(..3)?;
    if !(b'2'..=b'5').contains(&digits[0]) || !digits[1..].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    let (last, text) = match line.get(3) {
        None => (true, &[][..]),
        Some(b' ') => (true, &line[4..]),
        Some(b'-') => (false, &line[4..]),
        Some(_) => return None,
    };
    Some((code, last, String::from_utf8_lossy(text).into_owned()))
}

/// Splits a leading enhanced status code of the reply's class off `text`.
fn split_enhanced(code: u16, text: &str) -> Option<(Enhanced, String)> {
    let (word, rest) = match text.split_once(' ') {
        Some((w, r)) => (w, r),
        None => (text, ""),
    };
    let mut parts = word.split('.');
    let class: u8 = parts.next()?.parse().ok()?;
    let subject: u16 = parts.next()?.parse().ok()?;
    let detail: u16 = parts.next()?.parse().ok()?;
    let class_of_code = u8::try_from(code / 100).ok()?;
    if parts.next().is_some() || class != class_of_code || subject > 999 || detail > 999 {
        return None;
    }
    Some((Enhanced::new(class, subject, detail), rest.to_string()))
}

/// Builds the reply: the enhanced code is taken from the first line and
/// removed from every line that repeats it.
pub(super) fn make_reply(code: u16, lines: Vec<String>) -> Reply {
    let enhanced = lines.first().and_then(|l| split_enhanced(code, l));
    let Some((e, _)) = enhanced else {
        return Reply::multiline(code, None, &lines);
    };
    let lines: Vec<String> = lines
        .into_iter()
        .map(|l| match split_enhanced(code, &l) {
            Some((same, rest)) if same == e => rest,
            _ => l,
        })
        .collect();
    Reply::multiline(code, Some(e), &lines)
}

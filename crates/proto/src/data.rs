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
//! session; these helpers are for whole buffers.
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
}

//! The content made canonical on its way in (issue 9 defect 11): CRLF line
//! ends only, and no NUL byte (stripped, as Postfix does). A bare CR is the
//! smuggling vector toward a receiver that ends DATA at `<CR>.<CR><LF>`
//! (`hello\r.\r\n`); made a line end, the client engine dot-stuffs the
//! `.` line like any other.
//!
//! # Must never
//! Copy content that is already canonical (the common case costs one scan),
//! or touch a `BINARYMIME` message, whose bytes are the message.

use std::borrow::Cow;

/// `content` with every NUL removed and every CR or LF that is not part of
/// a CRLF pair made a CRLF.
pub(crate) fn canonical(content: &[u8]) -> Cow<'_, [u8]> {
    if is_canonical(content) {
        return Cow::Borrowed(content);
    }
    let mut out = Vec::with_capacity(content.len() + 64);
    let mut i = 0;
    while i < content.len() {
        match content[i] {
            0 => {}
            b'\r' if content.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(out)
}

fn is_canonical(content: &[u8]) -> bool {
    let mut i = 0;
    while i < content.len() {
        match content[i] {
            0 | b'\n' => return false,
            b'\r' if content.get(i + 1) != Some(&b'\n') => return false,
            b'\r' => i += 2,
            _ => i += 1,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_cr_lf_and_nul_are_made_canonical() {
        assert_eq!(
            &canonical(b"hello\r.\r\nmore\r\n")[..],
            b"hello\r\n.\r\nmore\r\n"
        );
        assert_eq!(&canonical(b"a\r\n\x00.\r\nb\r\n")[..], b"a\r\n.\r\nb\r\n");
        assert_eq!(&canonical(b"a\nb\r\r\nc\r")[..], b"a\r\nb\r\n\r\nc\r\n");
        let clean: &[u8] = b"Subject: x\r\n\r\nbody\r\n";
        assert!(matches!(canonical(clean), Cow::Borrowed(_)));
        assert!(matches!(canonical(b""), Cow::Borrowed(_)));
    }
}

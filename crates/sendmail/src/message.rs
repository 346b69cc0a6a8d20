//! The message as submitted: reading it from stdin ([`read_input`]). Its
//! header is fixed by cleanup (`sluice_cleanup::fix_local_header`).
//!
//! Stored content has CRLF line ends, as smtpd stores what it receives
//! (FORMAT.md): a bare LF from stdin becomes CRLF.
//!
//! # Must never
//! Read past the size limit.
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
}

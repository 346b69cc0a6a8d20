//! SMTP replies: the three-digit code, the RFC 3463 enhanced status code and
//! the text, and their wire form (RFC 5321 4.2, multi-line `250-` form).
//!
//! Every word Sluice says to a peer is made in this module, so that the
//! wording stays bland (no software version, no internal detail) and can be
//! reviewed in one place.
//!
//! # Must never
//! Put a CR, an LF or another control character on the wire inside a reply
//! line: text that came from a peer is passed through [`Reply::new`], which
//! replaces such characters.
//!
//! # Security
//! Peer-supplied fragments (addresses, host names, ESMTP keywords) appear in a
//! few replies; they have passed the grammar first and are sanitized again
//! here.
//!
//! # Errors
//! None: building a reply cannot fail.

use std::fmt;

/// An RFC 3463 enhanced status code, `class.subject.detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Enhanced {
    /// 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    pub class: u8,
    /// The subject sub-code.
    pub subject: u16,
    /// The detail sub-code.
    pub detail: u16,
}

impl Enhanced {
    /// Builds `class.subject.detail`.
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        Enhanced {
            class,
            subject,
            detail,
        }
    }
}

impl fmt::Display for Enhanced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// One SMTP reply, possibly multi-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The reply code, 200..=599.
    pub code: u16,
    /// The enhanced status code put in front of the text of every line.
    pub enhanced: Option<Enhanced>,
    /// The text lines (at least one; an empty reply has one empty line).
    pub lines: Vec<String>,
}

/// Replaces control characters (and DEL) so that a line can never break
/// the reply framing.
fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

impl Reply {
    /// A one-line reply. Control characters in `text` become `?`.
    pub fn new(code: u16, enhanced: Option<Enhanced>, text: &str) -> Self {
        Reply {
            code,
            enhanced,
            lines: vec![sanitize(text)],
        }
    }

    /// A multi-line reply. Control characters in the lines become `?`.
    pub fn multiline(code: u16, enhanced: Option<Enhanced>, lines: &[String]) -> Self {
        let mut lines: Vec<String> = lines.iter().map(|l| sanitize(l)).collect();
        if lines.is_empty() {
            lines.push(String::new());
        }
        Reply {
            code,
            enhanced,
            lines,
        }
    }

    /// 4xx or 5xx.
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// Appends the wire form (`CODE-text` lines, the last `CODE text`, each
    /// ending in CRLF) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let count = self.lines.len().max(1);
        for i in 0..count {
            let text = self.lines.get(i).map(String::as_str).unwrap_or("");
            let sep = if i + 1 == count { ' ' } else { '-' };
            let line = match self.enhanced {
                Some(e) if text.is_empty() => format!("{}{}{}", self.code, sep, e),
                Some(e) => format!("{}{}{} {}", self.code, sep, e, text),
                None => format!("{}{}{}", self.code, sep, text),
            };
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The wire form as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }
}

/// The one-line form without CRLF (lines joined by a space), as the operator
/// log shows it, e.g. `554 5.7.1 <x@y>: Relay access denied`.
impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(e) = self.enhanced {
            write!(f, " {e}")?;
        }
        for line in &self.lines {
            if !line.is_empty() {
                write!(f, " {line}")?;
            }
        }
        Ok(())
    }
}

const fn e(class: u8, subject: u16, detail: u16) -> Option<Enhanced> {
    Some(Enhanced::new(class, subject, detail))
}

// The catalogue: every reply the server session gives. Kept together so the
// wording can be reviewed at once.

/// `220 host ESMTP Sluice` (no enhanced code: RFC 2034 exempts the greeting).
pub fn greeting(host: &str) -> Reply {
    Reply::new(220, None, &format!("{host} ESMTP Sluice"))
}
/// `250 host` to HELO.
pub fn helo(host: &str) -> Reply {
    Reply::new(250, None, host)
}
/// The EHLO reply: the host name, then one extension keyword per line.
pub fn ehlo(host: &str, max_size: u64) -> Reply {
    let lines = [
        host.to_string(),
        "PIPELINING".to_string(),
        format!("SIZE {max_size}"),
        "ETRN".to_string(),
        "ENHANCEDSTATUSCODES".to_string(),
        "8BITMIME".to_string(),
        "DSN".to_string(),
        "SMTPUTF8".to_string(),
        "CHUNKING".to_string(),
    ];
    Reply::multiline(250, None, &lines)
}
/// `250 2.1.0 Ok` to MAIL.
pub fn mail_ok() -> Reply {
    Reply::new(250, e(2, 1, 0), "Ok")
}
/// `250 2.1.5 Ok` to RCPT.
pub fn rcpt_ok() -> Reply {
    Reply::new(250, e(2, 1, 5), "Ok")
}
/// `250 2.0.0 Ok` to RSET and NOOP.
pub fn ok() -> Reply {
    Reply::new(250, e(2, 0, 0), "Ok")
}
/// `354` after DATA.
pub fn start_data() -> Reply {
    Reply::new(354, None, "End data with <CR><LF>.<CR><LF>")
}
/// `250 2.0.0 Ok: N octets` after a BDAT chunk that is not the last.
pub fn chunk_ok(octets: u64) -> Reply {
    Reply::new(250, e(2, 0, 0), &format!("Ok: {octets} octets"))
}
/// `250 2.0.0 Ok: queued as ID`: only ever made from `Verdict::Queued`.
pub fn queued(queue_id: &str) -> Reply {
    Reply::new(250, e(2, 0, 0), &format!("Ok: queued as {queue_id}"))
}
/// `451 4.3.0` when the queue file could not be written.
pub fn queue_write_error() -> Reply {
    Reply::new(451, e(4, 3, 0), "Error: queue file write error")
}
/// `554 5.4.6 Too many hops` when cleanup refuses a relay loop.
pub fn too_many_hops() -> Reply {
    Reply::new(554, e(5, 4, 6), "Error: too many hops")
}
/// `550 5.6.0` when cleanup refuses content with NUL bytes
/// (`nul_bytes: "reject"`).
pub fn nul_bytes() -> Reply {
    Reply::new(550, e(5, 6, 0), "Error: message content contains NUL bytes")
}
/// `221 2.0.0 Bye` to QUIT.
pub fn bye() -> Reply {
    Reply::new(221, e(2, 0, 0), "Bye")
}
/// `214 2.0.0` to HELP.
pub fn help() -> Reply {
    Reply::new(
        214,
        e(2, 0, 0),
        "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP ETRN",
    )
}
/// `252 2.5.2` to VRFY (and EXPN when enabled): never confirms an address.
pub fn cannot_verify() -> Reply {
    Reply::new(
        252,
        e(2, 5, 2),
        "Cannot verify the address; send mail and delivery will be attempted",
    )
}
/// `502 5.5.1` for commands Sluice does not offer.
pub fn not_implemented() -> Reply {
    Reply::new(502, e(5, 5, 1), "Error: command not implemented")
}
/// `500 5.5.2` for an unknown verb.
pub fn unknown_command() -> Reply {
    Reply::new(500, e(5, 5, 2), "Error: command not recognized")
}
/// `500 5.5.2` for a command line over the limit.
pub fn line_too_long() -> Reply {
    Reply::new(500, e(5, 5, 2), "Error: line too long")
}
/// `500 5.5.2` for a command line ending in a bare LF.
pub fn bare_lf_command() -> Reply {
    Reply::new(500, e(5, 5, 2), "Error: bare <LF> received")
}
/// `500 5.5.2` for a command line with invalid UTF-8 or control characters.
pub fn bad_command_syntax() -> Reply {
    Reply::new(500, e(5, 5, 2), "Error: bad syntax")
}
/// `501 5.5.4 Syntax: ...` for wrong arguments.
pub fn syntax(usage: &str) -> Reply {
    Reply::new(501, e(5, 5, 4), &format!("Syntax: {usage}"))
}
/// `503 5.5.1 Error: ...` for a command out of sequence.
pub fn bad_sequence(what: &str) -> Reply {
    Reply::new(503, e(5, 5, 1), &format!("Error: {what}"))
}
/// `501 5.1.7` for a malformed reverse-path.
pub fn bad_sender(what: &str) -> Reply {
    Reply::new(
        501,
        e(5, 1, 7),
        &format!("Bad sender address syntax: {what}"),
    )
}
/// `501 5.1.3` for a malformed forward-path.
pub fn bad_recipient(what: &str) -> Reply {
    Reply::new(
        501,
        e(5, 1, 3),
        &format!("Bad recipient address syntax: {what}"),
    )
}
/// `553 5.6.7` for a non-ASCII address without SMTPUTF8.
pub fn utf8_not_declared() -> Reply {
    Reply::new(
        553,
        e(5, 6, 7),
        "Error: non-ASCII address requires the SMTPUTF8 parameter",
    )
}
/// `555 5.5.4` for an unknown or unsupported MAIL/RCPT parameter.
pub fn unsupported_parameter(keyword: &str) -> Reply {
    Reply::new(555, e(5, 5, 4), &format!("Unsupported option: {keyword}"))
}
/// `501 5.5.4` for a known parameter with a bad or repeated value.
pub fn bad_parameter(keyword: &str) -> Reply {
    Reply::new(501, e(5, 5, 4), &format!("Bad {keyword} syntax"))
}
/// `552 5.3.4` when SIZE= is over the limit at MAIL.
pub fn size_exceeds_limit() -> Reply {
    Reply::new(552, e(5, 3, 4), "Message size exceeds fixed limit")
}
/// `552 5.3.4` when the content is over the limit.
pub fn message_too_big() -> Reply {
    Reply::new(552, e(5, 3, 4), "Error: message file too big")
}
/// `550 5.6.0` when the content held a bare CR or LF.
pub fn bare_newline_in_message() -> Reply {
    Reply::new(550, e(5, 6, 0), "Error: bare <CR> or <LF> in message")
}
/// `550 5.6.0` when a content line was over the line length limit.
pub fn message_line_too_long() -> Reply {
    Reply::new(550, e(5, 6, 0), "Error: message line too long")
}
/// `452 4.5.3` past the recipient limit.
pub fn too_many_recipients() -> Reply {
    Reply::new(452, e(4, 5, 3), "Error: too many recipients")
}
/// `554 5.7.1 <addr>: Relay access denied`.
pub fn relay_denied(address: &str) -> Reply {
    Reply::new(
        554,
        e(5, 7, 1),
        &format!("<{address}>: Relay access denied"),
    )
}
/// `250 2.0.0 Queuing started` to an accepted ETRN.
pub fn etrn_started() -> Reply {
    Reply::new(250, e(2, 0, 0), "Queuing started")
}
/// `458 4.5.0` when ETRN could not be started.
pub fn etrn_unavailable() -> Reply {
    Reply::new(458, e(4, 5, 0), "Unable to queue messages for node")
}
/// `459 4.7.1` for ETRN of a domain that is not a relay domain.
pub fn etrn_not_allowed(domain: &str) -> Reply {
    Reply::new(
        459,
        e(4, 7, 1),
        &format!("<{domain}>: Node not allowed: not a relay domain"),
    )
}
/// `458 4.7.1` for an ETRN past the per-session limit.
pub fn etrn_too_many() -> Reply {
    Reply::new(
        458,
        e(4, 7, 1),
        "Unable to queue messages for node: too many ETRN requests",
    )
}
/// `421 4.4.2 host Error: timeout exceeded`.
pub fn timeout(host: &str) -> Reply {
    Reply::new(421, e(4, 4, 2), &format!("{host} Error: timeout exceeded"))
}
/// `421 4.7.0 host Error: too many errors`.
pub fn too_many_errors(host: &str) -> Reply {
    Reply::new(421, e(4, 7, 0), &format!("{host} Error: too many errors"))
}
/// `421 4.3.2 host Service shutting down`.
pub fn shutting_down(host: &str) -> Reply {
    Reply::new(421, e(4, 3, 2), &format!("{host} Service shutting down"))
}
/// `421 4.5.0 host Error: ...` when the command stream cannot be followed
/// any more (a BDAT whose size cannot be read).
pub fn lost_sync(host: &str) -> Reply {
    Reply::new(
        421,
        e(4, 5, 0),
        &format!("{host} Error: bad BDAT chunk size, closing connection"),
    )
}
/// `550 5.1.1 <addr>: Recipient address rejected: User unknown in local
/// recipient table` (Postfix's words, which fail2ban filters know).
pub fn unknown_local_recipient(address: &str) -> Reply {
    Reply::new(
        550,
        e(5, 1, 1),
        &format!("<{address}>: Recipient address rejected: User unknown in local recipient table"),
    )
}

/// `451 4.3.0 <addr>: Temporary lookup failure`.
pub fn recipient_lookup_failed(address: &str) -> Reply {
    Reply::new(
        451,
        e(4, 3, 0),
        &format!("<{address}>: Temporary lookup failure"),
    )
}

/// `421 4.7.0 host Error: too many connections` (the per-process cap).
pub fn too_many_connections(host: &str) -> Reply {
    Reply::new(
        421,
        e(4, 7, 0),
        &format!("{host} Error: too many connections"),
    )
}

/// `421 4.7.0 host Error: too many connections from addr`: a client over
/// its per-client connection limit (count or rate), as Postfix says it.
pub fn too_many_connections_from(host: &str, addr: std::net::IpAddr) -> Reply {
    Reply::new(
        421,
        e(4, 7, 0),
        &format!("{host} Error: too many connections from {addr}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_with_enhanced() {
        assert_eq!(ok().to_bytes(), b"250 2.0.0 Ok\r\n");
    }

    #[test]
    fn multi_line_uses_dash_form() {
        let r = Reply::multiline(250, None, &["a".into(), "b".into(), "c".into()]);
        assert_eq!(r.to_bytes(), b"250-a\r\n250-b\r\n250 c\r\n");
    }

    #[test]
    fn control_characters_never_reach_the_wire() {
        let r = Reply::new(550, e(5, 0, 0), "x\r\n250 fake\0");
        assert_eq!(r.to_bytes(), b"550 5.0.0 x??250 fake?\r\n");
    }

    #[test]
    fn display_is_one_line() {
        assert_eq!(
            relay_denied("a@b").to_string(),
            "554 5.7.1 <a@b>: Relay access denied"
        );
    }
}

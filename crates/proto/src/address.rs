//! The path grammar of RFC 5321 4.1.2 (`Path`, `Mailbox`, `Local-part`,
//! `Domain`, `address-literal`, source routes), its SMTPUTF8 extension
//! (RFC 6531 3.3: UTF-8 in atoms, quoted strings and U-labels), the length
//! limits of RFC 5321 4.5.3.1, and xtext (RFC 3461 4).
//!
//! # Must never
//! Accept an address that does not match the grammar, or hand back a source
//! route as part of the mailbox: the route is parsed and stripped, and only
//! the final mailbox counts (RFC 5321 4.1.1.3, appendix C).
//!
//! # Security
//! Every input here is hostile peer text. Parsing is linear, allocates at
//! most the size of the input, and never recurses.
//!
//! # Errors
//! [`AddressError`] says which rule failed; the session turns it into a
//! `501` reply.

use std::net::{Ipv4Addr, Ipv6Addr};

/// RFC 5321 4.5.3.1.1: octets in a local part.
pub const MAX_LOCAL_PART: usize = 64;
/// RFC 5321 4.5.3.1.2: octets in a domain.
pub const MAX_DOMAIN: usize = 255;
/// RFC 5321 4.5.3.1.3: octets in a path, angle brackets and route included.
pub const MAX_PATH: usize = 256;

/// Why a path did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// The text does not match the grammar.
    #[error("syntax error")]
    Syntax,
    /// The local part is over 64 octets.
    #[error("local part too long")]
    LocalPartTooLong,
    /// The domain is over 255 octets.
    #[error("domain too long")]
    DomainTooLong,
    /// The path is over 256 octets.
    #[error("path too long")]
    PathTooLong,
}

/// The part after `@`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Domain {
    /// A host name (LDH labels, or U-labels under SMTPUTF8), as written.
    Name(String),
    /// An address literal, brackets included, e.g. `[192.0.2.1]`.
    Literal(String),
}

impl Domain {
    /// The domain as written.
    pub fn as_str(&self) -> &str {
        match self {
            Domain::Name(s) | Domain::Literal(s) => s,
        }
    }
}

/// `Local-part "@" ( Domain / address-literal )`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// The local part as written (a quoted string keeps its quotes).
    pub local_part: String,
    /// The domain.
    pub domain: Domain,
}

impl Mailbox {
    /// `local@domain`, as the envelope stores it.
    pub fn address(&self) -> String {
        format!("{}@{}", self.local_part, self.domain.as_str())
    }

    /// True when local part and domain are pure ASCII.
    pub fn is_ascii(&self) -> bool {
        self.local_part.is_ascii() && self.domain.as_str().is_ascii()
    }

    /// True when the local part carries routing syntax that some systems
    /// act on: the %-hack, a bang path, or an `@` inside a quoted string.
    pub fn has_routing_local_part(&self) -> bool {
        self.local_part.contains(['%', '!', '@'])
    }
}

/// What was inside the angle brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Path {
    /// `<>`, the null reverse-path.
    Null,
    /// `<Postmaster>` without a domain (RFC 5321 4.1.1.3), any case.
    Postmaster,
    /// A mailbox; `had_source_route` tells whether `@a,@b:` was stripped.
    Mailbox {
        /// The final mailbox.
        mailbox: Mailbox,
        /// A source route was present (and was dropped).
        had_source_route: bool,
    },
}

/// Parses a path (`<...>`) at the start of `input` and returns it with the
/// rest of the input (which starts just after `>`).
///
/// With `utf8` false, only ASCII is accepted in the address; a non-ASCII
/// address then fails with [`AddressError::Syntax`]. The session parses with
/// `utf8` true and applies the SMTPUTF8 rule itself, so it can give the
/// proper `553 5.6.7` reply.
pub fn parse_path(input: &str, utf8: bool) -> Result<(Path, &str), AddressError> {
    let bytes = input.as_bytes();
    if bytes.first() != Some(&b'<') {
        return Err(AddressError::Syntax);
    }
    let mut p = Parser {
        s: input,
        pos: 1,
        utf8,
    };
    if p.peek() == Some(b'>') {
        return Ok((Path::Null, &input[2..]));
    }
    // RFC 5321 4.1.1.3: "<Postmaster>" with no domain.
    // Compared as bytes: the input may hold UTF-8 anywhere, and 12 is a
    // character boundary only once these 12 bytes are known to be ASCII.
    if bytes.len() >= 12 && bytes[..12].eq_ignore_ascii_case(b"<postmaster>") {
        return Ok((Path::Postmaster, &input[12..]));
    }
    let mut had_source_route = false;
    if p.peek() == Some(b'@') {
        // A-d-l = At-domain *( "," At-domain ) ":"
        loop {
            p.expect(b'@')?;
            p.domain_name()?;
            match p.next() {
                Some(b',') => continue,
                Some(b':') => break,
                _ => return Err(AddressError::Syntax),
            }
        }
        had_source_route = true;
    }
    let local_start = p.pos;
    p.local_part()?;
    let local_part = &input[local_start..p.pos];
    p.expect(b'@')?;
    let domain_start = p.pos;
    let domain = if p.peek() == Some(b'[') {
        p.address_literal()?;
        Domain::Literal(input[domain_start..p.pos].to_string())
    } else {
        p.domain_name()?;
        Domain::Name(input[domain_start..p.pos].to_string())
    };
    p.expect(b'>')?;
    if local_part.len() > MAX_LOCAL_PART {
        return Err(AddressError::LocalPartTooLong);
    }
    if domain.as_str().len() > MAX_DOMAIN {
        return Err(AddressError::DomainTooLong);
    }
    if p.pos > MAX_PATH {
        return Err(AddressError::PathTooLong);
    }
    let mailbox = Mailbox {
        local_part: local_part.to_string(),
        domain,
    };
    Ok((
        Path::Mailbox {
            mailbox,
            had_source_route,
        },
        &input[p.pos..],
    ))
}

/// Checks an address as an envelope stores it (without angle brackets):
/// `""` (the null path), a mailbox that the path grammar accepts whole and
/// gives back unchanged, or a local part alone (`postmaster`, or a local
/// name an alias expands to) that the local-part grammar accepts. Every door into the queue checks
/// addresses with it, and every writer of an address onto a wire
/// (`MAIL FROM`, `RCPT TO`) or into a mailbox (`Return-Path:`,
/// `Delivered-To:`, the mbox `From ` line) checks again, since a queue file
/// written by hand or by an older version is input too: no control
/// character, and no space or bracket outside the grammar, ever passes.
pub fn check_stored(address: &str) -> Result<(), AddressError> {
    if address.is_empty() {
        return Ok(());
    }
    let qualified = !address.contains('@');
    let path = if qualified {
        format!("<{address}@localhost>")
    } else {
        format!("<{address}>")
    };
    match parse_path(&path, true)? {
        (
            Path::Mailbox {
                mailbox,
                had_source_route: false,
            },
            "",
        ) if mailbox.address() == path[1..path.len() - 1] => Ok(()),
        _ => Err(AddressError::Syntax),
    }
}

/// Checks a complete string as a domain name (LDH or, with `utf8`, U-labels).
pub fn is_domain(s: &str, utf8: bool) -> bool {
    let mut p = Parser { s, pos: 0, utf8 };
    p.domain_name().is_ok() && p.pos == s.len() && s.len() <= MAX_DOMAIN
}

/// Checks a complete string as an address literal (`[...]`).
pub fn is_address_literal(s: &str) -> bool {
    let mut p = Parser {
        s,
        pos: 0,
        utf8: false,
    };
    p.address_literal().is_ok() && p.pos == s.len()
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
    utf8: bool,
}

fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn expect(&mut self, want: u8) -> Result<(), AddressError> {
        if self.next() == Some(want) {
            Ok(())
        } else {
            Err(AddressError::Syntax)
        }
    }

    /// Consumes one non-ASCII UTF-8 character if allowed; never a C1
    /// control (U+0080 to U+009F: NEL is a line end to some readers). The
    /// input is a `str`, so a byte >= 0x80 always starts a valid sequence.
    fn utf8_char(&mut self) -> bool {
        match self.peek() {
            Some(b) if b >= 0x80 && self.utf8 => match self.s[self.pos..].chars().next() {
                Some(c) if !c.is_control() => {
                    self.pos += c.len_utf8();
                    true
                }
                _ => false,
            },
            _ => false,
        }
    }

    fn local_part(&mut self) -> Result<(), AddressError> {
        if self.peek() == Some(b'"') {
            return self.quoted_string();
        }
        // Dot-string = Atom *("." Atom)
        loop {
            let start = self.pos;
            loop {
                match self.peek() {
                    Some(b) if is_atext(b) => self.pos += 1,
                    _ => {
                        if !self.utf8_char() {
                            break;
                        }
                    }
                }
            }
            if self.pos == start {
                return Err(AddressError::Syntax);
            }
            if self.peek() == Some(b'.') {
                self.pos += 1;
            } else {
                return Ok(());
            }
        }
    }

    fn quoted_string(&mut self) -> Result<(), AddressError> {
        self.expect(b'"')?;
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.next() {
                        Some(32..=126) => {}
                        _ => return Err(AddressError::Syntax),
                    }
                }
                Some(32..=33 | 35..=91 | 93..=126) => self.pos += 1,
                _ => {
                    if !self.utf8_char() {
                        return Err(AddressError::Syntax);
                    }
                }
            }
        }
    }

    /// sub-domain *("." sub-domain); sub-domain = Let-dig [Ldh-str].
    fn domain_name(&mut self) -> Result<(), AddressError> {
        loop {
            let start = self.pos;
            let mut last = 0u8;
            loop {
                match self.peek() {
                    Some(b) if b.is_ascii_alphanumeric() || b == b'-' => {
                        if self.pos == start && b == b'-' {
                            return Err(AddressError::Syntax);
                        }
                        last = b;
                        self.pos += 1;
                    }
                    _ => {
                        if self.utf8_char() {
                            last = b'x';
                        } else {
                            break;
                        }
                    }
                }
            }
            if self.pos == start || last == b'-' || self.pos - start > 63 {
                return Err(AddressError::Syntax);
            }
            if self.peek() == Some(b'.') {
                self.pos += 1;
            } else {
                return Ok(());
            }
        }
    }

    /// "[" ( IPv4 / "IPv6:" IPv6 / tag ":" dcontent ) "]"
    fn address_literal(&mut self) -> Result<(), AddressError> {
        self.expect(b'[')?;
        let start = self.pos;
        let end = self.s[start..]
            .find(']')
            .map(|i| start + i)
            .ok_or(AddressError::Syntax)?;
        let inner = &self.s[start..end];
        let ok = if let Some(v6) = strip_prefix_ignore_case(inner, "IPv6:") {
            v6.parse::<Ipv6Addr>().is_ok()
        } else if inner.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            inner.parse::<Ipv4Addr>().is_ok()
        } else if let Some((tag, content)) = inner.split_once(':') {
            // General-address-literal: Standardized-tag ":" 1*dcontent
            let tag_ok = !tag.is_empty()
                && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !tag.ends_with('-');
            let content_ok =
                !content.is_empty() && content.bytes().all(|b| matches!(b, 33..=90 | 94..=126));
            tag_ok && content_ok
        } else {
            false
        };
        if !ok {
            return Err(AddressError::Syntax);
        }
        self.pos = end + 1;
        Ok(())
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len() && s.is_char_boundary(prefix.len()) {
        let (head, tail) = s.split_at(prefix.len());
        if head.eq_ignore_ascii_case(prefix) {
            return Some(tail);
        }
    }
    None
}

/// Why an xtext value did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed xtext")]
pub struct XtextError;

/// Decodes RFC 3461 xtext: `xchar` is `!`..`~` except `+` and `=`, and
/// `+HH` (upper-case hex) stands for one octet. The result must be UTF-8.
pub fn decode_xtext(s: &str) -> Result<String, XtextError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                let hex = |c: u8| match c {
                    b'0'..=b'9' => Some(c - b'0'),
                    b'A'..=b'F' => Some(c - b'A' + 10),
                    _ => None,
                };
                let hi = b.get(i + 1).copied().and_then(hex).ok_or(XtextError)?;
                let lo = b.get(i + 2).copied().and_then(hex).ok_or(XtextError)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'=' => return Err(XtextError),
            c @ 33..=126 => {
                out.push(c);
                i += 1;
            }
            _ => return Err(XtextError),
        }
    }
    String::from_utf8(out).map_err(|_| XtextError)
}

/// Encodes text as RFC 3461 xtext (the inverse of [`decode_xtext`]).
pub fn encode_xtext(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if (33..=126).contains(&b) && b != b'+' && b != b'=' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_addresses_pass_the_grammar_whole() {
        for ok in [
            "",
            "postmaster",
            "Postmaster",
            "root",
            "a@b.example",
            "\"a b\"@x.example",
            "u@[192.0.2.1]",
            "j\u{f6}rg@b\u{fc}cher.example",
        ] {
            assert_eq!(check_stored(ok), Ok(()), "{ok:?}");
        }
        for bad in [
            "a@b\r\nRCPT TO:<evil@x>",
            "a\n@b",
            "a@b\0",
            "a b@c",
            "a@b> SIZE=1",
            "@r:a@b",
            "<a@b>",
            "a b",
            "root\r\nX",
            "\"a\rb\"@x",
            "a@b\u{85}",
        ] {
            assert!(check_stored(bad).is_err(), "{bad:?}");
        }
    }

    fn mailbox(s: &str) -> Mailbox {
        match parse_path(s, true) {
            Ok((Path::Mailbox { mailbox, .. }, "")) => mailbox,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn plain_and_null_and_postmaster() {
        assert_eq!(mailbox("<a.b@example.org>").address(), "a.b@example.org");
        assert_eq!(parse_path("<>", false), Ok((Path::Null, "")));
        assert_eq!(
            parse_path("<POSTMASTER> x", false),
            Ok((Path::Postmaster, " x"))
        );
    }

    #[test]
    fn utf8_near_the_postmaster_check_is_no_panic() {
        // Found by the server_session fuzz target: a multi-byte character
        // across byte 12 used to panic the 12-byte "<postmaster>" check.
        assert!(parse_path("<BRCPT TO:B\u{770}DATA", true).is_err());
        assert!(parse_path("<postmaste\u{e9}>", true).is_err());
    }

    #[test]
    fn rest_follows_the_bracket() {
        let (_, rest) = parse_path("<a@b.c> SIZE=1", false).unwrap();
        assert_eq!(rest, " SIZE=1");
    }

    #[test]
    fn source_route_is_stripped() {
        let (p, _) = parse_path("<@relay.example,@x.example:u@final.example>", false).unwrap();
        match p {
            Path::Mailbox {
                mailbox,
                had_source_route,
            } => {
                assert!(had_source_route);
                assert_eq!(mailbox.address(), "u@final.example");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn quoted_local_part_keeps_quotes_and_flags_at_sign() {
        let m = mailbox("<\"a@b\\\"c\"@example.org>");
        assert_eq!(m.local_part, "\"a@b\\\"c\"");
        assert!(m.has_routing_local_part());
        assert!(mailbox("<u%v@example.org>").has_routing_local_part());
        assert!(mailbox("<v!u@example.org>").has_routing_local_part());
        assert!(!mailbox("<\"john smith\"@example.org>").has_routing_local_part());
    }

    #[test]
    fn literals() {
        assert!(matches!(
            mailbox("<u@[192.0.2.1]>").domain,
            Domain::Literal(_)
        ));
        assert!(matches!(
            mailbox("<u@[IPv6:2001:db8::1]>").domain,
            Domain::Literal(_)
        ));
        assert!(parse_path("<u@[300.1.1.1]>", false).is_err());
        assert!(parse_path("<u@[IPv6:zz]>", false).is_err());
        assert!(is_address_literal("[x-tag:abc]"));
    }

    #[test]
    fn malformed() {
        for s in [
            "a@b", "<a@b", "<@b>", "<a@>", "<a..b@c>", "<.a@c>", "<a@-b>", "<a@b->", "<a@b..c>",
            "<a b@c>", "<\"a@c>", "<a@b c>", "<@x:>", "<@x,a@b>",
        ] {
            assert_eq!(
                parse_path(s, true).map(|_| ()),
                Err(AddressError::Syntax),
                "{s}"
            );
        }
    }

    #[test]
    fn utf8_only_when_allowed() {
        assert!(parse_path("<jösé@exämple.org>", false).is_err());
        assert!(!mailbox("<jösé@exämple.org>").is_ascii());
        assert!(parse_path("<\"ä\"@x.org>", true).is_ok());
    }

    #[test]
    fn lengths() {
        let l64 = "a".repeat(64);
        assert!(parse_path(&format!("<{l64}@x.org>"), false).is_ok());
        let l65 = "a".repeat(65);
        assert_eq!(
            parse_path(&format!("<{l65}@x.org>"), false).map(|_| ()),
            Err(AddressError::LocalPartTooLong)
        );
        // 4 labels of 63 + 3 dots = 255: fine; one more octet: too long.
        let label = "d".repeat(63);
        let d255 = format!("{label}.{label}.{label}.{label}");
        assert_eq!(d255.len(), 255);
        assert!(is_domain(&d255, false));
        let d256 = format!("{d255}x");
        assert!(!is_domain(&d256, false));
        assert_eq!(
            parse_path(&format!("<a@{d255}>"), false).map(|_| ()),
            Err(AddressError::PathTooLong)
        );
        let d258 = format!("{label}.{label}.{label}.{label}.x");
        assert_eq!(
            parse_path(&format!("<a@{d258}>"), false).map(|_| ()),
            Err(AddressError::DomainTooLong)
        );
    }

    #[test]
    fn xtext() {
        assert_eq!(decode_xtext("rfc822;a+2Bb@c").unwrap(), "rfc822;a+b@c");
        assert!(decode_xtext("a+2b").is_err());
        assert!(decode_xtext("a=b").is_err());
        assert!(decode_xtext("a+4").is_err());
        assert_eq!(encode_xtext("a+b=c d"), "a+2Bb+3Dc+20d");
        assert_eq!(decode_xtext(&encode_xtext("x=+ ü")).unwrap(), "x=+ ü");
    }
}

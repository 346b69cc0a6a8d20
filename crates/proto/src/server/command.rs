//! The command table of the server session (one row per verb, with its
//! RFC 2920 "must end a pipelined group" flag) and the parsers of the ESMTP
//! parameters of MAIL and RCPT (RFC 1870 SIZE, RFC 6152 BODY, RFC 6531
//! SMTPUTF8, RFC 3461 RET/ENVID/NOTIFY/ORCPT).
//!
//! # Must never
//! Accept a parameter Sluice does not advertise (BODY=BINARYMIME, AUTH=, ...)
//! or keep a value that failed its grammar.
//!
//! # Errors
//! A bad parameter is returned as the [`Reply`] the client gets.

use crate::address::decode_xtext;
use crate::envelope::{BodyType, Notify, Ret};
use crate::reply::{self, Reply};

/// A command verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    Helo,
    Ehlo,
    Mail,
    Rcpt,
    Data,
    Bdat,
    Rset,
    Noop,
    Vrfy,
    Expn,
    Etrn,
    Help,
    Quit,
    Starttls,
    Auth,
    Send,
    Soml,
    Saml,
    Turn,
    Atrn,
    /// Anything else, and lines that could not be read as a command.
    Unknown,
}

/// One row of the command table.
pub(crate) struct Row {
    pub(crate) verb: Verb,
    /// Upper-case verb as sent on the wire; lower-case in the statistics.
    pub(crate) name: &'static str,
    pub(crate) stat_name: &'static str,
    /// RFC 2920 3.1: may only be the last command of a pipelined group.
    pub(crate) ends_group: bool,
}

const fn row(verb: Verb, name: &'static str, stat_name: &'static str, ends_group: bool) -> Row {
    Row {
        verb,
        name,
        stat_name,
        ends_group,
    }
}

/// The command table, in the order the statistics are printed.
pub(crate) const TABLE: [Row; 21] = [
    row(Verb::Helo, "HELO", "helo", true),
    row(Verb::Ehlo, "EHLO", "ehlo", true),
    row(Verb::Starttls, "STARTTLS", "starttls", true),
    row(Verb::Auth, "AUTH", "auth", true),
    row(Verb::Mail, "MAIL", "mail", false),
    row(Verb::Rcpt, "RCPT", "rcpt", false),
    row(Verb::Data, "DATA", "data", true),
    row(Verb::Bdat, "BDAT", "bdat", false),
    row(Verb::Rset, "RSET", "rset", false),
    row(Verb::Noop, "NOOP", "noop", true),
    row(Verb::Vrfy, "VRFY", "vrfy", true),
    row(Verb::Expn, "EXPN", "expn", true),
    row(Verb::Etrn, "ETRN", "etrn", true),
    row(Verb::Help, "HELP", "help", true),
    row(Verb::Quit, "QUIT", "quit", true),
    row(Verb::Send, "SEND", "send", false),
    row(Verb::Soml, "SOML", "soml", false),
    row(Verb::Saml, "SAML", "saml", false),
    row(Verb::Turn, "TURN", "turn", true),
    row(Verb::Atrn, "ATRN", "atrn", true),
    row(Verb::Unknown, "UNKNOWN", "unknown", false),
];

impl Verb {
    /// Looks a verb up, case-insensitively.
    pub(crate) fn lookup(name: &str) -> Verb {
        TABLE
            .iter()
            .find(|r| r.verb != Verb::Unknown && r.name.eq_ignore_ascii_case(name))
            .map_or(Verb::Unknown, |r| r.verb)
    }

    /// The index of this verb's row in [`TABLE`].
    pub(crate) fn index(self) -> usize {
        TABLE
            .iter()
            .position(|r| r.verb == self)
            .unwrap_or(TABLE.len() - 1)
    }

    pub(crate) fn row(self) -> &'static Row {
        &TABLE[self.index()]
    }
}

/// The command line limit of RFC 5321 4.5.3.1.4, CRLF included.
pub(crate) const COMMAND_LINE_MAX: usize = 512;
/// Extra octets a RCPT line may carry because Sluice advertises DSN: an
/// ORCPT value alone may be 500 characters (RFC 3461 4, 4.2). A MAIL line
/// with every parameter Sluice offers fits in 512 (path 256, SIZE, RET,
/// ENVID of 100, BODY, SMTPUTF8: 443 octets), so MAIL gets no extra.
pub(crate) const RCPT_EXTRA: usize = 500;

/// The line limit (CRLF included) for a line that starts with `prefix`.
pub(crate) fn line_limit(prefix: &[u8]) -> usize {
    if prefix.len() >= 5 && prefix[..4].eq_ignore_ascii_case(b"RCPT") && prefix[4] == b' ' {
        COMMAND_LINE_MAX + RCPT_EXTRA
    } else {
        COMMAND_LINE_MAX
    }
}

/// Parameters of MAIL FROM.
#[derive(Debug, Default)]
pub(crate) struct MailParams {
    pub(crate) size: Option<u64>,
    pub(crate) body: Option<BodyType>,
    pub(crate) smtputf8: bool,
    pub(crate) ret: Option<Ret>,
    pub(crate) envid: Option<String>,
}

/// Parameters of RCPT TO.
#[derive(Debug, Default)]
pub(crate) struct RcptParams {
    pub(crate) notify: Option<Notify>,
    pub(crate) orcpt: Option<String>,
}

/// Splits `rest` (the text after the path) into `(KEYWORD, value)` pairs.
/// `rest` must be empty or start with a space.
fn split_params(rest: &str) -> Result<Vec<(String, Option<&str>)>, Reply> {
    if !rest.is_empty() && !rest.starts_with(' ') {
        return Err(reply::syntax(
            "parameters must follow the address after a space",
        ));
    }
    let mut out = Vec::new();
    for token in rest.split(' ').filter(|t| !t.is_empty()) {
        let (key, value) = match token.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (token, None),
        };
        let key_ok = key
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        let value_ok = value.is_none_or(|v| {
            !v.is_empty()
                && v.bytes()
                    .all(|b| ((33..=126).contains(&b) && b != b'=') || b >= 0x80)
        });
        if !key_ok || !value_ok {
            return Err(reply::syntax("bad parameter"));
        }
        out.push((key.to_ascii_uppercase(), value));
    }
    Ok(out)
}

fn unsupported(key: &str) -> Reply {
    let shown: String = key.chars().take(32).collect();
    reply::unsupported_parameter(&shown)
}

/// Parses MAIL FROM parameters.
pub(crate) fn parse_mail_params(rest: &str) -> Result<MailParams, Reply> {
    let mut p = MailParams::default();
    for (key, value) in split_params(rest)? {
        match (key.as_str(), value) {
            ("SIZE", Some(v)) if p.size.is_none() => {
                if !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(reply::bad_parameter("SIZE"));
                }
                // More digits than a u64 holds is simply "too big".
                p.size = Some(v.parse::<u64>().unwrap_or(u64::MAX));
            }
            ("BODY", Some(v)) if p.body.is_none() => {
                p.body = Some(if v.eq_ignore_ascii_case("7BIT") {
                    BodyType::SevenBit
                } else if v.eq_ignore_ascii_case("8BITMIME") {
                    BodyType::EightBitMime
                } else if v.eq_ignore_ascii_case("BINARYMIME") {
                    return Err(reply::unsupported_parameter("BODY=BINARYMIME"));
                } else {
                    return Err(reply::bad_parameter("BODY"));
                });
            }
            ("SMTPUTF8", None) if !p.smtputf8 => p.smtputf8 = true,
            ("RET", Some(v)) if p.ret.is_none() => {
                p.ret = Some(if v.eq_ignore_ascii_case("FULL") {
                    Ret::Full
                } else if v.eq_ignore_ascii_case("HDRS") {
                    Ret::Hdrs
                } else {
                    return Err(reply::bad_parameter("RET"));
                });
            }
            ("ENVID", Some(v)) if p.envid.is_none() => {
                // RFC 3461 4.4: at most 100 characters.
                match decode_xtext(v) {
                    Ok(id) if v.len() <= 100 => p.envid = Some(id),
                    _ => return Err(reply::bad_parameter("ENVID")),
                }
            }
            ("SIZE" | "BODY" | "SMTPUTF8" | "RET" | "ENVID", _) => {
                return Err(reply::bad_parameter(&key));
            }
            _ => return Err(unsupported(&key)),
        }
    }
    Ok(p)
}

/// Parses RCPT TO parameters.
pub(crate) fn parse_rcpt_params(rest: &str) -> Result<RcptParams, Reply> {
    let mut p = RcptParams::default();
    for (key, value) in split_params(rest)? {
        match (key.as_str(), value) {
            ("NOTIFY", Some(v)) if p.notify.is_none() => {
                p.notify = Some(parse_notify(v).ok_or_else(|| reply::bad_parameter("NOTIFY"))?);
            }
            ("ORCPT", Some(v)) if p.orcpt.is_none() => {
                p.orcpt = Some(parse_orcpt(v).ok_or_else(|| reply::bad_parameter("ORCPT"))?);
            }
            ("NOTIFY" | "ORCPT", _) => return Err(reply::bad_parameter(&key)),
            _ => return Err(unsupported(&key)),
        }
    }
    Ok(p)
}

/// `NEVER` alone, or a list of `SUCCESS`, `FAILURE`, `DELAY` without repeats.
fn parse_notify(v: &str) -> Option<Notify> {
    if v.eq_ignore_ascii_case("NEVER") {
        return Some(Notify::default());
    }
    let mut n = Notify::default();
    for word in v.split(',') {
        let flag = if word.eq_ignore_ascii_case("SUCCESS") {
            &mut n.success
        } else if word.eq_ignore_ascii_case("FAILURE") {
            &mut n.failure
        } else if word.eq_ignore_ascii_case("DELAY") {
            &mut n.delay
        } else {
            return None;
        };
        if *flag {
            return None;
        }
        *flag = true;
    }
    Some(n)
}

/// `addr-type ";" xtext`, at most 500 characters (RFC 3461 4.2); kept as
/// `addr-type;decoded`.
fn parse_orcpt(v: &str) -> Option<String> {
    if v.len() > 500 {
        return None;
    }
    let (kind, xtext) = v.split_once(';')?;
    let kind_ok = !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let addr = decode_xtext(xtext).ok()?;
    if !kind_ok || addr.is_empty() {
        return None;
    }
    Some(format!("{kind};{addr}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_is_case_insensitive() {
        assert_eq!(Verb::lookup("eHlO"), Verb::Ehlo);
        assert_eq!(Verb::lookup("UNKNOWN"), Verb::Unknown);
        assert_eq!(Verb::lookup("XYZ"), Verb::Unknown);
    }

    #[test]
    fn mail_params() {
        let p = parse_mail_params(" SIZE=100 body=8bitmime SMTPUTF8 RET=HDRS ENVID=a+2Bb").unwrap();
        assert_eq!(p.size, Some(100));
        assert_eq!(p.body, Some(BodyType::EightBitMime));
        assert!(p.smtputf8);
        assert_eq!(p.ret, Some(Ret::Hdrs));
        assert_eq!(p.envid.as_deref(), Some("a+b"));
        assert_eq!(
            parse_mail_params(" SIZE=99999999999999999999999")
                .unwrap()
                .size,
            Some(u64::MAX)
        );
        assert_eq!(parse_mail_params(" SIZE=1 SIZE=2").unwrap_err().code, 501);
        assert_eq!(parse_mail_params(" BODY=BINARYMIME").unwrap_err().code, 555);
        assert_eq!(parse_mail_params(" AUTH=<>").unwrap_err().code, 555);
        assert_eq!(parse_mail_params(" SMTPUTF8=yes").unwrap_err().code, 501);
        assert_eq!(parse_mail_params("SIZE=1").unwrap_err().code, 501);
    }

    #[test]
    fn rcpt_params() {
        let p = parse_rcpt_params(" NOTIFY=SUCCESS,DELAY ORCPT=rfc822;a+40b").unwrap();
        let n = p.notify.unwrap();
        assert!(n.success && n.delay && !n.failure);
        assert_eq!(p.orcpt.as_deref(), Some("rfc822;a@b"));
        assert_eq!(
            parse_rcpt_params(" NOTIFY=NEVER").unwrap().notify,
            Some(Notify::default())
        );
        assert!(parse_rcpt_params(" NOTIFY=NEVER,SUCCESS").is_err());
        assert!(parse_rcpt_params(" NOTIFY=DELAY,DELAY").is_err());
        assert!(parse_rcpt_params(" ORCPT=a@b").is_err());
    }

    #[test]
    fn limits() {
        assert_eq!(line_limit(b"MAIL FROM"), 512);
        assert_eq!(line_limit(b"rcpt TO"), 1012);
        assert_eq!(line_limit(b"NOOP"), 512);
    }
}

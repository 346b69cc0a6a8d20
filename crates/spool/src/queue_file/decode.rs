//! Reading queue files: the strict decoder of FORMAT.md.
//!
//! # Must never
//! Panic, accept anything FORMAT.md does not describe, or allocate according
//! to a length the file declares before checking it against the bytes.
//!
//! # Security
//! Its input is hostile (maildrop files come from any local user).
//!
//! # Errors
//! Every rejection is a [`FormatError`] naming the line and the problem.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_proto::envelope::{BodyType, Client, Envelope, Notify, Protocol, Recipient, Ret};

use super::{
    quoted, unescape, Field, FormatError, Kind, Problem, QueueFile, Source, FIELDS, MAGIC,
    MAGIC_V1, TRAILER,
};
use crate::queue_id::QueueId;

/// One `key: value` line of the header.
struct Line<'a> {
    number: usize,
    field: Field,
    value: &'a str,
}

/// Parses a queue file, accepting exactly what FORMAT.md describes: version
/// 2, or version 1 as the previous release wrote it.
pub fn decode(bytes: &[u8]) -> Result<QueueFile, FormatError> {
    let mut lines: Vec<Line<'_>> = Vec::new();
    let mut version = 0;
    let mut pos = 0;
    let mut number = 0;
    // The header: up to and including the empty line.
    loop {
        number += 1;
        let err = |problem| FormatError {
            line: number,
            problem,
        };
        let Some(len) = bytes[pos..].iter().position(|&b| b == b'\n') else {
            return Err(err(Problem::Truncated));
        };
        let raw = &bytes[pos..pos + len];
        pos += len + 1;
        let text = std::str::from_utf8(raw).map_err(|_| err(Problem::NotUtf8))?;
        if number == 1 {
            version = check_magic(text).map_err(err)?;
            continue;
        }
        if text.is_empty() {
            break;
        }
        let (key, value) = text.split_once(": ").ok_or(err(Problem::NotField))?;
        let field = Field::from_name(key).ok_or_else(|| err(Problem::UnknownField(quoted(key))))?;
        if field != Field::Rcpt && lines.iter().any(|l| l.field == field) {
            return Err(err(Problem::DuplicateField(field.name())));
        }
        lines.push(Line {
            number,
            field,
            value,
        });
    }
    let blank_line = number;
    let header = Header {
        lines,
        blank_line,
        version,
    };
    let file = header.to_queue_file(&bytes[pos..])?;
    Ok(file)
}

/// The version line 1 names, if it is one this decoder reads.
fn check_magic(line: &str) -> Result<u8, Problem> {
    if line == MAGIC {
        Ok(2)
    } else if line == MAGIC_V1 {
        Ok(1)
    } else if let Some(version) = line.strip_prefix("sluice-queue ") {
        Err(Problem::UnsupportedVersion(quoted(version)))
    } else {
        Err(Problem::NotQueueFile)
    }
}

/// The parsed header lines, before their values are checked.
struct Header<'a> {
    lines: Vec<Line<'a>>,
    blank_line: usize,
    version: u8,
}

impl<'a> Header<'a> {
    fn error(&self, line: usize, problem: Problem) -> FormatError {
        FormatError { line, problem }
    }

    /// The line of `field`, or `None` if absent.
    fn get(&self, field: Field) -> Option<&Line<'a>> {
        self.lines.iter().find(|l| l.field == field)
    }

    /// The line of a required `field`.
    fn require(&self, field: Field) -> Result<&Line<'a>, FormatError> {
        self.get(field)
            .ok_or(self.error(self.blank_line, Problem::MissingField(field.name())))
    }

    /// Parses the value of `field` with `parse`, if the field is present.
    fn parse<T>(
        &self,
        field: Field,
        parse: impl Fn(Field, &str) -> Result<T, Problem>,
    ) -> Result<Option<T>, FormatError> {
        match self.get(field) {
            None => Ok(None),
            Some(line) => parse(field, line.value)
                .map(Some)
                .map_err(|p| self.error(line.number, p)),
        }
    }

    /// Parses the value of a required `field` with `parse`.
    fn parse_required<T>(
        &self,
        field: Field,
        parse: impl Fn(Field, &str) -> Result<T, Problem>,
    ) -> Result<T, FormatError> {
        let line = self.require(field)?;
        parse(field, line.value).map_err(|p| self.error(line.number, p))
    }

    fn to_queue_file(&self, rest: &[u8]) -> Result<QueueFile, FormatError> {
        let version = self.version;
        let kind = self.parse_required(Field::Source, |field, v| {
            Kind::ALL
                .into_iter()
                .find(|k| k.name() == v && k.since_version() <= version)
                .ok_or(if version == 1 {
                    bad(field, "expected smtp or local (version 1)")
                } else {
                    bad(field, "expected smtp, local, forward or notice")
                })
        })?;
        for line in &self.lines {
            if !line.field.is_allowed(kind) {
                let problem = Problem::NotAllowed {
                    field: line.field.name(),
                    kind: kind.name(),
                };
                return Err(self.error(line.number, problem));
            }
        }
        for field in FIELDS {
            if field.is_required(kind) {
                self.require(field)?;
            }
        }

        let id = self.parse_required(Field::Id, |field, v| {
            v.parse::<QueueId>()
                .map_err(|_| bad(field, "not a queue ID"))
        })?;
        let arrival = self.parse_required(Field::Arrival, parse_arrival)?;
        let source = match kind {
            Kind::Smtp => Source::Smtp(Client {
                addr: self.parse_required(Field::ClientAddr, parse_ip)?,
                port: self.parse_required(Field::ClientPort, |field, v| {
                    let n = parse_decimal(field, v)?;
                    u16::try_from(n).map_err(|_| bad(field, "port out of range"))
                })?,
                hostname: self.parse(Field::ClientHostname, unescape)?,
                helo: self.parse_required(Field::ClientHelo, unescape)?,
                protocol: self.parse_required(Field::Protocol, parse_protocol)?,
            }),
            Kind::Local => Source::Local {
                uid: self.parse_required(Field::LocalUid, |field, v| {
                    let n = parse_decimal(field, v)?;
                    u32::try_from(n).map_err(|_| bad(field, "uid out of range"))
                })?,
                user: self.parse_required(Field::LocalUser, unescape)?,
            },
            Kind::Forward => Source::Forward {
                recipient: self.parse_required(Field::ForwardFor, parse_address)?,
            },
            Kind::Notice => Source::Notice,
        };
        let mut recipients = Vec::new();
        for line in self.lines.iter().filter(|l| l.field == Field::Rcpt) {
            recipients.push(parse_recipient(line.value).map_err(|p| self.error(line.number, p))?);
        }
        let envelope = Envelope {
            sender: self.parse_required(Field::Sender, parse_address)?,
            recipients,
            body: self.parse_required(Field::Body, |field, v| match v {
                "7BIT" => Ok(BodyType::SevenBit),
                "8BITMIME" => Ok(BodyType::EightBitMime),
                "BINARYMIME" => Ok(BodyType::BinaryMime),
                _ => Err(bad(field, "expected 7BIT, 8BITMIME or BINARYMIME")),
            })?,
            smtputf8: self.parse_required(Field::Smtputf8, |field, v| match v {
                "yes" => Ok(true),
                "no" => Ok(false),
                _ => Err(bad(field, "expected yes or no")),
            })?,
            ret: self.parse(Field::Ret, |field, v| match v {
                "FULL" => Ok(Ret::Full),
                "HDRS" => Ok(Ret::Hdrs),
                _ => Err(bad(field, "expected FULL or HDRS")),
            })?,
            envid: self.parse(Field::Envid, unescape)?,
            declared_size: self.parse(Field::DeclaredSize, parse_decimal)?,
        };
        let declared = self.parse_required(Field::ContentLength, parse_decimal)?;
        let content = self.split_content(rest, declared)?;
        Ok(QueueFile {
            id,
            arrival,
            source,
            envelope,
            content: content.to_vec(),
        })
    }

    /// Checks that `rest` is exactly `declared` bytes and the trailer, and
    /// returns the content. Never trusts `declared` for an allocation.
    fn split_content<'b>(&self, rest: &'b [u8], declared: u64) -> Result<&'b [u8], FormatError> {
        let Some(content) = rest.strip_suffix(TRAILER) else {
            return Err(self.error(self.blank_line, Problem::MissingEnd));
        };
        let actual = u64::try_from(content.len()).unwrap_or(u64::MAX);
        if actual != declared {
            let problem = Problem::LengthMismatch { declared, actual };
            return Err(self.error(self.blank_line, problem));
        }
        Ok(content)
    }
}

fn bad(field: Field, why: &'static str) -> Problem {
    Problem::BadValue {
        field: field.name(),
        why,
    }
}

/// ASCII decimal, no sign, no leading zeros, fits in a u64.
fn parse_decimal(field: Field, v: &str) -> Result<u64, Problem> {
    let canonical =
        !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) && (v == "0" || !v.starts_with('0'));
    if !canonical {
        return Err(bad(field, "not a decimal number without leading zeros"));
    }
    v.parse::<u64>().map_err(|_| bad(field, "number too large"))
}

fn parse_arrival(field: Field, v: &str) -> Result<SystemTime, Problem> {
    let (secs, micros) = v
        .split_once('.')
        .ok_or(bad(field, "expected SECONDS.MICROS"))?;
    let secs = parse_decimal(field, secs)?;
    if micros.len() != 6 || !micros.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(field, "expected exactly 6 digits of microseconds"));
    }
    let micros: u32 = micros.parse().map_err(|_| bad(field, "bad microseconds"))?;
    UNIX_EPOCH
        .checked_add(Duration::new(secs, micros * 1000))
        .ok_or(bad(field, "time out of range"))
}

fn parse_ip(field: Field, v: &str) -> Result<IpAddr, Problem> {
    let addr: IpAddr = v.parse().map_err(|_| bad(field, "not an IP address"))?;
    if addr.to_string() != v {
        return Err(bad(field, "IP address not in canonical form"));
    }
    Ok(addr)
}

fn parse_protocol(field: Field, v: &str) -> Result<Protocol, Problem> {
    [
        Protocol::Smtp,
        Protocol::Esmtp,
        Protocol::Esmtps,
        Protocol::Local,
    ]
    .into_iter()
    .find(|p| p.keyword() == v)
    .ok_or(bad(field, "expected SMTP, ESMTP, ESMTPS or local"))
}

/// `<` text `>`.
fn parse_address(field: Field, v: &str) -> Result<String, Problem> {
    let inner = v
        .strip_prefix('<')
        .and_then(|v| v.strip_suffix('>'))
        .ok_or(bad(field, "address not in angle brackets"))?;
    unescape(field, inner)
}

/// `<address>[ notify=...][ orcpt=...]`.
fn parse_recipient(v: &str) -> Result<Recipient, Problem> {
    let field = Field::Rcpt;
    let mut tokens = v.split(' ');
    let address = parse_address(field, tokens.next().unwrap_or_default())?;
    let mut rcpt = Recipient {
        address,
        notify: None,
        orcpt: None,
    };
    for token in tokens {
        match token.split_once('=') {
            Some(("notify", value)) if rcpt.notify.is_none() => {
                rcpt.notify = Some(parse_notify(value)?);
            }
            Some(("orcpt", value)) if rcpt.orcpt.is_none() => {
                rcpt.orcpt = Some(unescape(field, value)?);
            }
            Some(("notify" | "orcpt", _)) => {
                return Err(bad(field, "parameter given twice"));
            }
            _ => return Err(bad(field, "unknown recipient parameter")),
        }
    }
    Ok(rcpt)
}

fn parse_notify(v: &str) -> Result<Notify, Problem> {
    let field = Field::Rcpt;
    let mut notify = Notify::default();
    if v == "never" {
        return Ok(notify);
    }
    for flag in v.split(',') {
        let slot = match flag {
            "success" => &mut notify.success,
            "failure" => &mut notify.failure,
            "delay" => &mut notify.delay,
            _ => return Err(bad(field, "notify is never or success,failure,delay")),
        };
        if *slot {
            return Err(bad(field, "notify flag given twice"));
        }
        *slot = true;
    }
    Ok(notify)
}

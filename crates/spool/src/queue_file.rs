//! The queue file format, version 1: [`encode`] and [`decode`].
//!
//! `crates/spool/FORMAT.md` is the normative description; this module is its
//! only implementation. Pure code: bytes in, bytes or values out, no IO.
//!
//! # Must never
//! Accept a file that FORMAT.md does not describe (truncated, unknown
//! version, unknown or repeated field, field outside the source's
//! allow-list), panic on any input, or allocate more than the input's size
//! because of a length the input declares.
//!
//! # Security
//! [`decode`] reads hostile bytes: a `maildrop/` file is written by any local
//! user, and a queue file may be damaged on disk. Error texts quote hostile
//! input only escaped and cut short.
//!
//! # Errors
//! [`decode`] returns a [`FormatError`] with the line number and the problem;
//! the spool moves such a file to `corrupt/`. [`encode`] cannot fail.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_proto::envelope::{BodyType, Client, Envelope, Notify, Protocol, Recipient, Ret};

use crate::queue_id::QueueId;

/// Line 1 of every version-1 queue file (without its LF).
pub const MAGIC: &str = "sluice-queue 1";
/// What follows the content: an LF, the end marker line, and the end of file.
pub const TRAILER: &[u8] = b"\nend-of-queue-file\n";

/// Where a message came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Received over SMTP by `sluice-smtpd`.
    Smtp(Client),
    /// Submitted locally by `sluice-sendmail` (through `maildrop/`).
    Local {
        /// The submitting user's uid.
        uid: u32,
        /// The submitting user's login name.
        user: String,
    },
}

/// A message to be written: borrows everything, so the content is never
/// copied on its way to the disk.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// Its queue ID (also its file name).
    pub id: QueueId,
    /// When it arrived (stored with microsecond precision).
    pub arrival: SystemTime,
    /// Where it came from.
    pub source: &'a Source,
    /// Sender, recipients and ESMTP parameters.
    pub envelope: &'a Envelope,
    /// Content pieces, written in order; their concatenation is the message
    /// (e.g. `[received_header, body]`).
    pub content: &'a [&'a [u8]],
}

impl Message<'_> {
    /// The length of the content: the sum of the pieces' lengths.
    pub fn content_len(&self) -> usize {
        self.content.iter().map(|piece| piece.len()).sum()
    }
}

/// A queue file as read back from the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueFile {
    /// Its queue ID.
    pub id: QueueId,
    /// When it arrived (microsecond precision).
    pub arrival: SystemTime,
    /// Where it came from.
    pub source: Source,
    /// Sender, recipients and ESMTP parameters.
    pub envelope: Envelope,
    /// The message content, byte for byte.
    pub content: Vec<u8>,
}

/// Why a file is not a valid queue file, and on which line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct FormatError {
    /// 1-based line number; for content and end-marker problems, the line of
    /// the empty line that ends the header.
    pub line: usize,
    /// What is wrong.
    pub problem: Problem,
}

/// What is wrong with a queue file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// Line 1 is not `sluice-queue N`.
    #[error("not a sluice queue file")]
    NotQueueFile,
    /// Line 1 is `sluice-queue N` for an unknown N (escaped, cut short).
    #[error("unsupported queue file version {0:?}")]
    UnsupportedVersion(String),
    /// The file ends before the empty line that ends the header.
    #[error("the header is not terminated by an empty line (truncated file)")]
    Truncated,
    /// A header line is not valid UTF-8.
    #[error("header line is not UTF-8")]
    NotUtf8,
    /// A header line is not `key: value`.
    #[error("not a \"key: value\" line")]
    NotField,
    /// A key this version does not know (escaped, cut short).
    #[error("unknown field {0:?}")]
    UnknownField(String),
    /// A key other than `rcpt` given twice.
    #[error("duplicate field {0}")]
    DuplicateField(&'static str),
    /// A required key is missing.
    #[error("missing required field {0}")]
    MissingField(&'static str),
    /// A key outside the source's allow-list.
    #[error("field {field} is not allowed when source is {kind}")]
    NotAllowed {
        /// The key.
        field: &'static str,
        /// The file's `source` value.
        kind: &'static str,
    },
    /// A value with the wrong syntax.
    #[error("bad value for {field}: {why}")]
    BadValue {
        /// The key.
        field: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The file does not end with the end marker (truncated or trailing bytes).
    #[error("missing end marker (truncated file or trailing bytes)")]
    MissingEnd,
    /// The content between header and end marker is not the declared length.
    #[error("content-length is {declared} but the content has {actual} bytes")]
    LengthMismatch {
        /// The `content-length` value.
        declared: u64,
        /// The bytes actually between the header and the end marker.
        actual: u64,
    },
}

/// The envelope keys of version 1, in the order the encoder writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Id,
    Arrival,
    Source,
    ClientAddr,
    ClientPort,
    ClientHostname,
    ClientHelo,
    Protocol,
    LocalUid,
    LocalUser,
    Sender,
    Body,
    Smtputf8,
    Ret,
    Envid,
    DeclaredSize,
    Rcpt,
    ContentLength,
}

const FIELDS: [Field; 18] = [
    Field::Id,
    Field::Arrival,
    Field::Source,
    Field::ClientAddr,
    Field::ClientPort,
    Field::ClientHostname,
    Field::ClientHelo,
    Field::Protocol,
    Field::LocalUid,
    Field::LocalUser,
    Field::Sender,
    Field::Body,
    Field::Smtputf8,
    Field::Ret,
    Field::Envid,
    Field::DeclaredSize,
    Field::Rcpt,
    Field::ContentLength,
];

/// The two kinds of `source`, which pick the allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Smtp,
    Local,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Smtp => "smtp",
            Kind::Local => "local",
        }
    }
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::Id => "id",
            Field::Arrival => "arrival",
            Field::Source => "source",
            Field::ClientAddr => "client-addr",
            Field::ClientPort => "client-port",
            Field::ClientHostname => "client-hostname",
            Field::ClientHelo => "client-helo",
            Field::Protocol => "protocol",
            Field::LocalUid => "local-uid",
            Field::LocalUser => "local-user",
            Field::Sender => "sender",
            Field::Body => "body",
            Field::Smtputf8 => "smtputf8",
            Field::Ret => "ret",
            Field::Envid => "envid",
            Field::DeclaredSize => "declared-size",
            Field::Rcpt => "rcpt",
            Field::ContentLength => "content-length",
        }
    }

    fn from_name(name: &str) -> Option<Field> {
        FIELDS.into_iter().find(|f| f.name() == name)
    }

    /// The allow-list of FORMAT.md: may this key appear in a `kind` file?
    fn is_allowed(self, kind: Kind) -> bool {
        match self {
            Field::ClientAddr
            | Field::ClientPort
            | Field::ClientHostname
            | Field::ClientHelo
            | Field::Protocol
            | Field::DeclaredSize => kind == Kind::Smtp,
            Field::LocalUid | Field::LocalUser => kind == Kind::Local,
            _ => true,
        }
    }

    /// Required whatever the source.
    fn is_required(self, kind: Kind) -> bool {
        match self {
            Field::Id
            | Field::Arrival
            | Field::Source
            | Field::Sender
            | Field::Body
            | Field::Smtputf8
            | Field::ContentLength => true,
            Field::ClientAddr | Field::ClientPort | Field::ClientHelo | Field::Protocol => {
                kind == Kind::Smtp
            }
            Field::LocalUid | Field::LocalUser => kind == Kind::Local,
            Field::ClientHostname
            | Field::Ret
            | Field::Envid
            | Field::DeclaredSize
            | Field::Rcpt => false,
        }
    }
}

// ---------------------------------------------------------------------------
// The text escape.

/// Must this character be written as `%XX` (FORMAT.md, "Text values")?
fn needs_escape(c: char) -> bool {
    c.is_control() || c.is_whitespace() || matches!(c, '%' | '<' | '>')
}

/// Appends `text` escaped: one token, no spaces, no control characters.
fn push_escaped(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for c in text.chars() {
        let mut buf = [0u8; 4];
        let bytes = c.encode_utf8(&mut buf).as_bytes();
        if needs_escape(c) {
            for &b in bytes {
                out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
            }
        } else {
            out.extend_from_slice(bytes);
        }
    }
}

fn escaped(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len());
    push_escaped(&mut out, text);
    // Escaping keeps UTF-8 valid: whole characters are copied or replaced by ASCII.
    String::from_utf8(out).unwrap_or_default()
}

/// Hostile text for an error message: escaped and cut to 40 characters.
fn quoted(text: &str) -> String {
    escaped(&text.chars().take(40).collect::<String>())
}

/// Undoes [`push_escaped`], insisting on the canonical form.
fn unescape(field: Field, token: &str) -> Result<String, Problem> {
    let bad = |why| Problem::BadValue {
        field: field.name(),
        why,
    };
    let mut out = Vec::with_capacity(token.len());
    let mut bytes = token.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = bytes.next().and_then(hex_digit);
            let lo = bytes.next().and_then(hex_digit);
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                _ => return Err(bad("% not followed by two upper-case hex digits")),
            }
        } else {
            out.push(b);
        }
    }
    let text = String::from_utf8(out).map_err(|_| bad("escaped bytes are not UTF-8"))?;
    if escaped(&text) != token {
        return Err(bad("text is not in its canonical escaped form"));
    }
    Ok(text)
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Encoding.

/// The header of `msg`'s queue file: line 1, the envelope lines and the empty
/// line. The file is this, then the content pieces, then [`TRAILER`].
pub fn encode_header(msg: &Message<'_>) -> Vec<u8> {
    let env = msg.envelope;
    let mut out = Vec::with_capacity(256 + 64 * env.recipients.len());
    out.extend_from_slice(MAGIC.as_bytes());
    out.push(b'\n');
    let mut line = |field: Field, value: &dyn Fn(&mut Vec<u8>)| {
        out.extend_from_slice(field.name().as_bytes());
        out.extend_from_slice(b": ");
        value(&mut out);
        out.push(b'\n');
    };
    let arrival = msg.arrival.duration_since(UNIX_EPOCH).unwrap_or_default();

    line(Field::Id, &|o| {
        o.extend_from_slice(msg.id.to_string().as_bytes())
    });
    line(Field::Arrival, &|o| {
        let s = format!("{}.{:06}", arrival.as_secs(), arrival.subsec_micros());
        o.extend_from_slice(s.as_bytes());
    });
    match msg.source {
        Source::Smtp(client) => {
            line(Field::Source, &|o| o.extend_from_slice(b"smtp"));
            line(Field::ClientAddr, &|o| {
                o.extend_from_slice(client.addr.to_string().as_bytes())
            });
            line(Field::ClientPort, &|o| {
                o.extend_from_slice(client.port.to_string().as_bytes())
            });
            if let Some(hostname) = &client.hostname {
                line(Field::ClientHostname, &push_text(hostname));
            }
            line(Field::ClientHelo, &push_text(&client.helo));
            line(Field::Protocol, &|o| {
                o.extend_from_slice(client.protocol.keyword().as_bytes())
            });
        }
        Source::Local { uid, user } => {
            line(Field::Source, &|o| o.extend_from_slice(b"local"));
            line(Field::LocalUid, &|o| {
                o.extend_from_slice(uid.to_string().as_bytes())
            });
            line(Field::LocalUser, &push_text(user));
        }
    }
    line(Field::Sender, &|o| push_address(o, &env.sender));
    line(Field::Body, &|o| {
        o.extend_from_slice(body_keyword(env.body).as_bytes())
    });
    line(Field::Smtputf8, &|o| {
        o.extend_from_slice(if env.smtputf8 { b"yes" } else { b"no" })
    });
    if let Some(ret) = env.ret {
        line(Field::Ret, &|o| {
            o.extend_from_slice(match ret {
                Ret::Full => b"FULL",
                Ret::Hdrs => b"HDRS",
            })
        });
    }
    if let Some(envid) = &env.envid {
        line(Field::Envid, &push_text(envid));
    }
    if let (Some(size), Source::Smtp(_)) = (env.declared_size, msg.source) {
        line(Field::DeclaredSize, &|o| {
            o.extend_from_slice(size.to_string().as_bytes())
        });
    }
    for rcpt in &env.recipients {
        line(Field::Rcpt, &|o| push_recipient(o, rcpt));
    }
    line(Field::ContentLength, &|o| {
        o.extend_from_slice(msg.content_len().to_string().as_bytes())
    });
    out.push(b'\n');
    out
}

fn push_text(s: &str) -> impl Fn(&mut Vec<u8>) + '_ {
    move |o| push_escaped(o, s)
}

fn push_address(out: &mut Vec<u8>, address: &str) {
    out.push(b'<');
    push_escaped(out, address);
    out.push(b'>');
}

fn push_recipient(out: &mut Vec<u8>, rcpt: &Recipient) {
    push_address(out, &rcpt.address);
    if let Some(notify) = rcpt.notify {
        out.extend_from_slice(b" notify=");
        let flags = [
            (notify.success, "success"),
            (notify.failure, "failure"),
            (notify.delay, "delay"),
        ];
        let names: Vec<&str> = flags.iter().filter(|f| f.0).map(|f| f.1).collect();
        if names.is_empty() {
            out.extend_from_slice(b"never");
        } else {
            out.extend_from_slice(names.join(",").as_bytes());
        }
    }
    if let Some(orcpt) = &rcpt.orcpt {
        out.extend_from_slice(b" orcpt=");
        push_escaped(out, orcpt);
    }
}

fn body_keyword(body: BodyType) -> &'static str {
    match body {
        BodyType::SevenBit => "7BIT",
        BodyType::EightBitMime => "8BITMIME",
        BodyType::BinaryMime => "BINARYMIME",
    }
}

/// The whole queue file for `msg`, in memory. To write a file without
/// copying the content, write [`encode_header`], the content pieces and
/// [`TRAILER`] in turn, as `Spool::commit` does.
pub fn encode(msg: &Message<'_>) -> Vec<u8> {
    let header = encode_header(msg);
    let mut out = Vec::with_capacity(header.len() + msg.content_len() + TRAILER.len());
    out.extend_from_slice(&header);
    for piece in msg.content {
        out.extend_from_slice(piece);
    }
    out.extend_from_slice(TRAILER);
    out
}

// ---------------------------------------------------------------------------
// Decoding.

/// One `key: value` line of the header.
struct Line<'a> {
    number: usize,
    field: Field,
    value: &'a str,
}

/// Parses a queue file, accepting exactly what FORMAT.md describes.
pub fn decode(bytes: &[u8]) -> Result<QueueFile, FormatError> {
    let mut lines: Vec<Line<'_>> = Vec::new();
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
            check_magic(text).map_err(err)?;
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
    let header = Header { lines, blank_line };
    let file = header.to_queue_file(&bytes[pos..])?;
    Ok(file)
}

fn check_magic(line: &str) -> Result<(), Problem> {
    if line == MAGIC {
        Ok(())
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
        let kind = self.parse_required(Field::Source, |field, v| match v {
            "smtp" => Ok(Kind::Smtp),
            "local" => Ok(Kind::Local),
            _ => Err(bad(field, "expected smtp or local")),
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

#[cfg(test)]
mod tests;

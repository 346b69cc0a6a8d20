//! The queue file format, version 2: [`encode`] and [`decode`] (which also
//! reads version 1, so mail queued by the previous release is delivered).
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

use std::time::SystemTime;

use sluice_proto::envelope::{Client, Envelope};

use crate::queue_id::QueueId;

mod decode;
mod encode;

pub use decode::decode;
pub use encode::{encode, encode_header};

/// Line 1 of every queue file written (without its LF): version 2.
pub const MAGIC: &str = "sluice-queue 2";
/// Line 1 of a version-1 file, as the previous release wrote it: still read.
pub const MAGIC_V1: &str = "sluice-queue 1";
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
    /// Forwarded by `sluice-local` (an alias or `.forward`) for a local
    /// recipient; since version 2.
    Forward {
        /// The local address it was delivered to and forwarded for (its
        /// `Delivered-To:`).
        recipient: String,
    },
    /// A delivery status notification made by the queue manager; since
    /// version 2.
    Notice,
}

impl Source {
    /// The `source` keyword of the queue file.
    pub fn keyword(&self) -> &'static str {
        self.kind().name()
    }

    pub(crate) fn kind(&self) -> Kind {
        match self {
            Source::Smtp(_) => Kind::Smtp,
            Source::Local { .. } => Kind::Local,
            Source::Forward { .. } => Kind::Forward,
            Source::Notice => Kind::Notice,
        }
    }
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
pub(crate) enum Field {
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
    ForwardFor,
    Sender,
    Body,
    Smtputf8,
    Ret,
    Envid,
    DeclaredSize,
    Rcpt,
    ContentLength,
}

pub(crate) const FIELDS: [Field; 19] = [
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
    Field::ForwardFor,
    Field::Sender,
    Field::Body,
    Field::Smtputf8,
    Field::Ret,
    Field::Envid,
    Field::DeclaredSize,
    Field::Rcpt,
    Field::ContentLength,
];

/// The kinds of `source`, which pick the allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Smtp,
    Local,
    Forward,
    Notice,
}

impl Kind {
    pub(crate) const ALL: [Kind; 4] = [Kind::Smtp, Kind::Local, Kind::Forward, Kind::Notice];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Smtp => "smtp",
            Kind::Local => "local",
            Kind::Forward => "forward",
            Kind::Notice => "notice",
        }
    }

    /// The first file version that knows this source.
    pub(crate) fn since_version(self) -> u8 {
        match self {
            Kind::Smtp | Kind::Local => 1,
            Kind::Forward | Kind::Notice => 2,
        }
    }
}

impl Field {
    pub(crate) fn name(self) -> &'static str {
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
            Field::ForwardFor => "forward-for",
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

    pub(crate) fn from_name(name: &str) -> Option<Field> {
        FIELDS.into_iter().find(|f| f.name() == name)
    }

    /// The allow-list of FORMAT.md: may this key appear in a `kind` file?
    pub(crate) fn is_allowed(self, kind: Kind) -> bool {
        match self {
            Field::ClientAddr
            | Field::ClientPort
            | Field::ClientHostname
            | Field::ClientHelo
            | Field::Protocol
            | Field::DeclaredSize => kind == Kind::Smtp,
            Field::LocalUid | Field::LocalUser => kind == Kind::Local,
            Field::ForwardFor => kind == Kind::Forward,
            _ => true,
        }
    }

    /// Required whatever the source.
    pub(crate) fn is_required(self, kind: Kind) -> bool {
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
            Field::ForwardFor => kind == Kind::Forward,
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
pub(crate) fn push_escaped(out: &mut Vec<u8>, text: &str) {
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

pub(crate) fn escaped(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len());
    push_escaped(&mut out, text);
    // Escaping keeps UTF-8 valid: whole characters are copied or replaced by ASCII.
    String::from_utf8(out).unwrap_or_default()
}

/// Hostile text for an error message: escaped and cut to 40 characters.
pub(crate) fn quoted(text: &str) -> String {
    escaped(&text.chars().take(40).collect::<String>())
}

/// Undoes [`push_escaped`], insisting on the canonical form.
pub(crate) fn unescape(field: Field, token: &str) -> Result<String, Problem> {
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

#[cfg(test)]
mod tests;

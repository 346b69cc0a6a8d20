//! Writing queue files: the header text and the whole file.
//!
//! # Must never
//! Write anything [`super::decode`] would reject for the same message, copy
//! the content when the caller writes the pieces itself, or write a field
//! outside the source's allow-list.
//!
//! # Security
//! Values come from the SMTP session or a local user; every text value goes
//! through the escape, so none can forge a header line.
//!
//! # Errors
//! None: encoding cannot fail.

use std::time::UNIX_EPOCH;

use sluice_proto::envelope::{BodyType, Recipient, Ret};

use super::{push_escaped, Field, Message, Source, MAGIC, TRAILER};

/// The header of `msg`'s queue file: line 1, the envelope lines and the empty
/// line. The file is this, then the content pieces, then [`TRAILER`].
pub fn encode_header(msg: &Message<'_>) -> Vec<u8> {
    let env = msg.envelope;
    let mut h = Lines(Vec::with_capacity(256 + 64 * env.recipients.len()));
    h.0.extend_from_slice(MAGIC.as_bytes());
    h.0.push(b'\n');
    let arrival = msg.arrival.duration_since(UNIX_EPOCH).unwrap_or_default();
    h.plain(Field::Id, &msg.id.to_string());
    h.plain(
        Field::Arrival,
        &format!("{}.{:06}", arrival.as_secs(), arrival.subsec_micros()),
    );
    match msg.source {
        Source::Smtp(client) => {
            h.plain(Field::Source, "smtp");
            h.plain(Field::ClientAddr, &client.addr.to_string());
            h.plain(Field::ClientPort, &client.port.to_string());
            if let Some(hostname) = &client.hostname {
                h.text(Field::ClientHostname, hostname);
            }
            h.text(Field::ClientHelo, &client.helo);
            h.plain(Field::Protocol, client.protocol.keyword());
        }
        Source::Local { uid, user } => {
            h.plain(Field::Source, "local");
            h.plain(Field::LocalUid, &uid.to_string());
            h.text(Field::LocalUser, user);
        }
        Source::Forward { recipient } => {
            h.plain(Field::Source, "forward");
            h.with(Field::ForwardFor, |o| push_address(o, recipient));
        }
        Source::Notice => h.plain(Field::Source, "notice"),
    }
    h.with(Field::Sender, |o| push_address(o, &env.sender));
    h.plain(Field::Body, body_keyword(env.body));
    h.plain(Field::Smtputf8, if env.smtputf8 { "yes" } else { "no" });
    if let Some(ret) = env.ret {
        let keyword = match ret {
            Ret::Full => "FULL",
            Ret::Hdrs => "HDRS",
        };
        h.plain(Field::Ret, keyword);
    }
    if let Some(envid) = &env.envid {
        h.text(Field::Envid, envid);
    }
    // SIZE= is an SMTP parameter: not in a local file's allow-list.
    if let (Some(size), Source::Smtp(_)) = (env.declared_size, msg.source) {
        h.plain(Field::DeclaredSize, &size.to_string());
    }
    for rcpt in &env.recipients {
        h.with(Field::Rcpt, |o| push_recipient(o, rcpt));
    }
    h.plain(Field::ContentLength, &msg.content_len().to_string());
    h.0.push(b'\n');
    h.0
}

/// The header being written, one `key: value` line at a time.
struct Lines(Vec<u8>);

impl Lines {
    /// A line whose value `write` appends.
    fn with(&mut self, field: Field, write: impl FnOnce(&mut Vec<u8>)) {
        self.0.extend_from_slice(field.name().as_bytes());
        self.0.extend_from_slice(b": ");
        write(&mut self.0);
        self.0.push(b'\n');
    }

    /// A line whose value needs no escape (a keyword, a number, an ID).
    fn plain(&mut self, field: Field, value: &str) {
        self.with(field, |o| o.extend_from_slice(value.as_bytes()));
    }

    /// A line whose value is escaped text.
    fn text(&mut self, field: Field, value: &str) {
        self.with(field, |o| push_escaped(o, value));
    }
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

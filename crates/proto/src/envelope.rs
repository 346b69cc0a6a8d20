//! The SMTP envelope: who sent a message, to whom, and with which ESMTP
//! parameters, as the server session hands it over at the end of DATA and as
//! the spool stores it.
//!
//! # Must never
//! Hold message content, or anything that was not checked by the grammar:
//! every value in here has passed `proto`'s parsers.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::address::{check_stored, AddressError};

/// Which value of an envelope may not be written onto a wire or into a
/// mailbox (see [`Envelope::check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The sender does not pass the path grammar.
    #[error("bad sender address: {0}")]
    Sender(AddressError),
    /// A recipient (0-based) does not pass the path grammar, or is empty.
    #[error("bad address of recipient {index}: {error}")]
    Recipient {
        /// Which recipient.
        index: usize,
        /// Why.
        error: AddressError,
    },
    /// An ORCPT is not `addr-type;address` with an atom for a type and no
    /// control character.
    #[error("bad ORCPT of recipient {0}")]
    Orcpt(usize),
    /// ENVID is not 1 to 100 printable ASCII characters (RFC 3461 4.4).
    #[error("bad ENVID")]
    Envid,
}

/// The BODY= parameter of MAIL FROM (RFC 6152, RFC 3030).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum BodyType {
    /// No BODY parameter, or BODY=7BIT.
    #[default]
    SevenBit,
    /// BODY=8BITMIME.
    EightBitMime,
    /// BODY=BINARYMIME (only valid with BDAT).
    BinaryMime,
}

/// The RET= parameter of MAIL FROM (RFC 3461): what a DSN carries back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ret {
    /// RET=FULL: the whole message.
    Full,
    /// RET=HDRS: the headers only.
    Hdrs,
}

/// The NOTIFY= parameter of RCPT TO (RFC 3461). `NOTIFY=NEVER` is the value
/// with all three flags false; an absent parameter is `None` in [`Recipient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Notify {
    /// NOTIFY=SUCCESS.
    pub success: bool,
    /// NOTIFY=FAILURE.
    pub failure: bool,
    /// NOTIFY=DELAY.
    pub delay: bool,
}

impl std::fmt::Display for Notify {
    /// The parameter's value as RFC 3461 writes it: `SUCCESS,FAILURE,DELAY`
    /// (those set, in that order) or `NEVER`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let words = [
            (self.success, "SUCCESS"),
            (self.failure, "FAILURE"),
            (self.delay, "DELAY"),
        ];
        let mut set = words.iter().filter(|(on, _)| *on).map(|(_, w)| *w);
        match set.next() {
            None => f.write_str("NEVER"),
            Some(first) => {
                f.write_str(first)?;
                set.try_for_each(|w| write!(f, ",{w}"))
            }
        }
    }
}

/// One accepted recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// The forward-path without angle brackets, e.g. `user@example.org`.
    pub address: String,
    /// NOTIFY=, if the client gave one.
    pub notify: Option<Notify>,
    /// ORCPT=, decoded from xtext, as `addr-type;address` (e.g. `rfc822;a@b`).
    pub orcpt: Option<String>,
}

/// The envelope of one message.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Envelope {
    /// The reverse-path without angle brackets; empty for the null sender `<>`.
    pub sender: String,
    /// Accepted recipients, in the order the client gave them.
    pub recipients: Vec<Recipient>,
    /// BODY=.
    pub body: BodyType,
    /// SMTPUTF8 was given on MAIL FROM.
    pub smtputf8: bool,
    /// RET=, if given.
    pub ret: Option<Ret>,
    /// ENVID=, decoded from xtext, if given.
    pub envid: Option<String>,
    /// SIZE= as declared by the client, if given.
    pub declared_size: Option<u64>,
}

impl Envelope {
    /// Checks every value that is written onto a wire or into a mailbox or
    /// a notice: the sender and each recipient pass the path grammar
    /// ([`check_stored`]), each ORCPT is `atom;text` without control
    /// characters, ENVID is printable ASCII. The doors into the queue call
    /// it on what they did not parse themselves (a maildrop file), and the
    /// client engine calls it again before `MAIL FROM`.
    pub fn check(&self) -> Result<(), EnvelopeError> {
        check_stored(&self.sender).map_err(EnvelopeError::Sender)?;
        for (index, r) in self.recipients.iter().enumerate() {
            let error = if r.address.is_empty() {
                Err(AddressError::Syntax)
            } else {
                check_stored(&r.address)
            };
            error.map_err(|error| EnvelopeError::Recipient { index, error })?;
            if let Some(orcpt) = &r.orcpt {
                let ok = orcpt.split_once(';').is_some_and(|(kind, addr)| {
                    !kind.is_empty()
                        && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && !addr.is_empty()
                        && !addr.chars().any(char::is_control)
                });
                if !ok {
                    return Err(EnvelopeError::Orcpt(index));
                }
            }
        }
        if let Some(envid) = &self.envid {
            let ok =
                (1..=100).contains(&envid.len()) && envid.bytes().all(|b| (32..=126).contains(&b));
            if !ok {
                return Err(EnvelopeError::Envid);
            }
        }
        Ok(())
    }
}

/// How the client spoke: the `with` clause of the Received header (RFC 3848).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    /// HELO.
    Smtp,
    /// EHLO.
    Esmtp,
    /// EHLO, then STARTTLS.
    Esmtps,
    /// Local submission (sendmail).
    Local,
}

impl Protocol {
    /// The RFC 3848 keyword.
    pub fn keyword(self) -> &'static str {
        match self {
            Protocol::Smtp => "SMTP",
            Protocol::Esmtp => "ESMTP",
            Protocol::Esmtps => "ESMTPS",
            Protocol::Local => "local",
        }
    }
}

/// Where a message came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    /// The peer's IP address.
    pub addr: IpAddr,
    /// The peer's TCP port.
    pub port: u16,
    /// The verified host name of the peer, if a lookup was done.
    pub hostname: Option<String>,
    /// The HELO/EHLO argument as given (already checked to be printable).
    pub helo: String,
    /// How the client spoke.
    pub protocol: Protocol,
}

//! What one delivery is given: the envelope and the choices of the driver
//! (timeouts, SMTP or LMTP, STARTTLS, connection reuse).

use std::time::Duration;

use crate::envelope::Envelope;

/// How long to wait at each step (RFC 5321 4.5.3.2 gives the minimums that
/// are the defaults here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// For the `220` greeting. Default 5 min.
    pub greeting: Duration,
    /// For the reply to EHLO or HELO. Default 5 min.
    pub helo: Duration,
    /// For the reply to MAIL. Default 5 min.
    pub mail: Duration,
    /// For the reply to each RCPT. Default 5 min.
    pub rcpt: Duration,
    /// For the `354` to DATA. Default 2 min.
    pub data_init: Duration,
    /// For the driver to get each content chunk out. Default 3 min.
    pub data_block: Duration,
    /// For the reply after the content. Default 10 min.
    pub data_done: Duration,
    /// For the reply to QUIT. Default 5 min.
    pub quit: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let min = |m: u64| Duration::from_secs(m * 60);
        Timeouts {
            greeting: min(5),
            helo: min(5),
            mail: min(5),
            rcpt: min(5),
            data_init: min(2),
            data_block: min(3),
            data_done: min(10),
            quit: min(5),
        }
    }
}

impl Timeouts {
    /// The same timeout for every step.
    pub fn uniform(d: Duration) -> Self {
        Timeouts {
            greeting: d,
            helo: d,
            mail: d,
            rcpt: d,
            data_init: d,
            data_block: d,
            data_done: d,
            quit: d,
        }
    }
}

/// What one delivery needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// The name given in EHLO/HELO.
    pub helo_name: String,
    /// Sender, recipients and their ESMTP parameters, BODY, SMTPUTF8, RET,
    /// ENVID (its `declared_size` is ignored: `message_size` is sent).
    pub envelope: Envelope,
    /// The length of the content in bytes, for SIZE=.
    pub message_size: u64,
    /// Per-step timeouts.
    pub timeouts: Timeouts,
    /// SMTP or LMTP.
    pub protocol: Protocol,
    /// Whether to ask for STARTTLS.
    pub tls: Tls,
    /// Go idle instead of sending QUIT once the message is done, for
    /// [`Session::next_message`].
    pub keep_open: bool,
}

/// SMTP or LMTP (RFC 2033).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// EHLO (HELO fallback); one reply after the content.
    #[default]
    Smtp,
    /// LHLO; one reply per accepted recipient after the content.
    Lmtp,
}

/// Whether the session asks for STARTTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tls {
    /// Never.
    #[default]
    Off,
    /// When offered; plain text otherwise.
    Opportunistic,
    /// Always: not offered or refused defers every recipient `4.7.4`.
    Required,
}

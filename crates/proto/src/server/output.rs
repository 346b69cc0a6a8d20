//! What the server session hands to its driver: [`Output`] (bytes to send,
//! [`Ask`]s, log [`Event`]s, the order to close), the driver's [`Verdict`]s,
//! and the per-command counters ([`CommandStats`]).
//!
//! # Must never
//! Carry peer text that has not passed the grammar, or a way to make a
//! `250` after a message other than [`Verdict::Queued`].
//!
//! # Errors
//! None.

use super::command::TABLE;
use crate::envelope::{Client, Envelope};

/// What the session produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Bytes to write to the peer (consecutive replies coalesced).
    Send(Vec<u8>),
    /// A request the driver must answer with [`Session::handle_verdict`].
    Ask(Ask),
    /// Something for the operator log.
    Log(Event),
    /// Write everything sent so far, then close the connection.
    Close,
}

/// A request to the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// End of DATA / BDAT LAST without error: write the queue file durably,
    /// then answer [`Verdict::Queued`] (or [`Verdict::TempFail`]).
    Commit(Commit),
    /// ETRN for a relay domain: start delivery of its mail, then answer
    /// [`Verdict::EtrnStarted`] or [`Verdict::EtrnUnavailable`].
    Etrn {
        /// The domain, lower-case.
        domain: String,
    },
    /// RCPT for a local domain or `<postmaster>` (only with
    /// `Config::check_local_recipients`): does this address exist? Answer
    /// [`Verdict::RecipientKnown`], [`Verdict::RecipientUnknown`] or
    /// [`Verdict::RecipientUnavailable`].
    CheckRecipient {
        /// The address as accepted by the grammar (`postmaster` alone for
        /// `<postmaster>`).
        address: String,
    },
}

/// A message to be queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Sender, recipients and parameters.
    pub envelope: Envelope,
    /// Where it came from.
    pub client: Client,
    /// The message as received: dot-unstuffed, CRLF line ends (a BDAT
    /// message is kept as sent, so it may lack a final CRLF), no Received
    /// header (cleanup prepends it).
    pub content: Vec<u8>,
}

/// The driver's answer to an [`Ask`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The message is on disk: `250 2.0.0 Ok: queued as ID`.
    Queued {
        /// The queue ID.
        queue_id: String,
    },
    /// It is not: `451 4.3.0 Error: queue file write error`.
    TempFail,
    /// `250 2.0.0 Queuing started`.
    EtrnStarted,
    /// `458 4.5.0 Unable to queue messages for node`.
    EtrnUnavailable,
    /// The local recipient exists: `250 2.1.5 Ok`.
    RecipientKnown,
    /// It does not: `550 5.1.1 <addr>: Recipient address rejected: User
    /// unknown in local recipient table`.
    RecipientUnknown,
    /// It cannot be told now (a map could not be read): `451 4.3.0`.
    RecipientUnavailable,
}

/// Events for the operator log; the driver formats them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A 4xx/5xx reply at HELO/EHLO, MAIL, RCPT, DATA, BDAT or the end of a
    /// message (Postfix "NOQUEUE: reject: RCPT from ...").
    Rejected {
        /// `"HELO"`, `"EHLO"`, `"MAIL"`, `"RCPT"`, `"DATA"`, `"BDAT"` or
        /// `"END-OF-MESSAGE"`.
        stage: &'static str,
        /// The reply, one line, e.g. `554 5.7.1 <x@y>: Relay access denied`.
        reply: String,
        /// The sender of the transaction, if any (`""` for `<>`).
        sender: Option<String>,
        /// The recipient concerned, if any.
        recipient: Option<String>,
        /// The HELO/EHLO name, if any.
        helo: Option<String>,
    },
    /// A timer ran out ("timeout after STAGE").
    TimedOut {
        /// The last command, or `"CONNECT"`, `"DATA"`/`"BDAT"` (inside
        /// content) or `"END-OF-MESSAGE"`.
        stage: &'static str,
    },
    /// The error limit was reached ("too many errors after STAGE").
    TooManyErrors {
        /// As in [`Event::TimedOut`].
        stage: &'static str,
    },
    /// A command line over the limit was skipped.
    LineTooLong {
        /// As in [`Event::TimedOut`].
        stage: &'static str,
    },
    /// A bare CR or LF was seen in a command line or a message.
    BareNewline {
        /// As in [`Event::TimedOut`].
        stage: &'static str,
    },
    /// The client sent more input after a command that must end a
    /// pipelined group ("improper command pipelining after STAGE").
    ImproperPipelining {
        /// The command after which input followed.
        after: &'static str,
    },
}

/// Per-command counters for the "disconnect from ..." log line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandStats {
    /// (successes, total) per row of the command table.
    pub(super) counts: [(u32, u32); TABLE.len()],
}

impl CommandStats {
    /// `(name, successes, total)` for each command used, in a fixed order
    /// (names lower-case, unrecognized lines as `unknown`).
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u32, u32)> + '_ {
        TABLE
            .iter()
            .zip(self.counts.iter())
            .filter(|(_, (_, total))| *total > 0)
            .map(|(row, (ok, total))| (row.stat_name, *ok, *total))
    }

    /// `(successes, total)` over all commands.
    pub fn total(&self) -> (u32, u32) {
        self.counts
            .iter()
            .fold((0, 0), |(a, b), (ok, total)| (a + ok, b + total))
    }

    /// `(successes, total)` of one command by its lower-case name.
    pub fn get(&self, name: &str) -> Option<(u32, u32)> {
        self.iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, ok, t)| (ok, t))
    }
}

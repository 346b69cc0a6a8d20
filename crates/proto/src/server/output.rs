//! What the server session hands to its driver: [`Output`] (bytes to send,
//! [`Ask`]s, log [`Event`]s, the order to close), the typed answers to each
//! ask ([`CheckAnswer`], [`CommitAnswer`], [`EtrnAnswer`]), and the
//! per-command counters ([`CommandStats`]).
//!
//! # Must never
//! Carry peer text that has not passed the grammar, or a way to make a
//! `250` after a message other than [`CommitAnswer::Queued`].
//!
//! # Errors
//! None.

use super::command::TABLE;
use crate::envelope::{Client, Envelope};
use crate::reply::Reply;

/// What the session produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Bytes to write to the peer (consecutive replies coalesced).
    Send(Vec<u8>),
    /// A request the driver must answer (see [`Ask`]).
    Ask(Ask),
    /// Something for the operator log.
    Log(Event),
    /// Write everything sent so far, then close the connection.
    Close,
}

/// A request to the driver. Each kind has its own answer type and its own
/// `Session::handle_*` method; while one is out the session waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// May the session go on at this stage? Answer with
    /// [`Session::handle_check`](super::Session::handle_check) and a
    /// [`CheckAnswer`]. The session knows nothing of what is checked (DNSBL,
    /// policy, maps, milters): the driver owns the list.
    Check(Check),
    /// End of DATA / BDAT LAST without error, and the end-of-data check
    /// passed: write the queue file durably, then answer with
    /// [`Session::handle_commit`](super::Session::handle_commit).
    Commit(Commit),
    /// ETRN for a relay domain: ask for its mail to be flushed, then answer
    /// with [`Session::handle_etrn`](super::Session::handle_etrn).
    Etrn {
        /// The domain, lower-case.
        domain: String,
    },
}

/// The SMTP stage a [`Check`] is asked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The client connected: before the greeting.
    Connect,
    /// A valid HELO/EHLO, before its reply.
    Helo,
    /// A valid MAIL FROM, before `250`.
    Mail,
    /// A valid RCPT TO that the relay rules allow, before `250`.
    Rcpt,
    /// DATA with recipients, before `354`.
    Data,
    /// A whole message that passed the session's own checks, before the
    /// commit.
    EndOfData,
}

impl Stage {
    /// The name Postfix logs for the stage (`"CONNECT"`, `"RCPT"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Stage::Connect => "CONNECT",
            Stage::Helo => "HELO",
            Stage::Mail => "MAIL",
            Stage::Rcpt => "RCPT",
            Stage::Data => "DATA",
            Stage::EndOfData => "END-OF-MESSAGE",
        }
    }
}

/// What the session knows when it asks a check: the facts of the session
/// so far, as the grammar accepted them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Where in the session.
    pub stage: Stage,
    /// The HELO/EHLO name (at [`Stage::Helo`], the one being given).
    pub helo: Option<String>,
    /// The sender of the transaction (`""` for `<>`), from MAIL on.
    pub sender: Option<String>,
    /// At [`Stage::Rcpt`], the recipient (`postmaster` alone for
    /// `<postmaster>`).
    pub recipient: Option<String>,
    /// At [`Stage::Rcpt`], the recipient is in `local_domains` (or is
    /// `<postmaster>`).
    pub local: bool,
}

/// The answer to an [`Ask::Check`]: the folded answer of every check the
/// driver ran at that stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckAnswer {
    /// Go on.
    Accept,
    /// Refuse with this reply (4xx or 5xx; anything else is taken as
    /// `451 4.3.0`). At [`Stage::Connect`] the session sends it and closes;
    /// elsewhere the command is refused, and a 5xx counts as a client
    /// error (a 4xx is the checker's trouble and does not).
    Reject(Reply),
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

/// The answer to an [`Ask::Commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitAnswer {
    /// The message is on disk: `250 2.0.0 Ok: queued as ID`, the only way
    /// to that reply.
    Queued {
        /// The queue ID.
        queue_id: String,
    },
    /// It is not: `451 4.3.0 Error: queue file write error`.
    TempFail,
    /// Cleanup refused it (a relay loop, NUL bytes): this 4xx or 5xx
    /// reply, made in [`crate::reply`] (a reply below 400 is taken as a
    /// write error: 250 comes only from `Queued`).
    Refused(crate::reply::Reply),
}

/// The answer to an [`Ask::Etrn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtrnAnswer {
    /// The flush request is on its way: `250 2.0.0 Queuing started`.
    Started,
    /// It could not be sent: `458 4.5.0 Unable to queue messages for node`.
    Unavailable,
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

//! The delivery agent protocol, spoken on `run_dir/delivery.sock`.
//!
//! Delivery agents (`sluice-smtp`, `sluice-local`) are long-lived: each
//! connects to the queue manager, reads its [`crate::Hello`], announces
//! itself with [`AgentMessage::Ready`], then takes one [`Job`] at a time and
//! answers each with one [`JobResult`] holding one [`RecipientResult`] per
//! recipient of the job. Only queue IDs cross the socket: the agent opens
//! the queue file read-only itself. A job whose result never comes (the
//! agent died) is retried later: delivery is at least once.
//!
//! # Must never
//! Carry message content.

use serde::{Deserialize, Serialize};

/// The protocol name in the queue manager's [`crate::Hello`].
pub const PROTOCOL: &str = "sluice-delivery";
/// Its version.
pub const VERSION: u32 = 1;

/// Which agent kind handles a recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Transport {
    /// `sluice-smtp`: SMTP or LMTP to a next hop.
    Smtp,
    /// `sluice-local`: local mailboxes.
    Local,
}

/// Queue manager to agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QmgrMessage {
    /// Deliver this.
    Deliver(Job),
}

/// Agent to queue manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentMessage {
    /// First message: what this agent delivers.
    Ready {
        /// Its transport.
        transport: Transport,
        /// Its process ID, for the log.
        pid: u32,
    },
    /// The outcome of a job.
    Done(JobResult),
    /// The agent closed the idle connection it kept to this next hop
    /// (announced by [`JobResult::open_connection`]): no job came within
    /// `smtp.reuse_idle`.
    Closed {
        /// The job's `next_hop` the connection was for.
        next_hop: String,
    },
}

/// One delivery attempt: some recipients of one message, one next hop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Chosen by the queue manager; echoed in the result.
    pub job_id: u64,
    /// The message's queue ID.
    pub queue_id: String,
    /// Where to deliver: for SMTP a next hop in the `routes` syntax
    /// (`[10.0.0.5]:25`, `host:2525`, `lmtp:...`) or a domain to resolve.
    pub next_hop: String,
    /// Recipients, by their position in the queue file's envelope.
    pub recipients: Vec<JobRecipient>,
    /// Milliseconds the job waited in the queue manager's active queue, for
    /// the `delays=` log field.
    pub queue_wait_ms: u64,
}

/// One recipient of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecipient {
    /// Position in the envelope's recipient list.
    pub index: u32,
    /// The address (as in the queue file; the agent checks they match).
    pub address: String,
}

/// The log's `status=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Accepted by the next hop or the mailbox (`status=sent`).
    Delivered,
    /// Try again later (`status=deferred`): 4xx, timeouts, no route yet.
    Deferred,
    /// Give up and tell the sender (`status=bounced`): 5xx.
    Bounced,
}

impl Outcome {
    /// The log's `status=` word.
    pub fn status_word(self) -> &'static str {
        match self {
            Outcome::Delivered => "sent",
            Outcome::Deferred => "deferred",
            Outcome::Bounced => "bounced",
        }
    }
}

/// What happened to one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientResult {
    /// Position in the envelope's recipient list.
    pub index: u32,
    /// Delivered, deferred or bounced.
    pub outcome: Outcome,
    /// Enhanced status code, e.g. `2.0.0`, `4.4.1`, `5.1.1`.
    pub dsn: String,
    /// The remote reply or the local reason, printable.
    pub reply: String,
    /// The remote MTA's host name, if a server answered at all; `None`
    /// means the next hop was not reached (the queue manager then suspends
    /// the destination for a while).
    pub remote_mta: Option<String>,
    /// For a delivered recipient, who owes its sender a success report
    /// (RFC 3461 §5.2): absent from an older agent, [`Handoff::Final`].
    #[serde(default)]
    pub handoff: Handoff,
}

/// Where a delivered recipient's message went, which decides the success
/// report (RFC 3461 §5.2.2, §5.2.3; RFC 3464 §2.3.3 `Action:`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Handoff {
    /// Final delivery (a mailbox, LMTP): Sluice reports `delivered`.
    #[default]
    Final,
    /// Relayed to a next hop without DSN: Sluice reports `relayed`.
    Relayed,
    /// Relayed to a next hop that offered DSN, with NOTIFY passed on: the
    /// duty moved on with the message, Sluice reports nothing.
    PassedOn,
}

/// The answer to one [`Job`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobResult {
    /// The job's ID.
    pub job_id: u64,
    /// One entry per recipient of the job.
    pub recipients: Vec<RecipientResult>,
    /// The job's `next_hop` while the agent keeps a connection to it open
    /// for more jobs (until it sends [`AgentMessage::Closed`] or another
    /// result says otherwise); `None`: it holds no connection.
    #[serde(default)]
    pub open_connection: Option<String>,
}

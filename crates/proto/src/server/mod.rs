//! The SMTP server session: a sans-IO state machine (quinn-proto shape).
//! Bytes and the time come in ([`Session::handle_input`],
//! [`Session::handle_timeout`]); replies, asks, log events and the order to
//! close come out ([`Session::poll_output`]). The driver (sluice-smtpd) owns
//! the socket, the clock and the spool.
//!
//! What the machine cannot do alone is an [`Ask`]: at the end of a message it
//! asks the driver to commit the message durably, and only the driver's
//! [`Verdict::Queued`] produces the `250 ... queued as` reply. While an ask
//! is pending no input is processed (it is kept, in order) and no timer runs.
//!
//! Decisions (see also the crate's transcripts, which are the executable
//! specification):
//! - Command lines end in CRLF (RFC 5321 2.3.8). A line ending in a bare LF
//!   is answered `500 5.5.2` and not executed, unless
//!   [`BareNewline::Normalize`] is set, which also accepts it here.
//! - A command line is at most 512 octets with CRLF (RFC 5321 4.5.3.1.4);
//!   RCPT may be 500 octets longer, as RFC 3461 4 allows for ORCPT since
//!   DSN is advertised. A longer line is skipped to the next LF without
//!   being kept, then answered `500 5.5.2`.
//! - Pipelined commands are answered in order, their replies coalesced into
//!   one [`Output::Send`]. Input after a command that must end a group
//!   (RFC 2920 3.1) is still processed in order (the server must not
//!   discard its input buffer, RFC 2920 3.2) and logged as
//!   [`Event::ImproperPipelining`].
//! - The command timer is a deadline for a whole command line (bytes that
//!   trickle in do not extend it); the data timer is an idle timer.
//!
//! # Must never
//! Reply 250 to the end of a message except from [`Verdict::Queued`]; end
//! DATA on anything but CRLF.CRLF; keep an over-long line or more content
//! than the size limit; open a relay: recipients outside `local_domains` and
//! `relay_domains` are refused to untrusted peers, and so are %-hack, bang
//! and quoted-`@` local parts and address literals.
//!
//! # Security
//! Everything from the peer is hostile. Memory per session is bounded by the
//! longest command line plus one input chunk, and by the message size limit
//! in DATA/BDAT.
//!
//! # Errors
//! Peer errors are replies; the error counter ends abusive sessions with
//! `421`. Nothing here panics on any input.

mod command;
mod content;

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::address::{self, Domain, Path};
use crate::envelope::{BodyType, Client, Envelope, Protocol, Recipient};
use crate::reply::{self, Reply};
use command::{Verb, TABLE};
use content::{Content, Framing};

/// What to do with a bare CR or LF (one not part of CRLF).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BareNewline {
    /// In a command line: `500 5.5.2`; in a message: read to the end,
    /// then `550 5.6.0`, nothing committed. The default.
    #[default]
    Reject,
    /// Accept it: in a message it becomes CRLF (it still never ends DATA);
    /// a command line may end in a bare LF.
    Normalize,
}

/// Limits enforced by the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest text line in a message, CRLF excluded. Default 4096.
    pub max_line_length: usize,
    /// Advertised with SIZE; enforced at MAIL (SIZE=) and at the end of the
    /// content. Default 52428800 (50 MiB).
    pub max_message_size: u64,
    /// Recipients per message; more get `452 4.5.3`. Default 1000.
    pub max_recipients: usize,
    /// Error replies before `421 4.7.0 ... too many errors`. Default 20.
    pub max_errors: u32,
    /// Time allowed to receive one command line. Default 300 s.
    pub command_timeout: Duration,
    /// Idle time allowed inside DATA/BDAT content. Default 300 s.
    pub data_timeout: Duration,
    /// Time allowed for the whole session. Default 3600 s.
    pub session_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_length: 4096,
            max_message_size: 52_428_800,
            max_recipients: 1000,
            max_errors: 20,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(300),
            session_timeout: Duration::from_secs(3600),
        }
    }
}

/// Settings shared by all sessions of a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Our host name, in the greeting and replies. Default `localhost`.
    pub hostname: String,
    /// Limits.
    pub limits: Limits,
    /// Domains delivered here: lower-case, no trailing dot; `.example.org`
    /// matches the subdomains of example.org. Default empty.
    pub local_domains: Vec<String>,
    /// Domains accepted from anyone and relayed on; same rules. Default
    /// empty.
    pub relay_domains: Vec<String>,
    /// Bare CR/LF handling. Default [`BareNewline::Reject`].
    pub bare_newline: BareNewline,
    /// VRFY answers `252 2.5.2` (never confirming anything) when true, the
    /// default; `502 5.5.1` when false.
    pub vrfy_enabled: bool,
    /// EXPN answers `502 5.5.1` when false, the default; `252 2.5.2` when
    /// true (no expansion).
    pub expn_enabled: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hostname: "localhost".to_string(),
            limits: Limits::default(),
            local_domains: Vec::new(),
            relay_domains: Vec::new(),
            bare_newline: BareNewline::Reject,
            vrfy_enabled: true,
            expn_enabled: false,
        }
    }
}

/// The connected client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its address and port.
    pub addr: SocketAddr,
    /// In `trusted_networks`: may relay anywhere.
    pub trusted: bool,
    /// Its verified host name, if the driver looked it up.
    pub hostname: Option<String>,
}

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
    /// header (see [`crate::received::header`]).
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
    counts: [(u32, u32); TABLE.len()],
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

/// `ehlo=1 mail=1 rcpt=1/2 data=1 quit=1 commands=5/6` (Postfix shape:
/// `/total` only when some failed).
impl fmt::Display for CommandStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let one = |f: &mut fmt::Formatter<'_>, name: &str, ok: u32, total: u32| {
            if ok == total {
                write!(f, "{name}={ok}")
            } else {
                write!(f, "{name}={ok}/{total}")
            }
        };
        for (name, ok, total) in self.iter() {
            one(f, name, ok, total)?;
            f.write_str(" ")?;
        }
        let (ok, total) = self.total();
        one(f, "commands", ok, total)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// A Commit ask, from DATA or BDAT.
    Commit(Verb),
    Etrn,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Reading command lines.
    Command,
    /// Inside DATA content.
    Data,
    /// Reading a BDAT chunk: `remaining` octets to go; `refusal` is the
    /// reply for a chunk that is read only to be discarded.
    Chunk {
        remaining: u64,
        octets: u64,
        last: bool,
        refusal: Option<Reply>,
    },
    /// An ask is out.
    Pending(Pending),
    Closed,
}

/// A mail transaction, from MAIL to the end of the message (or RSET).
#[derive(Debug)]
struct Transaction {
    envelope: Envelope,
    content: Option<Content>,
    /// BDAT was used: DATA is refused.
    chunked: bool,
    /// A BDAT chunk failed: later chunks are read and refused with this.
    failed: Option<Reply>,
}

/// One SMTP server session.
#[derive(Debug)]
pub struct Session {
    config: Arc<Config>,
    peer: Peer,
    state: State,
    inbuf: Vec<u8>,
    /// Discarding an over-long command line up to the next LF.
    skipping: bool,
    out: VecDeque<Output>,
    logs: VecDeque<Event>,
    helo: Option<String>,
    esmtp: bool,
    tx: Option<Transaction>,
    errors: u32,
    stats: CommandStats,
    stage: &'static str,
    deadline: Instant,
    session_deadline: Instant,
    shutdown_pending: bool,
}

fn domain_matches(list: &[String], domain: &str) -> bool {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    list.iter().any(|entry| {
        let e = entry.trim_end_matches('.').to_ascii_lowercase();
        match e.strip_prefix('.') {
            Some(parent) => d.len() > parent.len() + 1 && d.ends_with(&e) && !parent.is_empty(),
            None => d == e,
        }
    })
}

impl Session {
    /// A new session; queues the `220` greeting.
    pub fn new(config: Arc<Config>, peer: Peer, now: Instant) -> Self {
        let mut s = Session {
            deadline: now + config.limits.command_timeout,
            session_deadline: now + config.limits.session_timeout,
            config,
            peer,
            state: State::Command,
            inbuf: Vec::new(),
            skipping: false,
            out: VecDeque::new(),
            logs: VecDeque::new(),
            helo: None,
            esmtp: false,
            tx: None,
            errors: 0,
            stats: CommandStats::default(),
            stage: "CONNECT",
            shutdown_pending: false,
        };
        let greeting = reply::greeting(&s.config.hostname);
        s.send(&greeting);
        s
    }

    /// Raw bytes from the peer, in any split.
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        if self.is_closed() || bytes.is_empty() {
            return;
        }
        if matches!(self.state, State::Data | State::Chunk { .. }) {
            self.deadline = now + self.config.limits.data_timeout;
        }
        self.inbuf.extend_from_slice(bytes);
        self.process(now);
    }

    /// The driver's answer to the pending [`Ask`]. A verdict that does not
    /// fit the ask is taken as a failure (never as a success); one without an
    /// ask is ignored.
    pub fn handle_verdict(&mut self, v: Verdict, now: Instant) {
        let State::Pending(pending) = self.state else {
            return;
        };
        self.state = State::Command;
        match pending {
            Pending::Commit(verb) => {
                let r = match v {
                    Verdict::Queued { queue_id } => reply::queued(&queue_id),
                    _ => reply::queue_write_error(),
                };
                self.stage = "END-OF-MESSAGE";
                // A failed disk write is not the client's error.
                self.finish_command(verb, &r, false, now);
            }
            Pending::Etrn => {
                let r = match v {
                    Verdict::EtrnStarted => reply::etrn_started(),
                    _ => reply::etrn_unavailable(),
                };
                self.finish_command(Verb::Etrn, &r, false, now);
            }
        }
        self.process(now);
    }

    /// The time came (at or after [`Session::poll_timeout`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_closed() || matches!(self.state, State::Pending(_)) {
            return;
        }
        if now >= self.deadline || now >= self.session_deadline {
            self.logs.push_back(Event::TimedOut { stage: self.stage });
            let r = reply::timeout(&self.config.hostname);
            self.send(&r);
            self.close();
        }
    }

    /// The daemon is stopping: `421 4.3.2` and close now if no transaction
    /// is under way, else right after that transaction's final reply.
    pub fn handle_shutdown(&mut self, _now: Instant) {
        if self.is_closed() {
            return;
        }
        self.shutdown_pending = true;
        self.maybe_shutdown();
    }

    /// The next output, in order (log events come first).
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some(e) = self.logs.pop_front() {
            return Some(Output::Log(e));
        }
        self.out.pop_front()
    }

    /// When to call [`Session::handle_timeout`]; `None` when closed or
    /// while an ask is pending.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Closed | State::Pending(_) => None,
            _ => Some(self.deadline.min(self.session_deadline)),
        }
    }

    /// True once the session has decided to close.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// False while an ask is pending or after close: the driver may stop
    /// reading from the socket until it turns true (input given meanwhile is
    /// kept, in order).
    pub fn wants_input(&self) -> bool {
        !matches!(self.state, State::Pending(_) | State::Closed)
    }

    /// Per-command counters.
    pub fn command_stats(&self) -> &CommandStats {
        &self.stats
    }

    /// The last stage (command, `"CONNECT"`, `"DATA"`, `"END-OF-MESSAGE"`),
    /// as in Postfix's "lost connection after STAGE".
    pub fn stage(&self) -> &'static str {
        self.stage
    }

    /// How the client speaks: ESMTP after EHLO, else SMTP.
    pub fn protocol(&self) -> Protocol {
        if self.esmtp {
            Protocol::Esmtp
        } else {
            Protocol::Smtp
        }
    }

    /// The HELO/EHLO name, once given.
    pub fn helo(&self) -> Option<&str> {
        self.helo.as_deref()
    }

    /// The peer.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    // ---- output helpers ----

    fn send(&mut self, r: &Reply) {
        if let Some(Output::Send(buf)) = self.out.back_mut() {
            r.write_to(buf);
        } else {
            self.out.push_back(Output::Send(r.to_bytes()));
        }
    }

    fn close(&mut self) {
        self.state = State::Closed;
        self.tx = None;
        self.inbuf = Vec::new();
        self.out.push_back(Output::Close);
    }

    /// Sends the reply to a command, counts it, and applies the error limit.
    /// `counts_error` is false for replies that are not the client's fault.
    fn finish_command(&mut self, verb: Verb, r: &Reply, counts_error: bool, now: Instant) {
        self.send(r);
        let i = verb.index();
        if !r.is_error() && r.code != 354 {
            self.stats.counts[i].0 += 1;
        }
        if matches!(self.state, State::Command) {
            self.deadline = now + self.config.limits.command_timeout;
        }
        if r.is_error() && counts_error {
            self.errors += 1;
            if self.errors >= self.config.limits.max_errors {
                self.logs
                    .push_back(Event::TooManyErrors { stage: self.stage });
                let r = reply::too_many_errors(&self.config.hostname);
                self.send(&r);
                self.close();
                return;
            }
        }
        self.maybe_shutdown();
    }

    /// A refusal worth an operator log line, then [`Self::finish_command`].
    fn reject(&mut self, verb: Verb, r: &Reply, recipient: Option<String>, now: Instant) {
        self.logs.push_back(Event::Rejected {
            stage: self.stage,
            reply: r.to_string(),
            sender: self.tx.as_ref().map(|t| t.envelope.sender.clone()),
            recipient,
            helo: self.helo.clone(),
        });
        self.finish_command(verb, r, true, now);
    }

    fn maybe_shutdown(&mut self) {
        if self.shutdown_pending && self.tx.is_none() && self.state == State::Command {
            let r = reply::shutting_down(&self.config.hostname);
            self.send(&r);
            self.close();
        }
    }

    // ---- input ----

    fn process(&mut self, now: Instant) {
        let mut buf = std::mem::take(&mut self.inbuf);
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            match &mut self.state {
                State::Closed | State::Pending(_) => break,
                State::Command => {
                    if rest.is_empty() {
                        break;
                    }
                    let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
                        // No full line yet: keep at most one line's worth.
                        if self.skipping || rest.len() >= command::line_limit(rest) {
                            if !self.skipping {
                                self.logs
                                    .push_back(Event::LineTooLong { stage: self.stage });
                            }
                            self.skipping = true;
                            pos = buf.len();
                        }
                        break;
                    };
                    let line = rest[..lf].to_vec();
                    pos += lf + 1;
                    let verb = self.command_line(&line, now);
                    let more = pos < buf.len();
                    if let Some(verb) = verb {
                        if more && verb.row().ends_group && !self.is_closed() {
                            self.logs.push_back(Event::ImproperPipelining {
                                after: verb.row().name,
                            });
                        }
                    }
                }
                State::Data => {
                    if rest.is_empty() {
                        break;
                    }
                    let ended = match self.tx.as_mut().and_then(|t| t.content.as_mut()) {
                        Some(c) => c.feed(rest),
                        None => Some(0),
                    };
                    match ended {
                        Some(n) => {
                            pos += n;
                            self.end_of_data(now);
                        }
                        None => {
                            pos = buf.len();
                            break;
                        }
                    }
                }
                State::Chunk {
                    remaining, refusal, ..
                } => {
                    let take = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(rest.len());
                    if refusal.is_none() {
                        if let Some(c) = self.tx.as_mut().and_then(|t| t.content.as_mut()) {
                            c.feed(&rest[..take]);
                        }
                    }
                    pos += take;
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        self.end_of_chunk(now);
                    } else {
                        break;
                    }
                }
            }
        }
        if self.is_closed() {
            return;
        }
        buf.drain(..pos);
        self.inbuf = buf;
    }

    /// One command line (LF removed). Returns the verb it was, if it was
    /// read as a command at all.
    fn command_line(&mut self, raw: &[u8], now: Instant) -> Option<Verb> {
        if std::mem::take(&mut self.skipping) {
            self.stats.counts[Verb::Unknown.index()].1 += 1;
            self.finish_command(Verb::Unknown, &reply::line_too_long(), true, now);
            return None;
        }
        let (line, bare_lf) = match raw.strip_suffix(b"\r") {
            Some(l) => (l, false),
            None => (raw, true),
        };
        let bad = if line.len() + 2 > command::line_limit(line) {
            self.logs
                .push_back(Event::LineTooLong { stage: self.stage });
            Some(reply::line_too_long())
        } else if bare_lf && self.config.bare_newline == BareNewline::Reject {
            self.logs
                .push_back(Event::BareNewline { stage: self.stage });
            Some(reply::bare_lf_command())
        } else {
            None
        };
        let text = match (bad, std::str::from_utf8(line)) {
            (None, Ok(t)) if !t.is_empty() && !t.chars().any(char::is_control) => t,
            (bad, _) => {
                self.stats.counts[Verb::Unknown.index()].1 += 1;
                let r = bad.unwrap_or_else(reply::bad_command_syntax);
                self.finish_command(Verb::Unknown, &r, true, now);
                return None;
            }
        };
        let (name, args) = text.split_once(' ').unwrap_or((text, ""));
        let args = args.trim_matches(' ');
        let verb = Verb::lookup(name);
        self.stats.counts[verb.index()].1 += 1;
        if verb != Verb::Unknown {
            self.stage = verb.row().name;
        }
        self.dispatch(verb, args, now);
        Some(verb)
    }

    fn dispatch(&mut self, verb: Verb, args: &str, now: Instant) {
        let r = match verb {
            Verb::Helo | Verb::Ehlo => return self.helo_cmd(verb, args, now),
            Verb::Mail => return self.mail(args, now),
            Verb::Rcpt => return self.rcpt(args, now),
            Verb::Data => return self.data(args, now),
            Verb::Bdat => return self.bdat(args, now),
            Verb::Etrn => return self.etrn(args, now),
            Verb::Rset if !args.is_empty() => reply::syntax("RSET"),
            Verb::Rset => {
                self.tx = None;
                reply::ok()
            }
            Verb::Noop => reply::ok(),
            Verb::Quit if !args.is_empty() => reply::syntax("QUIT"),
            Verb::Quit => {
                self.finish_command(verb, &reply::bye(), false, now);
                self.close();
                return;
            }
            Verb::Vrfy if !self.config.vrfy_enabled => reply::not_implemented(),
            Verb::Expn if !self.config.expn_enabled => reply::not_implemented(),
            Verb::Vrfy if args.is_empty() => reply::syntax("VRFY address"),
            Verb::Expn if args.is_empty() => reply::syntax("EXPN mailing-list"),
            Verb::Vrfy | Verb::Expn => reply::cannot_verify(),
            Verb::Help => reply::help(),
            Verb::Starttls
            | Verb::Auth
            | Verb::Send
            | Verb::Soml
            | Verb::Saml
            | Verb::Turn
            | Verb::Atrn => reply::not_implemented(),
            Verb::Unknown => reply::unknown_command(),
        };
        self.finish_command(verb, &r, true, now);
    }

    fn helo_cmd(&mut self, verb: Verb, args: &str, now: Instant) {
        let usage = if verb == Verb::Ehlo {
            "EHLO hostname"
        } else {
            "HELO hostname"
        };
        // One token of printable ASCII: a domain or an address literal as
        // RFC 5321 wants, or the odd names real clients send.
        let valid = !args.is_empty()
            && args.len() <= address::MAX_DOMAIN
            && args.bytes().all(|b| b.is_ascii_graphic());
        if !valid {
            return self.reject(verb, &reply::syntax(usage), None, now);
        }
        self.tx = None;
        self.helo = Some(args.to_string());
        self.esmtp = verb == Verb::Ehlo;
        let r = if self.esmtp {
            reply::ehlo(&self.config.hostname, self.config.limits.max_message_size)
        } else {
            reply::helo(&self.config.hostname)
        };
        self.finish_command(verb, &r, true, now);
    }

    fn mail(&mut self, args: &str, now: Instant) {
        let v = Verb::Mail;
        if self.helo.is_none() {
            return self.reject(v, &reply::bad_sequence("send HELO/EHLO first"), None, now);
        }
        if self.tx.is_some() {
            return self.reject(v, &reply::bad_sequence("nested MAIL command"), None, now);
        }
        let Some(rest) = strip_keyword(args, "FROM:") else {
            return self.reject(v, &reply::syntax("MAIL FROM:<address>"), None, now);
        };
        let (path, rest) = match address::parse_path(rest.trim_start_matches(' '), true) {
            Ok((Path::Postmaster, _)) => {
                return self.reject(v, &reply::bad_sender("syntax error"), None, now)
            }
            Ok(ok) => ok,
            Err(e) => return self.reject(v, &reply::bad_sender(&e.to_string()), None, now),
        };
        let params = match command::parse_mail_params(rest.trim_end_matches(' ')) {
            Ok(_) if !self.esmtp && !rest.trim_matches(' ').is_empty() => {
                return self.reject(
                    v,
                    &reply::unsupported_parameter("ESMTP parameters after HELO"),
                    None,
                    now,
                )
            }
            Ok(p) => p,
            Err(r) => return self.reject(v, &r, None, now),
        };
        let sender = match &path {
            Path::Mailbox { mailbox, .. } => {
                if !mailbox.is_ascii() && !params.smtputf8 {
                    return self.reject(v, &reply::utf8_not_declared(), None, now);
                }
                mailbox.address()
            }
            _ => String::new(),
        };
        if params.size.unwrap_or(0) > self.config.limits.max_message_size {
            return self.reject(v, &reply::size_exceeds_limit(), None, now);
        }
        self.tx = Some(Transaction {
            envelope: Envelope {
                sender,
                recipients: Vec::new(),
                body: params.body.unwrap_or(BodyType::SevenBit),
                smtputf8: params.smtputf8,
                ret: params.ret,
                envid: params.envid,
                declared_size: params.size,
            },
            content: None,
            chunked: false,
            failed: None,
        });
        self.finish_command(v, &reply::mail_ok(), true, now);
    }

    fn rcpt(&mut self, args: &str, now: Instant) {
        let v = Verb::Rcpt;
        let Some(tx) = &self.tx else {
            return self.reject(v, &reply::bad_sequence("need MAIL command"), None, now);
        };
        let smtputf8 = tx.envelope.smtputf8;
        let count = tx.envelope.recipients.len();
        let Some(rest) = strip_keyword(args, "TO:") else {
            return self.reject(v, &reply::syntax("RCPT TO:<address>"), None, now);
        };
        let (path, rest) = match address::parse_path(rest.trim_start_matches(' '), true) {
            Ok((Path::Null, _)) => {
                return self.reject(v, &reply::bad_recipient("syntax error"), None, now)
            }
            Ok(ok) => ok,
            Err(e) => {
                return self.reject(v, &reply::bad_recipient(&e.to_string()), None, now);
            }
        };
        let (address, relay_ok) = match &path {
            Path::Mailbox { mailbox, .. } => {
                let allowed = self.peer.trusted
                    || (!mailbox.has_routing_local_part()
                        && match &mailbox.domain {
                            Domain::Literal(_) => false,
                            Domain::Name(d) => {
                                domain_matches(&self.config.local_domains, d)
                                    || domain_matches(&self.config.relay_domains, d)
                            }
                        });
                if !mailbox.is_ascii() && !smtputf8 {
                    let r = reply::utf8_not_declared();
                    return self.reject(v, &r, Some(mailbox.address()), now);
                }
                (mailbox.address(), allowed)
            }
            _ => ("postmaster".to_string(), true),
        };
        let params = match command::parse_rcpt_params(rest.trim_end_matches(' ')) {
            Ok(_) if !self.esmtp && !rest.trim_matches(' ').is_empty() => {
                let r = reply::unsupported_parameter("ESMTP parameters after HELO");
                return self.reject(v, &r, Some(address), now);
            }
            Ok(p) => p,
            Err(r) => return self.reject(v, &r, Some(address), now),
        };
        if count >= self.config.limits.max_recipients {
            // Not counted as an error: a big list is no abuse (RFC 5321
            // 4.5.3.1.10 has the client send the rest later).
            self.logs.push_back(Event::Rejected {
                stage: self.stage,
                reply: reply::too_many_recipients().to_string(),
                sender: self.tx.as_ref().map(|t| t.envelope.sender.clone()),
                recipient: Some(address),
                helo: self.helo.clone(),
            });
            return self.finish_command(v, &reply::too_many_recipients(), false, now);
        }
        if !relay_ok {
            return self.reject(v, &reply::relay_denied(&address), Some(address), now);
        }
        if let Some(tx) = self.tx.as_mut() {
            tx.envelope.recipients.push(Recipient {
                address,
                notify: params.notify,
                orcpt: params.orcpt,
            });
        }
        self.finish_command(v, &reply::rcpt_ok(), true, now);
    }

    fn data(&mut self, args: &str, now: Instant) {
        let v = Verb::Data;
        let problem = match &self.tx {
            _ if !args.is_empty() => Some(reply::syntax("DATA")),
            None => Some(reply::bad_sequence("need MAIL command")),
            Some(tx) if tx.chunked => Some(reply::bad_sequence("DATA after BDAT")),
            Some(tx) if tx.envelope.recipients.is_empty() => {
                Some(reply::bad_sequence("need RCPT command"))
            }
            Some(_) => None,
        };
        if let Some(r) = problem {
            return self.reject(v, &r, None, now);
        }
        let limits = &self.config.limits;
        let content = Content::new(
            Framing::Dot,
            self.config.bare_newline,
            limits.max_message_size,
            limits.max_line_length,
        );
        if let Some(tx) = self.tx.as_mut() {
            tx.content = Some(content);
        }
        self.state = State::Data;
        self.deadline = now + self.config.limits.data_timeout;
        self.finish_command(v, &reply::start_data(), true, now);
    }

    fn end_of_data(&mut self, now: Instant) {
        self.state = State::Command;
        self.stage = "END-OF-MESSAGE";
        self.end_of_message(Verb::Data, now);
    }

    /// The whole message is in (DATA end or BDAT LAST): refuse it, or ask
    /// for the commit.
    fn end_of_message(&mut self, verb: Verb, now: Instant) {
        let Some(mut tx) = self.tx.take() else {
            return;
        };
        let content = tx.content.take();
        let refusal = match &content {
            None => Some(reply::queue_write_error()),
            Some(c) if c.bare_newline && self.config.bare_newline == BareNewline::Reject => {
                self.logs
                    .push_back(Event::BareNewline { stage: self.stage });
                Some(reply::bare_newline_in_message())
            }
            Some(c) if c.too_big => Some(reply::message_too_big()),
            Some(c) if c.line_too_long => Some(reply::message_line_too_long()),
            Some(_) => None,
        };
        match (refusal, content) {
            (None, Some(c)) => {
                let client = Client {
                    addr: self.peer.addr.ip(),
                    port: self.peer.addr.port(),
                    hostname: self.peer.hostname.clone(),
                    helo: self.helo.clone().unwrap_or_default(),
                    protocol: self.protocol(),
                };
                self.state = State::Pending(Pending::Commit(verb));
                self.out.push_back(Output::Ask(Ask::Commit(Commit {
                    envelope: tx.envelope,
                    client,
                    content: c.into_content(),
                })));
            }
            (r, _) => {
                let r = r.unwrap_or_else(reply::queue_write_error);
                self.logs.push_back(Event::Rejected {
                    stage: self.stage,
                    reply: r.to_string(),
                    sender: Some(tx.envelope.sender.clone()),
                    recipient: None,
                    helo: self.helo.clone(),
                });
                self.finish_command(verb, &r, true, now);
            }
        }
    }

    fn bdat(&mut self, args: &str, now: Instant) {
        let mut words = args.split(' ').filter(|w| !w.is_empty());
        let size = words
            .next()
            .filter(|w| w.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|w| w.parse::<u64>().ok());
        let last = match words.next() {
            None => Some(false),
            Some(w) if w.eq_ignore_ascii_case("LAST") => Some(true),
            Some(_) => None,
        };
        let (Some(size), Some(last), None) = (size, last, words.next()) else {
            // Without a size there is no telling where the next command
            // starts: reading on could take content for commands.
            self.logs.push_back(Event::Rejected {
                stage: self.stage,
                reply: reply::lost_sync(&self.config.hostname).to_string(),
                sender: self.tx.as_ref().map(|t| t.envelope.sender.clone()),
                recipient: None,
                helo: self.helo.clone(),
            });
            let r = reply::lost_sync(&self.config.hostname);
            self.send(&r);
            self.close();
            return;
        };
        let refusal = match &self.tx {
            None => Some(reply::bad_sequence("need MAIL command")),
            Some(tx) if tx.envelope.recipients.is_empty() => {
                Some(reply::bad_sequence("need RCPT command"))
            }
            Some(tx) => tx.failed.clone(),
        };
        if refusal.is_none() {
            let limits = &self.config.limits;
            let (bare, max_size, max_line) = (
                self.config.bare_newline,
                limits.max_message_size,
                limits.max_line_length,
            );
            if let Some(tx) = self.tx.as_mut() {
                tx.chunked = true;
                tx.content.get_or_insert_with(|| {
                    Content::new(Framing::Chunked, bare, max_size, max_line)
                });
            }
        }
        self.state = State::Chunk {
            remaining: size,
            octets: size,
            last,
            refusal,
        };
        self.deadline = now + self.config.limits.data_timeout;
        if size == 0 {
            self.end_of_chunk(now);
        }
    }

    fn end_of_chunk(&mut self, now: Instant) {
        let State::Chunk {
            octets,
            last,
            refusal,
            ..
        } = std::mem::replace(&mut self.state, State::Command)
        else {
            return;
        };
        let v = Verb::Bdat;
        if let Some(r) = refusal {
            // A chunk of a failed transaction: LAST ends that transaction.
            // (A chunk refused for want of MAIL or RCPT changes nothing.)
            if last && self.tx.as_ref().is_some_and(|t| t.failed.is_some()) {
                self.tx = None;
            }
            return self.reject(v, &r, None, now);
        }
        if last {
            if let Some(c) = self.tx.as_mut().and_then(|t| t.content.as_mut()) {
                c.finish_chunked();
            }
            self.stage = "END-OF-MESSAGE";
            return self.end_of_message(v, now);
        }
        let failed = match self.tx.as_ref().and_then(|t| t.content.as_ref()) {
            Some(c) if c.bare_newline && self.config.bare_newline == BareNewline::Reject => {
                Some(reply::bare_newline_in_message())
            }
            Some(c) if c.too_big => Some(reply::message_too_big()),
            Some(c) if c.line_too_long => Some(reply::message_line_too_long()),
            _ => None,
        };
        match failed {
            Some(r) => {
                if let Some(tx) = self.tx.as_mut() {
                    tx.failed = Some(r.clone());
                    tx.content = None;
                }
                self.reject(v, &r, None, now);
            }
            None => self.finish_command(v, &reply::chunk_ok(octets), true, now),
        }
    }

    fn etrn(&mut self, args: &str, now: Instant) {
        let v = Verb::Etrn;
        if args.is_empty() {
            return self.finish_command(v, &reply::syntax("ETRN domain"), true, now);
        }
        if self.helo.is_none() {
            let r = reply::bad_sequence("send HELO/EHLO first");
            return self.finish_command(v, &r, true, now);
        }
        if self.tx.is_some() {
            let r = reply::bad_sequence("MAIL transaction in progress");
            return self.finish_command(v, &r, true, now);
        }
        let domain = args.strip_prefix('@').unwrap_or(args);
        if !address::is_domain(domain, false) {
            return self.finish_command(v, &reply::syntax("ETRN domain"), true, now);
        }
        let domain = domain.to_ascii_lowercase();
        if !domain_matches(&self.config.relay_domains, &domain) {
            return self.finish_command(v, &reply::etrn_not_allowed(&domain), true, now);
        }
        self.state = State::Pending(Pending::Etrn);
        self.out.push_back(Output::Ask(Ask::Etrn { domain }));
    }
}

/// Strips `FROM:` / `TO:` case-insensitively.
fn strip_keyword<'a>(args: &'a str, keyword: &str) -> Option<&'a str> {
    if args.len() >= keyword.len()
        && args.is_char_boundary(keyword.len())
        && args[..keyword.len()].eq_ignore_ascii_case(keyword)
    {
        Some(&args[keyword.len()..])
    } else {
        None
    }
}

#[cfg(test)]
mod tests;

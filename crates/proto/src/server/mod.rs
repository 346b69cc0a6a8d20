//! The SMTP server session: a sans-IO state machine (quinn-proto shape).
//! Bytes and the time come in ([`Session::handle_input`],
//! [`Session::handle_timeout`]); replies, asks, log events and the order to
//! close come out ([`Session::poll_output`]). The driver (sluice-smtpd) owns
//! the socket, the clock and the spool.
//!
//! What the machine cannot do alone is an [`Ask`], each with its own typed
//! answer: a [`Check`] at each stage (connect, HELO, MAIL, RCPT, DATA, end
//! of data) that the driver answers from its own list of checks; the commit
//! of a finished message, whose [`CommitAnswer::Queued`] alone produces the
//! `250 ... queued as` reply; ETRN's flush. While an ask is pending no input
//! is processed (it is kept, in order) and no timer runs: the driver owns
//! the deadline of every ask it is given.
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
//!   discard its input buffer, RFC 2920 3.2), logged as
//!   [`Event::ImproperPipelining`] once per session, and counted as an
//!   error each time.
//! - The command timer is a deadline for a whole command line (bytes that
//!   trickle in do not extend it); the data timer is an idle timer.
//!
//! # Must never
//! Reply 250 to the end of a message except from [`CommitAnswer::Queued`]; end
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
mod output;
mod settings;
mod transaction;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use crate::address;
use crate::envelope::{Envelope, Protocol, Recipient};
use crate::reply::{self, Reply};
use command::Verb;
use content::Content;

pub use output::{
    Ask, Check, CheckAnswer, CommandStats, Commit, CommitAnswer, EtrnAnswer, Event, Output, Stage,
};
pub use settings::{BareNewline, Config, Limits, Peer};

#[derive(Debug)]
enum Pending {
    /// A Check ask: what to do once it is accepted.
    Check(Resume),
    /// A Commit ask, from DATA or BDAT.
    Commit(Verb),
    Etrn,
}

/// Where a session resumes when its [`Check`] is accepted.
#[derive(Debug)]
enum Resume {
    /// Send the greeting.
    Connect,
    /// Take the HELO/EHLO name.
    Helo { verb: Verb, name: String },
    /// Open the transaction.
    Mail(Box<Transaction>),
    /// Add the recipient.
    Rcpt(Recipient),
    /// Start reading content.
    Data,
    /// Ask for the commit.
    EndOfData { verb: Verb, commit: Box<Commit> },
}

#[derive(Debug)]
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
    /// Improper pipelining was logged (once per session).
    pipelining_logged: bool,
    /// ETRN requests asked so far.
    etrns: u32,
}

impl Session {
    /// A new session; asks the [`Stage::Connect`] check, after which it
    /// sends the `220` greeting (or the check's refusal, and closes).
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
            pipelining_logged: false,
            etrns: 0,
        };
        s.ask_check(Stage::Connect, Resume::Connect, None, false, now);
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

    /// The answer to the pending [`Ask::Check`]; ignored if no check is
    /// out.
    pub fn handle_check(&mut self, answer: CheckAnswer, now: Instant) {
        let State::Pending(Pending::Check(_)) = &self.state else {
            return;
        };
        let State::Pending(Pending::Check(resume)) =
            std::mem::replace(&mut self.state, State::Command)
        else {
            return;
        };
        match answer {
            CheckAnswer::Accept => self.resume(resume, now),
            CheckAnswer::Reject(r) => {
                let r = if r.is_error() {
                    r
                } else {
                    reply::queue_write_error()
                };
                self.refuse(resume, &r, now);
            }
        }
        self.process(now);
    }

    /// The answer to the pending [`Ask::Commit`]; ignored if no commit is
    /// out.
    pub fn handle_commit(&mut self, answer: CommitAnswer, now: Instant) {
        let State::Pending(Pending::Commit(verb)) = self.state else {
            return;
        };
        self.state = State::Command;
        let r = match answer {
            CommitAnswer::Queued { queue_id } => reply::queued(&queue_id),
            CommitAnswer::TempFail => reply::queue_write_error(),
            CommitAnswer::Refused(r) if r.code >= 400 => r,
            CommitAnswer::Refused(_) => reply::queue_write_error(),
        };
        self.stage = "END-OF-MESSAGE";
        // A failed disk write is not the client's error.
        self.finish_command(verb, &r, false, now);
        self.process(now);
    }

    /// The answer to the pending [`Ask::Etrn`]; ignored if no ETRN is out.
    pub fn handle_etrn(&mut self, answer: EtrnAnswer, now: Instant) {
        let State::Pending(Pending::Etrn) = self.state else {
            return;
        };
        self.state = State::Command;
        let r = match answer {
            EtrnAnswer::Started => reply::etrn_started(),
            EtrnAnswer::Unavailable => reply::etrn_unavailable(),
        };
        self.finish_command(Verb::Etrn, &r, false, now);
        self.process(now);
    }

    /// Asks the driver's checks for `stage`; the session waits.
    fn ask_check(
        &mut self,
        stage: Stage,
        resume: Resume,
        recipient: Option<String>,
        local: bool,
        now: Instant,
    ) {
        if !self.config.checks {
            return self.resume(resume, now);
        }
        let helo = match &resume {
            Resume::Helo { name, .. } => Some(name.clone()),
            _ => self.helo.clone(),
        };
        let sender = match &resume {
            Resume::Mail(tx) => Some(tx.envelope.sender.clone()),
            Resume::EndOfData { commit, .. } => Some(commit.envelope.sender.clone()),
            _ => self.tx.as_ref().map(|t| t.envelope.sender.clone()),
        };
        self.state = State::Pending(Pending::Check(resume));
        self.out.push_back(Output::Ask(Ask::Check(Check {
            stage,
            helo,
            sender,
            recipient,
            local,
        })));
    }

    /// A check accepted: do what was waiting for it.
    fn resume(&mut self, resume: Resume, now: Instant) {
        match resume {
            Resume::Connect => {
                let greeting = reply::greeting(&self.config.hostname);
                self.send(&greeting);
                self.maybe_shutdown();
            }
            Resume::Helo { verb, name } => {
                self.tx = None;
                self.helo = Some(name);
                self.esmtp = verb == Verb::Ehlo;
                let r = if self.esmtp {
                    reply::ehlo(&self.config.hostname, self.config.limits.max_message_size)
                } else {
                    reply::helo(&self.config.hostname)
                };
                self.finish_command(verb, &r, true, now);
            }
            Resume::Mail(tx) => {
                self.tx = Some(*tx);
                self.finish_command(Verb::Mail, &reply::mail_ok(), true, now);
            }
            Resume::Rcpt(recipient) => {
                if let Some(tx) = self.tx.as_mut() {
                    tx.envelope.recipients.push(recipient);
                }
                self.finish_command(Verb::Rcpt, &reply::rcpt_ok(), true, now);
            }
            Resume::Data => self.start_data(now),
            Resume::EndOfData { verb, commit } => {
                self.state = State::Pending(Pending::Commit(verb));
                self.out.push_back(Output::Ask(Ask::Commit(*commit)));
            }
        }
    }

    /// A check refused: say so; at connect, close.
    fn refuse(&mut self, resume: Resume, r: &Reply, now: Instant) {
        let (verb, sender, recipient) = match resume {
            Resume::Connect => {
                self.logs.push_back(Event::Rejected {
                    stage: self.stage,
                    reply: r.to_string(),
                    sender: None,
                    recipient: None,
                    helo: None,
                });
                self.send(r);
                self.close();
                return;
            }
            Resume::Helo { verb, .. } => (verb, None, None),
            Resume::Mail(tx) => (Verb::Mail, Some(tx.envelope.sender), None),
            Resume::Rcpt(rcpt) => (Verb::Rcpt, None, Some(rcpt.address)),
            Resume::Data => (Verb::Data, None, None),
            Resume::EndOfData { verb, commit } => (verb, Some(commit.envelope.sender), None),
        };
        let sender = sender.or_else(|| self.tx.as_ref().map(|t| t.envelope.sender.clone()));
        self.logs.push_back(Event::Rejected {
            stage: self.stage,
            reply: r.to_string(),
            sender,
            recipient,
            helo: self.helo.clone(),
        });
        // A temporary refusal is the checker's trouble, not the client's.
        self.finish_command(verb, r, r.code >= 500, now);
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
        matches!(self.state, State::Closed)
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
        if r.is_error() && counts_error && self.count_error() {
            return;
        }
        self.maybe_shutdown();
    }

    /// Counts a client error; at the limit, `421` and close (true).
    fn count_error(&mut self) -> bool {
        self.errors += 1;
        if self.errors < self.config.limits.max_errors {
            return false;
        }
        self.logs
            .push_back(Event::TooManyErrors { stage: self.stage });
        let r = reply::too_many_errors(&self.config.hostname);
        self.send(&r);
        self.close();
        true
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
        if self.shutdown_pending && self.tx.is_none() && matches!(self.state, State::Command) {
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
                            self.improper_pipelining(verb);
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

    /// Input followed a command that must end a pipelined group: logged
    /// once per session (as Postfix does: one line, not one per command),
    /// and counted as a client error each time.
    fn improper_pipelining(&mut self, verb: Verb) {
        if !std::mem::replace(&mut self.pipelining_logged, true) {
            self.logs.push_back(Event::ImproperPipelining {
                after: verb.row().name,
            });
        }
        self.count_error();
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
        let name = args.to_string();
        self.ask_check(Stage::Helo, Resume::Helo { verb, name }, None, false, now);
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

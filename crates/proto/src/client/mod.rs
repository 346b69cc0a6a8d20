//! The SMTP client session: a sans-IO state machine for one outbound
//! delivery, the mirror of [`crate::server::Session`]. Server replies and
//! the time come in ([`Session::handle_input`], [`Session::handle_timeout`],
//! [`Session::handle_disconnect`]); commands, the message content, the
//! per-recipient outcomes and the order to close come out
//! ([`Session::poll_output`], [`Session::next_content_chunk`]). The driver
//! (sluice-smtp) owns the socket and the clock.
//!
//! Decisions:
//! - EHLO first; a 5xx to EHLO falls back to HELO (no extensions then).
//! - With PIPELINING offered, MAIL, every RCPT and DATA go out in one write
//!   (RFC 2920 3.1) and replies are matched in order; without it, one
//!   command at a time. Replies may arrive in any split.
//! - SIZE=n on MAIL when SIZE is offered. A message larger than the
//!   server's advertised limit is not sent: every recipient is bounced
//!   `5.3.4`, since the server has said in advance that it will refuse it
//!   for good (Postfix does the same).
//! - BODY=8BITMIME when the envelope declares 8-bit (or binary) content and
//!   8BITMIME is offered. When it is not offered the message is sent anyway
//!   without BODY=, as Postfix does by default: most such servers accept it,
//!   and converting to 7 bit is not done here.
//! - SMTPUTF8 needed but not offered: every recipient bounced `5.6.7`
//!   (RFC 6531 3.2 forbids downgrading the addresses silently).
//! - NOTIFY=, ORCPT=, RET= and ENVID= are passed on only when DSN is offered.
//! - Outcomes: a recipient's RCPT reply decides it unless it is 2xx; for
//!   accepted recipients the reply after the content decides (2xx
//!   delivered, 4xx deferred, 5xx bounced). A 4xx/5xx to MAIL or DATA
//!   applies to every recipient still open. Any reply class other than the
//!   expected one (e.g. 2xx to DATA) counts as temporary.
//! - Greeting or HELO/EHLO refused (4xx or 5xx): every recipient deferred
//!   with a class-4 status: that is about this connection, not the message,
//!   and the next hop can be retried (trying another MX comes later).
//! - A timeout, a lost connection or a malformed reply: every recipient not
//!   yet final is deferred (`4.4.2`, `4.4.2`, `4.5.0`); a timeout after the
//!   content went out says the message may be delivered twice.
//! - Enhanced status codes: the server's when the first word of its reply
//!   is one of the same class, else derived from the class (`2.0.0`,
//!   `4.0.0`, `5.0.0`).
//! - QUIT at the end, except after `421` (the server is closing), a
//!   timeout, a lost connection or a protocol error.
//! - STARTTLS (RFC 3207), when [`Params::tls`] asks for it: after the EHLO
//!   reply offers it, `STARTTLS` goes out alone; on `220` the session emits
//!   [`Output::StartTls`] and drops every byte it already holds or is
//!   given before [`Session::handle_tls_ready`] (plain text sent after the
//!   `220` is an injection attack). Then EHLO again, and the extensions of
//!   the new reply replace the old ones. [`Tls::Opportunistic`]: without
//!   STARTTLS offered, or after a refusal of it, the session goes on in
//!   plain text. [`Tls::Required`]: not offered or refused defers every
//!   recipient `4.7.4` (RFC 3463: security features not supported) and
//!   QUITs. What the certificate must prove is the driver's business;
//!   a failed handshake is [`Session::handle_tls_failed`].
//! - LMTP (RFC 2033) with [`Protocol::Lmtp`]: LHLO instead of EHLO, no
//!   HELO fallback (a refused LHLO defers like a refused greeting), and
//!   after the content one reply per accepted recipient, in RCPT order,
//!   each deciding its own recipient.
//! - Connection reuse with [`Params::keep_open`]: once every recipient is
//!   final the session goes idle instead of sending QUIT
//!   ([`Session::is_idle`]). [`Session::next_message`] then sends `RSET`
//!   and, on `250`, a new transaction on the same connection (extensions
//!   and TLS are kept); [`Session::quit`] ends it. If the RSET fails (no
//!   `2xx`, timeout, lost connection) the session closes *without* a
//!   [`Output::Done`] for that message and [`Session::is_reset_failed`]
//!   says so: the driver delivers it again on a new connection, since
//!   nothing of it was sent.
//!
//! The tree: [`params`] (what a delivery is given), [`reply`] (reading
//! server replies), [`extensions`] (the EHLO keywords), [`transaction`]
//! (MAIL and RCPT), [`outcome`] (each recipient's fate); AUTH comes as a
//! module of its own beside them.
//!
//! # Must never
//! Report a recipient delivered without a 2xx reply to the end of the
//! content; report a recipient twice or not at all ([`Output::Done`] comes
//! exactly once per message, with one outcome per recipient, except after
//! a failed RSET as said above, when nothing of the message was sent);
//! read a byte of plain text that arrived after the `220` to STARTTLS;
//! put an unstuffed line
//! starting with `.` on the wire; read a clock or touch a socket.
//!
//! # Security
//! Server replies are hostile: lines are cut at [`MAX_REPLY_LINE`] bytes
//! and replies at [`MAX_REPLY_LINES`] kept lines, so memory is bounded.
//!
//! # Errors
//! Server errors become outcomes; nothing here panics on any input.

mod extensions;
mod outcome;
mod params;
mod reply;
mod transaction;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub use extensions::Extensions;
pub use outcome::{RcptOutcome, Status};
pub use params::{Params, Protocol, Timeouts, Tls};
pub use reply::{MAX_REPLY_LINE, MAX_REPLY_LINES};

use crate::data::Stuffer;
use crate::envelope::Envelope;
use crate::reply::{Enhanced, Reply};
use outcome::Verdict;
use reply::{make_reply, parse_line, LineReader, Partial};

/// The content is stuffed in chunks of at most this many bytes.
pub const CONTENT_CHUNK: usize = 64 * 1024;

/// What the session produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Bytes to write to the server.
    Send(Vec<u8>),
    /// Write the message now: call [`Session::next_content_chunk`] and write
    /// each chunk until it returns true.
    Content,
    /// Every recipient is final: one outcome per recipient, in envelope
    /// order. Comes exactly once; the session may still send QUIT after.
    Done(Vec<RcptOutcome>),
    /// Write what was sent so far, then close the connection.
    Close,
    /// Do the TLS handshake on the connection now, then call
    /// [`Session::handle_tls_ready`] or [`Session::handle_tls_failed`].
    /// Bytes read before the handshake must not be given to the session.
    StartTls,
}

/// A reply the session waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Greeting,
    Ehlo,
    Helo,
    StartTls,
    Rset,
    Mail,
    Rcpt(usize),
    Data,
    /// After the content.
    DataDone,
    /// LMTP: after the content, for this recipient.
    LmtpDone(usize),
    /// After an empty content sent only because the server said 354 with
    /// no recipient accepted; its reply decides nothing.
    Discarded,
    Quit,
}

impl Expect {
    /// Postfix's "while ..." wording, for timeouts and lost connections.
    fn stage(self) -> &'static str {
        match self {
            Expect::Greeting => "receiving the initial server greeting",
            Expect::Ehlo => "performing the EHLO handshake",
            Expect::Helo => "performing the HELO handshake",
            Expect::StartTls => "sending STARTTLS",
            Expect::Rset => "sending RSET",
            Expect::Mail => "sending MAIL FROM",
            Expect::Rcpt(_) => "sending RCPT TO",
            Expect::Data => "sending DATA command",
            Expect::DataDone | Expect::LmtpDone(_) | Expect::Discarded => "sending end of data",
            Expect::Quit => "sending QUIT",
        }
    }

    fn timeout(self, t: &Timeouts) -> Duration {
        match self {
            Expect::Greeting => t.greeting,
            Expect::Ehlo | Expect::Helo | Expect::StartTls => t.helo,
            Expect::Mail | Expect::Rset => t.mail,
            Expect::Rcpt(_) => t.rcpt,
            Expect::Data => t.data_init,
            Expect::DataDone | Expect::LmtpDone(_) | Expect::Discarded => t.data_done,
            Expect::Quit => t.quit,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Waiting for the replies in `expect`.
    Replies,
    /// The driver is writing the content.
    Content(Stuffer),
    /// The driver is doing the TLS handshake.
    Handshake,
    /// Reuse: the message is done, the connection waits for the next.
    Idle,
    Closed,
}

fn verdict(expect: Expect, code: u16) -> Verdict {
    let wanted = if expect == Expect::Data { 3 } else { 2 };
    match code / 100 {
        c if c == wanted => Verdict::Ok,
        5 => Verdict::Perm,
        _ => Verdict::Temp,
    }
}

/// One outbound SMTP session delivering one message.
#[derive(Debug)]
pub struct Session {
    params: Params,
    state: State,
    reader: LineReader,
    partial: Partial,
    /// Replies awaited, in order.
    expect: VecDeque<Expect>,
    deadline: Instant,
    out: VecDeque<Output>,
    greeted: bool,
    extensions: Option<Extensions>,
    pipelining: bool,
    /// The RCPT was accepted (2xx), the content decides.
    accepted: Vec<bool>,
    outcomes: Vec<Option<RcptOutcome>>,
    done_sent: bool,
    quit_sent: bool,
    /// The content has gone out (for the "sent more than once" warning).
    content_sent: bool,
    /// The handshake after STARTTLS succeeded.
    tls_active: bool,
    /// The RSET before a reused session's message failed.
    reset_failed: bool,
    /// The connection cannot carry mail (greeting, EHLO or required TLS
    /// refused): QUIT rather than idle.
    broken: bool,
}

impl Session {
    /// A new session, right after the TCP connection is up: waits for the
    /// greeting.
    pub fn new(params: Params, now: Instant) -> Self {
        let n = params.envelope.recipients.len();
        let deadline = now + params.timeouts.greeting;
        let mut s = Session {
            params,
            state: State::Replies,
            reader: LineReader::default(),
            partial: Partial::default(),
            expect: VecDeque::from([Expect::Greeting]),
            deadline,
            out: VecDeque::new(),
            greeted: false,
            extensions: None,
            pipelining: false,
            accepted: vec![false; n],
            outcomes: vec![None; n],
            done_sent: false,
            quit_sent: false,
            content_sent: false,
            tls_active: false,
            reset_failed: false,
            broken: false,
        };
        if n == 0 {
            // Nothing to deliver: say goodbye at the first chance.
            s.maybe_done();
        }
        s
    }

    /// Bytes from the server, in any split.
    /// During the TLS handshake (and once closed) input is dropped: see
    /// [`Output::StartTls`].
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        let mut rest = bytes;
        while !rest.is_empty() && !matches!(self.state, State::Closed | State::Handshake) {
            let mut line_seen = None;
            let used = self.reader.feed(rest, |line| {
                line_seen = Some(line.to_vec());
                false
            });
            rest = &rest[used..];
            if let Some(line) = line_seen {
                self.handle_line(&line, now);
            }
        }
    }

    /// The time came (at or after [`Session::poll_timeout`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.state, State::Closed | State::Handshake | State::Idle)
            || now < self.deadline
        {
            return;
        }
        if self.in_reset() {
            return self.reset_fail();
        }
        let stage = self.stage();
        let warn = if self.content_sent && self.expect.front() == Some(&Expect::DataDone) {
            " -- message may be sent more than once"
        } else {
            ""
        };
        let text = format!("conversation timed out while {stage}{warn}");
        self.fail_open(Enhanced::new(4, 4, 2), &text);
        self.close();
    }

    /// The connection broke or the server closed it (EOF, reset, write
    /// error).
    pub fn handle_disconnect(&mut self, _now: Instant) {
        if self.state == State::Closed {
            return;
        }
        if self.in_reset() {
            return self.reset_fail();
        }
        let stage = self.stage();
        let text = format!("lost connection while {stage}");
        self.fail_open(Enhanced::new(4, 4, 2), &text);
        self.close();
    }

    /// The next output, in order.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When to call [`Session::handle_timeout`]; `None` once closed.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Closed | State::Handshake | State::Idle => None,
            _ => Some(self.deadline),
        }
    }

    /// After [`Output::Content`]: appends the next stuffed piece of
    /// `content` (the whole message, the same slice on every call) to
    /// `out`; returns true when the message and its terminator are all out.
    /// Each call restarts the data-block timer; the last one starts the
    /// wait for the final reply. Outside the content phase it does nothing
    /// and returns true.
    pub fn next_content_chunk(&mut self, content: &[u8], out: &mut Vec<u8>, now: Instant) -> bool {
        let State::Content(stuffer) = &mut self.state else {
            return true;
        };
        let finished = stuffer.next_chunk(content, CONTENT_CHUNK, out);
        if finished {
            self.state = State::Replies;
            self.content_sent = true;
            if self.params.protocol == Protocol::Lmtp {
                for i in self.open_accepted() {
                    self.expect.push_back(Expect::LmtpDone(i));
                }
            } else {
                self.expect.push_back(Expect::DataDone);
            }
            self.deadline = now + Expect::DataDone.timeout(&self.params.timeouts);
        } else {
            self.deadline = now + self.params.timeouts.data_block;
        }
        finished
    }

    /// True once the server has sent a positive greeting: the next hop was
    /// reached.
    pub fn is_greeted(&self) -> bool {
        self.greeted
    }

    /// The extensions of the EHLO reply, once received (`None` after a HELO
    /// fallback or before).
    pub fn extensions(&self) -> Option<&Extensions> {
        self.extensions.as_ref()
    }

    /// True once the session has decided to close.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// True when the message is done and the connection waits for
    /// [`Session::next_message`] or [`Session::quit`] (only with
    /// [`Params::keep_open`]).
    pub fn is_idle(&self) -> bool {
        self.state == State::Idle
    }

    /// True when the RSET before [`Session::next_message`]'s message
    /// failed: the session closed without outcomes for it.
    pub fn is_reset_failed(&self) -> bool {
        self.reset_failed
    }

    /// True once the TLS handshake has succeeded.
    pub fn is_tls(&self) -> bool {
        self.tls_active
    }

    /// After [`Output::StartTls`]: the handshake succeeded; EHLO (LHLO)
    /// again, as RFC 3207 4.2 requires.
    pub fn handle_tls_ready(&mut self, now: Instant) {
        if self.state != State::Handshake {
            return;
        }
        self.state = State::Replies;
        self.tls_active = true;
        self.extensions = None;
        self.pipelining = false;
        let cmd = self.hello_command();
        self.send_command(cmd, Expect::Ehlo, now);
    }

    /// After [`Output::StartTls`]: the handshake failed (or the
    /// certificate did not satisfy the driver): every open recipient is
    /// deferred with `dsn` (class 4) and `text`, and the session closes
    /// without QUIT: the connection is in an unknown state.
    pub fn handle_tls_failed(&mut self, dsn: Enhanced, text: &str, _now: Instant) {
        if self.state != State::Handshake {
            return;
        }
        let dsn = Enhanced::new(4, dsn.subject, dsn.detail);
        self.fail_open(dsn, text);
        self.close();
    }

    /// Reuse: sends RSET and then delivers `envelope` (with content of
    /// `message_size` bytes) on this connection. Returns false, doing
    /// nothing, unless the session [`Session::is_idle`].
    pub fn next_message(&mut self, envelope: Envelope, message_size: u64, now: Instant) -> bool {
        if self.state != State::Idle {
            return false;
        }
        let n = envelope.recipients.len();
        self.params.envelope = envelope;
        self.params.message_size = message_size;
        self.accepted = vec![false; n];
        self.outcomes = vec![None; n];
        self.done_sent = false;
        self.content_sent = false;
        self.state = State::Replies;
        if n == 0 {
            self.maybe_done();
        }
        self.send_command("RSET\r\n".into(), Expect::Rset, now);
        true
    }

    /// Ends an idle session: QUIT, then [`Output::Close`] once answered.
    pub fn quit(&mut self, now: Instant) {
        if self.state != State::Idle {
            return;
        }
        self.state = State::Replies;
        self.quit_sent = true;
        self.send_command("QUIT\r\n".into(), Expect::Quit, now);
    }

    fn hello_command(&self) -> String {
        let verb = match self.params.protocol {
            Protocol::Smtp => "EHLO",
            Protocol::Lmtp => "LHLO",
        };
        format!("{verb} {}\r\n", self.params.helo_name)
    }

    /// Postfix's "while ..." wording for the step in progress.
    fn stage(&self) -> &'static str {
        match (&self.state, self.expect.front()) {
            (State::Content(_), _) => "sending message body",
            (_, Some(e)) => e.stage(),
            (_, None) => "sending commands",
        }
    }

    fn in_reset(&self) -> bool {
        self.expect.front() == Some(&Expect::Rset)
    }

    /// The RSET of a reused session failed: close with no outcome.
    fn reset_fail(&mut self) {
        self.reset_failed = true;
        self.state = State::Closed;
        self.expect.clear();
        self.out.push_back(Output::Close);
    }

    fn handle_line(&mut self, line: &[u8], now: Instant) {
        let Some((code, last, text)) = parse_line(line) else {
            return self.protocol_error(line);
        };
        match self.partial.code {
            Some(c) if c != code => return self.protocol_error(line),
            _ => self.partial.code = Some(code),
        }
        if self.partial.lines.len() < MAX_REPLY_LINES {
            self.partial.lines.push(text);
        }
        if !last {
            return;
        }
        let lines = std::mem::take(&mut self.partial.lines);
        self.partial.code = None;
        let reply = make_reply(code, lines);
        let Some(expect) = self.expect.pop_front() else {
            // A reply to nothing: the server is confused, or it announces
            // that it is going away (421).
            return self.unexpected(reply);
        };
        if self.state != State::Replies {
            return self.unexpected(reply);
        }
        self.handle_reply(expect, reply, now);
        if let Some(next) = self.expect.front() {
            self.deadline = now + next.timeout(&self.params.timeouts);
        }
        self.after_reply(now);
    }

    fn handle_reply(&mut self, expect: Expect, reply: Reply, now: Instant) {
        let v = verdict(expect, reply.code);
        match expect {
            Expect::Greeting => {
                if v == Verdict::Ok {
                    self.greeted = true;
                    let cmd = self.hello_command();
                    self.send_command(cmd, Expect::Ehlo, now);
                } else {
                    self.fail_session(&reply);
                }
            }
            Expect::Ehlo => match v {
                Verdict::Ok => {
                    let ext = Extensions::parse(&reply.lines);
                    self.pipelining = ext.pipelining;
                    let starttls = ext.starttls;
                    self.extensions = Some(ext);
                    match (self.params.tls, self.tls_active, starttls) {
                        (Tls::Off, _, _) | (_, true, _) | (Tls::Opportunistic, false, false) => {
                            self.start_transaction(now);
                        }
                        (_, false, true) => {
                            self.send_command("STARTTLS\r\n".into(), Expect::StartTls, now);
                        }
                        (Tls::Required, false, false) => {
                            let text = "TLS is required, but was not offered by host";
                            self.broken = true;
                            self.fail_open_local(Enhanced::new(4, 7, 4), 451, text);
                        }
                    }
                }
                Verdict::Perm if self.params.protocol == Protocol::Smtp => {
                    let cmd = format!("HELO {}\r\n", self.params.helo_name);
                    self.send_command(cmd, Expect::Helo, now);
                }
                _ => self.fail_session(&reply),
            },
            Expect::Helo => {
                if v == Verdict::Ok {
                    self.start_transaction(now);
                } else {
                    self.fail_session(&reply);
                }
            }
            Expect::StartTls => {
                if v == Verdict::Ok {
                    // RFC 3207 and CVE-2011-0411: whatever came with or
                    // after the 220 is plain text an attacker could have
                    // injected; it is dropped, never read as a reply.
                    self.state = State::Handshake;
                    self.reader = LineReader::default();
                    self.partial = Partial::default();
                    self.out.push_back(Output::StartTls);
                    return;
                } else if reply.code == 421 {
                    // Handled below: the server is going away.
                } else if self.params.tls == Tls::Required {
                    let text = format!("TLS is required, but host refused to start TLS: {reply}");
                    self.broken = true;
                    self.fail_open_local(Enhanced::new(4, 7, 4), 451, &text);
                } else {
                    self.start_transaction(now);
                }
            }
            Expect::Rset => {
                if v == Verdict::Ok {
                    self.start_transaction(now);
                } else {
                    return self.reset_fail();
                }
            }
            Expect::LmtpDone(i) => self.finish(i, &reply, v, true),
            Expect::Mail => {
                if v != Verdict::Ok {
                    self.fail_open_with(&reply, v);
                } else if !self.pipelining {
                    self.send_rcpt(0, now);
                }
            }
            Expect::Rcpt(i) => {
                if self.outcomes.get(i).is_some_and(Option::is_none) {
                    if v == Verdict::Ok {
                        if let Some(a) = self.accepted.get_mut(i) {
                            *a = true;
                        }
                    } else {
                        self.finish(i, &reply, v, true);
                    }
                }
                if !self.pipelining {
                    if i + 1 < self.outcomes.len() {
                        self.send_rcpt(i + 1, now);
                    } else if self.accepted.iter().any(|&a| a) {
                        self.send_command("DATA\r\n".into(), Expect::Data, now);
                    }
                }
            }
            Expect::Data => {
                let open = self.open_accepted();
                if v == Verdict::Ok {
                    if open.is_empty() && self.params.protocol == Protocol::Lmtp {
                        // LMTP answers per accepted recipient: none here.
                        self.out.push_back(Output::Send(b".\r\n".to_vec()));
                    } else if open.is_empty() {
                        // 354 with nobody accepted: end an empty message
                        // at once; nothing can be delivered by it.
                        self.send_command(".\r\n".into(), Expect::Discarded, now);
                    } else {
                        self.state = State::Content(Stuffer::new());
                        self.deadline = now + self.params.timeouts.data_block;
                        self.out.push_back(Output::Content);
                    }
                } else {
                    for i in open {
                        self.finish(i, &reply, v, true);
                    }
                }
            }
            Expect::DataDone => {
                for i in self.open_accepted() {
                    self.finish(i, &reply, v, true);
                }
            }
            Expect::Discarded => {}
            Expect::Quit => {}
        }
        if reply.code == 421 && expect != Expect::Quit {
            // The server is closing the connection (RFC 5321 3.8).
            self.fail_open_with(&reply, Verdict::Temp);
            self.close();
        }
    }

    /// After each reply: report when everything is final, then QUIT, then
    /// close once QUIT is answered.
    fn after_reply(&mut self, now: Instant) {
        if self.state != State::Replies {
            return;
        }
        self.maybe_done();
        if !self.expect.is_empty() {
            return;
        }
        if self.quit_sent {
            self.close();
        } else if self.done_sent && self.params.keep_open && !self.broken {
            self.state = State::Idle;
        } else if self.done_sent {
            self.quit_sent = true;
            self.send_command("QUIT\r\n".into(), Expect::Quit, now);
        }
    }

    fn maybe_done(&mut self) {
        if self.done_sent || self.outcomes.iter().any(Option::is_none) {
            return;
        }
        self.done_sent = true;
        let outcomes = self.outcomes.iter().flatten().cloned().collect();
        self.out.push_back(Output::Done(outcomes));
    }

    fn send_command(&mut self, cmd: String, expect: Expect, now: Instant) {
        if self.expect.is_empty() {
            self.deadline = now + expect.timeout(&self.params.timeouts);
        }
        self.expect.push_back(expect);
        self.out.push_back(Output::Send(cmd.into_bytes()));
    }

    fn protocol_error(&mut self, line: &[u8]) {
        if self.in_reset() {
            return self.reset_fail();
        }
        let shown: String = String::from_utf8_lossy(&line[..line.len().min(100)]).into_owned();
        let text = format!("malformed reply from server: {shown}");
        self.fail_open(Enhanced::new(4, 5, 0), &text);
        self.close();
    }

    fn unexpected(&mut self, reply: Reply) {
        if self.in_reset() {
            return self.reset_fail();
        }
        if reply.code == 421 {
            self.fail_open_with(&reply, Verdict::Temp);
        } else {
            let text = format!("unexpected reply from server: {reply}");
            self.fail_open(Enhanced::new(4, 5, 0), &text);
        }
        self.close();
    }

    fn close(&mut self) {
        if self.state == State::Closed {
            return;
        }
        self.maybe_done();
        self.state = State::Closed;
        self.expect.clear();
        self.out.push_back(Output::Close);
    }
}

#[cfg(test)]
mod tests;

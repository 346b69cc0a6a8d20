//! The mail transaction verbs of the server session: MAIL, RCPT, DATA,
//! BDAT (and the end of the message they lead to), and ETRN, which is
//! refused inside a transaction. MAIL, RCPT, DATA and the end of the
//! message each ask the driver's [`Stage`] check once the grammar and the
//! relay rules passed.
//!
//! # Must never
//! Accept a recipient outside the local and relay domains from an
//! untrusted peer, or ask for a commit of content that failed a check.
//!
//! # Errors
//! Every refusal is a reply (and, for policy refusals, a log event).

use std::time::Instant;

use super::command::{self, Verb};
use super::content::{Content, Framing};
use super::{
    strip_keyword, Ask, BareNewline, Commit, Event, Output, Pending, Resume, Session, Stage, State,
    Transaction,
};
use crate::address::{self, Domain, Path};
use crate::domain::{self, is_in_list};
use crate::envelope::{BodyType, Client, Envelope, Recipient, Ret};
use crate::reply;

/// ETRN requests a session may make; more are answered `458 4.7.1`.
pub(super) const ETRN_PER_SESSION: u32 = 5;

impl Session {
    pub(super) fn mail(&mut self, args: &str, now: Instant) {
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
        let tx = Transaction {
            envelope: Envelope {
                sender,
                recipients: Vec::new(),
                body: params.body.unwrap_or(BodyType::SevenBit),
                smtputf8: params.smtputf8,
                ret: match params.ret {
                    Some(Ret::Full) if !self.may_ask_success() => Some(Ret::Hdrs),
                    ret => ret,
                },
                envid: params.envid,
                declared_size: params.size,
            },
            content: None,
            chunked: false,
            failed: None,
        };
        self.ask_check(Stage::Mail, Resume::Mail(Box::new(tx)), None, false, now);
    }

    pub(super) fn rcpt(&mut self, args: &str, now: Instant) {
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
        let (address, relay_ok, local) = match &path {
            Path::Mailbox { mailbox, .. } => {
                let allowed = self.peer.trusted
                    || (!mailbox.has_routing_local_part()
                        && match &mailbox.domain {
                            Domain::Literal(_) => false,
                            Domain::Name(d) => {
                                is_in_list(&self.config.local_domains, d)
                                    || is_in_list(&self.config.relay_domains, d)
                            }
                        });
                if !mailbox.is_ascii() && !smtputf8 {
                    let r = reply::utf8_not_declared();
                    return self.reject(v, &r, Some(mailbox.address()), now);
                }
                if let Domain::Name(d) = &mailbox.domain {
                    // Routing and DNS use the A-labels: a name without
                    // them could never be delivered.
                    if domain::to_ascii(d).is_err() {
                        let why = "international domain name without an ASCII form (IDNA)";
                        let r = reply::bad_recipient(why);
                        return self.reject(v, &r, Some(mailbox.address()), now);
                    }
                }
                let local = matches!(&mailbox.domain,
                    Domain::Name(d) if is_in_list(&self.config.local_domains, d));
                (mailbox.address(), allowed, local)
            }
            _ => ("postmaster".to_string(), true, true),
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
        let mut notify = params.notify;
        if let Some(n) = notify.as_mut().filter(|_| !self.may_ask_success()) {
            n.success = false;
        }
        let recipient = Recipient {
            address,
            notify,
            orcpt: params.orcpt,
        };
        let address = recipient.address.clone();
        self.ask_check(
            Stage::Rcpt,
            Resume::Rcpt(recipient),
            Some(address),
            local,
            now,
        );
    }

    pub(super) fn data(&mut self, args: &str, now: Instant) {
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
        self.ask_check(Stage::Data, Resume::Data, None, false, now);
    }

    /// DATA passed its check: `354`, then content.
    pub(super) fn start_data(&mut self, now: Instant) {
        let v = Verb::Data;
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

    pub(super) fn end_of_data(&mut self, now: Instant) {
        self.state = State::Command;
        self.stage = "END-OF-MESSAGE";
        self.end_of_message(Verb::Data, now);
    }

    /// The whole message is in (DATA end or BDAT LAST): refuse it, or ask
    /// for the commit.
    pub(super) fn end_of_message(&mut self, verb: Verb, now: Instant) {
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
                let commit = Box::new(Commit {
                    envelope: tx.envelope,
                    client,
                    content: c.into_content(),
                });
                self.ask_check(
                    Stage::EndOfData,
                    Resume::EndOfData { verb, commit },
                    None,
                    false,
                    now,
                );
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

    pub(super) fn bdat(&mut self, args: &str, now: Instant) {
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

    pub(super) fn end_of_chunk(&mut self, now: Instant) {
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

    /// Whether the peer may have success notices and full returns
    /// (issue 9 defect 12: no backscatter of copies by strangers).
    fn may_ask_success(&self) -> bool {
        self.peer.trusted || self.config.dsn_success_untrusted
    }

    pub(super) fn etrn(&mut self, args: &str, now: Instant) {
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
        if !is_in_list(&self.config.relay_domains, &domain) {
            return self.finish_command(v, &reply::etrn_not_allowed(&domain), true, now);
        }
        // A rare command: a few per session, so that one client cannot
        // keep the queue manager flushing (issue 9 defect 6).
        if self.etrns >= ETRN_PER_SESSION {
            return self.finish_command(v, &reply::etrn_too_many(), true, now);
        }
        self.etrns += 1;
        self.state = State::Pending(Pending::Etrn);
        self.out.push_back(Output::Ask(Ask::Etrn { domain }));
    }
}

//! One mail transaction on the wire: the MAIL and RCPT commands with the
//! ESMTP parameters the server offered, and the order they go out in
//! (pipelined in one write, or one at a time).
//!
//! # Must never
//! Write an envelope that fails [`Envelope::check`] (a control character in
//! an address would inject commands), or send an ESMTP parameter the server did not offer (SMTPUTF8 aside: the
//! session refuses before MAIL when it is needed and not offered).

use std::fmt::Write as _;
use std::time::Instant;

use super::{Expect, Extensions, Output, Session};
use crate::address::encode_xtext;
use crate::envelope::{BodyType, Envelope, EnvelopeError, Recipient, Ret};
use crate::reply::Enhanced;

impl Session {
    pub(super) fn start_transaction(&mut self, now: Instant) {
        if self.outcomes.iter().all(Option::is_some) {
            return; // no recipient: straight to QUIT
        }
        let ext = self.extensions.clone().unwrap_or_default();
        let env = &self.params.envelope;
        // A queue file is input too (written by hand, or by an older
        // version): nothing that could end a command line or start
        // another goes onto the wire.
        if let Err(e) = env.check() {
            let text = format!("refused to send a bad envelope: {e}");
            let dsn = match e {
                EnvelopeError::Sender(_) => Enhanced::new(5, 1, 7),
                _ => Enhanced::new(5, 1, 3),
            };
            return self.fail_open_local(dsn, 553, &text);
        }
        if env.smtputf8 && !ext.smtputf8 {
            let text = "SMTPUTF8 is required, but was not offered by the host";
            return self.fail_open_local(Enhanced::new(5, 6, 7), 550, text);
        }
        if let Some(limit) = ext.size.filter(|&n| n > 0) {
            if self.params.message_size > limit {
                let text = format!(
                    "message size {} exceeds size limit {} of server",
                    self.params.message_size, limit
                );
                return self.fail_open_local(Enhanced::new(5, 3, 4), 552, &text);
            }
        }
        let mail = mail_command(env, &ext, self.params.message_size);
        if self.pipelining {
            // RFC 2920 3.1: MAIL, RCPT... and DATA (which ends the group)
            // in one write.
            let mut batch = mail.into_bytes();
            self.deadline = now + self.params.timeouts.mail;
            self.expect.push_back(Expect::Mail);
            for i in 0..self.outcomes.len() {
                batch.extend_from_slice(self.rcpt_command(i).as_bytes());
                self.expect.push_back(Expect::Rcpt(i));
            }
            batch.extend_from_slice(b"DATA\r\n");
            self.expect.push_back(Expect::Data);
            self.out.push_back(Output::Send(batch));
        } else {
            self.send_command(mail, Expect::Mail, now);
        }
    }

    pub(super) fn send_rcpt(&mut self, i: usize, now: Instant) {
        let cmd = self.rcpt_command(i);
        self.send_command(cmd, Expect::Rcpt(i), now);
    }

    fn rcpt_command(&self, i: usize) -> String {
        let dsn = self.extensions.as_ref().is_some_and(|e| e.dsn);
        match self.params.envelope.recipients.get(i) {
            Some(r) => rcpt_command(r, dsn),
            None => String::new(),
        }
    }
}

/// `MAIL FROM:<sender>` with SIZE, BODY, SMTPUTF8, RET and ENVID as the
/// server's extensions allow, CRLF included.
fn mail_command(env: &Envelope, ext: &Extensions, message_size: u64) -> String {
    let mut mail = format!("MAIL FROM:<{}>", env.sender);
    if ext.size.is_some() {
        let _ = write!(mail, " SIZE={message_size}");
    }
    if env.body != BodyType::SevenBit && ext.eightbitmime {
        mail.push_str(" BODY=8BITMIME");
    }
    if env.smtputf8 {
        mail.push_str(" SMTPUTF8");
    }
    if ext.dsn {
        match env.ret {
            Some(Ret::Full) => mail.push_str(" RET=FULL"),
            Some(Ret::Hdrs) => mail.push_str(" RET=HDRS"),
            None => {}
        }
        if let Some(envid) = &env.envid {
            let _ = write!(mail, " ENVID={}", encode_xtext(envid));
        }
    }
    mail.push_str("\r\n");
    mail
}

/// `RCPT TO:<address>` with NOTIFY and ORCPT when the server offers DSN,
/// CRLF included.
fn rcpt_command(r: &Recipient, dsn: bool) -> String {
    let mut cmd = format!("RCPT TO:<{}>", r.address);
    if dsn {
        if let Some(n) = r.notify {
            let _ = write!(cmd, " NOTIFY={}", n);
        }
        if let Some(orcpt) = &r.orcpt {
            let _ = write!(cmd, " ORCPT={}", encode_orcpt(orcpt));
        }
    }
    cmd.push_str("\r\n");
    cmd
}

/// ORCPT as stored (`addr-type;address`, decoded) back to its wire form:
/// the type as is, the address in xtext (RFC 3461 4.2).
fn encode_orcpt(orcpt: &str) -> String {
    match orcpt.split_once(';') {
        Some((kind, addr)) => format!("{kind};{}", encode_xtext(addr)),
        None => format!("rfc822;{}", encode_xtext(orcpt)),
    }
}

//! What happens to each recipient: the outcome types and the session's
//! bookkeeping that decides them (delivered, deferred, bounced).

use super::Session;
use crate::reply::{Enhanced, Reply};

/// The final state of one recipient (the log's `status=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The server accepted the message for it.
    Delivered,
    /// Try again later.
    Deferred,
    /// Failed for good.
    Bounced,
}

/// What happened to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptOutcome {
    /// Its position in [`Params::envelope`]'s recipients.
    pub index: usize,
    /// Delivered, deferred or bounced.
    pub status: Status,
    /// The enhanced status code, always of the class of `status`.
    pub dsn: Enhanced,
    /// The reply that decided it. When `remote` is false it was made here
    /// (timeout, lost connection, refusal before sending) and its code is
    /// only the class.
    pub reply: Reply,
    /// The reply came from the server.
    pub remote: bool,
}

impl RcptOutcome {
    /// The reason as the log shows it: the server's reply on one line
    /// (`550 5.1.1 <x@y>: unknown user`), or the local reason's text.
    pub fn text(&self) -> String {
        if self.remote {
            self.reply.to_string()
        } else {
            self.reply.lines.join(" ")
        }
    }
}

/// The reply's enhanced code, else one derived from its class.
fn dsn_of(reply: &Reply) -> Enhanced {
    reply.enhanced.unwrap_or(match reply.code / 100 {
        2 => Enhanced::new(2, 0, 0),
        5 => Enhanced::new(5, 0, 0),
        _ => Enhanced::new(4, 0, 0),
    })
}

/// How a reply answers the command it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Ok,
    Temp,
    Perm,
}

impl Session {
    /// Accepted recipients still waiting for the content's reply.
    pub(super) fn open_accepted(&self) -> Vec<usize> {
        (0..self.outcomes.len())
            .filter(|&i| self.accepted[i] && self.outcomes[i].is_none())
            .collect()
    }

    pub(super) fn finish(&mut self, i: usize, reply: &Reply, v: Verdict, remote: bool) {
        let Some(slot) = self.outcomes.get_mut(i) else {
            return;
        };
        if slot.is_some() {
            return;
        }
        let (status, class) = match v {
            Verdict::Ok => (Status::Delivered, 2),
            Verdict::Temp => (Status::Deferred, 4),
            Verdict::Perm => (Status::Bounced, 5),
        };
        let mut dsn = dsn_of(reply);
        if dsn.class != class {
            dsn = Enhanced::new(class, dsn.subject, dsn.detail);
        }
        *slot = Some(RcptOutcome {
            index: i,
            status,
            dsn,
            reply: reply.clone(),
            remote,
        });
    }

    /// Every open recipient gets this server reply.
    pub(super) fn fail_open_with(&mut self, reply: &Reply, v: Verdict) {
        for i in 0..self.outcomes.len() {
            self.finish(i, reply, v, true);
        }
    }

    /// The greeting or HELO/EHLO was refused: deferred, whatever the class.
    pub(super) fn fail_session(&mut self, reply: &Reply) {
        self.broken = true;
        self.fail_open_with(reply, Verdict::Temp);
    }

    /// Every open recipient gets a local reason.
    pub(super) fn fail_open_local(&mut self, dsn: Enhanced, code: u16, text: &str) {
        let reply = Reply::new(code, Some(dsn), text);
        let v = if dsn.class == 5 {
            Verdict::Perm
        } else {
            Verdict::Temp
        };
        for i in 0..self.outcomes.len() {
            self.finish(i, &reply, v, false);
        }
    }

    /// Timeouts and lost connections: every open recipient deferred.
    pub(super) fn fail_open(&mut self, dsn: Enhanced, text: &str) {
        self.fail_open_local(dsn, 451, text);
    }
}

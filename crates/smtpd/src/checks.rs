//! The checks smtpd runs at each SMTP stage, in order, and how their
//! answers fold into the one answer the session gets (Postfix's
//! smtpd_check): each check says "no opinion" or "reject with this
//! reply", and the first that has an opinion wins; no opinion at all is
//! accept. This file is the one place that lists the checks of a stage.
//!
//! Plug points: the per-client counter of `sluice-anvil` goes first at
//! [`Stage::Connect`]; DNSBL, restrictions, policy and milters go in the
//! same lists, each a [`Kind`] with its answerer.
//!
//! Pure: no IO; the loop runs each [`Kind`] through its answerer and feeds
//! the opinion back.
//!
//! # Must never
//! Accept what an earlier check of the same stage refused, or ask a check
//! after one had an opinion.
//!
//! # Errors
//! None here: an answerer that fails gives its own opinion (a temporary
//! refusal), decided where its IO is.

use sluice_mailbox::Lookup;
use sluice_proto::reply::{self, Reply};
use sluice_proto::server::{Check, CheckAnswer, Stage};

/// What one check says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Opinion {
    /// Ask the next check.
    NoOpinion,
    /// Refuse with this reply.
    Reject(Reply),
}

/// A check, named by what answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Is the client within its per-client connection limits, counted
    /// across every smtpd process by `sluice-anvil`? Answered by `anvil`.
    ClientLimit,
    /// Does a recipient in a local domain exist (aliases, virtual map,
    /// system users)? Answered off the loop by `recipients`.
    LocalRecipient,
}

/// The checks of `stage`, in the order they are asked.
pub(crate) fn at(stage: Stage) -> &'static [Kind] {
    match stage {
        Stage::Connect => &[Kind::ClientLimit],
        Stage::Rcpt => &[Kind::LocalRecipient],
        Stage::Helo | Stage::Mail | Stage::Data | Stage::EndOfData => &[],
    }
}

/// One check ask being folded.
#[derive(Debug)]
pub(crate) struct Fold {
    check: Check,
    list: &'static [Kind],
    next: usize,
}

/// What the loop does next with a [`Fold`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Run this check and give its opinion to [`Fold::step`].
    Run(Kind),
    /// The answer for the session.
    Done(CheckAnswer),
}

impl Fold {
    pub(crate) fn new(check: Check) -> Fold {
        let list = at(check.stage);
        Fold {
            check,
            list,
            next: 0,
        }
    }

    /// The check being folded.
    pub(crate) fn check(&self) -> &Check {
        &self.check
    }

    /// Takes the opinion of the check last run (`None` to start).
    pub(crate) fn step(&mut self, opinion: Option<Opinion>) -> Step {
        if let Some(Opinion::Reject(r)) = opinion {
            return Step::Done(CheckAnswer::Reject(r));
        }
        match self.list.get(self.next) {
            Some(kind) => {
                self.next += 1;
                Step::Run(*kind)
            }
            None => Step::Done(CheckAnswer::Accept),
        }
    }
}

/// The local-recipient check's opinion of a lookup: known recipients go on
/// to the next check, unknown ones are refused (`550 5.1.1`, the words
/// fail2ban knows), and a lookup that failed or took too long is a
/// temporary refusal.
pub(crate) fn local_recipient(address: &str, lookup: Lookup) -> Opinion {
    match lookup {
        Lookup::Deliverable => Opinion::NoOpinion,
        Lookup::Unknown => Opinion::Reject(reply::unknown_local_recipient(address)),
        Lookup::Unavailable => Opinion::Reject(reply::recipient_lookup_failed(address)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(stage: Stage) -> Check {
        Check {
            stage,
            helo: Some("c.example".into()),
            sender: Some("a@b.example".into()),
            recipient: Some("u@example.org".into()),
            local: true,
        }
    }

    fn refusal() -> Reply {
        reply::unknown_local_recipient("u@example.org")
    }

    #[test]
    fn the_client_limit_is_the_connect_check() {
        let mut fold = Fold::new(check(Stage::Connect));
        assert_eq!(fold.step(None), Step::Run(Kind::ClientLimit));
        assert_eq!(
            fold.step(Some(Opinion::NoOpinion)),
            Step::Done(CheckAnswer::Accept)
        );
    }

    #[test]
    fn a_stage_without_checks_accepts_at_once() {
        for stage in [Stage::Helo, Stage::Mail, Stage::Data] {
            let mut fold = Fold::new(check(stage));
            assert_eq!(fold.step(None), Step::Done(CheckAnswer::Accept));
        }
    }

    #[test]
    fn no_opinion_asks_the_next_and_none_left_is_accept() {
        let mut fold = Fold::new(check(Stage::Rcpt));
        assert_eq!(fold.step(None), Step::Run(Kind::LocalRecipient));
        assert_eq!(
            fold.step(Some(Opinion::NoOpinion)),
            Step::Done(CheckAnswer::Accept)
        );
    }

    #[test]
    fn the_first_opinion_wins() {
        let mut fold = Fold::new(check(Stage::Rcpt));
        assert_eq!(fold.step(None), Step::Run(Kind::LocalRecipient));
        assert_eq!(
            fold.step(Some(Opinion::Reject(refusal()))),
            Step::Done(CheckAnswer::Reject(refusal()))
        );
    }

    #[test]
    fn later_checks_are_not_asked_after_an_opinion() {
        let mut fold = Fold {
            check: check(Stage::Rcpt),
            list: &[
                Kind::LocalRecipient,
                Kind::LocalRecipient,
                Kind::LocalRecipient,
            ],
            next: 0,
        };
        assert_eq!(fold.step(None), Step::Run(Kind::LocalRecipient));
        assert_eq!(
            fold.step(Some(Opinion::NoOpinion)),
            Step::Run(Kind::LocalRecipient)
        );
        assert_eq!(
            fold.step(Some(Opinion::Reject(refusal()))),
            Step::Done(CheckAnswer::Reject(refusal()))
        );
    }

    #[test]
    fn lookups_become_opinions() {
        assert_eq!(
            local_recipient("u@example.org", Lookup::Deliverable),
            Opinion::NoOpinion
        );
        assert_eq!(
            local_recipient("u@example.org", Lookup::Unknown),
            Opinion::Reject(refusal())
        );
        let Opinion::Reject(r) = local_recipient("u@example.org", Lookup::Unavailable) else {
            panic!("a failed lookup refuses");
        };
        assert_eq!(r.code, 451);
    }
}

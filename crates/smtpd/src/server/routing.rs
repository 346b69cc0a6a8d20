//! Where the asks of sessions go and how their answers come back: each ask
//! to its answerer (the checks of a stage, folded as `checks` says; the
//! commit thread; the queue manager), each answer, on time or at its
//! deadline, to the session of its (connection, ask id); an answer for a
//! connection that is gone is dropped by the answerer's asks table.
//!
//! # Must never
//! Wait for an answer: an answerer that cannot answer at once answers
//! later, through the loop's waker or its own socket.

use std::time::Instant;

use mio::Token;
use sluice_proto::server::{Ask, CommitAnswer};

use super::Server;
use crate::checks::{Fold, Kind, Opinion, Step};

impl Server {
    pub(super) fn ask(&mut self, token: Token, ask: Ask) {
        let now = Instant::now();
        match ask {
            Ask::Check(check) => self.fold(token, Fold::new(check), None),
            Ask::Commit(commit) => {
                // The session waits (reads nothing more) until the commit
                // thread answers; see `answered`.
                if !self.committer.submit(token, commit, now) {
                    self.answer_commit(token, CommitAnswer::TempFail);
                }
            }
            Ask::Etrn { domain } => {
                if let Some(c) = self.connections.get_mut(&token) {
                    let answer = self.qmgr.etrn(&domain, c.peer.ip(), now);
                    c.session.handle_etrn(answer, now);
                }
            }
        }
    }

    /// Runs the checks of a fold until one must wait for its answerer or
    /// the fold is done (then the session gets its answer).
    fn fold(&mut self, token: Token, mut fold: Fold, mut opinion: Option<Opinion>) {
        let now = Instant::now();
        loop {
            match fold.step(opinion.take()) {
                Step::Done(answer) => {
                    if let Some(c) = self.connections.get_mut(&token) {
                        c.session.handle_check(answer, now);
                    }
                    return;
                }
                Step::Run(Kind::ClientLimit) => {
                    let ip = self.connections.get(&token).map(|c| c.peer.ip());
                    opinion = self.anvil.check(self.poll.registry(), token, ip, now);
                }
                Step::Run(Kind::LocalRecipient) => {
                    opinion = self.recipients.check(token, fold.check(), now);
                }
            }
            if opinion.is_none() {
                // Its answerer answers later: see `looked_up`.
                if let Some(c) = self.connections.get_mut(&token) {
                    c.fold = Some(fold);
                }
                return;
            }
        }
    }

    /// A check's answerer answered (or its deadline passed): the fold goes
    /// on.
    pub(super) fn looked_up(&mut self, token: Token, opinion: Opinion) {
        let Some(fold) = self.connections.get_mut(&token).and_then(|c| c.fold.take()) else {
            return;
        };
        self.fold(token, fold, Some(opinion));
        self.drive(token);
        // Input that waited behind the check can be read now.
        self.read(token);
    }

    fn answer_commit(&mut self, token: Token, answer: CommitAnswer) {
        if let Some(c) = self.connections.get_mut(&token) {
            c.session.handle_commit(answer, Instant::now());
        }
        self.drive(token);
        self.read(token);
    }

    /// The threads woke the loop: route their answers.
    pub(super) fn answered(&mut self) {
        for finished in self.committer.results() {
            if let CommitAnswer::Queued { queue_id } = &finished.answer {
                self.qmgr.hint(queue_id);
            }
            if let Some(token) = finished.token {
                self.answer_commit(token, finished.answer);
            }
        }
        for (token, opinion) in self.recipients.results(Instant::now()) {
            self.looked_up(token, opinion);
        }
    }

    /// Asks past their deadline get their default answers.
    pub(super) fn expire_asks(&mut self, now: Instant) {
        for (token, answer) in self.committer.asks.expire_answers(now, "commit") {
            self.answer_commit(token, answer);
        }
        for (token, opinion) in self.recipients.asks.expire_answers(now, "recipient lookup") {
            self.looked_up(token, opinion);
        }
        for (token, opinion) in self.anvil.expired(now) {
            self.looked_up(token, opinion);
        }
    }
}

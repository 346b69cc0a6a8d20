//! The table of asks sent to answerers and not yet answered, keyed by
//! (connection, ask id). Each has a deadline and a default answer: when the
//! deadline passes the default is given (a slow or stopped answerer never
//! holds a session forever); an answer that comes after that, or after the
//! connection closed, finds nothing and is dropped.
//!
//! Pure: the loop gives it the time; no IO, no clock reads.
//!
//! # Must never
//! Give one connection an answer meant for another, or give two answers to
//! one ask.
//!
//! # Errors
//! None: an unknown (late) answer is simply not found.

use std::collections::BTreeMap;
use std::time::Instant;

use mio::Token;

/// Which ask of a connection: ids are unique within one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct AskId(u64);

#[derive(Debug)]
struct Entry<T> {
    deadline: Instant,
    default: T,
}

/// Pending asks whose answer is a `T`.
#[derive(Debug)]
pub(crate) struct Asks<T> {
    next: u64,
    pending: BTreeMap<(Token, AskId), Entry<T>>,
}

impl<T> Asks<T> {
    pub(crate) fn new() -> Self {
        Asks {
            next: 0,
            pending: BTreeMap::new(),
        }
    }

    /// Records an ask of `conn`; `default` is its answer if `deadline`
    /// passes first.
    pub(crate) fn open(&mut self, conn: Token, deadline: Instant, default: T) -> AskId {
        self.next += 1;
        let id = AskId(self.next);
        self.pending.insert((conn, id), Entry { deadline, default });
        id
    }

    /// An answer came: true if the ask was still waiting (then it is done),
    /// false if it is late or unknown (drop the answer).
    pub(crate) fn take(&mut self, conn: Token, id: AskId) -> bool {
        self.pending.remove(&(conn, id)).is_some()
    }

    /// The asks whose deadline has passed, with their default answers;
    /// they are done.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<(Token, AskId, T)> {
        let due: Vec<(Token, AskId)> = self
            .pending
            .iter()
            .filter(|(_, e)| e.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        due.into_iter()
            .filter_map(|k| self.pending.remove(&k).map(|e| (k.0, k.1, e.default)))
            .collect()
    }

    /// As [`Asks::expire`], for the loop: logs how many of `what` passed
    /// their deadline.
    pub(crate) fn expire_answers(&mut self, now: Instant, what: &str) -> Vec<(Token, T)> {
        let expired = self.expire(now);
        if !expired.is_empty() {
            let n = expired.len();
            log::warn!("{n} {what}(s) passed their deadline: default answer given");
        }
        expired.into_iter().map(|(t, _, a)| (t, a)).collect()
    }

    /// The connection closed: its asks are forgotten.
    pub(crate) fn close(&mut self, conn: Token) {
        self.pending.retain(|(c, _), _| *c != conn);
    }

    /// The earliest deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|e| e.deadline).min()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The simulated clock's start: the only clock read.
    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn the_deadline_gives_the_default_answer_once() {
        let t0 = t0();
        let mut asks = Asks::new();
        let a = asks.open(Token(1), t0 + Duration::from_secs(5), "default");
        assert_eq!(asks.next_deadline(), Some(t0 + Duration::from_secs(5)));
        assert!(asks.expire(t0 + Duration::from_secs(4)).is_empty());
        assert_eq!(
            asks.expire(t0 + Duration::from_secs(5)),
            vec![(Token(1), a, "default")]
        );
        assert!(asks.expire(t0 + Duration::from_secs(60)).is_empty());
        // The real answer, late: dropped.
        assert!(!asks.take(Token(1), a));
        assert_eq!(asks.next_deadline(), None);
    }

    #[test]
    fn an_answer_in_time_ends_the_ask() {
        let t0 = t0();
        let mut asks = Asks::new();
        let a = asks.open(Token(1), t0 + Duration::from_secs(5), 0);
        assert!(asks.take(Token(1), a));
        assert!(!asks.take(Token(1), a), "never two answers");
        assert!(asks.expire(t0 + Duration::from_secs(10)).is_empty());
    }

    #[test]
    fn a_late_answer_for_a_closed_connection_is_dropped() {
        let t0 = t0();
        let mut asks = Asks::new();
        let a = asks.open(Token(7), t0 + Duration::from_secs(5), 0);
        let b = asks.open(Token(8), t0 + Duration::from_secs(5), 0);
        asks.close(Token(7));
        assert!(!asks.take(Token(7), a));
        assert_eq!(
            asks.expire(t0 + Duration::from_secs(5)),
            vec![(Token(8), b, 0)],
            "the closed connection's ask gives no default either"
        );
    }

    #[test]
    fn two_connections_asks_never_cross() {
        let t0 = t0();
        let mut asks = Asks::new();
        let a = asks.open(Token(1), t0 + Duration::from_secs(5), 1);
        let b = asks.open(Token(2), t0 + Duration::from_secs(9), 2);
        assert_ne!(a, b);
        // An answer with the other connection's token matches nothing.
        assert!(!asks.take(Token(2), a));
        assert!(!asks.take(Token(1), b));
        assert_eq!(
            asks.expire(t0 + Duration::from_secs(5)),
            vec![(Token(1), a, 1)]
        );
        assert!(asks.take(Token(2), b));
    }
}

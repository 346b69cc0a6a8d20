//! The local-recipient answerer: looks recipients up (aliases, virtual map,
//! the system user database through NSS, which LDAP or sssd may make hang)
//! on a worker thread, so that the event loop never waits on it. Results
//! come back through a channel and the loop's `mio::Waker`, and are kept a
//! short while in a cache so that a known answer costs no round trip. Each
//! lookup out is an ask in its own table, with a deadline whose default
//! answer is a temporary refusal.
//!
//! # Must never
//! Run a lookup on the loop's thread, or cache an `Unavailable` answer (the
//! next session retries).
//!
//! # Errors
//! If the worker is gone, `ask` says so and the caller gives the default
//! (temporary failure) answer.

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Token, Waker};
use sluice_mailbox::{Directory, Lookup};
use sluice_proto::server::Check;

use crate::asks::{AskId, Asks};
use crate::checks::{self, Opinion};

/// How long a lookup may take before the session is told 451.
const DEADLINE: Duration = Duration::from_secs(30);
/// How long a lookup result is reused.
const CACHE_TTL: Duration = Duration::from_secs(30);
/// The cache starts over when it holds this many addresses.
const CACHE_MAX: usize = 10_000;

/// A lookup result from the worker.
struct Found {
    token: Token,
    id: AskId,
    address: String,
    lookup: Lookup,
}

/// The loop's handle on the lookup thread.
pub(crate) struct Recipients {
    requests: Sender<(Token, AskId, String)>,
    results: Receiver<Found>,
    cache: HashMap<String, (Lookup, Instant)>,
    /// The lookups out; the default answer is the check's opinion of an
    /// unavailable directory.
    pub(crate) asks: Asks<Opinion>,
}

impl Recipients {
    /// Starts the worker; it wakes the loop through `waker` after each
    /// lookup.
    pub(crate) fn start(directory: Directory, waker: Arc<Waker>) -> std::io::Result<Recipients> {
        let (requests, incoming) = mpsc::channel::<(Token, AskId, String)>();
        let (outgoing, results) = mpsc::channel::<Found>();
        std::thread::Builder::new()
            .name("recipients".into())
            .spawn(move || {
                while let Ok((token, id, address)) = incoming.recv() {
                    let lookup = directory.lookup(&address);
                    let found = Found {
                        token,
                        id,
                        address,
                        lookup,
                    };
                    if outgoing.send(found).is_err() {
                        return;
                    }
                    let _ = waker.wake();
                }
            })?;
        Ok(Recipients {
            requests,
            results,
            cache: HashMap::new(),
            asks: Asks::new(),
        })
    }

    /// The local-recipient check of `check` for connection `token`: its
    /// opinion now (not a local recipient, a cached answer, or the worker
    /// is gone), or `None` when the lookup was sent: the opinion then comes
    /// from [`Recipients::results`] or [`Recipients::expire`].
    pub(crate) fn check(&mut self, token: Token, check: &Check, now: Instant) -> Option<Opinion> {
        let Some(address) = check.recipient.as_deref().filter(|_| check.local) else {
            return Some(Opinion::NoOpinion);
        };
        let cached = self
            .cache
            .get(address)
            .filter(|(_, at)| now.saturating_duration_since(*at) < CACHE_TTL);
        if let Some((lookup, _)) = cached {
            return Some(checks::local_recipient(address, *lookup));
        }
        let unavailable = checks::local_recipient(address, Lookup::Unavailable);
        let id = self.asks.open(token, now + DEADLINE, unavailable.clone());
        if self.requests.send((token, id, address.to_owned())).is_err() {
            self.asks.take(token, id);
            return Some(unavailable);
        }
        None
    }

    /// Opinions of lookups that have finished, for connections that still
    /// wait for them (late ones are dropped); results enter the cache.
    pub(crate) fn results(&mut self, now: Instant) -> Vec<(Token, Opinion)> {
        let mut out = Vec::new();
        while let Ok(found) = self.results.try_recv() {
            if found.lookup != Lookup::Unavailable {
                if self.cache.len() >= CACHE_MAX {
                    self.cache.clear();
                }
                self.cache
                    .insert(found.address.clone(), (found.lookup, now));
            }
            if self.asks.take(found.token, found.id) {
                out.push((
                    found.token,
                    checks::local_recipient(&found.address, found.lookup),
                ));
            }
        }
        out
    }
}

//! The counts: per (service, client address), the connections open now
//! across every peer and the connections opened in the current rate
//! window, as Postfix's anvil keeps them. Pure code on a given clock.
//!
//! # Must never
//! Let one peer lower the count of connections another peer holds (a
//! disconnect is honoured only for a connection that peer announced), or
//! keep an entry that holds nothing and whose rate window is over longer
//! than one sweep.
//!
//! # Security
//! Peers are smtpd processes (the socket is mode 0660), but the addresses
//! they report are the internet's: memory grows with the connections open
//! now plus those opened within one rate window, nothing else.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// One peer of anvil (one smtpd process's connection to it).
pub(crate) type PeerId = u64;

/// What is counted: a service and a client address.
type Key = (String, IpAddr);

#[derive(Debug)]
struct Client {
    /// Connections open now, across every peer.
    count: u32,
    /// Connections opened since `window_start`.
    rate: u32,
    window_start: Instant,
}

/// The counts of every client.
#[derive(Debug)]
pub(crate) struct Counters {
    unit: Duration,
    clients: HashMap<Key, Client>,
    /// The connections each peer holds, so that they are released when
    /// the peer goes away.
    held: HashMap<PeerId, HashMap<Key, u32>>,
}

impl Counters {
    /// Counters whose rates are counted per `unit`.
    pub(crate) fn new(unit: Duration) -> Self {
        Counters {
            unit,
            clients: HashMap::new(),
            held: HashMap::new(),
        }
    }

    /// `peer` says `client` connected to `service`: returns the client's
    /// concurrent count and rate, this connection included.
    pub(crate) fn connect(
        &mut self,
        peer: PeerId,
        service: &str,
        client: IpAddr,
        now: Instant,
    ) -> (u32, u32) {
        let key = (service.to_owned(), client);
        let c = self.clients.entry(key.clone()).or_insert(Client {
            count: 0,
            rate: 0,
            window_start: now,
        });
        if now.saturating_duration_since(c.window_start) >= self.unit {
            c.window_start = now;
            c.rate = 0;
        }
        c.count = c.count.saturating_add(1);
        c.rate = c.rate.saturating_add(1);
        let held = self.held.entry(peer).or_default().entry(key).or_insert(0);
        *held = held.saturating_add(1);
        (c.count, c.rate)
    }

    /// `peer` says a connection of `client` to `service` ended. Ignored
    /// unless `peer` announced one.
    pub(crate) fn disconnect(&mut self, peer: PeerId, service: &str, client: IpAddr) {
        let key = (service.to_owned(), client);
        let Some(held) = self.held.get_mut(&peer) else {
            return;
        };
        let Some(n) = held.get_mut(&key) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            held.remove(&key);
        }
        self.release(&key, 1);
    }

    /// `peer` went away: the connections it held are over.
    pub(crate) fn drop_peer(&mut self, peer: PeerId) {
        for (key, n) in self.held.remove(&peer).unwrap_or_default() {
            self.release(&key, n);
        }
    }

    /// Forgets clients that hold nothing and whose rate window is over.
    pub(crate) fn sweep(&mut self, now: Instant) {
        let unit = self.unit;
        self.clients
            .retain(|_, c| c.count > 0 || now.saturating_duration_since(c.window_start) < unit);
    }

    /// How many (service, client) entries are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.clients.len()
    }

    fn release(&mut self, key: &Key, n: u32) {
        if let Some(c) = self.clients.get_mut(key) {
            c.count = c.count.saturating_sub(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNIT: Duration = Duration::from_secs(60);

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn counts_connections_of_one_client_across_peers() {
        let now = Instant::now();
        let mut c = Counters::new(UNIT);
        assert_eq!(c.connect(1, "smtp", ip("192.0.2.1"), now), (1, 1));
        assert_eq!(c.connect(2, "smtp", ip("192.0.2.1"), now), (2, 2));
        assert_eq!(c.connect(1, "smtp", ip("192.0.2.2"), now), (1, 1));
        assert_eq!(c.connect(1, "submission", ip("192.0.2.1"), now), (1, 1));
        c.disconnect(2, "smtp", ip("192.0.2.1"));
        assert_eq!(c.connect(1, "smtp", ip("192.0.2.1"), now), (2, 3));
    }

    #[test]
    fn a_peer_cannot_release_what_another_holds() {
        let now = Instant::now();
        let mut c = Counters::new(UNIT);
        c.connect(1, "smtp", ip("192.0.2.1"), now);
        c.disconnect(2, "smtp", ip("192.0.2.1"));
        c.disconnect(1, "smtp", ip("192.0.2.9"));
        assert_eq!(c.connect(1, "smtp", ip("192.0.2.1"), now), (2, 2));
        c.disconnect(1, "smtp", ip("192.0.2.1"));
        c.disconnect(1, "smtp", ip("192.0.2.1"));
        c.disconnect(1, "smtp", ip("192.0.2.1"));
        assert_eq!(c.connect(1, "smtp", ip("192.0.2.1"), now), (1, 3));
    }

    #[test]
    fn a_peer_that_goes_away_releases_its_connections() {
        let now = Instant::now();
        let mut c = Counters::new(UNIT);
        for _ in 0..3 {
            c.connect(1, "smtp", ip("192.0.2.1"), now);
        }
        c.connect(2, "smtp", ip("192.0.2.1"), now);
        c.drop_peer(1);
        c.drop_peer(1);
        assert_eq!(c.connect(2, "smtp", ip("192.0.2.1"), now).0, 2);
    }

    #[test]
    fn the_rate_counts_per_unit_and_starts_again_after_it() {
        let t0 = Instant::now();
        let mut c = Counters::new(UNIT);
        let a = ip("2001:db8::1");
        for i in 1..=3 {
            c.connect(1, "smtp", a, t0 + Duration::from_secs(i));
            c.disconnect(1, "smtp", a);
        }
        assert_eq!(
            c.connect(1, "smtp", a, t0 + Duration::from_secs(59)),
            (1, 4)
        );
        let next_window = t0 + Duration::from_secs(1) + UNIT;
        assert_eq!(c.connect(1, "smtp", a, next_window), (2, 1));
    }

    #[test]
    fn sweep_forgets_idle_clients_after_their_window_only() {
        let t0 = Instant::now();
        let mut c = Counters::new(UNIT);
        c.connect(1, "smtp", ip("192.0.2.1"), t0);
        c.disconnect(1, "smtp", ip("192.0.2.1"));
        c.connect(1, "smtp", ip("192.0.2.2"), t0);
        c.sweep(t0 + Duration::from_secs(1));
        assert_eq!(c.len(), 2);
        c.sweep(t0 + UNIT);
        assert_eq!(c.len(), 1, "the client still connected stays");
        assert_eq!(c.connect(2, "smtp", ip("192.0.2.2"), t0 + UNIT), (2, 1));
    }
}

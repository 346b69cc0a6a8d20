//! The answerer of the per-client connection check (`Kind::ClientLimit`,
//! first at connect): asks `sluice-anvil` (`run_dir/anvil.sock`) for a new
//! client's concurrent count and rate across every smtpd process, without
//! waiting, and turns the counts into an opinion: over
//! `smtpd.client_connection_limit` or `client_connection_rate_limit` is
//! `421 4.7.0` with Postfix's warning line. Clients in `trusted_networks`
//! are not counted when `client_limits_exempt_trusted` says so. Each
//! connection announced is released when it ends.
//!
//! anvil is never on the path of a message: when it cannot be reached, does
//! not answer within [`DEADLINE`], or goes away with questions unanswered,
//! the answer is "no opinion", which lets the client in; the outage is
//! logged once, and once more when anvil is back. A reconnection is tried
//! at most once per [`RETRY`].
//!
//! # Must never
//! Block the loop (the socket is non-blocking; a request that cannot be
//! written at once waits in a buffer), or tell anvil of a disconnect for a
//! connection it was not told of over the same link.
//!
//! # Errors
//! Every failure of the link is an outage: logged, survived, retried.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::net::UnixStream;
use mio::{Interest, Registry, Token};
use sluice_ipc::anvil::{Request, Response, PROTOCOL, VERSION};
use sluice_ipc::{FrameDecoder, Hello};
use sluice_log::line::ClientLimit;

use crate::asks::{AskId, Asks};
use crate::checks::Opinion;

/// The service name the counts are kept under (Postfix's `smtp`).
pub(crate) const SERVICE: &str = "smtp";
/// The shortest time between two attempts to reach anvil.
const RETRY: Duration = Duration::from_secs(1);
/// How long a count may take; then the client is let in.
const DEADLINE: Duration = Duration::from_secs(1);
/// Requests not taken by the socket beyond this mean anvil is stuck.
const MAX_UNSENT: usize = 64 * 1024;

/// An ask: the connection and its ask id.
type Key = (Token, AskId);

/// The per-client limits, from `smtpd.client_connection_*`; 0 is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Connections at once.
    pub(crate) concurrency: u32,
    /// Connections per `sluice_ipc::anvil::RATE_UNIT`.
    pub(crate) rate: u32,
}

impl Limits {
    /// Whether any limit is on (else anvil is not asked at all).
    pub(crate) fn is_on(self) -> bool {
        self.concurrency > 0 || self.rate > 0
    }
}

/// Which limit the counts go over, with the count to log; `None`: within
/// both. The concurrency limit is checked first, as Postfix does.
pub(crate) fn over_limit(limits: Limits, counts: Response) -> Option<(ClientLimit, u32)> {
    let Response::Connect { count, rate } = counts;
    if limits.concurrency > 0 && count > limits.concurrency {
        Some((ClientLimit::Concurrency, count))
    } else if limits.rate > 0 && rate > limits.rate {
        Some((ClientLimit::Rate, rate))
    } else {
        None
    }
}

/// One connection to anvil, with the asks it has not answered, in order.
struct Link {
    stream: UnixStream,
    decoder: FrameDecoder,
    greeted: bool,
    out: Vec<u8>,
    waiting: VecDeque<Key>,
}

/// The loop's handle on anvil.
pub(crate) struct Anvil {
    path: PathBuf,
    token: Token,
    limits: Limits,
    exempt_trusted: bool,
    trusted: Vec<sluice_config::Cidr>,
    hostname: String,
    link: Option<Link>,
    /// Counts links, so that a disconnect goes only over the link that
    /// carried its connect.
    generation: u64,
    /// The connections announced, with the link that carried them.
    counted: HashMap<Token, (u64, IpAddr)>,
    /// The outage has been logged.
    down: bool,
    retry_at: Option<Instant>,
    /// The counts out; the default answer lets the client in.
    pub(crate) asks: Asks<Opinion>,
}

impl Anvil {
    /// The answerer for the socket at `path`, registered under `token`
    /// once it connects.
    pub(crate) fn new(
        path: PathBuf,
        token: Token,
        smtpd: &sluice_config::Smtpd,
        hostname: &str,
    ) -> Self {
        Anvil {
            path,
            token,
            limits: Limits {
                concurrency: smtpd.client_connection_limit,
                rate: smtpd.client_connection_rate_limit,
            },
            exempt_trusted: smtpd.client_limits_exempt_trusted,
            trusted: smtpd.trusted_networks.clone(),
            hostname: hostname.to_owned(),
            link: None,
            generation: 0,
            counted: HashMap::new(),
            down: false,
            retry_at: None,
            asks: Asks::new(),
        }
    }

    /// The client-limit check of connection `conn` from `client`: its
    /// opinion now (no limit on, an exempt client, anvil unreachable), or
    /// `None` when the count was asked: the opinion then comes from
    /// [`Anvil::results`] or the asks' deadline.
    pub(crate) fn check(
        &mut self,
        registry: &Registry,
        conn: Token,
        client: Option<IpAddr>,
        now: Instant,
    ) -> Option<Opinion> {
        let Some(client) = client.filter(|ip| !self.is_exempt(*ip)) else {
            return Some(Opinion::NoOpinion);
        };
        if self.reach(registry, now).is_none() {
            return Some(Opinion::NoOpinion);
        }
        let id = self.asks.open(conn, now + DEADLINE, Opinion::NoOpinion);
        if let Some(link) = self.link.as_mut() {
            link.waiting.push_back((conn, id));
        }
        let request = Request::Connect {
            service: SERVICE.to_owned(),
            client,
        };
        if !self.send(registry, &request) {
            self.asks.take(conn, id);
            return Some(Opinion::NoOpinion);
        }
        self.counted.insert(conn, (self.generation, client));
        None
    }

    /// Whether `client` is not counted: no limit is on, or it is trusted
    /// and trusted clients are exempt.
    fn is_exempt(&self, client: IpAddr) -> bool {
        !self.limits.is_on()
            || (self.exempt_trusted && self.trusted.iter().any(|n| n.contains(client)))
    }

    /// Connection `conn` ended: anvil is told if it counted it.
    pub(crate) fn release(&mut self, registry: &Registry, conn: Token) {
        self.asks.close(conn);
        let Some((generation, client)) = self.counted.remove(&conn) else {
            return;
        };
        if generation != self.generation || self.link.is_none() {
            return; // that link is gone, and anvil forgot its counts with it
        }
        let request = Request::Disconnect {
            service: SERVICE.to_owned(),
            client,
        };
        self.send(registry, &request);
    }

    /// anvil's token was ready: reads its answers, writes what waits.
    /// Returns the opinions for the connections that still wait for them.
    pub(crate) fn results(&mut self, registry: &Registry) -> Vec<(Token, Opinion)> {
        let mut answers = Vec::new();
        if let Err(why) = self.pump(&mut answers) {
            answers.extend(self.lose(registry, &why));
        }
        let mut opinions = Vec::new();
        for ((conn, id), counts) in answers {
            if self.asks.take(conn, id) {
                opinions.push((conn, self.opinion(conn, counts)));
            }
        }
        opinions
    }

    /// The asks whose deadline passed: no opinion (the client is let in);
    /// a slow anvil is logged once, as an outage.
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<(Token, Opinion)> {
        let expired = self.asks.expire(now);
        if !expired.is_empty() {
            self.outage(&format!("no answer within {} ms", DEADLINE.as_millis()));
        }
        expired.into_iter().map(|(t, _, o)| (t, o)).collect()
    }

    /// The opinion of anvil's counts for `conn` (`None`: no counts).
    fn opinion(&mut self, conn: Token, counts: Option<Response>) -> Opinion {
        let Some(counts) = counts else {
            return Opinion::NoOpinion;
        };
        if self.down {
            self.down = false;
            log::info!("{}: answering again", self.path.display());
        }
        let (Some((limit, n)), Some(&(_, client))) =
            (over_limit(self.limits, counts), self.counted.get(&conn))
        else {
            return Opinion::NoOpinion;
        };
        log::warn!(
            "{}",
            sluice_log::line::client_limit_exceeded(limit, n, None, client, SERVICE)
        );
        Opinion::Reject(sluice_proto::reply::too_many_connections_from(
            &self.hostname,
            client,
        ))
    }

    /// Makes sure there is a link; `None` when there cannot be one now.
    fn reach(&mut self, registry: &Registry, now: Instant) -> Option<()> {
        if self.link.is_some() {
            return Some(());
        }
        if self.retry_at.is_some_and(|at| now < at) {
            return None;
        }
        self.retry_at = Some(now + RETRY);
        let connected = UnixStream::connect(&self.path).and_then(|mut stream| {
            registry.register(
                &mut stream,
                self.token,
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(stream)
        });
        match connected {
            Ok(stream) => {
                self.generation += 1;
                self.link = Some(Link {
                    stream,
                    decoder: FrameDecoder::new(),
                    greeted: false,
                    out: Vec::new(),
                    waiting: VecDeque::new(),
                });
                if self.down {
                    self.down = false;
                    log::info!("{}: reachable again", self.path.display());
                }
                Some(())
            }
            Err(e) => {
                self.outage(&e.to_string());
                None
            }
        }
    }

    /// Queues and writes one request; false if the link broke (its asks
    /// then have no answer: see [`Anvil::ready`]).
    fn send(&mut self, registry: &Registry, request: &Request) -> bool {
        let Some(link) = self.link.as_mut() else {
            return false;
        };
        match sluice_ipc::encode(request) {
            Ok(frame) => link.out.extend(frame),
            Err(e) => {
                log::warn!("{}: {e}", self.path.display());
                return false;
            }
        }
        let flushed = self.flush().and_then(|()| match &self.link {
            Some(link) if link.out.len() > MAX_UNSENT => Err("not reading its requests".to_owned()),
            _ => Ok(()),
        });
        match flushed {
            Ok(()) => true,
            Err(why) => {
                // Whatever was waiting gets no answer from this link; the
                // asks' deadlines give them their default.
                self.lose(registry, &why);
                false
            }
        }
    }

    /// Writes what waits and reads what came; `Err` when the link is broken.
    fn pump(&mut self, answers: &mut Vec<(Key, Option<Response>)>) -> Result<(), String> {
        self.flush()?;
        self.read(answers)
    }

    /// Writes what waits, as far as the socket takes it.
    fn flush(&mut self) -> Result<(), String> {
        let Some(link) = self.link.as_mut() else {
            return Ok(());
        };
        while !link.out.is_empty() {
            match link.stream.write(&link.out) {
                Ok(0) => return Err("closed".into()),
                Ok(n) => {
                    link.out.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }

    /// Reads until the socket is empty (readiness is edge-triggered) and
    /// matches the answers to the asks, in order.
    fn read(&mut self, answers: &mut Vec<(Key, Option<Response>)>) -> Result<(), String> {
        let Some(link) = self.link.as_mut() else {
            return Ok(());
        };
        let mut buf = [0u8; 4096];
        loop {
            match link.stream.read(&mut buf) {
                Ok(0) => return Err("closed by anvil".into()),
                Ok(n) => link.decoder.push(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.to_string()),
            }
        }
        if !link.greeted {
            let Some(hello) = link
                .decoder
                .next_message::<Hello>()
                .map_err(|e| e.to_string())?
            else {
                return Ok(());
            };
            if hello.protocol != PROTOCOL || hello.version != VERSION {
                return Err(format!(
                    "speaks {} version {}, not {PROTOCOL} version {VERSION}",
                    hello.protocol, hello.version
                ));
            }
            link.greeted = true;
        }
        while let Some(response) = link
            .decoder
            .next_message::<Response>()
            .map_err(|e| e.to_string())?
        {
            let key = link
                .waiting
                .pop_front()
                .ok_or_else(|| "an answer to no question".to_owned())?;
            answers.push((key, Some(response)));
        }
        Ok(())
    }

    /// Drops the link: its unanswered asks are returned without an answer.
    fn lose(&mut self, registry: &Registry, why: &str) -> Vec<(Key, Option<Response>)> {
        let Some(mut link) = self.link.take() else {
            return Vec::new();
        };
        let _ = registry.deregister(&mut link.stream);
        self.outage(why);
        link.waiting.into_iter().map(|k| (k, None)).collect()
    }

    fn outage(&mut self, why: &str) {
        if !self.down {
            self.down = true;
            log::warn!(
                "{}: {why}: letting clients in without per-client limits until it is back",
                self.path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_first_then_rate_and_zero_is_off() {
        let c = |count, rate| Response::Connect { count, rate };
        let both = Limits {
            concurrency: 50,
            rate: 10,
        };
        assert_eq!(over_limit(both, c(50, 10)), None);
        assert_eq!(
            over_limit(both, c(51, 11)),
            Some((ClientLimit::Concurrency, 51))
        );
        assert_eq!(over_limit(both, c(3, 11)), Some((ClientLimit::Rate, 11)));
        let off = Limits {
            concurrency: 0,
            rate: 0,
        };
        assert!(!off.is_on());
        assert_eq!(over_limit(off, c(1000, 1000)), None);
    }
}

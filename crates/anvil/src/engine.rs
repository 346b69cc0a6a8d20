//! The anvil protocol as bytes in, bytes out: each peer gets the
//! [`Hello`] first, then one response frame per connect request, in order
//! (`sluice_ipc::anvil`). Pure code: the service loop moves the bytes.
//!
//! # Must never
//! Trust a peer's bytes: a bad or oversized frame is an error for that
//! peer only, which the loop closes (and whose connections are released).

use std::collections::HashMap;
use std::time::Instant;

use sluice_ipc::anvil::{Request, Response, PROTOCOL, VERSION};
use sluice_ipc::{FrameDecoder, Hello};

use crate::counter::{Counters, PeerId};

/// Every peer's decoder and the shared counts.
#[derive(Debug)]
pub(crate) struct Engine {
    counters: Counters,
    peers: HashMap<PeerId, FrameDecoder>,
}

impl Engine {
    pub(crate) fn new(counters: Counters) -> Self {
        Engine {
            counters,
            peers: HashMap::new(),
        }
    }

    /// A peer connected: the bytes to send it first.
    pub(crate) fn open(&mut self, peer: PeerId) -> Result<Vec<u8>, sluice_ipc::Error> {
        self.peers.insert(peer, FrameDecoder::new());
        sluice_ipc::encode(&Hello {
            protocol: PROTOCOL.to_owned(),
            version: VERSION,
        })
    }

    /// Bytes from a peer, in any split: appends the answers to `out`. An
    /// error means: close this peer (then call [`Engine::close`]).
    pub(crate) fn input(
        &mut self,
        peer: PeerId,
        bytes: &[u8],
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Result<(), sluice_ipc::Error> {
        let Some(decoder) = self.peers.get_mut(&peer) else {
            return Ok(());
        };
        decoder.push(bytes);
        while let Some(request) = decoder.next_message::<Request>()? {
            match request {
                Request::Connect { service, client } => {
                    let (count, rate) = self.counters.connect(peer, &service, client, now);
                    out.extend(sluice_ipc::encode(&Response::Connect { count, rate })?);
                }
                Request::Disconnect { service, client } => {
                    self.counters.disconnect(peer, &service, client);
                }
            }
        }
        Ok(())
    }

    /// A peer went away: its connections are over.
    pub(crate) fn close(&mut self, peer: PeerId) {
        self.peers.remove(&peer);
        self.counters.drop_peer(peer);
    }

    /// Forgets what no longer counts (see [`Counters::sweep`]).
    pub(crate) fn sweep(&mut self, now: Instant) {
        self.counters.sweep(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn frames(messages: &[Request]) -> Vec<u8> {
        messages
            .iter()
            .flat_map(|m| sluice_ipc::encode(m).expect("encode"))
            .collect()
    }

    fn responses(bytes: &[u8]) -> Vec<Response> {
        let mut d = FrameDecoder::new();
        d.push(bytes);
        std::iter::from_fn(|| d.next_message().expect("decode")).collect()
    }

    fn connect(client: &str) -> Request {
        Request::Connect {
            service: "smtp".into(),
            client: client.parse::<IpAddr>().expect("ip"),
        }
    }

    #[test]
    fn hello_first_then_one_answer_per_connect_in_any_split() {
        let now = Instant::now();
        let mut e = Engine::new(Counters::new(sluice_ipc::anvil::RATE_UNIT));
        let hello = e.open(7).expect("hello");
        let mut d = FrameDecoder::new();
        d.push(&hello);
        let h: Hello = d.next_message().expect("decode").expect("a frame");
        assert_eq!((h.protocol.as_str(), h.version), (PROTOCOL, VERSION));
        let wire = frames(&[
            connect("192.0.2.1"),
            connect("192.0.2.1"),
            Request::Disconnect {
                service: "smtp".into(),
                client: "192.0.2.1".parse().expect("ip"),
            },
            connect("192.0.2.1"),
        ]);
        let mut out = Vec::new();
        for chunk in wire.chunks(3) {
            e.input(7, chunk, now, &mut out).expect("input");
        }
        assert_eq!(
            responses(&out),
            [
                Response::Connect { count: 1, rate: 1 },
                Response::Connect { count: 2, rate: 2 },
                Response::Connect { count: 2, rate: 3 },
            ]
        );
    }

    #[test]
    fn a_bad_frame_is_an_error_and_closing_releases_the_peer() {
        let now = Instant::now();
        let mut e = Engine::new(Counters::new(sluice_ipc::anvil::RATE_UNIT));
        e.open(1).expect("hello");
        e.open(2).expect("hello");
        let mut out = Vec::new();
        e.input(1, &frames(&[connect("192.0.2.1")]), now, &mut out)
            .expect("input");
        let mut bad = 5u32.to_be_bytes().to_vec();
        bad.extend_from_slice(b"{bad}");
        assert!(e.input(1, &bad, now, &mut out).is_err());
        e.close(1);
        out.clear();
        e.input(2, &frames(&[connect("192.0.2.1")]), now, &mut out)
            .expect("input");
        assert_eq!(responses(&out), [Response::Connect { count: 1, rate: 2 }]);
    }

    proptest::proptest! {
        /// Any bytes from a peer: an error or answers, never a panic, and
        /// never more answers than frames.
        #[test]
        fn hostile_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let mut e = Engine::new(Counters::new(sluice_ipc::anvil::RATE_UNIT));
            e.open(1).expect("hello");
            let mut out = Vec::new();
            let _ = e.input(1, &bytes, Instant::now(), &mut out);
            proptest::prop_assert!(out.len() <= bytes.len() * 64);
            e.close(1);
        }

        /// Whatever peers announce, end and drop, a client's count is the
        /// connections still held by live peers.
        #[test]
        fn counts_follow_what_live_peers_hold(ops in proptest::collection::vec((0u64..3, 0u8..3, 0u8..4), 0..200)) {
            let now = Instant::now();
            let mut e = Engine::new(Counters::new(sluice_ipc::anvil::RATE_UNIT));
            let mut held = std::collections::HashMap::<(u64, u8), u32>::new();
            for peer in 0..3 {
                e.open(peer).expect("hello");
            }
            for (peer, client, op) in ops {
                let ip: IpAddr = format!("192.0.2.{client}").parse().expect("ip");
                let mut out = Vec::new();
                match op {
                    0 | 1 => {
                        e.input(peer, &frames(&[Request::Connect { service: "smtp".into(), client: ip }]), now, &mut out).expect("input");
                        *held.entry((peer, client)).or_default() += 1;
                        let want: u32 = held.iter().filter(|((_, c), _)| *c == client).map(|(_, n)| n).sum();
                        let got = responses(&out);
                        proptest::prop_assert_eq!(got.len(), 1);
                        let Response::Connect { count, .. } = got[0];
                        proptest::prop_assert_eq!(count, want);
                    }
                    2 => {
                        e.input(peer, &frames(&[Request::Disconnect { service: "smtp".into(), client: ip }]), now, &mut out).expect("input");
                        if let Some(n) = held.get_mut(&(peer, client)) {
                            *n = n.saturating_sub(1);
                        }
                        proptest::prop_assert!(out.is_empty());
                    }
                    _ => {
                        e.close(peer);
                        e.open(peer).expect("hello");
                        held.retain(|(p, _), _| *p != peer);
                    }
                }
            }
        }
    }
}

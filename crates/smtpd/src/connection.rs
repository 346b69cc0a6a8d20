//! One client connection: its socket, its session machine, the replies not
//! yet written, and the check being folded for it. The loop reads into the
//! session and writes out of the buffer through here only, so that TLS can
//! wrap the socket in one place.
//!
//! # Must never
//! Block (the socket is non-blocking), or read more from a client whose
//! unsent replies pass [`OUT_HIGH_WATER`].
//!
//! # Errors
//! A read or write error ends the connection (`eof`); it is never fatal to
//! the process.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpStream;
use sluice_config::Config;
use sluice_proto::server::{Peer, Session};

use crate::checks::Fold;
use crate::settings;

/// Stop reading from a client while this much of its replies is unsent.
pub(crate) const OUT_HIGH_WATER: usize = 256 * 1024;

pub(crate) struct Connection {
    pub(crate) stream: TcpStream,
    pub(crate) session: Session,
    pub(crate) peer: SocketAddr,
    pub(crate) out: Vec<u8>,
    /// The machine said Close: flush, then drop.
    pub(crate) closing: bool,
    /// The client closed its side, or the socket failed.
    pub(crate) eof: bool,
    /// The check ask being folded, while one of its checks is out.
    pub(crate) fold: Option<Fold>,
    /// When the connection is dropped whatever its state: the session's
    /// whole time plus one command's, or, once closing, one command's time
    /// to take its last replies (a client that does not read them loses
    /// them, and its slot; issue 9 defect 2).
    pub(crate) drop_at: Instant,
}

/// What one read did.
pub(crate) enum Read {
    /// Bytes went to the session: drive it, then read again.
    Fed,
    /// Nothing more to read now (or reading is paused).
    Idle,
}

/// A client over the per-process cap: told so, and closed.
pub(crate) fn refuse(stream: &mut TcpStream, ip: IpAddr, hostname: &str) {
    let peer = sluice_log::line::peer(None, ip);
    log::warn!("too many connections: refusing {peer}");
    let reply = sluice_proto::reply::too_many_connections(hostname);
    let _ = stream.write(&reply.to_bytes());
}

impl Connection {
    /// A client just accepted: logs `connect from`, starts its session.
    pub(crate) fn accept(
        stream: TcpStream,
        peer: SocketAddr,
        config: &Config,
        session_config: &Arc<sluice_proto::server::Config>,
    ) -> Connection {
        let ip = settings::canonical(peer.ip());
        let addr = SocketAddr::new(ip, peer.port());
        log::info!("{}", sluice_log::line::connect(None, ip));
        let peer = Peer {
            addr,
            trusted: settings::is_trusted(config, ip),
            hostname: None,
        };
        let now = Instant::now();
        let session = Session::new(Arc::clone(session_config), peer, now);
        let limits = &session_config.limits;
        Connection {
            stream,
            session,
            peer: addr,
            out: Vec::new(),
            closing: false,
            eof: false,
            fold: None,
            drop_at: now + limits.session_timeout + limits.command_timeout,
        }
    }

    /// Whether reading is paused: the session waits for an answer, or the
    /// client does not read its replies.
    fn is_paused(&self) -> bool {
        self.closing || self.eof || self.out.len() > OUT_HIGH_WATER || !self.session.wants_input()
    }

    /// Reads once into `buf` and gives the bytes to the session.
    pub(crate) fn read(&mut self, buf: &mut [u8], now: Instant) -> Read {
        if self.is_paused() {
            return Read::Idle;
        }
        loop {
            match self.stream.read(buf) {
                Ok(0) => {
                    self.eof = true;
                    return Read::Idle;
                }
                Ok(n) => {
                    self.session.handle_input(&buf[..n], now);
                    return Read::Fed;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Read::Idle,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.eof = true;
                    return Read::Idle;
                }
            }
        }
    }

    /// Writes what the socket takes; true if reading was paused by the
    /// high-water mark and may go on now.
    pub(crate) fn flush(&mut self) -> bool {
        let was_high = self.out.len() > OUT_HIGH_WATER;
        let mut written = 0;
        while written < self.out.len() {
            match self.stream.write(&self.out[written..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.eof = true;
                    self.out.clear();
                    written = 0;
                    break;
                }
            }
        }
        self.out.drain(..written);
        was_high && self.out.len() <= OUT_HIGH_WATER
    }

    /// The session said Close: its replies have until `now + linger`.
    pub(crate) fn close(&mut self, now: Instant, linger: std::time::Duration) {
        self.closing = true;
        self.drop_at = self.drop_at.min(now + linger);
    }

    /// Nothing more will happen: the session closed and its replies are
    /// out, or the client is gone.
    pub(crate) fn is_done(&self) -> bool {
        (self.closing && self.out.is_empty()) || self.eof
    }
}

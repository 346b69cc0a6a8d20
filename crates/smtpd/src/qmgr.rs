//! The queue-manager answerer: hints about new mail and ETRN's flush
//! requests, sent over `run_dir/qmgr.sock` without ever waiting. A request
//! that cannot be written at once is dropped (the queue manager also scans
//! the queue; an ETRN is then answered 458), and what the queue manager
//! writes back is read and discarded, so that a stopped or slow queue
//! manager never holds the event loop.
//!
//! # Must never
//! Block: the socket is non-blocking from `connect` on.
//!
//! # Errors
//! Every failure means "not sent": the caller answers accordingly.

use std::collections::HashMap;
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::net::UnixStream;
use sluice_ipc::qmgr::Request;
use sluice_proto::server::EtrnAnswer;

/// A domain flushed this recently is not flushed again: every client of
/// the process together cannot make the queue manager flush one domain
/// more often (issue 9 defect 6).
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// The loop's connection to the queue manager.
pub(crate) struct Qmgr {
    socket: PathBuf,
    stream: Option<UnixStream>,
    /// When each domain was last flushed.
    flushed: HashMap<String, Instant>,
}

impl Qmgr {
    pub(crate) fn new(socket: PathBuf) -> Qmgr {
        Qmgr {
            socket,
            stream: None,
            flushed: HashMap::new(),
        }
    }

    /// Tells the queue manager about a new queue file, if it listens.
    pub(crate) fn hint(&mut self, queue_id: &str) {
        self.send(&Request::NewMail {
            queue_id: queue_id.to_owned(),
        });
    }

    /// ETRN (RFC 1985) for a relay domain: the session already checked the
    /// domain's permission (459 for others); the flush request goes out
    /// without waiting for the queue manager, and the answer says only
    /// whether it went: `250 Queuing started` or `458`.
    pub(crate) fn etrn(&mut self, domain: &str, addr: IpAddr, now: Instant) -> EtrnAnswer {
        self.flushed
            .retain(|_, at| now.saturating_duration_since(*at) < FLUSH_INTERVAL);
        if self.flushed.contains_key(domain) {
            return EtrnAnswer::Started;
        }
        let sent = self.send(&Request::Etrn {
            domain: domain.to_owned(),
        });
        if sent {
            self.flushed.insert(domain.to_owned(), now);
        }
        let peer = sluice_log::line::peer(None, addr);
        let domain = sluice_log::printable(domain, 255);
        if sent {
            log::info!("ETRN {domain} from {peer}: flush requested");
            EtrnAnswer::Started
        } else {
            log::warn!("ETRN {domain} from {peer}: the queue manager is not reachable");
            EtrnAnswer::Unavailable
        }
    }

    /// Writes one whole frame now, or nothing; true if it went.
    fn send(&mut self, request: &Request) -> bool {
        let Ok(frame) = sluice_ipc::encode(request) else {
            return false;
        };
        if self.stream.is_none() {
            self.stream = UnixStream::connect(&self.socket).ok();
        }
        let Some(stream) = self.stream.as_mut() else {
            return false;
        };
        // Answers to earlier requests are not needed: read them away.
        let mut sink = [0u8; 4096];
        loop {
            match stream.read(&mut sink) {
                Ok(0) => {
                    self.stream = None;
                    return false;
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.stream = None;
                    return false;
                }
            }
        }
        let sent = stream.write(&frame).is_ok_and(|n| n == frame.len());
        if !sent {
            // A partial frame would desynchronise the stream: start over.
            self.stream = None;
        }
        sent
    }
}

//! The queue-manager answerer: hints about new mail and ETRN's flush
//! requests, sent over `run_dir/qmgr.sock` without ever waiting
//! ([`sluice_ipc::client::Hinter`]). A request
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
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use sluice_ipc::client::Hinter;
use sluice_ipc::qmgr::Request;
use sluice_proto::server::EtrnAnswer;

/// A domain flushed this recently is not flushed again: every client of
/// the process together cannot make the queue manager flush one domain
/// more often (issue 9 defect 6).
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// The loop's connection to the queue manager.
pub(crate) struct Qmgr {
    hinter: Hinter,
    /// When each domain was last flushed.
    flushed: HashMap<String, Instant>,
}

impl Qmgr {
    pub(crate) fn new(run_dir: &Path) -> Qmgr {
        Qmgr {
            hinter: Hinter::new(sluice_ipc::qmgr::socket(run_dir)),
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
        self.hinter.send(request)
    }
}

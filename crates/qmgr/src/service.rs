//! The queue manager's event loop and its two sockets, both the control
//! channel of Sluice's own processes and operators (mode 0660, and every
//! peer checked with SO_PEERCRED at accept: root, the queue manager's own
//! user, or a member of its group; anyone else is closed at once):
//! - `run_dir/qmgr.sock`: new-mail hints from smtpd, pickup and local
//!   forwarding, ETRN, and operators' changes from `sluice-queue`;
//! - `run_dir/delivery.sock`: delivery agents taking jobs.
//!
//! Unprivileged users need neither: their one channel is pickup's
//! world-writable wake-up socket (`sluice_ipc::pickup`).
//!
//! # Must never
//! Trust a peer: a bad frame closes that connection and nothing else; a
//! change request is checked against the peer's credentials, not its word.
//! Let peers take the descriptors the queue needs: at most [`MAX_PEERS`]
//! at once, and running out of descriptors (EMFILE, ENFILE) only pauses
//! accepting.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use sluice_ipc::delivery::{self, AgentMessage, QmgrMessage, Transport};
use sluice_ipc::qmgr::{Request, Response};
use sluice_ipc::{FrameDecoder, Hello};
use sluice_spool::QueueId;

use crate::queue::{now_ms, Queue};

const SIGNALS: Token = Token(0);
const CONTROL: Token = Token(1);
const DELIVERY: Token = Token(2);
const FIRST_PEER: usize = 16;
/// How often `queue/` is scanned for files whose hint was lost.
const SCAN_EVERY: Duration = Duration::from_secs(30);
/// How often waiting recipients are checked against the queue lifetime.
const EXPIRE_EVERY: Duration = Duration::from_secs(5);
/// The loop wakes at least this often to look for due recipients.
const TICK: Duration = Duration::from_secs(1);
/// The shortest wait for due work (see the loop).
const MIN_WAIT: Duration = Duration::from_millis(20);
/// A peer's share of one turn of the loop: this many frames handled and
/// bytes read at most, then the next peer's turn comes. A peer that sends
/// without pause is served a share per turn and never starves the others
/// (or the scheduler, which runs once per turn).
const FRAMES_PER_TURN: usize = 1024;
const BYTES_PER_TURN: usize = 64 * 1024;
/// Peers at once, well under the descriptor limit (1024 by default), so
/// that the index, queue files and bounces always find descriptors.
const MAX_PEERS: usize = 512;
/// Connections accepted per listener in one turn of the loop.
const ACCEPTS_PER_TURN: usize = 64;
/// The pause before accepting again after the process or the system ran
/// out of descriptors.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// A peer whose unread output passes this is not reading its answers: it
/// is closed rather than buffered for.
const MAX_UNSENT: usize = 4 * sluice_ipc::MAX_BUFFERED;

enum Kind {
    /// A client of `qmgr.sock`.
    Control,
    /// A delivery agent; its transport once it said Ready, its job, and
    /// the next hop it keeps a connection open to (for reuse).
    Agent {
        transport: Option<Transport>,
        job: Option<u64>,
        open: Option<String>,
    },
}

struct Peer {
    stream: UnixStream,
    decoder: FrameDecoder,
    out: Vec<u8>,
    kind: Kind,
    uid: u32,
    gid: u32,
    closed: bool,
    /// Its side takes no more answers (a write failed): what it sent is
    /// still read and handled, to its end. A one-shot hint writes and
    /// closes before it could take the greeting.
    deaf: bool,
    /// In [`Service::ready`]: it may have input not yet served.
    ready: bool,
}

/// What one turn of accepting on a listener left.
enum Accepted {
    /// Nothing waits.
    Drained,
    /// The turn's share was taken; more may wait.
    More,
    /// Accepting failed (e.g. out of descriptors).
    Failed(std::io::Error),
}

/// The running queue manager.
pub(crate) struct Service {
    poll: Poll,
    signals: Signals,
    control: UnixListener,
    delivery: UnixListener,
    socket_paths: [PathBuf; 2],
    peers: HashMap<Token, Peer>,
    /// Peers with input to serve, in turn order.
    ready: VecDeque<Token>,
    /// When to accept on both listeners again (connections are waiting,
    /// or accepting paused for want of descriptors).
    accept_due: Option<Instant>,
    /// Peers were refused for [`MAX_PEERS`] (logged once per episode).
    at_capacity: bool,
    /// Accepting failed since the backlogs were last empty (logged once
    /// per episode).
    starved: bool,
    /// New-mail hints of this turn, imported at its end.
    hinted: Vec<QueueId>,
    next_token: usize,
    queue: Queue,
    next_scan: Instant,
    next_expire: Instant,
}

impl Service {
    pub(crate) fn new(run_dir: &Path, queue: Queue) -> anyhow::Result<Service> {
        let poll = Poll::new()?;
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let control_path = sluice_ipc::qmgr::socket(run_dir);
        let delivery_path = run_dir.join("delivery.sock");
        let mut control = UnixListener::from_std(sluice_daemon::bind_socket(&control_path, 0o660)?);
        let mut delivery =
            UnixListener::from_std(sluice_daemon::bind_socket(&delivery_path, 0o660)?);
        poll.registry()
            .register(&mut control, CONTROL, Interest::READABLE)?;
        poll.registry()
            .register(&mut delivery, DELIVERY, Interest::READABLE)?;
        Ok(Service {
            poll,
            signals,
            control,
            delivery,
            socket_paths: [control_path, delivery_path],
            peers: HashMap::new(),
            ready: VecDeque::new(),
            hinted: Vec::new(),
            accept_due: None,
            at_capacity: false,
            starved: false,
            next_token: FIRST_PEER,
            queue,
            // Scan once right after binding: a file committed between the
            // recovery in `Queue::open` and the bind above had no socket to
            // hint, and must not wait a whole scan interval.
            next_scan: Instant::now(),
            next_expire: Instant::now() + EXPIRE_EVERY,
        })
    }

    pub(crate) fn run(&mut self) -> anyhow::Result<()> {
        let mut events = Events::with_capacity(256);
        self.queue.expire(now_ms())?;
        loop {
            self.schedule()?;
            let now = Instant::now();
            // Due work matters only to transports with an idle agent; what
            // is due but could not be handed out (limits) is looked at again
            // after a short pause rather than in a busy loop.
            let mut until_due = TICK;
            for transport in self.idle_transports() {
                if let Some(at) = self.queue.next_due(transport)? {
                    let wait = Duration::from_millis((at - now_ms()).max(0) as u64).max(MIN_WAIT);
                    until_due = until_due.min(wait);
                }
            }
            // Peers with input left from their last share are served again
            // after the poll, which then only collects what is new.
            let busy = if self.ready.is_empty() && self.accept_due.is_none() {
                TICK
            } else {
                Duration::ZERO
            };
            let timeout = until_due
                .min(busy)
                .min(
                    self.accept_due
                        .map_or(TICK, |at| at.saturating_duration_since(now)),
                )
                .min(self.next_scan.saturating_duration_since(now))
                .min(self.next_expire.saturating_duration_since(now));
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != ErrorKind::Interrupted {
                    return Err(e.into());
                }
            }
            for event in events.iter() {
                match event.token() {
                    SIGNALS => {
                        let stop = self.signals.pending().any(|s| s == SIGTERM || s == SIGINT);
                        if stop {
                            log::info!("terminating on signal");
                            for path in &self.socket_paths {
                                let _ = std::fs::remove_file(path);
                            }
                            return Ok(());
                        }
                    }
                    CONTROL | DELIVERY => self.accept_due = Some(Instant::now()),
                    token => {
                        if event.is_writable() {
                            self.flush(token);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.mark_ready(token);
                        }
                    }
                }
            }
            if self.accept_due.is_some_and(|at| at <= Instant::now()) {
                self.accept_both();
            }
            self.serve_ready()?;
            if !self.hinted.is_empty() {
                let mut hinted = std::mem::take(&mut self.hinted);
                hinted.sort_unstable();
                hinted.dedup();
                self.queue.import(&hinted)?;
            }
            if Instant::now() >= self.next_scan {
                let found = self.queue.scan()?;
                if found > 0 {
                    log::info!("scan found {found} queue file(s) without a hint");
                }
                self.next_scan = Instant::now() + SCAN_EVERY;
            }
            if Instant::now() >= self.next_expire {
                self.queue.expire(now_ms())?;
                self.next_expire = Instant::now() + EXPIRE_EVERY;
            }
        }
    }

    /// Agents waiting for a job, and their transports.
    fn idle_agents(&self) -> Vec<(Token, Transport)> {
        self.idle_agents_open()
            .into_iter()
            .map(|(t, tr, _)| (t, tr))
            .collect()
    }

    /// Agents waiting for a job, their transports and the next hop each
    /// keeps a connection open to; those without one first, so that a
    /// connection is not closed for another hop while a free agent could
    /// take that job.
    fn idle_agents_open(&self) -> Vec<(Token, Transport, Option<String>)> {
        let mut idle: Vec<(Token, Transport, Option<String>)> = self
            .peers
            .iter()
            .filter_map(|(t, p)| match &p.kind {
                Kind::Agent {
                    transport: Some(tr),
                    job: None,
                    open,
                } if !p.closed => Some((*t, *tr, open.clone())),
                _ => None,
            })
            .collect();
        idle.sort_by_key(|(t, _, open)| (open.is_some(), t.0));
        idle
    }

    /// Transports with at least one idle agent.
    fn idle_transports(&self) -> Vec<Transport> {
        let mut transports: Vec<Transport> =
            self.idle_agents().into_iter().map(|(_, t)| t).collect();
        transports.sort();
        transports.dedup();
        transports
    }

    /// Fills the active queue and hands jobs to idle agents.
    fn schedule(&mut self) -> anyhow::Result<()> {
        let now = now_ms();
        self.queue.defer_suspended(now)?;
        let idle = self.idle_agents();
        if idle.is_empty() {
            return Ok(());
        }
        for transport in self.idle_transports() {
            self.queue.refill(transport, now)?;
        }
        let idle = self.idle_agents_open();
        // An agent holding a connection to a hop gets that hop's next job
        // first; agents without one are served after, then the holders of
        // connections that have no work for their hop.
        let mut order: Vec<(Token, Transport, Option<String>)> = idle
            .iter()
            .filter(|(_, _, open)| open.is_some())
            .cloned()
            .collect();
        order.extend(idle.iter().map(|(t, tr, _)| (*t, *tr, None)));
        let mut busy = Vec::new();
        for (token, transport, hop) in order {
            if busy.contains(&token) {
                continue;
            }
            let job = match &hop {
                Some(hop) => self.queue.next_job_for(transport, hop, now),
                None => self.queue.next_job(transport, now),
            };
            let Some(job) = job else {
                continue;
            };
            busy.push(token);
            let job_id = job.job_id;
            if let Some(peer) = self.peers.get_mut(&token) {
                if let Kind::Agent { job: slot, .. } = &mut peer.kind {
                    *slot = Some(job_id);
                }
            }
            self.send(token, &QmgrMessage::Deliver(job));
        }
        Ok(())
    }

    /// Accepts on both listeners, and says when to again: next turn if
    /// connections are left, after [`ACCEPT_PAUSE`] if accepting failed
    /// (out of descriptors: logged once until the backlogs are empty).
    fn accept_both(&mut self) {
        self.accept_due = None;
        let mut drained = true;
        for listener in [CONTROL, DELIVERY] {
            match self.accept(listener) {
                Accepted::Drained => {}
                Accepted::More => {
                    drained = false;
                    self.accept_due = Some(Instant::now());
                }
                Accepted::Failed(e) => {
                    drained = false;
                    if !self.starved {
                        log::warn!("accept: {e}: pausing new connections");
                    }
                    self.starved = true;
                    self.accept_due = Some(Instant::now() + ACCEPT_PAUSE);
                }
            }
        }
        if drained {
            self.starved = false;
        }
    }

    /// Accepts up to a turn's worth of connections on `listener`. Over
    /// [`MAX_PEERS`] or from a stranger, a connection is closed at once.
    fn accept(&mut self, listener: Token) -> Accepted {
        for _ in 0..ACCEPTS_PER_TURN {
            let accepted = if listener == CONTROL {
                self.control.accept()
            } else {
                self.delivery.accept()
            };
            let (mut stream, _) = match accepted {
                Ok(pair) => pair,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Accepted::Drained,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // EMFILE, ENFILE, ENOBUFS...: never fatal.
                Err(e) => return Accepted::Failed(e),
            };
            let Ok(creds) = getsockopt(&stream, PeerCredentials) else {
                continue;
            };
            if !is_privileged(creds.uid(), creds.gid()) {
                log::warn!(
                    "{}: refused a connection from uid {}: only root, the queue manager's user or its group",
                    if listener == CONTROL { "qmgr.sock" } else { "delivery.sock" },
                    creds.uid()
                );
                continue;
            }
            if self.peers.len() >= MAX_PEERS {
                if !self.at_capacity {
                    log::warn!("{MAX_PEERS} connections: refusing more until some close");
                    self.at_capacity = true;
                }
                continue;
            }
            self.at_capacity = false;
            let token = Token(self.next_token);
            self.next_token += 1;
            if self
                .poll
                .registry()
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                .is_err()
            {
                continue;
            }
            let (kind, hello) = if listener == CONTROL {
                (Kind::Control, sluice_ipc::qmgr::hello())
            } else {
                (
                    Kind::Agent {
                        transport: None,
                        job: None,
                        open: None,
                    },
                    Hello {
                        protocol: delivery::PROTOCOL.to_owned(),
                        version: delivery::VERSION,
                    },
                )
            };
            self.peers.insert(
                token,
                Peer {
                    stream,
                    decoder: FrameDecoder::new(),
                    out: Vec::new(),
                    kind,
                    uid: creds.uid(),
                    gid: creds.gid(),
                    closed: false,
                    deaf: false,
                    ready: false,
                },
            );
            self.send(token, &hello);
        }
        Accepted::More
    }

    fn send<T: serde::Serialize>(&mut self, token: Token, message: &T) {
        let Ok(frame) = sluice_ipc::encode(message) else {
            return;
        };
        if let Some(peer) = self.peers.get_mut(&token) {
            if peer.deaf {
                return;
            }
            peer.out.extend_from_slice(&frame);
        }
        self.flush(token);
    }

    fn flush(&mut self, token: Token) {
        let Some(peer) = self.peers.get_mut(&token) else {
            return;
        };
        let mut written = 0;
        while written < peer.out.len() {
            match peer.stream.write(&peer.out[written..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    peer.deaf = true;
                    break;
                }
            }
        }
        if peer.deaf {
            // Its input is still served; the connection ends at its EOF.
            peer.out.clear();
            self.mark_ready(token);
            return;
        }
        peer.out.drain(..written);
        if peer.out.len() > MAX_UNSENT {
            log::warn!("a peer does not read its answers: closing that connection");
            peer.closed = true;
        }
        if peer.closed {
            // Dropped in its turn.
            self.mark_ready(token);
        }
    }

    /// Queues `token` for a share of the next turn, once.
    fn mark_ready(&mut self, token: Token) {
        if let Some(peer) = self.peers.get_mut(&token) {
            if !peer.ready {
                peer.ready = true;
                self.ready.push_back(token);
            }
        }
    }

    /// Gives each peer with input one share, in turn; those with more
    /// left go to the back of the line for the next turn.
    fn serve_ready(&mut self) -> anyhow::Result<()> {
        for _ in 0..self.ready.len() {
            let Some(token) = self.ready.pop_front() else {
                break;
            };
            let more = self.serve(token)?;
            let closed = self.peers.get(&token).is_none_or(|p| p.closed);
            if closed {
                self.drop_peer(token)?;
            } else if let Some(peer) = self.peers.get_mut(&token) {
                peer.ready = more;
                if more {
                    self.ready.push_back(token);
                }
            }
        }
        Ok(())
    }

    /// One peer's share: decodes what is buffered, then reads at most what
    /// completes one maximal frame, and again, until its share is used
    /// (true: it may have more) or the socket has nothing more now.
    fn serve(&mut self, token: Token) -> anyhow::Result<bool> {
        let mut buf = [0u8; 16 * 1024];
        let (mut frames, mut bytes) = (0, 0);
        loop {
            while self.handle_frame(token)? {
                frames += 1;
                if frames >= FRAMES_PER_TURN {
                    return Ok(true);
                }
            }
            if bytes >= BYTES_PER_TURN {
                return Ok(true);
            }
            let Some(peer) = self.peers.get_mut(&token) else {
                return Ok(false);
            };
            if peer.closed {
                return Ok(false);
            }
            // After a decode that needed more bytes there is always room.
            let room = peer.decoder.room().min(buf.len());
            match peer.stream.read(&mut buf[..room]) {
                Ok(0) => {
                    peer.closed = true;
                    return Ok(false);
                }
                Ok(n) => {
                    peer.decoder.push(&buf[..n]);
                    bytes += n;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    peer.closed = true;
                    return Ok(false);
                }
            }
        }
    }

    /// Decodes and handles one buffered frame; false if there is none
    /// whole yet, or the peer is closed (a bad frame closes it).
    fn handle_frame(&mut self, token: Token) -> anyhow::Result<bool> {
        let Some(peer) = self.peers.get_mut(&token) else {
            return Ok(false);
        };
        if peer.closed {
            return Ok(false);
        }
        match &peer.kind {
            Kind::Control => match peer.decoder.next_message::<Request>() {
                Ok(Some(request)) => self.handle_request(token, request)?,
                Ok(None) => return Ok(false),
                Err(e) => {
                    log::warn!("qmgr.sock: {e}: closing that connection");
                    peer.closed = true;
                    return Ok(false);
                }
            },
            Kind::Agent { .. } => match peer.decoder.next_message::<AgentMessage>() {
                Ok(Some(message)) => self.handle_agent(token, message)?,
                Ok(None) => return Ok(false),
                Err(e) => {
                    log::warn!("delivery.sock: {e}: closing that connection");
                    peer.closed = true;
                    return Ok(false);
                }
            },
        }
        Ok(true)
    }

    fn handle_request(&mut self, token: Token, request: Request) -> anyhow::Result<()> {
        match request {
            // The hints of a turn are imported together at its end (one
            // transaction); a peer that sends a bad one is broken or
            // hostile, and is closed rather than logged for each.
            Request::NewMail { queue_id } => match queue_id.parse() {
                Ok(id) => self.hinted.push(id),
                Err(_) => {
                    log::warn!(
                        "qmgr.sock: hint with a bad queue ID {:?}: closing that connection",
                        sluice_log::printable(&queue_id, 40)
                    );
                    if let Some(peer) = self.peers.get_mut(&token) {
                        peer.closed = true;
                    }
                }
            },
            Request::Etrn { domain } => {
                let response = match self.queue.etrn(&domain) {
                    Ok(messages) => Response::Done { messages },
                    Err(e) => Response::Failed {
                        reason: e.to_string(),
                    },
                };
                self.send(token, &response);
            }
            Request::Change { action, target } => {
                let (uid, gid) = self
                    .peers
                    .get(&token)
                    .map(|p| (p.uid, p.gid))
                    .unwrap_or((u32::MAX, u32::MAX));
                let response = if !is_privileged(uid, gid) {
                    log::warn!("queue change {action:?} refused to uid {uid}");
                    Response::Denied {
                        reason: "only root or the sluice group may change the queue".into(),
                    }
                } else {
                    match self.queue.change(action, &target) {
                        Ok(messages) => {
                            log::info!(
                                "queue change {action:?} by uid {uid}: {messages} message(s)"
                            );
                            Response::Done { messages }
                        }
                        Err(e) => Response::Failed {
                            reason: e.to_string(),
                        },
                    }
                };
                self.send(token, &response);
            }
        }
        Ok(())
    }

    fn handle_agent(&mut self, token: Token, message: AgentMessage) -> anyhow::Result<()> {
        match message {
            AgentMessage::Ready { transport, pid } => {
                if let Some(Peer {
                    kind: Kind::Agent { transport: t, .. },
                    ..
                }) = self.peers.get_mut(&token)
                {
                    *t = Some(transport);
                }
                log::debug!("delivery agent pid {pid} ready for {transport:?}");
            }
            AgentMessage::Done(result) => {
                let expected = match self.peers.get_mut(&token) {
                    Some(Peer {
                        kind: Kind::Agent { job, open, .. },
                        ..
                    }) => {
                        open.clone_from(&result.open_connection);
                        job.take()
                    }
                    _ => None,
                };
                if expected == Some(result.job_id) {
                    self.queue.complete(result)?;
                } else {
                    log::warn!(
                        "delivery agent answered job {} it did not have",
                        result.job_id
                    );
                    if let Some(job) = expected {
                        self.queue.abandon(job)?;
                    }
                }
            }
            AgentMessage::Closed { next_hop } => {
                log::debug!("delivery agent closed its idle connection to {next_hop}");
                if let Some(Peer {
                    kind: Kind::Agent { open, .. },
                    ..
                }) = self.peers.get_mut(&token)
                {
                    if open.as_deref() == Some(next_hop.as_str()) {
                        *open = None;
                    }
                }
            }
        }
        Ok(())
    }

    fn drop_peer(&mut self, token: Token) -> anyhow::Result<()> {
        if let Some(mut peer) = self.peers.remove(&token) {
            let _ = self.poll.registry().deregister(&mut peer.stream);
            if let Kind::Agent { job: Some(job), .. } = peer.kind {
                log::warn!("delivery agent went away during job {job}");
                self.queue.abandon(job)?;
            }
        }
        Ok(())
    }
}

/// Root, the queue manager's own user, or a member of its group.
fn is_privileged(uid: u32, gid: u32) -> bool {
    let my_uid = nix::unistd::geteuid().as_raw();
    let my_gid = nix::unistd::getegid();
    if uid == 0 || uid == my_uid || gid == my_gid.as_raw() {
        return true;
    }
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten();
    let group = nix::unistd::Group::from_gid(my_gid).ok().flatten();
    match (user, group) {
        (Some(user), Some(group)) => group.mem.contains(&user.name),
        _ => false,
    }
}

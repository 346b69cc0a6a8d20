//! The event loop: accepts connections, moves bytes between sockets and
//! session machines, answers their asks (commit, ETRN), enforces the
//! per-process connection cap and drains on SIGTERM.
//!
//! # Must never
//! Block on one client (every socket is non-blocking; the only waits are the
//! queue file's fsyncs), or buffer without bound for a client that does not
//! read its replies.

use std::collections::HashMap;
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use sluice_config::Config;
use sluice_proto::server::{Ask, Commit, Event, Output, Peer, Session, Verdict};
use sluice_spool::{QueueId, Spool};

use crate::committer::{self, Committer};

const SIGNALS: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_LISTENER: usize = 2;
const FIRST_CONNECTION: usize = 1 << 16;
/// Stop reading from a client while this much of its replies is unsent.
const OUT_HIGH_WATER: usize = 256 * 1024;
const READ_CHUNK: usize = 64 * 1024;
/// How long an ETRN may wait for the queue manager.
const ETRN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

struct Connection {
    stream: TcpStream,
    session: Session,
    peer: SocketAddr,
    out: Vec<u8>,
    /// The machine said Close: flush, then drop.
    closing: bool,
    /// The client closed its side.
    eof: bool,
}

/// What answering an ask needs, apart from the connection table.
struct Context {
    hostname: String,
    /// Local recipients (aliases, virtual map, system users), asked at
    /// RCPT time so that unknown users are refused, not bounced later.
    recipients: sluice_mailbox::Directory,
    committer: Committer,
    qmgr_socket: PathBuf,
    qmgr: Option<UnixStream>,
}

/// The running server.
pub(crate) struct Server {
    poll: Poll,
    signals: Signals,
    listeners: Vec<TcpListener>,
    connections: HashMap<Token, Connection>,
    next_token: usize,
    session_config: Arc<sluice_proto::server::Config>,
    config: Config,
    context: Context,
    /// Set on SIGTERM: when to give up on sessions still running.
    stopping: Option<Instant>,
    read_buf: Vec<u8>,
}

/// The protocol machine's settings, from the configuration.
fn session_config(config: &Config, hostname: &str) -> sluice_proto::server::Config {
    use sluice_proto::server::{BareNewline, Limits};
    let s = &config.smtpd;
    sluice_proto::server::Config {
        hostname: hostname.to_owned(),
        limits: Limits {
            max_line_length: s.max_line_length,
            max_message_size: s.max_message_size,
            max_recipients: s.max_recipients,
            max_errors: s.max_errors,
            command_timeout: s.command_timeout,
            data_timeout: s.data_timeout,
            session_timeout: s.session_timeout,
        },
        local_domains: config.local_domains.clone(),
        relay_domains: config.relay_domains.clone(),
        bare_newline: match s.bare_newline {
            sluice_config::BareNewline::Reject => BareNewline::Reject,
            sluice_config::BareNewline::Normalize => BareNewline::Normalize,
        },
        vrfy_enabled: s.vrfy,
        expn_enabled: s.expn,
        check_local_recipients: true,
    }
}

impl Server {
    pub(crate) fn new(
        config: Config,
        hostname: String,
        listeners: Vec<std::net::TcpListener>,
    ) -> anyhow::Result<Self> {
        let poll = Poll::new()?;
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let mut mio_listeners = Vec::with_capacity(listeners.len());
        for (i, l) in listeners.into_iter().enumerate() {
            l.set_nonblocking(true)?;
            let mut l = TcpListener::from_std(l);
            poll.registry()
                .register(&mut l, Token(FIRST_LISTENER + i), Interest::READABLE)?;
            mio_listeners.push(l);
        }
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER)?);
        let context = Context {
            recipients: sluice_mailbox::Directory::new(sluice_mailbox::Settings::from_config(
                &config,
            )),
            committer: Committer::start(
                Spool::new(&config.spool_dir),
                sluice_cleanup::Settings {
                    hostname: hostname.clone(),
                },
                waker,
            )?,
            qmgr_socket: config.run_dir.join("qmgr.sock"),
            qmgr: None,
            hostname: hostname.clone(),
        };
        Ok(Server {
            poll,
            signals,
            listeners: mio_listeners,
            connections: HashMap::new(),
            next_token: FIRST_CONNECTION,
            session_config: Arc::new(session_config(&config, &hostname)),
            config,
            context,
            stopping: None,
            read_buf: vec![0; READ_CHUNK],
        })
    }

    pub(crate) fn run(&mut self) -> anyhow::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            if let Some(deadline) = self.stopping {
                if self.connections.is_empty() {
                    return Ok(());
                }
                if now >= deadline {
                    log::warn!(
                        "stop timeout: dropping {} session(s) still running",
                        self.connections.len()
                    );
                    return Ok(());
                }
            }
            let timeout = self
                .next_deadline()
                .map(|at| at.saturating_duration_since(now));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != ErrorKind::Interrupted {
                    return Err(e.into());
                }
            }
            for event in events.iter() {
                match event.token() {
                    SIGNALS => self.handle_signals(),
                    WAKER => self.committed(),
                    Token(t) if (FIRST_LISTENER..FIRST_CONNECTION).contains(&t) => {
                        self.accept(t - FIRST_LISTENER);
                    }
                    token => self.service(token, event.is_readable(), event.is_writable()),
                }
            }
            self.expire(Instant::now());
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.connections
            .values()
            .filter_map(|c| c.session.poll_timeout())
            .chain(self.stopping)
            .min()
    }

    fn handle_signals(&mut self) {
        let signals: Vec<i32> = self.signals.pending().collect();
        for signal in signals {
            match signal {
                SIGTERM | SIGINT if self.stopping.is_none() => self.begin_stop(),
                // The master replaces daemons on reload; nothing to re-read here.
                _ => {}
            }
        }
    }

    fn begin_stop(&mut self) {
        let now = Instant::now();
        self.stopping = Some(now + self.config.smtpd.stop_timeout);
        for mut l in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut l);
        }
        let tokens: Vec<Token> = self.connections.keys().copied().collect();
        log::info!("stopping: {} session(s) in flight", tokens.len());
        for token in tokens {
            if let Some(c) = self.connections.get_mut(&token) {
                c.session.handle_shutdown(now);
            }
            self.drive(token);
        }
    }

    fn accept(&mut self, index: usize) {
        loop {
            let Some(listener) = self.listeners.get(index) else {
                return;
            };
            let (mut stream, peer) = match listener.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("accept: {e}");
                    return;
                }
            };
            if self.connections.len() >= self.config.smtpd.max_connections {
                log::warn!(
                    "too many connections: refusing {}",
                    sluice_log::line::peer(None, peer.ip())
                );
                let reply = sluice_proto::reply::too_many_connections(&self.context.hostname);
                let _ = stream.write(&reply.to_bytes());
                continue;
            }
            let _ = stream.set_nodelay(true);
            let token = Token(self.next_token);
            self.next_token = self.next_token.wrapping_add(1).max(FIRST_CONNECTION);
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                token,
                Interest::READABLE | Interest::WRITABLE,
            ) {
                log::warn!("register: {e}");
                continue;
            }
            let ip = canonical(peer.ip());
            log::info!("{}", sluice_log::line::connect(None, ip));
            let trusted = self
                .config
                .smtpd
                .trusted_networks
                .iter()
                .any(|n| n.contains(ip));
            let session = Session::new(
                Arc::clone(&self.session_config),
                Peer {
                    addr: SocketAddr::new(ip, peer.port()),
                    trusted,
                    hostname: None,
                },
                Instant::now(),
            );
            self.connections.insert(
                token,
                Connection {
                    stream,
                    session,
                    peer: SocketAddr::new(ip, peer.port()),
                    out: Vec::new(),
                    closing: false,
                    eof: false,
                },
            );
            self.drive(token);
        }
    }

    /// Reads what the socket has, feeds the machine, writes what is due.
    fn service(&mut self, token: Token, readable: bool, writable: bool) {
        if writable {
            self.flush(token);
        }
        if readable {
            self.read(token);
        }
    }

    fn read(&mut self, token: Token) {
        loop {
            let Some(c) = self.connections.get_mut(&token) else {
                return;
            };
            if c.closing || c.eof || c.out.len() > OUT_HIGH_WATER || !c.session.wants_input() {
                break;
            }
            match c.stream.read(&mut self.read_buf) {
                Ok(0) => {
                    c.eof = true;
                    break;
                }
                Ok(n) => {
                    c.session.handle_input(&self.read_buf[..n], Instant::now());
                    self.drive(token);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    c.eof = true;
                    break;
                }
            }
        }
        self.finish_if_done(token);
    }

    /// Takes every output of the machine: replies to the out buffer, asks
    /// answered at once, log events logged.
    fn drive(&mut self, token: Token) {
        let Some(c) = self.connections.get_mut(&token) else {
            return;
        };
        while let Some(output) = c.session.poll_output() {
            match output {
                Output::Send(bytes) => c.out.extend_from_slice(&bytes),
                Output::Ask(Ask::Commit(commit)) => {
                    // The session waits (reads nothing more) until the
                    // commit thread answers; see `committed`.
                    if let Err(verdict) = self.context.commit(token, commit) {
                        c.session.handle_verdict(verdict, Instant::now());
                    }
                }
                Output::Ask(Ask::CheckRecipient { address }) => {
                    let verdict = match self.context.recipients.lookup(&address) {
                        sluice_mailbox::Lookup::Deliverable => Verdict::RecipientKnown,
                        sluice_mailbox::Lookup::Unknown => Verdict::RecipientUnknown,
                        sluice_mailbox::Lookup::Unavailable => Verdict::RecipientUnavailable,
                    };
                    c.session.handle_verdict(verdict, Instant::now());
                }
                Output::Ask(Ask::Etrn { domain }) => {
                    let verdict = self.context.etrn(&domain, c.peer.ip());
                    c.session.handle_verdict(verdict, Instant::now());
                }
                Output::Log(event) => log_event(&event, &c.session, c.peer.ip()),
                Output::Close => c.closing = true,
            }
        }
        self.flush(token);
    }

    fn flush(&mut self, token: Token) {
        let Some(c) = self.connections.get_mut(&token) else {
            return;
        };
        let was_high = c.out.len() > OUT_HIGH_WATER;
        let mut written = 0;
        while written < c.out.len() {
            match c.stream.write(&c.out[written..]) {
                Ok(0) => {
                    c.eof = true;
                    break;
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    c.eof = true;
                    c.out.clear();
                    written = 0;
                    break;
                }
            }
        }
        c.out.drain(..written);
        let resume = was_high && c.out.len() <= OUT_HIGH_WATER;
        self.finish_if_done(token);
        if resume {
            // Reading stopped at the high-water mark; the readiness event
            // was consumed then, so read again now.
            self.read(token);
        }
    }

    fn finish_if_done(&mut self, token: Token) {
        let Some(c) = self.connections.get(&token) else {
            return;
        };
        let done = (c.closing && c.out.is_empty()) || c.eof;
        if !done {
            return;
        }
        if let Some(mut c) = self.connections.remove(&token) {
            let _ = self.poll.registry().deregister(&mut c.stream);
            if c.eof && !c.session.is_closed() {
                log::info!(
                    "{}",
                    sluice_log::line::after(
                        "lost connection",
                        c.session.stage(),
                        None,
                        c.peer.ip()
                    )
                );
            }
            let counts: Vec<_> = c.session.command_stats().iter().collect();
            log::info!(
                "{}",
                sluice_log::line::disconnect(None, c.peer.ip(), &counts)
            );
        }
    }

    /// Answers the sessions whose messages the commit thread has finished
    /// with: 250 only for an `Ok`.
    fn committed(&mut self) {
        for done in self.context.committer.results() {
            let queue_id = done.id.to_string();
            let verdict = match done.result {
                Ok(()) => {
                    log::info!(
                        "{}",
                        sluice_log::line::client(
                            &queue_id,
                            done.client.hostname.as_deref(),
                            done.client.addr
                        )
                    );
                    self.context.hint_qmgr(&queue_id);
                    Verdict::Queued { queue_id }
                }
                Err(e) => {
                    log::error!("{queue_id}: queue file write error: {e}");
                    Verdict::TempFail
                }
            };
            let Some(c) = self.connections.get_mut(&done.token) else {
                // The client left while its message was being committed:
                // the file stands (it may be delivered twice if the client
                // sends it again, never lost).
                continue;
            };
            c.session.handle_verdict(verdict, Instant::now());
            self.drive(done.token);
            // Input that waited behind the commit can be read now.
            self.read(done.token);
        }
    }

    fn expire(&mut self, now: Instant) {
        let due: Vec<Token> = self
            .connections
            .iter()
            .filter(|(_, c)| c.session.poll_timeout().is_some_and(|t| t <= now))
            .map(|(t, _)| *t)
            .collect();
        for token in due {
            if let Some(c) = self.connections.get_mut(&token) {
                c.session.handle_timeout(now);
            }
            self.drive(token);
        }
    }
}

impl Context {
    /// Hands a finished message to the commit thread. The answer comes
    /// later through `Server::committed`; only an `Ok` from the spool
    /// becomes `Verdict::Queued`, the only way the machine says 250. `Err`
    /// is the verdict to give at once (the commit thread is gone).
    fn commit(&mut self, token: Token, commit: Commit) -> Result<(), Verdict> {
        let id = QueueId::generate();
        let arrival = SystemTime::now();
        let request = committer::Request {
            token,
            id,
            arrival,
            client: commit.client,
            envelope: commit.envelope,
            content: commit.content,
        };
        self.committer.submit(request).map_err(|r| {
            log::error!("{}: the commit thread is gone", r.id);
            Verdict::TempFail
        })
    }

    /// ETRN: asks the queue manager to attempt the domain's deferred mail
    /// now. A rare command: the loop waits for the answer, at most
    /// [`ETRN_TIMEOUT`].
    fn etrn(&mut self, domain: &str, addr: IpAddr) -> Verdict {
        use sluice_ipc::qmgr::{Request, Response, PROTOCOL, VERSION};
        let hello = sluice_ipc::Hello {
            protocol: PROTOCOL.to_owned(),
            version: VERSION,
        };
        let request = Request::Etrn {
            domain: domain.to_owned(),
        };
        let answer = sluice_ipc::call::call::<_, Response>(
            &self.qmgr_socket,
            &hello,
            &request,
            ETRN_TIMEOUT,
        );
        let peer = sluice_log::line::peer(None, addr);
        match answer {
            Ok(Response::Done { messages }) => {
                log::info!(
                    "ETRN {} from {peer}: {messages} message(s) flushed",
                    sluice_log::printable(domain, 255)
                );
                Verdict::EtrnStarted
            }
            Ok(other) => {
                log::warn!(
                    "ETRN {} from {peer}: queue manager said {other:?}",
                    sluice_log::printable(domain, 255)
                );
                Verdict::EtrnUnavailable
            }
            Err(e) => {
                log::warn!(
                    "ETRN {} from {peer}: {e}",
                    sluice_log::printable(domain, 255)
                );
                Verdict::EtrnUnavailable
            }
        }
    }

    /// Tells the queue manager about a new file, if it listens. Never waits:
    /// a hint that cannot be sent at once is dropped (the qmgr scans too).
    fn hint_qmgr(&mut self, queue_id: &str) {
        if self.qmgr.is_none() {
            let Ok(stream) = UnixStream::connect(&self.qmgr_socket) else {
                return;
            };
            if stream.set_nonblocking(true).is_err() {
                return;
            }
            self.qmgr = Some(stream);
        }
        let request = sluice_ipc::qmgr::Request::NewMail {
            queue_id: queue_id.to_owned(),
        };
        let Ok(frame) = sluice_ipc::encode(&request) else {
            return;
        };
        let sent = self
            .qmgr
            .as_mut()
            .is_some_and(|s| s.write(&frame).is_ok_and(|n| n == frame.len()));
        if !sent {
            // A partial frame would desynchronise the stream: start over.
            self.qmgr = None;
        }
    }
}

/// IPv4 clients on a dual-stack socket appear as `::ffff:a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn log_event(event: &Event, session: &Session, addr: IpAddr) {
    let line = |what: &str, stage: &str| sluice_log::line::after(what, stage, None, addr);
    match event {
        Event::Rejected {
            stage,
            reply,
            sender,
            recipient,
            helo,
        } => log::info!(
            "{}",
            sluice_log::line::reject(&sluice_log::line::Rejection {
                stage,
                hostname: None,
                addr,
                reply,
                sender: sender.as_deref(),
                recipient: recipient.as_deref(),
                protocol: session.protocol().keyword(),
                helo: helo.as_deref(),
            })
        ),
        Event::TimedOut { stage } => log::info!("{}", line("timeout", stage)),
        Event::TooManyErrors { stage } => log::warn!("{}", line("too many errors", stage)),
        Event::LineTooLong { stage } => log::warn!("{}", line("line too long", stage)),
        Event::BareNewline { stage } => log::warn!("{}", line("bare <CR> or <LF> received", stage)),
        Event::ImproperPipelining { after } => {
            log::info!("{}", line("improper command pipelining", after));
        }
    }
}

//! SMTP and LMTP connections: blocking IO (TCP, TLS over TCP after
//! STARTTLS, or a Unix socket) driving the sans-IO client session
//! (`sluice_proto::client::Session`), every read and write bounded by the
//! session's current deadline, and the TLS handshake by its own.
//!
//! The addresses of the next hop are tried in order until one accepts the
//! connection and greets with 2xx; the first that does gets the whole
//! conversation. A host that greets with 4xx/5xx, or hangs up or times out
//! before greeting, passes to the next address (RFC 5321 §5.1); if none
//! does better, its reply is the one reported.
//!
//! TLS (see [`crate::tls`]): `may` asks for STARTTLS when offered; if the
//! handshake then fails, the same address is tried once more in plain
//! text on a new connection (Postfix does the same: opportunistic TLS must
//! not make mail undeliverable). `encrypt` and `verify` never fall back.
//! One log line per session says how it went: `... TLS connection
//! established to host[ip]:port: TLSv1.3 with cipher ...`, or
//! `host[ip]:port: plain text session (why)`. LMTP sessions never use
//! TLS (the LMTP server is our own organization's, usually on a Unix
//! socket).
//!
//! Reuse: a session that ends healthy is kept open ([`Connection`]) when
//! `smtp.reuse_max_messages` allows more; the next job for the same next
//! hop goes over it with RSET first ([`reuse`]); if that RSET fails the
//! caller connects afresh. [`Connection::close`] says QUIT, waiting at most
//! [`CLOSE_WAIT`] for the answer.
//!
//! Relay names in the log: `host[ip]:port`, and for LMTP over a Unix
//! socket `localhost[/path/to/socket]`.
//!
//! # Must never
//! Block without a deadline, or report an outcome the session did not
//! give: when no address answers, every recipient is deferred `4.4.1` with
//! no remote MTA, which tells the queue manager the hop is unreachable.
//!
//! # Security
//! The peer is hostile; its bytes go only to the session machine (which
//! bounds what it keeps) or to rustls. Plain text read before a STARTTLS
//! handshake is discarded by the session.
//!
//! # Errors
//! Network and TLS errors become outcomes (deferrals); nothing here fails
//! the process.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use sluice_config::TlsPolicy;
use sluice_ipc::delivery::Handoff;
use sluice_proto::client::{Output, Params, Protocol, RcptOutcome, Session, Status, Tls};
use sluice_proto::reply::{Enhanced, Reply};

use crate::route::Host;
use crate::tls::{Contexts, TlsStream};

/// How long QUIT on a connection being dropped may take.
pub(crate) const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// What every connection needs from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// TCP connect timeout.
    pub(crate) connect_timeout: Duration,
    /// The TLS client configurations.
    pub(crate) tls: Contexts,
    /// Longest TLS handshake.
    pub(crate) tls_timeout: Duration,
    /// Messages per connection (1: no reuse).
    pub(crate) reuse_max_messages: usize,
}

/// Where a job goes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target<'a> {
    /// SMTP to these hosts, in order, with this STARTTLS policy.
    Smtp(&'a [Host], TlsPolicy),
    /// LMTP to these hosts, in order.
    LmtpInet(&'a [Host]),
    /// LMTP over this Unix socket.
    LmtpUnix(&'a Path),
}

/// The result of one attempt on one next hop.
#[derive(Debug)]
pub(crate) struct Attempt {
    /// One outcome per recipient of the params, in order.
    pub(crate) outcomes: Vec<RcptOutcome>,
    /// `host[ip]:port` of the server talked to, or `none`.
    pub(crate) relay: String,
    /// The host, once a server greeted us.
    pub(crate) remote_mta: Option<String>,
    /// Who owes the success reports of the recipients it took.
    pub(crate) handoff: Handoff,
    /// Connecting (TCP, TLS) took this long.
    pub(crate) setup: Duration,
    /// The SMTP conversation took this long.
    pub(crate) transmission: Duration,
}

/// An outcome made here, not by the server.
pub(crate) fn local_outcome(
    index: usize,
    status: Status,
    dsn: Enhanced,
    text: &str,
) -> RcptOutcome {
    let code = match dsn.class {
        2 => 250,
        5 => 550,
        _ => 451,
    };
    RcptOutcome {
        index,
        status,
        dsn,
        reply: Reply::new(code, Some(dsn), text),
        remote: false,
    }
}

/// The socket under a session.
enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream>),
    Unix(UnixStream),
    /// Taken apart for the handshake, which failed.
    Gone,
}

impl Stream {
    fn set_timeouts(&self, read: Option<Duration>, write: Option<Duration>) -> io::Result<()> {
        let tcp = match self {
            Stream::Tcp(s) => s,
            Stream::Tls(s) => &s.sock,
            Stream::Unix(s) => {
                s.set_read_timeout(read)?;
                return s.set_write_timeout(write);
            }
            Stream::Gone => return Ok(()),
        };
        tcp.set_read_timeout(read)?;
        tcp.set_write_timeout(write)
    }

    fn gone() -> io::Error {
        io::Error::new(io::ErrorKind::NotConnected, "connection closed")
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
            Stream::Gone => Err(Stream::gone()),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
            Stream::Gone => Err(Stream::gone()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
            Stream::Gone => Err(Stream::gone()),
        }
    }
}

/// An idle connection kept for the next job to the same next hop.
pub(crate) struct Connection {
    stream: Stream,
    session: Session,
    /// The job's next hop it was opened for.
    pub(crate) next_hop: String,
    relay: String,
    remote_mta: String,
    handoff: Handoff,
    /// Messages sent over it so far.
    messages: usize,
    /// When it last went idle.
    pub(crate) idle_since: Instant,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("next_hop", &self.next_hop)
            .field("relay", &self.relay)
            .field("messages", &self.messages)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Says QUIT and drops the connection, waiting at most [`CLOSE_WAIT`].
    pub(crate) fn close(mut self) {
        self.session.quit(Instant::now());
        let _ = self.stream.set_timeouts(Some(CLOSE_WAIT), Some(CLOSE_WAIT));
        while let Some(output) = self.session.poll_output() {
            if let Output::Send(bytes) = output {
                let _ = self
                    .stream
                    .write_all(&bytes)
                    .and_then(|()| self.stream.flush());
            }
        }
        let mut buf = [0u8; 512];
        let _ = self.stream.read(&mut buf);
        log::debug!("closed the connection to {}", self.relay);
    }
}

/// Sends the message of `params` over `conn` (RSET first). `None` when
/// the RSET failed: nothing was sent, connect afresh. Otherwise the
/// attempt, and the connection back in `keep` if it can take more.
pub(crate) fn reuse(
    mut conn: Connection,
    params: Params,
    content: &[u8],
    cfg: &Config,
    keep: &mut Option<Connection>,
) -> Option<Attempt> {
    let started = Instant::now();
    let n = params.envelope.recipients.len();
    if !conn
        .session
        .next_message(params.envelope, params.message_size, started)
    {
        return None;
    }
    let done = converse(&mut conn.stream, &mut conn.session, content, None);
    if conn.session.is_reset_failed() {
        log::debug!("reusing the connection to {}: RSET failed", conn.relay);
        return None;
    }
    conn.messages += 1;
    let attempt = Attempt {
        outcomes: done.unwrap_or_else(|| no_result(n)),
        relay: conn.relay.clone(),
        remote_mta: Some(conn.remote_mta.clone()),
        handoff: conn.handoff,
        setup: Duration::ZERO,
        transmission: started.elapsed(),
    };
    park(conn, cfg, keep);
    Some(attempt)
}

/// Keeps an idle connection that may carry more, else closes it.
fn park(mut conn: Connection, cfg: &Config, keep: &mut Option<Connection>) {
    if !conn.session.is_idle() {
        return;
    }
    if conn.messages < cfg.reuse_max_messages {
        conn.idle_since = Instant::now();
        *keep = Some(conn);
    } else {
        conn.close();
    }
}

fn no_result(n: usize) -> Vec<RcptOutcome> {
    (0..n)
        .map(|i| {
            let text = "conversation ended without a result";
            local_outcome(i, Status::Deferred, Enhanced::new(4, 4, 2), text)
        })
        .collect()
}

/// The TLS step of one session.
struct TlsStep<'a> {
    contexts: &'a Contexts,
    host: &'a str,
    verify: bool,
    limit: Duration,
    relay: &'a str,
    /// Set when the handshake failed.
    failed: bool,
}

/// Connects to the first address of the target that answers and delivers
/// the message; a healthy session that may carry more is left in `keep`.
pub(crate) fn deliver(
    target: Target<'_>,
    next_hop: &str,
    mut params: Params,
    content: &[u8],
    cfg: &Config,
    keep: &mut Option<Connection>,
) -> Attempt {
    let n = params.envelope.recipients.len();
    let started = Instant::now();
    params.keep_open = cfg.reuse_max_messages > 1;
    let (hosts, policy) = match target {
        Target::LmtpUnix(path) => {
            params.protocol = Protocol::Lmtp;
            params.tls = Tls::Off;
            return deliver_unix(path, next_hop, params, content, cfg, keep);
        }
        Target::LmtpInet(hosts) => {
            params.protocol = Protocol::Lmtp;
            (hosts, TlsPolicy::None)
        }
        Target::Smtp(hosts, policy) => {
            params.protocol = Protocol::Smtp;
            (hosts, policy)
        }
    };
    params.tls = match policy {
        TlsPolicy::None => Tls::Off,
        TlsPolicy::May => Tls::Opportunistic,
        TlsPolicy::Encrypt | TlsPolicy::Verify => Tls::Required,
    };
    let mut last_error = String::from("no address to connect to");
    // A server that refused us in its greeting (4xx/5xx, or hung up or
    // timed out before greeting): kept for the report if no later host
    // does better (RFC 5321 §5.1: try the next one).
    let mut refused: Option<Attempt> = None;
    'hosts: for (host, addr) in hosts
        .iter()
        .flat_map(|h| h.addrs.iter().map(move |a| (h, a)))
    {
        let relay = format!("{}[{}]:{}", host.name, addr.ip(), addr.port());
        let mut params = params.clone();
        // At most twice: `may` retries in plain text after a failed
        // handshake.
        for _ in 0..2 {
            let tcp = match TcpStream::connect_timeout(addr, cfg.connect_timeout) {
                Ok(s) => s,
                Err(e) => {
                    log::debug!("connect to {relay}: {e}");
                    last_error = format!("connect to {relay}: {e}");
                    break;
                }
            };
            let connected = Instant::now();
            let _ = tcp.set_nodelay(true);
            let mut stream = Stream::Tcp(tcp);
            let mut session = Session::new(params.clone(), connected);
            let mut step = TlsStep {
                contexts: &cfg.tls,
                host: &host.name,
                verify: policy == TlsPolicy::Verify,
                limit: cfg.tls_timeout,
                relay: &relay,
                failed: false,
            };
            let done = converse(&mut stream, &mut session, content, Some(&mut step));
            if step.failed && policy == TlsPolicy::May && params.tls != Tls::Off {
                log::info!("{relay}: TLS handshake failed, trying again in plain text");
                params.tls = Tls::Off;
                continue;
            }
            if session.is_greeted() && !session.is_tls() && params.protocol == Protocol::Smtp {
                let why = match (params.tls, session.extensions()) {
                    (Tls::Off, _) if policy == TlsPolicy::May => {
                        "TLS handshake failed; retried in plain text"
                    }
                    (Tls::Off, _) => "TLS disabled by policy",
                    (_, Some(e)) if e.starttls => "STARTTLS refused",
                    (_, Some(_)) => "no STARTTLS offered",
                    (_, None) => "no ESMTP",
                };
                log::info!("{}", sluice_log::line::plain_session(&relay, why));
            }
            let handoff = handoff(params.protocol, &session);
            let attempt = Attempt {
                outcomes: done.unwrap_or_else(|| no_result(n)),
                relay: relay.clone(),
                remote_mta: session.is_greeted().then(|| host.name.clone()),
                handoff,
                setup: connected - started,
                transmission: connected.elapsed(),
            };
            if !session.is_greeted() {
                log::debug!("{relay}: no positive greeting, trying the next host");
                refused = Some(attempt);
                continue 'hosts;
            }
            let conn = Connection {
                stream,
                session,
                next_hop: next_hop.to_owned(),
                relay,
                remote_mta: host.name.clone(),
                handoff,
                messages: 1,
                idle_since: Instant::now(),
            };
            park(conn, cfg, keep);
            return attempt;
        }
    }
    refused.unwrap_or_else(|| unreachable_hop(n, &last_error, started))
}

/// Who owes the success reports after this session: LMTP is final
/// delivery; an SMTP server that offered DSN got NOTIFY and ORCPT and owes
/// them itself; one without DSN leaves Sluice to report `relayed`.
fn handoff(protocol: Protocol, session: &Session) -> Handoff {
    match protocol {
        Protocol::Lmtp => Handoff::Final,
        Protocol::Smtp if session.extensions().is_some_and(|e| e.dsn) => Handoff::PassedOn,
        Protocol::Smtp => Handoff::Relayed,
    }
}

fn unreachable_hop(n: usize, reason: &str, started: Instant) -> Attempt {
    let dsn = Enhanced::new(4, 4, 1);
    Attempt {
        outcomes: (0..n)
            .map(|i| local_outcome(i, Status::Deferred, dsn, reason))
            .collect(),
        relay: "none".to_owned(),
        remote_mta: None,
        handoff: Handoff::Relayed,
        setup: started.elapsed(),
        transmission: Duration::ZERO,
    }
}

/// LMTP over a Unix socket (connecting to one does not wait).
fn deliver_unix(
    path: &Path,
    next_hop: &str,
    params: Params,
    content: &[u8],
    cfg: &Config,
    keep: &mut Option<Connection>,
) -> Attempt {
    let n = params.envelope.recipients.len();
    let started = Instant::now();
    let relay = format!("localhost[{}]", path.display());
    let unix = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e) => {
            return unreachable_hop(n, &format!("connect to {relay}: {e}"), started);
        }
    };
    let connected = Instant::now();
    let mut stream = Stream::Unix(unix);
    let mut session = Session::new(params, connected);
    let done = converse(&mut stream, &mut session, content, None);
    let attempt = Attempt {
        outcomes: done.unwrap_or_else(|| no_result(n)),
        relay: relay.clone(),
        remote_mta: session.is_greeted().then(|| "localhost".to_owned()),
        handoff: Handoff::Final,
        setup: connected - started,
        transmission: connected.elapsed(),
    };
    let conn = Connection {
        stream,
        session,
        next_hop: next_hop.to_owned(),
        relay,
        remote_mta: "localhost".to_owned(),
        handoff: Handoff::Final,
        messages: 1,
        idle_since: Instant::now(),
    };
    park(conn, cfg, keep);
    attempt
}

/// Time left until the session's deadline (at least 1 ms: a zero socket
/// timeout would mean "forever").
fn left(session: &Session) -> Duration {
    session
        .poll_timeout()
        .map(|d| d.saturating_duration_since(Instant::now()))
        .unwrap_or(Duration::ZERO)
        .max(Duration::from_millis(1))
}

/// A read or write failed: a timeout if the deadline passed, else a lost
/// connection.
fn fail_io(session: &mut Session, e: &io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) {
        session.handle_timeout(Instant::now());
    }
    if !session.is_closed() {
        log::debug!("connection error: {e}");
        session.handle_disconnect(Instant::now());
    }
}

fn write(stream: &mut Stream, session: &mut Session, bytes: &[u8]) -> bool {
    let t = Some(left(session));
    let result = stream
        .set_timeouts(t, t)
        .and_then(|()| stream.write_all(bytes))
        .and_then(|()| stream.flush());
    match result {
        Ok(()) => true,
        Err(e) => {
            fail_io(session, &e);
            false
        }
    }
}

/// The session asked for TLS: hand the TCP stream to rustls.
fn start_tls(stream: &mut Stream, session: &mut Session, tls: Option<&mut TlsStep<'_>>) {
    let now = Instant::now();
    let Some(step) = tls else {
        session.handle_tls_failed(Enhanced::new(4, 7, 5), "no TLS for this connection", now);
        return;
    };
    let Stream::Tcp(tcp) = std::mem::replace(stream, Stream::Gone) else {
        step.failed = true;
        session.handle_tls_failed(Enhanced::new(4, 7, 5), "TLS over TLS", now);
        return;
    };
    match step
        .contexts
        .handshake(tcp, step.host, step.verify, step.limit)
    {
        Ok((tls, established)) => {
            log::info!(
                "{}",
                sluice_log::line::tls_established(
                    established.trust,
                    step.relay,
                    &established.version,
                    &established.cipher
                )
            );
            *stream = Stream::Tls(Box::new(tls));
            session.handle_tls_ready(Instant::now());
        }
        Err(failure) => {
            log::warn!("{}: {}", step.relay, failure.text);
            step.failed = true;
            let text = format!("{}: {}", step.relay, failure.text);
            session.handle_tls_failed(failure.dsn, &text, Instant::now());
        }
    }
}

/// Runs the session until it closes or goes idle; returns its outcomes.
fn converse(
    stream: &mut Stream,
    session: &mut Session,
    content: &[u8],
    mut tls: Option<&mut TlsStep<'_>>,
) -> Option<Vec<RcptOutcome>> {
    let mut done = None;
    let mut broken = false;
    let mut buf = vec![0u8; 16 * 1024];
    let mut chunk = Vec::new();
    loop {
        while let Some(output) = session.poll_output() {
            match output {
                Output::Send(bytes) => {
                    broken = broken || !write(stream, session, &bytes);
                }
                Output::Content => loop {
                    chunk.clear();
                    let finished = session.next_content_chunk(content, &mut chunk, Instant::now());
                    if broken || !write(stream, session, &chunk) {
                        broken = true;
                        break;
                    }
                    if finished {
                        break;
                    }
                },
                Output::StartTls => start_tls(stream, session, tls.as_deref_mut()),
                Output::Done(outcomes) => done = Some(outcomes),
                Output::Close => return done,
            }
        }
        if session.is_idle() {
            return done;
        }
        let Some(deadline) = session.poll_timeout() else {
            return done;
        };
        let now = Instant::now();
        if now >= deadline {
            session.handle_timeout(now);
            continue;
        }
        if let Err(e) = stream.set_timeouts(Some(left(session)), Some(left(session))) {
            fail_io(session, &e);
            continue;
        }
        match stream.read(&mut buf) {
            Ok(0) => session.handle_disconnect(Instant::now()),
            Ok(n) => session.handle_input(&buf[..n], Instant::now()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                session.handle_timeout(Instant::now());
            }
            Err(e) => fail_io(session, &e),
        }
    }
}

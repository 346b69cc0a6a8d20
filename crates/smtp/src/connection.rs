//! One SMTP connection: blocking TCP IO driving the sans-IO client session
//! (`sluice_proto::client::Session`), with every read and write bounded by
//! the session's current deadline.
//!
//! The addresses of the next hop are tried in order until one accepts the
//! TCP connection; the first that does gets the whole conversation (a
//! refusing greeting does not move on to the next address yet: that comes
//! with MX handling, issue #4).
//!
//! # Must never
//! Block without a deadline, or report an outcome the session did not
//! give: when no address answers, every recipient is deferred `4.4.1` with
//! no remote MTA, which tells the queue manager the hop is unreachable.
//!
//! # Security
//! The peer is hostile; its bytes go only to the session machine, which
//! bounds what it keeps.
//!
//! # Errors
//! Network errors become outcomes (deferrals); nothing here fails the
//! process.

use std::io::{self, Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use sluice_proto::client::{Output, Params, RcptOutcome, Session, Status};
use sluice_proto::reply::{Enhanced, Reply};

use crate::route::Host;

/// The result of one attempt on one next hop.
#[derive(Debug)]
pub(crate) struct Attempt {
    /// One outcome per recipient of the params, in order.
    pub(crate) outcomes: Vec<RcptOutcome>,
    /// `host[ip]:port` of the server talked to, or `none`.
    pub(crate) relay: String,
    /// The host, once a server greeted us.
    pub(crate) remote_mta: Option<String>,
    /// Connecting (TCP) took this long.
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

/// Connects to the first address of `addrs` that answers and delivers.
pub(crate) fn deliver(
    hosts: &[Host],
    params: Params,
    content: &[u8],
    connect_timeout: Duration,
) -> Attempt {
    let n = params.envelope.recipients.len();
    let started = Instant::now();
    let mut last_error = String::from("no address to connect to");
    // The next host is tried only when one cannot be reached (moving on
    // after a refused greeting comes with MX routing, issue #4).
    for (host, addr) in hosts
        .iter()
        .flat_map(|h| h.addrs.iter().map(move |a| (h, a)))
    {
        let relay = format!("{}[{}]:{}", host.name, addr.ip(), addr.port());
        match TcpStream::connect_timeout(addr, connect_timeout) {
            Ok(mut stream) => {
                let connected = Instant::now();
                let _ = stream.set_nodelay(true);
                let mut session = Session::new(params, connected);
                let done = converse(&mut stream, &mut session, content);
                let outcomes = done.unwrap_or_else(|| {
                    (0..n)
                        .map(|i| {
                            let text = "conversation ended without a result";
                            local_outcome(i, Status::Deferred, Enhanced::new(4, 4, 2), text)
                        })
                        .collect()
                });
                return Attempt {
                    outcomes,
                    relay,
                    remote_mta: session.is_greeted().then(|| host.name.clone()),
                    setup: connected - started,
                    transmission: connected.elapsed(),
                };
            }
            Err(e) => {
                log::debug!("connect to {relay}: {e}");
                last_error = format!("connect to {relay}: {e}");
            }
        }
    }
    let dsn = Enhanced::new(4, 4, 1);
    Attempt {
        outcomes: (0..n)
            .map(|i| local_outcome(i, Status::Deferred, dsn, &last_error))
            .collect(),
        relay: "none".to_owned(),
        remote_mta: None,
        setup: started.elapsed(),
        transmission: Duration::ZERO,
    }
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

fn write(stream: &mut TcpStream, session: &mut Session, bytes: &[u8]) -> bool {
    let result = stream
        .set_write_timeout(Some(left(session)))
        .and_then(|()| stream.write_all(bytes));
    match result {
        Ok(()) => true,
        Err(e) => {
            fail_io(session, &e);
            false
        }
    }
}

/// Runs the session to its end; returns its outcomes.
fn converse(
    stream: &mut TcpStream,
    session: &mut Session,
    content: &[u8],
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
                Output::Done(outcomes) => done = Some(outcomes),
                Output::Close => return done,
            }
        }
        let Some(deadline) = session.poll_timeout() else {
            return done;
        };
        let now = Instant::now();
        if now >= deadline {
            session.handle_timeout(now);
            continue;
        }
        if let Err(e) = stream.set_read_timeout(Some(left(session))) {
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

//! The one client of Sluice's sockets, for every program:
//! - [`Client`]: blocking requests under a deadline, for tools and for a
//!   process that has nothing else to do meanwhile (the queue tool's
//!   changes; [`call`] is one request on a fresh connection);
//! - [`Hinter`]: requests that are never waited for, for event loops and
//!   one-shot hints (smtpd's and sluice-local's new-mail hints, ETRN's
//!   flush, sendmail's maildrop hint): it connects without blocking, sends
//!   a whole frame or nothing, and discards what the server says.
//!
//! # Must never
//! Wait past its deadline ([`Client`]) or at all ([`Hinter`]).

use std::io::{ErrorKind, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{de::DeserializeOwned, Serialize};

use crate::{encode, Error, FrameDecoder, Hello};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The socket could not be reached (the daemon is not running, or the
    /// caller may not use it).
    #[error("cannot connect to {path}: {source}")]
    Connect {
        /// The socket.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Reading or writing failed, or the deadline passed.
    #[error("talking to {path}: {source}")]
    Io {
        /// The socket.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The server closed the connection before answering.
    #[error("{path} closed the connection without an answer")]
    Closed {
        /// The socket.
        path: String,
    },
    /// The server speaks another protocol or version.
    #[error("{path} speaks {got:?}, not {want:?}")]
    Protocol {
        /// The socket.
        path: String,
        /// What it said.
        got: Hello,
        /// What was expected.
        want: Hello,
    },
    /// A frame was bad.
    #[error("bad frame from {path}: {source}")]
    Frame {
        /// The socket.
        path: String,
        /// Why.
        source: Error,
    },
}

impl CallError {
    /// True when the deadline passed (the request may still be carried out).
    pub fn is_timeout(&self) -> bool {
        matches!(self, CallError::Io { source, .. }
            if matches!(source.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock))
    }
}

/// A blocking connection to a Sluice socket whose server greeted as
/// expected.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    decoder: FrameDecoder,
    path: String,
    timeout: Duration,
}

impl Client {
    /// Connects to `path` and checks the server's greeting against
    /// `hello`; every later request waits at most `timeout` too.
    pub fn connect(path: &Path, hello: &Hello, timeout: Duration) -> Result<Client, CallError> {
        let name = path.display().to_string();
        let stream = UnixStream::connect(path).map_err(|source| CallError::Connect {
            path: name.clone(),
            source,
        })?;
        let mut client = Client {
            stream,
            decoder: FrameDecoder::new(),
            path: name,
            timeout,
        };
        client
            .stream
            .set_write_timeout(Some(timeout))
            .map_err(|e| client.io(e))?;
        let greeting: Hello = client.read_one(Instant::now() + timeout)?;
        if &greeting != hello {
            return Err(CallError::Protocol {
                path: client.path,
                got: greeting,
                want: hello.clone(),
            });
        }
        Ok(client)
    }

    /// Sends one request that has no response.
    pub fn send<Req: Serialize>(&mut self, request: &Req) -> Result<(), CallError> {
        let frame = encode(request).map_err(|source| CallError::Frame {
            path: self.path.clone(),
            source,
        })?;
        self.stream.write_all(&frame).map_err(|e| self.io(e))
    }

    /// Sends one request and returns its one response.
    pub fn call<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        request: &Req,
    ) -> Result<Resp, CallError> {
        let deadline = Instant::now() + self.timeout;
        self.send(request)?;
        self.read_one(deadline)
    }

    fn io(&self, source: std::io::Error) -> CallError {
        CallError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn read_one<T: DeserializeOwned>(&mut self, deadline: Instant) -> Result<T, CallError> {
        let mut buf = [0u8; 4096];
        loop {
            match self.decoder.next_message::<T>() {
                Ok(Some(message)) => return Ok(message),
                Ok(None) => {}
                Err(source) => {
                    return Err(CallError::Frame {
                        path: self.path.clone(),
                        source,
                    })
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.io(ErrorKind::TimedOut.into()));
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(|e| self.io(e))?;
            let n = match self.stream.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io(e)),
            };
            if n == 0 {
                return Err(CallError::Closed {
                    path: self.path.clone(),
                });
            }
            self.decoder.push(&buf[..n]);
        }
    }
}

/// Sends `request` to the server at `path` (which must greet with `hello`)
/// on a new connection and returns its one response, all within `timeout`
/// for each step.
pub fn call<Req: Serialize, Resp: DeserializeOwned>(
    path: &Path,
    hello: &Hello,
    request: &Req,
    timeout: Duration,
) -> Result<Resp, CallError> {
    Client::connect(path, hello, timeout)?.call(request)
}

/// Requests that are never waited for, on one connection kept between
/// them. A request that cannot be written whole at once is dropped (the
/// servers' hints are idempotent and backed by scans), and the connection
/// is made again for the next one.
#[derive(Debug)]
pub struct Hinter {
    path: PathBuf,
    stream: Option<mio::net::UnixStream>,
}

impl Hinter {
    /// A hinter for the socket at `path`; it connects on the first send.
    pub fn new(path: PathBuf) -> Hinter {
        Hinter { path, stream: None }
    }

    /// Sends `request` without waiting; true if the whole frame went out.
    pub fn send<Req: Serialize>(&mut self, request: &Req) -> bool {
        let Ok(frame) = encode(request) else {
            return false;
        };
        for fresh in [false, true] {
            if fresh || self.stream.is_none() {
                // A non-blocking connect never waits: a server whose
                // backlog is full refuses at once, and the hint is dropped.
                self.stream = mio::net::UnixStream::connect(&self.path).ok();
            }
            let Some(stream) = self.stream.as_mut() else {
                return false;
            };
            if !drain(stream) {
                // The server closed this connection: make another.
                self.stream = None;
                continue;
            }
            let sent = loop {
                match stream.write(&frame) {
                    Ok(n) => break n == frame.len(),
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => break false,
                }
            };
            if sent {
                return true;
            }
            // A partial frame would desynchronise the stream; a full
            // buffer means a server that does not read: start over next
            // time rather than wait.
            self.stream = None;
        }
        false
    }
}

/// Reads and discards what the server sent (its hello, answers nobody
/// waits for), so that its output never backs up. False once it closed.
fn drain(stream: &mut mio::net::UnixStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return e.kind() == ErrorKind::WouldBlock,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qmgr::{Request, Response};
    use std::os::unix::net::UnixListener;

    fn hello() -> Hello {
        Hello {
            protocol: crate::qmgr::PROTOCOL.into(),
            version: crate::qmgr::VERSION,
        }
    }

    #[test]
    fn a_call_checks_hello_and_returns_the_answer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            s.write_all(&encode(&hello()).expect("encode"))
                .expect("hello");
            let mut d = FrameDecoder::new();
            let mut buf = [0u8; 256];
            loop {
                let n = s.read(&mut buf).expect("read");
                d.push(&buf[..n]);
                if let Some(r) = d.next_message::<Request>().expect("frame") {
                    assert_eq!(
                        r,
                        Request::Etrn {
                            domain: "relay.test".into()
                        }
                    );
                    break;
                }
            }
            s.write_all(&encode(&Response::Done { messages: 3 }).expect("encode"))
                .expect("answer");
        });
        let answer: Response = call(
            &path,
            &hello(),
            &Request::Etrn {
                domain: "relay.test".into(),
            },
            Duration::from_secs(5),
        )
        .expect("call");
        assert_eq!(answer, Response::Done { messages: 3 });
        server.join().expect("server");
    }

    #[test]
    fn a_silent_server_times_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.sock");
        let _listener = UnixListener::bind(&path).expect("bind");
        let result: Result<Response, _> = call(
            &path,
            &hello(),
            &Request::Etrn { domain: "x".into() },
            Duration::from_millis(200),
        );
        assert!(matches!(result, Err(CallError::Io { .. })), "{result:?}");
    }

    #[test]
    fn hints_arrive_in_order_on_one_connection() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let mut hinter = Hinter::new(path);
        for id in ["A1", "B2", "C3"] {
            assert!(hinter.send(&Request::NewMail {
                queue_id: id.into()
            }));
        }
        let (mut s, _) = listener.accept().expect("accept");
        s.write_all(&encode(&hello()).expect("encode"))
            .expect("hello");
        let mut d = FrameDecoder::new();
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while got.len() < 3 {
            let n = s.read(&mut buf).expect("read");
            d.push(&buf[..n]);
            while let Some(Request::NewMail { queue_id }) = d.next_message().expect("frame") {
                got.push(queue_id);
            }
        }
        assert_eq!(got, ["A1", "B2", "C3"]);
        // The hello is discarded on the next send, which still arrives.
        let etrn = Request::Etrn {
            domain: "d.test".into(),
        };
        assert!(hinter.send(&etrn));
        let n = s.read(&mut buf).expect("read");
        d.push(&buf[..n]);
        assert_eq!(d.next_message::<Request>().expect("frame"), Some(etrn));
    }

    #[test]
    fn a_server_that_never_reads_makes_hints_fail_not_wait() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.sock");
        // Listening with a short backlog, never accepting nor reading:
        // the socket buffers and then the backlog fill; every send
        // returns, and some say false.
        let listener = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)
            .expect("socket");
        listener
            .bind(&socket2::SockAddr::unix(&path).expect("address"))
            .expect("bind");
        listener.listen(1).expect("listen");
        let mut hinter = Hinter::new(path);
        let big = Request::Etrn {
            domain: "x".repeat(60_000),
        };
        let refused = (0..100).filter(|_| !hinter.send(&big)).count();
        assert!(refused > 0, "a full socket must refuse, not block");
    }

    #[test]
    fn a_hint_to_a_missing_socket_is_dropped() {
        let mut hinter = Hinter::new("/nonexistent/s.sock".into());
        assert!(!hinter.send(&Request::Etrn { domain: "x".into() }));
    }

    #[test]
    fn a_missing_socket_says_so() {
        let result: Result<Response, _> = call(
            Path::new("/nonexistent/s.sock"),
            &hello(),
            &Request::Etrn { domain: "x".into() },
            Duration::from_millis(200),
        );
        assert!(matches!(result, Err(CallError::Connect { .. })));
    }
}

//! A blocking request/response call to a Sluice socket: connect, check the
//! server's [`Hello`], send one request, read one response, all under one
//! deadline. For tools and rare requests (ETRN, queue changes), never for
//! a daemon's hot path.
//!
//! # Must never
//! Wait past its deadline.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{de::DeserializeOwned, Serialize};

use crate::{encode, Error, FrameDecoder, Hello};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The socket could not be reached (the daemon is not running).
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

/// Sends `request` to the server at `path` (which must greet with `hello`)
/// and returns its one response.
pub fn call<Req: Serialize, Resp: DeserializeOwned>(
    path: &Path,
    hello: &Hello,
    request: &Req,
    timeout: Duration,
) -> Result<Resp, CallError> {
    let name = path.display().to_string();
    let io = |source| CallError::Io {
        path: name.clone(),
        source,
    };
    let deadline = Instant::now() + timeout;
    let mut stream = UnixStream::connect(path).map_err(|source| CallError::Connect {
        path: name.clone(),
        source,
    })?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut decoder = FrameDecoder::new();
    let greeting: Hello = read_one(&mut stream, &mut decoder, deadline, &name)?;
    if &greeting != hello {
        return Err(CallError::Protocol {
            path: name,
            got: greeting,
            want: hello.clone(),
        });
    }
    let frame = encode(request).map_err(|source| CallError::Frame {
        path: name.clone(),
        source,
    })?;
    stream.write_all(&frame).map_err(io)?;
    read_one(&mut stream, &mut decoder, deadline, &name)
}

fn read_one<T: DeserializeOwned>(
    stream: &mut UnixStream,
    decoder: &mut FrameDecoder,
    deadline: Instant,
    name: &str,
) -> Result<T, CallError> {
    let mut buf = [0u8; 4096];
    loop {
        match decoder.next_message::<T>() {
            Ok(Some(message)) => return Ok(message),
            Ok(None) => {}
            Err(source) => {
                return Err(CallError::Frame {
                    path: name.to_owned(),
                    source,
                })
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(CallError::Io {
                path: name.to_owned(),
                source: std::io::ErrorKind::TimedOut.into(),
            });
        }
        let io = |source| CallError::Io {
            path: name.to_owned(),
            source,
        };
        stream.set_read_timeout(Some(left)).map_err(io)?;
        let n = stream.read(&mut buf).map_err(io)?;
        if n == 0 {
            return Err(CallError::Closed {
                path: name.to_owned(),
            });
        }
        decoder.push(&buf[..n]);
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

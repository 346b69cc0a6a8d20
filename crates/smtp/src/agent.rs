//! The agent's side of the delivery protocol (`sluice_ipc::delivery`) on
//! `run_dir/delivery.sock`: connect, check the queue manager's `Hello`,
//! say `Ready`, then answer each `Deliver` with one `Done`.
//!
//! Blocking IO, one job at a time: parallelism comes from the master
//! running several agents. Reads from the queue manager wait at most
//! [`POLL`] at a time so that SIGTERM is noticed promptly while idle; a job
//! in progress is finished (it is bounded by the SMTP timeouts) and
//! reported before the agent exits.
//!
//! Connection reuse: after a job the agent may keep its connection to the
//! job's next hop open (at most one); its `Done` then carries
//! `open_connection: Some(next_hop)`, else `None`. The next job for that
//! next hop uses it; a job for another next hop closes it first (its
//! `Done` says what is open after it). When no job came for
//! `smtp.reuse_idle`, the agent closes it and sends
//! `Closed { next_hop }`. Losing the queue manager or stopping closes it
//! too.
//!
//! # Must never
//! Exit on a bad job, a bad frame or a lost queue manager: a job is always
//! answered (with deferrals if need be), and a broken connection is
//! re-established.
//!
//! # Security
//! The socket is the queue manager's, in the private `run_dir`; frames are
//! bounded by `sluice_ipc::MAX_FRAME` before anything is allocated.
//!
//! # Errors
//! Only a protocol or version mismatch in the queue manager's `Hello` is
//! fatal (exit 1: the programs are from different releases).

use std::io::{self, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use sluice_ipc::delivery::{self, AgentMessage, QmgrMessage, Transport};
use sluice_ipc::{FrameDecoder, Hello};

use crate::connection::Connection;
use crate::delivery::{deliver_job, Settings};

/// How often the stop flag is checked while waiting, and the pause between
/// connection attempts.
pub(crate) const POLL: Duration = Duration::from_millis(200);

/// Why a connection to the queue manager ended.
enum End {
    /// SIGTERM: exit.
    Stop,
    /// EOF, a bad frame or an IO error: reconnect.
    Lost(String),
}

/// What a read from the queue manager gave.
enum Next<T> {
    Message(T),
    /// SIGTERM.
    Stop,
    /// The wake-up time passed first.
    Wake,
}

/// Serves jobs until `stop` is set; idle connections are kept at most
/// `reuse_idle`.
pub(crate) fn serve(
    run_dir: &Path,
    settings: &Settings,
    reuse_idle: Duration,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let socket = run_dir.join("delivery.sock");
    let mut waiting_logged = false;
    while !stop.load(Ordering::Relaxed) {
        let stream = match UnixStream::connect(&socket) {
            Ok(s) => s,
            Err(e) => {
                if !waiting_logged {
                    log::info!("waiting for the queue manager at {}: {e}", socket.display());
                    waiting_logged = true;
                }
                std::thread::sleep(POLL);
                continue;
            }
        };
        waiting_logged = false;
        match session(stream, &socket, settings, reuse_idle, stop)? {
            End::Stop => break,
            End::Lost(why) => {
                log::warn!("connection to the queue manager lost: {why}; reconnecting");
                std::thread::sleep(POLL);
            }
        }
    }
    Ok(())
}

/// Reads the next message, waiting in [`POLL`] steps, until `wake` if
/// given.
fn read_message<T: serde::de::DeserializeOwned>(
    stream: &mut UnixStream,
    decoder: &mut FrameDecoder,
    stop: &AtomicBool,
    wake: Option<Instant>,
) -> Result<Next<T>, String> {
    let mut buf = [0u8; 8192];
    loop {
        match decoder.next_message::<T>() {
            Ok(Some(m)) => return Ok(Next::Message(m)),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(Next::Stop);
        }
        if wake.is_some_and(|w| Instant::now() >= w) {
            return Ok(Next::Wake);
        }
        match stream.read(&mut buf) {
            Ok(0) => return Err("end of file".to_owned()),
            Ok(n) => decoder.push(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn send(stream: &mut UnixStream, message: &AgentMessage) -> Result<(), String> {
    let frame = sluice_ipc::encode(message).map_err(|e| e.to_string())?;
    stream.write_all(&frame).map_err(|e| e.to_string())
}

fn session(
    stream: UnixStream,
    socket: &Path,
    settings: &Settings,
    reuse_idle: Duration,
    stop: &AtomicBool,
) -> anyhow::Result<End> {
    let mut cache = None;
    let end = serve_jobs(stream, socket, settings, reuse_idle, stop, &mut cache);
    if let Some(conn) = cache.take() {
        conn.close();
    }
    end
}

fn serve_jobs(
    mut stream: UnixStream,
    socket: &Path,
    settings: &Settings,
    reuse_idle: Duration,
    stop: &AtomicBool,
    cache: &mut Option<Connection>,
) -> anyhow::Result<End> {
    if let Err(e) = stream.set_read_timeout(Some(POLL)) {
        return Ok(End::Lost(e.to_string()));
    }
    let mut decoder = FrameDecoder::new();
    let hello: Hello = match read_message(&mut stream, &mut decoder, stop, None) {
        Ok(Next::Message(h)) => h,
        Ok(Next::Stop | Next::Wake) => return Ok(End::Stop),
        Err(e) => return Ok(End::Lost(format!("reading the hello: {e}"))),
    };
    if hello.protocol != delivery::PROTOCOL || hello.version != delivery::VERSION {
        bail!(
            "{} speaks {:?} version {}, this agent {:?} version {}",
            socket.display(),
            hello.protocol,
            hello.version,
            delivery::PROTOCOL,
            delivery::VERSION
        );
    }
    let ready = AgentMessage::Ready {
        transport: Transport::Smtp,
        pid: std::process::id(),
    };
    if let Err(e) = send(&mut stream, &ready) {
        return Ok(End::Lost(e));
    }
    loop {
        let wake = cache.as_ref().map(|c| c.idle_since + reuse_idle);
        let job = match read_message::<QmgrMessage>(&mut stream, &mut decoder, stop, wake) {
            Ok(Next::Message(QmgrMessage::Deliver(job))) => job,
            Ok(Next::Stop) => return Ok(End::Stop),
            Ok(Next::Wake) => {
                if let Some(conn) = cache.take() {
                    let next_hop = conn.next_hop.clone();
                    conn.close();
                    if let Err(e) = send(&mut stream, &AgentMessage::Closed { next_hop }) {
                        return Ok(End::Lost(e));
                    }
                }
                continue;
            }
            Err(e) => return Ok(End::Lost(e)),
        };
        if cache.as_ref().is_some_and(|c| c.next_hop != job.next_hop) {
            if let Some(conn) = cache.take() {
                conn.close();
            }
        }
        let result = deliver_job(settings, &job, cache);
        if let Err(e) = send(&mut stream, &AgentMessage::Done(result)) {
            // The queue manager will hand the job out again: at least once.
            return Ok(End::Lost(format!("reporting job {}: {e}", job.job_id)));
        }
    }
}

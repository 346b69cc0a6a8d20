//! The delivery agent's side of the delivery protocol ([`crate::delivery`])
//! on `run_dir/delivery.sock`, shared by every agent (`sluice-smtp`,
//! `sluice-local`): connect (waiting for the queue manager to be there),
//! check its [`Hello`], say `Ready`, then answer each `Deliver` with one
//! `Done`; reconnect when the queue manager goes away.
//!
//! Blocking IO, one job at a time: parallelism comes from the master
//! running several agents. Reads from the queue manager wait at most
//! [`POLL`] at a time so that a stop (SIGTERM) is noticed promptly while
//! idle; a job in progress is finished and reported first. An agent may ask
//! to be woken while idle ([`Deliverer::wake_at`]), e.g. to close a
//! connection kept open for reuse.
//!
//! # Must never
//! Exit on a bad job, a bad frame or a lost queue manager: every job gets
//! its answer (the agent's `deliver` always returns one), and a broken
//! connection is made again.
//!
//! # Security
//! The socket is the queue manager's, in the private `run_dir`; frames are
//! bounded by [`crate::MAX_FRAME`] before anything is allocated.
//!
//! # Errors
//! Only a protocol or version mismatch in the queue manager's `Hello` is
//! fatal ([`Mismatch`]: the programs are from different releases).

use std::io::{self, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::delivery::{self, AgentMessage, Job, JobResult, QmgrMessage, Transport};
use crate::{FrameDecoder, Hello};

/// How often the stop flag is checked while waiting, and the pause between
/// connection attempts.
pub const POLL: Duration = Duration::from_millis(200);

/// What an agent does with jobs.
pub trait Deliverer {
    /// Delivers one job; one result per job recipient, always.
    fn deliver(&mut self, job: &Job) -> JobResult;

    /// When to be woken without a job, if ever (an idle connection to
    /// close).
    fn wake_at(&self) -> Option<Instant> {
        None
    }

    /// The wake-up time came; what to tell the queue manager, if anything
    /// (e.g. [`AgentMessage::Closed`]).
    fn wake(&mut self) -> Option<AgentMessage> {
        None
    }

    /// The connection to the queue manager ended (lost, or stopping):
    /// release what is held for it.
    fn disconnected(&mut self) {}
}

/// The queue manager speaks another protocol or version.
#[derive(Debug, thiserror::Error)]
#[error(
    "{socket} speaks {got_protocol:?} version {got_version}, this agent {:?} version {}",
    delivery::PROTOCOL,
    delivery::VERSION
)]
pub struct Mismatch {
    /// The socket.
    pub socket: String,
    /// Its protocol name.
    pub got_protocol: String,
    /// Its version.
    pub got_version: u32,
}

/// Why one connection to the queue manager ended.
enum End {
    /// Stop: return.
    Stop,
    /// EOF, a bad frame or an IO error: reconnect.
    Lost(String),
}

/// What a read from the queue manager gave.
enum Next<T> {
    Message(T),
    Stop,
    /// The wake-up time passed first.
    Wake,
}

/// Serves jobs for `transport` until `stop` is set.
pub fn serve(
    run_dir: &Path,
    transport: Transport,
    deliverer: &mut impl Deliverer,
    stop: &AtomicBool,
) -> Result<(), Mismatch> {
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
        let end = session(stream, &socket, transport, deliverer, stop);
        deliverer.disconnected();
        match end? {
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
    let frame = crate::encode(message).map_err(|e| e.to_string())?;
    stream.write_all(&frame).map_err(|e| e.to_string())
}

fn session(
    mut stream: UnixStream,
    socket: &Path,
    transport: Transport,
    deliverer: &mut impl Deliverer,
    stop: &AtomicBool,
) -> Result<End, Mismatch> {
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
        return Err(Mismatch {
            socket: socket.display().to_string(),
            got_protocol: hello.protocol,
            got_version: hello.version,
        });
    }
    let ready = AgentMessage::Ready {
        transport,
        pid: std::process::id(),
    };
    if let Err(e) = send(&mut stream, &ready) {
        return Ok(End::Lost(e));
    }
    loop {
        let wake = deliverer.wake_at();
        let job = match read_message::<QmgrMessage>(&mut stream, &mut decoder, stop, wake) {
            Ok(Next::Message(QmgrMessage::Deliver(job))) => job,
            Ok(Next::Stop) => return Ok(End::Stop),
            Ok(Next::Wake) => {
                if let Some(message) = deliverer.wake() {
                    if let Err(e) = send(&mut stream, &message) {
                        return Ok(End::Lost(e));
                    }
                }
                continue;
            }
            Err(e) => return Ok(End::Lost(e)),
        };
        let result = deliverer.deliver(&job);
        if let Err(e) = send(&mut stream, &AgentMessage::Done(result)) {
            // The queue manager will hand the job out again: at least once.
            return Ok(End::Lost(format!("reporting job {}: {e}", job.job_id)));
        }
    }
}

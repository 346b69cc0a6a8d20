//! The agent's side of the delivery protocol (`sluice_ipc::delivery`) on
//! `run_dir/delivery.sock`: connect, check the queue manager's `Hello`,
//! say `Ready`, then answer each `Deliver` with one `Done`.
//!
//! The same loop as `sluice-smtp`'s (a copy: factoring it into
//! `sluice-ipc` waits for the outbound agent's work in progress to land).
//! Blocking IO, one job at a time: parallelism comes from the master
//! running several agents. Reads from the queue manager wait at most
//! [`POLL`] at a time so that SIGTERM is noticed promptly while idle; a job
//! in progress is finished (it is bounded by the SMTP timeouts) and
//! reported before the agent exits.
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
use std::time::Duration;

use anyhow::bail;
use sluice_ipc::delivery::{self, AgentMessage, QmgrMessage, Transport};
use sluice_ipc::{FrameDecoder, Hello};

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

/// Serves jobs until `stop` is set.
pub(crate) fn serve(run_dir: &Path, settings: &Settings, stop: &AtomicBool) -> anyhow::Result<()> {
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
        match session(stream, &socket, settings, stop)? {
            End::Stop => break,
            End::Lost(why) => {
                log::warn!("connection to the queue manager lost: {why}; reconnecting");
                std::thread::sleep(POLL);
            }
        }
    }
    Ok(())
}

/// Reads the next message, waiting in [`POLL`] steps. `Ok(None)`: stop.
fn read_message<T: serde::de::DeserializeOwned>(
    stream: &mut UnixStream,
    decoder: &mut FrameDecoder,
    stop: &AtomicBool,
) -> Result<Option<T>, String> {
    let mut buf = [0u8; 8192];
    loop {
        match decoder.next_message::<T>() {
            Ok(Some(m)) => return Ok(Some(m)),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
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
    mut stream: UnixStream,
    socket: &Path,
    settings: &Settings,
    stop: &AtomicBool,
) -> anyhow::Result<End> {
    if let Err(e) = stream.set_read_timeout(Some(POLL)) {
        return Ok(End::Lost(e.to_string()));
    }
    let mut decoder = FrameDecoder::new();
    let hello: Hello = match read_message(&mut stream, &mut decoder, stop) {
        Ok(Some(h)) => h,
        Ok(None) => return Ok(End::Stop),
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
        transport: Transport::Local,
        pid: std::process::id(),
    };
    if let Err(e) = send(&mut stream, &ready) {
        return Ok(End::Lost(e));
    }
    loop {
        let job = match read_message::<QmgrMessage>(&mut stream, &mut decoder, stop) {
            Ok(Some(QmgrMessage::Deliver(job))) => job,
            Ok(None) => return Ok(End::Stop),
            Err(e) => return Ok(End::Lost(e)),
        };
        let result = deliver_job(settings, &job);
        if let Err(e) = send(&mut stream, &AgentMessage::Done(result)) {
            // The queue manager will hand the job out again: at least once.
            return Ok(End::Lost(format!("reporting job {}: {e}", job.job_id)));
        }
    }
}

//! `sluice-anvil`: counts client connections for every smtpd process.
//!
//! # Synopsis
//! `sluice-anvil [--config FILE] [--syslog]` — started and restarted by
//! `sluice-master`, never by hand.
//!
//! # Description
//! Postfix's anvil: a tiny service on `run_dir/anvil.sock` (mode 0660).
//! Each smtpd process tells it of every client connection that opens and
//! closes (`sluice_ipc::anvil`), and learns how many connections that
//! client address holds across all smtpd processes and how many it opened
//! in the last minute; smtpd compares them with
//! `smtpd.client_connection_limit` and `smtpd.client_connection_rate_limit`.
//! It is never on the path of a message: smtpd asks without waiting and,
//! when anvil is down or slow, lets the client in.
//!
//! The counts live in memory only. When anvil restarts they start from
//! zero (connections open at that moment are not counted until they end);
//! when an smtpd process goes away, the connections it held are released.
//!
//! # Security
//! Runs as the configured `user` (drops root at once). Its peers are smtpd
//! processes; a peer that sends a bad frame, or does not read its answers,
//! is closed, and the others are served on. Memory grows with the
//! connections open now and those opened within one minute.
//!
//! # Diagnostics
//! Lines on stderr or syslog (tag `sluice/anvil`): start, stop, and peers
//! closed for bad frames.
//!
//! # Must never
//! Block on a peer, or exit for anything a peer sends.
#![forbid(unsafe_code)]

mod counter;
mod engine;

use std::collections::HashMap;
use std::io::{ErrorKind, Read as _, Write as _};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use sluice_ipc::anvil::{RATE_UNIT, SOCKET};

use crate::counter::Counters;
use crate::engine::Engine;

const SIGNALS: Token = Token(0);
const LISTENER: Token = Token(1);
const FIRST_PEER: u64 = 16;
/// A peer with this much of its answers unread is closed.
const MAX_UNREAD: usize = 1 << 20;

/// Command line of `sluice-anvil`.
#[derive(Debug, Parser)]
#[command(
    name = "sluice-anvil",
    version,
    about = "Sluice connection counter (started by sluice-master)"
)]
struct Args {
    #[command(flatten)]
    daemon: sluice_daemon::DaemonArgs,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    sluice_daemon::exit("sluice-anvil", run(&args))
}

struct Peer {
    stream: UnixStream,
    out: Vec<u8>,
}

fn run(args: &Args) -> anyhow::Result<()> {
    let started = sluice_daemon::start("anvil", &args.daemon)?;
    sluice_daemon::drop_privileges(&started.config.user).context("dropping privileges")?;
    let path = started.config.run_dir.join(SOCKET);
    let mut listener = sluice_daemon::bind_socket(&path, 0o660)
        .map(UnixListener::from_std)
        .with_context(|| path.display().to_string())?;
    let mut poll = Poll::new()?;
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut engine = Engine::new(Counters::new(RATE_UNIT));
    let mut peers: HashMap<u64, Peer> = HashMap::new();
    let mut next_peer = FIRST_PEER;
    let mut next_sweep = Instant::now() + RATE_UNIT;
    let mut events = Events::with_capacity(256);
    let mut buf = vec![0u8; 64 * 1024];
    log::info!("daemon started -- listening on {}", path.display());
    loop {
        let wait = next_sweep.saturating_duration_since(Instant::now());
        if let Err(e) = poll.poll(&mut events, Some(wait.max(Duration::from_millis(1)))) {
            if e.kind() != ErrorKind::Interrupted {
                return Err(e.into());
            }
        }
        for event in events.iter() {
            match event.token() {
                SIGNALS => {
                    if signals.pending().any(|s| s == SIGTERM || s == SIGINT) {
                        let _ = std::fs::remove_file(&path);
                        log::info!("stopping");
                        return Ok(());
                    }
                }
                LISTENER => loop {
                    let mut stream = match listener.accept() {
                        Ok((s, _)) => s,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(e) => {
                            // EMFILE and the like: the peer waits in the
                            // backlog; never fatal.
                            log::warn!("accept: {e}");
                            break;
                        }
                    };
                    let id = next_peer;
                    next_peer += 1;
                    let token = Token(id as usize);
                    let registered = poll.registry().register(
                        &mut stream,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    );
                    match (registered, engine.open(id)) {
                        (Ok(()), Ok(out)) => {
                            peers.insert(id, Peer { stream, out });
                        }
                        _ => engine.close(id),
                    }
                },
                Token(t) => {
                    let id = t as u64;
                    if !serve(&mut engine, &mut peers, id, &mut buf) {
                        if let Some(mut p) = peers.remove(&id) {
                            let _ = poll.registry().deregister(&mut p.stream);
                        }
                        engine.close(id);
                    }
                }
            }
        }
        let now = Instant::now();
        if now >= next_sweep {
            engine.sweep(now);
            next_sweep = now + RATE_UNIT;
        }
    }
}

/// Reads what a peer sent, answers, writes what is due. False: close it.
fn serve(engine: &mut Engine, peers: &mut HashMap<u64, Peer>, id: u64, buf: &mut [u8]) -> bool {
    let Some(peer) = peers.get_mut(&id) else {
        return true;
    };
    loop {
        match peer.stream.read(buf) {
            Ok(0) => return false,
            Ok(n) => {
                if let Err(e) = engine.input(id, &buf[..n], Instant::now(), &mut peer.out) {
                    log::warn!("{SOCKET}: {e}: closing that connection");
                    return false;
                }
                if peer.out.len() > MAX_UNREAD {
                    log::warn!("{SOCKET}: a peer does not read its answers: closing it");
                    return false;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    while !peer.out.is_empty() {
        match peer.stream.write(&peer.out) {
            Ok(0) => return false,
            Ok(n) => {
                peer.out.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    true
}

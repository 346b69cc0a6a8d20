//! `sluice-pickup`: takes local submissions from `maildrop/` into the queue.
//!
//! # Synopsis
//! `sluice-pickup [--config FILE] [--syslog]` — started and restarted by
//! `sluice-master`, never by hand.
//!
//! # Description
//! `sluice-sendmail` (or any local user, by hand) writes one file per
//! message into `spool_dir/maildrop/` and wakes pickup through
//! `run_dir/pickup.sock` (mode 0666; connecting is the whole message, see
//! `sluice_ipc::pickup`). Pickup looks at `maildrop/` at start, on each
//! wake-up and every second, so mail submitted while the daemons were down
//! goes out when they start and a lost wake-up costs a second at most.
//!
//! Each file, oldest name first, is checked again as hostile input (the
//! owner of the open file, not its content, says who submitted it),
//! passed through cleanup (`sluice_cleanup`: the missing headers, `Bcc:`
//! removal, the warning of an untrusted sender, `Received:`), committed to
//! `queue/` under a new queue ID, and removed; then the queue manager gets
//! a new-mail hint. A file that cannot be used goes to `corrupt/`. Running
//! apart from the queue manager, pickup's filters can never stall its loop.
//!
//! # Security
//! Runs as the configured `user` (drops root at once), which owns
//! `maildrop/`. Every maildrop file, its name, type, size and link count
//! are hostile (see the `maildrop` module); the wake-up socket carries no
//! data.
//!
//! # Diagnostics
//! `QUEUEID: uid=N from=<sender>` for each message picked up (the Postfix
//! pickup line), and one line per refused file naming why and where it
//! went, on stderr or syslog (tag `sluice/pickup`).
//!
//! # Must never
//! Remove a maildrop file before its queue file is committed, or delete a
//! file it could not use.
#![forbid(unsafe_code)]

mod maildrop;

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use mio::net::UnixListener;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use sluice_ipc::client::Hinter;
use sluice_spool::{QueueId, Spool};

const SIGNALS: Token = Token(0);
const WAKE: Token = Token(1);
/// How often `maildrop/` is looked at without a wake-up.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Command line of `sluice-pickup`.
#[derive(Debug, Parser)]
#[command(
    name = "sluice-pickup",
    version,
    about = "Sluice maildrop pickup (started by sluice-master)"
)]
struct Args {
    #[command(flatten)]
    daemon: sluice_daemon::DaemonArgs,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    sluice_daemon::exit("sluice-pickup", run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    let sluice_daemon::Started {
        config, hostname, ..
    } = sluice_daemon::start("pickup", &args.daemon)?;
    sluice_daemon::drop_privileges(&config.user).context("dropping privileges")?;
    let spool = Spool::new(&config.spool_dir);
    let settings = maildrop::Settings::from_config(&config, &hostname);
    let path = sluice_ipc::pickup::socket(&config.run_dir);
    let mut listener = sluice_daemon::bind_socket(&path, 0o666)
        .map(UnixListener::from_std)
        .with_context(|| path.display().to_string())?;
    let mut poll = Poll::new()?;
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)?;
    poll.registry()
        .register(&mut listener, WAKE, Interest::READABLE)?;
    let mut events = Events::with_capacity(64);
    let mut next_look = Instant::now();
    let mut hinter = Hinter::new(sluice_ipc::qmgr::socket(&config.run_dir));
    loop {
        if Instant::now() >= next_look {
            let ids = maildrop::pickup_all(&spool, &settings);
            hint_qmgr(&mut hinter, &ids);
            next_look = Instant::now() + LOOK_EVERY;
        }
        let wait = next_look.saturating_duration_since(Instant::now());
        if let Err(e) = poll.poll(&mut events, Some(wait)) {
            if e.kind() != ErrorKind::Interrupted {
                return Err(e.into());
            }
        }
        for event in events.iter() {
            match event.token() {
                // Reading the pending signals drains them; only these stop.
                SIGNALS if signals.pending().any(|s| s == SIGTERM || s == SIGINT) => {
                    let _ = std::fs::remove_file(&path);
                    log::info!("stopping");
                    return Ok(());
                }
                WAKE => {
                    drain(&listener);
                    next_look = Instant::now();
                }
                _ => {}
            }
        }
    }
}

/// Accepts and closes every waiting wake-up: each one only means "look".
fn drain(listener: &UnixListener) {
    loop {
        match listener.accept() {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // WouldBlock: all taken. EMFILE and the like: the rest wait in
            // the backlog and the look happens anyway; never fatal.
            Err(_) => return,
        }
    }
}

/// Tells the queue manager about the new queue files, on one connection
/// kept open (as smtpd's: a connection closed right after its frames can
/// lose them to the queue manager's greeting). Never waits: when the queue
/// manager is down or slow the files stay, and its scan of `queue/` finds
/// them.
fn hint_qmgr(hinter: &mut Hinter, ids: &[QueueId]) {
    for id in ids {
        let request = sluice_ipc::qmgr::Request::NewMail {
            queue_id: id.to_string(),
        };
        if !hinter.send(&request) {
            log::info!("{id}: no new-mail hint to the queue manager; its scan will find the file");
        }
    }
}

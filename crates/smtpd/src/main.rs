//! `sluice-smtpd`: the Sluice SMTP server.
//!
//! # Synopsis
//! `sluice-smtpd [--config FILE] [--syslog]` — started by `sluice-master`,
//! never by hand: it serves the listening sockets it inherits
//! (`LISTEN_FDS`), and exits with an error when there are none.
//!
//! # Description
//! One mio event loop serves many connections. Each connection drives a
//! `sluice_proto::server::Session` (the SMTP state machine, pure code); this
//! program only moves bytes, reads the clock, and answers the machine's
//! asks. At the end of a message it hands the queue file to its commit
//! thread, which makes the messages of all sessions that finished meanwhile
//! durable together (`sluice_spool::Spool::commit_batch`: temporary files
//! written and fsynced in parallel, linked into `queue/`, one fsync of the
//! directory); only then does the machine reply
//! `250 2.0.0 Ok: queued as ID`. The session reads nothing more until then;
//! other sessions go on. A write error of any kind (full disk,
//! permissions) is answered `451 4.3.0` and leaves no partial file. After
//! each commit it hints the queue manager over `run_dir/qmgr.sock` if that
//! socket exists; a lost hint costs latency, never mail (the queue manager
//! also scans `queue/`).
//!
//! Nothing on the loop waits on another process or on NSS: the machine's
//! asks go to answerers (`server/routing.rs`): the checks of each stage, in
//! the order `checks.rs` lists (the per-client count of `sluice-anvil` at
//! connect, the local-recipient lookup at RCPT, which runs on its own
//! thread with a short cache), the commit thread, and the queue manager
//! (ETRN's flush is sent without waiting: `250` once it is on its way,
//! five per session). Every ask has a deadline and a default answer
//! (`asks.rs`); every connection has a deadline too, so that a client that
//! stops reading loses its slot when its session times out.
//!
//! On SIGTERM it stops accepting, tells idle clients `421 4.3.2`, lets
//! transactions in flight finish for up to `smtpd.stop_timeout`, and exits.
//!
//! # Security
//! Drops to the configured `user` right after start-up when run as root,
//! before reading a byte from the network. Every byte from clients is
//! hostile: it goes to the protocol machine only, which bounds every buffer.
//!
//! # Diagnostics
//! Postfix-shaped lines on stderr or syslog (tag `sluice/smtpd`): `connect
//! from`, `QUEUEID: client=`, `NOQUEUE: reject: ...`, `disconnect from`.
//!
//! # Must never
//! Reply 250 to a message before the spool has said that its file and
//! directory entry are on disk.
#![forbid(unsafe_code)]

mod anvil;
mod asks;
mod checks;
mod committer;
mod connection;
mod events;
mod qmgr;
mod recipients;
mod server;
mod settings;

use anyhow::Context as _;
use clap::Parser;

/// Command line of `sluice-smtpd`.
#[derive(Debug, Parser)]
#[command(
    name = "sluice-smtpd",
    version,
    about = "Sluice SMTP server (started by sluice-master)"
)]
struct Args {
    #[command(flatten)]
    daemon: sluice_daemon::DaemonArgs,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    sluice_daemon::exit("sluice-smtpd", run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    let sluice_daemon::Started {
        mut config,
        hostname,
        ..
    } = sluice_daemon::start("smtpd", &args.daemon)?;
    let fd_limit = sluice_daemon::raise_fd_limit().context("file descriptor limit")?;
    let wanted = config.smtpd.max_connections;
    config.smtpd.max_connections =
        sluice_daemon::fit_connections(wanted, fd_limit).map_err(|need| {
            anyhow::anyhow!(
                "the file descriptor limit ({fd_limit}) leaves no room for connections: \
                 it must be at least {need}"
            )
        })?;
    if config.smtpd.max_connections < wanted {
        log::warn!(
            "smtpd.max_connections {wanted} does not fit the file descriptor limit \
             ({fd_limit}) with room for commits: using {}",
            config.smtpd.max_connections
        );
    }
    let fds = sluice_daemon::take_listen_fds()?;
    if fds.is_empty() {
        anyhow::bail!("no listening sockets inherited: sluice-smtpd is started by sluice-master");
    }
    sluice_daemon::drop_privileges(&config.user).context("dropping privileges")?;
    let listeners = fds
        .into_iter()
        .map(|(_, fd)| std::net::TcpListener::from(fd))
        .collect();
    server::Server::new(config, hostname, listeners)?.run()
}

//! `sluice-qmgr`: the Sluice queue manager.
//!
//! # Synopsis
//! `sluice-qmgr [--config FILE] [--syslog]` — started by `sluice-master`.
//!
//! # Description
//! The only writer of `spool_dir/index.sqlite`. It learns of new queue
//! files from smtpd's hints on `run_dir/qmgr.sock` and by scanning `queue/`
//! (at start and every 30 seconds), so a lost hint costs latency, never
//! mail. At start it imports every queue file the index does not know and
//! drops rows whose file is gone: deleting the index while Sluice is
//! stopped loses no mail (at worst, delivered recipients get it again).
//!
//! Local submissions reach `queue/` through `sluice-pickup`, which hints
//! the queue manager like smtpd does.
//!
//! Each recipient is routed (a `routes` entry, local delivery for
//! `local_domains`, the `*` smarthost, else the domain for DNS) and
//! scheduled: jobs go to delivery agents on `run_dir/delivery.sock`,
//! round-robin between destinations, at most
//! `queue.max_concurrency_per_destination` at once per destination and
//! `queue.max_concurrency` in all. Deferred recipients are retried with
//! exponential back-off between `queue.retry_min` and `queue.retry_max`;
//! what is still undelivered after `queue.lifetime` is bounced. Bounces
//! produce one RFC 3464 notice per message per event, from `<>`, honouring
//! NOTIFY and RET; an optional delay notice goes out after
//! `queue.delay_warning`. A success report (NOTIFY=SUCCESS) says
//! `delivered` for a mailbox or LMTP and `relayed` for a next hop without
//! DSN; a next hop that offered DSN took the duty, and Sluice sends none
//! (RFC 3461 §5.2). A notice to a UTF-8 address is an RFC 6533 report,
//! queued with SMTPUTF8. Mail from `<>` never causes another notice: a
//! notice that cannot be delivered goes to the postmaster, once, and a
//! postmaster notice that fails is dropped with a log line. An operator's
//! hold is kept in `spool_dir/hold/` and survives an index rebuild.
//!
//! # Security
//! Runs as the unprivileged `user`. Hostile inputs: frames on its sockets
//! (bad ones close that connection), queue files (unreadable ones go to
//! `corrupt/`), and agents' results (checked against the job they answer).
//! Queue changes are accepted only from root, its own user or group,
//! checked with the peer's credentials.
//!
//! # Diagnostics
//! `QUEUEID: from=<...>, size=N, nrcpt=N (queue active)`, `QUEUEID:
//! removed`, `QUEUEID: sender non-delivery notification: ID`, on stderr or
//! syslog (tag `sluice/qmgr`). Index errors are fatal; the master restarts
//! the queue manager and the index is rebuilt from the files as needed.
//!
//! # Must never
//! Remove a queue file while one of its recipients is unfinished, or mark a
//! recipient bounced before its notice is safely queued.
#![forbid(unsafe_code)]

mod notices;
mod outcome;
mod queue;
mod retry;
mod route;
mod scheduler;
mod service;

use anyhow::Context as _;
use clap::Parser;

/// Command line of `sluice-qmgr`.
#[derive(Debug, Parser)]
#[command(
    name = "sluice-qmgr",
    version,
    about = "Sluice queue manager (started by sluice-master)"
)]
struct Args {
    #[command(flatten)]
    daemon: sluice_daemon::DaemonArgs,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    sluice_daemon::exit("sluice-qmgr", run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    let sluice_daemon::Started {
        config, hostname, ..
    } = sluice_daemon::start("qmgr", &args.daemon)?;
    sluice_daemon::drop_privileges(&config.user).context("dropping privileges")?;
    let run_dir = config.run_dir.clone();
    let queue = queue::Queue::open(config, &hostname)?;
    service::Service::new(&run_dir, queue)?.run()
}

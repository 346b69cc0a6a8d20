//! `sluice-master`: the supervisor of a Sluice instance.
//!
//! # Synopsis
//! `sluice-master [--config FILE] [--syslog]`
//!
//! # Description
//! Reads the configuration, creates the spool and run directories, binds the
//! listening sockets, and starts the daemons with those sockets inherited
//! (`LISTEN_FDS`). It runs in the foreground: this is what systemd runs, and
//! what `sluice start` puts in the background. It then only supervises:
//! - a daemon that dies is restarted, at once if it had run for a while,
//!   else after a back-off that doubles up to a minute, so that a crash loop
//!   does not burn the CPU;
//! - SIGHUP re-reads the configuration: if it is valid, listeners are
//!   re-bound where they changed and every daemon is replaced (the old ones
//!   finish their sessions); if not, the error is logged and the running
//!   configuration stays;
//! - SIGTERM or SIGINT stops every daemon, giving sessions in flight up to
//!   `smtpd.stop_timeout` to finish, then kills what is left.
//!
//! The bound addresses are written to `run_dir/listeners` (`smtpd ADDR` per
//! line), so that tools and tests learn port-0 assignments without scraping
//! logs; the pid goes to `run_dir/master.pid`, under a lock held for the
//! master's life, so two masters cannot share a spool.
//!
//! Each daemon is started with `--master-pid` and dies with its master
//! (`PR_SET_PDEATHSIG`); daemons of an earlier master of the same
//! configuration that are still running (it was killed with SIGKILL before
//! they could learn it) are killed at start, before the sockets are bound.
//!
//! # Security
//! Started as root, it creates directories owned by the `user` of the
//! configuration and binds privileged ports; the daemons it starts drop to
//! that user themselves before touching any input. It parses no mail and
//! reads nothing from the network.
//!
//! # Diagnostics
//! Logs go to stderr, or with `--syslog` to syslog facility `mail`, tag
//! `sluice/master`. Exit status 1 on a start-up error (bad config, a socket
//! that cannot be bound, another master running), 0 after a clean stop.
//!
//! # Must never
//! Parse mail, or exit while daemons it started are still running.
#![forbid(unsafe_code)]

mod strays;
mod supervisor;

use anyhow::Context as _;
use clap::Parser;

/// Command line of `sluice-master`.
#[derive(Debug, Parser)]
#[command(
    name = "sluice-master",
    version,
    about = "Sluice master: binds sockets, supervises the daemons"
)]
struct Args {
    #[command(flatten)]
    daemon: sluice_daemon::DaemonArgs,
}

fn main() -> std::process::ExitCode {
    let mut args = Args::parse();
    sluice_daemon::exit("sluice-master", run(&mut args))
}

fn run(args: &mut Args) -> anyhow::Result<()> {
    // The daemons are told the same file, wherever they start.
    args.daemon.config = std::path::absolute(&args.daemon.config)
        .with_context(|| format!("config path {}", args.daemon.config.display()))?;
    let started = sluice_daemon::start("master", &args.daemon)?;
    let mut supervisor =
        supervisor::Supervisor::start(started.config_path, started.config, args.daemon.syslog)?;
    supervisor.run()
}

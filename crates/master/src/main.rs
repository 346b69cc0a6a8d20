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

mod supervisor;

use std::path::PathBuf;

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
    /// Configuration file.
    #[arg(long, default_value = sluice_config::DEFAULT_PATH)]
    config: PathBuf,
    /// Log to syslog (facility mail) instead of stderr.
    #[arg(long)]
    syslog: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let text = format!("{e:#}");
            if log::log_enabled!(log::Level::Error) {
                log::error!("fatal: {text}");
            } else {
                eprintln!("sluice-master: fatal: {text}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let config_path = std::path::absolute(&args.config)
        .with_context(|| format!("config path {}", args.config.display()))?;
    let config = sluice_config::load(&config_path)?;
    let hostname = config.hostname_or(&sluice_daemon::system_hostname());
    let sink = if args.syslog {
        sluice_log::Sink::Syslog(config.log.syslog_socket.clone())
    } else {
        sluice_log::Sink::Stderr
    };
    let tag = format!("{}/master", config.log.tag_prefix);
    sluice_log::init(&tag, &hostname, sink, log::LevelFilter::Info)?;
    let mut supervisor = supervisor::Supervisor::start(config_path, config, args.syslog)?;
    supervisor.run()
}

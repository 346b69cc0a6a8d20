//! The start and the end of every daemon's `main`: the common command line
//! (`--config FILE`, `--syslog`), loading the configuration, installing
//! the logger with the `sluice/<program>` tag, and turning a fatal error
//! into one log line and exit status 1.
//!
//! # Must never
//! Lose a fatal error: before the logger exists it goes to stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use sluice_config::Config;

/// The command line every daemon takes (flattened into its own).
#[derive(Debug, Clone, clap::Args)]
pub struct DaemonArgs {
    /// Configuration file.
    #[arg(long, default_value = sluice_config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Log to syslog (facility mail) instead of stderr.
    #[arg(long)]
    pub syslog: bool,
    /// The master that started this daemon: it dies with it.
    #[arg(long, hide = true)]
    pub master_pid: Option<u32>,
}

/// A daemon whose configuration is loaded and whose logger is installed.
#[derive(Debug)]
pub struct Started {
    /// The configuration file, as given.
    pub config_path: PathBuf,
    /// The configuration.
    pub config: Config,
    /// `hostname`, or the system's host name when the config leaves it empty.
    pub hostname: String,
}

/// Why a daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is bad (the error names file, line and key).
    #[error(transparent)]
    Config(#[from] sluice_config::Error),
    /// The logger could not be installed.
    #[error(transparent)]
    Log(#[from] sluice_log::Error),
    /// The master is gone, or the daemon cannot follow it.
    #[error(transparent)]
    Master(#[from] crate::Error),
}

/// Loads the configuration file at `path` as every program must: parsed
/// and checked, with `""` in `user` and `local.virtual_owner` replaced by
/// the user this process runs as (a demo instance changes no user).
pub fn load_config(path: &std::path::Path) -> Result<Config, sluice_config::Error> {
    let mut config = sluice_config::load(path)?;
    let me = nix::unistd::User::from_uid(nix::unistd::Uid::effective())
        .ok()
        .flatten();
    if let Some(me) = me {
        config.resolve_own_user(&me.name);
    }
    Ok(config)
}

/// Loads the configuration and installs the logger tagged
/// `<tag_prefix>/<program>` (e.g. `sluice/smtpd`).
pub fn start(program: &str, args: &DaemonArgs) -> Result<Started, StartError> {
    crate::master_link::link(args.master_pid)?;
    let config = load_config(&args.config)?;
    let hostname = config.hostname_or(&crate::system_hostname());
    let sink = if args.syslog {
        sluice_log::Sink::Syslog(config.log.syslog_socket.clone())
    } else {
        sluice_log::Sink::Stderr
    };
    sluice_log::init(
        &format!("{}/{program}", config.log.tag_prefix),
        &hostname,
        sink,
        log::LevelFilter::Info,
    )?;
    Ok(Started {
        config_path: args.config.clone(),
        config,
        hostname,
    })
}

/// The end of `main`: a fatal error becomes one `fatal:` line (in the log
/// if it is installed, else on stderr as `program: fatal: ...`) and exit
/// status 1.
pub fn exit<E: std::fmt::Display>(program: &str, result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let text = format!("{e:#}");
            if log::log_enabled!(log::Level::Error) {
                log::error!("fatal: {text}");
            } else {
                eprintln!("{program}: fatal: {text}");
            }
            ExitCode::FAILURE
        }
    }
}

//! `sluice-sendmail`: sendmail(1) local submission for Sluice (also
//! `sendmail`, `mailq` and `newaliases` when invoked by those names).
//!
//! # Synopsis
//! `sendmail [options] [--] [recipient ...]`
//!
//! `sendmail -t [options] [recipient ...]`, `sendmail -bs`, `sendmail -bp`,
//! `sendmail -q`
//!
//! # Description
//! Reads a message on standard input, until the end of input or a line
//! holding a single `.` (unless `-i` or `-oi`), and writes it into the
//! spool's `maildrop/` directory, from which `sluice-pickup` picks it up
//! and queues it. It needs no running daemon: with Sluice stopped the
//! message waits in `maildrop/` and goes out as soon as Sluice starts.
//! Lines may end in LF or CRLF; the stored message has CRLF line ends.
//!
//! A message without `From:`, `Date:` or `Message-ID:` gets them: `From:`
//! holds the sender with the full name from `-F` or the user's passwd
//! entry. `Bcc:` and `Resent-Bcc:` are always removed.
//!
//! # Options
//! - `-t`: also send to the addresses in `To:`, `Cc:` and `Bcc:` (or, when
//!   the message has them, `Resent-To:`, `Resent-Cc:`, `Resent-Bcc:`);
//!   recipients on the command line are added to them.
//! - `-f ADDR`, `-r ADDR`: the envelope sender (`<>` for none). Any user
//!   may use it unless `local.restrict_sender` is on; it never hides who
//!   submitted: the log names the real uid, and the message of a user who
//!   is not root or in the group of the configured `user` gets
//!   `X-Authentication-Warning: HOST: USER set sender to ADDR using -f`.
//! - `-F NAME`: the full name of an added `From:`.
//! - `-i`, `-oi`: a line with a single `.` is part of the message.
//! - `-N never|success,failure,delay`, `-R full|hdrs`, `-V ENVID`: DSN
//!   parameters. `-B 7BIT|8BITMIME`: the body type (else guessed).
//! - `-bm`: submit a message (the default). `-bs`: speak SMTP on standard
//!   input and output; each accepted message becomes a maildrop file and
//!   its MAIL FROM counts as `-f`. `-bp`: list the queue (runs
//!   `sluice-queue list`, like `mailq`). `-q`, `-qRSITE`: try queued mail
//!   now (runs `sluice-queue flush`). `-bi`, `-I`: nothing to rebuild,
//!   the aliases file is read as it is.
//! - `-C FILE`, `--config FILE`: the configuration (default
//!   `/etc/sluice/sluice.ron`). Users other than root may name only a
//!   file owned by root and writable by nobody else.
//! - `-v`: say where the message went, on standard error.
//! - Accepted and ignored, as other MTAs do: `-odX`, `-oeX`, `-om` and
//!   every other `-o` option, `-G`, `-U`, `-m`, `-n`, `-s`, `-x`, `-c`,
//!   `-L TAG`, `-O OPT`, `-X FILE`, `-e X`, `-h N`, `-p PROTO`, `-dX`,
//!   `-AX`. Refused: unknown letters, `-bd` and other modes, `-oQ`.
//!
//! # Security
//! Runs as the invoking user with no privilege (no set-uid bit): it can do
//! nothing a user could not do by writing a file into `maildrop/` (mode
//! 1733) by hand, and `sluice-pickup` checks every maildrop file again.
//! Who submitted is the real uid (`getuid()`), never an argument; pickup
//! takes it from the file's owner.
//!
//! # Diagnostics
//! Problems go to standard error as `sluice-sendmail: REASON`. Exit status
//! (sysexits.h): 0 sent, 64 usage error, 65 bad address or message, 75 the
//! spool cannot be written (for example Sluice was never started, so the
//! spool does not exist yet: try again later), 77 `-f` refused or `-C`
//! refused, 78 the configuration is bad, 70 an internal error.
//!
//! # Must never
//! Report success before the maildrop file is on disk, or need a running
//! daemon to accept a message.
#![forbid(unsafe_code)]

mod message;
mod smtp;
mod submit;

use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::submit::{Context, Submitter};
use sluice_sendmail::args::{self, Mode, Options};

/// sysexits.h: command line usage error.
pub(crate) const EX_USAGE: u8 = 64;
/// sysexits.h: data format error.
pub(crate) const EX_DATAERR: u8 = 65;
/// sysexits.h: internal software error.
pub(crate) const EX_SOFTWARE: u8 = 70;
/// sysexits.h: temporary failure, try again.
pub(crate) const EX_TEMPFAIL: u8 = 75;
/// sysexits.h: permission denied.
pub(crate) const EX_NOPERM: u8 = 77;
/// sysexits.h: configuration error.
pub(crate) const EX_CONFIG: u8 = 78;

/// Why sendmail gives up: an exit code and one line for stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) text: String,
}

impl Failure {
    pub(crate) fn new(code: u8, text: String) -> Failure {
        Failure { code, text }
    }
}

fn main() -> ExitCode {
    let mut argv = std::env::args();
    let argv0 = argv.next().unwrap_or_default();
    let invoked_as = Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let args: Vec<String> = argv.collect();
    match run(&invoked_as, &args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("sluice-sendmail: {}", failure.text);
            ExitCode::from(failure.code)
        }
    }
}

fn run(invoked_as: &str, args: &[String]) -> Result<(), Failure> {
    let options = args::parse(invoked_as, args).map_err(|u| {
        Failure::new(
            EX_USAGE,
            format!("{u} (usage: sendmail [-t] [-i] [-f sender] [-F name] [--] [recipient ...])"),
        )
    })?;
    if options.mode == Mode::Help {
        println!("usage: sendmail [-t] [-i] [-f sender] [-F name] [-bs|-bp|-q] [-C config] [--] [recipient ...]");
        return Ok(());
    }
    let config_path = options
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(sluice_config::DEFAULT_PATH));
    if options.config.is_some() {
        check_config_owner(&config_path)?;
    }
    let config = sluice_daemon::load_config(&config_path)
        .map_err(|e| Failure::new(EX_CONFIG, e.to_string()))?;
    match &options.mode {
        Mode::Help => Ok(()),
        Mode::Newaliases => {
            eprintln!(
                "sluice-sendmail: nothing to rebuild: Sluice reads the aliases file as it is"
            );
            Ok(())
        }
        Mode::List => exec_queue_tool(&config, &config_path, &["list"]),
        Mode::Flush(site) => {
            let mut args = vec!["flush"];
            args.extend(site.as_deref());
            exec_queue_tool(&config, &config_path, &args)
        }
        Mode::Smtp => {
            let ctx = context(&config, &options);
            smtp::serve(&ctx, std::io::stdin().lock(), std::io::stdout().lock())
                .map_err(|e| Failure::new(EX_SOFTWARE, format!("SMTP session: {e}")))
        }
        Mode::Deliver => {
            let ctx = context(&config, &options);
            let content =
                message::read_input(std::io::stdin().lock(), options.ignore_dots, ctx.max_size)
                    .map_err(|e| match e {
                        message::InputError::TooLarge(_) => Failure::new(EX_DATAERR, e.to_string()),
                        message::InputError::Io(_) => Failure::new(EX_SOFTWARE, e.to_string()),
                    })?;
            submit::deliver(&ctx, &options, &content).map(|_| ())
        }
    }
}

fn context(config: &sluice_config::Config, options: &Options) -> Context {
    Context {
        submitter: Submitter::current(config),
        hostname: config.hostname_or(&sluice_daemon::system_hostname()),
        hopcount_limit: config.hopcount_limit,
        reject_nul: config.nul_bytes == sluice_config::NulBytes::Reject,
        spool: sluice_spool::Spool::new(&config.spool_dir),
        run_dir: config.run_dir.clone(),
        restrict_sender: config.local.restrict_sender,
        max_size: config.smtpd.max_message_size,
        verbose: options.verbose,
    }
}

/// `-C`: root may name any file; another user one that root or that user
/// owns and nobody else may write (an admin's alternative configuration, or
/// the user's own demo instance). A user's own configuration gains nothing
/// against the daemons of another instance: their pickup checks every
/// maildrop file again with their own configuration (`restrict_sender`,
/// the submitter's real uid).
fn check_config_owner(path: &Path) -> Result<(), Failure> {
    let uid = nix::unistd::getuid();
    if uid.is_root() {
        return Ok(());
    }
    let meta = std::fs::metadata(path)
        .map_err(|e| Failure::new(EX_CONFIG, format!("{}: {e}", path.display())))?;
    if (meta.uid() != 0 && meta.uid() != uid.as_raw()) || meta.mode() & 0o022 != 0 {
        return Err(Failure::new(
            EX_NOPERM,
            format!(
                "-C {}: a configuration must be owned by root or by you, and writable by nobody else",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Replaces this process with `sluice-queue` from the daemon directory.
fn exec_queue_tool(
    config: &sluice_config::Config,
    config_path: &Path,
    args: &[&str],
) -> Result<(), Failure> {
    let dir = if config.daemon_dir.as_os_str().is_empty() {
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf))
            .unwrap_or_default()
    } else {
        config.daemon_dir.clone()
    };
    let program = dir.join("sluice-queue");
    let error = std::process::Command::new(&program)
        .arg("--config")
        .arg(config_path)
        .args(args)
        .exec();
    Err(Failure::new(
        EX_SOFTWARE,
        format!("cannot run {}: {error}", program.display()),
    ))
}

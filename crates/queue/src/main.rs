//! `sluice-queue`: the Sluice queue tool (`mailq` when invoked by that name).
//!
//! # Synopsis
//! `sluice-queue [--config FILE] [list] [--json] [--domain D] [--sender S]
//! [--recipient R] [--state active|deferred|hold|incoming]`
//!
//! `sluice-queue [--config FILE] show ID`
//!
//! `sluice-queue [--config FILE] flush [ID...|DOMAIN...|ALL|-]`
//!
//! `sluice-queue [--config FILE] hold|release|delete|requeue ID...|DOMAIN...|ALL|-`
//!
//! `mailq [--config FILE] [list options]`
//!
//! # Description
//! `list` (the default, and all that `mailq` does) prints the queue in the
//! format of Postfix's mailq: queue ID, `*` for a message being delivered
//! or `!` for one on hold, size in bytes, arrival time, sender
//! (`MAILER-DAEMON` for `<>`), then each waiting recipient with its last
//! error in parentheses, and a total line. An empty queue prints `Mail
//! queue is empty`. With `--json` it prints one JSON object per message and
//! line, as `postqueue -j` does: `queue_name` (`active`, `deferred`,
//! `hold` or `incoming`), `queue_id`, `arrival_time` (Unix seconds),
//! `message_size`, `sender` (empty for `<>`) and `recipients` (`address`,
//! and `delay_reason` when there is one). Messages come oldest first.
//! Delivered and bounced recipients are not listed.
//!
//! Filters keep whole messages and combine with AND: `--domain D` keeps
//! messages with a waiting recipient in domain D (exact, any case);
//! `--sender S` those whose sender contains S (any case; `<>` or
//! `MAILER-DAEMON` select the null sender only); `--recipient R` those with
//! a waiting recipient whose address contains R (any case); `--state Q`
//! those in queue Q. A message is in `hold` when held; else `active` when
//! a recipient is being delivered; else `deferred` when one was tried and
//! waits; else `incoming`.
//!
//! The listing reads `spool_dir/index.sqlite` read-only with one query and
//! prints as it reads: no directory scan and no queue file is opened, so
//! it stays fast with 100,000 messages queued. It works while the queue
//! manager is stopped (it then shows the index as last written).
//!
//! `show ID` prints one message: envelope (sender, recipients with NOTIFY
//! and ORCPT, body type and parameters, client), per recipient its state,
//! attempts, next attempt, transport and next hop and last error, then the
//! header section of the message.
//!
//! `flush`, `hold`, `release`, `delete` and `requeue` ask the queue manager
//! over `run_dir/qmgr.sock`; it alone changes the queue. They take queue
//! IDs, domains (messages with a recipient there), `ALL` (alone), or `-` to
//! read queue IDs from stdin, one per line, as `postsuper` does. `flush`
//! without an argument flushes everything. `delete` removes messages
//! without notice; `requeue` routes the waiting recipients again and tries
//! them now; `release` undoes `hold` and tries now. The number of messages
//! affected is printed, e.g. `Deleted: 3 messages`.
//!
//! # Security
//! Anyone who can read the index may list it. Changes are allowed only to
//! root and the queue manager's user and group: the queue manager checks
//! the caller's credentials on its socket, and this tool reports its
//! refusal. Addresses, error texts and headers come from remote peers;
//! control characters are replaced before printing.
//!
//! # Diagnostics
//! Exit status 0 on success, 1 when something failed (on stderr, naming
//! what: the configuration file, line and key; the index; `the queue
//! manager is not running (no RUN_DIR/qmgr.sock)`; the queue manager's
//! refusal or failure), 2 for a usage error.
//!
//! # Must never
//! Write to the index or the spool, or decide by itself who may change the
//! queue.
#![forbid(unsafe_code)]

mod change;
mod listing;
mod localtime;
mod show;
#[cfg(test)]
mod testdb;

use std::io::{self, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use sluice_ipc::qmgr::Action;
use sluice_spool::QueueId;

use sluice_index::{Filter, QueueName};

use crate::listing::Format;
use crate::localtime::LocalTime;

/// List, show and change the Sluice mail queue.
#[derive(Debug, Parser)]
#[command(name = "sluice-queue", version)]
struct Cli {
    /// Configuration file.
    #[arg(long, global = true, default_value = sluice_config::DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

/// What to do; `list` when none is given.
#[derive(Debug, Subcommand)]
enum Command {
    /// List the queue in mailq format, or as JSON lines with --json.
    List(ListArgs),
    /// Show one message: envelope, state of each recipient, headers.
    Show {
        /// The queue ID.
        id: String,
    },
    /// Try delivery now: every message, or those named.
    Flush(Targets),
    /// Keep messages from delivery until released.
    Hold(Targets),
    /// Undo hold and try delivery now.
    Release(Targets),
    /// Remove messages, without notice to anyone.
    Delete(Targets),
    /// Route waiting recipients again and try delivery now.
    Requeue(Targets),
}

/// How to list.
#[derive(Debug, Clone, Default, Args)]
struct ListArgs {
    /// One JSON object per message and line, as `postqueue -j`.
    #[arg(long)]
    json: bool,
    /// Only messages with a waiting recipient in this domain (exact).
    #[arg(long, value_name = "DOMAIN")]
    domain: Option<String>,
    /// Only messages whose sender contains this (any case; `<>` or
    /// MAILER-DAEMON: the null sender only).
    #[arg(long, value_name = "TEXT")]
    sender: Option<String>,
    /// Only messages with a waiting recipient whose address contains this
    /// (any case).
    #[arg(long, value_name = "TEXT")]
    recipient: Option<String>,
    /// Only messages in this queue.
    #[arg(long, value_enum, value_name = "QUEUE")]
    state: Option<QueueArg>,
}

/// `--state`: a queue by its Postfix name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum QueueArg {
    /// Being delivered.
    Active,
    /// Tried, waiting for the next attempt.
    Deferred,
    /// Held by the operator.
    Hold,
    /// Not tried yet.
    Incoming,
}

impl From<QueueArg> for QueueName {
    fn from(arg: QueueArg) -> QueueName {
        match arg {
            QueueArg::Active => QueueName::Active,
            QueueArg::Deferred => QueueName::Deferred,
            QueueArg::Hold => QueueName::Hold,
            QueueArg::Incoming => QueueName::Incoming,
        }
    }
}

/// Which messages a change applies to.
#[derive(Debug, Args)]
struct Targets {
    /// Queue IDs, domains, ALL (alone), or - to read queue IDs from stdin.
    #[arg(value_name = "ID|DOMAIN|ALL|-")]
    targets: Vec<String>,
}

/// List the Sluice mail queue (the same as `sluice-queue list`).
#[derive(Debug, Parser)]
#[command(name = "mailq", version)]
struct Mailq {
    /// Configuration file.
    #[arg(long, default_value = sluice_config::DEFAULT_PATH)]
    config: PathBuf,
    #[command(flatten)]
    list: ListArgs,
}

/// Why the program stops.
enum Failure {
    /// Bad arguments: exit 2.
    Usage(String),
    /// Something failed: exit 1.
    Error(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::Error(e)
    }
}

fn main() -> ExitCode {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let invoked_as_mailq = Path::new(&argv0)
        .file_name()
        .is_some_and(|name| name == "mailq");
    let (config, command) = if invoked_as_mailq {
        let args = Mailq::parse();
        (args.config, Command::List(args.list))
    } else {
        let cli = Cli::parse();
        let command = cli
            .command
            .unwrap_or_else(|| Command::List(ListArgs::default()));
        (cli.config, command)
    };
    match run(&config, command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(text)) => {
            eprintln!("sluice-queue: {text}");
            eprintln!("Try 'sluice-queue --help' for more information.");
            ExitCode::from(2)
        }
        Err(Failure::Error(e)) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(Failure::Error(e)) => {
            eprintln!("sluice-queue: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config_path: &Path, command: Command) -> Result<(), Failure> {
    // Usage is checked before the configuration is read.
    let action = match &command {
        Command::List(_) | Command::Show { .. } => None,
        Command::Flush(t) => Some((Action::Flush, t)),
        Command::Hold(t) => Some((Action::Hold, t)),
        Command::Release(t) => Some((Action::Release, t)),
        Command::Delete(t) => Some((Action::Delete, t)),
        Command::Requeue(t) => Some((Action::Requeue, t)),
    };
    let change = match action {
        Some((action, t)) => Some((
            action,
            change::parse_targets(action, &t.targets, &mut io::stdin().lock())
                .map_err(Failure::Usage)?,
        )),
        None => None,
    };
    let show_id = match &command {
        Command::Show { id } => Some(
            id.to_ascii_uppercase()
                .parse::<QueueId>()
                .map_err(|_| Failure::Usage(format!("not a queue ID: {id:?}")))?,
        ),
        _ => None,
    };

    // The config error's text already names the file, line, key and cause.
    let config = sluice_config::load(config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(64 * 1024, stdout.lock());
    let mut clock = LocalTime::system();

    if let Some((action, targets)) = change {
        let messages = if targets.is_empty() {
            0
        } else {
            change::send_changes(&config.run_dir, action, targets)?
        };
        writeln!(out, "{}", change::report(action, messages)).map_err(anyhow::Error::from)?;
        out.flush().map_err(anyhow::Error::from)?;
        return Ok(());
    }
    let index = listing::open_index(&config.spool_dir)?;
    if let Some(id) = show_id {
        show::write_show(&config.spool_dir, index.as_ref(), id, &mut clock, &mut out)?;
        return Ok(());
    }
    let Command::List(args) = command else {
        return Ok(());
    };
    let filter = Filter {
        domain: args.domain,
        sender: args.sender,
        recipient: args.recipient,
        state: args.state.map(QueueName::from),
    };
    let format = if args.json {
        Format::Json
    } else {
        Format::Mailq
    };
    listing::write_listing(index.as_ref(), &filter, format, &mut clock, &mut out)?;
    Ok(())
}

/// `mailq | head`: the reader went away; not an error worth a word.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

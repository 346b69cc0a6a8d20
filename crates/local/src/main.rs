//! `sluice-local`: the Sluice local delivery agent.
//!
//! # Synopsis
//! `sluice-local [--config FILE] [--syslog]` — started by `sluice-master`
//! (`queue.local_agents` of them), never by hand.
//!
//! # Description
//! A long-lived agent for the recipients of `local_domains` (and bare
//! `<postmaster>`). It connects to the queue manager on
//! `run_dir/delivery.sock` (retrying every 200 ms), checks its `Hello`
//! (protocol `sluice-delivery`, version 1), announces itself `Ready` for
//! the `Local` transport, then takes one job at a time and answers it with
//! one result per recipient.
//!
//! For each recipient, the local part folded to lower case and
//! `local.recipient_delimiter` separating an extension (`joe+lists`):
//!
//! 1. a message whose header already has `Delivered-To:` for the recipient
//!    is a mail loop: bounced `5.4.6`;
//! 2. the aliases file `local.aliases` (aliases(5): `name: a, b`,
//!    continuation lines, `#` comments, `:include:/path`; `|command` and
//!    `/file` only with `local.allow_commands` / `local.allow_files` and an
//!    aliases file owned by root, run or written as `local.command_user`)
//!    is expanded recursively; a loop or nesting deeper than 20 bounces
//!    `5.4.6`. A bad line is logged with its file and line and skipped;
//! 3. else the virtual mailbox map `local.virtual_mailboxes` (lines of
//!    `address  /path`), written as `local.virtual_owner`;
//! 4. else the system user (passwd), whose `~/.forward` (addresses only;
//!    `\user` is the user's own mailbox) is honoured with `local.forward`;
//!    the mailbox is `local.mailbox`, `~/` being the home and `%u` the name,
//!    written as that user;
//! 5. else `postmaster` goes to `local.postmaster`; anything else bounces
//!    `5.1.1` (smtpd already refuses it at RCPT time).
//!
//! A mailbox ending in `/` is a Maildir: the message is written to `tmp/`,
//! fsynced, linked into `new/` under a unique name, and `new/` is fsynced.
//! Otherwise it is an mbox file: dot-lock (`FILE.lock`) and fcntl lock, a
//! `From sender date` line, `>From ` quoting (mboxrd), fsync; on failure
//! the file is cut back to its length before. Either way
//! `Return-Path: <sender>` and `Delivered-To: address` are prepended and
//! lines end in LF.
//!
//! Every write happens in a child process (`sluice-local deliver ...`)
//! that switches to the mailbox owner (`setgroups`, `setgid`, `setuid`)
//! before reading the message or opening anything; the agent stays root.
//!
//! Addresses in other domains reached through aliases or `.forward` are
//! queued again: a new queue file (same sender, `Delivered-To:` of the
//! local recipient prepended), committed as the `user` account, and a
//! `NewMail` hint on `run_dir/qmgr.sock`; the local recipient is then
//! reported delivered ("forwarded as ID").
//!
//! # Diagnostics
//! One line per recipient on stderr or syslog (tag `sluice/local`):
//! `QUEUEID: to=<rcpt>, relay=local, delay=S, delays=a/b/c/d, dsn=X.Y.Z,
//! status=sent|deferred|bounced (what happened)`. Deferrals: a full disk
//! `4.3.0`, over quota `4.2.2`, other IO and unreadable files `4.3.0`.
//! Bounces: unknown user `5.1.1`, loops `5.4.6`, refused commands or files
//! `5.7.1`, a command's non-zero exit `5.3.0` (75 defers). Exit status 1
//! when the config cannot be read or the queue manager speaks another
//! protocol version.
//!
//! # Security
//! Runs as root, because it must write as any user; it never writes a
//! mailbox itself. `.forward` files are opened without following links and
//! used only if owned by their user or root and not group or world
//! writable. The content is never interpreted.
//!
//! # Must never
//! Write a user's mailbox as root or as anyone but its owner, report a
//! recipient delivered before its mailbox write is on disk (or its
//! forwarded copy committed), leave a partial message in a mailbox, or exit
//! because of a bad job.
#![forbid(unsafe_code)]

mod agent;
mod delivery;
mod helper;
mod maildir;
mod mbox;
mod message;
mod reinject;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sluice_ipc::delivery::Transport;

/// Command line of `sluice-local`.
#[derive(Debug, Parser)]
#[command(
    name = "sluice-local",
    version,
    about = "Sluice local delivery agent (started by sluice-master)"
)]
struct Args {
    #[command(flatten)]
    daemon: sluice_daemon::DaemonArgs,
    /// Internal: one delivery as the mailbox owner (started by the agent).
    #[command(subcommand)]
    internal: Option<Internal>,
}

#[derive(Debug, Subcommand)]
enum Internal {
    /// One delivery: become the owner, write stdin, answer on stdout.
    #[command(hide = true)]
    Deliver(helper::Request),
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Some(Internal::Deliver(request)) = &args.internal {
        return helper::child_main(request);
    }
    sluice_daemon::exit("sluice-local", run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    let sluice_daemon::Started { config, .. } = sluice_daemon::start("local", &args.daemon)?;
    let spool_owner = if sluice_daemon::is_root() {
        Some(sluice_daemon::lookup_user(&config.user).context("looking up the spool owner")?)
    } else {
        None
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let settings = delivery::Settings {
        spool: sluice_spool::Spool::new(&config.spool_dir),
        run_dir: config.run_dir.clone(),
        spool_owner,
        cleanup: sluice_cleanup::Settings::from_config(
            &config,
            &config.hostname_or(&sluice_daemon::system_hostname()),
        ),
        mailbox: config.local.mailbox.clone(),
        virtual_owner: config.local.virtual_owner.clone(),
        command_user: config.local.command_user.clone(),
        program: std::env::current_exe().context("finding this program's path")?,
        directory: sluice_mailbox::Directory::new(sluice_mailbox::Settings::from_config(&config)),
    };
    // Read the files now, so that their bad lines are logged at start.
    let _ = settings.directory.problems();
    let mut agent = agent::Agent {
        settings: &settings,
    };
    sluice_ipc::agent::serve(&config.run_dir, Transport::Local, &mut agent, &stop)?;
    Ok(())
}

//! One delivery in a child process that becomes the mailbox owner first:
//! `sluice-local deliver --uid U --gid G --kind maildir|mbox|command
//! --target T` with the bytes to write on its standard input, answering
//! with one line on its standard output (`sent TEXT`, `deferred DSN TEXT`
//! or `bounced DSN TEXT`).
//!
//! The agent itself stays root and never opens a mailbox; the child calls
//! `setgroups([gid])`, `setgid`, `setuid` (and checks that root cannot be
//! regained) before it reads a byte or touches a file. This is the fork
//! of Postfix's local(8), without `unsafe`: the child is a fresh `exec`.
//!
//! # Must never
//! Write a mailbox, or run a command, before the switch to its owner has
//! succeeded; leave the agent waiting forever on a child (a deadline kills
//! it and defers).
//!
//! # Security
//! The child's arguments come from the agent (root) only. Commands run
//! through `/bin/sh -c` as `local.command_user`, with the message on their
//! standard input and a minimal environment.
//!
//! # Errors
//! Every failure is an outcome: disk full defers `4.3.0`, over quota
//! `4.2.2`, other IO `4.3.0`; a command's exit 75 (EX_TEMPFAIL) defers,
//! another non-zero status bounces `5.3.0`; a child that dies or hangs
//! defers `4.3.0`.

use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::unistd::{Gid, Uid};

/// How long one delivery may take before the child is killed.
pub(crate) const DELIVERY_TIMEOUT: Duration = Duration::from_secs(600);

/// What the child writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Kind {
    /// A Maildir (`--target` is its directory).
    Maildir,
    /// An mbox file.
    Mbox,
    /// `sh -c TARGET`.
    Command,
}

/// The child's command line (`sluice-local deliver ...`).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Request {
    /// Become this user ID.
    #[arg(long)]
    pub(crate) uid: u32,
    /// And this group ID.
    #[arg(long)]
    pub(crate) gid: u32,
    /// What to write.
    #[arg(long, value_enum)]
    pub(crate) kind: Kind,
    /// The Maildir, mbox file or command.
    #[arg(long)]
    pub(crate) target: String,
    /// The envelope sender (for a command's `SENDER`).
    #[arg(long, default_value = "")]
    pub(crate) sender: String,
    /// The recipient (for a command's `RECIPIENT`).
    #[arg(long, default_value = "")]
    pub(crate) recipient: String,
}

/// The result of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Written (the text says where).
    Sent(String),
    /// Try again later.
    Deferred(String, String),
    /// Give up.
    Bounced(String, String),
}

impl Outcome {
    fn line(&self) -> String {
        let one = |s: &str| s.replace(['\n', '\r'], " ");
        match self {
            Outcome::Sent(text) => format!("sent {}", one(text)),
            Outcome::Deferred(dsn, text) => format!("deferred {dsn} {}", one(text)),
            Outcome::Bounced(dsn, text) => format!("bounced {dsn} {}", one(text)),
        }
    }

    fn parse(line: &str) -> Option<Outcome> {
        let (word, rest) = line.trim_end().split_once(' ')?;
        match word {
            "sent" => Some(Outcome::Sent(rest.to_owned())),
            "deferred" | "bounced" => {
                let (dsn, text) = rest.split_once(' ').unwrap_or((rest, ""));
                let (dsn, text) = (dsn.to_owned(), text.to_owned());
                Some(if word == "deferred" {
                    Outcome::Deferred(dsn, text)
                } else {
                    Outcome::Bounced(dsn, text)
                })
            }
            _ => None,
        }
    }
}

/// The outcome of a failed mailbox write.
pub(crate) fn io_outcome(what: &str, e: &io::Error) -> Outcome {
    let text = format!("cannot write {what}: {e}");
    match e.raw_os_error() {
        Some(nix::libc::EDQUOT) => Outcome::Deferred("4.2.2".into(), text),
        _ => Outcome::Deferred("4.3.0".into(), text),
    }
}

/// The child's command line for `request`. Every value is joined to its
/// option (`--sender=VALUE`), so that no value, such as a sender that
/// starts with `-`, can be taken for an option (issue 9 defect 10).
fn child_args(request: &Request) -> Vec<String> {
    let kind = match request.kind {
        Kind::Maildir => "maildir",
        Kind::Mbox => "mbox",
        Kind::Command => "command",
    };
    vec![
        "deliver".to_owned(),
        format!("--uid={}", request.uid),
        format!("--gid={}", request.gid),
        format!("--kind={kind}"),
        format!("--target={}", request.target),
        format!("--sender={}", request.sender),
        format!("--recipient={}", request.recipient),
    ]
}

/// Runs a delivery as `request` says, in a child; `bytes` is what to
/// write. `program` is this executable.
pub(crate) fn run(program: &Path, request: &Request, bytes: &[u8]) -> Outcome {
    let defer = |text: String| Outcome::Deferred("4.3.0".into(), text);
    let mut child = match Command::new(program)
        .args(child_args(request))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return defer(format!("cannot start {}: {e}", program.display())),
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A child that failed early closes its end: its answer says why.
        let _ = stdin.write_all(bytes);
    }
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return defer(format!(
                    "delivery to {} took longer than {} s",
                    request.target,
                    DELIVERY_TIMEOUT.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return defer(format!("waiting for the delivery child: {e}")),
        }
    };
    let mut answer = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = out.take(4096).read_to_string(&mut answer);
    }
    match Outcome::parse(&answer) {
        Some(outcome) => outcome,
        None => defer(format!(
            "the delivery child ended with {status} and no answer"
        )),
    }
}

/// Becomes `uid`/`gid` for good (supplementary groups: just `gid`).
fn become_owner(uid: u32, gid: u32) -> Result<(), String> {
    let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
    if Uid::effective().is_root() {
        nix::unistd::setgroups(&[gid]).map_err(|e| format!("setgroups: {e}"))?;
        nix::unistd::setgid(gid).map_err(|e| format!("setgid: {e}"))?;
        nix::unistd::setuid(uid).map_err(|e| format!("setuid: {e}"))?;
        if !uid.is_root() && nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
            return Err("root could be regained after setuid".to_owned());
        }
    } else if Uid::effective() != uid {
        return Err(format!(
            "running as uid {}, cannot become uid {uid}",
            Uid::effective()
        ));
    }
    Ok(())
}

/// The child: switches user, reads the bytes, writes, answers. Always
/// exits 0 once it has answered.
pub(crate) fn child_main(request: &Request) -> std::process::ExitCode {
    let outcome = child_deliver(request);
    println!("{}", outcome.line());
    std::process::ExitCode::SUCCESS
}

fn child_deliver(request: &Request) -> Outcome {
    if let Err(e) = become_owner(request.uid, request.gid) {
        return Outcome::Deferred("4.3.0".into(), format!("cannot switch user: {e}"));
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let mut bytes = Vec::new();
    if let Err(e) = io::stdin().read_to_end(&mut bytes) {
        return Outcome::Deferred("4.3.0".into(), format!("reading the message: {e}"));
    }
    match request.kind {
        Kind::Maildir => match crate::maildir::deliver(Path::new(&request.target), &bytes) {
            Ok(_) => Outcome::Sent(format!("delivered to maildir {}", request.target)),
            Err(e) => io_outcome(&format!("maildir {}", request.target), &e),
        },
        Kind::Mbox => match crate::mbox::deliver(Path::new(&request.target), &bytes) {
            Ok(()) => Outcome::Sent(format!("delivered to mailbox {}", request.target)),
            Err(e) => io_outcome(&format!("mailbox {}", request.target), &e),
        },
        Kind::Command => run_command(request, &bytes),
    }
}

fn run_command(request: &Request, bytes: &[u8]) -> Outcome {
    let home = nix::unistd::User::from_uid(Uid::from_raw(request.uid))
        .ok()
        .flatten()
        .map_or_else(|| PathBuf::from("/"), |u| u.dir);
    let mut child = match Command::new("/bin/sh")
        .arg("-c")
        .arg(&request.target)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("SHELL", "/bin/sh")
        .env("HOME", &home)
        .env("SENDER", &request.sender)
        .env("RECIPIENT", &request.recipient)
        .current_dir(if home.is_dir() { &home } else { Path::new("/") })
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Outcome::Deferred("4.3.0".into(), format!("cannot run sh: {e}")),
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(bytes);
    }
    let output = match child.wait_with_output() {
        Ok(o) => o,
        Err(e) => {
            return Outcome::Deferred("4.3.0".into(), format!("waiting for the command: {e}"))
        }
    };
    let said = String::from_utf8_lossy(&output.stderr);
    let said = sluice_log::printable(said.trim(), 200);
    match output.status.code() {
        Some(0) => Outcome::Sent(format!("delivered to command: {}", request.target)),
        Some(75) => Outcome::Deferred("4.3.0".into(), format!("command deferred: {said}")),
        Some(code) => Outcome::Bounced(
            "5.3.0".into(),
            format!("command exited with status {code}: {said}"),
        ),
        None => Outcome::Deferred(
            "4.3.0".into(),
            format!("command killed by a signal: {}", output.status),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_value_is_taken_for_an_option() {
        use clap::Parser as _;
        // A sender starting with `-` made the child's parser fail, and the
        // mail deferred until its lifetime ended.
        let request = Request {
            uid: 1000,
            gid: 1000,
            kind: Kind::Command,
            target: "-c true".into(),
            sender: "-oops@evil.test".into(),
            recipient: "--uid=0".into(),
        };
        let args = crate::Args::try_parse_from(
            std::iter::once("sluice-local".to_owned()).chain(child_args(&request)),
        )
        .expect("the child parses its command line");
        let Some(crate::Internal::Deliver(got)) = args.internal else {
            panic!("not a delivery: {args:?}");
        };
        assert_eq!(
            (
                got.uid,
                got.gid,
                got.kind,
                got.target,
                got.sender,
                got.recipient
            ),
            (
                1000,
                1000,
                Kind::Command,
                request.target,
                request.sender,
                request.recipient
            )
        );
    }

    #[test]
    fn answers_round_trip() {
        for o in [
            Outcome::Sent("delivered to maildir /x/".into()),
            Outcome::Deferred("4.2.2".into(), "over quota".into()),
            Outcome::Bounced("5.3.0".into(), "exit 1".into()),
        ] {
            assert_eq!(Outcome::parse(&o.line()), Some(o));
        }
        assert_eq!(Outcome::parse("nonsense"), None);
    }

    #[test]
    fn quota_and_disk_full_defer_with_their_codes() {
        let quota = io::Error::from_raw_os_error(nix::libc::EDQUOT);
        assert!(matches!(io_outcome("x", &quota), Outcome::Deferred(d, _) if d == "4.2.2"));
        let full = io::Error::from_raw_os_error(nix::libc::ENOSPC);
        assert!(matches!(io_outcome("x", &full), Outcome::Deferred(d, _) if d == "4.3.0"));
    }
}

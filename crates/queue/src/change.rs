//! Queue changes (flush, hold, release, delete, requeue): which messages the
//! operator named, and the request that asks the queue manager to do it
//! over `run_dir/qmgr.sock`.
//!
//! # Must never
//! Touch the index or the queue files itself (the queue manager is their
//! only writer), or decide who may change the queue: the queue manager
//! checks the peer's credentials, and its refusal is reported as it is.
//!
//! # Security
//! Runs with the operator's privileges. Arguments and stdin lines become
//! queue IDs only if they parse as [`QueueId`]s; the queue manager's
//! answers are shown with control characters replaced.
//!
//! # Errors
//! A bad argument is a usage error (exit 2). A missing socket, a refused
//! connection, a protocol mismatch, a refusal (`Denied`) or a failure
//! (`Failed`) are errors (exit 1) that say which.

use std::collections::HashSet;
use std::io::{BufRead, ErrorKind};
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail};
use sluice_ipc::client::{CallError, Client};
use sluice_ipc::qmgr::{Action, Request, Response, Target, PROTOCOL, VERSION};
use sluice_spool::QueueId;

use crate::listing::printable;

/// How long to wait for the queue manager's answer. A large delete or
/// requeue is one transaction in the queue manager, so this is generous.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// Queue IDs per request, so that a long list from stdin stays well under
/// the frame limit (20 bytes and quotes each).
const IDS_PER_REQUEST: usize = 10_000;

/// The verb as the operator typed it.
pub(crate) fn verb(action: Action) -> &'static str {
    match action {
        Action::Flush => "flush",
        Action::Hold => "hold",
        Action::Release => "release",
        Action::Delete => "delete",
        Action::Requeue => "requeue",
    }
}

/// What was done, for the report line (`Deleted: 3 messages`).
fn done(action: Action) -> &'static str {
    match action {
        Action::Flush => "Flushed",
        Action::Hold => "Placed on hold",
        Action::Release => "Released from hold",
        Action::Delete => "Deleted",
        Action::Requeue => "Requeued",
    }
}

/// The report line for `messages` affected.
pub(crate) fn report(action: Action, messages: u64) -> String {
    let plural = if messages == 1 { "" } else { "s" };
    format!("{}: {messages} message{plural}", done(action))
}

/// Turns the operator's arguments into requests: `ALL` alone means every
/// message; `-` reads queue IDs from `stdin`, one per line; an argument
/// that parses as a queue ID is one; anything else is a domain
/// (lower-cased, trailing dot dropped). No argument means `ALL` for flush
/// and is a usage error otherwise. IDs go in one request, each domain in
/// its own; a long ID list is split into several requests. Errors are
/// usage errors.
pub(crate) fn parse_targets(
    action: Action,
    args: &[String],
    stdin: &mut dyn BufRead,
) -> Result<Vec<Target>, String> {
    if args.is_empty() {
        return match action {
            Action::Flush => Ok(vec![Target::All]),
            _ => Err(format!(
                "{} needs queue IDs, a domain, ALL, or - (queue IDs on stdin)",
                verb(action)
            )),
        };
    }
    if args.iter().any(|a| a == "ALL") {
        if args.len() > 1 {
            return Err("ALL must be the only argument".to_owned());
        }
        return Ok(vec![Target::All]);
    }
    let mut ids: Vec<String> = Vec::new();
    let mut domains: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    let mut read_stdin = false;
    for arg in args {
        if arg == "-" {
            if read_stdin {
                return Err("- given twice".to_owned());
            }
            read_stdin = true;
            for (n, line) in stdin.lines().enumerate() {
                let line = line.map_err(|e| format!("reading stdin: {e}"))?;
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                let id: QueueId = line.parse().map_err(|_| {
                    format!(
                        "stdin line {}: not a queue ID: {:?}",
                        n + 1,
                        printable(&line.chars().take(80).collect::<String>())
                    )
                })?;
                if seen.insert(id) {
                    ids.push(id.to_string());
                }
            }
        } else if let Ok(id) = arg.parse::<QueueId>() {
            if seen.insert(id) {
                ids.push(id.to_string());
            }
        } else {
            let domain = parse_domain(arg)?;
            if !domains.contains(&domain) {
                domains.push(domain);
            }
        }
    }
    let mut targets = Vec::new();
    targets.extend(ids.chunks(IDS_PER_REQUEST).map(|c| Target::Ids(c.to_vec())));
    targets.extend(domains.into_iter().map(Target::Domain));
    Ok(targets)
}

/// A domain argument, normalized; refuses what is clearly not a domain,
/// including something shaped like a mistyped queue ID (upper-case letters
/// and digits only, no dot).
fn parse_domain(arg: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "{:?} is not a queue ID, a domain, ALL or -",
            printable(&arg.chars().take(80).collect::<String>())
        )
    };
    let domain = arg.strip_suffix('.').unwrap_or(arg);
    let looks_like_id = !domain.contains('.')
        && domain
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    let fine = !domain.is_empty()
        && domain.len() <= 255
        && !domain.starts_with(['.', '-'])
        && !domain.contains("..")
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || !c.is_ascii());
    if !fine || looks_like_id || domain.chars().any(char::is_control) {
        return Err(bad());
    }
    Ok(domain.to_lowercase())
}

/// Sends one change request per target on one connection and returns how
/// many messages were affected in all.
pub(crate) fn send_changes(
    run_dir: &Path,
    action: Action,
    targets: Vec<Target>,
) -> anyhow::Result<u64> {
    let path = sluice_ipc::qmgr::socket(run_dir);
    let mut client = Client::connect(&path, &sluice_ipc::qmgr::hello(), ANSWER_TIMEOUT)
        .map_err(|e| explain(&path, e))?;
    let mut total = 0;
    for target in targets {
        let response: Response = client
            .call(&Request::Change { action, target })
            .map_err(|e| explain(&path, e))?;
        match response {
            Response::Done { messages } => total += messages,
            Response::Denied { reason } => bail!(
                "the queue manager refused to {}: {} (you are uid {}; changes need root or the queue manager's group)",
                verb(action),
                printable(&reason),
                nix::unistd::getuid()
            ),
            Response::Failed { reason } => bail!(
                "the queue manager could not {}: {}",
                verb(action),
                printable(&reason)
            ),
        }
    }
    Ok(total)
}

/// The operator's words for a failed exchange with the queue manager.
fn explain(path: &Path, e: CallError) -> anyhow::Error {
    match e {
        CallError::Connect { source, .. } => match source.kind() {
            ErrorKind::NotFound => {
                anyhow!("the queue manager is not running (no {})", path.display())
            }
            ErrorKind::ConnectionRefused => anyhow!(
                "the queue manager is not running ({} refuses connections)",
                path.display()
            ),
            ErrorKind::PermissionDenied => anyhow!(
                "{}: permission denied (changes need root or the queue manager's group)",
                path.display()
            ),
            _ => anyhow!("connecting to {}: {source}", path.display()),
        },
        CallError::Protocol { got, .. } => anyhow!(
            "{} speaks {:?} version {}, not {PROTOCOL} version {VERSION}",
            path.display(),
            printable(&got.protocol),
            got.version
        ),
        e if e.is_timeout() => anyhow!(
            "no answer from the queue manager within {}s (the change may still happen)",
            ANSWER_TIMEOUT.as_secs()
        ),
        CallError::Closed { .. } => {
            anyhow!("the queue manager closed the connection without an answer")
        }
        e => anyhow!("from the queue manager: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0HOLG8L24XA000010001";
    const ID2: &str = "0HOLG8L24XB000010002";

    fn parse(action: Action, args: &[&str], stdin: &str) -> Result<Vec<Target>, String> {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        parse_targets(action, &args, &mut stdin.as_bytes())
    }

    #[test]
    fn flush_without_arguments_is_all_other_verbs_need_one() {
        assert_eq!(parse(Action::Flush, &[], ""), Ok(vec![Target::All]));
        for action in [
            Action::Hold,
            Action::Release,
            Action::Delete,
            Action::Requeue,
        ] {
            let e = parse(action, &[], "").expect_err("needs a target");
            assert!(e.starts_with(verb(action)), "{e}");
        }
    }

    #[test]
    fn ids_domains_and_all() {
        assert_eq!(parse(Action::Delete, &["ALL"], ""), Ok(vec![Target::All]));
        assert!(parse(Action::Delete, &["ALL", ID], "").is_err());
        assert_eq!(
            parse(Action::Hold, &[ID, "Example.ORG.", ID2, "example.org"], ""),
            Ok(vec![
                Target::Ids(vec![ID.into(), ID2.into()]),
                Target::Domain("example.org".into())
            ])
        );
        assert_eq!(
            parse(Action::Flush, &["localhost"], ""),
            Ok(vec![Target::Domain("localhost".into())])
        );
    }

    #[test]
    fn stdin_ids_like_postsuper() {
        assert_eq!(
            parse(Action::Delete, &["-"], &format!("{ID}\n\n  {ID2}  \n")),
            Ok(vec![Target::Ids(vec![ID.into(), ID2.into()])])
        );
        assert_eq!(parse(Action::Delete, &["-"], ""), Ok(vec![]));
        let e = parse(Action::Delete, &["-"], &format!("{ID}\nnot-an-id\n")).expect_err("bad");
        assert!(e.contains("stdin line 2"), "{e}");
    }

    #[test]
    fn what_is_neither_an_id_nor_a_domain_is_refused() {
        for bad in [
            "user@example.org",
            "a b",
            "../etc",
            "",
            "0HOLG8L24XA00001000",
            "x\u{1b}y",
        ] {
            assert!(parse(Action::Hold, &[bad], "").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn report_lines() {
        assert_eq!(report(Action::Delete, 1), "Deleted: 1 message");
        assert_eq!(report(Action::Hold, 3), "Placed on hold: 3 messages");
    }
}

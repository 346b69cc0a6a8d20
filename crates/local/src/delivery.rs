//! One job: read the queue file, check the job against it, and for each
//! recipient: the `Delivered-To:` loop test, expansion (aliases,
//! `.forward`, virtual map), one child per final mailbox, forwarding of
//! what expanded to other domains, one result and one log line.
//!
//! Per recipient, its destinations decide: any deferral defers the
//! recipient (the next attempt delivers again: duplicates, never loss, as
//! the durability rule allows); otherwise the forwarded addresses are
//! queued; then it is delivered if anything was delivered (parts that
//! bounced are named in the reply and logged), else bounced.
//!
//! # Must never
//! Answer a job with other than one result per job recipient, in order;
//! report delivered before the mailbox write was fsynced or the forwarded
//! copy committed; open a mailbox itself (children do, as the owner).
//!
//! # Security
//! The job is checked against the queue file (a mismatch defers). The
//! content is hostile and only scanned for `Delivered-To:`.
//!
//! # Errors
//! Every failure is a deferral or a bounce with a reason; none stops the
//! agent.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use sluice_ipc::delivery::{Handoff, Job, JobResult, Outcome, RecipientResult};
use sluice_mailbox::{Account, Destination, Directory, Severity};
use sluice_proto::envelope::Recipient;
use sluice_spool::{QueueFile, QueueId, Spool};

use crate::helper::{self, Kind, Request};
use crate::message;

/// What every job needs.
#[derive(Debug)]
pub(crate) struct Settings {
    /// The spool.
    pub(crate) spool: Spool,
    /// `run_dir`, for the queue manager's socket.
    pub(crate) run_dir: PathBuf,
    /// The spool's owner `(uid, gid)` (the `sluice` user), for forwarded
    /// queue files; `None` when not running as root.
    pub(crate) spool_owner: Option<(u32, u32)>,
    /// Cleanup's settings, for forwarded messages.
    pub(crate) cleanup: sluice_cleanup::Settings,
    /// `local.mailbox`.
    pub(crate) mailbox: String,
    /// `local.virtual_owner`.
    pub(crate) virtual_owner: String,
    /// `local.command_user`.
    pub(crate) command_user: String,
    /// This executable, for the delivery children.
    pub(crate) program: PathBuf,
    /// The recipients.
    pub(crate) directory: Directory,
}

fn result(index: u32, outcome: Outcome, dsn: &str, reply: &str) -> RecipientResult {
    RecipientResult {
        index,
        outcome,
        dsn: dsn.to_owned(),
        reply: sluice_log::printable(reply, 512),
        remote_mta: None,
        // Mailboxes, files and commands are final delivery (RFC 3461 §5.2.1).
        handoff: Handoff::Final,
    }
}

/// `local.mailbox` for `account`: `~/` is the home, `%u` the name.
pub(crate) fn mailbox_path(template: &str, account: &Account) -> String {
    let path = match template.strip_prefix("~/") {
        Some(rest) => {
            let home = account.home.to_string_lossy();
            format!("{}/{rest}", home.trim_end_matches('/'))
        }
        None => template.to_owned(),
    };
    path.replace("%u", &account.name)
}

fn kind_of(path: &str) -> Kind {
    if path.ends_with('/') {
        Kind::Maildir
    } else {
        Kind::Mbox
    }
}

/// The account named `name`, for virtual and command deliveries.
///
/// Not running as root (a demo instance under one's own account), the
/// agent can write only as itself, so it does, whatever the setting says.
fn owner(name: &str, what: &str) -> Result<(u32, u32), helper::Outcome> {
    if !sluice_daemon::is_root() {
        return Ok((
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        ));
    }
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => Ok((u.uid.as_raw(), u.gid.as_raw())),
        Ok(None) => Err(helper::Outcome::Deferred(
            "4.3.0".into(),
            format!("{what} {name:?} does not exist"),
        )),
        Err(e) => Err(helper::Outcome::Deferred(
            "4.3.0".into(),
            format!("looking up {what} {name:?}: {e}"),
        )),
    }
}

/// Delivers to one final destination (not a remote one).
fn deliver_one(settings: &Settings, file: &QueueFile, dest: &Destination) -> helper::Outcome {
    let sender = &file.envelope.sender;
    let (address, uid, gid, kind, target) = match dest {
        Destination::Mailbox { address, account } => {
            let path = mailbox_path(&settings.mailbox, account);
            (address, account.uid, account.gid, kind_of(&path), path)
        }
        Destination::Virtual { address, path } => {
            let (uid, gid) = match owner(&settings.virtual_owner, "local.virtual_owner") {
                Ok(o) => o,
                Err(outcome) => return outcome,
            };
            let path = path.to_string_lossy().into_owned();
            (address, uid, gid, kind_of(&path), path)
        }
        Destination::Command { address, command } => {
            let (uid, gid) = match owner(&settings.command_user, "local.command_user") {
                Ok(o) => o,
                Err(outcome) => return outcome,
            };
            (address, uid, gid, Kind::Command, command.clone())
        }
        Destination::File { address, path } => {
            let (uid, gid) = match owner(&settings.command_user, "local.command_user") {
                Ok(o) => o,
                Err(outcome) => return outcome,
            };
            (
                address,
                uid,
                gid,
                Kind::Mbox,
                path.to_string_lossy().into_owned(),
            )
        }
        Destination::Remote { address } => {
            return helper::Outcome::Deferred("4.3.0".into(), format!("<{address}> is not local"))
        }
    };
    if message::has_delivered_to(&file.content, address) {
        return helper::Outcome::Bounced(
            "5.4.6".into(),
            format!("mail forwarding loop for <{address}>: it already has Delivered-To: {address}"),
        );
    }
    let written =
        message::prepare(&file.content, sender, address).and_then(|prepared| match kind {
            Kind::Mbox => {
                let date = message::from_line_date(time::OffsetDateTime::now_utc());
                message::mbox_entry(&prepared, sender, &date)
            }
            Kind::Maildir | Kind::Command => Ok(prepared),
        });
    let bytes = match written {
        Ok(bytes) => bytes,
        Err(e) => {
            let why = format!("refused to write a bad envelope address into a mailbox: {e}");
            return helper::Outcome::Bounced("5.1.3".into(), why);
        }
    };
    let request = Request {
        uid,
        gid,
        kind,
        target,
        sender: sender.clone(),
        recipient: address.clone(),
    };
    helper::run(&settings.program, &request, &bytes)
}

/// Delivers to one recipient of the queue file.
fn deliver_recipient(
    settings: &Settings,
    file: &QueueFile,
    rcpt: &Recipient,
    index: u32,
) -> RecipientResult {
    let address = &rcpt.address;
    if message::has_delivered_to(&file.content, address) {
        let reason =
            format!("mail forwarding loop for <{address}>: it already has Delivered-To: {address}");
        return result(index, Outcome::Bounced, "5.4.6", &reason);
    }
    let expansion = settings.directory.expand(address);
    let mut sent = Vec::new();
    let mut deferred = Vec::new();
    let mut bounced = Vec::new();
    for failure in &expansion.failures {
        let entry = (failure.dsn.to_owned(), failure.reason.clone());
        match failure.severity {
            Severity::Temporary => deferred.push(entry),
            Severity::Permanent => bounced.push(entry),
        }
    }
    let mut remote = Vec::new();
    if deferred.is_empty() {
        for dest in &expansion.destinations {
            if let Destination::Remote { address } = dest {
                remote.push(address.clone());
                continue;
            }
            match deliver_one(settings, file, dest) {
                helper::Outcome::Sent(text) => sent.push(text),
                helper::Outcome::Deferred(dsn, text) => deferred.push((dsn, text)),
                helper::Outcome::Bounced(dsn, text) => bounced.push((dsn, text)),
            }
        }
    }
    if let Some((dsn, text)) = deferred.first() {
        return result(index, Outcome::Deferred, dsn, text);
    }
    if !remote.is_empty() {
        match crate::reinject::forward(settings, file, rcpt, &remote) {
            Ok(id) => {
                crate::reinject::hint(&settings.run_dir, id);
                sent.push(format!("forwarded as {id} to <{}>", remote.join(">, <")));
            }
            Err(crate::reinject::ForwardError::Refused(refusal)) => {
                let reason = format!("cannot forward: {refusal}");
                return result(index, Outcome::Bounced, refusal.dsn(), &reason);
            }
            Err(crate::reinject::ForwardError::Failed(e)) => {
                let reason = format!("cannot queue the forwarded copy: {e}");
                return result(index, Outcome::Deferred, "4.3.0", &reason);
            }
        }
    }
    if sent.is_empty() {
        return match bounced.first() {
            Some((dsn, text)) => result(index, Outcome::Bounced, dsn, text),
            None => result(
                index,
                Outcome::Bounced,
                "5.3.0",
                &format!("<{address}> expands to nothing"),
            ),
        };
    }
    let mut reply = sent.join("; ");
    for (dsn, text) in &bounced {
        log::warn!("{address}: part of its delivery failed: {dsn} {text}");
        reply.push_str(&format!("; failed {dsn}: {text}"));
    }
    result(index, Outcome::Delivered, "2.0.0", &reply)
}

/// Delivers one job; one result per job recipient, in order.
pub(crate) fn deliver_job(settings: &Settings, job: &Job) -> JobResult {
    let job_start = SystemTime::now();
    let queue_wait = Duration::from_millis(job.queue_wait_ms);
    let read = job
        .queue_id
        .parse::<QueueId>()
        .map_err(|e| format!("bad queue ID: {e}"))
        .and_then(|id| {
            settings
                .spool
                .read(id)
                .map_err(|e| format!("cannot read queue file: {e}"))
        });
    let mut recipients = Vec::with_capacity(job.recipients.len());
    for jr in &job.recipients {
        let started = Instant::now();
        let r = match &read {
            Err(reason) => result(jr.index, Outcome::Deferred, "4.3.0", reason),
            Ok(file) => {
                let in_file = usize::try_from(jr.index)
                    .ok()
                    .and_then(|i| file.envelope.recipients.get(i));
                match in_file {
                    Some(rcpt) if rcpt.address == jr.address => {
                        deliver_recipient(settings, file, rcpt, jr.index)
                    }
                    _ => {
                        let reason = format!(
                            "recipient #{} <{}> does not match the queue file",
                            jr.index, jr.address
                        );
                        result(jr.index, Outcome::Deferred, "4.3.0", &reason)
                    }
                }
            }
        };
        let since_arrival = read
            .as_ref()
            .ok()
            .and_then(|f| job_start.duration_since(f.arrival).ok())
            .unwrap_or_default();
        let before = since_arrival.saturating_sub(queue_wait);
        let spent = started.elapsed();
        let delays = [
            before.as_secs_f64(),
            queue_wait.as_secs_f64(),
            0.0,
            spent.as_secs_f64(),
        ];
        let line = sluice_log::line::delivery(&sluice_log::line::Delivery {
            queue_id: &job.queue_id,
            to: &jr.address,
            relay: "local",
            delay: delays.iter().sum(),
            delays,
            dsn: &r.dsn,
            status: r.outcome.status_word(),
            reply: &r.reply,
        });
        log::info!("{line}");
        recipients.push(r);
    }
    JobResult {
        job_id: job.job_id,
        recipients,
        open_connection: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailbox_templates() {
        let account = Account {
            name: "bob".into(),
            uid: 1,
            gid: 1,
            home: "/home/bob/".into(),
        };
        assert_eq!(mailbox_path("~/Maildir/", &account), "/home/bob/Maildir/");
        assert_eq!(mailbox_path("/var/mail/%u", &account), "/var/mail/bob");
        assert_eq!(kind_of("/var/mail/bob"), Kind::Mbox);
        assert_eq!(kind_of("/home/bob/Maildir/"), Kind::Maildir);
    }
}

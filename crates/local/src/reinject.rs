//! Forwarding: a local recipient whose alias or `.forward` names addresses
//! elsewhere gets a new queue file for them (same sender, source `forward`,
//! through cleanup, which prepends a `Delivered-To:` for the local
//! recipient), committed through `Spool::commit` as the spool's owner, then
//! a `NewMail` hint to the queue manager.
//!
//! # Must never
//! Report a recipient forwarded before the new queue file is committed, or
//! leave a queue file the queue manager cannot read (it is written with
//! the effective user and group of the `sluice` user, then root is taken
//! back).
//!
//! # Security
//! The agent is root; the effective IDs are switched only around the
//! commit (the agent is single-threaded).
//!
//! # Errors
//! A failed commit is returned (the recipient is deferred); a lost hint is
//! only logged (the queue manager scans `queue/` anyway).

use std::path::Path;
use std::time::SystemTime;

use nix::unistd::{Gid, Uid};
use sluice_proto::envelope::{Envelope, Recipient};
use sluice_spool::{Message, QueueFile, QueueId, Source};

use crate::delivery::Settings;

/// Effective IDs switched to the spool owner until dropped.
struct AsOwner {
    switched: bool,
}

impl AsOwner {
    fn new(owner: Option<(u32, u32)>) -> Result<AsOwner, String> {
        let Some((uid, gid)) = owner else {
            return Ok(AsOwner { switched: false });
        };
        if !Uid::effective().is_root() {
            return Ok(AsOwner { switched: false });
        }
        nix::unistd::setegid(Gid::from_raw(gid)).map_err(|e| format!("setegid: {e}"))?;
        if let Err(e) = nix::unistd::seteuid(Uid::from_raw(uid)) {
            let _ = nix::unistd::setegid(Gid::from_raw(0));
            return Err(format!("seteuid: {e}"));
        }
        Ok(AsOwner { switched: true })
    }
}

impl Drop for AsOwner {
    fn drop(&mut self) {
        if self.switched {
            // Failing to take root back would break every later delivery:
            // that is a broken invariant, and the master restarts us.
            if let Err(e) = nix::unistd::seteuid(Uid::from_raw(0))
                .and_then(|()| nix::unistd::setegid(Gid::from_raw(0)))
            {
                panic!("cannot regain root after writing the queue file: {e}");
            }
            // The change of user cleared the parent-death signal.
            if let Err(e) = sluice_daemon::die_with_master() {
                log::error!("fatal: {e}");
                std::process::exit(1);
            }
        }
    }
}

/// Why a forward was not queued.
#[derive(Debug)]
pub(crate) enum ForwardError {
    /// Cleanup refused it (a relay loop): the recipient bounces.
    Refused(sluice_cleanup::Refusal),
    /// It could not be written now: the recipient is deferred.
    Failed(String),
}

/// Queues `file`'s content again for `addresses`, from the same sender,
/// as forwarded for `original`. Returns the new queue ID.
pub(crate) fn forward(
    settings: &Settings,
    file: &QueueFile,
    original: &Recipient,
    addresses: &[String],
) -> Result<QueueId, ForwardError> {
    let envelope = Envelope {
        recipients: addresses
            .iter()
            .map(|a| Recipient {
                address: a.clone(),
                notify: original.notify,
                orcpt: original
                    .orcpt
                    .clone()
                    .or_else(|| Some(format!("rfc822;{}", original.address))),
            })
            .collect(),
        ..file.envelope.clone()
    };
    let source = Source::Forward {
        recipient: original.address.clone(),
    };
    let entry = sluice_cleanup::Entry {
        id: QueueId::generate(),
        arrival: SystemTime::now(),
        source: &source,
        envelope: &envelope,
    };
    sluice_cleanup::check(&settings.cleanup, &entry, &file.content)
        .map_err(ForwardError::Refused)?;
    let cleaned = sluice_cleanup::clean(
        &settings.cleanup,
        &entry,
        &sluice_cleanup::Submitter::default(),
        &file.content,
    );
    let id = entry.id;
    let message = Message {
        id,
        arrival: entry.arrival,
        source: &source,
        envelope: &envelope,
        content: &cleaned.pieces(),
    };
    let _as_owner = AsOwner::new(settings.spool_owner).map_err(ForwardError::Failed)?;
    settings
        .spool
        .commit(&message)
        .map_err(|e| ForwardError::Failed(e.to_string()))?;
    Ok(id)
}

/// Tells the queue manager about `id` (best effort, never waiting).
pub(crate) fn hint(run_dir: &Path, id: QueueId) {
    let socket = sluice_ipc::qmgr::socket(run_dir);
    let sent =
        sluice_ipc::client::Hinter::new(socket.clone()).send(&sluice_ipc::qmgr::Request::NewMail {
            queue_id: id.to_string(),
        });
    if !sent {
        log::info!(
            "{id}: no new-mail hint to {}; the queue manager will find the file",
            socket.display()
        );
    }
}

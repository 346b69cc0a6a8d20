//! The files of `maildrop/`: turns what `sluice-sendmail` (or any local
//! user, by hand) dropped there into queue files, through cleanup.
//!
//! For each file, oldest name first: open it without following a symlink
//! and without blocking (a FIFO must not hang pickup), `fstat`
//! the open file, read at most a size limit, decode it, check it, then
//! commit a new queue file with a new queue ID ([`Spool::commit`]), remove
//! the maildrop file, and hand the new ID back for import. A crash between
//! the commit and the removal makes a duplicate at the next pickup, never a
//! loss.
//!
//! # Must never
//! Believe what a maildrop file says about who wrote it: the owner of the
//! open file is the only truth about the submitter. A `local-uid` or
//! `local-user` that does not match the owner is corrected (and logged); a
//! sender chosen by an untrusted user always reaches the recipients with an
//! `X-Authentication-Warning:` naming that user, even when the file was
//! written by hand rather than by `sluice-sendmail` (cleanup's local steps
//! run again on every file). Delete a file it could
//! not use: such files go to `corrupt/`, with the reason logged.
//!
//! # Security
//! Runs as the `sluice` user, which owns `maildrop/` (mode 1733, so it may
//! remove anyone's file there). Every byte of every maildrop file, its
//! name, type, size and link count are hostile: any local user wrote them.
//! Refused (moved to `corrupt/`): symlinks, anything but a regular file, a
//! file with more than one hard link (it could be someone else's file
//! linked in), a file over the size limit, one that does not decode under
//! the `local` allow-list (client fields, `declared-size`, unknown fields),
//! one whose source is not `local`, one without recipients, one whose
//! sender, recipients, ORCPT or ENVID fail the path grammar (the same
//! `Envelope::check` the client engine applies), and, when
//! `local.restrict_sender` is on, one whose sender was chosen by an
//! untrusted user.
//!
//! # Errors
//! A bad file is quarantined and logged, and pickup goes on with the next.
//! A failed commit or removal leaves the maildrop file for the next scan
//! (logged). Nothing here is fatal.

use std::fs::{self, File};
use std::io::Read as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;
use std::time::SystemTime;

use sluice_config::Config;
use sluice_proto::envelope::Envelope;
use sluice_spool::{Area, Message, QueueId, Source, Spool};

/// Room for the envelope on top of the largest message accepted.
const HEADER_ALLOWANCE: u64 = 1 << 20;

/// What pickup needs to know of the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Cleanup's settings (this host's name, the hop count limit).
    pub(crate) cleanup: sluice_cleanup::Settings,
    /// Largest maildrop file read, in bytes.
    pub(crate) max_file_size: u64,
    /// `local.restrict_sender`.
    pub(crate) restrict_sender: bool,
    /// The gid whose members (with root) may choose their sender.
    pub(crate) trusted_gid: Option<u32>,
}

impl Settings {
    pub(crate) fn from_config(config: &Config, hostname: &str) -> Settings {
        let trusted_gid = nix::unistd::User::from_name(&config.user)
            .ok()
            .flatten()
            .map(|u| u.gid.as_raw());
        Settings {
            cleanup: sluice_cleanup::Settings::from_config(config, hostname),
            max_file_size: config
                .smtpd
                .max_message_size
                .saturating_add(HEADER_ALLOWANCE),
            restrict_sender: config.local.restrict_sender,
            trusted_gid,
        }
    }
}

/// Why a maildrop file is not picked up.
#[derive(Debug)]
enum Refusal {
    /// Gone meanwhile, or being written (not an error).
    Skip,
    /// A bad file: to `corrupt/`, with this reason.
    Corrupt(String),
    /// A problem on our side: leave the file for the next scan.
    Retry(String),
}

/// Picks up every file in `maildrop/`; returns the new queue IDs.
pub(crate) fn pickup_all(spool: &Spool, settings: &Settings) -> Vec<QueueId> {
    let dir = spool.dir(Area::Maildrop);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) => {
            log::warn!("pickup: cannot read {}: {e}", dir.display());
            return Vec::new();
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // Dot-names are sendmail's temporary files, still being written.
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort_unstable();
    let mut ids = Vec::new();
    for name in names {
        let path = dir.join(&name);
        match pickup_one(spool, settings, &path, &name) {
            Ok(id) => ids.push(id),
            Err(Refusal::Skip) => {}
            Err(Refusal::Retry(why)) => {
                log::warn!(
                    "pickup: maildrop file {}: {why}: will try again",
                    sluice_log::printable(&name, 80)
                );
            }
            Err(Refusal::Corrupt(why)) => quarantine(spool, &path, &name, &why),
        }
    }
    ids
}

fn quarantine(spool: &Spool, path: &Path, name: &str, why: &str) {
    let shown = sluice_log::printable(name, 80);
    match spool.quarantine(path, why) {
        Ok(moved) => log::warn!(
            "pickup: maildrop file {shown}: {why}: moved to {}",
            moved.display()
        ),
        Err(e) => log::error!("pickup: maildrop file {shown}: {why}: could not move it aside: {e}"),
    }
}

/// Validates, commits and removes one maildrop file.
fn pickup_one(
    spool: &Spool,
    settings: &Settings,
    path: &Path,
    name: &str,
) -> Result<QueueId, Refusal> {
    let file = File::options()
        .read(true)
        .custom_flags(libc_flags())
        .open(path);
    let mut file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Refusal::Skip),
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) => {
            return Err(Refusal::Corrupt("is a symbolic link".into()))
        }
        Err(e) => {
            // Not ours to read (e.g. mode 0600 by its owner): nothing else
            // can ever be done with it.
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                return Err(Refusal::Corrupt(format!("cannot be opened: {e}")));
            }
            return Err(Refusal::Retry(format!("open: {e}")));
        }
    };
    let meta = file
        .metadata()
        .map_err(|e| Refusal::Retry(format!("fstat: {e}")))?;
    if !meta.file_type().is_file() {
        return Err(Refusal::Corrupt("is not a regular file".into()));
    }
    if meta.nlink() != 1 {
        return Err(Refusal::Corrupt(format!(
            "has {} hard links (only a file of its own is accepted)",
            meta.nlink()
        )));
    }
    if meta.size() > settings.max_file_size {
        return Err(Refusal::Corrupt(format!(
            "is {} bytes, over the limit of {}",
            meta.size(),
            settings.max_file_size
        )));
    }
    let owner = meta.uid();
    let mut bytes = Vec::with_capacity(usize::try_from(meta.size()).unwrap_or(0));
    (&mut file)
        .take(settings.max_file_size + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Refusal::Retry(format!("read: {e}")))?;
    if bytes.len() as u64 > settings.max_file_size {
        return Err(Refusal::Corrupt("grew over the size limit".into()));
    }
    let queue_file = sluice_spool::decode(&bytes).map_err(|e| Refusal::Corrupt(format!("{e}")))?;
    let Source::Local { uid, user } = &queue_file.source else {
        return Err(Refusal::Corrupt("its source is not local".into()));
    };
    let real_user = user_name(owner);
    if *uid != owner {
        log::warn!(
            "maildrop file {}: local-uid {uid} does not match the file owner {owner}: using {owner}",
            sluice_log::printable(name, 80)
        );
    } else if *user != real_user {
        log::warn!(
            "maildrop file {}: local-user {} does not match the file owner's name {}: using {}",
            sluice_log::printable(name, 80),
            sluice_log::printable(user, 64),
            sluice_log::printable(&real_user, 64),
            sluice_log::printable(&real_user, 64)
        );
    }
    let envelope = &queue_file.envelope;
    if envelope.recipients.is_empty() {
        return Err(Refusal::Corrupt("has no recipients".into()));
    }
    // The same grammar smtpd applies: a line end in an address would forge
    // an SMTP transaction toward the next hop or a message in an mbox.
    envelope
        .check()
        .map_err(|e| Refusal::Corrupt(e.to_string()))?;
    let trusted = is_trusted(owner, settings.trusted_gid);
    let cleanup = &settings.cleanup;
    if settings.restrict_sender
        && !trusted
        && sluice_cleanup::chose_sender(cleanup, &real_user, &envelope.sender)
    {
        return Err(Refusal::Corrupt(format!(
            "sender <{}> chosen by untrusted user {real_user} while local.restrict_sender is on",
            sluice_log::printable(&envelope.sender, 256)
        )));
    }
    let id = QueueId::generate();
    let now = SystemTime::now();
    let source = Source::Local {
        uid: owner,
        user: real_user,
    };
    let local_envelope = Envelope {
        declared_size: None,
        ..envelope.clone()
    };
    let entry = sluice_cleanup::Entry {
        id,
        arrival: now,
        source: &source,
        envelope: &local_envelope,
    };
    let who = sluice_cleanup::Submitter {
        trusted,
        full_name: None,
    };
    sluice_cleanup::check(cleanup, &entry, &queue_file.content)
        .map_err(|e| Refusal::Corrupt(e.to_string()))?;
    let cleaned = sluice_cleanup::clean(cleanup, &entry, &who, &queue_file.content);
    let content = cleaned.pieces();
    let message = Message {
        id,
        arrival: now,
        source: &source,
        envelope: &local_envelope,
        content: &content,
    };
    spool
        .commit(&message)
        .map_err(|e| Refusal::Retry(format!("commit as {id}: {e}")))?;
    if let Err(e) = fs::remove_file(path) {
        // Keeping both would deliver twice at the next scan: take back the
        // new queue file and try the whole thing again later.
        let _ = spool.remove(id);
        return Err(Refusal::Retry(format!("remove after commit: {e}")));
    }
    log::info!(
        "{}",
        sluice_log::line::pickup(&id.to_string(), owner, &envelope.sender)
    );
    Ok(id)
}

/// `O_NOFOLLOW | O_NONBLOCK`: a symlink fails with ELOOP, a FIFO opens
/// without waiting for a writer.
fn libc_flags() -> i32 {
    (nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits()
}

/// The login name of `uid`, or the number when it has no passwd entry.
fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}

/// Root, or a user whose primary or supplementary group is `trusted_gid`.
fn is_trusted(uid: u32, trusted_gid: Option<u32>) -> bool {
    if uid == 0 {
        return true;
    }
    let Some(gid) = trusted_gid else {
        return false;
    };
    let Some(user) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
    else {
        return false;
    };
    if user.gid.as_raw() == gid {
        return true;
    }
    nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
        .ok()
        .flatten()
        .is_some_and(|g| g.mem.contains(&user.name))
}

#[cfg(test)]
mod tests;

//! The durable write path: how a file becomes part of the spool.
//!
//! [`Spool::commit_into`] takes two internal steps, kept apart so that a
//! later group commit can make many files durable with one directory fsync:
//!
//! 1. *stage*: create a temporary file with `O_EXCL` (in `tmp/`, or, for
//!    `maildrop/`, a dot-name inside `maildrop/` since submitting users
//!    cannot write `tmp/`), write every piece with `writev`, `fsync` it;
//! 2. *publish*: `link` it to its final name (which fails with `EEXIST`
//!    rather than replace anything), unlink the temporary name, and `fsync`
//!    the destination directory.
//!
//! This is also the one module allowed to rename a file in the spool, for
//! moving unreadable files to `corrupt/` (`move_aside`, used by
//! [`Spool::quarantine`]).
//!
//! # Must never
//! Return `Ok` before the file and its directory entry are on disk, make a
//! partial file visible under its final name, replace an existing file, or
//! leave the temporary file behind on an error it could handle.
//!
//! # Security
//! Runs as the `sluice` user (smtpd, qmgr) or as any local user (sendmail
//! into `maildrop/`). Names are checked to be single plain path components.
//!
//! # Errors
//! Every failure is returned as an [`Error`] after cleaning up; the caller
//! must then not acknowledge the message. A crash can leave a temporary file,
//! which [`Spool::clean_tmp`] removes at the next master start.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::queue_file::{encode_header, Message, TRAILER};
use crate::spool::{Area, Spool};
use crate::Error;

/// Temporary names in `maildrop/` start with this and end with `.tmp`.
const MAILDROP_TMP_PREFIX: &str = ".tmp.";
/// Temporary maildrop files older than this are leftovers of a crash.
const MAILDROP_TMP_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Most files a group commit writes and fsyncs at the same time.
pub const BATCH_PARALLELISM: usize = 16;

/// Distinguishes temporary files of concurrent writers in one process.
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// A file written and fsynced under a temporary name, not yet published.
/// Dropping it removes the temporary file.
#[derive(Debug)]
struct Staged {
    tmp: PathBuf,
    dest: PathBuf,
}

impl Drop for Staged {
    fn drop(&mut self) {
        // Already gone after a successful publish; otherwise best effort.
        let _ = fs::remove_file(&self.tmp);
    }
}

impl Spool {
    /// Makes `msg` durable as `queue/ID`: the only way mail enters the queue.
    ///
    /// When this returns `Ok`, the complete file and its directory entry are
    /// on disk. The content pieces are written as they are, never copied.
    /// Fails with [`Error::Exists`] if `queue/ID` exists (left untouched).
    pub fn commit(&self, msg: &Message<'_>) -> Result<PathBuf, Error> {
        self.commit_to(Area::Queue, msg)
    }

    /// Like [`Spool::commit`], into another area (`maildrop/` for
    /// `sluice-sendmail`).
    pub fn commit_to(&self, area: Area, msg: &Message<'_>) -> Result<PathBuf, Error> {
        let header = encode_header(msg);
        let mut pieces: Vec<&[u8]> = Vec::with_capacity(msg.content.len() + 2);
        pieces.push(&header);
        pieces.extend_from_slice(msg.content);
        pieces.push(TRAILER);
        self.commit_into(area, &msg.id.to_string(), &pieces)
    }

    /// Makes the concatenation of `pieces` durable as `area/name`: temporary
    /// file, write, fsync, link (never replacing: [`Error::Exists`]), fsync
    /// the directory. On error nothing is left under either name.
    ///
    /// `name` must be a plain file name (no `/`, not starting with `.`).
    pub fn commit_into(&self, area: Area, name: &str, pieces: &[&[u8]]) -> Result<PathBuf, Error> {
        check_name(name)?;
        let staged = self.stage(area, name, pieces)?;
        let dest = self.publish(staged)?;
        if let Err(e) = self.sync_dir(area, &dest) {
            // Not known to be durable, so not committed: take it back so the
            // caller's retry does not make a duplicate. (Best effort.)
            let _ = fs::remove_file(&dest);
            return Err(e);
        }
        Ok(dest)
    }

    /// Group commit: makes every message in `msgs` durable in `queue/` with
    /// one directory fsync for the whole batch. The files are written and
    /// fsynced in parallel (up to [`BATCH_PARALLELISM`] at once), so that
    /// the file system's journal commits them together instead of one
    /// journal commit per message; then each is linked into `queue/`, and
    /// `queue/` is fsynced once.
    ///
    /// Returns one result per message, in order, each meaning what
    /// [`Spool::commit`] means: `Ok` only when the file and its directory
    /// entry are on disk. If the directory fsync fails, every file of the
    /// batch is taken back and fails.
    pub fn commit_batch(&self, msgs: &[Message<'_>]) -> Vec<Result<PathBuf, Error>> {
        let area = Area::Queue;
        let headers: Vec<Vec<u8>> = msgs.iter().map(encode_header).collect();
        let jobs: Vec<(String, Vec<&[u8]>)> = msgs
            .iter()
            .zip(&headers)
            .map(|(msg, header)| {
                let mut pieces: Vec<&[u8]> = Vec::with_capacity(msg.content.len() + 2);
                pieces.push(header);
                pieces.extend_from_slice(msg.content);
                pieces.push(TRAILER);
                (msg.id.to_string(), pieces)
            })
            .collect();
        let staged = self.stage_all(area, &jobs);
        let mut results: Vec<Result<PathBuf, Error>> = staged
            .into_iter()
            .map(|s| s.and_then(|staged| self.publish(staged)))
            .collect();
        let Some(first) = results.iter().find_map(|r| r.as_ref().ok()).cloned() else {
            return results;
        };
        if let Err(e) = self.sync_dir(area, &first) {
            let reason = e.to_string();
            for r in &mut results {
                if let Ok(dest) = r {
                    let _ = fs::remove_file(&*dest);
                    *r = Err(Error::io("fsync", &self.dir(area))(io::Error::other(
                        reason.clone(),
                    )));
                }
            }
        }
        results
    }

    /// Stages many files at once, spreading the writes and fsyncs over a
    /// few threads.
    fn stage_all(&self, area: Area, jobs: &[(String, Vec<&[u8]>)]) -> Vec<Result<Staged, Error>> {
        let stage = |(name, pieces): &(String, Vec<&[u8]>)| {
            check_name(name).and_then(|()| self.stage(area, name, pieces))
        };
        if jobs.len() <= 1 {
            return jobs.iter().map(stage).collect();
        }
        let per_thread = jobs.len().div_ceil(BATCH_PARALLELISM);
        std::thread::scope(|scope| {
            let handles: Vec<_> = jobs
                .chunks(per_thread)
                .map(|chunk| {
                    let handle = scope.spawn(move || chunk.iter().map(stage).collect::<Vec<_>>());
                    (chunk.len(), handle)
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|(len, h)| {
                    h.join().unwrap_or_else(|_| {
                        (0..len)
                            .map(|_| {
                                Err(Error::io("stage", &self.dir(Area::Tmp))(io::Error::other(
                                    "a staging thread panicked",
                                )))
                            })
                            .collect()
                    })
                })
                .collect()
        })
    }

    /// Step 1: writes and fsyncs `pieces` under a fresh temporary name.
    fn stage(&self, area: Area, name: &str, pieces: &[&[u8]]) -> Result<Staged, Error> {
        let seq = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tmp = match area {
            Area::Maildrop => self
                .dir(Area::Maildrop)
                .join(format!("{MAILDROP_TMP_PREFIX}{name}.{pid}.{seq}.tmp")),
            _ => self.dir(Area::Tmp).join(format!("{name}.{pid}.{seq}")),
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(area.file_mode())
            .open(&tmp)
            .map_err(Error::io("create", &tmp))?;
        // From here on, dropping `staged` removes the temporary file.
        let staged = Staged {
            tmp,
            dest: self.dir(area).join(name),
        };
        if area.file_mode() != 0o600 {
            // The umask may have narrowed the mode given to open.
            file.set_permissions(fs::Permissions::from_mode(area.file_mode()))
                .map_err(Error::io("chmod", &staged.tmp))?;
        }
        write_pieces(&mut file, pieces).map_err(Error::io("write", &staged.tmp))?;
        file.sync_all().map_err(Error::io("fsync", &staged.tmp))?;
        Ok(staged)
    }

    /// Step 2a: gives a staged file its final name without replacing
    /// anything, and drops the temporary name. The caller must still
    /// `Spool::sync_dir` the area before the file counts as committed.
    fn publish(&self, staged: Staged) -> Result<PathBuf, Error> {
        match fs::hard_link(&staged.tmp, &staged.dest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(Error::Exists {
                    path: staged.dest.clone(),
                })
            }
            Err(e) => return Err(Error::io("link", &staged.dest)(e)),
        }
        // Dropping `staged` unlinks the temporary name; if that fails the
        // file is still committed, and clean_tmp removes the leftover.
        Ok(staged.dest.clone())
    }

    /// Step 2b: fsyncs the directory of `area`, making its new entries
    /// durable. One call covers every file published into it before.
    ///
    /// A submitting user may not read `maildrop/` (mode 1733), so cannot
    /// open it to fsync it; then the whole file system is synced through
    /// the new file `dest` (`syncfs`), which includes its directory entry.
    fn sync_dir(&self, area: Area, dest: &Path) -> Result<(), Error> {
        let dir = self.dir(area);
        match File::open(&dir) {
            Ok(d) => d.sync_all().map_err(Error::io("fsync", &dir)),
            Err(e) if area == Area::Maildrop && e.kind() == io::ErrorKind::PermissionDenied => {
                let file = File::open(dest).map_err(Error::io("open", dest))?;
                nix::unistd::syncfs(file.as_raw_fd())
                    .map_err(|errno| Error::io("syncfs", dest)(errno.into()))
            }
            Err(e) => Err(Error::io("fsync", &dir)(e)),
        }
    }

    /// Removes what crashed writers left: every file in `tmp/`, and
    /// temporary files in `maildrop/` older than a day (a `sendmail` may be
    /// writing one right now). Called at master start. Returns how many
    /// files it removed.
    pub fn clean_tmp(&self) -> Result<usize, Error> {
        let mut removed = 0;
        let tmp = self.dir(Area::Tmp);
        for entry in fs::read_dir(&tmp).map_err(Error::io("read directory", &tmp))? {
            let entry = entry.map_err(Error::io("read directory", &tmp))?;
            let path = entry.path();
            if entry.file_type().map(|t| !t.is_dir()).unwrap_or(false) {
                fs::remove_file(&path).map_err(Error::io("remove", &path))?;
                removed += 1;
            }
        }
        let maildrop = self.dir(Area::Maildrop);
        let now = SystemTime::now();
        for entry in fs::read_dir(&maildrop).map_err(Error::io("read directory", &maildrop))? {
            let entry = entry.map_err(Error::io("read directory", &maildrop))?;
            let is_tmp = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(MAILDROP_TMP_PREFIX) && n.ends_with(".tmp"));
            let is_old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > MAILDROP_TMP_MAX_AGE);
            if is_tmp && is_old {
                let path = entry.path();
                fs::remove_file(&path).map_err(Error::io("remove", &path))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Writes every piece in order with `writev`, however the kernel splits it.
fn write_pieces(file: &mut File, pieces: &[&[u8]]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = pieces.iter().map(|p| IoSlice::new(p)).collect();
    let mut rest = &mut slices[..];
    IoSlice::advance_slices(&mut rest, 0);
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Accepts only a plain file name: not empty, no `/` or NUL, not starting
/// with `.` (temporary and special names), at most 255 bytes.
pub(crate) fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.bytes().any(|b| b == b'/' || b == 0);
    if ok {
        Ok(())
    } else {
        Err(Error::BadName {
            name: name.chars().take(80).collect(),
        })
    }
}

/// Moves `from` into `dir` as `name`, or `name.1`, `name.2`, ... if taken;
/// never replaces a file. Syncs `dir`. Returns the new path.
pub(crate) fn move_aside(from: &Path, dir: &Path, name: &str) -> Result<PathBuf, Error> {
    for n in 0..1000u32 {
        let to = match n {
            0 => dir.join(name),
            n => dir.join(format!("{name}.{n}")),
        };
        match fs::symlink_metadata(&to) {
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("stat", &to)(e)),
        }
        // The one sanctioned rename in the spool: a link would not work for
        // a maildrop file owned by another user (protected_hardlinks), and
        // the name was just checked to be free in a directory only this
        // function writes.
        #[allow(clippy::disallowed_methods)]
        fs::rename(from, &to).map_err(Error::io("rename", from))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(Error::io("fsync", dir))?;
        return Ok(to);
    }
    Err(Error::Exists {
        path: dir.join(name),
    })
}

#[cfg(test)]
mod tests;

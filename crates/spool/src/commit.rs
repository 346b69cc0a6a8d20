//! The durable write path: how a file becomes part of the spool.
//!
//! [`Spool::commit_into`] and [`Spool::commit_batch`] take three steps:
//!
//! 1. *stage*: create a temporary file with `O_EXCL` (in `tmp/`, or, for
//!    `maildrop/`, a dot-name inside `maildrop/` since submitting users
//!    cannot write `tmp/`) and write every piece with `writev`;
//! 2. *publish*: `link` it to its final name (which fails with `EEXIST`
//!    rather than replace anything) and unlink the temporary name;
//! 3. *make durable*: fsync every published file and the destination
//!    directory at the same time, from several threads, so that the file
//!    system's journal commits them together: one journal commit for a
//!    whole batch, instead of one for each file and one more for the
//!    directory. Only when every fsync has returned is a file committed.
//!
//! A file is visible in its area (step 2) a moment before it is durable
//! (step 3). Nothing is acknowledged before step 3; a reader that sees the
//! file early sees it whole (it was written before the link). After a power
//! failure in that moment the file may be missing or cut short: it was never
//! acknowledged, and a reader moves a cut file to `corrupt/`.
//!
//! Queue files are recycled: [`Spool::remove`] empties a delivered queue
//! file and keeps it in `tmp/` as `free.ID`, and the next stage into
//! `queue/` takes such a file (renaming it to its temporary name, which
//! only one process can win) instead of creating a new one. Creating and
//! deleting thousands of files a second is what costs a file system most
//! (on ext4 without a journal, each new inode is searched for past every
//! inode freed in the last seconds: measured at 60 % of smtpd's CPU under
//! load); reused inodes cost nothing of that. An emptied file holds no mail
//! (its length is 0), and a reused one is written from its start.
//!
//! This is also the one module allowed to rename a file in the spool: for
//! moving unreadable files to `corrupt/` (`move_aside`, used by
//! [`Spool::quarantine`]), and for the recycling above.
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

/// Emptied queue files waiting for reuse are `tmp/free.ID`.
const FREE_PREFIX: &str = "free.";
/// Most emptied files one process lists at once, and most kept after a
/// trim (see [`Spool::trim_free`]).
pub const FREE_MAX: usize = 4096;

/// Temporary names in `maildrop/` start with this and end with `.tmp`.
const MAILDROP_TMP_PREFIX: &str = ".tmp.";
/// Temporary maildrop files older than this are leftovers of a crash.
const MAILDROP_TMP_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Most files a group commit writes and fsyncs at the same time.
pub const BATCH_PARALLELISM: usize = 16;

/// Distinguishes temporary files of concurrent writers in one process.
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// A file written under a temporary name, not yet published. Dropping it
/// removes the temporary file.
#[derive(Debug)]
struct Staged {
    tmp: PathBuf,
    dest: PathBuf,
    file: File,
}

/// A file under its final name, not yet known to be durable.
#[derive(Debug)]
struct Published {
    dest: PathBuf,
    file: File,
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
    /// file, write, link (never replacing: [`Error::Exists`]), then fsync of
    /// the file and of the directory together. On error nothing is left
    /// under either name.
    ///
    /// `name` must be a plain file name (no `/`, not starting with `.`).
    pub fn commit_into(&self, area: Area, name: &str, pieces: &[&[u8]]) -> Result<PathBuf, Error> {
        check_name(name)?;
        let staged = self.stage(area, name, pieces)?;
        let published = self.publish(staged)?;
        let mut results = self.make_durable(area, vec![published]);
        results.pop().unwrap_or_else(|| {
            Err(Error::io("fsync", &self.dir(area))(io::Error::other(
                "no result",
            )))
        })
    }

    /// Group commit: makes every message in `msgs` durable in `queue/`
    /// together. Each file is written and linked into `queue/`; then all of
    /// them and `queue/` are fsynced at once (up to [`BATCH_PARALLELISM`]
    /// threads), so that the file system's journal commits the whole batch
    /// in one go instead of once per file and once more for the directory.
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
        let mut results: Vec<Option<Result<PathBuf, Error>>> = Vec::with_capacity(jobs.len());
        let mut published = Vec::with_capacity(jobs.len());
        let mut slots = Vec::with_capacity(jobs.len());
        for (name, pieces) in &jobs {
            let step = check_name(name)
                .and_then(|()| self.stage(area, name, pieces))
                .and_then(|staged| self.publish(staged));
            match step {
                Ok(p) => {
                    slots.push(results.len());
                    results.push(None);
                    published.push(p);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        for (slot, result) in slots.into_iter().zip(self.make_durable(area, published)) {
            results[slot] = Some(result);
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(Error::io("fsync", &self.dir(area))(io::Error::other(
                        "no result",
                    )))
                })
            })
            .collect()
    }

    /// Step 1: writes `pieces` under a fresh temporary name.
    fn stage(&self, area: Area, name: &str, pieces: &[&[u8]]) -> Result<Staged, Error> {
        let seq = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tmp = match area {
            Area::Maildrop => self
                .dir(Area::Maildrop)
                .join(format!("{MAILDROP_TMP_PREFIX}{name}.{pid}.{seq}.tmp")),
            _ => self.dir(Area::Tmp).join(format!("{name}.{pid}.{seq}")),
        };
        let reused = match area {
            Area::Queue => self.claim_free(&tmp),
            _ => None,
        };
        let mut file = match reused {
            Some(file) => file,
            None => OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(area.file_mode())
                .open(&tmp)
                .map_err(Error::io("create", &tmp))?,
        };
        if area.file_mode() != 0o600 {
            // The umask may have narrowed the mode given to open.
            if let Err(e) = file.set_permissions(fs::Permissions::from_mode(area.file_mode())) {
                let _ = fs::remove_file(&tmp);
                return Err(Error::io("chmod", &tmp)(e));
            }
        }
        if let Err(e) = write_pieces(&mut file, pieces) {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io("write", &tmp)(e));
        }
        // From here on, dropping `staged` removes the temporary file.
        Ok(Staged {
            tmp,
            dest: self.dir(area).join(name),
            file,
        })
    }

    /// Takes an emptied queue file for reuse, renamed to `tmp`, open for
    /// writing at its (empty) start; `None` when there is none.
    fn claim_free(&self, tmp: &Path) -> Option<File> {
        let Ok(mut known) = self.free.lock() else {
            return None;
        };
        let mut refilled = false;
        loop {
            let Some(candidate) = known.pop() else {
                if refilled {
                    return None;
                }
                refilled = true;
                known.extend(self.list_free());
                continue;
            };
            // Several processes may race for it: rename lets one win.
            #[allow(clippy::disallowed_methods)]
            match fs::rename(&candidate, tmp) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(_) => return None,
            }
            let opened = OpenOptions::new().write(true).truncate(true).open(tmp);
            return match opened {
                Ok(file) => Some(file),
                Err(_) => {
                    let _ = fs::remove_file(tmp);
                    None
                }
            };
        }
    }

    /// The emptied files in `tmp/` now.
    fn list_free(&self) -> Vec<PathBuf> {
        let tmp = self.dir(Area::Tmp);
        let Ok(entries) = fs::read_dir(&tmp) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(FREE_PREFIX))
            })
            .map(|e| e.path())
            .take(FREE_MAX)
            .collect()
    }

    /// Empties the queue file at `path` and keeps it for reuse as
    /// `tmp/free.NAME`; false when it was not kept (the caller unlinks).
    pub(crate) fn recycle(&self, path: &Path, name: &str) -> bool {
        let emptied = OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(0));
        if emptied.is_err() {
            return false;
        }
        let free = self.dir(Area::Tmp).join(format!("{FREE_PREFIX}{name}"));
        #[allow(clippy::disallowed_methods)]
        fs::rename(path, free).is_ok()
    }

    /// Unlinks emptied files beyond `keep` (after a large queue drained,
    /// the pool would otherwise hold one empty file per message). Returns
    /// how many it removed.
    pub fn trim_free(&self, keep: usize) -> usize {
        let tmp = self.dir(Area::Tmp);
        let Ok(entries) = fs::read_dir(&tmp) else {
            return 0;
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(FREE_PREFIX))
            })
            .skip(keep)
            .filter(|e| fs::remove_file(e.path()).is_ok())
            .count()
    }

    /// Step 2: gives a staged file its final name without replacing
    /// anything, and drops the temporary name. The file is not committed
    /// until [`Spool::make_durable`] says so.
    fn publish(&self, staged: Staged) -> Result<Published, Error> {
        match fs::hard_link(&staged.tmp, &staged.dest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(Error::Exists {
                    path: staged.dest.clone(),
                })
            }
            Err(e) => return Err(Error::io("link", &staged.dest)(e)),
        }
        let Ok(file) = staged.file.try_clone() else {
            // Without a handle the file cannot be fsynced: take it back.
            let _ = fs::remove_file(&staged.dest);
            return Err(Error::io("dup", &staged.dest)(io::Error::last_os_error()));
        };
        // Dropping `staged` unlinks the temporary name; if that fails the
        // file is still committed, and clean_tmp removes the leftover.
        Ok(Published {
            dest: staged.dest.clone(),
            file,
        })
    }

    /// Step 3: fsyncs the published files and the directory of `area`
    /// together (several threads, so the journal commits them at once).
    /// A file whose fsync failed, or every file if the directory's did, is
    /// taken back (removed) and gets an error: not known to be durable, so
    /// not committed, and the caller's retry makes no duplicate.
    fn make_durable(&self, area: Area, published: Vec<Published>) -> Vec<Result<PathBuf, Error>> {
        let Some(first) = published.first().map(|p| p.dest.clone()) else {
            return Vec::new();
        };
        let per_thread = published.len().div_ceil(BATCH_PARALLELISM).max(1);
        let (dir_result, file_results) = std::thread::scope(|scope| {
            let handles: Vec<_> = published
                .chunks(per_thread)
                .map(|chunk| {
                    let handle = scope.spawn(move || {
                        chunk
                            .iter()
                            .map(|p| p.file.sync_all().map_err(Error::io("fsync", &p.dest)))
                            .collect::<Vec<_>>()
                    });
                    (chunk.len(), handle)
                })
                .collect();
            let dir_result = self.sync_dir(area, &first);
            let file_results: Vec<Result<(), Error>> = handles
                .into_iter()
                .flat_map(|(len, h)| {
                    h.join().unwrap_or_else(|_| {
                        (0..len)
                            .map(|_| {
                                Err(Error::io("fsync", &first)(io::Error::other(
                                    "an fsync thread panicked",
                                )))
                            })
                            .collect()
                    })
                })
                .collect();
            (dir_result, file_results)
        });
        let dir_error = dir_result.err().map(|e| e.to_string());
        published
            .into_iter()
            .zip(file_results)
            .map(|(p, synced)| {
                let result = match (&dir_error, synced) {
                    (None, Ok(())) => return Ok(p.dest),
                    (Some(why), _) => Err(Error::io("fsync", &self.dir(area))(io::Error::other(
                        why.clone(),
                    ))),
                    (None, Err(e)) => Err(e),
                };
                let _ = fs::remove_file(&p.dest);
                result
            })
            .collect()
    }

    /// Fsyncs the directory of `area`, making its new entries durable. One
    /// call covers every file published into it before.
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

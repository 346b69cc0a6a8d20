//! The spool directory: its layout, and reading, listing, removing and
//! quarantining the files in it.
//!
//! ```text
//! spool_dir/          0755  (index.sqlite belongs to the qmgr, not here)
//!   queue/            0700  committed queue files, named by queue ID
//!   maildrop/         1733  local submissions: anyone may drop, nobody may list
//!   corrupt/          0700  files that could not be parsed, never deleted
//!   tmp/              0700  files being written by `commit`
//!   hold/             0700  one empty marker per message the operator held,
//!                           named by queue ID: the hold survives the index
//! ```
//!
//! # Must never
//! Delete a file that failed to parse (it is moved to `corrupt/`), follow a
//! name from outside that is not a [`QueueId`] or a plain file name, or
//! write into `queue/` other than through [`crate::commit`].
//!
//! # Security
//! Runs with the caller's privileges: root for [`Spool::create_layout`] (at
//! master start), the `sluice` user otherwise. Directory modes are the
//! access control: only the owner reads `queue/`.
//!
//! # Errors
//! IO errors are returned with path and operation; a corrupt file is
//! quarantined and reported as [`Error::Corrupt`].

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::queue_file::{decode, QueueFile};
use crate::queue_id::QueueId;
use crate::Error;

/// One directory of the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Area {
    /// `queue/`: committed queue files.
    Queue,
    /// `maildrop/`: local submissions waiting for pickup.
    Maildrop,
    /// `corrupt/`: files that could not be parsed.
    Corrupt,
    /// `tmp/`: files being written.
    Tmp,
    /// `hold/`: one empty marker per held message (Postfix moves held
    /// files to `hold/`; the queue file stays put here, so that no reader
    /// of `queue/` needs to know).
    Hold,
}

impl Area {
    /// Every area, in the order they are created.
    pub const ALL: [Area; 5] = [
        Area::Queue,
        Area::Maildrop,
        Area::Corrupt,
        Area::Tmp,
        Area::Hold,
    ];

    /// The directory's name under the spool root.
    pub fn dir_name(self) -> &'static str {
        match self {
            Area::Queue => "queue",
            Area::Maildrop => "maildrop",
            Area::Corrupt => "corrupt",
            Area::Tmp => "tmp",
            Area::Hold => "hold",
        }
    }

    /// The directory's mode. `maildrop/` is sticky and world-writable but
    /// not world-readable: any user may drop a file, nobody may list them,
    /// and nobody but the owner may remove someone else's.
    pub fn dir_mode(self) -> u32 {
        match self {
            Area::Maildrop => 0o1733,
            Area::Queue | Area::Corrupt | Area::Tmp | Area::Hold => 0o700,
        }
    }

    /// The mode of the files committed into this area. Maildrop files are
    /// written by any user and must be readable by the daemons.
    pub fn file_mode(self) -> u32 {
        match self {
            Area::Maildrop => 0o644,
            Area::Queue | Area::Corrupt | Area::Tmp | Area::Hold => 0o600,
        }
    }
}

/// Mode of the spool root.
pub const ROOT_MODE: u32 = 0o755;

/// The spool under one root directory. Cheap to clone (clones share the
/// list of reusable files); holds no open files.
#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
    /// Emptied queue files kept for reuse (`tmp/free.*`) that this process
    /// knows of; see `commit.rs`.
    pub(crate) free: std::sync::Arc<std::sync::Mutex<Vec<PathBuf>>>,
}

impl Spool {
    /// The spool rooted at `root` (the configured `spool_dir`). Does no IO.
    pub fn new(root: impl Into<PathBuf>) -> Spool {
        Spool {
            root: root.into(),
            free: std::sync::Arc::default(),
        }
    }

    /// The spool root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of `area`.
    pub fn dir(&self, area: Area) -> PathBuf {
        self.root.join(area.dir_name())
    }

    /// The path of queue file `id` in `area`.
    pub fn path(&self, area: Area, id: QueueId) -> PathBuf {
        self.dir(area).join(id.to_string())
    }

    /// Creates the root and the area directories if missing, and sets their
    /// modes (and owner `(uid, gid)`, when given) even if they existed.
    /// Idempotent. Refuses a symlink or a file where a directory should be.
    pub fn create_layout(&self, owner: Option<(u32, u32)>) -> Result<(), Error> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(ROOT_MODE)
            .create(&self.root)
            .map_err(Error::io("mkdir", &self.root))?;
        fix_dir(&self.root, ROOT_MODE, owner)?;
        for area in Area::ALL {
            let dir = self.dir(area);
            match fs::DirBuilder::new().mode(area.dir_mode()).create(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io("mkdir", &dir)(e)),
            }
            fix_dir(&dir, area.dir_mode(), owner)?;
        }
        Ok(())
    }

    /// Problems with the layout, one sentence each, for `sluice check`:
    /// missing directories, wrong types, modes or owners (every area must
    /// have the root's owner), directories this process cannot write, and
    /// `tmp/` on another file system than `queue/`. Empty when all is well.
    pub fn check_layout(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let Some(root) = check_dir(&self.root, ROOT_MODE, &mut problems) else {
            return problems;
        };
        let mut devices = Vec::new();
        for area in Area::ALL {
            let dir = self.dir(area);
            let Some(meta) = check_dir(&dir, area.dir_mode(), &mut problems) else {
                continue;
            };
            if (meta.uid(), meta.gid()) != (root.uid(), root.gid()) {
                problems.push(format!(
                    "{}: owner {}:{}, expected {}:{} like the spool root",
                    dir.display(),
                    meta.uid(),
                    meta.gid(),
                    root.uid(),
                    root.gid()
                ));
            }
            if let Err(e) = nix::unistd::access(&dir, nix::unistd::AccessFlags::W_OK) {
                problems.push(format!("{}: not writable: {e}", dir.display()));
            }
            devices.push((area, meta.dev()));
        }
        let device = |area| devices.iter().find(|d| d.0 == area).map(|d| d.1);
        if let (Some(tmp), Some(queue)) = (device(Area::Tmp), device(Area::Queue)) {
            if tmp != queue {
                problems.push(format!(
                    "{} and {} are on different file systems",
                    self.dir(Area::Tmp).display(),
                    self.dir(Area::Queue).display()
                ));
            }
        }
        problems
    }

    /// Reads and parses queue file `id` from `queue/`.
    ///
    /// A file that does not parse, or whose `id` line is not its name, is
    /// moved to `corrupt/` and reported as [`Error::Corrupt`].
    pub fn read(&self, id: QueueId) -> Result<QueueFile, Error> {
        self.read_in(Area::Queue, id)
    }

    /// Like [`Spool::read`], for a file in any area (e.g. a maildrop file
    /// at pickup).
    pub fn read_in(&self, area: Area, id: QueueId) -> Result<QueueFile, Error> {
        let path = self.path(area, id);
        // Never through a symbolic link: root reads these (sluice-local).
        let bytes = crate::safe_open::read_regular(&path).map_err(Error::io("read", &path))?;
        let reason = match decode(&bytes) {
            Ok(file) if file.id == id => return Ok(file),
            Ok(file) => format!("its id line says {}", file.id),
            Err(e) => e.to_string(),
        };
        match self.quarantine(&path, &reason) {
            Ok(moved) => Err(Error::Corrupt {
                path: moved,
                reason,
            }),
            Err(e) => Err(Error::Corrupt {
                path,
                reason: format!("{reason}; could not move it to corrupt/: {e}"),
            }),
        }
    }

    /// Moves `path` into `corrupt/` under its own name (with a `.N` suffix
    /// if that name is taken; nothing there is ever replaced), writes the
    /// reason next to it as `NAME.why`, and returns the new path.
    pub fn quarantine(&self, path: &Path, reason: &str) -> Result<PathBuf, Error> {
        let name = plain_name(path)?;
        let moved = crate::commit::move_aside(path, &self.dir(Area::Corrupt), name)?;
        // The note is for the operator only; the file itself is what counts.
        let mut why = moved.clone().into_os_string();
        why.push(".why");
        let _ = crate::safe_open::create_new(Path::new(&why), 0o600)
            .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{reason}\n").as_bytes()));
        Ok(moved)
    }

    /// The queue IDs of the files in `area`, sorted (oldest first). Names
    /// that are not queue IDs (temporary files, `.why` notes) are skipped.
    pub fn list(&self, area: Area) -> Result<Vec<QueueId>, Error> {
        let dir = self.dir(area);
        let mut ids = Vec::new();
        for entry in fs::read_dir(&dir).map_err(Error::io("read directory", &dir))? {
            let entry = entry.map_err(Error::io("read directory", &dir))?;
            if let Some(id) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// Marks message `id` held (durably: the marker is committed as a
    /// queue file is) or no longer held. Releasing what is not held is no
    /// error.
    pub fn set_hold(&self, id: QueueId, hold: bool) -> Result<(), Error> {
        if hold {
            return match self.commit_into(Area::Hold, &id.to_string(), &[]) {
                Ok(_) | Err(Error::Exists { .. }) => Ok(()),
                Err(e) => Err(e),
            };
        }
        let path = self.path(Area::Hold, id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", &path)(e)),
        }
    }

    /// Whether message `id` is held (its marker is in `hold/`).
    pub fn is_held(&self, id: QueueId) -> bool {
        fs::symlink_metadata(self.path(Area::Hold, id)).is_ok()
    }

    /// Removes queue file `id` from `queue/`: emptied and kept in `tmp/`
    /// for reuse by the next commit (see `commit.rs`), or unlinked. Not made
    /// durable: after a crash the file may come back, and is then delivered
    /// again (a duplicate, never a loss).
    pub fn remove(&self, id: QueueId) -> Result<(), Error> {
        let path = self.path(Area::Queue, id);
        if self.recycle(&path, &id.to_string()) {
            return Ok(());
        }
        fs::remove_file(&path).map_err(Error::io("remove", &path))
    }
}

/// The final component of `path`, if it is a plain UTF-8 file name.
fn plain_name(path: &Path) -> Result<&str, Error> {
    let bad = || Error::BadName {
        name: path.to_string_lossy().chars().take(80).collect(),
    };
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(bad)?;
    crate::commit::check_name(name)?;
    Ok(name)
}

/// Makes an existing `dir` a real directory with `mode` and `owner`.
fn fix_dir(dir: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<(), Error> {
    crate::safe_open::fix_dir(dir, mode, owner).map_err(|e| {
        if e.raw_os_error() == Some(nix::libc::ENOTDIR)
            || e.raw_os_error() == Some(nix::libc::ELOOP)
        {
            Error::NotDirectory { path: dir.into() }
        } else {
            Error::io("chown/chmod", dir)(e)
        }
    })
}

/// Checks one directory; its metadata when it exists and is a directory.
fn check_dir(dir: &Path, mode: u32, problems: &mut Vec<String>) -> Option<fs::Metadata> {
    let meta = match fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) => {
            problems.push(format!("{}: {e}", dir.display()));
            return None;
        }
    };
    if !meta.is_dir() {
        problems.push(format!("{}: not a directory", dir.display()));
        return None;
    }
    let actual = meta.mode() & 0o7777;
    if actual != mode {
        problems.push(format!(
            "{}: mode {actual:04o}, expected {mode:04o}",
            dir.display()
        ));
    }
    Some(meta)
}

#[cfg(test)]
mod tests;

//! mbox delivery: append one entry (already shaped by `message`) to a
//! mailbox file under a dot-lock (`FILE.lock`) and an fcntl write lock,
//! fsync it, and on any failure cut the file back to its length before.
//!
//! # Must never
//! Leave a partial entry in the file, write without both locks (the
//! dot-lock is skipped only where the directory does not let the owner
//! create it, as in a shared spool without group rights), follow a
//! symbolic link, or write to a file with more than one link.
//!
//! # Security
//! Runs in the per-delivery child, already switched to the mailbox owner.
//!
//! # Errors
//! Returned as `io::Error`; a lock that stays taken for [`LOCK_WAIT`] is
//! `WouldBlock` (the caller defers).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Longest wait for the dot-lock.
pub(crate) const LOCK_WAIT: Duration = Duration::from_secs(60);
/// A dot-lock older than this is stale (its holder died) and removed.
const STALE_LOCK: Duration = Duration::from_secs(300);

/// A held dot-lock; dropping it removes the lock file.
struct DotLock(Option<PathBuf>);

impl Drop for DotLock {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = fs::remove_file(path);
        }
    }
}

fn dot_lock(mailbox: &Path) -> io::Result<DotLock> {
    let mut lock = mailbox.as_os_str().to_owned();
    lock.push(".lock");
    let lock = PathBuf::from(lock);
    let deadline = Instant::now() + LOCK_WAIT;
    let mut pause = Duration::from_millis(10);
    loop {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&lock)
        {
            Ok(_) => return Ok(DotLock(Some(lock))),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Ok(DotLock(None)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let stale = fs::symlink_metadata(&lock)
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .is_some_and(|age| age > STALE_LOCK);
                if stale {
                    let _ = fs::remove_file(&lock);
                    continue;
                }
                if Instant::now() > deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        format!("{} is held too long", lock.display()),
                    ));
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Takes the fcntl write lock on the whole file, waiting for it.
fn fcntl_lock(file: &File) -> io::Result<()> {
    let lock = nix::libc::flock {
        l_type: nix::libc::F_WRLCK as nix::libc::c_short,
        l_whence: nix::libc::SEEK_SET as nix::libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    loop {
        match nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_SETLKW(&lock)) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Appends `entry` to the mbox at `path` (created 0600 if missing).
pub(crate) fn deliver(path: &Path, entry: &[u8]) -> io::Result<()> {
    deliver_with(path, entry, |file, bytes| file.write_all(bytes))
}

/// [`deliver`], with the write itself given (tests make it fail half way).
fn deliver_with(
    path: &Path,
    entry: &[u8],
    write: impl FnOnce(&mut File, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let _dot = dot_lock(path)?;
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() || meta.nlink() != 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file with one link", path.display()),
        ));
    }
    fcntl_lock(&file)?;
    // Only now, under both locks, is the length stable.
    let before = file.metadata()?.len();
    let written = write(&mut file, entry).and_then(|()| file.sync_all());
    if let Err(e) = written {
        // Nothing half-written may stay: cut back to where it was.
        let _ = file.set_len(before).and_then(|()| file.sync_all());
        return Err(e);
    }
    Ok(())
    // Closing the file releases the fcntl lock; `_dot` then goes.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_appended_and_locks_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mbox");
        deliver(&path, b"From a x\none\n\n").unwrap();
        deliver(&path, b"From b x\ntwo\n\n").unwrap();
        assert_eq!(
            fs::read(&path).unwrap(),
            b"From a x\none\n\nFrom b x\ntwo\n\n"
        );
        assert!(!dir.path().join("mbox.lock").exists());
    }

    #[test]
    fn a_write_failing_half_way_leaves_the_file_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mbox");
        deliver(&path, b"From a x\none\n\n").unwrap();
        let failed = deliver_with(&path, b"From b x\ntwo\n\n", |file, bytes| {
            file.write_all(&bytes[..bytes.len() / 2])?;
            Err(io::Error::from_raw_os_error(nix::libc::ENOSPC))
        });
        assert_eq!(failed.unwrap_err().raw_os_error(), Some(nix::libc::ENOSPC));
        assert_eq!(fs::read(&path).unwrap(), b"From a x\none\n\n");
        assert!(!dir.path().join("mbox.lock").exists());
        deliver(&path, b"From c x\nthree\n\n").unwrap();
        assert_eq!(
            fs::read(&path).unwrap(),
            b"From a x\none\n\nFrom c x\nthree\n\n"
        );
    }

    #[test]
    fn links_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, b"").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(deliver(&link, b"x").is_err());
        let hard = dir.path().join("hard");
        fs::hard_link(&target, &hard).unwrap();
        assert!(deliver(&hard, b"x").is_err());
        assert_eq!(fs::read(&target).unwrap(), b"");
    }

    #[test]
    fn a_stale_dot_lock_is_broken_and_a_fresh_one_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mbox");
        let lock = dir.path().join("mbox.lock");
        fs::write(&lock, b"").unwrap();
        let old = SystemTime::now() - Duration::from_secs(600);
        File::options()
            .write(true)
            .open(&lock)
            .unwrap()
            .set_modified(old)
            .unwrap();
        deliver(&path, b"x\n").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"x\n");
    }
}

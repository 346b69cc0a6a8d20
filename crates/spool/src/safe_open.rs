//! Opening files in directories another user may write: root's run files
//! in `run_dir` (owned by the daemons' user), the notes root writes in
//! `corrupt/`, queue files that root's local delivery agent reads, and the
//! spool's own directories when root fixes their owner and mode.
//!
//! # Must never
//! Follow a symbolic link (every open is `O_NOFOLLOW`), replace a file it
//! did not create (`O_EXCL` when creating), or act on what a path names
//! later than it checked it: checks are `fstat` on the open descriptor and
//! changes are `fchown`/`fchmod` on it.
//!
//! # Errors
//! A symbolic link fails to open (`ELOOP`); a file that is not what it must
//! be (a regular file with one link, owned by this process's user; or a
//! directory) is an [`std::io::ErrorKind::InvalidData`] error saying why.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use nix::fcntl::OFlag;

fn refuse(path: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {why}", path.display()),
    )
}

/// Reads a regular file, never through a symbolic link; a FIFO or device
/// in its place is refused without blocking.
pub fn read_regular(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(refuse(path, "not a regular file"));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Creates a new file with `mode`, for writing; fails if anything, even a
/// dangling symbolic link, already has the name.
pub fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(path)
}

/// Opens (creating it with `mode` if missing) a file this process's user
/// keeps, for writing (appending if `append`): it must be a regular file
/// with one link, owned by this user, so that a file planted under its
/// name (a hard link to another file, someone else's file) is refused.
pub fn open_own(path: &Path, mode: u32, append: bool) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .append(append)
        .create(true)
        .mode(mode)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(refuse(path, "not a regular file"));
    }
    if meta.nlink() != 1 {
        return Err(refuse(path, "has more than one link"));
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(refuse(path, &format!("owned by uid {}", meta.uid())));
    }
    Ok(file)
}

/// Gives the directory `dir` its `mode` and, when given, its owner, on a
/// descriptor opened without following a symbolic link.
pub fn fix_dir(dir: &Path, mode: u32, owner: Option<(u32, u32)>) -> io::Result<()> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_DIRECTORY).bits())
        .open(dir)?;
    if !file.metadata()?.is_dir() {
        return Err(refuse(dir, "not a directory"));
    }
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
    }
    // After chown, which may clear mode bits; fchmod, on the descriptor.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symbolic_links_are_never_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("target");
        std::fs::write(&target, "precious\n").expect("write");
        let link = dir.path().join("link");
        symlink(&target, &link).expect("symlink");
        assert!(read_regular(&link).is_err());
        assert!(create_new(&link, 0o600).is_err());
        assert!(open_own(&link, 0o600, true).is_err());
        std::fs::create_dir(dir.path().join("d")).expect("mkdir");
        let dir_link = dir.path().join("dlink");
        symlink(dir.path().join("d"), &dir_link).expect("symlink");
        assert!(fix_dir(&dir_link, 0o700, None).is_err());
        assert_eq!(
            std::fs::read_to_string(&target).expect("read"),
            "precious\n"
        );
    }

    #[test]
    fn a_planted_hard_link_or_fifo_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("target");
        std::fs::write(&target, "precious\n").expect("write");
        let hard = dir.path().join("hard");
        std::fs::hard_link(&target, &hard).expect("link");
        let err = open_own(&hard, 0o600, false).expect_err("two links");
        assert!(err.to_string().contains("more than one link"), "{err}");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        assert!(read_regular(&fifo).is_err());
    }

    #[test]
    fn fix_dir_sets_the_mode_on_the_directory_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().join("d");
        std::fs::create_dir(&d).expect("mkdir");
        fix_dir(&d, 0o710, None).expect("fix");
        let mode = std::fs::metadata(&d).expect("stat").permissions().mode();
        assert_eq!(mode & 0o7777, 0o710);
    }
}

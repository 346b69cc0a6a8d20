//! The system's users: the passwd database and their `~/.forward` files,
//! behind a trait so that expansion can be tested with made-up accounts.
//!
//! # Must never
//! Follow a symbolic link to a `.forward` file, or honour one that someone
//! other than its user (or root) owns or can write, or that has a second
//! link: a `.forward` read by root that pointed at `/etc/shadow` would
//! forward its lines as addresses.
//!
//! # Security
//! [`Host::read_forward`] runs as root in `sluice-local` on a file in a
//! user's home, which the user controls: it opens with `O_NOFOLLOW`, checks
//! the opened file (not the name) and reads at most [`FORWARD_MAX`] bytes.
//!
//! # Errors
//! A passwd failure is an `Err(reason)` (temporary); a missing account is
//! `Ok(None)`. An unsafe `.forward` is [`ForwardError::Unsafe`], which the
//! caller logs and ignores; other IO errors are [`ForwardError::Io`].

use std::io::Read as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::PathBuf;

/// A system account that mail can be delivered to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Account {
    /// Login name.
    pub name: String,
    /// User ID.
    pub uid: u32,
    /// Primary group ID.
    pub gid: u32,
    /// Home directory.
    pub home: PathBuf,
}

/// Why a `.forward` file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// It exists but must not be trusted (owner, mode, link, type); ignored.
    #[error("{} ignored: {why}", path.display())]
    Unsafe {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// It could not be read (try again later).
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
}

/// Largest `.forward` file read, in bytes.
pub const FORWARD_MAX: u64 = 64 * 1024;

/// Where accounts and `.forward` files come from.
pub trait System {
    /// The account called `name`: `Ok(None)` if there is none, `Err` if
    /// the passwd database could not be asked.
    fn account(&self, name: &str) -> Result<Option<Account>, String>;

    /// The text of `account`'s `~/.forward`, `Ok(None)` if it has none.
    fn read_forward(&self, account: &Account) -> Result<Option<String>, ForwardError>;
}

/// The real system: `getpwnam` through `nix`, files on disk.
#[derive(Debug, Clone, Copy, Default)]
pub struct Host;

impl System for Host {
    fn account(&self, name: &str) -> Result<Option<Account>, String> {
        if name.is_empty() || name.contains(['\0', '/']) {
            return Ok(None);
        }
        match nix::unistd::User::from_name(name) {
            Ok(Some(user)) => Ok(Some(Account {
                name: user.name,
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
                home: user.dir,
            })),
            Ok(None) => Ok(None),
            Err(e) => Err(format!("looking up user {name:?}: {e}")),
        }
    }

    fn read_forward(&self, account: &Account) -> Result<Option<String>, ForwardError> {
        let path = account.home.join(".forward");
        let unsafe_file = |why: String| ForwardError::Unsafe {
            path: path.clone(),
            why,
        };
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                return Err(unsafe_file("it is a symbolic link".to_owned()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => return Ok(None),
            Err(source) => return Err(ForwardError::Io { path, source }),
        };
        let meta = file.metadata().map_err(|source| ForwardError::Io {
            path: path.clone(),
            source,
        })?;
        if !meta.is_file() {
            return Err(unsafe_file("not a regular file".to_owned()));
        }
        if meta.nlink() != 1 {
            // A hard link to a file the user does not own the contents of
            // (or that root trusts) is not the user's forward list.
            return Err(unsafe_file(format!("it has {} links", meta.nlink())));
        }
        if meta.uid() != account.uid && meta.uid() != 0 {
            return Err(unsafe_file(format!(
                "owned by uid {}, not by {}",
                meta.uid(),
                account.name
            )));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(unsafe_file(format!(
                "group or world writable (mode {:o})",
                meta.mode() & 0o7777
            )));
        }
        let mut bytes = Vec::new();
        file.take(FORWARD_MAX)
            .read_to_end(&mut bytes)
            .map_err(|source| ForwardError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn account(home: &std::path::Path) -> Account {
        Account {
            name: "me".into(),
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            home: home.to_owned(),
        }
    }

    #[test]
    fn a_forward_file_with_a_second_link_is_ignored() {
        let home = tempfile::tempdir().expect("tempdir");
        let forward = home.path().join(".forward");
        std::fs::write(&forward, "me@elsewhere.test\n").expect("write");
        std::fs::set_permissions(&forward, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let got = Host.read_forward(&account(home.path())).expect("read");
        assert_eq!(got.as_deref(), Some("me@elsewhere.test\n"));
        // A hard link elsewhere makes it someone else's file to change.
        std::fs::hard_link(&forward, home.path().join("other")).expect("link");
        let err = Host
            .read_forward(&account(home.path()))
            .expect_err("two links");
        assert!(matches!(err, ForwardError::Unsafe { .. }), "{err}");
        assert!(err.to_string().contains("2 links"), "{err}");
    }
}

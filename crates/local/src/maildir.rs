//! Maildir delivery: write the message into `tmp/` under a unique name,
//! fsync it, link it into `new/`, remove the `tmp/` name, fsync `new/`.
//!
//! # Must never
//! Make a partial message visible in `new/`, replace an existing file, or
//! report success before the file and its `new/` entry are on disk.
//!
//! # Security
//! Runs in the per-delivery child, already switched to the mailbox owner:
//! the kernel's permission checks are the access control. Files are
//! created `O_EXCL` with mode 0600, directories with 0700.
//!
//! # Errors
//! Returned as `io::Error`; the `tmp/` file is removed on every error.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A unique file name: `SECONDS.M<micros>P<pid>Q<seq>.<host>,S=<size>`
/// (the host with `/` and `:` escaped as the Maildir spec asks).
fn unique_name(size: usize) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_owned())
        .replace('/', "\\057")
        .replace(':', "\\072");
    format!(
        "{}.M{}P{}Q{}.{host},S={size}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates `dir` (and `tmp/`, `new/`, `cur/`) if missing.
fn create_layout(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true).mode(0o700);
    for sub in ["tmp", "new", "cur"] {
        builder.create(dir.join(sub))?;
    }
    Ok(())
}

/// Delivers `bytes` into the Maildir `dir`; returns the file's path in
/// `new/`.
pub(crate) fn deliver(dir: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    create_layout(dir)?;
    let name = unique_name(bytes.len());
    let tmp = dir.join("tmp").join(&name);
    let new = dir.join("new").join(&name);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&tmp)?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::hard_link(&tmp, &new));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let _ = fs::remove_file(&tmp);
    if let Err(e) = File::open(dir.join("new")).and_then(|d| d.sync_all()) {
        // Not known to be durable: take it back, the delivery is retried.
        let _ = fs::remove_file(&new);
        return Err(e);
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_land_in_new_and_tmp_is_left_empty() {
        let dir = tempfile::tempdir().unwrap();
        let md = dir.path().join("Maildir");
        let a = deliver(&md, b"one\n").unwrap();
        let b = deliver(&md, b"two\n").unwrap();
        assert_ne!(a, b);
        assert_eq!(fs::read(&a).unwrap(), b"one\n");
        assert_eq!(fs::read(&b).unwrap(), b"two\n");
        assert_eq!(fs::read_dir(md.join("tmp")).unwrap().count(), 0);
        assert!(md.join("cur").is_dir());
        assert!(a.file_name().unwrap().to_str().unwrap().ends_with(",S=4"));
    }
}

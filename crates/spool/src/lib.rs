//! The Sluice spool: the queue file format, queue IDs, the spool directories
//! and the one durable write path.
//!
//! - [`queue_id`]: [`QueueId`], unique across restarts, sortable by time.
//! - [`queue_file`]: the versioned format of `FORMAT.md` ([`encode`],
//!   [`decode`]).
//! - [`spool`]: the directory layout (`queue/`, `maildrop/`, `corrupt/`,
//!   `tmp/`), reading, listing, removing and quarantining files.
//! - [`safe_open`]: opening files where another user may write the
//!   directory, without following links, checked on the descriptor.
//! - [`commit`]: [`Spool::commit`], the only way a file becomes durable in
//!   the spool (temporary file, write, fsync, link, fsync the directory).
//!
//! # Must never
//! Make a partial file visible in `queue/`, replace an existing queue file,
//! report success before the file and its directory entry are on disk, or
//! delete a file it could not parse (it goes to `corrupt/`).
//!
//! # Security
//! Only file IO, with the privileges of the caller. Queue files and, above
//! all, `maildrop/` files (written by any local user) are hostile input to
//! [`decode`]. Names from outside are accepted only as [`QueueId`]s or single
//! path components.
//!
//! # Errors
//! Every fallible call returns [`Error`], whose variants carry the path and
//! the operation. None of them is fatal to the caller's process: a failed
//! commit means "do not acknowledge the message", a corrupt file has already
//! been moved aside.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod commit;
pub mod queue_file;
pub mod queue_id;
pub mod safe_open;
pub mod spool;

use std::io;
use std::path::PathBuf;

pub use queue_file::{
    decode, encode, encode_header, FormatError, Message, Problem, QueueFile, Source, MAGIC, TRAILER,
};
pub use queue_id::{BadQueueId, QueueId, QUEUE_ID_LEN};
pub use spool::{Area, Spool};

/// What went wrong in the spool.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done: "create", "write", "fsync", "link", ...
        op: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// The destination of a commit already exists; it was left untouched.
    #[error("{} already exists", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// A file could not be parsed. It was moved to `corrupt/` (then `path`
    /// is its new place there), or, if even that failed, left where it was
    /// (and `reason` says why it could not be moved).
    #[error("corrupt queue file {}: {reason}", path.display())]
    Corrupt {
        /// Where the file is now.
        path: PathBuf,
        /// Why it was rejected.
        reason: String,
    },
    /// A file name that is not a single, plain path component.
    #[error("bad spool file name {name:?}")]
    BadName {
        /// The rejected name (cut to 80 characters).
        name: String,
    },
    /// Something in the spool that should be a directory is not one.
    #[error("{} is not a directory", path.display())]
    NotDirectory {
        /// The offending path.
        path: PathBuf,
    },
}

impl Error {
    /// Was this a missing file (e.g. [`Spool::read`] of an ID that is gone)?
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }

    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }
}

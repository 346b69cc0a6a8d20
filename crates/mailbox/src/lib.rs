//! Local recipients, shared by `sluice-smtpd` (does this address exist? at
//! RCPT time) and `sluice-local` (where does its mail go?).
//!
//! - [`aliases`]: the aliases(5) file and the target lists of `:include:`
//!   and `~/.forward` files (pure parsers: a bad line is reported with its
//!   file and line, and skipped);
//! - [`virtual_map`]: the `address  /path` map of virtual mailboxes (pure);
//! - [`system`]: passwd accounts and `~/.forward` files;
//! - [`directory`]: [`Directory`], which reads the files (again when they
//!   change) and answers [`Directory::lookup`] and [`Directory::expand`]:
//!   recipient delimiter, case folding, recursive aliases with loop
//!   detection, virtual mailboxes, system users, postmaster.
//!
//! # Must never
//! Write anything, run anything, or say an address is unknown because a
//! file could not be read.
//!
//! # Security
//! Reads the operator's files (aliases, virtual map) and, in
//! `sluice-local` running as root, users' `.forward` and include files,
//! which are hostile input: see each module.
//!
//! # Errors
//! Bad lines are logged and skipped; unreadable files make temporary
//! failures ([`Lookup::Unavailable`], [`Severity::Temporary`]).
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod aliases;
pub mod directory;
pub mod system;
pub mod virtual_map;

pub use aliases::{LineError, Target};
pub use directory::{Destination, Directory, Expansion, Failure, Lookup, Settings, Severity};
pub use system::{Account, ForwardError, Host, System};

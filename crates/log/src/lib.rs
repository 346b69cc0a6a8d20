//! Sluice's logging: the operator lines in the shape Postfix uses, and the
//! sink that carries every log record to syslog (facility `mail`) or, in the
//! foreground, to stderr.
//!
//! The lines built by [`line`] are an API: pflogsumm and fail2ban filters
//! parse them, so each shape is made in exactly one function here and
//! golden-tested. Programs log them with `log::info!("{}", line::...)`.
//!
//! # Must never
//! Pass peer-supplied text through unfiltered: everything that came from the
//! network goes through [`printable`] first, so a client cannot forge log
//! lines with CR/LF or control characters.
//!
//! # Errors
//! A syslog socket that cannot be reached at start is an error for the
//! caller; once running, a failed write is dropped (logging never stops mail).
#![forbid(unsafe_code)]

pub mod line;
mod sink;

pub use line::printable;
pub use sink::{init, Error, Sink};

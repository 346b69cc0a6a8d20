//! The one error type of this crate: what went wrong, in which file, on
//! which line, under which key.
//!
//! # Must never
//! Lose the file name or the line: operators fix configs from these lines.
//!
//! # Security
//! Messages quote config values, which come from the operator, not peers.
//!
//! # Errors
//! This is the error type; every variant is fatal to loading the config.

use std::path::PathBuf;

/// Why a config could not be loaded.
///
/// Display gives one line in the `FILE:LINE:` shape editors jump to, e.g.
/// `/etc/sluice/sluice.ron:12: key smtpd.trusted_networks[1]: invalid CIDR
/// range "10.0.0.0/33": prefix length over 32`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("{}: cannot read the config: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The text is not well-formed RON.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Syntax {
        /// The file (as given to `parse` or `load`).
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column (in characters).
        column: usize,
        /// What the reader expected.
        message: String,
    },
    /// A key is unknown, or its value is wrong.
    #[error("{}:{line}: key {key}: {message}", path.display())]
    Key {
        /// The file (as given to `parse` or `load`).
        path: PathBuf,
        /// 1-based line of the key, or of the list element.
        line: usize,
        /// Dotted key: `smtpd.trusted_networks[1]`, `routes["example.org"]`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

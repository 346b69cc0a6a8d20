//! The parsers of `sluice-sendmail` that read what any local user gives:
//! its command line ([`args`]) and the address lists of the headers that
//! `-t` reads ([`addrlist`]). A library of their own, so that they are
//! fuzzed as they run (`fuzz/fuzz_targets/sendmail.rs`).
//!
//! # Must never
//! Do IO, or panic on any input: both are pure.
#![forbid(unsafe_code)]

pub mod addrlist;
pub mod args;

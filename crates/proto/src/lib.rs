//! SMTP grammar and the sans-IO session state machines of Sluice.
//!
//! - [`reply`]: every reply text a peer sees, and its wire form.
//! - [`address`]: the RFC 5321 path grammar (with SMTPUTF8) and xtext.
//! - [`data`]: dot-stuffing helpers.
//! - [`server`]: the SMTP server session machine.
//! - [`client`]: the SMTP client session machine (sluice-smtp).
//! - [`envelope`]: the envelope handed over at the end of a message.
//!
//! # Must never
//! Read a clock, open a socket or touch a file: bytes and `now` come in as
//! arguments, replies and requests ("asks") come out.
//!
//! # Security
//! Everything parsed here comes from the network and is hostile; parsers
//! are bounded in memory and linear in time.
//!
//! # Errors
//! Protocol errors are SMTP replies, never panics.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod address;
pub mod client;
pub mod data;
pub mod domain;
pub mod envelope;
pub mod reply;
pub mod server;

//! The connection-counting protocol, spoken on `run_dir/anvil.sock`
//! (Postfix's anvil): smtpd processes tell `sluice-anvil` of each client
//! connection that opens and closes, and learn how many that client holds
//! across every smtpd process and how many it opened within the last
//! [`RATE_UNIT`].
//!
//! anvil speaks first with its [`crate::Hello`]. Every [`Request::Connect`]
//! gets exactly one [`Response::Connect`], in order; [`Request::Disconnect`]
//! gets none. When a peer's connection to anvil ends, anvil forgets the
//! connections that peer still held (an smtpd that died holds none).
//!
//! # Must never
//! Carry anything but a service name and a client address: no mail.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The protocol name in anvil's [`crate::Hello`].
pub const PROTOCOL: &str = "sluice-anvil";
/// Its version.
pub const VERSION: u32 = 1;
/// The socket's file name in `run_dir`.
pub const SOCKET: &str = "anvil.sock";
/// The time unit of connection rates, as Postfix's `anvil_rate_time_unit`.
pub const RATE_UNIT: std::time::Duration = std::time::Duration::from_secs(60);

/// smtpd to anvil.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// A client connected to `service`; answered with [`Response::Connect`].
    Connect {
        /// The service, e.g. `smtp`.
        service: String,
        /// The client's address.
        client: IpAddr,
    },
    /// A connection announced with [`Request::Connect`] ended. No answer.
    Disconnect {
        /// The service, as in the connect.
        service: String,
        /// The client's address.
        client: IpAddr,
    },
}

/// anvil to smtpd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The counts for the client of a [`Request::Connect`], that connection
    /// included.
    Connect {
        /// Connections the client holds now, across every peer.
        count: u32,
        /// Connections it opened within the current [`RATE_UNIT`].
        rate: u32,
    },
}

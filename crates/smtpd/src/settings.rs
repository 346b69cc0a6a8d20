//! What smtpd takes from the configuration: the session machine's settings
//! and the facts about a client it knows at accept.
//!
//! # Must never
//! Read files or the clock: the configuration is already validated.

use std::net::IpAddr;

use sluice_config::Config;
use sluice_proto::server::{BareNewline, Limits};

/// The protocol machine's settings, from the configuration.
pub(crate) fn session_config(config: &Config, hostname: &str) -> sluice_proto::server::Config {
    let s = &config.smtpd;
    sluice_proto::server::Config {
        hostname: hostname.to_owned(),
        limits: Limits {
            max_line_length: s.max_line_length,
            max_message_size: s.max_message_size,
            max_recipients: s.max_recipients,
            max_errors: s.max_errors,
            command_timeout: s.command_timeout,
            data_timeout: s.data_timeout,
            session_timeout: s.session_timeout,
        },
        local_domains: config.local_domains.clone(),
        relay_domains: config.relay_domains.clone(),
        bare_newline: match s.bare_newline {
            sluice_config::BareNewline::Reject => BareNewline::Reject,
            sluice_config::BareNewline::Normalize => BareNewline::Normalize,
        },
        vrfy_enabled: s.vrfy,
        expn_enabled: s.expn,
        dsn_success_untrusted: s.dsn_success_untrusted,
        checks: true,
    }
}

/// IPv4 clients on a dual-stack socket appear as `::ffff:a.b.c.d`.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// In `trusted_networks`: may relay anywhere.
pub(crate) fn is_trusted(config: &Config, ip: IpAddr) -> bool {
    config.smtpd.trusted_networks.iter().any(|n| n.contains(ip))
}

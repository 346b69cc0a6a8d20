//! Next hops: from the job's `next_hop` text to the addresses to try, or
//! to the reason no attempt is made yet.
//!
//! Today only static routes are delivered: `[host]:port` and IP addresses.
//! An unbracketed host or a bare recipient domain needs MX resolution
//! (issue #4) and is deferred with a reason that says so, rather than
//! guessed at with A records; LMTP next hops are deferred likewise.
//!
//! # Must never
//! Guess a route: a next hop that cannot be delivered as written is a
//! deferral with a reason, never an attempt somewhere else.
//!
//! # Security
//! The next hop comes from the queue manager (from the operator's routes or
//! a recipient domain, already checked by the grammar); names are resolved
//! with the system resolver only.
//!
//! # Errors
//! None are fatal: every failure is a [`Defer`] for the job's recipients.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use sluice_config::NextHop;

/// Why a job is deferred without (or after) trying to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Defer {
    /// The enhanced status code, class 4.
    pub(crate) dsn: &'static str,
    /// The reason, for the log and the queue manager.
    pub(crate) reason: String,
}

/// Where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The host as written (a name or an IP address).
    pub(crate) host: String,
    /// The TCP port.
    pub(crate) port: u16,
}

/// Reads a job's next hop.
pub(crate) fn target(next_hop: &str) -> Result<Target, Defer> {
    let hop = next_hop.parse::<NextHop>().map_err(|e| Defer {
        dsn: "4.3.5",
        reason: format!("bad next hop: {e}"),
    })?;
    match hop {
        NextHop::Smtp {
            host,
            port,
            mx_lookup: false,
        } => Ok(Target { host, port }),
        NextHop::Smtp {
            host,
            mx_lookup: true,
            ..
        } => Err(Defer {
            dsn: "4.4.3",
            reason: format!(
                "no route to {host}: MX lookup is not implemented yet (issue #4); \
                 use a [bracketed] route"
            ),
        }),
        NextHop::LmtpUnix { .. } | NextHop::LmtpInet { .. } => Err(Defer {
            dsn: "4.3.5",
            reason: format!("next hop {hop}: LMTP delivery comes with issue #4"),
        }),
    }
}

/// The addresses of `target`: the address itself, or the name's A/AAAA
/// records from the system resolver, in its order.
pub(crate) fn resolve(target: &Target) -> Result<Vec<SocketAddr>, Defer> {
    if let Ok(ip) = target.host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, target.port)]);
    }
    let fail = |why: String| Defer {
        dsn: "4.4.3",
        reason: format!("Host or domain name not found: {}: {why}", target.host),
    };
    let addrs: Vec<SocketAddr> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| fail(e.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(fail("no address records".to_owned()));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bracketed_and_literal_hops_are_delivered() {
        let t = |host: &str, port| {
            Ok(Target {
                host: host.to_owned(),
                port,
            })
        };
        assert_eq!(target("[10.0.0.5]:2525"), t("10.0.0.5", 2525));
        assert_eq!(target("[relay.example]"), t("relay.example", 25));
        assert_eq!(target("192.0.2.1"), t("192.0.2.1", 25));
        assert_eq!(target("[::1]:26"), t("::1", 26));
    }

    #[test]
    fn mx_hops_wait_for_issue_4() {
        for hop in ["example.org", "relay.example:2525"] {
            let d = target(hop).unwrap_err();
            assert_eq!(d.dsn, "4.4.3");
            assert!(d
                .reason
                .contains("MX lookup is not implemented yet (issue #4)"));
            assert!(d.reason.starts_with("no route to "), "{}", d.reason);
        }
    }

    #[test]
    fn lmtp_and_bad_hops_are_deferred() {
        let d = target("lmtp:unix:/run/lmtp").unwrap_err();
        assert!(d.reason.contains("LMTP delivery comes with issue #4"));
        assert_eq!(d.dsn, "4.3.5");
        let d = target("[unclosed").unwrap_err();
        assert!(
            d.reason.starts_with("bad next hop: invalid route"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn resolves_literals_and_names() {
        let lit = Target {
            host: "127.0.0.1".into(),
            port: 2525,
        };
        assert_eq!(resolve(&lit).unwrap(), ["127.0.0.1:2525".parse().unwrap()]);
        let name = Target {
            host: "localhost".into(),
            port: 25,
        };
        let addrs = resolve(&name).unwrap();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 25));
    }
}

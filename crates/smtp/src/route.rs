//! Next hops: from the job's `next_hop` text to a [`Plan`] (the hosts to
//! try, in order, and how to speak to them), or to the [`Stop`] that says
//! why no attempt is made.
//!
//! Today only static routes are delivered: `[host]:port` and IP addresses.
//! An unbracketed host or a bare recipient domain needs MX resolution
//! (issue #4) and is deferred with a reason that says so, rather than
//! guessed at with A records.
//!
//! # Must never
//! Guess a route: a next hop that cannot be delivered as written is a
//! deferral with a reason, never an attempt somewhere else.
//!
//! # Security
//! The next hop comes from the queue manager (from the operator's routes or
//! a recipient domain, already checked by the grammar). Names are resolved
//! with the system resolver only.
//!
//! # Errors
//! None are fatal: every failure is a [`Stop`] for the job's recipients.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use sluice_config::NextHop;

/// Why a job gets no attempt: deferred (class 4) or bounced (class 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stop {
    /// The enhanced status code; its class says deferral or bounce.
    pub(crate) dsn: &'static str,
    /// The reason, for the log and the queue manager.
    pub(crate) reason: String,
}

impl Stop {
    /// Whether the recipients bounce (a class 5 code) rather than wait.
    pub(crate) fn is_bounce(&self) -> bool {
        self.dsn.starts_with('5')
    }
}

/// One host to try, with its addresses in the order to try them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Host {
    /// The name to show in `relay=` and to check a certificate against
    /// (the MX name, or the literal).
    pub(crate) name: String,
    /// Addresses with the port to connect to.
    pub(crate) addrs: Vec<SocketAddr>,
}

/// Where and how a job is delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// SMTP to these hosts, in order: the next one is tried when a host
    /// cannot be reached or greets with 4xx/5xx.
    Smtp(Vec<Host>),
    /// LMTP over this Unix socket.
    LmtpUnix(PathBuf),
    /// LMTP to these hosts, in order.
    LmtpInet(Vec<Host>),
}

/// Turns a job's next hop into a plan.
pub(crate) fn plan(next_hop: &str) -> Result<Plan, Stop> {
    let hop = next_hop.parse::<NextHop>().map_err(|e| Stop {
        dsn: "4.3.5",
        reason: format!("bad next hop: {e}"),
    })?;
    match hop {
        NextHop::Smtp {
            host,
            port,
            mx_lookup: false,
        } => Ok(Plan::Smtp(vec![resolve(&host, port)?])),
        NextHop::Smtp {
            host,
            mx_lookup: true,
            ..
        } => Err(Stop {
            dsn: "4.4.3",
            reason: format!(
                "no route to {host}: MX lookup is not implemented yet (issue #4); \
                 use a [bracketed] route"
            ),
        }),
        NextHop::LmtpUnix { path } => Ok(Plan::LmtpUnix(path)),
        NextHop::LmtpInet { host, port } => Ok(Plan::LmtpInet(vec![resolve(&host, port)?])),
    }
}

/// A host's addresses: the literal itself, or its A/AAAA records.
fn resolve(host: &str, port: u16) -> Result<Host, Stop> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Host {
            name: host.to_owned(),
            addrs: vec![SocketAddr::new(ip, port)],
        });
    }
    let fail = |why: String| Stop {
        dsn: "4.4.3",
        reason: format!("Host or domain name not found: {host}: {why}"),
    };
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| fail(e.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(fail("no address records".to_owned()));
    }
    Ok(Host {
        name: host.to_owned(),
        addrs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(host: &str, addr: &str) -> Plan {
        Plan::Smtp(vec![Host {
            name: host.to_owned(),
            addrs: vec![addr.parse().unwrap()],
        }])
    }

    #[test]
    fn bracketed_and_literal_hops_are_delivered() {
        assert_eq!(
            plan("[10.0.0.5]:2525"),
            Ok(one("10.0.0.5", "10.0.0.5:2525"))
        );
        assert_eq!(plan("192.0.2.1"), Ok(one("192.0.2.1", "192.0.2.1:25")));
        assert_eq!(plan("[::1]:26"), Ok(one("::1", "[::1]:26")));
        let Ok(Plan::Smtp(hosts)) = plan("[localhost]:2525") else {
            panic!("a bracketed name resolves");
        };
        assert_eq!(hosts[0].name, "localhost");
        assert!(hosts[0]
            .addrs
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 2525));
    }

    #[test]
    fn mx_hops_wait_for_issue_4() {
        for hop in ["example.org", "relay.example:2525"] {
            let d = plan(hop).unwrap_err();
            assert_eq!(d.dsn, "4.4.3");
            assert!(!d.is_bounce());
            assert!(d
                .reason
                .contains("MX lookup is not implemented yet (issue #4)"));
            assert!(d.reason.starts_with("no route to "), "{}", d.reason);
        }
    }

    #[test]
    fn lmtp_hops_have_their_own_plans_and_bad_hops_are_deferred() {
        assert_eq!(
            plan("lmtp:unix:/run/lmtp"),
            Ok(Plan::LmtpUnix("/run/lmtp".into()))
        );
        assert_eq!(
            plan("lmtp:[127.0.0.1]:24"),
            Ok(Plan::LmtpInet(vec![Host {
                name: "127.0.0.1".into(),
                addrs: vec!["127.0.0.1:24".parse().unwrap()]
            }]))
        );
        let d = plan("[unclosed").unwrap_err();
        assert!(
            d.reason.starts_with("bad next hop: invalid route"),
            "{}",
            d.reason
        );
    }
}

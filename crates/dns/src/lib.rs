//! A small blocking DNS stub resolver for mail routing: MX lookups (with
//! RFC 7505 null MX) and A/AAAA lookups, asked of configured name servers
//! or of the system's (`/etc/resolv.conf`).
//!
//! Messages are built and parsed by `hickory-proto` alone (no async
//! runtime); the transport is ours: UDP to each server in turn with a
//! timeout, TCP when an answer is truncated. The protocol logic
//! ([`message`]) is pure and unit-tested without sockets; [`transport`] is
//! the only code that touches the network.
//!
//! # Must never
//! Use an answer that does not match its query (ID, direction, opcode,
//! question), follow an unbounded CNAME chain, or turn a server failure or
//! timeout into a permanent error: only NXDOMAIN ([`DnsError::NoSuchDomain`])
//! and "no records of that type" ([`DnsError::NoRecords`]) are final
//! answers; everything else is [`DnsError::Temporary`].
//!
//! # Security
//! Answers come from the network and are hostile until checked; there is
//! no cache, so one spoofed answer could affect one lookup at most, and the
//! random query ID and port plus the question check make that hard. No
//! DNSSEC validation: like any stub resolver, it trusts its name servers.
//!
//! # Errors
//! Every failure is a [`DnsError`] value naming the name and record type;
//! nothing panics or exits.
#![warn(missing_docs, unreachable_pub)]
#![forbid(unsafe_code)]

mod message;
pub mod resolv_conf;
mod transport;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use hickory_proto::rr::{Name, RData, RecordType};

use crate::message::{build_query, read_answer, Says};

/// Each server is asked this many times (in rounds over the list) before
/// a lookup is given up as temporary.
pub const ATTEMPTS: usize = 2;

/// Why a lookup gave no records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// NXDOMAIN: the name does not exist.
    #[error("Name service error for name={name} type={rtype}: Host not found")]
    NoSuchDomain {
        /// The name looked up.
        name: String,
        /// The record type asked for.
        rtype: String,
    },
    /// The name exists, without records of this type.
    #[error(
        "Name service error for name={name} type={rtype}: \
         Host found but no data record of requested type"
    )]
    NoRecords {
        /// The name looked up.
        name: String,
        /// The record type asked for.
        rtype: String,
    },
    /// SERVFAIL, REFUSED, a timeout, an unreachable server or a bad answer:
    /// try again later.
    #[error(
        "Name service error for name={name} type={rtype}: Host not found, try again ({reason})"
    )]
    Temporary {
        /// The name looked up.
        name: String,
        /// The record type asked for.
        rtype: String,
        /// What went wrong with the last server asked.
        reason: String,
    },
    /// The text is not a valid domain name.
    #[error("bad domain name {name:?}: {reason}")]
    BadName {
        /// The text.
        name: String,
        /// Why it is not a name.
        reason: String,
    },
}

impl DnsError {
    /// Whether asking again later may give another answer.
    pub fn is_temporary(&self) -> bool {
        matches!(self, DnsError::Temporary { .. })
    }
}

/// One mail exchanger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mx {
    /// Lower is preferred.
    pub preference: u16,
    /// The host name, lower case, without the final dot.
    pub exchange: String,
}

/// The MX records of a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxAnswer {
    /// The mail exchangers, in the order the server gave them (at least one).
    Exchangers(Vec<Mx>),
    /// RFC 7505 null MX (`0 .`): the domain accepts no mail.
    Null,
}

/// What mail routing asks of DNS; [`Resolver`] is the real one, tests use
/// tables.
pub trait Lookup {
    /// The MX records of `domain`; `Err(NoRecords)` when it has none.
    fn lookup_mx(&self, domain: &str) -> Result<MxAnswer, DnsError>;
    /// The addresses (AAAA, then A) of `name`; an IP address is itself.
    fn lookup_ip(&self, name: &str) -> Result<Vec<IpAddr>, DnsError>;
}

/// A stub resolver: asks recursive name servers, caches nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolver {
    nameservers: Vec<SocketAddr>,
    timeout: Duration,
}

impl Resolver {
    /// Asks `nameservers` in order, waiting `timeout` for each answer; an
    /// empty list means the system's (see [`Resolver::system`]).
    pub fn new(nameservers: Vec<SocketAddr>, timeout: Duration) -> Resolver {
        if nameservers.is_empty() {
            return Resolver::system(timeout);
        }
        Resolver {
            nameservers,
            timeout,
        }
    }

    /// Asks the name servers of `/etc/resolv.conf` (or `127.0.0.1:53`).
    pub fn system(timeout: Duration) -> Resolver {
        Resolver {
            nameservers: resolv_conf::system_nameservers(Path::new(resolv_conf::RESOLV_CONF)),
            timeout,
        }
    }

    /// The servers asked, in order.
    pub fn nameservers(&self) -> &[SocketAddr] {
        &self.nameservers
    }

    /// The records of `rtype` at `text`, after any aliases.
    fn query(&self, text: &str, rtype: RecordType) -> Result<Vec<RData>, DnsError> {
        let bad = |reason: String| DnsError::BadName {
            name: text.to_owned(),
            reason,
        };
        let mut name = message::parse_name(text).map_err(bad)?;
        let mut followed = 0;
        loop {
            match self.ask(text, &name, rtype, followed)? {
                Says::Records(records) => return Ok(records),
                Says::NoSuchDomain => {
                    return Err(DnsError::NoSuchDomain {
                        name: text.to_owned(),
                        rtype: rtype.to_string(),
                    })
                }
                Says::NoRecords => {
                    return Err(DnsError::NoRecords {
                        name: text.to_owned(),
                        rtype: rtype.to_string(),
                    })
                }
                Says::Alias(target, n) => {
                    log::debug!("{text} {rtype}: alias {target}, asking again");
                    name = target;
                    followed = n;
                }
                Says::Temporary(reason) => {
                    return Err(DnsError::Temporary {
                        name: text.to_owned(),
                        rtype: rtype.to_string(),
                        reason,
                    })
                }
            }
        }
    }

    /// Asks the servers in turn until one gives a final answer.
    fn ask(
        &self,
        text: &str,
        name: &Name,
        rtype: RecordType,
        followed: usize,
    ) -> Result<Says, DnsError> {
        let mut last = String::from("no name servers");
        for _ in 0..ATTEMPTS {
            for &server in &self.nameservers {
                let (question, bytes) =
                    build_query(name, rtype).map_err(|reason| DnsError::BadName {
                        name: text.to_owned(),
                        reason,
                    })?;
                match transport::exchange(server, &question, &bytes, self.timeout) {
                    Ok(answer) => match read_answer(&answer, name, rtype, followed) {
                        Says::Temporary(why) => last = format!("{server}: {why}"),
                        final_answer => return Ok(final_answer),
                    },
                    Err(why) => last = why,
                }
                log::debug!("{text} {rtype}: {last}");
            }
        }
        Ok(Says::Temporary(last))
    }
}

impl Lookup for Resolver {
    fn lookup_mx(&self, domain: &str) -> Result<MxAnswer, DnsError> {
        let records = self.query(domain, RecordType::MX)?;
        let all = message::mx_records(&records);
        // RFC 7505: a null MX is a lone MX whose exchange is the root.
        // A root exchange mixed with real ones is dropped, as the RFC
        // forbids the mix and the real ones are the useful part.
        let exchangers: Vec<Mx> = all
            .iter()
            .filter(|(_, exchange)| !exchange.is_empty())
            .map(|(preference, exchange)| Mx {
                preference: *preference,
                exchange: exchange.clone(),
            })
            .collect();
        if exchangers.is_empty() {
            if all.is_empty() {
                return Err(DnsError::NoRecords {
                    name: domain.to_owned(),
                    rtype: "MX".to_owned(),
                });
            }
            return Ok(MxAnswer::Null);
        }
        Ok(MxAnswer::Exchangers(exchangers))
    }

    fn lookup_ip(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        if let Ok(ip) = name.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let v6 = self.query(name, RecordType::AAAA);
        let v4 = self.query(name, RecordType::A);
        combine_addresses(v6, v4)
    }
}

/// Joins the AAAA and A results: any address wins; then a temporary error;
/// then NXDOMAIN; else "no records".
fn combine_addresses(
    v6: Result<Vec<RData>, DnsError>,
    v4: Result<Vec<RData>, DnsError>,
) -> Result<Vec<IpAddr>, DnsError> {
    let mut addrs = Vec::new();
    for records in [&v6, &v4].into_iter().flatten() {
        addrs.extend(message::addresses(records));
    }
    if !addrs.is_empty() {
        return Ok(addrs);
    }
    let errors = [v6, v4].into_iter().filter_map(Result::err);
    let mut worst: Option<DnsError> = None;
    for e in errors {
        let rank = |e: &DnsError| match e {
            DnsError::Temporary { .. } => 3,
            DnsError::BadName { .. } => 2,
            DnsError::NoSuchDomain { .. } => 1,
            DnsError::NoRecords { .. } => 0,
        };
        if worst.as_ref().is_none_or(|w| rank(&e) > rank(w)) {
            worst = Some(e);
        }
    }
    Err(worst.unwrap_or(DnsError::NoRecords {
        name: String::new(),
        rtype: "A".to_owned(),
    }))
}

/// Everything the resolver does with the bytes of a reply, without IO,
/// for the fuzz target `dns_reply`: the bytes are checked as an answer to
/// the question they carry themselves (so that hostile records get past
/// the match and are read), and also to a fixed MX question with their own
/// ID (the truncation and mismatch paths); then the records are read as
/// the resolver reads them. Returns the MX and address records found.
#[doc(hidden)]
pub fn read_reply_bytes(bytes: &[u8]) -> (Vec<(u16, String)>, Vec<IpAddr>) {
    use hickory_proto::op::Message;
    let id = bytes
        .first_chunk::<2>()
        .map_or(0, |b| u16::from_be_bytes(*b));
    let fixed = message::Question {
        id,
        name: Name::from_ascii("example.test.").unwrap_or_default(),
        rtype: RecordType::MX,
    };
    let _ = message::check_reply(&fixed, bytes);
    let Ok(decoded) = Message::from_vec(bytes) else {
        return (Vec::new(), Vec::new());
    };
    let Some(query) = decoded.queries.first() else {
        return (Vec::new(), Vec::new());
    };
    let own = message::Question {
        id: decoded.metadata.id,
        name: query.name.clone(),
        rtype: query.query_type,
    };
    match message::check_reply(&own, bytes) {
        Ok(message::Reply::Answer(answer)) => match read_answer(&answer, &own.name, own.rtype, 0) {
            Says::Records(records) => (message::mx_records(&records), message::addresses(&records)),
            _ => (Vec::new(), Vec::new()),
        },
        _ => (Vec::new(), Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, AAAA};

    fn temporary() -> DnsError {
        DnsError::Temporary {
            name: "h.test".into(),
            rtype: "AAAA".into(),
            reason: "timed out".into(),
        }
    }

    fn none(rtype: &str) -> DnsError {
        DnsError::NoRecords {
            name: "h.test".into(),
            rtype: rtype.into(),
        }
    }

    #[test]
    fn any_address_wins_over_errors_of_the_other_family() {
        let v6 = vec![RData::AAAA(AAAA::new(0, 0, 0, 0, 0, 0, 0, 1))];
        let v4 = vec![RData::A(A::new(127, 0, 0, 2))];
        assert_eq!(
            combine_addresses(Ok(v6.clone()), Ok(v4.clone())).unwrap(),
            vec![
                "::1".parse::<IpAddr>().unwrap(),
                "127.0.0.2".parse().unwrap()
            ]
        );
        assert_eq!(
            combine_addresses(Err(temporary()), Ok(v4)).unwrap().len(),
            1
        );
        assert_eq!(combine_addresses(Ok(v6), Err(none("A"))).unwrap().len(), 1);
    }

    #[test]
    fn without_addresses_a_temporary_error_beats_a_final_one() {
        let nx = DnsError::NoSuchDomain {
            name: "h.test".into(),
            rtype: "A".into(),
        };
        assert!(combine_addresses(Err(temporary()), Err(nx.clone()))
            .unwrap_err()
            .is_temporary());
        assert_eq!(
            combine_addresses(Err(none("AAAA")), Err(nx.clone())).unwrap_err(),
            nx
        );
        assert_eq!(
            combine_addresses(Err(none("AAAA")), Err(none("A"))).unwrap_err(),
            none("AAAA")
        );
    }

    #[test]
    fn ip_literals_are_not_looked_up_and_errors_read_like_postfix() {
        // No server at all: a literal needs none.
        let r = Resolver::new(
            vec!["127.0.0.1:1".parse().unwrap()],
            Duration::from_millis(50),
        );
        assert_eq!(
            r.lookup_ip("::1").unwrap(),
            vec!["::1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            DnsError::NoSuchDomain {
                name: "x.test".into(),
                rtype: "MX".into()
            }
            .to_string(),
            "Name service error for name=x.test type=MX: Host not found"
        );
    }
}

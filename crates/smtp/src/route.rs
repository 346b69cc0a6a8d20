//! Next hops: from the job's `next_hop` text to a [`Plan`] (the hosts to
//! try, in order, and how to speak to them), or to the [`Stop`] that says
//! why no attempt is made.
//!
//! RFC 5321 §5.1: an unbracketed host or a bare recipient domain is looked
//! up as a mail domain: its MX hosts in preference order (shuffled among
//! equal preferences), each with its AAAA and A addresses, at most
//! `smtp.max_hosts_per_attempt` hosts; without MX records the domain's own
//! addresses (the implicit MX). A `[bracketed]` host or an IP address is
//! connected to as written. A hop without a port uses `smtp.port`; a
//! route's explicit port wins.
//!
//! Outcomes that are no attempt: null MX (RFC 7505) bounces `5.1.10`;
//! NXDOMAIN bounces `5.1.2`; SERVFAIL, timeouts and MX hosts of which none
//! has an address defer `4.4.3`; an MX list whose best host is this host
//! bounces `5.4.6` (a mail loop).
//!
//! # Must never
//! Deliver to ourselves: an MX host whose name is `hostname`, or one of
//! whose addresses smtpd listens on, drops itself and every MX of equal or
//! worse preference (RFC 5321 §5.1), and if none is better the mail
//! bounces. Never guess a route: a next hop that cannot be delivered as
//! written is a deferral or a bounce with a reason.
//!
//! # Security
//! The next hop comes from the queue manager (from the operator's routes or
//! a recipient domain, already checked by the grammar). DNS answers are
//! hostile and checked by `sluice_dns`; the loop check is what keeps a
//! forged MX from bouncing mail between us and ourselves. A bracketed
//! route is the operator's word and is not loop-checked.
//!
//! # Errors
//! None are fatal: every failure is a [`Stop`] for the job's recipients.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher as _;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::PathBuf;

use sluice_config::NextHop;
use sluice_dns::{DnsError, Lookup, Mx, MxAnswer, Resolver};

/// MX records considered for one domain, however many it has.
const MAX_MX: usize = 20;

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

/// Who "this host" is, for the mail loop check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Me {
    /// `hostname` from the config (or the system's).
    pub(crate) hostname: String,
    /// smtpd's listening addresses (`smtpd.listen`); a wildcard address
    /// stands for every address of this machine.
    pub(crate) listen: Vec<SocketAddr>,
}

impl Me {
    fn is_my_name(&self, name: &str) -> bool {
        let bare = |s: &str| s.trim_end_matches('.').to_ascii_lowercase();
        !self.hostname.is_empty() && bare(name) == bare(&self.hostname)
    }

    /// An address smtpd accepts mail on. Ports are not compared, as
    /// Postfix does not: an MX is found on port 25 whatever we listen on.
    fn is_my_address(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.listen.iter().any(|l| {
            let mine = l.ip().to_canonical();
            mine == ip || (mine.is_unspecified() && same_family(mine, ip) && is_local_address(ip))
        })
    }
}

/// A wildcard listener takes the address: IPv4's for IPv4, IPv6's for
/// both (a dual-stack socket).
fn same_family(wildcard: IpAddr, ip: IpAddr) -> bool {
    wildcard.is_ipv6() || ip.is_ipv4()
}

/// The address belongs to this machine: the kernel lets us bind it.
fn is_local_address(ip: IpAddr) -> bool {
    UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// What routing needs from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct RouteContext {
    /// Asks `dns.nameservers`, or the system's when that is empty.
    pub(crate) resolver: Resolver,
    /// Bracketed names go through the C library (and so `/etc/hosts`):
    /// true when `dns.nameservers` is empty.
    pub(crate) system_hosts: bool,
    /// `smtp.port`: for hops that name none.
    pub(crate) port: u16,
    /// `smtp.max_hosts_per_attempt`.
    pub(crate) max_hosts: usize,
    /// This host, for the loop check.
    pub(crate) me: Me,
}

/// Turns a job's next hop into a plan.
pub(crate) fn plan(next_hop: &str, ctx: &RouteContext) -> Result<Plan, Stop> {
    plan_with(next_hop, ctx, &ctx.resolver)
}

/// [`plan`] with the DNS answers from `dns`.
fn plan_with(next_hop: &str, ctx: &RouteContext, dns: &dyn Lookup) -> Result<Plan, Stop> {
    // The queue manager hands out a domain in its A-labels; a job routed
    // by an older one may still carry U-labels.
    let ascii;
    let next_hop = if next_hop.is_ascii() {
        next_hop
    } else {
        ascii = sluice_proto::domain::to_ascii(next_hop).map_err(|e| Stop {
            dsn: "5.1.2",
            reason: format!("bad destination domain: {e}"),
        })?;
        ascii.as_str()
    };
    let hop = next_hop.parse::<NextHop>().map_err(|e| Stop {
        dsn: "4.3.5",
        reason: format!("bad next hop: {e}"),
    })?;
    match hop {
        NextHop::Smtp {
            host,
            port,
            mx_lookup,
        } => {
            let port = if has_port(next_hop) { port } else { ctx.port };
            if mx_lookup {
                mx_hosts(dns, ctx, &host, port).map(Plan::Smtp)
            } else {
                Ok(Plan::Smtp(vec![resolve_static(dns, ctx, &host, port)?]))
            }
        }
        NextHop::LmtpUnix { path } => Ok(Plan::LmtpUnix(path)),
        NextHop::LmtpInet { host, port } => {
            Ok(Plan::LmtpInet(vec![resolve_static(dns, ctx, &host, port)?]))
        }
    }
}

/// The SMTP hop text names a port (`host:port`, `[host]:port`).
fn has_port(next_hop: &str) -> bool {
    match next_hop.strip_prefix('[') {
        Some(rest) => rest
            .split_once(']')
            .is_some_and(|(_, p)| p.starts_with(':')),
        None => next_hop.contains(':'),
    }
}

/// A random number for shuffling (std's per-process random hash keys).
fn random_below(n: usize) -> usize {
    let r = RandomState::new().hash_one(n);
    usize::try_from(r % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
}

/// MX records by preference, each group of equal preference shuffled.
fn order_mx(mut list: Vec<Mx>, mut below: impl FnMut(usize) -> usize) -> Vec<Mx> {
    list.sort_by_key(|m| m.preference);
    let mut start = 0;
    while start < list.len() {
        let pref = list[start].preference;
        let end = list[start..]
            .iter()
            .position(|m| m.preference != pref)
            .map_or(list.len(), |k| start + k);
        // Fisher–Yates on list[start..end].
        for i in (start + 1..end).rev() {
            let j = start + below(i - start + 1);
            list.swap(i, j);
        }
        start = end;
    }
    list
}

fn not_found(e: &DnsError) -> Stop {
    Stop {
        dsn: if e.is_temporary() { "4.4.3" } else { "5.1.2" },
        reason: format!("Host or domain name not found. {e}"),
    }
}

/// The hosts for mail domain `domain`, by RFC 5321 §5.1.
fn mx_hosts(
    dns: &dyn Lookup,
    ctx: &RouteContext,
    domain: &str,
    port: u16,
) -> Result<Vec<Host>, Stop> {
    let (candidates, implicit) = match dns.lookup_mx(domain) {
        Ok(MxAnswer::Null) => {
            return Err(Stop {
                dsn: "5.1.10",
                reason: format!(
                    "Recipient address rejected: domain {domain} does not accept mail (null MX)"
                ),
            })
        }
        Ok(MxAnswer::Exchangers(list)) => (order_mx(list, random_below), false),
        Err(DnsError::NoRecords { .. }) => (
            vec![Mx {
                preference: 0,
                exchange: domain.to_ascii_lowercase(),
            }],
            true,
        ),
        Err(e) => return Err(not_found(&e)),
    };
    let max_hosts = ctx.max_hosts.max(1);
    let mut hosts: Vec<(u16, Host)> = Vec::new();
    let mut myself: Option<u16> = None;
    let mut last_error: Option<DnsError> = None;
    for mx in candidates.iter().take(MAX_MX) {
        if myself.is_some() {
            break; // sorted: everything left is as bad or worse
        }
        if hosts.len() >= max_hosts && hosts.last().is_some_and(|(p, _)| *p < mx.preference) {
            break;
        }
        if ctx.me.is_my_name(&mx.exchange) {
            myself = Some(mx.preference);
            continue;
        }
        match dns.lookup_ip(&mx.exchange) {
            Ok(ips) if ips.iter().any(|ip| ctx.me.is_my_address(*ip)) => {
                log::debug!("{domain}: MX {} is this host", mx.exchange);
                myself = Some(mx.preference);
            }
            Ok(ips) => hosts.push((
                mx.preference,
                Host {
                    name: mx.exchange.clone(),
                    addrs: ips
                        .into_iter()
                        .map(|ip| SocketAddr::new(ip, port))
                        .collect(),
                },
            )),
            Err(e) => {
                log::debug!("{domain}: MX host {}: {e}", mx.exchange);
                if implicit {
                    return Err(not_found(&e));
                }
                last_error = Some(e);
            }
        }
    }
    if let Some(mine) = myself {
        hosts.retain(|(p, _)| *p < mine);
        if hosts.is_empty() {
            return Err(Stop {
                dsn: "5.4.6",
                reason: format!("mail for {domain} loops back to myself"),
            });
        }
    }
    if hosts.is_empty() {
        let why = last_error.map_or_else(|| "no usable MX host".to_owned(), |e| e.to_string());
        return Err(Stop {
            dsn: "4.4.3",
            reason: format!(
                "Host or domain name not found: no MX host for {domain} has an address. {why}"
            ),
        });
    }
    hosts.truncate(max_hosts);
    Ok(hosts.into_iter().map(|(_, h)| h).collect())
}

/// `localhost` and names under `.localhost` (RFC 6761).
fn is_localhost(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

/// A bracketed host's (or LMTP host's) addresses: the literal itself, or
/// its A/AAAA records. Failures defer: a static route is the operator's,
/// and a broken one is fixed, not bounced.
fn resolve_static(
    dns: &dyn Lookup,
    ctx: &RouteContext,
    host: &str,
    port: u16,
) -> Result<Host, Stop> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Host {
            name: host.to_owned(),
            addrs: vec![SocketAddr::new(ip, port)],
        });
    }
    if is_localhost(host) {
        // RFC 6761 6.3: such names are this machine, asked of nobody.
        return Ok(Host {
            name: host.to_owned(),
            addrs: vec![
                SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port),
                SocketAddr::new(IpAddr::from(std::net::Ipv6Addr::LOCALHOST), port),
            ],
        });
    }
    let fail = |why: String| Stop {
        dsn: "4.4.3",
        reason: format!("Host or domain name not found: {host}: {why}"),
    };
    let addrs: Vec<SocketAddr> = if ctx.system_hosts {
        (host, port)
            .to_socket_addrs()
            .map_err(|e| fail(e.to_string()))?
            .collect()
    } else {
        dns.lookup_ip(host)
            .map_err(|e| fail(e.to_string()))?
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect()
    };
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
    use std::collections::HashMap;
    use std::time::Duration;

    /// DNS from tables; names absent from both are NXDOMAIN.
    #[derive(Default)]
    struct Table {
        mx: HashMap<&'static str, Result<MxAnswer, DnsError>>,
        ip: HashMap<&'static str, Vec<&'static str>>,
        failing: Vec<&'static str>,
    }

    impl Table {
        fn mx(mut self, domain: &'static str, list: &[(u16, &str)]) -> Table {
            let list = list
                .iter()
                .map(|(p, e)| Mx {
                    preference: *p,
                    exchange: (*e).to_owned(),
                })
                .collect();
            self.mx.insert(domain, Ok(MxAnswer::Exchangers(list)));
            self
        }
        fn ip(mut self, name: &'static str, ips: &[&'static str]) -> Table {
            self.ip.insert(name, ips.to_vec());
            self
        }
    }

    fn err(kind: &str, name: &str, rtype: &str) -> DnsError {
        let (name, rtype) = (name.to_owned(), rtype.to_owned());
        match kind {
            "nx" => DnsError::NoSuchDomain { name, rtype },
            "none" => DnsError::NoRecords { name, rtype },
            _ => DnsError::Temporary {
                name,
                rtype,
                reason: "SERVFAIL".into(),
            },
        }
    }

    impl Lookup for Table {
        fn lookup_mx(&self, domain: &str) -> Result<MxAnswer, DnsError> {
            if self.failing.contains(&domain) {
                return Err(err("temp", domain, "MX"));
            }
            match self.mx.get(domain) {
                Some(a) => a.clone(),
                None if self.ip.contains_key(domain) => Err(err("none", domain, "MX")),
                None => Err(err("nx", domain, "MX")),
            }
        }
        fn lookup_ip(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
            if let Ok(ip) = name.parse() {
                return Ok(vec![ip]);
            }
            if self.failing.contains(&name) {
                return Err(err("temp", name, "A"));
            }
            match self.ip.get(name) {
                Some(ips) => Ok(ips.iter().map(|i| i.parse().unwrap()).collect()),
                None if self.mx.contains_key(name) => Err(err("none", name, "A")),
                None => Err(err("nx", name, "A")),
            }
        }
    }

    fn ctx() -> RouteContext {
        RouteContext {
            // Never asked: the tests pass their tables.
            resolver: Resolver::new(
                vec!["127.0.0.1:1".parse().unwrap()],
                Duration::from_millis(10),
            ),
            system_hosts: true,
            port: 2525,
            max_hosts: 5,
            me: Me {
                hostname: "mx.sluice.test".into(),
                listen: vec!["127.0.0.1:0".parse().unwrap()],
            },
        }
    }

    fn names(plan: Result<Plan, Stop>) -> Vec<String> {
        match plan {
            Ok(Plan::Smtp(hosts)) => hosts
                .iter()
                .map(|h| {
                    let addrs: Vec<String> = h.addrs.iter().map(ToString::to_string).collect();
                    format!("{}={}", h.name, addrs.join(","))
                })
                .collect(),
            other => panic!("not an SMTP plan: {other:?}"),
        }
    }

    fn one(host: &str, addr: &str) -> Plan {
        Plan::Smtp(vec![Host {
            name: host.to_owned(),
            addrs: vec![addr.parse().unwrap()],
        }])
    }

    #[test]
    fn localhost_is_this_machine_without_asking_anyone() {
        let Ok(Plan::Smtp(hosts)) = plan_with("[LocalHost.]:2525", &ctx(), &Table::default())
        else {
            panic!("localhost resolves");
        };
        assert_eq!(
            hosts[0].addrs,
            [
                "127.0.0.1:2525".parse().unwrap(),
                "[::1]:2525".parse().unwrap()
            ]
        );
        assert!(is_localhost("mx.localhost"));
        assert!(!is_localhost("localhost.example"));
    }

    #[test]
    fn bracketed_and_literal_hops_are_delivered() {
        let c = ctx();
        let dns = Table::default();
        assert_eq!(
            plan_with("[10.0.0.5]:2526", &c, &dns),
            Ok(one("10.0.0.5", "10.0.0.5:2526"))
        );
        assert_eq!(
            plan_with("192.0.2.1", &c, &dns),
            Ok(one("192.0.2.1", "192.0.2.1:2525")),
            "no port: smtp.port"
        );
        assert_eq!(plan_with("[::1]:26", &c, &dns), Ok(one("::1", "[::1]:26")));
        let Ok(Plan::Smtp(hosts)) = plan_with("[localhost]:2527", &c, &dns) else {
            panic!("a bracketed name resolves through the system");
        };
        assert_eq!(hosts[0].name, "localhost");
        assert!(hosts[0]
            .addrs
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 2527));
        // With configured name servers, brackets use them too.
        let c = RouteContext {
            system_hosts: false,
            ..ctx()
        };
        let dns = Table::default().ip("relay.test", &["127.0.0.4"]);
        assert_eq!(
            plan_with("[relay.test]", &c, &dns),
            Ok(one("relay.test", "127.0.0.4:2525"))
        );
        let d = plan_with("[gone.test]:25", &c, &dns).unwrap_err();
        assert_eq!(d.dsn, "4.4.3", "a broken static route defers");
    }

    #[test]
    fn mx_hosts_come_in_preference_order_with_their_addresses() {
        let dns = Table::default()
            .mx(
                "example.test",
                &[(20, "mx2.example.test"), (10, "mx1.example.test")],
            )
            .ip("mx1.example.test", &["127.0.0.2"])
            .ip("mx2.example.test", &["::1", "127.0.0.3"]);
        assert_eq!(
            names(plan_with("example.test", &ctx(), &dns)),
            [
                "mx1.example.test=127.0.0.2:2525",
                "mx2.example.test=[::1]:2525,127.0.0.3:2525"
            ]
        );
        // A route's explicit port wins over smtp.port.
        assert_eq!(
            names(plan_with("example.test:2600", &ctx(), &dns))[0],
            "mx1.example.test=127.0.0.2:2600"
        );
    }

    #[test]
    fn international_next_hops_are_looked_up_by_their_a_labels() {
        let dns = Table::default()
            .mx("xn--bcher-kva.example", &[(10, "mx.xn--bcher-kva.example")])
            .ip("mx.xn--bcher-kva.example", &["127.0.0.2"]);
        assert_eq!(
            names(plan_with("Bücher.example", &ctx(), &dns)),
            ["mx.xn--bcher-kva.example=127.0.0.2:2525"]
        );
        let bad = plan_with("bü_cher.example", &ctx(), &dns).unwrap_err();
        assert_eq!(bad.dsn, "5.1.2", "{}", bad.reason);
        assert!(bad.is_bounce());
    }

    #[test]
    fn equal_preferences_are_shuffled_and_hosts_are_capped() {
        let list = |prefs: &[u16]| -> Vec<Mx> {
            prefs
                .iter()
                .enumerate()
                .map(|(i, p)| Mx {
                    preference: *p,
                    exchange: format!("h{i}"),
                })
                .collect()
        };
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..200 {
            let got = order_mx(list(&[5, 1, 5, 1, 9]), random_below);
            let prefs: Vec<u16> = got.iter().map(|m| m.preference).collect();
            assert_eq!(prefs, [1, 1, 5, 5, 9]);
            firsts.insert(got[0].exchange.clone());
        }
        assert_eq!(
            firsts.len(),
            2,
            "both preference-1 hosts come first sometimes"
        );

        let mut dns = Table::default();
        let mut mx = Vec::new();
        for (i, name) in ["a.test", "b.test", "c.test", "d.test"]
            .into_iter()
            .enumerate()
        {
            mx.push((u16::try_from(i).unwrap(), name));
            dns = dns.ip(name, &["127.0.0.2"]);
        }
        let dns = dns.mx("many.test", &mx);
        let c = RouteContext {
            max_hosts: 2,
            ..ctx()
        };
        assert_eq!(names(plan_with("many.test", &c, &dns)).len(), 2);
    }

    #[test]
    fn no_mx_means_the_domain_itself_and_null_mx_bounces() {
        let mut dns = Table::default().ip("plain.test", &["127.0.0.5"]);
        dns.mx.insert("null.test", Ok(MxAnswer::Null));
        assert_eq!(
            names(plan_with("plain.test", &ctx(), &dns)),
            ["plain.test=127.0.0.5:2525"]
        );
        let stop = plan_with("null.test", &ctx(), &dns).unwrap_err();
        assert_eq!(stop.dsn, "5.1.10");
        assert!(stop.is_bounce());
        assert_eq!(
            stop.reason,
            "Recipient address rejected: domain null.test does not accept mail (null MX)"
        );
    }

    #[test]
    fn nxdomain_bounces_and_server_failures_defer() {
        let mut dns = Table::default().mx(
            "half.test",
            &[(10, "gone.half.test"), (20, "slow.half.test")],
        );
        dns.failing = vec!["broken.test", "slow.half.test"];
        let stop = plan_with("nowhere.test", &ctx(), &dns).unwrap_err();
        assert_eq!(stop.dsn, "5.1.2");
        assert!(
            stop.reason.starts_with("Host or domain name not found. "),
            "{}",
            stop.reason
        );
        let stop = plan_with("broken.test", &ctx(), &dns).unwrap_err();
        assert_eq!(stop.dsn, "4.4.3");
        assert!(!stop.is_bounce());
        // MX hosts without addresses are skipped; none left defers.
        let stop = plan_with("half.test", &ctx(), &dns).unwrap_err();
        assert_eq!(stop.dsn, "4.4.3");
        assert!(
            stop.reason.contains("no MX host for half.test"),
            "{}",
            stop.reason
        );
        let dns = dns.ip("slow.half.test", &["127.0.0.3"]);
        let dns = Table {
            failing: vec![],
            ..dns
        };
        assert_eq!(
            names(plan_with("half.test", &ctx(), &dns)),
            ["slow.half.test=127.0.0.3:2525"]
        );
    }

    #[test]
    fn an_mx_that_is_this_host_drops_itself_and_worse_ones() {
        let dns = Table::default()
            // We are the backup MX: only the better one is tried.
            .mx(
                "backup.test",
                &[
                    (10, "primary.test"),
                    (20, "MX.Sluice.Test."),
                    (30, "tertiary.test"),
                ],
            )
            // We are the best MX, by address: a loop.
            .mx(
                "loop.test",
                &[
                    (10, "alias-of-me.test"),
                    (10, "peer.test"),
                    (20, "other.test"),
                ],
            )
            // We are the best MX, by name.
            .mx("named.test", &[(5, "mx.sluice.test")])
            .ip("primary.test", &["127.0.0.2"])
            .ip("tertiary.test", &["127.0.0.4"])
            .ip("peer.test", &["127.0.0.3"])
            .ip("other.test", &["127.0.0.5"])
            .ip("alias-of-me.test", &["127.0.0.1"]);
        assert_eq!(
            names(plan_with("backup.test", &ctx(), &dns)),
            ["primary.test=127.0.0.2:2525"]
        );
        for domain in ["loop.test", "named.test"] {
            let stop = plan_with(domain, &ctx(), &dns).unwrap_err();
            assert_eq!(stop.dsn, "5.4.6");
            assert_eq!(
                stop.reason,
                format!("mail for {domain} loops back to myself")
            );
        }
        // Loopback addresses count only when smtpd listens on them.
        assert!(!ctx().me.is_my_address("127.0.0.2".parse().unwrap()));
        let wildcard = Me {
            hostname: String::new(),
            listen: vec!["0.0.0.0:25".parse().unwrap()],
        };
        assert!(wildcard.is_my_address("127.0.0.2".parse().unwrap()));
        assert!(!wildcard.is_my_address("192.0.2.77".parse().unwrap()));
        assert!(
            !wildcard.is_my_name("mx.sluice.test"),
            "no hostname, no match"
        );
        let v6 = Me {
            hostname: String::new(),
            listen: vec!["[::]:25".parse().unwrap()],
        };
        assert!(v6.is_my_address("::1".parse().unwrap()));
        assert!(v6.is_my_address("::ffff:127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn lmtp_hops_have_their_own_plans_and_bad_hops_are_deferred() {
        let dns = Table::default();
        assert_eq!(
            plan_with("lmtp:unix:/run/lmtp", &ctx(), &dns),
            Ok(Plan::LmtpUnix("/run/lmtp".into()))
        );
        assert_eq!(
            plan_with("lmtp:[127.0.0.1]:24", &ctx(), &dns),
            Ok(Plan::LmtpInet(vec![Host {
                name: "127.0.0.1".into(),
                addrs: vec!["127.0.0.1:24".parse().unwrap()]
            }]))
        );
        let d = plan_with("[unclosed", &ctx(), &dns).unwrap_err();
        assert!(
            d.reason.starts_with("bad next hop: invalid route"),
            "{}",
            d.reason
        );
        assert!(has_port("[a.test]:25") && has_port("a.test:25"));
        assert!(!has_port("[a.test]") && !has_port("a.test"));
    }
}

//! Which transport and next hop a recipient goes to (pure code): a `routes`
//! entry for its domain (or a parent `.domain` entry), else local delivery
//! for `local_domains`, else the `*` smarthost, else the domain itself for
//! the SMTP agent to resolve through DNS.
//!
//! # Must never
//! Route a recipient by anything but its domain (no %-hack, no bang paths).

use sluice_config::Config;

/// Transport names, as stored in the index.
pub(crate) const SMTP: &str = "smtp";
/// The local delivery transport.
pub(crate) const LOCAL: &str = "local";

/// Where one recipient goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    pub(crate) domain: String,
    pub(crate) transport: &'static str,
    pub(crate) next_hop: String,
}

/// The domain of an address, after the last `@`, as routing compares it
/// (`sluice_proto::domain::normalize`: A-labels, lower case, no trailing
/// dot), so that `x@bücher.example` goes to `xn--bcher-kva.example`.
pub(crate) fn domain_of(address: &str) -> String {
    sluice_proto::domain::normalize(address.rsplit_once('@').map_or("", |(_, d)| d))
}

/// Resolves one recipient. An address without a domain (`<postmaster>`,
/// RFC 5321 4.5.1) is local.
pub(crate) fn resolve(config: &Config, address: &str) -> Route {
    let domain = domain_of(address);
    if domain.is_empty() {
        return Route {
            domain,
            transport: LOCAL,
            next_hop: String::new(),
        };
    }
    let route = |next_hop: &sluice_config::NextHop| Route {
        domain: domain.clone(),
        transport: SMTP,
        next_hop: next_hop.to_string(),
    };
    if let Some(hop) = config.routes.get(&domain) {
        return route(hop);
    }
    let mut parent = domain.as_str();
    while let Some((_, rest)) = parent.split_once('.') {
        if let Some(hop) = config.routes.get(&format!(".{rest}")) {
            return route(hop);
        }
        parent = rest;
    }
    if sluice_proto::domain::is_in_list(&config.local_domains, &domain) {
        return Route {
            domain: domain.clone(),
            transport: LOCAL,
            next_hop: domain.clone(),
        };
    }
    if let Some(hop) = config.routes.get("*") {
        return route(hop);
    }
    Route {
        next_hop: domain.clone(),
        domain,
        transport: SMTP,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        sluice_config::parse(text, std::path::Path::new("test.ron")).unwrap()
    }

    #[test]
    fn routes_then_local_then_smarthost_then_dns() {
        let c = config(
            r#"( local_domains: ["local.test"], relay_domains: ["relay.test"],
                 routes: { "relay.test": "[127.0.0.1]:2526", ".sub.test": "[127.0.0.2]:25", "*": "smarthost.test:587" } )"#,
        );
        let r = resolve(&c, "a@Relay.Test.");
        assert_eq!(
            (r.transport, r.next_hop.as_str()),
            (SMTP, "[127.0.0.1]:2526")
        );
        assert_eq!(r.domain, "relay.test");
        assert_eq!(resolve(&c, "a@x.sub.test").next_hop, "[127.0.0.2]:25");
        assert_eq!(resolve(&c, "a@local.test").transport, LOCAL);
        assert_eq!(resolve(&c, "postmaster").transport, LOCAL);
        assert_eq!(resolve(&c, "a@far.test").next_hop, "smarthost.test:587");
        let no_smarthost = config(r#"( relay_domains: ["relay.test"] )"#);
        assert_eq!(resolve(&no_smarthost, "a@far.test").next_hop, "far.test");
    }

    #[test]
    fn international_domains_route_by_their_a_labels() {
        let c = config(r#"( routes: { "xn--bcher-kva.example": "[127.0.0.1]:2526" } )"#);
        let r = resolve(&c, "x@Bücher.example");
        assert_eq!(r.domain, "xn--bcher-kva.example");
        assert_eq!(r.next_hop, "[127.0.0.1]:2526");
        let dns = resolve(&config("()"), "x@例え.テスト");
        assert_eq!(dns.next_hop, "xn--r8jz45g.xn--zckzah");
    }

    #[test]
    fn percent_hack_does_not_route() {
        let c = config(r#"( routes: { "relay.test": "[127.0.0.1]:2526" } )"#);
        assert_eq!(
            resolve(&c, "x%evil.test@relay.test").next_hop,
            "[127.0.0.1]:2526"
        );
        assert_eq!(
            resolve(&c, "evil.test!x@relay.test").next_hop,
            "[127.0.0.1]:2526"
        );
    }
}

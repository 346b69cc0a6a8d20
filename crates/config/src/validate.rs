//! Checks a deserialized [`Config`] as a whole, and normalizes its domain
//! names.
//!
//! Reading already refused values of the wrong shape (addresses, ranges,
//! durations, next hops). What is left is what only makes sense with the
//! rest: limits that must be positive, `retry_min <= retry_max`, lists that
//! must not be empty, domain names (lower-cased here), a domain both local
//! and relayed.
//!
//! # Must never
//! Accept a config a daemon would have to second-guess; do IO (whether the
//! spool exists is `sluice check`'s question, not this one's).
//!
//! # Security
//! Pure code. Domain lists decide what mail is accepted: they are checked
//! strictly.
//!
//! # Errors
//! The first problem found, with the keys it involves (the caller blames
//! the first that the file writes).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::domain::{normalize_domain, Wildcard};
use crate::locate::KeyPath;
use crate::Config;

/// A problem found after reading.
#[derive(Debug)]
pub(crate) struct Invalid {
    /// The keys involved, the one to blame first.
    pub(crate) keys: Vec<KeyPath>,
    /// What is wrong.
    pub(crate) message: String,
}

fn key(dotted: &str) -> KeyPath {
    dotted
        .split('.')
        .fold(KeyPath::default(), |k, part| k.name(part))
}

fn fail<T>(dotted: &str, message: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid {
        keys: vec![key(dotted)],
        message: message.into(),
    })
}

fn at_least(dotted: &str, value: u64, min: u64, why: &str) -> Result<(), Invalid> {
    if value < min {
        return fail(
            dotted,
            format!("{value} is below the minimum of {min}{why}"),
        );
    }
    Ok(())
}

fn nonzero(dotted: &str, value: Duration) -> Result<(), Invalid> {
    if value.is_zero() {
        return fail(dotted, "must be longer than 0");
    }
    Ok(())
}

fn non_empty_path(dotted: &str, value: &Path) -> Result<(), Invalid> {
    if value.as_os_str().is_empty() {
        return fail(dotted, "must not be empty");
    }
    Ok(())
}

fn host_name(dotted: &str, value: &str) -> Result<(), Invalid> {
    if !value.is_empty() {
        normalize_domain(value, Wildcard::Refused).or_else(|e| fail(dotted, e))?;
    }
    Ok(())
}

/// A plausible Unix user name.
fn is_user_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.$".contains(c))
}

/// A `usize` as `u64` for [`at_least`]; saturates on exotic targets.
fn wide(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Checks `config` and lower-cases its domain names.
pub(crate) fn check(config: &mut Config) -> Result<(), Invalid> {
    host_name("hostname", &config.hostname)?;
    non_empty_path("spool_dir", &config.spool_dir)?;
    non_empty_path("run_dir", &config.run_dir)?;
    // "" is the user the program runs as (resolved by `load`).
    if !config.user.is_empty() && !is_user_name(&config.user) {
        return fail("user", format!("invalid user name {:?}", config.user));
    }
    check_smtpd(config)?;
    check_domains(config)?;
    nonzero("dns.timeout", config.dns.timeout)?;
    check_smtp(config)?;
    check_tls_policies(config)?;
    check_queue(config)?;
    check_local(config)?;
    non_empty_path("log.syslog_socket", &config.log.syslog_socket)?;
    let tag = &config.log.tag_prefix;
    if tag.is_empty()
        || tag
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || ":[]".contains(c))
    {
        return fail("log.tag_prefix", format!("invalid syslog tag {tag:?}"));
    }
    Ok(())
}

fn check_smtpd(config: &Config) -> Result<(), Invalid> {
    let s = &config.smtpd;
    if s.listen.is_empty() {
        return fail("smtpd.listen", "must list at least one address");
    }
    at_least("smtpd.processes", wide(s.processes), 1, "")?;
    at_least("smtpd.max_message_size", s.max_message_size, 1, "")?;
    at_least("smtpd.max_recipients", wide(s.max_recipients), 1, "")?;
    at_least(
        "smtpd.max_line_length",
        wide(s.max_line_length),
        1000,
        " (RFC 5321 requires lines of 1000 octets)",
    )?;
    at_least("smtpd.max_errors", u64::from(s.max_errors), 1, "")?;
    at_least("smtpd.max_connections", wide(s.max_connections), 1, "")?;
    nonzero("smtpd.command_timeout", s.command_timeout)?;
    nonzero("smtpd.data_timeout", s.data_timeout)?;
    nonzero("smtpd.session_timeout", s.session_timeout)?;
    Ok(())
}

fn check_domains(config: &mut Config) -> Result<(), Invalid> {
    for (name, list) in [
        ("local_domains", &mut config.local_domains),
        ("relay_domains", &mut config.relay_domains),
    ] {
        for (index, domain) in list.iter_mut().enumerate() {
            let here = || key(name).index(index);
            *domain = normalize_domain(domain, Wildcard::Allowed).map_err(|message| Invalid {
                keys: vec![here()],
                message,
            })?;
        }
    }
    if let Some((index, domain)) = config
        .relay_domains
        .iter()
        .enumerate()
        .find(|(_, d)| config.local_domains.contains(d))
    {
        return Err(Invalid {
            keys: vec![key("relay_domains").index(index)],
            message: format!("{domain:?} is also in local_domains"),
        });
    }
    let mut routes = BTreeMap::new();
    for (domain, hop) in std::mem::take(&mut config.routes) {
        let here = key("routes").name(&domain);
        let normal = if domain == "*" {
            domain.clone()
        } else {
            normalize_domain(&domain, Wildcard::Allowed).map_err(|message| Invalid {
                keys: vec![here.clone()],
                message: format!("{message} (a route's key is a domain, or \"*\")"),
            })?
        };
        if routes.insert(normal.clone(), hop).is_some() {
            return Err(Invalid {
                keys: vec![here],
                message: format!("a route for {normal:?} is already given"),
            });
        }
    }
    config.routes = routes;
    Ok(())
}

fn check_smtp(config: &Config) -> Result<(), Invalid> {
    let s = &config.smtp;
    at_least("smtp.port", u64::from(s.port), 1, "")?;
    nonzero("smtp.connect_timeout", s.connect_timeout)?;
    nonzero("smtp.command_timeout", s.command_timeout)?;
    host_name("smtp.helo_name", &s.helo_name)?;
    at_least(
        "smtp.max_hosts_per_attempt",
        wide(s.max_hosts_per_attempt),
        1,
        "",
    )?;
    at_least(
        "smtp.reuse_max_messages",
        wide(s.reuse_max_messages),
        1,
        " (1 means one message per connection)",
    )?;
    nonzero("smtp.tls_timeout", s.tls_timeout)?;
    Ok(())
}

/// `smtp.tls_policies` keys are next hops (or hosts): checked with the
/// route grammar, and lower-cased so that lookups need not care.
fn check_tls_policies(config: &mut Config) -> Result<(), Invalid> {
    let mut policies = BTreeMap::new();
    for (hop, policy) in std::mem::take(&mut config.smtp.tls_policies) {
        let here = key("smtp.tls_policies").name(&hop);
        if let Err(e) = hop.parse::<crate::NextHop>() {
            return Err(Invalid {
                keys: vec![here],
                message: format!("{e} (a key is a next hop or a host)"),
            });
        }
        if policies.insert(hop.to_ascii_lowercase(), policy).is_some() {
            return Err(Invalid {
                keys: vec![here],
                message: format!("a policy for {hop:?} is already given"),
            });
        }
    }
    config.smtp.tls_policies = policies;
    Ok(())
}

fn check_queue(config: &Config) -> Result<(), Invalid> {
    let q = &config.queue;
    nonzero("queue.retry_min", q.retry_min)?;
    if q.retry_min > q.retry_max {
        return Err(Invalid {
            keys: vec![key("queue.retry_min"), key("queue.retry_max")],
            message: format!(
                "retry_min ({}) is longer than retry_max ({})",
                crate::format_duration(q.retry_min),
                crate::format_duration(q.retry_max),
            ),
        });
    }
    at_least(
        "queue.max_concurrency_per_destination",
        wide(q.max_concurrency_per_destination),
        1,
        "",
    )?;
    at_least("queue.max_concurrency", wide(q.max_concurrency), 1, "")?;
    at_least("queue.smtp_agents", wide(q.smtp_agents), 1, "")?;
    at_least("queue.local_agents", wide(q.local_agents), 1, "")?;
    Ok(())
}

fn check_local(config: &Config) -> Result<(), Invalid> {
    let l = &config.local;
    non_empty_path("local.aliases", &l.aliases)?;
    if !(l.mailbox.starts_with("~/") || l.mailbox.starts_with('/')) {
        return fail(
            "local.mailbox",
            format!(
                "{:?} must start with \"~/\" (the user's home) or \"/\"",
                l.mailbox
            ),
        );
    }
    if l.postmaster.is_empty()
        || l.postmaster
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>,:\"".contains(c))
    {
        return fail(
            "local.postmaster",
            format!("invalid address {:?}", l.postmaster),
        );
    }
    for (dotted, name, may_be_empty) in [
        ("local.virtual_owner", &l.virtual_owner, true),
        ("local.command_user", &l.command_user, false),
    ] {
        if !(is_user_name(name) || may_be_empty && name.is_empty()) {
            return fail(dotted, format!("invalid user name {name:?}"));
        }
    }
    if let Some(c) = l
        .recipient_delimiter
        .chars()
        .find(|c| c.is_alphanumeric() || c.is_whitespace() || c.is_control() || *c == '@')
    {
        return fail(
            "local.recipient_delimiter",
            format!("{c:?} cannot separate a user from an extension"),
        );
    }
    Ok(())
}

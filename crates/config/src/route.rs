//! Next hops of the static route table: `"[10.0.0.5]:25"`, `"host.example:2525"`,
//! `"lmtp:unix:/path"`, `"lmtp:[host]:24"`.
//!
//! The SMTP forms follow Postfix: a host in brackets is connected to as it is
//! (no MX lookup), a bare host name is looked up as a mail domain (MX, then
//! A/AAAA). A bare IP address is never looked up. The port defaults to 25
//! for SMTP and 24 for LMTP. A [`NextHop`] prints back in a form that parses
//! to the same value.
//!
//! # Must never
//! Resolve names or touch the network: that is `sluice-smtp`'s job.
//!
//! # Security
//! Pure code over the operator's config.
//!
//! # Errors
//! A bad next hop is a message naming the text and the reason; the caller
//! adds file, line and key.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;
use std::str::FromStr;

use serde::{de::Error as _, Deserialize, Deserializer, Serialize, Serializer};

use crate::domain::{normalize_domain, Wildcard};

/// Default port of an SMTP next hop.
const SMTP_PORT: u16 = 25;
/// Default port of an LMTP next hop (RFC 2033 suggests none; 24 is common).
const LMTP_PORT: u16 = 24;

/// Where mail for a routed domain goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NextHop {
    /// SMTP to `host:port`.
    Smtp {
        /// A host name, or an IP address (without brackets).
        host: String,
        /// The TCP port.
        port: u16,
        /// Look `host` up as a mail domain (MX records) first; false when the
        /// host was written `[bracketed]` or is an IP address.
        mx_lookup: bool,
    },
    /// LMTP over a Unix socket.
    LmtpUnix {
        /// The socket's path.
        path: PathBuf,
    },
    /// LMTP over TCP.
    LmtpInet {
        /// A host name, or an IP address (without brackets).
        host: String,
        /// The TCP port.
        port: u16,
    },
}

/// Splits `host[:port]` or `[host][:port]`; returns (host, port, bracketed).
fn split_host_port(text: &str, default_port: u16) -> Result<(String, u16, bool), String> {
    let (host, port, bracketed) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| "missing \"]\"".to_owned())?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| format!("unexpected {after:?} after \"]\""))?,
            ),
        };
        (host, port, true)
    } else if text.parse::<Ipv6Addr>().is_ok() {
        return Err("write an IPv6 address in brackets, e.g. \"[2001:db8::1]:25\"".to_owned());
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port), false),
            None => (text, None, false),
        }
    };
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(format!("bad port {p:?}")),
            Ok(n) => n,
        },
    };
    if host.parse::<IpAddr>().is_err() {
        normalize_domain(host, Wildcard::Refused)?;
    }
    Ok((host.to_owned(), port, bracketed))
}

impl FromStr for NextHop {
    type Err = String;

    fn from_str(text: &str) -> Result<NextHop, String> {
        let fail = |why: String| format!("invalid route {text:?}: {why}");
        if let Some(lmtp) = text.strip_prefix("lmtp:") {
            if let Some(path) = lmtp.strip_prefix("unix:") {
                if path.is_empty() {
                    return Err(fail("empty socket path".to_owned()));
                }
                return Ok(NextHop::LmtpUnix {
                    path: PathBuf::from(path),
                });
            }
            let (host, port, _) = split_host_port(lmtp, LMTP_PORT).map_err(fail)?;
            return Ok(NextHop::LmtpInet { host, port });
        }
        let (host, port, bracketed) = split_host_port(text, SMTP_PORT).map_err(fail)?;
        let mx_lookup = !bracketed && host.parse::<IpAddr>().is_err();
        Ok(NextHop::Smtp {
            host,
            port,
            mx_lookup,
        })
    }
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NextHop::Smtp {
                host,
                port,
                mx_lookup: true,
            } => write!(f, "{host}:{port}"),
            NextHop::Smtp {
                host,
                port,
                mx_lookup: false,
            } => write!(f, "[{host}]:{port}"),
            NextHop::LmtpUnix { path } => write!(f, "lmtp:unix:{}", path.display()),
            NextHop::LmtpInet { host, port } => write!(f, "lmtp:[{host}]:{port}"),
        }
    }
}

impl Serialize for NextHop {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NextHop {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<NextHop, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(text: &str) -> NextHop {
        text.parse().expect(text)
    }

    fn smtp(host: &str, port: u16, mx_lookup: bool) -> NextHop {
        NextHop::Smtp {
            host: host.to_owned(),
            port,
            mx_lookup,
        }
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(hop("[10.0.0.5]:25"), smtp("10.0.0.5", 25, false));
        assert_eq!(hop("host.example:2525"), smtp("host.example", 2525, true));
        assert_eq!(hop("host.example"), smtp("host.example", 25, true));
        assert_eq!(hop("[host.example]"), smtp("host.example", 25, false));
        assert_eq!(hop("[2001:db8::1]:587"), smtp("2001:db8::1", 587, false));
        assert_eq!(hop("192.0.2.1"), smtp("192.0.2.1", 25, false));
        assert_eq!(
            hop("lmtp:unix:/run/dovecot/lmtp"),
            NextHop::LmtpUnix {
                path: "/run/dovecot/lmtp".into()
            }
        );
        let inet = |host: &str, port| NextHop::LmtpInet {
            host: host.to_owned(),
            port,
        };
        assert_eq!(hop("lmtp:[127.0.0.1]:24"), inet("127.0.0.1", 24));
        assert_eq!(hop("lmtp:[::1]:2424"), inet("::1", 2424));
        assert_eq!(hop("lmtp:mailstore.example"), inet("mailstore.example", 24));
    }

    #[test]
    fn prints_back_to_the_same_value() {
        for text in [
            "[10.0.0.5]:25",
            "host.example:2525",
            "[host]",
            "[2001:db8::1]:25",
            "lmtp:unix:/run/lmtp",
            "lmtp:[::1]:24",
            "lmtp:host.example",
        ] {
            let value = hop(text);
            assert_eq!(hop(&value.to_string()), value, "{text}");
        }
        assert_eq!(hop("[10.0.0.5]").to_string(), "[10.0.0.5]:25");
    }

    #[test]
    fn refuses_bad_routes_with_the_reason() {
        for (text, why) in [
            ("", "empty"),
            ("[10.0.0.5", "missing \"]\""),
            ("[10.0.0.5]25", "after \"]\""),
            ("host:0", "bad port \"0\""),
            ("host:99999", "bad port"),
            ("host:", "bad port \"\""),
            ("2001:db8::1", "in brackets"),
            ("bad_host:25", "character '_'"),
            ("lmtp:unix:", "empty socket path"),
            ("lmtp:[::1]:x", "bad port"),
        ] {
            let err = text.parse::<NextHop>().expect_err(text);
            assert!(err.starts_with(&format!("invalid route {text:?}")), "{err}");
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }
}

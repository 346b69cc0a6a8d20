//! Socket addresses written as strings: `"0.0.0.0:25"`, `"[::]:25"`.
//!
//! Listening addresses need a port (0 asks the kernel for one, for tests);
//! name servers default to port 53 when it is left out. Host names are not
//! accepted: reading the config must not need DNS.
//!
//! # Must never
//! Resolve a name or touch the network.
//!
//! # Security
//! Pure code over the operator's config.
//!
//! # Errors
//! A bad address is a message naming the text; the caller adds file, line
//! and key.

use std::net::{IpAddr, SocketAddr};

use serde::{de::Error as _, ser::SerializeSeq, Deserialize, Deserializer, Serializer};

/// Parses `IP:PORT` (IPv6 in brackets), or a bare IP when `default_port` is
/// given.
pub(crate) fn parse_socket_addr(
    text: &str,
    default_port: Option<u16>,
) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Some(port) = default_port {
        let bare = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(text);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
    }
    let example = if default_port.is_some() {
        "an IP address with an optional port, such as \"127.0.0.1:5353\" or \"[::1]\""
    } else {
        "IP:PORT such as \"0.0.0.0:25\" or \"[::]:25\""
    };
    Err(format!(
        "invalid socket address {text:?}: expected {example}"
    ))
}

fn serialize_list<S: Serializer>(list: &[SocketAddr], s: S) -> Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(list.len()))?;
    for addr in list {
        seq.serialize_element(&addr.to_string())?;
    }
    seq.end()
}

/// One list element; a newtype so that serde_path_to_error sees the index.
struct Element<const DEFAULT_PORT: u16>(SocketAddr);

impl<'de, const DEFAULT_PORT: u16> Deserialize<'de> for Element<DEFAULT_PORT> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let default = (DEFAULT_PORT != 0).then_some(DEFAULT_PORT);
        parse_socket_addr(&text, default)
            .map(Element)
            .map_err(D::Error::custom)
    }
}

/// Serde adapter for lists of listening addresses: the port is required.
pub(crate) mod listen_list {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(list: &[SocketAddr], s: S) -> Result<S::Ok, S::Error> {
        serialize_list(list, s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<SocketAddr>, D::Error> {
        let list = Vec::<Element<0>>::deserialize(d)?;
        Ok(list.into_iter().map(|e| e.0).collect())
    }
}

/// Serde adapter for lists of name servers: the port defaults to 53.
pub(crate) mod nameserver_list {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(list: &[SocketAddr], s: S) -> Result<S::Ok, S::Error> {
        serialize_list(list, s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<SocketAddr>, D::Error> {
        let list = Vec::<Element<53>>::deserialize(d)?;
        Ok(list.into_iter().map(|e| e.0).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_addresses_need_a_port() {
        assert_eq!(
            parse_socket_addr("0.0.0.0:25", None),
            Ok("0.0.0.0:25".parse().expect("ok"))
        );
        assert_eq!(
            parse_socket_addr("[::]:0", None),
            Ok("[::]:0".parse().expect("ok"))
        );
        let err = parse_socket_addr("0.0.0.0", None).expect_err("no port");
        assert!(err.contains("invalid socket address \"0.0.0.0\""), "{err}");
        assert!(parse_socket_addr("localhost:25", None).is_err());
        assert!(parse_socket_addr("1.2.3.4:70000", None).is_err());
        assert!(parse_socket_addr("::1:25", None).is_err());
    }

    #[test]
    fn name_servers_default_to_port_53() {
        let want: SocketAddr = "127.0.0.1:53".parse().expect("ok");
        assert_eq!(parse_socket_addr("127.0.0.1", Some(53)), Ok(want));
        let want: SocketAddr = "[::1]:53".parse().expect("ok");
        assert_eq!(parse_socket_addr("::1", Some(53)), Ok(want));
        assert_eq!(parse_socket_addr("[::1]", Some(53)), Ok(want));
        let want: SocketAddr = "127.0.0.1:5353".parse().expect("ok");
        assert_eq!(parse_socket_addr("127.0.0.1:5353", Some(53)), Ok(want));
        assert!(parse_socket_addr("ns1.example", Some(53)).is_err());
    }
}

//! The system resolver's name servers: the `nameserver` lines of
//! `/etc/resolv.conf`, as the C library reads them.
//!
//! # Must never
//! Fail: a missing or unreadable file, or one without usable lines, means
//! the C library's default, a server on this host (`127.0.0.1:53`).
//!
//! # Security
//! The file is root's; only `nameserver` lines with a plain IP address are
//! taken (at most [`MAX_NAMESERVERS`], as glibc does).
//!
//! # Errors
//! None: bad lines are skipped.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

/// The C library reads at most this many name servers.
pub const MAX_NAMESERVERS: usize = 3;

/// Where the system resolver's configuration lives.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The name servers of a resolv.conf text, port 53.
pub fn parse_nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("nameserver"), Some(addr)) => addr.parse::<IpAddr>().ok(),
                _ => None,
            }
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .take(MAX_NAMESERVERS)
        .collect()
}

/// The name servers of the file at `path`, or `127.0.0.1:53`.
pub fn system_nameservers(path: &Path) -> Vec<SocketAddr> {
    let found = std::fs::read_to_string(path)
        .map(|t| parse_nameservers(&t))
        .unwrap_or_default();
    if found.is_empty() {
        vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53)]
    } else {
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameserver_lines_are_read_and_others_skipped() {
        let text = "# generated\nsearch example.org\nnameserver 10.0.0.1\n\
                    nameserver\tfe80::1%eth0\nnameserver ::1 # comment\n\
                    options timeout:2\nnameserver bad\n nameserver 192.0.2.9\n\
                    nameserver 192.0.2.10\n";
        let got: Vec<String> = parse_nameservers(text)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["10.0.0.1:53", "[::1]:53", "192.0.2.9:53"]);
    }

    #[test]
    fn no_file_means_a_local_server() {
        let dir = std::env::temp_dir().join("sluice-dns-no-such-dir");
        let got = system_nameservers(&dir.join("resolv.conf"));
        assert_eq!(got, vec!["127.0.0.1:53".parse().unwrap()]);
    }
}

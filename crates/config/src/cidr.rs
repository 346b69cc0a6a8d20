//! Address ranges in CIDR notation (`"10.0.0.0/8"`, `"::1/128"`, `"192.0.2.7"`).
//!
//! A range has no host bits set (`"10.0.0.1/8"` is refused, so that a typo
//! never widens or narrows what the operator meant), and a bare address is a
//! range of one (`/32` or `/128`). Matching treats an IPv4-mapped IPv6 peer
//! (`::ffff:10.1.2.3`, as a dual-stack socket reports it) as the IPv4 address.
//!
//! # Must never
//! Match an address outside the written range, or panic on any input.
//!
//! # Security
//! Pure code. `trusted_networks` decides who may relay: a wrong match is an
//! open relay, so parsing is strict and matching is tested against a simple
//! reference.
//!
//! # Errors
//! A bad range is a message naming the text and the reason; the caller adds
//! file, line and key.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{de::Error as _, Deserialize, Deserializer, Serialize, Serializer};

/// An IP address range: the network address and the prefix length.
///
/// Build it with [`Cidr::new`] or `str::parse` to get the checks; the fields
/// are public for reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The network address, with every bit past `prefix` zero.
    pub addr: IpAddr,
    /// The number of leading bits that must match (at most 32 or 128).
    pub prefix: u8,
}

impl Cidr {
    /// Makes a range, refusing a prefix longer than the address or host bits
    /// set in `addr`.
    ///
    /// # Errors
    /// A message saying which of the two is wrong.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Cidr, String> {
        let width = width(addr);
        if prefix > width {
            return Err(format!("prefix length over {width}"));
        }
        let cidr = Cidr { addr, prefix };
        let network = cidr.network();
        if network != addr {
            return Err(format!("host bits set (the range is {network}/{prefix})"));
        }
        Ok(cidr)
    }

    /// Whether `ip` is inside this range. An IPv4-mapped IPv6 `ip` matches
    /// IPv4 ranges, and an IPv4 `ip` matches IPv6 ranges as its mapped form.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            (IpAddr::V6(_), IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
            _ => ip,
        };
        let mask = mask(self.addr, self.prefix);
        bits(ip) & mask == bits(self.addr) & mask
    }

    /// The address with the host bits cleared.
    fn network(&self) -> IpAddr {
        let masked = bits(self.addr) & mask(self.addr, self.prefix);
        match self.addr {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(u32::try_from(masked).unwrap_or(0))),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(masked)),
        }
    }
}

/// Address width in bits.
fn width(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// The address as an integer, IPv4 in the low 32 bits.
fn bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The network mask for `prefix` bits of an address as wide as `addr`.
fn mask(addr: IpAddr, prefix: u8) -> u128 {
    let width = u32::from(width(addr));
    let prefix = u32::from(prefix).min(width);
    let all = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    match width - prefix {
        0 => all,
        host if host >= 128 => 0,
        host => all & !((1u128 << host) - 1),
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let fail = |why: String| format!("invalid CIDR range {text:?}: {why}");
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| fail(format!("{addr:?} is not an IP address")))?;
        let prefix = match prefix {
            None => width(addr),
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                let n: u16 = p.parse().map_err(|_| fail("bad prefix length".into()))?;
                u8::try_from(n)
                    .ok()
                    .filter(|n| *n <= width(addr))
                    .ok_or_else(|| fail(format!("prefix length over {}", width(addr))))?
            }
            Some(p) => return Err(fail(format!("prefix length {p:?} is not a number"))),
        };
        Cidr::new(addr, prefix).map_err(fail)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cidr(text: &str) -> Cidr {
        text.parse().expect(text)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect(text)
    }

    #[test]
    fn parses_ranges_and_bare_addresses() {
        assert_eq!(
            cidr("10.0.0.0/8"),
            Cidr {
                addr: ip("10.0.0.0"),
                prefix: 8
            }
        );
        assert_eq!(
            cidr("192.0.2.7"),
            Cidr {
                addr: ip("192.0.2.7"),
                prefix: 32
            }
        );
        assert_eq!(
            cidr("::1"),
            Cidr {
                addr: ip("::1"),
                prefix: 128
            }
        );
        assert_eq!(cidr("0.0.0.0/0").prefix, 0);
        assert_eq!(cidr("2001:db8::/32").to_string(), "2001:db8::/32");
    }

    #[test]
    fn refuses_bad_ranges_with_the_reason() {
        for (text, why) in [
            ("10.0.0.0/33", "prefix length over 32"),
            ("::/129", "prefix length over 128"),
            ("10.0.0.0/999", "prefix length over 32"),
            ("10.0.0.1/8", "host bits set (the range is 10.0.0.0/8)"),
            ("2001:db8::1/32", "host bits set"),
            ("10.0.0.0/", "is not a number"),
            ("10.0.0.0/x", "is not a number"),
            ("10.0.0.0/-1", "is not a number"),
            ("10.0.0/8", "is not an IP address"),
            ("garbage", "is not an IP address"),
            ("", "is not an IP address"),
        ] {
            let err = text.parse::<Cidr>().expect_err(text);
            assert!(err.contains(why), "{text:?}: {err}");
            assert!(
                err.starts_with(&format!("invalid CIDR range {text:?}")),
                "{err}"
            );
        }
    }

    #[test]
    fn matches_mapped_addresses_across_families() {
        let v4 = cidr("127.0.0.0/8");
        assert!(v4.contains(ip("127.1.2.3")));
        assert!(v4.contains(ip("::ffff:127.0.0.1")));
        assert!(!v4.contains(ip("::1")));
        assert!(!v4.contains(ip("128.0.0.1")));
        let v6 = cidr("::1/128");
        assert!(v6.contains(ip("::1")));
        assert!(!v6.contains(ip("127.0.0.1")));
        assert!(cidr("::ffff:0:0/96").contains(ip("10.1.2.3")));
        assert!(cidr("0.0.0.0/0").contains(ip("255.255.255.255")));
        assert!(cidr("::/0").contains(ip("2001:db8::1")));
    }

    /// Reference: compare the first `prefix` bits one at a time.
    fn reference_contains(range: IpAddr, prefix: u8, ip: IpAddr) -> bool {
        let (a, b, w): (Vec<u8>, Vec<u8>, usize) = match (range, ip) {
            (IpAddr::V4(r), IpAddr::V4(i)) => (r.octets().to_vec(), i.octets().to_vec(), 32),
            (IpAddr::V6(r), IpAddr::V6(i)) => (r.octets().to_vec(), i.octets().to_vec(), 128),
            (IpAddr::V4(r), IpAddr::V6(i)) => match i.to_ipv4_mapped() {
                Some(i) => (r.octets().to_vec(), i.octets().to_vec(), 32),
                None => return false,
            },
            (IpAddr::V6(r), IpAddr::V4(i)) => (
                r.octets().to_vec(),
                i.to_ipv6_mapped().octets().to_vec(),
                128,
            ),
        };
        (0..usize::from(prefix).min(w)).all(|n| {
            let bit = |bytes: &[u8]| bytes[n / 8] >> (7 - n % 8) & 1;
            bit(&a) == bit(&b)
        })
    }

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|n| IpAddr::V4(Ipv4Addr::from(n))),
            any::<u128>().prop_map(|n| IpAddr::V6(Ipv6Addr::from(n))),
            any::<u32>().prop_map(|n| IpAddr::V6(Ipv4Addr::from(n).to_ipv6_mapped())),
        ]
    }

    proptest! {
        #[test]
        fn contains_agrees_with_reference(
            base in any_ip(),
            prefix in 0u8..=128,
            peer in any_ip(),
            flip in proptest::option::of(0u8..128),
        ) {
            let prefix = prefix.min(width(base));
            let range = Cidr { addr: base, prefix }.network();
            let range = Cidr::new(range, prefix).expect("network address is valid");
            // Often probe the range's own address with one bit flipped, so
            // that both sides of the prefix boundary are tried.
            let peer = match (flip, range.addr) {
                (Some(bit), IpAddr::V4(a)) => IpAddr::V4(Ipv4Addr::from(u32::from(a) ^ (1 << (bit % 32)))),
                (Some(bit), IpAddr::V6(a)) => IpAddr::V6(Ipv6Addr::from(u128::from(a) ^ (1 << bit))),
                (None, _) => peer,
            };
            prop_assert_eq!(range.contains(peer), reference_contains(range.addr, prefix, peer));
        }

        #[test]
        fn display_then_parse_round_trips(base in any_ip(), prefix in 0u8..=128) {
            let prefix = prefix.min(width(base));
            let range = Cidr::new(Cidr { addr: base, prefix }.network(), prefix).expect("valid");
            prop_assert_eq!(range.to_string().parse::<Cidr>(), Ok(range));
        }
    }
}

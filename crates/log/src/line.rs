//! One function per operator line shape (DESIGN.md, "Logs").
//!
//! # Must never
//! Be bypassed: no other crate formats these shapes itself.

use std::fmt::Write as _;
use std::net::IpAddr;

/// Makes peer-supplied text safe for one log line: control characters and
/// non-ASCII bytes become `?`, and the result is cut at `max` characters.
pub fn printable(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// `host[addr]`, as Postfix names a peer; `unknown` when there is no
/// verified host name.
pub fn peer(hostname: Option<&str>, addr: IpAddr) -> String {
    format!(
        "{}[{}]",
        printable(hostname.unwrap_or("unknown"), 255),
        addr
    )
}

/// `connect from host[addr]`.
pub fn connect(hostname: Option<&str>, addr: IpAddr) -> String {
    format!("connect from {}", peer(hostname, addr))
}

/// `disconnect from host[addr] ehlo=1 mail=1 rcpt=1/2 data=1 quit=1 commands=5/6`.
pub fn disconnect(hostname: Option<&str>, addr: IpAddr, counts: &[(&str, u32, u32)]) -> String {
    format!(
        "disconnect from {} {}",
        peer(hostname, addr),
        command_counts(counts)
    )
}

/// `ehlo=1 mail=1 rcpt=1/2 data=1 quit=1 commands=5/6`: each count is
/// `(verb, accepted, total)`; `accepted/total` is printed only when they
/// differ, as Postfix does, and verbs never used are left out.
pub fn command_counts(counts: &[(&str, u32, u32)]) -> String {
    let mut out = String::new();
    let (mut ok_sum, mut total_sum) = (0, 0);
    for &(verb, ok, total) in counts {
        if total == 0 {
            continue;
        }
        ok_sum += ok;
        total_sum += total;
        push_count(&mut out, &verb.to_ascii_lowercase(), ok, total);
        out.push(' ');
    }
    push_count(&mut out, "commands", ok_sum, total_sum);
    out
}

fn push_count(out: &mut String, name: &str, ok: u32, total: u32) {
    if ok == total {
        let _ = write!(out, "{name}={total}");
    } else {
        let _ = write!(out, "{name}={ok}/{total}");
    }
}

/// Which per-client connection limit a client went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientLimit {
    /// Connections open at once.
    Concurrency,
    /// Connections opened per time unit.
    Rate,
}

/// `Connection concurrency limit exceeded: 51 from host[addr] for service
/// smtp` (or `Connection rate limit exceeded: ...`), logged as a warning,
/// as Postfix's smtpd does.
pub fn client_limit_exceeded(
    limit: ClientLimit,
    count: u32,
    hostname: Option<&str>,
    addr: IpAddr,
    service: &str,
) -> String {
    let what = match limit {
        ClientLimit::Concurrency => "concurrency",
        ClientLimit::Rate => "rate",
    };
    format!(
        "Connection {what} limit exceeded: {count} from {} for service {service}",
        peer(hostname, addr)
    )
}

/// `timeout after DATA from host[addr]`, `lost connection after RCPT from
/// host[addr]`, `too many errors after ...`: what ended or troubled a
/// session, and at which stage.
pub fn after(what: &str, stage: &str, hostname: Option<&str>, addr: IpAddr) -> String {
    format!("{what} after {stage} from {}", peer(hostname, addr))
}

/// `QUEUEID: client=host[addr]`.
pub fn client(queue_id: &str, hostname: Option<&str>, addr: IpAddr) -> String {
    format!("{queue_id}: client={}", peer(hostname, addr))
}

/// `QUEUEID: from=<sender>, size=N, nrcpt=N (queue active)`.
pub fn queued(queue_id: &str, sender: &str, size: u64, nrcpt: usize) -> String {
    format!(
        "{queue_id}: from=<{}>, size={size}, nrcpt={nrcpt} (queue active)",
        printable(sender, 256)
    )
}

/// `QUEUEID: uid=1000 from=<user@host>`: a local submission picked up
/// from `maildrop/` (Postfix's pickup line). `uid` is the file owner's,
/// never what the file says.
pub fn pickup(queue_id: &str, uid: u32, sender: &str) -> String {
    format!("{queue_id}: uid={uid} from=<{}>", printable(sender, 256))
}

/// `QUEUEID: removed`.
pub fn removed(queue_id: &str) -> String {
    format!("{queue_id}: removed")
}

/// What [`delivery`] reports about one recipient.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// The queue ID.
    pub queue_id: &'a str,
    /// The recipient.
    pub to: &'a str,
    /// `host[addr]:port` of the next hop, or `none`.
    pub relay: &'a str,
    /// Seconds since arrival.
    pub delay: f64,
    /// Seconds before the queue manager, in it, in connection set-up, and
    /// in transmission (Postfix's `delays=a/b/c/d`).
    pub delays: [f64; 4],
    /// The enhanced status code.
    pub dsn: &'a str,
    /// `sent`, `deferred`, `bounced` or `expired`.
    pub status: &'a str,
    /// The remote reply or local reason.
    pub reply: &'a str,
}

/// `QUEUEID: to=<x>, relay=host[ip]:port, delay=1.2, delays=0.1/0/0.5/0.6,
/// dsn=2.0.0, status=sent (250 2.0.0 Ok)`.
pub fn delivery(d: &Delivery<'_>) -> String {
    let [a, b, c, e] = d.delays;
    format!(
        "{}: to=<{}>, relay={}, delay={}, delays={}/{}/{}/{}, dsn={}, status={} ({})",
        d.queue_id,
        printable(d.to, 256),
        printable(d.relay, 300),
        seconds(d.delay),
        seconds(a),
        seconds(b),
        seconds(c),
        seconds(e),
        printable(d.dsn, 16),
        d.status,
        printable(d.reply, 512)
    )
}

/// `Verified TLS connection established to host[ip]:port: TLSv1.3 with
/// cipher TLS13_AES_256_GCM_SHA384` (Postfix's line, one per TLS session).
/// `trust` is `Verified` (the certificate chains to a trusted root and
/// names the host) or `Untrusted` (not checked: `may` and `encrypt`).
pub fn tls_established(trust: &str, relay: &str, version: &str, cipher: &str) -> String {
    format!(
        "{} TLS connection established to {}: {} with cipher {}",
        printable(trust, 16),
        printable(relay, 300),
        printable(version, 16),
        printable(cipher, 64)
    )
}

/// `host[ip]:port: plain text session (no STARTTLS offered)`: a session
/// without TLS, and why.
pub fn plain_session(relay: &str, why: &str) -> String {
    format!(
        "{}: plain text session ({})",
        printable(relay, 300),
        printable(why, 200)
    )
}

/// Postfix's compact seconds: `0.12`, `1.2`, `12`, `0`.
fn seconds(s: f64) -> String {
    if !s.is_finite() || s < 0.005 {
        "0".to_owned()
    } else if s < 10.0 {
        let text = format!("{s:.2}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        format!("{}", s.round() as u64)
    }
}

/// `QUEUEID: sender non-delivery notification: NEWID` (also `delay` and
/// `delivery status` notifications, and `postmaster` double bounces).
pub fn notification(queue_id: &str, kind: &str, new_id: &str) -> String {
    format!("{queue_id}: {kind} notification: {new_id}")
}

/// What [`reject`] needs to know about the refused command.
#[derive(Debug, Clone, Copy)]
pub struct Rejection<'a> {
    /// SMTP stage: `RCPT`, `MAIL`, `DATA`, `END-OF-MESSAGE`, ...
    pub stage: &'a str,
    /// Peer host name, if verified.
    pub hostname: Option<&'a str>,
    /// Peer address.
    pub addr: IpAddr,
    /// The reply sent, e.g. `554 5.7.1 <x@y>: Relay access denied`.
    pub reply: &'a str,
    /// MAIL FROM, if given yet.
    pub sender: Option<&'a str>,
    /// The RCPT TO that was refused, if any.
    pub recipient: Option<&'a str>,
    /// `SMTP` or `ESMTP`.
    pub protocol: &'a str,
    /// The HELO/EHLO name, if given.
    pub helo: Option<&'a str>,
}

/// `NOQUEUE: reject: RCPT from host[addr]: 554 5.7.1 <x@y>: Relay access
/// denied; from=<a@b> to=<x@y> proto=ESMTP helo=<client>` (fail2ban's shape).
pub fn reject(r: &Rejection<'_>) -> String {
    let mut out = format!(
        "NOQUEUE: reject: {} from {}: {};",
        r.stage,
        peer(r.hostname, r.addr),
        printable(r.reply, 512)
    );
    if let Some(s) = r.sender {
        let _ = write!(out, " from=<{}>", printable(s, 256));
    }
    if let Some(t) = r.recipient {
        let _ = write!(out, " to=<{}>", printable(t, 256));
    }
    let _ = write!(out, " proto={}", r.protocol);
    if let Some(h) = r.helo {
        let _ = write!(out, " helo=<{}>", printable(h, 255));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lo() -> IpAddr {
        IpAddr::from([127, 0, 0, 1])
    }

    #[test]
    fn golden_lines() {
        assert_eq!(connect(None, lo()), "connect from unknown[127.0.0.1]");
        assert_eq!(
            client("4XKJ0ABC", Some("mx.example"), lo()),
            "4XKJ0ABC: client=mx.example[127.0.0.1]"
        );
        assert_eq!(
            queued("4XKJ0ABC", "a@b.example", 1234, 2),
            "4XKJ0ABC: from=<a@b.example>, size=1234, nrcpt=2 (queue active)"
        );
        assert_eq!(
            queued("X", "", 1, 1),
            "X: from=<>, size=1, nrcpt=1 (queue active)"
        );
        assert_eq!(removed("4XKJ0ABC"), "4XKJ0ABC: removed");
        assert_eq!(
            client_limit_exceeded(ClientLimit::Concurrency, 51, None, lo(), "smtp"),
            "Connection concurrency limit exceeded: 51 from unknown[127.0.0.1] for service smtp"
        );
        assert_eq!(
            client_limit_exceeded(ClientLimit::Rate, 7, Some("h.example"), lo(), "smtp"),
            "Connection rate limit exceeded: 7 from h.example[127.0.0.1] for service smtp"
        );
        assert_eq!(
            pickup("4XKJ0ABC", 1000, "joe@mx.example"),
            "4XKJ0ABC: uid=1000 from=<joe@mx.example>"
        );
        assert_eq!(pickup("X", 0, ""), "X: uid=0 from=<>");
        assert_eq!(
            after("lost connection", "DATA", None, lo()),
            "lost connection after DATA from unknown[127.0.0.1]"
        );
        assert_eq!(
            disconnect(
                None,
                lo(),
                &[
                    ("EHLO", 1, 1),
                    ("MAIL", 1, 1),
                    ("RCPT", 1, 2),
                    ("VRFY", 0, 0),
                    ("DATA", 1, 1),
                    ("QUIT", 1, 1)
                ]
            ),
            "disconnect from unknown[127.0.0.1] ehlo=1 mail=1 rcpt=1/2 data=1 quit=1 commands=5/6"
        );
    }

    #[test]
    fn golden_delivery() {
        let d = Delivery {
            queue_id: "4XKJ0ABC",
            to: "bob@relay.test",
            relay: "sink.test[127.0.0.1]:2526",
            delay: 1.234,
            delays: [0.1, 0.0, 0.456, 12.6],
            dsn: "2.0.0",
            status: "sent",
            reply: "250 2.0.0 Ok: queued as X",
        };
        assert_eq!(
            delivery(&d),
            "4XKJ0ABC: to=<bob@relay.test>, relay=sink.test[127.0.0.1]:2526, delay=1.23, \
             delays=0.1/0/0.46/13, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as X)"
        );
        assert_eq!(
            notification("4XKJ0ABC", "sender non-delivery", "5ABC"),
            "4XKJ0ABC: sender non-delivery notification: 5ABC"
        );
    }

    #[test]
    fn golden_tls() {
        assert_eq!(
            tls_established(
                "Verified",
                "mx.tls.test[127.0.0.1]:2525",
                "TLSv1.3",
                "TLS13_AES_256_GCM_SHA384"
            ),
            "Verified TLS connection established to mx.tls.test[127.0.0.1]:2525: \
             TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384"
        );
        assert_eq!(
            plain_session("sink.test[127.0.0.1]:25", "no STARTTLS offered"),
            "sink.test[127.0.0.1]:25: plain text session (no STARTTLS offered)"
        );
    }

    #[test]
    fn golden_reject() {
        let r = Rejection {
            stage: "RCPT",
            hostname: None,
            addr: lo(),
            reply: "554 5.7.1 <x@far.example>: Relay access denied",
            sender: Some("a@b.example"),
            recipient: Some("x@far.example"),
            protocol: "ESMTP",
            helo: Some("client.example"),
        };
        assert_eq!(
            reject(&r),
            "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 554 5.7.1 <x@far.example>: \
             Relay access denied; from=<a@b.example> to=<x@far.example> proto=ESMTP helo=<client.example>"
        );
    }

    #[test]
    fn printable_defuses_line_injection() {
        assert_eq!(printable("a\r\nfake: line\x00", 100), "a??fake: line?");
        assert_eq!(printable("héllo", 100), "h?llo");
        assert_eq!(printable("abcdef", 3), "abc");
    }
}

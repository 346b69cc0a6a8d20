//! The `Received:` trace header (RFC 5321 4.4) prepended to every message
//! accepted over SMTP, with the RFC 3848 / RFC 6531 `with` keyword and the
//! queue ID, and its short form for a local submission.
//!
//! # Must never
//! Copy peer text into the header unfiltered: the HELO name is reduced to
//! printable ASCII without comment or quoting characters, so that it cannot
//! fold the header, open a comment, or forge another field.
//!
//! # Errors
//! None: every input has a printable fallback.

use std::net::IpAddr;

use sluice_proto::envelope::{Client, Envelope, Protocol};

/// Builds the `Received:` header, folded, ending in CRLF. `for <rcpt>` is
/// written only when the envelope has exactly one recipient (naming one of
/// several would leak the others' existence to each).
///
/// ```text
/// Received: from helo.example (host.example [192.0.2.1])
///         by mx.example.org (Sluice) with ESMTP id QUEUEID
///         for <user@example.org>; Tue, 2 Jan 2024 10:00:00 +0000
/// ```
pub(crate) fn smtp(
    hostname: &str,
    client: &Client,
    envelope: &Envelope,
    queue_id: &str,
    date_rfc5322: &str,
) -> String {
    let with = match (client.protocol, envelope.smtputf8) {
        (Protocol::Esmtp, true) => "UTF8SMTP",
        (Protocol::Esmtps, true) => "UTF8SMTPS",
        (p, _) => p.keyword(),
    };
    let mut out = String::from("Received: ");
    if client.protocol != Protocol::Local {
        let helo = printable_helo(&client.helo);
        let host = client
            .hostname
            .as_deref()
            .map(printable_helo)
            .unwrap_or_else(|| "unknown".to_string());
        out.push_str(&format!(
            "from {helo} ({host} {})\r\n\t",
            address_literal(client.addr)
        ));
    }
    out.push_str(&format!("by {hostname} (Sluice) with {with} id {queue_id}"));
    match envelope.recipients.as_slice() {
        [only] => out.push_str(&format!(
            "\r\n\tfor <{}>; {date_rfc5322}\r\n",
            strip_controls(&only.address)
        )),
        _ => out.push_str(&format!(";\r\n\t{date_rfc5322}\r\n")),
    }
    out
}

/// `Received: by HOST (Sluice, from userid N)\r\n\tid ID; DATE\r\n`, as
/// Postfix's pickup writes it.
pub(crate) fn local(hostname: &str, uid: u32, queue_id: &str, date_rfc5322: &str) -> String {
    format!("Received: by {hostname} (Sluice, from userid {uid})\r\n\tid {queue_id}; {date_rfc5322}\r\n")
}

/// `[192.0.2.1]` or `[IPv6:2001:db8::1]` (RFC 5321 4.1.3).
fn address_literal(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => format!("[{a}]"),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => format!("[{v4}]"),
            None => format!("[IPv6:{a}]"),
        },
    }
}

fn printable_helo(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .take(255)
        .map(|c| match c {
            '(' | ')' | '\\' | ';' | '"' | '<' | '>' => '_',
            c if c.is_ascii_graphic() => c,
            _ => '_',
        })
        .collect();
    if cleaned.is_empty() {
        "unknown".to_string()
    } else {
        cleaned
    }
}

fn strip_controls(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::envelope::Recipient;

    fn client(protocol: Protocol) -> Client {
        Client {
            addr: "192.0.2.1".parse().unwrap(),
            port: 4242,
            hostname: Some("host.example".into()),
            helo: "helo.example".into(),
            protocol,
        }
    }

    fn rcpt(a: &str) -> Recipient {
        Recipient {
            address: a.into(),
            notify: None,
            orcpt: None,
        }
    }

    const DATE: &str = "Tue, 2 Jan 2024 10:00:00 +0000";

    #[test]
    fn one_recipient_gets_for_clause() {
        let env = Envelope {
            recipients: vec![rcpt("u@example.org")],
            ..Envelope::default()
        };
        let h = smtp("mx.example.org", &client(Protocol::Esmtp), &env, "Q1", DATE);
        assert_eq!(
            h,
            "Received: from helo.example (host.example [192.0.2.1])\r\n\
             \tby mx.example.org (Sluice) with ESMTP id Q1\r\n\
             \tfor <u@example.org>; Tue, 2 Jan 2024 10:00:00 +0000\r\n"
        );
    }

    #[test]
    fn several_recipients_no_for_clause() {
        let env = Envelope {
            recipients: vec![rcpt("a@x.org"), rcpt("b@x.org")],
            ..Envelope::default()
        };
        let mut c = client(Protocol::Smtp);
        c.hostname = None;
        c.addr = "2001:db8::1".parse().unwrap();
        let h = smtp("mx", &c, &env, "Q2", DATE);
        assert_eq!(
            h,
            "Received: from helo.example (unknown [IPv6:2001:db8::1])\r\n\
             \tby mx (Sluice) with SMTP id Q2;\r\n\
             \tTue, 2 Jan 2024 10:00:00 +0000\r\n"
        );
        assert!(!h.contains("for <"));
    }

    #[test]
    fn smtputf8_keyword_and_hostile_helo() {
        let env = Envelope {
            smtputf8: true,
            ..Envelope::default()
        };
        let mut c = client(Protocol::Esmtp);
        c.helo = "x)\r\nX-Evil: 1 (".into();
        let h = smtp("mx", &c, &env, "Q3", DATE);
        assert!(h.starts_with("Received: from x___X-Evil:_1__ (host.example"));
        assert_eq!(
            local("mx", 1000, "Q4", DATE),
            "Received: by mx (Sluice, from userid 1000)\r\n\tid Q4; Tue, 2 Jan 2024 10:00:00 +0000\r\n"
        );
        assert!(h.contains("with UTF8SMTP id Q3"));
        assert_eq!(h.matches("\r\n").count(), 3);
        for line in h.split("\r\n").skip(1).filter(|l| !l.is_empty()) {
            assert!(line.starts_with('\t'), "{line:?} is not a continuation");
        }
    }
}

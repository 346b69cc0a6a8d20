//! Unit tests of the door: which steps apply to which source, and that
//! running them twice changes nothing more.
use super::*;
use sluice_proto::envelope::{Client, Protocol, Recipient};
use std::time::{Duration, UNIX_EPOCH};

fn settings() -> Settings {
    Settings {
        hostname: "host.test".into(),
        hopcount_limit: 3,
        reject_nul: false,
    }
}

fn envelope(sender: &str) -> Envelope {
    Envelope {
        sender: sender.into(),
        recipients: vec![Recipient {
            address: "bob@example.org".into(),
            notify: None,
            orcpt: None,
        }],
        ..Envelope::default()
    }
}

fn entry<'a>(source: &'a Source, envelope: &'a Envelope) -> Entry<'a> {
    Entry {
        id: "0H28JOGF4XS009IX0000".parse().expect("id"),
        arrival: UNIX_EPOCH + Duration::from_secs(1_751_364_000),
        source,
        envelope,
    }
}

/// The door as an outside caller with no local submitter facts runs it.
fn run<'c>(source: &Source, env: &Envelope, content: &'c [u8]) -> Cleaned<'c> {
    clean(
        &settings(),
        &entry(source, env),
        &Submitter::default(),
        content,
    )
}

fn text(c: &Cleaned<'_>) -> String {
    String::from_utf8(c.pieces().concat()).expect("utf8")
}

#[test]
fn smtp_gets_received_and_its_content_is_not_copied() {
    let source = Source::Smtp(Client {
        addr: "192.0.2.1".parse().expect("ip"),
        port: 25,
        hostname: None,
        helo: "c.example".into(),
        protocol: Protocol::Esmtp,
    });
    let env = envelope("a@example.net");
    let content = b"Bcc: stays@x\r\nSubject: s\r\n\r\nbody\r\n";
    let out = run(&source, &env, content);
    assert!(matches!(out.content, Cow::Borrowed(_)));
    assert_eq!(
        out.trace,
        "Received: from c.example (unknown [192.0.2.1])\r\n\
         \tby host.test (Sluice) with ESMTP id 0H28JOGF4XS009IX0000\r\n\
         \tfor <bob@example.org>; Tue, 01 Jul 2025 10:00:00 +0000\r\n"
    );
    assert!(text(&out).ends_with("Bcc: stays@x\r\nSubject: s\r\n\r\nbody\r\n"));
}

#[test]
fn local_gets_every_fix_once_even_when_run_twice() {
    let source = Source::Local {
        uid: 1000,
        user: "joe".into(),
    };
    let env = envelope("boss@corp.test");
    let e = entry(&source, &env);
    let who = Submitter {
        trusted: false,
        full_name: Some("Joe User"),
    };
    let content = b"To: bob@example.org\r\nBcc: hidden@x\r\n\r\nhi\r\n";
    // sendmail fixes the header at submission...
    let mut header = Header::parse(content);
    fix_local_header(&settings(), &e, &who, &mut header).expect("two hops at most");
    let submitted = header.to_bytes();
    // ...and pickup runs the whole door on the file.
    let out = clean(&settings(), &e, &Submitter::default(), &submitted);
    let t = text(&out);
    assert_eq!(
        t,
        "Received: by host.test (Sluice, from userid 1000)\r\n\
         \tid 0H28JOGF4XS009IX0000; Tue, 01 Jul 2025 10:00:00 +0000\r\n\
         X-Authentication-Warning: host.test: joe set sender to boss@corp.test using -f\r\n\
         To: bob@example.org\r\n\
         From: Joe User <boss@corp.test>\r\n\
         Date: Tue, 01 Jul 2025 10:00:00 +0000\r\n\
         Message-ID: <20250701100000.0H28JOGF4XS009IX0000@host.test>\r\n\
         \r\nhi\r\n"
    );
    // A hand-written file gets the same fixes from pickup alone.
    let alone = clean(&settings(), &e, &Submitter::default(), content);
    assert!(text(&alone).contains("X-Authentication-Warning: host.test: joe set"));
    assert!(!text(&alone).contains("hidden"));
}

#[test]
fn a_trusted_or_own_sender_gets_no_warning() {
    let source = Source::Local {
        uid: 1000,
        user: "joe".into(),
    };
    for (sender, trusted) in [("joe@HOST.test", false), ("boss@corp.test", true)] {
        let env = envelope(sender);
        let who = Submitter {
            trusted,
            full_name: None,
        };
        let out = clean(&settings(), &entry(&source, &env), &who, b"\r\nx\r\n");
        assert!(!text(&out).contains("X-Authentication-Warning"), "{sender}");
    }
    let env = envelope("");
    let out = run(&source, &env, b"");
    let t = text(&out);
    assert!(t.contains("set sender to <> using -f"), "{t}");
    assert!(t.contains("From: MAILER-DAEMON@host.test\r\n"), "{t}");
}

#[test]
fn forward_gets_delivered_to_and_nothing_else() {
    let source = Source::Forward {
        recipient: "joe@host.test\r\nX-Evil: 1".into(),
    };
    let env = envelope("a@example.net");
    let content = b"Bcc: kept@x\r\n\r\nhi\r\n";
    let out = run(&source, &env, content);
    assert!(matches!(out.content, Cow::Borrowed(_)));
    assert_eq!(out.trace, "Delivered-To: joe@host.test??X-Evil:?1\r\n");
}

#[test]
fn a_notice_is_not_touched() {
    let env = envelope("");
    let content = b"Subject: Undelivered\r\n\r\nx\r\n";
    let out = run(&Source::Notice, &env, content);
    assert_eq!(out.trace, "");
    assert_eq!(&out.content[..], content);
}

#[test]
fn bare_cr_and_nul_are_canonical_for_smtp_and_local_only() {
    let local = Source::Local {
        uid: 1000,
        user: "joe".into(),
    };
    let smtp = Source::Smtp(Client {
        addr: "192.0.2.1".parse().expect("ip"),
        port: 25,
        hostname: None,
        helo: "c".into(),
        protocol: Protocol::Smtp,
    });
    let mut env = envelope("joe@host.test");
    let content = b"Subject: s\r\n\r\nhello\r.\r\n\x00.\r\nend\r\n";
    for source in [&local, &smtp] {
        let t = text(&run(source, &env, content));
        assert!(t.ends_with("\r\n\r\nhello\r\n.\r\n.\r\nend\r\n"), "{t:?}");
    }
    // A forward was made canonical when it first came in; binary is binary.
    let forward = Source::Forward {
        recipient: "joe@host.test".into(),
    };
    assert_eq!(&run(&forward, &env, content).content[..], content);
    env.body = sluice_proto::envelope::BodyType::BinaryMime;
    assert_eq!(&run(&smtp, &env, content).content[..], content);
}

/// Issue 9 defect 13: `hopcount_limit` Received: fields or more refuse a
/// message from SMTP, a local submission or a forward (not a notice).
#[test]
fn a_relay_loop_is_refused_at_the_hop_count_limit() {
    let env = envelope("a@example.net");
    let two = b"Received: 1\r\nReceived: 2\r\n\tfolded\r\n\r\nReceived: body\r\n";
    let three = b"Received: 1\r\nreceived: 2\r\nRECEIVED: 3\r\n\r\n";
    let forward = Source::Forward {
        recipient: "joe@host.test".into(),
    };
    let local = Source::Local {
        uid: 1,
        user: "u".into(),
    };
    for source in [&forward, &local] {
        let e = entry(source, &env);
        assert_eq!(check(&settings(), &e, two), Ok(()));
        assert_eq!(check(&settings(), &e, three), Err(Refusal::TooManyHops(3)));
    }
    assert_eq!(
        check(&settings(), &entry(&Source::Notice, &env), three),
        Ok(())
    );
    let off = Settings {
        hopcount_limit: 0,
        ..settings()
    };
    assert_eq!(check(&off, &entry(&local, &env), three), Ok(()));
    // sendmail's path counts the same.
    let mut header = Header::parse(three);
    let fixed = fix_local_header(
        &settings(),
        &entry(&local, &env),
        &Submitter::default(),
        &mut header,
    );
    assert_eq!(fixed, Err(Refusal::TooManyHops(3)));
    assert_eq!(Refusal::TooManyHops(3).dsn(), "5.4.6");
}

/// Issue 9 defect 11, the option: `nul_bytes: "reject"` refuses content
/// with NUL bytes (5.6.0) from SMTP and sendmail, not a notice or binary.
#[test]
fn nul_bytes_are_refused_when_asked() {
    let reject = Settings {
        reject_nul: true,
        ..settings()
    };
    let local = Source::Local {
        uid: 1,
        user: "u".into(),
    };
    let mut env = envelope("a@example.net");
    let nul = b"Subject: s\r\n\r\n\x00.\r\n";
    assert_eq!(
        check(&reject, &entry(&local, &env), nul),
        Err(Refusal::NulBytes)
    );
    assert_eq!(Refusal::NulBytes.dsn(), "5.6.0");
    assert_eq!(check(&settings(), &entry(&local, &env), nul), Ok(()));
    assert_eq!(check(&reject, &entry(&Source::Notice, &env), nul), Ok(()));
    let mut header = Header::parse(nul);
    let fixed = fix_local_header(
        &reject,
        &entry(&local, &env),
        &Submitter::default(),
        &mut header,
    );
    assert_eq!(fixed, Err(Refusal::NulBytes));
    env.body = sluice_proto::envelope::BodyType::BinaryMime;
    assert_eq!(check(&reject, &entry(&local, &env), nul), Ok(()));
}

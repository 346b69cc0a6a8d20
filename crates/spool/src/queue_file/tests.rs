//! Unit tests of `queue_file`.
use super::*;
use proptest::prelude::*;
use sluice_proto::envelope::{BodyType, Notify, Protocol, Recipient, Ret};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, UNIX_EPOCH};

fn smtp_source() -> Source {
    Source::Smtp(Client {
        addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
        port: 52311,
        hostname: Some("mail.example.net".into()),
        helo: "mail.example.net".into(),
        protocol: Protocol::Esmtps,
    })
}

fn local_source() -> Source {
    Source::Local {
        uid: 1000,
        user: "alice".into(),
    }
}

fn envelope() -> Envelope {
    Envelope {
        sender: "alice@example.net".into(),
        recipients: vec![
            Recipient {
                address: "bob@example.org".into(),
                notify: Some(Notify {
                    success: false,
                    failure: true,
                    delay: true,
                }),
                orcpt: Some("rfc822;bob@example.org".into()),
            },
            Recipient {
                address: "carol@example.org".into(),
                notify: None,
                orcpt: None,
            },
        ],
        body: BodyType::EightBitMime,
        smtputf8: false,
        ret: Some(Ret::Hdrs),
        envid: Some("QQ314159".into()),
        declared_size: Some(1520),
    }
}

fn arrival() -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(1_732_831_234_123_456)
}

fn id() -> QueueId {
    "0H28JOGF4XS009IX0000".parse().unwrap()
}

const BODY: &[u8] = b"Subject: hi\nFrom: alice@example.net\n\nHello.\n";

/// The FORMAT.md example, as bytes.
fn sample() -> Vec<u8> {
    let source = smtp_source();
    let env = envelope();
    encode(&Message {
        id: id(),
        arrival: arrival(),
        source: &source,
        envelope: &env,
        content: &[BODY],
    })
}

fn err(bytes: &[u8]) -> FormatError {
    match decode(bytes) {
        Ok(file) => panic!("accepted invalid file: {file:?}"),
        Err(e) => e,
    }
}

/// `sample()` with its text edited.
fn edited(f: impl Fn(&str) -> String) -> Vec<u8> {
    let text = String::from_utf8(sample()).unwrap();
    f(&text).into_bytes()
}

fn replace(from: &str, to: &str) -> Vec<u8> {
    edited(|t| {
        assert!(t.contains(from), "sample has no {from:?}");
        t.replacen(from, to, 1)
    })
}

#[test]
fn sample_is_the_format_md_example() {
    let spec = include_str!("../../FORMAT.md");
    let example = spec
        .split("## Example\n\n```\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```\n").next())
        .unwrap();
    assert_eq!(format!("{example}\n").as_bytes(), &sample()[..]);
}

#[test]
fn round_trip_smtp_and_local() {
    for source in [smtp_source(), local_source()] {
        let mut env = envelope();
        if let Source::Local { .. } = source {
            env.declared_size = None;
        }
        let pieces: &[&[u8]] = &[b"Received: x\r\n", BODY, b""];
        let msg = Message {
            id: QueueId::generate(),
            arrival: arrival(),
            source: &source,
            envelope: &env,
            content: pieces,
        };
        let bytes = encode(&msg);
        let file = decode(&bytes).unwrap();
        assert_eq!(file.id, msg.id);
        assert_eq!(file.arrival, arrival());
        assert_eq!(file.source, source);
        assert_eq!(file.envelope, env);
        assert_eq!(file.content, pieces.concat());
        let mut by_parts = encode_header(&msg);
        by_parts.extend_from_slice(&pieces.concat());
        by_parts.extend_from_slice(TRAILER);
        assert_eq!(by_parts, bytes);
    }
}

#[test]
fn local_file_leaves_out_declared_size() {
    let source = local_source();
    let env = envelope();
    let bytes = encode(&Message {
        id: id(),
        arrival: arrival(),
        source: &source,
        envelope: &env,
        content: &[],
    });
    let file = decode(&bytes).unwrap();
    assert_eq!(file.envelope.declared_size, None);
    assert!(!String::from_utf8_lossy(&bytes).contains("declared-size"));
}

#[test]
fn escapes_are_readable_and_canonical() {
    let mut out = Vec::new();
    push_escaped(&mut out, "a b\r\n%<>\u{7f}\u{85}\u{a0}é\0");
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "a%20b%0D%0A%25%3C%3E%7F%C2%85%C2%A0é%00"
    );
    assert_eq!(unescape(Field::Envid, "a%20bé%25").unwrap(), "a bé%");
    for bad in [
        "a b", "%C3%A9", "%41", "%e9", "%C3", "%", "%2", "%ZZ", "a>b",
    ] {
        assert!(unescape(Field::Envid, bad).is_err(), "accepted {bad:?}");
    }
}

#[test]
fn truncated_at_every_offset_is_rejected() {
    let bytes = sample();
    for len in 0..bytes.len() {
        assert!(decode(&bytes[..len]).is_err(), "accepted {len} bytes");
    }
    assert!(decode(&bytes).is_ok());
}

#[test]
fn rejects_bad_magic_and_versions() {
    let e = err(&replace("sluice-queue 2\n", "sluice-queue 3\n"));
    assert_eq!(e.line, 1);
    assert_eq!(e.problem, Problem::UnsupportedVersion("3".into()));
    let e = err(&replace("sluice-queue 2\n", "sluice-queue 2 \n"));
    assert!(matches!(e.problem, Problem::UnsupportedVersion(_)));
    let e = err(&replace("sluice-queue 2\n", "From alice\n"));
    assert_eq!((e.line, e.problem), (1, Problem::NotQueueFile));
    assert_eq!(err(b"").problem, Problem::Truncated);
    assert_eq!(err(b"\x00\xff\n").problem, Problem::NotUtf8);
}

/// A file the previous release wrote (version 1), kept byte for byte: it
/// is still read, so mail queued before an upgrade is delivered after it.
#[test]
fn version_1_fixture_is_read() {
    let bytes = include_bytes!("../../tests/fixtures/version-1.queue");
    let file = decode(bytes).unwrap();
    assert_eq!(file.id, id());
    assert_eq!(file.source, smtp_source());
    assert_eq!(file.envelope, envelope());
    assert_eq!(file.content, BODY);
    // Re-encoded, it is the same message in version 2.
    let again = encode(&Message {
        id: file.id,
        arrival: file.arrival,
        source: &file.source,
        envelope: &file.envelope,
        content: &[&file.content],
    });
    assert!(again.starts_with(b"sluice-queue 2\n"));
    assert_eq!(&again[14..], &bytes[14..]);
}

#[test]
fn forward_and_notice_are_version_2_only() {
    let env = Envelope {
        declared_size: None,
        ..envelope()
    };
    let forward = Source::Forward {
        recipient: "joe@example.org".into(),
    };
    for source in [forward, Source::Notice] {
        let bytes = encode(&Message {
            id: id(),
            arrival: arrival(),
            source: &source,
            envelope: &env,
            content: &[BODY],
        });
        assert_eq!(decode(&bytes).unwrap().source, source);
        let mut v1 = bytes.clone();
        v1[13] = b'1';
        let e = err(&v1);
        assert_eq!(e.line, 4, "{e}");
        assert!(matches!(
            e.problem,
            Problem::BadValue {
                field: "source",
                ..
            }
        ));
    }
    let text = String::from_utf8(encode(&Message {
        id: id(),
        arrival: arrival(),
        source: &Source::Forward {
            recipient: "joe@example.org".into(),
        },
        envelope: &env,
        content: &[],
    }))
    .unwrap();
    assert!(text.contains("\nsource: forward\nforward-for: <joe@example.org>\n"));
    let e = err(text
        .replace("forward-for: <joe@example.org>\n", "")
        .as_bytes());
    assert_eq!(e.problem, Problem::MissingField("forward-for"));
    let e = err(&replace(
        "source: smtp\n",
        "source: smtp\nforward-for: <a@b>\n",
    ));
    assert!(matches!(
        e.problem,
        Problem::NotAllowed {
            field: "forward-for",
            ..
        }
    ));
}

#[test]
fn rejects_unknown_and_duplicate_fields_with_line_numbers() {
    let e = err(&replace("source: smtp\n", "source: smtp\nx-spam: yes\n"));
    assert_eq!(e.line, 5);
    assert_eq!(e.problem, Problem::UnknownField("x-spam".into()));
    let e = err(&replace("body: 8BITMIME\n", "body: 8BITMIME\nbody: 7BIT\n"));
    assert_eq!(e.line, 12);
    assert_eq!(e.problem, Problem::DuplicateField("body"));
    let e = err(&replace("envid: QQ314159\n", "envid: QQ314159\nenvid\n"));
    assert_eq!((e.line, e.problem), (15, Problem::NotField));
    let e = err(&replace("envid: ", "Envid: "));
    assert!(matches!(e.problem, Problem::UnknownField(_)));
    let e = err(&replace("envid: QQ314159\n", "envid:QQ314159\n"));
    assert_eq!(e.problem, Problem::NotField);
}

#[test]
fn rejects_missing_required_fields() {
    for line in [
        "id: 0H28JOGF4XS009IX0000\n",
        "arrival: 1732831234.123456\n",
        "source: smtp\n",
        "client-addr: 192.0.2.10\n",
        "client-port: 52311\n",
        "client-helo: mail.example.net\n",
        "protocol: ESMTPS\n",
        "sender: <alice@example.net>\n",
        "body: 8BITMIME\n",
        "smtputf8: no\n",
        "content-length: 44\n",
    ] {
        let e = err(&replace(line, ""));
        let key = line.split(':').next().unwrap();
        assert_eq!(
            e.problem,
            Problem::MissingField(Field::from_name(key).unwrap().name())
        );
    }
    // Optional ones may go.
    for line in [
        "client-hostname: mail.example.net\n",
        "ret: HDRS\n",
        "envid: QQ314159\n",
        "declared-size: 1520\n",
        "rcpt: <carol@example.org>\n",
    ] {
        decode(&replace(line, "")).unwrap();
    }
}

#[test]
fn enforces_the_allow_list_per_source() {
    let local = replace(
        "source: smtp\nclient-addr: 192.0.2.10\nclient-port: 52311\n\
         client-hostname: mail.example.net\nclient-helo: mail.example.net\nprotocol: ESMTPS\n",
        "source: local\nlocal-uid: 1000\nlocal-user: alice\n",
    );
    // Still has declared-size, which a local submission may not carry.
    let e = err(&local);
    assert_eq!(
        e.problem,
        Problem::NotAllowed {
            field: "declared-size",
            kind: "local"
        }
    );
    let text = String::from_utf8(local).unwrap();
    let local = text.replace("declared-size: 1520\n", "");
    let file = decode(local.as_bytes()).unwrap();
    assert_eq!(file.source, local_source());
    let e = err(local.replace("local-uid", "client-port").as_bytes());
    assert!(matches!(
        e.problem,
        Problem::NotAllowed {
            field: "client-port",
            ..
        }
    ));
    let e = err(&replace(
        "protocol: ESMTPS\n",
        "protocol: ESMTPS\nlocal-uid: 0\n",
    ));
    assert_eq!(
        e.problem,
        Problem::NotAllowed {
            field: "local-uid",
            kind: "smtp"
        }
    );
    assert!(matches!(
        err(&replace("source: smtp", "source: pickup")).problem,
        Problem::BadValue {
            field: "source",
            ..
        }
    ));
}

#[test]
fn rejects_wrong_length_and_missing_end() {
    let e = err(&replace("content-length: 44\n", "content-length: 43\n"));
    assert_eq!(
        e.problem,
        Problem::LengthMismatch {
            declared: 43,
            actual: 44
        }
    );
    assert_eq!(e.line, 19);
    let e = err(&replace(
        "content-length: 44\n",
        "content-length: 18446744073709551615\n",
    ));
    assert!(matches!(e.problem, Problem::LengthMismatch { .. }));
    let e = err(&replace(
        "content-length: 44\n",
        "content-length: 18446744073709551616\n",
    ));
    assert!(matches!(e.problem, Problem::BadValue { .. }));

    let mut bytes = sample();
    bytes.truncate(bytes.len() - 1);
    assert_eq!(err(&bytes).problem, Problem::MissingEnd);
    let mut bytes = sample();
    bytes.extend_from_slice(b"X");
    assert_eq!(err(&bytes).problem, Problem::MissingEnd);
    let e = err(&edited(|t| {
        t.replace("end-of-queue-file", "end-of-queue-fil_")
    }));
    assert_eq!(e.problem, Problem::MissingEnd);
    // A second copy of the trailer makes the content too long, not valid.
    let mut bytes = sample();
    bytes.extend_from_slice(TRAILER);
    assert!(matches!(
        err(&bytes).problem,
        Problem::LengthMismatch { .. }
    ));
}

#[test]
fn rejects_bad_values() {
    let cases = [
        ("id: 0H28JOGF4XS009IX0000", "id: 0h28jogf4xs009ix0000"),
        ("arrival: 1732831234.123456", "arrival: 1732831234"),
        ("arrival: 1732831234.123456", "arrival: 1732831234.12345"),
        ("arrival: 1732831234.123456", "arrival: 01732831234.123456"),
        ("arrival: 1732831234.123456", "arrival: 1732831234.+12345"),
        (
            "arrival: 1732831234.123456",
            "arrival: 18446744073709551615.000000",
        ),
        ("client-addr: 192.0.2.10", "client-addr: 192.0.2.010"),
        ("client-addr: 192.0.2.10", "client-addr: ::FFFF"),
        ("client-port: 52311", "client-port: 65536"),
        ("client-port: 52311", "client-port: +52311"),
        ("client-port: 52311", "client-port: 052311"),
        ("client-port: 52311", "client-port: "),
        ("client-helo: mail.example.net", "client-helo: mail example"),
        (
            "client-helo: mail.example.net",
            "client-helo: mail.example.net\r",
        ),
        ("client-helo: mail.example.net", "client-helo: m%41il"),
        ("protocol: ESMTPS", "protocol: esmtps"),
        ("sender: <alice@example.net>", "sender: alice@example.net"),
        (
            "sender: <alice@example.net>",
            "sender: <alice@example.net> ",
        ),
        (
            "sender: <alice@example.net>",
            "sender: <<alice@example.net>>",
        ),
        ("body: 8BITMIME", "body: 8bitmime"),
        ("smtputf8: no", "smtputf8: false"),
        ("ret: HDRS", "ret: hdrs"),
        ("envid: QQ314159", "envid: Q%"),
        ("declared-size: 1520", "declared-size: -1"),
        ("rcpt: <carol@example.org>", "rcpt: <carol@example.org> "),
        (
            "rcpt: <carol@example.org>",
            "rcpt: <carol@example.org>  notify=never",
        ),
        (
            "rcpt: <carol@example.org>",
            "rcpt: <carol@example.org> notify=",
        ),
        (
            "rcpt: <carol@example.org>",
            "rcpt: <carol@example.org> notify=never,delay",
        ),
        (
            "rcpt: <carol@example.org>",
            "rcpt: <carol@example.org> notify=delay,delay",
        ),
        (
            "rcpt: <carol@example.org>",
            "rcpt: <carol@example.org> notify=DELAY",
        ),
        (
            "rcpt: <carol@example.org>",
            "rcpt: <carol@example.org> orcpt=a orcpt=a",
        ),
        ("rcpt: <carol@example.org>", "rcpt: <carol@example.org> x=y"),
        (
            "rcpt: <carol@example.org>",
            "rcpt: <carol@example.org> orcpt",
        ),
        ("rcpt: <carol@example.org>", "rcpt: carol@example.org"),
    ];
    for (from, to) in cases {
        let e = err(&replace(from, to));
        assert!(matches!(e.problem, Problem::BadValue { .. }), "{to:?}: {e}");
    }
}

#[test]
fn accepts_equivalent_spellings() {
    // Field order is free, notify flags in any order.
    let file = decode(&edited(|t| {
        t.replace("id: 0H28JOGF4XS009IX0000\n", "")
            .replace(
                "content-length: 44\n",
                "content-length: 44\nid: 0H28JOGF4XS009IX0000\n",
            )
            .replace("notify=failure,delay", "notify=delay,failure")
    }))
    .unwrap();
    assert_eq!(file.envelope, envelope());
    assert_eq!(file.content, BODY);
}

#[test]
fn error_text_names_line_and_problem() {
    let e = err(&replace("smtputf8: no", "smtputf8: maybe"));
    assert_eq!(
        e.to_string(),
        "line 12: bad value for smtputf8: expected yes or no"
    );
    let e = err(&replace("source: smtp\n", "source: smtp\nx\u{1b}[31m: 1\n"));
    assert_eq!(e.to_string(), "line 5: unknown field \"x%1B[31m\"");
}

// ---------------------------------------------------------------------------
// Property tests.

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::collection::vec(any::<char>(), 0..12).prop_map(String::from_iter),
        "[a-z.@%<> ]{0,12}",
    ]
}

fn any_notify() -> impl Strategy<Value = Option<Notify>> {
    proptest::option::of((any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(success, failure, delay)| Notify {
            success,
            failure,
            delay,
        },
    ))
}

fn any_source() -> impl Strategy<Value = Source> {
    let protocol = prop_oneof![
        Just(Protocol::Smtp),
        Just(Protocol::Esmtp),
        Just(Protocol::Esmtps),
        Just(Protocol::Local),
    ];
    let addr = prop_oneof![
        any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
    ];
    prop_oneof![
        (
            addr,
            any::<u16>(),
            proptest::option::of(any_text()),
            any_text(),
            protocol
        )
            .prop_map(
                |(addr, port, hostname, helo, protocol)| Source::Smtp(Client {
                    addr,
                    port,
                    hostname,
                    helo,
                    protocol
                })
            ),
        (any::<u32>(), any_text()).prop_map(|(uid, user)| Source::Local { uid, user }),
        any_text().prop_map(|recipient| Source::Forward { recipient }),
        Just(Source::Notice),
    ]
}

fn any_envelope() -> impl Strategy<Value = Envelope> {
    let rcpt = (any_text(), any_notify(), proptest::option::of(any_text())).prop_map(
        |(address, notify, orcpt)| Recipient {
            address,
            notify,
            orcpt,
        },
    );
    let body = prop_oneof![
        Just(BodyType::SevenBit),
        Just(BodyType::EightBitMime),
        Just(BodyType::BinaryMime),
    ];
    let ret = proptest::option::of(prop_oneof![Just(Ret::Full), Just(Ret::Hdrs)]);
    (
        any_text(),
        proptest::collection::vec(rcpt, 0..5),
        body,
        any::<bool>(),
        ret,
        proptest::option::of(any_text()),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(
            |(sender, recipients, body, smtputf8, ret, envid, declared_size)| Envelope {
                sender,
                recipients,
                body,
                smtputf8,
                ret,
                envid,
                declared_size,
            },
        )
}

/// Content pieces biased towards bytes that look like file structure.
fn any_content() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let piece = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        Just(TRAILER.to_vec()),
        Just(b"end-of-queue-file\n".to_vec()),
        Just(b"end-of-queue-file".to_vec()),
        Just(b"\n\n".to_vec()),
        Just(b"\r\n.\r\n".to_vec()),
        Just(b"content-length: 5\n".to_vec()),
        Just(b"rcpt: <evil@example.com>\n".to_vec()),
        Just(b"sluice-queue 1\n".to_vec()),
        Just(b"sluice-queue 2\n".to_vec()),
    ];
    proptest::collection::vec(piece, 0..8)
}

proptest! {
    #[test]
    fn queue_file_round_trip(
        source in any_source(),
        mut envelope in any_envelope(),
        micros in 0u64..(1 << 53),
        content in any_content(),
    ) {
        if !matches!(source, Source::Smtp(_)) {
            envelope.declared_size = None;
        }
        let pieces: Vec<&[u8]> = content.iter().map(Vec::as_slice).collect();
        let msg = Message {
            id: QueueId::generate(),
            arrival: UNIX_EPOCH + Duration::from_micros(micros),
            source: &source,
            envelope: &envelope,
            content: &pieces,
        };
        let bytes = encode(&msg);
        let file = decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(file.id, msg.id);
        prop_assert_eq!(file.arrival, msg.arrival);
        prop_assert_eq!(&file.source, &source);
        prop_assert_eq!(&file.envelope, &envelope);
        prop_assert_eq!(file.content, content.concat());
        // The header is readable text: UTF-8, no control characters but LF.
        let header = encode_header(&msg);
        let header = std::str::from_utf8(&header).unwrap();
        prop_assert!(!header.chars().any(|c| c.is_control() && c != '\n'));
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn damaged_byte_is_never_silently_misread(at in any::<prop::sample::Index>(), to in any::<u8>()) {
        let mut bytes = sample();
        let at = at.index(bytes.len());
        prop_assume!(bytes[at] != to);
        bytes[at] = to;
        // The format is canonical: one changed byte is rejected, or (in the
        // content, or as another valid value) decodes to a different file.
        if let Ok(file) = decode(&bytes) {
            prop_assert_ne!(file, decode(&sample()).unwrap());
        }
    }
}

//! Unit tests of the session machine: the durability rule (250 after a
//! message only from `Verdict::Queued`), memory bounds, timers.

use std::time::Duration;

use super::*;

fn config() -> Config {
    Config {
        hostname: "mx.example.org".into(),
        local_domains: vec!["example.org".into()],
        ..Config::default()
    }
}

/// The only clock read: a base instant, moved by hand from there.
#[allow(clippy::disallowed_methods)]
fn start() -> Instant {
    Instant::now()
}

fn session(config: Config, now: Instant) -> Session {
    let peer = Peer {
        addr: "192.0.2.7:40000".parse().unwrap(),
        trusted: false,
        hostname: None,
    };
    Session::new(Arc::new(config), peer, now)
}

/// Everything sent so far, as text, and the asks.
fn drain(s: &mut Session) -> (String, Vec<Ask>, bool) {
    let mut text = Vec::new();
    let mut asks = Vec::new();
    let mut closed = false;
    while let Some(o) = s.poll_output() {
        match o {
            Output::Send(b) => text.extend_from_slice(&b),
            Output::Ask(a) => asks.push(a),
            Output::Log(_) => {}
            Output::Close => closed = true,
        }
    }
    (String::from_utf8(text).unwrap(), asks, closed)
}

const TO_END_OF_DATA: &[u8] = b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\n\
RCPT TO:<u@example.org>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n";

#[test]
fn only_queued_verdict_gives_250_after_data() {
    // Every verdict, and no verdict: only Queued may produce the 250.
    let verdicts = [
        Some(Verdict::Queued {
            queue_id: "Q1".into(),
        }),
        Some(Verdict::TempFail),
        Some(Verdict::EtrnStarted),
        Some(Verdict::EtrnUnavailable),
        None,
    ];
    for v in verdicts {
        let now = start();
        let mut s = session(config(), now);
        s.handle_input(TO_END_OF_DATA, now);
        let (text, asks, _) = drain(&mut s);
        assert!(
            text.ends_with("354 End data with <CR><LF>.<CR><LF>\r\n"),
            "{text}"
        );
        assert!(matches!(asks.as_slice(), [Ask::Commit(_)]));
        // Nothing moves while the ask is pending: not input, not timers.
        s.handle_input(b"NOOP\r\n", now);
        s.handle_timeout(now + Duration::from_secs(100_000));
        assert_eq!(s.poll_timeout(), None);
        assert!(!s.wants_input());
        let (text, _, closed) = drain(&mut s);
        assert!(text.is_empty() && !closed, "{text}");
        let queued = matches!(v, Some(Verdict::Queued { .. }));
        if let Some(v) = v {
            s.handle_verdict(v, now);
        }
        let (text, _, _) = drain(&mut s);
        if queued {
            assert_eq!(text, "250 2.0.0 Ok: queued as Q1\r\n250 2.0.0 Ok\r\n");
        } else {
            assert!(!text.starts_with("250"), "{text}");
        }
    }
}

#[test]
fn verdict_without_ask_is_ignored() {
    let now = start();
    let mut s = session(config(), now);
    drain(&mut s);
    s.handle_verdict(
        Verdict::Queued {
            queue_id: "X".into(),
        },
        now,
    );
    assert_eq!(drain(&mut s).0, "");
}

#[test]
fn endless_command_line_is_not_buffered() {
    let now = start();
    let mut s = session(config(), now);
    let chunk = vec![b'A'; 65536];
    for _ in 0..160 {
        s.handle_input(&chunk, now);
        // At most one line's worth is ever kept: the limit plus one chunk
        // before it is recognised and dropped, nothing after.
        assert!(s.inbuf.len() < command::COMMAND_LINE_MAX + command::RCPT_EXTRA);
        assert!(s.inbuf.capacity() <= chunk.len() + command::COMMAND_LINE_MAX + 1024);
    }
    s.handle_input(b"\r\nNOOP\r\n", now);
    let (text, _, closed) = drain(&mut s);
    assert!(!closed);
    assert!(text.ends_with("500 5.5.2 Error: line too long\r\n250 2.0.0 Ok\r\n"));
}

#[test]
fn oversized_message_is_not_kept() {
    let now = start();
    let mut c = config();
    c.limits.max_message_size = 1000;
    let mut s = session(c, now);
    s.handle_input(
        b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<u@example.org>\r\nDATA\r\n",
        now,
    );
    let line = [b"x".repeat(78), b"\r\n".to_vec()].concat();
    for _ in 0..10_000 {
        s.handle_input(&line, now);
        let kept =
            s.tx.as_ref()
                .and_then(|t| t.content.as_ref())
                .map_or(0, |c| c.kept_capacity());
        assert!(kept <= 2048, "{kept}");
    }
    s.handle_input(b".\r\n", now);
    let (text, asks, _) = drain(&mut s);
    assert!(asks.is_empty());
    assert!(
        text.ends_with("552 5.3.4 Error: message file too big\r\n"),
        "{text}"
    );
}

#[test]
fn timers_follow_the_synthetic_clock() {
    let t0 = start();
    let mut c = config();
    c.limits.command_timeout = Duration::from_secs(10);
    c.limits.data_timeout = Duration::from_secs(20);
    c.limits.session_timeout = Duration::from_secs(100);
    let mut s = session(c, t0);
    drain(&mut s);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    // Early: nothing.
    s.handle_timeout(t0 + Duration::from_secs(9));
    assert_eq!(drain(&mut s).0, "");
    // A command re-arms the command timer from its time.
    let t5 = t0 + Duration::from_secs(5);
    s.handle_input(
        b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<u@example.org>\r\nDATA\r\n",
        t5,
    );
    drain(&mut s);
    assert_eq!(s.poll_timeout(), Some(t5 + Duration::from_secs(20)));
    let t90 = t0 + Duration::from_secs(90);
    s.handle_input(b"more content\r\n", t90);
    // The session cap comes first now.
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(100)));
    s.handle_timeout(t0 + Duration::from_secs(100));
    let (text, _, closed) = drain(&mut s);
    assert_eq!(text, "421 4.4.2 mx.example.org Error: timeout exceeded\r\n");
    assert!(closed);
    assert_eq!(s.poll_timeout(), None);
    // After Close everything is ignored.
    s.handle_input(b"NOOP\r\n", t90);
    s.handle_timeout(t90);
    s.handle_shutdown(t90);
    assert_eq!(drain(&mut s), (String::new(), Vec::new(), false));
}

#[test]
fn timer_rearms_after_verdict() {
    let t0 = start();
    let mut c = config();
    c.limits.command_timeout = Duration::from_secs(10);
    let mut s = session(c, t0);
    s.handle_input(TO_END_OF_DATA, t0);
    drain(&mut s);
    assert_eq!(s.poll_timeout(), None);
    let t50 = t0 + Duration::from_secs(50);
    s.handle_verdict(
        Verdict::Queued {
            queue_id: "Q".into(),
        },
        t50,
    );
    assert_eq!(s.poll_timeout(), Some(t50 + Duration::from_secs(10)));
}

#[test]
fn commit_carries_client_and_envelope() {
    let now = start();
    let mut s = session(config(), now);
    s.handle_input(TO_END_OF_DATA, now);
    let (_, asks, _) = drain(&mut s);
    let Some(Ask::Commit(c)) = asks.into_iter().next() else {
        panic!("no commit");
    };
    assert_eq!(c.content, b"Subject: x\r\n\r\nbody\r\n");
    assert_eq!(c.client.helo, "c.example");
    assert_eq!(c.client.protocol, Protocol::Esmtp);
    assert_eq!(c.client.port, 40000);
    assert_eq!(c.envelope.sender, "a@b.example");
}

#[test]
fn stats_count_each_command_and_its_failures() {
    let now = start();
    let mut s = session(config(), now);
    s.handle_input(TO_END_OF_DATA, now);
    s.handle_verdict(
        Verdict::Queued {
            queue_id: "Q".into(),
        },
        now,
    );
    s.handle_input(b"RCPT TO:<x@y.example>\r\nQUIT\r\n", now);
    let counts: Vec<_> = s.command_stats().iter().collect();
    assert_eq!(
        counts,
        [
            ("ehlo", 1, 1),
            ("mail", 1, 1),
            ("rcpt", 1, 2),
            ("data", 1, 1),
            ("quit", 1, 1)
        ]
    );
    assert_eq!(s.command_stats().total(), (5, 6));
    assert_eq!(s.command_stats().get("rcpt"), Some((1, 2)));
    assert_eq!(s.stage(), "QUIT");
}

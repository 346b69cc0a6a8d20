//! Unit tests of the session machine: the durability rule (250 after a
//! message only from `CommitAnswer::Queued`), memory bounds, timers.

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
fn only_queued_answer_gives_250_after_data() {
    // Every verdict, and no verdict: only Queued may produce the 250.
    let verdicts = [
        Some(CommitAnswer::Queued {
            queue_id: "Q1".into(),
        }),
        Some(CommitAnswer::TempFail),
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
        // Answers to other asks do not answer the commit.
        s.handle_etrn(EtrnAnswer::Started, now);
        s.handle_check(CheckAnswer::Accept, now);
        assert_eq!(drain(&mut s).0, "");
        let queued = matches!(v, Some(CommitAnswer::Queued { .. }));
        if let Some(v) = v {
            s.handle_commit(v, now);
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
fn answer_without_ask_is_ignored() {
    let now = start();
    let mut s = session(config(), now);
    drain(&mut s);
    s.handle_commit(
        CommitAnswer::Queued {
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
fn timer_rearms_after_answer() {
    let t0 = start();
    let mut c = config();
    c.limits.command_timeout = Duration::from_secs(10);
    let mut s = session(c, t0);
    s.handle_input(TO_END_OF_DATA, t0);
    drain(&mut s);
    assert_eq!(s.poll_timeout(), None);
    let t50 = t0 + Duration::from_secs(50);
    s.handle_commit(
        CommitAnswer::Queued {
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
    s.handle_commit(
        CommitAnswer::Queued {
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

fn checked() -> Config {
    Config {
        checks: true,
        relay_domains: vec!["relay.example".into()],
        ..config()
    }
}

/// The one check out, answered with `answer`.
fn answer_check(s: &mut Session, answer: CheckAnswer, now: Instant) -> (String, Check) {
    let (_, asks, _) = drain(s);
    let [Ask::Check(check)] = asks.as_slice() else {
        panic!("not one check: {asks:?}");
    };
    let check = check.clone();
    s.handle_check(answer, now);
    (drain_text(s), check)
}

fn drain_text(s: &mut Session) -> String {
    let (text, asks, _) = drain(s);
    assert!(asks.is_empty(), "{asks:?}");
    text
}

#[test]
fn every_stage_asks_its_check_with_the_facts_so_far() {
    let now = start();
    let mut s = session(checked(), now);
    // No greeting before the connect check.
    let (text, check) = answer_check(&mut s, CheckAnswer::Accept, now);
    assert_eq!(check.stage, Stage::Connect);
    assert!(text.starts_with("220 "), "{text}");
    s.handle_input(b"EHLO c.example\r\n", now);
    let (text, check) = answer_check(&mut s, CheckAnswer::Accept, now);
    assert_eq!(
        (check.stage, check.helo.as_deref()),
        (Stage::Helo, Some("c.example"))
    );
    assert!(text.starts_with("250-mx.example.org"), "{text}");
    s.handle_input(b"MAIL FROM:<a@b.example>\r\n", now);
    let (text, check) = answer_check(&mut s, CheckAnswer::Accept, now);
    assert_eq!(
        (check.stage, check.sender.as_deref()),
        (Stage::Mail, Some("a@b.example"))
    );
    assert_eq!(text, "250 2.1.0 Ok\r\n");
    s.handle_input(b"RCPT TO:<u@example.org>\r\n", now);
    let (text, check) = answer_check(&mut s, CheckAnswer::Accept, now);
    assert_eq!(check.stage, Stage::Rcpt);
    assert_eq!(check.recipient.as_deref(), Some("u@example.org"));
    assert!(check.local);
    assert_eq!(text, "250 2.1.5 Ok\r\n");
    s.handle_input(b"DATA\r\n", now);
    let (text, check) = answer_check(&mut s, CheckAnswer::Accept, now);
    assert_eq!(check.stage, Stage::Data);
    assert!(text.starts_with("354 "), "{text}");
    s.handle_input(b"Subject: x\r\n\r\nbody\r\n.\r\n", now);
    // End of data: the check, then (accepted) the commit.
    let (_, asks, _) = drain(&mut s);
    let [Ask::Check(check)] = asks.as_slice() else {
        panic!("{asks:?}");
    };
    assert_eq!(check.stage, Stage::EndOfData);
    s.handle_check(CheckAnswer::Accept, now);
    let (_, asks, _) = drain(&mut s);
    assert!(matches!(asks.as_slice(), [Ask::Commit(_)]), "{asks:?}");
}

#[test]
fn a_refusal_at_connect_is_sent_and_closes() {
    let now = start();
    let mut s = session(checked(), now);
    let r = Reply::new(
        421,
        Some(reply::Enhanced::new(4, 7, 0)),
        "too many connections",
    );
    let (_, asks, _) = drain(&mut s);
    assert!(matches!(asks.as_slice(), [Ask::Check(c)] if c.stage == Stage::Connect));
    s.handle_check(CheckAnswer::Reject(r), now);
    let (text, asks, closed) = drain(&mut s);
    assert_eq!(text, "421 4.7.0 too many connections\r\n");
    assert!(asks.is_empty() && closed && s.is_closed());
}

#[test]
fn refusals_by_checks_count_as_errors_only_when_permanent() {
    let now = start();
    let mut c = checked();
    c.limits.max_errors = 2;
    let mut s = session(c, now);
    answer_check(&mut s, CheckAnswer::Accept, now);
    s.handle_input(b"HELO c.example\r\n", now);
    answer_check(&mut s, CheckAnswer::Accept, now);
    s.handle_input(b"MAIL FROM:<a@b.example>\r\n", now);
    answer_check(&mut s, CheckAnswer::Accept, now);
    let temp = Reply::new(451, Some(reply::Enhanced::new(4, 3, 0)), "try later");
    let perm = Reply::new(550, Some(reply::Enhanced::new(5, 1, 1)), "no such user");
    for _ in 0..3 {
        s.handle_input(b"RCPT TO:<x@example.org>\r\n", now);
        let (text, _) = answer_check(&mut s, CheckAnswer::Reject(temp.clone()), now);
        assert_eq!(text, "451 4.3.0 try later\r\n");
    }
    s.handle_input(b"RCPT TO:<x@example.org>\r\n", now);
    let (text, _) = answer_check(&mut s, CheckAnswer::Reject(perm.clone()), now);
    assert_eq!(text, "550 5.1.1 no such user\r\n");
    assert!(!s.is_closed());
    s.handle_input(b"RCPT TO:<y@example.org>\r\n", now);
    let (text, _) = answer_check(&mut s, CheckAnswer::Reject(perm), now);
    assert!(
        text.ends_with("421 4.7.0 mx.example.org Error: too many errors\r\n"),
        "{text}"
    );
    assert!(s.is_closed());
    // A success code is never taken as a refusal's reply.
    let mut s = session(checked(), now);
    answer_check(&mut s, CheckAnswer::Accept, now);
    s.handle_input(b"HELO c.example\r\n", now);
    let ok = Reply::new(250, None, "fine");
    let (text, _) = answer_check(&mut s, CheckAnswer::Reject(ok), now);
    assert!(text.starts_with("451 "), "{text}");
}

#[test]
fn improper_pipelining_is_logged_once_and_counts_as_errors() {
    let now = start();
    let mut c = config();
    c.limits.max_errors = 20;
    let mut s = session(c, now);
    drain(&mut s);
    let noops = b"NOOP\r\n".repeat(100_000);
    s.handle_input(&noops, now);
    let mut logged = 0;
    let mut text = Vec::new();
    while let Some(o) = s.poll_output() {
        match o {
            Output::Log(Event::ImproperPipelining { .. }) => logged += 1,
            Output::Send(b) => text.extend_from_slice(&b),
            _ => {}
        }
    }
    assert_eq!(logged, 1);
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.ends_with("421 4.7.0 mx.example.org Error: too many errors\r\n"),
        "{}",
        &text[text.len().saturating_sub(200)..]
    );
    assert_eq!(text.matches("250 2.0.0 Ok").count(), 20);
    assert!(s.is_closed());
}

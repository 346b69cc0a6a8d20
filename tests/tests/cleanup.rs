//! End-to-end tests of the door into the queue (crates/cleanup) and of the
//! queue file versions: the real master, qmgr and agents; next hops are
//! sinks on loopback.

use std::time::{SystemTime, UNIX_EPOCH};

use sluice_e2e::sink::Sink;
use sluice_e2e::{wait_for, Instance, Raw};

/// A queue file written by the previous release (version 1), placed in
/// `queue/` before the new release starts, is delivered by it: an upgrade
/// loses no queued mail.
#[test]
fn a_version_1_queue_file_is_delivered_after_an_upgrade() {
    let sink = Sink::start("127.0.0.1");
    let mut sluice = Instance::new(&format!(
        "relay_domains: [\"example.org\"], routes: {{ \"example.org\": \"{}\" }},",
        sink.route()
    ));
    let fixture = include_str!("../../crates/spool/tests/fixtures/version-1.queue");
    assert!(fixture.starts_with("sluice-queue 1\n"));
    // Only the arrival is made recent (a 2024 arrival would be past the
    // queue lifetime and bounce); every other byte is the old release's.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let file = fixture.replace(
        "arrival: 1732831234.123456\n",
        &format!("arrival: {now}.123456\n"),
    );
    let spool = sluice_spool::Spool::new(&sluice.spool_dir);
    spool.create_layout(None).expect("spool layout");
    let id = "0H28JOGF4XS009IX0000";
    std::fs::write(sluice.spool_dir.join("queue").join(id), file).expect("place the v1 file");

    sluice.start();
    wait_for("the version-1 message at the sink", || sink.count() == 1);
    let got = &sink.messages()[0];
    assert_eq!(got.from, "alice@example.net");
    assert_eq!(got.to, ["bob@example.org", "carol@example.org"]);
    // The content as stored (the client ends it with CRLF before the dot).
    assert!(
        got.data
            .starts_with(b"Subject: hi\nFrom: alice@example.net\n\nHello.\n"),
        "{:?}",
        String::from_utf8_lossy(&got.data)
    );
    wait_for("the delivered file to be removed", || {
        sluice.files_in("queue").is_empty()
    });
    assert!(sluice.files_in("corrupt").is_empty());
    assert_eq!(
        sluice.log_count(&format!("{id}: removed")),
        1,
        "{}",
        sluice.log()
    );
}

/// An instance relaying relay.test to `sink`, with `extra` config keys.
fn relay(sink: &Sink, extra: &str) -> Instance {
    Instance::new(&format!(
        "relay_domains: [\"relay.test\"], routes: {{ \"relay.test\": \"{}\" }}, {extra}",
        sink.route()
    ))
}

/// Submits `stdin` to rcpt@relay.test with `sluice-sendmail`.
fn sendmail(sluice: &Instance, stdin: &[u8]) -> std::process::Output {
    let mut child = std::process::Command::new(sluice_e2e::program("sluice-sendmail"))
        .arg("-C")
        .arg(&sluice.config_path)
        .arg("rcpt@relay.test")
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sendmail");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), stdin).expect("stdin");
    child.wait_with_output().expect("sendmail")
}

/// Sends one message to rcpt@relay.test over SMTP (`data` ends with the
/// `.` line); returns the reply to the end of DATA.
fn relay_one(addr: std::net::SocketAddr, data: &[u8]) -> String {
    let mut smtp = Raw::connect(addr);
    assert!(smtp.command("EHLO client.test").starts_with("250"));
    assert!(smtp.command("MAIL FROM:<a@client.test>").starts_with("250"));
    assert!(smtp.command("RCPT TO:<rcpt@relay.test>").starts_with("250"));
    assert!(smtp.command("DATA").starts_with("354"));
    smtp.send(data);
    smtp.reply()
}

/// The next hop's view of a message: its content holds no NUL and no CR
/// or LF outside a CRLF pair.
fn is_canonical(data: &[u8]) -> bool {
    !data.contains(&0)
        && data.iter().enumerate().all(|(i, &b)| match b {
            b'\r' => data.get(i + 1) == Some(&b'\n'),
            b'\n' => i > 0 && data[i - 1] == b'\r',
            _ => true,
        })
}

/// Issue 9 defect 11: a bare CR (`hello\r.\r\n`, which ends DATA for some
/// receivers) and a NUL line (`\r\n\x00.\r\n`) from sendmail and from an
/// SMTP client are made canonical on the way in: the next hop sees CRLF
/// lines only, no NUL, and the whole message (the `.` lines dot-stuffed
/// by the client engine, so nothing is cut short or smuggled).
#[test]
fn bare_cr_and_nul_never_leave_as_they_came() {
    let sink = Sink::start("127.0.0.1");
    let mut sluice = relay(&sink, "");
    let addr = sluice.start();
    let out = sendmail(
        &sluice,
        b"Subject: via-sendmail\n\nhello\r.\r\n\x00.\nafter\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let reply = relay_one(
        addr,
        b"Subject: via-smtp\r\n\r\nline\r\n\x00.\r\nafter\r\n.\r\n",
    );
    assert!(reply.starts_with("250"), "{reply}");

    wait_for("both messages at the sink", || sink.count() == 2);
    for m in sink.messages() {
        let text = String::from_utf8_lossy(&m.data).into_owned();
        assert!(is_canonical(&m.data), "{text:?}");
        assert!(text.ends_with("\r\n.\r\nafter\r\n"), "{text:?}");
    }
}

/// Issue 9 defect 13: a message that already has `hopcount_limit` (50 by
/// default) `Received:` fields is a relay loop: refused at the end of DATA
/// with `554 5.4.6`; one hop fewer is accepted and relayed.
#[test]
fn a_relay_loop_ends_at_the_hop_count_limit() {
    let sink = Sink::start("127.0.0.1");
    let mut sluice = relay(&sink, "");
    let addr = sluice.start();
    let send = |hops: usize, subject: &str| {
        let mut message = String::new();
        for i in 0..hops {
            message.push_str(&format!("Received: from hop{i} by hop{}\r\n", i + 1));
        }
        message.push_str(&format!("Subject: {subject}\r\n\r\nbody\r\n.\r\n"));
        relay_one(addr, message.as_bytes())
    };
    let refused = send(50, "looping");
    assert!(refused.starts_with("554 5.4.6 "), "{refused}");
    let accepted = send(49, "not-yet");
    assert!(accepted.starts_with("250"), "{accepted}");
    wait_for("the accepted message at the sink", || sink.count() == 1);
    let text = String::from_utf8_lossy(&sink.messages()[0].data).into_owned();
    assert!(text.contains("Subject: not-yet"), "{text}");
    assert_eq!(text.matches("Received: ").count(), 50, "ours added");
    assert_eq!(
        sluice.log_count("refused by cleanup: too many hops (50 Received: header fields)"),
        1
    );
}

/// Issue 9 defect 11, the option: with `nul_bytes: "reject"` a message
/// with a NUL byte is refused, `550 5.6.0` at the end of DATA and exit 65
/// from sendmail, and nothing reaches the next hop.
#[test]
fn nul_bytes_can_be_refused_instead() {
    let sink = Sink::start("127.0.0.1");
    let mut sluice = relay(&sink, "nul_bytes: \"reject\",");
    let addr = sluice.start();
    let reply = relay_one(addr, b"Subject: nul\r\n\r\nline\r\n\x00.\r\n.\r\n");
    assert!(reply.starts_with("550 5.6.0 "), "{reply}");
    let out = sendmail(&sluice, b"Subject: s\n\n\x00x\n");
    assert_eq!(
        out.status.code(),
        Some(65),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(sluice.files_in("maildrop").is_empty());
    // The refusals are final: a clean message still goes, alone.
    let reply = relay_one(addr, b"Subject: clean\r\n\r\nline\r\n.\r\n");
    assert!(reply.starts_with("250"), "{reply}");
    wait_for("the clean message at the sink", || sink.count() == 1);
    assert!(String::from_utf8_lossy(&sink.messages()[0].data).contains("Subject: clean"));
}

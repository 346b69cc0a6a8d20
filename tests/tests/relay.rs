//! End-to-end tests of store and forward (issue #3): the real master, smtpd,
//! qmgr and smtp agents; mail sent with Python's smtplib; next hops are
//! sinks on loopback that the tests control.

use std::collections::HashMap;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use sluice_e2e::sink::Sink;
use sluice_e2e::{message, send_with_python, wait_for, wait_up_to, Instance, Mail};

/// A relay for `relay.test` (to `sink`) whose bounces for `client.test`
/// go to `bounces`, with short retry times.
fn relay(sink: &Sink, bounces_route: &str, queue: &str) -> Instance {
    Instance::new(&format!(
        "local_domains: [\"local.test\"], relay_domains: [\"relay.test\"],\n    \
         routes: {{ \"relay.test\": \"{}\", \"client.test\": \"{bounces_route}\" }},\n    \
         queue: ( retry_min: \"1s\", retry_max: \"2s\", smtp_agents: 2, {queue} ),",
        sink.route()
    ))
}

fn mails(n: usize, tag: &str) -> Vec<Mail> {
    (0..n)
        .map(|i| Mail {
            from: format!("sender{i}@client.test"),
            to: vec![format!("rcpt{i}@relay.test")],
            data: message(&format!("{tag}-{i}"), &["hello", ".a dot line", "bye"]),
        })
        .collect()
}

/// Message-ID of a test message (its subject) -> how many arrived.
fn arrivals(sink: &Sink) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for m in sink.messages() {
        let text = String::from_utf8_lossy(&m.data);
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .unwrap_or("?")
            .to_owned();
        *seen.entry(id).or_insert(0) += 1;
    }
    seen
}

#[test]
fn a_thousand_messages_reach_the_sink_exactly_once_byte_for_byte() {
    let sink = Sink::start("127.0.0.1");
    let bounces = Sink::start("127.0.0.1");
    let mut sluice = relay(&sink, &bounces.route(), "");
    let addr = sluice.start();
    let sent = mails(1000, "bulk");
    let started = std::time::Instant::now();
    let outcomes = send_with_python(addr, 20, &sent);
    assert!(outcomes.iter().all(|o| o.ok), "all accepted");
    wait_up_to(
        Duration::from_secs(180),
        "1000 messages at the sink",
        || sink.count() >= 1000,
    );
    eprintln!(
        "drained 1000 messages in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let seen = arrivals(&sink);
    assert_eq!(seen.len(), 1000);
    assert!(seen.values().all(|n| *n == 1), "no duplicates");
    let by_subject: HashMap<String, &Mail> = sent
        .iter()
        .map(|m| {
            let t = String::from_utf8_lossy(&m.data).into_owned();
            let s = t
                .lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .unwrap_or("")
                .to_owned();
            (s, m)
        })
        .collect();
    for got in sink.messages() {
        let text = String::from_utf8_lossy(&got.data).into_owned();
        assert!(text.starts_with("Received: from client.test"), "{text}");
        let subject = text
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .expect("subject");
        let original = by_subject[subject];
        assert!(
            got.data.ends_with(&original.data),
            "exact bytes after the Received header"
        );
        assert_eq!(got.from, original.from);
        assert_eq!(got.to, original.to);
    }
    wait_for("the queue to empty", || sluice.files_in("queue").is_empty());
    assert_eq!(sluice.log_count("status=sent"), 1000);
    assert_eq!(bounces.count(), 0);
}

#[test]
fn deferred_mail_is_retried_and_delivered_once() {
    let sink = Sink::start("127.0.0.1");
    sink.on_rcpt(|_| "451 4.3.0 try again later".to_owned());
    let bounces = Sink::start("127.0.0.1");
    let mut sluice = relay(&sink, &bounces.route(), "");
    let addr = sluice.start();
    let outcomes = send_with_python(addr, 3, &mails(3, "retry"));
    assert!(outcomes.iter().all(|o| o.ok));
    wait_for("three deferrals", || {
        sluice.log_count("status=deferred") >= 3
    });
    assert_eq!(sluice.files_in("queue").len(), 3);
    let (code, listing, stderr) = sluice.queue_tool(&["list"], None);
    assert_eq!(code, 0, "{stderr}");
    assert!(listing.contains("try again later"), "{listing}");
    assert!(listing.contains("rcpt0@relay.test"), "{listing}");
    // A second attempt happens on schedule (retry_min is 1 s).
    wait_for("a retry", || sluice.log_count("status=deferred") >= 6);
    sink.on_rcpt(|_| "250 2.1.5 Ok".to_owned());
    wait_for("delivery after the retry", || sink.count() >= 3);
    wait_for("the queue to empty", || sluice.files_in("queue").is_empty());
    assert!(arrivals(&sink).values().all(|n| *n == 1), "no duplicates");
    assert_eq!(bounces.count(), 0);
}

#[test]
fn a_5xx_recipient_bounces_while_the_other_is_delivered() {
    let sink = Sink::start("127.0.0.1");
    sink.on_rcpt(|rcpt| {
        if rcpt.starts_with("bad@") {
            "550 5.1.1 <bad@relay.test>: Recipient address rejected: User unknown".to_owned()
        } else {
            "250 2.1.5 Ok".to_owned()
        }
    });
    let bounces = Sink::start("127.0.0.1");
    let mut sluice = relay(&sink, &bounces.route(), "");
    let addr = sluice.start();
    let original = message("half-bounce", &["body"]);
    let outcome = send_with_python(
        addr,
        1,
        &[Mail {
            from: "alice@client.test".into(),
            to: vec!["good@relay.test".into(), "bad@relay.test".into()],
            data: original.clone(),
        }],
    )
    .remove(0);
    assert!(outcome.ok, "{outcome:?}");
    wait_for("the good copy", || sink.count() == 1);
    assert_eq!(sink.messages()[0].to, vec!["good@relay.test".to_owned()]);
    wait_for("the bounce", || bounces.count() == 1);
    let dsn = bounces.messages().remove(0);
    assert_eq!(dsn.from, "", "bounces come from <>");
    assert_eq!(dsn.to, vec!["alice@client.test".to_owned()]);
    let report = parse_dsn(&dsn.data);
    assert_eq!(report["content_type"], "multipart/report");
    assert_eq!(report["report_type"], "delivery-status");
    assert!(
        report["recipients"].contains("rfc822; bad@relay.test"),
        "{report:?}"
    );
    assert!(report["actions"].contains("failed"), "{report:?}");
    assert!(report["statuses"].contains("5.1.1"), "{report:?}");
    assert!(
        !report["recipients"].contains("good@relay.test"),
        "{report:?}"
    );
    assert!(
        report["returned"].contains("Subject: half-bounce"),
        "{report:?}"
    );
    wait_for("the queue to empty", || sluice.files_in("queue").is_empty());
}

/// Parses a DSN with Python's `email` package (an independent RFC 3464
/// reader) and returns the facts the tests check.
fn parse_dsn(bytes: &[u8]) -> HashMap<String, String> {
    let script = r#"
import email, email.policy, json, sys
msg = email.message_from_bytes(sys.stdin.buffer.read(), policy=email.policy.compat32)
out = {"content_type": msg.get_content_type(), "report_type": msg.get_param("report-type") or ""}
recipients, actions, statuses, returned = [], [], [], ""
for part in msg.walk():
    ct = part.get_content_type()
    if ct == "message/delivery-status":
        blocks = part.get_payload()
        for block in blocks[1:]:
            recipients.append(block.get("Final-Recipient", ""))
            actions.append(block.get("Action", ""))
            statuses.append(block.get("Status", ""))
    elif ct in ("message/rfc822", "text/rfc822-headers"):
        payload = part.get_payload()
        returned = payload[0].as_string() if isinstance(payload, list) else payload
out.update(recipients=" | ".join(recipients), actions=" | ".join(actions), statuses=" | ".join(statuses), returned=returned)
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(bytes)
        .expect("write");
    let out = child.wait_with_output().expect("python");
    assert!(out.status.success(), "python could not parse the DSN");
    serde_json::from_slice(&out.stdout).expect("json")
}

#[test]
fn expired_mail_bounces_and_an_undeliverable_bounce_does_not_loop() {
    let sink = Sink::start("127.0.0.1");
    sink.on_rcpt(|_| "451 4.4.1 not now".to_owned());
    // Bounces for client.test go to a port where nobody listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_route = format!("[127.0.0.1]:{}", closed.local_addr().expect("addr").port());
    drop(closed);
    // The postmaster is a user nobody has, so the postmaster's copy fails
    // too, whatever the machine's aliases and mailboxes are.
    let mut sluice = Instance::new(&format!(
        "local_domains: [\"local.test\"], relay_domains: [\"relay.test\"],\n    \
         routes: {{ \"relay.test\": \"{}\", \"client.test\": \"{dead_route}\" }},\n    \
         local: ( aliases: \"/nonexistent/aliases\", postmaster: \"no-such-user-sluice-e2e\" ),\n    \
         queue: ( retry_min: \"1s\", retry_max: \"2s\", smtp_agents: 2, lifetime: \"2s\", delay_warning: \"0\" ),",
        sink.route()
    ));
    let addr = sluice.start();
    let outcome = send_with_python(addr, 1, &mails(1, "expire")).remove(0);
    assert!(outcome.ok);
    wait_up_to(
        Duration::from_secs(60),
        "the notice about the notice to be dropped",
        || sluice.log_count("undeliverable postmaster notification discarded") == 1,
    );
    assert_eq!(
        sluice.log_count("sender non-delivery notification"),
        1,
        "{}",
        sluice.log()
    );
    assert_eq!(
        sluice.log_count("postmaster non-delivery notification"),
        1,
        "{}",
        sluice.log()
    );
    assert!(sluice.log().contains("status=expired"), "{}", sluice.log());
    wait_for("the queue to empty", || sluice.files_in("queue").is_empty());
    assert_eq!(sink.count(), 0);
}

#[test]
fn kill_9_of_qmgr_then_of_an_agent_under_load_loses_nothing() {
    let sink = Sink::start("127.0.0.1");
    let bounces = Sink::start("127.0.0.1");
    let mut sluice = relay(&sink, &bounces.route(), "");
    let addr = sluice.start();
    let sent = mails(1000, "kill");
    let sender = std::thread::spawn(move || send_with_python(addr, 20, &sent));
    wait_up_to(Duration::from_secs(120), "some deliveries", || {
        sink.count() >= 100
    });
    for pid in sluice.daemon_pids("sluice-qmgr") {
        kill(pid, Signal::SIGKILL).expect("kill qmgr");
    }
    wait_up_to(Duration::from_secs(120), "more deliveries", || {
        sink.count() >= 400
    });
    let agents = sluice.daemon_pids("sluice-smtp");
    kill(agents[0], Signal::SIGKILL).expect("kill agent");
    let outcomes = sender.join().expect("sender");
    let accepted: Vec<String> = outcomes
        .iter()
        .zip(mails(1000, "kill"))
        .filter(|(o, _)| o.ok)
        .map(|(_, m)| {
            let t = String::from_utf8_lossy(&m.data).into_owned();
            t.lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    wait_up_to(
        Duration::from_secs(180),
        "every accepted message at the sink",
        || {
            let seen = arrivals(&sink);
            accepted.iter().all(|s| seen.contains_key(s))
        },
    );
    let seen = arrivals(&sink);
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "accepted {} of 1000, delivered {} distinct, {} duplicate(s) after kill -9 of qmgr and an agent",
        accepted.len(),
        seen.len(),
        duplicates
    );
    assert!(
        accepted.len() >= 990,
        "smtpd kept accepting while qmgr restarted"
    );
}

#[test]
fn a_deleted_index_loses_nothing() {
    let sink = Sink::start("127.0.0.1");
    sink.on_rcpt(|_| "451 4.3.0 not yet".to_owned());
    let bounces = Sink::start("127.0.0.1");
    let mut sluice = relay(&sink, &bounces.route(), "");
    let addr = sluice.start();
    assert!(send_with_python(addr, 5, &mails(5, "index"))
        .iter()
        .all(|o| o.ok));
    wait_for("deferrals", || sluice.log_count("status=deferred") >= 5);
    sluice.terminate();
    assert!(sluice.wait_master().success());
    for name in ["index.sqlite", "index.sqlite-wal", "index.sqlite-shm"] {
        let _ = std::fs::remove_file(sluice.spool_dir.join(name));
    }
    sink.on_rcpt(|_| "250 2.1.5 Ok".to_owned());
    sluice.start();
    wait_for("all five delivered", || sink.count() >= 5);
    assert_eq!(arrivals(&sink).len(), 5);
    wait_for("the queue to empty", || sluice.files_in("queue").is_empty());
}

#[test]
fn etrn_flushes_a_relay_domain_now() {
    let sink = Sink::start("127.0.0.1");
    sink.on_rcpt(|_| "451 4.3.0 not yet".to_owned());
    let bounces = Sink::start("127.0.0.1");
    let mut sluice = Instance::new(&format!(
        "relay_domains: [\"relay.test\"], routes: {{ \"relay.test\": \"{}\", \"client.test\": \"{}\" }},\n    \
         queue: ( retry_min: \"1h\", retry_max: \"2h\" ),",
        sink.route(),
        bounces.route()
    ));
    let addr = sluice.start();
    assert!(send_with_python(addr, 1, &mails(1, "etrn"))[0].ok);
    wait_for("a deferral", || sluice.log_count("status=deferred") == 1);
    sink.on_rcpt(|_| "250 2.1.5 Ok".to_owned());
    let mut raw = sluice_e2e::Raw::connect(addr);
    raw.command("EHLO client.test");
    let reply = raw.command("ETRN relay.test");
    assert!(reply.starts_with("250"), "{reply}");
    wait_for("delivery after ETRN (retry_min is an hour)", || {
        sink.count() == 1
    });
}

/// Issue 9 defect 17: a 10,000-octet header line (and a longer body line)
/// is accepted, not bounced with 550 5.6.0, and relayed with every line on
/// the wire within RFC 5321's 1000 octets (CRLF included): broken with
/// CRLF SPACE, as Postfix does, so that unfolding gives the header back.
#[test]
fn a_10000_octet_header_line_is_accepted_and_relayed_in_lines_of_1000() {
    let sink = Sink::start("127.0.0.1");
    let bounces = Sink::start("127.0.0.1");
    let mut sluice = relay(&sink, &bounces.route(), "");
    let addr = sluice.start();
    let long_value = "w".repeat(10_000 - "X-Long: ".len());
    let body_line = "b".repeat(25_000);
    let data = format!(
        "From: sender@client.test\r\nTo: r@relay.test\r\nSubject: long\r\n\
         X-Long: {long_value}\r\n\r\n{body_line}\r\nend\r\n"
    );
    let sent = Mail {
        from: "sender@client.test".into(),
        to: vec!["r@relay.test".into()],
        data: data.into_bytes(),
    };
    let outcomes = send_with_python(addr, 1, &[sent]);
    assert!(outcomes.iter().all(|o| o.ok), "{outcomes:?}");
    wait_for("the message at the sink", || sink.count() == 1);
    let got = String::from_utf8(sink.messages()[0].data.clone()).expect("ascii");
    let lines: Vec<&str> = got.split("\r\n").collect();
    let longest = lines.iter().map(|l| l.len()).max().unwrap_or(0);
    assert!(longest <= 998, "a line of {longest} octets went out");
    let start = lines
        .iter()
        .position(|l| l.starts_with("X-Long: "))
        .expect("the header");
    let mut unfolded = lines[start].to_owned();
    for l in &lines[start + 1..] {
        match l.strip_prefix(' ') {
            Some(rest) => unfolded.push_str(rest),
            None => break,
        }
    }
    assert_eq!(unfolded, format!("X-Long: {long_value}"));
    let body_start = lines.iter().position(|l| l.starts_with('b')).expect("body");
    let body: String = lines[body_start..]
        .iter()
        .take_while(|l| l.starts_with('b') || l.starts_with(" b"))
        .map(|l| l.trim_start_matches(' '))
        .collect();
    assert_eq!(body, body_line);
    wait_for("the delivery to be logged", || {
        sluice.log_count("status=sent") == 1
    });
    assert_eq!(bounces.count(), 0);
}

//! End-to-end tests of delivery status notifications (issue 21): the real
//! programs, recording next hops on loopback (one offering DSN, one not, an
//! LMTP server), a virtual mailbox for final local delivery, and a
//! recording server for the sender's domain that receives the notices.
//! Report bodies are parsed with Python's `email` package.
//!
//! Without root the tests say so and check nothing (local delivery needs
//! the agent's user switch).

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use sluice_e2e::sink::{Received, Sink};
use sluice_e2e::{is_root, wait_for, Instance, Raw};

/// Sends one message with exactly these MAIL and RCPT parameters.
fn send(addr: SocketAddr, mail: &str, rcpts: &[&str], data: &[u8]) {
    let mut c = Raw::connect(addr);
    let ehlo = c.command("EHLO client.test");
    assert!(ehlo.starts_with("250"), "{ehlo}");
    let reply = c.command(&format!("MAIL FROM:{mail}"));
    assert!(reply.starts_with("250"), "{mail}: {reply}");
    for rcpt in rcpts {
        let reply = c.command(&format!("RCPT TO:{rcpt}"));
        assert!(reply.starts_with("250"), "{rcpt}: {reply}");
    }
    let reply = c.command("DATA");
    assert!(reply.starts_with("354"), "{reply}");
    c.send(data);
    let reply = c.command(".");
    assert!(reply.starts_with("250"), "{reply}");
    c.command("QUIT");
}

/// A report as Python's `email` package reads it: the top type, each
/// part's type, the per-message fields and one map per recipient.
#[derive(Debug, serde::Deserialize)]
struct Parsed {
    content_type: String,
    report_type: String,
    parts: Vec<String>,
    per_message: std::collections::BTreeMap<String, String>,
    recipients: Vec<std::collections::BTreeMap<String, String>>,
}

const PARSE: &str = r#"
import email, email.policy, json, sys
msg = email.message_from_bytes(sys.stdin.buffer.read(), policy=email.policy.compat32)
parts = msg.get_payload()
out = {"content_type": msg.get_content_type(), "report_type": msg.get_param("report-type") or "",
       "parts": [p.get_content_type() for p in parts], "per_message": {}, "recipients": []}
for p in parts:
    if p.get_content_type() == "message/delivery-status":
        blocks = p.get_payload()
        out["per_message"] = {k: v for k, v in blocks[0].items()}
        out["recipients"] = [{k: v for k, v in b.items()} for b in blocks[1:]]
print(json.dumps(out))
"#;

fn parse(report: &[u8]) -> Parsed {
    let mut child = Command::new("python3")
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(report)
        .expect("write");
    let out = child.wait_with_output().expect("python3 runs");
    assert!(
        out.status.success(),
        "python3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json from python")
}

fn params_of<'a>(m: &'a Received, rcpt: &str) -> &'a str {
    let i = m.to.iter().position(|t| t == rcpt).expect("recipient");
    &m.rcpt_params[i]
}

#[test]
fn success_reports_follow_the_next_hop_and_failures_follow_notify() {
    if !is_root() {
        eprintln!("not root: no local delivery; nothing checked");
        return;
    }
    let with_dsn = Sink::start("127.0.0.1");
    with_dsn.offer_dsn(true);
    let without_dsn = Sink::start("127.0.0.1");
    without_dsn.on_rcpt(|r| {
        if r.starts_with("fail") {
            "550 5.1.1 no such user".to_owned()
        } else {
            "250 2.1.5 Ok".to_owned()
        }
    });
    let lmtp = Sink::start("127.0.0.1");
    let sender_domain = Sink::start("127.0.0.1");
    let base = tempfile::tempdir().expect("tempdir");
    let boxes = base.path().join("boxes");
    std::fs::create_dir(&boxes).expect("mkdir");
    let owner = nix::unistd::User::from_name("sluice")
        .expect("getpwnam")
        .expect("the sluice user");
    std::os::unix::fs::chown(&boxes, Some(owner.uid.as_raw()), None).expect("chown");
    std::fs::set_permissions(
        base.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let map = base.path().join("vmap");
    std::fs::write(&map, format!("box@local.test {}/box/\n", boxes.display())).expect("map");
    let mut sluice = Instance::new(&format!(
        "local_domains: [\"local.test\"], relay_domains: [\"dsn.test\", \"plain.test\", \"lmtp.test\"],\n    \
         routes: {{ \"dsn.test\": \"{}\", \"plain.test\": \"{}\", \"lmtp.test\": \"lmtp:[127.0.0.1]:{}\", \"sender.test\": \"{}\" }},\n    \
         queue: ( retry_min: \"1s\", retry_max: \"2s\" ),\n    \
         local: ( aliases: \"/nonexistent/aliases\", virtual_mailboxes: {map:?}, virtual_owner: \"sluice\" ),",
        with_dsn.route(),
        without_dsn.route(),
        lmtp.addr().port(),
        sender_domain.route(),
    ));
    let addr = sluice.start();
    let data =
        b"From: s1@sender.test\r\nTo: many@example.org\r\nSubject: dsn-matrix\r\n\r\nbody line\r\n";
    send(
        addr,
        "<s1@sender.test> RET=HDRS ENVID=env-one",
        &[
            "<a@dsn.test> NOTIFY=SUCCESS ORCPT=rfc822;orig-a@example.org",
            "<b@plain.test> NOTIFY=SUCCESS ORCPT=rfc822;orig-b@example.org",
            "<c@lmtp.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;orig-c@example.org",
            "<box@local.test> NOTIFY=SUCCESS ORCPT=rfc822;orig-box@example.org",
            "<n@plain.test> NOTIFY=NEVER",
            "<fail-never@plain.test> NOTIFY=NEVER",
            "<fail-f@plain.test> NOTIFY=FAILURE ORCPT=rfc822;orig-f@example.org",
        ],
        data,
    );
    // Notices are queued before the recipients they report are done, so
    // once the queue is empty every notice has reached the sender's domain.
    wait_for("every delivery and notice", || {
        with_dsn.count() == 1
            && lmtp.count() == 1
            && sender_domain.count() >= 1
            && sluice.files_in("queue").is_empty()
    });

    // The next hop with DSN got NOTIFY, ORCPT, RET and ENVID: the duty moved
    // on with the message.
    let relayed = &with_dsn.messages()[0];
    let p = params_of(relayed, "a@dsn.test");
    assert!(p.contains("NOTIFY=SUCCESS"), "{p}");
    assert!(p.contains("ORCPT=rfc822;orig-a@example.org"), "{p}");
    assert!(
        relayed.mail_params.contains("RET=HDRS"),
        "{}",
        relayed.mail_params
    );
    assert!(
        relayed.mail_params.contains("ENVID=env-one"),
        "{}",
        relayed.mail_params
    );

    // What the sender's domain received: one notice per event, from <>.
    let notices = sender_domain.messages();
    let mut seen = Vec::new();
    for n in &notices {
        assert_eq!(n.from, "");
        assert_eq!(n.to, ["s1@sender.test"]);
        let parsed = parse(&n.data);
        assert_eq!(parsed.content_type, "multipart/report");
        assert_eq!(parsed.report_type, "delivery-status");
        assert_eq!(parsed.parts.len(), 3, "{parsed:?}");
        assert_eq!(parsed.parts[1], "message/delivery-status");
        // RET=HDRS: only the header section comes back, in each notice.
        assert_eq!(parsed.parts[2], "text/rfc822-headers", "{parsed:?}");
        assert_eq!(
            parsed
                .per_message
                .get("Original-Envelope-Id")
                .map(String::as_str),
            Some("env-one"),
            "{parsed:?}"
        );
        for r in &parsed.recipients {
            let field = |name: &str| r.get(name).cloned().unwrap_or_default();
            seen.push((
                field("Final-Recipient"),
                field("Action"),
                field("Original-Recipient"),
            ));
        }
    }
    seen.sort();
    let expected = [
        (
            "rfc822; b@plain.test",
            "relayed",
            "rfc822; orig-b@example.org",
        ),
        (
            "rfc822; box@local.test",
            "delivered",
            "rfc822; orig-box@example.org",
        ),
        (
            "rfc822; c@lmtp.test",
            "delivered",
            "rfc822; orig-c@example.org",
        ),
        (
            "rfc822; fail-f@plain.test",
            "failed",
            "rfc822; orig-f@example.org",
        ),
    ]
    .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()));
    assert_eq!(seen, expected, "{}", sluice.log());
    // Success and failure are separate notices; NOTIFY=NEVER and the next
    // hop with DSN got none.
    assert_eq!(notices.len(), 4, "{}", sluice.log());
    let mailbox: Vec<_> = std::fs::read_dir(boxes.join("box").join("new"))
        .expect("the virtual mailbox")
        .collect();
    assert_eq!(mailbox.len(), 1);
}

/// A Sluice relaying plain.test to a server that refuses every recipient,
/// and sender.test to `sender_route`, with one message from
/// `jörg@sender.test` (SMTPUTF8) to `x@plain.test` (with `rcpt_params`)
/// sent through it: its bounce goes to the UTF-8 sender.
fn bounce_to_utf8_sender(sender_route: &str, rcpt_params: &str) -> (Sink, Instance) {
    let refusing = Sink::start("127.0.0.1");
    refusing.on_rcpt(|_| "550 5.1.1 no such user".to_owned());
    let mut sluice = Instance::new(&format!(
        "relay_domains: [\"plain.test\"],\n    \
         routes: {{ \"plain.test\": \"{}\", \"sender.test\": \"{sender_route}\" }},\n    \
         queue: ( retry_min: \"1s\", retry_max: \"2s\" ),",
        refusing.route(),
    ));
    let addr = sluice.start();
    let data = b"From: j\xc3\xb6rg@sender.test\r\nTo: x@plain.test\r\nSubject: utf8 bounce\r\n\r\nhallo\r\n";
    send(
        addr,
        "<j\u{f6}rg@sender.test> SMTPUTF8",
        &[format!("<x@plain.test> {rcpt_params}").trim_end()],
        data,
    );
    (refusing, sluice)
}

#[test]
fn a_bounce_to_a_utf8_sender_carries_smtputf8_and_a_second_sluice_takes_it() {
    // The sender's gateway: a second Sluice that relays sender.test on.
    let sender_domain = Sink::start("127.0.0.1");
    let mut gateway = Instance::new(&format!(
        "relay_domains: [\"sender.test\"], routes: {{ \"sender.test\": \"{}\" }},",
        sender_domain.route()
    ));
    let gateway_addr = gateway.start();
    let (_refusing, sluice) = bounce_to_utf8_sender(
        &format!("[127.0.0.1]:{}", gateway_addr.port()),
        "ORCPT=rfc822;x@plain.test",
    );
    wait_for("the bounce at the sender's domain", || {
        sender_domain.count() == 1
    });
    let bounce = &sender_domain.messages()[0];
    assert_eq!(bounce.from, "");
    assert_eq!(bounce.to, ["j\u{f6}rg@sender.test"]);
    // It crossed the second Sluice, which takes UTF-8 addresses only under
    // SMTPUTF8, and passed SMTPUTF8 on.
    assert!(
        bounce.mail_params.contains("SMTPUTF8"),
        "{}",
        bounce.mail_params
    );
    // The sink records the message before it replies; the gateway logs
    // status=sent after the reply.
    wait_for("the gateway's delivery line", || {
        gateway.log_count("status=sent") == 1
    });
    let parsed = parse(&bounce.data);
    assert_eq!(parsed.content_type, "multipart/report");
    assert_eq!(parsed.parts[1], "message/global-delivery-status");
    let text = String::from_utf8_lossy(&bounce.data);
    assert!(text.contains("To: <j\u{f6}rg@sender.test>"), "{text}");
    assert!(
        text.contains("Final-Recipient: rfc822; x@plain.test"),
        "{text}"
    );
    assert!(
        text.contains("Original-Recipient: rfc822; x@plain.test"),
        "{text}"
    );
    assert!(text.contains("Action: failed"), "{text}");
    wait_for("the first queue to empty", || {
        sluice.files_in("queue").is_empty()
    });
}

#[test]
fn a_bounce_to_a_utf8_sender_behind_a_hop_without_smtputf8_is_logged_and_never_loops() {
    // RFC 6531 §3.2: the notice cannot go to a server without SMTPUTF8.
    let sender_domain = Sink::start("127.0.0.1");
    sender_domain.offer_smtputf8(false);
    let (_refusing, sluice) = bounce_to_utf8_sender(&sender_domain.route(), "");
    // The notice fails for good (5.6.7; the log shows `?` for what is not
    // ASCII) and, being from <>, goes to the
    // postmaster: once, and never back to the sender.
    wait_for("the postmaster's copy", || {
        sluice.log_count("postmaster non-delivery notification") == 1
    });
    let log = sluice.log();
    assert!(
        log.lines().any(|l| l.contains("to=<j?rg@sender.test>")
            && l.contains("dsn=5.6.7")
            && l.contains("status=bounced")),
        "{log}"
    );
    assert_eq!(
        sluice.log_count("sender non-delivery notification"),
        1,
        "{log}"
    );
    assert_eq!(sender_domain.count(), 0);
}

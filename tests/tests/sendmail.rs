//! End-to-end tests of local submission (issue #6 item 2): the real
//! `sluice-sendmail` writes into `maildrop/`, with the daemons stopped or
//! running, and the real queue manager picks the files up, checks them
//! again and relays them to a loopback sink. Also: maildrop files written
//! by hand by an unprivileged user (uid 65534) with a forged uid or bad
//! content.

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::SystemTime;

use sluice_e2e::sink::{Received, Sink};
use sluice_e2e::{program, wait_for, Instance};

/// The unprivileged user of these tests.
const NOBODY: u32 = 65534;

/// A relay for `relay.test` to `sink`.
fn relay(sink: &Sink) -> Instance {
    Instance::new(&format!(
        "relay_domains: [\"relay.test\"], routes: {{ \"relay.test\": \"{}\" }},\n    \
         queue: ( retry_min: \"1s\", retry_max: \"2s\" ),",
        sink.route()
    ))
}

/// As [`relay`], with `local.restrict_sender` on.
fn restricted_relay(sink: &Sink) -> Instance {
    Instance::new(&format!(
        "relay_domains: [\"relay.test\"], routes: {{ \"relay.test\": \"{}\" }},\n    \
         local: ( restrict_sender: true ),",
        sink.route()
    ))
}

/// Runs `sluice-sendmail -C CONFIG ARGS` with `stdin`, as `uid` if given;
/// returns (exit code, stdout, stderr).
fn sendmail(
    sluice: &Instance,
    args: &[&str],
    stdin: &str,
    uid: Option<u32>,
) -> (i32, String, String) {
    let mut command = Command::new(program("sluice-sendmail"));
    command
        .arg("-C")
        .arg(&sluice.config_path)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(uid) = uid {
        command.uid(uid).gid(uid);
    }
    let mut child = command.spawn().expect("spawn sluice-sendmail");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("sluice-sendmail");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts and stops the instance once, so the spool exists (as after
/// installing and starting Sluice once), and leaves it stopped.
fn create_spool(sluice: &mut Instance) {
    sluice.start();
    sluice.terminate();
    sluice.wait_master();
}

fn text(m: &Received) -> String {
    String::from_utf8_lossy(&m.data).into_owned()
}

fn with_subject<'a>(messages: &'a [Received], subject: &str) -> &'a Received {
    messages
        .iter()
        .find(|m| text(m).contains(&format!("\r\nSubject: {subject}\r\n")))
        .unwrap_or_else(|| panic!("no message with subject {subject}"))
}

#[test]
fn mail_submitted_while_stopped_waits_in_maildrop_and_goes_out_at_start() {
    let sink = Sink::start("127.0.0.1");
    let mut sluice = relay(&sink);
    // Before Sluice ever ran there is no spool: a temporary failure that
    // says what to do.
    let (code, _, stderr) = sendmail(&sluice, &["a@relay.test"], "x\n", None);
    assert_eq!(code, 75, "{stderr}");
    assert!(stderr.contains("sluice start"), "{stderr}");
    create_spool(&mut sluice);

    let (code, _, stderr) = sendmail(
        &sluice,
        &["-t", "-i"],
        "To: \"Doe, Jane\" <jane@relay.test>, team: bob@relay.test;\n\
         Cc: carol@relay.test (Carol)\nBcc: hidden@relay.test\nSubject: minus-t\n\nbody\n.\nstill body\n",
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = sendmail(
        &sluice,
        &["-f", "x@client.test", "--", "rcpt@relay.test"],
        "Subject: minus-f\n\nline\n.\nnot sent\n",
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    let waiting = sluice.files_in("maildrop");
    assert_eq!(waiting.len(), 2, "{waiting:?}");

    sluice.start();
    wait_for("both messages at the sink", || sink.count() >= 2);
    let messages = sink.messages();

    let t = with_subject(&messages, "minus-t");
    let mut to = t.to.clone();
    to.sort();
    assert_eq!(
        to,
        [
            "bob@relay.test",
            "carol@relay.test",
            "hidden@relay.test",
            "jane@relay.test"
        ]
    );
    assert_eq!(t.from, "root@mx.sluice.test");
    let body = text(t);
    assert!(!body.contains("hidden"), "Bcc removed: {body}");
    assert!(body.contains("\r\nFrom: "), "{body}");
    assert!(body.contains("root@mx.sluice.test"), "{body}");
    assert!(body.contains("\r\nDate: "), "{body}");
    assert!(body.contains("@mx.sluice.test>\r\n"), "Message-ID: {body}");
    assert!(
        body.ends_with("\r\n\r\nbody\r\n.\r\nstill body\r\n"),
        "{body}"
    );
    assert!(body.starts_with("Received: by mx.sluice.test (Sluice, from userid 0)"));

    let f = with_subject(&messages, "minus-f");
    assert_eq!(f.from, "x@client.test");
    assert_eq!(f.to, ["rcpt@relay.test"]);
    let body = text(f);
    assert!(
        body.ends_with("\r\n\r\nline\r\n"),
        "a . line ends it: {body}"
    );
    assert!(body.contains("\r\nFrom: "), "{body}");
    // Root is trusted: no warning.
    assert!(!body.contains("X-Authentication-Warning"), "{body}");

    assert_eq!(sluice.log_count(": uid=0 from=<root@mx.sluice.test>"), 1);
    assert_eq!(sluice.log_count(": uid=0 from=<x@client.test>"), 1);
    // The pickup line is the pickup program's own, as Postfix's is.
    let log = sluice.log();
    let pickup_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(": uid=0 from=<"))
        .collect();
    assert_eq!(pickup_lines.len(), 2, "{log}");
    for line in pickup_lines {
        assert!(line.contains(" sluice/pickup["), "{line}");
    }
    wait_for("maildrop and queue to empty", || {
        sluice.files_in("maildrop").is_empty() && sluice.files_in("queue").is_empty()
    });
}

#[test]
fn an_unprivileged_f_is_delivered_with_a_warning_naming_the_user() {
    let sink = Sink::start("127.0.0.1");
    let mut sluice = relay(&sink);
    sluice.start();
    let (code, _, stderr) = sendmail(
        &sluice,
        &["-f", "boss@client.test", "rcpt@relay.test"],
        "Subject: forged\n\nhi\n",
        Some(NOBODY),
    );
    assert_eq!(code, 0, "{stderr}");
    wait_for("the message at the sink", || sink.count() >= 1);
    let m = &sink.messages()[0];
    assert_eq!(m.from, "boss@client.test");
    let body = text(m);
    assert_eq!(
        body.matches(
            "X-Authentication-Warning: mx.sluice.test: nobody set sender to boss@client.test using -f\r\n"
        )
        .count(),
        1,
        "{body}"
    );
    assert!(body.contains("from userid 65534"), "{body}");
    assert_eq!(sluice.log_count(": uid=65534 from=<boss@client.test>"), 1);
}

#[test]
fn restrict_sender_refuses_an_unprivileged_f() {
    let sink = Sink::start("127.0.0.1");
    let mut sluice = restricted_relay(&sink);
    create_spool(&mut sluice);
    let (code, _, stderr) = sendmail(
        &sluice,
        &["-f", "boss@client.test", "rcpt@relay.test"],
        "x\n",
        Some(NOBODY),
    );
    assert_eq!(code, 77, "{stderr}");
    assert!(stderr.contains("restrict_sender"), "{stderr}");
    assert!(sluice.files_in("maildrop").is_empty());
    // A configuration of the user's own that lifts the restriction gets the
    // file into maildrop/, but the instance's pickup checks it again with
    // the instance's configuration: it never goes out as forged.
    let own = sluice.path().join("own.ron");
    let text = std::fs::read_to_string(&sluice.config_path).expect("config");
    std::fs::write(
        &own,
        text.replace("restrict_sender: true", "restrict_sender: false"),
    )
    .expect("write");
    std::os::unix::fs::chown(&own, Some(NOBODY), Some(NOBODY)).expect("chown");
    let mut child = Command::new(program("sluice-sendmail"))
        .arg("-C")
        .arg(&own)
        .args(["-f", "boss@client.test", "rcpt@relay.test"])
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::piped())
        .spawn()
        .expect("run");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"Subject: sneaky\n\nx\n")
        .expect("stdin");
    assert_eq!(child.wait().expect("wait").code(), Some(0));
    assert_eq!(sluice.files_in("maildrop").len(), 1);
    sluice.start();
    wait_for("the pickup to refuse it", || {
        sluice.files_in("maildrop").is_empty()
    });
    wait_for("the refused file in corrupt/", || {
        !sluice.files_in("corrupt").is_empty()
    });
    assert_eq!(sink.count(), 0, "never delivered with the forged sender");
}

/// A maildrop file as sluice-sendmail would write it, but claiming `uid`.
fn forged_file(uid: u32, extra_field: &str, subject: &str) -> (String, Vec<u8>) {
    maildrop_file(
        uid,
        &format!("{extra_field}sender: <root@mx.sluice.test>\nrcpt: <rcpt@relay.test>\n"),
        &format!("Subject: {subject}\r\nFrom: root@mx.sluice.test\r\n\r\nforged\r\n"),
    )
}

/// A maildrop file claiming `uid` (user root), with `lines` (in the
/// file's escaped form) right after its `source` line.
fn maildrop_file(uid: u32, lines: &str, content: &str) -> (String, Vec<u8>) {
    let id = sluice_spool::QueueId::generate();
    let micros = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("time")
        .as_micros();
    let text = format!(
        "sluice-queue 1\nid: {id}\narrival: {}.{:06}\nsource: local\n{lines}local-uid: {uid}\nlocal-user: root\n\
         body: 7BIT\nsmtputf8: no\ncontent-length: {}\n\n{content}\nend-of-queue-file\n",
        micros / 1_000_000,
        micros % 1_000_000,
        content.len()
    );
    (id.to_string(), text.into_bytes())
}

/// Writes `bytes` into `maildrop/NAME` as uid 65534, by hand.
fn drop_by_hand(sluice: &Instance, name: &str, bytes: &[u8]) {
    let path = sluice.spool_dir.join("maildrop").join(name);
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("cat > \"$1\"")
        .arg("sh")
        .arg(&path)
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::piped())
        .spawn()
        .expect("sh");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(bytes)
        .expect("write");
    assert!(child.wait().expect("sh").success());
}

#[test]
fn hand_written_maildrop_files_are_never_delivered_as_forged() {
    let sink = Sink::start("127.0.0.1");
    let mut sluice = relay(&sink);
    create_spool(&mut sluice);
    // Claims root; the file belongs to nobody.
    let (forged, bytes) = forged_file(0, "", "claims-root");
    drop_by_hand(&sluice, &forged, &bytes);
    // A client field is not allowed in a local file.
    let (extra, bytes) = forged_file(0, "client-addr: 192.0.2.1\n", "extra-field");
    drop_by_hand(&sluice, &extra, &bytes);
    // Cut short.
    let (cut, bytes) = forged_file(NOBODY, "", "truncated");
    drop_by_hand(&sluice, &cut, &bytes[..bytes.len() - 25]);

    sluice.start();
    wait_for("the forged message at the sink", || sink.count() >= 1);
    wait_for("two files in corrupt/", || {
        sluice
            .files_in("corrupt")
            .iter()
            .filter(|n| !n.ends_with(".why"))
            .count()
            == 2
    });
    let messages = sink.messages();
    assert_eq!(messages.len(), 1);
    let body = text(&messages[0]);
    assert!(body.contains("Subject: claims-root"), "{body}");
    // Delivered as what it is: nobody's, with nobody's choice of sender named.
    assert!(body.contains("from userid 65534"), "{body}");
    assert!(
        body.contains(
            "X-Authentication-Warning: mx.sluice.test: nobody set sender to root@mx.sluice.test using -f"
        ),
        "{body}"
    );
    assert_eq!(
        sluice.log_count(&format!(
            "maildrop file {forged}: local-uid 0 does not match the file owner 65534: using 65534"
        )),
        1
    );
    assert_eq!(
        sluice.log_count(": uid=65534 from=<root@mx.sluice.test>"),
        1
    );
    assert_eq!(sluice.log_count(": uid=0 from="), 0);
    let mut corrupt: Vec<String> = sluice
        .files_in("corrupt")
        .into_iter()
        .filter(|n| !n.ends_with(".why"))
        .collect();
    corrupt.sort();
    let mut expected = vec![extra.clone(), cut.clone()];
    expected.sort();
    assert_eq!(corrupt, expected);
    assert!(
        sluice.log_count(&format!(
            "maildrop file {extra}: line 5: field client-addr is not allowed"
        )) == 1,
        "{}",
        sluice.log()
    );
    assert_eq!(sluice.log_count(&format!("maildrop file {cut}: ")), 1);
    assert!(sluice.files_in("maildrop").is_empty());
}

#[test]
fn bs_speaks_smtp_on_stdin_and_bp_lists_the_queue() {
    let sink = Sink::start("127.0.0.1");
    sink.on_rcpt(|rcpt| {
        if rcpt.contains("wait@") {
            "451 4.3.0 not now".to_owned()
        } else {
            "250 2.1.5 Ok".to_owned()
        }
    });
    let mut sluice = relay(&sink);
    sluice.start();
    let session = "EHLO localhost\r\nMAIL FROM:<root@mx.sluice.test>\r\nRCPT TO:<smtp@relay.test>\r\n\
                   DATA\r\nSubject: over-bs\r\n\r\nhello\r\n.\r\nMAIL FROM:<root@mx.sluice.test>\r\n\
                   RCPT TO:<wait@relay.test>\r\nDATA\r\nSubject: waits\r\n\r\nlater\r\n.\r\nQUIT\r\n";
    let (code, replies, stderr) = sendmail(&sluice, &["-bs"], session, None);
    assert_eq!(code, 0, "{stderr}");
    assert!(replies.starts_with("220 mx.sluice.test"), "{replies}");
    assert_eq!(replies.matches("queued as").count(), 2, "{replies}");
    assert!(replies.contains("221"), "{replies}");
    wait_for("the -bs message at the sink", || sink.count() >= 1);
    let m = &sink.messages()[0];
    assert_eq!(m.to, ["smtp@relay.test"]);
    assert!(text(m).contains("\r\nMessage-ID: "), "{}", text(m));
    wait_for("the other one deferred", || {
        sluice.log_count("status=deferred") >= 1
    });
    // The agent logs status=deferred before the queue manager records the
    // result: wait for the listing to show it.
    let mut listing = String::new();
    wait_for("the deferral in the -bp listing", || {
        let (code, out, stderr) = sendmail(&sluice, &["-bp"], "", None);
        assert_eq!(code, 0, "{stderr}");
        listing = out;
        listing.contains("not now")
    });
    assert!(listing.contains("wait@relay.test"), "{listing}");
    // -q asks the queue manager to try it again now.
    let before = sluice.log_count("status=deferred");
    let (code, _, stderr) = sendmail(&sluice, &["-q"], "", None);
    assert_eq!(code, 0, "{stderr}");
    wait_for("another attempt", || {
        sluice.log_count("status=deferred") > before
    });
}

/// Issue 9 defect 1: a maildrop file written by hand whose sender,
/// recipient, ORCPT or ENVID holds a line end (escaped in the file, so it
/// decodes) is refused at pickup: it goes to corrupt/ with a log line and
/// never reaches the next hop as an injected SMTP transaction, even with
/// `restrict_sender` on (root may choose any sender; nobody may name any
/// recipient). A clean file dropped after them goes out alone.
#[test]
fn maildrop_envelopes_with_line_ends_never_reach_the_wire() {
    let sink = Sink::start("127.0.0.1");
    let mut sluice = restricted_relay(&sink);
    create_spool(&mut sluice);
    let injected = "%0D%0ARCPT%20TO:%3Cevil@relay.test%3E";
    let own = "sender: <nobody@mx.sluice.test>\n";
    let bad = [
        // Root's (trusted) chosen sender.
        (
            format!("sender: <root@mx.sluice.test{injected}>\nrcpt: <rcpt@relay.test>\n"),
            "bad sender address",
            true,
        ),
        // nobody's own sender, a recipient of its choice.
        (
            format!("{own}rcpt: <rcpt@relay.test{injected}>\n"),
            "bad address of recipient 0",
            false,
        ),
        (
            format!("{own}rcpt: <rcpt@relay.test> orcpt=rfc822%0D%0ADATA;x\n"),
            "bad ORCPT of recipient 0",
            false,
        ),
        (
            format!("{own}envid: E%0D%0ARSET\nrcpt: <rcpt@relay.test>\n"),
            "bad ENVID",
            false,
        ),
    ];
    let mut names = Vec::new();
    for (i, (lines, _, as_root)) in bad.iter().enumerate() {
        let content = format!("Subject: injected-{i}\r\n\r\nx\r\n");
        let (name, bytes) = maildrop_file(0, lines, &content);
        if *as_root {
            let path = sluice.spool_dir.join("maildrop").join(&name);
            std::fs::write(path, &bytes).expect("write as root");
        } else {
            drop_by_hand(&sluice, &name, &bytes);
        }
        names.push(name);
    }
    sluice.start();
    wait_for("every bad file in corrupt/", || {
        sluice
            .files_in("corrupt")
            .iter()
            .filter(|n| !n.ends_with(".why"))
            .count()
            == bad.len()
    });
    // The line is written once the file has moved: wait for it.
    for (name, (_, why, _)) in names.iter().zip(&bad) {
        let line = format!("maildrop file {name}: {why}");
        wait_for(&line, || sluice.log_count(&line) == 1);
    }
    // A clean submission after them is delivered, alone.
    let (code, _, stderr) = sendmail(&sluice, &["rcpt@relay.test"], "Subject: clean\n\nx\n", None);
    assert_eq!(code, 0, "{stderr}");
    wait_for("the clean message at the sink", || sink.count() >= 1);
    let messages = sink.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].to, ["rcpt@relay.test"]);
    assert!(text(&messages[0]).contains("Subject: clean"));
    assert!(sluice.files_in("maildrop").is_empty());
}

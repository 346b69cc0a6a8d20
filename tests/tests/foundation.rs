//! End-to-end tests of the foundation (issue #2): the real `sluice-master`
//! and `sluice-smtpd` on loopback, a real SMTP client (Python's smtplib),
//! and the queue files they leave behind.

use std::collections::HashSet;

use nix::sys::signal::{kill, Signal};
use sluice_e2e::sink::Sink;
use sluice_e2e::{message, send_with_python, wait_for, Instance, Mail, Raw};

/// An instance whose relay domain's next hop defers everything, so that
/// accepted mail stays in `queue/` for the test to look at. The sink must
/// live as long as the instance.
fn relay_instance() -> (Instance, Sink) {
    let sink = Sink::start("127.0.0.1");
    sink.on_rcpt(|_| "451 4.3.0 not now".to_owned());
    let instance = Instance::new(&format!(
        "local_domains: [\"local.test\"], relay_domains: [\"relay.test\"], \
         routes: {{ \"relay.test\": \"{}\" }},",
        sink.route()
    ));
    (instance, sink)
}

#[test]
fn queue_file_holds_exactly_the_envelope_and_the_bytes_sent() {
    let (mut sluice, _sink) = relay_instance();
    let addr = sluice.start();
    // A line starting with a dot (stuffed on the wire by the client), 8-bit
    // text, and an empty line: all must arrive exactly.
    let mut data = message(
        "exact",
        &[
            ".leading dot",
            "..two dots",
            "",
            "caf\u{e9} cr\u{e8}me",
            "end",
        ],
    );
    data.extend_from_slice(b"last line\r\n");
    let mail = Mail {
        from: "alice@client.test".into(),
        to: vec!["bob@relay.test".into(), "postmaster@local.test".into()],
        data: data.clone(),
    };
    let outcome = send_with_python(addr, 1, std::slice::from_ref(&mail)).remove(0);
    assert!(outcome.ok, "{outcome:?}");
    assert!(
        outcome.reply.starts_with("2.0.0 Ok: queued as "),
        "{outcome:?}"
    );
    let id = outcome.queue_id().expect("queue id");
    assert_eq!(sluice.files_in("queue"), vec![id.clone()]);
    let file = sluice.queue_file(&id);
    assert_eq!(file.id.to_string(), id);
    assert_eq!(file.envelope.sender, "alice@client.test");
    let rcpts: Vec<&str> = file
        .envelope
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    assert_eq!(rcpts, ["bob@relay.test", "postmaster@local.test"]);
    // The content is the Received header, then exactly what was sent.
    let content = String::from_utf8_lossy(&file.content).into_owned();
    assert!(
        content.starts_with("Received: from client.test"),
        "{content}"
    );
    let header_end = file
        .content
        .windows(2)
        .enumerate()
        .find(|(i, w)| *w == b"\r\n" && !matches!(file.content.get(i + 2), Some(b' ' | b'\t')))
        .map(|(i, _)| i + 2)
        .expect("end of Received header");
    let received = String::from_utf8_lossy(&file.content[..header_end]).into_owned();
    assert!(received.contains(&format!("id {id}")), "{received}");
    assert_eq!(&file.content[header_end..], &data[..]);
    assert!(sluice.files_in("tmp").is_empty());
    // The operator log has the Postfix-shaped client line.
    wait_for("client= log line", || {
        sluice
            .log()
            .contains(&format!("{id}: client=unknown[127.0.0.1]"))
    });
}

#[test]
fn fifty_concurrent_sessions_all_get_their_mail_queued() {
    let (mut sluice, _sink) = relay_instance();
    let addr = sluice.start();
    let mails: Vec<Mail> = (0..100)
        .map(|i| Mail {
            from: format!("sender{i}@client.test"),
            to: vec![format!("rcpt{i}@relay.test")],
            data: message(&format!("concurrent-{i}"), &["hello"]),
        })
        .collect();
    let outcomes = send_with_python(addr, 50, &mails);
    assert_eq!(outcomes.len(), 100);
    let mut ids = HashSet::new();
    for (mail, outcome) in mails.iter().zip(&outcomes) {
        assert!(outcome.ok, "{outcome:?}");
        let id = outcome.queue_id().expect("queue id");
        let file = sluice.queue_file(&id);
        assert_eq!(file.envelope.sender, mail.from);
        assert!(file.content.ends_with(&mail.data));
        assert!(ids.insert(id), "queue ids must be unique");
    }
    assert_eq!(sluice.files_in("queue").len(), 100);
}

#[test]
fn relaying_is_refused_to_strangers() {
    let mut sluice = Instance::with_smtpd(
        "local_domains: [\"local.test\"], relay_domains: [\"relay.test\"],",
        // 127.0.0.1 is not trusted here, so the relay rules apply to us.
        "trusted_networks: [\"192.0.2.0/24\"],",
    );
    let addr = sluice.start();
    let mut raw = Raw::connect(addr);
    assert!(raw.command("EHLO client.test").starts_with("250"));
    assert!(raw.command("MAIL FROM:<a@client.test>").starts_with("250"));
    let refused = raw.command("RCPT TO:<victim@elsewhere.test>");
    assert!(refused.starts_with("554 5.7.1"), "{refused}");
    let refused = raw.command("RCPT TO:<victim%elsewhere.test@relay.test>");
    assert!(refused.starts_with("554 5.7.1"), "{refused}");
    assert!(raw.command("RCPT TO:<ok@relay.test>").starts_with("250"));
    assert!(raw.command("QUIT").starts_with("221"));
    wait_for("reject log line", || {
        sluice
            .log()
            .contains("NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 554 5.7.1")
    });
}

#[test]
fn kill_9_of_smtpd_right_after_250_loses_nothing() {
    let (mut sluice, _sink) = relay_instance();
    let addr = sluice.start();
    for round in 0..3 {
        let mut raw = Raw::connect(addr);
        raw.command("EHLO client.test");
        raw.command("MAIL FROM:<a@client.test>");
        raw.command("RCPT TO:<b@relay.test>");
        assert!(raw.command("DATA").starts_with("354"));
        raw.send(&message(&format!("kill-after-{round}"), &["body"]));
        let reply = raw.command(".");
        assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
        let id = reply.trim_end().rsplit(' ').next().expect("id").to_owned();
        // Kill every smtpd at once, before it can do anything else.
        for pid in sluice.smtpd_pids() {
            kill(pid, Signal::SIGKILL).expect("kill smtpd");
        }
        let file = sluice.queue_file(&id);
        assert!(file
            .content
            .ends_with(&message(&format!("kill-after-{round}"), &["body"])));
        wait_for("smtpd restarted", || sluice.smtpd_pids().len() == 2);
    }
    assert_eq!(sluice.files_in("queue").len(), 3);
}

#[test]
fn kill_9_in_the_middle_of_data_leaves_no_file() {
    let (mut sluice, _sink) = relay_instance();
    let addr = sluice.start();
    let mut raw = Raw::connect(addr);
    raw.command("EHLO client.test");
    raw.command("MAIL FROM:<a@client.test>");
    raw.command("RCPT TO:<b@relay.test>");
    assert!(raw.command("DATA").starts_with("354"));
    raw.send(b"Subject: half\r\n\r\nthe first half of a body\r\n");
    // Let smtpd read the half before it dies.
    std::thread::sleep(std::time::Duration::from_millis(100));
    for pid in sluice.smtpd_pids() {
        kill(pid, Signal::SIGKILL).expect("kill smtpd");
    }
    assert!(raw.is_closed());
    assert!(sluice.files_in("queue").is_empty());
    assert!(sluice.files_in("tmp").is_empty());
}

#[test]
fn master_restarts_a_killed_smtpd_and_serves_again() {
    let (mut sluice, _sink) = relay_instance();
    let addr = sluice.start();
    wait_for("two smtpd", || sluice.smtpd_pids().len() == 2);
    let before = sluice.smtpd_pids();
    kill(before[0], Signal::SIGKILL).expect("kill");
    wait_for("a new smtpd", || {
        let now = sluice.smtpd_pids();
        now.len() == 2 && !now.contains(&before[0])
    });
    assert!(
        sluice.log().contains("killed by signal 9"),
        "{}",
        sluice.log()
    );
    for pid in sluice.smtpd_pids() {
        kill(pid, Signal::SIGKILL).expect("kill");
    }
    wait_for("smtpds back", || sluice.smtpd_pids().len() == 2);
    let outcome = send_with_python(
        addr,
        1,
        &[Mail {
            from: "a@client.test".into(),
            to: vec!["b@relay.test".into()],
            data: message("after-restart", &["x"]),
        }],
    )
    .remove(0);
    assert!(outcome.ok, "{outcome:?}");
}

#[test]
fn sigterm_lets_a_transaction_finish_then_stops_everything() {
    let (mut sluice, _sink) = relay_instance();
    let addr = sluice.start();
    let mut busy = Raw::connect(addr);
    busy.command("EHLO client.test");
    assert!(busy.command("MAIL FROM:<a@client.test>").starts_with("250"));
    let mut idle = Raw::connect(addr);
    idle.command("EHLO idle.test");
    let smtpds = sluice.smtpd_pids();
    sluice.terminate();
    // The idle session is told at once.
    let bye = idle.reply();
    assert!(bye.starts_with("421 4.3.2"), "{bye}");
    // The busy one may finish its transaction.
    assert!(busy.command("RCPT TO:<b@relay.test>").starts_with("250"));
    assert!(busy.command("DATA").starts_with("354"));
    busy.send(&message("during-stop", &["x"]));
    let done = busy.command(".");
    assert!(done.starts_with("250 2.0.0"), "{done}");
    let bye = busy.reply();
    assert!(bye.starts_with("421 4.3.2"), "{bye}");
    let status = sluice.wait_master();
    assert!(status.success(), "master exit: {status}");
    for pid in smtpds {
        assert!(kill(pid, None).is_err(), "smtpd {pid} still alive");
    }
    assert!(!sluice.run_dir.join("listeners").exists());
    assert_eq!(sluice.files_in("queue").len(), 1);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still listening"
    );
}

#[test]
fn master_tells_systemd_it_is_ready() {
    let (mut sluice, _sink) = relay_instance();
    let notify_path = sluice.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("bind");
    socket
        .set_read_timeout(Some(sluice_e2e::DEADLINE))
        .expect("timeout");
    sluice.set_env("NOTIFY_SOCKET", notify_path.to_str().expect("path"));
    sluice.start();
    let mut buf = [0u8; 64];
    let n = socket.recv(&mut buf).expect("READY=1 datagram");
    assert_eq!(&buf[..n], b"READY=1");
    // Readiness comes after the sockets are bound.
    assert!(sluice.run_dir.join("listeners").exists());
}

#[test]
fn sighup_rereads_the_config_and_a_bad_one_is_refused() {
    let (mut sluice, _sink) = relay_instance();
    let addr = sluice.start();
    let one = |to: &[&str]| {
        let mut raw = Raw::connect(addr);
        raw.command("EHLO client.test");
        raw.command("MAIL FROM:<a@client.test>");
        let replies: Vec<String> = to
            .iter()
            .map(|t| raw.command(&format!("RCPT TO:<{t}>")))
            .collect();
        raw.command("QUIT");
        replies
    };
    assert!(one(&["a@relay.test", "b@relay.test"])[1].starts_with("250"));
    let good = std::fs::read_to_string(&sluice.config_path).expect("config");
    // A broken file: the master keeps the running configuration.
    std::fs::write(&sluice.config_path, "( smtpd: ( no_such_key: 1 ) )").expect("write");
    kill(sluice.master_pid(), Signal::SIGHUP).expect("HUP");
    wait_for("the refusal", || {
        sluice
            .log()
            .contains("reload failed, keeping the running configuration")
    });
    assert!(sluice.log().contains("no_such_key"), "{}", sluice.log());
    assert!(one(&["a@relay.test", "b@relay.test"])[1].starts_with("250"));
    // A good one with a recipient limit of 1: new daemons enforce it.
    let before = sluice.smtpd_pids();
    std::fs::write(
        &sluice.config_path,
        good.replace("processes: 2,", "processes: 2, max_recipients: 1,"),
    )
    .expect("write");
    kill(sluice.master_pid(), Signal::SIGHUP).expect("HUP");
    wait_for("new smtpd processes", || {
        let now = sluice.smtpd_pids();
        now.len() == 2 && now.iter().all(|p| !before.contains(p))
    });
    let replies = one(&["a@relay.test", "b@relay.test"]);
    assert!(replies[0].starts_with("250"), "{replies:?}");
    assert!(replies[1].starts_with("452 4.5.3"), "{replies:?}");
    assert_eq!(sluice.smtp_addr(), addr, "the listening socket is kept");
}

#[test]
fn unknown_local_users_are_refused_at_rcpt_time() {
    let (mut sluice, _sink) = relay_instance();
    let addr = sluice.start();
    let mut raw = Raw::connect(addr);
    raw.command("EHLO client.test");
    assert!(raw.command("MAIL FROM:<a@client.test>").starts_with("250"));
    let root = raw.command("RCPT TO:<root@local.test>");
    assert!(root.starts_with("250"), "a system user exists: {root}");
    let nobody = raw.command("RCPT TO:<no-such-user-4711@local.test>");
    assert!(nobody.starts_with("550 5.1.1"), "{nobody}");
    let pm = raw.command("RCPT TO:<Postmaster@LOCAL.test>");
    assert!(
        pm.starts_with("250"),
        "postmaster is always deliverable: {pm}"
    );
    raw.command("QUIT");
    wait_for("the reject line", || {
        sluice
            .log()
            .contains("User unknown in local recipient table")
    });
}

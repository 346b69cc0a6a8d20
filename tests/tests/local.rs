//! End-to-end tests of local delivery (issue #6): the real master, smtpd,
//! qmgr and `sluice-local`; mail sent with Python's smtplib into
//! `local_domains: ["local.test"]`; mailboxes of throwaway system users
//! (`useradd`, removed on drop; CI runs as root) and virtual Maildirs;
//! forwarded and bounced mail caught by sinks on loopback.
//! The master starts `queue.local_agents` agents (2 by default: two
//! deliveries into one mbox can run at once).
//!
//! Without root the tests say so and check nothing (they need `useradd`
//! and the agent's user switch).

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use sluice_e2e::sink::Sink;
use sluice_e2e::{is_root, message, send_with_python, wait_for, Instance, Mail, Raw, TestUser};

/// A directory for homes, maps and mailboxes, traversable by the users.
fn base_dir() -> tempfile::TempDir {
    let base = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(
        base.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    base
}

/// The messages in a Maildir's `new/` with their owners.
fn maildir(dir: &Path) -> Vec<(Vec<u8>, u32)> {
    let mut out: Vec<(Vec<u8>, u32)> = std::fs::read_dir(dir.join("new"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| {
                    let owner = e.metadata().map(|m| m.uid()).unwrap_or(u32::MAX);
                    (std::fs::read(e.path()).unwrap_or_default(), owner)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn as_lf(bytes: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(bytes)
        .replace("\r\n", "\n")
        .into_bytes()
}

/// A delivered message is `Return-Path`, `Delivered-To`, smtpd's
/// `Received:` and then the sent message byte for byte (with LF ends).
fn assert_delivered(got: &[u8], delivered_to: &str, sent: &[u8]) {
    let text = String::from_utf8_lossy(got);
    let head =
        format!("Return-Path: <sender@client.test>\nDelivered-To: {delivered_to}\nReceived: ");
    assert!(text.starts_with(&head), "{text}");
    assert!(got.ends_with(&as_lf(sent)), "{text}");
}

fn send(addr: std::net::SocketAddr, to: &[String], data: &[u8]) {
    let outcomes = send_with_python(
        addr,
        1,
        &[Mail {
            from: "sender@client.test".into(),
            to: to.to_vec(),
            data: data.to_vec(),
        }],
    );
    assert!(outcomes.iter().all(|o| o.ok), "{outcomes:?}");
}

#[test]
fn aliases_and_virtual_mailboxes_deliver_and_loops_bounce() {
    if !is_root() {
        eprintln!("not root: cannot create users; nothing checked");
        return;
    }
    let base = base_dir();
    let ann = TestUser::new("a", base.path());
    let bob = TestUser::new("b", base.path());
    let vmail = TestUser::new("v", base.path());
    let vdir = base.path().join("virtual");
    std::fs::create_dir(&vdir).expect("mkdir");
    std::os::unix::fs::chown(&vdir, Some(vmail.uid), None).expect("chown");
    let include = base.path().join("list.txt");
    std::fs::write(&include, format!("{}\n", bob.name)).expect("include");
    let aliases = base.path().join("aliases");
    std::fs::write(
        &aliases,
        format!(
            "team: {a}, {b}\nnested: team\nlist: :include:{inc}\nloop1: loop2\nloop2: loop1\n\
             broken line without colon\npostmaster: {a}\nMixed: {b}\nout: friend@remote.test\n",
            a = ann.name,
            b = bob.name,
            inc = include.display()
        ),
    )
    .expect("aliases");
    let map = base.path().join("vmap");
    std::fs::write(
        &map,
        format!(
            "v1@local.test {d}/one/\nv2@local.test {d}/two/\n",
            d = vdir.display()
        ),
    )
    .expect("map");
    let remote = Sink::start("127.0.0.1");
    let bounces = Sink::start("127.0.0.1");
    let mut sluice = Instance::new(&format!(
        "local_domains: [\"local.test\"],\n    \
         routes: {{ \"remote.test\": \"{}\", \"client.test\": \"{}\" }},\n    \
         queue: ( retry_min: \"1s\", retry_max: \"2s\" ),\n    \
         local: ( aliases: {aliases:?}, virtual_mailboxes: {map:?}, virtual_owner: {:?} ),",
        remote.route(),
        bounces.route(),
        vmail.name
    ));
    let addr = sluice.start();

    let data = message("local-1", &["hello", "From the start of a line", ".dot"]);
    let to: Vec<String> = [
        "v1@local.test",
        "V2@LOCAL.test",
        "nested@local.test",
        "list@local.test",
        "mixed+tag@local.test",
        "postmaster@local.test",
        "loop1@local.test",
        "out@local.test",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    send(addr, &to, &data);

    wait_for("the virtual mailboxes", || {
        maildir(&vdir.join("one")).len() == 1 && maildir(&vdir.join("two")).len() == 1
    });
    for (dir, address) in [("one", "v1@local.test"), ("two", "v2@local.test")] {
        let got = maildir(&vdir.join(dir));
        assert_eq!(got[0].1, vmail.uid);
        assert_delivered(&got[0].0, address, &data);
    }
    // ann: nested (through team) and postmaster; bob: nested, list, mixed.
    wait_for("ann's and bob's mail", || {
        maildir(&ann.home.join("Maildir")).len() == 2
            && maildir(&bob.home.join("Maildir")).len() == 3
    });
    for (user, n) in [(&ann, 2), (&bob, 3)] {
        let got = maildir(&user.home.join("Maildir"));
        assert_eq!(got.len(), n);
        for (bytes, owner) in &got {
            assert_eq!(*owner, user.uid);
            assert_delivered(bytes, &user.address(), &data);
        }
    }
    // The alias to another domain is forwarded with the original sender.
    wait_for("the forwarded copy", || remote.count() == 1);
    let forwarded = remote.messages().remove(0);
    assert_eq!(forwarded.from, "sender@client.test");
    assert_eq!(forwarded.to, ["friend@remote.test"]);
    assert!(forwarded
        .data
        .starts_with(b"Delivered-To: out@local.test\r\n"));
    assert!(forwarded.data.ends_with(&data));
    // The loop bounces to the sender.
    wait_for("the loop's bounce", || bounces.count() == 1);
    let dsn = String::from_utf8_lossy(&bounces.messages()[0].data).into_owned();
    assert!(dsn.contains("loop1@local.test"), "{dsn}");
    assert!(dsn.contains("5.4.6"), "{dsn}");
    // The broken line is named, and did not stop the others.
    assert!(
        sluice.log().contains("aliases:6: missing \":\""),
        "{}",
        sluice.log()
    );
    wait_for("the queue to empty", || sluice.files_in("queue").is_empty());
}

#[test]
fn unknown_local_users_are_refused_at_rcpt() {
    if !is_root() {
        eprintln!("not root: cannot create users; nothing checked");
        return;
    }
    let base = base_dir();
    let ann = TestUser::new("r", base.path());
    let map = base.path().join("vmap");
    std::fs::write(&map, "v1@local.test /nonexistent/v1/\n").expect("map");
    let mut sluice = Instance::new(&format!(
        "local_domains: [\"local.test\"],\n    \
         local: ( aliases: {:?}, virtual_mailboxes: {map:?} ),",
        base.path().join("no-aliases")
    ));
    let addr = sluice.start();
    let mut raw = Raw::connect(addr);
    assert!(raw.command("EHLO client.test").starts_with("250"));
    assert!(raw
        .command("MAIL FROM:<sender@client.test>")
        .starts_with("250"));
    let reply = raw.command("RCPT TO:<ghost@local.test>");
    assert!(reply.starts_with("550 5.1.1"), "{reply}");
    for known in [
        ann.address(),
        "v1@local.test".to_owned(),
        "postmaster@local.test".to_owned(),
        format!("{}+tag@LOCAL.TEST", ann.name.to_uppercase()),
    ] {
        let reply = raw.command(&format!("RCPT TO:<{known}>"));
        assert!(reply.starts_with("250"), "{known}: {reply}");
    }
    raw.command("QUIT");
}

#[test]
fn system_users_get_mbox_mail_forward_and_two_messages_at_once() {
    if !is_root() {
        eprintln!("not root: cannot create users; nothing checked");
        return;
    }
    let base = base_dir();
    let carl = TestUser::new("c", base.path());
    let dora = TestUser::new("d", base.path());
    // dora keeps a copy and forwards one.
    let forward = dora.home.join(".forward");
    std::fs::write(
        &forward,
        format!("\\{}, dora.away@remote.test\n", dora.name),
    )
    .expect(".forward");
    std::os::unix::fs::chown(&forward, Some(dora.uid), None).expect("chown");
    let remote = Sink::start("127.0.0.1");
    let mut sluice = Instance::new(&format!(
        "local_domains: [\"local.test\"],\n    \
         routes: {{ \"remote.test\": \"{}\" }},\n    \
         local: ( aliases: {:?}, mailbox: \"~/mbox\" ),",
        remote.route(),
        base.path().join("no-aliases")
    ));
    let addr = sluice.start();

    // Two big messages to carl at once, with lines that need quoting.
    let lines_one: Vec<String> = (0..20_000).map(|i| format!("From one {i}")).collect();
    let lines_two: Vec<String> = (0..20_000).map(|i| format!("two {i}")).collect();
    let one = message(
        "mbox-1",
        &lines_one.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let two = message(
        "mbox-2",
        &lines_two.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let mails: Vec<Mail> = [&one, &two]
        .iter()
        .map(|d| Mail {
            from: "sender@client.test".into(),
            to: vec![carl.address()],
            data: (*d).clone(),
        })
        .collect();
    let outcomes = send_with_python(addr, 2, &mails);
    assert!(outcomes.iter().all(|o| o.ok), "{outcomes:?}");
    send(addr, &[dora.address()], &message("forward-1", &["hi"]));

    let mbox = carl.home.join("mbox");
    let sent_to_carl = format!("to=<{}>, relay=local", carl.address());
    wait_for("two deliveries to carl", || {
        sluice
            .log()
            .lines()
            .filter(|l| l.contains(&sent_to_carl) && l.contains("status=sent"))
            .count()
            == 2
    });
    let meta = std::fs::metadata(&mbox).expect("mbox");
    assert_eq!((meta.uid(), meta.mode() & 0o777), (carl.uid, 0o600));
    let text = String::from_utf8(std::fs::read(&mbox).expect("read")).expect("utf-8");
    let starts: Vec<usize> = text
        .match_indices("From sender@client.test ")
        .map(|(i, _)| i)
        .filter(|&i| i == 0 || text[..i].ends_with("\n\n"))
        .collect();
    assert_eq!(starts.len(), 2, "two entries");
    for (k, &start) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(text.len());
        let entry = &text[start..end];
        let body = entry
            .split_once('\n')
            .expect("From line")
            .1
            .replace("\n>From ", "\nFrom ");
        let body = body.strip_suffix('\n').expect("blank line after");
        let sent = if body.contains("Subject: mbox-1") {
            &one
        } else {
            &two
        };
        assert_delivered(body.as_bytes(), &carl.address(), sent);
    }

    // dora: a copy in her mbox and one forwarded.
    wait_for("dora's forwarded copy", || remote.count() == 1);
    assert_eq!(remote.messages()[0].to, ["dora.away@remote.test"]);
    let dora_box = std::fs::read_to_string(dora.home.join("mbox")).expect("dora's mbox");
    assert!(dora_box.contains("Subject: forward-1"));
    wait_for("the queue to empty", || sluice.files_in("queue").is_empty());
}

#[test]
fn a_sender_starting_with_a_dash_is_delivered() {
    // Issue 9 defect 10: the delivery child took `-oops@evil.test` for an
    // option, and the mail deferred until its lifetime ended.
    if !is_root() {
        eprintln!("not root: cannot create users; nothing checked");
        return;
    }
    let base = base_dir();
    let erin = TestUser::new("e", base.path());
    let mut sluice = Instance::new(&format!(
        "local_domains: [\"local.test\"],\n    \
         local: ( aliases: {:?}, mailbox: \"~/Maildir/\" ),",
        base.path().join("no-aliases")
    ));
    let addr = sluice.start();
    let data = message("dash", &["from a dash"]);
    let outcomes = send_with_python(
        addr,
        1,
        &[Mail {
            from: "-oops@evil.test".into(),
            to: vec![erin.address()],
            data: data.clone(),
        }],
    );
    assert!(outcomes.iter().all(|o| o.ok), "{outcomes:?}");
    let mailbox = erin.home.join("Maildir");
    wait_for("the delivery", || maildir(&mailbox).len() == 1);
    let (got, owner) = maildir(&mailbox).remove(0);
    assert_eq!(owner, erin.uid);
    assert!(got.starts_with(b"Return-Path: <-oops@evil.test>\n"));
    assert!(got.ends_with(&as_lf(&data)));
    assert_eq!(sluice.log_count("status=deferred"), 0, "{}", sluice.log());
}

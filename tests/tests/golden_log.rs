//! The operator log lines that pflogsumm and fail2ban read, shape for shape
//! (issue 20: written before smtpd's asks and checks moved, and must pass
//! after). Real master, smtpd, qmgr, smtp and local; raw SMTP sessions: a
//! message relayed to a sink and delivered to a virtual mailbox, refused
//! recipients, a session ended for its errors, a lost connection.
//!
//! Only what varies from run to run is masked: queue IDs, pids, time
//! stamps, sizes, delays and the sink's port.

use sluice_e2e::sink::Sink;
use sluice_e2e::{is_root, message, wait_for, Instance, Raw, TestUser};

/// The program and the text of a log line, with its variable parts masked;
/// `None` for a line that is not from a Sluice program.
fn shape(line: &str) -> Option<(String, String)> {
    let (_, rest) = line.split_once(" sluice/")?;
    let (program, rest) = rest.split_once('[')?;
    let (_, text) = rest.split_once("]: ")?;
    Some((program.to_owned(), mask(text)))
}

fn mask(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c.is_ascii_alphanumeric()
            && (i == 0 || !text[..i].ends_with(|p: char| p.is_ascii_alphanumeric()))
        {
            // A whole word: a queue ID is 20 upper-case letters and digits.
            let end = text[i..]
                .find(|p: char| !p.is_ascii_alphanumeric())
                .map_or(text.len(), |n| i + n);
            let word = &text[i..end];
            if word.len() == 20
                && word
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            {
                out.push_str("QID");
            } else {
                out.push_str(word);
            }
            while chars.peek().is_some_and(|(j, _)| *j < end) {
                chars.next();
            }
            continue;
        }
        out.push(c);
    }
    for key in ["size=", "delay=", "delays="] {
        out = mask_value(&out, key);
    }
    mask_port(&out)
}

/// `key=VALUE` (to the next `,` or space) becomes `key=*`.
fn mask_value(text: &str, key: &str) -> String {
    let Some(start) = text.find(key).map(|i| i + key.len()) else {
        return text.to_owned();
    };
    let end = text[start..]
        .find([',', ' '])
        .map_or(text.len(), |n| start + n);
    format!("{}*{}", &text[..start], &text[end..])
}

/// `relay=host[ip]:PORT`: the sink's port varies.
fn mask_port(text: &str) -> String {
    let Some(start) = text.find("]:").map(|i| i + 2) else {
        return text.to_owned();
    };
    let end = text[start..]
        .find(|c: char| !c.is_ascii_digit())
        .map_or(text.len(), |n| start + n);
    if end == start {
        return text.to_owned();
    }
    format!("{}PORT{}", &text[..start], &text[end..])
}

/// The masked lines of `program`, in order.
fn lines_of(log: &str, program: &str) -> Vec<String> {
    log.lines()
        .filter_map(shape)
        .filter(|(p, _)| p == program)
        .map(|(_, t)| t)
        .collect()
}

/// The masked lines about queue ID `id` from any program except smtpd.
fn lines_about(log: &str, id: &str) -> Vec<(String, String)> {
    log.lines()
        .filter(|l| l.contains(&format!("{id}: ")))
        .filter_map(shape)
        .filter(|(p, _)| p != "smtpd")
        .collect()
}

#[test]
fn the_lines_log_tools_read_keep_their_shape() {
    let sink = Sink::start("127.0.0.1");
    let base = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(
        base.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    // A virtual mailbox needs a user to own it (and root to make one).
    let owner = is_root().then(|| TestUser::new("g", base.path()));
    let vdir = base.path().join("virtual");
    let map = base.path().join("vmap");
    std::fs::write(&map, format!("v1@local.test {}/one/\n", vdir.display())).expect("map");
    let local = match &owner {
        Some(user) => {
            std::fs::create_dir(&vdir).expect("mkdir");
            std::os::unix::fs::chown(&vdir, Some(user.uid), None).expect("chown");
            format!(
                "local: ( aliases: {:?}, virtual_mailboxes: {map:?}, virtual_owner: {:?} ),",
                base.path().join("no-aliases"),
                user.name
            )
        }
        None => String::new(),
    };
    let mut sluice = Instance::with_smtpd(
        &format!(
            "local_domains: [\"local.test\"], relay_domains: [\"relay.test\"],\n    \
             routes: {{ \"relay.test\": \"{}\" }},\n    {local}",
            sink.route()
        ),
        "max_errors: 3, trusted_networks: [],",
    );
    let addr = sluice.start();
    let disconnects = |n: usize| {
        wait_for("a disconnect line", || {
            sluice.log_count("disconnect from") >= n
        });
    };

    // 1. A message relayed (and, as root, delivered locally), with two
    //    recipients refused on the way.
    let mut raw = Raw::connect(addr);
    assert!(raw.command("EHLO client.test").starts_with("250"));
    assert!(raw
        .command("MAIL FROM:<sender@client.test>")
        .starts_with("250"));
    assert!(raw.command("RCPT TO:<rcpt@relay.test>").starts_with("250"));
    assert!(raw.command("RCPT TO:<x@elsewhere.test>").starts_with("554"));
    assert!(raw
        .command("RCPT TO:<nobody-4711@local.test>")
        .starts_with("550"));
    let local_rcpt = owner.is_some();
    if local_rcpt {
        assert!(raw.command("RCPT TO:<v1@local.test>").starts_with("250"));
    }
    assert!(raw.command("DATA").starts_with("354"));
    raw.send(&message("golden", &["hello"]));
    let queued = raw.command(".");
    assert!(queued.starts_with("250 2.0.0 Ok: queued as "), "{queued}");
    let id = queued.trim_end()["250 2.0.0 Ok: queued as ".len()..].to_owned();
    assert!(raw.command("QUIT").starts_with("221"));
    disconnects(1);

    // 2. A session ended for its errors (max_errors: 3).
    let mut bad = Raw::connect(addr);
    assert!(bad.command("EHLO client.test").starts_with("250"));
    assert!(bad.command("BOGUS").starts_with("500"));
    assert!(bad.command("MAIL FROM:<a").starts_with("501"));
    assert!(bad.command("RCPT TO:<b@relay.test>").starts_with("503"));
    disconnects(2);

    // 3. A client that goes away after HELO.
    let mut lost = Raw::connect(addr);
    assert!(lost.command("HELO client.test").starts_with("250"));
    drop(lost);
    disconnects(3);

    wait_for("the message delivered and removed", || {
        sluice.log_count(&format!("{id}: removed")) == 1
    });
    assert_eq!(sink.count(), 1);

    let log = sluice
        .log()
        .replace(&base.path().display().to_string(), "BASE");
    let peer = "unknown[127.0.0.1]";
    let rcpts = if local_rcpt { "rcpt=2/4" } else { "rcpt=1/3" };
    let commands = if local_rcpt {
        "commands=6/8"
    } else {
        "commands=5/7"
    };
    let expected_smtpd = vec![
        format!("connect from {peer}"),
        format!(
            "NOQUEUE: reject: RCPT from {peer}: 554 5.7.1 <x@elsewhere.test>: Relay access denied; \
             from=<sender@client.test> to=<x@elsewhere.test> proto=ESMTP helo=<client.test>"
        ),
        format!(
            "NOQUEUE: reject: RCPT from {peer}: 550 5.1.1 <nobody-4711@local.test>: Recipient address \
             rejected: User unknown in local recipient table; from=<sender@client.test> \
             to=<nobody-4711@local.test> proto=ESMTP helo=<client.test>"
        ),
        format!("QID: client={peer}"),
        format!("disconnect from {peer} ehlo=1 mail=1 {rcpts} data=1 quit=1 {commands}"),
        format!("connect from {peer}"),
        format!(
            "NOQUEUE: reject: MAIL from {peer}: 501 5.1.7 Bad sender address syntax: syntax error; \
             proto=ESMTP helo=<client.test>"
        ),
        format!(
            "NOQUEUE: reject: RCPT from {peer}: 503 5.5.1 Error: need MAIL command; proto=ESMTP \
             helo=<client.test>"
        ),
        format!("warning: too many errors after RCPT from {peer}"),
        format!("disconnect from {peer} ehlo=1 mail=0/1 rcpt=0/1 unknown=0/1 commands=1/4"),
        format!("connect from {peer}"),
        format!("lost connection after HELO from {peer}"),
        format!("disconnect from {peer} helo=1 commands=1"),
    ];
    assert_eq!(lines_of(&log, "smtpd"), expected_smtpd, "{log}");

    let about = lines_about(&log, &id);
    let nrcpt = if local_rcpt { 2 } else { 1 };
    assert_eq!(
        about.first(),
        Some(&(
            "qmgr".to_owned(),
            format!("QID: from=<sender@client.test>, size=*, nrcpt={nrcpt} (queue active)")
        )),
        "{log}"
    );
    assert_eq!(
        about.last(),
        Some(&("qmgr".to_owned(), "QID: removed".to_owned())),
        "{log}"
    );
    let mut deliveries: Vec<(String, String)> = about[1..about.len() - 1].to_vec();
    deliveries.sort();
    let mut expected = vec![(
        "smtp".to_owned(),
        "QID: to=<rcpt@relay.test>, relay=127.0.0.1[127.0.0.1]:PORT, delay=*, delays=*, \
         dsn=2.0.0, status=sent (250 2.0.0 Ok: queued)"
            .to_owned(),
    )];
    if local_rcpt {
        expected.push((
            "local".to_owned(),
            "QID: to=<v1@local.test>, relay=local, delay=*, delays=*, dsn=2.0.0, \
             status=sent (delivered to maildir BASE/virtual/one/)"
                .to_owned(),
        ));
    }
    expected.sort();
    assert_eq!(deliveries, expected, "{log}");
}

//! End-to-end tests of the operator's queue changes (issue #3):
//! `sluice-queue` hold, release, flush, delete and requeue against the real
//! qmgr, and the refusal of a user outside the `sluice` group.

use sluice_e2e::sink::Sink;
use sluice_e2e::{message, send_with_python, wait_for, Instance, Mail};

fn instance(route: &str) -> Instance {
    Instance::new(&format!(
        "relay_domains: [\"relay.test\"], routes: {{ \"relay.test\": \"{route}\" }},\n    \
         queue: ( retry_min: \"1h\", retry_max: \"2h\" ),"
    ))
}

fn mail(tag: &str) -> Mail {
    Mail {
        from: "a@client.test".into(),
        to: vec![format!("{tag}@relay.test")],
        data: message(tag, &["x"]),
    }
}

/// Sends one message and returns its queue ID.
fn queue_one(sluice: &Instance, tag: &str) -> String {
    let outcome = send_with_python(sluice.smtp_addr(), 1, &[mail(tag)]).remove(0);
    assert!(outcome.ok, "{outcome:?}");
    outcome.queue_id().expect("id")
}

fn listing(sluice: &Instance) -> String {
    let (code, out, err) = sluice.queue_tool(&["list"], None);
    assert_eq!(code, 0, "{err}");
    out
}

#[test]
fn hold_release_flush_and_delete_do_what_they_say() {
    let sink = Sink::start("127.0.0.1");
    sink.on_rcpt(|_| "451 4.3.0 not now".to_owned());
    let mut sluice = instance(&sink.route());
    sluice.start();
    let held = queue_one(&sluice, "held");
    let flushed = queue_one(&sluice, "flushed");
    let deleted = queue_one(&sluice, "deleted");
    wait_for("three deferrals", || {
        sluice.log_count("status=deferred") == 3
    });

    let (code, out, err) = sluice.queue_tool(&["hold", &held], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 message"), "{out}");
    assert!(
        listing(&sluice).contains(&format!("{held}!")),
        "held shows '!'"
    );

    let (code, _, err) = sluice.queue_tool(&["delete", &deleted], None);
    assert_eq!(code, 0, "{err}");
    wait_for("the deleted file to go", || {
        !sluice.files_in("queue").contains(&deleted)
    });
    assert!(!listing(&sluice).contains(&deleted));

    // retry_min is an hour: only a flush makes the sink see anything.
    sink.on_rcpt(|_| "250 2.1.5 Ok".to_owned());
    let (code, _, err) = sluice.queue_tool(&["flush"], None);
    assert_eq!(code, 0, "{err}");
    wait_for("the flushed message", || sink.count() == 1);
    assert_eq!(sink.messages()[0].to, vec!["flushed@relay.test".to_owned()]);
    wait_for("the flushed file to go", || {
        !sluice.files_in("queue").contains(&flushed)
    });
    // The held one stays, held, through the flush.
    assert!(sluice.files_in("queue").contains(&held));
    assert!(listing(&sluice).contains(&format!("{held}!")));

    let (code, _, err) = sluice.queue_tool(&["release", &held], None);
    assert_eq!(code, 0, "{err}");
    wait_for("the released message", || sink.count() == 2);
    wait_for("an empty queue", || sluice.files_in("queue").is_empty());
    let to: Vec<String> = sink.messages().iter().flat_map(|m| m.to.clone()).collect();
    assert!(
        !to.contains(&"deleted@relay.test".to_owned()),
        "deleted mail was never sent"
    );
}

#[test]
fn requeue_routes_again_after_a_reload() {
    let old = Sink::start("127.0.0.1");
    old.on_rcpt(|_| "451 4.3.0 not now".to_owned());
    let new = Sink::start("127.0.0.2");
    let mut sluice = instance(&old.route());
    sluice.start();
    let id = queue_one(&sluice, "moved");
    wait_for("a deferral", || sluice.log_count("status=deferred") == 1);
    let config = std::fs::read_to_string(&sluice.config_path).expect("config");
    std::fs::write(
        &sluice.config_path,
        config.replace(&old.route(), &new.route()),
    )
    .expect("write");
    let qmgr_before = sluice.daemon_pids("sluice-qmgr");
    nix::sys::signal::kill(sluice.master_pid(), nix::sys::signal::Signal::SIGHUP).expect("HUP");
    wait_for("a new qmgr", || {
        let now = sluice.daemon_pids("sluice-qmgr");
        now.len() == 1 && now != qmgr_before
    });
    wait_for("the new qmgr's socket", || {
        sluice.queue_tool(&["requeue", &id], None).0 == 0
    });
    wait_for("delivery to the new route", || new.count() == 1);
    assert_eq!(old.count(), 0);
}

#[test]
fn a_user_outside_the_sluice_group_may_list_but_not_change() {
    if !nix::unistd::Uid::effective().is_root() {
        // Without root there is no other user to be; CI runs as root.
        eprintln!("needs root to run the tool as another user");
        return;
    }
    let sink = Sink::start("127.0.0.1");
    sink.on_rcpt(|_| "451 4.3.0 not now".to_owned());
    let mut sluice = instance(&sink.route());
    sluice.start();
    let id = queue_one(&sluice, "guarded");
    wait_for("a deferral", || sluice.log_count("status=deferred") == 1);
    let nobody = 65534;
    let (code, out, err) = sluice.queue_tool(&["list"], Some(nobody));
    assert_eq!(code, 0, "any user may list: {err}");
    assert!(out.contains(&id), "{out}");
    for args in [
        vec!["delete", "ALL"],
        vec!["hold", id.as_str()],
        vec!["flush"],
    ] {
        let (code, out, err) = sluice.queue_tool(&args, Some(nobody));
        assert_eq!(code, 1, "{args:?} must be refused: {out}{err}");
        // The control socket (0660) does not even let the user connect.
        assert!(
            err.contains("permission denied (changes need root or the queue manager's group)"),
            "{err}"
        );
    }
    assert!(sluice.files_in("queue").contains(&id));
}

#[test]
fn a_flush_revives_a_destination_that_was_down() {
    // Nothing listens on the route's port at first: the destination is
    // suspended after the first failed connection.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let mut sluice = instance(&format!("[127.0.0.1]:{}", port.port()));
    sluice.start();
    for i in 0..3 {
        queue_one(&sluice, &format!("down{i}"));
    }
    wait_for("deferrals", || sluice.log_count("status=deferred") >= 3);
    let sink = Sink::start_on(port);
    let (code, _, err) = sluice.queue_tool(&["flush"], None);
    assert_eq!(code, 0, "{err}");
    wait_for("all three after the flush (retry_min is an hour)", || {
        sink.count() == 3
    });
}

/// Issue 9 defect 14: hold is kept in the spool (`hold/`), so deleting the
/// index (the README's repair) does not release held mail.
#[test]
fn hold_survives_an_index_rebuild() {
    let sink = Sink::start("127.0.0.1");
    sink.on_rcpt(|_| "451 4.3.0 not now".to_owned());
    let mut sluice = instance(&sink.route());
    sluice.start();
    let held = queue_one(&sluice, "held");
    let other = queue_one(&sluice, "other");
    wait_for("two deferrals", || sluice.log_count("status=deferred") == 2);
    let (code, _, err) = sluice.queue_tool(&["hold", &held], None);
    assert_eq!(code, 0, "{err}");
    sluice.terminate();
    assert!(sluice.wait_master().success());
    for name in ["index.sqlite", "index.sqlite-wal", "index.sqlite-shm"] {
        let _ = std::fs::remove_file(sluice.spool_dir.join(name));
    }
    sink.on_rcpt(|_| "250 2.1.5 Ok".to_owned());
    sluice.start();
    // The index is rebuilt from the files; the other message goes out at
    // once (rebuilt recipients are due now), the held one does not.
    wait_for("the other message", || sink.count() == 1);
    assert_eq!(sink.messages()[0].to, ["other@relay.test"]);
    wait_for("the other file to go", || {
        !sluice.files_in("queue").contains(&other)
    });
    assert!(sluice.files_in("queue").contains(&held));
    assert!(
        listing(&sluice).contains(&format!("{held}!")),
        "still held after the rebuild"
    );
    // A flush leaves it alone; a release sends it.
    let (code, _, err) = sluice.queue_tool(&["flush"], None);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = sluice.queue_tool(&["release", &held], None);
    assert_eq!(code, 0, "{err}");
    wait_for("the released message", || sink.count() == 2);
    assert_eq!(sink.messages()[1].to, ["held@relay.test"]);
    wait_for("an empty queue", || sluice.files_in("queue").is_empty());
    assert!(
        sluice.files_in("hold").is_empty(),
        "the marker goes with the release"
    );
}

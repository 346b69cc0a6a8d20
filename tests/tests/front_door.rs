//! End-to-end tests of smtpd's front door (issues 9 and 20): nothing one
//! client asks makes another client wait. One smtpd process, so that every
//! client shares one event loop; the slow party is a stopped queue manager
//! or a recipient map that does not answer.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;

use nix::sys::signal::{kill, Signal};
use sluice_e2e::{wait_for, Instance, Raw};

#[test]
fn etrn_does_not_wait_for_a_stopped_queue_manager() {
    let mut sluice = Instance::with_smtpd("relay_domains: [\"relay.test\"],", "processes: 1,");
    let addr = sluice.start();
    wait_for("the queue manager's socket", || {
        sluice_ipc::qmgr::socket(&sluice.run_dir).exists()
    });
    let qmgr = sluice.daemon_pids("sluice-qmgr");
    assert_eq!(qmgr.len(), 1);
    kill(qmgr[0], Signal::SIGSTOP).expect("SIGSTOP qmgr");
    let mut first = Raw::connect(addr);
    assert!(first.command("EHLO client.test").starts_with("250"));
    // Answered from the domain's permission, without the queue manager.
    let etrn = first.command("ETRN relay.test");
    // Another client is greeted while the queue manager is stopped.
    let second = Raw::connect(addr);
    let again = first.command("ETRN relay.test");
    kill(qmgr[0], Signal::SIGCONT).expect("SIGCONT qmgr");
    assert!(etrn.starts_with("250 2.0.0"), "{etrn}");
    assert!(again.starts_with("250 2.0.0"), "{again}");
    drop(second);
}

#[test]
fn a_recipient_lookup_that_hangs_does_not_delay_another_client() {
    let base = tempfile::tempdir().expect("tempdir");
    let map = base.path().join("vmap");
    std::fs::write(&map, "v1@local.test /nonexistent/v1/\n").expect("map");
    let mut sluice = Instance::with_smtpd(
        &format!(
            "local_domains: [\"local.test\"],\n    \
             local: ( aliases: {:?}, virtual_mailboxes: {map:?} ),",
            base.path().join("no-aliases")
        ),
        "processes: 1,",
    );
    let addr = sluice.start();
    // The map becomes a FIFO: reading it waits for a writer, as a map on a
    // hung network file system or an NSS call to a dead LDAP server would.
    std::fs::remove_file(&map).expect("remove the map");
    let made = std::process::Command::new("mkfifo")
        .arg(&map)
        .status()
        .expect("mkfifo");
    assert!(made.success());

    let mut first = Raw::connect(addr);
    assert!(first.command("EHLO client.test").starts_with("250"));
    assert!(first
        .command("MAIL FROM:<sender@client.test>")
        .starts_with("250"));
    first.send(b"RCPT TO:<v1@local.test>\r\n");
    // Opening the FIFO's write end without blocking works once smtpd's
    // lookup has opened the read end: the lookup is under way, and now
    // waits for data that the test holds back.
    let mut writer = None;
    wait_for("smtpd's lookup to open the map", || {
        writer = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(&map)
            .ok();
        writer.is_some()
    });
    let mut writer = writer.expect("opened");
    // Meanwhile another client is served, whole sessions long.
    let mut second = Raw::connect(addr);
    assert!(second.command("EHLO other.test").starts_with("250"));
    assert!(second.command("QUIT").starts_with("221"));
    writer
        .write_all(b"v1@local.test /nonexistent/v1/\n")
        .expect("write the map");
    drop(writer);
    let reply = first.reply();
    assert!(reply.starts_with("250 2.1.5"), "{reply}");
}

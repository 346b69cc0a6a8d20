//! End-to-end tests of the master's own files (issue #9 defects 8 and 15):
//! a second master takes `master.lock` before it touches anything, and
//! root never writes its run files through a link planted in `run_dir`,
//! which belongs to the daemons' user.

use std::os::unix::fs::symlink;
use std::process::Command;

use nix::sys::signal::{kill, Signal};
use sluice_e2e::{is_root, message, program, test_user, wait_for, Instance, Raw};

#[test]
fn a_second_master_touches_nothing_of_the_running_one() {
    let mut sluice = Instance::new("relay_domains: [\"relay.test\"],");
    let addr = sluice.start();
    // A live client of the first instance, in the middle of its DATA...
    let mut client = Raw::connect(addr);
    assert!(client.command("EHLO client.test").starts_with("250"));
    assert!(client
        .command("MAIL FROM:<a@client.test>")
        .starts_with("250"));
    assert!(client
        .command("RCPT TO:<someone@relay.test>")
        .starts_with("250"));
    assert!(client.command("DATA").starts_with("354"));
    client.send(&message("in flight", &["first half"]));
    // ...and a commit of the first instance in flight in spool/tmp.
    let in_flight = sluice.spool_dir.join("tmp").join("in-flight");
    std::fs::write(&in_flight, "a commit of the running instance\n").expect("plant");

    let second = Command::new(program("sluice-master"))
        .arg("--config")
        .arg(&sluice.config_path)
        .output()
        .expect("run a second master");
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("another sluice-master holds"), "{err}");
    assert!(in_flight.exists(), "the second master emptied spool/tmp");
    std::fs::remove_file(&in_flight).expect("unplant");

    let reply = client.command(".");
    assert!(reply.starts_with("250"), "{reply}");
    assert!(sluice.master_exit().is_none());
}

#[test]
fn root_never_writes_run_files_through_a_symbolic_link() {
    if !is_root() || test_user() != "sluice" {
        eprintln!("needs root and the sluice user (run_dir owned by another user)");
        return;
    }
    let mut sluice = Instance::new("");
    sluice.start();
    // What a compromised daemon running as `sluice` could plant in its
    // run_dir: the master's temporary names, linked to a file of root's.
    let victim = sluice.path().join("victim");
    std::fs::write(&victim, "root's file\n").expect("victim");
    for name in ["master.tmp", "listeners.tmp"] {
        symlink(&victim, sluice.run_dir.join(name)).expect("plant a link");
    }
    let reloads = sluice.log_count("reload -- version");
    kill(sluice.master_pid(), Signal::SIGHUP).expect("SIGHUP");
    wait_for("the reload", || {
        sluice.log_count("reload -- version") > reloads
    });
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "root's file\n"
    );
    let listeners = sluice.run_dir.join("listeners");
    assert!(std::fs::symlink_metadata(&listeners)
        .expect("listeners")
        .file_type()
        .is_file());
    assert_eq!(
        std::fs::read_to_string(sluice.run_dir.join("master.pid"))
            .expect("master.pid")
            .trim(),
        sluice.master_pid().to_string()
    );
}

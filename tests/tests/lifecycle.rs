//! End-to-end tests of the daemons' lifetime: they never outlive their
//! master, and a master at start removes daemons an earlier one left.

use std::os::unix::process::CommandExt as _;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sluice_e2e::{bin_dir, children_named, program, wait_for, wait_up_to, Instance};

const DAEMONS: [&str; 6] = [
    "sluice-smtpd",
    "sluice-qmgr",
    "sluice-pickup",
    "sluice-smtp",
    "sluice-local",
    "sluice-anvil",
];

/// Whether `pid` runs (a zombie has released everything: it does not).
fn alive(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

fn sluice_status(instance: &Instance) -> (i32, String) {
    let out = Command::new(program("sluice"))
        .arg("--config")
        .arg(&instance.config_path)
        .arg("status")
        .output()
        .expect("run sluice status");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn kill_9_of_the_master_takes_every_daemon_with_it_and_the_next_start_binds_the_same_port() {
    let mut instance = Instance::new("relay_domains: [\"relay.test\"],");
    let addr = instance.start();
    let master = instance.master_pid();
    wait_for("qmgr and delivery agents", || {
        [
            "sluice-qmgr",
            "sluice-pickup",
            "sluice-smtp",
            "sluice-local",
        ]
        .iter()
        .all(|d| !children_named(master, d).is_empty())
    });
    let daemons: Vec<Pid> = DAEMONS
        .iter()
        .flat_map(|d| children_named(master, d))
        .collect();
    assert!(daemons.len() >= 6, "{daemons:?}");
    kill(master, Signal::SIGKILL).expect("SIGKILL master");
    wait_up_to(
        Duration::from_secs(2),
        "every daemon to die with the master",
        || daemons.iter().all(|&pid| !alive(pid)),
    );
    let (code, stdout) = sluice_status(&instance);
    assert_eq!(code, 3, "{stdout}");
    assert!(stdout.contains("not running"), "{stdout}");

    // The same port again: nothing of the old instance holds it.
    let config = std::fs::read_to_string(&instance.config_path).expect("config");
    let config = config.replace("127.0.0.1:0", &addr.to_string());
    std::fs::write(&instance.config_path, config).expect("config");
    assert_eq!(instance.start(), addr);
    let (code, stdout) = sluice_status(&instance);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains(&format!("listening: smtpd {addr}")),
        "{stdout}"
    );
}

#[test]
fn status_names_a_daemon_left_by_a_dead_master_and_the_next_master_kills_it() {
    let mut instance = Instance::new("");
    // A process that looks like an smtpd whose master (pid 1 here) did
    // not take it along: the shape of its command line is all that counts.
    let mut stray = Command::new("/bin/sh")
        .arg0(bin_dir().join("sluice-smtpd"))
        .args(["-c", "while :; do sleep 1; done", "sh", "--config"])
        .arg(&instance.config_path)
        .args(["--master-pid", "1"])
        .spawn()
        .expect("spawn the stray");
    let pid = stray.id();
    wait_for("the stray's command line", || {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| c.windows(12).any(|w| w == b"--master-pid"))
    });
    let (code, stdout) = sluice_status(&instance);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains(&format!("sluice-smtpd pid {pid} (master pid 1 is gone)")),
        "{stdout}"
    );
    instance.start();
    wait_up_to(Duration::from_secs(2), "the stray to be killed", || {
        stray.try_wait().ok().flatten().is_some()
    });
    assert_eq!(
        instance.log_count(&format!(
            "killing sluice-smtpd pid {pid} left by an earlier master"
        )),
        1,
        "{}",
        instance.log()
    );
    let (code, stdout) = sluice_status(&instance);
    assert_eq!(code, 0, "{stdout}");
}

//! End-to-end tests of the `sluice` front command.

use std::process::Command;

use sluice_e2e::{message, program, send_with_python, Instance, Mail};

fn sluice(instance: &Instance, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(program("sluice"))
        .arg("--config")
        .arg(&instance.config_path)
        .args(args)
        .output()
        .expect("run sluice");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_names_file_line_and_key_of_a_bad_value() {
    let instance = Instance::new("");
    let bad = instance.path().join("bad.ron");
    std::fs::write(
        &bad,
        "(\n    hostname: \"mx.test\",\n    smtpd: (\n        trusted_networks: [\"10.0.0.0/33\"],\n    ),\n)\n",
    )
    .expect("write");
    let out = Command::new(program("sluice"))
        .args(["--config"])
        .arg(&bad)
        .arg("check")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:4:", bad.display())),
        "{stderr}"
    );
    assert!(stderr.contains("smtpd.trusted_networks[0]"), "{stderr}");
}

#[test]
fn check_reports_a_missing_spool_then_passes_once_created() {
    let mut instance = Instance::new("");
    let (code, _, stderr) = sluice(&instance, &["check"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("spool"), "{stderr}");
    instance.start();
    let (code, stdout, stderr) = sluice(&instance, &["check"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("OK"), "{stdout}");
}

#[test]
fn start_status_stop() {
    let instance = Instance::new("relay_domains: [\"relay.test\"],");
    let (code, stdout, stderr) = sluice(&instance, &["status"]);
    assert_eq!(code, 3, "{stdout}{stderr}");
    let (code, stdout, stderr) = sluice(&instance, &["start"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, stdout, _) = sluice(&instance, &["status"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("listening: smtpd 127.0.0.1:"), "{stdout}");
    let (code, _, stderr) = sluice(&instance, &["start"]);
    assert_eq!(code, 1, "a second start must refuse: {stderr}");
    let outcome = send_with_python(
        instance.smtp_addr(),
        1,
        &[Mail {
            from: "a@client.test".into(),
            to: vec!["b@relay.test".into()],
            data: message("via-start", &["x"]),
        }],
    )
    .remove(0);
    assert!(outcome.ok, "{outcome:?}");
    let (code, stdout, stderr) = sluice(&instance, &["stop"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, _, _) = sluice(&instance, &["status"]);
    assert_eq!(code, 3);
}

#[test]
fn check_names_a_broken_aliases_line() {
    let mut instance = Instance::new("");
    let aliases = instance.path().join("aliases");
    std::fs::write(
        &aliases,
        "postmaster: root\nthis line has no colon\nteam: a@x.test\n",
    )
    .expect("write");
    let config = std::fs::read_to_string(&instance.config_path).expect("config");
    let config = config.replacen(
        "(\n",
        &format!("(\n    local: ( aliases: {aliases:?} ),\n"),
        1,
    );
    std::fs::write(&instance.config_path, config).expect("write");
    instance.start();
    let (code, _, stderr) = sluice(&instance, &["check"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("{}:2:", aliases.display())),
        "{stderr}"
    );
}

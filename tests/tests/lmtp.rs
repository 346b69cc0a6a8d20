//! End-to-end tests of LMTP delivery (RFC 2033, issue #4) against a real
//! Dovecot LMTP server (`dovecot-core`, `dovecot-lmtpd`) that the test
//! starts in the foreground with a throwaway config: a Unix socket and a
//! loopback TCP listener, and a passwd-file user database that knows only
//! `alice` and `bob`. Mail for them lands in their Maildirs; mail for an
//! unknown user is refused by Dovecot for that recipient alone and
//! bounced to the sender.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sluice_e2e::sink::Sink;
use sluice_e2e::{message, send_with_python, wait_for, Instance, Mail};

/// A running Dovecot; stopped (SIGTERM, then waited for) when dropped.
struct Dovecot {
    child: Child,
    dir: tempfile::TempDir,
    /// The LMTP Unix socket.
    socket: PathBuf,
    /// The LMTP TCP port on 127.0.0.1.
    port: u16,
}

impl Dovecot {
    fn start(users: &[&str]) -> Dovecot {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let open = |p: &Path, mode: u32| {
            std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .expect("chmod");
        };
        open(d, 0o755);
        // Dovecot writes mail as `nobody`.
        std::fs::create_dir(d.join("mail")).expect("mail dir");
        open(&d.join("mail"), 0o777);
        let passwd: String = users
            .iter()
            .map(|u| format!("{u}:::::{}::\n", d.join("mail").join(u).display()))
            .collect();
        std::fs::write(d.join("passwd"), passwd).expect("passwd");
        // A free port: bind, read it, let it go.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let config = format!(
            "protocols = lmtp\n\
             base_dir = {d}/run\n\
             state_dir = {d}/state\n\
             instance_name = sluice-test-dovecot-{port}\n\
             listen = 127.0.0.1\n\
             log_path = /dev/stderr\n\
             ssl = no\n\
             mail_location = maildir:{d}/mail/%n/Maildir\n\
             mail_uid = nobody\n\
             mail_gid = nogroup\n\
             first_valid_uid = 0\n\
             auth_username_format = %Ln\n\
             passdb {{\n  driver = static\n  args = nopassword=y\n}}\n\
             userdb {{\n  driver = passwd-file\n  args = {d}/passwd\n}}\n\
             service lmtp {{\n\
               unix_listener lmtp-sluice {{\n    mode = 0666\n  }}\n\
               inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n\
             }}\n",
            d = d.display()
        );
        let config_path = d.join("dovecot.conf");
        std::fs::write(&config_path, config).expect("dovecot.conf");
        let log = std::fs::File::create(d.join("dovecot.log")).expect("log");
        let child = Command::new("dovecot")
            .arg("-F")
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting dovecot (packages dovecot-core and dovecot-lmtpd)");
        let mut dovecot = Dovecot {
            child,
            socket: d.join("run/lmtp-sluice"),
            port,
            dir,
        };
        wait_for("dovecot's LMTP socket and port", || {
            if let Ok(Some(status)) = dovecot.child.try_wait() {
                panic!("dovecot exited ({status}):\n{}", dovecot.log());
            }
            dovecot.socket.exists()
                && std::net::TcpStream::connect(("127.0.0.1", dovecot.port)).is_ok()
        });
        dovecot
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    /// The files in `user`'s `Maildir/new`.
    fn new_mail(&self, user: &str) -> Vec<String> {
        let new = self.dir.path().join(format!("mail/{user}/Maildir/new"));
        std::fs::read_dir(new)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

#[test]
fn lmtp_delivers_into_dovecot_and_refuses_unknown_users_alone() {
    let dovecot = Dovecot::start(&["alice", "bob"]);
    let bounces = Sink::start("127.0.0.1");
    let mut sluice = Instance::new(&format!(
        "relay_domains: [\"lmtp.test\", \"tcp.test\"],\n    \
         routes: {{ \"lmtp.test\": \"lmtp:unix:{}\", \"tcp.test\": \"lmtp:[127.0.0.1]:{}\", \
         \"client.test\": \"{}\" }},",
        dovecot.socket.display(),
        dovecot.port,
        bounces.route()
    ));
    let addr = sluice.start();
    let mails = [
        Mail {
            from: "sender@client.test".into(),
            to: vec!["alice@lmtp.test".into(), "ghost@lmtp.test".into()],
            data: message("over the unix socket", &["hello alice"]),
        },
        Mail {
            from: "sender@client.test".into(),
            to: vec!["bob@tcp.test".into()],
            data: message("over tcp", &["hello bob"]),
        },
    ];
    let sent = send_with_python(addr, 1, &mails);
    assert!(sent.iter().all(|o| o.ok), "{sent:?}");

    wait_for("alice's and bob's mail in Dovecot", || {
        dovecot.new_mail("alice").len() == 1 && dovecot.new_mail("bob").len() == 1
    });
    let alice = &dovecot.new_mail("alice")[0];
    assert!(alice.contains("Subject: over the unix socket"), "{alice}");
    assert!(alice.contains("hello alice"), "{alice}");
    assert!(dovecot.new_mail("bob")[0].contains("Subject: over tcp"));

    wait_for("the bounce for ghost", || bounces.count() == 1);
    let log = sluice.log();
    let line = |rcpt: &str| {
        log.lines()
            .find(|l| l.contains(&format!("to=<{rcpt}>")) && l.contains("status="))
            .unwrap_or_default()
            .to_owned()
    };
    let alice_line = line("alice@lmtp.test");
    assert!(alice_line.contains("status=sent"), "{alice_line}");
    let relay = format!("relay=localhost[{}]", dovecot.socket.display());
    assert!(alice_line.contains(&relay), "{alice_line}");
    let ghost = line("ghost@lmtp.test");
    assert!(ghost.contains("dsn=5.1.1, status=bounced"), "{ghost}");
    assert!(ghost.contains("User doesn't exist"), "{ghost}");
    let bob = line("bob@tcp.test");
    assert!(bob.contains("status=sent"), "{bob}");
    assert!(
        bob.contains(&format!("relay=127.0.0.1[127.0.0.1]:{}", dovecot.port)),
        "{bob}"
    );
    let bounce = String::from_utf8_lossy(&bounces.messages()[0].data).into_owned();
    assert!(bounce.contains("ghost@lmtp.test"), "{bounce}");
    assert!(
        !bounce.contains("alice@lmtp.test\r\nAction: failed"),
        "{bounce}"
    );
    wait_for("the queue to empty", || sluice.files_in("queue").is_empty());
    assert!(dovecot.log().contains("saved mail to INBOX"));
}

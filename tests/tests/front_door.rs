//! End-to-end tests of smtpd's front door (issues 9 and 20): nothing one
//! client asks makes another client wait. One smtpd process, so that every
//! client shares one event loop; the slow party is a stopped queue manager
//! or a recipient map that does not answer.

use std::io::Write as _;

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

/// Whether process `pid` has `path` open.
fn has_open(pid: nix::unistd::Pid, path: &std::path::Path) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.filter_map(Result::ok)
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|p| p == path))
        })
        .unwrap_or(false)
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
    // The map becomes a FIFO, held open by the test: reading it waits for
    // data, as a map on a hung network file system or an NSS call to a dead
    // LDAP server would.
    std::fs::remove_file(&map).expect("remove the map");
    let made = std::process::Command::new("mkfifo")
        .arg(&map)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let mut held = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&map)
        .expect("open the FIFO");

    let mut first = Raw::connect(addr);
    assert!(first.command("EHLO client.test").starts_with("250"));
    assert!(first
        .command("MAIL FROM:<sender@client.test>")
        .starts_with("250"));
    first.send(b"RCPT TO:<v1@local.test>\r\n");
    let smtpd = sluice.smtpd_pids();
    assert_eq!(smtpd.len(), 1);
    wait_for("smtpd's lookup to open the map", || {
        has_open(smtpd[0], &map)
    });
    // Meanwhile another client is served, whole sessions long.
    let mut second = Raw::connect(addr);
    assert!(second.command("EHLO other.test").starts_with("250"));
    assert!(second.command("QUIT").starts_with("221"));
    // A local agent starting at the same moment may have opened the map
    // too, and may then read what the test writes.
    let shared = sluice
        .daemon_pids("sluice-local")
        .into_iter()
        .any(|pid| has_open(pid, &map));
    held.write_all(b"v1@local.test /nonexistent/v1/\n")
        .expect("write the map");
    drop(held);
    let reply = first.reply();
    if shared {
        assert!(!reply.starts_with("451"), "{reply}");
    } else {
        assert!(reply.starts_with("250 2.1.5"), "{reply}");
    }
}

/// A client that pipelines `EHLO` (a long reply for a short command) and
/// never reads a reply, with a small receive window, so that smtpd's
/// replies to it stop moving: the kernel's buffers fill, then smtpd's.
fn client_that_never_reads(addr: std::net::SocketAddr) -> std::net::TcpStream {
    // A small receive buffer, set before connecting so that the window
    // is small from the start.
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(&addr.into()).expect("connect");
    let mut stream = std::net::TcpStream::from(socket);
    stream.set_nonblocking(true).expect("nonblocking");
    let commands = b"EHLO x\r\n".repeat(50_000);
    let mut sent = 0;
    while sent < commands.len() {
        match stream.write(&commands[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("send: {e}"),
        }
    }
    stream
}

/// Whether a new client gets the greeting (not `421 too many connections`).
fn is_greeted(addr: std::net::SocketAddr) -> bool {
    use std::io::Read as _;
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    let mut first = [0u8; 4];
    stream.read_exact(&mut first).is_ok() && &first[..] == b"220 "
}

#[test]
fn clients_that_never_read_lose_their_slots_at_the_timeout() {
    let mut sluice = Instance::with_smtpd(
        "",
        "processes: 1, max_connections: 8, command_timeout: \"1s\", max_errors: 1000000000,",
    );
    let addr = sluice.start();
    let stuck: Vec<std::net::TcpStream> = (0..8).map(|_| client_that_never_reads(addr)).collect();
    // Each session times out with replies it will never take (421 queued
    // behind them), and is dropped a command timeout later: on 45cdec8
    // the slots stayed taken forever.
    wait_for("eight sessions to time out", || {
        sluice.log_count("timeout after EHLO") >= 8
    });
    wait_for("a new client to be greeted", || is_greeted(addr));
    drop(stuck);
}

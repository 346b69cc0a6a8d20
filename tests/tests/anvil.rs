//! End-to-end tests of the per-client connection limits (issue 9 defect
//! 4): the real master, two smtpd processes and `sluice-anvil`, which
//! counts every client's connections across them. Clients are plain TCP
//! sockets bound to chosen loopback addresses, so that two "clients" can be
//! told apart.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;

use nix::sys::signal::{kill, Signal};
use sluice_e2e::{wait_for, Instance, DEADLINE};

/// A connection from `source` (a loopback address) to `addr`.
fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let from: SocketAddr = format!("{source}:0").parse().expect("source");
    socket.bind(&from.into()).expect("bind source");
    socket.connect(&addr.into()).expect("connect");
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    stream
}

/// The first reply line the server sends.
fn first_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&line).trim_end().to_owned()
}

/// A client from `source` that got its greeting.
fn greeted(source: &str, addr: SocketAddr) -> TcpStream {
    let mut s = connect_from(source, addr);
    let line = first_line(&mut s);
    assert!(line.starts_with("220 "), "{source}: {line}");
    s
}

fn start(smtpd: &str) -> (Instance, SocketAddr) {
    let mut sluice = Instance::with_smtpd("", &format!("trusted_networks: [], {smtpd}"));
    let addr = sluice.start();
    let socket = sluice.run_dir.join("anvil.sock");
    wait_for("anvil to listen", || Path::new(&socket).exists());
    (sluice, addr)
}

#[test]
fn one_address_over_its_limit_gets_421_across_processes_while_another_is_served() {
    let (sluice, addr) = start("processes: 2, client_connection_limit: 3,");
    wait_for("two smtpd processes", || sluice.smtpd_pids().len() == 2);
    let mut held: Vec<TcpStream> = (0..3).map(|_| greeted("127.0.0.1", addr)).collect();
    let mut extra = connect_from("127.0.0.1", addr);
    assert_eq!(
        first_line(&mut extra),
        "421 4.7.0 mx.sluice.test Error: too many connections from 127.0.0.1"
    );
    let other = greeted("127.0.0.2", addr);
    wait_for("the warning in the log", || {
        sluice.log_count(
            "warning: Connection concurrency limit exceeded: 4 from unknown[127.0.0.1] for service smtp",
        ) == 1
    });
    // A connection that ends is released: the address is served again.
    let mut gone = held.pop().expect("a held connection");
    gone.write_all(b"QUIT\r\n").expect("quit");
    let _ = first_line(&mut gone);
    drop(gone);
    wait_for("a freed slot for 127.0.0.1", || {
        let mut s = connect_from("127.0.0.1", addr);
        let ok = first_line(&mut s).starts_with("220 ");
        if ok {
            held.push(s);
        }
        ok
    });
    drop(other);
}

#[test]
fn the_connection_rate_is_limited_per_minute() {
    let (sluice, addr) = start("client_connection_limit: 0, client_connection_rate_limit: 2,");
    for _ in 0..2 {
        let mut s = greeted("127.0.0.3", addr);
        s.write_all(b"QUIT\r\n").expect("quit");
        assert!(first_line(&mut s).starts_with("221"));
    }
    let mut third = connect_from("127.0.0.3", addr);
    assert_eq!(
        first_line(&mut third),
        "421 4.7.0 mx.sluice.test Error: too many connections from 127.0.0.3"
    );
    let _served = greeted("127.0.0.4", addr);
    assert_eq!(
        sluice.log_count(
            "warning: Connection rate limit exceeded: 3 from unknown[127.0.0.3] for service smtp"
        ),
        1
    );
}

#[test]
fn trusted_clients_are_exempt_by_default() {
    let mut sluice = Instance::with_smtpd("", "client_connection_limit: 1,");
    let addr = sluice.start();
    let socket = sluice.run_dir.join("anvil.sock");
    wait_for("anvil to listen", || socket.exists());
    let _a = greeted("127.0.0.1", addr);
    let _b = greeted("127.0.0.1", addr);
}

#[test]
fn a_stopped_anvil_lets_clients_in_and_is_logged_once() {
    let (sluice, addr) = start("client_connection_limit: 1,");
    let _first = greeted("127.0.0.5", addr);
    let anvil = sluice.daemon_pids("sluice-anvil");
    assert_eq!(anvil.len(), 1);
    kill(anvil[0], Signal::SIGSTOP).expect("stop anvil");
    // Over the limit, but nobody counts: let in after the ask's deadline.
    let clients: Vec<TcpStream> = (0..3).map(|_| greeted("127.0.0.5", addr)).collect();
    kill(anvil[0], Signal::SIGCONT).expect("continue anvil");
    let outages = sluice.log_count("letting clients in without per-client limits");
    assert!(
        (1..=2).contains(&outages),
        "once per outage and process, not per client: {outages}\n{}",
        sluice.log()
    );
    drop(clients);
}

/// smtpd raises its descriptor limit (soft to hard) and lowers a
/// `max_connections` that the limit cannot hold, with a warning, instead
/// of failing with EMFILE under load.
#[test]
fn max_connections_is_fitted_under_the_raised_descriptor_limit() {
    let (sluice, addr) = start("max_connections: 100000000,");
    let _served = greeted("127.0.0.6", addr);
    wait_for("the warning", || {
        sluice.log_count("smtpd.max_connections 100000000 does not fit the file descriptor limit")
            == 2
    });
    for pid in sluice.smtpd_pids() {
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .expect("the open files line");
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            fields[3], fields[4],
            "soft limit raised to the hard one: {line}"
        );
    }
}

/// anvil killed: the master restarts it, smtpd keeps serving meanwhile and
/// reconnects, and the limit applies again (the counts start afresh).
#[test]
fn a_killed_anvil_is_restarted_and_the_limit_applies_again() {
    let (sluice, addr) = start("client_connection_limit: 1,");
    let old = sluice.daemon_pids("sluice-anvil");
    assert_eq!(old.len(), 1);
    kill(old[0], Signal::SIGKILL).expect("kill anvil");
    let _during = greeted("127.0.0.7", addr);
    wait_for("a new anvil", || {
        let now = sluice.daemon_pids("sluice-anvil");
        now.len() == 1 && now != old
    });
    wait_for("the limit to apply again", || {
        let _first = greeted("127.0.0.8", addr);
        let mut second = connect_from("127.0.0.8", addr);
        first_line(&mut second).starts_with("421 4.7.0")
    });
}

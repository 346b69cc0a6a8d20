//! End-to-end tests of next-hop resolution through DNS (issue #4, RFC 5321
//! §5.1 and RFC 7505): the real master, smtpd, qmgr and smtp agents; MX,
//! A and AAAA records served by Debian's `dnsmasq`, started here on
//! loopback with a zone the test writes; SERVFAIL and silence from a small
//! UDP front the test runs; remote MX hosts are sinks on 127.0.0.2, .3, …
//! and [::1], all on one port that the Sluice config names as `smtp.port`.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_e2e::sink::Sink;
use sluice_e2e::{message, send_with_python, wait_for, Instance, Mail, Raw};

/// dnsmasq in the foreground, on 127.0.0.1 and a port of its own; killed
/// when dropped.
struct Dnsmasq {
    addr: SocketAddr,
    child: Child,
}

impl Dnsmasq {
    /// Serves `records` (dnsmasq config lines) for `*.test`; every other
    /// name under `test` is NXDOMAIN.
    fn start(dir: &Path, records: &str) -> Dnsmasq {
        let port = free_port("127.0.0.1");
        let config = dir.join("dnsmasq.conf");
        std::fs::write(
            &config,
            format!(
                "port={port}\nlisten-address=127.0.0.1\nbind-interfaces\nno-resolv\nno-hosts\n\
                 no-poll\npid-file=\nlocal=/test/\n{records}\n"
            ),
        )
        .expect("write dnsmasq.conf");
        let child = Command::new("dnsmasq")
            .arg("-k")
            .arg("-C")
            .arg(&config)
            .arg("--log-facility=-")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (package dnsmasq-base) must be installed");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let mut dns = Dnsmasq { addr, child };
        wait_for("dnsmasq to listen", || {
            if let Ok(Some(status)) = dns.child.try_wait() {
                panic!("dnsmasq exited: {status}");
            }
            TcpStream::connect(addr).is_ok()
        });
        dns
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free on `ip` for TCP and UDP right now.
fn free_port(ip: &str) -> u16 {
    loop {
        let tcp = TcpListener::bind((ip, 0)).expect("bind probe");
        let port = tcp.local_addr().expect("addr").port();
        if UdpSocket::bind((ip, port)).is_ok() {
            return port;
        }
    }
}

/// The question name of a DNS query, lower case, without the final dot.
fn question_name(query: &[u8]) -> Option<String> {
    let mut labels = Vec::new();
    let mut at = 12;
    loop {
        let len = usize::from(*query.get(at)?);
        if len == 0 {
            return Some(labels.join("."));
        }
        let label = query.get(at + 1..at + 1 + len)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        at += 1 + len;
    }
}

/// The SERVFAIL answer to `query`: its header and question, QR and RA set.
fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    let mut at = 12;
    while *query.get(at)? != 0 {
        at += 1 + usize::from(query[at]);
    }
    let end = at + 1 + 4; // root label, QTYPE, QCLASS
    let mut reply = query.get(..end)?.to_vec();
    reply[2] |= 0x80; // QR
    reply[3] = 0x80 | 2; // RA, RCODE 2
    reply[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    Some(reply)
}

/// A UDP name server in front of dnsmasq: names under `servfail.test` get
/// SERVFAIL, names under `timeout.test` never get an answer, the rest is
/// passed to dnsmasq and its answer back. Stops when dropped.
struct Front {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Front {
    fn start(upstream: SocketAddr) -> Front {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind front");
        let addr = socket.local_addr().expect("addr");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stopped.load(Ordering::SeqCst) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let query = buf[..n].to_vec();
                let name = question_name(&query).unwrap_or_default();
                if name == "timeout.test" || name.ends_with(".timeout.test") {
                    continue;
                }
                if name == "servfail.test" || name.ends_with(".servfail.test") {
                    if let Some(reply) = servfail(&query) {
                        let _ = socket.send_to(&reply, from);
                    }
                    continue;
                }
                let relay = UdpSocket::bind("127.0.0.1:0").expect("bind relay");
                relay
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                let mut answer = [0u8; 4096];
                if relay.send_to(&query, upstream).is_ok() {
                    if let Ok(m) = relay.recv(&mut answer) {
                        let _ = socket.send_to(&answer[..m], from);
                    }
                }
            }
        });
        Front { addr, stop }
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A server on `addr` that greets every connection with `421` and hangs up.
fn busy_host(addr: SocketAddr) -> Arc<std::sync::atomic::AtomicUsize> {
    let listener = TcpListener::bind(addr).expect("bind busy host");
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = stream.write_all(b"421 4.3.2 busy.test Service not available, try later\r\n");
            let mut rest = [0u8; 512];
            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
            let _ = stream.read(&mut rest);
        }
    });
    seen
}

fn sink_at(ip: &str, port: u16) -> Sink {
    let ip: IpAddr = ip.parse().expect("ip");
    Sink::start_on(SocketAddr::new(ip, port))
}

/// A Sluice relaying the test domains, asking `nameserver`, MX port
/// `port`, bounces for `client.test` to `bounces`.
fn sluice(nameserver: SocketAddr, port: u16, bounces: &Sink, domains: &[&str]) -> Instance {
    let list: Vec<String> = domains.iter().map(|d| format!("{d:?}")).collect();
    Instance::new(&format!(
        "relay_domains: [{}],\n    routes: {{ \"client.test\": \"{}\" }},\n    \
         dns: ( nameservers: [\"{nameserver}\"], timeout: \"1s\" ),\n    \
         smtp: ( port: {port}, connect_timeout: \"2s\", command_timeout: \"10s\", reuse_max_messages: 1 ),\n    \
         queue: ( retry_min: \"1s\", retry_max: \"2s\" ),",
        list.join(", "),
        bounces.route()
    ))
}

fn mail(to: &str, subject: &str) -> Mail {
    Mail {
        from: "sender@client.test".into(),
        to: vec![to.into()],
        data: message(subject, &["hello"]),
    }
}

/// Recipients of the messages a sink accepted.
fn recipients(sink: &Sink) -> Vec<String> {
    sink.messages().into_iter().flat_map(|m| m.to).collect()
}

#[test]
fn mx_preference_order_equal_preferences_failover_implicit_mx_and_ipv6() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port("127.0.0.2");
    let dns = Dnsmasq::start(
        dir.path(),
        "mx-host=pref.test,mx2.pref.test,20\nmx-host=pref.test,mx1.pref.test,10\n\
         mx-host=pref.test,mx3.pref.test,30\n\
         host-record=mx1.pref.test,127.0.0.2\nhost-record=mx2.pref.test,127.0.0.3\n\
         host-record=mx3.pref.test,127.0.0.4\n\
         mx-host=equal.test,a.equal.test,10\nmx-host=equal.test,b.equal.test,10\n\
         host-record=a.equal.test,127.0.0.4\nhost-record=b.equal.test,127.0.0.5\n\
         mx-host=down.test,dead.down.test,10\nmx-host=down.test,alive.down.test,20\n\
         host-record=dead.down.test,127.0.0.6\nhost-record=alive.down.test,127.0.0.2\n\
         host-record=plain.test,127.0.0.3\n\
         mx-host=v6.test,v6only.test,10\nhost-record=v6only.test,::1",
    );
    let s2 = sink_at("127.0.0.2", port);
    let s3 = sink_at("127.0.0.3", port);
    let s4 = sink_at("127.0.0.4", port);
    let s5 = sink_at("127.0.0.5", port);
    let s6 = sink_at("::1", port);
    let bounces = Sink::start("127.0.0.1");
    let mut sluice = sluice(
        dns.addr,
        port,
        &bounces,
        &[
            "pref.test",
            "equal.test",
            "down.test",
            "plain.test",
            "v6.test",
        ],
    );
    let addr = sluice.start();

    let mut mails = vec![
        mail("a@pref.test", "pref"),
        mail("b@down.test", "down"),
        mail("d@plain.test", "plain"),
        mail("e@v6.test", "v6"),
    ];
    for i in 0..16 {
        mails.push(mail(&format!("n{i}@equal.test"), &format!("equal-{i}")));
    }
    let outcomes = send_with_python(addr, 4, &mails);
    assert!(outcomes.iter().all(|o| o.ok), "{outcomes:?}");
    wait_for("every message at a sink", || {
        s2.count() + s3.count() + s4.count() + s5.count() + s6.count() == mails.len()
    });

    // The lowest preference gets the mail; the first MX refusing
    // connections (nothing on 127.0.0.6) passes to the next one.
    let mut at2 = recipients(&s2);
    at2.sort();
    assert_eq!(at2, ["a@pref.test", "b@down.test"]);
    // No MX: the domain's own A record (127.0.0.3).
    assert_eq!(recipients(&s3), ["d@plain.test"]);
    // An MX whose only address is AAAA ::1.
    assert_eq!(recipients(&s6), ["e@v6.test"]);
    // Equal preferences: both hosts get some of the 16.
    let (n4, n5) = (s4.count(), s5.count());
    assert_eq!(n4 + n5, 16);
    assert!(n4 > 0 && n5 > 0, "127.0.0.4 got {n4}, 127.0.0.5 got {n5}");
    assert!(recipients(&s4).iter().all(|r| r.ends_with("@equal.test")));

    let log = sluice.log();
    assert!(
        log.contains(&format!(
            "to=<a@pref.test>, relay=mx1.pref.test[127.0.0.2]:{port}"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("to=<e@v6.test>, relay=v6only.test[::1]:{port}")),
        "{log}"
    );
    wait_for("the queue to empty", || sluice.files_in("queue").is_empty());
    assert_eq!(bounces.count(), 0);
}

#[test]
fn a_4xx_greeting_moves_on_to_the_next_mx() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port("127.0.0.2");
    let dns = Dnsmasq::start(
        dir.path(),
        "mx-host=busy.test,greets-421.busy.test,10\nmx-host=busy.test,fine.busy.test,20\n\
         host-record=greets-421.busy.test,127.0.0.7\nhost-record=fine.busy.test,127.0.0.3",
    );
    let busy = busy_host(SocketAddr::new("127.0.0.7".parse().expect("ip"), port));
    let fine = sink_at("127.0.0.3", port);
    let bounces = Sink::start("127.0.0.1");
    let mut sluice = sluice(dns.addr, port, &bounces, &["busy.test"]);
    let addr = sluice.start();
    let outcomes = send_with_python(addr, 1, &[mail("c@busy.test", "busy")]);
    assert!(outcomes.iter().all(|o| o.ok), "{outcomes:?}");
    wait_for("the mail at the second MX", || fine.count() == 1);
    assert_eq!(recipients(&fine), ["c@busy.test"]);
    assert!(
        busy.load(Ordering::SeqCst) >= 1,
        "the busy MX was tried first"
    );
    assert!(
        sluice.log().contains(&format!(
            "to=<c@busy.test>, relay=fine.busy.test[127.0.0.3]:{port}"
        )),
        "{}",
        sluice.log()
    );
    wait_for("the queue to empty", || sluice.files_in("queue").is_empty());
}

#[test]
fn null_mx_nxdomain_and_mail_loops_bounce_with_their_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port("127.0.0.2");
    // Sluice's hostname in Instance configs is mx.sluice.test, and it
    // listens on 127.0.0.1.
    let dns = Dnsmasq::start(
        dir.path(),
        "mx-host=nullmx.test,.,0\n\
         mx-host=loop.test,mx.sluice.test,10\nhost-record=mx.sluice.test,127.0.0.9\n\
         mx-host=loopaddr.test,me.loopaddr.test,10\nhost-record=me.loopaddr.test,127.0.0.1\n\
         mx-host=backup.test,mx.sluice.test,20\nmx-host=backup.test,primary.backup.test,10\n\
         host-record=primary.backup.test,127.0.0.2",
    );
    let primary = sink_at("127.0.0.2", port);
    let elsewhere = sink_at("127.0.0.9", port);
    let bounces = Sink::start("127.0.0.1");
    let mut sluice = sluice(
        dns.addr,
        port,
        &bounces,
        &[
            "nullmx.test",
            "nosuch.test",
            "loop.test",
            "loopaddr.test",
            "backup.test",
        ],
    );
    let addr = sluice.start();
    let outcomes = send_with_python(
        addr,
        1,
        &[
            mail("a@nullmx.test", "nullmx"),
            mail("b@nosuch.test", "nosuch"),
            mail("c@loop.test", "loop"),
            mail("d@loopaddr.test", "loopaddr"),
            mail("e@backup.test", "backup"),
        ],
    );
    assert!(outcomes.iter().all(|o| o.ok), "{outcomes:?}");
    wait_for("four bounces", || bounces.count() == 4);
    wait_for("the backup domain's mail at its primary", || {
        primary.count() == 1
    });
    assert_eq!(recipients(&primary), ["e@backup.test"]);
    assert_eq!(elsewhere.count(), 0);

    let log = sluice.log();
    for (rcpt, dsn, reason) in [
        (
            "a@nullmx.test",
            "5.1.10",
            "Recipient address rejected: domain nullmx.test does not accept mail (null MX)",
        ),
        (
            "b@nosuch.test",
            "5.1.2",
            "Host or domain name not found. Name service error for name=nosuch.test type=MX: Host not found",
        ),
        ("c@loop.test", "5.4.6", "mail for loop.test loops back to myself"),
        ("d@loopaddr.test", "5.4.6", "mail for loopaddr.test loops back to myself"),
    ] {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("to=<{rcpt}>")))
            .unwrap_or_else(|| panic!("no delivery line for {rcpt}:\n{log}"));
        assert!(
            line.contains("relay=none, ")
                && line.contains(&format!("dsn={dsn}, status=bounced ({reason})")),
            "{line}"
        );
        let dsn_mail = bounces
            .messages()
            .into_iter()
            .find(|m| String::from_utf8_lossy(&m.data).contains(rcpt))
            .unwrap_or_else(|| panic!("no DSN for {rcpt}"));
        assert_eq!(dsn_mail.from, "", "bounces come from <>");
        assert_eq!(dsn_mail.to, ["sender@client.test"]);
        let text = String::from_utf8_lossy(&dsn_mail.data);
        assert!(text.contains(&format!("Status: {dsn}")), "{text}");
    }
    // Never delivered to ourselves: smtpd took only the five test
    // messages and the four bounces, nothing relayed back in. The agent
    // logs status=sent after the sink has the message: wait for the queue
    // to empty first.
    wait_for("the queue to empty", || sluice.files_in("queue").is_empty());
    assert_eq!(sluice.log_count("status=sent"), 5, "{}", sluice.log());
}

#[test]
fn servfail_and_timeouts_defer_while_other_domains_are_delivered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port("127.0.0.2");
    let dns = Dnsmasq::start(
        dir.path(),
        "mx-host=fine.test,mx.fine.test,10\nhost-record=mx.fine.test,127.0.0.2",
    );
    let front = Front::start(dns.addr);
    let sink = sink_at("127.0.0.2", port);
    let bounces = Sink::start("127.0.0.1");
    let mut sluice = sluice(
        front.addr,
        port,
        &bounces,
        &["servfail.test", "timeout.test", "fine.test"],
    );
    let addr = sluice.start();
    let outcomes = send_with_python(
        addr,
        1,
        &[
            mail("a@timeout.test", "timeout"),
            mail("b@servfail.test", "servfail"),
            mail("c@fine.test", "fine"),
        ],
    );
    assert!(outcomes.iter().all(|o| o.ok), "{outcomes:?}");
    wait_for("the fine domain's mail", || sink.count() == 1);
    assert_eq!(recipients(&sink), ["c@fine.test"]);
    wait_for("both DNS failures deferred", || {
        let log = sluice.log();
        ["a@timeout.test", "b@servfail.test"].iter().all(|r| {
            log.lines().any(|l| {
                l.contains(&format!("to=<{r}>"))
                    && l.contains("dsn=4.4.3, status=deferred (Host or domain name not found.")
            })
        })
    });
    let log = sluice.log();
    assert!(
        log.contains("name=servfail.test type=MX: Host not found, try again"),
        "{log}"
    );
    assert!(log.contains("(udp): timed out"), "{log}");
    let (code, listing, stderr) = sluice.queue_tool(&["list"], None);
    assert_eq!(code, 0, "{stderr}");
    assert!(listing.contains("a@timeout.test"), "{listing}");
    assert!(listing.contains("b@servfail.test"), "{listing}");
    assert!(listing.contains("try again"), "{listing}");
    assert!(!listing.contains("c@fine.test"), "{listing}");
    assert_eq!(bounces.count(), 0, "DNS failures never bounce");
    assert_eq!(sluice.files_in("queue").len(), 2);
}

/// Issue 9 defect 16: `x@bücher.test` under SMTPUTF8 is routed by its
/// A-labels (`xn--bcher-kva.test`, MX from DNS) and delivered, with the
/// address as the client wrote it; a domain without an ASCII form is
/// refused at RCPT.
#[test]
fn an_international_domain_is_delivered_through_its_a_label_mx() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port("127.0.0.2");
    let dns = Dnsmasq::start(
        dir.path(),
        "mx-host=xn--bcher-kva.test,mx.xn--bcher-kva.test,10\n\
         host-record=mx.xn--bcher-kva.test,127.0.0.2",
    );
    let mx = sink_at("127.0.0.2", port);
    let bounces = Sink::start("127.0.0.1");
    let mut sluice = sluice(dns.addr, port, &bounces, &["xn--bcher-kva.test"]);
    let addr = sluice.start();
    let mut client = Raw::connect(addr);
    assert!(client.command("EHLO client.test").contains("SMTPUTF8"));
    let mail = client.command("MAIL FROM:<sender@client.test> SMTPUTF8");
    assert!(mail.starts_with("250"), "{mail}");
    let rcpt = client.command("RCPT TO:<x@Bücher.test>");
    assert!(rcpt.starts_with("250"), "{rcpt}");
    let bad = client.command("RCPT TO:<y@\u{301}bücher.test>");
    assert!(bad.starts_with("501 5.1.3"), "{bad}");
    assert!(client.command("DATA").starts_with("354"));
    client.send(&message("idna", &["hello"]));
    let queued = client.command(".");
    assert!(queued.starts_with("250"), "{queued}");
    wait_for("the mail at the MX of the A-label", || mx.count() == 1);
    assert_eq!(recipients(&mx), ["x@Bücher.test"]);
    wait_for("the delivery to be logged", || {
        sluice.log_count("status=sent") == 1
    });
    assert!(
        sluice
            .log()
            .contains(&format!("relay=mx.xn--bcher-kva.test[127.0.0.2]:{port}")),
        "{}",
        sluice.log()
    );
    assert_eq!(bounces.count(), 0);
}

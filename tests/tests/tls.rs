//! End-to-end tests of STARTTLS on the way out (issue #4): the real
//! master, smtpd, qmgr and smtp agents relaying to peers in this file
//! that offer STARTTLS with certificates made here by a test CA (rcgen),
//! offer no STARTTLS, or stall the handshake.
//!
//! - `may` (the default) uses TLS when offered, and says so in the log;
//!   after a failed handshake it delivers in plain text.
//! - `verify` delivers to a certificate valid for the host name and
//!   defers `4.7.5` one issued for another name.
//! - `encrypt` defers `4.7.4` against a server without STARTTLS.
//! - A peer that never finishes the handshake is given up on after
//!   `smtp.tls_timeout` while mail to another destination is delivered.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use sluice_e2e::sink::Sink;
use sluice_e2e::{message, send_with_python, wait_for, Instance, Mail};

/// A test CA.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Sluice test CA");
        let key = KeyPair::generate().expect("CA key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    /// Writes the CA certificate (PEM) for `smtp.tls_ca_file`.
    fn write_pem(&self, path: &Path) {
        std::fs::write(path, self.issuer.pem()).expect("write CA file");
    }

    /// A server configuration with a certificate for `name`.
    fn server(&self, name: &str) -> Arc<ServerConfig> {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .signed_by(&key, &self.issuer)
            .expect("certificate");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone(), self.issuer.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .expect("server config");
        Arc::new(config)
    }
}

/// How a [`TlsPeer`] behaves.
#[derive(Clone)]
enum Mode {
    /// Offers STARTTLS and completes the handshake with this config.
    StartTls(Arc<ServerConfig>),
    /// Offers no STARTTLS.
    Plain,
    /// Offers STARTTLS, says 220 to it, then neither reads nor writes.
    Stall,
    /// Offers STARTTLS, says 220 to it, then answers the ClientHello with
    /// plain text and hangs up.
    Broken,
}

/// One message as a [`TlsPeer`] received it.
#[derive(Debug, Clone)]
struct Got {
    to: Vec<String>,
    tls: bool,
}

struct Shared {
    got: Mutex<Vec<Got>>,
    stop: AtomicBool,
}

/// An SMTP peer on 127.0.0.1 that the tests control.
struct TlsPeer {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl TlsPeer {
    fn start(mode: Mode) -> TlsPeer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared {
            got: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let s = Arc::clone(&shared);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let (s, mode) = (Arc::clone(&s), mode.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &mode, &s);
                });
            }
        });
        TlsPeer { addr, shared }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn got(&self) -> Vec<Got> {
        self.shared.got.lock().expect("lock").clone()
    }
}

impl Drop for TlsPeer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// What ended the command loop.
enum Step {
    Quit,
    StartTls,
}

fn read_line(stream: &mut impl Read) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        // Byte by byte: nothing after STARTTLS may be read as plain text.
        if stream.read(&mut byte)? == 0 {
            return Ok(None);
        }
        line.push(byte[0]);
        if byte[0] == b'\n' {
            return Ok(Some(String::from_utf8_lossy(&line).trim_end().to_owned()));
        }
    }
}

fn commands(
    stream: &mut (impl Read + Write),
    offer_starttls: bool,
    tls: bool,
    shared: &Shared,
) -> io::Result<Step> {
    let mut to = Vec::new();
    loop {
        let Some(line) = read_line(stream)? else {
            return Ok(Step::Quit);
        };
        let upper = line.to_ascii_uppercase();
        let reply = if upper.starts_with("EHLO") {
            let starttls = if offer_starttls {
                "250-STARTTLS\r\n"
            } else {
                ""
            };
            format!("250-tls.test\r\n250-PIPELINING\r\n{starttls}250 8BITMIME\r\n")
        } else if upper == "STARTTLS" && offer_starttls {
            stream.write_all(b"220 2.0.0 Ready to start TLS\r\n")?;
            return Ok(Step::StartTls);
        } else if upper.starts_with("MAIL") || upper == "RSET" {
            to.clear();
            "250 2.1.0 Ok\r\n".to_owned()
        } else if upper.starts_with("RCPT TO:") {
            to.push(line[8..].trim_matches(['<', '>', ' ']).to_owned());
            "250 2.1.5 Ok\r\n".to_owned()
        } else if upper == "DATA" {
            stream.write_all(b"354 go ahead\r\n")?;
            while read_line(stream)?.is_some_and(|l| l != ".") {}
            shared.got.lock().expect("lock").push(Got {
                to: std::mem::take(&mut to),
                tls,
            });
            "250 2.0.0 Ok: queued\r\n".to_owned()
        } else if upper == "QUIT" {
            stream.write_all(b"221 2.0.0 Bye\r\n")?;
            return Ok(Step::Quit);
        } else {
            "502 5.5.2 what?\r\n".to_owned()
        };
        stream.write_all(reply.as_bytes())?;
    }
}

fn serve(mut tcp: TcpStream, mode: &Mode, shared: &Shared) -> io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(60)))?;
    tcp.write_all(b"220 tls.test ESMTP\r\n")?;
    let offer = !matches!(mode, Mode::Plain);
    if let Step::Quit = commands(&mut tcp, offer, false, shared)? {
        return Ok(());
    }
    match mode {
        Mode::StartTls(config) => {
            let conn = ServerConnection::new(Arc::clone(config)).map_err(io::Error::other)?;
            let mut tls = StreamOwned::new(conn, tcp);
            commands(&mut tls, false, true, shared)?;
        }
        // Hold the connection without a word until the test ends (the
        // agent gives up first, or the socket's owner goes away).
        Mode::Stall => {
            while !shared.stop.load(Ordering::SeqCst) {
                std::thread::park_timeout(Duration::from_millis(100));
            }
        }
        Mode::Broken => tcp.write_all(b"this is not TLS\r\n")?,
        Mode::Plain => {}
    }
    Ok(())
}

fn mail(to: &str, subject: &str) -> Mail {
    Mail {
        from: "sender@client.test".into(),
        to: vec![to.to_owned()],
        data: message(subject, &["hello over TLS?"]),
    }
}

/// The log's delivery line for `rcpt`, once there is one with `status`.
fn wait_line(sluice: &Instance, rcpt: &str, status: &str) -> String {
    let find = || {
        sluice
            .log()
            .lines()
            .find(|l| l.contains(&format!("to=<{rcpt}>")) && l.contains(status))
            .map(str::to_owned)
    };
    wait_for(&format!("{status} for {rcpt}"), || find().is_some());
    find().unwrap_or_default()
}

#[test]
fn may_uses_starttls_when_offered() {
    let ca = Ca::new();
    let peer = TlsPeer::start(Mode::StartTls(ca.server("localhost")));
    let mut sluice = Instance::new(&format!(
        "relay_domains: [\"tls.test\"],\n    routes: {{ \"tls.test\": \"[127.0.0.1]:{}\" }},",
        peer.port()
    ));
    let addr = sluice.start();
    let sent = send_with_python(addr, 1, &[mail("a@tls.test", "may")]);
    assert!(sent[0].ok, "{:?}", sent[0]);
    let line = wait_line(&sluice, "a@tls.test", "status=sent");
    assert!(line.contains("dsn=2.0.0"), "{line}");
    let got = peer.got();
    assert_eq!(got.len(), 1);
    assert!(got[0].tls, "the message went over TLS");
    assert_eq!(got[0].to, ["a@tls.test"]);
    let log = sluice.log();
    let shape = format!(
        "Untrusted TLS connection established to 127.0.0.1[127.0.0.1]:{}: TLSv1.3 with cipher TLS13_",
        peer.port()
    );
    assert!(log.contains(&shape), "{log}");
}

#[test]
fn verify_delivers_to_the_right_name_and_defers_a_wrong_one() {
    let ca = Ca::new();
    let good = TlsPeer::start(Mode::StartTls(ca.server("localhost")));
    let bad = TlsPeer::start(Mode::StartTls(ca.server("wrong.test")));
    let mut sluice = Instance::new(&format!(
        "relay_domains: [\"good.test\", \"bad.test\"],\n    \
         routes: {{ \"good.test\": \"[localhost]:{}\", \"bad.test\": \"[localhost]:{}\" }},\n    \
         smtp: ( tls_policies: {{ \"localhost\": \"verify\" }}, tls_ca_file: \"CA_FILE\" ),\n    \
         queue: ( retry_min: \"1h\", retry_max: \"2h\" ),",
        good.port(),
        bad.port()
    ));
    let ca_file = sluice.path().join("ca.pem");
    ca.write_pem(&ca_file);
    let config = std::fs::read_to_string(&sluice.config_path).expect("config");
    let config = config.replace("CA_FILE", &ca_file.display().to_string());
    std::fs::write(&sluice.config_path, config).expect("config");
    let addr = sluice.start();
    let sent = send_with_python(
        addr,
        1,
        &[
            mail("a@good.test", "verified"),
            mail("b@bad.test", "wrong name"),
        ],
    );
    assert!(sent.iter().all(|o| o.ok), "{sent:?}");

    let line = wait_line(&sluice, "a@good.test", "status=sent");
    assert!(line.contains("relay=localhost[127.0.0.1]"), "{line}");
    assert_eq!(good.got().len(), 1);
    assert!(good.got()[0].tls);
    let log = sluice.log();
    let shape = format!(
        "Verified TLS connection established to localhost[127.0.0.1]:{}: TLSv1.",
        good.port()
    );
    assert!(log.contains(&shape), "{log}");

    let line = wait_line(&sluice, "b@bad.test", "status=deferred");
    assert!(line.contains("dsn=4.7.5"), "{line}");
    assert!(line.contains("TLS handshake failed"), "{line}");
    assert!(bad.got().is_empty(), "nothing sent to a wrong certificate");
    // "status=sent" is logged before the delivered file is removed: wait
    // for its "removed" line, then only the deferred one may be left.
    let good_id = line_queue_id(&wait_line(&sluice, "a@good.test", "status=sent"));
    let removed = format!("{good_id}: removed");
    wait_for("the delivered file's removal", || {
        sluice.log().contains(&removed)
    });
    assert_eq!(sluice.files_in("queue").len(), 1, "the deferred one waits");
}

/// The queue ID of a `QUEUEID: to=<...>` log line.
fn line_queue_id(line: &str) -> String {
    let before_to = line.split(": to=<").next().unwrap_or_default();
    before_to.rsplit(' ').next().unwrap_or_default().to_owned()
}

#[test]
fn encrypt_defers_when_starttls_is_not_offered() {
    let peer = TlsPeer::start(Mode::Plain);
    let hop = format!("[127.0.0.1]:{}", peer.port());
    let mut sluice = Instance::new(&format!(
        "relay_domains: [\"plain.test\"],\n    routes: {{ \"plain.test\": \"{hop}\" }},\n    \
         smtp: ( tls_policies: {{ \"{hop}\": \"encrypt\" }} ),\n    \
         queue: ( retry_min: \"1h\", retry_max: \"2h\" ),"
    ));
    let addr = sluice.start();
    let sent = send_with_python(addr, 1, &[mail("c@plain.test", "must encrypt")]);
    assert!(sent[0].ok);
    let line = wait_line(&sluice, "c@plain.test", "status=deferred");
    assert!(line.contains("dsn=4.7.4"), "{line}");
    assert!(
        line.contains("TLS is required, but was not offered by host"),
        "{line}"
    );
    assert!(peer.got().is_empty());
    let log = sluice.log();
    let shape = format!(
        "127.0.0.1[127.0.0.1]:{}: plain text session (no STARTTLS offered)",
        peer.port()
    );
    assert!(log.contains(&shape), "{log}");
}

#[test]
fn a_stalled_handshake_times_out_while_other_mail_moves() {
    let stalled = TlsPeer::start(Mode::Stall);
    let sink = Sink::start("127.0.0.1");
    let hop = format!("[127.0.0.1]:{}", stalled.port());
    let mut sluice = Instance::new(&format!(
        "relay_domains: [\"stall.test\", \"ok.test\"],\n    \
         routes: {{ \"stall.test\": \"{hop}\", \"ok.test\": \"{}\" }},\n    \
         smtp: ( tls_timeout: \"2s\", tls_policies: {{ \"{hop}\": \"encrypt\" }} ),\n    \
         queue: ( smtp_agents: 2, retry_min: \"1h\", retry_max: \"2h\" ),",
        sink.route()
    ));
    let addr = sluice.start();
    let sent = send_with_python(addr, 1, &[mail("s@stall.test", "stalled")]);
    assert!(sent[0].ok);
    let sent = send_with_python(addr, 1, &[mail("o@ok.test", "other")]);
    assert!(sent[0].ok);
    wait_for("the other message at the sink", || sink.count() == 1);
    let line = wait_line(&sluice, "s@stall.test", "status=deferred");
    assert!(line.contains("dsn=4.4.2"), "{line}");
    assert!(line.contains("TLS handshake timed out after 2s"), "{line}");
    assert!(stalled.got().is_empty());
    assert_eq!(sink.messages()[0].to, ["o@ok.test"]);
}

#[test]
fn may_falls_back_to_plain_text_after_a_failed_handshake() {
    let peer = TlsPeer::start(Mode::Broken);
    let mut sluice = Instance::new(&format!(
        "relay_domains: [\"tls.test\"],\n    routes: {{ \"tls.test\": \"[127.0.0.1]:{}\" }},",
        peer.port()
    ));
    let addr = sluice.start();
    let sent = send_with_python(addr, 1, &[mail("f@tls.test", "fallback")]);
    assert!(sent[0].ok);
    let line = wait_line(&sluice, "f@tls.test", "status=sent");
    assert!(line.contains("dsn=2.0.0"), "{line}");
    let got = peer.got();
    assert_eq!(got.len(), 1);
    assert!(!got[0].tls, "delivered in plain text");
    let log = sluice.log();
    let shape = format!(
        "127.0.0.1[127.0.0.1]:{}: plain text session (TLS handshake failed; retried in plain text)",
        peer.port()
    );
    assert!(log.contains(&shape), "{log}");
}

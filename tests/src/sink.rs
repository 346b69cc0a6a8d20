//! A counting SMTP sink on loopback that the tests control: it records
//! every message it accepts (envelope and exact bytes), counts connections,
//! and answers RCPT and end-of-data with replies the test sets at run time
//! (e.g. 451 for a while, then 250). It may offer DSN (RFC 3461) and
//! records the parameters of MAIL and of each accepted RCPT; it speaks LMTP
//! to a client that says LHLO (one reply per recipient after the data).
//!
//! # Must never
//! Bind anything but a loopback address.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One accepted message.
#[derive(Debug, Clone)]
pub struct Received {
    /// MAIL FROM.
    pub from: String,
    /// Accepted RCPT TOs.
    pub to: Vec<String>,
    /// The content, dot-unstuffed, CRLF line ends.
    pub data: Vec<u8>,
    /// Which connection (1-based) carried it.
    pub connection: usize,
    /// The MAIL command's parameters (after the path), e.g. `SMTPUTF8`.
    pub mail_params: String,
    /// Each accepted RCPT's parameters, e.g. `NOTIFY=SUCCESS`.
    pub rcpt_params: Vec<String>,
}

type RcptRule = Box<dyn Fn(&str) -> String + Send>;

struct Shared {
    messages: Mutex<Vec<Received>>,
    connections: AtomicUsize,
    rcpt_rule: Mutex<RcptRule>,
    data_reply: Mutex<String>,
    dsn: AtomicBool,
    smtputf8: AtomicBool,
    stop: AtomicBool,
}

/// The running sink; it stops when dropped.
pub struct Sink {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Sink {
    /// Listens on `ip` (a loopback address), port chosen by the kernel;
    /// accepts everything until told otherwise.
    pub fn start(ip: &str) -> Sink {
        let ip: IpAddr = ip.parse().expect("ip");
        Sink::start_on(SocketAddr::new(ip, 0))
    }

    /// Listens on `addr` (a loopback address and a chosen port, e.g. the
    /// same port on 127.0.0.2 and 127.0.0.3 to play two MX hosts).
    pub fn start_on(addr: SocketAddr) -> Sink {
        assert!(addr.ip().is_loopback(), "sinks only on loopback");
        let listener = TcpListener::bind(addr).expect("bind sink");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared {
            messages: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            rcpt_rule: Mutex::new(Box::new(|_| "250 2.1.5 Ok".to_owned())),
            data_reply: Mutex::new("250 2.0.0 Ok: queued".to_owned()),
            dsn: AtomicBool::new(false),
            smtputf8: AtomicBool::new(true),
            stop: AtomicBool::new(false),
        });
        let s = Arc::clone(&shared);
        listener.set_nonblocking(true).expect("nonblocking");
        std::thread::spawn(move || {
            while !s.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let n = s.connections.fetch_add(1, Ordering::SeqCst) + 1;
                        let s = Arc::clone(&s);
                        std::thread::spawn(move || {
                            let _ = serve(stream, &s, n);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Sink { addr, shared }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A `routes` value pointing at this sink.
    pub fn route(&self) -> String {
        format!("[{}]:{}", self.addr.ip(), self.addr.port())
    }

    /// Sets the reply to RCPT TO, per address.
    pub fn on_rcpt(&self, rule: impl Fn(&str) -> String + Send + 'static) {
        *self.shared.rcpt_rule.lock().expect("lock") = Box::new(rule);
    }

    /// Sets the reply after the data.
    pub fn on_data(&self, reply: &str) {
        *self.shared.data_reply.lock().expect("lock") = reply.to_owned();
    }

    /// Whether EHLO (and LHLO) offer DSN from now on (not by default).
    pub fn offer_dsn(&self, on: bool) {
        self.shared.dsn.store(on, Ordering::SeqCst);
    }

    /// Whether EHLO (and LHLO) offer SMTPUTF8 from now on (by default, yes).
    pub fn offer_smtputf8(&self, on: bool) {
        self.shared.smtputf8.store(on, Ordering::SeqCst);
    }

    /// Everything accepted so far.
    pub fn messages(&self) -> Vec<Received> {
        self.shared.messages.lock().expect("lock").clone()
    }

    /// How many messages were accepted so far.
    pub fn count(&self) -> usize {
        self.shared.messages.lock().expect("lock").len()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(stream: TcpStream, shared: &Shared, connection: usize) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_nodelay(true)?;
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    out.write_all(b"220 sink.test ESMTP test sink\r\n")?;
    let mut from = String::new();
    let mut to = Vec::new();
    let mut mail_params = String::new();
    let mut rcpt_params = Vec::new();
    let mut lmtp = false;
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_owned();
        let upper = text.to_ascii_uppercase();
        let reply = if upper.starts_with("EHLO") || upper.starts_with("LHLO") {
            lmtp = upper.starts_with("LHLO");
            let dsn = if shared.dsn.load(Ordering::SeqCst) {
                "250-DSN\r\n"
            } else {
                ""
            };
            let utf8 = if shared.smtputf8.load(Ordering::SeqCst) {
                "250-SMTPUTF8\r\n"
            } else {
                ""
            };
            format!("250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n{utf8}{dsn}250-SIZE 104857600\r\n250 ENHANCEDSTATUSCODES")
        } else if upper.starts_with("HELO") {
            "250 sink.test".to_owned()
        } else if upper.starts_with("MAIL FROM:") {
            from = path(&text[10..]);
            mail_params = params(&text[10..]);
            to.clear();
            rcpt_params.clear();
            "250 2.1.0 Ok".to_owned()
        } else if upper.starts_with("RCPT TO:") {
            let rcpt = path(&text[8..]);
            let reply = (shared.rcpt_rule.lock().expect("lock"))(&rcpt);
            if reply.starts_with('2') {
                to.push(rcpt);
                rcpt_params.push(params(&text[8..]));
            }
            reply
        } else if upper == "DATA" {
            if to.is_empty() {
                "554 5.5.1 Error: no valid recipients".to_owned()
            } else {
                out.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")?;
                let data = read_data(&mut reader)?;
                let reply = shared.data_reply.lock().expect("lock").clone();
                let replies = if lmtp { to.len() } else { 1 };
                if reply.starts_with('2') {
                    shared.messages.lock().expect("lock").push(Received {
                        from: from.clone(),
                        to: std::mem::take(&mut to),
                        data,
                        connection,
                        mail_params: mail_params.clone(),
                        rcpt_params: std::mem::take(&mut rcpt_params),
                    });
                }
                vec![reply; replies].join("\r\n")
            }
        } else if upper == "RSET" {
            to.clear();
            rcpt_params.clear();
            "250 2.0.0 Ok".to_owned()
        } else if upper == "NOOP" {
            "250 2.0.0 Ok".to_owned()
        } else if upper == "QUIT" {
            out.write_all(b"221 2.0.0 Bye\r\n")?;
            return Ok(());
        } else {
            "502 5.5.2 Error: command not recognized".to_owned()
        };
        // One write per reply: a reply split over two segments waits for
        // a delayed ACK (Nagle), which would slow every test down.
        out.write_all(format!("{reply}\r\n").as_bytes())?;
    }
}

/// What follows the `<path>` of a MAIL or RCPT argument.
fn params(arg: &str) -> String {
    arg.trim()
        .split_once('>')
        .map_or("", |(_, rest)| rest)
        .trim()
        .to_owned()
}

fn path(arg: &str) -> String {
    let arg = arg.trim();
    let inner = arg
        .strip_prefix('<')
        .and_then(|a| a.split_once('>'))
        .map(|(p, _)| p)
        .unwrap_or(arg);
    inner.to_owned()
}

fn read_data(reader: &mut BufReader<TcpStream>) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == b".\r\n" {
            return Ok(data);
        }
        let unstuffed = if line.starts_with(b".") {
            &line[1..]
        } else {
            &line[..]
        };
        data.extend_from_slice(unstuffed);
    }
}

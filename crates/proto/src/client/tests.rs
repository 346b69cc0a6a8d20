//! Unit tests of the client session: in memory against the real server
//! session and against small scripted servers, on a simulated clock
//! (quinn-proto's `Pair`: each side's output is the other's input).

use std::net::SocketAddr;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::envelope::{BodyType, Notify, Recipient, Ret};
use crate::server;

/// The only clock read: a base instant, moved by hand from there.
#[allow(clippy::disallowed_methods)]
fn start() -> Instant {
    Instant::now()
}

fn rcpt(address: &str) -> Recipient {
    Recipient {
        address: address.into(),
        notify: None,
        orcpt: None,
    }
}

fn params(recipients: &[&str], content: &[u8]) -> Params {
    Params {
        helo_name: "out.example.net".into(),
        envelope: Envelope {
            sender: "alice@example.net".into(),
            recipients: recipients.iter().map(|r| rcpt(r)).collect(),
            ..Envelope::default()
        },
        message_size: content.len() as u64,
        timeouts: Timeouts::uniform(Duration::from_secs(60)),
        protocol: Protocol::Smtp,
        tls: Tls::Off,
        keep_open: false,
    }
}

/// The far side of the pair.
trait Server {
    /// Bytes from the client; returns the bytes to send back and whether
    /// the server closed.
    fn feed(&mut self, bytes: &[u8], now: Instant) -> (Vec<u8>, bool);
    /// Bytes the server sends first, and whether it closed.
    fn start(&mut self, now: Instant) -> (Vec<u8>, bool) {
        self.feed(b"", now)
    }
    /// Its timer.
    fn timeout(&mut self, _now: Instant) -> (Vec<u8>, bool) {
        (Vec::new(), false)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

/// The real server session, committing every message it is asked to.
struct Real {
    session: server::Session,
    commits: Vec<server::Commit>,
}

impl Real {
    fn new(trusted: bool, now: Instant) -> Self {
        let config = server::Config {
            hostname: "mx.example.org".into(),
            local_domains: vec!["example.org".into()],
            ..server::Config::default()
        };
        let peer = server::Peer {
            addr: "192.0.2.7:40000".parse::<SocketAddr>().unwrap(),
            trusted,
            hostname: None,
        };
        Real {
            session: server::Session::new(Arc::new(config), peer, now),
            commits: Vec::new(),
        }
    }

    fn drain(&mut self, now: Instant) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let mut closed = false;
        while let Some(o) = self.session.poll_output() {
            match o {
                server::Output::Send(b) => out.extend_from_slice(&b),
                server::Output::Ask(server::Ask::Commit(c)) => {
                    self.commits.push(c);
                    let queue_id = format!("Q{}", self.commits.len());
                    self.session
                        .handle_commit(server::CommitAnswer::Queued { queue_id }, now);
                }
                server::Output::Ask(server::Ask::Etrn { .. }) => {
                    self.session
                        .handle_etrn(server::EtrnAnswer::Unavailable, now);
                }
                server::Output::Ask(server::Ask::Check(_)) => {
                    self.session.handle_check(server::CheckAnswer::Accept, now);
                }
                server::Output::Log(_) => {}
                server::Output::Close => closed = true,
            }
        }
        (out, closed)
    }
}

impl Server for Real {
    fn feed(&mut self, bytes: &[u8], now: Instant) -> (Vec<u8>, bool) {
        self.session.handle_input(bytes, now);
        self.drain(now)
    }
    fn timeout(&mut self, now: Instant) -> (Vec<u8>, bool) {
        self.session.handle_timeout(now);
        self.drain(now)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.session.poll_timeout()
    }
}

/// A server that answers by rule: the rule gets each command line (and
/// `"."` at the end of the content) and returns the reply, CRLF included,
/// or `""` to stay silent. `"354..."` to DATA starts content.
struct Scripted {
    greeting: String,
    rule: Box<dyn FnMut(&str) -> String>,
    line: Vec<u8>,
    in_data: bool,
    /// Content as received, still stuffed.
    data: Vec<u8>,
    /// Every command line, and the chunks of writes that held them.
    commands: Vec<String>,
    writes: Vec<Vec<u8>>,
}

impl Scripted {
    fn new(greeting: &str, rule: impl FnMut(&str) -> String + 'static) -> Self {
        Scripted {
            greeting: greeting.into(),
            rule: Box::new(rule),
            line: Vec::new(),
            in_data: false,
            data: Vec::new(),
            commands: Vec::new(),
            writes: Vec::new(),
        }
    }
}

impl Server for Scripted {
    fn start(&mut self, _now: Instant) -> (Vec<u8>, bool) {
        (std::mem::take(&mut self.greeting).into_bytes(), false)
    }
    fn feed(&mut self, bytes: &[u8], _now: Instant) -> (Vec<u8>, bool) {
        if !self.in_data {
            self.writes.push(bytes.to_vec());
        }
        let mut out = String::new();
        for &b in bytes {
            self.line.push(b);
            if b != b'\n' {
                continue;
            }
            let line = String::from_utf8(std::mem::take(&mut self.line)).unwrap();
            if self.in_data {
                if line == ".\r\n" {
                    self.in_data = false;
                    out.push_str(&(self.rule)("."));
                } else {
                    self.data.extend_from_slice(line.as_bytes());
                }
                continue;
            }
            let cmd = line.trim_end().to_string();
            self.commands.push(cmd.clone());
            let reply = (self.rule)(&cmd);
            if cmd == "DATA" && reply.starts_with("354") {
                self.in_data = true;
            }
            out.push_str(&reply);
        }
        let closed = self.commands.last().is_some_and(|c| c == "QUIT");
        (out.into_bytes(), closed)
    }
}

/// Replies of a plain, polite server; `ehlo` is the EHLO reply.
fn polite(ehlo: &'static str) -> impl FnMut(&str) -> String {
    move |cmd: &str| {
        let verb = cmd
            .split([' ', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => ehlo.to_string(),
            "HELO" => "250 mx\r\n".into(),
            "MAIL" => "250 2.1.0 Ok\r\n".into(),
            "RCPT" => "250 2.1.5 Ok\r\n".into(),
            "DATA" => "354 go\r\n".into(),
            "." => "250 2.0.0 Ok: queued as X\r\n".into(),
            "QUIT" => "221 2.0.0 Bye\r\n".into(),
            "RSET" => "250 2.0.0 Ok\r\n".into(),
            _ => "502 5.5.1 no\r\n".into(),
        }
    }
}

const EHLO_PIPE: &str = "250-mx\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 8BITMIME\r\n";
const EHLO_PLAIN: &str = "250-mx\r\n250 SIZE 1000\r\n";

/// What a run of the pair gives.
struct Run {
    outcomes: Option<Vec<RcptOutcome>>,
    /// Everything the client wrote.
    sent: Vec<u8>,
    client_closed: bool,
    /// Times `Done` came.
    dones: usize,
}

/// Runs client and server against each other; server bytes reach the client
/// cut into pieces of the sizes in `splits` (cyclically; empty: whole).
fn run<S: Server>(
    server: &mut S,
    p: Params,
    content: &[u8],
    splits: &[usize],
    now: Instant,
) -> Run {
    let mut client = Session::new(p, now);
    let (first, server_closed) = server.start(now);
    run_with(
        server,
        &mut client,
        first,
        server_closed,
        content,
        splits,
        now,
    )
}

/// As [`run`], on a session that exists already, the server having just
/// sent `first`.
fn run_with<S: Server>(
    server: &mut S,
    client: &mut Session,
    first: Vec<u8>,
    mut server_closed: bool,
    content: &[u8],
    splits: &[usize],
    mut now: Instant,
) -> Run {
    let mut r = Run {
        outcomes: None,
        sent: Vec::new(),
        client_closed: false,
        dones: 0,
    };
    let mut split_at = 0;
    let mut to_client = first;
    for _round in 0..10_000 {
        // Server to client, in pieces.
        let mut rest = &to_client[..];
        while !rest.is_empty() {
            let n = if splits.is_empty() {
                rest.len()
            } else {
                split_at += 1;
                splits[(split_at - 1) % splits.len()].clamp(1, rest.len())
            };
            client.handle_input(&rest[..n], now);
            rest = &rest[n..];
        }
        to_client = Vec::new();
        if server_closed && !client.is_closed() {
            client.handle_disconnect(now);
        }
        // Client to server.
        let mut to_server = Vec::new();
        while let Some(o) = client.poll_output() {
            match o {
                Output::Send(b) => to_server.extend_from_slice(&b),
                Output::Content => {
                    let mut chunk = Vec::new();
                    while !client.next_content_chunk(content, &mut chunk, now) {}
                    to_server.extend_from_slice(&chunk);
                }
                Output::Done(o) => {
                    r.dones += 1;
                    r.outcomes = Some(o);
                }
                Output::Close => r.client_closed = true,
                Output::StartTls => panic!("no TLS in this pair"),
            }
        }
        r.sent.extend_from_slice(&to_server);
        if !to_server.is_empty() && !server_closed {
            let (bytes, closed) = server.feed(&to_server, now);
            to_client = bytes;
            server_closed |= closed;
        }
        if r.client_closed {
            return r;
        }
        if to_client.is_empty() {
            // Quiet: move the clock to the next timer.
            let next = [client.poll_timeout(), server.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(t) = next else {
                return r;
            };
            now = now.max(t);
            client.handle_timeout(now);
            let (bytes, closed) = server.timeout(now);
            to_client = bytes;
            server_closed |= closed;
        }
    }
    panic!("the pair did not settle");
}

fn statuses(r: &Run) -> Vec<(Status, String)> {
    r.outcomes
        .as_ref()
        .expect("outcomes")
        .iter()
        .map(|o| (o.status, o.dsn.to_string()))
        .collect()
}

fn text(r: &Run) -> String {
    String::from_utf8_lossy(&r.sent).into_owned()
}

const CONTENT: &[u8] = b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nlast\r\n";

#[test]
fn delivers_through_the_real_server_pipelined_with_exact_content() {
    let now = start();
    let mut server = Real::new(false, now);
    let r = run(
        &mut server,
        params(&["a@example.org", "b@example.org"], CONTENT),
        CONTENT,
        &[],
        now,
    );
    assert_eq!(
        statuses(&r),
        [
            (Status::Delivered, "2.0.0".into()),
            (Status::Delivered, "2.0.0".into())
        ]
    );
    let outcomes = r.outcomes.as_ref().unwrap();
    assert!(outcomes.iter().all(|o| o.remote));
    assert_eq!(outcomes[0].text(), "250 2.0.0 Ok: queued as Q1");
    assert_eq!(r.dones, 1);
    assert!(r.client_closed);
    assert_eq!(server.commits.len(), 1);
    assert_eq!(
        server.commits[0].content, CONTENT,
        "content arrives exactly"
    );
    let env = &server.commits[0].envelope;
    assert_eq!(env.sender, "alice@example.net");
    assert_eq!(env.declared_size, Some(CONTENT.len() as u64));
    // Stuffed on the wire; MAIL, RCPTs and DATA in one write.
    let t = text(&r);
    assert!(t.contains("\r\n...two\r\n..\r\nlast\r\n.\r\n"), "{t}");
    assert!(t.starts_with(&format!(
        "EHLO out.example.net\r\nMAIL FROM:<alice@example.net> SIZE={}\r\n\
         RCPT TO:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n",
        CONTENT.len()
    )));
    assert!(t.ends_with("QUIT\r\n"), "{t}");
}

#[test]
fn pipelined_group_is_one_write() {
    let now = start();
    let mut server = Scripted::new("220 mx\r\n", polite(EHLO_PIPE));
    let r = run(
        &mut server,
        params(&["a@x", "b@x"], CONTENT),
        CONTENT,
        &[],
        now,
    );
    assert_eq!(statuses(&r)[1].0, Status::Delivered);
    assert_eq!(
        server.writes[1],
        b"MAIL FROM:<alice@example.net> SIZE=47\r\nRCPT TO:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n"
    );
}

#[test]
fn per_recipient_refusals_from_the_real_server() {
    let now = start();
    let mut server = Real::new(false, now);
    let r = run(
        &mut server,
        params(&["a@example.org", "x@elsewhere.example"], CONTENT),
        CONTENT,
        &[],
        now,
    );
    assert_eq!(
        statuses(&r),
        [
            (Status::Delivered, "2.0.0".into()),
            (Status::Bounced, "5.7.1".into())
        ]
    );
    let o = &r.outcomes.as_ref().unwrap()[1];
    assert_eq!(
        o.text(),
        "554 5.7.1 <x@elsewhere.example>: Relay access denied"
    );
    assert_eq!(server.commits[0].envelope.recipients.len(), 1);
}

#[test]
fn non_pipelining_server_gets_one_command_at_a_time() {
    let now = start();
    let mut server = Scripted::new("220 mx\r\n", |cmd: &str| match cmd {
        "RCPT TO:<temp@x>" => "451 4.3.0 try later\r\n".into(),
        "RCPT TO:<gone@x>" => "550 5.1.1 no such user\r\n".into(),
        "RCPT TO:<plain@x>" => "550 no enhanced code\r\n".into(),
        other => polite(EHLO_PLAIN)(other),
    });
    let r = run(
        &mut server,
        params(&["temp@x", "ok@x", "gone@x", "plain@x"], CONTENT),
        CONTENT,
        &[],
        now,
    );
    assert_eq!(
        statuses(&r),
        [
            (Status::Deferred, "4.3.0".into()),
            (Status::Delivered, "2.0.0".into()),
            (Status::Bounced, "5.1.1".into()),
            (Status::Bounced, "5.0.0".into()),
        ]
    );
    // Every write holds exactly one command line.
    for w in &server.writes {
        assert_eq!(w.iter().filter(|&&b| b == b'\n').count(), 1, "{w:?}");
    }
    assert_eq!(
        server.commands,
        [
            "EHLO out.example.net",
            "MAIL FROM:<alice@example.net> SIZE=47",
            "RCPT TO:<temp@x>",
            "RCPT TO:<ok@x>",
            "RCPT TO:<gone@x>",
            "RCPT TO:<plain@x>",
            "DATA",
            "QUIT"
        ]
    );
    assert_eq!(dot_unstuffed(&server.data), CONTENT);
}

fn dot_unstuffed(b: &[u8]) -> Vec<u8> {
    crate::data::dot_unstuff(b)
}

#[test]
fn helo_fallback_after_ehlo_refused() {
    let now = start();
    let mut server = Scripted::new("220 mx\r\n", |cmd: &str| {
        if cmd.starts_with("EHLO") {
            "502 5.5.2 Error: command not recognized\r\n".into()
        } else {
            polite("")(cmd)
        }
    });
    let mut p = params(&["a@x"], CONTENT);
    p.envelope.body = BodyType::EightBitMime;
    let r = run(&mut server, p, CONTENT, &[], now);
    assert_eq!(statuses(&r), [(Status::Delivered, "2.0.0".into())]);
    assert_eq!(
        server.commands[..3],
        [
            "EHLO out.example.net",
            "HELO out.example.net",
            "MAIL FROM:<alice@example.net>" // no SIZE, no BODY: nothing offered
        ]
    );
}

#[test]
fn no_accepted_recipient_means_no_data() {
    let now = start();
    let mut server = Scripted::new("220 mx\r\n", |cmd: &str| {
        if cmd.starts_with("RCPT") {
            "550 5.1.1 unknown\r\n".into()
        } else {
            polite(EHLO_PLAIN)(cmd)
        }
    });
    let r = run(
        &mut server,
        params(&["a@x", "b@x"], CONTENT),
        CONTENT,
        &[],
        now,
    );
    assert_eq!(statuses(&r)[0].0, Status::Bounced);
    assert!(!server.commands.iter().any(|c| c == "DATA"));
    assert_eq!(server.commands.last().unwrap(), "QUIT");
}

#[test]
fn pipelined_354_with_nobody_accepted_sends_an_empty_message() {
    let now = start();
    let mut server = Scripted::new("220 mx\r\n", |cmd: &str| {
        if cmd.starts_with("RCPT") {
            "550 5.1.1 unknown\r\n".into()
        } else {
            polite(EHLO_PIPE)(cmd)
        }
    });
    let r = run(&mut server, params(&["a@x"], CONTENT), CONTENT, &[], now);
    assert_eq!(statuses(&r), [(Status::Bounced, "5.1.1".into())]);
    assert!(server.data.is_empty(), "the content never goes out");
    assert!(r.client_closed);
}

#[test]
fn reply_after_data_decides_for_accepted_recipients_only() {
    for (last, want) in [
        ("554 5.6.0 content refused\r\n", (Status::Bounced, "5.6.0")),
        ("452 4.3.1 disk full\r\n", (Status::Deferred, "4.3.1")),
    ] {
        let now = start();
        let mut server = Scripted::new("220 mx\r\n", move |cmd: &str| match cmd {
            "." => last.into(),
            "RCPT TO:<no@x>" => "550 5.1.1 unknown\r\n".into(),
            other => polite(EHLO_PIPE)(other),
        });
        let r = run(
            &mut server,
            params(&["a@x", "no@x"], CONTENT),
            CONTENT,
            &[],
            now,
        );
        let s = statuses(&r);
        assert_eq!(s[0], (want.0, want.1.to_string()));
        assert_eq!(s[1], (Status::Bounced, "5.1.1".into()));
    }
}

#[test]
fn mail_refusal_applies_to_everyone() {
    for (reply, pipe, want) in [
        (
            "451 4.7.1 greylisted\r\n",
            false,
            (Status::Deferred, "4.7.1"),
        ),
        (
            "553 5.7.1 sender refused\r\n",
            true,
            (Status::Bounced, "5.7.1"),
        ),
    ] {
        let now = start();
        let ehlo = if pipe { EHLO_PIPE } else { EHLO_PLAIN };
        let mut server = Scripted::new("220 mx\r\n", move |cmd: &str| {
            if cmd.starts_with("MAIL") {
                reply.into()
            } else if cmd.starts_with("RCPT") || cmd == "DATA" {
                "503 5.5.1 need MAIL\r\n".into()
            } else {
                polite(ehlo)(cmd)
            }
        });
        let r = run(
            &mut server,
            params(&["a@x", "b@x"], CONTENT),
            CONTENT,
            &[],
            now,
        );
        let want = (want.0, want.1.to_string());
        assert_eq!(statuses(&r), [want.clone(), want]);
        assert!(server.data.is_empty());
        assert_eq!(server.commands.last().unwrap(), "QUIT");
        if !pipe {
            assert!(!server.commands.iter().any(|c| c.starts_with("RCPT")));
        }
    }
}

#[test]
fn refused_greeting_defers_with_a_class_4_status() {
    for greeting in ["554 5.7.1 go away\r\n", "421 4.3.2 busy\r\n"] {
        let now = start();
        let mut server = Scripted::new(greeting, polite(EHLO_PIPE));
        let r = run(&mut server, params(&["a@x"], CONTENT), CONTENT, &[], now);
        let o = &r.outcomes.as_ref().unwrap()[0];
        assert_eq!(o.status, Status::Deferred);
        assert_eq!(o.dsn.class, 4);
        assert!(o.remote);
        assert!(r.client_closed);
    }
}

#[test]
fn a_421_ends_the_session_without_quit() {
    let now = start();
    let mut server = Scripted::new("220 mx\r\n", |cmd: &str| {
        if cmd.starts_with("RCPT TO:<b") {
            "421 4.3.2 shutting down\r\n".into()
        } else {
            polite(EHLO_PLAIN)(cmd)
        }
    });
    let r = run(
        &mut server,
        params(&["a@x", "b@x"], CONTENT),
        CONTENT,
        &[],
        now,
    );
    assert_eq!(
        statuses(&r),
        [
            (Status::Deferred, "4.3.2".into()),
            (Status::Deferred, "4.3.2".into())
        ]
    );
    assert!(!server.commands.iter().any(|c| c == "QUIT"));
}

#[test]
fn timeouts_defer_every_open_recipient() {
    // Silent at the greeting.
    let now = start();
    let mut server = Scripted::new("", polite(EHLO_PIPE));
    let r = run(&mut server, params(&["a@x"], CONTENT), CONTENT, &[], now);
    let o = &r.outcomes.as_ref().unwrap()[0];
    assert_eq!(
        (o.status, o.dsn.to_string()),
        (Status::Deferred, "4.4.2".into())
    );
    assert_eq!(
        o.text(),
        "conversation timed out while receiving the initial server greeting"
    );
    assert!(!o.remote);
    assert!(r.client_closed);

    // Silent after the content: accepted recipients deferred with the
    // warning; a recipient refused earlier keeps its bounce.
    let now = start();
    let mut server = Scripted::new("220 mx\r\n", |cmd: &str| match cmd {
        "." => String::new(),
        "RCPT TO:<no@x>" => "550 5.1.1 unknown\r\n".into(),
        other => polite(EHLO_PIPE)(other),
    });
    let r = run(
        &mut server,
        params(&["a@x", "no@x"], CONTENT),
        CONTENT,
        &[],
        now,
    );
    let out = r.outcomes.as_ref().unwrap();
    assert_eq!(out[0].status, Status::Deferred);
    assert!(
        out[0]
            .text()
            .ends_with("message may be sent more than once"),
        "{}",
        out[0].text()
    );
    assert_eq!(out[1].status, Status::Bounced);
}

#[test]
fn timers_follow_the_step_in_progress() {
    let now = start();
    let mut p = params(&["a@x"], CONTENT);
    p.timeouts.greeting = Duration::from_secs(7);
    p.timeouts.helo = Duration::from_secs(11);
    let mut c = Session::new(p, now);
    assert_eq!(c.poll_timeout(), Some(now + Duration::from_secs(7)));
    c.handle_timeout(now + Duration::from_secs(6)); // early: nothing
    assert!(c.poll_output().is_none());
    let later = now + Duration::from_secs(5);
    c.handle_input(b"220 mx\r\n", later);
    assert_eq!(c.poll_timeout(), Some(later + Duration::from_secs(11)));
    assert_eq!(
        c.poll_output(),
        Some(Output::Send(b"EHLO out.example.net\r\n".to_vec()))
    );
}

#[test]
fn lost_connection_defers() {
    let now = start();
    let mut c = Session::new(params(&["a@x"], CONTENT), now);
    c.handle_input(b"220 mx\r\n250-mx\r\n", now);
    c.handle_disconnect(now);
    let mut outs = Vec::new();
    while let Some(o) = c.poll_output() {
        outs.push(o);
    }
    let Some(Output::Done(d)) = outs.iter().find(|o| matches!(o, Output::Done(_))) else {
        panic!("{outs:?}");
    };
    assert_eq!(d[0].status, Status::Deferred);
    assert_eq!(
        d[0].text(),
        "lost connection while performing the EHLO handshake"
    );
    assert_eq!(outs.last(), Some(&Output::Close));
    assert!(c.is_greeted());
}

#[test]
fn size_limit_refusal_bounces_without_mail() {
    let now = start();
    let big = vec![b'x'; 2000];
    let mut server = Scripted::new("220 mx\r\n", polite(EHLO_PIPE));
    let r = run(&mut server, params(&["a@x"], &big), &big, &[], now);
    let o = &r.outcomes.as_ref().unwrap()[0];
    assert_eq!(
        (o.status, o.dsn.to_string()),
        (Status::Bounced, "5.3.4".into())
    );
    assert_eq!(
        o.text(),
        "message size 2000 exceeds size limit 1000 of server"
    );
    assert_eq!(server.commands, ["EHLO out.example.net", "QUIT"]);
}

#[test]
fn smtputf8_not_offered_bounces() {
    let now = start();
    let mut server = Scripted::new("220 mx\r\n", polite(EHLO_PIPE));
    let mut p = params(&["a@x"], CONTENT);
    p.envelope.smtputf8 = true;
    let r = run(&mut server, p, CONTENT, &[], now);
    assert_eq!(statuses(&r), [(Status::Bounced, "5.6.7".into())]);
    assert_eq!(server.commands, ["EHLO out.example.net", "QUIT"]);
}

#[test]
fn esmtp_parameters_only_when_offered() {
    let with_all = |p: &mut Params| {
        p.envelope.body = BodyType::EightBitMime;
        p.envelope.ret = Some(Ret::Hdrs);
        p.envelope.envid = Some("id 1".into());
        p.envelope.recipients[0].notify = Some(Notify {
            success: true,
            failure: true,
            delay: false,
        });
        p.envelope.recipients[0].orcpt = Some("rfc822;a+b@x".into());
    };
    // Offered (the real server offers DSN and 8BITMIME).
    let now = start();
    let mut server = Real::new(false, now);
    let mut p = params(&["a@example.org"], CONTENT);
    with_all(&mut p);
    let r = run(&mut server, p, CONTENT, &[], now);
    let t = text(&r);
    assert!(
        t.contains("MAIL FROM:<alice@example.net> SIZE=47 BODY=8BITMIME RET=HDRS ENVID=id+201\r\n"),
        "{t}"
    );
    assert!(
        t.contains("RCPT TO:<a@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bb@x\r\n"),
        "{t}"
    );
    let env = &server.commits[0].envelope;
    assert_eq!(env.recipients[0].orcpt.as_deref(), Some("rfc822;a+b@x"));
    assert_eq!(env.body, BodyType::EightBitMime);
    // Not offered: none of them.
    let mut server = Scripted::new("220 mx\r\n", polite(EHLO_PLAIN));
    let mut p = params(&["a@x"], CONTENT);
    with_all(&mut p);
    let r = run(&mut server, p, CONTENT, &[], now);
    assert_eq!(statuses(&r)[0].0, Status::Delivered);
    assert_eq!(server.commands[1], "MAIL FROM:<alice@example.net> SIZE=47");
    assert_eq!(server.commands[2], "RCPT TO:<a@x>");
}

#[test]
fn parses_multiline_replies_and_extensions() {
    let lines: Vec<String> = [
        "mx",
        "PIPELINING",
        "SIZE 52428800",
        "8BITMIME",
        "DSN",
        "SMTPUTF8",
        "CHUNKING",
        "STARTTLS",
        "ENHANCEDSTATUSCODES",
        "X-UNKNOWN",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let e = Extensions::parse(&lines);
    assert!(e.pipelining && e.eightbitmime && e.dsn && e.smtputf8 && e.chunking);
    assert!(e.starttls && e.enhanced_status_codes);
    assert_eq!(e.size, Some(52_428_800));
    assert_eq!(
        Extensions::parse(&["mx".into(), "size".into()]).size,
        Some(0)
    );

    let r = make_reply(550, vec!["5.1.1 first".into(), "5.1.1 second".into()]);
    assert_eq!(r.enhanced, Some(Enhanced::new(5, 1, 1)));
    assert_eq!(r.lines, ["first", "second"]);
    assert_eq!(r.to_string(), "550 5.1.1 first second");
    // A code of another class is text.
    assert_eq!(make_reply(550, vec!["2.1.1 odd".into()]).enhanced, None);
    assert_eq!(parse_line(b"250"), Some((250, true, String::new())));
    assert_eq!(parse_line(b"250-x"), Some((250, false, "x".into())));
    assert_eq!(parse_line(b"25"), None);
    assert_eq!(parse_line(b"650 x"), None);
    assert_eq!(parse_line(b"250x"), None);
}

#[test]
fn malformed_replies_defer() {
    for bad in [&b"hello\r\n"[..], b"220-mx\r\n250 mixed codes\r\n"] {
        let now = start();
        let mut c = Session::new(params(&["a@x"], CONTENT), now);
        c.handle_input(bad, now);
        let mut done = None;
        let mut closed = false;
        while let Some(o) = c.poll_output() {
            match o {
                Output::Done(d) => done = Some(d),
                Output::Close => closed = true,
                _ => {}
            }
        }
        let d = done.expect("done");
        assert_eq!(d[0].dsn.to_string(), "4.5.0");
        assert!(d[0].text().starts_with("malformed reply from server"));
        assert!(closed && !c.is_greeted());
    }
}

#[test]
fn overlong_reply_lines_are_bounded() {
    let now = start();
    let mut c = Session::new(params(&["a@x"], CONTENT), now);
    let mut greeting = b"220-".to_vec();
    greeting.extend(std::iter::repeat_n(b'a', 100_000));
    greeting.extend_from_slice(b"\r\n");
    for _ in 0..1000 {
        greeting.extend_from_slice(b"220-more\r\n");
    }
    greeting.extend_from_slice(b"220 end\r\n");
    c.handle_input(&greeting, now);
    assert!(c.reader.line.len() <= MAX_REPLY_LINE);
    assert!(c.is_greeted());
    assert_eq!(
        c.poll_output(),
        Some(Output::Send(b"EHLO out.example.net\r\n".to_vec()))
    );
}

#[test]
fn no_recipients_just_quits() {
    let now = start();
    let mut server = Scripted::new("220 mx\r\n", polite(EHLO_PIPE));
    let r = run(&mut server, params(&[], CONTENT), CONTENT, &[], now);
    assert_eq!(r.outcomes, Some(Vec::new()));
    assert_eq!(server.commands, ["EHLO out.example.net", "QUIT"]);
}

fn content_strategy() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec("[.a-z ]{0,12}", 0..12).prop_map(|lines| {
        let mut c = Vec::new();
        for l in lines {
            c.extend_from_slice(l.as_bytes());
            c.extend_from_slice(b"\r\n");
        }
        c
    })
}

proptest! {
    #[test]
    fn any_split_of_replies_gives_the_same_outcomes(
        splits in proptest::collection::vec(1usize..40, 1..8),
        pipelined in any::<bool>(),
    ) {
        let now = start();
        let ehlo = if pipelined { EHLO_PIPE } else { EHLO_PLAIN };
        let rule = move |cmd: &str| match cmd {
            "RCPT TO:<t@x>" => "450-4.2.1 mailbox busy\r\n450 4.2.1 try later\r\n".into(),
            "RCPT TO:<p@x>" => "550 5.1.1 unknown\r\n".into(),
            other => polite(ehlo)(other),
        };
        let rcpts = ["a@x", "t@x", "p@x", "b@x"];
        let whole = run(&mut Scripted::new("220-mx\r\n220 hi\r\n", rule), params(&rcpts, CONTENT), CONTENT, &[], now);
        let split = run(&mut Scripted::new("220-mx\r\n220 hi\r\n", rule), params(&rcpts, CONTENT), CONTENT, &splits, now);
        prop_assert_eq!(&whole.outcomes, &split.outcomes);
        prop_assert_eq!(&whole.sent, &split.sent);
        prop_assert_eq!(
            statuses(&split),
            vec![
                (Status::Delivered, "2.0.0".to_string()),
                (Status::Deferred, "4.2.1".to_string()),
                (Status::Bounced, "5.1.1".to_string()),
                (Status::Delivered, "2.0.0".to_string()),
            ]
        );
        prop_assert_eq!(split.outcomes.as_ref().unwrap()[1].text(), "450 4.2.1 mailbox busy try later");
    }

    #[test]
    fn content_round_trips_through_client_and_server(
        content in content_strategy(),
        splits in proptest::collection::vec(1usize..20, 0..4),
    ) {
        let now = start();
        let mut server = Real::new(false, now);
        let r = run(&mut server, params(&["a@example.org"], &content), &content, &splits, now);
        prop_assert_eq!(statuses(&r), vec![(Status::Delivered, "2.0.0".to_string())]);
        prop_assert_eq!(&server.commits[0].content, &content);
    }
}

fn outputs(c: &mut Session) -> Vec<Output> {
    std::iter::from_fn(|| c.poll_output()).collect()
}

fn sends(outs: &[Output]) -> String {
    outs.iter()
        .filter_map(|o| match o {
            Output::Send(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .collect()
}

fn with(p: Params, f: impl FnOnce(&mut Params)) -> Params {
    let mut p = p;
    f(&mut p);
    p
}

const EHLO_TLS: &str = "250-mx\r\n250-PIPELINING\r\n250 STARTTLS\r\n";

#[test]
fn starttls_drops_injected_plain_text_and_says_ehlo_again() {
    let now = start();
    let p = with(params(&["a@x"], CONTENT), |p| p.tls = Tls::Opportunistic);
    let mut c = Session::new(p, now);
    c.handle_input(b"220 mx\r\n", now);
    assert_eq!(sends(&outputs(&mut c)), "EHLO out.example.net\r\n");
    c.handle_input(EHLO_TLS.as_bytes(), now);
    assert_eq!(sends(&outputs(&mut c)), "STARTTLS\r\n");
    // An attacker's plain-text reply rides along with the 220.
    c.handle_input(b"220 2.0.0 go ahead\r\n250 2.1.0 injected\r\n", now);
    assert_eq!(outputs(&mut c), [Output::StartTls]);
    assert_eq!(c.poll_timeout(), None, "the driver times the handshake");
    c.handle_input(b"250 2.1.0 more injected\r\n", now);
    assert_eq!(outputs(&mut c), []);
    assert!(!c.is_tls());
    c.handle_tls_ready(now);
    assert!(c.is_tls());
    assert_eq!(sends(&outputs(&mut c)), "EHLO out.example.net\r\n");
    // The new EHLO reply decides the extensions; no second STARTTLS.
    c.handle_input(b"250-mx\r\n250 STARTTLS\r\n", now);
    assert_eq!(sends(&outputs(&mut c)), "MAIL FROM:<alice@example.net>\r\n");
    assert!(c.extensions().is_some_and(|e| !e.pipelining));
}

#[test]
fn starttls_through_a_scripted_server_is_not_used_when_off() {
    let now = start();
    let mut server = Scripted::new("220 mx\r\n", polite(EHLO_TLS));
    let r = run(&mut server, params(&["a@x"], CONTENT), CONTENT, &[], now);
    assert_eq!(statuses(&r), [(Status::Delivered, "2.0.0".into())]);
    assert!(!server.commands.iter().any(|c| c == "STARTTLS"));
}

#[test]
fn tls_required_but_not_offered_or_refused_defers_4_7_4() {
    for (ehlo, starttls_reply) in [
        (EHLO_PIPE, ""),
        (EHLO_TLS, "454 4.7.0 TLS not available\r\n"),
    ] {
        let now = start();
        let mut rule = polite(ehlo);
        let reply = starttls_reply.to_owned();
        let mut server = Scripted::new("220 mx\r\n", move |cmd: &str| {
            if cmd == "STARTTLS" {
                reply.clone()
            } else {
                rule(cmd)
            }
        });
        let p = with(params(&["a@x", "b@x"], CONTENT), |p| {
            p.tls = Tls::Required;
            p.keep_open = true;
        });
        let r = run(&mut server, p, CONTENT, &[], now);
        assert_eq!(
            statuses(&r),
            [
                (Status::Deferred, "4.7.4".into()),
                (Status::Deferred, "4.7.4".into())
            ]
        );
        assert!(!r.outcomes.as_ref().unwrap()[0].remote);
        assert!(!server.commands.iter().any(|c| c.starts_with("MAIL")));
        assert_eq!(
            server.commands.last().map(String::as_str),
            Some("QUIT"),
            "no reuse"
        );
        assert!(r.client_closed);
    }
}

#[test]
fn opportunistic_tls_goes_on_in_plain_text_when_refused() {
    let now = start();
    let mut rule = polite(EHLO_TLS);
    let mut server = Scripted::new("220 mx\r\n", move |cmd: &str| {
        if cmd == "STARTTLS" {
            "454 4.7.0 TLS not available\r\n".into()
        } else {
            rule(cmd)
        }
    });
    let p = with(params(&["a@x"], CONTENT), |p| p.tls = Tls::Opportunistic);
    let r = run(&mut server, p, CONTENT, &[], now);
    assert_eq!(statuses(&r), [(Status::Delivered, "2.0.0".into())]);
    assert_eq!(server.commands[1], "STARTTLS");
}

#[test]
fn failed_handshake_defers_and_closes_without_quit() {
    let now = start();
    let p = with(params(&["a@x"], CONTENT), |p| p.tls = Tls::Required);
    let mut c = Session::new(p, now);
    c.handle_input(b"220 mx\r\n", now);
    c.handle_input(EHLO_TLS.as_bytes(), now);
    c.handle_input(b"220 go ahead\r\n", now);
    let _ = outputs(&mut c);
    c.handle_tls_failed(
        Enhanced::new(5, 7, 5),
        "certificate verification failed",
        now,
    );
    let outs = outputs(&mut c);
    assert_eq!(sends(&outs), "", "no QUIT over a broken TLS layer");
    let Some(Output::Done(d)) = outs.first() else {
        panic!("{outs:?}");
    };
    assert_eq!(
        (d[0].status, d[0].dsn.to_string()),
        (Status::Deferred, "4.7.5".into())
    );
    assert_eq!(d[0].text(), "certificate verification failed");
    assert_eq!(outs.last(), Some(&Output::Close));
}

#[test]
fn lmtp_says_lhlo_and_reads_one_reply_per_accepted_recipient() {
    let now = start();
    let mut server = Scripted::new("220 lmtp\r\n", |cmd: &str| {
        match cmd {
            c if c.starts_with("LHLO") => {
                "250-lmtp\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n"
            }
            c if c.starts_with("MAIL") => "250 2.1.0 Ok\r\n",
            "RCPT TO:<b@x>" => "550 5.1.1 no such user\r\n",
            c if c.starts_with("RCPT") => "250 2.1.5 Ok\r\n",
            "DATA" => "354 go\r\n",
            "." => {
                "250 2.0.0 <a@x> saved\r\n452 4.2.2 <c@x> over quota\r\n550 5.2.1 <d@x> gone\r\n"
            }
            "QUIT" => "221 bye\r\n",
            _ => "500 what\r\n",
        }
        .to_owned()
    });
    let p = with(params(&["a@x", "b@x", "c@x", "d@x"], CONTENT), |p| {
        p.protocol = Protocol::Lmtp;
    });
    let r = run(&mut server, p, CONTENT, &[3], now);
    assert_eq!(
        statuses(&r),
        [
            (Status::Delivered, "2.0.0".into()),
            (Status::Bounced, "5.1.1".into()),
            (Status::Deferred, "4.2.2".into()),
            (Status::Bounced, "5.2.1".into()),
        ]
    );
    assert_eq!(r.dones, 1);
    assert_eq!(server.commands[0], "LHLO out.example.net");
    assert_eq!(server.commands.last().map(String::as_str), Some("QUIT"));
}

#[test]
fn lmtp_has_no_helo_fallback() {
    let now = start();
    let mut server = Scripted::new("220 lmtp\r\n", |cmd: &str| {
        if cmd == "QUIT" {
            "221 bye\r\n"
        } else {
            "500 5.5.1 what\r\n"
        }
        .to_owned()
    });
    let p = with(params(&["a@x"], CONTENT), |p| p.protocol = Protocol::Lmtp);
    let r = run(&mut server, p, CONTENT, &[], now);
    assert_eq!(statuses(&r), [(Status::Deferred, "4.5.1".into())]);
    assert_eq!(server.commands, ["LHLO out.example.net", "QUIT"]);
}

#[test]
fn lmtp_timeout_defers_the_recipients_still_waiting() {
    let now = start();
    let mut server = Scripted::new("220 lmtp\r\n", |cmd: &str| {
        match cmd {
            c if c.starts_with("LHLO") => "250-lmtp\r\n250 PIPELINING\r\n",
            "DATA" => "354 go\r\n",
            "." => "250 2.0.0 first saved\r\n",
            _ => "250 2.0.0 Ok\r\n",
        }
        .to_owned()
    });
    let p = with(params(&["a@x", "b@x"], CONTENT), |p| {
        p.protocol = Protocol::Lmtp
    });
    let r = run(&mut server, p, CONTENT, &[], now);
    assert_eq!(
        statuses(&r),
        [
            (Status::Delivered, "2.0.0".into()),
            (Status::Deferred, "4.4.2".into())
        ]
    );
}

#[test]
fn reused_session_sends_rset_then_the_next_transaction() {
    let now = start();
    let mut server = Scripted::new("220 mx\r\n", polite(EHLO_PIPE));
    let p = with(params(&["a@x"], CONTENT), |p| p.keep_open = true);
    let mut c = Session::new(p, now);
    let (first, _) = server.start(now);
    let r = run_with(&mut server, &mut c, first, false, CONTENT, &[], now);
    assert_eq!(statuses(&r), [(Status::Delivered, "2.0.0".into())]);
    assert!(c.is_idle() && !r.client_closed);
    assert_eq!(c.poll_timeout(), None, "the driver times idleness");
    for round in 0..3 {
        let envelope = Envelope {
            sender: format!("s{round}@example.net"),
            recipients: vec![rcpt("b@x"), rcpt("c@x")],
            ..Envelope::default()
        };
        assert!(c.next_message(envelope, CONTENT.len() as u64, now));
        let r = run_with(&mut server, &mut c, Vec::new(), false, CONTENT, &[], now);
        assert_eq!(r.dones, 1);
        assert_eq!(statuses(&r).len(), 2);
        assert!(c.is_idle());
    }
    let rsets = server.commands.iter().filter(|c| *c == "RSET").count();
    assert_eq!(rsets, 3);
    assert!(server
        .commands
        .contains(&"MAIL FROM:<s2@example.net> SIZE=47".to_owned()));
    c.quit(now);
    let r = run_with(&mut server, &mut c, Vec::new(), false, CONTENT, &[], now);
    assert!(r.client_closed && r.dones == 0);
    assert_eq!(server.commands.last().map(String::as_str), Some("QUIT"));
}

#[test]
fn failed_rset_closes_without_outcomes() {
    for rset_reply in ["421 4.4.2 idle too long\r\n", "", "garbage\r\n"] {
        let now = start();
        let mut rule = polite(EHLO_PIPE);
        let reply = rset_reply.to_owned();
        let mut server = Scripted::new("220 mx\r\n", move |cmd: &str| {
            if cmd == "RSET" {
                reply.clone()
            } else {
                rule(cmd)
            }
        });
        let p = with(params(&["a@x"], CONTENT), |p| p.keep_open = true);
        let mut c = Session::new(p, now);
        let (first, _) = server.start(now);
        let _ = run_with(&mut server, &mut c, first, false, CONTENT, &[], now);
        assert!(c.is_idle());
        let envelope = Envelope {
            sender: "s@example.net".into(),
            recipients: vec![rcpt("b@x")],
            ..Envelope::default()
        };
        assert!(c.next_message(envelope.clone(), 10, now));
        assert!(!c.next_message(envelope, 10, now), "only when idle");
        let r = run_with(&mut server, &mut c, Vec::new(), false, CONTENT, &[], now);
        assert_eq!(r.dones, 0, "{rset_reply:?}");
        assert!(r.client_closed && c.is_reset_failed());
    }
}

#[test]
fn lost_connection_while_idle_is_a_failed_rset() {
    let now = start();
    let mut server = Scripted::new("220 mx\r\n", polite(EHLO_PIPE));
    let p = with(params(&["a@x"], CONTENT), |p| p.keep_open = true);
    let mut c = Session::new(p, now);
    let (first, _) = server.start(now);
    let _ = run_with(&mut server, &mut c, first, false, CONTENT, &[], now);
    let envelope = Envelope {
        recipients: vec![rcpt("b@x")],
        ..Envelope::default()
    };
    assert!(c.next_message(envelope, 10, now));
    c.handle_disconnect(now);
    assert!(c.is_reset_failed());
    assert_eq!(
        outputs(&mut c),
        [Output::Send(b"RSET\r\n".to_vec()), Output::Close]
    );
}

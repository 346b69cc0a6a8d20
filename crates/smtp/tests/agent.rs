//! The real `sluice-smtp` binary against a fake queue manager (a Unix
//! listener speaking the delivery protocol) and a scripted SMTP server on
//! loopback: one job with a delivered, a bounced and a deferred recipient,
//! the bytes on the wire, the results and the log lines; then jobs for an
//! MX next hop and an unreachable one; then SIGTERM.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use sluice_ipc::delivery::{
    self, AgentMessage, Job, JobRecipient, JobResult, Outcome, QmgrMessage, Transport,
};
use sluice_ipc::{FrameDecoder, Hello};
use sluice_proto::envelope::{Envelope, Recipient};
use sluice_spool::{Message, QueueId, Source, Spool};

const CONTENT: &[u8] = b"Received: from x by y; now\r\nSubject: dots\r\n\r\n\
.first line starts with a dot\r\n..two\r\n.\r\nend\r\n";

/// Kills the agent if the test fails half-way.
struct Agent(Option<Child>);

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What the scripted server saw.
struct Seen {
    commands: Vec<String>,
    /// The content as it was on the wire (stuffed), without the final dot.
    stuffed: Vec<u8>,
}

/// One connection: PIPELINING and SIZE offered; `defer@` gets 452,
/// `bounce@` gets 550, the rest 250.
fn smtp_server(listener: TcpListener) -> Seen {
    let (stream, _) = listener.accept().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut out = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut seen = Seen {
        commands: Vec::new(),
        stuffed: Vec::new(),
    };
    out.write_all(b"220 sink.example ESMTP\r\n").unwrap();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).unwrap() == 0 {
            return seen;
        }
        let cmd = String::from_utf8(line.clone())
            .unwrap()
            .trim_end()
            .to_owned();
        seen.commands.push(cmd.clone());
        let reply: &[u8] = if cmd.starts_with("EHLO") {
            b"250-sink.example\r\n250-PIPELINING\r\n250-SIZE 10000\r\n250 ENHANCEDSTATUSCODES\r\n"
        } else if cmd.starts_with("MAIL") {
            b"250 2.1.0 Ok\r\n"
        } else if cmd == "RCPT TO:<defer@example.org>" {
            b"452 4.2.2 mailbox full\r\n"
        } else if cmd == "RCPT TO:<bounce@example.org>" {
            b"550 5.1.1 <bounce@example.org>: no such user\r\n"
        } else if cmd.starts_with("RCPT") {
            b"250 2.1.5 Ok\r\n"
        } else if cmd == "DATA" {
            out.write_all(b"354 go ahead\r\n").unwrap();
            loop {
                line.clear();
                reader.read_until(b'\n', &mut line).unwrap();
                if line == b".\r\n" {
                    break;
                }
                assert!(!line.is_empty(), "EOF inside DATA");
                seen.stuffed.extend_from_slice(&line);
            }
            b"250 2.0.0 Ok: queued as REMOTE1\r\n"
        } else if cmd == "RSET" {
            b"250 2.0.0 Ok\r\n"
        } else if cmd == "QUIT" {
            out.write_all(b"221 2.0.0 Bye\r\n").unwrap();
            return seen;
        } else {
            b"502 5.5.2 what?\r\n"
        };
        out.write_all(reply).unwrap();
    }
}

fn current_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .unwrap()
        .name
}

fn write_config(dir: &Path, smtp_extra: &str) -> std::path::PathBuf {
    let path = dir.join("sluice.ron");
    let text = format!(
        "(\n  hostname: \"out.example\",\n  spool_dir: \"{}\",\n  run_dir: \"{}\",\n  user: \"{}\",\n  \
         smtp: ( connect_timeout: \"5s\", command_timeout: \"10s\", {} ),\n  \
         dns: ( nameservers: [\"127.0.0.1:1\"], timeout: \"1s\" ),\n)\n",
        dir.join("spool").display(),
        dir.join("run").display(),
        current_user(),
        smtp_extra
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn queue_message(spool_dir: &Path) -> QueueId {
    let spool = Spool::new(spool_dir);
    spool.create_layout(None).unwrap();
    let rcpt = |a: &str| Recipient {
        address: a.to_owned(),
        notify: None,
        orcpt: None,
    };
    let envelope = Envelope {
        sender: "alice@example.net".into(),
        recipients: vec![
            rcpt("ok@example.org"),
            rcpt("bounce@example.org"),
            rcpt("defer@example.org"),
        ],
        ..Envelope::default()
    };
    let id = QueueId::generate();
    let source = Source::Local {
        uid: 1000,
        user: "alice".into(),
    };
    spool
        .commit(&Message {
            id,
            arrival: SystemTime::now() - Duration::from_secs(3),
            source: &source,
            envelope: &envelope,
            content: &[CONTENT],
        })
        .unwrap();
    id
}

/// Waits for the agent to connect (it retries every 200 ms).
fn accept(listener: &UnixListener) -> UnixStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                return s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "the agent never connected");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

fn read_frame(stream: &mut UnixStream, decoder: &mut FrameDecoder) -> AgentMessage {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(m) = decoder.next_message::<AgentMessage>().unwrap() {
            return m;
        }
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "agent closed the socket");
        decoder.push(&buf[..n]);
    }
}

fn deliver(stream: &mut UnixStream, decoder: &mut FrameDecoder, job: Job) -> JobResult {
    let frame = sluice_ipc::encode(&QmgrMessage::Deliver(job)).unwrap();
    stream.write_all(&frame).unwrap();
    match read_frame(stream, decoder) {
        AgentMessage::Done(r) => r,
        other => panic!("{other:?}"),
    }
}

fn job(job_id: u64, id: QueueId, next_hop: String, rcpts: &[(u32, &str)]) -> Job {
    Job {
        job_id,
        queue_id: id.to_string(),
        next_hop,
        recipients: rcpts
            .iter()
            .map(|&(index, a)| JobRecipient {
                index,
                address: a.to_owned(),
            })
            .collect(),
        queue_wait_ms: 250,
    }
}

#[test]
fn delivers_bounces_and_defers_one_job_then_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("run")).unwrap();
    let config = write_config(dir.path(), "reuse_max_messages: 1");
    let id = queue_message(&dir.path().join("spool"));

    let smtp = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = smtp.local_addr().unwrap().port();
    let server = std::thread::spawn(move || smtp_server(smtp));

    // The agent starts before the queue manager's socket exists.
    let mut agent = Agent(Some(
        Command::new(env!("CARGO_BIN_EXE_sluice-smtp"))
            .arg("--config")
            .arg(&config)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let qmgr = UnixListener::bind(dir.path().join("run/delivery.sock")).unwrap();
    let mut stream = accept(&qmgr);
    let hello = Hello {
        protocol: delivery::PROTOCOL.into(),
        version: delivery::VERSION,
    };
    stream
        .write_all(&sluice_ipc::encode(&hello).unwrap())
        .unwrap();
    let mut decoder = FrameDecoder::new();
    let pid = agent.0.as_ref().unwrap().id();
    assert_eq!(
        read_frame(&mut stream, &mut decoder),
        AgentMessage::Ready {
            transport: Transport::Smtp,
            pid
        }
    );

    let rcpts = [
        (0, "ok@example.org"),
        (1, "bounce@example.org"),
        (2, "defer@example.org"),
    ];
    let result = deliver(
        &mut stream,
        &mut decoder,
        job(41, id, format!("[127.0.0.1]:{port}"), &rcpts),
    );
    assert_eq!(result.job_id, 41);
    assert_eq!(result.open_connection, None, "reuse_max_messages: 1");
    let r = &result.recipients;
    assert_eq!(r.len(), 3);
    assert_eq!(
        (
            r[0].index,
            r[0].outcome,
            r[0].dsn.as_str(),
            r[0].reply.as_str()
        ),
        (
            0,
            Outcome::Delivered,
            "2.0.0",
            "250 2.0.0 Ok: queued as REMOTE1"
        )
    );
    assert_eq!(
        (r[1].index, r[1].outcome, r[1].dsn.as_str()),
        (1, Outcome::Bounced, "5.1.1")
    );
    assert_eq!(r[1].reply, "550 5.1.1 <bounce@example.org>: no such user");
    assert_eq!(
        (
            r[2].index,
            r[2].outcome,
            r[2].dsn.as_str(),
            r[2].reply.as_str()
        ),
        (2, Outcome::Deferred, "4.2.2", "452 4.2.2 mailbox full")
    );
    assert!(r
        .iter()
        .all(|r| r.remote_mta.as_deref() == Some("127.0.0.1")));

    let seen = server.join().unwrap();
    assert_eq!(seen.commands[0], "EHLO out.example");
    assert_eq!(
        seen.commands[1],
        format!("MAIL FROM:<alice@example.net> SIZE={}", CONTENT.len())
    );
    assert_eq!(seen.commands.last().unwrap(), "QUIT");
    assert!(seen.stuffed.starts_with(b"Received: from x"));
    assert!(
        seen.stuffed.windows(7).any(|w| w == b"\r\n...tw"),
        "stuffed on the wire"
    );
    assert_eq!(sluice_proto::data::dot_unstuff(&seen.stuffed), CONTENT);

    // An MX next hop whose name server is down, and an unreachable host.
    let result = deliver(
        &mut stream,
        &mut decoder,
        job(42, id, "example.org".into(), &[(2, "defer@example.org")]),
    );
    let r = &result.recipients[0];
    assert_eq!((r.outcome, r.dsn.as_str()), (Outcome::Deferred, "4.4.3"));
    assert!(
        r.reply
            .contains("name=example.org type=MX: Host not found, try again"),
        "{}",
        r.reply
    );
    let closed_port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let result = deliver(
        &mut stream,
        &mut decoder,
        job(
            43,
            id,
            format!("[127.0.0.1]:{closed_port}"),
            &[(2, "defer@example.org"), (9, "x@y")],
        ),
    );
    let r = &result.recipients;
    assert_eq!(
        (r[0].outcome, r[0].dsn.as_str()),
        (Outcome::Deferred, "4.4.1")
    );
    assert_eq!(r[0].remote_mta, None);
    assert!(r[0]
        .reply
        .starts_with(&format!("connect to 127.0.0.1[127.0.0.1]:{closed_port}")));
    assert_eq!((r[1].index, r[1].dsn.as_str()), (9, "4.3.0"));

    // SIGTERM while idle: exit 0.
    let mut child = agent.0.take().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}\n{stderr}");

    let relay = format!("relay=127.0.0.1[127.0.0.1]:{port}");
    let want = [
        format!("{id}: to=<ok@example.org>, {relay}, delay="),
        "dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as REMOTE1)".to_owned(),
        format!("{id}: to=<bounce@example.org>, {relay}, delay="),
        "dsn=5.1.1, status=bounced (550 5.1.1 <bounce@example.org>: no such user)".to_owned(),
        format!("{id}: to=<defer@example.org>, {relay}, delay="),
        "dsn=4.2.2, status=deferred (452 4.2.2 mailbox full)".to_owned(),
        format!("{id}: to=<defer@example.org>, relay=none, delay="),
        "dsn=4.4.3, status=deferred (Host or domain name not found. Name service error for name=example.org type=MX".to_owned(),
        "dsn=4.4.1, status=deferred (connect to 127.0.0.1[127.0.0.1]".to_owned(),
    ];
    for w in want {
        assert!(stderr.contains(&w), "missing {w:?} in:\n{stderr}");
    }
    assert!(stderr.contains("sluice/smtp["), "{stderr}");
    // delays=a/b/c/d with the queue wait (0.25 s) as b.
    assert!(stderr.contains("/0.25/"), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("to=<ok@example.org>"))
        .unwrap();
    let delay: f64 = line
        .split("delay=")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3.0..60.0).contains(&delay), "{line}");
}

#[test]
fn exits_1_on_a_protocol_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("run")).unwrap();
    let config = write_config(dir.path(), "");
    let qmgr = UnixListener::bind(dir.path().join("run/delivery.sock")).unwrap();
    let mut agent = Agent(Some(
        Command::new(env!("CARGO_BIN_EXE_sluice-smtp"))
            .arg("--config")
            .arg(&config)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let mut stream = accept(&qmgr);
    let hello = Hello {
        protocol: delivery::PROTOCOL.into(),
        version: delivery::VERSION + 1,
    };
    stream
        .write_all(&sluice_ipc::encode(&hello).unwrap())
        .unwrap();
    let mut child = agent.0.take().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("version 2"), "{stderr}");
}

/// Starts the agent against a fake queue manager; returns it, the
/// socket and its decoder once `Ready` came.
fn start_agent(dir: &Path, config: &Path) -> (Agent, UnixStream, FrameDecoder) {
    let agent = Agent(Some(
        Command::new(env!("CARGO_BIN_EXE_sluice-smtp"))
            .arg("--config")
            .arg(config)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let qmgr = UnixListener::bind(dir.join("run/delivery.sock")).unwrap();
    let mut stream = accept(&qmgr);
    let hello = Hello {
        protocol: delivery::PROTOCOL.into(),
        version: delivery::VERSION,
    };
    stream
        .write_all(&sluice_ipc::encode(&hello).unwrap())
        .unwrap();
    let mut decoder = FrameDecoder::new();
    assert!(matches!(
        read_frame(&mut stream, &mut decoder),
        AgentMessage::Ready { .. }
    ));
    (agent, stream, decoder)
}

#[test]
fn keeps_the_connection_for_the_next_job_then_closes_it_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("run")).unwrap();
    let config = write_config(dir.path(), "reuse_idle: \"1s\"");
    let id = queue_message(&dir.path().join("spool"));
    // The server takes one connection only: a second would never be
    // greeted and the job would be deferred after command_timeout.
    let smtp = TcpListener::bind("127.0.0.1:0").unwrap();
    let hop = format!("[127.0.0.1]:{}", smtp.local_addr().unwrap().port());
    let server = std::thread::spawn(move || smtp_server(smtp));
    let (_agent, mut stream, mut decoder) = start_agent(dir.path(), &config);

    for job_id in [1, 2, 3] {
        let result = deliver(
            &mut stream,
            &mut decoder,
            job(job_id, id, hop.clone(), &[(0, "ok@example.org")]),
        );
        assert_eq!(
            result.recipients[0].outcome,
            Outcome::Delivered,
            "{result:?}"
        );
        assert_eq!(result.open_connection.as_deref(), Some(hop.as_str()));
    }
    // No job for reuse_idle: the agent says QUIT and tells the qmgr.
    assert_eq!(
        read_frame(&mut stream, &mut decoder),
        AgentMessage::Closed { next_hop: hop }
    );
    let seen = server.join().unwrap();
    let count = |verb: &str| seen.commands.iter().filter(|c| c.starts_with(verb)).count();
    assert_eq!((count("EHLO"), count("MAIL"), count("RSET")), (1, 3, 2));
    assert_eq!(seen.commands.last().map(String::as_str), Some("QUIT"));
}

//! The real `sluice-local` binary against a fake queue manager (Unix
//! listeners speaking the delivery protocol and the qmgr hint protocol),
//! delivering into the mailboxes of throwaway system users that the test
//! creates (`useradd`; CI runs as root) and removes: aliases, nesting,
//! includes, loops, a broken line, the delimiter and case, postmaster,
//! virtual Maildirs byte for byte, `.forward`, forwarding by re-queueing,
//! `Delivered-To:` loops, and two deliveries at once into one mbox.
//!
//! Without root (no `useradd`, no user switch) the tests say so and pass
//! without checking anything.

#![allow(clippy::unwrap_used)]

use std::io::{Read as _, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime};

use sluice_e2e::{is_root, TestUser};
use sluice_ipc::delivery::{
    self, AgentMessage, Job, JobRecipient, JobResult, Outcome, QmgrMessage, RecipientResult,
    Transport,
};
use sluice_ipc::{FrameDecoder, Hello};
use sluice_proto::envelope::{Envelope, Recipient};
use sluice_spool::{Message, QueueId, Source, Spool};

const CONTENT: &[u8] =
    b"Received: from x by y; now\r\nSubject: hello\r\n\r\nFrom the start\r\nbody\r\n";

/// The content as a mailbox holds it, after the added headers.
fn as_lf(content: &[u8]) -> Vec<u8> {
    String::from_utf8(content.to_vec())
        .unwrap()
        .replace("\r\n", "\n")
        .into_bytes()
}

/// Kills the agent if the test fails half-way.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The instance directory with its config, spool and fake queue manager.
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    spool: Spool,
    delivery: UnixListener,
    qmgr: UnixListener,
}

impl Setup {
    fn new(spool_owner: &TestUser, local: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("run")).unwrap();
        let spool = Spool::new(dir.path().join("spool"));
        spool
            .create_layout(Some((spool_owner.uid, spool_owner.gid)))
            .unwrap();
        let config = dir.path().join("sluice.ron");
        std::fs::write(
            &config,
            format!(
                "(\n  hostname: \"mx.local.test\",\n  spool_dir: {:?},\n  run_dir: {:?},\n  user: {:?},\n  \
                 local_domains: [\"local.test\"],\n  local: ( {local} ),\n)\n",
                dir.path().join("spool"),
                dir.path().join("run"),
                spool_owner.name,
            ),
        )
        .unwrap();
        let delivery = UnixListener::bind(dir.path().join("run/delivery.sock")).unwrap();
        let qmgr = UnixListener::bind(sluice_ipc::qmgr::socket(&dir.path().join("run"))).unwrap();
        Setup {
            dir,
            config,
            spool,
            delivery,
            qmgr,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn start_agent(&self) -> (Agent, Conn) {
        let agent = Agent(
            Command::new(env!("CARGO_BIN_EXE_sluice-local"))
                .arg("--config")
                .arg(&self.config)
                .stderr(
                    std::fs::File::options()
                        .create(true)
                        .append(true)
                        .open(self.path().join("agent.log"))
                        .unwrap(),
                )
                .spawn()
                .unwrap(),
        );
        let mut conn = Conn::accept(&self.delivery);
        let ready = conn.read();
        assert_eq!(
            ready,
            AgentMessage::Ready {
                transport: Transport::Local,
                pid: agent.0.id()
            }
        );
        (agent, conn)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path().join("agent.log")).unwrap_or_default()
    }

    fn queue(&self, content: &[u8], rcpts: &[&str]) -> QueueId {
        let envelope = Envelope {
            sender: "alice@example.net".into(),
            recipients: rcpts
                .iter()
                .map(|a| Recipient {
                    address: (*a).to_owned(),
                    notify: None,
                    orcpt: None,
                })
                .collect(),
            ..Envelope::default()
        };
        let id = QueueId::generate();
        let source = Source::Local {
            uid: 0,
            user: "root".into(),
        };
        self.spool
            .commit(&Message {
                id,
                arrival: SystemTime::now(),
                source: &source,
                envelope: &envelope,
                content: &[content],
            })
            .unwrap();
        id
    }
}

/// One accepted connection of the fake queue manager.
struct Conn {
    stream: UnixStream,
    decoder: FrameDecoder,
}

impl Conn {
    fn accept(listener: &UnixListener) -> Conn {
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "the agent never connected");
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("{e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut conn = Conn {
            stream,
            decoder: FrameDecoder::new(),
        };
        let hello = Hello {
            protocol: delivery::PROTOCOL.into(),
            version: delivery::VERSION,
        };
        conn.stream
            .write_all(&sluice_ipc::encode(&hello).unwrap())
            .unwrap();
        conn
    }

    fn read(&mut self) -> AgentMessage {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(m) = self.decoder.next_message::<AgentMessage>().unwrap() {
                return m;
            }
            let n = self.stream.read(&mut buf).unwrap();
            assert!(n > 0, "agent closed the socket");
            self.decoder.push(&buf[..n]);
        }
    }

    fn send(&mut self, id: QueueId, rcpts: &[&str]) {
        let job = Job {
            job_id: 7,
            queue_id: id.to_string(),
            next_hop: "local.test".into(),
            recipients: rcpts
                .iter()
                .enumerate()
                .map(|(i, a)| JobRecipient {
                    index: i as u32,
                    address: (*a).to_owned(),
                })
                .collect(),
            queue_wait_ms: 0,
        };
        let frame = sluice_ipc::encode(&QmgrMessage::Deliver(job)).unwrap();
        self.stream.write_all(&frame).unwrap();
    }

    fn done(&mut self) -> JobResult {
        match self.read() {
            AgentMessage::Done(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn deliver(&mut self, id: QueueId, rcpts: &[&str]) -> Vec<RecipientResult> {
        self.send(id, rcpts);
        self.done().recipients
    }
}

/// The files in a Maildir's `new/`, sorted by content.
fn maildir(dir: &Path) -> Vec<(Vec<u8>, u32)> {
    let mut out: Vec<(Vec<u8>, u32)> = std::fs::read_dir(dir.join("new"))
        .map(|d| {
            d.map(|e| {
                let path = e.unwrap().path();
                let owner = std::fs::metadata(&path).unwrap().uid();
                (std::fs::read(&path).unwrap(), owner)
            })
            .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn expected(delivered_to: &str, content: &[u8]) -> Vec<u8> {
    let mut e =
        format!("Return-Path: <alice@example.net>\nDelivered-To: {delivered_to}\n").into_bytes();
    e.extend(as_lf(content));
    e
}

fn summary(r: &RecipientResult) -> (Outcome, &str) {
    (r.outcome, r.dsn.as_str())
}

#[test]
fn aliases_virtual_mailboxes_system_users_and_forwarding() {
    if !is_root() {
        eprintln!("not root: cannot create users or switch to them; nothing checked");
        return;
    }
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        base.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let owner = TestUser::new("q", base.path());
    let ann = TestUser::new("a", base.path());
    let bob = TestUser::new("b", base.path());
    let vmail = TestUser::new("v", base.path());
    let vdir = base.path().join("virtual");
    std::fs::create_dir(&vdir).unwrap();
    nix::unistd::chown(&vdir, Some(vmail.uid.into()), Some(vmail.gid.into())).unwrap();
    let include = base.path().join("list.txt");
    std::fs::write(&include, format!("# the list\n{}\n", bob.name)).unwrap();
    let aliases = base.path().join("aliases");
    std::fs::write(
        &aliases,
        format!(
            "# test aliases\nteam: {a}, {b}\nnested: team\nlist: :include:{inc}\n\
             loop1: loop2\nloop2: loop1\nthis line is broken\nfwd: away@remote.test, {a}\n\
             postmaster: {a}\nShout: {b}\n",
            a = ann.name,
            b = bob.name,
            inc = include.display()
        ),
    )
    .unwrap();
    let map = base.path().join("vmap");
    std::fs::write(
        &map,
        format!(
            "v1@local.test {d}/one/\nv2@local.test {d}/two/\n",
            d = vdir.display()
        ),
    )
    .unwrap();
    // bob keeps a copy and forwards one.
    std::fs::write(
        bob.home.join(".forward"),
        format!("\\{}, copy@remote.test\n", bob.name),
    )
    .unwrap();
    nix::unistd::chown(
        &bob.home.join(".forward"),
        Some(bob.uid.into()),
        Some(bob.gid.into()),
    )
    .unwrap();

    let setup = Setup::new(
        &owner,
        &format!(
            "aliases: {:?}, virtual_mailboxes: {:?}, virtual_owner: {:?}",
            aliases, map, vmail.name
        ),
    );
    let hints = std::thread::spawn({
        let qmgr = setup.qmgr.try_clone().unwrap();
        move || {
            let mut ids = Vec::new();
            for _ in 0..4 {
                let (mut s, _) = qmgr.accept().unwrap();
                let hello = Hello {
                    protocol: sluice_ipc::qmgr::PROTOCOL.into(),
                    version: sluice_ipc::qmgr::VERSION,
                };
                // A hint does not wait for the hello: it may be gone.
                let _ = s.write_all(&sluice_ipc::encode(&hello).unwrap());
                let mut d = FrameDecoder::new();
                let mut buf = [0u8; 512];
                loop {
                    let n = s.read(&mut buf).unwrap();
                    assert!(n > 0);
                    d.push(&buf[..n]);
                    if let Some(sluice_ipc::qmgr::Request::NewMail { queue_id }) =
                        d.next_message().unwrap()
                    {
                        ids.push(queue_id);
                        break;
                    }
                }
            }
            ids
        }
    });
    let (_agent, mut conn) = setup.start_agent();

    let rcpts = [
        "v1@local.test",
        "V2@Local.Test",
        "nested@local.test",
        "ghost@local.test",
        "loop1@local.test",
        "list@local.test",
        "SHOUT+tag@local.test",
        "postmaster@local.test",
        "fwd@local.test",
    ];
    let id = setup.queue(CONTENT, &rcpts);
    let r = conn.deliver(id, &rcpts);
    let log = setup.log();
    assert_eq!(r.len(), rcpts.len(), "{log}");
    assert_eq!(
        summary(&r[0]),
        (Outcome::Delivered, "2.0.0"),
        "{r:?}\n{log}"
    );
    assert_eq!(summary(&r[1]), (Outcome::Delivered, "2.0.0"), "{r:?}");
    assert_eq!(summary(&r[2]), (Outcome::Delivered, "2.0.0"), "{r:?}");
    assert_eq!(summary(&r[3]), (Outcome::Bounced, "5.1.1"), "{r:?}");
    assert_eq!(summary(&r[4]), (Outcome::Bounced, "5.4.6"), "{r:?}");
    assert!(r[4]
        .reply
        .contains("loop1@local.test -> loop2@local.test -> loop1@local.test"));
    for (i, rr) in r.iter().enumerate().skip(5) {
        assert_eq!(
            summary(rr),
            (Outcome::Delivered, "2.0.0"),
            "{i}: {r:?}\n{log}"
        );
    }
    assert!(r[8].reply.contains("forwarded as "), "{:?}", r[8]);
    assert!(log.contains("aliases:7: missing \":\""), "{log}");
    assert!(log.contains(&format!("{id}: to=<ghost@local.test>, relay=local")));

    // Virtual mailboxes: byte for byte, owned by the virtual owner.
    assert_eq!(
        maildir(&vdir.join("one")),
        [(expected("v1@local.test", CONTENT), vmail.uid)]
    );
    assert_eq!(
        maildir(&vdir.join("two")),
        [(expected("v2@local.test", CONTENT), vmail.uid)]
    );
    // ann: nested (via team), postmaster, fwd. bob: nested, list, shout
    // (each keeping its copy through \bob): the same address once per
    // recipient.
    let ann_box = maildir(&ann.home.join("Maildir"));
    let a = format!("{}@local.test", ann.name);
    assert_eq!(ann_box.len(), 3, "{log}");
    assert!(ann_box
        .iter()
        .all(|(m, uid)| *m == expected(&a, CONTENT) && *uid == ann.uid));
    let bob_box = maildir(&bob.home.join("Maildir"));
    let b = format!("{}@local.test", bob.name);
    assert_eq!(bob_box.len(), 3, "{log}");
    assert!(bob_box
        .iter()
        .all(|(m, uid)| *m == expected(&b, CONTENT) && *uid == bob.uid));
    let meta = std::fs::metadata(ann.home.join("Maildir/new")).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (ann.uid, 0o700));

    // Forwarded copies: new queue files owned by the spool owner, hinted.

    let hinted = hints.join().unwrap();
    assert_eq!(hinted.len(), 4);
    let queued: Vec<QueueId> = setup
        .spool
        .list(sluice_spool::Area::Queue)
        .unwrap()
        .into_iter()
        .filter(|q| *q != id)
        .collect();
    assert_eq!(queued.len(), 4, "{queued:?}");
    let mut seen = Vec::new();
    for q in &queued {
        let path = setup.spool.path(sluice_spool::Area::Queue, *q);
        assert_eq!(std::fs::metadata(&path).unwrap().uid(), owner.uid);
        let f = setup.spool.read(*q).unwrap();
        assert_eq!(f.envelope.sender, "alice@example.net");
        assert!(f.content.starts_with(b"Delivered-To: "));
        assert!(f.content.ends_with(CONTENT));
        for rcpt in f.envelope.recipients {
            seen.push(rcpt.address);
        }
    }
    assert!(seen.contains(&"away@remote.test".to_owned()), "{seen:?}");
    assert!(seen.contains(&"copy@remote.test".to_owned()), "{seen:?}");
    assert!(hinted
        .iter()
        .all(|h| queued.iter().any(|q| q.to_string() == *h)));

    // A message that was already delivered to v1 is a loop.
    let mut looped = b"Delivered-To: v1@local.test\r\n".to_vec();
    looped.extend_from_slice(CONTENT);
    let id2 = setup.queue(&looped, &["v1@local.test"]);
    let r = conn.deliver(id2, &["v1@local.test"]);
    assert_eq!(summary(&r[0]), (Outcome::Bounced, "5.4.6"));
    assert_eq!(maildir(&vdir.join("one")).len(), 1);
}

#[test]
fn mbox_delivery_as_the_user_and_two_at_once_leave_two_whole_messages() {
    if !is_root() {
        eprintln!("not root: cannot create users or switch to them; nothing checked");
        return;
    }
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        base.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let owner = TestUser::new("r", base.path());
    let carl = TestUser::new("c", base.path());
    let setup = Setup::new(
        &owner,
        &format!(
            "aliases: {:?}, mailbox: \"~/mbox\"",
            base.path().join("none")
        ),
    );
    let (_a1, mut c1) = setup.start_agent();
    let (_a2, mut c2) = setup.start_agent();
    // Big messages, with lines that need quoting, so that an unlocked
    // interleaving would show.
    let mut one = b"Subject: one\r\n\r\n".to_vec();
    let mut two = b"Subject: two\r\n\r\n".to_vec();
    for i in 0..40_000 {
        one.extend_from_slice(format!("From one line {i}\r\n").as_bytes());
        two.extend_from_slice(format!("two line {i}\r\n").as_bytes());
    }
    let rcpt = format!("{}@local.test", carl.name);
    let id1 = setup.queue(&one, &[&rcpt]);
    let id2 = setup.queue(&two, &[&rcpt]);
    c1.send(id1, &[&rcpt]);
    c2.send(id2, &[&rcpt]);
    let r1 = c1.done().recipients;
    let r2 = c2.done().recipients;
    assert_eq!(
        summary(&r1[0]),
        (Outcome::Delivered, "2.0.0"),
        "{}",
        setup.log()
    );
    assert_eq!(summary(&r2[0]), (Outcome::Delivered, "2.0.0"));
    let path = carl.home.join("mbox");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (carl.uid, 0o600));
    assert!(!carl.home.join("mbox.lock").exists());
    let text = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
    // Split at "From " lines that start an entry (body ones are quoted).
    let mut entries: Vec<&str> = Vec::new();
    let mut start = 0;
    for (pos, _) in text.match_indices("From alice@example.net ") {
        if pos == 0 || text[..pos].ends_with("\n\n") {
            if pos > start {
                entries.push(&text[start..pos]);
            }
            start = pos;
        }
    }
    entries.push(&text[start..]);
    assert_eq!(entries.len(), 2);
    let body = |e: &str| -> String {
        // Drop the From line; unquote; drop the blank line at the end.
        let after = e.split_once('\n').unwrap().1;
        let unquoted = after.replace("\n>From ", "\nFrom ");
        unquoted.strip_suffix('\n').unwrap().to_owned()
    };
    let mut bodies: Vec<String> = entries.iter().map(|e| body(e)).collect();
    bodies.sort();
    let d = format!("{}@local.test", carl.name);
    let mut want: Vec<String> = [&one, &two]
        .iter()
        .map(|c| String::from_utf8(expected(&d, c)).unwrap())
        .collect();
    want.sort();
    assert!(bodies == want, "the two entries are not whole");
}

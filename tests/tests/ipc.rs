//! End-to-end tests of the queue manager's sockets (issue #20 item 8,
//! issue #9 defect 7): a peer that floods the queue manager with frames,
//! or never stops sending, gets its share of the loop and no more, so
//! another peer's request is still answered; the control channel is closed
//! to unprivileged users; many connections never stop the queue manager
//! (running out of descriptors: `ipc_fds.rs`).

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_e2e::{is_root, wait_for, Instance, TestUser, DEADLINE};
use sluice_ipc::client::Client;
use sluice_ipc::qmgr::{self, Action, Request, Response, Target};

/// A peer of `qmgr.sock` that writes new-mail hints (for a file that does
/// not exist), a mebibyte at a time, until told to stop; it counts what it
/// wrote.
struct Flood {
    stop: Arc<AtomicBool>,
    written: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flood {
    fn start(sluice: &Instance) -> Flood {
        let mut stream = UnixStream::connect(qmgr::socket(&sluice.run_dir)).expect("connect");
        let frame = sluice_ipc::encode(&Request::NewMail {
            queue_id: sluice_spool::QueueId::generate().to_string(),
        })
        .expect("encode");
        let chunk = frame.repeat((1 << 20) / frame.len());
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, written) = (stop.clone(), written.clone());
            std::thread::spawn(move || {
                stream
                    .set_write_timeout(Some(Duration::from_millis(200)))
                    .expect("timeout");
                while !stop.load(Ordering::Relaxed) {
                    match stream.write(&chunk) {
                        Ok(n) => {
                            written.fetch_add(n, Ordering::Relaxed);
                            // The rest of a partly written chunk, so that
                            // the stream stays framed.
                            let _ = stream
                                .write_all(&chunk[n..])
                                .map(|()| written.fetch_add(chunk.len() - n, Ordering::Relaxed));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => panic!("the flooding peer was cut off: {e}"),
                    }
                }
            })
        };
        Flood {
            stop,
            written,
            thread: Some(thread),
        }
    }

    fn written(&self) -> usize {
        self.written.load(Ordering::Relaxed)
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the flooding peer");
        }
    }
}

#[test]
fn a_flooding_peer_does_not_delay_another_peers_request() {
    let mut sluice = Instance::new("");
    sluice.start();
    wait_for("the queue manager's socket", || {
        qmgr::socket(&sluice.run_dir).exists()
    });
    let floods = [Flood::start(&sluice), Flood::start(&sluice)];
    // Megabytes of tiny frames are in (the old loop read them all, then
    // decoded them in quadratic time, answering no one meanwhile).
    wait_for("8 MiB of hints from the flooding peers", || {
        floods.iter().map(Flood::written).sum::<usize>() >= 8 << 20
    });
    for _ in 0..3 {
        let before: Vec<usize> = floods.iter().map(Flood::written).collect();
        let mut client = Client::connect(&qmgr::socket(&sluice.run_dir), &qmgr::hello(), DEADLINE)
            .expect("another peer connects and is greeted while the flood goes on");
        let answer: Response = client
            .call(&Request::Change {
                action: Action::Flush,
                target: Target::All,
            })
            .expect("another peer's request is answered while the flood goes on");
        assert_eq!(answer, Response::Done { messages: 0 });
        // The floods never paused: each sent more while that was answered,
        // and each is still served (the queue manager reads on).
        wait_for("the flooding peers to be read further", || {
            floods
                .iter()
                .zip(&before)
                .all(|(f, b)| f.written() > b + (1 << 20))
        });
    }
    for flood in floods {
        flood.stop();
    }
    assert_eq!(sluice.daemon_pids("sluice-qmgr").len(), 1);
    assert_eq!(
        sluice.log_count("sluice-qmgr pid"),
        0,
        "the queue manager never died"
    );
}

/// Starts an instance and waits for the queue manager's socket.
fn started() -> Instance {
    let mut sluice = Instance::new("");
    sluice.start();
    wait_for("the queue manager's socket", || {
        qmgr::socket(&sluice.run_dir).exists()
    });
    sluice
}

/// A flush of nothing, answered: the queue manager serves its socket.
fn answers(sluice: &Instance) -> bool {
    Client::connect(&qmgr::socket(&sluice.run_dir), &qmgr::hello(), DEADLINE)
        .and_then(|mut c| {
            c.call::<_, Response>(&Request::Change {
                action: Action::Flush,
                target: Target::All,
            })
        })
        .is_ok_and(|r| r == Response::Done { messages: 0 })
}

/// Connects to `socket` as `user` (a python3 child) and says what it got:
/// `denied` (no permission to connect), `closed` (closed without a word)
/// or `greeted`.
fn connect_as(user: &TestUser, socket: &std::path::Path) -> String {
    let script = "import socket, sys\n\
                  s = socket.socket(socket.AF_UNIX)\n\
                  try:\n    s.connect(sys.argv[1])\nexcept PermissionError:\n    print('denied'); sys.exit()\n\
                  s.settimeout(30)\n\
                  print('greeted' if s.recv(100) else 'closed')\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(socket)
        .uid(user.uid)
        .gid(user.gid)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn an_unprivileged_user_cannot_use_the_control_channel() {
    if !is_root() {
        eprintln!("needs root to create a user and be it");
        return;
    }
    let sluice = started();
    let base = tempfile::tempdir().expect("tempdir");
    let stranger = TestUser::new("ipc", base.path());
    let socket = qmgr::socket(&sluice.run_dir);
    // The socket's mode keeps a stranger out (it was 0666)...
    let mode = std::fs::metadata(&socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o007, 0, "qmgr.sock mode {mode:o}");
    assert_eq!(connect_as(&stranger, &socket), "denied");
    let (code, _, err) = sluice.queue_tool(&["flush"], Some(stranger.uid));
    assert_eq!(code, 1);
    assert!(err.contains("permission denied"), "{err}");
    // ...and were the mode wrong, its credentials would: the queue manager
    // closes the connection without a word.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    assert_eq!(connect_as(&stranger, &socket), "closed");
    wait_for("the refusal in the log", || {
        sluice.log().contains(&format!(
            "qmgr.sock: refused a connection from uid {}",
            stranger.uid
        ))
    });
    // The unprivileged channel is pickup's wake-up socket, open to all.
    let pickup = sluice_ipc::pickup::socket(&sluice.run_dir);
    wait_for("pickup's socket", || pickup.exists());
    assert_ne!(connect_as(&stranger, &pickup), "denied");
    assert!(answers(&sluice));
}

/// Opens `count` connections to the queue manager and waits until each
/// was greeted or closed; returns them, and how many were greeted.
fn crowd(sluice: &Instance, count: usize) -> (Vec<UnixStream>, usize) {
    use std::io::Read as _;
    let socket = qmgr::socket(&sluice.run_dir);
    let mut open: Vec<UnixStream> = (0..count)
        .map(|_| {
            let s = UnixStream::connect(&socket).expect("connect");
            s.set_nonblocking(true).expect("nonblocking");
            s
        })
        .collect();
    let mut greeted = vec![false; count];
    let mut closed = vec![false; count];
    wait_for("every connection to be greeted or closed", || {
        for (i, s) in open.iter_mut().enumerate() {
            if greeted[i] || closed[i] {
                continue;
            }
            let mut buf = [0u8; 64];
            match s.read(&mut buf) {
                Ok(0) => closed[i] = true,
                Ok(_) => greeted[i] = true,
                Err(_) => {}
            }
        }
        greeted.iter().zip(&closed).all(|(g, c)| *g || *c)
    });
    (open, greeted.iter().filter(|g| **g).count())
}

#[test]
fn eleven_hundred_connections_do_not_stop_the_queue_manager() {
    let sluice = started();
    let qmgr_pid = sluice.daemon_pids("sluice-qmgr");
    let (held, greeted) = crowd(&sluice, 1_100);
    // Peers are capped: the rest were closed at once, and said so once.
    assert!(greeted < 1_100, "{greeted} greeted");
    assert_eq!(
        sluice.log_count("connections: refusing more until some close"),
        1
    );
    drop(held);
    wait_for("the queue manager to answer again", || answers(&sluice));
    assert_eq!(sluice.daemon_pids("sluice-qmgr"), qmgr_pid);
    assert_eq!(sluice.log_count("fatal"), 0, "{}", sluice.log());
}

/// A hint written by a peer that closes at once, before the greeting
/// reaches it (as a one-shot hinter does), is still read and acted on: the
/// message goes out on the hint, not on the queue manager's next scan.
#[test]
fn a_hint_from_a_peer_that_closes_at_once_is_acted_on() {
    let sink = sluice_e2e::sink::Sink::start("127.0.0.1");
    let mut sluice = Instance::new(&format!(
        "relay_domains: [\"example.org\"], routes: {{ \"example.org\": \"{}\" }},",
        sink.route()
    ));
    sluice.start();
    wait_for("the queue manager's socket", || {
        qmgr::socket(&sluice.run_dir).exists()
    });
    // Two answered requests: the queue manager's first turn, and the scan
    // it makes right after binding, are behind us.
    assert!(answers(&sluice));
    assert!(answers(&sluice));
    // A queue file the queue manager has not been told of (the fixture of
    // the previous release's format, with a recent arrival).
    let fixture = include_str!("../../crates/spool/tests/fixtures/version-1.queue");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let file = fixture.replace(
        "arrival: 1732831234.123456\n",
        &format!("arrival: {now}.123456\n"),
    );
    let id = "0H28JOGF4XS009IX0000";
    std::fs::write(sluice.spool_dir.join("queue").join(id), file).expect("queue the file");

    let mut stream = UnixStream::connect(qmgr::socket(&sluice.run_dir)).expect("connect");
    let hint = sluice_ipc::encode(&Request::NewMail {
        queue_id: id.to_owned(),
    })
    .expect("encode");
    stream.write_all(&hint).expect("write the hint");
    drop(stream);

    wait_for("the hinted message at the sink", || sink.count() == 1);
    assert_eq!(
        sluice.log_count("without a hint"),
        0,
        "found by a scan, not by its hint:\n{}",
        sluice.log()
    );
}

//! The built `sluice-queue` binary: listing through the real index, the
//! `mailq` name, exit codes, and the requests it sends to a fake queue
//! manager speaking the `sluice-qmgr` protocol on a Unix socket.

#[path = "../src/testdb.rs"]
mod testdb;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;

use sluice_ipc::qmgr::{Action, Request, Response, Target};
use sluice_ipc::{FrameDecoder, Hello};
use testdb::Fixture;

const BIN: &str = env!("CARGO_BIN_EXE_sluice-queue");

/// A spool with the standard messages, a run dir and a config naming both.
struct Setup {
    /// Kept for its temporary spool directory.
    _fixture: Fixture,
    run: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    fn new(fixture: Fixture) -> Setup {
        let run = tempfile::tempdir().expect("run dir");
        let config = run.path().join("sluice.ron");
        std::fs::write(
            &config,
            format!(
                "(\n    spool_dir: {:?},\n    run_dir: {:?},\n)\n",
                fixture.spool(),
                run.path()
            ),
        )
        .expect("config");
        Setup {
            _fixture: fixture,
            run,
            config,
        }
    }

    fn socket(&self) -> PathBuf {
        sluice_ipc::qmgr::socket(self.run.path())
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with(BIN.as_ref(), args, "")
    }

    fn run_with(&self, program: &Path, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(program)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("TZ", "UTC")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sluice-queue");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("wait")
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("utf-8 stdout")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("utf-8 stderr")
}

#[test]
fn list_prints_mailq_text_and_json() {
    let s = Setup::new(Fixture::standard());
    let out = s.run(&["list"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with(
        "-Queue ID-            --Size-- ----Arrival Time---- -Sender/Recipient-------\n"
    ));
    assert!(
        text.contains(&format!(
            "{}*    2048 Sat Nov 28 23:02:00  alice@example.org\n",
            testdb::ID_ACTIVE
        )),
        "{text}"
    );
    assert!(text.ends_with("\n-- 3 Kbytes in 4 Requests.\n"), "{text}");
    // No subcommand means list.
    assert_eq!(stdout(&s.run(&[])), text);

    let out = s.run(&["list", "--json", "--state", "hold"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("one json line");
    assert_eq!(v["queue_id"], testdb::ID_HELD);
    assert_eq!(v["queue_name"], "hold");

    let out = s.run(&[
        "list",
        "--json",
        "--domain",
        "remote.test",
        "--sender",
        "x@",
    ]);
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout)
        .expect("utf-8")
        .lines()
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains(testdb::ID_DEFERRED), "{lines:?}");
}

#[test]
fn invoked_as_mailq_it_lists() {
    let s = Setup::new(Fixture::standard());
    let link = s.run.path().join("mailq");
    std::os::unix::fs::symlink(BIN, &link).expect("symlink");
    let out = s.run_with(&link, &[], "");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), stdout(&s.run(&["list"])));
    let out = s.run_with(&link, &["--json", "--state", "active"], "");
    assert!(stdout(&out).contains(testdb::ID_ACTIVE), "{}", stdout(&out));
    // mailq has no subcommands.
    assert_eq!(
        s.run_with(&link, &["delete", "ALL"], "").status.code(),
        Some(2)
    );
}

#[test]
fn no_index_is_an_empty_queue() {
    let spool = tempfile::tempdir().expect("spool");
    let fixture = Fixture { dir: spool };
    let s = Setup::new(fixture);
    let out = s.run(&["list"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "Mail queue is empty\n");
    let out = s.run(&["list", "--json"]);
    assert_eq!(stdout(&out), "");
}

#[test]
fn show_unknown_message_fails() {
    let s = Setup::new(Fixture::standard());
    let out = s.run(&["show", "0HOLG8L24XY000010009"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no message 0HOLG8L24XY000010009 in the queue"));
    let out = s.run(&["show", testdb::ID_HELD]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("Queue:       hold\n"));
}

#[test]
fn usage_errors_exit_2_and_config_errors_exit_1() {
    let s = Setup::new(Fixture::standard());
    for args in [
        &["hold"][..],
        &["delete", "ALL", "example.org"],
        &["show", "nope"],
        &["list", "--state", "frozen"],
        &["frobnicate"],
        &["release", "user@example.org"],
    ] {
        let out = s.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    std::fs::write(&s.config, "(\n    spool_dirr: \"/x\",\n)\n").expect("config");
    let out = s.run(&["list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("sluice.ron"), "{err}");
    assert!(err.contains("spool_dirr"), "{err}");
}

#[test]
fn no_queue_manager_is_reported() {
    let s = Setup::new(Fixture::standard());
    let out = s.run(&["flush"]);
    assert_eq!(out.status.code(), Some(1));
    let expected = format!(
        "the queue manager is not running (no {})",
        s.socket().display()
    );
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
}

/// A queue manager that greets with `hello`, records every request and
/// answers each with `answer`, for `connections` connections.
fn fake_qmgr(
    socket: &Path,
    hello: Hello,
    answer: Response,
    connections: usize,
) -> (mpsc::Receiver<Request>, JoinHandle<()>) {
    let listener = UnixListener::bind(socket).expect("bind fake qmgr");
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        for _ in 0..connections {
            let (mut stream, _) = listener.accept().expect("accept");
            stream
                .write_all(&sluice_ipc::encode(&hello).expect("hello"))
                .expect("send hello");
            let mut decoder = FrameDecoder::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = stream.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                decoder.push(&buf[..n]);
                while let Some(request) = decoder.next_message::<Request>().expect("frame") {
                    tx.send(request).expect("record");
                    stream
                        .write_all(&sluice_ipc::encode(&answer).expect("answer"))
                        .expect("send answer");
                }
            }
        }
    });
    (rx, handle)
}

fn qmgr_hello() -> Hello {
    Hello {
        protocol: sluice_ipc::qmgr::PROTOCOL.into(),
        version: sluice_ipc::qmgr::VERSION,
    }
}

#[test]
fn each_command_sends_its_change() {
    let s = Setup::new(Fixture::standard());
    let id = testdb::ID_HELD;
    let id2 = testdb::ID_ACTIVE;
    let both = format!("{id}\n{id2}\n");
    let cases: Vec<(Vec<&str>, &str, Vec<Request>, &str)> = vec![
        (
            vec!["hold", id],
            "",
            vec![change(Action::Hold, Target::Ids(vec![id.into()]))],
            "Placed on hold: 2 messages\n",
        ),
        (
            vec!["delete", "ALL"],
            "",
            vec![change(Action::Delete, Target::All)],
            "Deleted: 2 messages\n",
        ),
        (
            vec!["flush", "Relay.TEST"],
            "",
            vec![change(Action::Flush, Target::Domain("relay.test".into()))],
            "Flushed: 2 messages\n",
        ),
        (
            vec!["flush"],
            "",
            vec![change(Action::Flush, Target::All)],
            "Flushed: 2 messages\n",
        ),
        (
            vec!["requeue", id, "remote.test"],
            "",
            vec![
                change(Action::Requeue, Target::Ids(vec![id.into()])),
                change(Action::Requeue, Target::Domain("remote.test".into())),
            ],
            "Requeued: 4 messages\n",
        ),
        (
            vec!["release", "-"],
            &both,
            vec![change(
                Action::Release,
                Target::Ids(vec![id.into(), id2.into()]),
            )],
            "Released from hold: 2 messages\n",
        ),
    ];
    let (rx, server) = fake_qmgr(
        &s.socket(),
        qmgr_hello(),
        Response::Done { messages: 2 },
        cases.len(),
    );
    for (args, input, expected, report) in cases {
        let out = s.run_with(BIN.as_ref(), &args, input);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), report, "{args:?}");
        let got: Vec<Request> = rx.try_iter().collect();
        assert_eq!(got, expected, "{args:?}");
    }
    server.join().expect("fake qmgr");
}

fn change(action: Action, target: Target) -> Request {
    Request::Change { action, target }
}

#[test]
fn denied_and_failed_are_reported_with_exit_1() {
    let s = Setup::new(Fixture::standard());
    let (rx, server) = fake_qmgr(
        &s.socket(),
        qmgr_hello(),
        Response::Denied {
            reason: "only root or the sluice group may change the queue".into(),
        },
        1,
    );
    let out = s.run(&["delete", "ALL"]);
    server.join().expect("fake qmgr");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("the queue manager refused to delete: only root or the sluice group may change the queue"),
        "{err}"
    );
    assert_eq!(stdout(&out), "");
    assert_eq!(
        rx.try_iter().collect::<Vec<_>>(),
        [change(Action::Delete, Target::All)]
    );

    std::fs::remove_file(s.socket()).expect("remove socket");
    let (_rx, server) = fake_qmgr(
        &s.socket(),
        qmgr_hello(),
        Response::Failed {
            reason: "index is locked".into(),
        },
        1,
    );
    let out = s.run(&["hold", "example.org"]);
    server.join().expect("fake qmgr");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("the queue manager could not hold: index is locked"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_different_protocol_is_refused_before_any_request() {
    let s = Setup::new(Fixture::standard());
    let (rx, server) = fake_qmgr(
        &s.socket(),
        Hello {
            protocol: "sluice-delivery".into(),
            version: 1,
        },
        Response::Done { messages: 1 },
        1,
    );
    let out = s.run(&["flush"]);
    server.join().expect("fake qmgr");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("\"sluice-delivery\" version 1, not sluice-qmgr version 1"));
    assert_eq!(rx.try_iter().count(), 0);
}

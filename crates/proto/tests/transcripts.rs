//! Runs every protocol transcript in `tests/transcripts/*.txt` against the
//! server session, twice: once with the client's input given in the chunks
//! the transcript shows, once one byte at a time. Both runs must meet every
//! expectation and produce the same bytes.
//!
//! Transcript lines (like Postfix's `.in`/`.ref` pairs, in one file):
//!
//! - `# ...` comment; blank lines are ignored.
//! - Settings, before the first exchange: `!hostname H`, `!local D`,
//!   `!relay D`, `!trusted`, `!bare_newline normalize`, `!vrfy off`,
//!   `!expn on`, `!dsn_success_untrusted on`, `!limit NAME VALUE` (a `Limits` field; timeouts in
//!   seconds).
//! - `C: text` the client sends `text` CRLF; `R: text` the client sends
//!   `text` raw, with escapes `\r`, `\n`, `\t`, `\\`, `\xHH`; `!repeat N
//!   text` sends the escaped `text` N times. Consecutive client lines form
//!   one chunk of input (a pipelined group).
//! - `S: line` the next line the server sent must be `line`.
//! - `!verdict queued ID|tempfail` answers the oldest ask (a commit),
//!   `!verdict etrn-started|etrn-unavailable` an ETRN; `!content TEXT`
//!   (escaped), `!sender A`, `!rcpts A B ..`, `!etrn D` check it first.
//!   `!checks on` turns on `Config::checks`; then `!check STAGE [ADDRESS]`
//!   checks that the oldest ask is the check of STAGE (`connect`, `helo`,
//!   `mail`, `rcpt`, `data`, `end-of-data`), for ADDRESS at RCPT (`local`
//!   after it: a local recipient), and `!answer accept` or
//!   `!answer reject CODE X.Y.Z TEXT` answers it. `!no-ask` checks no ask
//!   is out.
//! - `!advance SECONDS`, `!timeout` (calls `handle_timeout`), `!shutdown`.
//! - `!closed` / `!open`; `!stats TEXT` checks the command counters;
//!   `!log TEXT` checks that some log event's debug form contains TEXT;
//!   `!log-chunked TEXT` the same, on the chunked run only.
//!
//! At the end every line the server sent must have been matched.

// A broken transcript or a failed expectation is a test failure: panicking
// is the point.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_proto::reply::{Enhanced, Reply};
use sluice_proto::server::{
    Ask, BareNewline, CheckAnswer, CommitAnswer, Config, EtrnAnswer, Output, Peer, Session, Stage,
};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Split {
    Chunks,
    Bytes,
}

fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            match b[i + 1] {
                b'r' => out.push(b'\r'),
                b'n' => out.push(b'\n'),
                b't' => out.push(b'\t'),
                b'\\' => out.push(b'\\'),
                b'x' => {
                    let hex = std::str::from_utf8(&b[i + 2..i + 4]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 2;
                }
                other => panic!("bad escape \\{}", other as char),
            }
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

struct Run {
    name: String,
    split: Split,
    session: Option<Session>,
    config: Config,
    trusted: bool,
    now: Instant,
    pending_input: Vec<u8>,
    received: Vec<u8>,
    lines: VecDeque<String>,
    asks: VecDeque<Ask>,
    logs: Vec<String>,
    closed: bool,
    lineno: usize,
    all: Vec<String>,
}

impl Run {
    fn ctx(&self) -> String {
        format!("{} line {} ({:?})", self.name, self.lineno, self.split)
    }

    fn session(&mut self) -> &mut Session {
        if self.session.is_none() {
            let peer = Peer {
                addr: "192.0.2.7:40000".parse().unwrap(),
                trusted: self.trusted,
                hostname: Some("client.example".into()),
            };
            self.session = Some(Session::new(Arc::new(self.config.clone()), peer, self.now));
        }
        self.session.as_mut().unwrap()
    }

    fn drain(&mut self) {
        let ctx = self.ctx();
        let s = self.session.as_mut().unwrap();
        while let Some(o) = s.poll_output() {
            match o {
                Output::Send(bytes) => {
                    assert!(!self.closed, "{ctx}: output after Close");
                    assert!(!bytes.is_empty(), "{ctx}: empty Send");
                    self.received.extend_from_slice(&bytes);
                }
                Output::Ask(a) => self.asks.push_back(a),
                Output::Log(e) => self.logs.push(format!("{e:?}")),
                Output::Close => {
                    assert!(!self.closed, "{ctx}: Close twice");
                    self.closed = true;
                }
            }
        }
        // Split complete lines off the received bytes.
        while let Some(i) = self.received.windows(2).position(|w| w == b"\r\n") {
            let line: Vec<u8> = self.received.drain(..i + 2).collect();
            let line = String::from_utf8(line[..i].to_vec()).expect("server sent UTF-8");
            self.all.push(line.clone());
            self.lines.push_back(line);
        }
    }

    fn flush(&mut self) {
        self.session();
        let input = std::mem::take(&mut self.pending_input);
        let now = self.now;
        match self.split {
            Split::Chunks => {
                if !input.is_empty() {
                    self.session().handle_input(&input, now);
                }
                self.drain();
            }
            Split::Bytes => {
                for b in input {
                    self.session().handle_input(&[b], now);
                    self.drain();
                }
                self.drain();
            }
        }
    }

    fn ask(&mut self) -> &Ask {
        let ctx = self.ctx();
        self.asks
            .front()
            .unwrap_or_else(|| panic!("{ctx}: no ask is out"))
    }
}

fn run(path: &Path, split: Split) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    #[allow(clippy::disallowed_methods)] // the test supplies the clock
    let now = Instant::now();
    let mut r = Run {
        name: path.file_name().unwrap().to_string_lossy().into_owned(),
        split,
        session: None,
        config: Config {
            hostname: "mx.example.org".into(),
            ..Config::default()
        },
        trusted: false,
        now,
        pending_input: Vec::new(),
        received: Vec::new(),
        lines: VecDeque::new(),
        asks: VecDeque::new(),
        logs: Vec::new(),
        closed: false,
        lineno: 0,
        all: Vec::new(),
    };
    for (n, line) in text.lines().enumerate() {
        r.lineno = n + 1;
        let line = line.trim_end_matches('\r');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(t) = line
            .strip_prefix("C: ")
            .or(if line == "C:" { Some("") } else { None })
        {
            r.pending_input.extend_from_slice(t.as_bytes());
            r.pending_input.extend_from_slice(b"\r\n");
            continue;
        }
        if let Some(t) = line.strip_prefix("R: ") {
            r.pending_input.extend_from_slice(&unescape(t));
            continue;
        }
        if let Some(t) = line.strip_prefix("!repeat ") {
            let (count, what) = t.split_once(' ').unwrap();
            let what = unescape(what);
            for _ in 0..count.parse::<usize>().unwrap() {
                r.pending_input.extend_from_slice(&what);
            }
            continue;
        }
        // Settings apply before the session exists.
        if r.session.is_none() {
            let (word, arg) = line.split_once(' ').unwrap_or((line, ""));
            let done = match word {
                "!hostname" => {
                    r.config.hostname = arg.into();
                    true
                }
                "!local" => {
                    r.config.local_domains.push(arg.into());
                    true
                }
                "!relay" => {
                    r.config.relay_domains.push(arg.into());
                    true
                }
                "!trusted" => {
                    r.trusted = true;
                    true
                }
                "!bare_newline" => {
                    assert_eq!(arg, "normalize");
                    r.config.bare_newline = BareNewline::Normalize;
                    true
                }
                "!vrfy" => {
                    r.config.vrfy_enabled = arg == "on";
                    true
                }
                "!expn" => {
                    r.config.expn_enabled = arg == "on";
                    true
                }
                "!dsn_success_untrusted" => {
                    r.config.dsn_success_untrusted = arg == "on";
                    true
                }
                "!checks" => {
                    r.config.checks = arg == "on";
                    true
                }
                "!limit" => {
                    let (name, value) = arg.split_once(' ').unwrap();
                    let l = &mut r.config.limits;
                    let n: u64 = value.parse().unwrap();
                    match name {
                        "max_line_length" => l.max_line_length = n as usize,
                        "max_message_size" => l.max_message_size = n,
                        "max_recipients" => l.max_recipients = n as usize,
                        "max_errors" => l.max_errors = n as u32,
                        "command_timeout" => l.command_timeout = Duration::from_secs(n),
                        "data_timeout" => l.data_timeout = Duration::from_secs(n),
                        "session_timeout" => l.session_timeout = Duration::from_secs(n),
                        other => panic!("unknown limit {other}"),
                    }
                    true
                }
                _ => false,
            };
            if done {
                continue;
            }
        }
        r.flush();
        let ctx = r.ctx();
        if let Some(expected) = line.strip_prefix("S: ") {
            let got = r.lines.pop_front();
            assert_eq!(got.as_deref(), Some(expected), "{ctx}");
            continue;
        }
        let (word, arg) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "!verdict" => {
                r.ask();
                r.asks.pop_front();
                let now = r.now;
                match arg.split_once(' ').unwrap_or((arg, "")) {
                    ("queued", id) => r.session().handle_commit(
                        CommitAnswer::Queued {
                            queue_id: id.into(),
                        },
                        now,
                    ),
                    ("tempfail", _) => r.session().handle_commit(CommitAnswer::TempFail, now),
                    ("etrn-started", _) => r.session().handle_etrn(EtrnAnswer::Started, now),
                    ("etrn-unavailable", _) => {
                        r.session().handle_etrn(EtrnAnswer::Unavailable, now);
                    }
                    other => panic!("{ctx}: bad verdict {other:?}"),
                }
                r.drain();
            }
            "!answer" => {
                let answer = match arg.split_once(' ').unwrap_or((arg, "")) {
                    ("accept", _) => CheckAnswer::Accept,
                    ("reject", reply) => {
                        let (code, rest) = reply.split_once(' ').unwrap();
                        let (enhanced, text) = rest.split_once(' ').unwrap();
                        let e: Vec<u16> = enhanced.split('.').map(|n| n.parse().unwrap()).collect();
                        CheckAnswer::Reject(Reply::new(
                            code.parse().unwrap(),
                            Some(Enhanced::new(e[0] as u8, e[1], e[2])),
                            text,
                        ))
                    }
                    other => panic!("{ctx}: bad answer {other:?}"),
                };
                assert!(matches!(r.ask(), Ask::Check(_)), "{ctx}: {:?}", r.ask());
                r.asks.pop_front();
                let now = r.now;
                r.session().handle_check(answer, now);
                r.drain();
            }
            "!content" => match r.ask() {
                Ask::Commit(c) => assert_eq!(
                    String::from_utf8_lossy(&c.content),
                    String::from_utf8_lossy(&unescape(arg)),
                    "{ctx}"
                ),
                other => panic!("{ctx}: {other:?}"),
            },
            "!sender" => match r.ask() {
                Ask::Commit(c) => assert_eq!(c.envelope.sender, arg, "{ctx}"),
                other => panic!("{ctx}: {other:?}"),
            },
            "!rcpts" => match r.ask() {
                Ask::Commit(c) => {
                    let got: Vec<&str> = c
                        .envelope
                        .recipients
                        .iter()
                        .map(|x| x.address.as_str())
                        .collect();
                    let want: Vec<&str> = arg.split(' ').collect();
                    assert_eq!(got, want, "{ctx}");
                }
                other => panic!("{ctx}: {other:?}"),
            },
            "!envelope" => match r.ask() {
                Ask::Commit(c) => {
                    let got = format!("{:?}", c.envelope);
                    assert!(got.contains(arg), "{ctx}: {got} lacks {arg}");
                }
                other => panic!("{ctx}: {other:?}"),
            },
            "!etrn" => match r.ask() {
                Ask::Etrn { domain } => assert_eq!(domain, arg, "{ctx}"),
                other => panic!("{ctx}: {other:?}"),
            },
            "!check" => match r.ask() {
                Ask::Check(c) => {
                    let mut words = arg.split(' ');
                    let stage = match words.next().unwrap() {
                        "connect" => Stage::Connect,
                        "helo" => Stage::Helo,
                        "mail" => Stage::Mail,
                        "rcpt" => Stage::Rcpt,
                        "data" => Stage::Data,
                        "end-of-data" => Stage::EndOfData,
                        other => panic!("{ctx}: bad stage {other}"),
                    };
                    assert_eq!(c.stage, stage, "{ctx}");
                    assert_eq!(c.recipient.as_deref(), words.next(), "{ctx}");
                    assert_eq!(c.local, words.next() == Some("local"), "{ctx}");
                }
                other => panic!("{ctx}: {other:?}"),
            },
            "!no-ask" => assert!(r.asks.is_empty(), "{ctx}: unexpected ask {:?}", r.asks),
            "!advance" => {
                r.now += Duration::from_secs(arg.parse().unwrap());
            }
            "!timeout" => {
                let now = r.now;
                r.session().handle_timeout(now);
                r.drain();
            }
            "!shutdown" => {
                let now = r.now;
                r.session().handle_shutdown(now);
                r.drain();
            }
            "!closed" => {
                assert!(r.closed, "{ctx}: not closed");
                assert!(r.session().is_closed(), "{ctx}");
            }
            "!open" => assert!(!r.closed, "{ctx}: closed"),
            "!stats" => {
                let counts: Vec<_> = r.session().command_stats().iter().collect();
                let got = sluice_log::line::command_counts(&counts);
                assert_eq!(got, arg, "{ctx}");
            }
            // Some events depend on how the input was split (improper
            // pipelining): checked on the chunked run only.
            "!log-chunked" if r.split == Split::Bytes => {}
            "!log" | "!log-chunked" => {
                assert!(
                    r.logs.iter().any(|l| l.contains(arg)),
                    "{ctx}: no log event contains {arg:?}: {:#?}",
                    r.logs
                );
            }
            other => panic!("{ctx}: unknown directive {other}"),
        }
    }
    r.flush();
    let ctx = r.ctx();
    assert!(
        r.lines.is_empty(),
        "{ctx}: unmatched server lines {:?}",
        r.lines
    );
    assert!(
        r.received.is_empty(),
        "{ctx}: partial server line {:?}",
        r.received
    );
    assert!(r.asks.is_empty(), "{ctx}: unanswered asks {:?}", r.asks);
    r.all
}

#[test]
fn transcripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 20,
        "transcripts missing in {}",
        dir.display()
    );
    let mut failed = Vec::new();
    for p in &paths {
        let result = std::panic::catch_unwind(|| {
            let whole = run(p, Split::Chunks);
            let bytes = run(p, Split::Bytes);
            assert_eq!(whole, bytes, "{}: output differs by split", p.display());
        });
        if result.is_err() {
            failed.push(p.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    assert!(failed.is_empty(), "failed transcripts: {failed:?}");
}

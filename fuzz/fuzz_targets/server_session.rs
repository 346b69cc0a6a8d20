//! Fuzzes the SMTP server session with arbitrary input cut at arbitrary
//! points, answering every ask late, as smtpd does (the commit thread, the
//! recipient lookup and the checks answer after other events), and checks
//! it never panics and keeps its promises: output is whole reply lines,
//! nothing after Close, nothing while an ask is out, and a `queued as`
//! reply only for a `CommitAnswer::Queued` the driver gave.
//!
//! Input bytes are biased through an alphabet (as smtp-proto's fuzzer does)
//! so that short inputs reach deep states: 0x80..=0x9F stand for SMTP
//! fragments, 0xFF cuts the input, 0xFE lets time pass, 0xFD asks for
//! shutdown, 0xFC answers the ask that is out (input, timeouts and
//! shutdown before it arrive while it is pending); other bytes are
//! themselves. The first byte picks the settings.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sluice_proto::reply::{Enhanced, Reply};
use sluice_proto::server::{
    Ask, BareNewline, CheckAnswer, CommitAnswer, Config, EtrnAnswer, Limits, Output, Peer,
    Session,
};

const ALPHABET: [&[u8]; 32] = [
    b"HELO x\r\n",
    b"EHLO client.example\r\n",
    b"MAIL FROM:",
    b"RCPT TO:",
    b"DATA\r\n",
    b"BDAT ",
    b" LAST",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"QUIT\r\n",
    b"VRFY ",
    b"EXPN ",
    b"ETRN ",
    b"HELP\r\n",
    b"\r\n",
    b"\r\n.\r\n",
    b".",
    b":",
    b"<",
    b">",
    b"@",
    b"<u@example.org>",
    b"<a@b.example>",
    b" SIZE=",
    b" BODY=8BITMIME",
    b" SMTPUTF8",
    b" NOTIFY=SUCCESS,DELAY",
    b" ORCPT=rfc822;",
    b"\r",
    b"\n",
    b"partner.example",
    b"\"q@x\"%!",
];

fn config(flags: u8) -> Config {
    let small = flags & 0x10 != 0;
    Config {
        hostname: "mx.example.org".into(),
        limits: if small {
            Limits {
                max_line_length: 16,
                max_message_size: 64,
                max_recipients: 2,
                max_errors: 5,
                ..Limits::default()
            }
        } else {
            Limits::default()
        },
        local_domains: vec!["example.org".into()],
        relay_domains: vec!["partner.example".into()],
        bare_newline: if flags & 1 != 0 {
            BareNewline::Normalize
        } else {
            BareNewline::Reject
        },
        vrfy_enabled: flags & 4 != 0,
        expn_enabled: flags & 8 != 0,
        dsn_success_untrusted: flags & 0x40 != 0,
        checks: flags & 0x20 != 0,
    }
}

struct Driver {
    session: Session,
    now: Instant,
    closed: bool,
    queued_given: usize,
    queued_seen: usize,
    answers: usize,
    partial: Vec<u8>,
    /// The ask that is out, answered at the next 0xFC (or at the end).
    pending: Option<Ask>,
}

impl Driver {
    fn pump(&mut self) {
        while let Some(o) = self.session.poll_output() {
            match o {
                Output::Send(bytes) => {
                    assert!(!self.closed, "Send after Close");
                    assert!(!bytes.is_empty());
                    self.partial.extend_from_slice(&bytes);
                    assert!(self.partial.ends_with(b"\r\n"), "Send ends mid-line");
                    for line in self.partial.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                        assert!(line.len() >= 5 && line.ends_with(b"\r"), "{line:?}");
                        assert!(line[..3].iter().all(u8::is_ascii_digit), "{line:?}");
                        assert!(line[3] == b' ' || line[3] == b'-', "{line:?}");
                        assert!(!line[..line.len() - 1].contains(&b'\r'));
                        if line.windows(9).any(|w| w == b"queued as") {
                            self.queued_seen += 1;
                        }
                    }
                    self.partial.clear();
                    assert!(self.queued_seen <= self.queued_given, "250 without Queued");
                }
                Output::Ask(ask) => {
                    assert!(self.pending.is_none(), "two asks out");
                    assert!(!self.session.wants_input());
                    assert_eq!(self.session.poll_timeout(), None);
                    self.pending = Some(ask);
                }
                Output::Log(_) => {}
                Output::Close => {
                    assert!(!self.closed, "Close twice");
                    self.closed = true;
                    assert!(self.session.is_closed());
                }
            }
        }
    }
}

impl Driver {
    /// Answers the ask that is out, if any; every kind of answer in turn.
    fn answer(&mut self) {
        let Some(ask) = self.pending.take() else {
            return;
        };
        self.answers += 1;
        let n = self.answers;
        match ask {
            Ask::Commit(_) if n % 3 == 0 => self.session.handle_commit(CommitAnswer::TempFail, self.now),
            Ask::Commit(_) => {
                self.queued_given += 1;
                let queue_id = format!("Q{n}");
                self.session.handle_commit(CommitAnswer::Queued { queue_id }, self.now);
            }
            Ask::Etrn { .. } if n % 2 == 0 => self.session.handle_etrn(EtrnAnswer::Unavailable, self.now),
            Ask::Etrn { .. } => self.session.handle_etrn(EtrnAnswer::Started, self.now),
            Ask::Check(_) => {
                let answer = match n % 4 {
                    0 => CheckAnswer::Reject(Reply::new(550, Some(Enhanced::new(5, 7, 1)), "no")),
                    1 => CheckAnswer::Reject(Reply::new(451, Some(Enhanced::new(4, 3, 0)), "later")),
                    _ => CheckAnswer::Accept,
                };
                self.session.handle_check(answer, self.now);
            }
        }
        self.pump();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    #[allow(clippy::disallowed_methods)] // the fuzz driver owns the clock
    let now = Instant::now();
    let peer = Peer {
        addr: "192.0.2.7:40000".parse().expect("literal address"),
        trusted: flags & 2 != 0,
        hostname: None,
    };
    let mut d = Driver {
        session: Session::new(Arc::new(config(flags)), peer, now),
        now,
        closed: false,
        queued_given: 0,
        queued_seen: 0,
        answers: 0,
        partial: Vec::new(),
        pending: None,
    };
    d.pump();
    let mut chunk = Vec::new();
    for &b in rest {
        match b {
            0x80..=0x9F => chunk.extend_from_slice(ALPHABET[usize::from(b - 0x80)]),
            0xFF => {
                d.session.handle_input(&chunk, d.now);
                chunk.clear();
                d.pump();
            }
            0xFE => {
                d.now += Duration::from_secs(120);
                d.session.handle_timeout(d.now);
                d.pump();
            }
            0xFD => {
                d.session.handle_shutdown(d.now);
                d.pump();
            }
            0xFC => d.answer(),
            _ => chunk.push(b),
        }
    }
    d.session.handle_input(&chunk, d.now);
    d.pump();
    // Every ask is answered in the end (smtpd's asks table gives a default
    // answer at the deadline): the session goes on until no ask is out.
    while d.pending.is_some() {
        d.answer();
    }
    if let Some(t) = d.session.poll_timeout() {
        d.session.handle_timeout(t);
        d.pump();
        assert!(d.closed, "timeout at poll_timeout did not close");
    }
});

//! Property tests: dot-stuffing round trips, stuffed content always arrives
//! intact through DATA, and any split of a valid session's input gives the
//! same replies and the same committed messages.

// Failed properties panic: that is how proptest reports them.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Instant;

use proptest::prelude::*;
use sluice_proto::data::{data_terminator, dot_stuff, dot_unstuff};
use sluice_proto::server::{
    Ask, CheckAnswer, CommitAnswer, Config, EtrnAnswer, Output, Peer, Session,
};

#[allow(clippy::disallowed_methods)] // the test supplies the clock
fn start() -> Instant {
    Instant::now()
}

fn new_session() -> Session {
    let config = Config {
        hostname: "mx.example.org".into(),
        local_domains: vec!["example.org".into()],
        ..Config::default()
    };
    let peer = Peer {
        addr: "192.0.2.7:40000".parse().unwrap(),
        trusted: false,
        hostname: None,
    };
    Session::new(Arc::new(config), peer, start())
}

/// Feeds `input` in the given pieces, answering every commit with a
/// numbered queue ID; returns the bytes sent and the contents committed.
fn play(pieces: &[&[u8]]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let now = start();
    let mut s = new_session();
    let mut sent = Vec::new();
    let mut commits = Vec::new();
    let pump = |s: &mut Session, sent: &mut Vec<u8>, commits: &mut Vec<Vec<u8>>| {
        while let Some(o) = s.poll_output() {
            match o {
                Output::Send(b) => sent.extend_from_slice(&b),
                Output::Ask(Ask::Commit(c)) => {
                    commits.push(c.content);
                    let queue_id = format!("Q{}", commits.len());
                    s.handle_commit(CommitAnswer::Queued { queue_id }, now);
                }
                Output::Ask(Ask::Etrn { .. }) => s.handle_etrn(EtrnAnswer::Started, now),
                Output::Ask(Ask::Check(_)) => s.handle_check(CheckAnswer::Accept, now),
                Output::Log(_) | Output::Close => {}
            }
        }
    };
    pump(&mut s, &mut sent, &mut commits);
    for p in pieces {
        s.handle_input(p, now);
        pump(&mut s, &mut sent, &mut commits);
    }
    (sent, commits)
}

/// Lines of text without CR or LF, joined by CRLF.
fn crlf_text() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop::collection::vec(
            prop_oneof![Just(b'.'), Just(b'a'), Just(b' '), any::<u8>()]
                .prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'),
            0..20,
        ),
        0..12,
    )
    .prop_map(|lines| {
        let mut out = Vec::new();
        for l in lines {
            out.extend_from_slice(&l);
            out.extend_from_slice(b"\r\n");
        }
        out
    })
}

const SESSION: &[u8] = b"EHLO client.example\r\n\
MAIL FROM:<a@b.example> SIZE=100\r\nRCPT TO:<u@example.org>\r\nRCPT TO:<x@evil.example>\r\n\
DATA\r\nSubject: one\r\n\r\n..dot\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<v@example.org>\r\n\
BDAT 7\r\nchunk\r\nBDAT 5 LAST\r\nlast.\r\nNOOP\r\nVRFY x\r\nRSET\r\nQUIT\r\n";

/// SMTP fragments that random input is built from (the fuzz target's idea,
/// on stable, with fewer cases).
const FRAGMENTS: [&[u8]; 24] = [
    b"EHLO c\r\n",
    b"HELO c\r\n",
    b"MAIL FROM:",
    b"RCPT TO:",
    b"DATA\r\n",
    b"BDAT ",
    b" LAST",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"ETRN ",
    b"\r\n",
    b"\r\n.\r\n",
    b".",
    b"<u@example.org>",
    b"<a@b.example>",
    b"<>",
    b" SIZE=9",
    b"\r",
    b"\n",
    b"3",
    b"x",
    b"\xff",
    b"%",
    b"\"q@x\"",
];

proptest! {
    #[test]
    fn random_fragments_keep_the_promises(
        picks in prop::collection::vec((0..FRAGMENTS.len(), any::<bool>()), 0..120)
    ) {
        let mut pieces: Vec<Vec<u8>> = vec![Vec::new()];
        for (i, cut) in picks {
            pieces.last_mut().unwrap().extend_from_slice(FRAGMENTS[i]);
            if cut {
                pieces.push(Vec::new());
            }
        }
        let refs: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
        let (sent, commits) = play(&refs);
        prop_assert!(sent.ends_with(b"\r\n"));
        let text = String::from_utf8(sent).unwrap();
        for line in text.split_terminator("\r\n") {
            prop_assert!(line.len() >= 4, "{:?}", line);
            prop_assert!(line[..3].bytes().all(|b| b.is_ascii_digit()), "{:?}", line);
        }
        // Every "queued as" answers one commit, in order.
        let queued = text.matches("queued as").count();
        prop_assert_eq!(queued, commits.len());
    }

    #[test]
    fn stuffing_round_trips(x in prop::collection::vec(
        prop_oneof![Just(b'.'), Just(b'\r'), Just(b'\n'), any::<u8>()], 0..200)) {
        let stuffed = dot_stuff(&x);
        prop_assert_eq!(dot_unstuff(&stuffed), x);
        // A dot that starts a line is always followed by another dot, so
        // stuffed content can never hold an end-of-data line.
        for j in 0..stuffed.len() {
            let at_line_start = j == 0 || stuffed[j - 1] == b'\n';
            if at_line_start && stuffed[j] == b'.' {
                prop_assert_eq!(stuffed.get(j + 1), Some(&b'.'));
            }
        }
    }

    #[test]
    fn stuffed_text_arrives_intact(text in crlf_text(), cut in 0usize..400) {
        let mut input = b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<u@example.org>\r\nDATA\r\n".to_vec();
        input.extend_from_slice(&dot_stuff(&text));
        input.extend_from_slice(data_terminator(&text));
        let cut = cut.min(input.len());
        let (sent, commits) = play(&[&input[..cut], &input[cut..]]);
        prop_assert_eq!(commits, vec![text]);
        prop_assert!(String::from_utf8_lossy(&sent).ends_with("250 2.0.0 Ok: queued as Q1\r\n"));
    }

    #[test]
    fn any_split_gives_the_same_output(mut cuts in prop::collection::vec(0..SESSION.len(), 0..40)) {
        let whole = play(&[SESSION]);
        cuts.sort_unstable();
        cuts.dedup();
        let mut pieces = Vec::new();
        let mut last = 0;
        for c in cuts {
            pieces.push(&SESSION[last..c]);
            last = c;
        }
        pieces.push(&SESSION[last..]);
        let split = play(&pieces);
        prop_assert_eq!(&split, &whole);
    }
}

#[test]
fn reference_session_output() {
    // Pins what the split property compares against.
    let (sent, commits) = play(&[SESSION]);
    let sent = String::from_utf8(sent).unwrap();
    assert_eq!(
        commits,
        vec![
            b"Subject: one\r\n\r\n.dot\r\n".to_vec(),
            b"chunk\r\nlast.".to_vec()
        ]
    );
    assert!(sent.contains("554 5.7.1 <x@evil.example>: Relay access denied\r\n"));
    assert!(sent.contains("250 2.0.0 Ok: queued as Q1\r\n"));
    assert!(sent.contains("250 2.0.0 Ok: 7 octets\r\n250 2.0.0 Ok: queued as Q2\r\n"));
    assert!(sent.ends_with("250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n"));
}

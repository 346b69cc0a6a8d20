//! Issue 9 defect 1, as a property: whatever envelope a queue file or a
//! maildrop file holds (hostile text: line ends, NULs, spaces, brackets),
//! what the client engine writes onto the wire holds no control character
//! but the CRLF that ends each command. An envelope that could inject a
//! command is refused before `MAIL FROM`.

// Failed properties panic: that is how proptest reports them.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant, SystemTime};

use proptest::prelude::*;
use sluice_proto::client::{Output, Params, Protocol, Session, Status, Timeouts, Tls};
use sluice_proto::envelope::{Envelope, Notify, Recipient};
use sluice_spool::{Message, QueueId, Source};

/// Text biased toward what breaks a command line.
fn hostile() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("a".to_owned()),
        Just("@".to_owned()),
        Just("x.example".to_owned()),
        Just("\r\n".to_owned()),
        Just("\r".to_owned()),
        Just("\n".to_owned()),
        Just("\0".to_owned()),
        Just(" ".to_owned()),
        Just(">".to_owned()),
        Just("<".to_owned()),
        Just("\"".to_owned()),
        Just("\u{85}".to_owned()),
        Just("RCPT TO:<evil@x.example>".to_owned()),
        Just(";".to_owned()),
        any::<char>().prop_map(String::from),
    ];
    proptest::collection::vec(piece, 0..8).prop_map(|v| v.concat())
}

fn envelope() -> impl Strategy<Value = Envelope> {
    let rcpt =
        (hostile(), proptest::option::of(hostile())).prop_map(|(address, orcpt)| Recipient {
            address,
            notify: Some(Notify {
                success: false,
                failure: true,
                delay: false,
            }),
            orcpt,
        });
    (
        hostile(),
        proptest::collection::vec(rcpt, 1..4),
        proptest::option::of(hostile()),
    )
        .prop_map(|(sender, recipients, envid)| Envelope {
            sender,
            recipients,
            envid,
            ..Envelope::default()
        })
}

/// A queue file (`smtp`) or a maildrop file (`local`) holding `envelope`,
/// read back as the agents and pickup read it.
fn through_a_file(envelope: &Envelope, maildrop: bool) -> Envelope {
    let source = if maildrop {
        Source::Local {
            uid: 1000,
            user: "u".into(),
        }
    } else {
        Source::Notice
    };
    let bytes = sluice_spool::encode(&Message {
        id: QueueId::generate(),
        arrival: SystemTime::UNIX_EPOCH,
        source: &source,
        envelope,
        content: &[b"x\r\n"],
    });
    sluice_spool::decode(&bytes).unwrap().envelope
}

#[allow(clippy::disallowed_methods)] // the test supplies the clock
fn start() -> Instant {
    Instant::now()
}

/// Everything the client engine sends up to the end of the pipelined
/// MAIL/RCPT/DATA group, against a server that offers every extension.
fn wire(envelope: Envelope) -> (Vec<u8>, Vec<Status>) {
    let now = start();
    let params = Params {
        helo_name: "out.example.net".into(),
        envelope,
        message_size: 3,
        timeouts: Timeouts::uniform(Duration::from_secs(60)),
        protocol: Protocol::Smtp,
        tls: Tls::Off,
        keep_open: false,
    };
    let mut c = Session::new(params, now);
    c.handle_input(b"220 mx\r\n", now);
    c.handle_input(
        b"250-mx\r\n250-PIPELINING\r\n250-SIZE 100000\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 DSN\r\n",
        now,
    );
    let mut sent = Vec::new();
    let mut statuses = Vec::new();
    while let Some(o) = c.poll_output() {
        match o {
            Output::Send(b) => sent.extend_from_slice(&b),
            Output::Done(outcomes) => statuses.extend(outcomes.into_iter().map(|o| o.status)),
            _ => {}
        }
    }
    (sent, statuses)
}

proptest! {
    #[test]
    fn nothing_but_crlf_line_ends_reach_the_wire(env in envelope(), maildrop in any::<bool>()) {
        let read = through_a_file(&env, maildrop);
        let refused = read.check().is_err();
        let (sent, statuses) = wire(read);
        let text = String::from_utf8(sent).unwrap();
        for line in text.strip_suffix("\r\n").unwrap_or(&text).split("\r\n") {
            prop_assert!(!line.chars().any(char::is_control), "{:?}", line);
        }
        let mail_sent = text.contains("MAIL FROM:");
        if refused {
            prop_assert!(!mail_sent, "{}", text);
            prop_assert!(statuses.iter().all(|s| *s == Status::Bounced));
        } else {
            prop_assert!(mail_sent, "{}", text);
        }
    }
}

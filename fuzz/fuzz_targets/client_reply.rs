//! Fuzz target: the SMTP client engine reading hostile server replies.
//!
//! The outbound agent talks to servers on the internet: whatever bytes a
//! server sends, in whatever split, the session must not panic, must end
//! with one outcome per recipient at most once, and must not grow without
//! bound. The first bytes choose the session's options; the rest is the
//! server's side, cut at arbitrary points.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sluice_proto::client::{Output, Params, Protocol, Session, Timeouts, Tls};
use sluice_proto::envelope::{Envelope, Recipient};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((&split, server)) = rest.split_first() else {
        return;
    };
    let recipients = (0..1 + (flags % 4))
        .map(|i| Recipient {
            address: format!("r{i}@example.org"),
            notify: None,
            orcpt: None,
        })
        .collect();
    let params = Params {
        helo_name: "client.example".into(),
        envelope: Envelope {
            sender: "s@example.net".into(),
            recipients,
            ..Envelope::default()
        },
        message_size: 20,
        timeouts: Timeouts::uniform(Duration::from_secs(10)),
        protocol: if flags & 4 != 0 { Protocol::Lmtp } else { Protocol::Smtp },
        tls: match (flags >> 3) % 3 {
            0 => Tls::Off,
            1 => Tls::Opportunistic,
            _ => Tls::Required,
        },
        keep_open: flags & 32 != 0,
    };
    let content = b"Subject: x\r\n\r\n.dot\r\nbody\r\n";
    let mut now = Instant::now();
    let mut session = Session::new(params, now);
    let mut outcomes = 0;
    let step = usize::from(split).max(1);
    for chunk in server.chunks(step) {
        session.handle_input(chunk, now);
        now += Duration::from_millis(1);
        while let Some(out) = session.poll_output() {
            match out {
                Output::Send(bytes) => assert!(bytes.len() < 1 << 20),
                Output::Content => {
                    let mut buf = Vec::new();
                    while !session.next_content_chunk(content, &mut buf, now) {
                        buf.clear();
                    }
                }
                Output::Done(list) => {
                    outcomes += 1;
                    assert_eq!(outcomes, 1, "Done comes once");
                    assert!(!list.is_empty());
                }
                Output::StartTls => session.handle_tls_ready(now),
                Output::Close => {}
            }
        }
    }
    session.handle_timeout(now + Duration::from_secs(3600));
    while session.poll_output().is_some() {}
});

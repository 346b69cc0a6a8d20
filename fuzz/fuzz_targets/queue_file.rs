//! Fuzz target: `sluice_spool::decode` on arbitrary bytes must never panic,
//! and whatever it accepts must survive an encode/decode round trip.
//!
//! Half the inputs are used raw; the other half are read as a list of tokens
//! from an alphabet of queue-file fragments (keys, separators, escapes, the
//! end marker), so the fuzzer reaches the value parsers quickly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_spool::{decode, encode, Message};

const ALPHABET: &[&[u8]] = &[
    b"sluice-queue 1\n",
    b"id: 0H28JOGF4XS009IX0000\n",
    b"arrival: 1732831234.123456\n",
    b"source: smtp\n",
    b"source: local\n",
    b"client-addr: 192.0.2.10\n",
    b"client-addr: ::1\n",
    b"client-port: 25\n",
    b"client-hostname: ",
    b"client-helo: ",
    b"protocol: ESMTP\n",
    b"local-uid: 0\n",
    b"local-user: ",
    b"sender: <",
    b"body: 8BITMIME\n",
    b"smtputf8: no\n",
    b"ret: FULL\n",
    b"envid: ",
    b"declared-size: 99999999999999999999\n",
    b"rcpt: <",
    b"> notify=success,delay",
    b" orcpt=",
    b"content-length: ",
    b"\n",
    b"\n\n",
    b": ",
    b"%",
    b"%0A",
    b"%C3%A9",
    b"<",
    b">",
    b" ",
    b"0",
    b"1",
    b"\xff",
    b"end-of-queue-file\n",
    b"\nend-of-queue-file\n",
];

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some((_, tokens)) = data.split_first() {
        let built: Vec<u8> = tokens
            .iter()
            .flat_map(|&t| ALPHABET[usize::from(t) % ALPHABET.len()].iter().copied())
            .collect();
        check(&built);
    }
});

fn check(bytes: &[u8]) {
    let Ok(file) = decode(bytes) else {
        return;
    };
    let content: &[&[u8]] = &[&file.content];
    let again = encode(&Message {
        id: file.id,
        arrival: file.arrival,
        source: &file.source,
        envelope: &file.envelope,
        content,
    });
    assert_eq!(decode(&again).as_ref(), Ok(&file));
}

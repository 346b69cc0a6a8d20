//! Fuzz target: the bytes of a DNS reply, hostile (anyone who reaches the
//! resolver's port can send one), through everything the resolver does
//! with them: decoding, the match against the question, the CNAME walk,
//! and reading the MX and address records. Nothing may panic, and no
//! exchange name handed to routing may hold a control character or a space.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (mx, _addresses) = sluice_dns::read_reply_bytes(data);
    for (_, name) in &mx {
        assert!(
            !name.chars().any(|c| c.is_control() || c == ' '),
            "exchange name {name:?}"
        );
    }
});

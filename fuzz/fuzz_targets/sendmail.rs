//! Fuzz target: what any local user gives `sluice-sendmail`: its
//! arguments (split at NUL bytes; the first byte picks the name it was
//! invoked as) and the message header that `-t` reads recipients from.
//! Nothing may panic, and no recipient taken from a header may hold a line
//! break.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_sendmail::{addrlist, args};

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let invoked_as = ["sendmail", "mailq", "newaliases"][usize::from(which % 3)];
    let argv: Vec<String> = rest
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let _ = args::parse(invoked_as, &argv);

    let header = sluice_cleanup::Header::parse(rest);
    for list in header.values(&["To", "Cc", "Bcc", "Resent-To", "Resent-Cc", "Resent-Bcc"]) {
        if let Ok(addresses) = addrlist::parse(&list) {
            for a in addresses {
                assert!(!a.contains(['\r', '\n']), "{a:?}");
            }
        }
    }
    let _ = header.to_bytes();
});

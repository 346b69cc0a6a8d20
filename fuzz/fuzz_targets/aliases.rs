//! Fuzz target: the aliases file parser and the virtual map parser.
//!
//! Aliases files and `:include:` files may be written by people who are
//! not the mail administrator; whatever they contain, parsing must not
//! panic, and every error names a line of the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines = text.split('\n').count();
    let table = sluice_mailbox::aliases::parse(&text, Path::new("aliases"));
    for e in &table.errors {
        assert!(e.line >= 1 && e.line <= lines, "error on line {} of {}", e.line, lines);
    }
    let _ = sluice_mailbox::aliases::parse_targets(&text);
    let map = sluice_mailbox::virtual_map::parse(&text, Path::new("virtual"), Some(Path::new("/base")));
    for e in &map.errors {
        assert!(e.line >= 1 && e.line <= lines);
    }
});

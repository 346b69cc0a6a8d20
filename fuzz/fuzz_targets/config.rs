//! Fuzz target: the configuration file parser. An operator's typo, or a
//! file someone else could write, must give an error that names the file,
//! never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = sluice_config::parse(&text, Path::new("/etc/sluice/sluice.ron")) {
        let shown = e.to_string();
        assert!(shown.contains("sluice.ron"), "{shown}");
    }
});

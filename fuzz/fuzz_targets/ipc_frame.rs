//! Fuzz target: the frame decoder on a peer's bytes, in any split, read as
//! the queue manager reads them (never more than the decoder's room, then
//! decode). It must never panic, never hold more than one maximal frame,
//! and what it decodes must encode back to a frame that decodes the same.
//!
//! The first byte sets the read size, so that frames split at every place.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_ipc::{encode, FrameDecoder, MAX_BUFFERED};

fuzz_target!(|data: &[u8]| {
    let Some((&size, mut rest)) = data.split_first() else {
        return;
    };
    let size = usize::from(size) + 1;
    let mut decoder = FrameDecoder::new();
    loop {
        loop {
            match decoder.next_message::<sluice_ipc::qmgr::Request>() {
                Ok(Some(request)) => {
                    let frame = encode(&request).expect("a decoded request encodes");
                    let mut again = FrameDecoder::new();
                    again.push(&frame);
                    let back = again.next_message::<sluice_ipc::qmgr::Request>();
                    assert_eq!(back.expect("decodes").as_ref(), Some(&request));
                }
                Ok(None) => break,
                // A bad frame closes the connection.
                Err(_) => return,
            }
        }
        let take = size.min(decoder.room()).min(rest.len());
        if take == 0 {
            return;
        }
        decoder.push(&rest[..take]);
        rest = &rest[take..];
        assert!(decoder.buffered() <= MAX_BUFFERED);
    }
});

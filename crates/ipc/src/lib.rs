//! Framed messages between Sluice processes over Unix stream sockets.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of
//! JSON (readable with `socat` and `strace`; the volume is tiny: queue IDs
//! cross, message bodies never do). The server speaks first with a
//! [`Hello`]; a peer whose protocol or version differs is closed.
//!
//! # Must never
//! Allocate for a frame before its length is checked against
//! [`MAX_FRAME`], or give up on the process for a bad frame: a bad frame is
//! an error value; the caller logs it, closes that connection and serves on.
#![forbid(unsafe_code)]

pub mod agent;
pub mod anvil;
pub mod client;
pub mod delivery;
pub mod pickup;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// The largest frame accepted, in bytes of JSON.
pub const MAX_FRAME: usize = 1 << 20;

/// What can be wrong with a frame.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The length prefix announces more than [`MAX_FRAME`].
    #[error("frame of {0} bytes is over the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// The JSON does not match the expected message type.
    #[error("bad frame: {0}")]
    Json(#[from] serde_json::Error),
}

/// The first frame on every connection, sent by the serving side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Which protocol this socket speaks, e.g. `sluice-qmgr`.
    pub protocol: String,
    /// Its version; a mismatch ends the connection.
    pub version: u32,
}

/// Encodes one message as a frame.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, Error> {
    let json = serde_json::to_vec(message)?;
    if json.len() > MAX_FRAME {
        return Err(Error::TooLarge(json.len()));
    }
    let len = u32::try_from(json.len()).map_err(|_| Error::TooLarge(json.len()))?;
    let mut frame = Vec::with_capacity(4 + json.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&json);
    Ok(frame)
}

/// The most bytes a [`FrameDecoder`] needs to hold: one maximal frame.
pub const MAX_BUFFERED: usize = 4 + MAX_FRAME;

/// Collects bytes from a stream and yields whole frames (sans-IO).
///
/// Frames are decoded in place: a frame taken out only moves a cursor, and
/// the buffer is compacted when the consumed part outweighs the rest, so
/// decoding N frames costs time linear in their bytes, however small they
/// are. A reader that never lets [`FrameDecoder::buffered`] pass
/// [`MAX_BUFFERED`] (read at most [`FrameDecoder::room`] bytes, then
/// decode) holds at most one maximal frame per peer.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Where the undecoded bytes start in `buf`.
    start: usize,
    /// Bytes moved by compaction, so a test can check the cost is linear.
    #[cfg(test)]
    moved: usize,
}

impl FrameDecoder {
    /// A decoder with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes as they arrived from the socket.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > self.buf.len() - self.start {
            // The consumed part is the larger: moving the rest down costs
            // less than the frames taken since the last move.
            #[cfg(test)]
            {
                self.moved += self.buf.len() - self.start;
            }
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// How many more bytes may be pushed before the next decode without
    /// holding more than one maximal frame ([`MAX_BUFFERED`]). Never zero
    /// right after [`FrameDecoder::next_message`] gave `Ok(None)`.
    pub fn room(&self) -> usize {
        MAX_BUFFERED.saturating_sub(self.buffered())
    }

    /// The next whole message, `Ok(None)` if more bytes are needed. After an
    /// error the connection must be closed: the stream cannot be resynced.
    pub fn next_message<T: DeserializeOwned>(&mut self) -> Result<Option<T>, Error> {
        let pending = &self.buf[self.start..];
        let Some(prefix) = pending.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*prefix) as usize;
        if len > MAX_FRAME {
            return Err(Error::TooLarge(len));
        }
        let Some(json) = pending.get(4..4 + len) else {
            return Ok(None);
        };
        let message = serde_json::from_slice(json);
        self.start += 4 + len;
        Ok(Some(message?))
    }
}

/// Requests to the queue manager's socket (`run_dir/qmgr.sock`).
pub mod qmgr {
    use std::path::{Path, PathBuf};

    use serde::{Deserialize, Serialize};

    /// The protocol name in the queue manager's [`super::Hello`].
    pub const PROTOCOL: &str = "sluice-qmgr";
    /// Its version.
    pub const VERSION: u32 = 1;

    /// The queue manager's socket in `run_dir`: the one place its name is
    /// written.
    pub fn socket(run_dir: &Path) -> PathBuf {
        run_dir.join("qmgr.sock")
    }

    /// The queue manager's greeting.
    pub fn hello() -> super::Hello {
        super::Hello {
            protocol: PROTOCOL.to_owned(),
            version: VERSION,
        }
    }

    /// A message to the queue manager.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub enum Request {
        /// A hint: a new queue file is in `queue/`. Idempotent; the queue
        /// manager also scans, so a lost hint costs latency, never mail.
        /// It has no response.
        NewMail {
            /// The queue ID (the file name in `queue/`).
            queue_id: String,
        },
        /// ETRN (RFC 1985): attempt deferred mail for a domain now.
        Etrn {
            /// The domain, as the client gave it.
            domain: String,
        },
        /// An operator's change to the queue (root or the `sluice` group
        /// only, checked with the peer's credentials).
        Change {
            /// What to do.
            action: Action,
            /// To which messages.
            target: Target,
        },
    }

    /// The operator's queue changes.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    pub enum Action {
        /// Attempt deferred recipients now.
        Flush,
        /// Keep messages from delivery until released.
        Hold,
        /// Undo hold.
        Release,
        /// Remove messages without notice.
        Delete,
        /// Resolve routes again and attempt now.
        Requeue,
    }

    /// Which messages a change applies to.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub enum Target {
        /// These queue IDs.
        Ids(Vec<String>),
        /// Every message with a recipient in this domain.
        Domain(String),
        /// Every message.
        All,
    }

    /// The queue manager's answer to [`Request::Etrn`] and [`Request::Change`].
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub enum Response {
        /// Done; how many messages were affected.
        Done {
            /// Messages affected.
            messages: u64,
        },
        /// The peer may not do this.
        Denied {
            /// Why.
            reason: String,
        },
        /// It could not be done.
        Failed {
            /// Why.
            reason: String,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        let mut d = FrameDecoder::new();
        d.push(&u32::MAX.to_be_bytes());
        assert!(matches!(d.next_message::<Hello>(), Err(Error::TooLarge(_))));
    }

    #[test]
    fn bad_json_is_an_error_not_a_panic() {
        let mut d = FrameDecoder::new();
        d.push(&3u32.to_be_bytes());
        d.push(b"{x}");
        assert!(matches!(d.next_message::<Hello>(), Err(Error::Json(_))));
    }

    /// `count` frames of 14 bytes, the size of the measured flood's.
    fn tiny_frames(count: usize) -> Vec<u8> {
        let frame = encode(&"12345678").expect("encode");
        assert_eq!(frame.len(), 14);
        frame.repeat(count)
    }

    #[test]
    fn many_small_frames_decode_in_linear_time() {
        // 4 MiB of 14-byte frames, as one local peer sent them: the old
        // decoder moved the whole rest of the buffer after each frame
        // (about 600 GB of copying here, 8-11 s); decoding in place moves
        // no byte when everything arrived at once.
        let count = (4 << 20) / 14;
        let mut d = FrameDecoder::new();
        d.push(&tiny_frames(count));
        let mut decoded = 0;
        while let Some(m) = d.next_message::<String>().expect("decode") {
            assert_eq!(m, "12345678");
            decoded += 1;
        }
        assert_eq!(decoded, count);
        assert_eq!(d.buffered(), 0);
        assert_eq!(d.moved, 0);
    }

    #[test]
    fn compaction_moves_at_most_the_bytes_received() {
        // Arriving in odd-sized pieces that split frames, the bytes moved
        // to compact stay below the bytes received (linear, not quadratic).
        let wire = tiny_frames(100_000);
        let mut d = FrameDecoder::new();
        let mut decoded = 0;
        for chunk in wire.chunks(4099) {
            d.push(chunk);
            while d.next_message::<String>().expect("decode").is_some() {
                decoded += 1;
            }
        }
        assert_eq!(decoded, 100_000);
        assert!(d.moved <= wire.len(), "moved {} of {}", d.moved, wire.len());
    }

    #[test]
    fn room_caps_what_is_held_at_one_maximal_frame() {
        let mut d = FrameDecoder::new();
        assert_eq!(d.room(), MAX_BUFFERED);
        // The start of a maximal frame: the reader may take the rest of
        // that frame and nothing more before it decodes.
        let mut head = u32::try_from(MAX_FRAME)
            .expect("fits")
            .to_be_bytes()
            .to_vec();
        head.extend_from_slice(b"\"");
        d.push(&head);
        assert!(d.next_message::<String>().expect("incomplete").is_none());
        assert_eq!(d.room(), MAX_FRAME - 1);
        d.push(&vec![b'a'; MAX_FRAME - 2]);
        d.push(b"\"");
        assert_eq!(d.room(), 0);
        // A full buffer always holds a whole frame, so decoding makes room.
        let s: String = d.next_message().expect("decode").expect("whole");
        assert_eq!(s.len(), MAX_FRAME - 2);
        assert_eq!(d.room(), MAX_BUFFERED);
    }

    proptest! {
        #[test]
        fn frames_round_trip_under_any_split(ids in proptest::collection::vec("[A-Z0-9]{1,20}", 1..8), split in 1usize..64) {
            let messages: Vec<qmgr::Request> = ids.into_iter().map(|queue_id| qmgr::Request::NewMail { queue_id }).collect();
            let mut wire = Vec::new();
            for m in &messages {
                wire.extend(encode(m).expect("encode"));
            }
            let mut d = FrameDecoder::new();
            let mut got = Vec::new();
            for chunk in wire.chunks(split) {
                d.push(chunk);
                while let Some(m) = d.next_message::<qmgr::Request>().expect("decode") {
                    got.push(m);
                }
            }
            prop_assert_eq!(got, messages);
        }
    }
}

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
pub mod call;
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

/// Collects bytes from a stream and yields whole frames (sans-IO).
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    /// A decoder with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes as they arrived from the socket.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, `Ok(None)` if more bytes are needed. After an
    /// error the connection must be closed: the stream cannot be resynced.
    pub fn next_message<T: DeserializeOwned>(&mut self) -> Result<Option<T>, Error> {
        let Some(prefix) = self.buf.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*prefix) as usize;
        if len > MAX_FRAME {
            return Err(Error::TooLarge(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let message = serde_json::from_slice(&self.buf[4..4 + len]);
        self.buf.drain(..4 + len);
        Ok(Some(message?))
    }
}

/// Requests to the queue manager's socket (`run_dir/qmgr.sock`).
pub mod qmgr {
    use serde::{Deserialize, Serialize};

    /// The protocol name in the queue manager's [`super::Hello`].
    pub const PROTOCOL: &str = "sluice-qmgr";
    /// Its version.
    pub const VERSION: u32 = 1;

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

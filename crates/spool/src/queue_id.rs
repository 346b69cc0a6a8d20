//! Queue IDs: the name of a message in the spool and in every log line.
//!
//! A [`QueueId`] is 20 upper-case base-36 characters: 11 for the wall-clock
//! time in microseconds, 5 for the pid, 4 for a per-process sequence number
//! (FORMAT.md, "Queue IDs"). String order is generation-time order.
//!
//! # Must never
//! Hand out the same ID twice in one process, or an ID smaller than one it
//! handed out before, even when the clock steps back.
//!
//! # Security
//! [`QueueId::from_str`] reads hostile text (file names, IPC, command lines)
//! and accepts only the canonical 20-character form, so a parsed ID is always
//! safe to use as a file name.
//!
//! # Errors
//! Parsing returns [`BadQueueId`]; generation cannot fail.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DIGITS: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const TIME_LEN: usize = 11;
const PID_LEN: usize = 5;
const SEQ_LEN: usize = 4;
/// Length in characters of every queue ID.
pub const QUEUE_ID_LEN: usize = TIME_LEN + PID_LEN + SEQ_LEN;

const TIME_LIMIT: u64 = 36u64.pow(TIME_LEN as u32);
const PID_LIMIT: u32 = 36u32.pow(PID_LEN as u32);
const SEQ_LIMIT: u32 = 36u32.pow(SEQ_LEN as u32);

/// The unique, time-sortable name of one queued message.
///
/// Field order matters: the derived `Ord` compares time, then pid, then
/// sequence, which is the order of the text form.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId {
    micros: u64,
    pid: u32,
    seq: u32,
}

/// The last (time, sequence) handed out by this process.
static LAST: Mutex<(u64, u32)> = Mutex::new((0, 0));

impl QueueId {
    /// A new ID, greater than every ID this process generated before.
    ///
    /// Unique across processes (the pid is part of it) and across restarts
    /// (the time is), as long as a pid is not reused within the same
    /// microsecond after the clock stepped back.
    pub fn generate() -> QueueId {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .min(TIME_LIMIT - 1);
        let pid = std::process::id() % PID_LIMIT;
        // A poisoned lock only means another thread panicked while holding
        // two integers; the integers are still consistent.
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        let (micros, seq) = next_after(*last, now);
        *last = (micros, seq);
        QueueId { micros, pid, seq }
    }

    /// The wall-clock time (microsecond precision) at which it was generated.
    pub fn timestamp(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.micros)
    }

    /// The text form as fixed-size ASCII bytes, without allocating.
    fn to_bytes(self) -> [u8; QUEUE_ID_LEN] {
        let mut out = [b'0'; QUEUE_ID_LEN];
        put_base36(&mut out[..TIME_LEN], self.micros);
        put_base36(&mut out[TIME_LEN..TIME_LEN + PID_LEN], u64::from(self.pid));
        put_base36(&mut out[TIME_LEN + PID_LEN..], u64::from(self.seq));
        out
    }
}

/// The (time, sequence) to use after `last` when the clock reads `now`:
/// strictly greater than `last`, and `now` itself whenever the clock moved on.
fn next_after(last: (u64, u32), now: u64) -> (u64, u32) {
    let (micros, seq) = last;
    if now > micros {
        (now, 0)
    } else if seq + 1 < SEQ_LIMIT {
        // Same microsecond, or the clock stepped back: stay on the last
        // time and count up.
        (micros, seq + 1)
    } else {
        // Sequence exhausted: borrow the next microsecond.
        ((micros + 1).min(TIME_LIMIT - 1), 0)
    }
}

/// Writes `value` into `out`, most significant digit first, zero-padded.
fn put_base36(out: &mut [u8], mut value: u64) {
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(value % 36) as usize];
        value /= 36;
    }
}

/// Reads a fixed-width base-36 number; `None` on any other character.
fn get_base36(text: &[u8]) -> Option<u64> {
    text.iter().try_fold(0u64, |acc, &c| {
        let digit = match c {
            b'0'..=b'9' => c - b'0',
            b'A'..=b'Z' => c - b'A' + 10,
            _ => return None,
        };
        acc.checked_mul(36)?.checked_add(u64::from(digit))
    })
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.to_bytes();
        // Every byte comes from DIGITS, so this is always ASCII.
        f.write_str(std::str::from_utf8(&bytes).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueueId({self})")
    }
}

/// A string that is not a queue ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a queue ID: {text:?}")]
pub struct BadQueueId {
    /// The rejected text, cut to at most 40 characters.
    pub text: String,
}

impl FromStr for QueueId {
    type Err = BadQueueId;

    fn from_str(s: &str) -> Result<QueueId, BadQueueId> {
        let bad = || BadQueueId {
            text: s.chars().take(40).collect(),
        };
        let b = s.as_bytes();
        if b.len() != QUEUE_ID_LEN {
            return Err(bad());
        }
        let micros = get_base36(&b[..TIME_LEN]).ok_or_else(bad)?;
        let pid = get_base36(&b[TIME_LEN..TIME_LEN + PID_LEN]).ok_or_else(bad)?;
        let seq = get_base36(&b[TIME_LEN + PID_LEN..]).ok_or_else(bad)?;
        // Fixed widths bound every value below its limit, so these fit.
        Ok(QueueId {
            micros,
            pid: u32::try_from(pid).map_err(|_| bad())?,
            seq: u32::try_from(seq).map_err(|_| bad())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn any_id() -> impl Strategy<Value = QueueId> {
        (0..TIME_LIMIT, 0..PID_LIMIT, 0..SEQ_LIMIT).prop_map(|(micros, pid, seq)| QueueId {
            micros,
            pid,
            seq,
        })
    }

    proptest! {
        #[test]
        fn display_from_str_round_trip(id in any_id()) {
            let text = id.to_string();
            prop_assert_eq!(text.len(), QUEUE_ID_LEN);
            prop_assert!(text.bytes().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()));
            prop_assert_eq!(text.parse::<QueueId>(), Ok(id));
        }

        #[test]
        fn text_order_is_id_order(a in any_id(), b in any_id()) {
            prop_assert_eq!(a.cmp(&b), a.to_string().cmp(&b.to_string()));
        }

        #[test]
        fn from_str_rejects_non_canonical(s in "\\PC{0,24}") {
            match s.parse::<QueueId>() {
                Ok(id) => prop_assert_eq!(id.to_string(), s),
                Err(e) => prop_assert!(s.starts_with(&e.text)),
            }
        }
    }

    #[test]
    fn from_str_rejects_bad_text() {
        let good = QueueId::generate().to_string();
        assert!(good.parse::<QueueId>().is_ok());
        let lower = good.to_ascii_lowercase();
        for bad in [
            "",
            &good[1..],
            &format!("{good}0"),
            &lower,
            &format!("{}-", &good[..QUEUE_ID_LEN - 1]),
            &format!("+{}", &good[1..]),
            "ZZZZZZZZZZZZZZZZZZZ\u{e9}",
        ] {
            if bad != good {
                assert!(bad.parse::<QueueId>().is_err(), "accepted {bad:?}");
            }
        }
    }

    #[test]
    fn timestamp_is_now() {
        let before = SystemTime::now() - Duration::from_millis(1);
        let id = QueueId::generate();
        let after = SystemTime::now() + Duration::from_millis(1);
        assert!(id.timestamp() >= before && id.timestamp() <= after);
        assert_eq!(id.pid, std::process::id() % PID_LIMIT);
    }

    #[test]
    fn tight_loop_is_strictly_increasing() {
        let ids: Vec<QueueId> = (0..50_000).map(|_| QueueId::generate()).collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{} !< {}", pair[0], pair[1]);
            assert!(pair[0].to_string() < pair[1].to_string());
        }
    }

    #[test]
    fn threads_get_distinct_ids_in_order() {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(|| (0..10_000).map(|_| QueueId::generate()).collect::<Vec<_>>())
            })
            .collect();
        let mut all = HashSet::new();
        for handle in handles {
            let ids = handle.join().unwrap();
            let mut sorted = ids.clone();
            sorted.sort();
            assert_eq!(sorted, ids, "one thread's ids are not in generation order");
            for id in ids {
                assert!(all.insert(id), "duplicate {id}");
            }
        }
        assert_eq!(all.len(), 80_000);
    }

    #[test]
    fn clock_step_back_keeps_order() {
        let t = 1_732_831_234_123_456;
        assert_eq!(next_after((0, 0), t), (t, 0));
        assert_eq!(next_after((t, 0), t), (t, 1));
        // The clock stepped back an hour: stay on the last time, count up.
        assert_eq!(next_after((t, 7), t - 3_600_000_000), (t, 8));
        // Sequence exhausted: borrow the next microsecond.
        assert_eq!(next_after((t, SEQ_LIMIT - 1), t), (t + 1, 0));
        assert_eq!(next_after((t, 3), t + 5), (t + 5, 0));
    }
}

//! Times as the operator reads them: index milliseconds shown in the local
//! time zone (`TZ`, else the system's), the way `mailq` shows them.
//!
//! # Must never
//! Fail a listing because the zone is unknown: it falls back to UTC. Nor
//! ask the system once per message: consecutive messages share the offset
//! of their quarter hour (time zones change on quarter-hour boundaries).

use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

/// `Sat Nov 28 23:01:36`: always 19 characters, as in mailq.
const SHORT: &[BorrowedFormatItem<'_>] = format_description!(
    "[weekday repr:short] [month repr:short] [day padding:space] [hour]:[minute]:[second]"
);
/// `Sat Nov 28 23:01:36 2020`.
const LONG: &[BorrowedFormatItem<'_>] = format_description!(
    "[weekday repr:short] [month repr:short] [day padding:space] [hour]:[minute]:[second] [year]"
);

/// Milliseconds per cache bucket: a quarter hour.
const BUCKET_MS: i64 = 15 * 60 * 1000;

/// Converts index times to local wall-clock text, caching the offset.
#[derive(Debug)]
pub(crate) struct LocalTime {
    fixed: Option<UtcOffset>,
    cached: Option<(i64, UtcOffset)>,
}

impl LocalTime {
    /// The zone of this process (`TZ` or the system's; UTC if unknown).
    pub(crate) fn system() -> LocalTime {
        LocalTime {
            fixed: None,
            cached: None,
        }
    }

    /// A fixed offset (for tests).
    #[cfg(test)]
    pub(crate) fn fixed(offset: UtcOffset) -> LocalTime {
        LocalTime {
            fixed: Some(offset),
            cached: None,
        }
    }

    fn at(&mut self, ms: i64) -> OffsetDateTime {
        let utc = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let offset = match (self.fixed, self.cached) {
            (Some(fixed), _) => fixed,
            (None, Some((bucket, offset))) if bucket == ms.div_euclid(BUCKET_MS) => offset,
            (None, _) => {
                let offset = UtcOffset::local_offset_at(utc).unwrap_or(UtcOffset::UTC);
                self.cached = Some((ms.div_euclid(BUCKET_MS), offset));
                offset
            }
        };
        utc.to_offset(offset)
    }

    /// `Sat Nov 28 23:01:36` (19 characters).
    pub(crate) fn short(&mut self, ms: i64) -> String {
        self.at(ms).format(SHORT).unwrap_or_default()
    }

    /// `Sat Nov 28 23:01:36 2020`.
    pub(crate) fn long(&mut self, ms: i64) -> String {
        self.at(ms).format(LONG).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_form_is_mailq_shaped_and_fixed_width() {
        let mut t = LocalTime::fixed(UtcOffset::UTC);
        assert_eq!(t.short(1_606_604_496_000), "Sat Nov 28 23:01:36");
        assert_eq!(t.short(1_604_192_400_000), "Sun Nov  1 01:00:00");
        assert_eq!(t.long(1_606_604_496_000), "Sat Nov 28 23:01:36 2020");
    }

    #[test]
    fn offset_is_applied() {
        let plus_two = UtcOffset::from_hms(2, 0, 0).expect("offset");
        let mut t = LocalTime::fixed(plus_two);
        assert_eq!(t.short(1_606_604_496_000), "Sun Nov 29 01:01:36");
    }
}

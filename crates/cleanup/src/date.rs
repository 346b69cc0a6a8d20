//! The RFC 5322 date-time every header Sluice writes uses (`Date:`,
//! `Received:`, notices), in UTC: `Tue, 01 Jul 2025 10:00:00 +0000`.
//!
//! # Must never
//! Fail or panic: a time the calendar cannot show reads as the epoch.

use std::time::{SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc2822;
use time::OffsetDateTime;

/// `t` as an RFC 5322 date-time in UTC, whole seconds.
pub fn rfc5322(t: SystemTime) -> String {
    let seconds = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    };
    OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|dt| dt.format(&Rfc2822).ok())
        .unwrap_or_else(|| "Thu, 01 Jan 1970 00:00:00 +0000".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_are_rfc5322_and_never_fail() {
        let t = UNIX_EPOCH + Duration::from_secs(1_751_364_000);
        assert_eq!(rfc5322(t), "Tue, 01 Jul 2025 10:00:00 +0000");
        assert_eq!(rfc5322(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 +0000");
        // Before 1900 the format has no form: the epoch stands in.
        let ancient = UNIX_EPOCH - Duration::from_secs(100 * 366 * 86_400);
        assert_eq!(rfc5322(ancient), "Thu, 01 Jan 1970 00:00:00 +0000");
        let far = UNIX_EPOCH + Duration::from_secs(u64::MAX / 2);
        assert_eq!(rfc5322(far), "Thu, 01 Jan 1970 00:00:00 +0000");
    }
}

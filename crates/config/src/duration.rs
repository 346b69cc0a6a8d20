//! Durations written as unit strings: `"30s"`, `"5m"`, `"1h30m"`, `"0"`.
//!
//! The grammar is one or more `<digits><unit>` groups with units in strictly
//! decreasing order, taken from `w` (week), `d`, `h`, `m`, `s` and `ms`; or
//! the bare string `"0"`. No sign, no spaces, no fractions, no empty string.
//! Formatting gives the shortest such string, so `parse(format(d)) == d` for
//! every duration that is a whole number of milliseconds.
//!
//! # Must never
//! Panic or overflow on any input: every sum is checked.
//!
//! # Security
//! Pure code; the input is the operator's config file, trusted but typo-prone.
//!
//! # Errors
//! A bad string is a message naming the string and what is wrong with it;
//! the caller adds file, line and key.

use std::time::Duration;

/// Units in the order they must appear, with their length in milliseconds.
const UNITS: [(&str, u64); 6] = [
    ("w", 7 * 24 * 3600 * 1000),
    ("d", 24 * 3600 * 1000),
    ("h", 3600 * 1000),
    ("m", 60 * 1000),
    ("s", 1000),
    ("ms", 1),
];

/// Parses a unit string such as `"1h30m"` into a [`Duration`].
///
/// # Errors
/// A message naming the input when it is empty, signed, has an unknown or
/// repeated or out-of-order unit, a number without a unit, or is too large.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let fail = |why: &str| Err(format!("invalid duration {text:?}: {why}"));
    if text.is_empty() {
        return fail("empty (write \"0\" for none, or e.g. \"30s\", \"5m\", \"1h30m\")");
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total: u64 = 0;
    // Index into UNITS of the last unit seen: the next one must come after it.
    let mut next_unit = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return fail("expected a number before each unit (e.g. \"5m\")");
        }
        let (number, after) = rest.split_at(digits);
        let letters = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(letters);
        if unit.is_empty() {
            return if after.is_empty() {
                fail("missing unit after the last number (use w, d, h, m, s or ms)")
            } else {
                fail("unexpected character (use digits followed by w, d, h, m, s or ms)")
            };
        }
        let Some(position) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return fail(&format!("unknown unit {unit:?} (use w, d, h, m, s or ms)"));
        };
        if position < next_unit {
            return fail("units must each appear once, largest first (e.g. \"1h30m\")");
        }
        next_unit = position + 1;
        let Ok(number) = number.parse::<u64>() else {
            return fail("number too large");
        };
        let Some(millis) = number
            .checked_mul(UNITS[position].1)
            .and_then(|m| total.checked_add(m))
        else {
            return fail("too large");
        };
        total = millis;
        rest = after;
    }
    Ok(Duration::from_millis(total))
}

/// Formats a [`Duration`] as the shortest unit string, e.g. `"1h30m"`.
///
/// Sub-millisecond parts are dropped; zero is `"0"`.
#[must_use]
pub fn format_duration(duration: Duration) -> String {
    let mut millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    if millis == 0 {
        return "0".to_owned();
    }
    let mut out = String::new();
    for (name, size) in UNITS {
        let count = millis / size;
        if count > 0 {
            out.push_str(&count.to_string());
            out.push_str(name);
            millis %= size;
        }
    }
    out
}

/// Serde adapter for `#[serde(with = "crate::duration::unit")]` fields.
pub(crate) mod unit {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*value))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_units_and_combinations() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("5d"), Ok(Duration::from_secs(5 * 86400)));
        assert_eq!(parse_duration("1w"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1s500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
    }

    #[test]
    fn rejects_bad_strings_with_the_reason() {
        for (text, why) in [
            ("", "empty"),
            ("-5m", "number before"),
            ("5", "missing unit"),
            ("5x", "unknown unit \"x\""),
            ("5 m", "unexpected character"),
            ("1.5h", "unexpected character"),
            ("30m1h", "largest first"),
            ("5m5m", "largest first"),
            ("h", "number before"),
            ("99999999999999999999s", "number too large"),
            ("99999999999999999w", "too large"),
            ("+5m", "number before"),
        ] {
            let err = parse_duration(text).expect_err(text);
            assert!(err.contains(why), "{text:?}: {err}");
            assert!(err.contains(&format!("{text:?}")), "{err}");
        }
    }

    #[test]
    fn formats_shortest_form() {
        assert_eq!(format_duration(Duration::ZERO), "0");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(86400 * 5)), "5d");
        assert_eq!(format_duration(Duration::from_secs(86400 * 8)), "1w1d");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(format_duration(Duration::from_nanos(999_999)), "0");
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(millis in 0u64..u64::MAX / 2) {
            let d = Duration::from_millis(millis);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }

        #[test]
        fn parse_then_format_is_canonical(h in 0u64..1000, m in 0u64..60, s in 1u64..60) {
            let text = format!("{h}h{m}m{s}s");
            let d = parse_duration(&text).expect("valid");
            prop_assert_eq!(d, Duration::from_secs(h * 3600 + m * 60 + s));
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }

        #[test]
        fn never_panics(text in "[0-9a-z+ .-]{0,24}") {
            let _ = parse_duration(&text);
        }
    }
}

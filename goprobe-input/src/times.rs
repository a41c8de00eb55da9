//! The times and durations users write (`goprobe query --from`, `diff` ranges, the agent's
//! `/api/v1` parameters, `--slower-than`), parsed strictly: anything that is not a time from 1970
//! to year 9999 is an error with a message, never a panic or a silent 1970.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A time range in ms since the epoch, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub from_ms: u64,
    pub to_ms: u64,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The last millisecond of year 9999: the latest time goprobe reads or writes (RFC 3339 has
/// four-digit years, and humantime cannot format a later one).
pub const MAX_MS: u64 = 253_402_300_799_999;

/// `now`, `-5m` / `5m ago` (before now), `@1767225600` (Unix seconds), or an RFC 3339 time
/// (`2026-11-27T10:00:00Z`, `2026-11-27 10:00:00` in UTC). Strict: a time that is not a
/// number, before 1970 or after year 9999 is an error, never a silent 1970 or a panic; only a
/// relative time further back than 1970 is cut to 1970 (the archive holds nothing earlier).
pub fn parse_time(text: &str, now_ms: u64) -> Result<u64, String> {
    let text = text.trim();
    if text == "now" {
        return Ok(now_ms.min(MAX_MS));
    }
    let ago = text
        .strip_prefix('-')
        .or_else(|| text.strip_suffix(" ago"))
        .or_else(|| text.strip_suffix("ago"));
    if let Some(ago) = ago {
        let d = humantime::parse_duration(ago.trim())
            .map_err(|e| format!("invalid duration in {text:?}: {e}"))?;
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        return Ok(now_ms.min(MAX_MS).saturating_sub(ms));
    }
    if let Some(unix) = text.strip_prefix('@') {
        let seconds: f64 = unix
            .parse()
            .ok()
            .filter(|s: &f64| s.is_finite())
            .ok_or_else(|| {
                format!("invalid Unix time {text:?}: write seconds since 1970, e.g. @1767225600")
            })?;
        let ms = (seconds * 1000.0).round();
        if !(0.0..=MAX_MS as f64).contains(&ms) {
            return Err(format!(
                "Unix time {text:?} is out of range: from @0 (1970) to @{} (year 9999)",
                MAX_MS / 1000
            ));
        }
        return Ok(ms as u64);
    }
    let out_of_range = || format!("time {text:?} is out of range: from 1970 to year 9999");
    let time = humantime::parse_rfc3339_weak(text).map_err(|e| match e {
        humantime::TimestampError::OutOfRange => out_of_range(),
        _ => format!(
            "invalid time {text:?}: use now, -DURATION (e.g. -1h), @UNIX_SECONDS or RFC 3339 (2026-11-27T10:00:00Z)"
        ),
    })?;
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) if d.as_millis() <= u128::from(MAX_MS) => Ok(d.as_millis() as u64),
        _ => Err(out_of_range()),
    }
}

/// `FROM..TO`, each end as in [`parse_time`].
pub fn parse_range(text: &str, now_ms: u64) -> Result<Range, String> {
    let (from, to) = text
        .split_once("..")
        .ok_or_else(|| format!("invalid range {text:?}: write FROM..TO, e.g. -2h..-1h"))?;
    let range = Range {
        from_ms: parse_time(from, now_ms)?,
        to_ms: if to.trim().is_empty() {
            now_ms
        } else {
            parse_time(to, now_ms)?
        },
    };
    check_range(range)?;
    Ok(range)
}

pub fn check_range(range: Range) -> Result<(), String> {
    if range.from_ms > range.to_ms {
        return Err(format!(
            "the range starts ({}) after it ends ({})",
            format_ms(range.from_ms),
            format_ms(range.to_ms)
        ));
    }
    Ok(())
}

/// RFC 3339 in UTC; a time past year 9999 (which only a foreign JSON answer could hold, since
/// [`parse_time`] refuses them) as `@UNIX_SECONDS`, since humantime cannot format it.
pub fn format_ms(ms: u64) -> String {
    if ms > MAX_MS {
        return format!("@{}", ms / 1000);
    }
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A duration with its unit: `250ns`, `10us` (or `10µs`), `5ms`, `2s`, `1m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{text:?} has no unit: write e.g. 500us, 10ms or 1s"))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: write e.g. 500us, 10ms or 1s"))?;
    let ns_per = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?}: use ns, us, ms, s or m"
            ));
        }
    };
    let ns = (value * ns_per).round();
    // `as u64` would saturate: a duration past u64 nanoseconds (584 years) is refused instead.
    if !(ns.is_finite() && ns < u64::MAX as f64) {
        return Err(format!("{text:?} is too long: at most 584 years"));
    }
    Ok(Duration::from_nanos(ns as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_ranges() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_time("now", now), Ok(now));
        assert_eq!(parse_time("-5m", now), Ok(now - 300_000));
        assert_eq!(parse_time("1h ago", now), Ok(now - 3_600_000));
        assert_eq!(parse_time("@1700000000.5", now), Ok(1_700_000_000_500));
        assert_eq!(
            parse_time("2026-11-27T10:00:00Z", now),
            Ok(1_795_773_600_000)
        );
        assert!(parse_time("yesterday", now).is_err());
        let r = parse_range("-2h..-1h", now).unwrap();
        assert_eq!(r.to_ms - r.from_ms, 3_600_000);
        assert_eq!(parse_range("-1h..", now).unwrap().to_ms, now);
        assert!(parse_range("-1h", now).is_err());
        assert!(parse_range("-1h..-2h", now).is_err());
    }

    /// Times past year 9999 panicked when formatted, and `@nan` meant 1970: every one of these
    /// is an error now, with a message that says why.
    #[test]
    fn times_out_of_range_are_errors() {
        let now = 1_800_000_000_000;
        for text in [
            "@99999999999999",
            "@1e300",
            "@-1",
            "@-0.5",
            "@253402300800",
            "1969-12-31T23:59:59Z",
        ] {
            let e = parse_time(text, now).unwrap_err();
            assert!(e.contains("out of range"), "{text}: {e}");
        }
        for text in ["@nan", "@NaN", "@inf", "@-inf", "@infinity", "@", "@1h"] {
            let e = parse_time(text, now).unwrap_err();
            assert!(e.contains("invalid Unix time"), "{text}: {e}");
        }
        assert_eq!(parse_time("@253402300799", now), Ok(253_402_300_799_000));
        assert_eq!(parse_time("@0", now), Ok(0));
        assert_eq!(
            parse_time("9999-12-31T23:59:59Z", now),
            Ok(253_402_300_799_000)
        );
        // Relative times further back than 1970 start at 1970; no overflow either way.
        assert_eq!(parse_time("-100y", now), Ok(0));
        assert_eq!(parse_time("-18446744073709551615s", now), Ok(0));
        assert!(parse_time("-99999999999999999999999y", now).is_err());
        // Whatever parses formats without panicking.
        assert_eq!(format_ms(MAX_MS), "9999-12-31T23:59:59.999Z");
        assert_eq!(format_ms(u64::MAX), "@18446744073709551");
        let r = parse_range("@0..@253402300799.999", now).unwrap();
        assert_eq!(r.to_ms, MAX_MS);
    }

    #[test]
    fn durations_need_units() {
        assert_eq!(parse_duration("10ms"), Ok(Duration::from_millis(10)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert!(parse_duration("10").unwrap_err().contains("no unit"));
        assert!(parse_duration("10h").unwrap_err().contains("unknown unit"));
        assert!(
            parse_duration("99999999999999999999m")
                .unwrap_err()
                .contains("too long")
        );
        assert!(
            parse_duration("1e300s")
                .unwrap_err()
                .contains("unknown unit")
        );
    }
}

//! Questions over the archive's intervals: the histograms of any time range, merged per function,
//! and how they moved between two ranges (`goprobe query`, `goprobe diff`, and the agent's
//! `/api/v1/query`, `/api/v1/diff` and `/api/v1/profile`, which answer the same way).
use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use super::{Latencies, archive::Record};
use crate::plan::Pattern;

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

/// Histograms merged per (function, service) over a range.
pub type Merged = BTreeMap<(String, String), Latencies>;

pub fn merge(records: &[Record], function: Option<&Pattern>) -> Merged {
    let mut merged = Merged::new();
    for r in records {
        if function.is_some_and(|p| !p.matches(&r.series.function)) {
            continue;
        }
        merged
            .entry((r.series.function.clone(), r.series.service.clone()))
            .or_default()
            .merge(&r.latencies);
    }
    merged
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Bucket {
    pub low_ns: u64,
    pub high_ns: u64,
    pub count: u64,
}

/// One function's histogram over a range: the `query` JSON.
#[derive(Debug, Serialize, Deserialize)]
pub struct Summary {
    pub function: String,
    pub service: String,
    pub count: u64,
    pub sum_ns: u64,
    pub min_ns: u64,
    pub max_ns: u64,
    pub avg_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    /// The log2 histogram in ns, non-empty buckets only.
    pub buckets: Vec<Bucket>,
}

impl Summary {
    pub fn of(function: &str, service: &str, l: &Latencies) -> Self {
        Self {
            function: function.into(),
            service: service.into(),
            count: l.count,
            sum_ns: l.sum_ns,
            min_ns: if l.count == 0 { 0 } else { l.min_ns },
            max_ns: l.max_ns,
            avg_ns: l.avg_ns(),
            p50_ns: l.quantile_ns(0.5),
            p90_ns: l.quantile_ns(0.9),
            p99_ns: l.quantile_ns(0.99),
            p999_ns: l.quantile_ns(0.999),
            buckets: l
                .log2_ns
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(i, &count)| Bucket {
                    low_ns: if i == 0 { 0 } else { 1 << i },
                    high_ns: if i == 63 {
                        u64::MAX
                    } else {
                        (1 << (i + 1)) - 1
                    },
                    count,
                })
                .collect(),
        }
    }

    /// The log2 table back, for text output.
    pub fn log2(&self) -> [u64; 64] {
        let mut out = [0; 64];
        for b in &self.buckets {
            out[crate::pipeline::log2_bucket(b.low_ns.max(1))] = b.count;
        }
        out
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct QueryAnswer {
    pub from: String,
    pub to: String,
    pub from_ms: u64,
    pub to_ms: u64,
    pub histograms: Vec<Summary>,
}

pub fn answer_query(records: &[Record], range: Range, function: Option<&Pattern>) -> QueryAnswer {
    QueryAnswer {
        from: format_ms(range.from_ms),
        to: format_ms(range.to_ms),
        from_ms: range.from_ms,
        to_ms: range.to_ms,
        histograms: merge(records, function)
            .iter()
            .map(|((f, s), l)| Summary::of(f, s, l))
            .collect(),
    }
}

/// One side of a diff row.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Side {
    pub count: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DiffRow {
    pub function: String,
    pub service: String,
    /// None: the function had no calls in that range.
    pub base: Option<Side>,
    pub compare: Option<Side>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DiffAnswer {
    pub base: Range,
    pub compare: Range,
    pub functions: Vec<DiffRow>,
}

pub fn answer_diff(
    base_records: &[Record],
    compare_records: &[Record],
    base: Range,
    compare: Range,
    function: Option<&Pattern>,
) -> DiffAnswer {
    let side = |l: &Latencies| Side {
        count: l.count,
        p50_ns: l.quantile_ns(0.5),
        p99_ns: l.quantile_ns(0.99),
        max_ns: l.max_ns,
    };
    let a = merge(base_records, function);
    let b = merge(compare_records, function);
    let mut keys: Vec<&(String, String)> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    DiffAnswer {
        base,
        compare,
        functions: keys
            .into_iter()
            .map(|k| DiffRow {
                function: k.0.clone(),
                service: k.1.clone(),
                base: a.get(k).map(side),
                compare: b.get(k).map(side),
            })
            .collect(),
    }
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
        let _ = answer_query(&[], r, None);
    }
}

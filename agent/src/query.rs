//! `goprobe query` and `goprobe diff`: histograms of any time range from the agent's archive,
//! and how they moved between two ranges. The same summaries back the agent's JSON API
//! (`/api/v1/query`, `/api/v1/diff`), which the commands use while the agent runs; with
//! `--archive` they read the database file directly (when no agent holds it).
use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::TcpStream,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::{
    agent::{
        archive::{Archive, ProfileRecord, Record},
        config::DEFAULT_LISTEN,
    },
    cli::{DiffArgs, QueryArgs, SourceArgs},
    outputs::text::write_log2_table,
    pipeline::{Latencies, Unit},
    plan::Pattern,
};

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

/// `now`, `-5m` / `5m ago` (before now), `@1767225600` (Unix seconds), or an RFC 3339 time
/// (`2026-11-27T10:00:00Z`, `2026-11-27 10:00:00` in UTC).
pub fn parse_time(text: &str, now_ms: u64) -> Result<u64, String> {
    let text = text.trim();
    if text == "now" {
        return Ok(now_ms);
    }
    let ago = text
        .strip_prefix('-')
        .or_else(|| text.strip_suffix(" ago"))
        .or_else(|| text.strip_suffix("ago"));
    if let Some(ago) = ago {
        let d = humantime::parse_duration(ago.trim())
            .map_err(|e| format!("invalid duration in {text:?}: {e}"))?;
        return Ok(now_ms.saturating_sub(d.as_millis() as u64));
    }
    if let Some(unix) = text.strip_prefix('@') {
        let seconds: f64 = unix
            .parse()
            .map_err(|_| format!("invalid Unix time {text:?}"))?;
        return Ok((seconds * 1000.0) as u64);
    }
    humantime::parse_rfc3339_weak(text)
        .map(|t| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64))
        .map_err(|_| {
            format!(
                "invalid time {text:?}: use now, -DURATION (e.g. -1h), @UNIX_SECONDS or RFC 3339 (2026-11-27T10:00:00Z)"
            )
        })
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

pub fn format_ms(ms: u64) -> String {
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
    fn log2(&self) -> [u64; 64] {
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

/// `1.06ms`, `812µs`, `350ns`, `2.5s`: three significant digits.
pub fn human_ns(ns: u64) -> String {
    let (value, unit) = match ns {
        0..1_000 => return format!("{ns}ns"),
        1_000..1_000_000 => (ns as f64 / 1e3, "µs"),
        1_000_000..1_000_000_000 => (ns as f64 / 1e6, "ms"),
        _ => (ns as f64 / 1e9, "s"),
    };
    let digits = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.digits$}{unit}")
}

fn change(base: u64, compare: u64) -> String {
    if base == 0 {
        return if compare == 0 {
            "=".into()
        } else {
            "new".into()
        };
    }
    let pct = (compare as f64 - base as f64) / base as f64 * 100.0;
    if pct.abs() < 0.5 {
        "=".into()
    } else if pct >= 100.0 {
        format!("×{:.1}", compare as f64 / base as f64)
    } else {
        format!("{pct:+.0}%")
    }
}

/// The diff as a table: per function, `base → compare (change)` for count, p50, p99 and max,
/// with ▲ where latency rose by more than 10 % and ▼ where it fell by more than 10 %.
pub fn write_diff_table(out: &mut dyn std::io::Write, diff: &DiffAnswer) -> std::io::Result<()> {
    writeln!(
        out,
        "base:    {} .. {}",
        format_ms(diff.base.from_ms),
        format_ms(diff.base.to_ms)
    )?;
    writeln!(
        out,
        "compare: {} .. {}",
        format_ms(diff.compare.from_ms),
        format_ms(diff.compare.to_ms)
    )?;
    writeln!(out)?;
    let mut rows = vec![[
        "FUNCTION".to_string(),
        "SERVICE".into(),
        "COUNT".into(),
        "P50".into(),
        "P99".into(),
        "MAX".into(),
    ]];
    for row in &diff.functions {
        let count = cell(
            row.base.map(|s| s.count),
            row.compare.map(|s| s.count),
            |v| v.to_string(),
            false,
        );
        let latency = |f: fn(&Side) -> u64| {
            cell(
                row.base.as_ref().map(f),
                row.compare.as_ref().map(f),
                human_ns,
                true,
            )
        };
        rows.push([
            row.function.clone(),
            row.service.clone(),
            count,
            latency(|s| s.p50_ns),
            latency(|s| s.p99_ns),
            latency(|s| s.max_ns),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let mut line = String::new();
        for (c, text) in row.iter().enumerate() {
            if c == 5 {
                line.push_str(text);
            } else {
                line.push_str(text);
                line.push_str(&" ".repeat(widths[c] - text.chars().count() + 2));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    if diff.functions.is_empty() {
        writeln!(out, "(no calls archived in either range)")?;
    }
    out.flush()
}

fn cell(base: Option<u64>, compare: Option<u64>, show: fn(u64) -> String, mark: bool) -> String {
    match (base, compare) {
        (Some(a), Some(b)) => {
            let arrow = if !mark || a == 0 {
                ""
            } else if b as f64 > a as f64 * 1.1 {
                " ▲"
            } else if (b as f64) < a as f64 * 0.9 {
                " ▼"
            } else {
                ""
            };
            format!("{} → {} ({}){arrow}", show(a), show(b), change(a, b))
        }
        (None, Some(b)) => format!("- → {} (new)", show(b)),
        (Some(a), None) => format!("{} → - (gone)", show(a)),
        (None, None) => "-".into(),
    }
}

/// The text of `goprobe query`: per function and service, the log2 table and the percentiles.
pub fn write_query_text(
    out: &mut dyn std::io::Write,
    answer: &QueryAnswer,
    unit: Unit,
) -> std::io::Result<()> {
    writeln!(out, "Histograms from {} to {}", answer.from, answer.to)?;
    if answer.histograms.is_empty() {
        writeln!(out, "(no calls archived in this range)")?;
    }
    for h in &answer.histograms {
        writeln!(out)?;
        writeln!(out, "Function = {} [{}]", h.function, h.service)?;
        let mut l = Latencies::default();
        l.log2_ns = h.log2();
        let table = if unit == Unit::Nanoseconds {
            h.log2()
        } else {
            // Re-bucket the log2 table by the unit: a bucket [2^i, 2^(i+1)) ns divided by a
            // power of ten is placed by its low end.
            let mut t = [0u64; 64];
            for b in &h.buckets {
                t[crate::pipeline::log2_bucket(b.low_ns / unit.divisor())] += b.count;
            }
            t
        };
        write_log2_table(out, &table, unit.label())?;
        let d = unit.divisor();
        let label = unit.label();
        writeln!(out)?;
        writeln!(
            out,
            "avg = {} {label}, total: {} {label}, count: {}",
            h.avg_ns / d,
            h.sum_ns / d,
            h.count
        )?;
        if h.count > 0 {
            writeln!(
                out,
                "p50 = {}, p90 = {}, p99 = {}, p99.9 = {}, max = {} {label}",
                h.p50_ns / d,
                h.p90_ns / d,
                h.p99_ns / d,
                h.p999_ns / d,
                h.max_ns / d
            )?;
        }
    }
    out.flush()
}

/// Where `query` and `diff` read from.
enum Source {
    Archive(Archive),
    Url { base: String, token: Option<String> },
}

fn source(args: &SourceArgs) -> anyhow::Result<Source> {
    if let Some(path) = &args.archive {
        return Ok(Source::Archive(Archive::open_existing(path)?));
    }
    let token = match &args.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read token file {}", path.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let base = args
        .url
        .clone()
        .unwrap_or_else(|| format!("http://{DEFAULT_LISTEN}"));
    Ok(Source::Url {
        base: base.trim_end_matches('/').to_string(),
        token,
    })
}

fn function_pattern(glob: Option<&str>) -> anyhow::Result<Option<Pattern>> {
    Ok(glob.map(|g| Pattern::name_only(g, false)).transpose()?)
}

/// The archived CPU profiles of `records` (of process `pid`, or all), decoded.
pub fn decode_profiles(
    records: &[ProfileRecord],
    pid: Option<u32>,
) -> anyhow::Result<Vec<crate::outputs::pprof::Profile>> {
    use prost::Message as _;
    records
        .iter()
        .filter(|r| pid.is_none_or(|p| p == r.pid))
        .map(|r| {
            let mut raw = Vec::new();
            std::io::Read::read_to_end(
                &mut flate2::read::GzDecoder::new(&r.pprof_gz[..]),
                &mut raw,
            )?;
            Ok(crate::outputs::pprof::Profile::decode(&raw[..])?)
        })
        .collect()
}

/// The merged profile of a range (`diff`: compare minus base), gzipped.
pub fn answer_profile(
    archive: &Archive,
    ranges: &[Range],
    pid: Option<u32>,
) -> anyhow::Result<Vec<u8>> {
    let mut sets = Vec::new();
    for r in ranges {
        sets.push(decode_profiles(
            &archive.read_profiles(r.from_ms, r.to_ms)?,
            pid,
        )?);
    }
    let profile = match &sets[..] {
        [one] => crate::outputs::pprof::merge(one),
        [base, compare] => crate::outputs::pprof::diff(base, compare),
        _ => anyhow::bail!("one or two ranges"),
    };
    Ok(crate::outputs::pprof::to_gzip(&profile)?)
}

/// `query --profile` / `diff --profile`: from the archive or the agent, into `path`.
fn write_profile(
    source: Source,
    ranges: &[Range],
    pid: Option<u32>,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let bytes = match source {
        Source::Archive(archive) => answer_profile(&archive, ranges, pid)?,
        Source::Url { base, token } => {
            let at = |ms: u64| ms as f64 / 1000.0;
            let mut url = match ranges {
                [r] => format!(
                    "{base}/api/v1/profile?from=@{}&to=@{}",
                    at(r.from_ms),
                    at(r.to_ms)
                ),
                [a, b] => format!(
                    "{base}/api/v1/profile?base=@{}..@{}&compare=@{}..@{}",
                    at(a.from_ms),
                    at(a.to_ms),
                    at(b.from_ms),
                    at(b.to_ms)
                ),
                _ => anyhow::bail!("one or two ranges"),
            };
            if let Some(pid) = pid {
                url.push_str(&format!("&pid={pid}"));
            }
            http_request_bytes(&url, token.as_deref(), None).map_err(|e| match e {
                HttpError::Unreachable(host, e) => anyhow::anyhow!(
                    "cannot reach the agent at http://{host}: {e} (is `goprobe agent` running? give --url, or --archive to read an archive file)"
                ),
                e => anyhow::anyhow!("{url}: {e}"),
            })?
        }
    };
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "goprobe: wrote {} (go tool pprof {})",
        path.display(),
        path.display()
    );
    Ok(())
}

pub fn run_query(args: QueryArgs) -> anyhow::Result<()> {
    let now = now_ms();
    let range = Range {
        from_ms: parse_time(&args.from, now).map_err(anyhow::Error::msg)?,
        to_ms: parse_time(&args.to, now).map_err(anyhow::Error::msg)?,
    };
    check_range(range).map_err(anyhow::Error::msg)?;
    if let Some(path) = &args.profile {
        return write_profile(source(&args.source)?, &[range], args.pid, path);
    }
    let answer = match source(&args.source)? {
        Source::Archive(archive) => {
            let records = archive.read(range.from_ms, range.to_ms)?;
            answer_query(
                &records,
                range,
                function_pattern(args.function.as_deref())?.as_ref(),
            )
        }
        Source::Url { base, token } => {
            let mut url = format!(
                "{base}/api/v1/query?from=@{}&to=@{}",
                range.from_ms as f64 / 1000.0,
                range.to_ms as f64 / 1000.0
            );
            if let Some(f) = &args.function {
                url.push_str(&format!("&function={}", percent_encode(f)));
            }
            let body = http_get(&url, token.as_deref())?;
            serde_json::from_str(&body).context("the agent's answer is not query JSON")?
        }
    };
    let mut stdout = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut stdout, &answer)?;
        writeln!(stdout)?;
    } else {
        let unit = if args.milliseconds {
            Unit::Milliseconds
        } else if args.microseconds {
            Unit::Microseconds
        } else {
            Unit::Nanoseconds
        };
        write_query_text(&mut stdout, &answer, unit)?;
    }
    Ok(())
}

pub fn run_diff(args: DiffArgs) -> anyhow::Result<()> {
    let now = now_ms();
    let base = parse_range(&args.base, now).map_err(|e| anyhow::anyhow!("BASE_RANGE: {e}"))?;
    let compare =
        parse_range(&args.compare, now).map_err(|e| anyhow::anyhow!("COMPARE_RANGE: {e}"))?;
    if let Some(path) = &args.profile {
        return write_profile(source(&args.source)?, &[base, compare], args.pid, path);
    }
    let diff = match source(&args.source)? {
        Source::Archive(archive) => {
            let a = archive.read(base.from_ms, base.to_ms)?;
            let b = archive.read(compare.from_ms, compare.to_ms)?;
            answer_diff(
                &a,
                &b,
                base,
                compare,
                function_pattern(args.function.as_deref())?.as_ref(),
            )
        }
        Source::Url { base: url, token } => {
            let mut url = format!(
                "{url}/api/v1/diff?base=@{}..@{}&compare=@{}..@{}",
                base.from_ms as f64 / 1000.0,
                base.to_ms as f64 / 1000.0,
                compare.from_ms as f64 / 1000.0,
                compare.to_ms as f64 / 1000.0
            );
            if let Some(f) = &args.function {
                url.push_str(&format!("&function={}", percent_encode(f)));
            }
            let body = http_get(&url, token.as_deref())?;
            serde_json::from_str(&body).context("the agent's answer is not diff JSON")?
        }
    };
    let mut stdout = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut stdout, &diff)?;
        writeln!(stdout)?;
    } else {
        write_diff_table(&mut stdout, &diff)?;
    }
    Ok(())
}

pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A plain-HTTP GET (the agent listens on loopback by default; for a remote agent, tunnel or
/// proxy). Returns the body of a 200 answer; anything else is an error with the agent's text.
pub fn http_get(url: &str, token: Option<&str>) -> anyhow::Result<String> {
    http_request(url, token, None).map_err(|e| match e {
        HttpError::Unreachable(host, e) => anyhow::anyhow!(
            "cannot reach the agent at http://{host}: {e} (is `goprobe agent` running? give --url, or --archive to read an archive file)"
        ),
        e => anyhow::anyhow!("{url}: {e}"),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("only http:// URLs are supported")]
    NotHttp,
    #[error("cannot reach {0}: {1}")]
    Unreachable(String, std::io::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("malformed HTTP answer")]
    Malformed,
    #[error("HTTP {0}: {1}")]
    Status(u16, String),
}

/// One HTTP/1.1 request over plain TCP: GET, or POST of `body` as (content type, bytes).
/// Returns the body of a 2xx answer.
pub fn http_request(
    url: &str,
    token: Option<&str>,
    body: Option<(&str, &[u8])>,
) -> Result<String, HttpError> {
    http_request_bytes(url, token, body).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// [`http_request`] for binary bodies (gzipped profiles).
pub fn http_request_bytes(
    url: &str,
    token: Option<&str>,
    body: Option<(&str, &[u8])>,
) -> Result<Vec<u8>, HttpError> {
    let rest = url.strip_prefix("http://").ok_or(HttpError::NotHttp)?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let unreachable = |e| HttpError::Unreachable(host.to_string(), e);
    let addr = std::net::ToSocketAddrs::to_socket_addrs(host)
        .map_err(unreachable)?
        .next()
        .ok_or_else(|| unreachable(std::io::ErrorKind::NotFound.into()))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(unreachable)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    let (method, extra) = match body {
        Some((content_type, bytes)) => (
            "POST",
            format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                bytes.len()
            ),
        ),
        None => ("GET", String::new()),
    };
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}{extra}Connection: close\r\nUser-Agent: goprobe/{}\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes();
    if let Some((_, bytes)) = body {
        request.extend_from_slice(bytes);
    }
    stream.write_all(&request)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(HttpError::Malformed)?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = &raw[split + 4..];
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(HttpError::Malformed)?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    if !(200..300).contains(&status) {
        return Err(HttpError::Status(
            status,
            String::from_utf8_lossy(&body).trim().to_string(),
        ));
    }
    Ok(body)
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&body[..eol]);
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        let rest = &body[eol + 2..];
        if n == 0 || rest.len() < n {
            break;
        }
        out.extend_from_slice(&rest[..n]);
        body = rest[n..].strip_prefix(b"\r\n").unwrap_or(&rest[n..]);
    }
    out
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

    #[test]
    fn human_durations() {
        assert_eq!(human_ns(350), "350ns");
        assert_eq!(human_ns(1_060_000), "1.06ms");
        assert_eq!(human_ns(812_000), "812µs");
        assert_eq!(human_ns(25_500_000), "25.5ms");
        assert_eq!(human_ns(2_500_000_000), "2.50s");
        assert_eq!(change(100, 110), "+10%");
        assert_eq!(change(1_060_000, 5_070_000), "×4.8");
        assert_eq!(change(100, 100), "=");
    }

    #[test]
    fn percent_coding() {
        let s = "main.(*T).Get & co/ü";
        assert_eq!(percent_decode(&percent_encode(s)), s);
        assert_eq!(percent_decode("a+b%2"), "a b%2");
    }

    #[test]
    fn diff_table_reads_at_a_glance() {
        let mk = |ns: u64, n: u64| {
            let mut l = Latencies::default();
            for _ in 0..n {
                l.record(ns);
            }
            l
        };
        let rec = |ns, n, f: &str| Record {
            start_ms: 0,
            end_ms: 1,
            series: crate::agent::series::SeriesKey {
                function: f.into(),
                service: "svc".into(),
                ..Default::default()
            },
            latencies: mk(ns, n),
        };
        let r = Range {
            from_ms: 0,
            to_ms: 1,
        };
        let diff = answer_diff(
            &[rec(1_060_000, 100, "main.a"), rec(500, 3, "main.gone")],
            &[rec(5_070_000, 90, "main.a")],
            r,
            r,
            None,
        );
        let mut out = Vec::new();
        write_diff_table(&mut out, &diff).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("FUNCTION"), "{text}");
        let row = text.lines().find(|l| l.starts_with("main.a")).unwrap();
        assert!(row.contains("100 → 90 (-10%)"), "{row}");
        assert!(row.contains("1.06ms → 5.07ms (×4.8) ▲"), "{row}");
        assert!(text.contains("→ - (gone)"), "{text}");
    }
}

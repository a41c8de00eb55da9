//! JSON lines: one object per (function, pid) per interval. The fields are a contract (README,
//! Usage, `--json`): scripts rely on them.
use std::io::{self, Write};

use serde::Serialize;

use super::Report;

#[derive(Serialize)]
struct Bucket {
    low: u64,
    high: u64,
    count: u64,
}

#[derive(Serialize)]
struct Line<'a> {
    time: f64,
    interval_s: f64,
    function: &'a str,
    pid: u32,
    unit: &'a str,
    /// Calls that returned within the interval.
    count: u64,
    sum_ns: u64,
    min_ns: u64,
    max_ns: u64,
    avg_ns: u64,
    p50_ns: u64,
    p90_ns: u64,
    p99_ns: u64,
    p999_ns: u64,
    /// The log2 histogram, in `unit`, non-empty buckets only.
    buckets: Vec<Bucket>,
    /// Calls of this row seen but not timed: events dropped (ring buffer full), entries not
    /// recorded (pairing capacity), returns of calls that began before goprobe attached.
    lost: u64,
    untimed: u64,
    unpaired: u64,
    /// Whether the function's own code is probed, and how many inlined copies of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    out_of_line: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    inlined_copies: Option<usize>,
    /// When the probes covering this process were in place (unix seconds): calls it made
    /// before are not counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    attached: Option<f64>,
    /// Host-wide: the process was traced from its start (every call counted).
    #[serde(skip_serializing_if = "Option::is_none")]
    from_start: Option<bool>,
    /// `--stacks`: latency per calling stack, slowest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    stacks: Option<Vec<StackLine<'a>>>,
    /// `--split`: the calls' time by state, every state in a fixed order.
    #[serde(skip_serializing_if = "Option::is_none")]
    split: Option<Vec<SplitLine>>,
    /// `--by`, packs: the argument values of this row's calls, by name (`function` has them
    /// too, as `name{key="value"}`).
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    by: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize)]
struct SplitLine {
    state: &'static str,
    total_ns: u64,
    /// Of the calls' total time (0 to 1).
    share: f64,
    /// Per call, over every call (a call without time in the state counts as 0).
    p50_ns: u64,
    p99_ns: u64,
}

#[derive(Serialize)]
struct StackLine<'a> {
    count: u64,
    p50_ns: u64,
    p99_ns: u64,
    max_ns: u64,
    /// Innermost first: the caller of the traced function, then its callers.
    frames: Vec<FrameLine<'a>>,
}

#[derive(Serialize)]
struct FrameLine<'a> {
    function: &'a str,
    file: &'a str,
    line: u32,
    /// Inlined into the next frame.
    inlined: bool,
}

fn stack_lines(stacks: &[crate::outputs::StackRow]) -> Vec<StackLine<'_>> {
    stacks
        .iter()
        .map(|row| StackLine {
            count: row.latencies.count,
            p50_ns: row.latencies.quantile_ns(0.5),
            p99_ns: row.latencies.quantile_ns(0.99),
            max_ns: row.latencies.max_ns,
            frames: row
                .stack
                .iter()
                .flat_map(|loc| {
                    let last = loc.lines.len().saturating_sub(1);
                    loc.lines.iter().enumerate().map(move |(i, l)| FrameLine {
                        function: &l.function,
                        file: &l.file,
                        line: l.line,
                        inlined: i < last,
                    })
                })
                .collect(),
        })
        .collect()
}

pub fn write_report(out: &mut dyn Write, report: &Report) -> io::Result<()> {
    let time = report
        .time
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    for row in &report.rows {
        let l = &row.latencies;
        let buckets = l
            .log2_in(report.unit)
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, &count)| {
                let low = if i == 0 { 0 } else { 1u64 << i };
                let high = if i == 63 {
                    u64::MAX
                } else {
                    (1u64 << (i + 1)) - 1
                };
                Bucket { low, high, count }
            })
            .collect();
        let line = Line {
            time,
            interval_s: report.interval_s,
            function: &row.function,
            pid: row.pid,
            unit: report.unit.label(),
            count: l.count,
            sum_ns: l.sum_ns,
            min_ns: if l.count == 0 { 0 } else { l.min_ns },
            max_ns: l.max_ns,
            avg_ns: l.avg_ns(),
            p50_ns: l.quantile_ns(0.50),
            p90_ns: l.quantile_ns(0.90),
            p99_ns: l.quantile_ns(0.99),
            p999_ns: l.quantile_ns(0.999),
            buckets,
            lost: row.misses.lost,
            untimed: row.misses.untimed,
            unpaired: row.misses.unpaired,
            out_of_line: row.sites.map(|s| s.out_of_line),
            inlined_copies: row.sites.map(|s| s.inlined_copies),
            attached: row.attached.map(|t| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64())
            }),
            from_start: row.from_start,
            stacks: row.stacks.as_deref().map(stack_lines),
            split: row.split.as_ref().map(|split| {
                split
                    .rows()
                    .into_iter()
                    .map(|r| SplitLine {
                        state: r.state,
                        total_ns: r.total_ns,
                        share: r.share,
                        p50_ns: r.p50_ns,
                        p99_ns: r.p99_ns,
                    })
                    .collect()
            }),
            by: row
                .by
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
        };
        serde_json::to_writer(&mut *out, &line)?;
        writeln!(out)?;
    }
    out.flush()
}

//! The tables of `goprobe query` and `goprobe diff`: a range's histograms in bcc's layout, and a
//! diff that reads at a glance (what moved, by how much).
use super::text::{Totals, write_log2_table, write_totals};
use crate::pipeline::{
    Latencies, Unit,
    history::{DiffAnswer, QueryAnswer, Side, format_ms},
};

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
    for (side, range) in [("base:   ", &diff.base), ("compare:", &diff.compare)] {
        writeln!(
            out,
            "{side} {} .. {}",
            format_ms(range.from_ms),
            format_ms(range.to_ms)
        )?;
    }
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
    write_state_changes(out, diff)?;
    out.flush()
}

/// `histogram.split`: where the time per call went, for each function split in both ranges:
/// its states that moved most first (up to four), `base → compare` per call.
fn write_state_changes(out: &mut dyn std::io::Write, diff: &DiffAnswer) -> std::io::Result<()> {
    let mut header = false;
    for row in &diff.functions {
        let (Some(a), Some(b), Some(base), Some(compare)) =
            (&row.base_states, &row.compare_states, row.base, row.compare)
        else {
            continue;
        };
        if base.count == 0 || compare.count == 0 {
            continue;
        }
        let per_call = |states: &std::collections::BTreeMap<String, u64>, name: &str, n: u64| {
            states.get(name).copied().unwrap_or(0) / n
        };
        let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
        names.sort();
        names.dedup();
        names.sort_by_key(|name| {
            std::cmp::Reverse(per_call(a, name, base.count).abs_diff(per_call(
                b,
                name,
                compare.count,
            )))
        });
        if !header {
            writeln!(
                out,
                "\nTime per call by state (histogram.split), what moved most first:"
            )?;
            header = true;
        }
        let cells: Vec<String> = names
            .iter()
            .take(4)
            .map(|name| {
                format!(
                    "{name} {}",
                    cell(
                        Some(per_call(a, name, base.count)),
                        Some(per_call(b, name, compare.count)),
                        human_ns,
                        true
                    )
                )
            })
            .collect();
        writeln!(
            out,
            "{} {}: {}",
            row.function,
            row.service,
            cells.join(", ")
        )?;
    }
    Ok(())
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
        write_totals(
            out,
            unit,
            Totals {
                count: h.count,
                avg_ns: h.avg_ns,
                sum_ns: h.sum_ns,
                p50_p90_p99_p999_max_ns: [h.p50_ns, h.p90_ns, h.p99_ns, h.p999_ns, h.max_ns],
            },
        )?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{
        archive::Record,
        history::{Range, answer_diff},
    };

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
            series: crate::pipeline::series::SeriesKey {
                function: f.into(),
                service: "svc".into(),
                ..Default::default()
            },
            latencies: mk(ns, n),
            split: None,
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

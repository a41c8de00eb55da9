//! bcc funclatency's text layout, so that people and scripts that know it read it at once, plus
//! the percentiles and the loss that bcc does not show.
use std::io::{self, Write};

use super::{Report, clock_time, clock_time_ms};
use crate::pipeline::{Latencies, Unit};

pub fn write_report(out: &mut dyn Write, report: &Report) -> io::Result<()> {
    writeln!(out)?;
    if report.show_time {
        writeln!(out, "{:<8}", clock_time(report.time))?;
    }
    for row in &report.rows {
        writeln!(out)?;
        writeln!(out, "Function = {} [{}]", row.function, row.pid)?;
        if let Some(sites) = row.sites
            && sites.inlined_copies > 0
        {
            let own = if sites.out_of_line {
                "its own code and "
            } else {
                ""
            };
            writeln!(out, "Sites: {own}{} inlined copies", sites.inlined_copies)?;
        }
        // Host-wide, a process caught after it started: say from when its calls are counted
        // (in the interval where that happened).
        if let (Some(false), Some(attached)) = (row.from_start, row.attached)
            && report
                .time
                .checked_sub(std::time::Duration::from_secs_f64(report.interval_s))
                .is_none_or(|start| report.interval_s == 0.0 || attached >= start)
        {
            writeln!(
                out,
                "Attached at {}, after the process started: its calls before are not counted",
                clock_time_ms(attached)
            )?;
        }
        write_log2_table(
            out,
            &row.latencies.log2_in(report.unit),
            report.unit.label(),
        )?;
        write_summary(out, &row.latencies, report)?;
        write_misses(out, &row.misses, "")?;
        if let Some(stacks) = &row.stacks {
            write_stacks(out, stacks, report)?;
        }
        if let Some(split) = &row.split {
            write_split(out, split)?;
        }
    }
    if !report.missed.is_empty() {
        writeln!(out)?;
        write_misses(out, &report.missed, " in total")?;
    }
    out.flush()
}

/// `--split`: the states the calls' time went to, largest share first; a state no call spent
/// time in is left out.
fn write_split(out: &mut dyn Write, split: &crate::pipeline::split::Split) -> io::Result<()> {
    use super::tables::human_ns;
    let mut rows: Vec<_> = split
        .rows()
        .into_iter()
        .filter(|r| r.total_ns > 0)
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.total_ns));
    writeln!(out)?;
    writeln!(
        out,
        "Time by state ({} calls; share of their total time, and time per call):",
        split.calls
    )?;
    writeln!(
        out,
        "     {:<16} {:>7} {:>12} {:>12} {:>12}",
        "state", "share", "total", "p50/call", "p99/call"
    )?;
    for r in rows {
        writeln!(
            out,
            "     {:<16} {:>6.1}% {:>12} {:>12} {:>12}",
            r.state,
            r.share * 100.0,
            human_ns(r.total_ns),
            human_ns(r.p50_ns),
            human_ns(r.p99_ns)
        )?;
    }
    Ok(())
}

/// One line for each kind of call that was seen but not timed, so that a short count is never
/// silent.
fn write_misses(
    out: &mut dyn Write,
    misses: &goprobe_common::Misses,
    scope: &str,
) -> io::Result<()> {
    if misses.lost > 0 {
        writeln!(
            out,
            "lost = {} events{scope} (ring buffer full: events dropped, target not slowed)",
            misses.lost
        )?;
    }
    if misses.untimed > 0 {
        writeln!(
            out,
            "untimed = {} calls{scope} (pairing capacity reached: {} goroutines in traced calls or {} nested calls)",
            misses.untimed,
            crate::kernel::goroutine_capacity(),
            goprobe_common::MAX_NESTED_CALLS
        )?;
    }
    if misses.unpaired > 0 {
        // The return of an untimed call finds no entry either: say so, so that the two lines
        // are not read as two sets of missed calls.
        let why = if misses.untimed > 0 {
            "returns without a timed entry: the untimed calls above, or calls that began before goprobe attached"
        } else {
            "calls that began before goprobe attached: not timed"
        };
        writeln!(out, "unpaired = {} returns{scope} ({why})", misses.unpaired)?;
    }
    Ok(())
}

/// `--stacks`: one line per calling stack (count, p50, p99, max), with the stack below it.
fn write_stacks(
    out: &mut dyn Write,
    stacks: &[crate::outputs::StackRow],
    report: &Report,
) -> io::Result<()> {
    let d = report.unit.divisor();
    let label = report.unit.label();
    writeln!(out)?;
    let which = match report.stacks_min_ns {
        Some(ns) => format!("calls of {ns} nsecs or more"),
        None => "all calls".to_string(),
    };
    writeln!(
        out,
        "Calling stacks ({which}; {} stacks, slowest first):",
        stacks.len()
    )?;
    for row in stacks {
        let l = &row.latencies;
        writeln!(
            out,
            "    count = {}, p50 = {}, p99 = {}, max = {} {label}",
            l.count,
            l.quantile_ns(0.50) / d,
            l.quantile_ns(0.99) / d,
            l.max_ns / d
        )?;
        super::stacktext::write_stack(out, &row.stack, "        ")?;
    }
    Ok(())
}

fn write_summary(out: &mut dyn Write, l: &Latencies, report: &Report) -> io::Result<()> {
    write_totals(
        out,
        report.unit,
        Totals {
            count: l.count,
            avg_ns: l.avg_ns(),
            sum_ns: l.sum_ns,
            p50_p90_p99_p999_max_ns: [
                l.quantile_ns(0.50),
                l.quantile_ns(0.90),
                l.quantile_ns(0.99),
                l.quantile_ns(0.999),
                l.max_ns,
            ],
        },
    )
}

/// What the lines under a histogram say, in nanoseconds.
pub struct Totals {
    pub count: u64,
    pub avg_ns: u64,
    pub sum_ns: u64,
    pub p50_p90_p99_p999_max_ns: [u64; 5],
}

/// The lines under a histogram: average, total and count as bcc's funclatency prints them, then
/// the percentiles (when there were calls).
pub fn write_totals(out: &mut dyn Write, unit: Unit, totals: Totals) -> io::Result<()> {
    let d = unit.divisor();
    let label = unit.label();
    writeln!(out)?;
    writeln!(
        out,
        "avg = {} {label}, total: {} {label}, count: {}",
        totals.avg_ns / d,
        totals.sum_ns / d,
        totals.count
    )?;
    if totals.count > 0 {
        let [p50, p90, p99, p999, max] = totals.p50_p90_p99_p999_max_ns.map(|ns| ns / d);
        writeln!(
            out,
            "p50 = {p50}, p90 = {p90}, p99 = {p99}, p99.9 = {p999}, max = {max} {label}"
        )?;
    }
    Ok(())
}

/// bcc's `print_log2_hist`: rows up to the highest non-empty bucket, 40 stars wide (20 when the
/// values need the wide layout).
pub fn write_log2_table(out: &mut dyn Write, buckets: &[u64; 64], label: &str) -> io::Result<()> {
    let Some(idx_max) = buckets.iter().rposition(|&c| c > 0) else {
        return Ok(());
    };
    let val_max = buckets.iter().copied().max().unwrap_or(0);
    let narrow = idx_max <= 32;
    let (pad, label_width, width, stars) = if narrow {
        (5, 19, 10, 40)
    } else {
        (15, 29, 20, 20)
    };
    writeln!(
        out,
        "{:pad$}{label:<label_width$} : count     distribution",
        ""
    )?;
    for (i, &count) in buckets.iter().enumerate().take(idx_max + 1) {
        let mut low = (1u128 << (i + 1)) >> 1;
        let high = (1u128 << (i + 1)) - 1;
        if low == high {
            low -= 1;
        }
        writeln!(
            out,
            "{low:>width$} -> {high:<width$} : {count:<8} |{}|",
            star_bar(count, val_max, stars)
        )?;
    }
    Ok(())
}

fn star_bar(count: u64, max: u64, width: usize) -> String {
    let stars = if max == 0 {
        0
    } else {
        (count.min(max) as u128 * width as u128 / max as u128) as usize
    };
    let mut bar = "*".repeat(stars);
    bar.push_str(&" ".repeat(width - stars));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_bcc_layout() {
        let mut buckets = [0u64; 64];
        buckets[1] = 2;
        buckets[3] = 4;
        let mut out = Vec::new();
        write_log2_table(&mut out, &buckets, "nsecs").unwrap();
        let text = String::from_utf8(out).unwrap();
        let expected = "     nsecs               : count     distribution
         0 -> 1          : 0        |                                        |
         2 -> 3          : 2        |********************                    |
         4 -> 7          : 0        |                                        |
         8 -> 15         : 4        |****************************************|
";
        assert_eq!(text, expected);
    }

    #[test]
    fn says_when_a_process_caught_late_was_attached() {
        use std::time::{Duration, SystemTime};

        use crate::{outputs::Row, pipeline::Unit};
        let time = SystemTime::now();
        let row = |pid, from_start| Row {
            function: "main.f".into(),
            pid,
            latencies: Latencies::default(),
            misses: goprobe_common::Misses::default(),
            stacks: None,
            sites: None,
            attached: Some(time - Duration::from_millis(5)),
            from_start,
            split: None,
            by: Vec::new(),
        };
        let report = |interval_s| Report {
            rows: vec![row(1, Some(false)), row(2, Some(true)), row(3, None)],
            unit: Unit::Nanoseconds,
            time,
            show_time: false,
            interval_s,
            missed: goprobe_common::Misses::default(),
            stacks_min_ns: None,
        };
        let mut out = Vec::new();
        write_report(&mut out, &report(0.0)).unwrap();
        let text = String::from_utf8(out).unwrap();
        let line = "Attached at ";
        assert_eq!(text.matches(line).count(), 1, "{text}");
        let after = text.split("Function = main.f [1]\n").nth(1).unwrap();
        assert!(after.starts_with(line), "{text}");
        assert!(after.contains("after the process started: its calls before are not counted"));
        // With -i, only in the interval where the attach happened.
        let mut out = Vec::new();
        write_report(&mut out, &report(1.0)).unwrap();
        assert!(String::from_utf8(out).unwrap().contains(line));
        let mut late = report(1.0);
        late.time += Duration::from_secs(3);
        let mut out = Vec::new();
        write_report(&mut out, &late).unwrap();
        assert!(!String::from_utf8(out).unwrap().contains(line));
    }
}

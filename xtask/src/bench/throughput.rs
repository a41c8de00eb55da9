//! Throughput and loss: a Go program that makes calls from 2 goroutines at a set rate, or as
//! fast as it can, traced by `goprobe funclatency` or by `goprobe agent`. Every call must be
//! either counted or counted as lost (a full ring buffer), never neither; the section also gives
//! goprobe's CPU and memory at each rate, and what an overflowing ring buffer does.

use std::fmt::Write as _;

use anyhow::Result;

use super::Env;
use super::insns::{describe_sites, insns};
use super::report::{notes, table_head};
use super::runner::{Tracer, run_program};
use super::stats::{fmt_summary, pct, thousands};

pub struct RateRow {
    label: String,
    pub requested: u64,
    pub ring_bytes: Option<u64>,
    /// Traced by `goprobe agent` rather than `goprobe funclatency`.
    pub agent: bool,
    pub calls: Vec<f64>,
    pub calls_per_s: Vec<f64>,
    counted: Vec<f64>,
    pub lost: Vec<f64>,
    /// calls − counted − lost: events neither delivered nor counted as lost.
    pub unexplained: Vec<f64>,
    pub cpu_percent: Vec<f64>,
    pub peak_rss_mib: Vec<f64>,
}

pub struct ThroughputReport {
    /// Seconds per run.
    rate_secs: f64,
    pub rows: Vec<RateRow>,
    sites: String,
    notes: Vec<String>,
}

pub fn measure(env: &Env) -> Result<ThroughputReport> {
    let plan = &env.plan;
    let function = "main.goprobeBenchRate";
    // Go 1.19's build of this function has both sites emulated (the stack-check jbe, and a
    // padding NOP before its RET): the cheapest events, so the program can make the most.
    let insns = insns(env, &env.bench119, function)?;
    let sites = describe_sites(&insns);
    let rate_label = |r: u64| {
        if r == 0 {
            "as fast as 2 goroutines can".to_string()
        } else {
            format!("{} calls/s", thousands(r))
        }
    };
    let mut runs: Vec<(String, u64, Option<u64>, bool)> = plan
        .rates
        .iter()
        .map(|&r| (rate_label(r), r, None, false))
        .collect();
    runs.push((
        "as fast as possible, 16 KiB ring buffer (overflows)".into(),
        0,
        Some(16 << 10),
        false,
    ));
    runs.extend(
        plan.rates
            .iter()
            .map(|&r| (format!("goprobe agent: {}", rate_label(r)), r, None, true)),
    );
    let mut rows: Vec<RateRow> = runs
        .iter()
        .map(|(label, r, ring, agent)| RateRow {
            label: label.clone(),
            requested: *r,
            ring_bytes: *ring,
            agent: *agent,
            calls: vec![],
            calls_per_s: vec![],
            counted: vec![],
            lost: vec![],
            unexplained: vec![],
            cpu_percent: vec![],
            peak_rss_mib: vec![],
        })
        .collect();
    let mut notes = Vec::new();
    for rep in 0..plan.throughput_reps {
        for row in rows.iter_mut() {
            eprintln!(
                "bench: throughput rep {}/{}: {}",
                rep + 1,
                plan.throughput_reps,
                row.label
            );
            let args = vec![
                "-mode".to_string(),
                "rate".to_string(),
                "-rate".to_string(),
                row.requested.to_string(),
                "-d".to_string(),
                format!("{}ms", (plan.rate_secs * 1000.0) as u64),
                "-g".to_string(),
                "2".to_string(),
            ];
            let mut extra = vec![];
            if let Some(bytes) = row.ring_bytes {
                extra.push(("GOPROBE_RING_BYTES", bytes.to_string()));
            }
            let tracer = if row.agent {
                Tracer::Agent
            } else {
                Tracer::Goprobe(extra)
            };
            match run_program(env, &env.bench119, &args, &[], &tracer, function) {
                Ok(out) => {
                    let g = out.goprobe.unwrap_or_default();
                    let calls = out.result.f64("calls").unwrap_or(f64::NAN);
                    let wall = out.result.f64("wall_s").unwrap_or(f64::NAN);
                    let counted = g.sum(function, "count") as f64;
                    let lost = g.counter("events_lost") as f64;
                    row.calls.push(calls);
                    row.calls_per_s
                        .push(out.result.f64("calls_per_s").unwrap_or(f64::NAN));
                    row.counted.push(counted);
                    row.lost.push(lost);
                    row.unexplained.push(calls - counted - lost);
                    if let Some(cpu) = g.cpu {
                        row.cpu_percent.push(100.0 * cpu.as_secs_f64() / wall);
                    }
                    if let Some(kib) = g.peak_rss_kib {
                        row.peak_rss_mib.push(kib as f64 / 1024.0);
                    }
                }
                Err(e) => notes.push(format!("{}: {e:#}", row.label)),
            }
        }
    }
    Ok(ThroughputReport {
        rate_secs: plan.rate_secs,
        rows,
        sites,
        notes,
    })
}

pub fn render(w: &mut String, t: &ThroughputReport) {
    let _ = writeln!(w, "## Throughput and loss\n");
    let _ = writeln!(
        w,
        "`tests/go/bench -mode rate -g 2` calls `main.goprobeBenchRate` from 2 goroutines (this \
         machine's 2 CPUs, `GOMAXPROCS` left at its default), paced to a rate or as fast as it \
         can, for {:.0} s, and prints how many calls it made; `goprobe funclatency -v --json -p PID` \
         traces it. The Go 1.19 build is used because both of its sites are emulated ({}), so the \
         program makes as many events as a Go program can on this machine. `counted` is the sum \
         of goprobe's `count`, `lost` its `events_lost` counter (ring buffer full: the kernel \
         program counts the event and drops it, it never waits), and `unexplained` = calls − \
         counted − lost, which must be 0. goprobe's CPU is user + system time over the run, in \
         % of one CPU; its peak RSS is `VmHWM`. The ring buffer is 4 MiB and drained every 20 ms \
         without wakeups; the row with a 16 KiB ring buffer (`GOPROBE_RING_BYTES`) shows what \
         an overflow does. The `goprobe agent` rows run the daemon instead, with a config that \
         probes the function in this program's file (scan every 100 ms, /metrics on loopback, \
         archive on): counted and lost come from its /metrics, CPU and RSS are the agent's.\n",
        t.rate_secs, t.sites
    );
    table_head(
        w,
        "| calls | calls/s made | counted | lost | unexplained | goprobe CPU | goprobe peak RSS |",
    );
    for r in &t.rows {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.label,
            fmt_summary(&r.calls_per_s, |v| thousands(v as u64)),
            fmt_summary(&r.counted, |v| thousands(v as u64)),
            fmt_summary(&r.lost, |v| thousands(v as u64)),
            fmt_summary(&r.unexplained, |v| format!("{v:.0}")),
            fmt_summary(&r.cpu_percent, pct),
            fmt_summary(&r.peak_rss_mib, |v| format!("{v:.1} MiB")),
        );
    }
    let _ = writeln!(w);
    let fastest = t
        .rows
        .iter()
        .find(|r| r.requested == 0 && r.ring_bytes.is_none() && !r.agent);
    let overflow = t.rows.iter().find(|r| r.ring_bytes.is_some());
    if let (Some(fast), Some(over)) = (fastest, overflow) {
        let lossless = !fast.lost.is_empty() && fast.lost.iter().all(|&l| l == 0.0);
        let _ = writeln!(
            w,
            "{} Above what the ring buffer holds between two drains (the 16 KiB row: {} of the \
             events lost), the kernel program counts each event it cannot write and moves on: \
             the program made {} calls/s there against {} with the 4 MiB buffer, and calls − \
             counted − lost is {}.\n",
            if lossless {
                format!(
                    "**Zero loss at the highest rate this machine can make**: {} events/s, from \
                     two goroutines that keep both CPUs busy while goprobe shares them; goprobe's \
                     own limit lies above what 2 cores can produce.",
                    fmt_summary(&fast.calls_per_s, |v| thousands(v as u64))
                )
            } else {
                format!(
                    "At the highest rate this machine can make ({} events/s) goprobe lost {} \
                     events.",
                    fmt_summary(&fast.calls_per_s, |v| thousands(v as u64)),
                    fmt_summary(&fast.lost, |v| thousands(v as u64))
                )
            },
            fmt_summary(
                &over
                    .lost
                    .iter()
                    .zip(&over.calls)
                    .map(|(l, c)| 100.0 * l / c)
                    .collect::<Vec<_>>(),
                pct
            ),
            fmt_summary(&over.calls_per_s, |v| thousands(v as u64)),
            fmt_summary(&fast.calls_per_s, |v| thousands(v as u64)),
            fmt_summary(&over.unexplained, |v| format!("{v:.0}")),
        );
    }
    notes(w, &t.notes);
}

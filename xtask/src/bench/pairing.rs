//! Pairing at scale: many goroutines inside traced calls at the same time (a server whose
//! backend stalls). `tests/go/hold` puts G goroutines inside `goprobeE2EHold`, each inside
//! `goprobeE2EHoldInner` too, and releases them once all are in: 2·G calls open at once. The
//! section checks that every call is counted, and reports the kernel memory that pairing holds at
//! the peak (read from goprobe's `-v -i 1` lines while the program holds every goroutine inside),
//! per open call, and its ceiling. The program's wall time leaves that pause out.
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::report::table_head;
use super::runner::{GoprobeOut, start_goprobe, start_program};
use super::stats::{fmt_summary, secs, thousands};
use super::{Env, json::Json, proc};
use crate::util;

const OUTER: &str = "main.goprobeE2EHold";
const INNER: &str = "main.goprobeE2EHoldInner";

pub struct PairingRow {
    goroutines: u64,
    /// Calls of each function counted by goprobe (outer, inner), and untimed + unpaired.
    counted: (u64, u64),
    missed: u64,
    /// Peak goroutine records and nested open calls, and the kernel memory at that peak.
    peak: (u64, u64, u64),
    /// Bytes per goroutine record and per nested open call (measured by goprobe at load), and
    /// the memory of both maps while empty.
    per_entry: (u64, u64),
    empty_kib: u64,
    ceiling: String,
    /// Wall time of the program from go-ahead to the last return: untraced, traced.
    wall_s: (Vec<f64>, Vec<f64>),
}

pub struct PairingReport {
    rows: Vec<PairingRow>,
    notes: Vec<String>,
}

pub fn measure(env: &Env) -> Result<PairingReport> {
    let sizes: &[u64] = if env.plan.quick {
        &[100_000]
    } else {
        &[100_000, 1_000_000]
    };
    let program = crate::gobuild::output_dir().join("go1.27/default/hold");
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for &goroutines in sizes {
        eprintln!("bench: pairing: {goroutines} goroutines");
        match measure_one(env, &program, goroutines) {
            Ok(row) => rows.push(row),
            Err(e) => notes.push(format!("{goroutines} goroutines: {e:#}")),
        }
    }
    Ok(PairingReport { rows, notes })
}

fn measure_one(env: &Env, program: &Path, goroutines: u64) -> Result<PairingRow> {
    let mut wall_s = (Vec::new(), Vec::new());
    let reps = if env.plan.quick { 1 } else { 2 };
    let mut last = None;
    for _ in 0..reps {
        let (wall, _) = run(env, program, goroutines, false)?;
        wall_s.0.push(wall);
        let (wall, out) = run(env, program, goroutines, true)?;
        wall_s.1.push(wall);
        last = out;
    }
    let (out, stderr) = last.context("no traced run")?;
    let missed = out
        .lines
        .iter()
        .map(|l| l.u64("untimed").unwrap_or(0) + l.u64("unpaired").unwrap_or(0))
        .sum();
    // "goprobe: pairing now: R goroutine records, N nested open calls, K KiB"
    let mut peak = (0, 0, 0);
    for l in &stderr {
        if let Some(rest) = l.strip_prefix("goprobe: pairing now: ") {
            let numbers: Vec<u64> = rest
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse().ok())
                .collect();
            if let [records, nested, kib] = numbers[..]
                && records + nested > peak.0 + peak.1
            {
                peak = (records, nested, kib);
            }
        }
    }
    // "goprobe: pairing: ... N KiB of kernel memory; B bytes per goroutine in a traced call, C
    // per nested open call; ceiling X goroutines and Y nested open calls"
    let summary = stderr
        .iter()
        .find_map(|l| l.strip_prefix("goprobe: pairing: "))
        .context("no pairing line in goprobe's -v output")?;
    let numbers: Vec<u64> = summary
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let [
        _,
        _,
        empty_kib,
        per_goroutine,
        per_nested,
        ceiling_g,
        ceiling_n,
    ] = numbers[..]
    else {
        bail!("unexpected pairing line {summary:?}");
    };
    Ok(PairingRow {
        goroutines,
        counted: (out.sum(OUTER, "count"), out.sum(INNER, "count")),
        missed,
        peak,
        per_entry: (per_goroutine, per_nested),
        empty_kib,
        ceiling: format!(
            "{} goroutines, {} nested calls",
            thousands(ceiling_g),
            thousands(ceiling_n)
        ),
        wall_s,
    })
}

type Traced = Option<(GoprobeOut, Vec<String>)>;

/// One run of the program, traced or not: its wall time (go-ahead to last return), and
/// what goprobe printed (and its stderr) when traced.
fn run(env: &Env, program: &Path, goroutines: u64, traced: bool) -> Result<(f64, Traced)> {
    let mut c = util::cmd(program);
    c.args(["-goroutines", &goroutines.to_string(), "-pause"]);
    let (mut go, pid) = start_program("the hold program", &mut c)?;
    let mut tracer = None;
    if traced {
        let mut c = util::cmd(&env.goprobe);
        c.args([
            "funclatency",
            "-v",
            "--json",
            "-F",
            "-r",
            "-i",
            "1",
            "-p",
            &pid.to_string(),
        ])
        .arg(r"go:^main\.goprobeE2EHold(Inner)?$");
        tracer = Some(start_goprobe(&mut c)?);
    }
    go.write_line("go")?;
    go.expect_line("all in", |l| l == "all in", Duration::from_secs(600))?;
    if let Some(p) = &tracer {
        // A `pairing now` line (one a second) taken while every goroutine is inside: the
        // second one read after "all in" (the first may have been on its way already).
        let seen = p.stderr.all().len();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while p.stderr.all()[seen..]
            .iter()
            .filter(|l| l.starts_with("goprobe: pairing now: "))
            .count()
            < 2
        {
            if std::time::Instant::now() > deadline {
                bail!("no pairing line from goprobe while every goroutine was inside");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    go.send_line("release")?;
    let (_, line) = go.expect_line("result", |l| l.starts_with('{'), Duration::from_secs(600))?;
    go.wait(Duration::from_secs(60))?;
    let result = Json::parse(&line).with_context(|| format!("result line {line:?}"))?;
    let wall = result.f64("wall_ns").unwrap_or(f64::NAN) / 1e9;
    let Some(mut p) = tracer else {
        return Ok((wall, None));
    };
    // With -p, goprobe ends by itself once the program has exited.
    let status = p.wait(Duration::from_secs(120))?;
    if !status.success() {
        bail!(
            "goprobe failed ({status}): {}",
            proc::tail(&p.stderr.text())
        );
    }
    let stderr = p.stderr.all();
    Ok((
        wall,
        Some((GoprobeOut::parse(&p.stdout.all(), &stderr), stderr)),
    ))
}

pub fn render(w: &mut String, report: &PairingReport) {
    let _ = writeln!(
        w,
        "## Pairing at scale: many goroutines inside traced calls at once\n\n\
         `tests/go/hold` (Go 1.27) starts G goroutines that each enter `{OUTER}` and, inside it, \
         `{INNER}`, and releases them once all G are inside: 2·G calls are open at the same \
         time, as in a server whose backend stalls. goprobe traces both (`funclatency -v -F -r -i \
         1`); the peak is the largest of its per-second `pairing now` lines, read from the maps' \
         memory. The kernel keeps one record per goroutine (which holds its outermost open call) \
         and one entry per nested open call, neither preallocated: memory follows the calls \
         open, up to the ceiling, past which calls are counted as `untimed`.\n"
    );
    table_head(
        w,
        "| goroutines inside at once | calls counted (outer, inner) | untimed + unpaired | peak records + nested calls | kernel memory at the peak | per goroutine record / nested call | both maps empty | ceiling | program wall time, untraced → traced |",
    );
    for r in &report.rows {
        let _ = writeln!(
            w,
            "| {} | {} / {} | {} | {} + {} | {} MiB | {} B / {} B | {} MiB | {} | {} → {} |",
            thousands(r.goroutines),
            thousands(r.counted.0),
            thousands(r.counted.1),
            r.missed,
            thousands(r.peak.0),
            thousands(r.peak.1),
            r.peak.2 / 1024,
            r.per_entry.0,
            r.per_entry.1,
            r.empty_kib / 1024,
            r.ceiling,
            fmt_summary(&r.wall_s.0, secs),
            fmt_summary(&r.wall_s.1, secs),
        );
    }
    let _ = writeln!(w);
    for n in &report.notes {
        let _ = writeln!(w, "- {n}");
    }
    if !report.notes.is_empty() {
        let _ = writeln!(w);
    }
}

//! `cargo xtask bench`: what goprobe costs the Go program it traces, against bpftrace, measured
//! side by side in one run on this machine, written to BENCHMARKS.md.
//!
//! Every figure is a median over repetitions, with min–max, and every comparison is made within
//! a repetition (a traced run against the untraced run just before it, goprobe against bpftrace
//! run right after it): these machines are shared and their timing drifts.
//!
//! Sections: per-call overhead, the cost of a probe on each kind of instruction (and where
//! goprobe places its sites), throughput and loss, pairing at scale (`pairing.rs`), attach time,
//! inspection time, accuracy.

mod attach;
mod insns;
mod inspect;
mod json;
mod pairing;
mod percall;
mod proc;
mod report;
mod runner;
mod sites;
mod stats;
mod throughput;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{gobuild, tools, util};
use insns::{describe_sites, insns};
use report::{Machine, Report, notes, render};
use runner::{ONE_THREAD, PING, Tracer, run_program};
use stats::{fmt_summary, ns, pct, thousands};

/// `cargo xtask bench [--quick] [--out FILE] [--only SECTION,...]`.
pub struct Options {
    pub quick: bool,
    pub out: Option<PathBuf>,
    pub only: Option<Vec<String>>,
}

pub const SECTIONS: [&str; 7] = [
    "percall",
    "sites",
    "throughput",
    "pairing",
    "attach",
    "inspect",
    "accuracy",
];

/// How much to measure: the full run (~8 min) or `--quick` (a couple of minutes, for
/// developing the benchmarks; its numbers are too few to quote).
struct Plan {
    quick: bool,
    reps: usize,
    /// Calls per traced run in the per-call table (untraced runs make the same number).
    calls: usize,
    /// Calls per run in the site-cost table.
    site_calls: usize,
    spin_calls: usize,
    rate_secs: f64,
    rates: Vec<u64>,
    throughput_reps: usize,
    attach_sizes: Vec<usize>,
    attach_reps: usize,
    /// Largest N that goprobe with one uprobe per site is asked to attach: per-site uprobes
    /// cost RCU grace periods to detach (see BENCHMARKS.md).
    per_site_attach_max: usize,
    /// The same for bpftrace, which closes its probes one after the other.
    bpftrace_attach_max: usize,
    inspect_reps: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                reps: 2,
                calls: 20_000,
                site_calls: 10_000,
                spin_calls: 500,
                rate_secs: 2.0,
                rates: vec![10_000, 100_000, 0],
                throughput_reps: 1,
                attach_sizes: vec![1, 100, 1_000, 10_000],
                attach_reps: 1,
                per_site_attach_max: 100,
                bpftrace_attach_max: 100,
                inspect_reps: 2,
            }
        } else {
            Plan {
                quick,
                reps: 5,
                calls: 100_000,
                site_calls: 30_000,
                spin_calls: 2_000,
                rate_secs: 4.0,
                rates: vec![10_000, 100_000, 0],
                throughput_reps: 3,
                attach_sizes: vec![1, 100, 1_000, 10_000],
                attach_reps: 3,
                per_site_attach_max: 100,
                bpftrace_attach_max: 100,
                inspect_reps: 5,
            }
        }
    }
}

/// What the benchmarks run.
struct Env {
    plan: Plan,
    goprobe: PathBuf,
    /// tests/go/bench built by Go 1.27 and by Go 1.19 (default variant).
    bench: PathBuf,
    bench119: PathBuf,
    gosymref: PathBuf,
    /// Large stripped Go servers from Debian.
    servers: Vec<PathBuf>,
}

pub fn run(opts: Options) -> Result<()> {
    if !util::is_root() {
        bail!("`cargo xtask bench` must run as root: goprobe and bpftrace load eBPF programs");
    }
    let started = Instant::now();
    let sections: Vec<&str> = match &opts.only {
        Some(list) => {
            for s in list {
                if !SECTIONS.contains(&s.as_str()) {
                    bail!("unknown section {s:?}; sections: {}", SECTIONS.join(", "));
                }
            }
            SECTIONS
                .iter()
                .copied()
                .filter(|s| list.iter().any(|l| l == s))
                .collect()
        }
        None => SECTIONS.to_vec(),
    };
    let env = util::step("bench: setup and build", || prepare(Plan::new(opts.quick)))?;
    let machine_before = Machine::now();
    let mut report = Report::default();
    for section in &sections {
        let result = util::step(&format!("bench: {section}"), || match *section {
            "percall" => percall::measure(&env).map(|r| report.percall = Some(r)),
            "sites" => sites::measure(&env).map(|r| report.sites = Some(r)),
            "throughput" => throughput::measure(&env).map(|r| report.throughput = Some(r)),
            "pairing" => pairing::measure(&env).map(|r| report.pairing = Some(r)),
            "attach" => attach::measure(&env).map(|r| report.attach = Some(r)),
            "inspect" => inspect::measure(&env).map(|r| report.inspect = Some(r)),
            "accuracy" => accuracy(&env).map(|r| report.accuracy = Some(r)),
            _ => unreachable!("sections are checked above"),
        });
        if let Err(e) = result {
            report.failures.push(format!("{section}: {e:#}"));
        }
    }
    let machine_after = Machine::now();
    let text = render(
        &env,
        &report,
        &machine_before,
        &machine_after,
        started.elapsed(),
        &sections,
    );
    let out = opts
        .out
        .unwrap_or_else(|| util::root().join("BENCHMARKS.md"));
    std::fs::write(&out, text).with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "bench: wrote {} in {:.0} s",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    if !report.failures.is_empty() {
        bail!("some sections failed:\n{}", report.failures.join("\n"));
    }
    Ok(())
}

/// Installs what the benchmarks compare with and run on, builds goprobe and the Go programs.
fn prepare(plan: Plan) -> Result<Env> {
    tools::setup(
        &tools::DEFAULT_GO_VERSIONS
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
    )?;
    tools::bench_tools()?;
    crate::build_agent()?;
    let toolchains = vec![
        gobuild::find_toolchain("1.19")?,
        gobuild::find_toolchain("1.27")?,
    ];
    let matrix = gobuild::Matrix {
        toolchains,
        entries: vec![
            (0, gobuild::Variant::Default),
            (1, gobuild::Variant::Default),
        ],
    };
    gobuild::build(&matrix, Some(&["bench", "gosymref", "hold"]))?;
    let programs = gobuild::output_dir();
    Ok(Env {
        plan,
        goprobe: crate::goprobe_bin(),
        bench: programs.join("go1.27/default/bench"),
        bench119: programs.join("go1.19/default/bench"),
        gosymref: programs.join("go1.27/default/gosymref"),
        servers: vec![
            PathBuf::from("/usr/bin/caddy"),
            PathBuf::from("/usr/bin/prometheus"),
        ],
    })
}

// ---------------------------------------------------------------------------------------------
// ---------------------------------------------------------------------------------------------
// ---------------------------------------------------------------------------------------------
// ---------------------------------------------------------------------------------------------
// Accuracy

struct AccuracyRow {
    label: String,
    sites: String,
    truth: Vec<f64>,
    measured: Vec<f64>,
}

struct AccuracyReport {
    rows: Vec<AccuracyRow>,
    notes: Vec<String>,
}

fn accuracy(env: &Env) -> Result<AccuracyReport> {
    let plan = &env.plan;
    let spin = "main.goprobeBenchSpin";
    let spin_leaf = "main.goprobeBenchSpinLeaf";
    let spin_sites = describe_sites(&insns(env, &env.bench, spin)?);
    let leaf_sites = describe_sites(&insns(env, &env.bench, spin_leaf)?);
    let lhist = format!(
        "uprobe:{{bin}}:{spin} {{ @start[tid] = nsecs; }}\n\
         uretprobe:{{bin}}:{spin} /@start[tid]/ {{ @h = lhist((nsecs - @start[tid]) / 100, 900, 1900, 1); delete(@start[tid]); }}\n{PING}"
    );
    struct Case {
        label: &'static str,
        mode: &'static str,
        function: &'static str,
        sites: String,
        tracer: Tracer,
    }
    let cases = [
        Case {
            label: "goprobe, stack-check function",
            mode: "spin",
            function: spin,
            sites: spin_sites.clone(),
            tracer: Tracer::Goprobe(vec![]),
        },
        Case {
            label: "bpftrace uprobe + uretprobe, same function",
            mode: "spin",
            function: spin,
            sites: "function start (`cmp`) + return address".into(),
            tracer: Tracer::Bpftrace(lhist),
        },
        Case {
            label: "goprobe, frameless leaf",
            mode: "spinleaf",
            function: spin_leaf,
            sites: leaf_sites,
            tracer: Tracer::Goprobe(vec![]),
        },
        Case {
            label: "goprobe, frameless leaf, sites before this change",
            mode: "spinleaf",
            function: spin_leaf,
            sites: "entry `xor` (start, single-stepped), return `ret`".into(),
            tracer: Tracer::Goprobe(vec![("GOPROBE_CHEAP_SITES", "0".into())]),
        },
    ];
    let mut rows: Vec<AccuracyRow> = cases
        .iter()
        .map(|c| AccuracyRow {
            label: c.label.into(),
            sites: c.sites.clone(),
            truth: vec![],
            measured: vec![],
        })
        .collect();
    let mut notes = Vec::new();
    for rep in 0..plan.reps {
        for (case, row) in cases.iter().zip(rows.iter_mut()) {
            eprintln!(
                "bench: accuracy rep {}/{}: {}",
                rep + 1,
                plan.reps,
                case.label
            );
            let args = vec![
                "-mode".to_string(),
                case.mode.to_string(),
                "-n".to_string(),
                plan.spin_calls.to_string(),
            ];
            match run_program(
                env,
                &env.bench,
                &args,
                &ONE_THREAD,
                &case.tracer,
                case.function,
            ) {
                Ok(out) => {
                    row.truth
                        .push(out.result.f64("truth_p50_ns").unwrap_or(f64::NAN));
                    let measured = match &out.goprobe {
                        Some(g) => g
                            .line(case.function)
                            .and_then(|l| l.f64("p50_ns"))
                            .unwrap_or(f64::NAN),
                        None => lhist_median(&out.bpftrace_stdout, 100.0).unwrap_or(f64::NAN),
                    };
                    row.measured.push(measured);
                }
                Err(e) => notes.push(format!("{}: {e:#}", case.label)),
            }
        }
    }
    Ok(AccuracyReport { rows, notes })
}

/// The median of a bpftrace `lhist` printout (`[1000, 1001)   123 |@@@|`), in ns: the middle
/// of the bucket that holds it, times `unit`.
fn lhist_median(lines: &[String], unit: f64) -> Option<f64> {
    let mut buckets = Vec::new();
    for l in lines {
        let l = l.trim();
        let Some(rest) = l.strip_prefix('[') else {
            continue;
        };
        let (range, count) = rest.split_once(')')?;
        let (lo, hi) = range.split_once(',')?;
        let count: f64 = count.split_whitespace().next()?.parse().ok()?;
        let (Ok(lo), Ok(hi)) = (lo.trim().parse::<f64>(), hi.trim().parse::<f64>()) else {
            continue; // the "(..., 900)" underflow bucket and the like
        };
        buckets.push(((lo + hi) / 2.0, count));
    }
    let total: f64 = buckets.iter().map(|b| b.1).sum();
    let mut seen = 0.0;
    for (mid, count) in buckets {
        seen += count;
        if seen >= total / 2.0 {
            return Some(mid * unit);
        }
    }
    None
}

fn render_accuracy(w: &mut String, env: &Env, a: &AccuracyReport) {
    let _ = writeln!(w, "## Accuracy\n");
    let _ = writeln!(
        w,
        "`tests/go/bench -mode spin` calls `main.goprobeBenchSpin`, which spins on the clock for \
         100 µs; `-mode spinleaf` calls `main.goprobeBenchSpinLeaf`, a frameless leaf that loops a \
         number of times calibrated to about 100 µs. Before the go-ahead, untraced, the program \
         times 200 calls (around the call: a few ns more than the function itself); its median is \
         the truth. Then it makes {} calls under the tracer, and the tracer's p50 is compared \
         with the truth: bias = p50 − truth. goprobe's p50 comes from its HDR histogram (0.1 % \
         resolution); bpftrace's from an `lhist` with 100 ns buckets.\n",
        thousands(env.plan.spin_calls as u64)
    );
    let _ = writeln!(
        w,
        "| tracer | sites | truth (p50) | tracer's p50 | bias | bias % |"
    );
    let _ = writeln!(w, "| --- | --- | --- | --- | --- | --- |");
    for r in &a.rows {
        let bias: Vec<f64> = r
            .measured
            .iter()
            .zip(&r.truth)
            .map(|(m, t)| m - t)
            .collect();
        let bias_pct: Vec<f64> = r
            .measured
            .iter()
            .zip(&r.truth)
            .map(|(m, t)| 100.0 * (m - t) / t)
            .collect();
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} |",
            r.label,
            r.sites,
            fmt_summary(&r.truth, ns),
            fmt_summary(&r.measured, ns),
            fmt_summary(&bias, ns),
            fmt_summary(&bias_pct, pct)
        );
    }
    let _ = writeln!(w);
    let _ = writeln!(w, "{ACCURACY}");
    notes(w, &a.notes);
}

const ACCURACY: &str = "\
goprobe does not correct for its own cost, and needs not: the entry timestamp is taken in the \
BPF program at the entry trap, before the kernel emulates the probed instruction and returns to \
the program, and the return timestamp at the return trap, before the `ret` is single-stepped. \
What lands inside the measured latency is the rest of the entry trap after the timestamp and \
the return trap up to the timestamp, a fraction of a microsecond when the entry site is \
emulated. When the entry site is single-stepped (a function whose entry could not move to an \
emulated instruction, or the leaf under `GOPROBE_CHEAP_SITES=0`), the single-step runs after the \
timestamp and adds its whole cost to every call, as the last row shows; that is one more reason \
for the placement rules above. bpftrace's uprobe sits on the function's first instruction, \
single-stepped, so the same holds for it.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lhist_median_of_bpftrace_output() {
        let lines: Vec<String> = [
            "@h:",
            "(..., 900)             0 |                          |",
            "[1000, 1001)          10 |@@@@@                     |",
            "[1001, 1002)          30 |@@@@@@@@@@@@@@@@@@@@      |",
            "[1002, 1003)           5 |@@                        |",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(lhist_median(&lines, 100.0), Some(100_150.0));
    }
}

//! `cargo xtask bench`: what goprobe costs the Go program it traces, against bpftrace, measured
//! side by side in one run on this machine, written to BENCHMARKS.md.
//!
//! Every figure is a median over repetitions, with min–max, and every comparison is made within
//! a repetition (a traced run against the untraced run just before it, goprobe against bpftrace
//! run right after it): these machines are shared and their timing drifts.
//!
//! One file per section, each with its report, its measuring (`measure`) and its part of the
//! document (`render`): `percall.rs` (overhead per traced call), `sites.rs` (the cost of a probe
//! on each kind of instruction, and where goprobe places its sites), `throughput.rs` (throughput
//! and loss), `pairing.rs` (pairing at scale), `attach.rs` (attach time), `inspect.rs`
//! (inspection time), `accuracy.rs`, `budget.rs` (the agent's overhead budget), `split.rs` (the cost of `funclatency --split`). Shared by them: `runner.rs` (a Go program under a tracer),
//! `insns.rs` (a function's instructions and goprobe's sites in it), `stats.rs` (medians and
//! number formats), `report.rs` (the document around the sections: the machine, the summary and
//! the changes), `proc.rs` (child processes) and `json.rs`. Here: the options, the plan, the
//! programs and servers measured, the section list and the run loop.

mod accuracy;
mod attach;
mod budget;
mod insns;
mod inspect;
mod json;
mod pairing;
mod percall;
mod proc;
mod report;
mod runner;
mod sites;
mod split;
mod stats;
mod throughput;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{gobuild, tools, util};
use report::{Machine, Report, render};

/// `cargo xtask bench [--quick] [--out FILE] [--only SECTION,...]`.
pub struct Options {
    pub quick: bool,
    pub out: Option<PathBuf>,
    pub only: Option<Vec<String>>,
}

pub const SECTIONS: [&str; 9] = [
    "percall",
    "sites",
    "throughput",
    "pairing",
    "attach",
    "inspect",
    "accuracy",
    "budget",
    "split",
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
        // The `--quick` figure, then the full run's.
        let pick = |q: usize, full: usize| if quick { q } else { full };
        Plan {
            quick,
            reps: pick(2, 5),
            calls: pick(20_000, 100_000),
            site_calls: pick(10_000, 30_000),
            spin_calls: pick(500, 2_000),
            rate_secs: if quick { 2.0 } else { 4.0 },
            rates: vec![10_000, 100_000, 0],
            throughput_reps: pick(1, 3),
            attach_sizes: vec![1, 100, 1_000, 10_000],
            attach_reps: pick(1, 3),
            per_site_attach_max: 100,
            bpftrace_attach_max: 100,
            inspect_reps: pick(2, 5),
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
    /// tests/go/budget (Go 1.27): the HTTP server of the overhead budget's section.
    budget: PathBuf,
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
            "accuracy" => accuracy::measure(&env).map(|r| report.accuracy = Some(r)),
            "budget" => budget::measure(&env).map(|r| report.budget = Some(r)),
            "split" => split::measure(&env).map(|r| report.split = Some(r)),
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
    let text = text + &kept_sections(&out);
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
    gobuild::build(&matrix, Some(&["bench", "gosymref", "hold", "budget"]))?;
    let programs = gobuild::output_dir();
    Ok(Env {
        plan,
        goprobe: crate::goprobe_bin(),
        bench: programs.join("go1.27/default/bench"),
        bench119: programs.join("go1.19/default/bench"),
        gosymref: programs.join("go1.27/default/gosymref"),
        budget: programs.join("go1.27/default/budget"),
        servers: vec![
            PathBuf::from("/usr/bin/caddy"),
            PathBuf::from("/usr/bin/prometheus"),
        ],
    })
}

/// The line after which BENCHMARKS.md holds sections that other commands measure (`cargo xtask
/// bench-arm64`, `cargo xtask soak`), pasted in from their output: a new report keeps them.
const KEPT: &str = "<!-- Measured by other commands (cargo xtask bench-arm64, cargo xtask soak); cargo xtask bench keeps what follows. -->";

/// What follows [`KEPT`] in the report being replaced, with the marker; nothing without one.
fn kept_sections(report: &std::path::Path) -> String {
    let old = std::fs::read_to_string(report).unwrap_or_default();
    match old.find(KEPT) {
        Some(at) => format!("\n{}", &old[at..]),
        None => String::new(),
    }
}

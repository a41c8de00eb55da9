//! BENCHMARKS.md: the document around the sections. How it was measured, the machine, the
//! results at a glance against their targets and the changes to goprobe these measurements led
//! to (both read several sections' reports, with this run's figures), then each section's own
//! part in the order of the section list, and the sections that failed.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use super::accuracy::{self, AccuracyReport};
use super::attach::{self, AttachReport, MULTI};
use super::inspect::{self, GOPROBE_INDEX, GOSYM, InspectReport};
use super::percall::{
    self, BARE, BT_URETPROBE, GOPROBE, GOPROBE_BEFORE, GOPROBE_UNCACHED, PercallFunction,
    PercallReport,
};
use super::sites::{self, SitesReport};
use super::stats::{fmt_summary, ns, pct, ratio, secs, summarize, thousands};
use super::throughput::{self, ThroughputReport};
use super::{Env, pairing};
use crate::util;

/// What the sections run have measured, and the sections that failed.
#[derive(Default)]
pub struct Report {
    pub percall: Option<PercallReport>,
    pub sites: Option<SitesReport>,
    pub throughput: Option<ThroughputReport>,
    pub pairing: Option<pairing::PairingReport>,
    pub attach: Option<AttachReport>,
    pub inspect: Option<InspectReport>,
    pub accuracy: Option<AccuracyReport>,
    pub budget: Option<super::budget::BudgetReport>,
    pub split: Option<super::split::SplitReport>,
    pub failures: Vec<String>,
}

/// The whole of BENCHMARKS.md.
pub fn render(
    env: &Env,
    report: &Report,
    before: &Machine,
    after: &Machine,
    took: Duration,
    sections: &[&str],
) -> String {
    let plan = &env.plan;
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "# goprobe benchmarks\n");
    let _ = writeln!(
        w,
        "What goprobe costs the Go program it traces, and what bpftrace costs for the same job, \
         measured side by side by one run of\n\n```sh\nrustup toolchain install && cargo xtask bench{}\n```\n",
        if plan.quick { " --quick" } else { "" }
    );
    if plan.quick {
        let _ = writeln!(
            w,
            "**`--quick` run: too few repetitions and calls to quote; run `cargo xtask bench`.**\n"
        );
    }
    let _ = writeln!(
        w,
        "`cargo xtask bench` installs what it compares with and runs on (Debian's `bpftrace`, `caddy`, \
         `prometheus` and `time`, the Go toolchains of `cargo xtask setup`), builds goprobe and \
         `tests/go/bench`, runs every section and writes this file. It needs root. Each figure is \
         the median over {} repetitions with the min–max in parentheses; each comparison is made \
         within a repetition (a traced run against the untraced run just before it), because this \
         machine is shared and its timing drifts. Sections run: {}; the whole run took {:.0} s.\n",
        plan.reps,
        sections.join(", "),
        took.as_secs_f64()
    );
    let _ = writeln!(w, "## Machine\n");
    let _ = writeln!(w, "| | |\n| --- | --- |");
    for (k, v) in machine_lines() {
        let _ = writeln!(w, "| {k} | {v} |");
    }
    let _ = writeln!(
        w,
        "| load average (1, 5, 15 min) | {} at the start ({}), {} at the end |\n",
        before.loadavg, before.when, after.loadavg
    );

    render_summary(w, report);
    render_changes(w, report);
    if let Some(p) = &report.percall {
        percall::render(w, p);
    }
    if let Some(s) = &report.sites {
        sites::render(w, s);
    }
    if let Some(t) = &report.throughput {
        throughput::render(w, t);
    }
    if let Some(p) = &report.pairing {
        pairing::render(w, p);
    }
    if let Some(a) = &report.attach {
        attach::render(w, a);
    }
    if let Some(i) = &report.inspect {
        inspect::render(w, i);
    }
    if let Some(a) = &report.accuracy {
        accuracy::render(w, a);
    }
    if let Some(b) = &report.budget {
        super::budget::render(w, b);
    }
    if let Some(s) = &report.split {
        super::split::render(w, s);
    }
    if !report.failures.is_empty() {
        let _ = writeln!(w, "## Sections that failed\n");
        for f in &report.failures {
            let _ = writeln!(w, "- {f}");
        }
        let _ = writeln!(w);
    }
    md
}

/// The figures the benchmarks exist for, each against its target, from this run's sections.
fn render_summary(w: &mut String, report: &Report) {
    let _ = writeln!(
        w,
        "## Results at a glance
"
    );
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "met",
        Some(false) => "**not met**",
        None => "not measured",
    };
    let median = |v: &[f64]| summarize(v).map(|s| s.median);
    if let Some(p) = &report.percall
        && let Some(call) = p.functions.first()
    {
        let r = call.ratio(GOPROBE, BT_URETPROBE);
        let work: Vec<f64> = call
            .added(GOPROBE)
            .iter()
            .zip(call.added(BARE))
            .map(|(g, b)| 100.0 * (g - b) / b)
            .collect();
        let bpf = median(&call.bpf.iter().map(|b| b.0 + b.1).collect::<Vec<_>>());
        let bare = median(&call.added(BARE));
        let _ = writeln!(
            w,
            "- **Cost per traced call** ({}, Go 1.27, stack check): goprobe adds {}, bpftrace's \
             uprobe + uretprobe {}: **{}×** (target ≤ 1.0: {}).",
            call.function,
            fmt_summary(&call.added(GOPROBE), ns),
            fmt_summary(&call.added(BT_URETPROBE), ns),
            fmt_summary(&r, ratio),
            verdict(median(&r).map(|m| m <= 1.0))
        );
        let _ = writeln!(
            w,
            "- **goprobe's own work** over the bare trap cost of its sites: {} by the program's \
             clock, {} by the kernel's BPF statistics (target ≤ 10 %: {}).",
            fmt_summary(&work, pct),
            match (bpf, bare) {
                (Some(b), Some(t)) => pct(100.0 * b / t),
                _ => "–".into(),
            },
            verdict(median(&work).map(|m| m <= 10.0))
        );
        for f in p.functions.iter().skip(1) {
            if f.ns.contains_key(BT_URETPROBE) {
                let _ = writeln!(
                    w,
                    "  - {}: {}× bpftrace.",
                    f.label,
                    fmt_summary(&f.ratio(GOPROBE, BT_URETPROBE), ratio)
                );
            }
        }
    }
    if let Some(t) = &report.throughput {
        for r in t.rows.iter().filter(|r| r.ring_bytes.is_none()) {
            if r.requested == 100_000 {
                let lost_all = r.lost.iter().chain(&r.unexplained).all(|&l| l == 0.0);
                let _ = writeln!(
                    w,
                    "- **Loss at 100k events/s**, {}: {} lost, {} unexplained (target 0: {}); \
                     CPU {}, peak RSS {}.",
                    if r.agent {
                        "`goprobe agent`"
                    } else {
                        "`goprobe funclatency`"
                    },
                    fmt_summary(&r.lost, |v| thousands(v as u64)),
                    fmt_summary(&r.unexplained, |v| format!("{v:.0}")),
                    verdict((!r.lost.is_empty()).then_some(lost_all)),
                    fmt_summary(&r.cpu_percent, pct),
                    fmt_summary(&r.peak_rss_mib, |v| format!("{v:.1} MiB")),
                );
            }
        }
    }
    if let Some(a) = &report.attach
        && let Some(big) = a.rows.iter().max_by_key(|r| r.functions)
        && let Some(times) = big.times.get(MULTI)
    {
        let _ = writeln!(
            w,
            "- **Attach** {} functions ({} sites) of {} with uprobe_multi: {}; detach {}.",
            thousands(big.functions as u64),
            thousands(big.sites as u64),
            a.binary.display(),
            fmt_summary(&times.iter().map(|t| t.0).collect::<Vec<_>>(), secs),
            fmt_summary(&times.iter().map(|t| t.1).collect::<Vec<_>>(), secs),
        );
    }
    if let Some(i) = &report.inspect {
        for row in &i.rows {
            if let (Some(g), Some(b)) = (row.runs.get(GOPROBE_INDEX), row.runs.get(GOSYM)) {
                let _ = writeln!(
                    w,
                    "- **Index** {} ({:.0} MiB, {} functions, stripped): goprobe {}, Go's \
                     debug/gosym {}.",
                    row.binary.display(),
                    row.size_mib,
                    thousands(row.functions as u64),
                    fmt_summary(&g.iter().map(|t| t.0).collect::<Vec<_>>(), secs),
                    fmt_summary(&b.iter().map(|t| t.0).collect::<Vec<_>>(), secs),
                );
            }
        }
    }
    if let Some(a) = &report.accuracy {
        for row in a.rows.iter().take(2) {
            let _ = writeln!(
                w,
                "- **Bias** of the p50 of a 100 µs call, {}: {}.",
                row.label,
                fmt_summary(&row.bias(), ns)
            );
        }
    }
    let _ = writeln!(
        w,
        "\nWhere goprobe costs more than bpftrace: a frameless leaf whose straight-line start has \
         no instruction the kernel emulates (`goprobeBenchLeaf` below) pays two single-steps, at \
         its first instruction and at its `ret`, where bpftrace's uprobe + uretprobe pays one; \
         bpftrace's uretprobe is not safe on Go, so goprobe does not use one.\n"
    );
}

/// What changed in goprobe because of these measurements, with this run's before/after.
fn render_changes(w: &mut String, report: &Report) {
    let _ = writeln!(
        w,
        "## Changes to goprobe that these measurements led to
"
    );
    let percall = report.percall.as_ref();
    let find =
        |label: &str| percall.and_then(|p| p.functions.iter().find(|f| f.label.starts_with(label)));
    let now_before = |f: Option<&PercallFunction>| {
        f.map(|f| {
            format!(
                "goprobe adds {} per call now against {} before, {}× (this run)",
                fmt_summary(&f.added(GOPROBE), ns),
                fmt_summary(&f.added(GOPROBE_BEFORE), ns),
                fmt_summary(&f.ratio(GOPROBE, GOPROBE_BEFORE), ratio)
            )
        })
        .unwrap_or_else(|| "see the per-call tables".into())
    };
    let _ = writeln!(
        w,
        "1. **Probe sites on emulated instructions.** The site-cost table below shows that a probe \
         the kernel emulates costs about 0.5 µs here and one it single-steps 10–30 µs. goprobe \
         already entered stack-check functions on the emulated `jbe`, but entered functions \
         without a stack check on their first instruction and returned on every `ret`, all \
         single-stepped. Now (`goprobe-inspect/src/disasm/x86_64.rs`) such functions are entered on the \
         first emulated instruction of their straight-line start when that is exact, and a `ret` \
         that follows a padding NOP is probed on the NOP. In Debian's caddy, 2,695 of its 7,360 \
         functions without a stack check get an early entry and 2.4 % of its RETs a NOP site \
         (prometheus: 2,610 of 7,531, and 4.3 %). Before/after, with `GOPROBE_CHEAP_SITES=0` \
         giving the old sites: a frameless leaf that starts with a branch: {}; the stack-check \
         function built by Go 1.19, whose RET follows a NOP: {}. It also removes the \
         single-step from inside the measured latency of such functions (accuracy table).",
        now_before(find("frameless leaf that starts")),
        now_before(find("the stack-check function built by Go 1.19"))
    );
    let _ = writeln!(
        w,
        "2. **Closing per-site uprobes in parallel.** Attaching with one uprobe per site (the \
         fallback for kernels without uprobe_multi, `GOPROBE_ATTACH=single`), closing each \
         probe waits for RCU grace periods twice: for its BPF link \
         (`synchronize_rcu_tasks_trace`) and for unregistering the uprobe, which this kernel \
         does under its global `event_mutex`, so one site after another. A goprobe that had \
         attached 5,465 sites took over 20 minutes to exit. goprobe now gives each per-site \
         uprobe its own link and closes them from up to 64 threads, so the first wait of every \
         close overlaps the second of the others: detaching 34 functions of caddy's `log` \
         package (155–168 sites) took 60 s one by one and 19 s from 32 threads, measured back \
         to back on this machine while it was busy (`goprobe/src/kernel/mod.rs`). The serial part, \
         about 90 ms per site here, is the kernel's: the attach table extrapolates it for \
         1,000 and 10,000 functions (a trial at 3,293 sites had not finished detaching after \
         10 minutes), and bpftrace pays it too. uprobe_multi, the default since Linux 6.6, \
         detaches any number of sites with one grace period."
    );
    let headline = percall.and_then(|p| p.functions.first());
    let cache_figures = headline
        .map(|f| {
            let sum = |b: &[(f64, f64)]| b.iter().map(|(e, r)| e + r).collect::<Vec<_>>();
            format!(
                "In this run, on the headline function: goprobe adds {} per call, against {} \
                 with `GOPROBE_STACK_HI_CACHE=0`, {}×; its two BPF programs take {} per call \
                 against {}",
                fmt_summary(&f.added(GOPROBE), ns),
                fmt_summary(&f.added(GOPROBE_UNCACHED), ns),
                fmt_summary(&f.ratio(GOPROBE, GOPROBE_UNCACHED), ratio),
                fmt_summary(&sum(&f.bpf), ns),
                fmt_summary(&sum(&f.bpf_uncached), ns),
            )
        })
        .unwrap_or_else(|| "See the per-call tables".into());
    let _ = writeln!(
        w,
        "3. **Kernel programs that touch less memory.** The BPF statistics showed goprobe's \
         entry and return programs taking 654 ns and 484 ns per run on the headline function \
         (Go 1.27, return single-stepped), but about 210 ns and 235 ns on the same function \
         built by Go 1.19, whose two sites are both emulated: after a single-step trap, which \
         on this virtual machine leaves the caches and TLB cold, the programs pay for every \
         line they touch. Variants of the programs, each doing one thing less, priced the \
         parts: inserting the goroutine's 1 KiB entry stack on every outermost call and \
         deleting it at the return about 230 ns and 165 ns; reading `g.stack.hi` from the \
         goroutine (`bpf_probe_read_user`) about 170 ns at the entry and 75 ns at the return; \
         `bpf_ktime_get_ns` about 55 ns; the per-CPU counters nothing measurable. So (`goprobe-ebpf/src/main.rs`): a goroutine's entry stack \
         stays between its calls (the probe on `runtime.goexit1` drops it when the goroutine \
         exits, so `g` reuse starts afresh); and it keeps the goroutine's `g.stack.hi`, read \
         once, which a new probe on `runtime.copystack` (the only place Go moves a live \
         goroutine's stack, `gp` in rax at its stack-check branch in Go 1.19–1.27) forgets, so \
         the next probe reads it again. The e2e test that grows and shrinks stacks under \
         traced calls fails (counts short) when the forgetting is disabled, and passes with it. \
         At commit e6ab5ac, before both, a `--quick` run measured goprobe at 11.3 µs per call \
         against bpftrace's 10.8 µs (1.04×) and its own work at 12 % of the bare cost. {cache_figures}."
    );
    let attach_one = report
        .attach
        .as_ref()
        .and_then(|a| a.rows.iter().find(|r| r.target == 1))
        .and_then(|r| r.times.get(MULTI))
        .map(|v| {
            format!(
                "in this run goprobe attaches one function of caddy in {}",
                fmt_summary(&v.iter().map(|t| t.0).collect::<Vec<_>>(), secs)
            )
        });
    let _ = writeln!(
        w,
        "4. **Start-up without the inline program.** The attach table showed goprobe taking \
         about 560 ms to attach one function where bpftrace takes about 55 ms. Of that, 462 ms \
         was the verifier on the entry program (`strace -T` of `BPF_PROG_LOAD`), nearly all \
         for the code of inline boundaries: up to 8 pops and 4 pushes, each a loop over the \
         goroutine's entry stack. Boundaries of inlined copies now have a program of their \
         own, loaded only when the plan has inlined copies; the entry program verifies in \
         5 ms. The inline program itself went from 482 ms to 244 ms by testing the \"no stacks\" \
         value of a read-only global apart, which lets the verifier skip the stack walk behind \
         each of its pops (with `--stacks` it is still ~0.5 s); {}.",
        attach_one.unwrap_or_else(|| "see the attach table".into())
    );
    let agent_fastest = report.throughput.as_ref().and_then(|t| {
        t.rows
            .iter()
            .find(|r| r.agent && r.requested == 0)
            .map(|r| {
                format!(
                    "in this run it lost {} of {} events at {} calls/s",
                    fmt_summary(&r.lost, |v| thousands(v as u64)),
                    fmt_summary(&r.calls, |v| thousands(v as u64)),
                    fmt_summary(&r.calls_per_s, |v| thousands(v as u64)),
                )
            })
    });
    let _ = writeln!(
        w,
        "5. **The agent drains as often as `funclatency`.** The throughput table's agent rows \
         first showed the daemon losing 26 % of the events (763,765 of 2.9 million) at the \
         highest rate, where `funclatency` lost none: it drained the ring buffer every 100 ms, \
         and the 4 MiB buffer holds about 100k events, which this program fills in about \
         70 ms. Both now drain every 20 ms (`pipeline::DRAIN_EVERY`, `goprobe/src/pipeline/mod.rs`); \
         {}.\n",
        agent_fastest.unwrap_or_else(|| "see the throughput table".into())
    );
}

/// The runs of a section that failed, under its table.
pub fn notes(w: &mut String, notes: &[String]) {
    if !notes.is_empty() {
        let _ = writeln!(w, "Runs that failed:\n");
        for n in notes {
            let _ = writeln!(w, "- {}", n.replace('\n', " "));
        }
        let _ = writeln!(w);
    }
}

/// A table's header row (`| column | column |`), and the row under it that makes it a table.
pub fn table_head(w: &mut String, header: &str) {
    let columns = header.matches('|').count().saturating_sub(1);
    let _ = writeln!(w, "{header}\n|{}", " --- |".repeat(columns));
}

/// The load and the time, at the start and at the end of the run.
pub struct Machine {
    loadavg: String,
    when: String,
}

impl Machine {
    pub fn now() -> Machine {
        Machine {
            loadavg: std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            when: util::stdout(util::cmd("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
                .unwrap_or_default(),
        }
    }
}

/// The machine and the versions measured: the table at the top of BENCHMARKS.md.
fn machine_lines() -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown".into());
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| format!("{:.0} GiB", kib as f64 / (1 << 20) as f64))
        .unwrap_or_default();
    let hypervisor = if cpuinfo.contains(" hypervisor") {
        " (virtual machine)"
    } else {
        ""
    };
    let version = |c: &mut Command| util::stdout(c).unwrap_or_else(|_| "?".into());
    let package = |p: &str| version(util::cmd("dpkg-query").args(["-W", "-f", "${Version}", p]));
    vec![
        (
            "kernel".into(),
            version(util::cmd("uname").args(["-r", "-m"])),
        ),
        ("CPU".into(), format!("{model}, {cpus} CPUs{hypervisor}")),
        ("memory".into(), mem),
        (
            "clock source".into(),
            std::fs::read_to_string(
                "/sys/devices/system/clocksource/clocksource0/current_clocksource",
            )
            .unwrap_or_default()
            .trim()
            .to_string(),
        ),
        (
            "bpftrace".into(),
            version(util::cmd("bpftrace").arg("--version")),
        ),
        (
            "goprobe".into(),
            version(
                util::cmd("git")
                    .args(["describe", "--always", "--dirty"])
                    .current_dir(util::root()),
            ),
        ),
        ("caddy (Debian)".into(), package("caddy")),
        ("prometheus (Debian)".into(), package("prometheus")),
    ]
}

//! Overhead per traced call: the ns that goprobe adds to each call of a function, against
//! bpftrace's uprobe + uretprobe (what people use for a function's latency), probes that do
//! nothing at goprobe's sites (what the traps cost by themselves), and goprobe as it was before
//! the changes these measurements led to; and goprobe's two BPF programs as the kernel times
//! them. The runs compared go back to back in each repetition: the cost of a trap drifts with
//! the host's load.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Result;

use super::Env;
use super::insns::{describe_sites, goprobe_sites, insns};
use super::report::{notes, table_head};
use super::runner::{ONE_THREAD, PING, Tracer, run_program};
use super::stats::{fmt_summary, ns, pct, ratio, summarize, thousands};

pub struct PercallFunction {
    pub label: String,
    pub function: &'static str,
    sites: String,
    /// Config name -> ns per call, one value per repetition (NaN for a failed run).
    pub ns: BTreeMap<&'static str, Vec<f64>>,
    /// Calls goprobe counted in each goprobe run, against the calls made.
    counts_ok: Vec<bool>,
    /// BPF statistics runs: entry and return program ns per run.
    pub bpf: Vec<(f64, f64)>,
    /// The same with `GOPROBE_STACK_HI_CACHE=0` (headline function only).
    pub bpf_uncached: Vec<(f64, f64)>,
    /// Translated bytes of the entry and return programs with the kernel log off (as by
    /// default) and on (`-v`), headline function only.
    bpf_bytes: Option<(u64, u64)>,
    bpf_bytes_log_on: Option<(u64, u64)>,
    /// goprobe's peak resident memory per config, one value per repetition.
    peak_rss_mib: BTreeMap<&'static str, Vec<f64>>,
    notes: Vec<String>,
}

pub struct PercallReport {
    /// Calls per run.
    calls: usize,
    pub functions: Vec<PercallFunction>,
}

const UNTRACED: &str = "untraced";
pub const GOPROBE: &str = "goprobe funclatency";
pub const GOPROBE_BEFORE: &str = "goprobe, sites before this change";
pub const GOPROBE_UNCACHED: &str = "goprobe, g.stack.hi read at every site";
pub const BARE: &str = "bare probes at goprobe's sites";
pub const GOPROBE_LOG_ON: &str = "goprobe, kernel log on (-v)";
const BT_UPROBE: &str = "bpftrace uprobe";
pub const BT_URETPROBE: &str = "bpftrace uprobe + uretprobe";
pub const GOPROBE_BY: &str = "goprobe funclatency --by key";
/// The same with a result read at the RET: a second event per call.
pub const GOPROBE_BY_RESULT: &str = "goprobe funclatency --by key,ret0";

pub fn measure(env: &Env) -> Result<PercallReport> {
    let plan = &env.plan;
    struct Case {
        label: &'static str,
        bin: PathBuf,
        mode: &'static str,
        function: &'static str,
        bpftrace: bool,
        /// More program arguments (`-keys N`).
        extra_args: &'static [&'static str],
    }
    // The headline case also runs goprobe as it was before its kernel programs kept each
    // goroutine's g.stack.hi (GOPROBE_STACK_HI_CACHE=0), for that change's before/after.
    let cases = [
        Case {
            label: "Go function with the stack-check prologue (Go 1.27)",
            bin: env.bench.clone(),
            mode: "call",
            function: "main.goprobeBenchCall",
            bpftrace: true,
            extra_args: &[],
        },
        Case {
            label: "frameless leaf that starts with a branch (Go 1.27)",
            bin: env.bench.clone(),
            mode: "leafbr",
            function: "main.goprobeBenchLeafBranch",
            bpftrace: true,
            extra_args: &[],
        },
        Case {
            label: "frameless leaf, straight-line arithmetic (Go 1.27)",
            bin: env.bench.clone(),
            mode: "leaf",
            function: "main.goprobeBenchLeaf",
            bpftrace: true,
            extra_args: &[],
        },
        Case {
            label: "the stack-check function built by Go 1.19 (a padding NOP before its RET)",
            bin: env.bench119.clone(),
            mode: "call",
            function: "main.goprobeBenchCall",
            bpftrace: false,
            extra_args: &[],
        },
        Case {
            label: "a string argument, 8 distinct values, with --by (Go 1.27)",
            bin: env.bench.clone(),
            mode: "key",
            function: "main.goprobeBenchKey",
            bpftrace: false,
            extra_args: &[],
        },
        Case {
            label: "the same, 100,000 distinct values: the cap (100 values, the rest `other`)",
            bin: env.bench.clone(),
            mode: "key",
            function: "main.goprobeBenchKey",
            bpftrace: false,
            extra_args: &["-keys", "100000"],
        },
    ];
    let mut functions = Vec::new();
    for case in &cases {
        let insns = insns(env, &case.bin, case.function)?;
        let (kind, offsets) = goprobe_sites(&insns);
        let moved = kind == "emulated_prefix"
            || insns
                .iter()
                .any(|i| i.goprobe_return && i.mnemonic != "ret");
        // Runs that are compared go next to each other: the cost of a single-step drifts with
        // the host's load, over seconds.
        let mut configs: Vec<(&'static str, Tracer)> =
            vec![(UNTRACED, Tracer::None), (GOPROBE, Tracer::Goprobe(vec![]))];
        if case.bpftrace {
            configs.push((
                BT_URETPROBE,
                Tracer::Bpftrace(bpftrace_uretprobe(case.function)),
            ));
        }
        configs.push((BARE, Tracer::Bare(offsets)));
        if moved {
            configs.push((
                GOPROBE_BEFORE,
                Tracer::Goprobe(vec![("GOPROBE_CHEAP_SITES", "0".into())]),
            ));
        }
        if case.bpftrace {
            configs.push((BT_UPROBE, Tracer::Bpftrace(bpftrace_uprobe(case.function))));
        }
        if case.mode == "key" {
            configs.push((GOPROBE_BY, Tracer::GoprobeArgs(vec!["--by", "key"])));
            configs.push((
                GOPROBE_BY_RESULT,
                Tracer::GoprobeArgs(vec!["--by", "key,ret0"]),
            ));
        }
        let headline = functions.is_empty();
        if headline {
            configs.push((GOPROBE_UNCACHED, uncached(vec![])));
            configs.push((GOPROBE_LOG_ON, log_on(vec![])));
        }
        let mut f = PercallFunction {
            label: case.label.to_string(),
            function: case.function,
            sites: describe_sites(&insns),
            ns: BTreeMap::new(),
            counts_ok: Vec::new(),
            bpf: Vec::new(),
            bpf_uncached: Vec::new(),
            bpf_bytes: None,
            bpf_bytes_log_on: None,
            peak_rss_mib: BTreeMap::new(),
            notes: Vec::new(),
        };
        let mut args = vec![
            "-mode".to_string(),
            case.mode.to_string(),
            "-n".to_string(),
            plan.calls.to_string(),
        ];
        args.extend(case.extra_args.iter().map(|a| a.to_string()));
        for rep in 0..plan.reps {
            for (name, tracer) in &configs {
                eprintln!(
                    "bench: percall {} rep {}/{}: {name}",
                    case.function,
                    rep + 1,
                    plan.reps
                );
                match run_program(env, &case.bin, &args, &ONE_THREAD, tracer, case.function) {
                    Ok(out) => {
                        let ns = out.result.f64("ns_per_call").unwrap_or(f64::NAN);
                        f.ns.entry(name).or_default().push(ns);
                        if let Some(g) = &out.goprobe {
                            // The program makes 1000 warm-up calls, then -n.
                            let want = plan.calls as u64 + 1000;
                            f.counts_ok.push(g.sum(case.function, "count") == want);
                            if let Some(kib) = g.peak_rss_kib {
                                f.peak_rss_mib
                                    .entry(name)
                                    .or_default()
                                    .push(kib as f64 / 1024.0);
                            }
                        }
                    }
                    Err(e) => {
                        f.ns.entry(name).or_default().push(f64::NAN);
                        f.notes
                            .push(format!("{name}, repetition {}: {e:#}", rep + 1));
                    }
                }
            }
            // goprobe's own work, timed by the kernel (a separate run: the statistics cost a
            // little on every BPF program run).
            let stats = || vec![("GOPROBE_BPF_STATS", "1".to_string())];
            #[derive(PartialEq)]
            enum Stat {
                Default,
                Uncached,
                LogOn,
            }
            let mut stat_runs = vec![(Tracer::Goprobe(stats()), Stat::Default)];
            if headline {
                stat_runs.push((uncached(stats()), Stat::Uncached));
                if rep == 0 {
                    stat_runs.push((log_on(stats()), Stat::LogOn));
                }
            }
            for (tracer, stat) in stat_runs {
                let Ok(out) =
                    run_program(env, &case.bin, &args, &ONE_THREAD, &tracer, case.function)
                else {
                    continue;
                };
                let Some(g) = out.goprobe.as_ref() else {
                    continue;
                };
                match stat {
                    Stat::Default => {
                        f.bpf.extend(g.bpf_ns_per_run());
                        if headline {
                            f.bpf_bytes = f.bpf_bytes.or(g.bpf_translated_bytes());
                        }
                    }
                    Stat::Uncached => f.bpf_uncached.extend(g.bpf_ns_per_run()),
                    Stat::LogOn => f.bpf_bytes_log_on = g.bpf_translated_bytes(),
                }
            }
        }
        functions.push(f);
    }
    Ok(PercallReport {
        calls: plan.calls,
        functions,
    })
}

/// goprobe with its kernel programs' log on, as at `-v` (the other runs keep it off, as goprobe
/// does by default).
fn log_on(mut extra: Vec<(&'static str, String)>) -> Tracer {
    extra.push(("GOPROBE_KERNEL_LOG", "1".into()));
    Tracer::Goprobe(extra)
}

/// goprobe reading `g.stack.hi` from the goroutine at every site, as before the kernel
/// programs kept it per goroutine.
fn uncached(mut extra: Vec<(&'static str, String)>) -> Tracer {
    extra.push(("GOPROBE_STACK_HI_CACHE", "0".into()));
    Tracer::Goprobe(extra)
}

impl PercallFunction {
    /// ns added per call by a configuration, per repetition (against that repetition's
    /// untraced run).
    pub fn added(&self, config: &str) -> Vec<f64> {
        let (Some(base), Some(v)) = (self.ns.get(UNTRACED), self.ns.get(config)) else {
            return Vec::new();
        };
        v.iter().zip(base).map(|(x, b)| x - b).collect()
    }

    /// `a / b` of added ns per call, per repetition.
    pub fn ratio(&self, a: &str, b: &str) -> Vec<f64> {
        self.added(a)
            .iter()
            .zip(self.added(b))
            .map(|(x, y)| x / y)
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
fn bpftrace_uprobe(function: &str) -> String {
    format!("uprobe:{{bin}}:{function} {{ @calls = count(); }}\n{PING}")
}

fn bpftrace_uretprobe(function: &str) -> String {
    format!(
        "uprobe:{{bin}}:{function} {{ @start[tid] = nsecs; }}\n\
         uretprobe:{{bin}}:{function} /@start[tid]/ {{ @ns = hist(nsecs - @start[tid]); delete(@start[tid]); }}\n{PING}"
    )
}

pub fn render(w: &mut String, p: &PercallReport) {
    let _ = writeln!(w, "## Overhead per traced call\n");
    let _ = writeln!(
        w,
        "`tests/go/bench` calls one `//go:noinline` function in a loop, {} times after 1,000 warm-up \
         calls, and prints its own ns per call (the median over chunks of 256 calls, so that a \
         chunk in which the thread was preempted does not count). It runs with `GOMAXPROCS=1 \
         GODEBUG=asyncpreemptoff=1` under every tracer: otherwise the goroutine can be preempted \
         inside the traced function and resumed on another thread, and bpftrace's uretprobe then \
         kills it (`SIGILL` at the uretprobe trampoline; see the README, How goprobe times Go functions safely). goprobe does not need \
         this. The tracers:\n",
        thousands(p.calls as u64)
    );
    let _ = writeln!(
        w,
        "- `{GOPROBE}`: `goprobe funclatency -p PID go:FUNCTION`;\n\
         - `{BARE}`: `goprobe dev attach` with BPF programs that do nothing, at the same sites: \
         what the probes cost by themselves;\n\
         - `{GOPROBE_BEFORE}`: `GOPROBE_CHEAP_SITES=0`, the sites goprobe used before the change \
         below (function start, every RET);\n\
         - `{GOPROBE_UNCACHED}`: `GOPROBE_STACK_HI_CACHE=0`, the kernel programs reading the \
         goroutine's `g.stack.hi` from user memory at every site, as before change 3 below;\n\
         - `{GOPROBE_LOG_ON}`: the kernel programs' log (aya-log) on, as at `-v`; every other \
         goprobe run has it off, as goprobe runs by default (`-v` is passed for the counters, \
         with `GOPROBE_KERNEL_LOG=0`);\n\
         - `{BT_UPROBE}`: `bpftrace -e 'uprobe:BIN:FUNCTION {{ @calls = count(); }}'`;\n\
         - `{BT_URETPROBE}`: `bpftrace -e 'uprobe:BIN:FUNCTION {{ @start[tid] = nsecs; }} \
         uretprobe:BIN:FUNCTION /@start[tid]/ {{ @ns = hist(nsecs - @start[tid]); \
         delete(@start[tid]); }}'`, what people use for a function's latency (bcc's funclatency \
         does the same).\n"
    );
    if let Some(call) = p.functions.first() {
        let r = call.ratio(GOPROBE, BT_URETPROBE);
        let work = call
            .added(GOPROBE)
            .iter()
            .zip(call.added(BARE))
            .map(|(g, b)| 100.0 * (g - b) / b)
            .collect::<Vec<_>>();
        let _ = writeln!(
            w,
            "**Headline** ({}): goprobe adds **{}** per call, bpftrace's uprobe + uretprobe **{}**; \
             goprobe ÷ bpftrace = **{}** (per repetition, median and min–max). goprobe's own work \
             over the bare cost of its sites: {} of the bare cost{}.\n",
            call.function,
            fmt_summary(&call.added(GOPROBE), ns),
            fmt_summary(&call.added(BT_URETPROBE), ns),
            fmt_summary(&r, ratio),
            fmt_summary(&work, pct),
            match (
                summarize(&call.bpf.iter().map(|b| b.0 + b.1).collect::<Vec<_>>()),
                summarize(&call.added(BARE))
            ) {
                (Some(bpf), Some(bare)) => format!(
                    "; the kernel's BPF statistics put goprobe's two programs at {} per call, {} of the bare cost",
                    ns(bpf.median),
                    pct(100.0 * bpf.median / bare.median)
                ),
                _ => String::new(),
            }
        );
    }
    for f in &p.functions {
        let _ = writeln!(w, "### {} — `{}`\n", f.label, f.function);
        let _ = writeln!(w, "goprobe's sites: {}.\n", f.sites);
        table_head(
            w,
            "| tracer | ns per call | added per call | ÷ bpftrace uprobe + uretprobe |",
        );
        for (name, values) in &f.ns {
            if *name == UNTRACED {
                continue;
            }
            let r = if f.ns.contains_key(BT_URETPROBE) {
                fmt_summary(&f.ratio(name, BT_URETPROBE), ratio)
            } else {
                "–".into()
            };
            let _ = writeln!(
                w,
                "| {name} | {} | {} | {r} |",
                fmt_summary(values, ns),
                fmt_summary(&f.added(name), ns)
            );
        }
        if let Some(base) = f.ns.get(UNTRACED) {
            let _ = writeln!(w, "| {UNTRACED} | {} | | |", fmt_summary(base, ns));
        }
        let _ = writeln!(w);
        if f.ns.contains_key(GOPROBE_BEFORE) {
            let _ = writeln!(
                w,
                "This change: goprobe's sites now ÷ before = {}.\n",
                fmt_summary(&f.ratio(GOPROBE, GOPROBE_BEFORE), ratio)
            );
        }
        if !f.bpf.is_empty() {
            let _ = writeln!(
                w,
                "goprobe's BPF programs (kernel BPF statistics, `GOPROBE_BPF_STATS=1`, separate runs): \
                 entry {} and return {} per run.\n",
                fmt_summary(&f.bpf.iter().map(|b| b.0).collect::<Vec<_>>(), ns),
                fmt_summary(&f.bpf.iter().map(|b| b.1).collect::<Vec<_>>(), ns)
            );
        }
        if f.ns.contains_key(GOPROBE_BY) {
            let rss = |config: &str| {
                f.peak_rss_mib
                    .get(config)
                    .map_or_else(|| "–".into(), |v| fmt_summary(v, |m| format!("{m:.1} MiB")))
            };
            let _ = writeln!(
                w,
                "`--by key` over plain timing: {} per call added, --by ÷ plain = {}. goprobe's peak memory (VmHWM): {} with `--by`, {} without.\n",
                fmt_summary(
                    &f.added(GOPROBE_BY)
                        .iter()
                        .zip(f.added(GOPROBE))
                        .map(|(by, plain)| by - plain)
                        .collect::<Vec<_>>(),
                    ns
                ),
                fmt_summary(&f.ratio(GOPROBE_BY, GOPROBE), ratio),
                rss(GOPROBE_BY),
                rss(GOPROBE)
            );
        }
        if f.ns.contains_key(GOPROBE_BY_RESULT) {
            let _ = writeln!(
                w,
                "`--by key,ret0` (a result, read at the RET and sent in a second event) over `--by key`: {} per call added.\n",
                fmt_summary(
                    &f.added(GOPROBE_BY_RESULT)
                        .iter()
                        .zip(f.added(GOPROBE_BY))
                        .map(|(result, by)| result - by)
                        .collect::<Vec<_>>(),
                    ns
                ),
            );
        }
        if f.ns.contains_key(GOPROBE_LOG_ON) {
            let sizes = match (f.bpf_bytes, f.bpf_bytes_log_on) {
                (Some((e, r)), Some((le, lr))) => format!(
                    " The programs as the verifier left them: entry {} and return {} bytes with \
                     the log off, {} and {} with it on; off, the log statements are not loaded \
                     at all.",
                    thousands(e),
                    thousands(r),
                    thousands(le),
                    thousands(lr)
                ),
                _ => String::new(),
            };
            let _ = writeln!(
                w,
                "Kernel log (aya-log, logs only rare conditions such as a full map): per call, \
                 on ÷ off = {}.{sizes}\n",
                fmt_summary(&f.ratio(GOPROBE_LOG_ON, GOPROBE), ratio)
            );
        }
        if !f.bpf_uncached.is_empty() {
            let _ = writeln!(
                w,
                "With `GOPROBE_STACK_HI_CACHE=0` (g.stack.hi read at every site): entry {} and \
                 return {} per run.\n",
                fmt_summary(&f.bpf_uncached.iter().map(|b| b.0).collect::<Vec<_>>(), ns),
                fmt_summary(&f.bpf_uncached.iter().map(|b| b.1).collect::<Vec<_>>(), ns)
            );
        }
        if !f.counts_ok.is_empty() {
            let ok = f.counts_ok.iter().filter(|c| **c).count();
            let _ = writeln!(
                w,
                "goprobe counted every call exactly in {ok} of {} runs.\n",
                f.counts_ok.len()
            );
        }
        notes(w, &f.notes);
    }
}

//! The cost of `funclatency --split`: it probes every goroutine status change of the traced
//! process (`runtime.casgstatus`, `gopark`, ...) besides the traced function's entry and RETs.
//! Measured on tests/go/bench's `switch` mode: each call of the traced function is a round trip
//! with a partner goroutine on one P, two goroutine switches, as fast as they go; the same run
//! untraced, traced without the split and with it, back to back in each repetition.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Result;

use super::Env;
use super::report::{notes, table_head};
use super::runner::{ONE_THREAD, Tracer, run_program};
use super::stats::{fmt_summary, ns, summarize, thousands};

const FUNCTION: &str = "main.goprobeBenchSwitch";
const UNTRACED: &str = "untraced";
const PLAIN: &str = "goprobe funclatency";
const SPLIT: &str = "goprobe funclatency --split";
/// Goroutine switches per call of the traced function.
const SWITCHES_PER_CALL: f64 = 2.0;

pub struct SplitReport {
    calls: usize,
    /// Config -> (ns per call, switches per second) per repetition.
    runs: BTreeMap<&'static str, Vec<(f64, f64)>>,
    notes: Vec<String>,
}

pub fn measure(env: &Env) -> Result<SplitReport> {
    let calls = env.plan.calls;
    let configs = [
        (UNTRACED, Tracer::None),
        (PLAIN, Tracer::GoprobeArgs(vec![])),
        (SPLIT, Tracer::GoprobeArgs(vec!["--split"])),
    ];
    let args = vec![
        "-mode".to_string(),
        "switch".to_string(),
        "-n".to_string(),
        calls.to_string(),
    ];
    let mut report = SplitReport {
        calls,
        runs: BTreeMap::new(),
        notes: Vec::new(),
    };
    for rep in 0..env.plan.reps {
        for (name, tracer) in &configs {
            eprintln!("bench: split rep {}/{}: {name}", rep + 1, env.plan.reps);
            match run_program(env, &env.bench, &args, &ONE_THREAD, tracer, FUNCTION) {
                Ok(out) => report.runs.entry(name).or_default().push((
                    out.result.f64("ns_per_call").unwrap_or(f64::NAN),
                    out.result.f64("switches_per_s").unwrap_or(f64::NAN),
                )),
                Err(e) => report
                    .notes
                    .push(format!("{name}, repetition {}: {e:#}", rep + 1)),
            }
        }
    }
    Ok(report)
}

impl SplitReport {
    /// ns added per call by `config` against the untraced run of the same repetition.
    pub fn added(&self, config: &str, base: &str) -> Vec<f64> {
        let (Some(runs), Some(base)) = (self.runs.get(config), self.runs.get(base)) else {
            return Vec::new();
        };
        runs.iter().zip(base).map(|(r, b)| r.0 - b.0).collect()
    }
}

pub fn render(w: &mut String, r: &SplitReport) {
    let _ = writeln!(w, "## The cost of `funclatency --split`\n");
    let _ = writeln!(
        w,
        "`tests/go/bench -mode switch`: {} calls of `{FUNCTION}`, each a round trip with a partner \
         goroutine over two unbuffered channels on one P (GOMAXPROCS=1): {SWITCHES_PER_CALL} \
         goroutine switches per call, as fast as they go. Untraced, traced by `funclatency` \
         and by `funclatency --split`, back to back in each repetition. The split probes every \
         status change of every goroutine of the process (three `casgstatus` and one `gopark` \
         per switch here), so its cost is per switch, whether or not the switching goroutine is \
         inside a traced call; the column `added per switch` is the split's cost over plain \
         `funclatency`, divided by the switches.\n",
        thousands(r.calls as u64)
    );
    table_head(
        w,
        "| run | ns per call | switches per second | added per call | added per switch |",
    );
    for name in [UNTRACED, PLAIN, SPLIT] {
        let Some(runs) = r.runs.get(name) else {
            continue;
        };
        let per_call: Vec<f64> = runs.iter().map(|x| x.0).collect();
        let rate: Vec<f64> = runs.iter().map(|x| x.1).collect();
        let (added, per_switch) = match name {
            UNTRACED => ("–".to_string(), "–".to_string()),
            PLAIN => (fmt_summary(&r.added(PLAIN, UNTRACED), ns), "–".to_string()),
            _ => (
                fmt_summary(&r.added(SPLIT, UNTRACED), ns),
                fmt_summary(
                    &r.added(SPLIT, PLAIN)
                        .iter()
                        .map(|v| v / SWITCHES_PER_CALL)
                        .collect::<Vec<_>>(),
                    ns,
                ),
            ),
        };
        let _ = writeln!(
            w,
            "| {name} | {} | {} | {added} | {per_switch} |",
            fmt_summary(&per_call, ns),
            fmt_summary(&rate, |v| thousands(v as u64)),
        );
    }
    if let Some(s) = summarize(
        &r.added(SPLIT, PLAIN)
            .iter()
            .map(|v| v / SWITCHES_PER_CALL)
            .collect::<Vec<_>>(),
    ) {
        let _ = writeln!(
            w,
            "\nAt 100,000 goroutine switches per second, the split costs the traced process about \
             {:.0} % of a CPU ({} per switch).",
            s.median * 100_000.0 / 1e9 * 100.0,
            ns(s.median)
        );
    }
    let _ = writeln!(w);
    notes(w, &r.notes);
}

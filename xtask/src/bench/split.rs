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
const AGENT: &str = "goprobe agent";
const AGENT_SPLIT: &str = "goprobe agent, histogram.split = true";
/// Goroutine switches per call of the traced function.
const SWITCHES_PER_CALL: f64 = 2.0;

pub struct SplitReport {
    calls: usize,
    /// Config -> (ns per call, switches per second) per repetition.
    runs: BTreeMap<&'static str, Vec<(f64, f64)>>,
    /// The agent's CPU seconds over a run, per repetition, without and with the split.
    agent_cpu: BTreeMap<&'static str, Vec<f64>>,
    notes: Vec<String>,
}

pub fn measure(env: &Env) -> Result<SplitReport> {
    let calls = env.plan.calls;
    let configs = [
        (UNTRACED, Tracer::None),
        (PLAIN, Tracer::GoprobeArgs(vec![])),
        (SPLIT, Tracer::GoprobeArgs(vec!["--split"])),
        (AGENT, Tracer::Agent),
        (AGENT_SPLIT, Tracer::AgentSplit),
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
        agent_cpu: BTreeMap::new(),
        notes: Vec::new(),
    };
    for rep in 0..env.plan.reps {
        for (name, tracer) in &configs {
            eprintln!("bench: split rep {}/{}: {name}", rep + 1, env.plan.reps);
            match run_program(env, &env.bench, &args, &ONE_THREAD, tracer, FUNCTION) {
                Ok(out) => {
                    report.runs.entry(name).or_default().push((
                        out.result.f64("ns_per_call").unwrap_or(f64::NAN),
                        out.result.f64("switches_per_s").unwrap_or(f64::NAN),
                    ));
                    if matches!(tracer, Tracer::Agent | Tracer::AgentSplit)
                        && let Some(cpu) = out.goprobe.as_ref().and_then(|g| g.cpu)
                    {
                        report
                            .agent_cpu
                            .entry(name)
                            .or_default()
                            .push(cpu.as_secs_f64());
                    }
                }
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
         and by `funclatency --split`, and by the agent without and with `histogram.split`, \
         back to back in each repetition. The split probes every \
         status change of every goroutine of the process (three `casgstatus` and one `gopark` \
         per switch here), so its cost is per switch, whether or not the switching goroutine is \
         inside a traced call; the column `added per switch` is the split's cost over plain \
         `funclatency` (for the agent, over the agent without it), divided by the switches.\n",
        thousands(r.calls as u64)
    );
    table_head(
        w,
        "| run | ns per call | switches per second | added per call | added per switch |",
    );
    for name in [UNTRACED, PLAIN, SPLIT, AGENT, AGENT_SPLIT] {
        let Some(runs) = r.runs.get(name) else {
            continue;
        };
        let per_call: Vec<f64> = runs.iter().map(|x| x.0).collect();
        let rate: Vec<f64> = runs.iter().map(|x| x.1).collect();
        let (added, per_switch) = match name {
            UNTRACED => ("–".to_string(), "–".to_string()),
            PLAIN | AGENT => (fmt_summary(&r.added(name, UNTRACED), ns), "–".to_string()),
            AGENT_SPLIT => (
                fmt_summary(&r.added(AGENT_SPLIT, UNTRACED), ns),
                fmt_summary(
                    &r.added(AGENT_SPLIT, AGENT)
                        .iter()
                        .map(|v| v / SWITCHES_PER_CALL)
                        .collect::<Vec<_>>(),
                    ns,
                ),
            ),
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
    if !r.agent_cpu.is_empty() {
        let _ = writeln!(
            w,
            "\nThe agent's own CPU over the traced part of the run (its process's user + system \
             time, from the go-ahead to the result line), for the same calls:\n"
        );
        table_head(w, "| agent | CPU seconds per run | CPU per 1,000 calls |");
        for (name, cpu) in &r.agent_cpu {
            let _ = writeln!(
                w,
                "| {name} | {} | {} |",
                fmt_summary(cpu, |v| format!("{v:.3} s")),
                fmt_summary(
                    &cpu.iter()
                        .map(|c| c * 1e9 / r.calls as f64 * 1000.0)
                        .collect::<Vec<_>>(),
                    ns
                ),
            );
        }
    }
    let _ = writeln!(w);
    notes(w, &r.notes);
}

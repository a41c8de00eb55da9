//! Accuracy: the p50 latency a tracer reports for a function that takes about 100 µs, against
//! the truth the program times itself, untraced, around the call. It shows what goprobe's own
//! traps add inside the latency it measures (and bpftrace's), and why an entry site the kernel
//! emulates matters for accuracy as well as for cost.

use std::fmt::Write as _;

use anyhow::Result;

use super::Env;
use super::insns::{describe_sites, insns};
use super::report::{notes, table_head};
use super::runner::{ONE_THREAD, PING, Tracer, run_program};
use super::stats::{fmt_summary, ns, pct, thousands};

pub struct AccuracyRow {
    pub label: String,
    sites: String,
    truth: Vec<f64>,
    measured: Vec<f64>,
}

impl AccuracyRow {
    /// The tracer's p50 − the truth, per repetition.
    pub fn bias(&self) -> Vec<f64> {
        self.measured
            .iter()
            .zip(&self.truth)
            .map(|(m, t)| m - t)
            .collect()
    }
}

pub struct AccuracyReport {
    /// Calls per run.
    calls: usize,
    pub rows: Vec<AccuracyRow>,
    notes: Vec<String>,
}

pub fn measure(env: &Env) -> Result<AccuracyReport> {
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
    Ok(AccuracyReport {
        calls: plan.spin_calls,
        rows,
        notes,
    })
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

pub fn render(w: &mut String, a: &AccuracyReport) {
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
        thousands(a.calls as u64)
    );
    table_head(
        w,
        "| tracer | sites | truth (p50) | tracer's p50 | bias | bias % |",
    );
    for r in &a.rows {
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
            fmt_summary(&r.bias(), ns),
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

//! The overhead budget: goprobe must never be the reason a service slows down. Every probe hit
//! costs the traced program time (a trap, and an emulated or single-stepped instruction;
//! `plan::site_cost_ns`). From each function's calls over a window and what one call of it costs
//! ([`crate::pipeline::FunctionInfo::call_cost_ns`]), the budget estimates each process's
//! overhead as a share of one CPU. Past the budget, the hottest functions are shed (detached
//! from that process, [`super::Tracer::shed`]) until the estimate is back within it; the
//! others keep being traced, every call counted.
use std::{
    collections::{BTreeSet, HashMap},
    time::{Duration, Instant},
};

/// How long calls are counted before the estimate is checked: long enough to smooth a burst, short
/// enough that a pattern matching a hot helper is shed within seconds.
pub const WINDOW: Duration = Duration::from_secs(2);

/// A function shed from a process, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Shed {
    pub pid: u32,
    pub func: u32,
    pub calls_per_s: f64,
    /// The share of one CPU its probes were estimated to cost the process.
    pub cpu_share: f64,
}

/// The verdict on one process over budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Overrun {
    pub pid: u32,
    /// The estimated overhead before shedding, as a share of one CPU.
    pub estimate: f64,
    /// The functions to shed, hottest first.
    pub shed: Vec<Shed>,
}

#[derive(Debug)]
pub struct Budget {
    /// The share of one CPU each process may spend in goprobe's probes (0.01: 1 %).
    pub limit: f64,
    since: Instant,
    calls: HashMap<(u32, u32), u64>,
    /// Functions already shed, per process: not shed twice.
    shed: HashMap<u32, BTreeSet<u32>>,
}

impl Budget {
    pub fn new(limit: f64) -> Self {
        Self {
            limit,
            since: Instant::now(),
            calls: HashMap::new(),
            shed: HashMap::new(),
        }
    }

    /// `calls` calls of function `func` completed in process `pid`.
    pub fn count(&mut self, pid: u32, func: u32, calls: u64) {
        *self.calls.entry((pid, func)).or_default() += calls;
    }

    /// Forget a process that is gone (its PID may come back as another process).
    pub fn forget(&mut self, pid: u32) {
        self.shed.remove(&pid);
        self.calls.retain(|&(p, _), _| p != pid);
    }

    /// Once per [`WINDOW`] (None before): the processes whose estimated overhead is over the
    /// budget, each with the functions to shed, hottest first, until it is within. `cost_ns`:
    /// what one call of a function costs.
    pub fn check(&mut self, now: Instant, cost_ns: impl Fn(u32) -> u64) -> Option<Vec<Overrun>> {
        let elapsed = now.duration_since(self.since);
        if elapsed < WINDOW {
            return None;
        }
        self.since = now;
        let window_ns = elapsed.as_nanos() as f64;
        let mut by_process: HashMap<u32, Vec<(u32, u64, f64)>> = HashMap::new();
        for ((pid, func), calls) in self.calls.drain() {
            let share = calls as f64 * cost_ns(func) as f64 / window_ns;
            by_process
                .entry(pid)
                .or_default()
                .push((func, calls, share));
        }
        let mut overruns = Vec::new();
        for (pid, mut functions) in by_process {
            let estimate: f64 = functions.iter().map(|f| f.2).sum();
            if estimate <= self.limit {
                continue;
            }
            functions.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
            let shed = self.shed.entry(pid).or_default();
            let mut left = estimate;
            let mut verdict = Vec::new();
            for (func, calls, share) in functions {
                if left <= self.limit {
                    break;
                }
                if shed.insert(func) {
                    verdict.push(Shed {
                        pid,
                        func,
                        calls_per_s: calls as f64 * 1e9 / window_ns,
                        cpu_share: share,
                    });
                }
                left -= share;
            }
            if !verdict.is_empty() {
                overruns.push(Overrun {
                    pid,
                    estimate,
                    shed: verdict,
                });
            }
        }
        overruns.sort_by_key(|o| o.pid);
        Some(overruns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sheds_the_hottest_until_within_budget() {
        let mut budget = Budget::new(0.01);
        let start = budget.since;
        // Over 2 s: a helper at 50k calls/s (10 µs each: 50 % of a CPU), a handler at 500/s
        // (0.5 %), another helper at 2k/s (2 %).
        budget.count(7, 1, 100_000);
        budget.count(7, 2, 1_000);
        budget.count(7, 3, 4_000);
        budget.count(8, 2, 1_000);
        assert_eq!(
            budget.check(start + Duration::from_secs(1), |_| 10_000),
            None
        );
        let overruns = budget
            .check(start + Duration::from_secs(2), |_| 10_000)
            .unwrap();
        assert_eq!(overruns.len(), 1, "{overruns:?}");
        let o = &overruns[0];
        assert_eq!(o.pid, 7);
        assert!((o.estimate - 0.525).abs() < 1e-9, "{}", o.estimate);
        let shed: Vec<u32> = o.shed.iter().map(|s| s.func).collect();
        assert_eq!(shed, vec![1, 3], "the handler stays");
        assert!((o.shed[0].calls_per_s - 50_000.0).abs() < 1e-6);
        // Shed once: the next window without calls of them sheds nothing more.
        budget.count(7, 2, 1_000);
        let later = start + Duration::from_secs(4);
        assert_eq!(budget.check(later, |_| 10_000), Some(Vec::new()));
    }
}

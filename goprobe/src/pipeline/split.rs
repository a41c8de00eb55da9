//! `funclatency --split`: per (function, process), each state's total time and its time per
//! call (p50, p99), from the split events (goprobe-ebpf/src/split.rs).
use goprobe_common::split::{NAMES, STATES};
use hdrhistogram::Histogram;

/// Time per call of one state: its calls with a non-zero time in an HDR histogram (2
/// significant digits: 1 % on a percentile), the others counted apart.
#[derive(Debug, Clone, Default)]
pub struct StateTimes {
    pub total_ns: u64,
    nonzero: Option<Histogram<u64>>,
}

const HDR_MAX_NS: u64 = 3_600_000_000_000;

/// The split of one row: time per state.
#[derive(Debug, Clone, Default)]
pub struct Split {
    pub calls: u64,
    pub states: Vec<StateTimes>,
}

impl Split {
    pub fn record(&mut self, ns: &[u64; STATES]) {
        if self.states.is_empty() {
            self.states = vec![StateTimes::default(); STATES];
        }
        self.calls += 1;
        for (state, &value) in self.states.iter_mut().zip(ns) {
            if value == 0 {
                continue;
            }
            state.total_ns = state.total_ns.saturating_add(value);
            state
                .nonzero
                .get_or_insert_with(|| {
                    Histogram::new_with_bounds(1, HDR_MAX_NS, 2).expect("constant bounds are valid")
                })
                .saturating_record(value.clamp(1, HDR_MAX_NS));
        }
    }

    pub fn merge(&mut self, other: &Split) {
        if self.states.is_empty() {
            self.states = vec![StateTimes::default(); STATES];
        }
        self.calls += other.calls;
        for (a, b) in self.states.iter_mut().zip(&other.states) {
            a.total_ns = a.total_ns.saturating_add(b.total_ns);
            if let Some(theirs) = &b.nonzero {
                match &mut a.nonzero {
                    Some(ours) => {
                        let _ = ours.add(theirs);
                    }
                    None => a.nonzero = Some(theirs.clone()),
                }
            }
        }
    }

    /// Sum over states: the calls' total latency as split.
    pub fn total_ns(&self) -> u64 {
        self.states.iter().map(|s| s.total_ns).sum()
    }

    /// Each state with its total, share of the whole, p50 and p99 per call (over every call,
    /// those with none of it included).
    pub fn rows(&self) -> Vec<StateRow> {
        let total = self.total_ns();
        self.states
            .iter()
            .enumerate()
            .map(|(i, s)| StateRow {
                state: NAMES[i],
                total_ns: s.total_ns,
                share: if total == 0 {
                    0.0
                } else {
                    s.total_ns as f64 / total as f64
                },
                p50_ns: self.quantile(s, 0.50),
                p99_ns: self.quantile(s, 0.99),
            })
            .collect()
    }

    fn quantile(&self, state: &StateTimes, q: f64) -> u64 {
        let Some(hdr) = &state.nonzero else {
            return 0;
        };
        let zeros = self.calls.saturating_sub(hdr.len());
        // The value of rank ceil(q * calls), zeros ranking first.
        let rank = ((q * self.calls as f64).ceil() as u64).max(1);
        if rank <= zeros {
            return 0;
        }
        let within = (rank - zeros) as f64 / hdr.len() as f64;
        hdr.highest_equivalent(hdr.value_at_quantile(within.min(1.0)))
            .min(hdr.max())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StateRow {
    pub state: &'static str,
    pub total_ns: u64,
    pub share: f64,
    pub p50_ns: u64,
    pub p99_ns: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_quantiles_per_call() {
        let mut split = Split::default();
        for i in 0..100u64 {
            let mut ns = [0u64; STATES];
            ns[0] = 2_000_000;
            // Half the calls wait 3 ms on a channel, the others not at all.
            if i % 2 == 0 {
                ns[6] = 3_000_000;
            }
            split.record(&ns);
        }
        let rows = split.rows();
        assert_eq!(rows[0].state, "running");
        assert_eq!(rows[0].total_ns, 200_000_000);
        assert!((rows[0].share - 200.0 / 350.0).abs() < 1e-9);
        assert!((rows[0].p50_ns as f64 / 2e6 - 1.0).abs() < 0.01);
        assert_eq!(rows[6].p50_ns, 0);
        assert!((rows[6].p99_ns as f64 / 3e6 - 1.0).abs() < 0.01);
        let mut merged = Split::default();
        merged.merge(&split);
        merged.merge(&split);
        assert_eq!(merged.calls, 200);
        assert_eq!(merged.total_ns(), 700_000_000);
    }
}

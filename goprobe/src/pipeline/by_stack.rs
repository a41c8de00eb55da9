//! Latency per calling stack (`funclatency --stacks`): the events that carry a stack are
//! aggregated per (function, process) and raw stack, before any symbolization.
use std::collections::{BTreeMap, HashMap};

use goprobe_common::{LeafContext, StackLatencyEvent};
use hdrhistogram::Histogram;

/// Latencies of the calls that returned to one stack: a small HDR histogram (2 significant
/// digits, ~1 % error, a few KiB) since there may be many stacks, and the exact maximum.
#[derive(Debug, Clone)]
pub struct StackLatencies {
    hdr: Histogram<u64>,
    pub count: u64,
    pub max_ns: u64,
}

const HDR_MAX_NS: u64 = 3_600_000_000_000;

impl Default for StackLatencies {
    fn default() -> Self {
        Self {
            hdr: Histogram::new_with_bounds(1, HDR_MAX_NS, 2).expect("constant bounds are valid"),
            count: 0,
            max_ns: 0,
        }
    }
}

impl StackLatencies {
    pub fn record(&mut self, ns: u64) {
        self.hdr.saturating_record(ns.clamp(1, HDR_MAX_NS));
        self.count += 1;
        self.max_ns = self.max_ns.max(ns);
    }

    pub fn merge(&mut self, other: &StackLatencies) {
        let _ = self.hdr.add(&other.hdr);
        self.count += other.count;
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    pub fn quantile_ns(&self, q: f64) -> u64 {
        if self.count == 0 {
            0
        } else {
            self.hdr.value_at_quantile(q).min(self.max_ns)
        }
    }
}

/// A raw stack as the kernel reported it: its hash in `STACKS` and the leaf context.
pub type RawStack = (u64, LeafContext);

/// Latencies per (function, pid) and raw stack, for `funclatency --stacks`.
#[derive(Debug, Default)]
pub struct LatencyByStack {
    pub by_call: BTreeMap<(u32, u32), HashMap<RawStack, StackLatencies>>,
    /// Calls slow enough to want a stack whose stack could not be walked or stored.
    pub missing: u64,
}

impl LatencyByStack {
    pub fn record(&mut self, event: &StackLatencyEvent) {
        if event.stack == 0 {
            self.missing += 1;
            return;
        }
        self.by_call
            .entry((event.call.func, event.call.tgid))
            .or_default()
            .entry((event.stack, event.leaf))
            .or_default()
            .record(event.call.latency_ns);
    }

    pub fn take(&mut self) -> LatencyByStack {
        std::mem::take(self)
    }
}

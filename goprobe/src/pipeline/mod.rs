//! From ring-buffer events to histograms: one HDR histogram (for percentiles) and one exact log2
//! histogram (for bcc's table) per (function, process). The same aggregation serves every output.

pub mod archive;
pub mod by_arg;
pub mod by_stack;
pub mod history;
pub mod series;
pub mod split;
pub use goprobe_input::times;
use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use aya::maps::{MapData, RingBuf};
use goprobe_common::{ArgEvent, LatencyEvent, SplitEvent, StackLatencyEvent};
use hdrhistogram::Histogram;

/// How often the latency ring buffer is drained, by `funclatency` and the agent alike. The kernel
/// side submits without wakeups, so this timer is the only reader. The 4 MiB buffer holds about
/// 100k events, which a Go program on 2 CPUs fills in about 70 ms at its fastest (BENCHMARKS.md,
/// throughput): at 100 ms the agent lost a quarter of them; 20 ms leaves room to spare.
pub const DRAIN_EVERY: Duration = Duration::from_millis(20);

/// What the user side knows about a traced function, by the id carried in probe cookies.
#[derive(Debug, Clone, Default)]
pub struct FunctionInfo {
    pub name: String,
    pub binary: PathBuf,
    /// The function has its own machine code, probed at its entry and RETs.
    pub out_of_line: bool,
    /// Inlined copies of it that are probed.
    pub inlined_copies: usize,
    /// What one call costs the program in probe hits, estimated from its sites (the dearer of
    /// its out-of-line sites and its inlined copies'; see `plan::site_cost_ns`).
    pub call_cost_ns: u64,
    /// `--by`: the names of the values its calls are labelled by, and how each is read
    /// (`goprobe_common::args::KIND_*`). Its calls are counted under the ids of [`Self::base`].
    pub by: Vec<(String, u32)>,
    /// The function's calls with these values (`--by`): (name, value) pairs.
    pub labels: Vec<(String, String)>,
    /// `--by` values are SQL, shown with `?` for literals (the `sql` pack).
    pub normalize_sql: bool,
    /// Values shown otherwise: (label, value, shown as), from a pack (an HTTP status of 0,
    /// which the server sends as 200).
    pub value_map: goprobe_input::packs::ValueMap,
    /// How many of `by`'s values are labels (the rest is read for `--where` only).
    pub labelled: usize,
    /// `--where`: the index of its value in `by`, and the condition.
    pub filter: Option<(usize, goprobe_input::args::Where)>,
    /// The function whose calls with `labels` this id counts (the id its probes carry).
    pub base: Option<u32>,
}

impl FunctionInfo {
    /// The name, with the values its calls had, if any: `main.get{key="a"}`.
    pub fn display_name(&self) -> String {
        if self.labels.is_empty() {
            return self.name.clone();
        }
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={:?}", v))
            .collect();
        format!("{}{{{}}}", self.name, labels.join(","))
    }
}

/// Function ids are indices into this table. Ids are per (binary, function), so the same name in
/// two different binaries gets two ids.
#[derive(Debug, Default)]
pub struct FunctionTable {
    functions: Vec<FunctionInfo>,
}

impl FunctionTable {
    pub fn add(&mut self, info: FunctionInfo) -> u32 {
        let id = self.functions.len() as u32;
        crate::kernel::log::name_function(id, &info.name);
        self.functions.push(info);
        id
    }

    pub fn get(&self, id: u32) -> Option<&FunctionInfo> {
        self.functions.get(id as usize)
    }

    /// The id the probes of `id`'s calls carry: `id` itself, unless it counts the calls of a
    /// function with some argument values (`--by`).
    pub fn base_of(&self, id: u32) -> u32 {
        self.get(id).and_then(|f| f.base).unwrap_or(id)
    }

    /// # Panics
    /// If `id` was not returned by [`FunctionTable::add`].
    pub fn get_mut(&mut self, id: u32) -> &mut FunctionInfo {
        &mut self.functions[id as usize]
    }
}

/// Latencies of one (function, process) in one interval.
#[derive(Debug, Clone)]
pub struct Latencies {
    /// 3 significant digits from 1 ns to 1 hour: ~0.1 % error on any percentile, a few tens of
    /// KiB per histogram (they are created only for functions that were called).
    hdr: Histogram<u64>,
    /// Calls per power of two of nanoseconds: `log2[i]` counts latencies in [2^i, 2^(i+1)),
    /// with 0 and 1 ns both in bucket 0 (bcc's layout). Exact, unlike HDR bucket boundaries.
    pub log2_ns: [u64; 64],
    pub count: u64,
    pub sum_ns: u64,
    pub min_ns: u64,
    pub max_ns: u64,
}

const HDR_MAX_NS: u64 = 3_600_000_000_000;

impl Default for Latencies {
    fn default() -> Self {
        Self {
            hdr: Histogram::new_with_bounds(1, HDR_MAX_NS, 3).expect("constant bounds are valid"),
            log2_ns: [0; 64],
            count: 0,
            sum_ns: 0,
            min_ns: u64::MAX,
            max_ns: 0,
        }
    }
}

impl Latencies {
    pub fn record(&mut self, ns: u64) {
        self.hdr.saturating_record(ns.clamp(1, HDR_MAX_NS));
        self.log2_ns[log2_bucket(ns)] += 1;
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    pub fn merge(&mut self, other: &Latencies) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.hdr.add(&other.hdr);
        for (a, b) in self.log2_ns.iter_mut().zip(other.log2_ns) {
            *a += b;
        }
        self.count += other.count;
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    /// Latency at quantile `q` (0..=1) in ns; the exact maximum for q = 1.
    pub fn quantile_ns(&self, q: f64) -> u64 {
        if self.count == 0 {
            0
        } else if q >= 1.0 {
            self.max_ns
        } else {
            self.hdr
                .value_at_quantile(q)
                .min(self.max_ns)
                .max(self.min_ns)
        }
    }

    pub fn avg_ns(&self) -> u64 {
        self.sum_ns.checked_div(self.count).unwrap_or(0)
    }

    /// The log2 histogram re-bucketed in `unit` (values divided by the unit before the log2,
    /// as bcc does with -u/-m).
    pub fn log2_in(&self, unit: Unit) -> [u64; 64] {
        if unit == Unit::Nanoseconds {
            return self.log2_ns;
        }
        // A bucket [2^i, 2^(i+1)) ns divided by the unit can straddle two unit buckets; the
        // HDR histogram has the resolution to split it, so re-bucket from it.
        let mut out = [0u64; 64];
        for value in self.hdr.iter_recorded() {
            let scaled = self.hdr.lowest_equivalent(value.value_iterated_to()) / unit.divisor();
            out[log2_bucket(scaled)] += value.count_at_value();
        }
        out
    }
}

/// Compact binary form of [`Latencies`], for the agent's archive: LEB128 varints of count, sum,
/// min, max, the non-empty log2 buckets, and the HDR histogram as (value delta, count) pairs.
/// A 1000-call interval takes ~100 bytes.
impl Latencies {
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, 1); // format version
        for v in [self.count, self.sum_ns, self.min_ns, self.max_ns] {
            put_varint(out, v);
        }
        let log2: Vec<(usize, u64)> = self
            .log2_ns
            .iter()
            .copied()
            .enumerate()
            .filter(|&(_, c)| c > 0)
            .collect();
        put_varint(out, log2.len() as u64);
        for (i, c) in log2 {
            put_varint(out, i as u64);
            put_varint(out, c);
        }
        let values: Vec<(u64, u64)> = self.values().collect();
        put_varint(out, values.len() as u64);
        let mut previous = 0;
        for (value, count) in values {
            put_varint(out, value - previous);
            put_varint(out, count);
            previous = value;
        }
    }

    pub fn decode(mut bytes: &[u8]) -> Option<Self> {
        let b = &mut bytes;
        if get_varint(b)? != 1 {
            return None;
        }
        let mut l = Latencies {
            count: get_varint(b)?,
            sum_ns: get_varint(b)?,
            min_ns: get_varint(b)?,
            max_ns: get_varint(b)?,
            ..Latencies::default()
        };
        for _ in 0..get_varint(b)? {
            let i = usize::try_from(get_varint(b)?).ok().filter(|&i| i < 64)?;
            l.log2_ns[i] = get_varint(b)?;
        }
        let mut value = 0u64;
        for _ in 0..get_varint(b)? {
            value = value.checked_add(get_varint(b)?)?;
            let count = get_varint(b)?;
            l.hdr.record_n(value.clamp(1, HDR_MAX_NS), count).ok()?;
        }
        Some(l)
    }

    /// The recorded latencies as (ns, calls), in increasing order, at HDR resolution
    /// (each value stands for its ~0.1 %-wide bucket).
    pub fn values(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.hdr.iter_recorded().map(|v| {
            (
                self.hdr.highest_equivalent(v.value_iterated_to()),
                v.count_at_value(),
            )
        })
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// bcc's bucket index: floor(log2(v)), with 0 in bucket 0.
pub fn log2_bucket(v: u64) -> usize {
    if v == 0 {
        0
    } else {
        63 - v.leading_zeros() as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Nanoseconds,
    Microseconds,
    Milliseconds,
}

impl Unit {
    pub fn divisor(self) -> u64 {
        match self {
            Unit::Nanoseconds => 1,
            Unit::Microseconds => 1_000,
            Unit::Milliseconds => 1_000_000,
        }
    }

    /// bcc's label.
    pub fn label(self) -> &'static str {
        match self {
            Unit::Nanoseconds => "nsecs",
            Unit::Microseconds => "usecs",
            Unit::Milliseconds => "msecs",
        }
    }
}

/// Histograms keyed by (function id, pid), for the current interval.
#[derive(Debug, Default)]
pub struct Aggregator {
    pub histograms: BTreeMap<(u32, u32), Latencies>,
    pub events: u64,
    /// Latencies per calling stack (`funclatency --stacks`).
    pub stacks: crate::pipeline::by_stack::LatencyByStack,
    /// Each call's time split by state (`funclatency --split`), per (function id, pid).
    pub split: BTreeMap<(u32, u32), split::Split>,
    /// Calls labelled by their arguments (`funclatency --by`, packs).
    pub by_arg: by_arg::ByArg,
}

impl Aggregator {
    pub fn record(&mut self, event: &LatencyEvent) {
        self.histograms
            .entry((event.func, event.tgid))
            .or_default()
            .record(event.latency_ns);
        self.events += 1;
    }

    /// Take this interval's histograms and start a new interval.
    pub fn take(&mut self) -> BTreeMap<(u32, u32), Latencies> {
        self.events = 0;
        std::mem::take(&mut self.histograms)
    }

    /// Read everything the kernel has submitted so far. Called on a timer: the kernel side
    /// submits without waking us, so the traced threads never pay for a wakeup.
    pub fn drain(&mut self, ring: &mut RingBuf<MapData>, functions: &mut FunctionTable) -> usize {
        // Events are told apart by size: an ArgEvent's must be its own.
        const _: () = assert!(
            size_of::<ArgEvent>() != size_of::<SplitEvent>()
                && size_of::<ArgEvent>() != size_of::<StackLatencyEvent>()
                && size_of::<ArgEvent>() != size_of::<LatencyEvent>()
        );
        let mut drained = 0;
        while let Some(item) = ring.next() {
            if item.len() == size_of::<ArgEvent>() {
                // SAFETY: as below; the size and the magic word tell an ArgEvent.
                let event = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<ArgEvent>()) };
                if (event.magic == ArgEvent::MAGIC || event.magic == ArgEvent::MAGIC_RETURN)
                    && let Some(info) = functions.get(event.func)
                {
                    self.by_arg.values(&event, info);
                }
            } else if item.len() == size_of::<SplitEvent>() {
                // SAFETY: as below; `funclatency --split` events extend a LatencyEvent.
                let event = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<SplitEvent>()) };
                self.record(&event.call);
                self.split
                    .entry((event.call.func, event.call.tgid))
                    .or_default()
                    .record(&event.ns);
                drained += 1;
            } else if item.len() >= size_of::<StackLatencyEvent>() {
                // SAFETY: as below; `funclatency --stacks` events extend a LatencyEvent.
                let event =
                    unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<StackLatencyEvent>()) };
                self.record(&event.call);
                self.stacks.record(&event);
                drained += 1;
            } else if item.len() >= size_of::<LatencyEvent>() {
                // SAFETY: the kernel side writes exactly a LatencyEvent; read_unaligned copes with
                // the ring buffer's 8-byte record alignment.
                let mut event =
                    unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<LatencyEvent>()) };
                if functions.get(event.func).is_some_and(|f| !f.by.is_empty()) {
                    match self.by_arg.id_of(&event, functions) {
                        Some(id) => event.func = id,
                        // `--where` left it out (counted).
                        None => continue,
                    }
                }
                self.record(&event);
                drained += 1;
            }
        }
        drained
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_match_bcc() {
        assert_eq!(log2_bucket(0), 0);
        assert_eq!(log2_bucket(1), 0);
        assert_eq!(log2_bucket(2), 1);
        assert_eq!(log2_bucket(3), 1);
        assert_eq!(log2_bucket(4), 2);
        assert_eq!(log2_bucket(5_000_000), 22);
        assert_eq!(log2_bucket(u64::MAX), 63);
    }

    #[test]
    fn aggregates_per_function_and_pid() {
        let mut agg = Aggregator::default();
        for latency_ns in [1_000, 2_000, 3_000, 1_000_000] {
            agg.record(&LatencyEvent {
                tgid: 7,
                func: 1,
                latency_ns,
                ..Default::default()
            });
        }
        agg.record(&LatencyEvent {
            tgid: 8,
            func: 1,
            latency_ns: 5,
            ..Default::default()
        });
        let h = agg.take();
        assert_eq!(h.len(), 2);
        let l = &h[&(1, 7)];
        assert_eq!(l.count, 4);
        assert_eq!(l.sum_ns, 1_006_000);
        assert_eq!(l.min_ns, 1_000);
        assert_eq!(l.max_ns, 1_000_000);
        assert_eq!(l.quantile_ns(1.0), 1_000_000);
        let p50 = l.quantile_ns(0.5);
        assert!((1_998..=2_002).contains(&p50), "{p50}");
        assert!(agg.take().is_empty());
    }

    #[test]
    fn encodes_and_decodes() {
        let mut l = Latencies::default();
        for ns in [1, 900, 1_000_000, 5_000_000, 5_000_100] {
            l.record(ns);
        }
        let mut bytes = Vec::new();
        l.encode(&mut bytes);
        let back = Latencies::decode(&bytes).unwrap();
        assert_eq!(back.count, 5);
        assert_eq!(back.log2_ns, l.log2_ns);
        assert_eq!(
            (back.min_ns, back.max_ns, back.sum_ns),
            (1, 5_000_100, l.sum_ns)
        );
        assert_eq!(back.quantile_ns(0.5), l.quantile_ns(0.5));
        assert_eq!(back.values().map(|v| v.1).sum::<u64>(), 5);
        assert!(Latencies::decode(&bytes[..bytes.len() - 1]).is_none());
    }

    #[test]
    fn rebuckets_in_units() {
        let mut l = Latencies::default();
        l.record(5_000_000); // 5 ms = 5000 us
        let us = l.log2_in(Unit::Microseconds);
        assert_eq!(us[log2_bucket(5_000)], 1);
        let ms = l.log2_in(Unit::Milliseconds);
        assert_eq!(ms[log2_bucket(5)], 1);
    }
}

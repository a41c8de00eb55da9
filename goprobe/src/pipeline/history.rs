//! Questions over the archive's intervals: the histograms of any time range, merged per function,
//! and how they moved between two ranges (`goprobe query`, `goprobe diff`, and the agent's
//! `/api/v1/query`, `/api/v1/diff` and `/api/v1/profile`, which answer the same way).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Latencies, archive::Record};
use crate::plan::Pattern;

// The times users write, and the ranges they make.
pub use super::times::{Range, check_range, format_ms, now_ms, parse_range, parse_time};

/// Histograms merged per (function, service) over a range.
pub type Merged = BTreeMap<(String, String), Latencies>;

pub fn merge(records: &[Record], function: Option<&Pattern>) -> Merged {
    let mut merged = Merged::new();
    for r in records {
        if function.is_some_and(|p| !p.matches(&r.series.function)) {
            continue;
        }
        merged
            .entry((r.series.display_function(), r.series.service.clone()))
            .or_default()
            .merge(&r.latencies);
    }
    merged
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Bucket {
    pub low_ns: u64,
    pub high_ns: u64,
    pub count: u64,
}

/// One function's histogram over a range: the `query` JSON.
#[derive(Debug, Serialize, Deserialize)]
pub struct Summary {
    pub function: String,
    pub service: String,
    pub count: u64,
    pub sum_ns: u64,
    pub min_ns: u64,
    pub max_ns: u64,
    pub avg_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    /// The log2 histogram in ns, non-empty buckets only.
    pub buckets: Vec<Bucket>,
}

impl Summary {
    pub fn of(function: &str, service: &str, l: &Latencies) -> Self {
        Self {
            function: function.into(),
            service: service.into(),
            count: l.count,
            sum_ns: l.sum_ns,
            min_ns: if l.count == 0 { 0 } else { l.min_ns },
            max_ns: l.max_ns,
            avg_ns: l.avg_ns(),
            p50_ns: l.quantile_ns(0.5),
            p90_ns: l.quantile_ns(0.9),
            p99_ns: l.quantile_ns(0.99),
            p999_ns: l.quantile_ns(0.999),
            buckets: l
                .log2_ns
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(i, &count)| Bucket {
                    low_ns: if i == 0 { 0 } else { 1 << i },
                    high_ns: if i == 63 {
                        u64::MAX
                    } else {
                        (1 << (i + 1)) - 1
                    },
                    count,
                })
                .collect(),
        }
    }

    /// The log2 table back, for text output.
    pub fn log2(&self) -> [u64; 64] {
        let mut out = [0; 64];
        for b in &self.buckets {
            out[crate::pipeline::log2_bucket(b.low_ns.max(1))] = b.count;
        }
        out
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct QueryAnswer {
    pub from: String,
    pub to: String,
    pub from_ms: u64,
    pub to_ms: u64,
    pub histograms: Vec<Summary>,
}

pub fn answer_query(records: &[Record], range: Range, function: Option<&Pattern>) -> QueryAnswer {
    QueryAnswer {
        from: format_ms(range.from_ms),
        to: format_ms(range.to_ms),
        from_ms: range.from_ms,
        to_ms: range.to_ms,
        histograms: merge(records, function)
            .iter()
            .map(|((f, s), l)| Summary::of(f, s, l))
            .collect(),
    }
}

/// One side of a diff row.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Side {
    pub count: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DiffRow {
    pub function: String,
    pub service: String,
    /// None: the function had no calls in that range.
    pub base: Option<Side>,
    pub compare: Option<Side>,
    /// `histogram.split`: the calls' time per state over the range, in ns (states with time
    /// only), when every record of the range had it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_states: Option<BTreeMap<String, u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare_states: Option<BTreeMap<String, u64>>,
}

/// The calls' time per state over the records, per (function, service): only where every
/// record of the series has its split (an interval without it would make the shares lie).
fn merge_states(
    records: &[Record],
    function: Option<&Pattern>,
) -> BTreeMap<(String, String), BTreeMap<String, u64>> {
    let mut out: BTreeMap<(String, String), Option<BTreeMap<String, u64>>> = BTreeMap::new();
    for r in records {
        if function.is_some_and(|p| !p.matches(&r.series.function)) {
            continue;
        }
        let slot = out
            .entry((r.series.display_function(), r.series.service.clone()))
            .or_insert_with(|| Some(BTreeMap::new()));
        match (&r.split, slot.as_mut()) {
            (Some(split), Some(states)) => {
                for (name, ns) in goprobe_common::split::NAMES.iter().zip(split) {
                    if *ns > 0 {
                        *states.entry(name.to_string()).or_default() += ns;
                    }
                }
            }
            _ => *slot = None,
        }
    }
    out.into_iter().filter_map(|(k, v)| Some((k, v?))).collect()
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DiffAnswer {
    pub base: Range,
    pub compare: Range,
    pub functions: Vec<DiffRow>,
}

pub fn answer_diff(
    base_records: &[Record],
    compare_records: &[Record],
    base: Range,
    compare: Range,
    function: Option<&Pattern>,
) -> DiffAnswer {
    let side = |l: &Latencies| Side {
        count: l.count,
        p50_ns: l.quantile_ns(0.5),
        p99_ns: l.quantile_ns(0.99),
        max_ns: l.max_ns,
    };
    let a = merge(base_records, function);
    let b = merge(compare_records, function);
    let (mut a_states, mut b_states) = (
        merge_states(base_records, function),
        merge_states(compare_records, function),
    );
    let mut keys: Vec<&(String, String)> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    DiffAnswer {
        base,
        compare,
        functions: keys
            .into_iter()
            .map(|k| DiffRow {
                function: k.0.clone(),
                service: k.1.clone(),
                base: a.get(k).map(side),
                compare: b.get(k).map(side),
                base_states: a_states.remove(k),
                compare_states: b_states.remove(k),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The widest range there is formats and answers without panicking.
    #[test]
    fn the_widest_range_answers() {
        let r = parse_range("@0..@253402300799.999", 0).unwrap();
        let answer = answer_query(&[], r, None);
        assert_eq!(answer.to, "9999-12-31T23:59:59.999Z");
    }
}

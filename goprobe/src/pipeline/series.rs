//! Series: what the agent's histograms are keyed by once PIDs are resolved to labels.
//! PIDs stay out of the key unless `histogram.pid_label` is set, so the number of series is
//! bounded by functions × services × containers rather than by process churn; and series that
//! saw no call for `histogram.idle_series_ttl` are dropped, so containers that come and go
//! (every pod restart brings a new container ID) do not pile up series either.
use std::collections::BTreeMap;

use serde::Serialize;

use super::Latencies;

/// Labels of one series. Empty strings are labels that are not known (host processes have no
/// container or pod).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct SeriesKey {
    pub function: String,
    pub service: String,
    /// Short container ID (12 hex digits).
    pub container: String,
    /// Pod name when known, else the pod UID.
    pub pod: String,
    pub namespace: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// `by` and packs: the argument values of the calls (name, value), one label each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by: Vec<(String, String)>,
}

/// Label names goprobe sets itself (or Prometheus does, `le`, or OTLP resources, `host`).
const RESERVED: &[&str] = &[
    "function",
    "service",
    "container",
    "pod",
    "namespace",
    "pid",
    "le",
    "state",
    "host",
    "job",
    "instance",
];

impl SeriesKey {
    /// The function, with the argument values of its calls if any (`main.get{key="a"}`), as
    /// `funclatency --by` names its rows: queries and diffs keep one row per value.
    pub fn display_function(&self) -> String {
        if self.by.is_empty() {
            return self.function.clone();
        }
        let values: Vec<String> = self.by.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        format!("{}{{{}}}", self.function, values.join(","))
    }

    /// `(name, value)` pairs of the labels that are known, in a fixed order; argument values
    /// last, named as `by` or the pack names them (`arg_` before a name that is taken or not
    /// a Prometheus label name).
    pub fn labels(&self) -> Vec<(String, String)> {
        let mut labels = vec![
            ("function".to_string(), self.function.clone()),
            ("service".to_string(), self.service.clone()),
        ];
        for (name, value) in [
            ("container", &self.container),
            ("pod", &self.pod),
            ("namespace", &self.namespace),
        ] {
            if !value.is_empty() {
                labels.push((name.into(), value.clone()));
            }
        }
        if let Some(pid) = self.pid {
            labels.push(("pid".into(), pid.to_string()));
        }
        for (name, value) in &self.by {
            let mut name: String = name
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            if RESERVED.contains(&name.as_str())
                || name.starts_with("__")
                || !name.starts_with(|c: char| c.is_ascii_alphabetic())
            {
                name = format!("arg_{name}");
            }
            labels.push((name, value.clone()));
        }
        labels
    }
}

/// A cumulative Prometheus histogram: calls per bucket (not cumulative), their sum and count.
#[derive(Debug, Clone)]
pub struct PromHistogram {
    /// One per bound, plus the +Inf bucket.
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum_ns: u128,
    /// When a call was last added.
    pub updated: std::time::Instant,
}

impl PromHistogram {
    pub fn new(bounds: usize) -> Self {
        Self {
            buckets: vec![0; bounds + 1],
            count: 0,
            sum_ns: 0,
            updated: std::time::Instant::now(),
        }
    }

    /// Add an interval's latencies. Each call goes to the first bucket whose bound is at or
    /// above its latency (at HDR resolution, ~0.1 %).
    pub fn add(&mut self, latencies: &Latencies, bounds_ns: &[u64]) {
        for (ns, calls) in latencies.values() {
            let i = bounds_ns.partition_point(|&b| b < ns);
            self.buckets[i] += calls;
        }
        self.count += latencies.count;
        self.sum_ns += u128::from(latencies.sum_ns);
        self.updated = std::time::Instant::now();
    }
}

/// Cumulative histograms per series since the agent started, for /metrics and OTLP.
#[derive(Debug, Clone)]
pub struct Cumulative {
    pub bounds_s: Vec<f64>,
    pub bounds_ns: Vec<u64>,
    pub series: BTreeMap<SeriesKey, PromHistogram>,
    /// The exact histograms too (HDR), for OTLP's exponential histograms.
    pub exact: BTreeMap<SeriesKey, Latencies>,
    /// Keep `exact` (only when OTLP exponential histograms are pushed).
    pub keep_exact: bool,
    /// `histogram.split`: the calls' time per state (`goprobe_common::split::NAMES`), in ns.
    pub split: BTreeMap<SeriesKey, Vec<u64>>,
}

impl Cumulative {
    pub fn new(bounds_s: &[f64], keep_exact: bool) -> Self {
        Self {
            bounds_s: bounds_s.to_vec(),
            bounds_ns: bounds_s.iter().map(|s| (s * 1e9).round() as u64).collect(),
            series: BTreeMap::new(),
            exact: BTreeMap::new(),
            keep_exact,
            split: BTreeMap::new(),
        }
    }

    /// Add calls' time per state to a series.
    pub fn add_split(&mut self, key: &SeriesKey, split: &crate::pipeline::split::Split) {
        let totals = self
            .split
            .entry(key.clone())
            .or_insert_with(|| vec![0; goprobe_common::split::STATES]);
        for (total, state) in totals.iter_mut().zip(&split.states) {
            *total = total.saturating_add(state.total_ns);
        }
    }

    pub fn add(&mut self, key: &SeriesKey, latencies: &Latencies) {
        let bounds = self.bounds_ns.len();
        self.series
            .entry(key.clone())
            .or_insert_with(|| PromHistogram::new(bounds))
            .add(latencies, &self.bounds_ns);
        if self.keep_exact {
            self.exact.entry(key.clone()).or_default().merge(latencies);
        }
    }

    /// Drop the series that saw no call for `ttl`; returns how many. A series that comes back
    /// starts from zero, which Prometheus' `rate()` reads as a counter reset.
    pub fn expire(&mut self, ttl: std::time::Duration) -> usize {
        let before = self.series.len();
        let idle: Vec<SeriesKey> = self
            .series
            .iter()
            .filter(|(_, h)| h.updated.elapsed() > ttl)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &idle {
            self.series.remove(key);
            self.exact.remove(key);
            self.split.remove(key);
        }
        before - self.series.len()
    }

    /// New bucket bounds (a config reload): series keep their count and sum, and their
    /// buckets are rebuilt only where the bounds are unchanged.
    pub fn rebucket(&mut self, bounds_s: &[f64]) {
        if bounds_s == self.bounds_s.as_slice() {
            return;
        }
        // Histograms with other bounds would break rate() over the change; start their bucket
        // counts afresh as a counter reset (Prometheus handles resets).
        let split = std::mem::take(&mut self.split);
        *self = Self::new(bounds_s, self.keep_exact);
        self.split = split;
    }
}

//! OTLP export: the same cumulative histograms as `/metrics`, pushed as OTLP metrics over
//! HTTP (protobuf, `POST /v1/metrics`) to an OpenTelemetry Collector, every `otlp.interval`.
//!
//! The messages are the OpenTelemetry crates' own (`opentelemetry-proto`). The agent builds the
//! data points itself rather than going through the SDK's instruments: it already holds the
//! histograms aggregated, and an SDK histogram could only be fed one call at a time.
//!
//! - `histogram = "explicit"`: an OTLP Histogram with the Prometheus bucket bounds (seconds);
//! - `histogram = "exponential"`: an OTLP ExponentialHistogram built from the exact (HDR)
//!   histograms, at the finest scale that keeps at most 160 buckets (OTel's default).
//!
//! Temporality is cumulative, from the agent's start, like the Prometheus counters.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    metrics::v1::{
        AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Histogram,
        HistogramDataPoint, Metric, ResourceMetrics, ScopeMetrics,
        exponential_histogram_data_point, metric,
    },
    resource::v1::Resource,
};
use prost::Message as _;

use super::config::{Config, OtlpHistogram, OtlpSection};
use crate::pipeline::{
    Latencies,
    series::{Cumulative, SeriesKey},
};

pub const METRIC: &str = "goprobe.function.latency";
/// OTel's default maximum number of buckets of an exponential histogram.
const MAX_BUCKETS: i64 = 160;
const MAX_SCALE: i32 = 20;

/// Whether the exact (HDR) histograms must be kept: for exponential OTLP histograms.
pub fn wants_exact(config: &Config) -> bool {
    config
        .otlp
        .as_ref()
        .is_some_and(|o| o.histogram == OtlpHistogram::Exponential)
}

/// Pushes the histograms to a collector, one request at a time, off the agent's thread.
pub struct Exporter {
    config: Option<OtlpSection>,
    start_ns: u64,
    host: String,
    in_flight: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl Exporter {
    pub fn new(config: Option<&OtlpSection>, start_ns: u64) -> Self {
        Self {
            config: config.cloned(),
            start_ns,
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
            in_flight: Arc::default(),
            sent: Arc::default(),
            failed: Arc::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.config.is_some()
    }

    pub fn interval(&self) -> Duration {
        self.config
            .as_ref()
            .map_or(Duration::from_secs(3600), |c| c.interval.0)
    }

    /// Exports sent and failed so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    /// Build the request now, and send it on a blocking thread. A request still in flight
    /// (a slow collector) makes this one be skipped: the next carries the same cumulative data.
    pub fn export(&self, cumulative: &Cumulative, now_ns: u64) {
        let Some(config) = &self.config else {
            return;
        };
        if self.in_flight.swap(true, Ordering::AcqRel) {
            return;
        }
        let body = request(
            cumulative,
            config.histogram,
            self.start_ns,
            now_ns,
            &self.host,
        )
        .encode_to_vec();
        let url = config.endpoint.0.clone();
        let (in_flight, sent, failed) = (
            self.in_flight.clone(),
            self.sent.clone(),
            self.failed.clone(),
        );
        tokio::task::spawn_blocking(move || {
            match crate::outputs::http::http_request(
                &url,
                None,
                Some(("application/x-protobuf", &body)),
            ) {
                Ok(_) => {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("goprobe: OTLP export to {url} failed: {e}");
                }
            }
            in_flight.store(false, Ordering::Release);
        });
    }
}

fn attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn attributes(key: &SeriesKey) -> Vec<KeyValue> {
    key.labels()
        .into_iter()
        .map(|(k, v)| attribute(&k, &v))
        .collect()
}

/// The OTLP request for every series.
pub fn request(
    cumulative: &Cumulative,
    kind: OtlpHistogram,
    start_ns: u64,
    now_ns: u64,
    host: &str,
) -> ExportMetricsServiceRequest {
    let temporality = AggregationTemporality::Cumulative as i32;
    let data = match kind {
        OtlpHistogram::Explicit => metric::Data::Histogram(Histogram {
            aggregation_temporality: temporality,
            data_points: cumulative
                .series
                .iter()
                .map(|(key, h)| HistogramDataPoint {
                    attributes: attributes(key),
                    start_time_unix_nano: start_ns,
                    time_unix_nano: now_ns,
                    count: h.count,
                    sum: Some(h.sum_ns as f64 / 1e9),
                    bucket_counts: h.buckets.clone(),
                    explicit_bounds: cumulative.bounds_s.clone(),
                    ..Default::default()
                })
                .collect(),
        }),
        OtlpHistogram::Exponential => metric::Data::ExponentialHistogram(ExponentialHistogram {
            aggregation_temporality: temporality,
            data_points: cumulative
                .exact
                .iter()
                .map(|(key, l)| ExponentialHistogramDataPoint {
                    attributes: attributes(key),
                    start_time_unix_nano: start_ns,
                    time_unix_nano: now_ns,
                    ..exponential(l)
                })
                .collect(),
        }),
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    attribute("service.name", "goprobe-agent"),
                    attribute("host.name", host),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "goprobe".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                metrics: vec![Metric {
                    name: METRIC.into(),
                    description:
                        "Latency of traced Go functions: calls that returned, from entry to return."
                            .into(),
                    unit: "s".into(),
                    data: Some(data),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Bucket index of `v` > 0 at `scale`: bucket i holds (base^i, base^(i+1)], base = 2^2^-scale.
fn index(v: f64, scale: i32) -> i64 {
    (v.log2() * 2f64.powi(scale)).ceil() as i64 - 1
}

/// An exponential histogram (in seconds) of exact latencies, at the finest scale that keeps
/// the buckets within [`MAX_BUCKETS`].
pub fn exponential(l: &Latencies) -> ExponentialHistogramDataPoint {
    let values: Vec<(f64, u64)> = l.values().map(|(ns, n)| (ns as f64 / 1e9, n)).collect();
    let (low, high) = match (values.first(), values.last()) {
        (Some(a), Some(b)) => (a.0, b.0),
        _ => {
            return ExponentialHistogramDataPoint {
                scale: MAX_SCALE,
                ..Default::default()
            };
        }
    };
    let mut scale = MAX_SCALE;
    while scale > -10 && index(high, scale) - index(low, scale) + 1 > MAX_BUCKETS {
        scale -= 1;
    }
    let offset = index(low, scale);
    let mut counts = vec![0u64; (index(high, scale) - offset + 1) as usize];
    for (v, n) in &values {
        counts[(index(*v, scale) - offset) as usize] += n;
    }
    ExponentialHistogramDataPoint {
        count: l.count,
        sum: Some(l.sum_ns as f64 / 1e9),
        scale,
        zero_count: 0,
        positive: Some(exponential_histogram_data_point::Buckets {
            offset: offset as i32,
            bucket_counts: counts,
        }),
        min: (l.count > 0).then(|| l.min_ns as f64 / 1e9),
        max: (l.count > 0).then(|| l.max_ns as f64 / 1e9),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_buckets_hold_every_call() {
        let mut l = Latencies::default();
        for ns in [1_000, 1_100_000, 1_050_000, 5_000_000, 2_000_000_000] {
            l.record(ns);
        }
        let p = exponential(&l);
        let buckets = p.positive.unwrap();
        assert_eq!(buckets.bucket_counts.iter().sum::<u64>(), 5);
        assert!(buckets.bucket_counts.len() as i64 <= MAX_BUCKETS);
        // Every value lies in its bucket's bounds.
        let base = 2f64.powf(2f64.powi(-p.scale));
        let upper = base.powi(buckets.offset + buckets.bucket_counts.len() as i32);
        assert!(
            upper >= 2.0 && base.powi(buckets.offset) < 1e-6,
            "{base} {upper}"
        );
        assert_eq!(p.count, 5);
        assert_eq!(p.max, Some(2.0));
    }

    #[test]
    fn fine_scale_for_narrow_ranges() {
        let mut l = Latencies::default();
        l.record(1_000_000);
        l.record(1_010_000);
        let p = exponential(&l);
        // 1 % apart: the finest scale that spans them in 160 buckets is 13 (0.0085 % wide).
        assert_eq!(p.scale, 13);
        let buckets = p.positive.unwrap();
        assert_eq!(buckets.bucket_counts.iter().sum::<u64>(), 2);
        assert!(buckets.bucket_counts.len() as i64 <= MAX_BUCKETS);
        let one = Latencies::default();
        assert_eq!(exponential(&one).count, 0);
        assert_eq!(index(1.0, 0), -1);
        assert_eq!(index(1.5, 0), 0);
        assert_eq!(index(2.0, 0), 0);
    }

    #[test]
    fn explicit_request_has_the_prometheus_buckets() {
        let mut c = Cumulative::new(&[0.001, 0.01], false);
        let mut l = Latencies::default();
        l.record(500_000);
        l.record(5_000_000);
        l.record(50_000_000);
        let key = SeriesKey {
            function: "main.f".into(),
            service: "svc".into(),
            ..SeriesKey::default()
        };
        c.add(&key, &l);
        let r = request(&c, OtlpHistogram::Explicit, 1, 2, "host");
        let metric = &r.resource_metrics[0].scope_metrics[0].metrics[0];
        let Some(metric::Data::Histogram(h)) = &metric.data else {
            panic!("{metric:?}");
        };
        assert_eq!(h.data_points[0].bucket_counts, vec![1, 1, 1]);
        assert_eq!(h.data_points[0].explicit_bounds, vec![0.001, 0.01]);
        assert_eq!(h.data_points[0].attributes.len(), 2);
        let bytes = r.encode_to_vec();
        assert_eq!(
            ExportMetricsServiceRequest::decode(bytes.as_slice()).unwrap(),
            r
        );
    }
}

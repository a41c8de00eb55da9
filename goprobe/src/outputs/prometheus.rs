//! `/metrics` in the Prometheus text exposition format (version 0.0.4).
//!
//! - `goprobe_function_latency_seconds` (histogram): calls that returned, by function, service,
//!   container, pod, namespace; cumulative since the agent started (reset on restart, which
//!   `rate()` handles).
//! - `goprobe_agent_*`: the agent's own health.
use std::fmt::Write as _;

use crate::pipeline::series::Cumulative;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The agent's own counters and gauges.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// Processes with probes attached now.
    pub processes_traced: u64,
    /// Functions attached now, summed over processes.
    pub probes_attached: u64,
    /// Processes whose memory maps the profiler keeps to symbolize their stacks.
    pub symbolizer_processes: u64,
    /// Calls measured (events read from the ring buffer).
    pub events: u64,
    /// Kernel counters (goprobe_common::counter), summed over CPUs, since the agent started.
    pub kernel: Vec<(&'static str, u64)>,
    pub attach_errors: u64,
    /// Processes the agent could not inspect, by the permission that was missing.
    pub not_inspectable: Vec<(&'static str, u64)>,
    pub binaries_inspected: u64,
    pub inspection_failures: u64,
    /// `by` and packs: values by what happened to them (see `pipeline::by_arg`).
    pub by_values: Vec<(&'static str, u64)>,
    pub archive_writes: u64,
    pub archive_errors: u64,
    pub archive_corrupt: u64,
    pub otlp_exports: u64,
    pub otlp_errors: u64,
    pub config_reloads: u64,
    pub config_reload_errors: u64,
    pub start_time_s: f64,
    /// The overhead budget, as a share of one CPU per process (0: off).
    pub overhead_budget: f64,
    /// Functions shed from a process by the overhead budget, since the agent started.
    pub functions_shed: u64,
    /// The latest of them (the newest last), for /api/v1/status.
    pub shed: Vec<ShedReport>,
}

/// One function shed from one process by the overhead budget.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ShedReport {
    pub pid: u32,
    pub service: String,
    pub function: String,
    pub calls_per_s: f64,
    /// The share of one CPU its probes were estimated to cost the process.
    pub cpu_share: f64,
    pub at_ms: u64,
}

pub fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn label_set(labels: &[(String, String)]) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Format a bound or sum the way Prometheus clients do (shortest exact form).
fn number(v: f64) -> String {
    if v.is_infinite() {
        "+Inf".into()
    } else {
        format!("{v}")
    }
}

pub fn render(cumulative: &Cumulative, health: &Health) -> String {
    let mut out = String::new();
    let name = "goprobe_function_latency_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Latency of traced Go functions: calls that returned, from entry to return."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (key, h) in &cumulative.series {
        let labels = key.labels();
        let base = label_set(&labels);
        let mut cumulative_count = 0;
        for (i, calls) in h.buckets.iter().enumerate() {
            cumulative_count += calls;
            let le = cumulative.bounds_s.get(i).copied().unwrap_or(f64::INFINITY);
            let _ = writeln!(
                out,
                "{name}_bucket{{{base},le=\"{}\"}} {cumulative_count}",
                number(le)
            );
        }
        let _ = writeln!(
            out,
            "{name}_sum{{{base}}} {}",
            number(h.sum_ns as f64 / 1e9)
        );
        let _ = writeln!(out, "{name}_count{{{base}}} {}", h.count);
    }

    if !cumulative.split.is_empty() {
        let name = "goprobe_function_time_seconds_total";
        let _ = writeln!(
            out,
            "# HELP {name} Time of traced Go function calls that returned, by what their goroutine was doing (state)."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for (key, totals) in &cumulative.split {
            let base = label_set(&key.labels());
            for (state, ns) in goprobe_common::split::NAMES.iter().zip(totals) {
                // States a series never spent time in are left out, as Go's own metrics leave
                // out what never happened; `other` is always there, so that its absence is
                // never mistaken for a missing series.
                if *ns > 0 || *state == "other" {
                    let _ = writeln!(
                        out,
                        "{name}{{{base},state=\"{state}\"}} {}",
                        number(*ns as f64 / 1e9)
                    );
                }
            }
        }
    }

    let mut gauge = |name: &str, kind: &str, help: &str, value: &dyn std::fmt::Display| {
        let _ = writeln!(out, "# HELP goprobe_agent_{name} {help}");
        let _ = writeln!(out, "# TYPE goprobe_agent_{name} {kind}");
        let _ = writeln!(out, "goprobe_agent_{name} {value}");
    };
    gauge(
        "processes_traced",
        "gauge",
        "Processes with probes attached.",
        &health.processes_traced,
    );
    gauge(
        "probes_attached",
        "gauge",
        "Functions attached, summed over the processes traced.",
        &health.probes_attached,
    );
    gauge(
        "symbolizer_processes",
        "gauge",
        "Processes whose memory maps the profiler keeps to symbolize their stacks: those profiled, and those gone whose last samples are not yet written. It follows the processes alive, however many came and went.",
        &health.symbolizer_processes,
    );
    gauge(
        "events_total",
        "counter",
        "Calls measured (events read from the kernel).",
        &health.events,
    );
    let lost = health
        .kernel
        .iter()
        .find(|(n, _)| *n == "events_lost")
        .map_or(0, |c| c.1);
    gauge(
        "events_dropped_total",
        "counter",
        "Calls not measured because the ring buffer was full (the traced program never waits).",
        &lost,
    );
    gauge(
        "attach_errors_total",
        "counter",
        "Attempts to attach probes to a process that failed.",
        &health.attach_errors,
    );
    gauge(
        "binaries_inspected_total",
        "counter",
        "Binaries inspected (once per distinct build ID).",
        &health.binaries_inspected,
    );
    gauge(
        "inspection_failures_total",
        "counter",
        "Binaries that could not be inspected (unreadable or malformed; not counting non-Go binaries).",
        &health.inspection_failures,
    );
    gauge(
        "archive_writes_total",
        "counter",
        "Intervals written to the archive.",
        &health.archive_writes,
    );
    gauge(
        "archive_errors_total",
        "counter",
        "Intervals that could not be written to the archive.",
        &health.archive_errors,
    );
    gauge(
        "archive_corrupt_total",
        "counter",
        "Archive files found corrupt, moved aside and replaced by a fresh archive.",
        &health.archive_corrupt,
    );
    gauge(
        "otlp_exports_total",
        "counter",
        "OTLP exports sent.",
        &health.otlp_exports,
    );
    gauge(
        "otlp_errors_total",
        "counter",
        "OTLP exports that failed.",
        &health.otlp_errors,
    );
    gauge(
        "config_reloads_total",
        "counter",
        "Configuration reloads applied (SIGHUP).",
        &health.config_reloads,
    );
    gauge(
        "config_reload_errors_total",
        "counter",
        "Configuration reloads refused because the new file had an error.",
        &health.config_reload_errors,
    );
    gauge(
        "functions_shed_total",
        "counter",
        "Functions detached from a process by the overhead budget: their probes were estimated to cost it more than agent.overhead_budget of one CPU (their histograms stop there; /api/v1/status lists them).",
        &health.functions_shed,
    );
    gauge(
        "overhead_budget_ratio",
        "gauge",
        "The share of one CPU that goprobe's probes may cost each traced process (agent.overhead_budget; 0: no budget).",
        &number(health.overhead_budget),
    );
    // Calls seen but not timed, by why: the histograms are short by exactly this much.
    let kernel = |name: &str| {
        health
            .kernel
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|c| c.1)
            .sum::<u64>()
    };
    let _ = writeln!(
        out,
        "# HELP goprobe_agent_calls_not_timed_total Calls of traced functions seen but not timed: lost (ring buffer full), untimed (pairing capacity reached: the goroutine or nested-call map was full), unpaired (a return without a timed entry: the call began before goprobe attached, or it is the return of an untimed call)."
    );
    let _ = writeln!(out, "# TYPE goprobe_agent_calls_not_timed_total counter");
    for (reason, value) in [
        ("lost", kernel("events_lost")),
        ("untimed", kernel("entries_dropped") + kernel("map_full")),
        ("unpaired", kernel("returns_unpaired")),
    ] {
        let _ = writeln!(
            out,
            "goprobe_agent_calls_not_timed_total{{reason=\"{reason}\"}} {value}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP goprobe_agent_processes_not_inspectable_total Processes the agent could not inspect (not traced even if Go), by the permission that was missing: CAP_SYS_PTRACE (reading /proc/PID/exe), CAP_DAC_READ_SEARCH (reading the binary), lsm (refused despite the capability: AppArmor, SELinux)."
    );
    let _ = writeln!(
        out,
        "# TYPE goprobe_agent_processes_not_inspectable_total counter"
    );
    for (reason, value) in &health.not_inspectable {
        let _ = writeln!(
            out,
            "goprobe_agent_processes_not_inspectable_total{{reason=\"{reason}\"}} {value}"
        );
    }
    if !health.by_values.is_empty() {
        let _ = writeln!(
            out,
            "# HELP goprobe_agent_by_values_total Values of `by` and packs, by outcome: unreadable (a bad pointer on the way), over_limit (counted under `other`), filtered_out (left out by `where`), dropped (waited too long for their return), other_type (an asserted interface held another type), kept_lost (a pointer kept for the return was evicted), demoted (a value that lost its row to one with more calls)."
        );
        let _ = writeln!(out, "# TYPE goprobe_agent_by_values_total counter");
        for (outcome, value) in &health.by_values {
            let _ = writeln!(
                out,
                "goprobe_agent_by_values_total{{outcome=\"{outcome}\"}} {value}"
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP goprobe_agent_kernel_events_total The eBPF programs' own counters, by name."
    );
    let _ = writeln!(out, "# TYPE goprobe_agent_kernel_events_total counter");
    for (counter, value) in &health.kernel {
        let _ = writeln!(
            out,
            "goprobe_agent_kernel_events_total{{counter=\"{counter}\"}} {value}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP goprobe_agent_start_time_seconds When the agent started, in seconds since the epoch."
    );
    let _ = writeln!(out, "# TYPE goprobe_agent_start_time_seconds gauge");
    let _ = writeln!(
        out,
        "goprobe_agent_start_time_seconds {}",
        number(health.start_time_s)
    );
    let _ = writeln!(
        out,
        "# HELP goprobe_agent_build_info goprobe's version.\n# TYPE goprobe_agent_build_info gauge\ngoprobe_agent_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{Latencies, series::SeriesKey};

    #[test]
    fn histogram_text() {
        let mut c = Cumulative::new(&[0.001, 0.01], false);
        let mut l = Latencies::default();
        l.record(500_000);
        l.record(2_000_000);
        l.record(50_000_000);
        let key = SeriesKey {
            function: "main.(*T).Get".into(),
            service: "web \"1\"".into(),
            ..SeriesKey::default()
        };
        c.add(&key, &l);
        let text = render(&c, &Health::default());
        assert_eq!(c.clone().expire(std::time::Duration::from_secs(60)), 0);
        assert_eq!(c.clone().expire(std::time::Duration::ZERO), 1);
        let base = r#"function="main.(*T).Get",service="web \"1\"""#;
        for line in [
            format!("goprobe_function_latency_seconds_bucket{{{base},le=\"0.001\"}} 1"),
            format!("goprobe_function_latency_seconds_bucket{{{base},le=\"0.01\"}} 2"),
            format!("goprobe_function_latency_seconds_bucket{{{base},le=\"+Inf\"}} 3"),
            format!("goprobe_function_latency_seconds_sum{{{base}}} 0.0525"),
            format!("goprobe_function_latency_seconds_count{{{base}}} 3"),
            "goprobe_agent_events_dropped_total 0".into(),
        ] {
            assert!(
                text.contains(&format!("{line}\n")),
                "{line} not in:\n{text}"
            );
        }
    }
}

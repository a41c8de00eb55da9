//! OTLP export of the agent's histograms (the `[otlp]` config section).
//!
//! Not implemented yet: a config with `[otlp]` is refused at start-up with a clear message,
//! rather than accepted and silently ignored.
use std::time::Duration;

use super::{config::Config, series::Cumulative};

pub fn check_supported() -> anyhow::Result<()> {
    anyhow::bail!(
        "[otlp]: OTLP export is not implemented in this version of goprobe yet; remove the [otlp] section (Prometheus /metrics carries the same histograms)"
    )
}

/// Whether the exact (HDR) histograms must be kept for exponential OTLP histograms.
pub fn wants_exact(_config: &Config) -> bool {
    false
}

/// Pushes histograms to a collector; disabled while OTLP is not implemented.
pub struct Exporter;

impl Exporter {
    pub fn new(_config: Option<&super::config::OtlpSection>) -> Self {
        Exporter
    }

    pub fn enabled(&self) -> bool {
        false
    }

    pub fn interval(&self) -> Duration {
        Duration::from_secs(3600)
    }

    pub fn export(&mut self, _cumulative: &Cumulative) -> Result<(), String> {
        Err("OTLP export is not implemented".into())
    }
}

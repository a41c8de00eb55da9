//! Command-line interface. Flags follow bcc's funclatency where it has them, so its users
//! need no new habits; every flag documents its default.
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "goprobe",
    version,
    about = "Trace Go functions with eBPF: latency histograms that are safe and correct for Go",
    long_about = "Trace Go functions with eBPF: latency histograms that are safe and correct for Go.\n\n\
                  goprobe never uses uretprobes on Go code: it probes each function's stack-check \
                  branch on entry and every RET instruction, and pairs them per goroutine.",
    propagate_version = true,
    // A fixed width keeps --help the same in every terminal (and in its snapshot test).
    term_width = 100
)]
#[deny(missing_docs)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
#[deny(missing_docs)]
pub enum Command {
    /// Time Go functions and print latency histograms (like bcc's funclatency)
    Funclatency(crate::commands::funclatency::FunclatencyArgs),
    /// List the functions of a Go binary that can be traced, and how
    Symbols(crate::commands::symbols::SymbolsArgs),
    /// Run the always-on daemon: probes from a config file, /metrics, an archive on the host
    Agent(crate::commands::agent::AgentArgs),
    /// Print the archived latency histograms of a time range
    Query(crate::commands::query::QueryArgs),
    /// Compare two time ranges of the archive: how count, p50, p99 and max moved per function
    Diff(crate::commands::query::DiffArgs),
    /// Count the distinct call stacks at entry to Go functions (like bcc's stackcount)
    Stackcount(crate::commands::stackcount::StackcountArgs),
    /// Sample the CPU of Go processes and write a pprof profile (or folded stacks, a flame graph)
    Profile(crate::commands::profile::ProfileArgs),
    /// Where the goroutines of Go processes wait, and why: stacks weighted by waiting time, as a
    /// pprof profile (or folded stacks, a flame graph)
    Offcpu(crate::commands::offcpu::OffcpuArgs),
    /// Helpers for `cargo xtask bench` (not a stable interface)
    #[command(hide = true)]
    Dev(crate::commands::dev::DevArgs),
}

/// A duration with its unit: `250ns`, `10us` (or `10µs`), `5ms`, `2s`, `1m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{text:?} has no unit: write e.g. 500us, 10ms or 1s"))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: write e.g. 500us, 10ms or 1s"))?;
    let ns_per = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?}: use ns, us, ms, s or m"
            ));
        }
    };
    Ok(Duration::from_nanos((value * ns_per).round() as u64))
}

/// Where the agent listens by default: loopback only, so nothing is exposed unless configured;
/// `goprobe query` and `diff` ask there unless told otherwise.
pub const DEFAULT_AGENT_LISTEN: &str = "127.0.0.1:9476";

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_need_units() {
        assert_eq!(parse_duration("10ms"), Ok(Duration::from_millis(10)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert!(parse_duration("10").unwrap_err().contains("no unit"));
        assert!(parse_duration("10h").unwrap_err().contains("unknown unit"));
    }
}

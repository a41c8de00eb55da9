//! Command-line interface. Flags follow bcc's funclatency where it has them, so its users
//! need no new habits; every flag documents its default.
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
    /// List the probe packs of `funclatency --pack`, and which apply to a binary or PID
    Packs(crate::commands::packs::PacksArgs),
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

/// Where the agent listens by default (`http.listen`); `goprobe query` and `diff` ask there
/// unless told otherwise.
pub use crate::commands::agent::config::DEFAULT_LISTEN as DEFAULT_AGENT_LISTEN;

/// Durations with a unit (`--slower-than`, `--timeout`).
pub use crate::pipeline::times::parse_duration;

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}

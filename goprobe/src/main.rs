//! goprobe: trace Go functions with eBPF.
//!
//! Data flow: targets → inspect → plan → kernel → pipeline → outputs.
//! `funclatency` drives it once from the command line; `symbols` shows what inspect and plan see;
//! `agent` runs it continuously from a config file, and `query`/`diff` read the agent's archive.
mod cli;
mod commands;
mod engine;
mod kernel;
mod outputs;
mod pipeline;
mod plan;
mod targets;

// The readers of binaries (inspect) and of stacks (symbolize) are the library crate
// goprobe-inspect, which the tests and fuzz targets use too; named here for their stage.
use goprobe_inspect::{self as inspect, symbolize};

use std::process::ExitCode;

use clap::Parser as _;

/// Exit code for every error the user can act on (the CLI contract in README.md, Usage).
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // -v also shows the kernel programs' rare conditions; set before anything is loaded.
    let verbose = match &cli.command {
        cli::Command::Funclatency(args) => args.verbose,
        cli::Command::Stackcount(args) => args.verbose,
        cli::Command::Profile(args) => args.verbose,
        cli::Command::Offcpu(args) => args.verbose,
        cli::Command::Agent(args) => args.verbose,
        _ => false,
    };
    // GOPROBE_KERNEL_LOG=0 keeps it off at -v, =1 turns it on without (for measuring).
    let kernel_log = match std::env::var("GOPROBE_KERNEL_LOG").as_deref() {
        Ok("0") => false,
        Ok("1") => true,
        _ => verbose,
    };
    if kernel_log {
        kernel::log::enable();
    }
    let result = match cli.command {
        cli::Command::Funclatency(args) => commands::funclatency::run(args),
        cli::Command::Symbols(args) => commands::symbols::run(args),
        cli::Command::Packs(args) => commands::packs::run(args),
        cli::Command::Agent(args) => commands::agent::run(args),
        cli::Command::Query(args) => commands::query::run_query(args),
        cli::Command::Diff(args) => commands::query::run_diff(args),
        cli::Command::Stackcount(args) => commands::stackcount::run(args),
        cli::Command::Profile(args) => commands::profile::run(args),
        cli::Command::Offcpu(args) => commands::offcpu::run(args),
        cli::Command::Dev(args) => commands::dev::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("goprobe: {}", one_line(&error));
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// The error and its causes on one line, without repeating a cause the message already quotes.
pub(crate) fn one_line(error: &anyhow::Error) -> String {
    let mut line = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !line.contains(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    line.replace('\n', " ")
}

//! `goprobe offcpu`: where the goroutines of Go processes wait, and why, without a pprof
//! endpoint. Every wait (a park in `runtime.gopark`, with Go's wait reason: channel, select,
//! mutex, network I/O, sleep, GC, ...; or a system call) is charged to the stack it began in;
//! the result is a pprof profile like Go's block and mutex profiles together
//! (engine/offcpu.rs).
use std::{collections::HashSet, io::Write as _, path::PathBuf};

use anyhow::Context as _;
use clap::Args;

use crate::{
    engine::{
        Selection,
        offcpu::OffCpu,
        run::{Run, Tick},
    },
    outputs::{flamegraph, tables::human_ns},
    symbolize::Symbolizer,
    targets::{BinaryKey, Process},
};

/// `goprobe offcpu`'s arguments.
#[derive(Debug, Args)]
#[deny(missing_docs)]
#[command(after_help = OFFCPU_EXAMPLES)]
pub struct OffcpuArgs {
    /// Trace this process (repeatable)
    #[arg(
        short = 'p',
        long = "pid",
        value_name = "PID",
        required_unless_present = "binary"
    )]
    pub pids: Vec<u32>,

    /// Trace every process running this binary (now and later)
    #[arg(
        short = 'b',
        long = "binary",
        value_name = "PATH",
        conflicts_with = "pids"
    )]
    pub binary: Option<PathBuf>,

    /// Stop after SECONDS (default: run until Ctrl-C, SIGTERM, or the end of every -p process)
    #[arg(short = 'd', long = "duration", value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub duration: Option<u64>,

    /// Write a gzipped pprof profile (contentions/count, delay/nanoseconds; labels pid and
    /// reason) to FILE, for `go tool pprof`
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Print folded stacks (`[reason];root;...;leaf MICROSECONDS`) on stdout
    #[arg(long = "folded")]
    pub folded: bool,

    /// Draw an SVG flame graph of waiting time into FILE
    #[arg(long = "svg", value_name = "FILE")]
    pub svg: Option<PathBuf>,

    /// Say on stderr which processes are traced, the kernel programs' rare conditions (a full
    /// map), and goprobe's own counters at the end
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
}

const OFFCPU_EXAMPLES: &str = "\
Examples:
  goprobe offcpu -p 4242 -d 30 -o wait.pb.gz && go tool pprof -top wait.pb.gz
  goprobe offcpu -b /usr/bin/caddy -d 10 --svg wait.svg
  goprobe offcpu -p 4242 -d 10 --folded > wait.folded

Probes the Go runtime's park and system-call points (no pprof endpoint needed): each wait is
charged to its stack and reason (chan_receive, select, sync_mutex, io_wait, sleep, gc, syscall,
...). Waits still under way at the end are not counted. Without -o, --svg or --folded, prints
the time per reason and the top stacks.";

pub fn run(args: OffcpuArgs) -> anyhow::Result<()> {
    let binary = match &args.binary {
        Some(path) => Some(
            BinaryKey::of(path)
                .with_context(|| format!("cannot read binary {}", path.display()))
                .map(|_| path.clone())?,
        ),
        None => {
            for &pid in &args.pids {
                Process::get(pid)?;
            }
            None
        }
    };
    let mut offcpu = OffCpu::start()?;
    let mut symbolizer = Symbolizer::default();
    match &binary {
        Some(path) => offcpu.add_binary(path)?,
        None => {
            for &pid in &args.pids {
                symbolizer.observe(pid);
                offcpu.add_pid(pid)?;
                if args.verbose {
                    eprintln!("goprobe: tracing the waits of PID {pid}");
                }
            }
        }
    }
    eprintln!(
        "Tracing the waits of {}... Hit Ctrl-C to end.",
        match &binary {
            Some(path) => format!("processes of {}", path.display()),
            None => format!(
                "PID {}",
                args.pids
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    );
    let (selection, tracked) = match &binary {
        Some(path) => (Selection::Binary(path.clone()), HashSet::new()),
        None => (
            Selection::Pids(args.pids.clone()),
            args.pids.iter().copied().collect(),
        ),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut run = Run::new(args.duration)?
            .draining(std::time::Duration::from_millis(200))
            .targets(&selection, tracked)
            .verbose(args.verbose);
        loop {
            match run.tick().await {
                Tick::Stop => break,
                // -b: see the processes of the binary while they run, to symbolize their stacks.
                Tick::Scan if binary.is_some() => {
                    if let Some(key) = args.binary.as_ref().and_then(|p| BinaryKey::of(p).ok()) {
                        for pid in crate::targets::all_pids() {
                            if let Ok(process) = Process::get(pid)
                                && process.binary == key
                            {
                                symbolizer.observe(pid);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        anyhow::Ok(())
    })?;
    let profile = offcpu.profile(&mut symbolizer);
    if args.verbose {
        let fields: serde_json::Map<String, serde_json::Value> = offcpu
            .counters()
            .into_iter()
            .map(|(name, value)| (name.to_string(), value.into()))
            .collect();
        eprintln!("goprobe: counters {}", serde_json::Value::Object(fields));
    }
    if let Some(path) = &args.output {
        let comment = format!("goprobe offcpu, {:.1} s", profile.duration.as_secs_f64());
        crate::outputs::pprof::write_file(&profile.to_pprof(&comment), path)?;
        eprintln!(
            "goprobe: wrote {} stacks, {} of waiting, to {} (go tool pprof {})",
            profile.stacks.len(),
            human_ns(profile.total_ns()),
            path.display(),
            path.display()
        );
    }
    let folded = profile.folded();
    if let Some(path) = &args.svg {
        flamegraph::write_svg(path, &folded, "goprobe off-CPU (waiting time)", "µs")?;
    }
    let mut stdout = std::io::stdout().lock();
    if args.folded {
        flamegraph::write_folded(&mut stdout, &folded)?;
    } else if args.output.is_none() && args.svg.is_none() {
        let total = profile.total_ns().max(1);
        writeln!(
            stdout,
            "{} of waiting in {:.1} s",
            human_ns(profile.total_ns()),
            profile.duration.as_secs_f64()
        )?;
        writeln!(
            stdout,
            "{:>12} {:>7} {:>9}  reason",
            "time", "share", "waits"
        )?;
        for (reason, count, ns) in profile.by_reason() {
            writeln!(
                stdout,
                "{:>12} {:>6.2}% {count:>9}  {reason}",
                human_ns(ns),
                ns as f64 * 100.0 / total as f64
            )?;
        }
        writeln!(stdout)?;
        for (stack, pid, state, count, ns) in profile.stacks.iter().take(10) {
            writeln!(
                stdout,
                "{} in {count} waits, {} [{pid}]:",
                human_ns(*ns),
                crate::engine::offcpu::state_name(*state)
            )?;
            for location in stack.iter().take(8) {
                for line in &location.lines {
                    writeln!(stdout, "    {} {}:{}", line.function, line.file, line.line)?;
                }
            }
        }
    }
    stdout.flush()?;
    Ok(())
}

//! `goprobe profile`: on-CPU sampling of Go processes with eBPF, written as a pprof CPU profile
//! (what `go tool pprof` opens), folded stacks or a flame graph. The process needs no pprof
//! endpoint: a software cpu-clock perf event on every CPU runs a BPF program that walks the
//! user stack (and the kernel stack with --kernel) of the sampled thread, if it belongs to a
//! traced process.
use std::{collections::HashSet, io::Write as _, path::PathBuf};

use anyhow::Context as _;
use clap::Args;

use crate::{
    engine::{
        Selection,
        profiler::{DRAIN_EVERY, Profiler},
        run::{Run, Tick},
    },
    outputs::flamegraph,
    symbolize::Symbolizer,
    targets::{self, BinaryKey, Process},
};

/// `goprobe profile`'s arguments.
#[derive(Debug, Args)]
#[deny(missing_docs)]
#[command(after_help = PROFILE_EXAMPLES)]
pub struct ProfileArgs {
    /// Sample this process (repeatable)
    #[arg(
        short = 'p',
        long = "pid",
        value_name = "PID",
        required_unless_present = "binary"
    )]
    pub pids: Vec<u32>,

    /// Sample every process running this binary (now and later)
    #[arg(
        short = 'b',
        long = "binary",
        value_name = "PATH",
        conflicts_with = "pids"
    )]
    pub binary: Option<PathBuf>,

    /// Samples per second on each CPU
    #[arg(short = 'F', long = "frequency", value_name = "HZ", default_value_t = 99, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub frequency: u64,

    /// Stop after SECONDS (default: run until Ctrl-C, SIGTERM, or the end of every -p process)
    #[arg(short = 'd', long = "duration", value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub duration: Option<u64>,

    /// Write a gzipped pprof CPU profile (samples/count, cpu/nanoseconds) to FILE, for
    /// `go tool pprof`
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Print folded stacks (`root;...;leaf COUNT`) on stdout
    #[arg(long = "folded")]
    pub folded: bool,

    /// Draw an SVG flame graph into FILE
    #[arg(long = "svg", value_name = "FILE")]
    pub svg: Option<PathBuf>,

    /// Also record the kernel stack of samples taken in the kernel (system calls, page faults)
    #[arg(long = "kernel")]
    pub kernel: bool,

    /// Say on stderr which processes are sampled, the kernel programs' rare conditions (a full
    /// map), and goprobe's own counters at the end
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
}

const PROFILE_EXAMPLES: &str = "\
Examples:
  goprobe profile -p 4242 -d 30 -o cpu.pb.gz && go tool pprof -top cpu.pb.gz
  goprobe profile -b /usr/bin/caddy -F 199 -d 10 --svg cpu.svg
  goprobe profile -p 4242 -d 10 --kernel --folded > cpu.folded

Samples on-CPU time with a perf event on every CPU and walks the Go stack with frame pointers;
the process needs no pprof endpoint. Without -o, --svg or --folded, prints the top functions.";

/// The processes a profile run samples.
enum Targets {
    Pids(Vec<u32>),
    Binary { path: PathBuf, key: BinaryKey },
}

pub fn run(args: ProfileArgs) -> anyhow::Result<()> {
    // The outputs first: a path that cannot be written fails now, not after the sampling.
    for path in args.output.iter().chain(&args.svg) {
        crate::outputs::check_writable(path)?;
    }
    // Only Go programs: their stacks are what goprobe can follow and symbolize.
    let targets = match &args.binary {
        Some(path) => {
            let key = BinaryKey::of(path)
                .with_context(|| format!("cannot read binary {}", path.display()))?;
            crate::inspect::BinaryIndex::open(path)?;
            Targets::Binary {
                key,
                path: path.clone(),
            }
        }
        None => {
            for &pid in &args.pids {
                let process = Process::get(pid)?;
                crate::inspect::BinaryIndex::open(&process.exe).map_err(|e| {
                    anyhow::anyhow!("PID {pid} ({}): {e}", process.exe_name.display())
                })?;
            }
            Targets::Pids(args.pids.clone())
        }
    };
    let mut symbolizer = Symbolizer::default();
    let mut profiler = Profiler::start(args.frequency, args.kernel)?;
    add_targets(&mut profiler, &mut symbolizer, &targets, args.verbose)?;
    if let Targets::Binary { path, .. } = &targets
        && profiler.pids().is_empty()
    {
        eprintln!(
            "goprobe: no process runs {} yet; waiting for one",
            path.display()
        );
    }
    eprintln!(
        "Sampling {} at {} Hz... Hit Ctrl-C to end.",
        match &targets {
            Targets::Pids(pids) => format!(
                "PID {}",
                pids.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Targets::Binary { path, .. } => format!("processes of {}", path.display()),
        },
        args.frequency
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(event_loop(&mut profiler, &mut symbolizer, &args, &targets))?;
    let counters = profiler.counters();
    let profile = profiler.finish(&mut symbolizer);
    if args.verbose {
        let fields: serde_json::Map<String, serde_json::Value> = counters
            .into_iter()
            .map(|(name, value)| (name.to_string(), value.into()))
            .collect();
        eprintln!("goprobe: counters {}", serde_json::Value::Object(fields));
    }
    if let Some(path) = &args.output {
        let comment = format!(
            "goprobe profile, {} Hz, {:.1} s",
            args.frequency,
            profile.duration.as_secs_f64()
        );
        crate::outputs::pprof::write_file(&profile.to_pprof(&comment), path)?;
        eprintln!(
            "goprobe: wrote {} samples to {} (go tool pprof {})",
            profile.samples(),
            path.display(),
            path.display()
        );
    }
    let folded = profile.folded();
    if let Some(path) = &args.svg {
        flamegraph::write_svg(path, &folded, "goprobe CPU profile", "samples")?;
    }
    let mut stdout = std::io::stdout().lock();
    if args.folded {
        flamegraph::write_folded(&mut stdout, &folded)?;
    } else if args.output.is_none() && args.svg.is_none() {
        let total = profile.samples().max(1);
        writeln!(
            stdout,
            "{} samples in {:.1} s at {} Hz",
            profile.samples(),
            profile.duration.as_secs_f64(),
            profile.frequency
        )?;
        writeln!(
            stdout,
            "{:>8} {:>7} {:>8} {:>7}  function",
            "flat", "flat%", "cum", "cum%"
        )?;
        for (flat, cum, name) in profile.top(20) {
            writeln!(
                stdout,
                "{flat:>8} {:>6.2}% {cum:>8} {:>6.2}%  {name}",
                flat as f64 * 100.0 / total as f64,
                cum as f64 * 100.0 / total as f64
            )?;
        }
    }
    stdout.flush()?;
    Ok(())
}

fn add_targets(
    profiler: &mut Profiler,
    symbolizer: &mut Symbolizer,
    targets: &Targets,
    verbose: bool,
) -> anyhow::Result<()> {
    match targets {
        Targets::Pids(pids) => {
            for &pid in pids {
                symbolizer.observe(pid);
                profiler.add_pid(pid)?;
            }
        }
        Targets::Binary { key, .. } => {
            for pid in targets::all_pids() {
                if profiler.pids().contains(&pid) {
                    continue;
                }
                if let Ok(process) = Process::get(pid)
                    && process.binary == *key
                {
                    symbolizer.observe(pid);
                    profiler.add_pid(pid)?;
                    if verbose {
                        eprintln!("goprobe: sampling PID {pid}");
                    }
                }
            }
        }
    }
    Ok(())
}

async fn event_loop(
    profiler: &mut Profiler,
    symbolizer: &mut Symbolizer,
    args: &ProfileArgs,
    targets: &Targets,
) -> anyhow::Result<()> {
    let (selection, tracked) = match targets {
        Targets::Pids(pids) => (
            Selection::Pids(pids.clone()),
            pids.iter().copied().collect(),
        ),
        Targets::Binary { path, .. } => (Selection::Binary(path.clone()), HashSet::new()),
    };
    let mut run = Run::new(args.duration)?
        .draining(DRAIN_EVERY)
        .targets(&selection, tracked)
        .verbose(args.verbose);
    loop {
        match run.tick().await {
            Tick::Stop => break,
            Tick::Drain => {
                profiler.drain();
            }
            Tick::Scan => {
                if let Targets::Binary { .. } = targets {
                    add_targets(profiler, symbolizer, targets, args.verbose)?;
                }
            }
            Tick::Reload | Tick::Interval | Tick::Export | Tick::Execs(_) | Tick::Sweep => {}
        }
    }
    Ok(())
}

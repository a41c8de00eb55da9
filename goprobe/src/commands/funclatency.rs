//! `goprobe funclatency`: a short-lived tracer with one pattern, printing histograms.
use std::path::PathBuf;

use std::{
    collections::{BTreeMap, HashMap},
    io::Write as _,
    time::{Duration, Instant, SystemTime},
};

use clap::Args;
use goprobe_common::{Misses, counter};

use crate::{
    cli::parse_duration,
    engine::hostwide::HostWide,
    engine::run::{Event, Run},
    engine::session::{
        Coverage, attach_mode_from_env, attach_targets_noting, check_targets, scan_processes,
        select, start_host_wide,
    },
    engine::stack_view::StackView,
    engine::{AttachLimit, Selection, Tracer},
    kernel::Probes,
    outputs::{self, FunctionSites, Report, Row},
    pipeline::{Latencies, Unit},
    plan::Pattern,
};

/// `goprobe funclatency`'s arguments.
#[derive(Debug, Args)]
#[deny(missing_docs)]
#[command(after_help = FUNCLATENCY_EXAMPLES)]
pub struct FunclatencyArgs {
    /// What to trace: `go:NAME` (a Go function by its full name, e.g. `fmt.Println`,
    /// `net/http.(*conn).serve`, `main.main.func1`) or `PATH:NAME` (a function of that binary).
    /// `*` and `?` glob over the whole NAME (`*` right after `(` is the literal pointer receiver,
    /// as in `(*T)`); with -r, NAME is a regular expression. With --pack: omitted, or
    /// `PATH:` to trace one binary's processes
    #[arg(required_unless_present = "pack")]
    pub pattern: Option<String>,

    /// Trace only this process (repeatable). Default: every Go process on the host whose binary
    /// has a matching function, including processes that start later
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Trace only processes running this binary (now and later)
    #[arg(
        short = 'b',
        long = "binary",
        value_name = "PATH",
        conflicts_with = "pids"
    )]
    pub binary: Option<PathBuf>,

    /// Microsecond histogram (default: nanoseconds)
    #[arg(short = 'u', long = "microseconds", conflicts_with = "milliseconds")]
    pub microseconds: bool,

    /// Millisecond histogram (default: nanoseconds)
    #[arg(short = 'm', long = "milliseconds")]
    pub milliseconds: bool,

    /// Print and reset the histograms every SECONDS (default: once, at the end)
    #[arg(short = 'i', long = "interval", value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub interval: Option<u64>,

    /// Stop after SECONDS (default: run until Ctrl-C or SIGTERM)
    #[arg(short = 'd', long = "duration", value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub duration: Option<u64>,

    /// Print a timestamp with each output
    #[arg(short = 'T', long = "timestamp")]
    pub timestamp: bool,

    /// One histogram per function (default: one per process, all matched functions together)
    #[arg(short = 'F', long = "function")]
    pub per_function: bool,

    /// NAME is a regular expression, searched anywhere in the function name (default: glob, whole name)
    #[arg(short = 'r', long = "regex")]
    pub regex: bool,

    /// JSON lines on stdout: one object per function and process, per interval
    #[arg(long = "json")]
    pub json: bool,

    /// Attach even when the pattern matches more than 100 functions or 1,000 probe sites in a
    /// binary (each traced call costs the program about 1-10 µs)
    #[arg(long = "force")]
    pub force: bool,

    /// Say on stderr what is attached where, which processes were skipped and why, the kernel
    /// programs' rare conditions (a full map: which function, which process), and goprobe's own
    /// counters at the end
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,

    /// Break latency down by calling stack: for each distinct stack the calls returned to, their
    /// count, p50, p99 and max (stacks are walked at the RET with frame pointers; default: off)
    #[arg(long = "stacks")]
    pub stacks: bool,

    /// Keep stacks only of calls at least this slow, e.g. 500us, 10ms, 1s (implies --stacks;
    /// default: the stacks of every call)
    #[arg(long = "slower-than", value_name = "DURATION", value_parser = parse_duration)]
    pub slower_than: Option<Duration>,

    /// Split each call's time by what its goroutine was doing: running, runnable (waiting for a
    /// thread or a CPU), in a syscall or cgo, parked by wait reason (channel, select, mutex,
    /// network I/O, sleep, GC, ...); share of the total and p50/p99 per call, per function
    #[arg(long = "split", conflicts_with_all = ["stacks", "slower_than"])]
    pub split: bool,

    /// Break latency down by argument values: one histogram per distinct value of each path
    /// (comma-separated, at most 3), e.g. `query`, `r.URL.Path`, `r.Method,r.URL.Path`, `arg1`.
    /// Paths start at a parameter (by name, or argN counting the receiver from 0) or a result
    /// (by name, or retN; read at the return) and follow struct fields through pointers;
    /// `w.(*net/http.response).status@return` asserts an interface's dynamic type and reads
    /// what the call wrote there by its return. Values are strings (first 128 bytes), integers,
    /// booleans, or nil/non-nil for an interface (an error). Names and types come from DWARF,
    /// or from a signature declared in the pattern ('go:main.handle(w
    /// net/http.ResponseWriter, r *net/http.Request)', 'go:main.get(k string) (int, error)') for
    /// stripped binaries
    #[arg(long = "by", value_name = "PATHS", conflicts_with_all = ["stacks", "slower_than", "split"])]
    pub by: Option<String>,

    /// A ready probe set instead of a pattern's function (`goprobe packs` lists them): e.g.
    /// http-server (each request by method, path and status), sql (each statement, literals
    /// replaced by ?)
    #[arg(long = "pack", value_name = "NAME", conflicts_with_all = ["by", "stacks", "slower_than", "split", "regex"])]
    pub pack: Option<String>,

    /// With --by or --pack: count only the calls whose value at PATH compares so, e.g.
    /// 'r.URL.Path == "/slow"', 'n >= 500', 'err != nil', or with --pack http-server
    /// 'status >= 500' (numbers as numbers, the rest as text; PATH as in --by, read too if it
    /// is not one of --by's, or a label's name). -v counts the calls left out
    #[arg(long = "where", value_name = "CONDITION")]
    pub filter: Option<String>,

    /// With --by or --pack: distinct values kept per function; later ones count under `other`
    #[arg(long = "max-values", value_name = "N", default_value_t = crate::pipeline::by_arg::DEFAULT_MAX_VALUES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub max_values: usize,
}

const FUNCLATENCY_EXAMPLES: &str = "\
Examples:
  goprobe funclatency 'go:fmt.Println'                  # every Go process that has it, and new ones
  goprobe funclatency -p 4242 -m 'go:database/sql.(*DB).QueryContext'
  goprobe funclatency -b /usr/bin/caddy -F 'go:net/http.*' -i 5 -d 60
  goprobe funclatency -u --json -d 10 '/usr/bin/caddy:net/http.(*conn).serve'
  goprobe funclatency -r 'go:main\\.handle.*'
  goprobe funclatency -p 4242 -m --slower-than 10ms 'go:main.(*Store).Get'  # who sees slow calls?
  goprobe funclatency -p 4242 -m --split 'go:main.handleCheckout'  # running, or waiting on what?

Output: bcc's funclatency layout (log2 histogram, avg/total/count) plus p50/p90/p99/p99.9/max,
and a `lost` line if the ring buffer overflowed. --stacks adds, per histogram, each calling stack
with its count, p50, p99 and max, slowest first. --split adds, per histogram, the states the
calls' time went to (share, total, p50 and p99 per call). Ctrl-C, SIGTERM or the end of -d prints what was
collected, detaches every probe and exits 0. Errors print one line and exit 2.";

/// The pattern, and what to label calls by (`--by`, a declared signature, `--pack`).
fn pattern_and_request(
    args: &FunclatencyArgs,
) -> anyhow::Result<(Pattern, Option<crate::plan::args::ArgRequest>)> {
    use crate::plan::args::{self as plan_args, ArgRequest};
    if let Some(name) = &args.pack {
        let pack = plan_args::pack(name).map_err(anyhow::Error::msg)?;
        // The pack names its functions; the pattern says where (go: or PATH:).
        let prefix = args
            .pattern
            .as_deref()
            .unwrap_or("go:")
            .split_once(':')
            .map(|(p, _)| p)
            .filter(|p| !p.is_empty())
            .unwrap_or("go");
        let pattern = plan_args::pack_pattern(pack, prefix)?;
        return Ok((pattern, Some(plan_args::pack_request(pack))));
    }
    let (raw, declared) =
        goprobe_input::args::split_signature(args.pattern.as_deref().unwrap_or_default())?;
    let request = match (&args.by, declared) {
        (Some(by), declared) => Some(ArgRequest::new(
            goprobe_input::args::parse_by(by)?,
            declared,
        )),
        (None, Some(_)) => {
            anyhow::bail!("the pattern declares a signature, which only --by uses: add --by PATHS")
        }
        (None, None) => None,
    };
    Ok((Pattern::parse(raw, args.regex)?, request))
}

pub fn run(args: FunclatencyArgs) -> anyhow::Result<()> {
    let (pattern, mut request) = pattern_and_request(&args)?;
    if let Some(text) = &args.filter {
        let Some(request) = request.as_mut() else {
            anyhow::bail!("--where tests argument values: add --by PATHS or --pack NAME");
        };
        request.filter = Some(goprobe_input::args::parse_where(text)?);
    }
    let selection = selection(&args, &pattern)?;
    let mode = attach_mode_from_env();

    // Everything that can be checked without touching a target is checked before loading BPF.
    let processes = check_targets(&selection)?;
    let probes = if args.split {
        Probes::Split
    } else {
        Probes::Latency {
            stacks_min_ns: stacks_min_ns(&args)?,
        }
    };
    let mut tracer = Tracer::with_probes(pattern, mode, probes)?;
    if let Some(request) = request {
        tracer.aggregator.by_arg.max_values = args.max_values;
        tracer.arg_requests = vec![(tracer.pattern.clone(), request)];
    }
    tracer.attach_limit = AttachLimit::unless_forced(args.force);
    let verbose = args.verbose;
    if verbose {
        eprintln!("goprobe: attach mode {:?}", tracer.kernel().mode());
    }
    let mut coverage = Coverage::starting_now();
    let tracked_pids = attach_targets_noting(
        &mut tracer,
        &selection,
        &processes,
        verbose,
        Some(&mut coverage),
    )?;
    coverage.attached_at = SystemTime::now();
    let mut host = start_host_wide(&mut tracer, &selection, verbose)?;
    // The first interval (the whole run, without -i) begins when the probes are in place.
    coverage.since = Instant::now();
    let mut stack_view = probes_stacks(&probes).then(StackView::default);
    if let Some(view) = stack_view.as_mut() {
        view.observe_pids(processes.iter().map(|p| p.pid));
        view.preload(&tracer);
    }

    let banner = format!(
        "Tracing {} functions for \"{}\"... Hit Ctrl-C to end.",
        tracer.traced_names.len(),
        match (&args.pack, &args.pattern) {
            (Some(pack), _) => format!("pack {pack}"),
            (None, pattern) => pattern.clone().unwrap_or_default(),
        }
    );
    if args.json {
        eprintln!("{banner}");
    } else {
        println!("{banner}");
        let _ = std::io::stdout().flush();
    }
    if let Some(host) = host.as_mut() {
        host.announce = true;
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // Timers and signal handlers belong to the runtime: the run is made inside it.
        let mut run = Run::new(args.duration)?
            .draining(crate::pipeline::DRAIN_EVERY)
            .interval(args.interval.map(Duration::from_secs))
            .targets(&selection, tracked_pids)
            .host_wide(host.take())
            .follow_execs(&mut tracer)
            .verbose(verbose);
        let result = event_loop(&mut tracer, &args, &mut run, &mut stack_view, &mut coverage).await;
        host = run.host.take();
        result
    })?;

    tracer.detach_all();
    tracer.drain();
    print_interval(
        &mut tracer,
        &args,
        &mut stack_view,
        &mut coverage,
        &mut host,
    )?;
    if verbose {
        print_counters(&mut tracer);
    }
    if let Some(host) = &host {
        let processes = host.summary(&tracer).describe();
        if args.json {
            eprintln!("goprobe: processes: {processes}");
        } else {
            println!();
            println!("Processes: {processes}");
        }
    }
    if !args.json {
        println!("Detaching...");
    }
    Ok(())
}

fn probes_stacks(probes: &Probes) -> bool {
    matches!(
        probes,
        Probes::Latency {
            stacks_min_ns: Some(_)
        }
    )
}

/// --stacks / --slower-than: the latency from which calls carry their stack.
fn stacks_min_ns(args: &FunclatencyArgs) -> anyhow::Result<Option<u64>> {
    Ok(match args.slower_than {
        Some(d) => Some(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)),
        None if args.stacks => Some(0),
        None => None,
    })
}

fn selection(args: &FunclatencyArgs, pattern: &Pattern) -> anyhow::Result<Selection> {
    select(pattern, &args.pids, args.binary.as_ref())
}

async fn event_loop(
    tracer: &mut Tracer,
    args: &FunclatencyArgs,
    run: &mut Run,
    stack_view: &mut Option<StackView>,
    coverage: &mut Coverage,
) -> anyhow::Result<()> {
    // -b: the processes of the binary are found by the scans, the ones running now included.
    let mut seen_pids = HashMap::new();
    loop {
        match run.next(tracer).await {
            Event::Stop => break,
            Event::Drained => {
                if let Some(view) = stack_view.as_mut() {
                    view.observe(&tracer.aggregator.stacks);
                }
            }
            Event::Interval => {
                print_interval(tracer, args, stack_view, coverage, &mut run.host)?;
                if args.verbose {
                    let (goroutines, nested, bytes) = tracer.kernel().pairing_now();
                    eprintln!(
                        "goprobe: pairing now: {goroutines} goroutine records, {nested} nested open calls, {} KiB",
                        bytes.div_ceil(1024)
                    );
                }
            }
            Event::Discovered => {
                if let Some(view) = stack_view.as_mut() {
                    view.preload(tracer);
                }
            }
            Event::Reattached {
                pid,
                binary,
                attached,
            } => {
                coverage.attached(binary, &attached);
                coverage.process(pid, binary);
                if let Some(view) = stack_view.as_mut() {
                    view.preload(tracer);
                }
            }
            Event::Scanned => {
                if run.host.is_some()
                    && let Some(view) = stack_view.as_mut()
                {
                    view.preload(tracer);
                }
                if args.json && matches!(run.selection(), Some(Selection::Binary(_))) {
                    scan_processes(coverage, &mut seen_pids);
                }
            }
        }
    }
    Ok(())
}

/// Print this interval's histograms (or the whole run's, without -i) and reset them; the next
/// interval begins.
fn print_interval(
    tracer: &mut Tracer,
    args: &FunclatencyArgs,
    stack_view: &mut Option<StackView>,
    coverage: &mut Coverage,
    host: &mut Option<HostWide>,
) -> anyhow::Result<()> {
    if let Some(host) = host.as_ref() {
        coverage.sync(host);
    }
    let elapsed = coverage.since.elapsed();
    coverage.since = Instant::now();
    let (histograms, missed) = tracer.take_interval();
    if let Some(host) = host.as_mut() {
        host.note_counted(histograms.keys().map(|&(_, pid)| pid));
    }
    // From when each process's calls are counted.
    let coverage_of = |pid: u32| match host.as_ref() {
        Some(host) => host.coverage(pid).map_or((None, None), |(at, from_start)| {
            (Some(at), Some(from_start))
        }),
        None => (Some(coverage.attached_at), None),
    };
    let by_stack = tracer.aggregator.stacks.take();
    let split = std::mem::take(&mut tracer.aggregator.split);
    let unit = if args.milliseconds {
        Unit::Milliseconds
    } else if args.microseconds {
        Unit::Microseconds
    } else {
        Unit::Nanoseconds
    };
    let name_of = |func: u32| {
        tracer
            .functions
            .get(func)
            .map_or_else(|| format!("func#{func}"), |f| f.display_name())
    };
    let per_function = args.json
        || args.per_function
        || tracer.traced_names.len() <= 1
        || !tracer.arg_requests.is_empty();
    let mut rows: BTreeMap<(String, u32), Row> = BTreeMap::new();
    // The row of (function, pid), made on first use.
    let mut row_of = |func: u32, pid: u32| -> (String, u32) {
        let function = if per_function {
            name_of(func)
        } else {
            tracer.pattern.name.clone()
        };
        let key = (function.clone(), pid);
        let row = rows.entry(key.clone()).or_insert_with(|| {
            let (attached, from_start) = coverage_of(pid);
            Row {
                function,
                pid,
                attached,
                from_start,
                latencies: Latencies::default(),
                misses: Misses::default(),
                sites: per_function.then(FunctionSites::default),
                stacks: stack_view.as_ref().map(|_| Vec::new()),
                split: args.split.then(Default::default),
                by: if per_function {
                    tracer
                        .functions
                        .get(func)
                        .map(|f| f.labels.clone())
                        .unwrap_or_default()
                } else {
                    Vec::new()
                },
            }
        });
        if let (Some(sites), Some(info)) = (row.sites.as_mut(), tracer.functions.get(func)) {
            sites.out_of_line |= info.out_of_line;
            sites.inlined_copies = sites.inlined_copies.max(info.inlined_copies);
        }
        key
    };
    let mut keys = Vec::new();
    for ((func, pid), latencies) in histograms {
        keys.push((row_of(func, pid), latencies));
    }
    let mut split_keys = Vec::new();
    for ((func, pid), times) in split {
        split_keys.push((row_of(func, pid), times));
    }
    let mut missed_keys = Vec::new();
    for ((func, pid), misses) in &missed {
        missed_keys.push((row_of(*func, *pid), *misses));
    }
    // JSON: a traced function without calls is a line with count 0 (scripts see it was traced);
    // the text output, like bcc's, shows only functions that were called.
    if args.json {
        for (func, pid) in coverage.pairs() {
            row_of(func, pid);
        }
    }
    coverage.forget_exited();
    for (key, latencies) in keys {
        if let Some(row) = rows.get_mut(&key) {
            row.latencies.merge(&latencies);
        }
    }
    for (key, times) in split_keys {
        if let Some(row) = rows.get_mut(&key)
            && let Some(split) = row.split.as_mut()
        {
            split.merge(&times);
        }
    }
    let mut in_rows = Misses::default();
    for (key, misses) in missed_keys {
        if let Some(row) = rows.get_mut(&key) {
            row.misses.add(&misses);
            in_rows.add(&misses);
        }
    }
    if let Some(view) = stack_view.as_mut() {
        view.observe(&by_stack);
        for ((func, pid), stacks) in &by_stack.by_call {
            let function = if per_function {
                name_of(*func)
            } else {
                tracer.pattern.name.clone()
            };
            let found = view.rows(
                tracer.kernel().ebpf(),
                *pid,
                (*func, &name_of(*func)),
                stacks,
            );
            if let Some(row) = rows.get_mut(&(function, *pid))
                && let Some(row_stacks) = row.stacks.as_mut()
            {
                row_stacks.extend(found);
                row_stacks.sort_by(|a, b| {
                    b.latencies
                        .quantile_ns(0.99)
                        .cmp(&a.latencies.quantile_ns(0.99))
                        .then(b.latencies.count.cmp(&a.latencies.count))
                });
            }
        }
    }
    // The kernel's totals count every miss even if its per-function table was full.
    let deltas = tracer.counter_deltas();
    let totals = Misses {
        lost: in_rows.lost.max(deltas[counter::EVENTS_LOST as usize]),
        untimed: in_rows
            .untimed
            .max(deltas[counter::ENTRIES_DROPPED as usize] + deltas[counter::MAP_FULL as usize]),
        unpaired: in_rows
            .unpaired
            .max(deltas[counter::RETURNS_UNPAIRED as usize]),
    };
    let report = Report {
        rows: rows.into_values().collect(),
        unit,
        time: SystemTime::now(),
        show_time: args.timestamp,
        interval_s: elapsed.as_secs_f64(),
        missed: totals,
        stacks_min_ns: stacks_min_ns(args)?.filter(|&ns| ns > 0),
    };
    let mut stdout = std::io::stdout().lock();
    if args.json {
        outputs::json::write_report(&mut stdout, &report)?;
    } else {
        outputs::text::write_report(&mut stdout, &report)?;
    }
    Ok(())
}

fn print_counters(tracer: &mut Tracer) {
    let counters = tracer.counters();
    let mut fields: serde_json::Map<String, serde_json::Value> = goprobe_common::counter::NAMES
        .iter()
        .zip(counters)
        .map(|(name, value)| (name.to_string(), value.into()))
        .collect();
    let pairing = tracer.kernel().pairing();
    let open: u64 = pairing.open_by_process.values().sum();
    fields.insert("open_goroutines".into(), open.into());
    fields.insert("tracked_goroutines".into(), pairing.goroutines.into());
    fields.insert("open_calls".into(), pairing.open_calls.into());
    fields.insert("pairing_bytes".into(), pairing.bytes.into());
    if !tracer.arg_requests.is_empty() {
        let by = &tracer.aggregator.by_arg;
        fields.insert("args_waiting".into(), by.pending().into());
        fields.insert("args_unreadable".into(), by.unreadable.into());
        fields.insert("args_over_limit".into(), by.over_limit.into());
        fields.insert("args_dropped".into(), by.pending_dropped.into());
        fields.insert("args_filtered_out".into(), by.filtered_out.into());
        fields.insert("args_other_type".into(), by.other_type.into());
        fields.insert("args_kept_lost".into(), by.kept_lost.into());
    }
    if tracer.kernel().split() {
        for (name, value) in crate::kernel::split::counters(tracer.kernel().ebpf()) {
            fields.insert(name.into(), value.into());
        }
    }
    eprintln!("goprobe: counters {}", serde_json::Value::Object(fields));
    eprintln!("goprobe: {}", pairing.describe());
    if std::env::var("GOPROBE_BPF_STATS").as_deref() == Ok("1") {
        let stats = tracer.kernel_mut().program_stats();
        if let Ok(json) = serde_json::to_string(&stats) {
            eprintln!("goprobe: bpf stats {json}");
        }
    }
}

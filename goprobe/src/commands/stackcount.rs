//! `goprobe stackcount`: count the distinct user stacks at entry to Go functions, like bcc's
//! stackcount, with Go symbolization (inlined frames, file:line) and pprof / flame graph output.
use std::path::PathBuf;

use std::{
    collections::{HashMap, HashSet},
    io::Write as _,
    time::{Instant, SystemTime},
};

use aya::maps::{HashMap as BpfHashMap, MapData};
use clap::Args;
use goprobe_common::StackCountKey;

use crate::{
    engine::run::{Event, Run},
    engine::session::{
        attach_mode_from_env, attach_targets, check_targets, select, start_host_wide,
    },
    engine::{AttachLimit, Tracer},
    kernel::Probes,
    kernel::stacks::{self as stacks, StackReader},
    outputs::{flamegraph, pprof::ProfileBuilder, stacktext},
    plan::Pattern,
    symbolize::{Stack, Symbolizer},
};

/// `goprobe stackcount`'s arguments.
#[derive(Debug, Args)]
#[deny(missing_docs)]
#[command(after_help = STACKCOUNT_EXAMPLES)]
pub struct StackcountArgs {
    /// What to count: `go:NAME` or `PATH:NAME`, as for funclatency (`*` and `?` glob; with -r,
    /// NAME is a regular expression)
    pub pattern: String,

    /// Only this process (repeatable). Default: every Go process on the host whose binary has a
    /// matching function, including processes that start later
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Only processes running this binary (now and later)
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

    /// NAME is a regular expression, searched anywhere in the function name (default: glob)
    #[arg(short = 'r', long = "regex")]
    pub regex: bool,

    /// Print folded stacks (`root;...;leaf COUNT`, for flamegraph tools) instead of the stack list
    #[arg(long = "folded")]
    pub folded: bool,

    /// Also write the stacks as a gzipped pprof profile (sample type calls/count) to FILE
    #[arg(long = "pprof", value_name = "FILE")]
    pub pprof: Option<PathBuf>,

    /// Also draw the stacks as an SVG flame graph into FILE
    #[arg(long = "svg", value_name = "FILE")]
    pub svg: Option<PathBuf>,

    /// Attach even when the pattern matches more than 100 functions or 1,000 probe sites in a
    /// binary (each traced call costs the program about 1-10 µs)
    #[arg(long = "force")]
    pub force: bool,

    /// Say on stderr what is attached where, the kernel programs' rare conditions (a full map:
    /// which function, which process), and goprobe's own counters at the end
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
}

const STACKCOUNT_EXAMPLES: &str = "\
Examples:
  goprobe stackcount -p 4242 'go:database/sql.(*DB).QueryContext'
  goprobe stackcount -b /usr/bin/caddy -d 10 --folded 'go:net/http.(*conn).serve' > stacks.folded
  goprobe stackcount -p 4242 -d 30 --svg calls.svg --pprof calls.pb.gz 'go:main.handle*'

Output: each distinct stack, innermost frame first with file:line and inlined frames marked, then
its count; least frequent first, like bcc's stackcount. A stack that cannot be followed further
ends with a [truncated: ...] frame saying why (a runtime stack switch, C code).";

pub fn run(args: StackcountArgs) -> anyhow::Result<()> {
    let pattern = Pattern::parse(&args.pattern, args.regex)?;
    let selection = select(&pattern, &args.pids, args.binary.as_ref())?;
    let processes = check_targets(&selection)?;
    let mut tracer = Tracer::with_probes(pattern, attach_mode_from_env(), Probes::StackCount)?;
    tracer.attach_limit = AttachLimit::unless_forced(args.force);
    let tracked = attach_targets(&mut tracer, &selection, &processes, args.verbose)?;
    let mut host = start_host_wide(&mut tracer, &selection, args.verbose)?;
    let mut symbolizer = Symbolizer::default();
    for process in &processes {
        symbolizer.observe(process.pid);
    }
    let mut sites = HashMap::new();
    preload_sites(&tracer, &mut symbolizer, &mut sites);

    let banner = format!(
        "Tracing {} functions for \"{}\"... Hit Ctrl-C to end.",
        tracer.traced_names.len(),
        args.pattern
    );
    if args.folded {
        eprintln!("{banner}");
    } else {
        println!("{banner}");
        let _ = std::io::stdout().flush();
    }
    if let Some(host) = host.as_mut() {
        host.announce = true;
    }
    let started = Instant::now();
    let start_time = SystemTime::now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // Timers and signal handlers belong to the runtime: the run is made inside it.
        let mut run = Run::new(args.duration)?
            .targets(&selection, tracked)
            .host_wide(host.take())
            .follow_execs(&mut tracer)
            .verbose(args.verbose);
        event_loop(&mut tracer, &mut symbolizer, &mut sites, &mut run).await
    })?;
    tracer.detach_all();
    let elapsed = started.elapsed();

    let counts = stacks::read_stack_counts(tracer.kernel().ebpf());
    let mut reader = StackReader::default();
    let mut merged: HashMap<Stack, u64> = HashMap::new();
    for (key, count) in &counts {
        let stack = match reader.get(tracer.kernel().ebpf(), key.stack) {
            Some(trace) => {
                // A process that exited before its maps were read: its binary is placed where
                // the entry site of the counted function was hit (the stack's first PC).
                symbolizer.observe(key.tgid);
                if let Some(&(binary, offset)) = sites.get(&key.func) {
                    symbolizer.assume_site(key.tgid, binary, offset, trace.pcs[0]);
                }
                symbolizer.user_stack(key.tgid, &trace, key.leaf, None)
            }
            None => vec![crate::symbolize::Location {
                address: 0,
                kind: crate::symbolize::Kind::Truncated,
                mapping: None,
                lines: vec![crate::symbolize::Line {
                    function: "[truncated: stack not kept (map full)]".into(),
                    file: String::new(),
                    line: 0,
                }],
            }],
        };
        *merged.entry(stack).or_default() += count;
    }
    let mut sorted: Vec<(Stack, u64)> = merged.into_iter().collect();
    // Least frequent first, as bcc's stackcount: the busiest stacks end up next to the prompt.
    sorted.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));

    let folded = flamegraph::folded_lines(sorted.iter().map(|(s, c)| (&s[..], *c)));
    let mut stdout = std::io::stdout().lock();
    if args.folded {
        flamegraph::write_folded(&mut stdout, &folded)?;
    } else {
        for (stack, count) in &sorted {
            writeln!(stdout)?;
            stacktext::write_stack(&mut stdout, stack, "  ")?;
            writeln!(stdout, "    {count}")?;
        }
        writeln!(stdout)?;
        writeln!(stdout, "Detaching...")?;
    }
    stdout.flush()?;
    if let Some(path) = &args.pprof {
        let mut builder = ProfileBuilder::new(&[("calls", "count")], None);
        builder.comment(&format!("goprobe stackcount {}", args.pattern));
        for (stack, count) in &sorted {
            builder.add(stack, &[*count as i64], &[]);
        }
        let start_ns = start_time
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        crate::outputs::pprof::write_file(
            &builder.finish(start_ns, elapsed.as_nanos() as i64),
            path,
        )?;
    }
    if let Some(path) = &args.svg {
        flamegraph::write_svg(
            path,
            &folded,
            &format!("goprobe stackcount {}", args.pattern),
            "calls",
        )?;
    }
    if args.verbose {
        let fields: serde_json::Map<String, serde_json::Value> =
            stacks::counters(tracer.kernel().ebpf())
                .into_iter()
                .map(|(name, value)| (name.to_string(), value.into()))
                .collect();
        eprintln!("goprobe: counters {}", serde_json::Value::Object(fields));
    }
    Ok(())
}

/// Open every traced binary while a process of it is alive, and note where each function's entry
/// site is in it (function id → (binary, file offset)).
fn preload_sites(
    tracer: &Tracer,
    symbolizer: &mut Symbolizer,
    sites: &mut HashMap<u32, ((u64, u64), u64)>,
) {
    for (_, func, offset) in tracer.entry_sites() {
        if sites.contains_key(&func) {
            continue;
        }
        if let Some(info) = tracer.functions.get(func)
            && let Some(binary) = symbolizer.preload(&info.binary)
        {
            sites.insert(func, (binary, offset));
        }
    }
}

async fn event_loop(
    tracer: &mut Tracer,
    symbolizer: &mut Symbolizer,
    sites: &mut HashMap<u32, ((u64, u64), u64)>,
    run: &mut Run,
) -> anyhow::Result<()> {
    loop {
        match run.next(tracer).await {
            Event::Stop => break,
            Event::Drained | Event::Interval => {}
            Event::Discovered | Event::Reattached { .. } => {
                preload_sites(tracer, symbolizer, sites)
            }
            Event::Scanned => {
                // Read how each process that made a counted call maps its code while it runs.
                for tgid in counted_tgids(tracer) {
                    symbolizer.observe(tgid);
                }
                if run.host.is_some() {
                    preload_sites(tracer, symbolizer, sites);
                }
            }
        }
    }
    Ok(())
}

fn counted_tgids(tracer: &Tracer) -> HashSet<u32> {
    tracer
        .kernel()
        .ebpf()
        .map(crate::kernel::maps::name::STACK_COUNTS)
        .and_then(|m| BpfHashMap::<&MapData, StackCountKey, u64>::try_from(m).ok())
        .map(|m| m.keys().filter_map(Result::ok).map(|k| k.tgid).collect())
        .unwrap_or_default()
}

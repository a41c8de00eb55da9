//! `goprobe funclatency`: a short-lived tracer with one pattern, printing histograms.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    io::Write as _,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail};
use goprobe_common::counter;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    cli::FunclatencyArgs,
    kernel::AttachMode,
    outputs::{self, FunctionSites, Report, Row},
    pipeline::{Latencies, Unit},
    plan::Pattern,
    targets::{self, BinaryKey, Process},
    tracer::{BinaryState, Selection, Tracer},
};

/// How often the ring buffer is drained. 4 MiB of ring holds ~100k events, so 20 ms leaves a
/// wide margin at 100k events/s while costing nothing when idle.
const DRAIN_EVERY: Duration = Duration::from_millis(20);
/// How often /proc is scanned for new processes (host-wide) or exited ones (-p).
const SCAN_EVERY: Duration = Duration::from_millis(200);
/// How often entries of exited processes are swept from the goroutine map.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

pub fn run(args: FunclatencyArgs) -> anyhow::Result<()> {
    let pattern = Pattern::parse(&args.pattern, args.regex)?;
    let selection = selection(&args, &pattern)?;
    let mode = match std::env::var("GOPROBE_ATTACH").as_deref() {
        Ok("multi") => Some(AttachMode::Multi),
        Ok("single") | Ok("per-site") => Some(AttachMode::PerSite),
        _ => None,
    };

    // Everything that can be checked without touching a target is checked before loading BPF.
    let processes = match &selection {
        Selection::Pids(pids) => pids
            .iter()
            .map(|&pid| Process::get(pid))
            .collect::<Result<Vec<_>, _>>()?,
        _ => Vec::new(),
    };
    if let Selection::Binary(path) = &selection {
        std::fs::File::open(path)
            .with_context(|| format!("cannot read binary {}", path.display()))?;
    }

    let mut tracer = Tracer::new(pattern, mode)?;
    let verbose = args.verbose;
    if verbose {
        eprintln!("goprobe: attach mode {:?}", tracer.kernel().mode());
    }
    let mut tracked_pids: HashSet<u32> = HashSet::new();
    match &selection {
        Selection::Pids(_) => {
            for process in &processes {
                tracer.plan(process.binary, &process.exe);
                if let Some(BinaryState::Skipped { reason, names }) =
                    tracer.binary_state(&process.binary)
                {
                    let hint = closest_hint(&tracer.pattern, names);
                    bail!(
                        "PID {} ({}): {reason}{hint}",
                        process.pid,
                        process.exe_name.display()
                    );
                }
                let attached = tracer.attach(process.binary, &process.exe, Some(process.pid))?;
                report_attached(verbose, &attached, Some(process.pid), &process.exe_name);
                tracked_pids.insert(process.pid);
            }
        }
        Selection::Binary(path) => {
            let key = BinaryKey::of(path)
                .with_context(|| format!("cannot read binary {}", path.display()))?;
            tracer.plan(key, path);
            if let Some(BinaryState::Skipped { reason, names }) = tracer.binary_state(&key) {
                let hint = closest_hint(&tracer.pattern, names);
                bail!("{}: {reason}{hint}", path.display());
            }
            let attached = tracer.attach(key, path, None)?;
            report_attached(verbose, &attached, None, path);
        }
        Selection::HostWide => {
            let found = scan_host(&mut tracer, &mut HashMap::new(), verbose);
            if found == 0 {
                let suggestions = tracer.suggestions(5);
                let hint = if suggestions.is_empty() {
                    String::new()
                } else {
                    format!("; closest names: {}", suggestions.join(", "))
                };
                bail!(
                    "no running Go process has a function matching {:?} (check the name with `goprobe symbols BINARY`, or select a process with -p/-b){hint}",
                    tracer.pattern.name
                );
            }
        }
    }

    let banner = format!(
        "Tracing {} functions for \"{}\"... Hit Ctrl-C to end.",
        tracer.traced_names.len(),
        args.pattern
    );
    if args.json {
        eprintln!("{banner}");
    } else {
        println!("{banner}");
        let _ = std::io::stdout().flush();
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(event_loop(&mut tracer, &args, &selection, tracked_pids))?;

    tracer.detach_all();
    tracer.drain();
    print_interval(&mut tracer, &args, None)?;
    if verbose {
        print_counters(&tracer);
    }
    if !args.json {
        println!("Detaching...");
    }
    Ok(())
}

fn selection(args: &FunclatencyArgs, pattern: &Pattern) -> anyhow::Result<Selection> {
    if let Some(path) = &pattern.binary {
        if let Some(other) = &args.binary
            && other != path
        {
            bail!(
                "the pattern names binary {} but -b names {}: give one",
                path.display(),
                other.display()
            );
        }
        if !args.pids.is_empty() {
            return Ok(Selection::Pids(args.pids.clone()));
        }
        return Ok(Selection::Binary(path.clone()));
    }
    Ok(match (&args.binary, args.pids.is_empty()) {
        (Some(path), _) => Selection::Binary(path.clone()),
        (None, false) => Selection::Pids(args.pids.clone()),
        (None, true) => Selection::HostWide,
    })
}

fn closest_hint(pattern: &Pattern, names: &[String]) -> String {
    let closest = pattern.closest(names.iter().map(String::as_str), 5);
    if closest.is_empty() {
        String::new()
    } else {
        format!("; closest names: {}", closest.join(", "))
    }
}

fn report_attached(
    verbose: bool,
    attached: &crate::tracer::Attached,
    pid: Option<u32>,
    path: &std::path::Path,
) {
    if verbose {
        for refusal in &attached.refused {
            eprintln!(
                "goprobe: not tracing {} in {}: {}",
                refusal.name,
                path.display(),
                refusal.reason
            );
        }
        let whom = pid.map_or_else(
            || "every process running".to_string(),
            |pid| format!("PID {pid}"),
        );
        eprintln!(
            "goprobe: attached {} functions ({} probe sites) in {whom} {}",
            attached.functions,
            attached.sites,
            path.display()
        );
    }
}

/// Look at every process not seen yet (a reused PID is a new process); attach to each new Go
/// binary that matches. Returns how
/// many binaries were attached.
fn scan_host(tracer: &mut Tracer, seen: &mut HashMap<u32, u64>, verbose: bool) -> usize {
    let mut attached_binaries = 0;
    for pid in targets::all_pids() {
        if !targets::first_sight(seen, pid) {
            continue;
        }
        let process = match Process::get(pid) {
            Ok(p) => p,
            Err(e) => {
                if verbose {
                    eprintln!("goprobe: skipping PID {pid}: {e}");
                }
                continue;
            }
        };
        if tracer.is_known(&process.binary) {
            continue;
        }
        match tracer.plan(process.binary, &process.exe) {
            BinaryState::Skipped { reason, .. } => {
                if verbose {
                    eprintln!(
                        "goprobe: skipping PID {pid} ({}): {reason}",
                        process.exe_name.display()
                    );
                }
            }
            BinaryState::Planned { .. } => {
                // No PID filter: every process running this file, now or later, is traced, so
                // new processes of a known binary need no work here.
                match tracer.attach(process.binary, &process.exe, None) {
                    Ok(attached) => {
                        attached_binaries += 1;
                        report_attached(verbose, &attached, Some(pid), &process.exe_name);
                    }
                    Err(e) => eprintln!("goprobe: PID {pid} ({}): {e}", process.exe_name.display()),
                }
            }
        }
    }
    attached_binaries
}

async fn event_loop(
    tracer: &mut Tracer,
    args: &FunclatencyArgs,
    selection: &Selection,
    tracked_pids: HashSet<u32>,
) -> anyhow::Result<()> {
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut drain = tokio::time::interval(DRAIN_EVERY);
    let mut scan = tokio::time::interval(SCAN_EVERY);
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    let interval = args.interval.map(Duration::from_secs);
    let mut print = tokio::time::interval(interval.unwrap_or(Duration::from_secs(3600 * 24 * 365)));
    print.tick().await; // the first tick is immediate
    let deadline = args
        .duration
        .map(|d| tokio::time::Instant::now() + Duration::from_secs(d));
    let until_deadline = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until_deadline);
    let mut seen_pids: HashMap<u32, u64> = HashMap::new();
    for pid in targets::all_pids() {
        targets::first_sight(&mut seen_pids, pid);
    }
    let mut interval_start = Instant::now();

    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = &mut until_deadline => break,
            _ = drain.tick() => { tracer.drain(); }
            _ = print.tick(), if interval.is_some() => {
                tracer.drain();
                print_interval(tracer, args, Some(interval_start.elapsed()))?;
                interval_start = Instant::now();
            }
            _ = scan.tick() => match selection {
                Selection::HostWide => { scan_host(tracer, &mut seen_pids, args.verbose); }
                Selection::Pids(_) => {
                    // Like `perf -p`: when every traced process has exited, there is nothing left.
                    if tracked_pids.iter().all(|&pid| !targets::is_alive(pid)) {
                        if args.verbose {
                            eprintln!("goprobe: every traced process has exited");
                        }
                        break;
                    }
                }
                Selection::Binary(_) => {}
            },
            _ = sweep.tick() => { tracer.sweep(targets::is_alive); }
        }
    }
    Ok(())
}

/// Print this interval's histograms (or the whole run's, without -i) and reset them.
fn print_interval(
    tracer: &mut Tracer,
    args: &FunclatencyArgs,
    elapsed: Option<Duration>,
) -> anyhow::Result<()> {
    let (histograms, lost) = tracer.take_interval();
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
            .map_or_else(|| format!("func#{func}"), |f| f.name.clone())
    };
    let per_function = args.json || args.per_function || tracer.traced_names.len() <= 1;
    let mut rows: BTreeMap<(String, u32), Row> = BTreeMap::new();
    // The row of each function with the most calls carries that function's lost events.
    let mut lost_owner: BTreeMap<u32, ((String, u32), u64)> = BTreeMap::new();
    for ((func, pid), latencies) in histograms {
        let function = if per_function {
            name_of(func)
        } else {
            tracer.pattern.name.clone()
        };
        let key = (function.clone(), pid);
        let row = rows.entry(key.clone()).or_insert_with(|| Row {
            function,
            pid,
            latencies: Latencies::default(),
            lost: 0,
            sites: per_function.then(FunctionSites::default),
        });
        if let (Some(sites), Some(info)) = (row.sites.as_mut(), tracer.functions.get(func)) {
            sites.out_of_line |= info.out_of_line;
            sites.inlined_copies = sites.inlined_copies.max(info.inlined_copies);
        }
        row.latencies.merge(&latencies);
        let owner = lost_owner.entry(func).or_insert((key.clone(), 0));
        if latencies.count > owner.1 {
            *owner = (key, latencies.count);
        }
    }
    let mut total_lost = 0;
    for (func, count) in &lost {
        total_lost += count;
        if let Some((key, _)) = lost_owner.get(func)
            && let Some(row) = rows.get_mut(key)
        {
            row.lost += count;
        }
    }
    let deltas = tracer.counter_deltas();
    let untimed = deltas[counter::ENTRIES_DROPPED as usize] + deltas[counter::MAP_FULL as usize];
    let report = Report {
        rows: rows.into_values().collect(),
        unit,
        time: SystemTime::now(),
        show_time: args.timestamp,
        interval_s: elapsed.map_or(0.0, |d| d.as_secs_f64()),
        lost: total_lost,
        untimed,
    };
    let mut stdout = std::io::stdout().lock();
    if args.json {
        outputs::json::write_report(&mut stdout, &report)?;
    } else {
        outputs::text::write_report(&mut stdout, &report)?;
    }
    Ok(())
}

fn print_counters(tracer: &Tracer) {
    let counters = tracer.counters();
    let mut fields: serde_json::Map<String, serde_json::Value> = goprobe_common::counter::NAMES
        .iter()
        .zip(counters)
        .map(|(name, value)| (name.to_string(), value.into()))
        .collect();
    let open: usize = tracer.kernel().open_goroutines().values().sum();
    fields.insert("open_goroutines".into(), open.into());
    eprintln!("goprobe: counters {}", serde_json::Value::Object(fields));
}

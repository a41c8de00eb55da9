//! `goprobe agent`: the always-on daemon. It drives the same [`Tracer`] as `funclatency`, with
//! the patterns of every configured probe, and attaches each process to the functions of the
//! probes that select it (by executable, process name, container or pod):
//!
//! ```text
//! /proc scan ──> select ──> tracer (inspect once per build ID, plan, attach per PID)
//!                                │ ring buffer: (pid, function id, latency)
//!                                v
//!            fold: (function, pid) → series labels (function, service, container, pod)
//!               ├─> cumulative histograms ─> /metrics, OTLP
//!               └─> this interval's histograms ─> archive (redb), every archive.interval
//! ```
//!
//! A process is known by (PID, start time): a reused PID is a new process, and an exec is seen
//! as a new process behind the same PID. Before a process is re-labelled, the ring buffer is
//! drained and folded, and a process forgotten (it exited, often while the agent looked at
//! others) keeps its labels until the next fold, so every call is counted under the labels it
//! was made with. SIGHUP reloads the config (a config with an error is refused whole, the
//! running one stays); collected histograms are kept across reloads.
pub mod access;
pub use goprobe_input::agent_config as config;
pub mod http;
pub mod labels;
pub mod otlp;
pub mod store;

use std::path::PathBuf;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Args;

use self::{
    config::{Config, Glob},
    http::Shared,
    labels::{PodNames, short_container},
};
use crate::{
    engine::{
        AttachmentId, BinaryState, TraceError, Tracer,
        budget::Budget,
        run::{Run, Tick},
        session::attach_mode_from_env,
    },
    outputs::prometheus::{Health, ShedReport},
    pipeline::{self, Latencies},
    pipeline::{
        archive::{ProfileRecord, Record, Retention},
        history::now_ms,
        series::{Cumulative, SeriesKey},
    },
    plan::Pattern,
    targets::{self, BinaryKey, ExecWatch, Process},
};

/// `goprobe agent`'s arguments.
#[derive(Debug, Args)]
#[deny(missing_docs)]
#[command(after_help = AGENT_EXAMPLES)]
pub struct AgentArgs {
    /// The config file (TOML): probes (functions and the processes they apply to), histogram
    /// buckets, archive and HTTP settings. See the README for every setting
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        env = "GOPROBE_CONFIG"
    )]
    pub config: PathBuf,

    /// Check the config file and exit (0 if it is valid, 2 with the error's file:line if not)
    #[arg(long = "check")]
    pub check: bool,

    /// Also log the kernel programs' rare conditions (a full map, a goroutine whose stack cannot
    /// be read), naming the process and function, at most 20 lines a second; the counters in
    /// /metrics count them either way
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
}

const AGENT_EXAMPLES: &str = "\
Examples:
  goprobe agent --config /etc/goprobe/agent.toml
  goprobe agent --config agent.toml --check        # validate only
  systemd-run --unit goprobe goprobe agent --config /etc/goprobe/agent.toml

SIGHUP reloads the config (a config with an error is refused and the running one stays);
SIGTERM or Ctrl-C writes the last interval to the archive, detaches and exits 0.";

/// The kubelet's pod list is fetched at most this often.
const PODS_EVERY: Duration = Duration::from_secs(15);

/// A probe of the config, compiled.
struct Probe {
    name: String,
    patterns: Vec<Pattern>,
    /// `by` or `pack`: what the calls of each pattern's functions are labelled by.
    arg_requests: crate::plan::args::ArgRequests,
    service: Option<String>,
    exe: Vec<Glob>,
    process: Vec<Glob>,
    container: Vec<Glob>,
    pod: Vec<Glob>,
}

/// A probe's patterns, and what the calls of each are labelled by (`by`, `pack`); the config
/// was checked when read, so a pack's name is known and a `by` parses.
fn probe_patterns(
    p: &goprobe_input::agent_config::ProbeConfig,
) -> (Vec<Pattern>, crate::plan::args::ArgRequests) {
    use crate::plan::args::{ArgRequest, pack, pack_request};
    let filter = p
        .filter
        .as_deref()
        .map(|f| goprobe_input::args::parse_where(f).expect("checked when the config was read"));
    if let Some(name) = &p.pack {
        let pack = pack(name).expect("checked when the config was read");
        let pattern =
            crate::plan::args::pack_pattern(pack, "go").expect("packs' patterns are valid");
        let request = ArgRequest {
            filter,
            ..pack_request(pack)
        };
        return (vec![pattern.clone()], vec![(pattern, request)]);
    }
    let mut patterns = Vec::new();
    let mut requests = Vec::new();
    for (pattern, declared) in p.patterns() {
        if let Some(by) = &p.by {
            let by = goprobe_input::args::parse_by(by).expect("checked when the config was read");
            let request = ArgRequest {
                filter: filter.clone(),
                // No literal of a query leaves the host: `by` on database/sql's functions is
                // normalised as the sql pack's is.
                normalize_sql: pattern.name.contains("database/sql."),
                ..ArgRequest::new(by, declared)
            };
            requests.push((pattern.clone(), request));
        }
        patterns.push(pattern);
    }
    (patterns, requests)
}

impl Probe {
    fn compile(config: &Config) -> Vec<Probe> {
        config
            .probes
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (patterns, arg_requests) = probe_patterns(p);
                Probe {
                    name: config.probe_name(i),
                    patterns,
                    arg_requests,
                    service: p.service.clone(),
                    exe: p.exe.clone(),
                    process: p.process.clone(),
                    container: p.container.clone(),
                    pod: p.pod.clone(),
                }
            })
            .collect()
    }

    /// Whether this probe applies to a process (every condition given must hold).
    fn selects(&self, who: &Who) -> bool {
        let any = |globs: &[Glob], values: &[&str]| {
            globs.is_empty() || globs.iter().any(|g| values.iter().any(|v| g.matches(v)))
        };
        let container = who.container_id.as_deref().unwrap_or_default();
        let pod_values: Vec<&str> = [who.pod_name.as_deref(), who.pod_uid.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        any(&self.exe, &[&who.exe])
            && any(&self.process, &[&who.comm])
            && (self.container.is_empty()
                || (!container.is_empty()
                    && any(&self.container, &[container, short_container(container)])))
            && (self.pod.is_empty() || (!pod_values.is_empty() && any(&self.pod, &pod_values)))
    }

    fn traces(&self, function: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(function))
    }
}

/// What selectors and labels know about a process.
#[derive(Debug, Clone)]
struct Who {
    exe: String,
    comm: String,
    container_id: Option<String>,
    pod_uid: Option<String>,
    pod_name: Option<String>,
    namespace: Option<String>,
}

/// Labels of a traced process.
#[derive(Debug, Clone)]
struct ProcessLabels {
    service: String,
    container: String,
    pod: String,
    namespace: String,
}

#[derive(Debug)]
enum ProcessState {
    /// Not traced (no probe selects it, not Go, nothing matches, or attaching failed).
    Ignored,
    Traced {
        attachment: AttachmentId,
        functions: usize,
        /// Ids of the functions traced for this process: events of others (inlined copies
        /// that share a probe site with a selected function) are not counted.
        ids: BTreeSet<u32>,
        labels: ProcessLabels,
    },
}

/// A traced process forgotten since the last fold: its last calls may still be in the ring
/// buffer, and the next fold counts them under these labels.
#[derive(Debug)]
struct Retired {
    ids: BTreeSet<u32>,
    labels: ProcessLabels,
}

#[derive(Debug)]
struct Tracked {
    start: u64,
    binary: Option<BinaryKey>,
    state: ProcessState,
}

struct Agent {
    config_path: std::path::PathBuf,
    config: Config,
    probes: Vec<Probe>,
    tracer: Tracer,
    processes: HashMap<u32, Tracked>,
    /// Traced processes forgotten since the last fold.
    retired: HashMap<u32, Retired>,
    shared: Arc<Shared>,
    interval: BTreeMap<SeriesKey, Latencies>,
    /// `histogram.split`: this interval's time per state, per series.
    interval_split: BTreeMap<SeriesKey, Vec<u64>>,
    interval_start_ms: u64,
    health: Health,
    pods: PodNames,
    pods_fetched: Option<Instant>,
    otlp: otlp::Exporter,
    /// Continuous profiling of the traced processes (`[profile]`), when it could start.
    profiler: Option<(
        crate::engine::profiler::Profiler,
        crate::symbolize::Symbolizer,
    )>,
    /// The service label of each profiled process, kept until its last profile is written.
    profiled: HashMap<u32, String>,
    /// The overhead budget (`agent.overhead_budget`), unless it is 0.
    budget: Option<Budget>,
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    // The token file is part of the config: `--check` reads it too.
    let token = config.token().map_err(anyhow::Error::msg)?;
    if args.check {
        println!(
            "{}: OK ({} probes)",
            args.config.display(),
            config.probes.len()
        );
        return Ok(());
    }
    // Everything that can fail is checked before any probe is attached, so an error never
    // leaves a half-configured agent behind.
    let listen = config.http.listen;
    let listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("cannot listen on {listen} (http.listen)"))?;
    listener.set_nonblocking(true)?;
    if !listen.ip().is_loopback() && token.is_none() {
        eprintln!(
            "goprobe: warning: the HTTP server listens on {listen}, beyond localhost, without a bearer token: anyone who can reach it reads the metrics and the archive, and profiling (/debug/pprof/profile) is off (set http.bearer_token_file)"
        );
    }
    let archive = Arc::new(store::Store::open(&config.archive.path)?);
    let mode = attach_mode_from_env();
    let probes = Probe::compile(&config);
    let all: Vec<Pattern> = probes.iter().flat_map(|p| p.patterns.clone()).collect();
    let probes_kind = if config.histogram.split {
        crate::kernel::Probes::Split
    } else {
        crate::kernel::Probes::Latency {
            stacks_min_ns: None,
        }
    };
    let mut tracer = Tracer::with_probes(Pattern::any_of(&all), mode, probes_kind)?;
    tracer.keep_names = false;
    tracer.arg_requests = probes.iter().flat_map(|p| p.arg_requests.clone()).collect();
    tracer.aggregator.by_arg.max_values = config.histogram.max_values;
    // Months of running: the rows go to the values with the most calls, not the first seen.
    tracer.aggregator.by_arg.top_k = true;
    let budget =
        (config.agent.overhead_budget.0 > 0.0).then(|| Budget::new(config.agent.overhead_budget.0));
    // Each function attached apart, so that the budget can detach one alone.
    tracer.sheddable = budget.is_some();
    // The kernel's exec events: new processes are looked at as they start, not at the next
    // scan (which a short-lived process would not live to see).
    let execs = tracer
        .watch_execs()
        .inspect_err(|e| {
            eprintln!(
                "goprobe: warning: {e}; new processes are found by the /proc scan only (agent.scan_interval)"
            )
        })
        .ok();

    let start_ms = now_ms();
    let health = Health {
        start_time_s: start_ms as f64 / 1000.0,
        overhead_budget: config.agent.overhead_budget.0,
        not_inspectable: access::Denied::ALL.iter().map(|d| (d.label(), 0)).collect(),
        ..Health::default()
    };
    let otlp = otlp::Exporter::new(config.otlp.as_ref(), start_ms * 1_000_000);
    let shared = Arc::new(Shared {
        metrics: Mutex::new((
            Cumulative::new(&config.histogram.buckets.0, otlp::wants_exact(&config)),
            health.clone(),
        )),
        archive,
        profiling: http::Profiling::new(listen, token.is_some()),
        token,
    });
    let profiler = if config.profile.enabled {
        match crate::engine::profiler::Profiler::start(config.profile.frequency, false) {
            Ok(p) => Some((p, crate::symbolize::Symbolizer::default())),
            Err(e) => {
                eprintln!("goprobe: warning: continuous profiling is off: {e}");
                None
            }
        }
    } else {
        None
    };
    let mut agent = Agent {
        config_path: args.config.clone(),
        config,
        probes,
        tracer,
        processes: HashMap::new(),
        retired: HashMap::new(),
        shared,
        interval: BTreeMap::new(),
        interval_split: BTreeMap::new(),
        interval_start_ms: now_ms(),
        health,
        pods: PodNames::default(),
        pods_fetched: None,
        otlp,
        profiler,
        profiled: HashMap::new(),
        budget,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(agent.run(listener, execs))
}

impl Agent {
    async fn run(
        &mut self,
        listener: std::net::TcpListener,
        execs: Option<ExecWatch>,
    ) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let address = listener.local_addr()?;
        tokio::spawn(http::serve(listener, self.shared.clone()));
        let mut run = Run::new(None)?
            .reloading()?
            .draining(pipeline::DRAIN_EVERY)
            .scan_every(self.config.agent.scan_interval.0)
            .interval(Some(self.config.archive.interval.0))
            .export(self.otlp.enabled().then(|| self.otlp.interval()))
            .execs(execs);

        self.scan();
        eprintln!(
            "goprobe: agent running: {} probes, http://{address}, archive {}, attach mode {:?}",
            self.probes.len(),
            self.config.archive.path.display(),
            self.tracer.kernel().mode()
        );
        loop {
            match run.tick().await {
                Tick::Stop => break,
                Tick::Reload => {
                    let interval = self.config.archive.interval.0;
                    self.reload();
                    run = run.scan_every(self.config.agent.scan_interval.0);
                    if self.config.archive.interval.0 != interval {
                        // The interval in progress is written at the new pace's first tick.
                        run = run.interval(Some(self.config.archive.interval.0));
                    }
                }
                Tick::Drain => self.fold(),
                Tick::Execs(execs) => {
                    // A PID known already exec'd again: count the calls it made so far under
                    // its old labels first, as a scan does.
                    if execs.iter().any(|e| self.processes.contains_key(&e.pid)) {
                        self.fold();
                    }
                    for exec in execs {
                        self.tracer.forget_old_program(&exec);
                        // An exec by another thread than the main one ends the kernel's
                        // attachment for the process (it is tied to the main thread's task):
                        // the process is looked at as a new one, and its old attachment is
                        // detached after the new one is in place (detaching takes a while).
                        let ended = if exec.old_tid != exec.pid {
                            self.processes.remove(&exec.pid)
                        } else {
                            None
                        };
                        self.look_at(exec.pid);
                        if let Some(Tracked {
                            state: ProcessState::Traced { attachment, .. },
                            ..
                        }) = ended
                        {
                            self.tracer.detach(attachment);
                        }
                    }
                }
                Tick::Scan => self.scan(),
                Tick::Sweep => {
                    self.tracer.sweep(targets::is_alive);
                }
                Tick::Interval => self.write_interval(),
                Tick::Export => {
                    self.fold();
                    let guard = self.shared.metrics.lock().expect("metrics lock");
                    self.otlp.export(&guard.0, now_ms() * 1_000_000);
                }
            }
        }
        eprintln!("goprobe: stopping: writing the last interval and detaching");
        self.write_interval();
        let pids: Vec<u32> = self.processes.keys().copied().collect();
        for pid in pids {
            self.forget(pid, "agent stopping", false);
        }
        self.tracer.detach_all();
        Ok(())
    }

    /// Drain the ring buffer and add what came to the series (cumulative and this interval).
    fn fold(&mut self) {
        if let Some((profiler, _)) = &mut self.profiler {
            profiler.drain();
        }
        self.health.events += self.tracer.drain() as u64;
        let histograms = self.tracer.aggregator.take();
        let mut guard = self.shared.metrics.lock().expect("metrics lock");
        for ((func, pid), latencies) in histograms {
            // Calls counted by argument values (`by`, packs) belong to their function.
            let base = self.tracer.functions.base_of(func);
            if let Some((ids, _)) = self.traced(pid)
                && !ids.contains(&base)
            {
                continue;
            }
            let key = self.series_key(func, pid);
            guard.0.add(&key, &latencies);
            if let Some(budget) = self.budget.as_mut() {
                budget.count(pid, base, latencies.count);
            }
            self.interval.entry(key).or_default().merge(&latencies);
        }
        for ((func, pid), split) in std::mem::take(&mut self.tracer.aggregator.split) {
            if let Some(ProcessState::Traced { ids, .. }) =
                self.processes.get(&pid).map(|t| &t.state)
                && !ids.contains(&func)
            {
                continue;
            }
            let key = self.series_key(func, pid);
            guard.0.add_split(&key, &split);
            let totals = self
                .interval_split
                .entry(key)
                .or_insert_with(|| vec![0; goprobe_common::split::STATES]);
            for (total, state) in totals.iter_mut().zip(&split.states) {
                *total = total.saturating_add(state.total_ns);
            }
        }
        drop(guard);
        self.keep_to_budget();
        let mut guard = self.shared.metrics.lock().expect("metrics lock");
        // Their last calls are counted now.
        self.retired.clear();
        let counters = self.tracer.counters();
        self.health.kernel = goprobe_common::counter::NAMES
            .iter()
            .copied()
            .zip(counters)
            .collect();
        (self.health.otlp_exports, self.health.otlp_errors) = self.otlp.counts();
        self.health.binaries_inspected = self.tracer.inspections;
        self.health.inspection_failures = self.tracer.inspection_failures;
        let by = &self.tracer.aggregator.by_arg;
        self.health.by_values = vec![
            ("unreadable", by.unreadable),
            ("over_limit", by.over_limit),
            ("filtered_out", by.filtered_out),
            ("dropped", by.pending_dropped),
            ("other_type", by.other_type),
            ("kept_lost", by.kept_lost),
            ("demoted", by.demoted),
        ];
        self.health.archive_corrupt = self.shared.archive.corrupt_total();
        let (mut processes, mut probes) = (0, 0);
        for tracked in self.processes.values() {
            if let ProcessState::Traced { functions, .. } = tracked.state {
                processes += 1;
                probes += functions as u64;
            }
        }
        self.health.processes_traced = processes;
        self.health.probes_attached = probes;
        self.health.symbolizer_processes = self
            .profiler
            .as_ref()
            .map_or(0, |(_, symbolizer)| symbolizer.processes() as u64);
        guard.1 = self.health.clone();
    }

    /// Shed the hottest functions of each process whose probes are estimated to cost it more
    /// than the overhead budget (once per budget window), and say so.
    fn keep_to_budget(&mut self) {
        let Some(budget) = self.budget.as_mut() else {
            return;
        };
        let functions = &self.tracer.functions;
        let Some(overruns) = budget.check(Instant::now(), |f| {
            functions.get(f).map_or(0, |info| info.call_cost_ns)
        }) else {
            return;
        };
        let limit = budget.limit;
        for overrun in overruns {
            let Some(Tracked {
                state:
                    ProcessState::Traced {
                        attachment, labels, ..
                    },
                ..
            }) = self.processes.get(&overrun.pid)
            else {
                continue;
            };
            let (attachment, service) = (*attachment, labels.service.clone());
            for shed in overrun.shed {
                let function = self.tracer.functions.get(shed.func).map_or_else(
                    || format!("function {}", shed.func),
                    |info| info.name.clone(),
                );
                if !self.tracer.shed(attachment, shed.func) {
                    eprintln!(
                        "goprobe: overhead budget: PID {} ({service}) spends ~{:.1}% of a CPU in {function}'s probes, over the {:.1}% budget, but its inlined copies cannot be detached alone",
                        overrun.pid,
                        shed.cpu_share * 100.0,
                        limit * 100.0
                    );
                    continue;
                }
                eprintln!(
                    "goprobe: overhead budget: detached {function} from PID {} ({service}): {:.0} calls/s cost it ~{:.1}% of a CPU; its probes were ~{:.1}% in all, over the {:.1}% budget (agent.overhead_budget); its histogram stops here",
                    overrun.pid,
                    shed.calls_per_s,
                    shed.cpu_share * 100.0,
                    overrun.estimate * 100.0,
                    limit * 100.0
                );
                self.health.functions_shed += 1;
                self.health.shed.push(ShedReport {
                    pid: overrun.pid,
                    service: service.clone(),
                    function,
                    calls_per_s: shed.calls_per_s,
                    cpu_share: shed.cpu_share,
                    at_ms: now_ms(),
                });
                // The latest 100 are listed.
                if self.health.shed.len() > 100 {
                    self.health.shed.remove(0);
                }
            }
        }
    }

    /// The functions traced in process `pid` and its labels, while it is traced or until the
    /// fold after it was forgotten.
    fn traced(&self, pid: u32) -> Option<(&BTreeSet<u32>, &ProcessLabels)> {
        match self.processes.get(&pid).map(|t| &t.state) {
            Some(ProcessState::Traced { ids, labels, .. }) => Some((ids, labels)),
            _ => self.retired.get(&pid).map(|r| (&r.ids, &r.labels)),
        }
    }

    fn series_key(&self, func: u32, pid: u32) -> SeriesKey {
        let info = self.tracer.functions.get(func);
        let function = info.map_or_else(|| format!("func#{func}"), |f| f.name.clone());
        let by = info.map(|f| f.labels.clone()).unwrap_or_default();
        let pid_label = self.config.histogram.pid_label.then_some(pid);
        match self.traced(pid) {
            Some((_, labels)) => SeriesKey {
                function,
                service: labels.service.clone(),
                container: labels.container.clone(),
                pod: labels.pod.clone(),
                namespace: labels.namespace.clone(),
                pid: pid_label,
                by,
            },
            _ => SeriesKey {
                function,
                pid: pid_label,
                by,
                ..SeriesKey::default()
            },
        }
    }

    /// Write this interval's histograms to the archive and start the next interval.
    fn write_interval(&mut self) {
        self.fold();
        // Right after the fold, before the next drain: no call is counted under a row while
        // it changes value.
        let by_arg = &mut self.tracer.aggregator.by_arg;
        by_arg.rebalance(&mut self.tracer.functions);
        let ttl = self.config.histogram.idle_series_ttl.0;
        self.shared
            .metrics
            .lock()
            .expect("metrics lock")
            .0
            .expire(ttl);
        let end_ms = now_ms();
        let start_ms = std::mem::replace(&mut self.interval_start_ms, end_ms);
        self.write_profiles(start_ms, end_ms);
        let interval = std::mem::take(&mut self.interval);
        let mut split = std::mem::take(&mut self.interval_split);
        if interval.is_empty() {
            return;
        }
        let records: Vec<Record> = interval
            .into_iter()
            .map(|(series, latencies)| Record {
                start_ms,
                end_ms,
                split: split.remove(&series),
                series,
                latencies,
            })
            .collect();
        let retention = Retention {
            max_age_ms: self.config.archive.retention.0.as_millis() as u64,
            max_bytes: self.config.archive.max_size.0,
        };
        // The store logs failures when they start and end, not at every interval.
        match self.shared.archive.write(&records, retention) {
            Ok(()) => self.health.archive_writes += 1,
            Err(_) => self.health.archive_errors += 1,
        }
    }

    /// Archive this interval's CPU profile of each traced process.
    fn write_profiles(&mut self, start_ms: u64, end_ms: u64) {
        let Some((profiler, symbolizer)) = &mut self.profiler else {
            return;
        };
        let profile = profiler.snapshot(symbolizer);
        let pids: BTreeSet<u32> = profile.stacks.iter().map(|s| s.1).collect();
        let mut records = Vec::new();
        // Processes no longer traced have had their last samples in this snapshot.
        let traced: HashSet<u32> = profiler.pids().clone();
        let services = std::mem::take(&mut self.profiled);
        for (pid, service) in &services {
            if traced.contains(pid) {
                self.profiled.insert(*pid, service.clone());
            } else {
                // Its last samples are symbolized (above): its memory maps can go.
                symbolizer.forget(*pid);
            }
        }
        for pid in pids {
            let service = services.get(&pid).cloned().unwrap_or_default();
            let one = profile.of_pid(pid);
            let comment = format!(
                "goprobe agent: PID {pid} {service}, {} Hz",
                self.config.profile.frequency
            );
            match crate::outputs::pprof::to_gzip(&one.to_pprof(&comment)) {
                Ok(pprof_gz) => records.push(ProfileRecord {
                    start_ms,
                    end_ms,
                    pid,
                    service,
                    pprof_gz,
                }),
                Err(e) => eprintln!("goprobe: profile of PID {pid}: {e}"),
            }
        }
        if records.is_empty() {
            return;
        }
        let retention = Retention {
            max_age_ms: self.config.archive.retention.0.as_millis() as u64,
            max_bytes: self.config.archive.max_size.0,
        };
        if self
            .shared
            .archive
            .write_profiles(&records, retention)
            .is_err()
        {
            self.health.archive_errors += 1;
        }
    }

    /// Find processes that started, exec'd or exited since the last scan.
    fn scan(&mut self) {
        // Calls made so far are counted under the labels they were made with.
        self.fold();
        let pids = targets::all_pids();
        let alive: HashSet<u32> = pids.iter().copied().collect();
        let gone: Vec<u32> = self
            .processes
            .keys()
            .filter(|pid| !alive.contains(pid))
            .copied()
            .collect();
        for pid in gone {
            self.forget(pid, "exited", true);
        }
        for pid in pids {
            self.look_at(pid);
        }
    }

    /// A process found by a scan or an exec event: trace it if it is new (a new PID, a reused
    /// one, or an exec) and a probe selects it.
    fn look_at(&mut self, pid: u32) {
        let stat = match targets::stat(pid) {
            Some(stat) if !stat.zombie => stat,
            // Exited (a zombie until its parent reaps it), or gone meanwhile.
            _ => {
                self.forget(pid, "exited", true);
                return;
            }
        };
        let start = stat.start;
        let binary = BinaryKey::of(Path::new(&format!("/proc/{pid}/exe"))).ok();
        if let Some(known) = self.processes.get(&pid) {
            if known.start == start && known.binary == binary {
                return;
            }
            let why = if known.start != start {
                "exited (its PID was reused)"
            } else if binary.is_none() {
                "exited"
            } else {
                "exec'd another binary"
            };
            // The calls made so far go under the old labels, before the new process (or
            // binary) takes the PID.
            self.fold();
            self.forget(pid, why, true);
        }
        let state = if let Some(refused) = access::check(pid) {
            access::report(&mut self.health.not_inspectable, pid, &stat.comm, refused);
            ProcessState::Ignored
        } else if binary.is_some() {
            self.consider(pid, &stat.comm)
        } else {
            ProcessState::Ignored
        };
        self.processes.insert(
            pid,
            Tracked {
                start,
                binary,
                state,
            },
        );
    }

    fn forget(&mut self, pid: u32, why: &str, log: bool) {
        if let Some((profiler, _)) = &mut self.profiler {
            profiler.remove_pid(pid);
        }
        if let Some(budget) = self.budget.as_mut() {
            budget.forget(pid);
        }
        if let Some(Tracked {
            state:
                ProcessState::Traced {
                    attachment,
                    ids,
                    labels,
                    ..
                },
            ..
        }) = self.processes.remove(&pid)
        {
            self.tracer.detach(attachment);
            self.retired.insert(pid, Retired { ids, labels });
            if log {
                eprintln!("goprobe: detached from PID {pid}: {why}");
            }
        }
    }

    /// Decide whether to trace a process that was not seen before, and attach if so.
    fn consider(&mut self, pid: u32, comm: &str) -> ProcessState {
        let Ok(process) = Process::get(pid) else {
            return ProcessState::Ignored;
        };
        let placement = labels::placement(pid);
        if let Some(uid) = &placement.pod_uid {
            self.refresh_pods(uid);
        }
        let exe_name = process.exe_name.to_string_lossy();
        let exe = exe_name
            .strip_suffix(" (deleted)")
            .unwrap_or(&exe_name)
            .to_string();
        let pod = placement
            .pod_uid
            .as_ref()
            .and_then(|uid| self.pods.by_uid.get(uid));
        let who = Who {
            exe,
            comm: comm.to_string(),
            container_id: placement.container_id.clone(),
            pod_uid: placement.pod_uid.clone(),
            pod_name: pod.map(|p| p.0.clone()),
            namespace: pod.map(|p| p.1.clone()),
        };
        let selecting: Vec<usize> = (0..self.probes.len())
            .filter(|&i| self.probes[i].selects(&who))
            .collect();
        if selecting.is_empty() {
            return ProcessState::Ignored;
        }
        // Only probes that chose this process explicitly (by exe, name, container or pod)
        // make a skipped process worth a message; others are every Go process on the host.
        let explicit = selecting.iter().any(|&i| {
            let p = &self.probes[i];
            !(p.exe.is_empty()
                && p.process.is_empty()
                && p.container.is_empty()
                && p.pod.is_empty())
        });
        if let BinaryState::Skipped { reason, .. } = self.tracer.plan(process.binary, &process.exe)
        {
            if explicit {
                eprintln!("goprobe: not tracing PID {pid} ({}): {reason}", who.exe);
            }
            return ProcessState::Ignored;
        }
        let probes = &self.probes;
        let select = |name: &str| selecting.iter().any(|&i| probes[i].traces(name));
        match self
            .tracer
            .attach_selected(process.binary, &process.exe, Some(pid), &select)
        {
            Ok((attached, attachment)) => {
                let names: Vec<&str> = selecting
                    .iter()
                    .map(|&i| self.probes[i].name.as_str())
                    .collect();
                eprintln!(
                    "goprobe: attached {} functions ({} inlined copies, {} probe sites) in PID {pid} ({}) for {}",
                    attached.functions,
                    attached.inlined_copies,
                    attached.sites,
                    who.exe,
                    names.join(", ")
                );
                let service = selecting
                    .iter()
                    .find_map(|&i| self.probes[i].service.clone())
                    .unwrap_or_else(|| {
                        Path::new(&who.exe)
                            .file_name()
                            .map_or_else(|| who.comm.clone(), |n| n.to_string_lossy().into())
                    });
                if let Some((profiler, symbolizer)) = &mut self.profiler {
                    symbolizer.observe(pid);
                    match profiler.add_pid(pid) {
                        Ok(()) => {
                            self.profiled.insert(pid, service.clone());
                        }
                        Err(e) => {
                            symbolizer.forget(pid);
                            eprintln!("goprobe: not profiling PID {pid}: {e:#}");
                        }
                    }
                }
                ProcessState::Traced {
                    attachment,
                    functions: attached.functions,
                    ids: attached.ids,
                    labels: ProcessLabels {
                        service,
                        container: who
                            .container_id
                            .as_deref()
                            .map(|c| short_container(c).to_string())
                            .unwrap_or_default(),
                        pod: who.pod_name.or(who.pod_uid).unwrap_or_default(),
                        namespace: who.namespace.unwrap_or_default(),
                    },
                }
            }
            // The binary has matches, but only for probes that do not select this process.
            Err(TraceError::NoMatch(_)) => ProcessState::Ignored,
            // It exited while goprobe looked at it (a short-lived process): nothing to trace.
            Err(_) if targets::stat(pid).is_none_or(|s| s.zombie) => ProcessState::Ignored,
            Err(e) => {
                self.health.attach_errors += 1;
                eprintln!(
                    "goprobe: cannot attach to PID {pid} ({}): {}",
                    who.exe,
                    crate::kernel::error_chain(&e)
                );
                ProcessState::Ignored
            }
        }
    }

    /// Learn pod names from the kubelet when a pod UID is not known yet (rate-limited).
    fn refresh_pods(&mut self, uid: &str) {
        let Some(url) = &self.config.kubernetes.kubelet_pods_url else {
            return;
        };
        if self.pods.by_uid.contains_key(uid)
            || self.pods_fetched.is_some_and(|t| t.elapsed() < PODS_EVERY)
        {
            return;
        }
        self.pods_fetched = Some(Instant::now());
        let url = expand_env(&url.0);
        match crate::outputs::http::http_get(&url, None)
            .and_then(|body| Ok(serde_json::from_str::<serde_json::Value>(&body)?))
        {
            Ok(list) => self.pods = PodNames::from_pod_list(&list),
            Err(e) => eprintln!("goprobe: kubelet pod list {url}: {e}"),
        }
    }

    /// SIGHUP: read the config again. A config with an error changes nothing.
    fn reload(&mut self) {
        let new = match Config::load(&self.config_path) {
            Ok(c) => c,
            Err(e) => {
                self.health.config_reload_errors += 1;
                eprintln!("goprobe: config reload refused, the running config stays: {e}");
                return;
            }
        };
        for (what, changed) in [
            ("http.listen", new.http.listen != self.config.http.listen),
            (
                "http.bearer_token_file",
                new.http.bearer_token_file != self.config.http.bearer_token_file,
            ),
            ("archive.path", new.archive.path != self.config.archive.path),
            ("otlp", new.otlp.is_some() != self.config.otlp.is_some()),
            (
                "histogram.split",
                new.histogram.split != self.config.histogram.split,
            ),
        ] {
            if changed {
                eprintln!("goprobe: {what} changed: it takes effect when the agent restarts");
            }
        }
        // Count what was collected under the old probes, then start over with the new ones.
        self.fold();
        let pids: Vec<u32> = self.processes.keys().copied().collect();
        for pid in pids {
            self.forget(pid, "config reloaded", false);
        }
        self.processes.clear();
        self.probes = Probe::compile(&new);
        let all: Vec<Pattern> = self
            .probes
            .iter()
            .flat_map(|p| p.patterns.clone())
            .collect();
        self.tracer.set_pattern(Pattern::any_of(&all));
        self.shared
            .metrics
            .lock()
            .expect("metrics lock")
            .0
            .rebucket(&new.histogram.buckets.0);
        let (listen, archive_path, otlp) = (
            self.config.http.listen,
            self.config.archive.path.clone(),
            self.config.otlp.clone(),
        );
        self.config = new;
        // Kept until restart (see above).
        self.config.http.listen = listen;
        self.config.archive.path = archive_path;
        self.config.otlp = otlp;
        self.config.histogram.split = self.tracer.kernel().split();
        self.health.config_reloads += 1;
        eprintln!("goprobe: config reloaded: {} probes", self.probes.len());
        self.scan();
    }
}

/// `${NAME}` replaced by the environment variable NAME (empty if unset): the kubelet's
/// address can come from the downward API (`http://${NODE_NAME}:10255/pods`).
fn expand_env(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        match rest[start + 2..].find('}') {
            Some(end) => {
                let name = &rest[start + 2..start + 2 + end];
                out.push_str(&std::env::var(name).unwrap_or_default());
                rest = &rest[start + 3 + end..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_environment_variables() {
        let path = std::env::var("PATH").unwrap_or_default();
        assert_eq!(expand_env("a${PATH}b"), format!("a{path}b"));
        assert_eq!(
            expand_env("http://${GOPROBE_SURELY_UNSET_VAR}:1/x${"),
            "http://:1/x${"
        );
    }

    fn who(exe: &str, comm: &str, container: Option<&str>, pod: Option<&str>) -> Who {
        Who {
            exe: exe.into(),
            comm: comm.into(),
            container_id: container.map(String::from),
            pod_uid: pod.map(String::from),
            pod_name: None,
            namespace: None,
        }
    }

    #[test]
    fn selectors_must_all_hold() {
        let config = Config::parse(
            Path::new("t.toml"),
            r#"
[[probe]]
functions = ["go:main.a"]
[[probe]]
functions = ["go:main.b"]
exe = ["/srv/**"]
process = ["web*"]
[[probe]]
functions = ["go:main.c"]
container = ["*"]
[[probe]]
functions = ["go:main.d"]
container = ["3f1d7a0b9c8e"]
pod = ["1b2c3d4e-*"]
"#,
        )
        .unwrap();
        let probes = Probe::compile(&config);
        let id = "3f1d7a0b9c8e4f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a";
        let uid = "1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901";
        let host = who("/srv/app/web", "webd", None, None);
        let in_pod = who("/app", "app", Some(id), Some(uid));
        let sel = |w: &Who| -> Vec<bool> { probes.iter().map(|p| p.selects(w)).collect() };
        assert_eq!(sel(&host), [true, true, false, false]);
        assert_eq!(sel(&in_pod), [true, false, true, true]);
        assert_eq!(
            sel(&who("/srv/app/web", "other", None, None)),
            [true, false, false, false]
        );
        assert!(probes[1].traces("main.b") && !probes[1].traces("main.a"));
    }
}

//! The loop every command that traces or samples runs: [`Run`] owns the timers (drain, interval,
//! export, scan, sweep), the signals (stop, and reload for the agent), the kernel's exec events
//! and, host-wide, discovery. Its faces (`funclatency`, `stackcount`, `profile`, the agent)
//! configure it, then consume what it yields:
//! - [`Run::next`] also does the tracer's part of each tick (drain, sweep, host-wide discovery),
//!   for faces over a [`Tracer`];
//! - [`Run::tick`] only says what is due, for faces that drive something else too (the agent's
//!   folding and archive, the sampler of `profile`).
use std::{collections::HashSet, time::Duration};

use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    time::{Instant, Interval},
};

use super::{Selection, Tracer, hostwide::HostWide, stop::Stop};
use crate::targets::{self, Exec, ExecWatch};

/// How often /proc is scanned for new processes (host-wide: a fallback for the exec events, and
/// the processes running before goprobe) or exited ones (-p).
pub const SCAN_EVERY: Duration = Duration::from_millis(200);

/// How often entries of exited processes are swept from the goroutine map.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// What is due, as [`Run::tick`] says it.
#[derive(Debug)]
pub enum Tick {
    /// Ctrl-C, SIGTERM, the end of `-d`, or (with -p) every traced process exited.
    Stop,
    /// SIGHUP (only when the run was made [`Run::reloading`]).
    Reload,
    /// Time to drain the ring buffers.
    Drain,
    /// The `-i` interval (the agent: the archive interval) ended.
    Interval,
    /// Time to push to an exporter (the agent's OTLP).
    Export,
    /// Processes that just exec'd, from the kernel's exec events (host-wide or the agent).
    Execs(Vec<Exec>),
    /// Time to scan /proc.
    Scan,
    /// Time to sweep the state of exited processes.
    Sweep,
}

/// What [`Run::next`] saw and did, for the face to act on.
#[derive(Debug)]
pub enum Event {
    /// Ctrl-C, SIGTERM, the end of `-d`, or (with -p) every traced process exited.
    Stop,
    /// The ring buffer of completed calls was drained into the tracer's aggregator.
    Drained,
    /// The `-i` interval ended (the ring buffer drained first).
    Interval,
    /// New processes (exec events) were looked at, and attached where they match.
    Discovered,
    /// The periodic scan ran: host-wide, the processes found by it were attached.
    Scanned,
    /// A process traced on its own (-p) exec'd, and its new program was attached in its place.
    Reattached {
        pid: u32,
        binary: crate::targets::BinaryKey,
        attached: super::Attached,
    },
}

/// A run of a command: every timer and signal it waits for, in one loop.
pub struct Run {
    stop: Stop,
    reload: Option<Signal>,
    /// Drains the ring buffers; none for commands whose programs send no events (stackcount).
    drain: Option<Interval>,
    /// `-i`, or the agent's archive interval.
    interval: Option<Interval>,
    export: Option<Interval>,
    scan: Interval,
    sweep: Interval,
    selection: Option<Selection>,
    /// -p: the processes whose exit ends the run.
    tracked: Vec<targets::Watched>,
    /// Host-wide discovery (funclatency, stackcount), with its own exec events.
    pub host: Option<HostWide>,
    /// Exec events for a face that discovers processes itself (the agent).
    execs: Option<ExecWatch>,
    /// Events of one tick beyond the first, handed out by the next calls of [`Run::next`].
    pending: Vec<Event>,
    verbose: bool,
}

/// An interval whose first tick is one period from now (tokio's first tick is immediate).
fn every(period: Duration) -> Interval {
    tokio::time::interval_at(Instant::now() + period, period)
}

impl Run {
    /// Start listening for the stop signals; `duration`: `-d` in seconds. Call it inside the
    /// tokio runtime: timers and signal handlers belong to it.
    pub fn new(duration: Option<u64>) -> std::io::Result<Self> {
        Ok(Self {
            stop: Stop::new(duration)?,
            reload: None,
            drain: None,
            interval: None,
            export: None,
            scan: every(SCAN_EVERY),
            sweep: every(SWEEP_EVERY),
            selection: None,
            tracked: Vec::new(),
            host: None,
            execs: None,
            pending: Vec::new(),
            verbose: false,
        })
    }

    /// The programs send events: drain them every `period` ([`crate::pipeline::DRAIN_EVERY`]
    /// for the latency ring buffer).
    pub fn draining(mut self, period: Duration) -> Self {
        self.drain = Some(every(period));
        self
    }

    /// End an interval every `period` (none: a single report at the end). A period too long
    /// for the clock (`-i 18446744073709551615`: adding it to now would panic) never ends
    /// within the run, the same as none.
    pub fn interval(mut self, period: Option<Duration>) -> Self {
        self.interval = period
            .filter(|&p| Instant::now().checked_add(p).is_some())
            .map(every);
        self
    }

    /// Yield [`Tick::Export`] every `period`.
    pub fn export(mut self, period: Option<Duration>) -> Self {
        self.export = period.map(every);
        self
    }

    /// Scan /proc every `period` instead of [`SCAN_EVERY`].
    pub fn scan_every(mut self, period: Duration) -> Self {
        self.scan = every(period);
        self
    }

    /// What the run traces; with -p, `tracked` are the processes whose exit ends it.
    pub fn targets(mut self, selection: &Selection, tracked: HashSet<u32>) -> Self {
        self.selection = Some(selection.clone());
        self.tracked = tracked.into_iter().map(targets::Watched::new).collect();
        self
    }

    /// Host-wide: discover processes through `host`.
    pub fn host_wide(mut self, host: Option<HostWide>) -> Self {
        self.host = host;
        self
    }

    /// Yield the processes the kernel's exec events announce, as [`Tick::Execs`].
    pub fn execs(mut self, execs: Option<ExecWatch>) -> Self {
        self.execs = execs;
        self
    }

    /// With -p or -b, follow the traced processes through their execs: an exec makes a new
    /// process, which [`Run::next`] hands to [`Tracer::exec`]. (Host-wide discovery has exec
    /// events of its own.)
    pub fn follow_execs(mut self, tracer: &mut Tracer) -> Self {
        if self.host.is_none() && self.execs.is_none() {
            self.execs = tracer
                .watch_execs()
                .inspect_err(|e| {
                    eprintln!("goprobe: warning: {e}; a traced process that execs is not followed")
                })
                .ok();
        }
        self
    }

    /// Yield [`Tick::Reload`] on SIGHUP.
    pub fn reloading(mut self) -> std::io::Result<Self> {
        self.reload = Some(signal(SignalKind::hangup())?);
        Ok(self)
    }

    pub fn verbose(mut self, verbose: bool) -> Self {
        self.verbose = verbose;
        self
    }

    pub fn selection(&self) -> Option<&Selection> {
        self.selection.as_ref()
    }

    /// Wait for what is due next. Cancel-safe: every branch is.
    pub async fn tick(&mut self) -> Tick {
        async fn due(interval: &mut Option<Interval>) {
            match interval {
                Some(interval) => {
                    interval.tick().await;
                }
                None => std::future::pending().await,
            }
        }
        async fn hangup(signal: &mut Option<Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = self.stop.wait() => {
                crate::kernel::log::flush();
                Tick::Stop
            }
            _ = hangup(&mut self.reload) => Tick::Reload,
            _ = due(&mut self.drain) => Tick::Drain,
            _ = due(&mut self.interval) => Tick::Interval,
            _ = due(&mut self.export) => Tick::Export,
            execs = next_execs(&mut self.host, &mut self.execs) => Tick::Execs(execs),
            _ = self.scan.tick() => {
                crate::kernel::log::flush();
                // Like `perf -p`: when every traced process has exited, there is nothing left.
                if matches!(self.selection, Some(Selection::Pids(_)))
                    && self.tracked.iter().all(targets::Watched::exited)
                {
                    if self.verbose {
                        eprintln!("goprobe: every traced process has exited");
                    }
                    return Tick::Stop;
                }
                Tick::Scan
            }
            _ = self.sweep.tick() => Tick::Sweep,
        }
    }

    /// Wait for the next thing that happens to a run over `tracer`, and do the engine's part of
    /// it: drain, sweep and host-wide discovery.
    pub async fn next(&mut self, tracer: &mut Tracer) -> Event {
        if let Some(event) = self.pending.pop() {
            return event;
        }
        loop {
            match self.tick().await {
                Tick::Stop => return Event::Stop,
                Tick::Drain => {
                    tracer.drain();
                    return Event::Drained;
                }
                Tick::Interval => {
                    tracer.drain();
                    return Event::Interval;
                }
                Tick::Execs(execs) => {
                    for exec in &execs {
                        let ours = self.tracked.iter().any(|t| t.pid() == exec.pid);
                        match tracer.exec(exec) {
                            Some(Ok((binary, attached))) if ours => {
                                if self.verbose {
                                    eprintln!(
                                        "goprobe: PID {} exec'd: attached {} functions ({} probe sites) in its new program, {:.1} ms after the exec",
                                        exec.pid,
                                        attached.functions,
                                        attached.sites,
                                        targets::monotonic_ns().saturating_sub(exec.ktime_ns)
                                            as f64
                                            / 1e6
                                    );
                                }
                                self.pending.push(Event::Reattached {
                                    pid: exec.pid,
                                    binary,
                                    attached,
                                });
                            }
                            Some(Err(e)) => eprintln!(
                                "goprobe: PID {} exec'd {}, which is not traced: {}",
                                exec.pid,
                                exec.exe_name
                                    .as_deref()
                                    .unwrap_or(std::path::Path::new(&exec.comm))
                                    .display(),
                                crate::kernel::error_chain(&e)
                            ),
                            _ => {}
                        }
                    }
                    if let Some(host) = self.host.as_mut() {
                        host.on_execs(tracer, execs);
                        return Event::Discovered;
                    }
                    if let Some(event) = self.pending.pop() {
                        return event;
                    }
                }
                Tick::Scan => {
                    if let Some(host) = self.host.as_mut() {
                        host.scan(tracer);
                    }
                    return Event::Scanned;
                }
                Tick::Sweep => {
                    tracer.sweep(targets::is_alive);
                }
                Tick::Reload | Tick::Export => {}
            }
        }
    }
}

/// The next exec events: host-wide discovery's, or the face's (never, with neither; a watch
/// that stopped is dropped, leaving the scan).
async fn next_execs(host: &mut Option<HostWide>, execs: &mut Option<ExecWatch>) -> Vec<Exec> {
    if let Some(host) = host {
        return host.next_execs().await;
    }
    let Some(watch) = execs.as_mut() else {
        return std::future::pending().await;
    };
    match watch.next().await {
        Some(new) => new,
        None => {
            eprintln!(
                "goprobe: exec events stopped; new processes are found by the /proc scan only"
            );
            *execs = None;
            Vec::new()
        }
    }
}

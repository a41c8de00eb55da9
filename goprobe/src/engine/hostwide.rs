//! Host-wide tracing (neither -p nor -b): every process whose binary has a matching function,
//! running now or started later.
//!
//! * New processes come from the kernel's exec events (goprobe-ebpf/src/exec.rs) as they start; a
//!   /proc scan finds the processes that ran before goprobe, and any whose event was lost.
//! * A matching binary FILE is attached once, for every process: later processes of that file
//!   are covered by the kernel from their exec, before their first instruction, with no work
//!   here. So only the first process of a new binary can make calls before goprobe attaches.
//! * The executable is opened when its process is first seen, and inspected and attached through
//!   that open file (`/proc/self/fd/N`): a process that has exited meanwhile still gives its
//!   binary. Files of matching binaries stay open for the run (symbols are read from them).
//! * Every process with a match is recorded with the time from which its calls are counted,
//!   so the output says which calls can be missing: those made before that time.
use std::{
    collections::{BTreeSet, HashMap, HashSet},
    path::PathBuf,
    time::SystemTime,
};

use crate::{
    engine::{BinaryState, TraceError, Tracer},
    kernel::KernelError,
    outputs::clock_time_ms,
    targets::{self, BinaryKey, Exec, ExecWatch, OpenExe, Sighting},
};

/// A process whose binary has a match.
#[derive(Debug, Clone)]
struct SeenProcess {
    binary: BinaryKey,
    /// When it ran its program (the exec event) or, found by a scan, when it started; on
    /// CLOCK_MONOTONIC.
    started_ns: u64,
    /// From when its calls are counted (CLOCK_MONOTONIC): its start, when its binary was attached
    /// before it; else the attach. `None`: not traced (it exited before the attach, or attaching
    /// its binary failed).
    traced_from_ns: Option<u64>,
}

/// How many processes host-wide tracing saw, and traced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Processes whose binary has a match (and processes of such a binary whose calls were
    /// counted though goprobe never saw them, having exited before it could look).
    pub seen: usize,
    /// Of those, processes whose calls were counted from some point on.
    pub traced: usize,
    /// Seen processes that exited before their binary was attached.
    pub exited_before_attach: usize,
    /// New processes that exited before goprobe could open their executable: their binary is
    /// unknown (any of them could have had a match).
    pub unidentified: u64,
    /// Exec events the kernel dropped (ring buffer full); the scan found those processes later.
    pub execs_lost: u64,
}

/// A process to look at, with its executable open.
struct Look {
    pid: u32,
    exe: OpenExe,
    exe_name: PathBuf,
    /// [`targets::Stat::start`] (0 if unknown), to tell whether it still runs.
    start_ticks: u64,
    /// When it exec'd or started, on CLOCK_MONOTONIC.
    started_ns: u64,
}

pub struct HostWide {
    verbose: bool,
    /// Announce every attach on stderr, with its time (set once the banner is out; before, the
    /// attaches happen at start and -v reports them).
    pub announce: bool,
    seen: HashMap<u32, Sighting>,
    /// Open executables of the binaries with a match: attached through, and read for symbols.
    files: HashMap<BinaryKey, OpenExe>,
    /// When each matching binary's probes were in place (CLOCK_MONOTONIC).
    attached: HashMap<BinaryKey, u64>,
    /// The ids of the functions attached in each binary.
    functions: HashMap<BinaryKey, BTreeSet<u32>>,
    /// Matching binaries whose attach failed (reported once).
    failed: HashSet<BinaryKey>,
    /// The latest process of each PID with a match.
    processes: HashMap<u32, SeenProcess>,
    /// Processes with a match, traced, and exited before the attach, over the run.
    seen_count: usize,
    traced_count: usize,
    exited_before_attach: usize,
    /// Processes with counted calls that goprobe did not see (see [`Summary::seen`]).
    counted_unseen: HashSet<u32>,
    unidentified: u64,
    execs: Option<ExecWatch>,
}

impl HostWide {
    /// Start watching execs, then look at every running process and attach the binaries that
    /// match. Exec events come first, so a process starting during the scan is not missed.
    pub fn start(tracer: &mut Tracer, verbose: bool) -> Self {
        let execs = tracer
            .watch_execs()
            .inspect_err(|e| {
                eprintln!(
                    "goprobe: {e}; new processes are found by a /proc scan every 200 ms, and one that lives shorter may be missed"
                )
            })
            .ok();
        let mut host = Self {
            verbose,
            announce: false,
            seen: HashMap::new(),
            files: HashMap::new(),
            attached: HashMap::new(),
            functions: HashMap::new(),
            failed: HashSet::new(),
            processes: HashMap::new(),
            seen_count: 0,
            traced_count: 0,
            exited_before_attach: 0,
            counted_unseen: HashSet::new(),
            unidentified: 0,
            execs,
        };
        host.scan(tracer);
        host
    }

    /// Binaries attached so far.
    pub fn attached_binaries(&self) -> usize {
        self.attached.len()
    }

    /// The line printed while no process matches: what goprobe waits for, and the names closest
    /// to the pattern in the Go binaries running now (a typo shows at once).
    pub fn waiting_line(tracer: &Tracer) -> String {
        let suggestions = tracer.suggestions(5);
        let hint = if suggestions.is_empty() {
            String::new()
        } else {
            format!(
                " (closest names in running Go binaries: {})",
                suggestions.join(", ")
            )
        };
        format!(
            "waiting for a Go process with a function matching {}{hint}",
            tracer.pattern.quoted()
        )
    }

    /// Look at every process not seen yet (a reused PID or an exec makes a new one).
    pub fn scan(&mut self, tracer: &mut Tracer) {
        // Exec events first: they carry the exact start.
        self.poll_execs(tracer);
        let pids = targets::all_pids();
        let alive: HashSet<u32> = pids.iter().copied().collect();
        self.seen.retain(|pid, _| alive.contains(pid));
        for pid in pids {
            if !targets::first_sight(&mut self.seen, pid) {
                continue;
            }
            let stat = targets::stat(pid);
            // Gone meanwhile, or a kernel thread.
            let Ok(exe) = OpenExe::of(pid) else { continue };
            let start_ticks = stat.as_ref().map_or(0, |s| s.start);
            self.look_at(
                tracer,
                Look {
                    pid,
                    exe_name: std::fs::read_link(format!("/proc/{pid}/exe"))
                        .unwrap_or_else(|_| PathBuf::from(format!("PID {pid}"))),
                    exe,
                    start_ticks,
                    started_ns: targets::start_monotonic_ns(start_ticks),
                },
            );
            // Inspecting a large binary takes a while: processes that started meanwhile are
            // attached before they are gone.
            self.poll_execs(tracer);
        }
    }

    /// Wait for new processes (never returns without exec events).
    pub async fn next_execs(&mut self) -> Vec<Exec> {
        let Some(execs) = self.execs.as_mut() else {
            return std::future::pending().await;
        };
        match execs.next().await {
            Some(execs) => execs,
            None => {
                eprintln!(
                    "goprobe: exec events stopped; new processes are found by the /proc scan only"
                );
                self.execs = None;
                Vec::new()
            }
        }
    }

    /// New processes seen by the exec watch so far, handled now.
    pub fn poll_execs(&mut self, tracer: &mut Tracer) {
        if let Some(execs) = self.execs.as_mut().map(ExecWatch::ready) {
            self.on_execs(tracer, execs);
        }
    }

    pub fn on_execs(&mut self, tracer: &mut Tracer, execs: Vec<Exec>) {
        for exec in execs {
            let pid = exec.pid;
            let start_ticks = exec.stat.as_ref().map_or(0, |s| s.start);
            let exe = match exec.exe {
                Ok(exe) => exe,
                Err(e) => {
                    // Gone before it could be looked at: its binary is unknown.
                    self.unidentified += 1;
                    if self.verbose {
                        eprintln!(
                            "goprobe: PID {pid} ({}) exited before its executable could be read: {e}",
                            exec.comm
                        );
                    }
                    continue;
                }
            };
            if !targets::sighted(&mut self.seen, pid, (start_ticks, Some(exe.binary))) {
                continue;
            }
            self.look_at(
                tracer,
                Look {
                    pid,
                    exe,
                    exe_name: exec.exe_name.unwrap_or_else(|| PathBuf::from(exec.comm)),
                    start_ticks,
                    started_ns: exec.ktime_ns,
                },
            );
        }
    }

    /// A process seen for the first time, its executable open: plan its binary once, attach a
    /// matching binary once for every process, and record the process if it has a match.
    fn look_at(&mut self, tracer: &mut Tracer, look: Look) {
        let Look {
            pid,
            exe,
            exe_name,
            start_ticks,
            started_ns,
        } = look;
        let key = exe.binary;
        self.seen.insert(pid, (start_ticks, Some(key)));
        if !tracer.is_known(&key)
            && let BinaryState::Skipped { reason, .. } = tracer.plan(key, &exe.path())
            && self.verbose
        {
            eprintln!(
                "goprobe: skipping PID {pid} ({}): {reason}",
                exe_name.display()
            );
        }
        if !matches!(tracer.binary_state(&key), Some(BinaryState::Planned { .. })) {
            return;
        }
        if !self.attached.contains_key(&key) && !self.failed.contains(&key) {
            self.attach(tracer, pid, &exe_name, exe, started_ns);
        }
        let traced_from_ns = match self.attached.get(&key) {
            None => None,
            // Started after its binary was attached: the kernel covered it from its exec.
            Some(&at) if started_ns >= at => Some(started_ns),
            // Started before: traced from the attach, if it was still running.
            Some(&at) if targets::is_running(pid, start_ticks) => Some(at),
            Some(_) => None,
        };
        if self.verbose && traced_from_ns == Some(started_ns) {
            eprintln!(
                "goprobe: PID {pid} ({}) traced from its start",
                exe_name.display()
            );
        }
        self.seen_count += 1;
        if traced_from_ns.is_some() {
            self.traced_count += 1;
        } else if !self.failed.contains(&key) {
            // (A failed attach was reported when it happened.)
            self.exited_before_attach += 1;
        }
        self.processes.insert(
            pid,
            SeenProcess {
                binary: key,
                started_ns,
                traced_from_ns,
            },
        );
    }

    fn attach(
        &mut self,
        tracer: &mut Tracer,
        pid: u32,
        exe_name: &std::path::Path,
        exe: OpenExe,
        started_ns: u64,
    ) {
        let key = exe.binary;
        let path = exe.path();
        // Held open for the run: the probes and the symbols are reached through it.
        self.files.insert(key, exe);
        match tracer.attach(key, &path, None) {
            Ok(attached) => {
                let at = targets::monotonic_ns();
                self.attached.insert(key, at);
                self.functions
                    .entry(key)
                    .or_default()
                    .extend(attached.ids.iter().copied());
                if self.announce {
                    let when = clock_time_ms(targets::wall_time(at));
                    let name = exe_name.display();
                    if targets::stat(pid).is_some_and(|s| !s.zombie) {
                        eprintln!(
                            "goprobe: attached to PID {pid} ({name}) at {when}, {} after it started: its calls before are not counted",
                            since(started_ns, at)
                        );
                    } else {
                        eprintln!(
                            "goprobe: attached to {name} at {when}, after PID {pid} exited: its calls are not counted; later processes of this file are traced from their start"
                        );
                    }
                }
                if self.verbose {
                    for refusal in &attached.refused {
                        eprintln!(
                            "goprobe: not tracing {} in {}: {}",
                            refusal.name,
                            exe_name.display(),
                            refusal.reason
                        );
                    }
                    eprintln!(
                        "goprobe: attached {} functions ({} probe sites) in PID {pid} {}",
                        attached.functions,
                        attached.sites,
                        exe_name.display()
                    );
                }
            }
            Err(e) => {
                self.failed.insert(key);
                // The message names the file as the user knows it, not the descriptor.
                let why = match e {
                    TraceError::Kernel(KernelError::Attach {
                        sites,
                        hint,
                        source,
                        ..
                    }) => {
                        format!(
                            "attaching {sites} probes failed{hint}: {}",
                            crate::kernel::error_chain(source.as_ref())
                        )
                    }
                    other => crate::kernel::error_chain(&other),
                };
                eprintln!("goprobe: PID {pid} ({}): {why}", exe_name.display());
            }
        }
    }

    /// Note the processes whose calls were counted (each report's rows), for the summary. A
    /// process gone before goprobe could tell whether it still ran at the attach, but with
    /// counted calls, was traced from the attach.
    pub fn note_counted(&mut self, pids: impl IntoIterator<Item = u32>) {
        for pid in pids {
            match self.processes.get_mut(&pid) {
                None => {
                    self.counted_unseen.insert(pid);
                }
                Some(process) if process.traced_from_ns.is_none() => {
                    if let Some(&at) = self.attached.get(&process.binary) {
                        process.traced_from_ns = Some(at.max(process.started_ns));
                        self.traced_count += 1;
                        self.exited_before_attach = self.exited_before_attach.saturating_sub(1);
                    }
                }
                Some(_) => {}
            }
        }
    }

    /// When the probes covering `pid` were in place (its start, if its binary was attached
    /// before), and whether that was its start: every call it made counted.
    pub fn coverage(&self, pid: u32) -> Option<(SystemTime, bool)> {
        let process = self.processes.get(&pid)?;
        let from = process.traced_from_ns?;
        Some((targets::wall_time(from), from == process.started_ns))
    }

    /// The functions attached in each binary, by id.
    pub fn attached_functions(&self) -> impl Iterator<Item = (BinaryKey, &BTreeSet<u32>)> + '_ {
        self.functions.iter().map(|(&binary, ids)| (binary, ids))
    }

    /// The processes traced so far (exited ones included), and their binary.
    pub fn traced_processes(&self) -> impl Iterator<Item = (u32, BinaryKey)> + '_ {
        self.processes
            .iter()
            .filter(|(_, p)| p.traced_from_ns.is_some())
            .map(|(&pid, p)| (pid, p.binary))
    }

    pub fn summary(&self, tracer: &Tracer) -> Summary {
        let unseen = self
            .counted_unseen
            .iter()
            .filter(|pid| !self.processes.contains_key(pid))
            .count();
        Summary {
            seen: self.seen_count + unseen,
            traced: self.traced_count + unseen,
            exited_before_attach: self.exited_before_attach,
            unidentified: self.unidentified,
            execs_lost: tracer.kernel().execs_lost(),
        }
    }
}

impl Summary {
    /// `10 seen, 10 traced`, and what was not traced and why.
    pub fn describe(&self) -> String {
        let mut text = format!("{} seen, {} traced", self.seen, self.traced);
        let mut notes = Vec::new();
        if self.exited_before_attach > 0 {
            notes.push(format!(
                "{} exited before goprobe attached to their binary",
                self.exited_before_attach
            ));
        }
        if self.unidentified > 0 {
            notes.push(format!(
                "{} other new processes exited before goprobe could read their executable",
                self.unidentified
            ));
        }
        if self.execs_lost > 0 {
            notes.push(format!(
                "{} exec events lost (buffer full); the /proc scan looked for those processes later",
                self.execs_lost
            ));
        }
        if !notes.is_empty() {
            text.push_str(&format!(" ({})", notes.join("; ")));
        }
        text
    }
}

/// `12 ms`, `3.2 s`, `2 h 5 min`: how long after `from` came `to` (CLOCK_MONOTONIC ns).
fn since(from: u64, to: u64) -> String {
    let ms = to.saturating_sub(from) / 1_000_000;
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min", ms / 60_000),
        _ => format!("{} h {} min", ms / 3_600_000, ms / 60_000 % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        let ms = 1_000_000;
        assert_eq!(since(0, 12 * ms), "12 ms");
        assert_eq!(since(5, 0), "0 ms");
        assert_eq!(since(0, 3_200 * ms), "3.2 s");
        assert_eq!(since(0, 125_000 * ms), "2 min");
        assert_eq!(since(0, 7_500_000 * ms), "2 h 5 min");
    }

    #[test]
    fn summary_says_what_was_missed() {
        let mut s = Summary {
            seen: 10,
            traced: 10,
            ..Summary::default()
        };
        assert_eq!(s.describe(), "10 seen, 10 traced");
        s.traced = 9;
        s.exited_before_attach = 1;
        s.unidentified = 2;
        assert_eq!(
            s.describe(),
            "10 seen, 9 traced (1 exited before goprobe attached to their binary; 2 other new processes exited before goprobe could read their executable)"
        );
    }
}

//! What every command that traces does the same way: select the processes (-p, -b or host-wide),
//! check them before anything is loaded, and attach the plan to them. The run that follows is
//! [`super::run::Run`].
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    path::PathBuf,
    time::{Instant, SystemTime},
};

use anyhow::{Context as _, bail};

use super::{BinaryState, Selection, Tracer, hostwide::HostWide};
use crate::{
    kernel::AttachMode,
    plan::Pattern,
    targets::{self, BinaryKey, Process},
};

/// `GOPROBE_ATTACH=multi|single` forces an attach mode (tests compare both).
pub fn attach_mode_from_env() -> Option<AttachMode> {
    match std::env::var("GOPROBE_ATTACH").as_deref() {
        Ok("multi") => Some(AttachMode::Multi),
        Ok("single") | Ok("per-site") => Some(AttachMode::PerSite),
        _ => None,
    }
}

/// The processes named by -p, checked before anything is loaded; a -b binary must be readable.
pub fn check_targets(selection: &Selection) -> anyhow::Result<Vec<Process>> {
    let processes = match selection {
        Selection::Pids(pids) => pids
            .iter()
            .map(|&pid| Process::get(pid))
            .collect::<Result<Vec<_>, _>>()?,
        _ => Vec::new(),
    };
    if let Selection::Binary(path) = selection {
        // A regular file: opening a FIFO would block until a writer came.
        crate::inspect::file::open_regular(path)
            .with_context(|| format!("cannot read binary {}", path.display()))?;
    }
    Ok(processes)
}

/// What the report of an interval covers: since when, and the functions attached in each traced
/// process that goprobe knows of. With `--json`, each of these (function, process) pairs gets a
/// line per interval, calls or not. With -p, the processes named; with -b, those the /proc scans
/// (every [`super::run::SCAN_EVERY`]) saw running a traced binary; host-wide, those [`HostWide`] traces. A
/// process is dropped after the first interval that ends with it gone.
#[derive(Debug)]
pub struct Coverage {
    /// When the interval being collected began.
    pub since: Instant,
    /// When the probes of -p and -b were in place (host-wide, [`HostWide`] knows per process).
    pub attached_at: SystemTime,
    /// Ids of the functions attached in each binary.
    by_binary: HashMap<BinaryKey, BTreeSet<u32>>,
    processes: BTreeMap<u32, BinaryKey>,
}

impl Coverage {
    pub fn starting_now() -> Self {
        Self {
            since: Instant::now(),
            attached_at: SystemTime::now(),
            by_binary: HashMap::new(),
            processes: BTreeMap::new(),
        }
    }

    pub fn attached(&mut self, binary: BinaryKey, attached: &crate::engine::Attached) {
        self.by_binary
            .entry(binary)
            .or_default()
            .extend(&attached.ids);
    }

    /// Process `pid` runs `binary` (a PID reused by an untraced program is forgotten).
    pub fn process(&mut self, pid: u32, binary: BinaryKey) {
        if self.by_binary.contains_key(&binary) {
            self.processes.insert(pid, binary);
        } else {
            self.processes.remove(&pid);
        }
    }

    /// Every traced (function id, pid).
    pub fn pairs(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.processes.iter().flat_map(|(&pid, binary)| {
            self.by_binary
                .get(binary)
                .into_iter()
                .flatten()
                .map(move |&func| (func, pid))
        })
    }

    /// Host-wide: the binaries attached and the processes traced so far, those still running.
    pub fn sync(&mut self, host: &HostWide) {
        for (binary, ids) in host.attached_functions() {
            self.by_binary.entry(binary).or_default().extend(ids);
        }
        for (pid, binary) in host.traced_processes() {
            if targets::is_alive(pid) {
                self.process(pid, binary);
            }
        }
    }

    /// Forget the processes that have exited (zombies included), once the interval they exited
    /// in is printed.
    pub fn forget_exited(&mut self) {
        self.processes.retain(|&pid, _| targets::is_alive(pid));
    }
}

/// Plan and attach the pattern's probes to the selected targets; the PIDs tracked with -p.
pub fn attach_targets(
    tracer: &mut Tracer,
    selection: &Selection,
    processes: &[Process],
    verbose: bool,
) -> anyhow::Result<HashSet<u32>> {
    attach_targets_noting(tracer, selection, processes, verbose, None)
}

/// [`attach_targets`], noting in `coverage` what was attached where.
pub fn attach_targets_noting(
    tracer: &mut Tracer,
    selection: &Selection,
    processes: &[Process],
    verbose: bool,
    mut coverage: Option<&mut Coverage>,
) -> anyhow::Result<HashSet<u32>> {
    let mut tracked_pids: HashSet<u32> = HashSet::new();
    match selection {
        Selection::Pids(_) => {
            for process in processes {
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
                if let Some(coverage) = coverage.as_deref_mut() {
                    coverage.attached(process.binary, &attached);
                    coverage.process(process.pid, process.binary);
                }
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
            if let Some(coverage) = coverage {
                coverage.attached(key, &attached);
            }
        }
        // Host-wide: [`start_host_wide`], which waits for processes instead of failing.
        Selection::HostWide => {}
    }
    Ok(tracked_pids)
}

/// Host-wide: watch execs, attach to the matching processes running now, and when there are none
/// yet, say what goprobe waits for (with the closest names, for a typo). Functions that match
/// but cannot be traced safely are an error, as with -p/-b.
pub fn start_host_wide(
    tracer: &mut Tracer,
    selection: &Selection,
    verbose: bool,
) -> anyhow::Result<Option<HostWide>> {
    if !matches!(selection, Selection::HostWide) {
        return Ok(None);
    }
    let host = HostWide::start(tracer, verbose);
    if host.attached_binaries() == 0 {
        if let Some(reason) = tracer.refusal() {
            bail!("{reason}");
        }
        eprintln!("goprobe: {}", HostWide::waiting_line(tracer));
    }
    Ok(Some(host))
}

/// What to trace, from the pattern and -p/-b.
pub fn select(
    pattern: &Pattern,
    pids: &[u32],
    binary: Option<&PathBuf>,
) -> anyhow::Result<Selection> {
    if let Some(path) = &pattern.binary {
        if let Some(other) = binary
            && other != path
        {
            bail!(
                "the pattern names binary {} but -b names {}: give one",
                path.display(),
                other.display()
            );
        }
        if !pids.is_empty() {
            return Ok(Selection::Pids(pids.to_vec()));
        }
        return Ok(Selection::Binary(path.clone()));
    }
    Ok(match (binary, pids.is_empty()) {
        (Some(path), _) => Selection::Binary(path.clone()),
        (None, false) => Selection::Pids(pids.to_vec()),
        (None, true) => Selection::HostWide,
    })
}

pub fn closest_hint(pattern: &Pattern, names: &[String]) -> String {
    let closest = pattern.closest(names.iter().map(String::as_str), 5);
    if closest.is_empty() {
        String::new()
    } else {
        format!("; closest names: {}", closest.join(", "))
    }
}

pub fn report_attached(
    verbose: bool,
    attached: &crate::engine::Attached,
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

/// -b: note the processes not seen yet that run a traced binary.
pub fn scan_processes(coverage: &mut Coverage, seen: &mut HashMap<u32, targets::Sighting>) {
    for pid in targets::all_pids() {
        if targets::first_sight(seen, pid)
            && let Ok(process) = Process::get(pid)
        {
            coverage.process(pid, process.binary);
        }
    }
}

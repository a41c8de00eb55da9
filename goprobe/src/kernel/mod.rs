//! The kernel side, seen from user space: load the programs built from `goprobe-ebpf`, attach them
//! to probe sites, read the ring buffer and the counters.

pub mod log;
pub mod maps;
pub mod sampler;
pub mod split;
pub mod stacks;
use std::{collections::HashMap, io, num::NonZeroU32, path::Path};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{
        RawTracePoint, UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope},
    },
    sys::{UProbeMultiFeature, is_uprobe_multi_supported},
};
use goprobe_common::{
    Frame, Goroutine, GoroutineKey, InlineSite, MissKey, Misses, NestedKey, cookie, counter,
};

/// Oldest kernel with everything goprobe uses: BPF ring buffer (5.8) and per-attach-point
/// cookies on perf-event uprobes (5.15).
const MIN_KERNEL: (u32, u32) = (5, 15);

const ENTRY: &str = "goprobe_entry";
const RETURN: &str = "goprobe_return";
const ENTRY_MULTI: &str = "goprobe_entry_multi";
const RETURN_MULTI: &str = "goprobe_return_multi";
const INLINE: &str = "goprobe_inline";
const INLINE_MULTI: &str = "goprobe_inline_multi";
const STACKCOUNT: &str = "goprobe_stackcount";
const STACKCOUNT_MULTI: &str = "goprobe_stackcount_multi";
const EXEC: &str = "goprobe_exec";
/// The programs on RET sites.
const RETURN_PROGRAMS: [&str; 2] = [RETURN, RETURN_MULTI];

/// What the uprobes of a run do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probes {
    /// Time calls (entry and RET sites); with `Some(ns)`, calls at least that slow also carry the
    /// stack they return to (`funclatency --stacks`).
    Latency { stacks_min_ns: Option<u64> },
    /// Count calls per stack at entry sites (`stackcount`); RET sites are not used.
    StackCount,
    /// Time calls, each split by what its goroutine was doing (`funclatency --split`): the
    /// runtime's status changes are probed too (goprobe-ebpf/src/split.rs).
    Split,
}

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(
        "not allowed to load eBPF programs: run goprobe as root, or give it CAP_BPF and CAP_PERFMON \
         (e.g. `sudo goprobe ...`)"
    )]
    NotPermitted,
    /// The kernel said EPERM although the capabilities are effective: a seccomp filter or an LSM
    /// refused the call before the kernel's own capability checks.
    #[error(
        "the kernel refused {call} with EPERM although goprobe holds {caps}: {blocker} \
         (in a container: run it with the seccomp profile deploy/seccomp/goprobe.json, or on \
         Docker < 23 with CAP_SYS_ADMIN; see the README's Kubernetes section)"
    )]
    Blocked {
        call: &'static str,
        caps: &'static str,
        blocker: &'static str,
    },
    #[error("kernel {release} is too old: goprobe needs Linux {}.{} or newer (BPF ring buffer, uprobe cookies)", MIN_KERNEL.0, MIN_KERNEL.1)]
    TooOld { release: String },
    /// A map or program the eBPF object must define is missing or of another kind.
    #[error("loading the eBPF programs failed: {0}")]
    Load(String),
    /// A kernel operation failed: `what` says which, `source` why.
    #[error("{what} failed")]
    Failed {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// `hint`: what to do about it, where goprobe can tell (a missing capability).
    #[error("attaching {sites} probes to {target} failed{hint}")]
    Attach {
        target: String,
        sites: usize,
        hint: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl KernelError {
    fn failed(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        KernelError::Failed {
            what: what.into(),
            source: Box::new(source),
        }
    }
}

/// How probes are attached: one uprobe_multi link per program and target (kernel >= 6.6), or one
/// perf-event uprobe per site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    Multi,
    PerSite,
}

/// A probe site: file offset in the target binary, and its cookie (function id and flags).
#[derive(Debug, Clone, Copy)]
pub struct Site {
    pub offset: u64,
    pub cookie: u64,
}

/// Links created by one [`Kernel::attach`] call.
#[derive(Debug)]
pub struct Attachment {
    links: Vec<(&'static str, UProbeLinkId)>,
}

pub struct Kernel {
    ebpf: Ebpf,
    mode: AttachMode,
    probes: Probes,
    /// The program of inline boundaries is loaded (it is loaded only when needed: verifying it
    /// takes most of a second).
    inline_loaded: bool,
    /// `GOROUTINES` and `NESTED`: their memory while empty and per entry.
    map_costs: [MapCost; 2],
    /// Held while BPF run-time statistics are on (`GOPROBE_BPF_STATS=1`, for benchmarks: the
    /// kernel then times every BPF program run on the host, which costs a little each run).
    _stats: Option<std::os::fd::OwnedFd>,
}

/// Run-time statistics of one of goprobe's programs (with `GOPROBE_BPF_STATS=1`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProgramStats {
    pub name: &'static str,
    pub runs: u64,
    pub run_ns: u64,
    /// The program as the verifier left it: what the kernel log adds, or not.
    pub translated_bytes: u32,
}

/// Counter totals summed over CPUs, indexed by `goprobe_common::counter`.
pub type Counters = [u64; counter::COUNT as usize];

impl Kernel {
    #[allow(
        dead_code,
        reason = "plain latency tracing, for callers without stacks"
    )]
    pub fn load(mode: Option<AttachMode>) -> Result<Self, KernelError> {
        Self::load_with(
            mode,
            Probes::Latency {
                stacks_min_ns: None,
            },
        )
    }

    pub fn load_with(mode: Option<AttachMode>, probes: Probes) -> Result<Self, KernelError> {
        check_kernel_version()?;
        check_privileges()?;
        // BPF memory is charged to the cgroup on kernels >= 5.11; raising RLIMIT_MEMLOCK matters
        // only on older ones, and may be refused (no CAP_SYS_RESOURCE): try and move on.
        raise_rlimit(libc::RLIMIT_MEMLOCK, libc::RLIM_INFINITY);
        // Per-site attachment holds one perf-event fd per probe site.
        raise_rlimit(libc::RLIMIT_NOFILE, 1 << 20);

        let mode = default_mode(mode);
        let mut loader = loader();
        // A smaller ring buffer, to measure what happens when it overflows (`cargo xtask bench`).
        if let Some(bytes) = std::env::var("GOPROBE_RING_BYTES")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
        {
            loader.map_max_entries(maps::name::EVENTS, bytes);
        }
        if goroutine_capacity() != goprobe_common::MAX_GOROUTINES {
            loader.map_max_entries(maps::name::GOROUTINES, goroutine_capacity());
        }
        let stacks_min_ns = match probes {
            Probes::Latency { stacks_min_ns } => stacks_min_ns,
            Probes::StackCount | Probes::Split => None,
        };
        if probes == Probes::Split {
            loader.override_global("SPLIT_ON", &1u8, true);
        }
        let min_ns = stacks_min_ns.unwrap_or(u64::MAX);
        if stacks_min_ns.is_some() {
            loader.override_global("LATENCY_STACKS_MIN_NS", &min_ns, true);
        }
        crate::kernel::maps::size_unused_maps(
            &mut loader,
            crate::kernel::maps::MapUse {
                pairing: matches!(probes, Probes::Latency { .. } | Probes::Split),
                split: probes == Probes::Split,
                offcpu: false,
                stacks: stacks_min_ns.is_some() || probes == Probes::StackCount,
                stack_counts: probes == Probes::StackCount,
                profile: false,
                kernel_stacks: false,
            },
        );
        let mut ebpf = load_object(loader)?;
        let (entry, ret) = program_names(probes, mode);
        for name in [Some(entry), ret].into_iter().flatten() {
            program(&mut ebpf, name).load().map_err(load_error)?;
        }
        let stats = if std::env::var("GOPROBE_BPF_STATS").as_deref() == Ok("1") {
            Some(
                aya::sys::enable_stats(aya::sys::Stats::RunTime)
                    .map_err(|e| KernelError::failed("enabling BPF statistics", e))?,
            )
        } else {
            None
        };
        if probes == Probes::Split {
            split::start(&mut ebpf, mode)?;
        }
        let mut kernel = Self {
            ebpf,
            mode,
            probes,
            inline_loaded: false,
            map_costs: [MapCost::default(); 2],
            _stats: stats,
        };
        kernel.map_costs = kernel.measure_element_bytes();
        Ok(kernel)
    }

    /// How often each program ran and for how long in all; zeros unless `GOPROBE_BPF_STATS=1`.
    pub fn program_stats(&mut self) -> Vec<ProgramStats> {
        let (entry, ret) = program_names(self.probes, self.mode);
        let inline = self.inline_loaded.then(|| self.inline_program());
        [Some(entry), ret, inline]
            .into_iter()
            .flatten()
            .filter_map(|name| {
                let info = program(&mut self.ebpf, name).info().ok()?;
                Some(ProgramStats {
                    name,
                    runs: info.run_count(),
                    run_ns: info.run_time().as_nanos() as u64,
                    translated_bytes: info.size_translated().unwrap_or(0),
                })
            })
            .collect()
    }

    /// The loaded object, for the maps that other modules read (stacks, counts).
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// `funclatency --split`: the runtime's status changes are probed too.
    pub fn split(&self) -> bool {
        self.probes == Probes::Split
    }

    /// Attach entry and return sites in the binary at `target` (a path or `/proc/PID/exe`).
    /// `pid`: only that process; `None`: every process that runs this file, now or later.
    pub fn attach(
        &mut self,
        target: &Path,
        pid: Option<u32>,
        entries: &[Site],
        returns: &[Site],
    ) -> Result<Attachment, KernelError> {
        let (entry, ret) = program_names(self.probes, self.mode);
        let Some(ret) = ret else {
            return attach_sites(&mut self.ebpf, target, pid, &[(entry, entries)]);
        };
        // Boundaries of inlined copies have a program of their own, loaded on first use; so do
        // the runtime sites of `--split`.
        let (inline, plain): (Vec<Site>, Vec<Site>) = entries
            .iter()
            .partition(|s| s.cookie & cookie::INLINE_SITE != 0);
        let (runtime, plain): (Vec<Site>, Vec<Site>) =
            plain.iter().partition(|s| s.cookie & cookie::SPLIT != 0);
        let mut groups = vec![(entry, plain.as_slice()), (ret, returns)];
        if !runtime.is_empty() {
            groups.push((split::program_name(self.mode), runtime.as_slice()));
        }
        if !inline.is_empty() {
            let name = self.inline_program();
            if !self.inline_loaded {
                program(&mut self.ebpf, name).load().map_err(load_error)?;
                self.inline_loaded = true;
            }
            groups.push((name, inline.as_slice()));
        }
        attach_sites(&mut self.ebpf, target, pid, &groups)
    }

    pub fn detach(&mut self, attachment: Attachment) {
        detach(&mut self.ebpf, attachment);
    }

    /// Detach without waiting: each link is dropped by a thread of its own, so the caller goes
    /// on at once (detaching waits for the kernel, tens of milliseconds per link). For probes
    /// that no longer fire (those of a process whose exec ended them).
    pub fn detach_in_background(&mut self, attachment: Attachment) {
        // The links are dropped in order, the return program's first: a return whose entry's
        // link is gone already would count as unpaired, while an entry left open by a return's
        // link gone first is only dropped later, as a panic's are.
        let (returns, others): (Vec<_>, Vec<_>) = attachment
            .links
            .into_iter()
            .partition(|(name, _)| RETURN_PROGRAMS.contains(name));
        let links: Vec<_> = returns
            .into_iter()
            .chain(others)
            .filter_map(|(name, link)| program(&mut self.ebpf, name).take_link(link).ok())
            .collect();
        if links.is_empty() {
            return;
        }
        // A thread that cannot be started drops its closure, and so the links, right here.
        let _ = std::thread::Builder::new()
            .name("goprobe-detach".into())
            .spawn(move || drop(links));
    }

    fn inline_program(&self) -> &'static str {
        match self.mode {
            AttachMode::Multi => INLINE_MULTI,
            AttachMode::PerSite => INLINE,
        }
    }

    /// Describe inline boundary `index` (before attaching a site whose cookie names it).
    pub fn set_inline_site(&mut self, index: u32, site: &InlineSite) -> Result<(), KernelError> {
        let map = self
            .ebpf
            .map_mut(maps::name::INLINE_SITES)
            .ok_or_else(|| KernelError::Load("no INLINE_SITES map".into()))?;
        let mut sites = Array::<_, InlineSite>::try_from(map)
            .map_err(|e| KernelError::failed("INLINE_SITES", e))?;
        sites
            .set(index, site, 0)
            .map_err(|e| KernelError::failed(format!("setting inline site {index}"), e))
    }

    /// What the entry of function `id` reads from its arguments (before attaching a site whose
    /// cookie has `cookie::ARGS`).
    pub fn set_arg_spec(
        &mut self,
        id: u32,
        spec: &goprobe_common::ArgSpec,
    ) -> Result<(), KernelError> {
        let map = self
            .ebpf
            .map_mut(maps::name::ARG_SPECS)
            .ok_or_else(|| KernelError::Load("no ARG_SPECS map".into()))?;
        let mut specs = aya::maps::HashMap::<_, u32, goprobe_common::ArgSpec>::try_from(map)
            .map_err(|e| KernelError::failed("ARG_SPECS", e))?;
        specs.insert(&id, spec, 0).map_err(|e| {
            KernelError::failed(format!("setting the argument reads of function {id}"), e)
        })
    }

    /// The ring buffer of completed calls; taken once, by the pipeline.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, KernelError> {
        let map = self
            .ebpf
            .take_map(maps::name::EVENTS)
            .ok_or_else(|| KernelError::Load("no EVENTS map".into()))?;
        RingBuf::try_from(map).map_err(|e| KernelError::failed("EVENTS", e))
    }

    /// Start the kernel's exec events (goprobe-ebpf/src/exec.rs): the ring buffer that receives
    /// an [`goprobe_common::ExecEvent`] for every process that runs a new program from now on.
    /// Taken once; the program stays attached as long as the kernel side is loaded.
    pub fn watch_execs(&mut self) -> Result<RingBuf<MapData>, KernelError> {
        let program: &mut RawTracePoint = self
            .ebpf
            .program_mut(EXEC)
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| KernelError::Load(format!("no raw tracepoint {EXEC}")))?;
        program.load().map_err(load_error)?;
        program
            .attach("sched_process_exec")
            .map_err(|e| KernelError::failed("attaching the exec events", e))?;
        let map = self
            .ebpf
            .take_map(maps::name::EXECS)
            .ok_or_else(|| KernelError::Load("no EXECS map".into()))?;
        RingBuf::try_from(map).map_err(|e| KernelError::failed("EXECS", e))
    }

    /// Exec events dropped so far because their ring buffer was full.
    pub fn execs_lost(&self) -> u64 {
        self.ebpf
            .map(maps::name::EXEC_LOST)
            .and_then(|m| PerCpuArray::<_, u64>::try_from(m).ok())
            .and_then(|a| a.get(&0, 0).ok())
            .map_or(0, |values| values.iter().sum())
    }

    pub fn counters(&self) -> Counters {
        let mut totals = [0u64; counter::COUNT as usize];
        let Some(map) = self.ebpf.map(maps::name::COUNTERS) else {
            return totals;
        };
        let Ok(array) = PerCpuArray::<_, u64>::try_from(map) else {
            return totals;
        };
        for (index, total) in totals.iter_mut().enumerate() {
            if let Ok(values) = array.get(&(index as u32), 0) {
                *total = values.iter().sum();
            }
        }
        totals
    }

    /// Calls seen but not timed, per (function id, process), summed over CPUs, since loading.
    pub fn misses(&self) -> HashMap<(u32, u32), Misses> {
        let Some(map) = self.ebpf.map(maps::name::MISSED) else {
            return HashMap::new();
        };
        let Ok(missed) = PerCpuHashMap::<_, MissKey, Misses>::try_from(map) else {
            return HashMap::new();
        };
        missed
            .iter()
            .filter_map(Result::ok)
            .map(|(key, values)| {
                let mut total = Misses::default();
                values.iter().for_each(|v| total.add(v));
                ((key.func, key.tgid), total)
            })
            .collect()
    }

    /// What the kernel holds to pair calls: the goroutine records, the open calls, and the
    /// memory both maps use.
    pub fn pairing(&self) -> Pairing {
        let mut pairing = Pairing {
            goroutine_capacity: goroutine_capacity(),
            nested_capacity: goprobe_common::MAX_NESTED_CALLS,
            ..Pairing::default()
        };
        if let Some(map) = self.ebpf.map(maps::name::GOROUTINES)
            && let Ok(goroutines) = BpfHashMap::<_, GoroutineKey, Goroutine>::try_from(map)
        {
            for (key, record) in goroutines.iter().filter_map(Result::ok) {
                pairing.goroutines += 1;
                if record.depth > 0 {
                    *pairing.open_by_process.entry(key.tgid).or_default() += 1;
                    pairing.open_calls += u64::from(record.depth);
                }
            }
        }
        pairing.bytes = [maps::name::GOROUTINES, maps::name::NESTED]
            .iter()
            .filter_map(|name| map_memory(self.ebpf.map(name)?))
            .sum();
        (pairing.goroutine_bytes, pairing.nested_bytes) =
            (self.map_costs[0].per_entry, self.map_costs[1].per_entry);
        pairing
    }

    /// The memory of each pairing map while empty, and what one more entry costs: measured
    /// once, by adding a dummy entry from user space and reading the map's memory before and
    /// after. With them, the number of entries follows from the memory alone ([`Kernel::pairing_now`]).
    fn measure_element_bytes(&mut self) -> [MapCost; 2] {
        fn cost<K: aya::Pod, V: aya::Pod + Default>(
            ebpf: &mut Ebpf,
            name: &str,
            key: K,
        ) -> MapCost {
            let mut measure = || -> Option<MapCost> {
                let map = ebpf.map_mut(name)?;
                let empty = map_memory(map)?;
                let mut entries = BpfHashMap::<_, K, V>::try_from(&mut *map).ok()?;
                entries.insert(&key, &V::default(), 0).ok()?;
                let after = map_memory(map);
                let mut entries = BpfHashMap::<_, K, V>::try_from(map).ok()?;
                let _ = entries.remove(&key);
                Some(MapCost {
                    empty,
                    per_entry: after?.saturating_sub(empty),
                })
            };
            measure().unwrap_or_default()
        }
        let outside = u32::MAX;
        [
            cost::<GoroutineKey, Goroutine>(
                &mut self.ebpf,
                maps::name::GOROUTINES,
                GoroutineKey {
                    tgid: outside,
                    _pad: 0,
                    g: 0,
                },
            ),
            cost::<NestedKey, Frame>(
                &mut self.ebpf,
                maps::name::NESTED,
                NestedKey {
                    tgid: outside,
                    index: 0,
                    g: 0,
                },
            ),
        ]
    }

    /// How many goroutine records and nested open calls the kernel holds now, and their memory,
    /// from the maps' memory alone (no map is read: cheap enough for every interval).
    pub fn pairing_now(&self) -> (u64, u64, u64) {
        let mut counts = [0u64; 2];
        let mut bytes = 0;
        for (i, name) in [maps::name::GOROUTINES, maps::name::NESTED]
            .iter()
            .enumerate()
        {
            let cost = self.map_costs[i];
            if let Some(now) = self.ebpf.map(name).and_then(map_memory) {
                bytes += now;
                counts[i] = now
                    .saturating_sub(cost.empty)
                    .checked_div(cost.per_entry)
                    .unwrap_or(0);
            }
        }
        (counts[0], counts[1], bytes)
    }

    /// Process `tgid` exec'd at `exec_ns` (CLOCK_MONOTONIC): drop what its old program left, so
    /// that the new one, whose goroutines may well sit at the same addresses, starts clean: the
    /// records that only cache a stack bound, and the calls opened before the exec (they will
    /// never return). Calls the new program opened already are kept. Reads the records only if
    /// the process has some (the kernel lists those processes in `PROCESSES`). Returns how many
    /// open calls of the old program were dropped.
    pub fn forget_before_exec(&mut self, tgid: u32, exec_ns: u64) -> usize {
        let has_records = self
            .ebpf
            .map(maps::name::PROCESSES)
            .and_then(|map| BpfHashMap::<_, u32, u8>::try_from(map).ok())
            .is_some_and(|processes| processes.get(&tgid, 0).is_ok());
        let overflowed = self.counters()[counter::PROCESSES_FULL as usize] > 0;
        if !has_records && !overflowed {
            return 0;
        }
        let mut dropped = 0;
        remove_entries::<GoroutineKey, Goroutine>(
            &mut self.ebpf,
            maps::name::GOROUTINES,
            |k, v| {
                let old = k.tgid == tgid && (v.depth == 0 || v.outer.start_ns < exec_ns);
                if old {
                    dropped += v.depth.min(1) as usize;
                }
                old
            },
        );
        dropped +=
            remove_entries::<NestedKey, Frame>(&mut self.ebpf, maps::name::NESTED, |k, v| {
                k.tgid == tgid && v.start_ns < exec_ns
            });
        dropped
    }

    /// Drop the records and open calls of processes for which `alive` is false; returns how
    /// many records were removed. Reads every record only when a process that has records has
    /// exited (the kernel lists those processes in `PROCESSES`), or when that list overflowed.
    pub fn sweep_goroutines(&mut self, alive: impl Fn(u32) -> bool) -> usize {
        let overflowed = self.counters()[counter::PROCESSES_FULL as usize] > 0;
        let dead: Vec<u32> = match self.ebpf.map(maps::name::PROCESSES) {
            Some(map) => match BpfHashMap::<_, u32, u8>::try_from(map) {
                Ok(processes) => processes
                    .keys()
                    .filter_map(Result::ok)
                    .filter(|&tgid| !alive(tgid))
                    .collect(),
                Err(_) => Vec::new(),
            },
            None => Vec::new(),
        };
        if dead.is_empty() && !overflowed {
            return 0;
        }
        let removed = remove_entries::<GoroutineKey, Goroutine>(
            &mut self.ebpf,
            maps::name::GOROUTINES,
            |k, _| !alive(k.tgid),
        );
        remove_entries::<NestedKey, Frame>(&mut self.ebpf, maps::name::NESTED, |k, _| {
            !alive(k.tgid)
        });
        if self.probes == Probes::Split {
            split::sweep(&mut self.ebpf, &alive);
        }
        if let Some(map) = self.ebpf.map_mut(maps::name::PROCESSES)
            && let Ok(mut processes) = BpfHashMap::<_, u32, u8>::try_from(map)
        {
            for tgid in dead {
                let _ = processes.remove(&tgid);
            }
        }
        removed
    }
}

/// A hash map's kernel memory while empty, and per entry.
#[derive(Debug, Clone, Copy, Default)]
struct MapCost {
    empty: u64,
    per_entry: u64,
}

/// What the kernel holds to pair entries with returns ([`Kernel::pairing`]).
#[derive(Debug, Clone, Default)]
pub struct Pairing {
    /// Goroutine records (inside a traced call, or between two).
    pub goroutines: u64,
    /// Goroutines inside a traced call, by process.
    pub open_by_process: HashMap<u32, u64>,
    /// Calls open right now, over all goroutines.
    pub open_calls: u64,
    /// Kernel memory of both maps (their `memlock` in fdinfo: the table and the entries in use).
    pub bytes: u64,
    /// Kernel memory of one goroutine record (which holds its outermost open call), and of one
    /// nested open call.
    pub goroutine_bytes: u64,
    pub nested_bytes: u64,
    pub goroutine_capacity: u32,
    pub nested_capacity: u32,
}

impl Pairing {
    /// One line for `-v`: what pairing holds and costs now, and its ceiling.
    pub fn describe(&self) -> String {
        format!(
            "pairing: {} open calls in {} goroutine records, {} KiB of kernel memory; {} bytes per goroutine in a traced call, {} per nested open call; ceiling {} goroutines and {} nested open calls",
            self.open_calls,
            self.goroutines,
            self.bytes.div_ceil(1024),
            self.goroutine_bytes,
            self.nested_bytes,
            self.goroutine_capacity,
            self.nested_capacity
        )
    }
}

/// Kernel memory a map uses now, as fdinfo's `memlock` reports it (what the kernel charges).
fn map_memory(map: &aya::maps::Map) -> Option<u64> {
    use std::os::fd::{AsFd as _, AsRawFd as _};
    let data = match map {
        aya::maps::Map::HashMap(data) => data,
        _ => return None,
    };
    let fd = data.info().ok()?.fd().ok()?;
    let text =
        std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd())).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Remove the entries of hash map `name` whose key `dead` accepts; returns how many.
/// Remove the entries of map `name` for which `doomed(key, value)` holds; returns how many.
fn remove_entries<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &str,
    mut doomed: impl FnMut(&K, &V) -> bool,
) -> usize {
    let Some(map) = ebpf.map_mut(name) else {
        return 0;
    };
    let Ok(mut entries) = BpfHashMap::<_, K, V>::try_from(map) else {
        return 0;
    };
    let keys: Vec<K> = entries
        .iter()
        .filter_map(Result::ok)
        .filter(|(key, value)| doomed(key, value))
        .map(|(key, _)| key)
        .collect();
    keys.iter()
        .filter(|key| entries.remove(key).is_ok())
        .count()
}

/// The entry and (if used) return programs of a run.
fn program_names(probes: Probes, mode: AttachMode) -> (&'static str, Option<&'static str>) {
    match (probes, mode) {
        (Probes::StackCount, AttachMode::Multi) => (STACKCOUNT_MULTI, None),
        (Probes::StackCount, AttachMode::PerSite) => (STACKCOUNT, None),
        (Probes::Latency { .. } | Probes::Split, AttachMode::Multi) => {
            (ENTRY_MULTI, Some(RETURN_MULTI))
        }
        (Probes::Latency { .. } | Probes::Split, AttachMode::PerSite) => (ENTRY, Some(RETURN)),
    }
}

fn default_mode(mode: Option<AttachMode>) -> AttachMode {
    mode.unwrap_or_else(|| {
        match is_uprobe_multi_supported(UProbeMultiFeature::ProcessScopedPidFilter) {
            Ok(true) => AttachMode::Multi,
            _ => AttachMode::PerSite,
        }
    })
}

fn attach_sites(
    ebpf: &mut Ebpf,
    target: &Path,
    pid: Option<u32>,
    groups: &[(&'static str, &[Site])],
) -> Result<Attachment, KernelError> {
    let scope = match pid.and_then(NonZeroU32::new) {
        Some(pid) => UProbeScope::OneProcess(pid),
        None => UProbeScope::AllProcesses,
    };
    let mut attachment = Attachment { links: Vec::new() };
    for &(name, sites) in groups {
        if sites.is_empty() {
            continue;
        }
        // One uprobe_multi link covers every site. Per-site uprobes get a link each, so that
        // `detach` can close them all at once.
        let chunk = if name.ends_with("_multi") {
            sites.len()
        } else {
            1
        };
        for sites in sites.chunks(chunk) {
            let points = sites.iter().map(|s| UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(s.offset),
                cookie: Some(s.cookie),
            });
            match program(ebpf, name).attach(points, target, scope) {
                Ok(link) => attachment.links.push((name, link)),
                Err(e) => {
                    detach(ebpf, attachment);
                    let hint = if !name.ends_with("_multi") && is_permission_error(&e) {
                        per_site_permission_hint()
                    } else {
                        ""
                    };
                    return Err(KernelError::Attach {
                        target: target.display().to_string(),
                        sites: groups.iter().map(|(_, s)| s.len()).sum(),
                        hint,
                        source: Box::new(e),
                    });
                }
            }
        }
    }
    Ok(attachment)
}

/// Closing a per-site uprobe waits for RCU grace periods twice: releasing its BPF link
/// (`synchronize_rcu_tasks_trace`), which closes running at the same time share, and
/// unregistering the uprobe, which Linux 6.18 does under its global `event_mutex`, one close
/// after another (~90 ms per site on this machine). Closing from several threads overlaps the
/// first part with the second: 204 sites of caddy detach in 18 s instead of 60 s one by one.
/// The rest is the kernel's; uprobe_multi (Linux >= 6.6, the default) detaches all sites with
/// one grace period (see BENCHMARKS.md, attach time).
const DETACH_THREADS: usize = 64;
/// Closer threads only wait in `close`: a small stack is plenty.
const DETACH_STACK: usize = 64 << 10;

fn detach(ebpf: &mut Ebpf, attachment: Attachment) {
    let mut links = Vec::new();
    for (name, link) in attachment.links {
        // A link whose process already exited is gone from the kernel; nothing to report.
        if let Ok(link) = program(ebpf, name).take_link(link) {
            links.push(link);
        }
    }
    if links.len() <= 1 {
        drop(links);
        return;
    }
    // Dropping a link detaches it. Links are dealt round-robin to the threads. A thread that
    // cannot be started (a tasks limit) drops its closure, and so its links, right here.
    let threads = links.len().min(DETACH_THREADS);
    let mut shares: Vec<Vec<_>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, link) in links.into_iter().enumerate() {
        shares[i % threads].push(link);
    }
    std::thread::scope(|s| {
        for share in shares {
            let _ = std::thread::Builder::new()
                .stack_size(DETACH_STACK)
                .spawn_scoped(s, move || drop(share));
        }
    });
}

/// Probes that do nothing, for `goprobe dev attach`: what a probe site costs by itself, to
/// compare with what goprobe's own programs add (`cargo xtask bench`).
pub struct BareProbes {
    ebpf: Ebpf,
    program: &'static str,
}

impl BareProbes {
    pub fn load(mode: Option<AttachMode>) -> Result<Self, KernelError> {
        preflight()?;
        raise_rlimit(libc::RLIMIT_NOFILE, 1 << 20);
        let program = match default_mode(mode) {
            AttachMode::Multi => "goprobe_bare_multi",
            AttachMode::PerSite => "goprobe_bare",
        };
        let mut ebpf = load_object(loader())?;
        self::program(&mut ebpf, program)
            .load()
            .map_err(load_error)?;
        Ok(Self { ebpf, program })
    }

    pub fn attach(
        &mut self,
        target: &Path,
        pid: Option<u32>,
        sites: &[Site],
    ) -> Result<Attachment, KernelError> {
        attach_sites(&mut self.ebpf, target, pid, &[(self.program, sites)])
    }

    pub fn detach(&mut self, attachment: Attachment) {
        detach(&mut self.ebpf, attachment);
    }
}

/// A loader for the kernel programs, told goprobe's PID namespace when it is not the initial
/// one (goprobe in a container without the host's PIDs): the programs then report process IDs
/// as goprobe sees them, the IDs `-p` takes and `/proc` shows it.
pub fn loader() -> EbpfLoader<'static> {
    /// Inode of the initial PID namespace (`PROC_PID_INIT_INO` in the kernel).
    const INITIAL_PID_NAMESPACE: u64 = 0xEFFF_FFFC;
    static PID_NAMESPACE: std::sync::OnceLock<Option<(u64, u64)>> = std::sync::OnceLock::new();
    let mut loader = EbpfLoader::new();
    let namespace = PID_NAMESPACE.get_or_init(|| {
        use std::os::unix::fs::MetadataExt as _;
        let ns = std::fs::metadata("/proc/self/ns/pid").ok()?;
        (ns.ino() != INITIAL_PID_NAMESPACE).then(|| (ns.dev(), ns.ino()))
    });
    if let Some((dev, ino)) = namespace {
        loader.override_global("PIDNS_DEV", dev, true);
        loader.override_global("PIDNS_INO", ino, true);
    }
    log::configure(&mut loader);
    loader
}

/// How many goroutines the kernel can hold inside traced calls at once: `MAX_GOROUTINES`, or
/// fewer with `GOPROBE_MAX_GOROUTINES`, to see what happens when the table fills (the tests).
pub fn goroutine_capacity() -> u32 {
    static CAPACITY: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *CAPACITY.get_or_init(|| {
        std::env::var("GOPROBE_MAX_GOROUTINES")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|&n| n > 0)
            .map_or(goprobe_common::MAX_GOROUTINES, |n| {
                n.min(goprobe_common::MAX_GOROUTINES)
            })
    })
}

/// Load the kernel programs' object with `loader` (from [`loader`]), and read its log at `-v`.
pub fn load_object(mut loader: EbpfLoader<'_>) -> Result<Ebpf, KernelError> {
    let mut ebpf = loader.load(object()).map_err(load_error)?;
    log::start(&mut ebpf);
    Ok(ebpf)
}

/// The kernel programs, built from `goprobe-ebpf` by build.rs.
pub fn object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/goprobe"))
}

/// Checks done before loading anything: kernel version and privileges.
pub fn preflight() -> Result<(), KernelError> {
    check_kernel_version()?;
    check_privileges()?;
    raise_rlimit(libc::RLIMIT_MEMLOCK, libc::RLIM_INFINITY);
    Ok(())
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> &'a mut UProbe {
    ebpf.program_mut(name)
        .and_then(|p| <&mut UProbe>::try_from(p).ok())
        .unwrap_or_else(|| unreachable!("the eBPF object defines uprobe {name}"))
}

/// What a failed load means: not permitted (EPERM, or EACCES without a verifier log), blocked
/// although permitted (see [`permission_error`]), or any other error, a verifier rejection
/// included (EACCES with the verifier's log, which is kept).
pub fn load_error(error: impl std::error::Error + Send + Sync + 'static) -> KernelError {
    if is_permission_error(&error) && !has_verifier_log(&error) {
        permission_error("bpf()")
    } else {
        KernelError::failed("loading the eBPF programs", error)
    }
}

fn is_permission_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && matches!(io.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// The verifier ran and said why it refused a program (the kernel checks permissions first,
/// so a refusal with a log is never about privileges).
fn has_verifier_log(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(aya::programs::ProgramError::LoadError { verifier_log, .. }) =
            e.downcast_ref::<aya::programs::ProgramError>()
            && !verifier_log.to_string().trim().is_empty()
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// EPERM from `call`: without the capabilities, [`KernelError::NotPermitted`]; with them, what
/// else refuses it, from /proc/self/status.
pub fn permission_error(call: &'static str) -> KernelError {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    blocked_error(call, &status).unwrap_or(KernelError::NotPermitted)
}

/// [`KernelError::Blocked`] if `status` (the text of /proc/self/status) shows the capabilities
/// that `call` needs as effective.
fn blocked_error(call: &'static str, status: &str) -> Option<KernelError> {
    let effective = effective_capabilities(status)?;
    let has = |cap: u32| effective & (1 << cap) != 0;
    let caps = if has(CAP_SYS_ADMIN) {
        "CAP_SYS_ADMIN"
    } else if has(CAP_BPF) && has(CAP_PERFMON) {
        "CAP_BPF and CAP_PERFMON"
    } else {
        return None;
    };
    let seccomp = status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .map(str::trim);
    let blocker = match seccomp {
        // SECCOMP_MODE_FILTER: a container runtime's default profile may allow bpf() and
        // perf_event_open() only with CAP_SYS_ADMIN.
        Some("2") => {
            "a seccomp filter is set (Seccomp: 2 in /proc/self/status) and probably refused it, \
             or a security module (AppArmor, SELinux) did"
        }
        Some("0") => {
            "no seccomp filter is set, so a security module (AppArmor, SELinux) or the kernel's \
             lockdown refused it"
        }
        _ => "a seccomp filter or a security module (AppArmor, SELinux) refused it",
    };
    Some(KernelError::Blocked {
        call,
        caps,
        blocker,
    })
}

/// Why a per-site uprobe (a perf event) may be refused when the programs loaded: Linux requires
/// CAP_SYS_ADMIN for them again since "perf: Revert to requiring CAP_SYS_ADMIN for uprobes"
/// (2025, backported to the stable kernels), CAP_PERFMON is not enough; uprobe_multi links
/// (Linux >= 6.6) still need only CAP_BPF and CAP_PERFMON.
fn per_site_permission_hint() -> &'static str {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    match effective_capabilities(&status) {
        Some(effective) if effective & (1 << CAP_SYS_ADMIN) == 0 => {
            " (per-site uprobes, used where the kernel has no uprobe_multi (Linux < 6.6) or with \
             GOPROBE_ATTACH=single, need CAP_SYS_ADMIN on kernels with the 2025 fix \
             \"perf: Revert to requiring CAP_SYS_ADMIN for uprobes\"; CAP_BPF and CAP_PERFMON \
             are not enough: add CAP_SYS_ADMIN, or use Linux >= 6.6)"
        }
        _ => "",
    }
}

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective capabilities (`CapEff:`) in the text of /proc/PID/status.
fn effective_capabilities(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// An error and its causes on one line (the verifier log, if any, is kept).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut current = error.source();
    while let Some(e) = current {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        current = e.source();
    }
    text
}

fn check_kernel_version() -> Result<(), KernelError> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let release = release.trim().to_string();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    match (numbers.next(), numbers.next()) {
        (Some(major), Some(minor)) if (major, minor) < MIN_KERNEL => {
            Err(KernelError::TooOld { release })
        }
        _ => Ok(()),
    }
}

/// Fail early, before touching any target, when the process clearly lacks the capabilities:
/// CAP_BPF + CAP_PERFMON (Linux >= 5.8), or CAP_SYS_ADMIN.
fn check_privileges() -> Result<(), KernelError> {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return Ok(());
    };
    let Some(effective) = effective_capabilities(&status) else {
        return Ok(());
    };
    let has = |cap: u32| effective & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        Ok(())
    } else {
        Err(KernelError::NotPermitted)
    }
}

fn raise_rlimit(resource: libc::__rlimit_resource_t, want: libc::rlim_t) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls with a valid pointer.
    unsafe {
        if libc::getrlimit(resource, &mut limit) != 0 {
            return;
        }
        let target = if want == libc::RLIM_INFINITY {
            want
        } else {
            want.min(limit.rlim_max)
        };
        if limit.rlim_cur >= target && target != libc::RLIM_INFINITY {
            return;
        }
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: limit.rlim_max.max(target),
        };
        if libc::setrlimit(resource, &raised) != 0 && want != libc::RLIM_INFINITY {
            let capped = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            libc::setrlimit(resource, &capped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eperm_with_the_capabilities_is_blamed_on_seccomp_or_an_lsm() {
        // CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH: the DaemonSet's set.
        let daemonset = "CapEff:\t000000c000080004\nSeccomp:\t2\n";
        let e = blocked_error("bpf()", daemonset).unwrap().to_string();
        assert!(e.contains("CAP_BPF and CAP_PERFMON"), "{e}");
        assert!(e.contains("seccomp filter is set"), "{e}");
        assert!(e.contains("deploy/seccomp/goprobe.json"), "{e}");
        let root = "CapEff:\t000001ffffffffff\nSeccomp:\t0\n";
        let e = blocked_error("bpf()", root).unwrap().to_string();
        assert!(e.contains("CAP_SYS_ADMIN") && e.contains("AppArmor"), "{e}");
        // Without the capabilities, the missing capabilities are the reason.
        assert!(blocked_error("bpf()", "CapEff:\t0000000000000000\nSeccomp:\t2\n").is_none());
        assert!(blocked_error("bpf()", "CapEff:\t0000004000000000\nSeccomp:\t2\n").is_none());
    }
}

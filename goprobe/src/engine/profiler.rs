//! On-CPU sampling of Go processes with eBPF, for `goprobe profile`, the agent's continuous
//! profiles and its `/debug/pprof/profile`: a software cpu-clock perf event on every CPU runs a BPF
//! program that walks the user stack (and the kernel stack, if asked) of the sampled thread when
//! it belongs to a traced process; samples are aggregated per stack and turned into pprof.
use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail};
use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, RingBuf, StackTraceMap},
};
use goprobe_common::{StackSample, stack};

use crate::{
    kernel::stacks::{self as stacks, StackReader},
    kernel::{self, KernelError},
    outputs::{flamegraph, pprof::ProfileBuilder},
    symbolize::{Kind, Line, Location, Stack, Symbolizer},
    targets::{self, Process},
};

/// How often the samples ring buffer is drained and /proc scanned (for -b).
pub const DRAIN_EVERY: Duration = Duration::from_millis(100);

/// What one sample was, before symbolization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SampleKey {
    tgid: u32,
    stack: u64,
    leaf: goprobe_common::LeafContext,
    sp8: u64,
    kstack: i32,
}

/// A running CPU profiler: perf events on every CPU, the BPF program, the samples so far.
pub struct Profiler {
    ebpf: Ebpf,
    samples: RingBuf<MapData>,
    counts: HashMap<SampleKey, u64>,
    pub frequency: u64,
    tgids: HashSet<u32>,
    started: Instant,
    start_time: SystemTime,
}

/// A finished profile: symbolized stacks (innermost first) with the process they were sampled in,
/// and their sample counts.
pub struct CpuProfile {
    pub stacks: Vec<(Stack, u32, u64)>,
    pub frequency: u64,
    pub duration: Duration,
    pub start_time: SystemTime,
}

impl Profiler {
    /// Load the sampling program and start sampling at `frequency` Hz on every CPU. No process is
    /// sampled until [`Self::add_pid`].
    pub fn start(frequency: u64, kernel_stacks: bool) -> Result<Self, KernelError> {
        let (ebpf, samples) = kernel::sampler::load(frequency, kernel_stacks)?;
        Ok(Self {
            ebpf,
            samples,
            counts: HashMap::new(),
            frequency,
            tgids: HashSet::new(),
            started: Instant::now(),
            start_time: SystemTime::now(),
        })
    }

    pub fn add_pid(&mut self, tgid: u32) -> anyhow::Result<()> {
        if !self.tgids.insert(tgid) {
            return Ok(());
        }
        let map = self
            .ebpf
            .map_mut(kernel::maps::name::PROFILE_TGIDS)
            .context("no PROFILE_TGIDS map")?;
        let mut tgids = BpfHashMap::<&mut MapData, u32, u8>::try_from(map)?;
        tgids
            .insert(&tgid, &1, 0)
            .with_context(|| format!("cannot sample PID {tgid} (more than 4096 processes?)"))
    }

    /// Stop sampling a process (it exited, or is no longer traced).
    pub fn remove_pid(&mut self, tgid: u32) {
        if !self.tgids.remove(&tgid) {
            return;
        }
        if let Some(map) = self.ebpf.map_mut(kernel::maps::name::PROFILE_TGIDS)
            && let Ok(mut tgids) = BpfHashMap::<&mut MapData, u32, u8>::try_from(map)
        {
            let _ = tgids.remove(&tgid);
        }
    }

    pub fn pids(&self) -> &HashSet<u32> {
        &self.tgids
    }

    /// Read the samples taken so far.
    pub fn drain(&mut self) -> usize {
        let mut n = 0;
        while let Some(item) = self.samples.next() {
            if item.len() < size_of::<StackSample>() {
                continue;
            }
            // SAFETY: the kernel side writes exactly a StackSample; read_unaligned copes with
            // the ring buffer's 8-byte record alignment.
            let s = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<StackSample>()) };
            *self
                .counts
                .entry(SampleKey {
                    tgid: s.tgid,
                    stack: s.stack,
                    leaf: s.leaf,
                    sp8: s.sp8,
                    kstack: if s.flags & stack::SAMPLE_IN_KERNEL != 0 {
                        s.kstack
                    } else {
                        -1
                    },
                })
                .or_default() += 1;
            n += 1;
        }
        n
    }

    /// Stop sampling (the perf events are closed with the program's links) and symbolize.
    pub fn finish(mut self, symbolizer: &mut Symbolizer) -> CpuProfile {
        self.drain();
        kernel::sampler::stop(&mut self.ebpf);
        self.snapshot(symbolizer)
    }

    /// The profile since the start or the last snapshot, symbolized; sampling goes on (for
    /// periodic profiles, one per interval).
    pub fn snapshot(&mut self, symbolizer: &mut Symbolizer) -> CpuProfile {
        self.drain();
        let duration = self.started.elapsed();
        let start_time = self.start_time;
        self.started = Instant::now();
        self.start_time = SystemTime::now();
        let counts = std::mem::take(&mut self.counts);
        let mut reader = StackReader::default();
        let kernel_stacks = self
            .ebpf
            .map(kernel::maps::name::KSTACKS)
            .and_then(|m| StackTraceMap::<&MapData>::try_from(m).ok());
        let mut merged: HashMap<(Stack, u32), u64> = HashMap::new();
        for (key, count) in &counts {
            let mut stack: Stack = Vec::new();
            if key.kstack >= 0
                && let Some(trace) = kernel_stacks
                    .as_ref()
                    .and_then(|m| m.get(&(key.kstack as u32), 0).ok())
            {
                let ips: Vec<u64> = trace.frames().iter().map(|f| f.ip).collect();
                stack.extend(symbolizer.kernel_stack(&ips));
            }
            match reader.get(&self.ebpf, key.stack) {
                Some(trace) => {
                    stack.extend(symbolizer.user_stack(key.tgid, &trace, key.leaf, Some(key.sp8)))
                }
                None => stack.push(Location {
                    address: 0,
                    kind: Kind::Truncated,
                    mapping: None,
                    lines: vec![Line {
                        function: "[truncated: no user stack]".into(),
                        file: String::new(),
                        line: 0,
                    }],
                }),
            }
            *merged.entry((stack, key.tgid)).or_default() += count;
        }
        let mut stacks: Vec<(Stack, u32, u64)> = merged
            .into_iter()
            .map(|((stack, pid), count)| (stack, pid, count))
            .collect();
        stacks.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| (&a.0, a.1).cmp(&(&b.0, b.1))));
        self.prune_stacks();
        CpuProfile {
            stacks,
            frequency: self.frequency,
            duration,
            start_time,
        }
    }

    /// A profiler that runs for days (the agent's) would fill the kernel's stack map with stacks
    /// seen once: once it is half full, empty it after a snapshot (stacks seen again are stored
    /// again). A sample taken between the drain and the pruning may lose its stack, which then
    /// shows as `[truncated: no user stack]`.
    fn prune_stacks(&mut self) {
        const PRUNE_AT: usize = 16384;
        let Some(map) = self.ebpf.map_mut(kernel::maps::name::STACKS) else {
            return;
        };
        let Ok(mut stacks) =
            BpfHashMap::<&mut MapData, u64, goprobe_common::StackTrace>::try_from(map)
        else {
            return;
        };
        let keys: Vec<u64> = stacks.keys().filter_map(Result::ok).collect();
        if keys.len() >= PRUNE_AT {
            for key in keys {
                let _ = stacks.remove(&key);
            }
        }
    }

    /// The stack health counters.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        stacks::counters(&self.ebpf)
    }
}

impl CpuProfile {
    /// Nanoseconds of CPU one sample stands for.
    pub fn period_ns(&self) -> i64 {
        1_000_000_000 / self.frequency.max(1) as i64
    }

    /// The samples of one process (the agent archives one profile per process).
    pub fn of_pid(&self, pid: u32) -> CpuProfile {
        CpuProfile {
            stacks: self.stacks.iter().filter(|s| s.1 == pid).cloned().collect(),
            frequency: self.frequency,
            duration: self.duration,
            start_time: self.start_time,
        }
    }

    pub fn samples(&self) -> u64 {
        self.stacks.iter().map(|s| s.2).sum()
    }

    /// As Go's runtime/pprof writes a CPU profile: samples/count and cpu/nanoseconds.
    pub fn to_pprof(&self, comment: &str) -> crate::outputs::pprof::Profile {
        let period = self.period_ns();
        let mut builder = ProfileBuilder::new(
            &[("samples", "count"), ("cpu", "nanoseconds")],
            Some(("cpu", "nanoseconds", period)),
        );
        builder.comment(comment);
        for (stack, pid, count) in &self.stacks {
            // A `pid` label, as Go's pprof labels: `go tool pprof -tagfocus pid=N` keeps one.
            let pid = pid.to_string();
            builder.add(
                stack,
                &[*count as i64, *count as i64 * period],
                &[("pid", &pid)],
            );
        }
        let start_ns = self
            .start_time
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        builder.finish(start_ns, self.duration.as_nanos() as i64)
    }

    pub fn folded(&self) -> Vec<String> {
        flamegraph::folded_lines(self.stacks.iter().map(|(s, _, c)| (&s[..], *c)))
    }

    /// The functions with the most samples, `pprof -top` style: (flat, cum, name).
    pub fn top(&self, limit: usize) -> Vec<(u64, u64, String)> {
        let mut flat: HashMap<&str, u64> = HashMap::new();
        let mut cum: HashMap<&str, u64> = HashMap::new();
        for (stack, _, count) in &self.stacks {
            if let Some(leaf) = stack.iter().find(|l| l.kind != Kind::Truncated)
                && let Some(line) = leaf.lines.first()
            {
                *flat.entry(line.function.as_str()).or_default() += count;
            }
            let mut seen = HashSet::new();
            for line in stack.iter().flat_map(|l| l.lines.iter()) {
                if seen.insert(line.function.as_str()) {
                    *cum.entry(line.function.as_str()).or_default() += count;
                }
            }
        }
        let mut rows: Vec<(u64, u64, String)> = cum
            .iter()
            .map(|(name, &c)| (flat.get(name).copied().unwrap_or(0), c, name.to_string()))
            .collect();
        rows.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        rows.truncate(limit);
        rows
    }
}

/// What `GET /debug/pprof/profile?pid=N[&seconds=S][&hz=F]` asks for, as `go tool pprof` sends
/// it: Go's own defaults (30 s, 100 Hz), the duration capped at `max_seconds`.
pub fn profile_request(
    params: &HashMap<String, String>,
    max_seconds: u64,
) -> Result<(u32, Duration, u64), (u16, String)> {
    let number = |name: &str, default: Option<u64>, max: u64| -> Result<u64, (u16, String)> {
        match params.get(name) {
            None => default.ok_or_else(|| (400, format!("missing {name}= (e.g. ?{name}=1234)"))),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|&n| n >= 1 && n <= max)
                .ok_or_else(|| (400, format!("{name}={v:?} is not a number from 1 to {max}"))),
        }
    };
    let pid = number("pid", None, u64::from(u32::MAX))? as u32;
    let seconds = number("seconds", Some(30), max_seconds)?;
    let hz = number("hz", Some(100), 10_000)?;
    Ok((pid, Duration::from_secs(seconds), hz))
}

/// Profile `pid` for `duration` at `frequency` Hz: the library entry point for callers other
/// than the CLI (the agent's `/debug/pprof/profile?pid=N&seconds=S`).
pub async fn profile_pid(
    pid: u32,
    duration: Duration,
    frequency: u64,
) -> anyhow::Result<crate::outputs::pprof::Profile> {
    let process = Process::get(pid)?;
    crate::inspect::BinaryIndex::open(&process.exe)
        .map_err(|e| anyhow::anyhow!("PID {pid} ({}): {e}", process.exe_name.display()))?;
    let mut symbolizer = Symbolizer::default();
    symbolizer.observe(pid);
    let mut profiler = Profiler::start(frequency, false)?;
    profiler.add_pid(pid)?;
    let end = tokio::time::Instant::now() + duration;
    while tokio::time::Instant::now() < end {
        tokio::time::sleep(DRAIN_EVERY.min(end - tokio::time::Instant::now())).await;
        profiler.drain();
        if !targets::is_alive(pid) {
            break;
        }
    }
    let profile = profiler.finish(&mut symbolizer);
    if profile.samples() == 0 && !targets::is_alive(pid) {
        bail!("PID {pid} exited before any sample was taken");
    }
    Ok(profile.to_pprof(&format!(
        "goprobe profile of PID {pid}, {frequency} Hz, {:.1} s",
        duration.as_secs_f64()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &[(&str, &str)]) -> HashMap<String, String> {
        q.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn profile_requests_as_go_tool_pprof_sends_them() {
        assert_eq!(
            profile_request(&params(&[("pid", "42")]), 60),
            Ok((42, Duration::from_secs(30), 100))
        );
        assert_eq!(
            profile_request(
                &params(&[("pid", "42"), ("seconds", "5"), ("hz", "499")]),
                60
            ),
            Ok((42, Duration::from_secs(5), 499))
        );
        assert_eq!(profile_request(&params(&[]), 60).unwrap_err().0, 400);
        assert_eq!(
            profile_request(&params(&[("pid", "x")]), 60).unwrap_err().0,
            400
        );
        assert!(
            profile_request(&params(&[("pid", "1"), ("seconds", "0")]), 60)
                .unwrap_err()
                .1
                .contains("seconds")
        );
    }

    #[test]
    fn top_and_pid_filter() {
        let loc = |name: &str| Location {
            address: 1,
            kind: Kind::Go,
            mapping: None,
            lines: vec![Line {
                function: name.into(),
                file: String::new(),
                line: 0,
            }],
        };
        let profile = CpuProfile {
            stacks: vec![
                (vec![loc("main.hot"), loc("main.main")], 1, 30),
                (vec![loc("main.cold"), loc("main.main")], 1, 10),
                (vec![loc("main.hot"), loc("main.main")], 2, 5),
            ],
            frequency: 100,
            duration: Duration::from_secs(1),
            start_time: SystemTime::UNIX_EPOCH,
        };
        assert_eq!(profile.samples(), 45);
        let top = profile.top(2);
        assert_eq!(top[0], (35, 35, "main.hot".to_string()));
        assert_eq!(top[1], (10, 10, "main.cold".to_string()));
        assert_eq!(profile.of_pid(2).samples(), 5);
        let pprof = profile.to_pprof("test");
        assert_eq!(pprof.period, 10_000_000);
        assert_eq!(pprof.sample[0].value, vec![30, 300_000_000]);
    }
}

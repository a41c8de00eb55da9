//! Where goroutines wait, for `goprobe offcpu` and the agent's `/debug/pprof/block`: the runtime
//! sites of `funclatency --split` (`runtime.gopark` with its wait reason, `reentersyscall`,
//! `casgstatus` and `exitsyscall` for the ends) on every goroutine of the traced processes; each
//! wait is charged to the stack it began in (walked at `gopark` or `reentersyscall`) and its
//! state (goprobe-ebpf/src/split.rs). The result is a profile of stacks weighted by waiting time,
//! as Go's block and mutex profiles are, for any Go process.
use std::{
    collections::{HashMap, HashSet},
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use goprobe_common::split;

use crate::{
    inspect::BinaryIndex,
    kernel::{Attachment, KernelError, Site, split::OffCpuKernel, stacks::StackReader},
    outputs::{flamegraph, pprof::ProfileBuilder},
    symbolize::{Kind, Line, Location, Stack, Symbolizer},
    targets::Process,
};

pub struct OffCpu {
    kernel: OffCpuKernel,
    attachments: Vec<Attachment>,
    pids: HashSet<u32>,
    started: Instant,
    start_time: SystemTime,
}

/// Stacks (innermost first), process, state, and the waits' count and total time.
pub struct OffCpuProfile {
    pub stacks: Vec<(Stack, u32, u32, u64, u64)>,
    pub duration: Duration,
    pub start_time: SystemTime,
}

/// The runtime sites of one binary.
fn sites_of(path: &Path) -> anyhow::Result<Vec<Site>> {
    let index = BinaryIndex::open(path)?;
    let plan = crate::plan::split::plan_split(&index);
    for note in &plan.notes {
        eprintln!("goprobe: {}: {note}", path.display());
    }
    if plan.sites.is_empty() {
        anyhow::bail!("{}: no runtime function to probe", path.display());
    }
    Ok(plan
        .sites
        .iter()
        .map(|&(offset, cookie)| Site { offset, cookie })
        .collect())
}

impl OffCpu {
    pub fn start() -> Result<Self, KernelError> {
        Ok(Self {
            kernel: OffCpuKernel::load()?,
            attachments: Vec::new(),
            pids: HashSet::new(),
            started: Instant::now(),
            start_time: SystemTime::now(),
        })
    }

    /// Trace the goroutines of one process.
    pub fn add_pid(&mut self, pid: u32) -> anyhow::Result<()> {
        if !self.pids.insert(pid) {
            return Ok(());
        }
        let process = Process::get(pid)?;
        let sites = sites_of(&process.exe)
            .with_context(|| format!("PID {pid} ({})", process.exe_name.display()))?;
        let attachment = self.kernel.attach(&process.exe, Some(pid), &sites)?;
        self.attachments.push(attachment);
        Ok(())
    }

    /// Trace every process that runs the binary at `path`, now and later.
    pub fn add_binary(&mut self, path: &Path) -> anyhow::Result<()> {
        let sites = sites_of(path)?;
        let attachment = self.kernel.attach(path, None, &sites)?;
        self.attachments.push(attachment);
        Ok(())
    }

    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        let mut out = crate::kernel::split::counters(&self.kernel.ebpf)
            .into_iter()
            .filter(|(name, _)| !name.starts_with("split_"))
            .collect::<Vec<_>>();
        out.extend(crate::kernel::stacks::counters(&self.kernel.ebpf));
        out
    }

    /// The waits that ended so far, symbolized (waits still under way are not in it).
    pub fn profile(&self, symbolizer: &mut Symbolizer) -> OffCpuProfile {
        let mut reader = StackReader::default();
        let mut merged: HashMap<(Stack, u32, u32), (u64, u64)> = HashMap::new();
        for (key, total) in self.kernel.waits() {
            symbolizer.observe(key.tgid);
            let stack = match reader.get(&self.kernel.ebpf, key.stack) {
                Some(trace) => symbolizer.user_stack(key.tgid, &trace, key.leaf, None),
                None => vec![pseudo_frame("[truncated: no user stack]", Kind::Truncated)],
            };
            let slot = merged.entry((stack, key.tgid, key.func)).or_default();
            slot.0 += total.count;
            slot.1 += total.ns;
        }
        let mut stacks: Vec<_> = merged
            .into_iter()
            .map(|((stack, pid, state), (count, ns))| (stack, pid, state, count, ns))
            .collect();
        stacks.sort_by_key(|s| std::cmp::Reverse(s.4));
        OffCpuProfile {
            stacks,
            duration: self.started.elapsed(),
            start_time: self.start_time,
        }
    }
}

fn pseudo_frame(name: &str, kind: Kind) -> Location {
    Location {
        address: 0,
        kind,
        mapping: None,
        lines: vec![Line {
            function: name.to_string(),
            file: String::new(),
            line: 0,
        }],
    }
}

/// A state's name (`split::NAMES`).
pub fn state_name(state: u32) -> &'static str {
    split::NAMES.get(state as usize).copied().unwrap_or("other")
}

impl OffCpuProfile {
    pub fn total_ns(&self) -> u64 {
        self.stacks.iter().map(|s| s.4).sum()
    }

    /// As Go's block profile: contentions/count and delay/nanoseconds, each sample labelled with
    /// its `pid` and `reason` (`go tool pprof -tagfocus reason=chan_receive`).
    pub fn to_pprof(&self, comment: &str) -> crate::outputs::pprof::Profile {
        let mut builder =
            ProfileBuilder::new(&[("contentions", "count"), ("delay", "nanoseconds")], None);
        builder.comment(comment);
        for (stack, pid, state, count, ns) in &self.stacks {
            let pid = pid.to_string();
            builder.add(
                stack,
                &[*count as i64, *ns as i64],
                &[("pid", &pid), ("reason", state_name(*state))],
            );
        }
        let start_ns = self
            .start_time
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        builder.finish(start_ns, self.duration.as_nanos() as i64)
    }

    /// Folded stacks weighted by waiting time in microseconds, each under a root frame naming
    /// its reason (`[chan_receive]`).
    pub fn folded(&self) -> Vec<String> {
        let stacks: Vec<(Stack, u64)> = self
            .stacks
            .iter()
            .map(|(stack, _, state, _, ns)| {
                let mut stack = stack.clone();
                stack.push(pseudo_frame(&format!("[{}]", state_name(*state)), Kind::Go));
                (stack, ns / 1000)
            })
            .collect();
        flamegraph::folded_lines(stacks.iter().map(|(s, c)| (&s[..], *c)))
    }

    /// Waiting time per reason, largest first.
    pub fn by_reason(&self) -> Vec<(&'static str, u64, u64)> {
        let mut by: HashMap<u32, (u64, u64)> = HashMap::new();
        for (_, _, state, count, ns) in &self.stacks {
            let slot = by.entry(*state).or_default();
            slot.0 += count;
            slot.1 += ns;
        }
        let mut rows: Vec<_> = by
            .into_iter()
            .map(|(state, (count, ns))| (state_name(state), count, ns))
            .collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.2));
        rows
    }
}

/// Trace the waits of `pid` for `duration`: the library entry point for callers other than the
/// CLI (the agent's `/debug/pprof/block?pid=N&seconds=S`).
pub async fn block_pid(
    pid: u32,
    duration: Duration,
) -> anyhow::Result<crate::outputs::pprof::Profile> {
    let mut symbolizer = Symbolizer::default();
    symbolizer.observe(pid);
    let mut offcpu = OffCpu::start()?;
    offcpu.add_pid(pid)?;
    let end = tokio::time::Instant::now() + duration;
    while tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(200).min(end - tokio::time::Instant::now())).await;
        if !crate::targets::is_alive(pid) {
            break;
        }
    }
    let profile = offcpu.profile(&mut symbolizer);
    Ok(profile.to_pprof(&format!(
        "goprobe offcpu of PID {pid}, {:.1} s",
        profile.duration.as_secs_f64()
    )))
}

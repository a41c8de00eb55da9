//! `funclatency --split` seen from user space: the wait-reason tables, the runtime-site program
//! and the `sched_switch` tracepoint (goprobe-ebpf/src/split.rs), its counters and its sweep.
use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap, PerCpuArray},
    programs::{RawTracePoint, UProbe},
};
use goprobe_common::{GoroutineKey, GoroutineSplit, NestedKey, SplitSnapshot, split};

use super::{AttachMode, KernelError, error_chain, maps};

const SITES: &str = "goprobe_split";
const SITES_MULTI: &str = "goprobe_split_multi";
const SWITCH: &str = "goprobe_split_switch";

pub fn program_name(mode: AttachMode) -> &'static str {
    match mode {
        AttachMode::Multi => SITES_MULTI,
        AttachMode::PerSite => SITES,
    }
}

/// Load the split's programs, write the wait-reason tables and attach `sched_switch` (it stays
/// attached as long as the kernel side is loaded).
pub fn start(ebpf: &mut Ebpf, mode: AttachMode) -> Result<(), KernelError> {
    write_tables(ebpf)?;
    let sites: &mut UProbe = ebpf
        .program_mut(program_name(mode))
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| KernelError::Load(format!("no uprobe {}", program_name(mode))))?;
    sites
        .load()
        .map_err(|e| KernelError::Load(format!("{}: {}", program_name(mode), error_chain(&e))))?;
    let switch: &mut RawTracePoint = ebpf
        .program_mut(SWITCH)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| KernelError::Load(format!("no raw tracepoint {SWITCH}")))?;
    switch
        .load()
        .map_err(|e| KernelError::Load(format!("{SWITCH}: {}", error_chain(&e))))?;
    switch
        .attach("sched_switch")
        .map_err(|e| KernelError::Load(format!("sched_switch: {}", error_chain(&e))))?;
    Ok(())
}

/// The split's counters, summed over CPUs, by name.
pub fn counters(ebpf: &Ebpf) -> Vec<(&'static str, u64)> {
    let array = ebpf
        .map(maps::name::SPLIT_COUNTERS)
        .and_then(|m| PerCpuArray::<_, u64>::try_from(m).ok());
    split::counter::NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let total = array
                .as_ref()
                .and_then(|a| a.get(&(i as u32), 0).ok())
                .map_or(0, |values| values.iter().sum());
            (*name, total)
        })
        .collect()
}

/// Drop the split records of processes for which `alive` is false.
pub fn sweep(ebpf: &mut Ebpf, alive: &dyn Fn(u32) -> bool) {
    super::remove_entries::<GoroutineKey, GoroutineSplit>(ebpf, maps::name::SPLIT_G, |k, _| {
        !alive(k.tgid)
    });
    super::remove_entries::<NestedKey, SplitSnapshot>(ebpf, maps::name::SPLIT_OPEN, |k, _| {
        !alive(k.tgid)
    });
    // Threads are keyed by task address: the dead are found by the goroutine they ran.
    if let Some(map) = ebpf.map_mut(maps::name::RUNNING_ON)
        && let Ok(mut running) = BpfHashMap::<_, u64, GoroutineKey>::try_from(map)
    {
        let dead: Vec<u64> = running
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, key)| !alive(key.tgid))
            .map(|(task, _)| task)
            .collect();
        for task in dead {
            let _ = running.remove(&task);
        }
    }
}

/// `goprobe offcpu`: the runtime-site program alone, recording where goroutines wait
/// (`OFFCPU_ON`), with the stack maps it needs.
pub struct OffCpuKernel {
    pub ebpf: Ebpf,
    mode: AttachMode,
}

impl OffCpuKernel {
    pub fn load() -> Result<Self, KernelError> {
        super::preflight()?;
        let mode = super::default_mode(None);
        let mut loader = super::loader();
        loader.override_global("OFFCPU_ON", &1u8, true);
        maps::size_unused_maps(
            &mut loader,
            maps::MapUse {
                pairing: false,
                stacks: true,
                stack_counts: false,
                profile: false,
                kernel_stacks: false,
                split: false,
                offcpu: true,
            },
        );
        let mut ebpf = super::load_object(loader)?;
        write_tables(&mut ebpf)?;
        let sites: &mut UProbe = ebpf
            .program_mut(program_name(mode))
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| KernelError::Load(format!("no uprobe {}", program_name(mode))))?;
        sites.load().map_err(|e| {
            KernelError::Load(format!("{}: {}", program_name(mode), error_chain(&e)))
        })?;
        Ok(Self { ebpf, mode })
    }

    /// Attach the runtime sites of the binary at `target` (offsets and cookies from
    /// `plan::split`), for `pid` only or every process running it.
    pub fn attach(
        &mut self,
        target: &std::path::Path,
        pid: Option<u32>,
        sites: &[super::Site],
    ) -> Result<super::Attachment, KernelError> {
        super::attach_sites(
            &mut self.ebpf,
            target,
            pid,
            &[(program_name(self.mode), sites)],
        )
    }

    /// Waits so far per (process, state, stack).
    pub fn waits(&self) -> Vec<(goprobe_common::StackCountKey, goprobe_common::WaitTotal)> {
        self.ebpf
            .map(maps::name::OFFCPU_NS)
            .and_then(|m| {
                BpfHashMap::<_, goprobe_common::StackCountKey, goprobe_common::WaitTotal>::try_from(
                    m,
                )
                .ok()
            })
            .map(|m| m.iter().filter_map(Result::ok).collect())
            .unwrap_or_default()
    }
}

fn write_tables(ebpf: &mut Ebpf) -> Result<(), KernelError> {
    let tables = crate::plan::split::reason_tables();
    let map = ebpf
        .map_mut(maps::name::SPLIT_REASONS)
        .ok_or_else(|| KernelError::Load("no SPLIT_REASONS map".into()))?;
    let mut reasons =
        Array::<_, [u8; 256]>::try_from(map).map_err(|e| KernelError::Load(e.to_string()))?;
    for (i, table) in tables.iter().enumerate() {
        reasons
            .set(i as u32, table, 0)
            .map_err(|e| KernelError::Load(format!("wait-reason table {i}: {e}")))?;
    }
    Ok(())
}

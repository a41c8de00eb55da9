//! The catalogue of the kernel programs' maps that a run sizes: each mode creates the maps it
//! does not use with one entry (or the smallest ring buffer), so it pays nothing for them.
use aya::EbpfLoader;

/// The maps' names, as the kernel programs (goprobe-ebpf) declare them.
pub mod name {
    /// One record per goroutine that made a traced call: its outermost open call and cached `g.stack.hi`.
    pub const GOROUTINES: &str = "GOROUTINES";
    /// Open calls nested inside another open call of their goroutine.
    pub const NESTED: &str = "NESTED";
    /// Processes that have goroutine records (user space sweeps when one exits).
    pub const PROCESSES: &str = "PROCESSES";
    /// Calls seen but not timed, per process and function.
    pub const MISSED: &str = "MISSED";
    /// The latency programs' health counters (`goprobe_common::counter`).
    pub const COUNTERS: &str = "COUNTERS";
    /// Completed calls (ring buffer).
    pub const EVENTS: &str = "EVENTS";
    /// Boundaries of inlined copies, by index.
    pub const INLINE_SITES: &str = "INLINE_SITES";
    /// `--by`: what each function's entry reads from its arguments, by function id.
    pub const ARG_SPECS: &str = "ARG_SPECS";
    /// New processes (ring buffer of the exec tracepoint).
    pub const EXECS: &str = "EXECS";
    /// Exec events dropped because `EXECS` was full.
    pub const EXEC_LOST: &str = "EXEC_LOST";
    /// Distinct user stacks, by content hash.
    pub const STACKS: &str = "STACKS";
    /// `stackcount`: calls per (process, function, stack).
    pub const STACK_COUNTS: &str = "STACK_COUNTS";
    /// The stack programs' health counters (`goprobe_common::stack::counter`).
    pub const STACK_COUNTERS: &str = "STACK_COUNTERS";
    /// CPU profile samples (ring buffer).
    pub const SAMPLES: &str = "SAMPLES";
    /// Processes the CPU sampler samples.
    pub const PROFILE_TGIDS: &str = "PROFILE_TGIDS";
    /// Kernel stacks of profile samples.
    pub const KSTACKS: &str = "KSTACKS";
    /// `--split`: per goroutine, its state and time per state.
    pub const SPLIT_G: &str = "SPLIT_G";
    /// `--split`: each open call's time per state at its entry.
    pub const SPLIT_OPEN: &str = "SPLIT_OPEN";
    /// `--split`: the split goroutine each thread runs.
    pub const RUNNING_ON: &str = "RUNNING_ON";
    /// `--split`: wait reason → state, per Go version.
    pub const SPLIT_REASONS: &str = "SPLIT_REASONS";
    /// `--split`: its health counters (`goprobe_common::split::counter`).
    pub const SPLIT_COUNTERS: &str = "SPLIT_COUNTERS";
    /// `offcpu`: goroutines waiting now, with their stack.
    pub const OFFCPU_G: &str = "OFFCPU_G";
    /// `offcpu`: waits and their time per (process, state, stack).
    pub const OFFCPU_NS: &str = "OFFCPU_NS";
}

/// Which maps a run uses; the others are created with one entry, so a run pays nothing for
/// what it does not use.
#[derive(Debug, Clone, Copy, Default)]
pub struct MapUse {
    /// Entry/return pairing (`funclatency`, the agent): the goroutine and open-call maps.
    pub pairing: bool,
    pub stacks: bool,
    pub stack_counts: bool,
    pub profile: bool,
    /// The sampler also records kernel stacks (`profile --kernel`).
    pub kernel_stacks: bool,
    /// `funclatency --split`.
    pub split: bool,
    /// `goprobe offcpu`.
    pub offcpu: bool,
}

pub fn size_unused_maps(loader: &mut EbpfLoader<'_>, used: MapUse) {
    // A ring buffer's size is a power-of-two number of pages: one page when unused.
    const ONE_PAGE: u32 = 4096;
    if !used.pairing {
        // Not preallocated, but their hash tables are (16 bytes a bucket).
        for map in [
            name::GOROUTINES,
            name::NESTED,
            name::PROCESSES,
            name::MISSED,
        ] {
            loader.map_max_entries(map, 1);
        }
        loader.map_max_entries(name::EVENTS, ONE_PAGE);
    }
    if !used.stacks {
        loader.map_max_entries(name::STACKS, 1);
    }
    if !used.stack_counts {
        loader.map_max_entries(name::STACK_COUNTS, 1);
    }
    if !used.profile {
        loader.map_max_entries(name::SAMPLES, ONE_PAGE);
        loader.map_max_entries(name::PROFILE_TGIDS, 1);
    }
    if !(used.profile && used.kernel_stacks) {
        loader.map_max_entries(name::KSTACKS, 1);
    }
    if !used.split {
        for map in [name::SPLIT_G, name::SPLIT_OPEN, name::RUNNING_ON] {
            loader.map_max_entries(map, 1);
        }
    }
    if !used.offcpu {
        for map in [name::OFFCPU_G, name::OFFCPU_NS] {
            loader.map_max_entries(map, 1);
        }
    }
}

//! The rare conditions the programs meet, reported through aya-log: a full map, a `g` whose
//! stack cannot be read, a stack position out of range. Each is counted as well (the counters
//! are what the outputs report); the log says which process and function, at `-v`.
//!
//! Userspace sets `AYA_LOG_LEVEL` at load time (goprobe/src/kernel/log.rs): 0 unless `-v`, so
//! the verifier sees a constant and drops every log statement. Logging off costs the programs
//! nothing; on, only these rare branches pay. aya-log-ebpf 0.3's macros write to their own ring
//! buffer and do not use the program context, so these helpers need none (`()` stands in).

use aya_log_ebpf::{debug, warn};

/// The goroutine table (`GOROUTINES`) is full: a call is not timed.
#[inline(always)]
pub fn goroutines_full(tgid: u32, func: u32) {
    warn!(
        (),
        "goroutine table full: a call of function #{} in PID {} is not timed", func, tgid
    );
}

/// The table of nested open calls (`NESTED`) is full: a call is not timed.
#[inline(always)]
pub fn nested_full(tgid: u32, func: u32, depth: u32) {
    warn!(
        (),
        "nested-call table full: a call of function #{} at depth {} in PID {} is not timed",
        func,
        depth,
        tgid
    );
}

/// The process table (`PROCESSES`) is full: the process's records are not swept when it exits.
#[inline(always)]
pub fn processes_full(tgid: u32) {
    warn!(
        (),
        "process table full: PID {} is not tracked for cleanup", tgid
    );
}

/// The per-function table of missed calls (`MISSED`) is full: a miss is counted in the totals
/// only.
#[inline(always)]
pub fn missed_full(tgid: u32, func: u32) {
    warn!(
        (),
        "missed-call table full: a missed call of function #{} in PID {} is counted in the totals only",
        func,
        tgid
    );
}

/// The register that should hold `g` points at nothing readable.
#[inline(always)]
pub fn g_unreadable(tgid: u32, g: u64) {
    debug!((), "PID {}: cannot read g.stack.hi of g {:x}", tgid, g);
}

/// The stack pointer is not within 1 GiB below `g.stack.hi`: the register did not hold the
/// running goroutine's `g`, or its stack moved unseen.
#[inline(always)]
pub fn stack_position_out_of_range(tgid: u32, g: u64, stack_hi: u64, sp: u64) {
    debug!(
        (),
        "PID {}: unexpected stack position: sp {:x} is not below g {:x}'s stack.hi {:x}",
        tgid,
        sp,
        g,
        stack_hi
    );
}

/// The table of walked stacks (`STACKS`) is full: a stack is not kept.
#[inline(always)]
pub fn stacks_full() {
    warn!((), "stack table full: a walked stack is not kept");
}

/// The table of calls by stack (`STACK_COUNTS`) is full: a call is not counted by stack.
#[inline(always)]
pub fn stack_counts_full(tgid: u32, func: u32) {
    warn!(
        (),
        "stack-count table full: a call of function #{} in PID {} is not counted by stack",
        func,
        tgid
    );
}

/// The split's table of goroutines (`SPLIT_G`) is full: a goroutine's time is not split.
#[inline(always)]
pub fn split_full(tgid: u32) {
    warn!(
        (),
        "split table full: a goroutine of PID {} is not split by state", tgid
    );
}

/// A table of off-CPU waits (`OFFCPU_G`, `OFFCPU_NS`) is full: a wait is not recorded.
#[inline(always)]
pub fn waits_full(tgid: u32) {
    warn!(
        (),
        "off-CPU table full: a wait in PID {} is not recorded", tgid
    );
}

//! User stacks: the frame-pointer walk shared by `stackcount`, `funclatency --stacks` and the CPU
//! profiler, and their programs.
//!
//! * The walk starts at the frame pointer (`rbp`, x29) and follows `[fp] = caller's fp,
//!   [fp+8] = return address`, which Go keeps on amd64 and arm64 (see arch.rs). It stops at a zero frame pointer (the end of a goroutine or thread stack),
//!   at an unreadable record, or when the next frame pointer is not above the current one (not a
//!   chain). How it ended is recorded, so user space marks where a stack ends rather than
//!   inventing frames.
//! * Stacks are stored once in `STACKS`, keyed by a hash of their contents; events carry the hash.
//! * The leaf's return address where no frame is set up (the word at `rsp` on amd64, the link
//!   register on arm64) and `fp - sp` travel with the hash: at an entry or RET probe, or in a
//!   frameless leaf, the caller's return address is there and the frame pointer still belongs to
//!   the caller.
//!   User space decides with the function's SP table which case a PC is in.
use crate::arch;
use aya_ebpf::{
    EbpfContext as _, Global,
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST, BPF_RB_NO_WAKEUP, pt_regs},
    helpers::{
        bpf_get_attach_cookie, bpf_get_current_task_btf, bpf_probe_read_user, bpf_task_pt_regs,
    },
    macros::{map, perf_event, uprobe},
    maps::{HashMap, PerCpuArray, RingBuf, StackTrace as KernelStacks},
    programs::{PerfEventContext, ProbeContext, tracing::StackIdContext as _},
};
use goprobe_common::{
    LatencyEvent, LeafContext, StackCountKey, StackLatencyEvent, StackSample, StackTrace, cookie,
    stack::{self, MAX_FRAMES, counter},
};

/// Distinct user stacks, by content hash. Not preallocated: it costs only the stacks seen. User
/// space sizes it to 1 when no program of this run walks stacks.
#[map]
static STACKS: HashMap<u64, StackTrace> = HashMap::with_max_entries(32768, BPF_F_NO_PREALLOC);

/// The stack being walked (too large for the 512-byte BPF stack).
#[map]
static STACK_SCRATCH: PerCpuArray<StackTrace> = PerCpuArray::with_max_entries(1, 0);

/// `stackcount`: calls per (process, function, stack).
#[map]
static STACK_COUNTS: HashMap<StackCountKey, u64> =
    HashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);

/// Health counters, indexed by `goprobe_common::stack::counter`.
#[map]
static STACK_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Profile samples of the traced processes. User space sizes it (a page when unused).
#[map]
static SAMPLES: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Processes the profiler samples (value unused), unless `PROFILE_ALL` is set.
#[map]
static PROFILE_TGIDS: HashMap<u32, u8> = HashMap::with_max_entries(4096, 0);

/// Kernel stacks of profile samples (`--kernel`); sized to 1 otherwise.
#[map]
static KSTACKS: KernelStacks = KernelStacks::with_max_entries(16384, 0);

/// `funclatency --stacks`: capture the stack at the RET of calls at least this slow (ns).
/// `u64::MAX` (the default) captures none.
#[unsafe(no_mangle)]
static LATENCY_STACKS_MIN_NS: Global<u64> = Global::new(u64::MAX);

/// Profile: sample every process, not only those in `PROFILE_TGIDS`.
#[unsafe(no_mangle)]
static PROFILE_ALL: Global<u8> = Global::new(0);

/// Profile: also record the kernel stack of samples taken in the kernel.
#[unsafe(no_mangle)]
static PROFILE_KERNEL_STACKS: Global<u8> = Global::new(0);

const FRAME_MASK: usize = MAX_FRAMES - 1;
const _: () = assert!(MAX_FRAMES.is_power_of_two());
/// Any real frame pointer chain moves up by less than this per frame (Go frames are far smaller);
/// a larger step means the walk left the stack.
const MAX_FRAME_STEP: u64 = 1 << 26;

#[inline(always)]
fn bump(index: u32) {
    if let Some(value) = STACK_COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU value, and BPF programs are not preempted on their CPU.
        unsafe { *value += 1 };
    }
}

use crate::arch::UserRegs;

#[inline(always)]
fn mix(h: u64, v: u64) -> u64 {
    (h ^ v).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(29)
}

/// Walk the user stack from `regs` into `STACKS`; its hash and the leaf context. None when there
/// is no scratch space (cannot happen) or the stack could not be stored.
#[inline(always)]
pub(crate) fn walk(regs: UserRegs) -> Option<(u64, LeafContext)> {
    bump(counter::WALKED);
    let trace = STACK_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch value.
    let trace = unsafe { &mut *trace };
    trace.pcs[0] = regs.ip;
    let mut hash = mix(0xcbf2_9ce4_8422_2325, regs.ip);
    let mut fp = regs.fp;
    let mut len: usize = 1;
    let mut end = stack::END_DEPTH;
    for _ in 1..MAX_FRAMES {
        if fp == 0 {
            end = stack::END_CLEAN;
            break;
        }
        // SAFETY: bpf_probe_read_user checks the address; a bad one returns an error.
        let Ok(record) = (unsafe { bpf_probe_read_user(fp as *const [u64; 2]) }) else {
            end = stack::END_UNREADABLE;
            break;
        };
        let (next, ret) = (record[0], record[1]);
        if ret == 0 {
            end = stack::END_CLEAN;
            break;
        }
        // A volatile read keeps LLVM from turning the index into a walking pointer that the
        // verifier cannot bound (see `depth()` in main.rs).
        // SAFETY: reads a local.
        let at = unsafe { core::ptr::read_volatile(&len) };
        // SAFETY: masked into bounds; the verifier needs the mask to see that.
        unsafe { *trace.pcs.get_unchecked_mut(at & FRAME_MASK) = ret };
        hash = mix(hash, ret);
        len = at + 1;
        if next != 0 && (next <= fp || next - fp > MAX_FRAME_STEP) {
            end = stack::END_NOT_ASCENDING;
            break;
        }
        fp = next;
    }
    trace.len = len as u32;
    trace.end = end;
    hash = mix(hash, (len as u64) << 8 | u64::from(end));
    if hash == 0 {
        hash = 1;
    }
    match STACKS.insert(&hash, trace, BPF_NOEXIST as u64) {
        Ok(()) => {}
        // Already there (the common case): the same stack was seen before.
        Err(e) if e == -17 => {}
        Err(_) => {
            bump(counter::STACKS_FULL);
            crate::log::stacks_full();
            return None;
        }
    }
    let sp0 = arch::leaf_return(&regs);
    Some((
        hash,
        LeafContext {
            sp0,
            fp_off: regs.fp.wrapping_sub(regs.sp),
        },
    ))
}

#[inline(always)]
fn tgid() -> Option<u32> {
    crate::current_pid_tgid().map(|(tgid, _)| tgid)
}

#[uprobe]
pub fn goprobe_stackcount(ctx: ProbeContext) -> u32 {
    count_stack(&ctx);
    0
}

#[uprobe(multi)]
pub fn goprobe_stackcount_multi(ctx: ProbeContext) -> u32 {
    count_stack(&ctx);
    0
}

/// `stackcount`: count this call under its stack.
#[inline(always)]
fn count_stack(ctx: &ProbeContext) {
    // SAFETY: plain helper call on the program's own context.
    let site = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    // SAFETY: the kernel hands uprobe programs a valid pt_regs.
    let regs = unsafe { &*ctx.regs };
    // At the stack-check branch, the morestack path: the call passes here again.
    if site & cookie::CHECK_EFLAGS != 0 && arch::takes_morestack(regs) {
        return;
    }
    // Sites the latency tracer also attaches: the goroutine-exit probe is not a call, and a
    // boundary of inlined copies cannot tell a new call from control looping back to the copy's
    // first instruction without the per-goroutine state; only out-of-line calls are counted.
    if site & (cookie::BOOKKEEPING | cookie::INLINE_SITE) != 0 {
        return;
    }
    let Some(tgid) = tgid() else {
        return;
    };
    let Some((stack, leaf)) = walk(arch::user(regs)) else {
        return;
    };
    let key = StackCountKey {
        tgid,
        func: (site & cookie::FUNC_MASK) as u32,
        stack,
        leaf,
    };
    match STACK_COUNTS.get_ptr_mut(&key) {
        Some(count) => add_one(count),
        None => {
            if STACK_COUNTS.insert(&key, &1, BPF_NOEXIST as u64).is_err() {
                // Another CPU inserted it in between, or the map is full.
                match STACK_COUNTS.get_ptr_mut(&key) {
                    Some(count) => add_one(count),
                    None => {
                        bump(counter::COUNTS_FULL);
                        crate::log::stack_counts_full(key.tgid, key.func);
                    }
                }
            }
        }
    }
}

/// Add one to a `STACK_COUNTS` value. The map is shared by all CPUs and the same stack is often
/// counted on two at once: a plain `+= 1` (load, add, store) loses one of the two increments.
/// An atomic add loses none.
#[inline(always)]
fn add_one(count: *mut u64) {
    // SAFETY: a map value pointer, valid and 8-byte aligned while the program runs.
    unsafe { goprobe_ebpf::atomic_add(count, 1) };
}

/// `funclatency --stacks`: whether this call's stack is wanted.
#[inline(always)]
pub fn wants_latency_stack(latency_ns: u64) -> bool {
    let min = LATENCY_STACKS_MIN_NS.load();
    // Tested apart: the value is a frozen read-only global, so when it says "no stacks" the
    // verifier knows this branch is never taken and skips the stack walk behind it, which it
    // would otherwise verify at every pop of the inline program (most of its load time).
    if min == u64::MAX {
        return false;
    }
    latency_ns >= min
}

/// Submit a completed call with the stack it returns to (walked at its RET, where the frame is
/// gone: the return address is at `rsp` on amd64, in x30 on arm64). Returns false if the ring buffer was full.
#[inline(always)]
pub fn submit_latency(events: &RingBuf, regs: &pt_regs, call: LatencyEvent) -> bool {
    let (stack, leaf) = walk(arch::user(regs)).unwrap_or_default();
    match events.reserve::<StackLatencyEvent>(0) {
        Some(mut slot) => {
            slot.write(StackLatencyEvent { call, stack, leaf });
            slot.submit(BPF_RB_NO_WAKEUP as u64);
            true
        }
        None => false,
    }
}

/// On-CPU sampling: a software cpu-clock event on every CPU runs this at the chosen frequency.
#[perf_event]
pub fn goprobe_profile(ctx: PerfEventContext) -> u32 {
    sample(&ctx);
    0
}

#[inline(always)]
fn sample(ctx: &PerfEventContext) {
    let Some((tgid, tid)) = crate::current_pid_tgid() else {
        return;
    };
    if tgid == 0 {
        return; // idle
    }
    if PROFILE_ALL.load() == 0 && PROFILE_TGIDS.get_ptr(&tgid).is_none() {
        return;
    }
    bump(counter::SAMPLES);
    // SAFETY: the kernel hands perf_event programs a valid context.
    let regs = unsafe { &(*ctx.ctx).regs };
    let mut flags = 0;
    let user = if arch::in_user_mode(regs) {
        arch::user(regs)
    } else {
        // In the kernel: the user registers are those saved at the kernel entry.
        flags |= stack::SAMPLE_IN_KERNEL;
        // SAFETY: helpers without memory arguments; the result is a kernel pointer read below
        // only through bpf_probe_read_kernel.
        let saved = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const pt_regs;
        if saved.is_null() {
            return;
        }
        arch::saved_user(saved)
    };
    let (stack, leaf) = if user.ip != 0 {
        walk(user).unwrap_or_default()
    } else {
        (0, LeafContext::default())
    };
    let sp8 = arch::prologue_return(&user);
    let kstack = if flags & stack::SAMPLE_IN_KERNEL != 0 && PROFILE_KERNEL_STACKS.load() != 0 {
        ctx.get_stackid(&KSTACKS, 0).map_or(-1, |id| id as i32)
    } else {
        -1
    };
    match SAMPLES.reserve::<StackSample>(0) {
        Some(mut slot) => {
            slot.write(StackSample {
                tgid,
                tid,
                stack,
                leaf,
                sp8,
                kstack,
                flags,
            });
            slot.submit(BPF_RB_NO_WAKEUP as u64);
        }
        None => bump(counter::SAMPLES_LOST),
    }
}

//! goprobe's kernel side: uprobes on Go functions that time each call per goroutine.
//!
//! * Entry sites push `(timestamp, stack position, function)` on a small stack kept per
//!   `(tgid, g)`; the `g` pointer is in r14 (Go >= 1.17, amd64). Threads would be the wrong key:
//!   a goroutine that blocks inside a traced call may resume on another thread.
//! * Return sites are uprobes on every RET instruction of the function, never uretprobes: a
//!   uretprobe rewrites the return address on the goroutine stack, which Go copies and walks.
//! * The stack position is `g.stack.hi - rsp`. It is the same at a function's entry site and at
//!   its RET (before the frame is allocated / after it is freed), it survives Go copying the stack
//!   to grow it, and it orders nested calls: an outer call has a smaller value than the calls it
//!   makes. Entries left behind by calls that never returned (panic, `runtime.Goexit`) are found
//!   by that order and discarded, so they are never paired with the wrong return.
//! * Latencies go to a ring buffer submitted without wakeup; user space drains it on a timer, so
//!   the traced thread never pays for a wakeup, and a full buffer is counted, never waited on.
#![no_std]
#![no_main]

mod stacks;

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_NOEXIST, BPF_RB_NO_WAKEUP, pt_regs},
    helpers::{
        bpf_get_attach_cookie, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user,
    },
    macros::{map, uprobe},
    maps::{Array, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::ProbeContext,
};
use goprobe_common::{
    EntryStack, Frame, GoroutineKey, InlineSite, LatencyEvent, MAX_DEPTH, MAX_INLINE_ACTIONS,
    MAX_INLINE_SITES, cookie, counter,
};

/// Open calls per goroutine. An LRU map so a goroutine that exits inside a traced call (its entry
/// can never be popped) is eventually evicted; user space also sweeps entries of dead processes.
/// Entries are deleted when a goroutine's last open call returns, so the map holds only goroutines
/// that are inside a traced call right now. User space may resize it at load time.
#[map]
static GOROUTINES: LruHashMap<GoroutineKey, EntryStack> = LruHashMap::with_max_entries(16384, 0);

/// Source value for inserting a new goroutine: an `EntryStack` (1 KiB) is too large for the
/// 512-byte BPF stack, so it is built in per-CPU map memory instead.
#[map]
static SCRATCH: PerCpuArray<EntryStack> = PerCpuArray::with_max_entries(1, 0);

/// Health counters, indexed by `goprobe_common::counter`.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Events lost per function id (ring buffer full); touched only on the loss path.
#[map]
static LOST_BY_FUNC: PerCpuHashMap<u32, u64> = PerCpuHashMap::with_max_entries(16384, 0);

/// Boundaries of inlined copies, indexed by the low bits of an `INLINE_SITE` cookie; written by
/// user space before it attaches the sites.
#[map]
static INLINE_SITES: Array<InlineSite> = Array::with_max_entries(MAX_INLINE_SITES, 0);

/// Completed calls. 4 MiB holds ~100k events: at 100k calls/s, a second of slack for the drain.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

const EFLAGS_CF: u64 = 1 << 0;
const EFLAGS_ZF: u64 = 1 << 6;
/// Offset of `g.stack.hi` in `runtime.g` (`stack{lo, hi}` is the first field in every Go version).
const G_STACK_HI: u64 = 8;
const DEPTH_MASK: usize = MAX_DEPTH - 1;
const _: () = assert!(MAX_DEPTH.is_power_of_two());

#[inline(always)]
fn bump(index: u32) {
    add(index, 1);
}

#[inline(always)]
fn add(index: u32, n: u64) {
    if let Some(value) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU value, and BPF programs are not preempted on their CPU.
        unsafe { *value += n };
    }
}

#[inline(always)]
fn regs(ctx: &ProbeContext) -> &pt_regs {
    // SAFETY: the kernel hands uprobe programs a valid pt_regs.
    unsafe { &*ctx.regs }
}

/// The goroutine and its stack position at this probe site.
#[inline(always)]
fn goroutine_site(regs: &pt_regs) -> Option<(GoroutineKey, u32)> {
    let g = regs.r14;
    // SAFETY: bpf_probe_read_user checks the address; a bad one returns an error.
    let stack_hi: u64 = unsafe { bpf_probe_read_user((g + G_STACK_HI) as *const u64) }.ok()?;
    let sp_off = stack_hi.checked_sub(regs.rsp)?;
    // Goroutine stacks are at most 1 GiB; anything else means r14 did not hold a g.
    if sp_off > 1 << 30 {
        return None;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    Some((GoroutineKey { tgid, _pad: 0, g }, sp_off as u32))
}

/// The goroutine's current depth, read through a volatile load: otherwise LLVM turns the loops
/// below into a walking pointer whose offset the verifier can no longer bound.
#[inline(always)]
fn depth(stack: &EntryStack) -> usize {
    // SAFETY: reads a field of a valid reference.
    (unsafe { core::ptr::read_volatile(&stack.depth) } as usize).min(MAX_DEPTH)
}

#[inline(always)]
fn frame(stack: &mut EntryStack, index: usize) -> &mut Frame {
    // SAFETY: masked into bounds; the verifier needs the mask to see that.
    unsafe { stack.frames.get_unchecked_mut(index & DEPTH_MASK) }
}

#[uprobe]
pub fn goprobe_entry(ctx: ProbeContext) -> u32 {
    on_entry(&ctx);
    0
}

#[uprobe(multi)]
pub fn goprobe_entry_multi(ctx: ProbeContext) -> u32 {
    on_entry(&ctx);
    0
}

#[uprobe]
pub fn goprobe_return(ctx: ProbeContext) -> u32 {
    on_return(&ctx);
    0
}

#[uprobe(multi)]
pub fn goprobe_return_multi(ctx: ProbeContext) -> u32 {
    on_return(&ctx);
    0
}

/// Probes that do nothing, for `goprobe dev attach`: what a probe costs by itself on each kind
/// of instruction, to compare with what goprobe's programs add (`cargo xtask bench`).
#[uprobe]
pub fn goprobe_bare(_ctx: ProbeContext) -> u32 {
    0
}

#[uprobe(multi)]
pub fn goprobe_bare_multi(_ctx: ProbeContext) -> u32 {
    0
}

#[inline(always)]
fn on_entry(ctx: &ProbeContext) {
    // SAFETY: plain helper call on the program's own context.
    let site = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let regs = regs(ctx);
    // At the stack-check `jbe`, CF or ZF set means the call is about to take the morestack
    // path, which grows the stack and re-enters the function from its first instruction.
    if site & cookie::CHECK_EFLAGS != 0 && regs.eflags & (EFLAGS_CF | EFLAGS_ZF) != 0 {
        bump(counter::MORESTACK_SKIPPED);
        return;
    }
    let low = (site & cookie::FUNC_MASK) as u32;
    let Some((key, sp_off)) = goroutine_site(regs) else {
        bump(counter::G_READ_ERRORS);
        return;
    };
    if site & cookie::GOROUTINE_EXIT != 0 {
        if let Some(stack) = GOROUTINES.get_ptr(&key) {
            // SAFETY: map value pointer.
            add(counter::ENTRIES_ABANDONED, depth(unsafe { &*stack }) as u64);
            let _ = GOROUTINES.remove(&key);
        }
        return;
    }
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if site & cookie::INLINE_SITE != 0 {
        on_inline_site(&key, sp_off, low, now, regs);
        return;
    }
    push(
        &key,
        Frame {
            start_ns: now,
            sp_off,
            func: low,
        },
        false,
    );
}

/// A boundary of inlined copies: close the copies control leaves here, open those it enters.
#[inline(always)]
fn on_inline_site(key: &GoroutineKey, sp_off: u32, index: u32, now: u64, regs: &pt_regs) {
    let Some(site) = INLINE_SITES.get(index) else {
        return;
    };
    if site.n_exits > 0 {
        // Copies nested in each other may end at the same address; two passes pair them in
        // either order.
        for pass in 0..2 * MAX_INLINE_ACTIONS {
            let i = pass % MAX_INLINE_ACTIONS;
            if i < site.n_exits as usize {
                pop(key, sp_off, site.exits[i], now, false, regs);
            }
        }
    }
    for i in 0..MAX_INLINE_ACTIONS {
        if i < site.n_entries as usize {
            push(
                key,
                Frame {
                    start_ns: now,
                    sp_off,
                    func: site.entries[i],
                },
                true,
            );
        }
    }
}

/// Open a call. `inline`: an inlined copy, which runs in its caller's frame, so other open
/// copies at the same stack position are its enclosing copies, not abandoned calls; and if
/// this very copy is already open here, control came back to its first instruction from
/// inside it (a loop), which is not a new call.
#[inline(always)]
fn push(key: &GoroutineKey, new_frame: Frame, inline: bool) {
    let sp_off = new_frame.sp_off;
    if let Some(stack) = GOROUTINES.get_ptr_mut(key) {
        // SAFETY: map value pointer; one goroutine runs on one CPU at a time.
        let stack = unsafe { &mut *stack };
        // Open calls deeper than this one cannot still be running: the goroutine is now making
        // a new call from further out. They ended without returning (panic, Goexit). A real
        // call also closes what is open at its own position.
        for _ in 0..MAX_DEPTH {
            let depth = depth(stack);
            if depth == 0 {
                break;
            }
            let top = frame(stack, depth - 1).sp_off;
            if top < sp_off || (inline && top == sp_off) {
                break;
            }
            stack.depth = depth as u32 - 1;
            bump(counter::ENTRIES_ABANDONED);
        }
        let depth = depth(stack);
        if inline && depth > 0 {
            let top = *frame(stack, depth - 1);
            if top.sp_off == sp_off && top.func == new_frame.func {
                return;
            }
        }
        if depth >= MAX_DEPTH {
            bump(counter::ENTRIES_DROPPED);
            return;
        }
        *frame(stack, depth) = new_frame;
        stack.depth = depth as u32 + 1;
        bump(counter::ENTRIES);
        return;
    }

    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch value; only depth and the first frame are meaningful.
    let scratch = unsafe { &mut *scratch };
    scratch.depth = 1;
    *frame(scratch, 0) = new_frame;
    if GOROUTINES.insert(key, scratch, BPF_NOEXIST as u64).is_ok() {
        bump(counter::ENTRIES);
    } else {
        bump(counter::MAP_FULL);
    }
}

#[inline(always)]
fn on_return(ctx: &ProbeContext) {
    // SAFETY: plain helper call on the program's own context.
    let func = (unsafe { bpf_get_attach_cookie(ctx.as_ptr()) } & cookie::FUNC_MASK) as u32;
    let regs = regs(ctx);
    bump(counter::RETURNS);
    let Some((key, sp_off)) = goroutine_site(regs) else {
        bump(counter::G_READ_ERRORS);
        return;
    };
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if !pop(&key, sp_off, func, now, true, regs) {
        bump(counter::RETURNS_UNPAIRED);
    }
}

/// Close the open call of `func` at stack position `sp_off`, sending its latency; false if there
/// is none. `returning`: a RET, which ends every call still open at its position (in a frameless
/// function, its inlined copies share the position); at an inline exit, other copies at the
/// position are the enclosing ones and stay open. `regs`: the registers at the site, to walk the
/// stack the call returns to (`--stacks`).
#[inline(always)]
fn pop(
    key: &GoroutineKey,
    sp_off: u32,
    func: u32,
    now: u64,
    returning: bool,
    regs: &pt_regs,
) -> bool {
    let Some(stack) = GOROUTINES.get_ptr_mut(key) else {
        return false;
    };
    // SAFETY: map value pointer; one goroutine runs on one CPU at a time.
    let stack = unsafe { &mut *stack };
    // Deeper open calls were abandoned (a panic unwound through them, recovered out here).
    for _ in 0..MAX_DEPTH {
        let depth = depth(stack);
        if depth == 0 {
            break;
        }
        let top = *frame(stack, depth - 1);
        let stale = top.sp_off > sp_off || (returning && top.sp_off == sp_off && top.func != func);
        if !stale {
            break;
        }
        stack.depth = depth as u32 - 1;
        bump(counter::ENTRIES_ABANDONED);
    }
    let mut depth = depth(stack);
    let mut start_ns = None;
    if depth > 0 {
        let top = *frame(stack, depth - 1);
        if top.sp_off == sp_off && top.func == func {
            depth -= 1;
            start_ns = Some(top.start_ns);
        }
    }
    stack.depth = depth as u32;
    if depth == 0 {
        let _ = GOROUTINES.remove(key);
    }
    let Some(start_ns) = start_ns else {
        return false;
    };
    send(
        LatencyEvent {
            tgid: key.tgid,
            func,
            latency_ns: now.saturating_sub(start_ns),
            end_ns: now,
            g: key.g,
        },
        regs,
    );
    true
}

/// Submit a completed call; with `funclatency --stacks`, calls slow enough carry the stack they
/// return to, walked here.
#[inline(always)]
fn send(event: LatencyEvent, regs: &pt_regs) {
    let sent = if stacks::wants_latency_stack(event.latency_ns) {
        stacks::submit_latency(&EVENTS, regs, event)
    } else {
        match EVENTS.reserve::<LatencyEvent>(0) {
            Some(mut slot) => {
                slot.write(event);
                slot.submit(BPF_RB_NO_WAKEUP as u64);
                true
            }
            None => false,
        }
    };
    if sent {
        bump(counter::EVENTS_SENT);
    } else {
        bump(counter::EVENTS_LOST);
        match LOST_BY_FUNC.get_ptr_mut(&event.func) {
            // SAFETY: per-CPU value.
            Some(lost) => unsafe { *lost += 1 },
            None => {
                let _ = LOST_BY_FUNC.insert(&event.func, &1, 0);
            }
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects programs that could reach a panic; nothing here can run.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

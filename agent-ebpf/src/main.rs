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
//! * `g.stack.hi` is read from user memory once per goroutine and kept in its entry stack; only
//!   `runtime.copystack` moves a live goroutine's stack, and a probe there forgets the kept value
//!   (goroutines that exit are dropped at `runtime.goexit1`, so a reused `g` starts afresh). After
//!   a trap the read costs more than the rest of the program (`cargo xtask bench`).
//! * Latencies go to a ring buffer submitted without wakeup; user space drains it on a timer, so
//!   the traced thread never pays for a wakeup, and a full buffer is counted, never waited on.
#![no_std]
#![no_main]

mod exec;
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

/// Open calls per goroutine. A goroutine's entry stays when its last open call returns (depth
/// 0): inserting and deleting a 1 KiB value on every outermost call was most of the entry
/// program's cost (`cargo xtask bench`, BENCHMARKS.md). Entries go when the goroutine exits (the
/// probe on `runtime.goexit1`), when user space sweeps a dead process, or by LRU eviction, which
/// is why this is an LRU map. User space may resize it at load time.
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

/// The running goroutine: the process and the `g` in r14.
#[inline(always)]
fn goroutine(regs: &pt_regs) -> GoroutineKey {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    GoroutineKey {
        tgid,
        _pad: 0,
        g: regs.r14,
    }
}

/// `g.stack.hi`, read from the goroutine in user memory.
#[inline(always)]
fn read_stack_hi(g: u64) -> Option<u64> {
    // SAFETY: bpf_probe_read_user checks the address; a bad one returns an error.
    unsafe { bpf_probe_read_user((g + G_STACK_HI) as *const u64) }.ok()
}

/// The stack position `g.stack.hi - rsp`. Goroutine stacks are at most 1 GiB; anything else
/// means r14 did not hold a g (or a cached `stack.hi` no longer applies).
#[inline(always)]
fn position(stack_hi: u64, rsp: u64) -> Option<u32> {
    let sp_off = stack_hi.checked_sub(rsp)?;
    (sp_off <= 1 << 30).then_some(sp_off as u32)
}

/// Where the goroutine is at this site.
struct Here {
    /// Its entry stack, if it has one.
    stack: Option<*mut EntryStack>,
    sp_off: u32,
    /// `g.stack.hi`, to keep in a new entry stack (0: not to be cached).
    stack_hi: u64,
}

/// The goroutine's entry stack and its stack position here; `None` (counted in
/// `G_READ_ERRORS`) if r14 did not hold a readable g. `cached`: the site may use the
/// `g.stack.hi` kept in the entry stack (`cookie::STACK_HI_CACHED`); reading it from the
/// goroutine is the most expensive thing a probe does after a trap has evicted the caches.
#[inline(always)]
fn locate(key: &GoroutineKey, regs: &pt_regs, cached: bool) -> Option<Here> {
    let stack = GOROUTINES.get_ptr_mut(key);
    if let Some(stack) = stack {
        // SAFETY: map value pointer; one goroutine runs on one CPU at a time.
        let stack_hi = unsafe { (*stack).stack_hi };
        if cached
            && stack_hi != 0
            && let Some(sp_off) = position(stack_hi, regs.rsp)
        {
            return Some(Here {
                stack: Some(stack),
                sp_off,
                stack_hi,
            });
        }
    }
    let Some((stack_hi, sp_off)) =
        read_stack_hi(key.g).and_then(|hi| Some((hi, position(hi, regs.rsp)?)))
    else {
        bump(counter::G_READ_ERRORS);
        return None;
    };
    let keep = if cached { stack_hi } else { 0 };
    if let Some(stack) = stack {
        // SAFETY: as above.
        unsafe { (*stack).stack_hi = keep };
    }
    Some(Here {
        stack,
        sp_off,
        stack_hi: keep,
    })
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
pub fn goprobe_inline(ctx: ProbeContext) -> u32 {
    on_inline(&ctx);
    0
}

#[uprobe(multi)]
pub fn goprobe_inline_multi(ctx: ProbeContext) -> u32 {
    on_inline(&ctx);
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
    let key = goroutine(regs);
    if site & cookie::GOROUTINE_EXIT != 0 {
        if let Some(stack) = GOROUTINES.get_ptr(&key) {
            // SAFETY: map value pointer.
            add(counter::ENTRIES_ABANDONED, depth(unsafe { &*stack }) as u64);
            let _ = GOROUTINES.remove(&key);
        }
        return;
    }
    if site & cookie::STACK_MOVE != 0 {
        // copystack(gp, newsize) runs on the system stack; the goroutine it moves is stopped
        // until it returns, so none of its probes can run between this and the move.
        let moved = GoroutineKey { g: regs.rax, ..key };
        if let Some(stack) = GOROUTINES.get_ptr_mut(&moved) {
            // SAFETY: map value pointer.
            unsafe { (*stack).stack_hi = 0 };
            bump(counter::STACK_MOVES);
        }
        return;
    }
    let Some(here) = locate(&key, regs, site & cookie::STACK_HI_CACHED != 0) else {
        return;
    };
    // Last: what the program does after the timestamp lands inside the measured latency.
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    push(
        &key,
        here.stack,
        here.stack_hi,
        Frame {
            start_ns: now,
            sp_off: here.sp_off,
            func: low,
        },
        false,
    );
}

/// A site with `cookie::INLINE_SITE`. Its program is separate from the entry program because
/// its loops (up to 12 pushes and pops, each over the entry stack) took the verifier ~0.5 s,
/// most of goprobe's start-up; user space loads it only when the plan has inlined copies.
#[inline(always)]
fn on_inline(ctx: &ProbeContext) {
    // SAFETY: plain helper call on the program's own context.
    let site = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let regs = regs(ctx);
    let key = goroutine(regs);
    let Some(here) = locate(&key, regs, site & cookie::STACK_HI_CACHED != 0) else {
        return;
    };
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    on_inline_site(&key, &here, (site & cookie::FUNC_MASK) as u32, now, regs);
}

/// A boundary of inlined copies: close the copies control leaves here, open those it enters.
#[inline(always)]
fn on_inline_site(key: &GoroutineKey, here: &Here, index: u32, now: u64, regs: &pt_regs) {
    let Some(site) = INLINE_SITES.get(index) else {
        return;
    };
    let sp_off = here.sp_off;
    if site.n_exits > 0
        && let Some(stack) = here.stack
    {
        // Copies nested in each other may end at the same address; two passes pair them in
        // either order.
        for pass in 0..2 * MAX_INLINE_ACTIONS {
            let i = pass % MAX_INLINE_ACTIONS;
            if i < site.n_exits as usize {
                pop(stack, key, sp_off, site.exits[i], now, false, regs);
            }
        }
    }
    for i in 0..MAX_INLINE_ACTIONS {
        if i < site.n_entries as usize {
            // Looked up again: the first push may have created the entry stack.
            push(
                key,
                GOROUTINES.get_ptr_mut(key),
                here.stack_hi,
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
fn push(
    key: &GoroutineKey,
    stack: Option<*mut EntryStack>,
    stack_hi: u64,
    new_frame: Frame,
    inline: bool,
) {
    let sp_off = new_frame.sp_off;
    if let Some(stack) = stack {
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
    scratch.stack_hi = stack_hi;
    *frame(scratch, 0) = new_frame;
    if GOROUTINES.insert(key, scratch, BPF_NOEXIST as u64).is_ok() {
        bump(counter::ENTRIES);
    } else {
        bump(counter::MAP_FULL);
    }
}

#[inline(always)]
fn on_return(ctx: &ProbeContext) {
    // First: what the program does before the timestamp lands inside the measured latency.
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: plain helper call on the program's own context.
    let site = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let func = (site & cookie::FUNC_MASK) as u32;
    let regs = regs(ctx);
    bump(counter::RETURNS);
    let key = goroutine(regs);
    let Some(here) = locate(&key, regs, site & cookie::STACK_HI_CACHED != 0) else {
        return;
    };
    let paired = match here.stack {
        Some(stack) => pop(stack, &key, here.sp_off, func, now, true, regs),
        None => false,
    };
    if !paired {
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
    stack: *mut EntryStack,
    key: &GoroutineKey,
    sp_off: u32,
    func: u32,
    now: u64,
    returning: bool,
    regs: &pt_regs,
) -> bool {
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

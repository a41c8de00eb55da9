//! goprobe's kernel side: uprobes on Go functions that time each call per goroutine.
//!
//! * Entry sites push `(timestamp, stack position, function)` on a stack of open calls kept per
//!   `(tgid, g)`; the `g` pointer is in r14 (Go >= 1.17, amd64) or x28 (arm64), read through
//!   `arch.rs` as every register is. Threads would be the wrong key:
//!   a goroutine that blocks inside a traced call may resume on another thread. The outermost
//!   open call sits in the goroutine's record (`GOROUTINES`), nested ones in `NESTED`, one entry
//!   per open call: memory follows the calls open, so 100k goroutines waiting inside one traced
//!   call, or recursion thousands deep, are all timed. Neither map is an LRU: evicting an open
//!   call would lose it silently; a full map is counted instead.
//! * Return sites are uprobes on every RET instruction of the function, never uretprobes: a
//!   uretprobe rewrites the return address on the goroutine stack, which Go copies and walks.
//! * The stack position is `g.stack.hi - sp`. It is the same at a function's entry site and at
//!   its RET (before the frame is allocated / after it is freed), it survives Go copying the stack
//!   to grow it, and it orders nested calls: an outer call has a smaller value than the calls it
//!   makes. Entries left behind by calls that never returned (panic, `runtime.Goexit`) are found
//!   by that order and discarded, so they are never paired with the wrong return.
//! * `g.stack.hi` is read from user memory once per goroutine and kept in its record; only
//!   `runtime.copystack` moves a live goroutine's stack, and a probe there forgets the kept value
//!   (goroutines that exit are dropped at `runtime.goexit1`, so a reused `g` starts afresh). After
//!   a trap the read costs more than the rest of the program (`cargo xtask bench`).
//! * Latencies go to a ring buffer submitted without wakeup; user space drains it on a timer, so
//!   the traced thread never pays for a wakeup, and a full buffer is counted, never waited on.
#![no_std]
#![no_main]

mod arch;
mod args;
mod exec;
mod log;
mod split;
mod stacks;

use aya_ebpf::{
    EbpfContext as _, Global,
    bindings::{
        BPF_ANY, BPF_F_NO_PREALLOC, BPF_NOEXIST, BPF_RB_NO_WAKEUP, bpf_pidns_info, pt_regs,
    },
    helpers::{
        bpf_get_attach_cookie, bpf_get_current_pid_tgid, bpf_get_ns_current_pid_tgid,
        bpf_ktime_get_ns, bpf_probe_read_user,
    },
    macros::{map, uprobe},
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::ProbeContext,
};
use goprobe_common::{
    EXIT_CLEANUP, Frame, Goroutine, GoroutineKey, InlineSite, LatencyEvent, MAX_GOROUTINES,
    MAX_INLINE_ACTIONS, MAX_INLINE_SITES, MAX_NESTED_CALLS, MissKey, Misses, NestedKey,
    STALE_PER_HIT, cookie, counter,
};

/// One record per goroutine that made a traced call and has not exited: its outermost open call
/// and its cached `g.stack.hi`. A record stays when its last open call returns (depth 0): the
/// cached `g.stack.hi` saves the most expensive read a probe makes (`cargo xtask bench`,
/// BENCHMARKS.md). Records go when the goroutine exits (the probe on `runtime.goexit1`) or when
/// user space sweeps a process that exited. User space may resize the map at load time.
#[map]
static GOROUTINES: HashMap<GoroutineKey, Goroutine> =
    HashMap::with_max_entries(MAX_GOROUTINES, BPF_F_NO_PREALLOC);

/// Open calls nested inside another open call of their goroutine, by (goroutine, depth index).
#[map]
static NESTED: HashMap<NestedKey, Frame> =
    HashMap::with_max_entries(MAX_NESTED_CALLS, BPF_F_NO_PREALLOC);

/// Processes that have goroutine records (value unused): user space sweeps the maps only when one
/// of them has exited, instead of reading every record on a timer.
#[map]
static PROCESSES: HashMap<u32, u8> = HashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);

/// Health counters, indexed by `goprobe_common::counter`.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Calls seen but not timed, per process and function; touched only on those paths. Should it
/// fill up, the totals in `COUNTERS` still count every such call.
#[map]
static MISSED: PerCpuHashMap<MissKey, Misses> = PerCpuHashMap::with_max_entries(16384, 0);

/// Boundaries of inlined copies, indexed by the low bits of an `INLINE_SITE` cookie; written by
/// user space before it attaches the sites.
#[map]
static INLINE_SITES: Array<InlineSite> = Array::with_max_entries(MAX_INLINE_SITES, 0);

/// Completed calls. 4 MiB holds ~100k events: at 100k calls/s, a second of slack for the drain.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// goprobe's own PID namespace (device and inode of `/proc/self/ns/pid`), when it is not the
/// initial one: process IDs are then reported as goprobe sees them (as `-p` takes them), not as
/// the host sees them. Inode 0: the initial namespace, where the plain helper is right and cheaper.
#[unsafe(no_mangle)]
static PIDNS_DEV: Global<u64> = Global::new(0);
#[unsafe(no_mangle)]
static PIDNS_INO: Global<u64> = Global::new(0);

/// The current (process, thread) IDs in goprobe's PID namespace; `None` (counted) for a task
/// outside it.
#[inline(always)]
pub fn current_pid_tgid() -> Option<(u32, u32)> {
    let ino = PIDNS_INO.load();
    if ino == 0 {
        let id = bpf_get_current_pid_tgid();
        return Some(((id >> 32) as u32, id as u32));
    }
    let mut info = bpf_pidns_info { pid: 0, tgid: 0 };
    // SAFETY: the helper writes at most `size` bytes into `info`.
    let rc = unsafe {
        bpf_get_ns_current_pid_tgid(
            PIDNS_DEV.load(),
            ino,
            &mut info,
            core::mem::size_of::<bpf_pidns_info>() as u32,
        )
    };
    if rc != 0 {
        bump(counter::OUTSIDE_PID_NAMESPACE);
        return None;
    }
    Some((info.tgid, info.pid))
}

/// Offset of `g.stack.hi` in `runtime.g` (`stack{lo, hi}` is the first field in every Go version).
const G_STACK_HI: u64 = 8;

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

/// The running goroutine: the process and the `g` in r14 (amd64) or x28 (arm64).
#[inline(always)]
fn goroutine(regs: &pt_regs) -> Option<GoroutineKey> {
    let (tgid, _) = current_pid_tgid()?;
    Some(GoroutineKey {
        tgid,
        _pad: 0,
        g: arch::g(regs),
    })
}

/// `g.stack.hi`, read from the goroutine in user memory.
#[inline(always)]
fn read_stack_hi(g: u64) -> Option<u64> {
    // SAFETY: bpf_probe_read_user checks the address; a bad one returns an error.
    unsafe { bpf_probe_read_user((g + G_STACK_HI) as *const u64) }.ok()
}

/// The stack position `g.stack.hi - sp`. Goroutine stacks are at most 1 GiB; anything else
/// means the g register did not hold a g (or a cached `stack.hi` no longer applies).
#[inline(always)]
fn position(stack_hi: u64, sp: u64) -> Option<u32> {
    let sp_off = stack_hi.checked_sub(sp)?;
    (sp_off <= 1 << 30).then_some(sp_off as u32)
}

/// Where the goroutine is at this site.
struct Here {
    /// Its record, if it has one.
    record: Option<*mut Goroutine>,
    sp_off: u32,
    /// `g.stack.hi`, to keep in a new record (0: not to be cached).
    stack_hi: u64,
}

/// The goroutine's record and its stack position here; `None` (counted in `G_READ_ERRORS`) if
/// the g register did not hold a readable g. `cached`: the site may use the `g.stack.hi` kept in the record
/// (`cookie::STACK_HI_CACHED`); reading it from the goroutine is the most expensive thing a probe
/// does after a trap has evicted the caches.
#[inline(always)]
fn locate(key: &GoroutineKey, regs: &pt_regs, cached: bool) -> Option<Here> {
    let record = GOROUTINES.get_ptr_mut(key);
    if let Some(record) = record {
        // SAFETY: map value pointer; one goroutine runs on one CPU at a time.
        let stack_hi = unsafe { (*record).stack_hi };
        if cached
            && stack_hi != 0
            && let Some(sp_off) = position(stack_hi, arch::sp(regs))
        {
            return Some(Here {
                record: Some(record),
                sp_off,
                stack_hi,
            });
        }
    }
    let Some(stack_hi) = read_stack_hi(key.g) else {
        bump(counter::G_READ_ERRORS);
        log::g_unreadable(key.tgid, key.g);
        return None;
    };
    let sp = arch::sp(regs);
    let Some(sp_off) = position(stack_hi, sp) else {
        bump(counter::G_READ_ERRORS);
        log::stack_position_out_of_range(key.tgid, key.g, stack_hi, sp);
        return None;
    };
    let keep = if cached { stack_hi } else { 0 };
    if let Some(record) = record {
        // SAFETY: as above.
        unsafe { (*record).stack_hi = keep };
    }
    Some(Here {
        record,
        sp_off,
        stack_hi: keep,
    })
}

#[inline(always)]
fn nested_key(key: &GoroutineKey, index: u32) -> NestedKey {
    NestedKey {
        tgid: key.tgid,
        index,
        g: key.g,
    }
}

/// The goroutine's innermost open call, if it has one. A nested entry that is missing (user space
/// removed it with its process) reads as a call at the deepest position, which every rule of
/// [`discard_stale`] discards and none pairs.
#[inline(always)]
fn top(record: &Goroutine, key: &GoroutineKey) -> Option<Frame> {
    match record.depth {
        0 => None,
        1 => Some(record.outer),
        depth => Some(
            NESTED
                .get_ptr(&nested_key(key, depth - 1))
                // SAFETY: map value pointer, copied out at once.
                .map_or(MISSING, |frame| unsafe { *frame }),
        ),
    }
}

const MISSING: Frame = Frame {
    start_ns: 0,
    sp_off: u32::MAX,
    func: u32::MAX,
};

/// Forget the innermost open call.
#[inline(always)]
fn drop_top(record: &mut Goroutine, key: &GoroutineKey) {
    let depth = record.depth;
    if depth > 1 {
        let _ = NESTED.remove(&nested_key(key, depth - 1));
    }
    record.depth = depth.saturating_sub(1);
}

/// Which open calls a site shows to be over without having returned (a panic unwound through
/// them and was recovered further out, so the goroutine runs at or above their position again).
#[derive(Clone, Copy)]
enum Stale {
    /// A new out-of-line call: everything open at or below its position has ended.
    Entry,
    /// A boundary of inlined copies, which run in their caller's frame: open calls at the same
    /// position are enclosing copies, still running.
    Inline,
    /// The RET of `func`: at its position, only `func` itself can still be open (in a frameless
    /// function, its inlined copies share the position and were left by this RET too).
    Return(u32),
}

/// Discard the open calls that `rule` shows to be over, up to `STALE_PER_HIT` of them; the
/// innermost open call that remains (read once: callers pair with it).
#[inline(always)]
fn discard_stale(
    record: &mut Goroutine,
    key: &GoroutineKey,
    sp_off: u32,
    rule: Stale,
) -> Option<Frame> {
    for _ in 0..STALE_PER_HIT {
        let top = top(record, key)?;
        let stale = match rule {
            Stale::Entry => top.sp_off >= sp_off,
            Stale::Inline => top.sp_off > sp_off,
            Stale::Return(func) => {
                top.sp_off > sp_off || (top.sp_off == sp_off && top.func != func)
            }
        };
        if !stale {
            return Some(top);
        }
        drop_top(record, key);
        bump(counter::ENTRIES_ABANDONED);
    }
    top(record, key)
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
    // At the stack-check branch (`jbe`, `b.ls`), the flags tell a call about to take the
    // morestack path, which grows the stack and re-enters the function from its first
    // instruction.
    if site & cookie::CHECK_EFLAGS != 0 && arch::takes_morestack(regs) {
        bump(counter::MORESTACK_SKIPPED);
        return;
    }
    let low = (site & cookie::FUNC_MASK) as u32;
    let Some(key) = goroutine(regs) else {
        return;
    };
    if site & cookie::GOROUTINE_EXIT != 0 {
        goroutine_exits(&key);
        return;
    }
    if site & cookie::STACK_MOVE != 0 {
        // copystack(gp, newsize) runs on the system stack; the goroutine it moves is stopped
        // until it returns, so none of its probes can run between this and the move.
        let moved = GoroutineKey {
            g: arch::args3(regs)[0],
            ..key
        };
        if let Some(record) = GOROUTINES.get_ptr_mut(&moved) {
            // SAFETY: map value pointer.
            unsafe { (*record).stack_hi = 0 };
            bump(counter::STACK_MOVES);
        }
        return;
    }
    let Some(here) = locate(&key, regs, site & cookie::STACK_HI_CACHED != 0) else {
        return;
    };
    if let Some(record) = here.record {
        // SAFETY: map value pointer; one goroutine runs on one CPU at a time.
        let _ = discard_stale(unsafe { &mut *record }, &key, here.sp_off, Stale::Entry);
    }
    // `--by`: the arguments, read before the timestamp so that the read is not timed.
    let mut arguments = core::ptr::null_mut();
    if site & cookie::ARGS != 0
        && let Some(spec) = args::spec(low)
    {
        arguments = args::at_entry(regs, key.tgid, key.g, here.sp_off, low, spec);
    }
    // Last: what the program does after the timestamp lands inside the measured latency.
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let opened = push(
        &key,
        here.record,
        here.stack_hi,
        Frame {
            start_ns: now,
            sp_off: here.sp_off,
            func: low,
        },
    );
    if !arguments.is_null() && opened && !args::send(&EVENTS, arguments, now) {
        bump(counter::ARG_EVENTS_LOST);
    }
}

/// `runtime.goexit1`: the goroutine ends, and whatever it still has open ended without
/// returning (a panic recovered in its outermost frame, or `runtime.Goexit`).
#[inline(always)]
fn goroutine_exits(key: &GoroutineKey) {
    if split::on() {
        split::exited(key);
    }
    let Some(record) = GOROUTINES.get_ptr(key) else {
        return;
    };
    // SAFETY: map value pointer.
    let depth = unsafe { (*record).depth };
    add(counter::ENTRIES_ABANDONED, u64::from(depth));
    for index in 1..=EXIT_CLEANUP {
        if index >= depth {
            break;
        }
        let _ = NESTED.remove(&nested_key(key, index));
    }
    if depth > EXIT_CLEANUP + 1 {
        add(counter::NESTED_LEAKED, u64::from(depth - EXIT_CLEANUP - 1));
    }
    let _ = GOROUTINES.remove(key);
}

/// A site with `cookie::INLINE_SITE`. Its program is separate from the entry program because
/// its loops took the verifier most of goprobe's start-up; user space loads it only when the
/// plan has inlined copies.
#[inline(always)]
fn on_inline(ctx: &ProbeContext) {
    // SAFETY: plain helper call on the program's own context.
    let site = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let regs = regs(ctx);
    let Some(key) = goroutine(regs) else {
        return;
    };
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
    if let Some(record) = here.record {
        // SAFETY: map value pointer; one goroutine runs on one CPU at a time.
        let record = unsafe { &mut *record };
        // The remaining top is read again below: carrying it across the loop's iterations makes
        // the verifier refuse the program.
        let _ = discard_stale(record, key, sp_off, Stale::Inline);
        // Copies nested in each other may end at the same address: the innermost is on top.
        for _ in 0..MAX_INLINE_ACTIONS {
            let Some(top) = top(record, key) else {
                break;
            };
            let mut leaves = false;
            for i in 0..MAX_INLINE_ACTIONS {
                leaves |= i < site.n_exits as usize && site.exits[i] == top.func;
            }
            if top.sp_off != sp_off || !leaves {
                break;
            }
            drop_top(record, key);
            complete(key, top, record.depth, now, regs);
        }
    }
    for i in 0..MAX_INLINE_ACTIONS {
        if i < site.n_entries as usize {
            let func = site.entries[i];
            // Looked up again: the first push may have created the record.
            let record = GOROUTINES.get_ptr_mut(key);
            if let Some(record) = record
                // SAFETY: map value pointer.
                && let Some(top) = top(unsafe { &*record }, key)
                && top.sp_off == sp_off
                && top.func == func
            {
                // This very copy is open here: control came back to its first instruction from
                // inside it (a loop), which is not a new call.
                continue;
            }
            let _ = push(
                key,
                record,
                here.stack_hi,
                Frame {
                    start_ns: now,
                    sp_off,
                    func,
                },
            );
        }
    }
}

/// Open a call on top of the goroutine's open calls (stale ones already discarded), creating
/// the goroutine's record if it has none; false if it could not be recorded (counted).
#[inline(always)]
fn push(key: &GoroutineKey, record: Option<*mut Goroutine>, stack_hi: u64, frame: Frame) -> bool {
    let Some(record) = record else {
        let record = Goroutine {
            depth: 1,
            _pad: 0,
            stack_hi,
            outer: frame,
        };
        if GOROUTINES.insert(key, &record, BPF_NOEXIST as u64).is_ok() {
            bump(counter::ENTRIES);
            if split::on() {
                split::opened(key, 0);
            }
            if PROCESSES.get_ptr(&key.tgid).is_none()
                && PROCESSES.insert(&key.tgid, &0, BPF_ANY as u64).is_err()
            {
                bump(counter::PROCESSES_FULL);
                log::processes_full(key.tgid);
            }
            return true;
        }
        bump(counter::MAP_FULL);
        log::goroutines_full(key.tgid, frame.func);
        missed(key.tgid, frame.func, Miss::Untimed);
        return false;
    };
    // SAFETY: map value pointer; one goroutine runs on one CPU at a time.
    let record = unsafe { &mut *record };
    let depth = record.depth;
    if depth == 0 {
        record.outer = frame;
    } else if NESTED
        .insert(&nested_key(key, depth), &frame, BPF_ANY as u64)
        .is_err()
    {
        bump(counter::ENTRIES_DROPPED);
        log::nested_full(key.tgid, frame.func, depth);
        missed(key.tgid, frame.func, Miss::Untimed);
        return false;
    }
    record.depth = depth + 1;
    bump(counter::ENTRIES);
    if split::on() {
        split::opened(key, depth);
    }
    true
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
    let Some(key) = goroutine(regs) else {
        return;
    };
    let Some(here) = locate(&key, regs, site & cookie::STACK_HI_CACHED != 0) else {
        missed(key.tgid, func, Miss::Unpaired);
        return;
    };
    let mut paired = false;
    if let Some(record) = here.record {
        // SAFETY: map value pointer; one goroutine runs on one CPU at a time.
        let record = unsafe { &mut *record };
        if let Some(top) = discard_stale(record, &key, here.sp_off, Stale::Return(func))
            && top.sp_off == here.sp_off
            && top.func == func
        {
            drop_top(record, &key);
            // `--by` on results: sent before the latency event, which user space joins them to.
            if site & cookie::ARGS != 0
                && let Some(spec) = args::spec(func)
                && spec.phases & goprobe_common::args::PHASE_RETURN != 0
                && !args::at_return(
                    &EVENTS,
                    regs,
                    (key.tgid, key.g, here.sp_off),
                    func,
                    top.start_ns,
                    spec,
                )
            {
                bump(counter::ARG_EVENTS_LOST);
            }
            complete(&key, top, record.depth, now, regs);
            paired = true;
        }
    }
    if !paired {
        bump(counter::RETURNS_UNPAIRED);
        missed(key.tgid, func, Miss::Unpaired);
    }
}

/// Send the latency of a call that ended now. `index`: the call's place among the goroutine's
/// open calls (0: outermost); `regs`: the registers at the site, to walk the stack the call
/// returns to (`--stacks`).
#[inline(always)]
fn complete(key: &GoroutineKey, call: Frame, index: u32, now: u64, regs: &pt_regs) {
    let event = LatencyEvent {
        tgid: key.tgid,
        func: call.func,
        latency_ns: now.saturating_sub(call.start_ns),
        end_ns: now,
        g: key.g,
    };
    if split::on() {
        if split::send_closed(&EVENTS, key, index, event) {
            bump(counter::EVENTS_SENT);
        } else {
            bump(counter::EVENTS_LOST);
            missed(event.tgid, event.func, Miss::Lost);
        }
        return;
    }
    send(event, regs);
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
        missed(event.tgid, event.func, Miss::Lost);
    }
}

#[derive(Clone, Copy)]
enum Miss {
    Lost,
    Untimed,
    Unpaired,
}

/// Count a call of `func` in `tgid` that was seen but not timed.
#[inline(always)]
fn missed(tgid: u32, func: u32, miss: Miss) {
    let key = MissKey { tgid, func };
    if let Some(misses) = MISSED.get_ptr_mut(&key) {
        // SAFETY: per-CPU value.
        let misses = unsafe { &mut *misses };
        match miss {
            Miss::Lost => misses.lost += 1,
            Miss::Untimed => misses.untimed += 1,
            Miss::Unpaired => misses.unpaired += 1,
        }
        return;
    }
    let mut first = Misses::default();
    match miss {
        Miss::Lost => first.lost = 1,
        Miss::Untimed => first.untimed = 1,
        Miss::Unpaired => first.unpaired = 1,
    }
    if MISSED.insert(&key, &first, 0).is_err() {
        log::missed_full(tgid, func);
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

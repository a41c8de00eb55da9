//! `funclatency --split`: each traced call's time split by what its goroutine was doing
//! (running, runnable, in a system call, parked on a channel, ...).
//!
//! * Attributed per goroutine, not per thread: a goroutine that parks resumes on any thread.
//!   Each goroutine that made a traced call has a record in `SPLIT_G`: the Go status goprobe saw
//!   last, the state its time goes to now and since when, and its time per state so far. A call
//!   keeps the goroutine's per-state times at its entry (`SPLIT_OPEN`, keyed like `NESTED` by
//!   the call's index in the goroutine's open calls); at its return the difference is the call's
//!   split, sent in a `SplitEvent` in place of the plain `LatencyEvent`.
//! * Status changes come from probes on the runtime: `runtime.casgstatus(gp, old, new)` sees
//!   every change Go makes through it (gp, old, new in the first three argument registers:
//!   rax, rbx, rcx on amd64, x0, x1, x2 on arm64; see arch.rs); `runtime.gopark` gives the wait
//!   reason of the coming `_Gwaiting` (its third argument), mapped to a state by
//!   the table of the binary's Go version (`SPLIT_REASONS`, written by user space from the
//!   runtime's source of that version); `runtime.reentersyscall` and `runtime.exitsyscall`
//!   cover system calls, which Go >= 1.26 enters and leaves with a plain CAS; `runtime.cgocall`
//!   tells cgo calls apart.
//! * The kernel's `sched_switch` splits `_Grunning` further: a thread preempted by the kernel
//!   while its goroutine runs is waiting for a CPU; one that sleeps in the kernel outside a
//!   system call (a runtime lock, a page fault) is `thread_blocked`. Threads are matched by
//!   their `task_struct` address (`RUNNING_ON`), recorded when the goroutine starts running.
//! * Never guessed: a change whose old status is not the one seen last (Go changed it without
//!   `casgstatus`: preemption for a stack scan, coroutine switches) puts the time since the last
//!   seen change in `other`, counted in `SPLIT_COUNTERS`.
//! * Only loaded with `--split` (`SPLIT_ON` is a frozen read-only global: without it, the
//!   verifier drops the calls into this module from the entry and return programs).
//! * `goprobe offcpu` (`OFFCPU_ON`) uses the same runtime sites alone, for every goroutine of the
//!   traced processes: a wait begins at `gopark` (its reason) or `reentersyscall`, with the
//!   stack walked there, and ends at the status change out of `_Gwaiting` or at `exitsyscall`;
//!   its time is added to `OFFCPU_NS` under (process, state, stack).
use aya_ebpf::{
    Global,
    bindings::{BPF_ANY, BPF_F_NO_PREALLOC, BPF_NOEXIST, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_attach_cookie, bpf_get_current_task, bpf_ktime_get_ns},
    macros::{map, raw_tracepoint, uprobe},
    maps::{Array, HashMap, PerCpuArray, RingBuf},
    programs::{ProbeContext, RawTracePointContext},
};
use goprobe_common::{
    GoroutineKey, GoroutineSplit, LatencyEvent, MAX_GOROUTINES, MAX_NESTED_CALLS, NestedKey,
    SplitEvent, SplitSnapshot, StackCountKey, WaitTotal, Waiting,
    split::{self, counter, site, status},
};

/// 1: `funclatency --split` (set by user space at load time).
#[unsafe(no_mangle)]
static SPLIT_ON: Global<u8> = Global::new(0);

/// 1: `goprobe offcpu`: the runtime sites record where every goroutine of the traced processes
/// waits, and for how long, instead of splitting traced calls.
#[unsafe(no_mangle)]
static OFFCPU_ON: Global<u8> = Global::new(0);

/// `offcpu`: the goroutines waiting now, with the stack they wait in.
#[map]
static OFFCPU_G: HashMap<GoroutineKey, Waiting> =
    HashMap::with_max_entries(MAX_GOROUTINES, BPF_F_NO_PREALLOC);

/// `offcpu`: waits and their time per (process, state, stack).
#[map]
static OFFCPU_NS: HashMap<StackCountKey, WaitTotal> =
    HashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);

#[map]
static SPLIT_G: HashMap<GoroutineKey, GoroutineSplit> =
    HashMap::with_max_entries(MAX_GOROUTINES, BPF_F_NO_PREALLOC);

#[map]
static SPLIT_OPEN: HashMap<NestedKey, SplitSnapshot> =
    HashMap::with_max_entries(MAX_NESTED_CALLS, BPF_F_NO_PREALLOC);

/// The goroutine each thread (`task_struct` address) runs, while it runs a split goroutine.
#[map]
static RUNNING_ON: HashMap<u64, GoroutineKey> = HashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);

/// Per Go version: `waitReason` (0..=255) → state.
#[map]
static SPLIT_REASONS: Array<[u8; 256]> = Array::with_max_entries(split::MAX_TABLES, 0);

/// A new goroutine record is built here: it is too large for the BPF stack of the programs that
/// make it (the entry and inline programs, whose own frames are large).
#[map]
static SPLIT_SCRATCH: PerCpuArray<GoroutineSplit> = PerCpuArray::with_max_entries(1, 0);

#[map]
static SPLIT_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[inline(always)]
pub fn on() -> bool {
    SPLIT_ON.load() != 0
}

#[inline(always)]
fn bump(index: u32) {
    if let Some(value) = SPLIT_COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU value, and BPF programs are not preempted on their CPU.
        unsafe { *value += 1 };
    }
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn current_task() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_get_current_task() }
}

/// Charge the time since `since_ns` to the current state (or to `other`), and start anew.
#[inline(always)]
fn fold(record: &mut GoroutineSplit, now: u64, seen: bool) {
    let state = if seen { record.state } else { split::OTHER };
    let elapsed = now.saturating_sub(record.since_ns);
    let index = goprobe_ebpf::opaque(u64::from(state)) as usize & (split::SLOTS - 1);
    record.ns[index] += elapsed;
    record.since_ns = now;
}

/// The goroutine now runs on the current thread.
#[inline(always)]
fn runs_here(key: &GoroutineKey, record: &mut GoroutineSplit) {
    let task = current_task();
    record.task = task;
    let _ = RUNNING_ON.insert(&task, key, BPF_ANY as u64);
}

/// The goroutine no longer runs on its thread.
#[inline(always)]
fn leaves_thread(key: &GoroutineKey, record: &GoroutineSplit) {
    if let Some(on) = RUNNING_ON.get_ptr(&record.task)
        // SAFETY: map value pointer, read at once.
        && unsafe { *on } == *key
    {
        let _ = RUNNING_ON.remove(&record.task);
    }
}

/// A traced call opens at `index` of the goroutine's open calls: keep its per-state times.
#[inline(always)]
pub fn opened(key: &GoroutineKey, index: u32) {
    let now = now();
    let record = match SPLIT_G.get_ptr_mut(key) {
        Some(record) => record,
        None => {
            let Some(fresh) = SPLIT_SCRATCH.get_ptr_mut(0) else {
                return;
            };
            // SAFETY: per-CPU scratch value, and BPF programs are not preempted on their CPU.
            let fresh = unsafe { &mut *fresh };
            fresh.status = status::RUNNING;
            fresh.state = split::RUNNING;
            fresh.pending = split::NO_REASON;
            fresh.cgo = 0;
            fresh.since_ns = now;
            for slot in fresh.ns.iter_mut() {
                *slot = 0;
            }
            runs_here(key, fresh);
            if SPLIT_G.insert(key, fresh, BPF_NOEXIST as u64).is_err() {
                bump(counter::MAP_FULL);
                crate::log::split_full(key.tgid);
                return;
            }
            match SPLIT_G.get_ptr_mut(key) {
                Some(record) => record,
                None => return,
            }
        }
    };
    // SAFETY: map value pointer; one goroutine runs on one CPU at a time.
    let record = unsafe { &mut *record };
    // The goroutine runs this probe, so it is running: anything else seen last was missed.
    let seen = record.status == status::RUNNING;
    fold(record, now, seen);
    if !seen {
        bump(counter::UNSEEN);
        record.status = status::RUNNING;
        record.state = split::RUNNING;
        runs_here(key, record);
    }
    let nested = NestedKey {
        tgid: key.tgid,
        index,
        g: key.g,
    };
    // SAFETY: `SplitSnapshot` is `ns` alone, with the same layout.
    let snapshot = unsafe { &*(&record.ns as *const [u64; split::SLOTS]).cast::<SplitSnapshot>() };
    let _ = SPLIT_OPEN.insert(&nested, snapshot, BPF_ANY as u64);
}

/// A traced call at `index` of the goroutine's open calls returned: send it with its split.
/// Returns false when the ring buffer is full.
#[inline(always)]
pub fn send_closed(events: &RingBuf, key: &GoroutineKey, index: u32, call: LatencyEvent) -> bool {
    let Some(mut slot) = events.reserve::<SplitEvent>(0) else {
        return false;
    };
    let out = slot.as_mut_ptr();
    // SAFETY: the reserved slot is ours until submitted; every field is written below.
    let out = unsafe { &mut *out };
    out.call = call;
    out.ns = [0; split::STATES];
    let nested = NestedKey {
        tgid: key.tgid,
        index,
        g: key.g,
    };
    match (SPLIT_G.get_ptr_mut(key), SPLIT_OPEN.get_ptr(&nested)) {
        (Some(record), Some(snapshot)) => {
            // SAFETY: map value pointers; one goroutine runs on one CPU at a time.
            let (record, snapshot) = unsafe { (&mut *record, &*snapshot) };
            let seen = record.status == status::RUNNING;
            fold(record, call.end_ns, seen);
            if !seen {
                bump(counter::UNSEEN);
            }
            for i in 0..split::STATES {
                out.ns[i] = record.ns[i].saturating_sub(snapshot.ns[i]);
            }
        }
        _ => {
            bump(counter::NO_SNAPSHOT);
            out.ns[split::OTHER as usize] = call.latency_ns;
        }
    }
    slot.submit(BPF_RB_NO_WAKEUP as u64);
    true
}

/// The goroutine exits (`runtime.goexit1`).
#[inline(always)]
pub fn exited(key: &GoroutineKey) {
    if let Some(record) = SPLIT_G.get_ptr(key) {
        // SAFETY: map value pointer.
        leaves_thread(key, unsafe { &*record });
        let _ = SPLIT_G.remove(key);
    }
}

#[uprobe]
pub fn goprobe_split(ctx: ProbeContext) -> u32 {
    on_runtime_site(&ctx);
    0
}

#[uprobe(multi)]
pub fn goprobe_split_multi(ctx: ProbeContext) -> u32 {
    on_runtime_site(&ctx);
    0
}

#[inline(always)]
fn on_runtime_site(ctx: &ProbeContext) {
    use aya_ebpf::EbpfContext as _;
    // SAFETY: plain helper call on the program's own context.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    // SAFETY: the kernel hands uprobe programs a valid pt_regs.
    let regs = unsafe { &*ctx.regs };
    let Some((tgid, _)) = crate::current_pid_tgid() else {
        return;
    };
    let kind = cookie & site::KIND_MASK;
    // Both read first: the verifier refuses a context read at a computed offset.
    let [arg0, arg1, arg2] = crate::arch::args3(regs);
    let current = crate::arch::g_volatile(regs);
    // casgstatus runs on the system stack too: its goroutine is its first argument, not the g
    // register.
    let g = if kind == site::CASGSTATUS {
        arg0
    } else {
        current
    };
    let key = GoroutineKey { tgid, _pad: 0, g };
    if OFFCPU_ON.load() != 0 {
        offcpu_site(ctx, &key, kind, cookie, arg1 as u32, arg2);
        return;
    }
    let Some(record) = SPLIT_G.get_ptr_mut(&key) else {
        return;
    };
    // SAFETY: map value pointer; the goroutine's changes are ordered (it is stopped or runs
    // this code), so no other CPU writes its record now.
    let record = unsafe { &mut *record };
    match kind {
        site::CASGSTATUS => change(&key, record, arg1 as u32, arg2 as u32),
        site::GOPARK => {
            let table = ((cookie >> site::TABLE_SHIFT) & site::TABLE_MASK) as u32;
            let reason = (arg2 & 0xff) as usize;
            record.pending = match SPLIT_REASONS.get(table) {
                Some(states) => u32::from(states[reason]),
                None => split::PARKED_OTHER,
            };
        }
        site::ENTERSYSCALL => change(&key, record, status::RUNNING, status::SYSCALL),
        site::EXITSYSCALL => change(&key, record, status::SYSCALL, status::RUNNING),
        site::CGOCALL => record.cgo = 1,
        _ => {}
    }
}

/// `offcpu`: a wait begins (a park, with its reason; a system call) or ends (a status change
/// out of `_Gwaiting`; the end of a system call).
#[inline(always)]
fn offcpu_site(
    ctx: &ProbeContext,
    key: &GoroutineKey,
    kind: u64,
    cookie: u64,
    old: u32,
    arg2: u64,
) {
    let state = match kind {
        site::GOPARK => {
            let table = ((cookie >> site::TABLE_SHIFT) & site::TABLE_MASK) as u32;
            let reason = (arg2 & 0xff) as usize;
            match SPLIT_REASONS.get(table) {
                Some(states) => u32::from(states[reason]),
                None => split::PARKED_OTHER,
            }
        }
        site::ENTERSYSCALL => split::SYSCALL,
        site::CASGSTATUS if old == status::WAITING => {
            wait_ends(key);
            return;
        }
        site::EXITSYSCALL => {
            wait_ends(key);
            return;
        }
        _ => return,
    };
    bump(counter::WAITS);
    // SAFETY: the kernel hands uprobe programs a valid pt_regs.
    let regs = unsafe { &*ctx.regs };
    let Some((stack, leaf)) = crate::stacks::walk(crate::arch::user(regs)) else {
        bump(counter::WAITS_FULL);
        return;
    };
    let waiting = Waiting {
        start_ns: now(),
        key: StackCountKey {
            tgid: key.tgid,
            func: state,
            stack,
            leaf,
        },
    };
    if OFFCPU_G.insert(key, &waiting, BPF_ANY as u64).is_err() {
        bump(counter::WAITS_FULL);
        crate::log::waits_full(key.tgid);
    }
}

#[inline(always)]
fn wait_ends(key: &GoroutineKey) {
    let Some(waiting) = OFFCPU_G.get_ptr(key) else {
        return;
    };
    // SAFETY: map value pointer, copied at once.
    let waiting = unsafe { *waiting };
    let _ = OFFCPU_G.remove(key);
    let ns = now().saturating_sub(waiting.start_ns);
    let total = match OFFCPU_NS.get_ptr_mut(&waiting.key) {
        Some(total) => total,
        None => {
            let zero = WaitTotal::default();
            // Another CPU may insert it in between: then it is found below.
            let _ = OFFCPU_NS.insert(&waiting.key, &zero, BPF_NOEXIST as u64);
            match OFFCPU_NS.get_ptr_mut(&waiting.key) {
                Some(total) => total,
                None => {
                    bump(counter::WAIT_COUNTS_FULL);
                    crate::log::waits_full(waiting.key.tgid);
                    return;
                }
            }
        }
    };
    // SAFETY: map value pointer, shared by all CPUs: atomic adds lose nothing.
    unsafe {
        goprobe_ebpf::atomic_add(&raw mut (*total).count, 1);
        goprobe_ebpf::atomic_add(&raw mut (*total).ns, ns);
    }
}

/// The goroutine goes from Go status `old` to `new`.
#[inline(always)]
fn change(key: &GoroutineKey, record: &mut GoroutineSplit, old: u32, new: u32) {
    if record.status == new {
        // Seen already: a system call through both `reentersyscall` and `casgstatus`.
        return;
    }
    bump(counter::TRANSITIONS);
    // Running and in a system call are told apart by the syscall probes; `casgstatus` may come
    // second (an `exitsyscall` that finds no P goes from `_Gsyscall` to `_Grunnable`).
    let seen = record.status == old
        || (record.status == status::RUNNING && old == status::SYSCALL)
        || (record.status == status::SYSCALL && old == status::RUNNING);
    let now = now();
    fold(record, now, seen);
    if !seen {
        bump(counter::UNSEEN);
    }
    if record.status == status::RUNNING {
        leaves_thread(key, record);
    }
    record.status = new;
    record.state = match new {
        status::RUNNING => {
            runs_here(key, record);
            record.cgo = 0;
            split::RUNNING
        }
        status::RUNNABLE => split::RUNNABLE,
        status::SYSCALL if record.cgo != 0 => split::CGO,
        status::SYSCALL => split::SYSCALL,
        status::WAITING => {
            let pending = record.pending;
            record.pending = split::NO_REASON;
            if pending == split::NO_REASON {
                split::SYSTEM
            } else {
                pending
            }
        }
        status::COPYSTACK => split::SYSTEM,
        _ => split::OTHER,
    };
}

/// `sched_switch(preempt, prev, next, prev_state)`: a thread running a split goroutine leaves
/// its CPU, or gets it back. It is waiting for a CPU when it leaves still runnable
/// (`prev_state` is `TASK_RUNNING`, 0): `preempt` alone misses the common case, a task preempted
/// on its way back to user space (the kernel then calls `schedule()`, not a preemption). Any
/// other state is a sleep in the kernel. (`prev_state` is an argument since Linux 5.18.)
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn goprobe_split_switch(ctx: RawTracePointContext) -> i32 {
    let preempt: u64 = ctx.arg(0);
    let prev: u64 = ctx.arg(1);
    let next: u64 = ctx.arg(2);
    let prev_state: u64 = ctx.arg(3);
    let now = now();
    if let Some(key) = RUNNING_ON.get_ptr(&prev) {
        // SAFETY: map value pointer, copied at once.
        let key = unsafe { *key };
        if let Some(record) = SPLIT_G.get_ptr_mut(&key) {
            // SAFETY: map value pointer; its goroutine's thread is this one, switching out.
            let record = unsafe { &mut *record };
            if record.status == status::RUNNING && record.state == split::RUNNING {
                fold(record, now, true);
                record.state = if preempt & 0xff != 0 || prev_state & 0xffff_ffff == 0 {
                    split::CPU_WAIT
                } else {
                    split::THREAD_BLOCKED
                };
                bump(counter::SWITCHES_OUT);
            }
        }
    }
    if let Some(key) = RUNNING_ON.get_ptr(&next) {
        // SAFETY: as above.
        let key = unsafe { *key };
        if let Some(record) = SPLIT_G.get_ptr_mut(&key) {
            // SAFETY: as above; its thread is switching in.
            let record = unsafe { &mut *record };
            if record.status == status::RUNNING
                && (record.state == split::CPU_WAIT || record.state == split::THREAD_BLOCKED)
            {
                fold(record, now, true);
                record.state = split::RUNNING;
            }
        }
    }
    0
}

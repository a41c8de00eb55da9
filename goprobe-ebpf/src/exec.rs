//! Exec events, for host-wide tracing: the kernel tells user space about every process that runs
//! a new program, as it happens, so that a process living 50 ms is looked at while it runs
//! instead of being missed by a /proc scan every 200 ms.
//!
//! * A raw tracepoint on `sched_process_exec`: raw tracepoints attach by name, so they need no
//!   tracefs, which many hosts do not mount. It fires in the exec'ing task once the new program
//!   is mapped, before it runs a single instruction.
//! * Only the process ID, the time and the command name are sent; user space opens
//!   `/proc/PID/exe` at once and keeps it open (see goprobe/src/engine/hostwide.rs).
//! * Execs are rare next to traced calls, and a new process must be looked at quickly, so the
//!   event is submitted with a wakeup; a full buffer is counted in `EXEC_LOST`, and the periodic
//!   /proc scan still finds the process later.
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{map, raw_tracepoint},
    maps::{PerCpuArray, RingBuf},
    programs::RawTracePointContext,
};
use goprobe_common::ExecEvent;

/// 64 KiB holds ~2000 events: a burst of execs while user space inspects a new binary.
#[map]
static EXECS: RingBuf = RingBuf::with_byte_size(64 << 10, 0);

/// Exec events dropped because `EXECS` was full.
#[map]
static EXEC_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn goprobe_exec(ctx: RawTracePointContext) -> i32 {
    // After the exec, the exec'ing thread leads its thread group: the TGID is the process's PID.
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: a plain helper call without arguments.
    let ktime_ns = unsafe { bpf_ktime_get_ns() };
    // TP_PROTO(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
    // Argument 1 of this tracepoint is old_pid.
    let old_tid = ctx.arg::<u64>(1) as u32;
    let event = ExecEvent {
        tgid,
        old_tid,
        ktime_ns,
        comm: bpf_get_current_comm().unwrap_or_default(),
    };
    if EXECS.output(&event, 0).is_err()
        && let Some(lost) = EXEC_LOST.get_ptr_mut(0)
    {
        // SAFETY: per-CPU value, and BPF programs are not preempted on their CPU.
        unsafe { *lost += 1 };
    }
    0
}

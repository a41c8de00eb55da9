//! Types that cross the kernel/user boundary. Shared by `goprobe-ebpf` (kernel side) and `goprobe`
//! (user side), so both agree on every layout. Everything here is `#[repr(C)]` with explicit
//! padding fields: a Pod type must have no implicit padding, and the verifier rejects reads of
//! uninitialised stack bytes.
#![no_std]

/// Goroutines whose record the kernel keeps at once: those inside a traced call, and those that
/// made one and have not exited yet (the record caches `g.stack.hi` between calls). The map is
/// not preallocated, so this is a ceiling, not a cost: memory follows the goroutines really seen.
/// A goroutine that finds the map full is not timed, and counted in [`counter::MAP_FULL`].
pub const MAX_GOROUTINES: u32 = 1 << 20;

/// Open calls nested inside another traced call of the same goroutine (recursion, or one traced
/// function calling another), over all goroutines. Not preallocated either; a nested call that
/// finds the map full is not timed, and counted in [`counter::ENTRIES_DROPPED`].
pub const MAX_NESTED_CALLS: u32 = 1 << 20;

/// Open calls a single probe hit discards when it finds calls that ended without returning (a
/// panic unwound through them). More are discarded by the goroutine's next hits; until then a
/// return below them cannot be paired, and is counted as unpaired, never mis-paired.
pub const STALE_PER_HIT: u32 = 16;

/// Nested open calls removed when a goroutine exits with calls still open (`runtime.Goexit`, or
/// a panic recovered by a deferred function of the goroutine's outermost frame). Deeper ones stay
/// until the process exits or the `g` is reused, and are counted in [`counter::NESTED_LEAKED`].
pub const EXIT_CLEANUP: u32 = 64;

/// Bits of the 64-bit cookie attached to each probe site (`bpf_get_attach_cookie`).
pub mod cookie {
    /// Low 32 bits: the function id the site belongs to (an index into the user side's table).
    pub const FUNC_MASK: u64 = 0xffff_ffff;
    /// Entry site on the prologue's stack-check `jbe`: only a call that proceeds (CF=0, ZF=0)
    /// is an entry; the `morestack` path re-enters the function from its top and passes here again.
    pub const CHECK_EFLAGS: u64 = 1 << 32;
    /// Entry site of `runtime.goexit1`, which every goroutine runs as it exits: drop whatever
    /// entries the goroutine still has open (calls that ended in a panic or `runtime.Goexit`),
    /// so the per-goroutine map stays bounded however long goprobe runs.
    pub const GOROUTINE_EXIT: u64 = 1 << 33;
    /// A boundary of inlined copies: the low 32 bits index `INLINE_SITES`, which says which
    /// copies control leaves and which it enters at this address.
    pub const INLINE_SITE: u64 = 1 << 34;
    /// Entry site of `runtime.copystack(gp, newsize)`, through which Go moves a goroutine's
    /// stack (growth in `newstack`, shrinking by the GC): forget the `g.stack.hi` cached for `gp`
    /// (the first argument, in rax), so the goroutine's next probe reads it again.
    pub const STACK_MOVE: u64 = 1 << 35;
    /// On the entry and return sites of a binary whose goroutine exits and stack moves are both
    /// probed: the site may use the `g.stack.hi` cached in the goroutine's entry stack instead of
    /// reading it from user memory, the largest part of a probe's own cost (BENCHMARKS.md).
    pub const STACK_HI_CACHED: u64 = 1 << 36;
    /// A site of `funclatency --split` in the Go runtime (`runtime.casgstatus`, `gopark`, ...):
    /// the low 8 bits say which (`super::split::site`), bits 8..16 the wait-reason table of the
    /// binary's Go version (`SPLIT_REASONS`).
    pub const SPLIT: u64 = 1 << 37;
    /// Entry site of a function whose arguments label its calls (`funclatency --by`, packs):
    /// the kernel reads them as `ARG_SPECS[func]` says, before the call's timestamp, and sends
    /// them in an [`super::ArgEvent`] that user space joins to the call's latency.
    pub const ARGS: u64 = 1 << 38;
    /// Sites goprobe adds for its own bookkeeping, not for a traced function: they carry no
    /// function id, are always attached, and are not calls to count.
    pub const BOOKKEEPING: u64 = GOROUTINE_EXIT | STACK_MOVE | SPLIT;

    pub const fn encode(func: u32, flags: u64) -> u64 {
        func as u64 | flags
    }
}

/// Indices into the per-CPU `COUNTERS` array.
pub mod counter {
    /// Entry probe hits that started a measurement.
    pub const ENTRIES: u32 = 0;
    /// Entry probe hits on the `morestack` path (counted once, when the call proceeds).
    pub const MORESTACK_SKIPPED: u32 = 1;
    /// Return probe hits.
    pub const RETURNS: u32 = 2;
    /// Latency events written to the ring buffer.
    pub const EVENTS_SENT: u32 = 3;
    /// Latency events lost because the ring buffer was full (the target never waits).
    pub const EVENTS_LOST: u32 = 4;
    /// Returns with no matching entry (goprobe attached mid-call, or the entry was dropped).
    pub const RETURNS_UNPAIRED: u32 = 5;
    /// Nested entries not recorded because the map of nested open calls was full.
    pub const ENTRIES_DROPPED: u32 = 6;
    /// Entries discarded because their call never returned normally (panic, `runtime.Goexit`).
    pub const ENTRIES_ABANDONED: u32 = 7;
    /// Probe hits where the goroutine (`g` in r14) could not be read.
    pub const G_READ_ERRORS: u32 = 8;
    /// Entries not recorded because the goroutine map was full.
    pub const MAP_FULL: u32 = 9;
    /// Goroutine stacks moved (`runtime.copystack`) while goprobe kept their `g.stack.hi`.
    pub const STACK_MOVES: u32 = 10;
    /// Nested open calls of exited goroutines left in the map (more than `EXIT_CLEANUP`); user
    /// space removes them when their process exits.
    pub const NESTED_LEAKED: u32 = 11;
    /// Processes not recorded in `PROCESSES` (full): user space then sweeps every map in full.
    pub const PROCESSES_FULL: u32 = 12;
    /// Probe hits in processes outside goprobe's PID namespace (goprobe runs in a container
    /// without the host's PIDs): goprobe cannot name those processes, so it does not trace them.
    pub const OUTSIDE_PID_NAMESPACE: u32 = 13;
    /// Argument events (`--by`) not sent because the ring buffer was full: those calls are
    /// still timed, under the value `(lost)`.
    pub const ARG_EVENTS_LOST: u32 = 14;
    pub const COUNT: u32 = 15;

    /// Names in index order, for reports.
    pub const NAMES: [&str; COUNT as usize] = [
        "entries",
        "morestack_skipped",
        "returns",
        "events_sent",
        "events_lost",
        "returns_unpaired",
        "entries_dropped",
        "entries_abandoned",
        "g_read_errors",
        "map_full",
        "stack_moves",
        "nested_leaked",
        "processes_full",
        "outside_pid_namespace",
        "arg_events_lost",
    ];
}

/// Key of the per-goroutine entry stack: the process and its goroutine (the `g` pointer, which
/// Go >= 1.17 on amd64 keeps in r14). Threads are the wrong key: a goroutine blocked inside a
/// traced call may resume on another thread.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GoroutineKey {
    pub tgid: u32,
    /// Explicit padding so the key has no uninitialised bytes.
    pub _pad: u32,
    pub g: u64,
}

/// One open call.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Frame {
    pub start_ns: u64,
    /// `g.stack.hi - rsp` at the site. It pairs a return with its entry: unlike rsp itself it stays
    /// the same when Go copies the goroutine's stack to grow it, and it tells recursive calls apart.
    pub sp_off: u32,
    pub func: u32,
}

/// What the kernel keeps per goroutine (`GOROUTINES`). A goroutine's open calls form a stack,
/// outermost first (smallest `sp_off` first): the outermost lives here, because most goroutines
/// have at most one traced call open and this keeps that case to one map lookup per site; the
/// nested ones are entries of `NESTED`, keyed by their index in the stack. So pairing memory
/// grows with the calls really open, whatever the depth.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Goroutine {
    /// Open calls: 0 (none, the record only caches `stack_hi`), 1 (`outer`), or more.
    pub depth: u32,
    pub _pad: u32,
    /// The goroutine's `g.stack.hi` when last read, or 0: not known (never read, or the stack
    /// moved since). Kept only on sites with `cookie::STACK_HI_CACHED`.
    pub stack_hi: u64,
    /// The outermost open call, if `depth > 0`.
    pub outer: Frame,
}

/// Key of a nested open call in `NESTED`: its goroutine and its index in the goroutine's stack of
/// open calls (1 is the call right inside `Goroutine::outer`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NestedKey {
    pub tgid: u32,
    pub index: u32,
    pub g: u64,
}

/// Key of the per-process, per-function count of calls goprobe saw but could not time
/// (`MISSED`), so that every histogram says what it lacks.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MissKey {
    pub tgid: u32,
    pub func: u32,
}

/// Calls of one function in one process that goprobe saw but did not time. Touched only when
/// that happens, never on the paths of timed calls.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Misses {
    /// Completed calls whose event was dropped: the ring buffer was full.
    pub lost: u64,
    /// Entries not recorded: the goroutine map or the nested-call map was full.
    pub untimed: u64,
    /// Returns with no recorded entry: the call began before goprobe attached (or its entry was
    /// not recorded, which `untimed` counts too).
    pub unpaired: u64,
}

impl Misses {
    pub fn add(&mut self, other: &Misses) {
        self.lost += other.lost;
        self.untimed += other.untimed;
        self.unpaired += other.unpaired;
    }

    pub fn is_empty(&self) -> bool {
        self.lost == 0 && self.untimed == 0 && self.unpaired == 0
    }
}

/// Functions one inline site can end and start. Two copies meet at one address when one inlined
/// call follows another (`fmt.Println(a); fmt.Println(b)`): the first's exit is the second's
/// entry.
pub const MAX_INLINE_ACTIONS: usize = 4;

/// Entries in the `INLINE_SITES` array.
pub const MAX_INLINE_SITES: u32 = 65536;

/// What happens at one boundary of inlined code, in order: first the copies that control leaves
/// here are closed (their open entry at this stack position is paired), then the copies it
/// enters are opened. Inlined code runs in its caller's frame, so entry and exit see the same
/// stack position.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InlineSite {
    pub exits: [u32; MAX_INLINE_ACTIONS],
    pub entries: [u32; MAX_INLINE_ACTIONS],
    pub n_exits: u32,
    pub n_entries: u32,
}

/// One completed call, sent through the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencyEvent {
    pub tgid: u32,
    pub func: u32,
    pub latency_ns: u64,
    /// `bpf_ktime_get_ns()` at the return, for interval attribution.
    pub end_ns: u64,
    pub g: u64,
}

/// Values of one call read from its arguments (`funclatency --by`, packs).
pub mod args {
    /// Values one function's calls are labelled by.
    pub const MAX_VALUES: usize = 3;
    /// Pointer loads and field offsets on the way from a register to a value (`r.URL.Path` is
    /// two: `URL` at 16 in the request, a pointer followed, then `Path` at 56 in the URL).
    pub const MAX_STEPS: usize = 4;
    /// Bytes of a string kept; a longer one is cut there, and says so ([`TRUNCATED`]).
    pub const STRING_BYTES: usize = 128;
    /// Integer registers an argument can be in (amd64: rax, rbx, rcx, rdi, rsi, r8..r11;
    /// arm64: x0..x15).
    pub const REGISTERS: u32 = 16;
    /// Functions with argument specs at once.
    pub const MAX_FUNCTIONS: u32 = 4096;

    /// [`super::ArgRead::kind`]: nothing to read (the slot is unused).
    pub const KIND_NONE: u32 = 0;
    /// A signed integer of `size` bytes.
    pub const KIND_INT: u32 = 1;
    /// An unsigned integer of `size` bytes.
    pub const KIND_UINT: u32 = 2;
    pub const KIND_BOOL: u32 = 3;
    /// A Go string: a (pointer, length) pair, its bytes read from the pointer.
    pub const KIND_STRING: u32 = 4;
    /// An interface (`error`, `any`): its first word, the itab or type pointer; 0 is nil.
    pub const KIND_IFACE: u32 = 5;

    /// [`super::ArgRead::when`]: from the argument registers at the entry.
    pub const AT_ENTRY: u32 = 0;
    /// From the result registers at the RET (Go returns results in the argument registers,
    /// assigned the same way).
    pub const AT_RETURN: u32 = 1;
    /// A pointer argument kept at the entry, followed at the RET: what the callee wrote through
    /// it by then (an HTTP handler's status, through its `ResponseWriter`).
    pub const AT_RETURN_THROUGH: u32 = 2;

    /// [`super::ArgRead::guard_register`]: no guard.
    pub const NO_GUARD: u32 = u32::MAX;

    /// [`super::ArgSpec::phases`]: the entry sends an event with the values read there.
    pub const PHASE_ENTRY: u32 = 1;
    /// The RET sends an event with the values read there.
    pub const PHASE_RETURN: u32 = 2;
    /// The entry keeps pointers for the RET ([`AT_RETURN_THROUGH`]).
    pub const PHASE_KEEP: u32 = 4;
    /// Calls with kept pointers open at once, over all processes; the oldest are evicted
    /// (their values then say [`LOST`]).
    pub const MAX_KEPT: u32 = 1 << 16;

    /// [`super::ArgValue::status`]: read whole.
    pub const OK: u32 = 0;
    /// A pointer on the way, or the string's bytes, could not be read (nil, unmapped, paged out).
    pub const UNREADABLE: u32 = 1;
    /// A string longer than [`STRING_BYTES`]: its first bytes are kept.
    pub const TRUNCATED: u32 = 2;
    /// Not read in this event: the other one (entry or return) of the same call has it.
    pub const ELSEWHERE: u32 = 3;
    /// The interface the path asserts held another dynamic type (`guard`).
    pub const OTHER_TYPE: u32 = 4;
    /// The pointer kept at the entry was evicted before the return ([`MAX_KEPT`]).
    pub const LOST: u32 = 5;
    /// A pointer on the way was nil.
    pub const NIL: u32 = 6;
}

/// How to read one value, at a function's entry or at its RET (`when`): from integer register
/// `register` (with `register2`, a string's length, when the string itself is the argument),
/// or, with `steps`, from memory: `address = register`, then for each step but the last
/// `address = *(address + offsets[i])` (a pointer followed), and the value is at
/// `address + offsets[steps - 1]`. With a guard, `register` is read only if
/// `guard_register` holds `guard` (an interface's itab: `rw.(*net/http.response)`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgRead {
    /// One of `args::KIND_*`.
    pub kind: u32,
    /// Bytes of an integer (1, 2, 4 or 8).
    pub size: u32,
    pub register: u32,
    pub register2: u32,
    pub steps: u32,
    /// One of `args::AT_*`.
    pub when: u32,
    pub offsets: [u32; args::MAX_STEPS],
    /// A register, or `args::NO_GUARD`.
    pub guard_register: u32,
    pub _pad: u32,
    pub guard: u64,
}

impl Default for ArgRead {
    fn default() -> Self {
        Self {
            kind: args::KIND_NONE,
            size: 0,
            register: 0,
            register2: 0,
            steps: 0,
            when: args::AT_ENTRY,
            offsets: [0; args::MAX_STEPS],
            guard_register: args::NO_GUARD,
            _pad: 0,
            guard: 0,
        }
    }
}

/// The values one function's calls are labelled by, in `ARG_SPECS` by function id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArgSpec {
    pub reads: [ArgRead; args::MAX_VALUES],
    /// `args::PHASE_*` bits: what the entry and the RET do.
    pub phases: u32,
    pub _pad: u32,
}

/// One value read at an entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgValue {
    /// One of `args::OK`, `UNREADABLE`, `TRUNCATED`, `ELSEWHERE`, `OTHER_TYPE`, `LOST`,
    /// `NIL`.
    pub status: u32,
    /// Bytes of the string kept in `bytes`.
    pub len: u32,
    /// An integer or boolean (sign-extended for a signed one).
    pub int: u64,
    pub bytes: [u8; args::STRING_BYTES],
}

impl Default for ArgValue {
    fn default() -> Self {
        Self {
            status: 0,
            len: 0,
            int: 0,
            bytes: [0; args::STRING_BYTES],
        }
    }
}

/// The arguments of one call, sent at its entry ([`ArgEvent::MAGIC`]), and its results (or what
/// it wrote through a kept pointer), sent at its RET ([`ArgEvent::MAGIC_RETURN`]). The call's
/// latency event follows both in the ring buffer (it is reserved later), and names the same
/// call: same `tgid` and `g`, and `end_ns - latency_ns == start_ns`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArgEvent {
    pub tgid: u32,
    pub func: u32,
    pub g: u64,
    pub start_ns: u64,
    /// [`ArgEvent::MAGIC`] or [`ArgEvent::MAGIC_RETURN`]: with the size, tells this event from
    /// the others in the ring.
    pub magic: u64,
    pub values: [ArgValue; args::MAX_VALUES],
}

impl ArgEvent {
    pub const MAGIC: u64 = 0x6172_6773_676f_7072;
    pub const MAGIC_RETURN: u64 = 0x7265_7473_676f_7072;
}

/// The pointers a call's entry keeps for its RET (`args::AT_RETURN_THROUGH`), by
/// [`KeptKey`]. `u64::MAX`: the guard failed at the entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Kept {
    pub pointers: [u64; args::MAX_VALUES],
}

/// An open call: its goroutine and its place on that goroutine's stack, which its RET finds
/// again (the stack pointer's distance from the stack's top survives the stack being moved).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeptKey {
    pub tgid: u32,
    pub sp_off: u32,
    pub g: u64,
}

/// User stacks captured by the kernel side (stackcount, `funclatency --stacks`, profile).
///
/// The kernel walks the frame-pointer chain (Go keeps frame pointers on amd64) from `rbp` and
/// stores the chain in [`StackTrace`], deduplicated by a hash of its contents. What only user
/// space can decide (it needs the function's SP table) travels next to the hash: the word at
/// `rsp` (the return address while a function's frame is not yet, or no longer, set up, as at an
/// entry or RET probe or in a frameless leaf) and `rbp - rsp` (which tells whether the frame is
/// set up).
pub mod stack {
    /// Frames kept per stack, the leaf PC included (Go's own CPU profiles keep 64, newer ones 128).
    pub const MAX_FRAMES: usize = 128;

    /// How the kernel's frame-pointer walk ended ([`super::StackTrace::end`]).
    /// The chain ended at a zero frame pointer or return address: the stack's true end.
    pub const END_CLEAN: u32 = 0;
    /// [`MAX_FRAMES`] reached with frames left.
    pub const END_DEPTH: u32 = 1;
    /// A frame record could not be read (not a frame pointer, or not mapped).
    pub const END_UNREADABLE: u32 = 2;
    /// The next frame pointer was not above the current one: not a frame chain (C code, or a
    /// switch to another stack).
    pub const END_NOT_ASCENDING: u32 = 3;

    /// `StackSample::flags`: the sample interrupted the kernel; the user registers are the ones
    /// saved at the kernel entry.
    pub const SAMPLE_IN_KERNEL: u32 = 1;

    /// Indices into the per-CPU `STACK_COUNTERS` array (apart from `counter`, which counts calls).
    pub mod counter {
        /// Stacks walked.
        pub const WALKED: u32 = 0;
        /// Stacks not kept because the `STACKS` map was full (the call or sample is still counted).
        pub const STACKS_FULL: u32 = 1;
        /// Calls not counted by `stackcount` because its counter map was full.
        pub const COUNTS_FULL: u32 = 2;
        /// Profile samples of a traced process.
        pub const SAMPLES: u32 = 3;
        /// Profile samples lost because the `SAMPLES` ring buffer was full.
        pub const SAMPLES_LOST: u32 = 4;
        pub const COUNT: u32 = 5;

        /// Names in index order, for reports.
        pub const NAMES: [&str; COUNT as usize] = [
            "stacks_walked",
            "stacks_full",
            "stack_counts_full",
            "samples",
            "samples_lost",
        ];
    }
}

/// A user stack: `pcs[0]` is the PC at the probe or sample, `pcs[1..len]` the return addresses
/// read from the frame-pointer chain starting at `rbp`, innermost first.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StackTrace {
    pub len: u32,
    /// One of `stack::END_*`.
    pub end: u32,
    pub pcs: [u64; stack::MAX_FRAMES],
}

/// What user space needs besides the chain to rebuild the innermost frames (see [`stack`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LeafContext {
    /// The return address where no frame is set up: the word at `rsp` on amd64 (0 if
    /// unreadable), the link register x30 on arm64.
    pub sp0: u64,
    /// `rbp - rsp` (amd64) or `x29 - sp` (arm64), wrapping.
    pub fp_off: u64,
}

/// Key of the per-stack call counters of `stackcount`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StackCountKey {
    pub tgid: u32,
    pub func: u32,
    /// Hash of the [`StackTrace`] in the `STACKS` map (never 0).
    pub stack: u64,
    pub leaf: LeafContext,
}

/// A completed call with the stack it returned to (`funclatency --stacks`). It starts with a
/// [`LatencyEvent`], so readers of plain events can read it too.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackLatencyEvent {
    pub call: LatencyEvent,
    /// Hash of the [`StackTrace`] in `STACKS`, captured at the RET; 0 when the stack was not
    /// captured (faster than `--slower-than`, or the walk failed).
    pub stack: u64,
    pub leaf: LeafContext,
}

/// One CPU-profile sample, sent through the `SAMPLES` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackSample {
    pub tgid: u32,
    pub tid: u32,
    /// Hash of the user [`StackTrace`] in `STACKS` (0: none captured).
    pub stack: u64,
    pub leaf: LeafContext,
    /// The return address in a prologue before the frame pointer is set: on amd64 the word at
    /// `rsp + 8` (right after `push rbp`), on arm64 the link register x30.
    pub sp8: u64,
    /// Kernel stack id in `KSTACKS` (negative: none).
    pub kstack: i32,
    /// `stack::SAMPLE_*` bits.
    pub flags: u32,
}

/// `funclatency --split`: each traced call's time split by what its goroutine was doing
/// (goprobe-ebpf/src/split.rs).
pub mod split {
    /// States a call's time is split into; indices into [`super::SplitEvent::ns`].
    pub const STATES: usize = 20;
    /// The kernel's per-state accumulators: a power of two, so that a state index masked with
    /// `SLOTS - 1` is in bounds for the verifier whatever the compiler did with the checks.
    pub const SLOTS: usize = 32;
    /// On a CPU, running Go code.
    pub const RUNNING: u32 = 0;
    /// Ready to run, waiting in Go's run queues for a P and a thread (`_Grunnable`).
    pub const RUNNABLE: u32 = 1;
    /// Running for Go, but its thread was preempted by the kernel: waiting for a CPU.
    pub const CPU_WAIT: u32 = 2;
    /// In a system call (`_Gsyscall`).
    pub const SYSCALL: u32 = 3;
    /// In a cgo call (`runtime.cgocall`: `_Gsyscall` too, told apart).
    pub const CGO: u32 = 4;
    /// Parked by wait reason (`runtime.gopark`).
    pub const CHAN_SEND: u32 = 5;
    pub const CHAN_RECEIVE: u32 = 6;
    pub const SELECT: u32 = 7;
    pub const SYNC_MUTEX: u32 = 8;
    pub const SYNC_RWMUTEX: u32 = 9;
    pub const SYNC_WAITGROUP: u32 = 10;
    pub const SYNC_COND: u32 = 11;
    /// A semaphore: sync.Mutex, RWMutex and WaitGroup before Go told them apart (1.20, 1.25).
    pub const SEMACQUIRE: u32 = 12;
    /// Network and file I/O through the netpoller (`IO wait`).
    pub const IO_WAIT: u32 = 13;
    pub const SLEEP: u32 = 14;
    /// GC assist waits, waits for a GC cycle, sweep and finalizer waits.
    pub const GC: u32 = 15;
    /// Parked with another wait reason.
    pub const PARKED_OTHER: u32 = 16;
    /// Stopped while the runtime works on its behalf outside `gopark` (`_Gwaiting` set without
    /// it: GC assist marking, stack scans, stop-the-world), or its stack being copied
    /// (`_Gcopystack`): time on the system stack.
    pub const SYSTEM: u32 = 17;
    /// Running for Go, but its thread slept in the kernel outside a system call (a runtime
    /// lock's futex, a page fault).
    pub const THREAD_BLOCKED: u32 = 18;
    /// Not attributed: the goroutine changed state where goprobe does not see it (a status
    /// change that bypasses `casgstatus`), so the time since its last seen change is unknown.
    pub const OTHER: u32 = 19;

    /// Names in index order, for reports.
    pub const NAMES: [&str; STATES] = [
        "running",
        "runnable",
        "cpu_wait",
        "syscall",
        "cgo",
        "chan_send",
        "chan_receive",
        "select",
        "sync_mutex",
        "sync_rwmutex",
        "sync_waitgroup",
        "sync_cond",
        "semacquire",
        "io_wait",
        "sleep",
        "gc",
        "parked_other",
        "system",
        "thread_blocked",
        "other",
    ];

    /// What a split site is (the low 8 bits of its cookie).
    pub mod site {
        /// `runtime.casgstatus(gp, oldval, newval)`: every status change (rax, ebx, ecx).
        pub const CASGSTATUS: u64 = 1;
        /// `runtime.gopark(unlockf, lock, reason, ...)`: the wait reason (cl).
        pub const GOPARK: u64 = 2;
        /// `runtime.reentersyscall`: into `_Gsyscall` (Go >= 1.26 skips `casgstatus` there).
        pub const ENTERSYSCALL: u64 = 3;
        /// `runtime.exitsyscall`: back to `_Grunning` (likewise).
        pub const EXITSYSCALL: u64 = 4;
        /// `runtime.cgocall`: the next system call is a cgo call.
        pub const CGOCALL: u64 = 5;
        pub const KIND_MASK: u64 = 0xff;
        pub const TABLE_SHIFT: u64 = 8;
        pub const TABLE_MASK: u64 = 0xff;
    }

    /// Go's goroutine statuses (`_Grunnable`, ...), the same in every Go version the split knows
    /// (runtime/runtime2.go).
    pub mod status {
        pub const RUNNABLE: u32 = 1;
        pub const RUNNING: u32 = 2;
        pub const SYSCALL: u32 = 3;
        pub const WAITING: u32 = 4;
        pub const COPYSTACK: u32 = 8;
    }

    /// Wait-reason tables (one per Go version present): `waitReason` value → state.
    pub const MAX_TABLES: u32 = 64;
    /// Marks "no wait reason seen yet" in [`super::GoroutineSplit::pending`].
    pub const NO_REASON: u32 = u32::MAX;

    /// Indices into the per-CPU `SPLIT_COUNTERS` array.
    pub mod counter {
        /// Status changes of goroutines inside traced calls.
        pub const TRANSITIONS: u32 = 0;
        /// Status changes whose old status was not the one goprobe saw last: the time since then
        /// went to `other`.
        pub const UNSEEN: u32 = 1;
        /// Goroutines not split because the split map was full (their calls are timed, and their
        /// whole time is `other`).
        pub const MAP_FULL: u32 = 2;
        /// Calls whose entry snapshot was missing at the return (all their time is `other`).
        pub const NO_SNAPSHOT: u32 = 3;
        /// Thread switches off a CPU while a traced goroutine ran on it.
        pub const SWITCHES_OUT: u32 = 4;
        /// `offcpu`: waits that began (a park or a system call, its stack walked).
        pub const WAITS: u32 = 5;
        /// `offcpu`: waits not recorded because the map of goroutines waiting was full, or their
        /// stack could not be stored.
        pub const WAITS_FULL: u32 = 6;
        /// `offcpu`: waits not counted because the map of stacks' waiting time was full.
        pub const WAIT_COUNTS_FULL: u32 = 7;
        pub const COUNT: u32 = 8;
        pub const NAMES: [&str; COUNT as usize] = [
            "split_transitions",
            "split_unseen",
            "split_map_full",
            "split_no_snapshot",
            "split_switches_out",
            "waits",
            "waits_full",
            "wait_counts_full",
        ];
    }
}

/// What the kernel keeps per goroutine for `funclatency --split` (`SPLIT_G`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GoroutineSplit {
    /// Go status goprobe saw last (`split::status`).
    pub status: u32,
    /// The state its time goes to now (`split::*`).
    pub state: u32,
    /// State of the wait reason seen at `gopark`, for the coming `_Gwaiting`; `split::NO_REASON`.
    pub pending: u32,
    /// A cgo call is under way: the coming `_Gsyscall` is `split::CGO`.
    pub cgo: u32,
    /// When `state` began (`bpf_ktime_get_ns`).
    pub since_ns: u64,
    /// The thread (`task_struct` address) that runs it while `status` is running.
    pub task: u64,
    /// Time per state since the record was made (the first `split::STATES` are used).
    pub ns: [u64; split::SLOTS],
}

/// `offcpu`: a goroutine waiting now (`OFFCPU_G`): since when, and where its time will go.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Waiting {
    pub start_ns: u64,
    /// `func` is the state (`split::*`): the wait reason, or `split::SYSCALL`.
    pub key: StackCountKey,
}

/// `offcpu`: waits per (process, state, stack) (`OFFCPU_NS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct WaitTotal {
    pub count: u64,
    pub ns: u64,
}

/// The split of an open call at its entry (`SPLIT_OPEN`): the goroutine's `ns` then.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SplitSnapshot {
    pub ns: [u64; split::SLOTS],
}

/// A completed call with its time split by state (`funclatency --split`): sent instead of a
/// [`LatencyEvent`], which it starts with.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SplitEvent {
    pub call: LatencyEvent,
    pub ns: [u64; split::STATES],
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all are repr(C), Copy, with explicit padding and no pointers.
    unsafe impl aya::Pod for super::GoroutineSplit {}
    unsafe impl aya::Pod for super::SplitSnapshot {}
    unsafe impl aya::Pod for super::SplitEvent {}
    unsafe impl aya::Pod for super::Waiting {}
    unsafe impl aya::Pod for super::WaitTotal {}
    unsafe impl aya::Pod for super::GoroutineKey {}
    unsafe impl aya::Pod for super::Frame {}
    unsafe impl aya::Pod for super::Goroutine {}
    unsafe impl aya::Pod for super::NestedKey {}
    unsafe impl aya::Pod for super::MissKey {}
    unsafe impl aya::Pod for super::Misses {}
    unsafe impl aya::Pod for super::LatencyEvent {}
    unsafe impl aya::Pod for super::ArgSpec {}
    unsafe impl aya::Pod for super::InlineSite {}
    unsafe impl aya::Pod for super::StackTrace {}
    unsafe impl aya::Pod for super::LeafContext {}
    unsafe impl aya::Pod for super::StackCountKey {}
    unsafe impl aya::Pod for super::StackLatencyEvent {}
    unsafe impl aya::Pod for super::StackSample {}
}

/// A process that ran a new program (`execve`), sent through the `EXECS` ring buffer so that
/// host-wide tracing looks at new processes as they start (goprobe-ebpf/src/exec.rs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecEvent {
    pub tgid: u32,
    /// The thread that called exec, as it was numbered before: `tgid` when the main thread did,
    /// else another thread, which the exec made the main one (the old main thread is gone).
    pub old_tid: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) at the exec, once the new program is mapped.
    pub ktime_ns: u64,
    /// The new command name (the file name, at most 15 bytes, NUL-padded), for messages about
    /// a process that exited before its executable could be opened.
    pub comm: [u8; 16],
}

#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, explicit padding, no pointers.
unsafe impl aya::Pod for ExecEvent {}

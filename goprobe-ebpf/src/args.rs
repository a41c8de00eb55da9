//! `funclatency --by` and packs: the values a call is labelled by, read from its arguments at the
//! entry site, where Go's register ABI still holds them (rax, rbx, rcx, rdi, rsi, r8..r11 on
//! amd64; x0..x15 on arm64), and from its results at the RET, where the same registers hold
//! them. Entry sites are the function's first instruction or its stack-check branch, before
//! which the prologue writes no argument register.
//!
//! The entry's values are read into a per-CPU [`ArgEvent`] before the call's timestamp (so
//! reading them is not part of the measured latency), and copied to the ring buffer once the
//! call is open; the RET's are read after its timestamp, and sent before the latency event.
//! User space joins both to the call's latency event, which the ring buffer delivers after
//! them. No ring-buffer reservation is held across the rest of a program: kernels before 6.2
//! lose track of one kept on the stack, and refuse the program.
//!
//! A value written by the callee through a pointer argument (`AT_RETURN_THROUGH`: an HTTP
//! handler's status, in the `response` behind its `ResponseWriter`) needs the pointer at the
//! RET, where its register is long reused: the entry keeps it in [`KEPT`], by goroutine and
//! stack depth, which the RET finds again.
use aya_ebpf::{
    bindings::{BPF_ANY, BPF_F_NO_PREALLOC, BPF_RB_NO_WAKEUP, pt_regs},
    helpers::{bpf_probe_read_user, generated},
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use goprobe_common::{ArgEvent, ArgRead, ArgSpec, ArgValue, Kept, KeptKey, args};

use crate::arch;

/// What to read at the entry and RET of each function with `cookie::ARGS`, by function id;
/// written by user space before it attaches the sites.
#[map]
static ARG_SPECS: HashMap<u32, ArgSpec> =
    HashMap::with_max_entries(args::MAX_FUNCTIONS, BPF_F_NO_PREALLOC);

/// The event being filled on this CPU (programs are not preempted on their CPU).
#[map]
static ARG_SCRATCH: PerCpuArray<ArgEvent> = PerCpuArray::with_max_entries(1, 0);

/// Pointers kept from entries for their RETs. LRU: a call that never returns (a panic unwound
/// it) leaves its entry behind, and the oldest go first; the RET of a call whose entry was
/// evicted says `LOST`.
#[map]
static KEPT: LruHashMap<KeptKey, Kept> = LruHashMap::with_max_entries(args::MAX_KEPT, 0);

/// What the entry and the RET of `func` do; `None` if it has no spec. A map value, read in
/// place: a copy would take the return program past the stack's 512 bytes.
#[inline(always)]
pub fn spec(func: u32) -> Option<&'static ArgSpec> {
    // SAFETY: map values stay valid while the program runs; user space writes a spec before
    // attaching its sites.
    unsafe { ARG_SPECS.get(&func) }
}

#[inline(always)]
fn scratch(tgid: u32, g: u64, func: u32, magic: u64) -> Option<*mut ArgEvent> {
    let event = ARG_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch value, which nothing else touches while this program runs.
    unsafe {
        (*event).tgid = tgid;
        (*event).func = func;
        (*event).g = g;
        (*event).start_ns = 0;
        (*event).magic = magic;
    }
    Some(event)
}

/// At the entry of a call of `func` at `sp_off` on its goroutine's stack: keep the pointers the
/// RET follows, and read the entry's values into this CPU's scratch event, returned if the
/// entry sends one (null if not: a BPF function returns one register, and LLVM may not inline
/// this one).
#[inline(always)]
pub fn at_entry(
    regs: &pt_regs,
    tgid: u32,
    g: u64,
    sp_off: u32,
    func: u32,
    spec: &ArgSpec,
) -> *mut ArgEvent {
    if spec.phases & args::PHASE_KEEP != 0 {
        let mut kept = Kept::default();
        for i in 0..args::MAX_VALUES {
            let read = &spec.reads[i];
            if read.kind != args::KIND_NONE && read.when == args::AT_RETURN_THROUGH {
                kept.pointers[i] = match guard(read, regs) {
                    Guard::Holds => register(regs, read.register),
                    // Read at the RET as a nil pointer.
                    Guard::Nil => 0,
                    Guard::OtherType => u64::MAX,
                };
            }
        }
        let key = KeptKey { tgid, sp_off, g };
        let _ = KEPT.insert(&key, &kept, BPF_ANY as u64);
    }
    if spec.phases & args::PHASE_ENTRY == 0 {
        return core::ptr::null_mut();
    }
    let Some(event) = scratch(tgid, g, func, ArgEvent::MAGIC) else {
        return core::ptr::null_mut();
    };
    for i in 0..args::MAX_VALUES {
        let read = &spec.reads[i];
        // SAFETY: as in `scratch`.
        let out = unsafe { &mut (*event).values[i] };
        if read.when == args::AT_ENTRY {
            read_registers(read, regs, out);
        } else {
            elsewhere(out);
        }
    }
    event
}

/// At the RET of a call of `func` opened at `start_ns`: read the results, and what the kept
/// pointers lead to now, and send them; false if the ring buffer was full.
#[inline(always)]
pub fn at_return(
    ring: &RingBuf,
    regs: &pt_regs,
    key: (u32, u64, u32),
    func: u32,
    start_ns: u64,
    spec: &ArgSpec,
) -> bool {
    let (tgid, g, sp_off) = key;
    let kept_key = KeptKey { tgid, sp_off, g };
    let kept = if spec.phases & args::PHASE_KEEP != 0 {
        // SAFETY: map value, copied out.
        let kept = unsafe { KEPT.get(&kept_key) }.copied();
        let _ = KEPT.remove(&kept_key);
        kept
    } else {
        None
    };
    let Some(event) = scratch(tgid, g, func, ArgEvent::MAGIC_RETURN) else {
        return true;
    };
    for i in 0..args::MAX_VALUES {
        let read = &spec.reads[i];
        // SAFETY: as in `scratch`.
        let out = unsafe { &mut (*event).values[i] };
        if read.when == args::AT_RETURN {
            read_registers(read, regs, out);
        } else if read.when == args::AT_RETURN_THROUGH {
            match kept {
                Some(kept) if kept.pointers[i] == u64::MAX => {
                    clear(out);
                    out.status = args::OTHER_TYPE;
                }
                Some(kept) => read_value(read, kept.pointers[i], 0, out),
                None => {
                    clear(out);
                    out.status = args::LOST;
                }
            }
        } else {
            elsewhere(out);
        }
    }
    send(ring, event, start_ns)
}

/// Send the values of a call opened at `start_ns`; false if the ring buffer was full.
#[inline(always)]
pub fn send(ring: &RingBuf, event: *mut ArgEvent, start_ns: u64) -> bool {
    // SAFETY: as in `scratch`.
    unsafe {
        (*event).start_ns = start_ns;
        ring.output(&*event, BPF_RB_NO_WAKEUP as u64).is_ok()
    }
}

#[inline(always)]
fn clear(out: &mut ArgValue) {
    out.status = args::OK;
    out.len = 0;
    out.int = 0;
}

#[inline(always)]
fn elsewhere(out: &mut ArgValue) {
    clear(out);
    out.status = args::ELSEWHERE;
}

enum Guard {
    Holds,
    /// The interface is nil.
    Nil,
    OtherType,
}

/// Whether `read`'s guard, if any, holds: the interface's itab is the one the path asserts.
#[inline(always)]
fn guard(read: &ArgRead, regs: &pt_regs) -> Guard {
    if read.guard_register == args::NO_GUARD {
        return Guard::Holds;
    }
    let itab = register(regs, read.guard_register);
    if itab == read.guard {
        Guard::Holds
    } else if itab == 0 {
        Guard::Nil
    } else {
        Guard::OtherType
    }
}

/// Read one value from the registers, as `read` says, into `out`.
#[inline(always)]
fn read_registers(read: &ArgRead, regs: &pt_regs, out: &mut ArgValue) {
    if read.kind != args::KIND_NONE {
        match guard(read, regs) {
            Guard::Holds => {}
            Guard::Nil => {
                clear(out);
                out.status = args::NIL;
                return;
            }
            Guard::OtherType => {
                clear(out);
                out.status = args::OTHER_TYPE;
                return;
            }
        }
    }
    read_value(
        read,
        register(regs, read.register),
        register(regs, read.register2),
        out,
    );
}

#[inline(always)]
fn register(regs: &pt_regs, index: u32) -> u64 {
    arch::int_arg(regs, index)
}

/// Read one value as `spec` says into `out`, from `base` (the register's word, or the pointer
/// kept at the entry) and `second` (a string argument's length register).
#[inline(always)]
fn read_value(spec: &ArgRead, base: u64, second: u64, out: &mut ArgValue) {
    clear(out);
    if spec.kind == args::KIND_NONE {
        return;
    }
    // The value's words: (pointer, length) of a string, or the integer.
    let (first, second) = if spec.steps == 0 {
        (base, second)
    } else {
        // A nil pointer on the way is a value of its own (an error's nil response), not a
        // failed read.
        if base == 0 {
            out.status = args::NIL;
            return;
        }
        let mut address = base;
        for i in 0..args::MAX_STEPS {
            if i + 1 >= spec.steps as usize {
                break;
            }
            // SAFETY: bpf_probe_read_user checks the address; a bad one returns an error.
            match unsafe { bpf_probe_read_user((address + spec.offsets[i] as u64) as *const u64) } {
                Ok(0) => {
                    out.status = args::NIL;
                    return;
                }
                Ok(next) => address = next,
                Err(_) => {
                    out.status = args::UNREADABLE;
                    return;
                }
            }
        }
        let last = spec.offsets[(spec.steps as usize - 1) & (args::MAX_STEPS - 1)] as u64;
        let at = address + last;
        let read_word = |offset: u64| -> Option<u64> {
            // SAFETY: as above.
            unsafe { bpf_probe_read_user((at + offset) as *const u64) }.ok()
        };
        match (spec.kind, read_word(0)) {
            (args::KIND_STRING, Some(pointer)) => match read_word(8) {
                Some(len) => (pointer, len),
                None => {
                    out.status = args::UNREADABLE;
                    return;
                }
            },
            (_, Some(word)) => (word, 0),
            (_, None) => {
                out.status = args::UNREADABLE;
                return;
            }
        }
    };
    if spec.kind == args::KIND_STRING {
        read_string(first, second, out);
    } else {
        out.int = integer(first, spec.kind, spec.size);
    }
}

/// An integer of `size` bytes from the low bytes of `word` (Go leaves the upper bits of a
/// narrower register argument undefined).
#[inline(always)]
fn integer(word: u64, kind: u32, size: u32) -> u64 {
    let bits = match size {
        1 => 8,
        2 => 16,
        4 => 32,
        _ => {
            return if kind == args::KIND_BOOL {
                word & 0xff
            } else {
                word
            };
        }
    };
    let low = word & ((1u64 << bits) - 1);
    if kind == args::KIND_INT && low >> (bits - 1) != 0 {
        low | !((1u64 << bits) - 1)
    } else {
        low
    }
}

/// `keep` (≤ STRING_BYTES) in a form the verifier can bound.
#[inline(always)]
fn size(keep: u64) -> u32 {
    if keep >= args::STRING_BYTES as u64 {
        args::STRING_BYTES as u32
    } else {
        keep as u32 & (args::STRING_BYTES as u32 - 1)
    }
}

#[inline(always)]
fn read_string(pointer: u64, len: u64, out: &mut ArgValue) {
    let mut keep = len;
    if len > args::STRING_BYTES as u64 {
        keep = args::STRING_BYTES as u64;
        out.status = args::TRUNCATED;
    }
    out.len = keep as u32;
    if keep == 0 {
        return;
    }
    if pointer == 0 {
        out.status = args::UNREADABLE;
        out.len = 0;
        return;
    }
    // SAFETY: the helper writes at most `keep` (≤ STRING_BYTES) bytes into `out.bytes`, and checks
    // the user address.
    let rc = unsafe {
        generated::bpf_probe_read_user(
            out.bytes.as_mut_ptr().cast(),
            size(keep),
            pointer as *const core::ffi::c_void,
        )
    };
    if rc != 0 {
        out.status = args::UNREADABLE;
        out.len = 0;
    }
}

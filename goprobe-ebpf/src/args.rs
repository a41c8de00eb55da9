//! `funclatency --by` and packs: the values a call is labelled by, read from its arguments at the
//! entry site, where Go's register ABI still holds them (rax, rbx, rcx, rdi, rsi, r8..r11 on
//! amd64; x0..x15 on arm64). Entry sites are the function's first instruction or its stack-check
//! branch, before which the prologue writes no argument register.
//!
//! The values are read into a per-CPU [`ArgEvent`] before the call's timestamp (so reading
//! them is not part of the measured latency), and copied to the ring buffer once the call is
//! open; user space joins it to the call's latency event, which the ring buffer delivers after
//! it. No ring-buffer reservation is held across the rest of the entry program: kernels before
//! 6.2 lose track of one kept on the stack, and refuse the program.
use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_RB_NO_WAKEUP, pt_regs},
    helpers::{bpf_probe_read_user, generated},
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use goprobe_common::{ArgEvent, ArgRead, ArgSpec, ArgValue, args};

use crate::arch;

/// What to read at the entry of each function with `cookie::ARGS`, by function id; written by
/// user space before it attaches the sites.
#[map]
static ARG_SPECS: HashMap<u32, ArgSpec> =
    HashMap::with_max_entries(args::MAX_FUNCTIONS, BPF_F_NO_PREALLOC);

/// The event being filled on this CPU (programs are not preempted on their CPU).
#[map]
static ARG_SCRATCH: PerCpuArray<ArgEvent> = PerCpuArray::with_max_entries(1, 0);

/// Read the values of a call of `func` into this CPU's scratch event; `None` if the function
/// has no spec.
#[inline(always)]
pub fn read(regs: &pt_regs, tgid: u32, g: u64, func: u32) -> Option<*mut ArgEvent> {
    // SAFETY: map value, copied out.
    let spec = (unsafe { ARG_SPECS.get(&func) }).copied()?;
    let event = ARG_SCRATCH.get_ptr_mut(0)?;
    let registers = arch::int_args(regs);
    // SAFETY: this CPU's scratch value, which nothing else touches while this program runs.
    unsafe {
        (*event).tgid = tgid;
        (*event).func = func;
        (*event).g = g;
        (*event).start_ns = 0;
        (*event).magic = ArgEvent::MAGIC;
        for i in 0..args::MAX_VALUES {
            read_value(&spec.reads[i], &registers, &mut (*event).values[i]);
        }
    }
    Some(event)
}

/// Send the values of a call opened at `start_ns`; false if the ring buffer was full.
#[inline(always)]
pub fn send(ring: &RingBuf, event: *mut ArgEvent, start_ns: u64) -> bool {
    // SAFETY: as in `read`.
    unsafe {
        (*event).start_ns = start_ns;
        ring.output(&*event, BPF_RB_NO_WAKEUP as u64).is_ok()
    }
}

#[inline(always)]
fn register(registers: &[u64; args::REGISTERS as usize], index: u32) -> u64 {
    if index < args::REGISTERS {
        registers[index as usize]
    } else {
        0
    }
}

/// Read one value as `spec` says into `out`.
#[inline(always)]
fn read_value(spec: &ArgRead, registers: &[u64; args::REGISTERS as usize], out: &mut ArgValue) {
    out.status = args::OK;
    out.len = 0;
    out.int = 0;
    if spec.kind == args::KIND_NONE {
        return;
    }
    let base = register(registers, spec.register);
    // The value's words: (pointer, length) of a string, or the integer.
    let (first, second) = if spec.steps == 0 {
        (base, register(registers, spec.register2))
    } else {
        let mut address = base;
        for i in 0..args::MAX_STEPS {
            if i + 1 >= spec.steps as usize {
                break;
            }
            // SAFETY: bpf_probe_read_user checks the address; a bad one returns an error.
            match unsafe { bpf_probe_read_user((address + spec.offsets[i] as u64) as *const u64) } {
                Ok(next) if next != 0 => address = next,
                _ => {
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

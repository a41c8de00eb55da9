//! The kernel-side programs live in `main.rs` (built for `bpfel-unknown-none` by goprobe/build.rs).
//! This library holds what needs an unstable feature of the BPF build, which only a crate root
//! can enable: the host build of this crate (agent's build-dependency) compiles none of it.
#![no_std]
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

/// Add `value` to the `u64` at `ptr` in one atomic instruction (`BPF_ATOMIC | BPF_ADD`, which
/// every kernel with BPF atomics accepts on map values). The BPF target has no compare-and-swap,
/// so `core`'s atomic types offer no `fetch_add` there.
///
/// # Safety
/// `ptr` must point to a live, 8-byte aligned `u64` (a map value) for the call.
#[cfg(target_arch = "bpf")]
#[inline(always)]
pub unsafe fn atomic_add(ptr: *mut u64, value: u64) {
    // SAFETY: the caller guarantees `ptr`; the instruction touches those 8 bytes only.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({ptr} + 0) += {value}",
            ptr = in(reg) ptr,
            value = in(reg) value,
            options(nostack, preserves_flags),
        );
    }
}

/// `value`, which the compiler can no longer reason about: a bounds check on the result is
/// then kept, on the very register the verifier sees used as an index (the compiler otherwise
/// drops a check it can prove from an earlier comparison, which the verifier cannot follow).
#[cfg(target_arch = "bpf")]
#[inline(always)]
pub fn opaque(mut value: u64) -> u64 {
    // SAFETY: one register move onto itself, which the compiler must assume changes it.
    unsafe {
        core::arch::asm!(
            "{v} = {v}",
            v = inout(reg) value,
            options(nomem, nostack, preserves_flags),
        );
    }
    value
}

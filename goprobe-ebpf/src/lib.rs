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

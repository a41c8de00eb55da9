//! The registers goprobe reads, per architecture. Every program reads registers through these
//! functions, so the rest of the kernel side is the same on amd64 and arm64; which set is built
//! is decided by aya's `bpf_target_arch` (goprobe/build.rs builds the object for the architecture
//! goprobe itself is built for, which is the architecture of the programs it traces).
//!
//! Go's register ABI (ABIInternal, Go >= 1.17 on amd64, every version on arm64):
//!
//! | | amd64 | arm64 |
//! | --- | --- | --- |
//! | arguments | rax, rbx, rcx, rdi, rsi, r8..r11 | x0..x15 |
//! | current `g` | r14 | x28 |
//! | frame pointer | rbp | x29 |
//! | return address at entry and at RET | the word at `rsp` | x30 (the link register) |
//! | stack-check branch | `jbe` (CF or ZF: morestack) | `b.ls` (C clear or Z set: morestack) |
//!
//! Frame records are alike: `[fp]` is the caller's frame pointer and `[fp + 8]` the return
//! address of the function that owns the frame (arm64 Go stores x30 at the new `sp` and the
//! frame pointer just below it, then points x29 there).
#[cfg(bpf_target_arch = "x86_64")]
use aya_ebpf::helpers::bpf_probe_read_user;
use aya_ebpf::{bindings::pt_regs, helpers::bpf_probe_read_kernel};

/// The user registers a stack walk needs.
#[derive(Clone, Copy)]
pub(crate) struct UserRegs {
    pub ip: u64,
    pub sp: u64,
    pub fp: u64,
    /// The link register; amd64 has none.
    #[cfg(bpf_target_arch = "aarch64")]
    pub lr: u64,
}

#[cfg(bpf_target_arch = "x86_64")]
mod regs {
    use super::*;

    const EFLAGS_CF: u64 = 1 << 0;
    const EFLAGS_ZF: u64 = 1 << 6;

    #[inline(always)]
    pub(crate) fn g(regs: &pt_regs) -> u64 {
        regs.r14
    }

    #[inline(always)]
    pub(crate) fn sp(regs: &pt_regs) -> u64 {
        regs.rsp
    }

    /// Go's first three integer arguments. Read with volatile loads: the verifier refuses a
    /// context read at an offset the compiler computed from a branch.
    #[inline(always)]
    pub(crate) fn args3(regs: &pt_regs) -> [u64; 3] {
        // SAFETY: plain reads of the kernel's pt_regs.
        unsafe {
            [
                core::ptr::read_volatile(&regs.rax),
                core::ptr::read_volatile(&regs.rbx),
                core::ptr::read_volatile(&regs.rcx),
            ]
        }
    }

    /// Go's integer argument (and result) register `index` in ABI order (rax, rbx, rcx, rdi,
    /// rsi, r8..r11), 0 past them; a volatile load, as in [`args3`]. One register at a time:
    /// an array of them all took the return program past the 512-byte stack.
    #[inline(always)]
    pub(crate) fn int_arg(regs: &pt_regs, index: u32) -> u64 {
        // SAFETY: plain reads of the kernel's pt_regs.
        unsafe {
            match index {
                0 => core::ptr::read_volatile(&regs.rax),
                1 => core::ptr::read_volatile(&regs.rbx),
                2 => core::ptr::read_volatile(&regs.rcx),
                3 => core::ptr::read_volatile(&regs.rdi),
                4 => core::ptr::read_volatile(&regs.rsi),
                5 => core::ptr::read_volatile(&regs.r8),
                6 => core::ptr::read_volatile(&regs.r9),
                7 => core::ptr::read_volatile(&regs.r10),
                8 => core::ptr::read_volatile(&regs.r11),
                _ => 0,
            }
        }
    }

    /// The current `g` read with a volatile load, for the same reason as [`args3`].
    #[inline(always)]
    pub(crate) fn g_volatile(regs: &pt_regs) -> u64 {
        // SAFETY: a plain read of the kernel's pt_regs.
        unsafe { core::ptr::read_volatile(&regs.r14) }
    }

    /// At the stack-check `jbe`: CF or ZF set means the call is about to take the morestack
    /// path, which grows the stack and re-enters the function from its first instruction.
    #[inline(always)]
    pub(crate) fn takes_morestack(regs: &pt_regs) -> bool {
        regs.eflags & (EFLAGS_CF | EFLAGS_ZF) != 0
    }

    #[inline(always)]
    pub(crate) fn user(regs: &pt_regs) -> UserRegs {
        UserRegs {
            ip: regs.rip,
            sp: regs.rsp,
            fp: regs.rbp,
        }
    }

    /// Whether a perf-event sample interrupted user code (the privilege level of `cs`).
    #[inline(always)]
    pub(crate) fn in_user_mode(regs: &pt_regs) -> bool {
        regs.cs & 3 == 3
    }

    /// The user registers the kernel saved at its entry (from `bpf_task_pt_regs`).
    #[inline(always)]
    pub(crate) fn saved_user(saved: *const pt_regs) -> UserRegs {
        let read = |offset: usize| read_kernel(saved, offset);
        UserRegs {
            ip: read(core::mem::offset_of!(pt_regs, rip)),
            sp: read(core::mem::offset_of!(pt_regs, rsp)),
            fp: read(core::mem::offset_of!(pt_regs, rbp)),
        }
    }

    /// The return address where the frame is not set up (at an entry or RET site, or in a
    /// frameless leaf): the word at `rsp`.
    #[inline(always)]
    pub(crate) fn leaf_return(regs: &UserRegs) -> u64 {
        // SAFETY: bpf_probe_read_user checks the address.
        unsafe { bpf_probe_read_user(regs.sp as *const u64) }.unwrap_or(0)
    }

    /// The return address in the middle of a prologue (after `push rbp`, before
    /// `mov rbp, rsp`): the word at `rsp + 8`.
    #[inline(always)]
    pub(crate) fn prologue_return(regs: &UserRegs) -> u64 {
        // SAFETY: bpf_probe_read_user checks the address.
        unsafe { bpf_probe_read_user(regs.sp.wrapping_add(8) as *const u64) }.unwrap_or(0)
    }
}

#[cfg(bpf_target_arch = "aarch64")]
mod regs {
    use super::*;

    /// NZCV in `pstate`: Z is bit 30, C bit 29.
    const PSTATE_Z: u64 = 1 << 30;
    const PSTATE_C: u64 = 1 << 29;
    /// `PSR_MODE_MASK`: the exception level and stack pointer selection; 0 is EL0 (user).
    const PSTATE_MODE: u64 = 0xf;
    const G: usize = 28;
    const FP: usize = 29;
    const LR: usize = 30;

    #[inline(always)]
    pub(crate) fn g(regs: &pt_regs) -> u64 {
        regs.regs[G]
    }

    #[inline(always)]
    pub(crate) fn sp(regs: &pt_regs) -> u64 {
        regs.sp
    }

    /// Go's first three integer arguments. Read with volatile loads: the verifier refuses a
    /// context read at an offset the compiler computed from a branch.
    #[inline(always)]
    pub(crate) fn args3(regs: &pt_regs) -> [u64; 3] {
        // SAFETY: plain reads of the kernel's pt_regs.
        unsafe {
            [
                core::ptr::read_volatile(&regs.regs[0]),
                core::ptr::read_volatile(&regs.regs[1]),
                core::ptr::read_volatile(&regs.regs[2]),
            ]
        }
    }

    /// Go's integer argument (and result) register `index` in ABI order (x0..x15), 0 past
    /// them; a volatile load, as in [`args3`].
    #[inline(always)]
    pub(crate) fn int_arg(regs: &pt_regs, index: u32) -> u64 {
        // Constant offsets only: the verifier refuses a variable offset into the context.
        macro_rules! at {
            ($($i:literal)*) => {
                match index {
                    // SAFETY: plain reads of the kernel's pt_regs.
                    $($i => unsafe { core::ptr::read_volatile(&regs.regs[$i]) },)*
                    _ => 0,
                }
            };
        }
        at!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15)
    }

    /// The current `g` read with a volatile load, for the same reason as [`args3`].
    #[inline(always)]
    pub(crate) fn g_volatile(regs: &pt_regs) -> u64 {
        // SAFETY: a plain read of the kernel's pt_regs.
        unsafe { core::ptr::read_volatile(&regs.regs[G]) }
    }

    /// At the stack-check `b.ls`, which the probe sees before it executes: it is taken (the
    /// call goes through morestack and re-enters from its first instruction) when C is clear or
    /// Z is set, i.e. the would-be stack pointer is at or below the guard.
    #[inline(always)]
    pub(crate) fn takes_morestack(regs: &pt_regs) -> bool {
        regs.pstate & PSTATE_C == 0 || regs.pstate & PSTATE_Z != 0
    }

    #[inline(always)]
    pub(crate) fn user(regs: &pt_regs) -> UserRegs {
        UserRegs {
            ip: regs.pc,
            sp: regs.sp,
            fp: regs.regs[FP],
            lr: regs.regs[LR],
        }
    }

    /// Whether a perf-event sample interrupted user code (EL0 in `pstate`).
    #[inline(always)]
    pub(crate) fn in_user_mode(regs: &pt_regs) -> bool {
        regs.pstate & PSTATE_MODE == 0
    }

    /// The user registers the kernel saved at its entry (from `bpf_task_pt_regs`: the kernel's
    /// `struct pt_regs` begins with the user registers, laid out as aya's `pt_regs` here).
    #[inline(always)]
    pub(crate) fn saved_user(saved: *const pt_regs) -> UserRegs {
        let read = |offset: usize| read_kernel(saved, offset);
        let reg = |n: usize| read(core::mem::offset_of!(pt_regs, regs) + 8 * n);
        UserRegs {
            ip: read(core::mem::offset_of!(pt_regs, pc)),
            sp: read(core::mem::offset_of!(pt_regs, sp)),
            fp: reg(FP),
            lr: reg(LR),
        }
    }

    /// The return address where the frame is not set up (at an entry or RET site, or in a
    /// frameless leaf): the link register.
    #[inline(always)]
    pub(crate) fn leaf_return(regs: &UserRegs) -> u64 {
        regs.lr
    }

    /// The return address in the middle of a prologue or epilogue (frame allocated, x29 not yet
    /// or no longer pointing at it): still or again the link register.
    #[inline(always)]
    pub(crate) fn prologue_return(regs: &UserRegs) -> u64 {
        regs.lr
    }
}

pub(crate) use regs::*;

/// A word of the kernel's saved registers; 0 if unreadable.
#[inline(always)]
fn read_kernel(saved: *const pt_regs, offset: usize) -> u64 {
    // SAFETY: bpf_probe_read_kernel checks the address.
    unsafe { bpf_probe_read_kernel(saved.cast::<u8>().add(offset).cast::<u64>()) }.unwrap_or(0)
}

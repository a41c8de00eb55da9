//! Probe sites from machine code: where a function is entered (after the stack check) and
//! every instruction that returns from it.
//!
//! A uprobe placed off an instruction boundary is accepted by the kernel and corrupts the
//! target, so sites only ever come from a real decoder walking the function linearly from its
//! first byte (iced-x86 for x86-64 in `x86_64.rs`, yaxpeax-arm for arm64 in `arm64.rs`); any
//! undecodable instruction fails the whole function rather than guessing.

use crate::{Arch, ProbeSites};

mod arm64;
mod x86_64;
pub use arm64::{Flow, aarch64_flow, aarch64_sites, aarch64_writes_g};
pub use x86_64::{kernel_emulates, x86_64_sites};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DisasmError {
    #[error("probe sites for {0} code are not implemented yet")]
    UnsupportedArch(Arch),
    #[error("undecodable instruction at {addr:#x}")]
    InvalidInstruction { addr: u64 },
    #[error("function at {addr:#x} is empty")]
    Empty { addr: u64 },
    #[error("the code of the function at {addr:#x} is not in the file")]
    NoCode { addr: u64 },
}

/// Offset of `g.stackguard0` in `runtime.g` on 64-bit targets (after `stack{lo,hi}`).
const STACKGUARD0: u64 = 0x10;

pub fn sites(arch: Arch, code: &[u8], addr: u64) -> Result<ProbeSites, DisasmError> {
    match arch {
        Arch::X86_64 => x86_64_sites(code, addr),
        Arch::Aarch64 => aarch64_sites(code, addr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm64_code_goes_to_the_arm64_decoder() {
        // ret, as arm64 and as x86-64 (where 0xc0 0x03 is `rol byte [rbx], imm8` cut short).
        let ret = [0xc0, 0x03, 0x5f, 0xd6];
        assert_eq!(
            sites(Arch::Aarch64, &ret, 0x1000).unwrap().returns,
            vec![0x1000]
        );
        assert_ne!(
            sites(Arch::X86_64, &ret, 0x1000).map(|s| s.returns),
            Ok(vec![0x1000])
        );
    }
}

//! x86-64 probe sites, decoded with iced-x86: the entry after Go's stack check
//! (`cmp rsp,[r14+0x10]; jbe morestack`) and every `ret`.

use iced_x86::{
    Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, Mnemonic, OpAccess,
    OpKind, Register,
};

use super::{DisasmError, STACKGUARD0};
use crate::{EntryKind, ProbeSites};

/// How many instructions from the start to search for the stack check. Go emits it first; the
/// largest form (huge frames) is `mov r12,rsp; sub r12,X; jb; cmp r12,[r14+0x10]; jbe`.
const PROLOGUE_WINDOW: usize = 8;

/// How many instructions from the start of a function without a stack check to search for one
/// the kernel emulates (see [`EntryKind::EmulatedPrefix`]).
const PREFIX_WINDOW: usize = 16;

/// The NOPs the x86 kernel recognises (`x86_nops`, the P6 forms Go and gcc emit as padding),
/// which a uprobe emulates instead of single-stepping; it emulates no other NOP encoding.
const KERNEL_NOPS: [&[u8]; 8] = [
    &[0x90],
    &[0x66, 0x90],
    &[0x0f, 0x1f, 0x00],
    &[0x0f, 0x1f, 0x40, 0x00],
    &[0x0f, 0x1f, 0x44, 0x00, 0x00],
    &[0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00],
    &[0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00],
    &[0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
];

/// Whether a uprobe on this instruction is emulated by the x86 kernel (one trap) rather than
/// single-stepped out of line (a trap, then a single-step trap: several times dearer, see
/// BENCHMARKS.md): relative `jmp`, `jcc` and `call`, `push reg`, and the NOPs above.
/// `bytes` are the instruction's bytes; prefixed forms the kernel refuses are not counted.
pub fn kernel_emulates(instr: &Instruction, bytes: &[u8]) -> bool {
    match instr.mnemonic() {
        Mnemonic::Nop => KERNEL_NOPS.contains(&bytes),
        Mnemonic::Push => {
            instr.op_count() == 1
                && instr.op0_kind() == OpKind::Register
                && matches!(bytes, [0x50..=0x57] | [0x41, 0x50..=0x57])
        }
        Mnemonic::Call => matches!(bytes, [0xe8, _, _, _, _]),
        Mnemonic::Jmp => matches!(bytes, [0xeb, _] | [0xe9, _, _, _, _]),
        _ => {
            instr.flow_control() == FlowControl::ConditionalBranch
                && matches!(bytes, [0x70..=0x7f, _] | [0x0f, 0x80..=0x8f, _, _, _, _])
        }
    }
}

/// Whether the instruction changes the stack pointer (push, pop, call, `sub rsp`, ...).
fn writes_rsp(info: &mut InstructionInfoFactory, instr: &Instruction) -> bool {
    info.info(instr).used_registers().iter().any(|r| {
        matches!(
            r.register(),
            Register::RSP | Register::ESP | Register::SP | Register::SPL
        ) && !matches!(
            r.access(),
            OpAccess::Read | OpAccess::CondRead | OpAccess::None
        )
    })
}

/// Decode `code` (the bytes of one function, loaded at `addr`) and find its probe sites.
pub fn x86_64_sites(code: &[u8], addr: u64) -> Result<ProbeSites, DisasmError> {
    if code.is_empty() {
        return Err(DisasmError::Empty { addr });
    }
    // Addresses come from the file; a range that wraps around the address space is not code.
    let end = addr
        .checked_add(code.len() as u64)
        .ok_or(DisasmError::NoCode { addr })?;
    let mut decoder = Decoder::with_ip(64, code, addr, DecoderOptions::NONE);
    let mut instructions = Vec::new();
    let mut entry = None;
    let mut returns = Vec::new();
    let mut tail_jumps = 0;
    let mut indirect_jumps = 0;
    // Addresses inside the function that a direct branch goes to.
    let mut targets = Vec::new();
    // Registers holding the current g: r14 under ABIInternal (Go >= 1.17); before that, the
    // register a prologue loads from TLS (`mov rcx, fs:[-8]`).
    let mut g_regs: [Register; 2] = [Register::R14, Register::None];
    let mut prev_was_guard_cmp = false;

    while decoder.can_decode() {
        let mut instr = Instruction::default();
        decoder.decode_out(&mut instr);
        if instr.is_invalid() {
            return Err(DisasmError::InvalidInstruction { addr: instr.ip() });
        }
        let index = instructions.len();
        if index < PROLOGUE_WINDOW && entry.is_none() {
            if prev_was_guard_cmp && instr.mnemonic() == Mnemonic::Jbe {
                entry = Some(instr.ip());
            }
            if is_tls_g_load(&instr) {
                g_regs[1] = instr.op0_register();
            }
            prev_was_guard_cmp = is_stackguard_cmp(&instr, &g_regs);
        }
        match instr.flow_control() {
            FlowControl::ConditionalBranch | FlowControl::UnconditionalBranch => {
                let target = instr.near_branch_target();
                if (addr..end).contains(&target) {
                    targets.push(target);
                } else if instr.mnemonic() == Mnemonic::Jmp {
                    tail_jumps += 1;
                }
            }
            FlowControl::IndirectBranch => indirect_jumps += 1,
            _ => {}
        }
        // Near return, with or without an immediate. Far returns do not occur in Go code.
        if instr.mnemonic() == Mnemonic::Ret {
            returns.push(instr.ip());
        }
        instructions.push(instr);
    }
    targets.sort_unstable();
    let is_target = |ip: u64| targets.binary_search(&ip).is_ok();
    let bytes_of = |instr: &Instruction| insn_bytes(code, addr, instr);

    let (entry, entry_kind) = match entry {
        Some(entry) => (entry, EntryKind::StackCheckBranch),
        None => match emulated_prefix_site(&instructions, &is_target, code, addr) {
            Some(site) if site != addr => (site, EntryKind::EmulatedPrefix),
            _ => (addr, EntryKind::FunctionStart),
        },
    };

    // A NOP right before a RET (Go pads code with them) is a cheaper return site, when every
    // path to the RET runs it: no branch goes to the RET itself, and no jump table could.
    let return_sites = returns
        .iter()
        .map(|&ret| {
            let i = instructions.partition_point(|x| x.ip() < ret);
            match i.checked_sub(1).map(|p| &instructions[p]) {
                Some(prev)
                    if indirect_jumps == 0
                        && !is_target(ret)
                        && prev.next_ip() == ret
                        && prev.mnemonic() == Mnemonic::Nop
                        && kernel_emulates(prev, bytes_of(prev)) =>
                {
                    prev.ip()
                }
                _ => ret,
            }
        })
        .collect();

    Ok(ProbeSites {
        entry,
        entry_kind,
        returns,
        return_sites,
        tail_jumps,
        indirect_jumps,
    })
}

/// For a function without a stack check: the first instruction the kernel emulates on its
/// straight-line start, if every call runs it exactly once with the stack pointer it had on
/// entry. Scanning stops (None) at anything a branch can reach (a loop back to the start, or
/// the `jmp` back from a morestack call of a stack check this decoder did not recognise), at
/// anything that changes the stack pointer, and at any other control transfer.
fn emulated_prefix_site(
    instructions: &[Instruction],
    is_target: &dyn Fn(u64) -> bool,
    code: &[u8],
    addr: u64,
) -> Option<u64> {
    let mut info = InstructionInfoFactory::new();
    for instr in instructions.iter().take(PREFIX_WINDOW) {
        if is_target(instr.ip()) {
            return None;
        }
        if kernel_emulates(instr, insn_bytes(code, addr, instr)) {
            return Some(instr.ip());
        }
        if instr.flow_control() != FlowControl::Next || writes_rsp(&mut info, instr) {
            return None;
        }
    }
    None
}

/// The bytes of a decoded instruction of `code` (loaded at `addr`).
fn insn_bytes<'a>(code: &'a [u8], addr: u64, instr: &Instruction) -> &'a [u8] {
    let start = (instr.ip() - addr) as usize;
    &code[start..start + instr.len()]
}

/// `cmp reg, [g+0x10]` (either operand order): the comparison of the stack pointer (or r12, the
/// would-be stack pointer of a large frame) with `g.stackguard0`.
fn is_stackguard_cmp(instr: &Instruction, g_regs: &[Register]) -> bool {
    if instr.mnemonic() != Mnemonic::Cmp || instr.op_count() != 2 {
        return false;
    }
    let (k0, k1) = (instr.op_kind(0), instr.op_kind(1));
    let reg_and_mem = (k0 == OpKind::Register && k1 == OpKind::Memory)
        || (k0 == OpKind::Memory && k1 == OpKind::Register);
    let reg = if k0 == OpKind::Register {
        instr.op0_register()
    } else {
        instr.op1_register()
    };
    reg_and_mem
        && reg.is_gpr64()
        && g_regs.contains(&instr.memory_base())
        && instr.memory_base() != Register::None
        && instr.memory_index() == Register::None
        && instr.memory_displacement64() == STACKGUARD0
        // A plain [reg+0x10] (default DS); fs:/gs: overrides are TLS accesses, not g fields.
        && instr.memory_segment() == Register::DS
}

/// `mov reg, fs:[...]`: how Go before 1.17 (and cgo-less TLS code) loaded g.
fn is_tls_g_load(instr: &Instruction) -> bool {
    instr.mnemonic() == Mnemonic::Mov
        && instr.op_count() == 2
        && instr.op_kind(0) == OpKind::Register
        && instr.op_kind(1) == OpKind::Memory
        && instr.memory_segment() == Register::FS
        && instr.op0_register().is_gpr64()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x480fc0;

    /// A small-frame Go function as Go 1.17+ emits it (bytes from `main.foo`, Go 1.19):
    /// cmp rsp,[r14+0x10]; jbe morestack; sub rsp,0x18; ... add rsp,0x18; ret;
    /// morestack: call runtime.morestack_noctxt; jmp start; int3 padding.
    fn small_frame() -> Vec<u8> {
        let mut c = vec![0x49, 0x3b, 0x66, 0x10]; // cmp rsp,[r14+0x10]
        c.extend_from_slice(&[0x76, 0x0c]); // jbe +0x0c (to the morestack call)
        c.extend_from_slice(&[0x48, 0x83, 0xec, 0x18]); // sub rsp,0x18
        c.extend_from_slice(&[0x48, 0x01, 0xd8]); // add rax,rbx
        c.extend_from_slice(&[0x48, 0x83, 0xc4, 0x18]); // add rsp,0x18
        c.push(0xc3); // ret at +0x11
        c.extend_from_slice(&[0xe8, 0x00, 0x00, 0x00, 0x00]); // call (morestack) at +0x12
        c.extend_from_slice(&[0xeb, 0xe7]); // jmp start (at +0x17: 0x19 - 0x19 = 0)
        c.extend_from_slice(&[0xcc, 0xcc, 0xcc]);
        c
    }

    #[test]
    fn small_frame_prologue() {
        let code = small_frame();
        let s = x86_64_sites(&code, BASE).unwrap();
        assert_eq!(s.entry_kind, EntryKind::StackCheckBranch);
        assert_eq!(s.entry, BASE + 4);
        assert_eq!(s.returns, vec![BASE + 0x11]);
        assert_eq!(s.tail_jumps, 0, "the jump back to the start stays inside");
    }

    #[test]
    fn large_frame_prologue_with_r12() {
        let mut c = vec![0x4c, 0x8d, 0xa4, 0x24, 0x00, 0xfe, 0xff, 0xff]; // lea r12,[rsp-0x200]
        c.extend_from_slice(&[0x4d, 0x3b, 0x66, 0x10]); // cmp r12,[r14+0x10]
        c.extend_from_slice(&[0x0f, 0x86, 0x02, 0x00, 0x00, 0x00]); // jbe rel32 (at +0xc)
        c.push(0xc3);
        c.extend_from_slice(&[0x90, 0x90]);
        let s = x86_64_sites(&c, BASE).unwrap();
        assert_eq!(
            (s.entry_kind, s.entry),
            (EntryKind::StackCheckBranch, BASE + 0xc)
        );
        assert_eq!(s.returns, vec![BASE + 0x12]);
    }

    #[test]
    fn huge_frame_prologue() {
        // From `main.big` (20000-byte frame), Go 1.19.
        let mut c = vec![0x49, 0x89, 0xe4]; // mov r12,rsp
        c.extend_from_slice(&[0x49, 0x81, 0xec, 0xb8, 0x4d, 0x00, 0x00]); // sub r12,0x4db8
        c.extend_from_slice(&[0x0f, 0x82, 0x0b, 0x00, 0x00, 0x00]); // jb (must not be taken as the entry)
        c.extend_from_slice(&[0x4d, 0x3b, 0x66, 0x10]); // cmp r12,[r14+0x10]
        c.extend_from_slice(&[0x0f, 0x86, 0x01, 0x00, 0x00, 0x00]); // jbe at +0x14
        c.push(0xc3);
        c.push(0x90);
        let s = x86_64_sites(&c, BASE).unwrap();
        assert_eq!(
            (s.entry_kind, s.entry),
            (EntryKind::StackCheckBranch, BASE + 0x14)
        );
        assert_eq!(s.returns.len(), 1);
    }

    #[test]
    fn pre_117_tls_prologue() {
        let mut c = vec![0x64, 0x48, 0x8b, 0x0c, 0x25, 0xf8, 0xff, 0xff, 0xff]; // mov rcx,fs:[-8]
        c.extend_from_slice(&[0x48, 0x3b, 0x61, 0x10]); // cmp rsp,[rcx+0x10]
        c.extend_from_slice(&[0x76, 0x01]); // jbe at +0xd
        c.push(0xc3);
        c.push(0xcc);
        let s = x86_64_sites(&c, BASE).unwrap();
        assert_eq!(
            (s.entry_kind, s.entry),
            (EntryKind::StackCheckBranch, BASE + 0xd)
        );
    }

    #[test]
    fn frameless_leaf() {
        // imul rax,rbx; inc rax; ret; int3 padding
        let c = [
            0x48, 0x0f, 0xaf, 0xc3, 0x48, 0xff, 0xc0, 0xc3, 0xcc, 0xcc, 0xcc, 0xcc,
        ];
        let s = x86_64_sites(&c, BASE).unwrap();
        assert_eq!((s.entry_kind, s.entry), (EntryKind::FunctionStart, BASE));
        assert_eq!(s.returns, vec![BASE + 7]);
    }

    #[test]
    fn several_returns_including_ret_imm16() {
        let c = [
            0x48, 0x85, 0xc0, // test rax,rax
            0x7c, 0x01, // jl +1
            0xc3, // ret at +5
            0x48, 0x85, 0xdb, // test rbx,rbx
            0x74, 0x03, // je +3
            0xc2, 0x08, 0x00, // ret 8 at +0xb
            0xc3, // ret at +0xe
        ];
        let s = x86_64_sites(&c, BASE).unwrap();
        assert_eq!(s.returns, vec![BASE + 5, BASE + 0xb, BASE + 0xe]);
        // No stack check: the entry is the first branch, which every call passes once.
        assert_eq!(
            (s.entry_kind, s.entry),
            (EntryKind::EmulatedPrefix, BASE + 3)
        );
    }

    #[test]
    fn ret_bytes_inside_other_instructions_are_not_returns() {
        // mov eax,0xc3c3c3c3; ret — a byte scanner would see five 0xc3s.
        let c = [0xb8, 0xc3, 0xc3, 0xc3, 0xc3, 0xc3];
        assert_eq!(x86_64_sites(&c, BASE).unwrap().returns, vec![BASE + 5]);
    }

    #[test]
    fn cmp_without_jbe_or_other_guard_is_not_a_stack_check() {
        // Not stack checks; the `jbe` is only the first emulated instruction of the function
        // (EmulatedPrefix: no eflags filter, and nothing jumps back to the start here).
        let kind = |c: &[u8]| x86_64_sites(c, BASE).unwrap().entry_kind;
        // cmp rsp,[r14+0x10]; nop; jbe — not immediately followed.
        let c = [0x49, 0x3b, 0x66, 0x10, 0x90, 0x76, 0x00, 0xc3];
        assert_eq!(kind(&c), EntryKind::EmulatedPrefix);
        // cmp rsp,[r14+0x18]; jbe — wrong field.
        let c = [0x49, 0x3b, 0x66, 0x18, 0x76, 0x00, 0xc3];
        assert_eq!(kind(&c), EntryKind::EmulatedPrefix);
        // cmp rsp,[rbx+0x10]; jbe — not g.
        let c = [0x48, 0x3b, 0x63, 0x10, 0x76, 0x00, 0xc3];
        assert_eq!(kind(&c), EntryKind::EmulatedPrefix);
    }

    #[test]
    fn tail_and_indirect_jumps_are_counted() {
        let c = [
            0xe9, 0x00, 0x10, 0x00, 0x00, // jmp far outside
            0xeb, 0xf9, // jmp back to start (inside)
            0xff, 0xe0, // jmp rax
            0xc3,
        ];
        let s = x86_64_sites(&c, BASE).unwrap();
        assert_eq!((s.tail_jumps, s.indirect_jumps), (1, 1));
    }

    #[test]
    fn leaf_entry_moves_to_the_first_emulated_instruction() {
        // mov rcx,[rax+8]; test rcx,rcx; je +1; ret; ret — the je is the first instruction the
        // kernel emulates, on the straight-line start, with rsp untouched.
        let c = [
            0x48, 0x8b, 0x48, 0x08, // mov rcx,[rax+8]
            0x48, 0x85, 0xc9, // test rcx,rcx
            0x74, 0x01, // je +1 (at +7)
            0xc3, 0xc3,
        ];
        let s = x86_64_sites(&c, BASE).unwrap();
        assert_eq!(
            (s.entry_kind, s.entry),
            (EntryKind::EmulatedPrefix, BASE + 7)
        );
        // A function that starts with an emulated instruction keeps its start.
        let c = [0x55, 0x48, 0x89, 0xe5, 0x5d, 0xc3]; // push rbp; mov rbp,rsp; pop rbp; ret
        let s = x86_64_sites(&c, BASE).unwrap();
        assert_eq!((s.entry_kind, s.entry), (EntryKind::FunctionStart, BASE));
    }

    #[test]
    fn leaf_entry_stays_at_the_start_when_unsafe() {
        // Something changes rsp first: sub rsp,8; je; add rsp,8; ret.
        let c = [
            0x48, 0x83, 0xec, 0x08, 0x74, 0x00, 0x48, 0x83, 0xc4, 0x08, 0xc3,
        ];
        assert_eq!(
            x86_64_sites(&c, BASE).unwrap().entry_kind,
            EntryKind::FunctionStart
        );
        // A loop comes back to the start: inc rax; cmp rax,rbx; jl start; ret.
        let c = [0x48, 0xff, 0xc0, 0x48, 0x39, 0xd8, 0x7c, 0xf8, 0xc3];
        assert_eq!(
            x86_64_sites(&c, BASE).unwrap().entry_kind,
            EntryKind::FunctionStart
        );
        // A branch lands between the start and the candidate: mov; je +0 (to the mov below); mov; jmp.
        let c = [
            0x48, 0x89, 0xc1, // mov rcx,rax
            0x74, 0x00, // je +0: target +5, before the jmp
            0x48, 0x89, 0xc2, // mov rdx,rax (a branch target)
            0xc3,
        ];
        let s = x86_64_sites(&c, BASE).unwrap();
        assert_eq!(
            (s.entry_kind, s.entry),
            (EntryKind::EmulatedPrefix, BASE + 3)
        );
        // An unrecognised stack check (cmp against another field) with its morestack path
        // jumping back to the start: the jbe must not become the entry.
        let c = [
            0x49, 0x3b, 0x66, 0x18, // cmp rsp,[r14+0x18]
            0x76, 0x01, // jbe +1
            0xc3, // ret
            0xeb, 0xf7, // jmp start
        ];
        assert_eq!(
            x86_64_sites(&c, BASE).unwrap().entry_kind,
            EntryKind::FunctionStart
        );
        // A call that moves rsp and is not emulated (indirect) ends the search.
        let c = [0x48, 0x89, 0xc1, 0xff, 0xd0, 0x74, 0x00, 0xc3]; // mov; call rax; je; ret
        assert_eq!(
            x86_64_sites(&c, BASE).unwrap().entry_kind,
            EntryKind::FunctionStart
        );
    }

    #[test]
    fn nop_before_ret_is_the_return_site() {
        let code = small_frame();
        let s = x86_64_sites(&code, BASE).unwrap();
        assert_eq!(s.return_sites, s.returns, "add rsp; ret: the RET itself");
        // add rsp,0x18; nop; ret — Go 1.19 pads like this.
        let mut c = vec![0x48, 0x83, 0xc4, 0x18, 0x90, 0xc3];
        let s = x86_64_sites(&c, BASE).unwrap();
        assert_eq!(
            (s.returns.clone(), s.return_sites),
            (vec![BASE + 5], vec![BASE + 4])
        );
        // A 4-byte NOP (0f 1f 40 00) counts too; one the kernel does not know (0f 1f 40 01) not.
        let c4 = [0x0f, 0x1f, 0x40, 0x00, 0xc3];
        assert_eq!(x86_64_sites(&c4, BASE).unwrap().return_sites, vec![BASE]);
        let c4 = [0x0f, 0x1f, 0x40, 0x01, 0xc3];
        assert_eq!(
            x86_64_sites(&c4, BASE).unwrap().return_sites,
            vec![BASE + 4]
        );
        // A branch to the RET itself skips the NOP: keep the RET.
        c.splice(0..0, [0x74, 0x05]); // je +5 -> the RET (at +7)
        let s = x86_64_sites(&c, BASE).unwrap();
        assert_eq!(s.return_sites, vec![BASE + 7]);
        // So could a jump table.
        let c = [0xff, 0xe0, 0x90, 0xc3]; // jmp rax; nop; ret
        assert_eq!(x86_64_sites(&c, BASE).unwrap().return_sites, vec![BASE + 3]);
    }

    #[test]
    fn emulated_instructions() {
        let decode = |bytes: &[u8]| {
            let mut d = Decoder::with_ip(64, bytes, 0, DecoderOptions::NONE);
            kernel_emulates(&d.decode(), bytes)
        };
        for yes in [
            &[0x76, 0x0c][..],                     // jbe rel8
            &[0x0f, 0x86, 0, 0, 0, 0],             // jbe rel32
            &[0xeb, 0x00],                         // jmp rel8
            &[0xe9, 0, 0, 0, 0],                   // jmp rel32
            &[0xe8, 0, 0, 0, 0],                   // call rel32
            &[0x55],                               // push rbp
            &[0x41, 0x54],                         // push r12
            &[0x90],                               // nop
            &[0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00], // nopw 0(rax,rax)
        ] {
            assert!(decode(yes), "{yes:02x?}");
        }
        for no in [
            &[0xc3][..],               // ret
            &[0x5d],                   // pop rbp
            &[0x49, 0x3b, 0x66, 0x10], // cmp
            &[0x48, 0x83, 0xec, 0x18], // sub rsp
            &[0xff, 0xd0],             // call rax
            &[0xe3, 0x00],             // jrcxz
            &[0x0f, 0x1f, 0x40, 0x01], // nopl 1(rax): not a kernel NOP
        ] {
            assert!(!decode(no), "{no:02x?}");
        }
    }

    #[test]
    fn stack_check_beyond_window_is_ignored() {
        let mut c = vec![0x90; PROLOGUE_WINDOW];
        c.extend_from_slice(&[0x49, 0x3b, 0x66, 0x10, 0x76, 0x00, 0xc3]);
        assert_eq!(
            x86_64_sites(&c, BASE).unwrap().entry_kind,
            EntryKind::FunctionStart
        );
    }

    #[test]
    fn undecodable_or_truncated_code_fails() {
        // 0x06 (push es) is invalid in 64-bit mode.
        assert_eq!(
            x86_64_sites(&[0x90, 0x06, 0xc3], BASE),
            Err(DisasmError::InvalidInstruction { addr: BASE + 1 })
        );
        // An instruction cut off by the function end.
        assert_eq!(
            x86_64_sites(&[0xc3, 0x48, 0x8b], BASE),
            Err(DisasmError::InvalidInstruction { addr: BASE + 1 })
        );
        assert_eq!(
            x86_64_sites(&[], BASE),
            Err(DisasmError::Empty { addr: BASE })
        );
    }
}

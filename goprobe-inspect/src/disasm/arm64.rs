//! Probe sites in arm64 Go code, from the yaxpeax-arm decoder.
//!
//! Instructions are fixed 4-byte words, so boundaries are never in doubt, but every word is still
//! decoded: a RET is whatever the decoder says is a return, and a word it cannot decode where
//! execution can reach it fails the function instead of being guessed at. Go's text also holds
//! words that are not instructions, which a plain word-by-word walk would get wrong:
//!
//! - Literal pools: Go's assembler places constants in the text after an unconditional branch and
//!   loads them with `ldr <reg>, <label>` (objdump: `MOVWU 112(PC), R27`). Those words are data:
//!   the targets of every literal load inside the function are skipped, so a constant that
//!   happens to look like `ret` is never probed (a uprobe there would corrupt the constant).
//! - Unreferenced pools: Go 1.19–1.21 leave pools nothing loads from (constants for large
//!   offsets that a later assembler pass encoded otherwise) after a `b .` at the function's end.
//!   So an undecodable word is an error only where control can fall into it: at the start, after
//!   an instruction that continues to the next word, or at a direct branch target. After an
//!   unconditional branch, return or trap, undecodable words up to the next branch target are dead
//!   data and skipped. Decodable words there are still classified (and their RETs probed): code
//!   reached only through a jump table (`br`) looks exactly like that.
//! - Traps: Go's `UNDEF` is `udf #0` (0x00000000) since Go 1.24, and 0xbea71700 (an encoding
//!   guaranteed undefined, which no decoder knows) before; functions are padded with zero words.
//!
//! ## Entry: Go's stack check on arm64
//!
//! `g` lives in x28 (Go's R28, `REGG`) on arm64 in every Go version; `g.stackguard0` is at
//! `[x28, #16]`. As checked against `go tool objdump` for Go 1.19 and 1.21–1.27 (see
//! `tests/inspect_go.rs`), the prologue is, with Go's mnemonics on the right:
//!
//! ```text
//! small frame (<= StackSmall, 128 bytes)
//!     ldr  x16, [x28, #16]          MOVD 16(R28), R16
//!     cmp  sp, x16                  CMP R16, RSP
//!     b.ls morestack                BLS
//! mid frame (<= StackBig, 4096 bytes)
//!     ldr  x16, [x28, #16]          MOVD 16(R28), R16
//!     sub  x17, sp, #(frame-128)    SUB $N, RSP, R17
//!     cmp  x17, x16                 CMP R16, R17
//!     b.ls morestack                BLS
//! huge frame (> StackBig): first a check that sp - frame does not wrap around
//!     ldr  x16, [x28, #16]          MOVD 16(R28), R16
//!     mov  x27, #(frame-128)        MOVD $N, R27      (movz + movk for big N)
//!     subs x17, sp, x27             SUBS R27, RSP, R17
//!     b.lo morestack                BCC               (not the entry: flags of the subs)
//!     cmp  x17, x16                 CMP R16, R17
//!     b.ls morestack                BLS
//! ```
//!
//! The entry probe goes on the `b.ls` ([`EntryKind::StackCheckBranch`]), as on the `jbe` on
//! amd64: morestack returns to the function's first instruction, so a probe there would fire
//! twice for a call that grows the stack. Recognised here: a `cmp` (`subs xzr, Xn|sp, Xm`) whose
//! subtrahend `Xm` was loaded from `[x28, #16]` earlier in the prologue, immediately followed by
//! `b.ls`. Anything else (NOSPLIT and frameless leaves, which have no check) gets
//! [`EntryKind::FunctionStart`]. Go before 1.17 compared huge frames through a computed register
//! (`CMP R3, R2`); those would fall back to the function start (correct, but may fire twice).
//!
//! ## Kernel side (goprobe-ebpf/src/arch.rs)
//!
//! - The goroutine key: `g` is `pt_regs.regs[28]` (x28) at every Go probe site, where amd64
//!   reads r14.
//! - The flags at the `b.ls`: a uprobe fires before the branch executes, so `pt_regs.pstate`
//!   holds the flags of the `cmp` (NZCV: N bit 31, Z bit 30, C bit 29, V bit 28). `b.ls` is taken
//!   when `C == 0 || Z == 1` (sp <= stackguard): that call is about to go through morestack and
//!   will re-enter from the top, so the probe must ignore it. A call that proceeds has
//!   `C == 1 && Z == 0`, the counterpart of CF=0 && ZF=0 at the amd64 `jbe`.
//! - Cost: arm64 uprobes simulate `b.cond` and `ret` (`simulate_b_cond`,
//!   `simulate_br_blr_ret` in arch/arm64/kernel/probes) instead of single-stepping them, so both
//!   sites should be the cheap kind, as on amd64; BENCHMARKS.md ("arm64, emulated") measured them
//!   at about a sixth of a single-stepped load. The
//!   pointer-authenticated returns (`retaa`/`retab`, which Go does not emit) may be refused by
//!   the kernel's probe decoder.

use yaxpeax_arch::{Decoder, U8Reader};
use yaxpeax_arm::armv8::a64::{
    InstDecoder, Instruction, Opcode, Operand, SIMDSizeCode, ShiftStyle, SizeCode,
};

use super::{DisasmError, STACKGUARD0};
use crate::{EntryKind, ProbeSites};

/// x28: where Go keeps the current `g` on arm64.
const G_REG: u16 = 28;

/// The `LS` condition code (unsigned lower or same), as in `b.ls`.
const COND_LS: u8 = 0b1001;

/// Instructions from the start searched for the stack check: the huge-frame form is 6
/// instructions, 8 when its constant needs `movz` + two `movk`.
const PROLOGUE_WINDOW: usize = 10;

/// What Go's assembler emits for `UNDEF` before Go 1.24 (asm7.go: "guaranteed to raise undefined
/// instruction exception"); since 1.24 it is `udf #0`.
const GO_UNDEF_OLD: u32 = 0xbea7_1700;

/// Decode `code` (the bytes of one function, loaded at `addr`) and find its probe sites.
pub fn aarch64_sites(code: &[u8], addr: u64) -> Result<ProbeSites, DisasmError> {
    if code.len() < 4 {
        // Not even one instruction (Go's `go:textfipsstart`-style markers are 1 byte long).
        return Err(DisasmError::Empty { addr });
    }
    let end = addr
        .checked_add(code.len() as u64)
        .ok_or(DisasmError::NoCode { addr })?;
    if !addr.is_multiple_of(4) {
        // arm64 instructions are word-aligned: this is not the start of code.
        return Err(DisasmError::InvalidInstruction { addr });
    }
    let decoder = InstDecoder::default();
    // Pass 1: decode every word (`None`: undecodable, or a trailing partial word).
    let words: Vec<Word> = code
        .chunks(4)
        .map(|bytes| match <[u8; 4]>::try_from(bytes) {
            Ok(b) if u32::from_le_bytes(b) == GO_UNDEF_OLD => Word::Trap,
            Ok(b) => match decoder.decode(&mut U8Reader::new(&b)) {
                Ok(ins) => Word::Insn(ins),
                Err(_) => Word::Invalid,
            },
            Err(_) => Word::Invalid,
        })
        .collect();
    let data = literal_words(&words);
    let targets = branch_targets(&words);

    // Pass 2: classify.
    let mut entry = None;
    let mut returns = Vec::new();
    let mut tail_jumps = 0;
    let mut indirect_jumps = 0;
    // Bit n set: xn holds g.stackguard0.
    let mut guard_regs: u32 = 0;
    let mut prev_was_guard_cmp = false;
    // Whether control can reach this word from the one before (or it is the first).
    let mut falls_in = true;
    for (i, word) in words.iter().enumerate() {
        let pc = addr + 4 * i as u64;
        falls_in |= targets[i];
        if data[i] {
            // Code resumes after a pool at a branch target.
            falls_in = false;
            prev_was_guard_cmp = false;
            continue;
        }
        let ins = match word {
            Word::Insn(ins) => ins,
            Word::Invalid if falls_in => return Err(DisasmError::InvalidInstruction { addr: pc }),
            Word::Invalid | Word::Trap => {
                falls_in = false;
                prev_was_guard_cmp = false;
                continue;
            }
        };
        if i < PROLOGUE_WINDOW && entry.is_none() {
            if prev_was_guard_cmp && ins.opcode == Opcode::Bcc(COND_LS) {
                entry = Some(pc);
            }
            if let Some(r) = stackguard_load(ins) {
                guard_regs |= 1 << r;
            } else if let Some(r) = written_register(ins) {
                guard_regs &= !(1 << r);
            }
            prev_was_guard_cmp = is_stackguard_cmp(ins, guard_regs);
        }
        falls_in = true;
        match ins.opcode {
            Opcode::RET
            | Opcode::RETAA
            | Opcode::RETAB
            | Opcode::RETAASPPC
            | Opcode::RETABSPPC
            | Opcode::RETAASPPCR
            | Opcode::RETABSPPCR => {
                returns.push(pc);
                falls_in = false;
            }
            Opcode::B => {
                if let Operand::PCOffset(off) = ins.operands[0] {
                    let target = pc.wrapping_add_signed(off);
                    if target < addr || target >= end {
                        tail_jumps += 1;
                    }
                }
                falls_in = false;
            }
            Opcode::BR | Opcode::BRAA | Opcode::BRAAZ | Opcode::BRAB | Opcode::BRABZ => {
                indirect_jumps += 1;
                falls_in = false;
            }
            Opcode::UDF => falls_in = false,
            _ => {}
        }
    }

    Ok(ProbeSites {
        entry: entry.unwrap_or(addr),
        entry_kind: if entry.is_some() {
            EntryKind::StackCheckBranch
        } else {
            EntryKind::FunctionStart
        },
        // Not measured on arm64 (the kernel simulates branches there): the RET stays the site.
        return_sites: returns.clone(),
        returns,
        tail_jumps,
        indirect_jumps,
    })
}

/// Whether the arm64 code at `code` writes x28, where Go keeps the goroutine: where a function
/// does (the runtime's stack switchers, some hand-written assembly), x28 at its RET is not the
/// goroutine its entry saw. Stores name the register they store first and are not writes of it;
/// loads of a pair (`ldp`) write their first two operands.
pub fn aarch64_writes_g(code: &[u8]) -> bool {
    let decoder = InstDecoder::default();
    let writes = |op: Operand| matches!(op, Operand::Register(SizeCode::X, G_REG));
    code.as_chunks::<4>().0.iter().any(|bytes| {
        let Ok(ins) = decoder.decode(&mut U8Reader::new(bytes)) else {
            return false;
        };
        let name = format!("{:?}", ins.opcode);
        if name.starts_with("ST") || name.starts_with("CB") || name.starts_with("TB") {
            return false;
        }
        writes(ins.operands[0]) || (name.starts_with("LDP") && writes(ins.operands[1]))
    })
}

/// The control flow of arm64 code, for the inline analysis (goprobe-inspect/src/inline/mod.rs).
pub struct Flow {
    /// `(pc, straight-line?, successors)` of every instruction, in order.
    pub flow: Vec<(u64, bool, [Option<u64>; 2])>,
    pub nop: Vec<bool>,
    pub indirect_at: std::collections::BTreeSet<u64>,
    pub branch_targets: std::collections::BTreeSet<u64>,
}

/// Decode `code` at `addr` into its control flow. Literal-pool words and words that are not
/// instructions are left out (nothing flows into them); calls continue to the next word.
pub fn aarch64_flow(code: &[u8], addr: u64) -> Flow {
    let decoder = InstDecoder::default();
    let words: Vec<Word> = code
        .chunks(4)
        .map(|bytes| match <[u8; 4]>::try_from(bytes) {
            Ok(b) if u32::from_le_bytes(b) == GO_UNDEF_OLD => Word::Trap,
            Ok(b) => match decoder.decode(&mut U8Reader::new(&b)) {
                Ok(ins) => Word::Insn(ins),
                Err(_) => Word::Invalid,
            },
            Err(_) => Word::Invalid,
        })
        .collect();
    let data = literal_words(&words);
    let mut out = Flow {
        flow: Vec::new(),
        nop: Vec::new(),
        indirect_at: Default::default(),
        branch_targets: Default::default(),
    };
    for (i, word) in words.iter().enumerate() {
        let pc = addr + 4 * i as u64;
        if data[i] {
            continue;
        }
        let Some(ins) = word.insn() else {
            if matches!(word, Word::Trap) {
                out.flow.push((pc, false, [None, None]));
                out.nop.push(false);
            }
            continue;
        };
        let next = Some(pc + 4);
        let target = |op: Operand| match op {
            Operand::PCOffset(off) => Some(pc.wrapping_add_signed(off)),
            _ => None,
        };
        let (straight, succ) = match ins.opcode {
            Opcode::B => {
                let t = target(ins.operands[0]);
                out.branch_targets.extend(t);
                (false, [t, None])
            }
            Opcode::Bcc(_)
            | Opcode::BCcc(_)
            | Opcode::CBZ
            | Opcode::CBNZ
            | Opcode::TBZ
            | Opcode::TBNZ => {
                let op = match ins.opcode {
                    Opcode::CBZ | Opcode::CBNZ => ins.operands[1],
                    Opcode::TBZ | Opcode::TBNZ => ins.operands[2],
                    _ => ins.operands[0],
                };
                let t = target(op);
                out.branch_targets.extend(t);
                (false, [next, t])
            }
            Opcode::BR | Opcode::BRAA | Opcode::BRAAZ | Opcode::BRAB | Opcode::BRABZ => {
                out.indirect_at.insert(pc);
                (false, [None, None])
            }
            Opcode::RET
            | Opcode::RETAA
            | Opcode::RETAB
            | Opcode::RETAASPPC
            | Opcode::RETABSPPC
            | Opcode::RETAASPPCR
            | Opcode::RETABSPPCR
            | Opcode::UDF
            | Opcode::BRK => (false, [None, None]),
            _ => (true, [next, None]),
        };
        // `nop` is hint #0 (Go marks where an inlined body begins with one, as on amd64).
        out.nop.push(
            ins.opcode == Opcode::HINT
                && ins.operands[..2] == [Operand::ControlReg(0), Operand::Immediate(0)],
        );
        out.flow.push((pc, straight, succ));
    }
    out
}

/// One word of the function.
enum Word {
    Insn(Instruction),
    /// Go's old `UNDEF` encoding: a trap, like `udf`.
    Trap,
    /// Not an instruction the decoder knows, or fewer than 4 bytes left.
    Invalid,
}

impl Word {
    fn insn(&self) -> Option<&Instruction> {
        match self {
            Word::Insn(ins) => Some(ins),
            _ => None,
        }
    }
}

/// Mark the words `[4*i + off, +size)` in `marks`, if inside.
fn mark(marks: &mut [bool], i: usize, off: i64, size: usize) {
    let Some(start) = (4 * i as i64).checked_add(off) else {
        return;
    };
    // Targets are word-aligned (imm * 4); a 16-byte `ldr q` literal covers four words.
    for w in 0..size.div_ceil(4) {
        let byte = start + 4 * w as i64;
        if byte >= 0
            && let Some(m) = marks.get_mut((byte / 4) as usize)
        {
            *m = true;
        }
    }
}

/// Which words are the targets of direct branches inside the function (`b`, `b.cond`,
/// `cbz`/`cbnz`, `tbz`/`tbnz`).
fn branch_targets(words: &[Word]) -> Vec<bool> {
    let mut targets = vec![false; words.len()];
    for (i, ins) in words.iter().enumerate() {
        let Some(ins) = ins.insn() else { continue };
        let off = match ins.opcode {
            Opcode::B | Opcode::Bcc(_) | Opcode::BCcc(_) => ins.operands[0],
            Opcode::CBZ | Opcode::CBNZ => ins.operands[1],
            Opcode::TBZ | Opcode::TBNZ => ins.operands[2],
            _ => continue,
        };
        if let Operand::PCOffset(off) = off {
            mark(&mut targets, i, off, 4);
        }
    }
    targets
}

/// Which words of the function are literal-pool data: the targets of PC-relative loads
/// (`ldr`/`ldrsw` literal) that fall inside it.
fn literal_words(words: &[Word]) -> Vec<bool> {
    let mut data = vec![false; words.len()];
    for (i, ins) in words.iter().enumerate() {
        if let Some((off, size)) = ins.insn().and_then(literal_load) {
            mark(&mut data, i, off, size);
        }
    }
    data
}

/// `(offset from the instruction, bytes read)` of a load-literal instruction.
fn literal_load(ins: &Instruction) -> Option<(i64, usize)> {
    let Operand::PCOffset(off) = ins.operands[1] else {
        return None;
    };
    let size = match (ins.opcode, ins.operands[0]) {
        (Opcode::LDR, Operand::Register(SizeCode::W, _)) => 4,
        (Opcode::LDR, Operand::Register(SizeCode::X, _)) => 8,
        (Opcode::LDRSW, _) => 4,
        (Opcode::LDR, Operand::SIMDRegister(SIMDSizeCode::S, _)) => 4,
        (Opcode::LDR, Operand::SIMDRegister(SIMDSizeCode::D, _)) => 8,
        (Opcode::LDR, Operand::SIMDRegister(SIMDSizeCode::Q, _)) => 16,
        _ => return None,
    };
    Some((off, size))
}

/// `ldr xN, [x28, #16]`: loads `g.stackguard0`; returns N.
fn stackguard_load(ins: &Instruction) -> Option<u16> {
    match (ins.opcode, ins.operands[0], ins.operands[1]) {
        (
            Opcode::LDR | Opcode::LDUR,
            Operand::Register(SizeCode::X, r),
            Operand::RegPreIndex(G_REG, off, false),
        ) if r < 31 && off as u64 == STACKGUARD0 => Some(r),
        _ => None,
    }
}

/// The general-purpose register an instruction writes as its first operand, if any, so that a
/// register overwritten after the stackguard load no longer counts as holding it.
/// (Stores also name a register first; forgetting on those is merely conservative.)
fn written_register(ins: &Instruction) -> Option<u16> {
    match ins.operands[0] {
        Operand::Register(_, r) | Operand::RegisterOrSP(_, r) if r < 31 => Some(r),
        _ => None,
    }
}

/// `cmp Xn|sp, Xm` (`subs xzr, Xn|sp, Xm`) with `Xm` holding `g.stackguard0`: the flags then say
/// whether the (would-be) stack pointer is above the guard.
fn is_stackguard_cmp(ins: &Instruction, guard_regs: u32) -> bool {
    if ins.opcode != Opcode::SUBS || ins.operands[0] != Operand::Register(SizeCode::X, 31) {
        return false;
    }
    let lhs_ok = match ins.operands[1] {
        Operand::RegisterOrSP(SizeCode::X, 31) => true, // sp
        Operand::Register(SizeCode::X, n) | Operand::RegisterOrSP(SizeCode::X, n) => {
            n < 31 && guard_regs & (1 << n) == 0
        }
        _ => false,
    };
    let rhs_is_guard = matches!(
        ins.operands[2],
        Operand::RegShift(ShiftStyle::LSL | ShiftStyle::UXTX, 0, SizeCode::X, m)
            if m < 31 && guard_regs & (1 << m) != 0
    );
    lhs_ok && rhs_is_guard && ins.operands[3] == Operand::Nothing
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x8f500;

    fn code(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    const LDR_GUARD: u32 = 0xf9400b90; // ldr x16, [x28, #16]   MOVD 16(R28), R16
    const CMP_SP: u32 = 0xeb3063ff; // cmp sp, x16            CMP R16, RSP
    const CMP_X17: u32 = 0xeb10023f; // cmp x17, x16          CMP R16, R17
    const RET: u32 = 0xd65f03c0;
    const NOP: u32 = 0xd503201f;
    const UDF0: u32 = 0x00000000; // Go's padding

    /// `main.foo` of the golden test program (`tests/inspect_go.rs`), Go 1.19.8 GOARCH=arm64,
    /// with `go tool objdump`'s listing: a small frame and three returns.
    const GO119_FOO: &[u32] = &[
        0xf9400b90, // 0x00 MOVD 16(R28), R16
        0xeb3063ff, // 0x04 CMP R16, RSP
        0x54000689, // 0x08 BLS 52(PC)
        0xf81a0ffe, // 0x0c MOVD.W R30, -96(RSP)
        0xf81f83fd, // 0x10 MOVD R29, -8(RSP)
        0xd10023fd, // 0x14 SUB $8, RSP, R29
        0xb7f80080, // 0x18 TBNZ $63, R0, 4(PC)
        0xd2800001, // 0x1c MOVD $0, R1
        0xd2800002, // 0x20 MOVD $0, R2
        0x14000008, // 0x24 JMP 8(PC)
        0x92800000, // 0x28 MOVD $-1, R0
        0xa97ffbfd, // 0x2c LDP -8(RSP), (R29, R30)
        0x910183ff, // 0x30 ADD $96, RSP, RSP
        0xd65f03c0, // 0x34 RET
        0x91000423, // 0x38 ADD $1, R1, R3
        0x9b010822, // 0x3c MADD R1, R2, R1, R2
        0xaa0303e1, // 0x40 MOVD R3, R1
        0xeb01001f, // 0x44 CMP R1, R0
        0x54ffff8c, // 0x48 BGT -4(PC)
        0xf10fa05f, // 0x4c CMP $1000, R2
        0x540000cd, // 0x50 BLE 6(PC)
        0x8b42fc41, // 0x54 ADD R2>>63, R2, R1
        0x9341fc20, // 0x58 ASR $1, R1, R0
        0xa97ffbfd, // 0x5c LDP -8(RSP), (R29, R30)
        0x910183ff, // 0x60 ADD $96, RSP, RSP
        0xd65f03c0, // 0x64 RET
        0xf9001be2, // 0x68 MOVD R2, 48(RSP)
        0xa903ffff, // 0x6c STP (ZR, ZR), 56(RSP)
        0xa904ffff, // 0x70 STP (ZR, ZR), 72(RSP)
        0x90000041, // 0x74 ADRP 32768(PC), R1
        0x91070021, // 0x78 ADD $448, R1, R1
        0xf9001fe1, // 0x7c MOVD R1, 56(RSP)
        0xd00001a1, // 0x80 ADRP 221184(PC), R1
        0x913d2021, // 0x84 ADD $3912, R1, R1
        0xf90023e1, // 0x88 MOVD R1, 64(RSP)
        0xaa0203e0, // 0x8c MOVD R2, R0
        0x97fe261c, // 0x90 CALL runtime.convT64(SB)
        0xf0000021, // 0x94 ADRP 28672(PC), R1
        0x912d0021, // 0x98 ADD $2880, R1, R1
        0xf90027e1, // 0x9c MOVD R1, 72(RSP)
        0xf9002be0, // 0xa0 MOVD R0, 80(RSP)
        0x9000055b, // 0xa4 ADRP 688128(PC), R27
        0x913d437b, // 0xa8 ADD $3920, R27, R27
        0xf9400361, // 0xac MOVD (R27), R1
        0xf00001a0, // 0xb0 ADRP 225280(PC), R0
        0x91102000, // 0xb4 ADD $1032, R0, R0
        0x9100e3e2, // 0xb8 ADD $56, RSP, R2
        0xb27f03e3, // 0xbc ORR $2, ZR, R3
        0xaa0303e4, // 0xc0 MOVD R3, R4
        0x97ffeb3b, // 0xc4 CALL fmt.Fprintln(SB)
        0xf9401be0, // 0xc8 MOVD 48(RSP), R0
        0xa97ffbfd, // 0xcc LDP -8(RSP), (R29, R30)
        0x910183ff, // 0xd0 ADD $96, RSP, RSP
        0xd65f03c0, // 0xd4 RET
        0xf90007e0, // 0xd8 MOVD R0, 8(RSP)
        0xaa1e03e3, // 0xdc MOVD R30, R3
        0x97ff6af8, // 0xe0 CALL runtime.morestack_noctxt.abi0(SB)
        0xf94007e0, // 0xe4 MOVD 8(RSP), R0
        0x17ffffc6, // 0xe8 JMP main.foo(SB)
        0x00000000, // 0xec ?
    ];

    /// `main.big` (a 20000-byte frame), Go 1.27.3 GOARCH=arm64.
    const GO127_BIG: &[u32] = &[
        0xf9400b90, // 0x00 MOVD 16(R28), R16
        0xd289b61b, // 0x04 MOVD $19888, R27
        0xeb3b63f1, // 0x08 SUBS R27, RSP, R17
        0x540005e3, // 0x0c BCC 47(PC)
        0xeb10023f, // 0x10 CMP R16, R17
        0x540005a9, // 0x14 BLS 45(PC)
        0xd289c61b, // 0x18 MOVD $20016, R27
        0xcb3b63f4, // 0x1c SUB R27, RSP, R20
        0xa93ffa9d, // 0x20 STP (R29, R30), -8(R20)
        0x9100029f, // 0x24 MOVD R20, RSP
        0xd10023fd, // 0x28 SUB $8, RSP, R29
        0x910023e1, // 0x2c ADD $8, RSP, R1
        0xd2802702, // 0x30 MOVD $312, R2
        0xa8817c3f, // 0x34 STP.P (ZR, ZR), 16(R1)
        0xa8817c3f, // 0x38 STP.P (ZR, ZR), 16(R1)
        0xa8817c3f, // 0x3c STP.P (ZR, ZR), 16(R1)
        0xa8817c3f, // 0x40 STP.P (ZR, ZR), 16(R1)
        0xd1000442, // 0x44 SUB $1, R2, R2
        0xb5ffff62, // 0x48 CBNZ R2, -5(PC)
        0xa9007c3f, // 0x4c STP (ZR, ZR), (R1)
        0xa9017c3f, // 0x50 STP (ZR, ZR), 16(R1)
        0xaa1f03e1, // 0x54 MOVD ZR, R1
        0x14000005, // 0x58 JMP 5(PC)
        0x9b007c23, // 0x5c MUL R0, R1, R3
        0x910023e4, // 0x60 ADD $8, RSP, R4
        0x38216883, // 0x64 MOVB R3, (R4)(R1)
        0x91000421, // 0x68 ADD $1, R1, R1
        0xd289c402, // 0x6c MOVD $20000, R2
        0xeb02003f, // 0x70 CMP R2, R1
        0x54ffff4b, // 0x74 BLT -6(PC)
        0xd29652c1, // 0x78 MOVD $45718, R1
        0xf2ae2181, // 0x7c MOVK $(28940<<16), R1
        0xf2d17581, // 0x80 MOVK $(35756<<32), R1
        0xf2ed1b61, // 0x84 MOVK $(26843<<48), R1
        0x9b417c01, // 0x88 SMULH R1, R0, R1
        0x934dfc21, // 0x8c ASR $13, R1, R1
        0xcb80fc21, // 0x90 SUB R0->63, R1, R1
        0xd289c403, // 0x94 MOVD $20000, R3
        0x9b018061, // 0x98 MSUB R1, R0, R3, R1
        0xeb02003f, // 0x9c CMP R2, R1
        0x540000e2, // 0xa0 BCS 7(PC)
        0x910023e2, // 0xa4 ADD $8, RSP, R2
        0x38616840, // 0xa8 MOVBU (R2)(R1), R0
        0xa97ffbfd, // 0xac LDP -8(RSP), (R29, R30)
        0xd289c61b, // 0xb0 MOVD $20016, R27
        0x8b3b63ff, // 0xb4 ADD R27, RSP, RSP
        0xd65f03c0, // 0xb8 RET
        0xd289c400, // 0xbc MOVD $20000, R0
        0x97ff9d74, // 0xc0 CALL runtime.panicBounds(SB)
        0xd503201f, // 0xc4 NOOP
        0xf90007e0, // 0xc8 MOVD R0, 8(RSP)
        0xaa1e03e3, // 0xcc MOVD R30, R3
        0x97ff9538, // 0xd0 CALL runtime.morestack_noctxt.abi0(SB)
        0xf94007e0, // 0xd4 MOVD 8(RSP), R0
        0x17ffffca, // 0xd8 JMP main.big(SB)
        0x00000000, // 0xdc ?
    ];

    #[test]
    fn writes_g_sees_a_load_into_x28_and_not_a_store_of_it() {
        assert!(aarch64_writes_g(&code(&[NOP, 0xf940001c, RET]))); // ldr x28, [x0]
        assert!(!aarch64_writes_g(&code(&[0xf900001c, RET]))); // str x28, [x0]
        assert!(!aarch64_writes_g(&code(GO119_FOO)));
    }

    #[test]
    fn small_frame_go119() {
        let s = aarch64_sites(&code(GO119_FOO), BASE).unwrap();
        assert_eq!(
            (s.entry_kind, s.entry),
            (EntryKind::StackCheckBranch, BASE + 8)
        );
        assert_eq!(s.returns, vec![BASE + 0x34, BASE + 0x64, BASE + 0xd4]);
        assert_eq!(
            (s.tail_jumps, s.indirect_jumps),
            (0, 0),
            "the jump back to the start stays inside"
        );
    }

    #[test]
    fn mid_frame_go127() {
        // `main.mid` (a 1104-byte frame), Go 1.27.3: its prologue and its one return.
        let c = code(&[
            LDR_GUARD,  // 0x00 MOVD 16(R28), R16
            0xd10f43f1, // 0x04 SUB $976, RSP, R17
            CMP_X17,    // 0x08 CMP R16, R17
            0x54000a09, // 0x0c BLS 80(PC)
            0xd11143f4, // 0x10 SUB $1104, RSP, R20
            0xa93ffa9d, // 0x14 STP (R29, R30), -8(R20)
            0x9100029f, // 0x18 MOVD R20, RSP
            0xd10023fd, // 0x1c SUB $8, RSP, R29
            0xa97ffbfd, // 0x20 LDP -8(RSP), (R29, R30)
            0x911143ff, // 0x24 ADD $1104, RSP, RSP
            RET,        // 0x28 RET
        ]);
        let s = aarch64_sites(&c, BASE).unwrap();
        assert_eq!(
            (s.entry_kind, s.entry),
            (EntryKind::StackCheckBranch, BASE + 0xc)
        );
        assert_eq!(s.returns, vec![BASE + 0x28]);
    }

    #[test]
    fn huge_frame_go127() {
        // The b.lo (BCC) of the wrap-around check is not the entry; the b.ls after the guard
        // cmp is.
        let s = aarch64_sites(&code(GO127_BIG), BASE).unwrap();
        assert_eq!(
            (s.entry_kind, s.entry),
            (EntryKind::StackCheckBranch, BASE + 0x14)
        );
        assert_eq!(s.returns, vec![BASE + 0xb8]);
        assert_eq!((s.tail_jumps, s.indirect_jumps), (0, 0));
    }

    #[test]
    fn huge_frame_go119_prologue() {
        let c = code(&[
            LDR_GUARD,  // MOVD 16(R28), R16
            0xd289b81b, // MOVD $19904, R27
            0xeb3b63f1, // SUBS R27, RSP, R17
            0x54000563, // BCC 43(PC)
            CMP_X17,    // CMP R16, R17
            0x54000529, // BLS 41(PC)
            RET, UDF0,
        ]);
        let s = aarch64_sites(&c, BASE).unwrap();
        assert_eq!(
            (s.entry_kind, s.entry),
            (EntryKind::StackCheckBranch, BASE + 0x14)
        );
    }

    #[test]
    fn frameless_leaf_go127() {
        let c = code(&[
            0x9b017c01, // MUL R1, R0, R1
            0x91000420, // ADD $1, R1, R0
            RET,        // RET
            UDF0,       // ? (padding)
        ]);
        let s = aarch64_sites(&c, BASE).unwrap();
        assert_eq!((s.entry_kind, s.entry), (EntryKind::FunctionStart, BASE));
        assert_eq!(s.returns, vec![BASE + 8]);
    }

    #[test]
    fn not_a_stack_check() {
        let kind = |words: &[u32]| aarch64_sites(&code(words), BASE).unwrap().entry_kind;
        // cmp; nop; b.ls — not immediately followed.
        assert_eq!(
            kind(&[LDR_GUARD, CMP_SP, NOP, 0x54000009, RET]),
            EntryKind::FunctionStart
        );
        // No guard load before the cmp.
        assert_eq!(kind(&[CMP_SP, 0x54000009, RET]), EntryKind::FunctionStart);
        // ldr x16, [x28, #24]: not stackguard0.
        assert_eq!(
            kind(&[0xf9400f90, CMP_SP, 0x54000009, RET]),
            EntryKind::FunctionStart
        );
        // ldr x16, [x27, #16]: not g.
        assert_eq!(
            kind(&[0xf9400b70, CMP_SP, 0x54000009, RET]),
            EntryKind::FunctionStart
        );
        // The guard register overwritten (mov x16, #0) before the cmp.
        assert_eq!(
            kind(&[LDR_GUARD, 0xd2800010, CMP_SP, 0x54000009, RET]),
            EntryKind::FunctionStart
        );
        // b.lo instead of b.ls.
        assert_eq!(
            kind(&[LDR_GUARD, CMP_SP, 0x54000003, RET]),
            EntryKind::FunctionStart
        );
        // Reversed comparison (cmp x16, x17: guard minus sp) — b.ls would be the normal path.
        assert_eq!(
            kind(&[LDR_GUARD, 0xeb11021f, 0x54000009, RET]),
            EntryKind::FunctionStart
        );
        // Beyond the prologue window.
        let mut late = vec![NOP; PROLOGUE_WINDOW];
        late.extend([LDR_GUARD, CMP_SP, 0x54000009, RET]);
        assert_eq!(kind(&late), EntryKind::FunctionStart);
    }

    #[test]
    fn return_and_jump_kinds() {
        let c = code(&[
            0xd65f0020, // ret x1
            0xd65f0bff, // retaa
            0xd65f0fff, // retab
            0x14000400, // b +0x1000 (outside: a tail call)
            0x17fffffc, // b -0x10 (to the start: inside)
            0xd61f0020, // br x1
            0xd63f0020, // blr x1: a call, not a jump
            0x94000400, // bl +0x1000: a call, not a tail jump
        ]);
        let s = aarch64_sites(&c, BASE).unwrap();
        assert_eq!(s.returns, vec![BASE, BASE + 4, BASE + 8]);
        assert_eq!((s.tail_jumps, s.indirect_jumps), (1, 1));
    }

    #[test]
    fn literal_pool_words_are_data() {
        // A 4-byte literal holding the bit pattern of `ret`, and an 8-byte one made of words
        // that do not decode, both after the function's real return.
        let pool = [0xffffffff, 0xffffffff, RET];
        let mut words = vec![
            0x180000db, // +0x00 ldr w27, $+0x18 (MOVWU 6(PC), R27)
            0x58000061, // +0x04 ldr x1, $+0xc   (MOVD 3(PC), R1): 8 bytes at +0x10
            RET,        // +0x08 ret
            UDF0,       // +0x0c
        ];
        words.extend(pool); // +0x10, +0x14, +0x18
        let s = aarch64_sites(&code(&words), BASE).unwrap();
        assert_eq!(
            s.returns,
            vec![BASE + 8],
            "the `ret` constant is not a return"
        );
        // Without the loads, the same words after the return are dead code or data: the
        // undecodable ones are skipped, the `ret` is taken for one.
        let mut words = vec![NOP, NOP, RET, UDF0];
        words.extend(pool);
        let s = aarch64_sites(&code(&words), BASE).unwrap();
        assert_eq!(s.returns, vec![BASE + 8, BASE + 0x18]);
    }

    #[test]
    fn unreferenced_pool_after_the_end_go119() {
        // The end of `runtime.(*mheap).sysAlloc`, Go 1.19.8: a pool nothing loads from (mheap
        // field offsets that the assembler finally encoded as `ADD $(16<<12), R6, R27`),
        // after `b .`. objdump shows `?` for these words; they must not fail the function.
        let c = code(&[
            0xaa1e03e3, // MOVD R30, R3
            0x94013f1e, // CALL runtime.morestack_noctxt.abi0(SB)
            0xf94007e0, // MOVD 8(RSP), R0
            0xf9400be1, // MOVD 16(RSP), R1
            0x17fffea3, // JMP runtime.(*mheap).sysAlloc(SB)
            0x14000000, // JMP 0(PC)
            0x00010190, 0x000101f0, 0x000101e8, 0x000101e0, // ?
            0x000101b8, 0x000169e0, 0x000169b0, 0x000169c8, // ?
            UDF0,
        ]);
        let s = aarch64_sites(&c, BASE).unwrap();
        assert!(s.returns.is_empty());
        assert_eq!(
            s.tail_jumps, 1,
            "the snippet's jump to the start is outside it"
        );
        // The same words where execution falls into them are an error.
        let c = code(&[NOP, 0x00010190, RET]);
        assert_eq!(
            aarch64_sites(&c, BASE),
            Err(DisasmError::InvalidInstruction { addr: BASE + 4 })
        );
        // ... and so is one that a branch targets: b.eq +8 over a ret, onto a bad word.
        let c = code(&[0x54000040, RET, 0x00010190, RET]);
        assert_eq!(
            aarch64_sites(&c, BASE),
            Err(DisasmError::InvalidInstruction { addr: BASE + 8 })
        );
    }

    #[test]
    fn go_undef_before_124_is_a_trap() {
        // `runtime.systemstack_switch`, Go 1.22.10: UNDEF was 0xbea71700, which no decoder
        // knows; what follows it is not reached by falling through.
        let c = code(&[
            0xf81f0ffe, // MOVD.W R30, -16(RSP)
            0xf81f83fd, // MOVD R29, -8(RSP)
            0xd10023fd, // SUB $8, RSP, R29
            0xbea71700, // UNDEF (objdump: ?)
            0xd63f03c0, // CALL (R30)
            0xa97ffbfd, // LDP -8(RSP), (R29, R30)
            0x910043ff, // ADD $16, RSP, RSP
            RET,        // RET
        ]);
        let s = aarch64_sites(&c, BASE).unwrap();
        assert_eq!(s.returns, vec![BASE + 0x1c]);
        assert_eq!(s.entry_kind, EntryKind::FunctionStart);
    }

    #[test]
    fn invalid_truncated_misaligned_empty() {
        assert_eq!(
            aarch64_sites(&code(&[NOP, 0xffffffff, RET]), BASE),
            Err(DisasmError::InvalidInstruction { addr: BASE + 4 })
        );
        // A partial word where execution falls into it; after a return it is just a tail.
        for (first, want) in [
            (NOP, Err(DisasmError::InvalidInstruction { addr: BASE + 4 })),
            (RET, Ok(vec![BASE])),
        ] {
            let mut c = code(&[first]);
            c.extend_from_slice(&[0x1f, 0x20]);
            assert_eq!(aarch64_sites(&c, BASE).map(|s| s.returns), want);
        }
        assert_eq!(
            aarch64_sites(&code(&[RET]), BASE + 2),
            Err(DisasmError::InvalidInstruction { addr: BASE + 2 })
        );
        // Empty, or too short for one instruction (Go's 1-byte `go:textfipsstart` marker).
        for c in [&[][..], &[0][..], &[0xc0, 0x03, 0x5f][..]] {
            assert_eq!(
                aarch64_sites(c, BASE),
                Err(DisasmError::Empty { addr: BASE })
            );
        }
        assert_eq!(
            aarch64_sites(&code(&[RET, RET]), u64::MAX - 3),
            Err(DisasmError::NoCode { addr: u64::MAX - 3 })
        );
    }
}
